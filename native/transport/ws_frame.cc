// RFC 6455 framing. See ws_frame.h for the contracts.
#include "transport/ws_frame.h"

#include <cstring>

namespace starling {

namespace {

// Byte 0 of a frame head (RFC 6455 §5.2).
constexpr uint8_t kFinBit = 0x80;
constexpr uint8_t kRsvBits = 0x70;     // RSV1-3: no extension is negotiated, so they must be 0
constexpr uint8_t kOpcodeBits = 0x0F;
constexpr uint8_t kControlBit = 0x08;  // opcodes 0x8-0xF are control frames
// Byte 1 of a frame head.
constexpr uint8_t kMaskBit = 0x80;
constexpr uint8_t kLen7Bits = 0x7F;
// 7-bit length values that announce an extended length instead of being one.
constexpr uint8_t kLen16Marker = 126;
constexpr uint8_t kLen64Marker = 127;
constexpr uint64_t kMaxLen7 = 125;
constexpr uint64_t kMaxLen16 = 0xFFFF;
// RFC 6455 §5.2: "the most significant bit MUST be 0" in a 64-bit length.
constexpr uint64_t kLen64TopBit = 1ull << 63;
constexpr size_t kMaskSize = 4;

bool known_opcode(uint8_t op) {
  return op == kOpCont || op == kOpText || op == kOpBinary || op == kOpClose || op == kOpPing ||
         op == kOpPong;
}

// Bytes of extended length that follow byte 1 of a head whose 7-bit length is len7: 0, 2 or 8.
size_t extended_length_size(uint8_t len7) {
  return len7 == kLen16Marker ? 2 : len7 == kLen64Marker ? 8 : 0;
}

// The payload length of the head at p, whose first 2 + ext_size bytes are present. False for a 64-bit
// length with its top bit set.
bool read_payload_length(const uint8_t* p, size_t ext_size, uint64_t* out) {
  uint64_t n = p[1] & kLen7Bits;
  if (ext_size > 0) {
    n = 0;
    for (size_t i = 0; i < ext_size; i++) n = (n << 8) | p[2 + i];
  }
  *out = n;
  return (n & kLen64TopBit) == 0;
}

// ASCII fast path of utf8_valid: bytes tested per step, and the mask of their high bits.
constexpr size_t kAsciiStride = 8;
constexpr uint64_t kHighBits = 0x8080808080808080ull;

// Close codes (RFC 6455 §7.4.1, IANA registry) a client may put on the wire.
bool close_code_allowed(uint16_t code) {
  if (code >= 1000 && code <= 1003) return true;   // normal, going away, protocol, unsupported data
  if (code >= 1007 && code <= 1014) return true;   // 1007-1011 RFC 6455; 1012-1014 registered later
  if (code >= 3000 && code <= 4999) return true;   // libraries/frameworks (3xxx) and private use (4xxx)
  return false;  // < 1000, 1004 reserved, 1005/1006 never on the wire, 1015 TLS, 1016-2999 unassigned, >= 5000
}

}  // namespace

FrameParse parse_frame_head(const uint8_t* p, size_t len, uint64_t max_payload, FrameHead* out,
                            uint16_t* close_code) {
  // Errors are reported as soon as the bytes that show them are present, so a hostile peer cannot
  // keep a connection waiting on a head that is already known to be bad.
  if (len < 1) return FrameParse::NeedMore;
  const uint8_t b0 = p[0];
  const uint8_t opcode = b0 & kOpcodeBits;
  const bool fin = (b0 & kFinBit) != 0;
  const bool control = (opcode & kControlBit) != 0;
  if ((b0 & kRsvBits) != 0 || !known_opcode(opcode) || (control && !fin)) {
    *close_code = kCloseProtocol;
    return FrameParse::Error;
  }
  if (len < 2) return FrameParse::NeedMore;
  const uint8_t b1 = p[1];
  const uint8_t len7 = b1 & kLen7Bits;
  if ((b1 & kMaskBit) == 0 || (control && len7 > kMaxLen7)) {
    *close_code = kCloseProtocol;
    return FrameParse::Error;
  }

  const size_t ext_size = extended_length_size(len7);
  if (len < 2 + ext_size) return FrameParse::NeedMore;

  uint64_t payload_len;
  if (!read_payload_length(p, ext_size, &payload_len)) {
    *close_code = kCloseProtocol;
    return FrameParse::Error;
  }
  if (!control && payload_len > max_payload) {
    *close_code = kCloseTooBig;
    return FrameParse::Error;
  }

  const size_t head_len = 2 + ext_size + kMaskSize;
  if (len < head_len) return FrameParse::NeedMore;
  out->opcode = opcode;
  out->fin = fin;
  std::memcpy(out->mask, p + 2 + ext_size, kMaskSize);
  out->payload_len = payload_len;
  out->head_len = static_cast<uint32_t>(head_len);
  return FrameParse::Ok;
}

FrameParse parse_server_frame_head(const uint8_t* p, size_t len, FrameHead* out) {
  if (len < 2) return FrameParse::NeedMore;
  const uint8_t opcode = p[0] & kOpcodeBits;
  if (!(p[0] & kFinBit) || (p[0] & kRsvBits) || opcode == kOpCont || !known_opcode(opcode) || (p[1] & kMaskBit))
    return FrameParse::Error;
  const size_t ext_size = extended_length_size(p[1] & kLen7Bits);
  if (len < 2 + ext_size) return FrameParse::NeedMore;
  uint64_t payload_len;
  if (!read_payload_length(p, ext_size, &payload_len)) return FrameParse::Error;
  out->opcode = opcode;
  out->fin = true;
  std::memset(out->mask, 0, sizeof out->mask);
  out->payload_len = payload_len;
  out->head_len = static_cast<uint32_t>(2 + ext_size);
  return FrameParse::Ok;
}

void unmask(uint8_t* p, size_t len, const uint8_t mask[4], uint64_t offset) {
  // Rotate the mask so that rot[0] applies to p[0]; then XOR a word at a time.
  uint8_t rot[8];
  for (size_t i = 0; i < 8; i++) rot[i] = mask[(offset + i) & 3];
  uint64_t word_mask;
  std::memcpy(&word_mask, rot, sizeof word_mask);
  size_t i = 0;
  for (; i + sizeof word_mask <= len; i += sizeof word_mask) {
    uint64_t w;
    std::memcpy(&w, p + i, sizeof w);
    w ^= word_mask;
    std::memcpy(p + i, &w, sizeof w);
  }
  for (; i < len; i++) p[i] ^= rot[i & 7];
}

size_t server_head_size(uint64_t len) {
  if (len <= kMaxLen7) return 2;
  if (len <= kMaxLen16) return 4;
  return 10;
}

size_t write_server_head(uint8_t* out, uint8_t opcode, uint64_t len) {
  out[0] = static_cast<uint8_t>(kFinBit | (opcode & kOpcodeBits));
  if (len <= kMaxLen7) {
    out[1] = static_cast<uint8_t>(len);
    return 2;
  }
  if (len <= kMaxLen16) {
    out[1] = kLen16Marker;
    out[2] = static_cast<uint8_t>(len >> 8);
    out[3] = static_cast<uint8_t>(len);
    return 4;
  }
  out[1] = kLen64Marker;
  for (int i = 0; i < 8; i++) out[2 + i] = static_cast<uint8_t>(len >> (8 * (7 - i)));
  return 10;
}

bool utf8_valid(const uint8_t* p, size_t len) {
  size_t i = 0;
  while (i < len) {
    // Skip runs of ASCII a word at a time.
    while (i + kAsciiStride <= len) {
      uint64_t w;
      std::memcpy(&w, p + i, sizeof w);
      if (w & kHighBits) break;
      i += kAsciiStride;
    }
    if (i >= len) break;
    const uint8_t c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    // RFC 3629 §4: the lead byte fixes the sequence length and the range of the second byte (this
    // excludes overlongs, surrogates D800-DFFF and code points above 10FFFF); later bytes are 80-BF.
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;  // 80-BF continuation without a lead, C0/C1 overlong, F5-FF out of range
    }
    if (len - i < n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < n; k++) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    }
    i += n;
  }
  return true;
}

uint16_t check_close_payload(const uint8_t* p, size_t len) {
  if (len == 0) return 0;
  if (len == 1) return kCloseProtocol;
  const uint16_t code = static_cast<uint16_t>((p[0] << 8) | p[1]);
  if (!close_code_allowed(code)) return kCloseProtocol;
  if (!utf8_valid(p + 2, len - 2)) return kCloseInvalidData;
  return 0;
}

}  // namespace starling
