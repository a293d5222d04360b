// History cache and snapshots at a subject's home. See cache.h.
#include "pubsub/cache.h"

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
  for (Cache* c = lru_; c;) {
    Cache* next = c->next;
    for (uint32_t i = 0; i < c->count; i++) c->at(i).frame->unref();
    if (c->snapshot) c->snapshot->unref();
    if (c->snapshot_msg) c->snapshot_msg->unref();
    mem::free(c->ring, c->cap * sizeof(Cache::Entry));
    c->subject->cache = nullptr;
    mem::free(c, sizeof(Cache));
    c = next;
  }
}

void HomeCache::charge(Cache* c, int64_t delta) {
  c->bytes += static_cast<uint64_t>(delta);
  total_ += static_cast<uint64_t>(delta);
  counters_.set(k_cached_bytes, total_);
}

Cache* HomeCache::create(Subject* s) {
  Cache* c = static_cast<Cache*>(mem::alloc(sizeof(Cache)));
  if (!c) return nullptr;
  Cache::Entry* ring = static_cast<Cache::Entry*>(mem::alloc(kFirstRing * sizeof(Cache::Entry)));
  if (!ring) {
    mem::free(c, sizeof(Cache));
    return nullptr;
  }
  *c = Cache{s, nullptr, nullptr, ring, kFirstRing, 0, 0, 0, nullptr, 0, nullptr, 0};
  s->cache = c;
  charge(c, static_cast<int64_t>(sizeof(Cache) + kFirstRing * sizeof(Cache::Entry)));
  return c;
}

void HomeCache::unlink(Cache* c) {
  (c->prev ? c->prev->next : lru_) = c->next;
  (c->next ? c->next->prev : mru_) = c->prev;
  c->prev = c->next = nullptr;
}

void HomeCache::touch(Cache* c) {
  if (mru_ == c) return;
  if (c->prev || c->next || lru_ == c) unlink(c);
  c->prev = mru_;
  c->next = nullptr;
  (mru_ ? mru_->next : lru_) = c;
  mru_ = c;
}

void HomeCache::free_cache(Cache* c) {
  while (c->count) drop_oldest(c);
  if (c->snapshot) drop_snapshot(c);
  unlink(c);
  Subject* s = c->subject;
  charge(c, -static_cast<int64_t>(sizeof(Cache) + c->cap * sizeof(Cache::Entry)));
  mem::free(c->ring, c->cap * sizeof(Cache::Entry));
  mem::free(c, sizeof(Cache));
  s->cache = nullptr;
  registry_.unhold(s);  // may free s (the registry's reference was the last)
}

void HomeCache::drop_oldest(Cache* c) {
  Frame* f = c->ring[c->head].frame;
  charge(c, -static_cast<int64_t>(f->cost));
  f->unref();
  c->head = (c->head + 1) & (c->cap - 1);
  c->count--;
  c->first_seq++;
  counters_.sub(k_cached_messages);
}

void HomeCache::drop_snapshot(Cache* c) {
  charge(c, -static_cast<int64_t>(c->snapshot->cost + (c->snapshot_msg ? c->snapshot_msg->cost : 0)));
  c->snapshot->unref();
  if (c->snapshot_msg) c->snapshot_msg->unref();
  c->snapshot = c->snapshot_msg = nullptr;
  c->subject->has_snapshot.store(false, std::memory_order_release);
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

void HomeCache::append(Subject* s, Frame* f, bool retained, uint64_t now_ms) {
  Cache* c = s->cache;
  if (!c) {
    c = create(s);
    if (!c) {
      counters_.add(k_alloc_failures);
      return;
    }
  }
  expire(c, now_ms);  // does not free c: the caller's message is about to be added (and s is held)
  if (c->count == opt_.max_messages || (c->count == c->cap && (c->cap >= ring_cap_for(opt_.max_messages) || !grow(c)))) {
    if (c->count) {
      drop_oldest(c);
      counters_.add(k_cache_evictions);
    }
  }
  if (opt_.max_messages && c->count < c->cap) {
    if (c->count == 0) c->first_seq = s->seq;
    f->ref();
    c->ring[(c->head + c->count) & (c->cap - 1)] = Cache::Entry{f, now_ms};
    c->count++;
    charge(c, static_cast<int64_t>(f->cost));
    counters_.add(k_cached_messages);
  }
  if (retained) {
    if (c->snapshot) drop_snapshot(c);
    f->ref();
    c->snapshot = f;
    c->snapshot_seq = s->seq;
    charge(c, static_cast<int64_t>(f->cost));
    s->has_snapshot.store(true, std::memory_order_release);
  }
  touch(c);
  enforce_bound();
}

void HomeCache::enforce_bound() {
  while (total_ > opt_.max_bytes && lru_) {
    Cache* c = lru_;
    counters_.add(k_cache_evictions);
    if (c->count) {
      drop_oldest(c);
    } else {
      free_cache(c);  // its snapshot goes last
    }
  }
}

void HomeCache::expire(Cache* c, uint64_t now_ms) {
  if (!opt_.expire_ms) return;
  while (c->count && c->ring[c->head].at_ms + opt_.expire_ms <= now_ms) {
    drop_oldest(c);
    counters_.add(k_cache_evictions);
  }
}

void HomeCache::expire(uint64_t now_ms) {
  for (Cache* c = lru_; c;) {
    Cache* next = c->next;
    expire(c, now_ms);
    if (!c->count && !c->snapshot) free_cache(c);
    c = next;
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
    charge(c, static_cast<int64_t>(f->cost));
  }
  c->snapshot_msg->ref();
  return c->snapshot_msg;
}

void HomeCache::answer(Subject* s, Request& r, uint64_t now_ms) {
  r.answer = nullptr;
  r.failed = false;
  Cache* c = s->cache;
  if (c) expire(c, now_ms);  // never serve what expired (c stays: freeing waits for the pass)
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
  if (r.spec.mode == SpecMode::kHistory) {
    const uint64_t have = c ? c->count : 0;
    const uint64_t n = r.spec.seq < have ? r.spec.seq : have;
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
    } else if (same && c && c->count && c->first_seq <= q + 1) {
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
