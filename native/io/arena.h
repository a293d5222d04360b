// Blocks: the allocator of what the server keeps many of for long — frames (io/frame.h), the history cache's
// structs and rings (pubsub/cache.h), and the registry's subjects and subscriber lists (pubsub/subject.cc: one of
// each per idle connection at W3 and W4, where malloc's size word and 16-byte rounding cost 32 bytes more). With
// the default CacheSize (an eighth of Memory: 1.5 GB on a 24 GiB machine) the cache keeps millions of frames, and
// every eviction touches three of them scattered over that span. From glibc's heaps in 4 KiB pages each touch was a
// TLB miss (a nested page walk on a VM), and every page of a growing heap cost an mprotect and a fault: W1 with the
// cache on took 1.16–1.23 × the CPU of the cache off (docs/tuning.md). Here the memory comes in 2 MiB chunks the
// kernel is asked to back with huge pages (all but a thread's first), so 1.5 GB is 750 TLB entries and growing
// costs one mmap per 2 MiB.
//
// Layout. A chunk is 2 MiB, aligned to 2 MiB, owned by one thread's heap. It is cut into 32 spans of 64 KiB;
// a span serves one size class (16 bytes to 16 KiB, eight classes per doubling, so a block wastes at most an
// eighth of itself). The chunk's header (its owner and its spans' state) is at its start, so the block of any
// pointer finds its span by masking the address: no lookup, no header per block.
//
// Threads. Each thread that allocates has a heap (made on its first block, handed to a later thread when it
// exits). Only the owner allocates from a heap and frees into it directly; a block freed on another thread
// (a frame whose last reference a subscriber's workgroup drops) is pushed on its owner's remote list with
// one compare-and-swap, and the owner takes the list back when a class runs out, and once a second
// (collect(), from the workgroup's once-a-second pass). A span whose blocks are all free goes back to its chunk, and a
// chunk with no span in use is unmapped, except one per heap kept for the next growth (so a steady load does
// not map and unmap). A span that was full is allocated from again only once half of it is free, so the blocks
// that live longest (the cache's newest) are not spread over every span, and spans empty as their blocks die;
// free spans of chunks still in use are given back to the system page by page once a heap holds more than a
// few MiB of them (MADV_DONTNEED, in collect()). So a flood's memory is returned but for the spans the
// messages still cached keep, which are at least half full.
//
// Failure. alloc returns nullptr when the kernel refuses a chunk (RLIMIT_AS, RLIMIT_DATA, overcommit): the
// caller sheds the client that asked (DESIGN.md rule 3), as with malloc.
//
// Sanitizers. Under AddressSanitizer the server's blocks come from malloc instead (mem::block_alloc in
// io/memory.h), so that ASan's quarantine catches a frame used after it was freed and LeakSanitizer a frame
// never freed — neither sees inside chunks it did not map. The arena itself is tested under ASan through
// this interface (native/test/test_arena.cc), with free blocks poisoned.
#pragma once
#include <cstddef>
#include <cstdint>

// Defined under AddressSanitizer (gcc's and clang's ways of saying so): the arena poisons free memory, and the
// server's blocks come from malloc (io/memory.h).
#if defined(__SANITIZE_ADDRESS__)
#define STARLING_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STARLING_ASAN 1
#endif
#endif

namespace starling::mem::arena {

constexpr size_t kChunk = size_t{2} << 20;  // a huge page on x86-64 and arm64 (4 KiB base pages)
constexpr size_t kSpan = size_t{64} << 10;  // the largest class fits 4 times; a class costs a heap 64 KiB at least
constexpr size_t kMaxBlock = 16384;         // past it, blocks are rare and large enough for malloc

// The size of the class that holds n bytes (n ≤ kMaxBlock; 0 is 16): what a block of n bytes really occupies.
size_t class_size(size_t n);

// A block of at least n bytes (n ≤ kMaxBlock), 16-byte aligned, from the calling thread's heap.
// nullptr when out of memory. Does not charge the memory account (mem::block_alloc does).
void* alloc(size_t n);
// Gives back a block of alloc(n) from any thread; n: the same n, or class_size(n).
void free(void* p, size_t n);
// The calling thread's heap takes back what other threads freed into it, and gives the memory of its free spans
// back to the system when there is more than a few MiB of it (after a flood). Cheap when there is nothing to do.
// Once a second, from each workgroup's pass.
void collect();

// What the process has mapped for blocks, for tests (all heaps, slightly stale).
struct Stats {
  uint64_t chunks;      // chunks mapped now (each kChunk bytes)
  uint64_t heaps;       // heaps made (threads that allocated, at most as many at once as threads)
};
Stats stats();

}  // namespace starling::mem::arena
