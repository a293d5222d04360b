// Blocks in huge-page chunks, one heap per thread. See arena.h.
#include "io/arena.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>

#ifdef STARLING_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace starling::mem::arena {

namespace {

constexpr unsigned kSpans = kChunk / kSpan;
// 16..128 by 16, then eight classes per doubling up to kMaxBlock: a block wastes at most an eighth of itself (a
// cached frame's cost counts against CacheSize, so waste is fewer messages kept).
constexpr unsigned kSmallClasses = 8;
constexpr unsigned kPerDoubling = 8;
constexpr unsigned kClasses = kSmallClasses + kPerDoubling * 7;
constexpr uint16_t kNoClass = UINT16_MAX;

constexpr unsigned class_of(size_t n) {
  if (n <= 128) return n ? static_cast<unsigned>((n - 1) >> 4) : 0;
  // n - 1 in [2^(b-1), 2^b), cut in eighths of 2^(b-1): 2^(b-4). (One instruction for b: this runs for every frame.)
  const unsigned b = 64 - static_cast<unsigned>(__builtin_clzll(static_cast<unsigned long long>(n - 1)));
  return kSmallClasses + (b - 8) * kPerDoubling + static_cast<unsigned>((n - 1) >> (b - 4)) - kPerDoubling;
}

constexpr size_t size_of_class(unsigned c) {
  if (c < kSmallClasses) return (c + 1) * 16;
  const unsigned k = c - kSmallClasses;
  return (size_t{128} << (k / kPerDoubling)) + (k % kPerDoubling + 1) * (size_t{16} << (k / kPerDoubling));
}

static_assert(size_of_class(kClasses - 1) == kMaxBlock && class_of(kMaxBlock) == kClasses - 1);
static_assert(class_of(129) == kSmallClasses && size_of_class(kSmallClasses) == 144);
static_assert(kChunk % kSpan == 0 && kSpans <= 64);

struct Block {
  Block* next;
};

struct Heap;

// 64 KiB of a chunk serving one class. In use, it is on its heap's list for the class (prev/next) while it has a
// free block; free, it is on its chunk's stack of free spans (next).
struct Span {
  Span* prev;
  Span* next;
  Block* free;      // blocks given back
  char* bump;       // the first block never handed out (the ones after it were not either)
  uint32_t used;    // blocks handed out
  uint32_t capacity;
  uint16_t cls;     // kNoClass while free
  bool listed;      // on its class's list (in use: not full, and at most half used since it was last full)
  bool resident;    // its memory was touched since it was mapped or given back (madvise DONTNEED)
};

struct Chunk {
  Heap* heap;       // the owner, for ever
  Chunk* prev;      // the heap's chunks with a free span
  Chunk* next;
  Span* free_spans;
  uint32_t nfree;
  Span spans[kSpans];
};
// Span 0's blocks start after the header.
constexpr size_t kHeader = (sizeof(Chunk) + 63) & ~size_t{63};
static_assert(kHeader + kMaxBlock <= kSpan);
constexpr size_t kPage = 4096;
// Free spans a heap keeps resident before trim() gives their memory back: a steady load reuses the spans it frees
// within moments (each costs a page fault when touched again), a flood that ended leaves many more.
constexpr size_t kIdleResident = size_t{8} << 20;

Chunk* chunk_of(const void* p) {
  return reinterpret_cast<Chunk*>(reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{kChunk} - 1));
}
Span* span_of(Chunk* c, const void* p) {
  return &c->spans[(reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(c)) / kSpan];
}

// Under ASan (the unit tests): a free block is poisoned but for its link word, and so is a span's memory
// never handed out, so a use after free (within a block's reuse) is reported.
inline void poison(void* p, size_t n) {
#ifdef STARLING_ASAN
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}
inline void unpoison(void* p, size_t n) {
#ifdef STARLING_ASAN
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}

std::atomic<uint64_t> g_chunks{0};
std::atomic<uint64_t> g_heaps{0};

struct Heap {
  // Blocks other threads freed, pushed with a compare-and-swap and taken all at once by the owner (no pop of
  // one: no ABA). On its own cache line, since other threads write it.
  alignas(64) std::atomic<Block*> remote{nullptr};
  // Each class's spans to allocate from, in the order they were listed: the first is filled until it is full
  // before the next is touched (a span listed again goes last, so the newest blocks fill one span at a time).
  alignas(64) Span* classes[kClasses] = {};
  Span* last[kClasses] = {};
  Chunk* avail = nullptr;   // chunks with a free span
  unsigned empty = 0;       // chunks with no span in use (one is kept, see arena.h)
  unsigned chunks = 0;      // chunks mapped
  size_t idle_resident = 0; // bytes of free spans still resident
  Heap* next_orphan = nullptr;

  void* alloc(unsigned cls) {
    Span* s = classes[cls];
    if (!s) {
      collect();
      s = classes[cls];
      if (!s && !(s = new_span(cls))) return nullptr;
    }
    const size_t size = size_of_class(cls);
    void* p;
    if (Block* b = s->free) {
      s->free = b->next;
      p = b;
    } else {
      p = s->bump;
      s->bump += size;
    }
    unpoison(p, size);
    if (++s->used == s->capacity) unlist(s);
    return p;
  }

  void free_local(Span* s, Block* b) {
    const size_t size = size_of_class(s->cls);
    b->next = s->free;
    s->free = b;
    poison(reinterpret_cast<char*>(b) + sizeof(Block), size - sizeof(Block));
    // A span that was full is allocated from again once half of it is free, not at its first free block: refilling
    // every hole would spread the newest blocks (a cache's, which live longest) over every span, and no span would
    // ever empty. So a span off the list is more than half used, and those the list refills drain as blocks die.
    if (--s->used <= s->capacity / 2 && !s->listed) list(s);
    // An empty span goes back to its chunk unless it is its class's last (alloc, free, alloc… of one block
    // would otherwise take and give back a span each time).
    if (s->used == 0 && (s->prev || s->next)) {
      unlist(s);
      release(s);
    }
  }

  // Gives back the memory of free spans (of chunks still in use, and of the spare) once there is more than
  // kIdleResident of it: after a flood, whose chunks are kept by the few blocks still alive in them.
  void trim() {
    if (idle_resident < kIdleResident) return;
    for (Chunk* c = avail; c; c = c->next) {
      for (Span* s = c->free_spans; s; s = s->next) {
        if (!s->resident) continue;
        const size_t index = static_cast<size_t>(s - c->spans);
        const size_t skip = index ? 0 : (kHeader + kPage - 1) & ~(kPage - 1);  // span 0 shares a page with the header
        char* base = reinterpret_cast<char*>(c) + index * kSpan + skip;
        unpoison(base, kSpan - skip);
        madvise(base, kSpan - skip, MADV_DONTNEED);
        poison(base, kSpan - skip);
        s->resident = false;
        idle_resident -= kSpan;
      }
    }
  }

  void collect() {
    if (!remote.load(std::memory_order_relaxed)) return;
    Block* b = remote.exchange(nullptr, std::memory_order_acquire);
    while (b) {
      Block* next = b->next;
      Chunk* c = chunk_of(b);
      free_local(span_of(c, b), b);
      b = next;
    }
  }

  void push_remote(Block* b) {
    Block* head = remote.load(std::memory_order_relaxed);
    do {
      b->next = head;
    } while (!remote.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_relaxed));
  }

 private:
  void list(Span* s) {
    s->listed = true;
    s->next = nullptr;
    s->prev = last[s->cls];
    (s->prev ? s->prev->next : classes[s->cls]) = s;
    last[s->cls] = s;
  }
  void unlist(Span* s) {
    (s->prev ? s->prev->next : classes[s->cls]) = s->next;
    (s->next ? s->next->prev : last[s->cls]) = s->prev;
    s->prev = s->next = nullptr;
    s->listed = false;
  }
  void avail_push(Chunk* c) {
    c->prev = nullptr;
    c->next = avail;
    if (avail) avail->prev = c;
    avail = c;
  }
  void avail_remove(Chunk* c) {
    (c->prev ? c->prev->next : avail) = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
  }

  Span* new_span(unsigned cls) {
    Chunk* c = avail ? avail : map_chunk();
    if (!c) return nullptr;
    Span* s = c->free_spans;
    c->free_spans = s->next;
    if (c->nfree-- == kSpans) empty--;
    if (c->nfree == 0) avail_remove(c);
    const size_t index = static_cast<size_t>(s - c->spans);
    char* start = reinterpret_cast<char*>(c) + index * kSpan + (index ? 0 : kHeader);
    char* end = reinterpret_cast<char*>(c) + (index + 1) * kSpan;
    if (s->resident) idle_resident -= kSpan;
    s->resident = true;
    s->cls = static_cast<uint16_t>(cls);
    s->free = nullptr;
    s->bump = start;
    s->used = 0;
    s->capacity = static_cast<uint32_t>(static_cast<size_t>(end - start) / size_of_class(cls));
    list(s);
    return s;
  }

  void release(Span* s) {
    Chunk* c = chunk_of(s);
    const size_t index = static_cast<size_t>(s - c->spans);
    poison(reinterpret_cast<char*>(c) + index * kSpan + (index ? 0 : kHeader), kSpan - (index ? 0 : kHeader));
    s->cls = kNoClass;
    s->next = c->free_spans;
    c->free_spans = s;
    idle_resident += kSpan;  // (a span in use is resident)
    if (c->nfree++ == 0) avail_push(c);
    if (c->nfree < kSpans) return;
    if (empty == 0) {
      empty = 1;  // kept for the next growth
      return;
    }
    avail_remove(c);
    for (const Span& each : c->spans)
      if (each.resident) idle_resident -= kSpan;
    unpoison(c, kChunk);
    munmap(c, kChunk);
    chunks--;
    g_chunks.fetch_sub(1, std::memory_order_relaxed);
  }

  // A new chunk, aligned to kChunk. The kernel (6.7 on) aligns an anonymous mapping of 2 MiB by itself; an older
  // one gets twice the size, trimmed.
  Chunk* map_chunk() {
    void* p = mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    if (reinterpret_cast<uintptr_t>(p) & (kChunk - 1)) {
      munmap(p, kChunk);
      p = mmap(nullptr, 2 * kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return nullptr;
      const uintptr_t raw = reinterpret_cast<uintptr_t>(p);
      const uintptr_t aligned = (raw + kChunk - 1) & ~(uintptr_t{kChunk} - 1);
      if (aligned > raw) munmap(p, aligned - raw);
      if (raw + 2 * kChunk > aligned + kChunk) munmap(reinterpret_cast<void*>(aligned + kChunk), raw + kChunk - aligned);
      p = reinterpret_cast<void*>(aligned);
    }
    // Huge pages where the kernel allows them (transparent_hugepage "always" or "madvise"; without, 4 KiB pages
    // and the same layout) — past a heap's first chunk, which stays in 4 KiB pages resident as they are used: a
    // thread that keeps little (the control thread, a workgroup of an idle server) does not hold 2 MiB for it.
    if (chunks++) madvise(p, kChunk, MADV_HUGEPAGE);
    g_chunks.fetch_add(1, std::memory_order_relaxed);
    Chunk* c = new (p) Chunk{};
    c->heap = this;
    for (unsigned i = kSpans; i-- > 0;) {
      c->spans[i].cls = kNoClass;
      c->spans[i].next = c->free_spans;
      c->free_spans = &c->spans[i];
    }
    c->nfree = kSpans;
    poison(reinterpret_cast<char*>(c) + kHeader, kChunk - kHeader);
    empty++;
    avail_push(c);
    return c;
  }
};

// Heaps of threads that exited, for the next thread that allocates (a heap is never destroyed: other threads may
// still free into it).
std::mutex g_orphans_mu;
Heap* g_orphans = nullptr;

thread_local Heap* t_heap __attribute__((tls_model("initial-exec"))) = nullptr;

// Constructed on a thread's first block: at its exit, hands the heap on.
struct HeapRelease {
  ~HeapRelease() {
    Heap* h = t_heap;
    if (!h) return;
    h->collect();
    t_heap = nullptr;  // a block freed after this (another thread-local's destructor) is a remote free
    std::lock_guard<std::mutex> lock(g_orphans_mu);
    h->next_orphan = g_orphans;
    g_orphans = h;
  }
};
thread_local HeapRelease t_release;

__attribute__((noinline)) Heap* adopt() {
  Heap* h;
  {
    std::lock_guard<std::mutex> lock(g_orphans_mu);
    h = g_orphans;
    if (h) g_orphans = h->next_orphan;
  }
  if (!h) {
    h = new (std::nothrow) Heap();
    if (!h) return nullptr;
    g_heaps.fetch_add(1, std::memory_order_relaxed);
  }
  h->next_orphan = nullptr;
  t_heap = h;
  (void)&t_release;  // its first use on this thread registers its destructor
  return h;
}

}  // namespace

size_t class_size(size_t n) { return size_of_class(class_of(n)); }

void* alloc(size_t n) {
  Heap* h = t_heap ? t_heap : adopt();
  return h ? h->alloc(class_of(n)) : nullptr;
}

void free(void* p, size_t n) {
  if (!p) return;
  Chunk* c = chunk_of(p);
  Block* b = static_cast<Block*>(p);
  if (c->heap == t_heap) {
    c->heap->free_local(span_of(c, p), b);
  } else {
    poison(reinterpret_cast<char*>(b) + sizeof(Block), class_size(n) - sizeof(Block));
    c->heap->push_remote(b);
  }
}

void collect() {
  if (!t_heap) return;
  t_heap->collect();
  t_heap->trim();
}

Stats stats() {
  return Stats{g_chunks.load(std::memory_order_relaxed), g_heaps.load(std::memory_order_relaxed)};
}

}  // namespace starling::mem::arena
