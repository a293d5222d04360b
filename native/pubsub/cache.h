// The history cache and retained snapshots of the subjects one workgroup is home of (PROTOCOL.md v2:
// "Cache, snapshot, epochs"). Only the home thread touches it: the home sequences every message of its
// subjects, so appending here in that order and answering a recovery here (Broker) is what makes a
// recovery exact — nothing published meanwhile is missed or sent twice.
//
// What a cached message costs: a reference to the frame already built for live delivery (no copy) and a
// 16-byte entry. A subject's Cache is allocated with its first message, so subscribed subjects that never
// get one cost nothing here. Frames, Caches and rings are blocks of the arena (io/arena.h), in huge pages, and
// counted as their size class: evicting touches all three, and 4 KiB pages made each touch a TLB miss. Bounds, all from configuration (DESIGN.md rule 3):
// - per subject: the last `max_messages` (MaxCachedMessagesPerSubject);
// - by age: a message older than `expire_ms` (CacheExpireTime) is dropped (checked on every append and
//   answer, and once a second by expire());
// - all subjects of this home together: `max_bytes` (its share of CacheSize). Over it, the oldest cached
//   message of any subject goes first (the age queue below), so every subject keeps about the same span of
//   time; when no message is left, the least recently published subjects' snapshots go.
// The retained snapshot (the last `PUB … +retained`) is kept through count and age eviction.
//
// An answer is bounded too: a Request carries an allowance (the connection's MaxBacklog, shared by the
// specs of one SUB). A recovery whose missed messages do not fit is answered RESYNC (the client knows it
// missed them, and may ask for history in smaller steps); history sends the newest messages that fit. So
// what one SUB can make the server queue to a client that does not read is bounded by MaxBacklog, not by
// the cache.
//
// A subject with a Cache is held in the registry (Registry::hold) so it keeps its epoch without
// subscribers; when its Cache empties (no message, no snapshot) it is released (Registry::unhold), and
// forgotten if nobody subscribes.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/frame.h"
#include "pubsub/protocol.h"
#include "pubsub/subject.h"
#include "runtime/counters.h"

namespace starling {

struct CacheOptions {
  uint32_t max_messages = 1000;  // MaxCachedMessagesPerSubject
  uint64_t expire_ms = 180000;   // CacheExpireTime; 0: messages do not expire
  uint64_t max_bytes = 0;        // this home's share of CacheSize; 0: the cache is off
};

struct Cache {
  struct Entry {
    Frame* frame;    // the live frame ("MSG <subject> <epoch>:<seq>\n" + payload behind its WebSocket head)
    uint64_t at_ms;  // when it was sequenced
  };
  Subject* subject;
  Cache* prev;             // the home's list of caches holding a snapshot, least recently published first
  Cache* next;
  uint32_t id;             // this cache's number at its home (HomeCache::by_id_), reused once it is freed
  Entry* ring;             // cap entries; count of them from head, seqs first_seq, first_seq + 1, ...
  uint32_t cap;
  uint32_t head;
  uint32_t count;
  uint64_t first_seq;
  uint64_t oldest_ms;      // at(0).at_ms while count > 0: expiry reads it without touching the ring
  Frame* snapshot;         // live frame of the last retained message, or nullptr
  uint64_t snapshot_seq;
  Frame* snapshot_msg;     // "MSG … snapshot" made from it when first asked for (shared by every asker)
  uint64_t bytes;          // what this cache keeps alive: frames, entries, this struct

  const Entry& at(uint32_t i) const { return ring[(head + i) & (cap - 1)]; }
  uint64_t last_seq() const { return first_seq + count - 1; }
};

// What a SUB spec that needs the home asks, and the home's answer (crosses threads with the request).
struct Request {
  uint64_t token = 0;      // the asking broker's, to find the connection again
  unsigned from = 0;       // the asking workgroup
  uint64_t allowance = UINT64_MAX;  // most bytes the answer may hold (snapshot aside: one message)
  Spec spec;               // spec.subject is not valid here (it points into the client's input)
  Frame* answer = nullptr; // the home's reply frames, one WebSocket message each (nullptr: nothing to send)
  bool failed = false;     // the home could not allocate the answer: the subscription is refused
  bool barrier = false;    // no answer: its coming back says the home took everything posted before it
};

class HomeCache {
 public:
  HomeCache(CacheOptions options, Registry& registry, Counters& counters)
      : opt_(options), registry_(registry), counters_(counters) {}
  ~HomeCache();
  HomeCache(const HomeCache&) = delete;
  HomeCache& operator=(const HomeCache&) = delete;

  bool enabled() const { return opt_.max_bytes != 0; }

  // The home sequenced f (header written) as s->seq. Keeps a reference to f; retained: f is also the
  // snapshot. s must be held (Registry::hold) before the first message; the caller holds a reference to s.
  // Never fails: a cache that cannot grow drops its oldest messages instead (a recovery from before them
  // is answered RESYNC), one that cannot be created caches nothing.
  // seq: f's number (the home's own, or the cluster engine's); one that does not follow the cached run drops the
  // run first (entries stay consecutive).
  void append(Subject* s, Frame* f, uint64_t seq, bool retained, uint64_t now_ms);
  // Cluster (the engine's state of s replaces ours, runtime/cluster_link.h): reset drops everything kept for s
  // (and unholds it: the caller holds a reference to s); snapshot makes f (live frame, number seq) the
  // retained snapshot, outside the history run (s held, as for append).
  void reset(Subject* s);
  void snapshot(Subject* s, Frame* f, uint64_t seq);

  // Builds the answer to r for s (the caller holds a reference to s): PROTOCOL.md v2 for each form.
  // Sets r.answer (nullptr when there is nothing to send) or r.failed.
  void answer(Subject* s, Request& r, uint64_t now_ms);

  // Drops what expired, for every subject (once a second).
  void expire(uint64_t now_ms);

  // Everything this home's caches keep alive, the SSE renditions of their frames included.
  uint64_t bytes() const { return total_ + alt_bytes_.load(std::memory_order_relaxed); }

 private:
  Cache* create(Subject* s);
  void free_cache(Cache* c);         // unholds the subject: do not touch it afterwards
  void drop_oldest(Cache* c);
  void drop_snapshot(Cache* c);
  void set_snapshot(Cache* c, Frame* f, uint64_t seq);  // f (one more reference) replaces c's snapshot
  bool grow(Cache* c);
  void expire(Cache* c, uint64_t now_ms);   // may free c
  void touch(Cache* c);              // c (holding a snapshot) was just published to: to the back of the list
  bool linked(const Cache* c) const { return c->prev || c->next || lru_ == c; }
  // The age queue: every message this home cached, in the order it was cached, which is also the order of
  // age (a home's clock only goes forward). Past CacheSize every publish evicts the oldest message of all, and
  // by age expiry takes the oldest too: both pop the queue's head. A message a subject dropped by itself (its
  // count, its own expiry, a restarted run) leaves its entry behind, stale, which the head skips; the queue is
  // compacted when stale entries outnumber the live ones, so it holds at most about twice the cached messages.
  // Its entries are 16 bytes, charged to CacheSize. Walking it is sequential, so what an eviction will touch
  // (the subject's cache, its ring, the frame: three scattered cache lines, each a miss that cost ~0.3 µs on
  // W1's 15,000 subjects here) is fetched a few evictions ahead. It replaces a heap of the subjects by their
  // oldest message, whose walks and misses were 20% of the server's CPU on W1, when the goal for the cache's
  // whole cost is 5%.
  struct Aged {
    uint64_t seq;  // the message's number
    uint32_t id;   // its cache's id
    uint32_t gen;  // gens_[id] when it was cached: the id may have been freed and reused since
  };
  // The queue's first capacity, and the stale entries it tolerates beyond the live ones before a compaction
  // (so that a small queue is not compacted on every push).
  static constexpr size_t kOrderSlack = 1024;
  // How far ahead of the head prefetch_ahead fetches a cache (its ring slot half as far, the frame at 1): a
  // miss takes about as long as a few evictions' other work.
  static constexpr size_t kAhead = 8;
  Aged& aged(size_t i) { return order_[(order_head_ + i) & (order_cap_ - 1)]; }
  const Aged& aged(size_t i) const { return order_[(order_head_ + i) & (order_cap_ - 1)]; }
  bool order_push(Aged a);
  void order_pop();
  bool order_resize(size_t cap);
  void order_compact();
  // The cache whose message a is, if that message is still cached (nullptr: stale).
  Cache* holder(const Aged& a) const;
  // Drops the queue's head: its message if it is still its cache's oldest (freeing the cache when nothing is
  // left in it), and fetches what the next evictions will touch.
  void evict_head();
  void prefetch_ahead();
  void unlink(Cache* c);
  void enforce_bound();
  // A cache slot takes / lets go f (the reference is the caller's business): the first and last of its slots
  // start and stop counting its SSE rendition here (Frame::cache_state).
  void keep(Frame* f);
  void let_go(Frame* f);
  void charge(Cache* c, int64_t delta);
  Frame* snapshot_message(Cache* c);

  const CacheOptions opt_;
  Registry& registry_;
  Counters& counters_;
  // All three have capacity for every id (reserved at create), so freeing a cache never allocates.
  std::vector<Cache*> by_id_;       // each id's cache; nullptr while the id is free
  std::vector<uint32_t> gens_;      // each id's generation: one more each time its cache is freed
  std::vector<uint32_t> free_ids_;  // ids to reuse before making new ones
  size_t caches_ = 0;
  Aged* order_ = nullptr;           // the age queue: a ring of order_cap_ (a power of two) entries
  size_t order_cap_ = 0;
  size_t order_head_ = 0;
  size_t order_size_ = 0;
  uint64_t messages_ = 0;           // messages cached here (entries of the queue that are not stale)
  // The caches holding a snapshot, least recently published first (the last to go, when no message is
  // left). Only they are listed: a publish to a subject without one touches no other subject's cache.
  Cache* lru_ = nullptr;
  Cache* mru_ = nullptr;
  uint64_t total_ = 0;         // bytes of every cache here
  std::atomic<uint64_t> alt_bytes_{0};  // the SSE renditions of the frames they keep (added by any thread)
};

}  // namespace starling
