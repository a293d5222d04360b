// History cache and snapshots at a subject's home. See cache.h.
#include "pubsub/cache.h"

#include <algorithm>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

namespace starling {

namespace {

// First ring capacity of a subject's cache (entries; doubles up to MaxCachedMessagesPerSubject): a
// subject published to once or twice costs 64 bytes of ring, a busy one grows in a few steps.
constexpr uint32_t kFirstRing = 4;

constexpr std::string_view kSnapshot = "snapshot";
constexpr std::string_view kHistory = "history";
constexpr std::string_view kRecovered = "recovered";

// The payload of a live frame: what follows the first '\n' after its WebSocket head.
std::string_view payload_of(const Frame* f) {
  const uint8_t* p = f->data();
  const size_t n = f->size();
  const uint8_t len7 = p[1] & 0x7f;
  const size_t head = len7 == 127 ? 10 : len7 == 126 ? 4 : 2;
  const void* nl = std::memchr(p + head, '\n', n - head);
  const uint8_t* body = static_cast<const uint8_t*>(nl) + 1;
  return std::string_view(reinterpret_cast<const char*>(body), static_cast<size_t>(p + n - body));
}

// A subject's Cache and its ring are blocks (io/arena.h: with its frames, in huge pages), charged to the cache as
// what they occupy.
size_t cache_cost() { return mem::block_cost(sizeof(Cache)); }
size_t ring_cost(uint32_t cap) { return mem::block_cost(cap * sizeof(Cache::Entry)); }

uint32_t ring_cap_for(uint32_t want) {
  uint32_t cap = kFirstRing;
  while (cap < want) cap <<= 1;
  return cap;
}

// Builds the frames of one answer in one allocation: first measure (out == nullptr), then write.
class AnswerWriter {
 public:
  explicit AnswerWriter(const Subject* s) : subject_(s->name()) { epoch_len_ = format_epoch(s->epoch, epoch_); }

  void msg(const Frame* live, uint64_t seq, std::string_view kind) {
    const std::string_view payload = payload_of(live);
    char header[kMaxMsgHeader + kMaxKindLen];
    const size_t mh = write_msg_header_backwards(header + sizeof header, subject_, epoch(), seq, kind);
    const uint64_t len = mh + payload.size();
    const size_t hh = server_head_size(len);
    if (out_) {
      uint8_t* p = out_->bytes + out_->end;
      write_server_head(p, live->opcode, len);
      std::memcpy(p + hh, header + sizeof header - mh, mh);
      std::memcpy(p + hh + mh, payload.data(), payload.size());
      out_->end += static_cast<uint32_t>(hh + len);
    } else {
      size_ += hh + len;
    }
  }

  void line(std::string_view verb, uint64_t seq) {
    char text[kMaxMsgHeader + kMaxKindLen];
    const size_t n = write_position_line(text, verb, subject_, epoch(), seq);
    const size_t hh = server_head_size(n);
    if (out_) {
      uint8_t* p = out_->bytes + out_->end;
      write_server_head(p, kOpText, n);
      std::memcpy(p + hh, text, n);
      out_->end += static_cast<uint32_t>(hh + n);
    } else {
      size_ += hh + n;
    }
  }

  size_t size() const { return size_; }

  // After measuring: the frame to write into (nullptr when out of memory).
  Frame* start() {
    out_ = Frame::alloc(size_);
    return out_;
  }

 private:
  std::string_view epoch() const { return std::string_view(epoch_, epoch_len_); }

  std::string_view subject_;
  char epoch_[16];
  size_t epoch_len_ = 0;
  size_t size_ = 0;
  Frame* out_ = nullptr;
};

}  // namespace

HomeCache::~HomeCache() {
  // At shutdown, with the registry still alive: free every cache without touching the registry (it is
  // being destroyed with the server and drops its references itself).
  // (Frames may outlive it, queued to connections: each is let go, so no rendition is charged here later.)
  auto release = [this](Cache* c) {
    for (uint32_t i = 0; i < c->count; i++) {
      let_go(c->at(i).frame);
      c->at(i).frame->unref();
    }
    for (Frame* f : {c->snapshot, c->snapshot_msg}) {
      if (!f) continue;
      let_go(f);
      f->unref();
    }
    mem::block_free(c->ring, ring_cost(c->cap));
    c->subject->cache = nullptr;
    mem::block_free(c, cache_cost());
  };
  for (Cache* c : by_id_)
    if (c) release(c);
  mem::free(order_, order_cap_ * sizeof(Aged));
}

void HomeCache::charge(Cache* c, int64_t delta) {
  c->bytes += static_cast<uint64_t>(delta);
  total_ += static_cast<uint64_t>(delta);
  counters_.set(k_cached_bytes, bytes());
}

void HomeCache::keep(Frame* f) {
  if (f->cache_holds++) return;
  f->alt_account = &alt_bytes_;
  f->cache_state.store(Frame::kCached);
  if (f->alt.load()) f->charge_alt();  // rendered before it was cached
}

void HomeCache::let_go(Frame* f) {
  if (--f->cache_holds) return;
  if (f->cache_state.exchange(Frame::kUncached) == Frame::kAltCharged) alt_bytes_.fetch_sub(f->alt.load()->cost);
}

Cache* HomeCache::create(Subject* s) {
  Cache* c = static_cast<Cache*>(mem::block_alloc(sizeof(Cache)));
  if (!c) return nullptr;
  Cache::Entry* ring = static_cast<Cache::Entry*>(mem::block_alloc(kFirstRing * sizeof(Cache::Entry)));
  if (!ring) {
    mem::block_free(c, cache_cost());
    return nullptr;
  }
  try {
    // Room for every id, so that freeing a cache never allocates; grown geometrically, since reserve(n) allocates
    // exactly n: a reserve per new cache copied the whole table each time, quadratic in the subjects (at a
    // million subjects their first messages took both cores in memmove, W4 in bench/c1m.ts).
    if (by_id_.capacity() < caches_ + 1) {
      const size_t n = std::max<size_t>(caches_ + 1, by_id_.capacity() * 2);
      by_id_.reserve(n);
      gens_.reserve(n);
      free_ids_.reserve(n);
    }
  } catch (const std::bad_alloc&) {
    mem::block_free(ring, ring_cost(kFirstRing));
    mem::block_free(c, cache_cost());
    return nullptr;
  }
  uint32_t id;
  if (free_ids_.empty()) {  // (every id is in use: by_id_.size() == caches_ < capacity)
    id = static_cast<uint32_t>(by_id_.size());
    by_id_.push_back(c);
    gens_.push_back(0);
  } else {
    id = free_ids_.back();
    free_ids_.pop_back();
    by_id_[id] = c;
  }
  *c = Cache{s, nullptr, nullptr, id, ring, kFirstRing, 0, 0, 0, 0, nullptr, 0, nullptr, 0};
  caches_++;
  s->cache = c;
  charge(c, static_cast<int64_t>(cache_cost() + ring_cost(kFirstRing)));
  return c;
}

void HomeCache::unlink(Cache* c) {
  if (!linked(c)) return;
  (c->prev ? c->prev->next : lru_) = c->next;
  (c->next ? c->next->prev : mru_) = c->prev;
  c->prev = c->next = nullptr;
}

void HomeCache::touch(Cache* c) {
  if (mru_ == c) return;
  unlink(c);
  c->prev = mru_;
  c->next = nullptr;
  (mru_ ? mru_->next : lru_) = c;
  mru_ = c;
}

void HomeCache::free_cache(Cache* c) {
  while (c->count) drop_oldest(c);
  if (c->snapshot) drop_snapshot(c);  // (unlinks it)
  Subject* s = c->subject;
  charge(c, -static_cast<int64_t>(cache_cost() + ring_cost(c->cap)));
  by_id_[c->id] = nullptr;
  gens_[c->id]++;              // its entries in the age queue are stale from now on
  free_ids_.push_back(c->id);  // (never allocates: reserved for every cache at create)
  mem::block_free(c->ring, ring_cost(c->cap));
  mem::block_free(c, cache_cost());
  caches_--;
  s->cache = nullptr;
  registry_.unhold(s);  // may free s (the registry's reference was the last)
}

void HomeCache::drop_oldest(Cache* c) {
  Frame* f = c->ring[c->head].frame;
  let_go(f);
  charge(c, -static_cast<int64_t>(f->cost));
  f->unref();
  c->head = (c->head + 1) & (c->cap - 1);
  c->count--;
  c->first_seq++;
  messages_--;
  counters_.sub(k_cached_messages);
  if (c->count) c->oldest_ms = c->ring[c->head].at_ms;
}

Cache* HomeCache::holder(const Aged& a) const {
  if (gens_[a.id] != a.gen) return nullptr;  // its cache was freed (and the id perhaps reused)
  Cache* c = by_id_[a.id];
  return c->count && c->first_seq <= a.seq && a.seq <= c->last_seq() ? c : nullptr;
}

bool HomeCache::order_resize(size_t cap) {
  Aged* ring = static_cast<Aged*>(mem::alloc(cap * sizeof(Aged)));
  if (!ring) return false;
  for (size_t i = 0; i < order_size_; i++) ring[i] = aged(i);
  mem::free(order_, order_cap_ * sizeof(Aged));
  order_ = ring;
  order_cap_ = cap;
  order_head_ = 0;
  return true;
}

bool HomeCache::order_push(Aged a) {
  if (order_size_ == order_cap_) {
    // Stale entries past the live ones (and a little slack, so that a small queue is not compacted on every
    // push): dropped in one pass rather than grown around.
    if (order_size_ >= 2 * messages_ + kOrderSlack) order_compact();
    if (order_size_ == order_cap_ && !order_resize(order_cap_ ? order_cap_ * 2 : kOrderSlack)) return false;
  }
  aged(order_size_++) = a;
  total_ += sizeof(Aged);
  return true;
}

void HomeCache::order_pop() {
  order_head_ = (order_head_ + 1) & (order_cap_ - 1);
  order_size_--;
  total_ -= sizeof(Aged);
  // Gives back what a burst made it grow to (a quarter used: halving leaves it half full).
  if (order_cap_ > kOrderSlack && order_size_ < order_cap_ / 4) order_resize(order_cap_ / 2);
}

void HomeCache::order_compact() {
  size_t kept = 0;
  for (size_t i = 0; i < order_size_; i++)
    if (holder(aged(i))) aged(kept++) = aged(i);
  total_ -= (order_size_ - kept) * sizeof(Aged);
  order_size_ = kept;
}

void HomeCache::prefetch_ahead() {
  // Three stages, each reading only what an earlier one fetched: the cache of the entry kAhead behind the
  // head, the ring slot of the one half as far, the frame of the next.
  if (order_size_ > kAhead) __builtin_prefetch(by_id_[aged(kAhead).id]);
  if (order_size_ > kAhead / 2) {
    const Aged& a = aged(kAhead / 2);
    if (const Cache* c = holder(a)) __builtin_prefetch(&c->at(static_cast<uint32_t>(a.seq - c->first_seq)));
  }
  if (order_size_ > 1) {
    const Aged& a = aged(1);
    if (const Cache* c = holder(a)) __builtin_prefetch(c->at(static_cast<uint32_t>(a.seq - c->first_seq)).frame, 1);
  }
}

void HomeCache::evict_head() {
  const Aged a = aged(0);
  order_pop();
  prefetch_ahead();
  Cache* c = holder(a);
  if (!c) return;  // stale: its cache dropped it already
  // The oldest entry of c in the queue is c's oldest message: every older one was popped or had been dropped.
  drop_oldest(c);
  counters_.add(k_cache_evictions);
  if (!c->count && !c->snapshot) free_cache(c);
}

void HomeCache::drop_snapshot(Cache* c) {
  let_go(c->snapshot);
  if (c->snapshot_msg) let_go(c->snapshot_msg);
  charge(c, -static_cast<int64_t>(c->snapshot->cost + (c->snapshot_msg ? c->snapshot_msg->cost : 0)));
  c->snapshot->unref();
  if (c->snapshot_msg) c->snapshot_msg->unref();
  c->snapshot = c->snapshot_msg = nullptr;
  c->subject->has_snapshot.store(false, std::memory_order_release);
  unlink(c);
}

bool HomeCache::grow(Cache* c) {
  const uint32_t cap = c->cap * 2;
  Cache::Entry* ring = static_cast<Cache::Entry*>(mem::block_alloc(cap * sizeof(Cache::Entry)));
  if (!ring) return false;
  for (uint32_t i = 0; i < c->count; i++) ring[i] = c->at(i);
  mem::block_free(c->ring, ring_cost(c->cap));
  charge(c, static_cast<int64_t>(ring_cost(cap) - ring_cost(c->cap)));
  c->ring = ring;
  c->cap = cap;
  c->head = 0;
  return true;
}

void HomeCache::append(Subject* s, Frame* f, uint64_t seq, bool retained, uint64_t now_ms) {
  Cache* c = s->cache;
  if (!c) {
    c = create(s);
    if (!c) {
      counters_.add(k_alloc_failures);
      return;
    }
  }
  expire(c, now_ms);  // does not free c: the caller's message is about to be added (and s is held)
  // Entries are numbered first_seq + i: a message that does not follow the last one (a cluster gap the engine
  // could not fill) starts the run again rather than leave a hole a recovery would serve.
  while (c->count && c->last_seq() + 1 != seq) {
    drop_oldest(c);
    counters_.add(k_cache_evictions);
  }
  if (c->count == opt_.max_messages || (c->count == c->cap && (c->cap >= ring_cap_for(opt_.max_messages) || !grow(c)))) {
    if (c->count) {
      drop_oldest(c);
      counters_.add(k_cache_evictions);
    }
  }
  if (opt_.max_messages && c->count < c->cap) {
    if (c->count == 0) {
      c->first_seq = seq;
      c->oldest_ms = now_ms;
    }
    f->ref();
    keep(f);
    c->ring[(c->head + c->count) & (c->cap - 1)] = Cache::Entry{f, now_ms};
    c->count++;
    charge(c, static_cast<int64_t>(f->cost));
    counters_.add(k_cached_messages);
    messages_++;
    if (!order_push(Aged{seq, c->id, gens_[c->id]})) {  // not evictable without its entry: do not keep it
      c->count--;
      messages_--;
      let_go(f);
      charge(c, -static_cast<int64_t>(f->cost));
      counters_.sub(k_cached_messages);
      counters_.add(k_alloc_failures);
      f->unref();
    }
  }
  if (retained) set_snapshot(c, f, seq);
  if (c->snapshot) {
    touch(c);
  } else if (!c->count) {  // kept nothing (MaxCachedMessagesPerSubject 0, or out of memory)
    free_cache(c);
    return;
  }
  enforce_bound();
}

void HomeCache::reset(Subject* s) {
  if (s->cache) free_cache(s->cache);  // (unholds s)
  else registry_.unhold(s);            // held without a cache (Broker::on_sync, on_numbered): nothing else would
}

void HomeCache::snapshot(Subject* s, Frame* f, uint64_t seq) {
  Cache* c = s->cache;
  if (!c && !(c = create(s))) {
    counters_.add(k_alloc_failures);
    return;
  }
  set_snapshot(c, f, seq);
  touch(c);
  enforce_bound();
}

void HomeCache::set_snapshot(Cache* c, Frame* f, uint64_t seq) {
  if (c->snapshot) drop_snapshot(c);
  f->ref();
  keep(f);
  c->snapshot = f;
  c->snapshot_seq = seq;
  charge(c, static_cast<int64_t>(f->cost));
  c->subject->has_snapshot.store(true, std::memory_order_release);
}

void HomeCache::enforce_bound() {
  counters_.set(k_cached_bytes, bytes());  // (renditions are added by other threads, without charge)
  while (bytes() > opt_.max_bytes && (order_size_ || lru_)) {
    if (order_size_) {  // the oldest message of all
      evict_head();
    } else {            // only snapshots left: the least recently published subject's
      counters_.add(k_cache_evictions);
      free_cache(lru_);
    }
  }
}

void HomeCache::expire(Cache* c, uint64_t now_ms) {
  if (!opt_.expire_ms) return;
  while (c->count && c->oldest_ms + opt_.expire_ms <= now_ms) {
    drop_oldest(c);
    counters_.add(k_cache_evictions);
  }
}

void HomeCache::expire(uint64_t now_ms) {
  if (opt_.expire_ms) {
    while (order_size_) {
      const Cache* c = holder(aged(0));
      if (c && c->oldest_ms + opt_.expire_ms > now_ms) break;
      evict_head();  // (a stale head goes too)
    }
  }
}

Frame* HomeCache::snapshot_message(Cache* c) {
  if (!c->snapshot_msg) {
    AnswerWriter w(c->subject);
    w.msg(c->snapshot, c->snapshot_seq, kSnapshot);
    Frame* f = w.start();
    if (!f) return nullptr;
    w.msg(c->snapshot, c->snapshot_seq, kSnapshot);
    c->snapshot_msg = f;
    keep(f);
    charge(c, static_cast<int64_t>(f->cost));
  }
  c->snapshot_msg->ref();
  return c->snapshot_msg;
}

void HomeCache::answer(Subject* s, Request& r, uint64_t now_ms) {
  r.answer = nullptr;
  r.failed = false;
  if (r.barrier) return;
  Cache* c = s->cache;
  if (c) {
    expire(c, now_ms);  // never serve what expired
    if (!c->count && !c->snapshot) {
      free_cache(c);    // (the asker's interest keeps s registered)
      c = nullptr;
    }
  }
  const bool snapshot = c && c->snapshot;
  const uint64_t last = s->seq;

  if (r.spec.mode == SpecMode::kLive) {
    if (!snapshot) return;
    counters_.add(k_snapshots_sent);
    r.answer = snapshot_message(c);
    r.failed = !r.answer;
    return;
  }

  // What to send: [first, last] of the cache, with a kind, and the lines around it.
  uint64_t from = 0, to = 0;  // from > to: no messages
  std::string_view kind;
  bool resync = false;
  bool snapshot_first = false;
  // The cache ends at the subject's last message (appends never fail to add one once the cache exists);
  // should it not, it is treated as empty rather than serve a gap.
  const uint64_t have = c && c->count && c->last_seq() == last ? c->count : 0;
  auto bytes_of = [&](uint64_t q, std::string_view k) {
    AnswerWriter one(s);
    one.msg(c->at(static_cast<uint32_t>(q - c->first_seq)).frame, q, k);
    return static_cast<uint64_t>(one.size());
  };
  if (r.spec.mode == SpecMode::kHistory) {
    uint64_t n = r.spec.seq < have ? r.spec.seq : have;
    uint64_t fit = 0, used = 0;  // the newest messages within the allowance
    for (; fit < n; fit++) {
      const uint64_t b = bytes_of(last - fit, kHistory);
      if (used + b > r.allowance) break;
      used += b;
    }
    n = fit;
    from = last - n + 1;
    to = last;
    kind = kHistory;
    snapshot_first = snapshot && (n == 0 || c->snapshot_seq < from);
    counters_.add(k_history_requests);
  } else {
    const uint64_t q = r.spec.seq;
    const bool same = r.spec.epoch == s->epoch && q <= last;
    if (same && q == last) {
      from = 1, to = 0;
    } else if (same && have && c->first_seq <= q + 1 && [&] {
                 uint64_t used = 0;  // everything missed must fit, or nothing is sent (RESYNC)
                 for (uint64_t k = q + 1; k <= last && used <= r.allowance; k++) used += bytes_of(k, kRecovered);
                 return used <= r.allowance;
               }()) {
      from = q + 1;
      to = last;
      kind = kRecovered;
    } else {
      resync = true;
      from = 1, to = 0;
      snapshot_first = snapshot;
    }
    counters_.add(resync ? k_resyncs : k_recoveries);
  }

  AnswerWriter w(s);
  Frame* out = nullptr;
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 1 && !(out = w.start())) {
      counters_.add(k_alloc_failures);
      r.failed = true;
      return;
    }
    if (resync) w.line("RESYNC", last);
    if (snapshot_first) w.msg(c->snapshot, c->snapshot_seq, kSnapshot);
    for (uint64_t q = from; q <= to && from <= to; q++) w.msg(c->at(static_cast<uint32_t>(q - c->first_seq)).frame, q, kind);
    if (!resync) w.line("SYNC", last);
  }
  if (snapshot_first) counters_.add(k_snapshots_sent);
  counters_.add(k_messages_replayed, from <= to ? to - from + 1 : 0);
  r.answer = out;
}

}  // namespace starling
