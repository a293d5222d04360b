// Unit tests for ws_frame.cc: client frame heads, unmasking, server frame heads, UTF-8 and close payloads.
#include <cstring>
#include <vector>

#include "check.h"
#include "rng.h"
#include "transport/ws_frame.h"

using namespace starling;

namespace {

constexpr uint64_t kNoLimit = ~0ull;
const uint8_t kMask[4] = {0x37, 0xFA, 0x21, 0x3D};  // the mask of RFC 6455 §5.7's examples

// A client frame head: byte 0, then the length in the encoding given by len7 (<= 125 means 7-bit,
// 126 means 16-bit, 127 means 64-bit), then the mask if masked.
std::vector<uint8_t> client_head(uint8_t b0, uint64_t payload_len, uint8_t len7, bool masked = true) {
  std::vector<uint8_t> h;
  h.push_back(b0);
  const uint8_t mask_bit = masked ? 0x80 : 0x00;
  if (len7 <= 125) {
    h.push_back(static_cast<uint8_t>(mask_bit | payload_len));
  } else if (len7 == 126) {
    h.push_back(mask_bit | 126);
    h.push_back(static_cast<uint8_t>(payload_len >> 8));
    h.push_back(static_cast<uint8_t>(payload_len));
  } else {
    h.push_back(mask_bit | 127);
    for (int i = 7; i >= 0; i--) h.push_back(static_cast<uint8_t>(payload_len >> (8 * i)));
  }
  if (masked) h.insert(h.end(), kMask, kMask + 4);
  return h;
}

struct Parsed {
  FrameParse result;
  FrameHead head;
  uint16_t code;
};

Parsed parse(const std::vector<uint8_t>& bytes, uint64_t max_payload = kNoLimit, size_t len = SIZE_MAX) {
  Parsed p{};
  p.code = 0;
  p.result = parse_frame_head(bytes.data(), len == SIZE_MAX ? bytes.size() : len, max_payload, &p.head, &p.code);
  return p;
}

// Independent reference: decodes one code point and checks the ranges of RFC 3629 arithmetically.
bool utf8_reference(const uint8_t* p, size_t len) {
  size_t i = 0;
  while (i < len) {
    const uint8_t c = p[i];
    size_t n;
    uint32_t cp;
    if (c < 0x80) { n = 1; cp = c; }
    else if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
    else return false;
    if (len - i < n) return false;
    for (size_t k = 1; k < n; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (n > 1 && cp < min_for_length[n]) return false;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    if (cp > 0x10FFFF) return false;
    i += n;
  }
  return true;
}

bool utf8(std::initializer_list<uint8_t> bytes) {
  std::vector<uint8_t> v(bytes);
  return utf8_valid(v.data(), v.size());
}

uint16_t close_payload(uint16_t code, const char* reason = "") {
  std::vector<uint8_t> v = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
  v.insert(v.end(), reason, reason + std::strlen(reason));
  return check_close_payload(v.data(), v.size());
}

}  // namespace

// ---- parse_frame_head: lengths ----

TEST(parses_a_masked_text_frame_with_a_7_bit_length) {
  Parsed p = parse(client_head(0x81, 5, 5));
  CHECK_EQ(p.result, FrameParse::Ok);
  CHECK_EQ(p.head.opcode, kOpText);
  CHECK(p.head.fin);
  CHECK_EQ(p.head.payload_len, 5u);
  CHECK_EQ(p.head.head_len, 6u);
  CHECK(std::memcmp(p.head.mask, kMask, 4) == 0);
}

TEST(parses_7_bit_lengths_0_and_125) {
  for (uint64_t n : {0ull, 1ull, 125ull}) {
    Parsed p = parse(client_head(0x82, n, static_cast<uint8_t>(n)));
    CHECK_EQ(p.result, FrameParse::Ok);
    CHECK_EQ(p.head.payload_len, n);
    CHECK_EQ(p.head.head_len, 6u);
  }
}

TEST(parses_16_bit_lengths_126_to_65535) {
  for (uint64_t n : {126ull, 127ull, 256ull, 65535ull}) {
    Parsed p = parse(client_head(0x82, n, 126));
    CHECK_EQ(p.result, FrameParse::Ok);
    CHECK_EQ(p.head.opcode, kOpBinary);
    CHECK_EQ(p.head.payload_len, n);
    CHECK_EQ(p.head.head_len, 8u);
  }
}

TEST(parses_64_bit_lengths_up_to_2_pow_63_minus_1) {
  for (uint64_t n : {65536ull, 0x0102030405060708ull, 0x7FFFFFFFFFFFFFFFull}) {
    Parsed p = parse(client_head(0x82, n, 127));
    CHECK_EQ(p.result, FrameParse::Ok);
    CHECK_EQ(p.head.payload_len, n);
    CHECK_EQ(p.head.head_len, 14u);
  }
}

TEST(accepts_non_minimal_length_encodings) {
  Parsed p16 = parse(client_head(0x81, 5, 126));
  CHECK_EQ(p16.result, FrameParse::Ok);
  CHECK_EQ(p16.head.payload_len, 5u);
  CHECK_EQ(p16.head.head_len, 8u);
  Parsed p64 = parse(client_head(0x81, 300, 127));
  CHECK_EQ(p64.result, FrameParse::Ok);
  CHECK_EQ(p64.head.payload_len, 300u);
  CHECK_EQ(p64.head.head_len, 14u);
}

TEST(ignores_bytes_after_the_head) {
  std::vector<uint8_t> bytes = client_head(0x81, 3, 3);
  bytes.insert(bytes.end(), {1, 2, 3, 0xFF, 0xFF});
  Parsed p = parse(bytes);
  CHECK_EQ(p.result, FrameParse::Ok);
  CHECK_EQ(p.head.head_len, 6u);
}

TEST(needs_more_at_every_truncation_of_every_length_encoding) {
  const std::vector<uint8_t> heads[] = {client_head(0x81, 5, 5), client_head(0x82, 1000, 126),
                                        client_head(0x82, 1ull << 40, 127), client_head(0x89, 0, 0),
                                        client_head(0x00, 70000, 127)};
  for (const auto& h : heads) {
    for (size_t len = 0; len < h.size(); len++) {
      // Parse from an exact-size copy so ASan catches any read past len.
      std::vector<uint8_t> prefix(h.begin(), h.begin() + len);
      Parsed p = parse(prefix);
      CHECK_EQ(p.result, FrameParse::NeedMore);
    }
    CHECK_EQ(parse(h).result, FrameParse::Ok);
  }
}

TEST(reports_fin_and_continuation_frames) {
  Parsed first = parse(client_head(0x01, 10, 10));
  CHECK_EQ(first.result, FrameParse::Ok);
  CHECK(!first.head.fin);
  CHECK_EQ(first.head.opcode, kOpText);
  Parsed cont = parse(client_head(0x00, 10, 10));
  CHECK_EQ(cont.result, FrameParse::Ok);
  CHECK(!cont.head.fin);
  CHECK_EQ(cont.head.opcode, kOpCont);
  Parsed last = parse(client_head(0x80, 10, 10));
  CHECK_EQ(last.result, FrameParse::Ok);
  CHECK(last.head.fin);
  CHECK_EQ(last.head.opcode, kOpCont);
}

TEST(parses_control_frames_up_to_125_bytes) {
  for (uint8_t op : {kOpClose, kOpPing, kOpPong}) {
    Parsed p = parse(client_head(static_cast<uint8_t>(0x80 | op), 125, 125));
    CHECK_EQ(p.result, FrameParse::Ok);
    CHECK_EQ(p.head.opcode, op);
    CHECK_EQ(p.head.payload_len, 125u);
  }
}

// ---- parse_frame_head: errors ----

TEST(rejects_each_reserved_bit_with_1002) {
  for (uint8_t rsv : {0x40, 0x20, 0x10}) {
    Parsed p = parse(client_head(static_cast<uint8_t>(0x81 | rsv), 5, 5));
    CHECK_EQ(p.result, FrameParse::Error);
    CHECK_EQ(p.code, kCloseProtocol);
  }
}

TEST(rejects_unknown_opcodes_with_1002) {
  for (uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
    Parsed p = parse(client_head(static_cast<uint8_t>(0x80 | op), 5, 5));
    CHECK_EQ(p.result, FrameParse::Error);
    CHECK_EQ(p.code, kCloseProtocol);
  }
}

TEST(rejects_unmasked_frames_with_1002) {
  for (uint8_t len7 : {5, 126, 127}) {
    Parsed p = parse(client_head(0x81, 5, len7, false));
    CHECK_EQ(p.result, FrameParse::Error);
    CHECK_EQ(p.code, kCloseProtocol);
  }
}

TEST(rejects_fragmented_control_frames_with_1002) {
  for (uint8_t op : {kOpClose, kOpPing, kOpPong}) {
    Parsed p = parse(client_head(op, 0, 0));
    CHECK_EQ(p.result, FrameParse::Error);
    CHECK_EQ(p.code, kCloseProtocol);
  }
}

TEST(rejects_control_frames_longer_than_125_bytes_with_1002) {
  for (uint8_t op : {kOpClose, kOpPing, kOpPong}) {
    const uint8_t b0 = static_cast<uint8_t>(0x80 | op);
    Parsed p16 = parse(client_head(b0, 126, 126));
    CHECK_EQ(p16.result, FrameParse::Error);
    CHECK_EQ(p16.code, kCloseProtocol);
    // A short length in a long encoding is still not allowed on a control frame.
    Parsed p64 = parse(client_head(b0, 5, 127));
    CHECK_EQ(p64.result, FrameParse::Error);
    CHECK_EQ(p64.code, kCloseProtocol);
  }
}

TEST(rejects_a_64_bit_length_with_the_top_bit_set_with_1002) {
  Parsed p = parse(client_head(0x82, 0x8000000000000000ull, 127));
  CHECK_EQ(p.result, FrameParse::Error);
  CHECK_EQ(p.code, kCloseProtocol);
  Parsed max = parse(client_head(0x82, ~0ull, 127));
  CHECK_EQ(max.result, FrameParse::Error);
  CHECK_EQ(max.code, kCloseProtocol);
}

TEST(rejects_data_frames_over_max_payload_with_1009) {
  Parsed over = parse(client_head(0x82, 1001, 126), 1000);
  CHECK_EQ(over.result, FrameParse::Error);
  CHECK_EQ(over.code, kCloseTooBig);
  Parsed at = parse(client_head(0x82, 1000, 126), 1000);
  CHECK_EQ(at.result, FrameParse::Ok);
  Parsed cont = parse(client_head(0x00, 1ull << 40, 127), 1000);
  CHECK_EQ(cont.result, FrameParse::Error);
  CHECK_EQ(cont.code, kCloseTooBig);
}

TEST(does_not_apply_max_payload_to_control_frames) {
  Parsed p = parse(client_head(0x89, 100, 100), 10);
  CHECK_EQ(p.result, FrameParse::Ok);
  CHECK_EQ(p.head.payload_len, 100u);
}

TEST(reports_errors_as_soon_as_the_bytes_showing_them_arrive) {
  const uint8_t rsv[] = {0xC1};
  uint16_t code = 0;
  FrameHead h{};
  CHECK_EQ(parse_frame_head(rsv, 1, kNoLimit, &h, &code), FrameParse::Error);
  CHECK_EQ(code, kCloseProtocol);
  const uint8_t unmasked[] = {0x81, 0x05};
  code = 0;
  CHECK_EQ(parse_frame_head(unmasked, 2, kNoLimit, &h, &code), FrameParse::Error);
  CHECK_EQ(code, kCloseProtocol);
  // Too big is known once the length is complete, before the mask.
  std::vector<uint8_t> big = client_head(0x82, 5000, 126);
  Parsed p = parse(big, 1000, 4);
  CHECK_EQ(p.result, FrameParse::Error);
  CHECK_EQ(p.code, kCloseTooBig);
}

// ---- unmask ----

TEST(unmasks_the_rfc_6455_hello_example) {
  uint8_t payload[] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
  unmask(payload, sizeof payload, kMask, 0);
  CHECK(std::memcmp(payload, "Hello", 5) == 0);
}

TEST(unmasks_in_pieces_at_any_offset_like_in_one_go) {
  Rng rng(7);
  for (size_t len = 0; len < 70; len++) {
    std::vector<uint8_t> plain(len);
    for (auto& b : plain) b = rng.byte();
    const uint8_t mask[4] = {rng.byte(), rng.byte(), rng.byte(), rng.byte()};
    std::vector<uint8_t> expect(plain);
    for (size_t i = 0; i < len; i++) expect[i] ^= mask[i % 4];

    std::vector<uint8_t> whole(plain);
    unmask(whole.data(), len, mask, 0);
    CHECK(whole == expect);

    // Pieces of random sizes, each told its offset in the payload; each piece in its own exact-size
    // buffer so ASan catches an overrun.
    std::vector<uint8_t> pieces(plain);
    size_t at = 0;
    while (at < len) {
      const size_t n = 1 + rng.below(len - at);
      std::vector<uint8_t> piece(pieces.begin() + at, pieces.begin() + at + n);
      unmask(piece.data(), n, mask, at);
      std::copy(piece.begin(), piece.end(), pieces.begin() + at);
      at += n;
    }
    CHECK(pieces == expect);
  }
}

TEST(unmask_handles_offsets_past_4_gib) {
  uint8_t b[3] = {0, 0, 0};
  const uint64_t offset = (1ull << 32) + 2;  // ≡ 2 (mod 4)
  unmask(b, 3, kMask, offset);
  CHECK_EQ(b[0], kMask[2]);
  CHECK_EQ(b[1], kMask[3]);
  CHECK_EQ(b[2], kMask[0]);
}

// ---- server heads ----

TEST(server_head_size_switches_encoding_at_126_and_65536) {
  CHECK_EQ(server_head_size(0), 2u);
  CHECK_EQ(server_head_size(125), 2u);
  CHECK_EQ(server_head_size(126), 4u);
  CHECK_EQ(server_head_size(65535), 4u);
  CHECK_EQ(server_head_size(65536), 10u);
  CHECK_EQ(server_head_size(1ull << 62), 10u);
}

TEST(writes_server_heads_with_fin_set_and_no_mask) {
  uint8_t out[kMaxServerFrameHead];
  CHECK_EQ(write_server_head(out, kOpText, 5), 2u);
  CHECK_EQ(out[0], 0x81);
  CHECK_EQ(out[1], 0x05);

  CHECK_EQ(write_server_head(out, kOpBinary, 256), 4u);
  const uint8_t h16[] = {0x82, 0x7E, 0x01, 0x00};
  CHECK(std::memcmp(out, h16, 4) == 0);

  CHECK_EQ(write_server_head(out, kOpBinary, 65536), 10u);
  const uint8_t h64[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0};
  CHECK(std::memcmp(out, h64, 10) == 0);

  CHECK_EQ(write_server_head(out, kOpClose, 2), 2u);
  CHECK_EQ(out[0], 0x88);
  CHECK_EQ(out[1], 0x02);
}

TEST(server_heads_decode_back_to_their_length) {
  for (uint64_t n : {0ull, 125ull, 126ull, 65535ull, 65536ull, 0x123456789Aull}) {
    uint8_t out[kMaxServerFrameHead];
    const size_t k = write_server_head(out, kOpBinary, n);
    CHECK_EQ(k, server_head_size(n));
    // A server head plus a mask bit and mask is a valid client head for the same length.
    std::vector<uint8_t> masked(out, out + k);
    masked[1] |= 0x80;
    masked.insert(masked.end(), kMask, kMask + 4);
    Parsed p = parse(masked);
    CHECK_EQ(p.result, FrameParse::Ok);
    CHECK_EQ(p.head.payload_len, n);
  }
}

TEST(parse_server_frame_head_reads_back_every_server_head) {
  for (uint8_t op : {kOpText, kOpBinary, kOpClose, kOpPing, kOpPong}) {
    for (uint64_t n : {0ull, 125ull, 126ull, 65535ull, 65536ull, 0x123456789Aull}) {
      uint8_t out[kMaxServerFrameHead];
      const size_t k = write_server_head(out, op, n);
      FrameHead h;
      for (size_t cut = 0; cut < k; cut++) CHECK_EQ(parse_server_frame_head(out, cut, &h), FrameParse::NeedMore);
      CHECK_EQ(parse_server_frame_head(out, k, &h), FrameParse::Ok);
      CHECK_EQ(h.opcode, op);
      CHECK_EQ(h.payload_len, n);
      CHECK_EQ(h.head_len, k);
    }
  }
}

TEST(parse_server_frame_head_refuses_heads_a_server_does_not_write) {
  const uint8_t bad[][10] = {
      {0x01, 0x00},                     // FIN clear
      {0xC1, 0x00}, {0xA1, 0x00}, {0x91, 0x00},   // RSV1-3
      {0x80, 0x00},                     // continuation
      {0x83, 0x00}, {0x8B, 0x00},       // reserved opcodes
      {0x81, 0x80},                     // masked
      {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0},    // 64-bit length with its top bit set
  };
  for (const uint8_t* b : bad) {
    FrameHead h;
    CHECK_EQ(parse_server_frame_head(b, 10, &h), FrameParse::Error);
  }
}

// ---- UTF-8 ----

TEST(accepts_ascii_and_empty_text) {
  CHECK(utf8_valid(nullptr, 0));
  const char* s = "The quick brown fox jumps over the lazy dog 0123456789 {}[]~";
  CHECK(utf8_valid(reinterpret_cast<const uint8_t*>(s), std::strlen(s)));
}

TEST(accepts_code_points_at_every_length_boundary) {
  CHECK(utf8({0x7F}));                    // U+007F
  CHECK(utf8({0xC2, 0x80}));              // U+0080
  CHECK(utf8({0xDF, 0xBF}));              // U+07FF
  CHECK(utf8({0xE0, 0xA0, 0x80}));        // U+0800
  CHECK(utf8({0xED, 0x9F, 0xBF}));        // U+D7FF
  CHECK(utf8({0xEE, 0x80, 0x80}));        // U+E000
  CHECK(utf8({0xEF, 0xBF, 0xBF}));        // U+FFFF
  CHECK(utf8({0xF0, 0x90, 0x80, 0x80}));  // U+10000
  CHECK(utf8({0xF4, 0x8F, 0xBF, 0xBF}));  // U+10FFFF
  CHECK(utf8({0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5}));  // "κόσμε"
}

TEST(rejects_overlong_encodings) {
  CHECK(!utf8({0xC0, 0x80}));
  CHECK(!utf8({0xC1, 0xBF}));
  CHECK(!utf8({0xE0, 0x80, 0x80}));
  CHECK(!utf8({0xE0, 0x9F, 0xBF}));
  CHECK(!utf8({0xF0, 0x80, 0x80, 0x80}));
  CHECK(!utf8({0xF0, 0x8F, 0xBF, 0xBF}));
}

TEST(rejects_surrogates_and_code_points_above_10ffff) {
  CHECK(!utf8({0xED, 0xA0, 0x80}));  // U+D800
  CHECK(!utf8({0xED, 0xBF, 0xBF}));  // U+DFFF
  CHECK(!utf8({0xF4, 0x90, 0x80, 0x80}));
  for (int lead = 0xF5; lead <= 0xFF; lead++) CHECK(!utf8({static_cast<uint8_t>(lead), 0x80, 0x80, 0x80}));
}

TEST(rejects_stray_continuations_and_truncated_sequences) {
  CHECK(!utf8({0x80}));
  CHECK(!utf8({0xBF}));
  CHECK(!utf8({0x41, 0x80, 0x41}));
  CHECK(!utf8({0xC2}));
  CHECK(!utf8({0xE0, 0xA0}));
  CHECK(!utf8({0xF0, 0x90, 0x80}));
  CHECK(!utf8({0xC2, 0x41}));
  CHECK(!utf8({0xE1, 0x80, 0x41}));
  CHECK(!utf8({0xF1, 0x80, 0x80, 0x41}));
}

TEST(finds_an_invalid_byte_at_any_position_around_the_ascii_fast_path) {
  for (size_t len = 1; len <= 40; len++) {
    for (size_t at = 0; at < len; at++) {
      std::vector<uint8_t> buf(len, 'a');
      buf[at] = 0xFF;
      CHECK(!utf8_valid(buf.data(), buf.size()));
      buf[at] = 'b';
      CHECK(utf8_valid(buf.data(), buf.size()));
    }
    // A 2-byte sequence split at the very end.
    std::vector<uint8_t> tail(len, 'a');
    tail.back() = 0xC3;
    CHECK(!utf8_valid(tail.data(), tail.size()));
  }
}

TEST(agrees_with_a_reference_decoder_on_all_short_sequences) {
  size_t disagreements = 0;
  uint8_t b[4];
  for (int x = 0; x < 256; x++) {
    b[0] = static_cast<uint8_t>(x);
    if (utf8_valid(b, 1) != utf8_reference(b, 1)) disagreements++;
    for (int y = 0; y < 256; y++) {
      b[1] = static_cast<uint8_t>(y);
      if (utf8_valid(b, 2) != utf8_reference(b, 2)) disagreements++;
    }
  }
  // Three and four bytes: every lead of a multi-byte sequence with every second byte, and the
  // interesting values (boundaries and ASCII) for the rest.
  const uint8_t rest[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
  for (int x = 0xC0; x < 256; x++) {
    for (int y = 0; y < 256; y++) {
      for (uint8_t z : rest) {
        b[0] = static_cast<uint8_t>(x);
        b[1] = static_cast<uint8_t>(y);
        b[2] = z;
        if (utf8_valid(b, 3) != utf8_reference(b, 3)) disagreements++;
        for (uint8_t w : rest) {
          b[3] = w;
          if (utf8_valid(b, 4) != utf8_reference(b, 4)) disagreements++;
        }
      }
    }
  }
  CHECK_EQ(disagreements, 0u);
}

// ---- close payloads ----

TEST(accepts_an_empty_close_payload) { CHECK_EQ(check_close_payload(nullptr, 0), 0); }

TEST(rejects_a_one_byte_close_payload_with_1002) {
  const uint8_t one[] = {0x03};
  CHECK_EQ(check_close_payload(one, 1), kCloseProtocol);
}

TEST(accepts_close_codes_allowed_on_the_wire) {
  for (uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
                        4000, 4999}) {
    CHECK_EQ(close_payload(code), 0);
  }
}

TEST(rejects_close_codes_not_allowed_on_the_wire_with_1002) {
  for (uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}) {
    CHECK_EQ(close_payload(code), kCloseProtocol);
  }
}

TEST(checks_the_close_reason_is_utf8) {
  CHECK_EQ(close_payload(1000, "bye"), 0);
  CHECK_EQ(close_payload(1000, "\xCE\xBA"), 0);
  CHECK_EQ(close_payload(1000, "\xC0\x80"), kCloseInvalidData);
  CHECK_EQ(close_payload(4000, "ok\xFF"), kCloseInvalidData);
  // A bad code is reported before a bad reason.
  CHECK_EQ(close_payload(1005, "\xFF"), kCloseProtocol);
}

// ---- hostile input ----

TEST(survives_random_bytes_and_keeps_its_invariants) {
  Rng rng(0x5EED);
  for (int iter = 0; iter < 20000; iter++) {
    const size_t len = rng.below(kMaxClientFrameHead + 4);
    std::vector<uint8_t> buf(len);
    for (auto& b : buf) b = rng.byte();
    // Bias towards masked frames with valid opcodes so the deeper paths are reached.
    if (len > 0 && rng.below(2)) buf[0] &= 0x8F;
    if (len > 1 && rng.below(2)) buf[1] |= 0x80;
    const uint64_t max_payload = rng.below(2) ? kNoLimit : rng.below(70000);
    FrameHead h{};
    uint16_t code = 0;
    const FrameParse r = parse_frame_head(buf.data(), buf.size(), max_payload, &h, &code);
    if (r == FrameParse::Ok) {
      CHECK(h.head_len == 6 || h.head_len == 8 || h.head_len == 14);
      CHECK(h.head_len <= len);
      CHECK(h.payload_len < (1ull << 63));
      if (h.opcode >= 8) CHECK(h.payload_len <= kMaxControlPayload && h.fin);
      else CHECK(h.payload_len <= max_payload);
    } else if (r == FrameParse::Error) {
      CHECK(code == kCloseProtocol || code == kCloseTooBig);
    }

    std::vector<uint8_t> text(rng.below(40));
    for (auto& b : text) b = rng.below(4) ? static_cast<uint8_t>(rng.below(128)) : rng.byte();
    CHECK_EQ(utf8_valid(text.data(), text.size()), utf8_reference(text.data(), text.size()));
    const uint16_t close = check_close_payload(text.data(), text.size());
    CHECK(close == 0 || close == kCloseProtocol || close == kCloseInvalidData);
  }
}
