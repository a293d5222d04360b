// RFC 6455 framing: parsing client frame heads, writing server frame heads, unmasking, UTF-8 and
// close-payload validation. Pure functions over bytes; no I/O, no allocation. Driven by the
// connection code in workgroup.cc and by native/test/test_ws_frame.cc.
#pragma once
#include <cstddef>
#include <cstdint>

namespace starling {

enum Opcode : uint8_t { kOpCont = 0x0, kOpText = 0x1, kOpBinary = 0x2, kOpClose = 0x8, kOpPing = 0x9, kOpPong = 0xA };

// Close codes this server sends (RFC 6455 §7.4.1).
enum CloseCode : uint16_t {
  kCloseNormal = 1000,
  kCloseGoingAway = 1001,     // server shutting down
  kCloseProtocol = 1002,      // unmasked frame, reserved bits/opcodes, bad continuation, bad control frame
  kCloseInvalidData = 1007,   // invalid UTF-8 in a text message or close reason
  kClosePolicy = 1008,        // slow consumer past MaxBacklog
  kCloseTooBig = 1009,        // message over the size limit
  kCloseInternal = 1011,
};

// Largest server frame head: 2 bytes + 8-byte extended length (server frames are never masked).
constexpr size_t kMaxServerFrameHead = 10;
// Largest client frame head: 2 + 8 + 4-byte mask.
constexpr size_t kMaxClientFrameHead = 14;
// RFC 6455 §5.5: control frames carry at most 125 bytes.
constexpr size_t kMaxControlPayload = 125;

struct FrameHead {
  uint8_t opcode;        // one of Opcode
  bool fin;
  uint8_t mask[4];       // client frames are always masked (unmasked ones are rejected)
  uint64_t payload_len;
  uint32_t head_len;     // bytes of the head: 6, 8 or 14 (a server frame: 2, 4 or 10)
};

enum class FrameParse : uint8_t { NeedMore, Ok, Error };

// Parses the head of one client frame from p[0..len). Returns NeedMore if the head is not complete,
// Ok with *out filled, or Error with *close_code set (as soon as the bytes showing the error are
// present, possibly before the rest of the head has arrived):
//   1002 for RSV1-3 set, an unknown opcode (3-7, 0xB-0xF), an unmasked frame, a control frame that is
//        fragmented or longer than 125 bytes, a 64-bit length with its top bit set (non-minimal length
//        encodings are accepted);
//   1009 for payload_len > max_payload (checked only for data frames; control frames are bound by 125).
// Never reads past p[len).
FrameParse parse_frame_head(const uint8_t* p, size_t len, uint64_t max_payload, FrameHead* out,
                            uint16_t* close_code);

// Parses the head of one server frame from p[0..len), as write_server_head writes them: FIN set, no RSV
// bits, unmasked, opcode text, binary, close, ping or pong, a 64-bit length with its top bit clear (any
// length encoding is accepted). NeedMore if the head is not complete, Error if it is not such a head, Ok
// with *out filled (head_len 2, 4 or 10; mask zero). Server output is input to whoever reads it back (the
// SSE rendition, clients). Never reads past p[len).
FrameParse parse_server_frame_head(const uint8_t* p, size_t len, FrameHead* out);

// XORs p[0..len) with the mask, where p[0] is byte number `offset` of the frame payload (so a payload
// can be unmasked in pieces). In place.
void unmask(uint8_t* p, size_t len, const uint8_t mask[4], uint64_t offset);

// Size of a server frame head for a payload of `len` bytes: 2, 4 or 10.
size_t server_head_size(uint64_t len);

// Writes a server frame head (FIN set, unmasked) for `opcode` and a payload of `len` bytes into out
// (which must hold server_head_size(len) bytes). Returns the bytes written.
size_t write_server_head(uint8_t* out, uint8_t opcode, uint64_t len);

// True if p[0..len) is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool utf8_valid(const uint8_t* p, size_t len);

// Validates the payload of a client close frame (RFC 6455 §5.5.1, §7.4). Returns 0 if acceptable, or
// the close code to answer with: 1002 for a 1-byte payload or a code not allowed on the wire (< 1000,
// 1004, 1005, 1006, 1015, 1016-2999, >= 5000; 1012-1014, registered after RFC 6455, are accepted), 1007
// for a reason that is not UTF-8. An empty payload is acceptable.
uint16_t check_close_payload(const uint8_t* p, size_t len);

}  // namespace starling
