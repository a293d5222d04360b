// Memory accounting (DESIGN.md rule 3): the bytes clients make the server hold — frames, output queues,
// partial input, connection state — counted per thread so the hot path touches no shared cache line, and
// summed by whoever checks the budget (Memory in the config). Process-wide: several servers in one
// process share one account.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "io/arena.h"

namespace starling::mem {

// Slots 0..63 belong to workgroup threads; kSharedSlot is used (atomically) by every other thread.
constexpr unsigned kSlots = 65;
constexpr unsigned kSharedSlot = 64;
// malloc's own bookkeeping per block on glibc (the size word, rounded to 16 bytes): counted so that
// many small blocks are not undercounted.
constexpr size_t kMallocOverhead = 16;

struct alignas(64) Slot {
  std::atomic<int64_t> bytes{0};
};
extern Slot g_slots[kSlots];
extern thread_local Slot* t_slot __attribute__((tls_model("initial-exec")));

// Binds the calling thread to its own slot (workgroup threads, at start).
inline void bind_thread(unsigned slot) { t_slot = &g_slots[slot < kSharedSlot ? slot : kSharedSlot]; }
inline void charge(size_t n) { t_slot->bytes.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed); }
inline void release(size_t n) { t_slot->bytes.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed); }

// Bytes held now (a sum over the slots; slightly stale while other threads work). `used_slots` bounds the
// scan to the workgroups that exist.
int64_t total(unsigned used_slots = kSharedSlot);

// malloc/realloc/free that charge the account and never throw: nullptr means out of memory, and every
// caller has a documented way to shed the client that asked for the memory instead of aborting.
inline void* alloc(size_t n) {
  void* p = std::malloc(n);
  if (p) charge(n + kMallocOverhead);
  return p;
}
inline void* grow(void* p, size_t old_n, size_t n) {
  void* q = std::realloc(p, n);
  if (q) {
    if (p) release(old_n + kMallocOverhead);
    charge(n + kMallocOverhead);
  }
  return q;
}
inline void free(void* p, size_t n) {
  if (!p) return;
  std::free(p);
  release(n + kMallocOverhead);
}

// Blocks (io/arena.h): what the server keeps many of for long, from huge-page chunks. Past arena::kMaxBlock, and
// under AddressSanitizer (so that it sees them), they come from malloc. The uncharged pair is for the registry's
// subjects and subscription lists (pubsub/subject.cc), by the million at W4: a subject is its class (96 bytes at
// W3's names, where malloc's size word and rounding made it 112) and a list of one subscriber 16 bytes (malloc:
// 32). They are not charged: MaxConnections and MaxSubscriptionsPerConnection bound them, not a client's traffic.
// uncharged_block_free takes the n given to uncharged_block_alloc, or its block_cost.
#ifdef STARLING_ASAN
inline void* uncharged_block_alloc(size_t n) { return std::malloc(n); }
inline void uncharged_block_free(void* p, size_t) { std::free(p); }
inline size_t block_cost(size_t n) { return n + kMallocOverhead; }
#else
inline void* uncharged_block_alloc(size_t n) { return n <= arena::kMaxBlock ? arena::alloc(n) : std::malloc(n); }
inline void uncharged_block_free(void* p, size_t n) {
  if (n <= arena::kMaxBlock) arena::free(p, n);
  else std::free(p);
}
inline size_t block_cost(size_t n) { return n <= arena::kMaxBlock ? arena::class_size(n) : n + kMallocOverhead; }
#endif

// Frames and the history cache's structs and rings: blocks charged as what they occupy (block_cost: their size
// class, or n plus malloc's overhead). block_free takes the cost, which the holder keeps anyway (Frame::cost) or
// computes again with block_cost.
inline void* block_alloc(size_t n) {
  void* p = uncharged_block_alloc(n);
  if (p) charge(block_cost(n));
  return p;
}
inline void block_free(void* p, size_t cost) {
  if (!p) return;
  uncharged_block_free(p, cost);
  release(cost);
}

// A standard-library allocator that charges the account (alloc/free above): a container whose nodes and tables
// clients make the server hold (a map keyed by connection) is counted like the rest. allocate() throws
// std::bad_alloc when memory runs out, as the default allocator does: callers catch it and shed the client.
template <typename T>
struct Allocator {
  using value_type = T;
  Allocator() = default;
  template <typename U>
  Allocator(const Allocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    void* p = alloc(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept { free(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const Allocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const Allocator<U>&) const noexcept { return false; }
};

}  // namespace starling::mem
