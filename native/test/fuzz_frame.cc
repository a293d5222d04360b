// libFuzzer target for ws_frame.cc: frame heads, unmasking, UTF-8 and close payloads on arbitrary bytes.
// Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "transport/ws_frame.h"

using namespace starling;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first byte picks the payload limit so both the 1009 path and the unlimited path are explored.
  const uint64_t max_payload = (size > 0 && (data[0] & 1)) ? 1000 : ~0ull;

  FrameHead h;
  uint16_t code = 0;
  const FrameParse r = parse_frame_head(data, size, max_payload, &h, &code);
  if (r == FrameParse::Ok) {
    if (h.head_len > size || (h.head_len != 6 && h.head_len != 8 && h.head_len != 14)) abort();
    if (h.opcode >= 8 && (h.payload_len > kMaxControlPayload || !h.fin)) abort();
    if (h.opcode < 8 && h.payload_len > max_payload) abort();
    // Unmask the rest of the input as payload, in two pieces, and compare with a byte-wise unmask.
    std::vector<uint8_t> payload(data + h.head_len, data + size);
    std::vector<uint8_t> expect(payload);
    for (size_t i = 0; i < expect.size(); i++) expect[i] ^= h.mask[i % 4];
    const size_t split = payload.size() / 3;
    unmask(payload.data(), split, h.mask, 0);
    unmask(payload.data() + split, payload.size() - split, h.mask, split);
    if (payload != expect) abort();
  } else if (r == FrameParse::Error) {
    if (code != kCloseProtocol && code != kCloseTooBig) abort();
  }

  utf8_valid(data, size);
  const uint16_t close = check_close_payload(data, size);
  if (close != 0 && close != kCloseProtocol && close != kCloseInvalidData) abort();

  uint8_t head[kMaxServerFrameHead];
  uint64_t len = 0;
  std::memcpy(&len, data, size < sizeof len ? size : sizeof len);
  if (write_server_head(head, kOpBinary, len) != server_head_size(len)) abort();
  return 0;
}
