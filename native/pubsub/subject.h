// Subjects: the process-wide registry (name → Subject) and the per-workgroup subscriber lists.
//
// Ownership and threads (see THREADS.md):
// - A Subject is created by the first SUB for its name on any workgroup and removed from the registry
//   when the last workgroup loses its last local subscriber. It is freed when its reference count drops
//   to zero: the registry holds one reference; every in-flight publish/deliver envelope holds one.
// - `home` is the one workgroup that assigns the subject's sequence numbers: `seq` is touched only by the
//   home thread (DESIGN.md, subject ownership). It is the workgroup of the subject's first subscriber, so
//   that a subject whose subscribers share one workgroup (every one-to-one subject) is sequenced where it
//   is delivered: a publish then crosses at most one thread, not two.
// - `interest` has bit w set while workgroup w has at least one local subscriber; bits are set and
//   cleared under the registry shard lock, read lock-free by the home thread when it fans out.
// - local(w) is the list of workgroup w's subscribers; only workgroup w's thread touches it.
// - With the cache on (CacheSize > 0), a subject also stays registered while its home keeps state for it
//   (`held`: cached messages or a retained snapshot; pubsub/cache.h), even with no subscriber, so that it
//   keeps its epoch; `held` and `erased` change only under the shard lock. `cache` is the home's alone.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

namespace starling {

struct Subject;
struct Subscriber;
struct Cache;
class Permissions;

// Subscriber::entitle flags.
constexpr uint8_t kEntitleAddressMayNotPublish = 1;  // its address is not in PublishAllowFromAddressList
constexpr uint8_t kEntitleWarned = 2;             // "AUTH expiring" was sent for the token in force

// One entry of a subject's local subscriber list: the subscriber and the index of this subscription in
// the subscriber's own list (so both sides can be removed in O(1) by swapping with the last entry).
struct SubRef {
  Subscriber* who;
  uint32_t slot;          // index into who->subs
  uint32_t conflate_ms;   // "SUB conflate=<ms>": at most one message per interval; 0: every message
};

// One entry of a subscriber's list: the subject and the index of the subscriber in subject->local(wg).
struct SubSlot {
  Subject* subject;
  uint32_t index;
};

// A subject's subscribers on one workgroup. Grows by doubling; never shrinks while the subject lives.
struct SubList {
  SubRef* items = nullptr;
  uint32_t size = 0;
  uint32_t cap = 0;
};

// The subscriptions of one connection. The first subscription lives inline (most connections of the
// capacity workloads hold exactly one, and a separate allocation would cost 32 bytes each).
struct Subscriber {
  SubSlot* subs = &one;
  uint32_t nsubs = 0;
  uint32_t capsubs = 1;
  SubSlot one{};
  // Entitlement (PROTOCOL.md; set by the Broker): the permission set of the connection's token (one
  // reference; nullptr: none accepted yet, the mode's anonymous set applies), when that token expires
  // (unix seconds; 0: never), the kEntitle* flags, and the AUTH commands taken since the last pass.
  Permissions* perms = nullptr;
  uint32_t expiry = 0;
  uint8_t entitle = 0;
  uint8_t auths = 0;
  // Its publishes are acknowledged once their home has numbered them, not when handed to it (set by the host
  // for HTTP connections: a client's next POST may come on another connection, which another workgroup reads,
  // and an ACK on hand-over would let that one be numbered first).
  bool ack_numbered = false;

  Subscriber() = default;
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  ~Subscriber();

  // Index of subject in subs, or -1. Linear: bounded by MaxSubscriptionsPerConnection.
  int find(const Subject* s) const;
};

struct Subject {
  std::atomic<uint32_t> refs;
  uint32_t hash;                   // the registry's key (Registry::key_of); beside refs, where padding was
  std::atomic<uint64_t> interest;  // bit w: workgroup w has local subscribers
  uint64_t seq;                    // last sequence number assigned; home thread only
  uint64_t epoch;                  // changes whenever seq restarts (each creation); see Registry
  Cache* cache;                    // home thread only: history and snapshot (nullptr until the first message)
  uint8_t home;                    // workgroup that assigns seq (at most 64 workgroups)
  uint8_t nworkgroups;
  uint8_t name_len;                // subjects are at most 255 bytes
  std::atomic<bool> has_snapshot;  // set by the home: a plain SUB must ask the home for the snapshot
  // Cluster (ClusterEngine = redis): the home holds the engine's state of the subject (its epoch, last number,
  // history) and gets its messages; until then a SUB waits at the home. Set and cleared by the home.
  std::atomic<bool> synced;
  bool engine_known;               // home thread only: epoch and seq came from the engine at least once
  bool held;                       // shard lock: the home keeps state for it (see above)
  bool erased;                     // shard lock: no longer in the registry (a later SUB/PUB makes a new one)

  std::string_view name() const { return {reinterpret_cast<const char*>(lists() + nworkgroups), name_len}; }
  SubList& local(unsigned wg) { return lists()[wg]; }
  SubList* lists() const { return reinterpret_cast<SubList*>(const_cast<Subject*>(this) + 1); }

  void ref() { refs.fetch_add(1, std::memory_order_relaxed); }
  // Drops a reference; frees the subject (and its lists) when it was the last.
  void unref();
};
// 48 bytes: with two workgroups' lists and a 9-byte name (W3's) a subject is a 96-byte block (io/memory.h).
static_assert(sizeof(Subject) == 48);

// Writes the epoch as a base-36 token into out (at least 13 bytes); returns its length.
size_t format_epoch(uint64_t epoch, char* out);

// Adds subscriber `who` to subject->local(wg) and subject to who's list. The caller has checked that
// who is not already subscribed (Subscriber::find). Throws std::bad_alloc (nothing changed).
void link(Subscriber* who, Subject* subject, unsigned wg, uint32_t conflate_ms = 0);

// Removes who's subscription number k (index into who->subs) from both lists. Returns the subject,
// whose local(wg) list may now be empty (the caller then calls Registry::release).
Subject* unlink(Subscriber* who, uint32_t k, unsigned wg);

uint64_t hash_subject(std::string_view name);

// The process-wide name → Subject map, sharded so that workgroups rarely contend. Every method is
// thread-safe. Lookups happen on SUB/UNSUB and once per received publish, never per delivery.
class Registry {
 public:
  Registry(unsigned nworkgroups, uint64_t epoch_base);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Returns the subject, creating it (with home wg) if needed, and marks workgroup wg as interested. Called by
  // workgroup wg's thread when it adds the first local subscriber. Does not add a reference for the
  // caller: the subject stays registered while wg's interest bit is set.
  // *first (if given) says whether wg's interest bit was clear before.
  Subject* acquire(std::string_view name, unsigned wg, bool* first = nullptr);

  // Clears wg's interest bit (wg's local list is empty); unregisters and unrefs the subject when no
  // workgroup is interested any more. Called by workgroup wg's thread only.
  void release(Subject* s, unsigned wg);

  // Returns the subject with a reference the caller must drop, or nullptr if it is not registered.
  Subject* find_ref(std::string_view name);

  // With the cache on: the subject, created with home `home` if needed (a publish to a subject nobody
  // subscribes to), with a reference the caller must drop. A subject created here is registered with no
  // interest and not held: its home holds it when it caches the message (hold), and a publish dropped
  // before that calls forget_if_idle. Throws std::bad_alloc.
  Subject* find_or_create_ref(std::string_view name, unsigned home);

  // The home keeps state for s: it stays registered without subscribers. False if s was erased meanwhile
  // (its publishes then go to the subject now registered under the name: find_or_create_ref).
  bool hold(Subject* s);
  // The home dropped its state for s: unregisters it (and drops the registry's reference) if no
  // workgroup is interested either.
  void unhold(Subject* s);
  // Unregisters s if nothing keeps it: no interest and not held.
  void forget_if_idle(Subject* s);

  // Number of registered subjects (approximate while other threads change it).
  size_t size() const { return count_.load(std::memory_order_relaxed); }


 private:
  // 64 shards: with 2-64 workgroups, two threads rarely want the same lock at once.
  static constexpr unsigned kShards = 64;
  struct Shard {
    std::mutex lock;
    std::vector<Subject*> slots;   // open addressing, linear probing, power-of-two size
    size_t used = 0;
  };
  // A subject's 32-bit key: its top 6 bits pick the shard, its low bits the slot (a shard's table stays under 2^26
  // slots). 32 bits, so that the key fits in the Subject's padding: a Subject is 48 bytes before its lists and name.
  static uint32_t key_of(std::string_view name) { return static_cast<uint32_t>(hash_subject(name)); }
  static_assert(kShards == 64);
  Shard& shard_of(uint32_t hash) { return shards_[hash >> 26]; }
  static Subject** probe(Shard& sh, uint32_t hash, std::string_view name);
  static void erase(Shard& sh, Subject* s);
  static void grow(Shard& sh);
  Subject* create(std::string_view name, uint32_t hash, unsigned home);
  // The subject registered under name, created (home `home`) if absent. Caller holds sh.lock.
  Subject* find_or_create(Shard& sh, uint32_t hash, std::string_view name, unsigned home);

  const unsigned nworkgroups_;
  std::atomic<uint64_t> next_epoch_;
  std::atomic<size_t> count_{0};
  Shard shards_[kShards];
};

}  // namespace starling
