// HTTP/1.1 → WebSocket upgrade. See http_upgrade.h for the contracts.
#include "transport/http_upgrade.h"

#include <cstring>

#include "transport/http_request.h"

namespace starling {

namespace {

// RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing to form Sec-WebSocket-Accept.
constexpr std::string_view kWebSocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
// RFC 6455 §4.1: the key is a random 16-byte nonce, base64-encoded (24 chars with "==" padding).
constexpr size_t kKeyBytes = 16;
constexpr size_t kKeyChars = 4 * ((kKeyBytes + 2) / 3);  // 24
constexpr size_t kKeyPadding = 2;  // 16 = 3 * 5 + 1: the last group holds one byte, so "=="
constexpr size_t kSha1Bytes = 20;
constexpr size_t kAcceptChars = 4 * ((kSha1Bytes + 2) / 3);  // 28, the base64 of a SHA-1 digest
// Longest reason echoed in an error body; our reasons are short static strings, this keeps any
// reason within the 512 bytes write_http_error promises.
constexpr size_t kMaxReasonChars = 200;
constexpr const char* kNeedHttp11 = "HTTP/1.1 or later required";

UpgradeRequest fail(Upgrade status, size_t head_len, const char* reason) {
  UpgradeRequest r{};
  r.status = status;
  r.head_len = head_len;
  r.reason = reason;
  return r;
}

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// True if key is base64 of exactly kKeyBytes: 22 alphabet characters and "==". The 4 unused bits of
// the last character are not required to be zero (the accept hash is over the text as sent).
bool valid_key(std::string_view key) {
  if (key.size() != kKeyChars) return false;
  for (size_t i = 0; i < kKeyChars - kKeyPadding; i++) {
    if (!is_base64_char(key[i])) return false;
  }
  return key.substr(kKeyChars - kKeyPadding) == "==";
}

// SHA-1 (RFC 3174 §6.1) block size and initial state.
constexpr size_t kSha1Block = 64;
constexpr uint32_t kSha1Init[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};

uint32_t rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

void sha1_block(uint32_t h[5], const uint8_t block[kSha1Block]) {
  uint32_t w[80];
  for (int t = 0; t < 16; t++) {
    w[t] = (uint32_t(block[4 * t]) << 24) | (uint32_t(block[4 * t + 1]) << 16) |
           (uint32_t(block[4 * t + 2]) << 8) | uint32_t(block[4 * t + 3]);
  }
  for (int t = 16; t < 80; t++) w[t] = rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int t = 0; t < 80; t++) {
    uint32_t f, k;
    if (t < 20) {
      f = (b & c) | (~b & d);
      k = 0x5A827999;
    } else if (t < 40) {
      f = b ^ c ^ d;
      k = 0x6ED9EBA1;
    } else if (t < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8F1BBCDC;
    } else {
      f = b ^ c ^ d;
      k = 0xCA62C1D6;
    }
    const uint32_t temp = rotl(a, 5) + f + e + k + w[t];
    e = d;
    d = c;
    c = rotl(b, 30);
    b = a;
    a = temp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The raw value of the first parameter called `name` in a query string ("a=1&token=x&b" → "x"); empty when
// there is none. A parameter without '=' has an empty value.
std::string_view query_parameter(std::string_view query, std::string_view name) {
  std::string_view key, value;
  while (next_query_param(&query, &key, &value)) {
    if (key == name) return value;
  }
  return {};
}

}  // namespace

long percent_decode(std::string_view in, char* out, size_t cap) {
  size_t n = 0;
  for (size_t k = 0; k < in.size(); k++) {
    char c = in[k];
    if (c == '%') {
      if (k + 2 >= in.size()) return -1;  // needs two digits after it
      const int hi = hex_digit(in[k + 1]), lo = hex_digit(in[k + 2]);
      if (hi < 0 || lo < 0) return -1;
      c = static_cast<char>(hi * 16 + lo);
      k += 2;
    } else if (c == '+') {
      c = ' ';
    }
    if (n == cap) return -1;
    out[n++] = c;
  }
  return static_cast<long>(n);
}

UpgradeRequest parse_upgrade(const char* p, size_t len, std::string_view path) {
  const HttpRequest h = parse_request(p, len, VersionPolicy::Http10AndLater);
  if (h.status == RequestStatus::NeedMore) {
    UpgradeRequest r{};
    r.status = Upgrade::NeedMore;
    return r;
  }
  // Every fault of the head is 400 here (a 431, 501 or 505 from parse_request too: the enum has no other).
  if (h.status == RequestStatus::Error) {
    const bool old_version = h.error_status == 505;  // below 1.0: later versions are accepted
    return fail(Upgrade::BadRequest, h.head_len, old_version ? kNeedHttp11 : h.reason);
  }
  if (h.method != Method::Get) return fail(Upgrade::BadRequest, h.head_len, "method is not GET");
  if (h.version_major == 1 && h.version_minor == 0) return fail(Upgrade::BadRequest, h.head_len, kNeedHttp11);
  if (h.path != path) return fail(Upgrade::NotFound, h.head_len, "no WebSocket endpoint at this path");
  if (!h.upgrade_websocket || !h.connection_upgrade)
    return fail(Upgrade::UpgradeRequired, h.head_len, "WebSocket upgrade required");
  if (!h.ws_version_13) return fail(Upgrade::UpgradeRequired, h.head_len, "Sec-WebSocket-Version 13 required");
  if (h.ws_key_count != 1 || !valid_key(h.ws_key))
    return fail(Upgrade::BadRequest, h.head_len, "invalid Sec-WebSocket-Key");
  const std::string_view token = query_parameter(h.query, "token");

  // Sec-WebSocket-Accept = base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
  uint8_t material[kKeyChars + kWebSocketGuid.size()];
  std::memcpy(material, h.ws_key.data(), kKeyChars);
  std::memcpy(material + kKeyChars, kWebSocketGuid.data(), kWebSocketGuid.size());
  uint8_t digest[kSha1Bytes];
  sha1(material, sizeof material, digest);

  UpgradeRequest r{};
  r.status = Upgrade::Ok;
  r.head_len = h.head_len;
  const size_t n = base64_encode(digest, sizeof digest, r.accept);
  r.accept[n] = '\0';
  r.starling_v1 = h.ws_starling_v1;
  r.token = token.data();
  r.token_len = token.size();
  r.reason = "ok";
  return r;
}

size_t write_upgrade_response(const UpgradeRequest& req, char* out, size_t cap) {
  if (req.status != Upgrade::Ok) return 0;
  const HeaderField headers[] = {{"Upgrade", "websocket"},
                                 {"Connection", "Upgrade"},
                                 {"Sec-WebSocket-Accept", std::string_view(req.accept, kAcceptChars)},
                                 {"Sec-WebSocket-Protocol", kStarlingSubprotocol}};
  const size_t count = req.starling_v1 ? 4 : 3;  // the subprotocol only when the client offered it
  return write_response_head(out, cap, 101, headers, count, kNoContentLength);
}

size_t write_http_error(Upgrade status, const char* reason, char* out, size_t cap) {
  int code;
  switch (status) {
    case Upgrade::BadRequest: code = 400; break;
    case Upgrade::NotFound: code = 404; break;
    case Upgrade::UpgradeRequired: code = 426; break;
    default: return 0;  // NeedMore and Ok are not errors
  }
  std::string_view why = reason != nullptr ? reason : "";
  if (why.size() > kMaxReasonChars) why = why.substr(0, kMaxReasonChars);
  const HeaderField headers[] = {{"Connection", "close"},
                                 {"Content-Type", "text/plain; charset=utf-8"},
                                 {"Upgrade", "websocket"},
                                 {"Sec-WebSocket-Version", "13"}};
  const size_t count = status == Upgrade::UpgradeRequired ? 4 : 2;  // 426 names the protocol to upgrade to
  const size_t head = write_response_head(out, cap, code, headers, count, why.size() + 1);
  if (head == 0) return 0;
  ResponseWriter w{out + head, cap - head};
  w.put(why);
  w.put("\n");
  return w.result() == 0 ? 0 : head + w.result();
}

void sha1(const uint8_t* data, size_t len, uint8_t out[20]) {
  uint32_t h[5];
  std::memcpy(h, kSha1Init, sizeof h);
  size_t i = 0;
  for (; i + kSha1Block <= len; i += kSha1Block) sha1_block(h, data + i);

  // Padding: 0x80, zeros, then the message length in bits as a 64-bit big-endian number; one or two
  // blocks depending on whether the 9 bytes fit after the tail.
  constexpr size_t kLengthBytes = 8;
  uint8_t tail[2 * kSha1Block] = {};
  const size_t rest = len - i;
  if (rest > 0) std::memcpy(tail, data + i, rest);
  tail[rest] = 0x80;
  const size_t tail_len = (rest + 1 + kLengthBytes <= kSha1Block) ? kSha1Block : 2 * kSha1Block;
  const uint64_t bits = static_cast<uint64_t>(len) * 8;
  for (size_t k = 0; k < kLengthBytes; k++)
    tail[tail_len - 1 - k] = static_cast<uint8_t>(bits >> (8 * k));
  for (size_t off = 0; off < tail_len; off += kSha1Block) sha1_block(h, tail + off);

  for (int k = 0; k < 5; k++) {
    out[4 * k] = static_cast<uint8_t>(h[k] >> 24);
    out[4 * k + 1] = static_cast<uint8_t>(h[k] >> 16);
    out[4 * k + 2] = static_cast<uint8_t>(h[k] >> 8);
    out[4 * k + 3] = static_cast<uint8_t>(h[k]);
  }
}

size_t base64_encode(const uint8_t* data, size_t len, char* out) {
  size_t n = 0;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    const uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
    out[n++] = kBase64Alphabet[(v >> 18) & 63];
    out[n++] = kBase64Alphabet[(v >> 12) & 63];
    out[n++] = kBase64Alphabet[(v >> 6) & 63];
    out[n++] = kBase64Alphabet[v & 63];
  }
  const size_t rest = len - i;
  if (rest > 0) {
    uint32_t v = uint32_t(data[i]) << 16;
    if (rest == 2) v |= uint32_t(data[i + 1]) << 8;
    out[n++] = kBase64Alphabet[(v >> 18) & 63];
    out[n++] = kBase64Alphabet[(v >> 12) & 63];
    out[n++] = rest == 2 ? kBase64Alphabet[(v >> 6) & 63] : '=';
    out[n++] = '=';
  }
  return n;
}

}  // namespace starling
