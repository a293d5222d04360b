// Frame: refcounted bytes of one outgoing WebSocket frame. A published message is framed once (by its
// subject's home workgroup) and the same Frame is queued to every subscriber on every workgroup; the
// last connection to write it frees it. Immutable once shared; `refs` is the only field that changes.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "pubsub/protocol.h"
#include "transport/ws_frame.h"

namespace starling {

struct Frame {
  std::atomic<uint32_t> refs;
  uint32_t begin;   // offset of the first byte to send
  uint32_t end;     // offset one past the last byte
  uint8_t opcode;   // kOpText or kOpBinary: the publisher's frame type, kept for the subscribers
  uint8_t bytes[1];

  // Room a publish payload is placed behind, so the home workgroup can write the MSG header and the
  // WebSocket head in front of it without copying the payload again.
  static constexpr size_t kPublishHeadroom = kMaxServerFrameHead + kMaxMsgHeader;

  // Allocates a frame of `capacity` bytes with one reference; begin = end = 0. Throws bad_alloc.
  static Frame* alloc(size_t capacity) {
    void* mem = std::malloc(offsetof(Frame, bytes) + (capacity ? capacity : 1));
    if (!mem) throw std::bad_alloc();
    Frame* f = static_cast<Frame*>(mem);
    new (&f->refs) std::atomic<uint32_t>(1);
    f->begin = f->end = 0;
    f->opcode = kOpText;
    return f;
  }

  // A complete server frame carrying `len` bytes of `text` with the given opcode (replies, close).
  static Frame* make(uint8_t op, const void* text, size_t len);

  const uint8_t* data() const { return bytes + begin; }
  size_t size() const { return end - begin; }
  void ref(uint32_t n = 1) { refs.fetch_add(n, std::memory_order_relaxed); }
  void unref() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) std::free(this);
  }
};

inline Frame* Frame::make(uint8_t op, const void* text, size_t len) {
  size_t head = server_head_size(len);
  Frame* f = alloc(head + len);
  write_server_head(f->bytes, op, len);
  if (len) std::memcpy(f->bytes + head, text, len);
  f->end = static_cast<uint32_t>(head + len);
  f->opcode = op;
  return f;
}

}  // namespace starling
