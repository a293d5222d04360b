// Frame: refcounted bytes of one outgoing message (a WebSocket frame, an HTTP response). A published
// message is framed once (by its subject's home workgroup) and the same Frame is queued to every
// subscriber on every workgroup; the last holder frees it. Immutable once shared; `refs` is the only
// field that changes. Every frame is charged to the memory account (io/memory.h) while it lives.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include "io/memory.h"
#include "transport/ws_frame.h"

namespace starling {

struct Frame {
  std::atomic<uint32_t> refs;
  uint32_t begin;   // offset of the first byte to send
  uint32_t end;     // offset one past the last byte
  uint32_t cost;    // bytes charged to the memory account: mem::block_cost of the allocation
  uint8_t opcode;   // kOpText or kOpBinary: the publisher's frame type, kept for the subscribers
  bool retained;    // a publish: "PUB … +retained" (the home keeps it as the subject's snapshot)
  // The same message for server-sent-events subscribers (transport/sse.h): rendered by the first SSE
  // subscriber's workgroup that sends it, then shared by all (set once, by compare-and-swap; holds one
  // reference, dropped with this frame). nullptr until then.
  std::atomic<Frame*> alt;
  // A frame a history cache keeps (pubsub/cache.h) has its rendition counted in that cache's bound too, by
  // whoever moves cache_state from kCached to kAltCharged: the alt's maker (charge_alt, after installing it)
  // or the home (when the alt came first). The home refunds it when it lets the frame go (kUncached), so a
  // rendition made after that is not counted. alt_account: the home cache's counter, set before kCached.
  std::atomic<uint8_t> cache_state;
  uint8_t cache_holds;   // the home thread's: how many of its cache slots (ring, snapshot) hold this frame
  std::atomic<uint64_t>* alt_account;
  uint8_t bytes[1];

  static constexpr uint8_t kNotCached = 0, kCached = 1, kAltCharged = 2, kUncached = 3;

  // A frame of `capacity` bytes with one reference; begin = end = 0. nullptr when memory is exhausted
  // (never throws: the caller sheds the client that asked, see DESIGN.md rule 3).
  static Frame* alloc(size_t capacity) {
    size_t n = offsetof(Frame, bytes) + (capacity ? capacity : 1);
    void* mem = mem::block_alloc(n);
    if (!mem) return nullptr;
    Frame* f = static_cast<Frame*>(mem);
    new (&f->refs) std::atomic<uint32_t>(1);
    new (&f->alt) std::atomic<Frame*>(nullptr);
    new (&f->cache_state) std::atomic<uint8_t>(kNotCached);
    f->cache_holds = 0;
    f->alt_account = nullptr;
    f->begin = f->end = 0;
    f->cost = static_cast<uint32_t>(mem::block_cost(n));
    f->opcode = kOpText;
    f->retained = false;
    return f;
  }

  // A frame holding exactly these bytes (an HTTP response). nullptr when out of memory.
  static Frame* copy(const void* p, size_t len) {
    Frame* f = alloc(len);
    if (!f) return nullptr;
    if (len) std::memcpy(f->bytes, p, len);
    f->end = static_cast<uint32_t>(len);
    return f;
  }

  // A complete server WebSocket frame carrying `len` bytes of `text` with the given opcode (replies,
  // pings, close frames). nullptr when out of memory.
  static Frame* make(uint8_t op, const void* text, size_t len) {
    size_t head = server_head_size(len);
    Frame* f = alloc(head + len);
    if (!f) return nullptr;
    write_server_head(f->bytes, op, len);
    if (len) std::memcpy(f->bytes + head, text, len);
    f->end = static_cast<uint32_t>(head + len);
    f->opcode = op;
    return f;
  }

  // After alt was installed: charges it to the cache keeping this frame, if one does and it is not charged yet.
  void charge_alt() {
    uint8_t cached = kCached;
    if (cache_state.compare_exchange_strong(cached, kAltCharged)) alt_account->fetch_add(alt.load()->cost);
  }

  const uint8_t* data() const { return bytes + begin; }
  size_t size() const { return end - begin; }
  void ref(uint32_t n = 1) { refs.fetch_add(n, std::memory_order_relaxed); }
  void unref() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      if (Frame* a = alt.load(std::memory_order_acquire)) a->unref();
      mem::block_free(this, cost);
    }
  }
};

}  // namespace starling
