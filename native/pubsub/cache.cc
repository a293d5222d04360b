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
  // Every cache holds messages (the heap) or a snapshot (the list), or both (freed with the list).
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
    mem::free(c->ring, c->cap * sizeof(Cache::Entry));
    c->subject->cache = nullptr;
    mem::free(c, sizeof(Cache));
  };
  for (const HeapSlot& h : heap_)
    if (!h.cache->snapshot) release(h.cache);
  for (Cache* c = lru_; c;) {
    Cache* next = c->next;
    release(c);
    c = next;
  }
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
  Cache* c = static_cast<Cache*>(mem::alloc(sizeof(Cache)));
  if (!c) return nullptr;
  Cache::Entry* ring = static_cast<Cache::Entry*>(mem::alloc(kFirstRing * sizeof(Cache::Entry)));
  if (!ring) {
    mem::free(c, sizeof(Cache));
    return nullptr;
  }
  try {
    // Room for every cache, so that heap_push never allocates; grown geometrically, since reserve(n) allocates
    // exactly n: a reserve per new cache copied the whole heap each time, quadratic in the subjects (at a million
    // subjects their first messages took both cores in memmove, W4 in bench/c1m.ts).
    if (heap_.capacity() < caches_ + 1) heap_.reserve(std::max<size_t>(caches_ + 1, heap_.capacity() * 2));
  } catch (const std::bad_alloc&) {
    mem::free(ring, kFirstRing * sizeof(Cache::Entry));
    mem::free(c, sizeof(Cache));
    return nullptr;
  }
  *c = Cache{s, nullptr, nullptr, kNotInHeap, ring, kFirstRing, 0, 0, 0, 0, nullptr, 0, nullptr, 0};
  caches_++;
  s->cache = c;
  charge(c, static_cast<int64_t>(sizeof(Cache) + kFirstRing * sizeof(Cache::Entry)));
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
  charge(c, -static_cast<int64_t>(sizeof(Cache) + c->cap * sizeof(Cache::Entry)));
  mem::free(c->ring, c->cap * sizeof(Cache::Entry));
  mem::free(c, sizeof(Cache));
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
  counters_.sub(k_cached_messages);
  if (!c->count) {
    heap_remove(c);
  } else {
    c->oldest_ms = c->ring[c->head].at_ms;
    heap_[c->heap_at].key = c->oldest_ms;
    heap_down(c->heap_at);  // its oldest message is younger now
  }
}

bool HomeCache::heap_push(Cache* c) {
  try {
    heap_.push_back(HeapSlot{c->oldest_ms, c});  // (never allocates: reserved for every cache at create)
  } catch (const std::bad_alloc&) {
    return false;
  }
  c->heap_at = static_cast<uint32_t>(heap_.size() - 1);
  heap_up(c->heap_at);
  return true;
}

void HomeCache::heap_remove(Cache* c) {
  const uint32_t i = c->heap_at;
  if (i == kNotInHeap) return;
  const HeapSlot last = heap_.back();
  heap_.pop_back();
  c->heap_at = kNotInHeap;
  if (i < heap_.size()) {  // the last slot fills the hole, then finds its place either way
    heap_put(i, last);
    heap_down(i);
    heap_up(last.cache->heap_at);
  }
}

// Both move a hole, not a slot: each level writes one slot (and its cache's heap_at), the moving one is put once.
void HomeCache::heap_up(uint32_t i) {
  const HeapSlot moving = heap_[i];
  while (i > 0) {
    const uint32_t parent = (i - 1) / kHeapArity;
    if (heap_[parent].key <= moving.key) break;
    heap_put(i, heap_[parent]);
    i = parent;
  }
  heap_put(i, moving);
}

void HomeCache::heap_down(uint32_t i) {
  const uint32_t n = static_cast<uint32_t>(heap_.size());
  const HeapSlot moving = heap_[i];
  for (;;) {
    const uint32_t first = kHeapArity * i + 1;
    if (first >= n) break;
    const uint32_t end = std::min(first + kHeapArity, n);
    uint32_t least = first;
    for (uint32_t j = first + 1; j < end; j++)
      if (heap_[j].key < heap_[least].key) least = j;
    if (heap_[least].key >= moving.key) break;
    heap_put(i, heap_[least]);
    i = least;
  }
  heap_put(i, moving);
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
  Cache::Entry* ring = static_cast<Cache::Entry*>(mem::alloc(cap * sizeof(Cache::Entry)));
  if (!ring) return false;
  for (uint32_t i = 0; i < c->count; i++) ring[i] = c->at(i);
  mem::free(c->ring, c->cap * sizeof(Cache::Entry));
  charge(c, static_cast<int64_t>((cap - c->cap) * sizeof(Cache::Entry)));
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
    if (c->count == 1 && !heap_push(c)) {  // not evictable without its heap entry: do not keep it
      c->count = 0;
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
  while (bytes() > opt_.max_bytes && (!heap_.empty() || lru_)) {
    counters_.add(k_cache_evictions);
    if (!heap_.empty()) {  // the oldest message of all
      Cache* c = heap_[0].cache;
      drop_oldest(c);
      if (!c->count && !c->snapshot) free_cache(c);
    } else {               // only snapshots left: the least recently published subject's
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
    while (!heap_.empty() && heap_[0].key + opt_.expire_ms <= now_ms) {
      Cache* c = heap_[0].cache;
      drop_oldest(c);
      counters_.add(k_cache_evictions);
      if (!c->count && !c->snapshot) free_cache(c);
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
