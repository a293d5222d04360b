// HTTP/1.1 → WebSocket upgrade. See http_upgrade.h for the contracts.
#include "transport/http_upgrade.h"

#include <cstring>

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
constexpr std::string_view kHeadEnd = "\r\n\r\n";
constexpr std::string_view kSubprotocol = "starling.v1";
constexpr const char* kBareLf = "bare LF in request head; lines must end with CRLF";
// Longest reason echoed in an error body; our reasons are short static strings, this keeps any
// reason within the 512 bytes write_http_error promises.
constexpr size_t kMaxReasonChars = 200;

UpgradeRequest fail(Upgrade status, size_t head_len, const char* reason) {
  UpgradeRequest r{};
  r.status = status;
  r.head_len = head_len;
  r.reason = reason;
  return r;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// RFC 7230 §3.2.6 tchar: the characters of a method or header name.
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// RFC 7230 §3.2 field-value: HTAB, visible ASCII, SP and obs-text (0x80-0xFF); no other controls.
bool valid_field_value(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
  }
  return true;
}

// True if the comma-separated list (RFC 7230 §7 #rule: OWS around elements, empty elements allowed)
// has an element equal to `want`, compared case-insensitively or exactly.
bool list_contains(std::string_view list, std::string_view want, bool case_insensitive) {
  while (true) {
    const size_t comma = list.find(',');
    const std::string_view item = trim_ows(list.substr(0, comma));
    if (case_insensitive ? iequals(item, want) : item == want) return true;
    if (comma == std::string_view::npos) return false;
    list.remove_prefix(comma + 1);
  }
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

// Request line: method SP request-target SP HTTP-version (RFC 7230 §3.1.1).
struct RequestLine {
  std::string_view method, target;
  int major, minor;
};

bool parse_request_line(std::string_view line, RequestLine* out) {
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return false;
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return false;
  out->method = line.substr(0, sp1);
  out->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(out->method) || out->target.empty()) return false;
  for (char ch : out->target) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7F) return false;  // visible ASCII only
  }
  // "HTTP/" DIGIT "." DIGIT
  constexpr std::string_view kVersionPrefix = "HTTP/";
  constexpr size_t kVersionLen = 8;
  if (version.size() != kVersionLen || version.substr(0, kVersionPrefix.size()) != kVersionPrefix)
    return false;
  const char major = version[5], dot = version[6], minor = version[7];
  if (major < '0' || major > '9' || dot != '.' || minor < '0' || minor > '9') return false;
  out->major = major - '0';
  out->minor = minor - '0';
  return true;
}

// What the header fields of a request said, as far as the upgrade cares.
struct Headers {
  int host_count = 0;
  int key_count = 0;
  bool upgrade_websocket = false;
  bool connection_upgrade = false;
  bool version_seen = false;
  bool version_13 = true;  // every Sec-WebSocket-Version seen was "13"
  bool starling_v1 = false;
  std::string_view key;
};

void note_header(std::string_view name, std::string_view value, Headers* h) {
  if (iequals(name, "host")) {
    h->host_count++;
  } else if (iequals(name, "upgrade")) {
    if (list_contains(value, "websocket", true)) h->upgrade_websocket = true;
  } else if (iequals(name, "connection")) {
    if (list_contains(value, "upgrade", true)) h->connection_upgrade = true;
  } else if (iequals(name, "sec-websocket-version")) {
    h->version_seen = true;
    if (value != "13") h->version_13 = false;
  } else if (iequals(name, "sec-websocket-key")) {
    h->key_count++;
    h->key = value;
  } else if (iequals(name, "sec-websocket-protocol")) {
    // Subprotocol names are compared exactly; the one we echo is "starling.v1".
    if (list_contains(value, kSubprotocol, false)) h->starling_v1 = true;
  }
}

// Appends to a fixed buffer; remembers overflow so the caller checks once at the end.
struct Writer {
  char* out;
  size_t cap;
  size_t n = 0;
  bool overflow = false;

  void put(std::string_view s) {
    if (overflow || s.size() > cap - n) {
      overflow = true;
      return;
    }
    std::memcpy(out + n, s.data(), s.size());
    n += s.size();
  }
  void put_uint(size_t v) {
    char digits[20];
    size_t k = sizeof digits;
    do {
      digits[--k] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    put(std::string_view(digits + k, sizeof digits - k));
  }
  size_t result() const { return overflow ? 0 : n; }
};

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
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
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
  // Find the end of the head within the first kMaxRequestHead bytes.
  const std::string_view window(p, len < kMaxRequestHead ? len : kMaxRequestHead);
  const size_t end = window.find(kHeadEnd);
  // A bare LF is refused as soon as it arrives: a client that ends its lines with "\n" alone would
  // otherwise never send "\r\n\r\n" and wait for the handshake timeout. Only the head is scanned
  // (up to its end, or all of the window while it is incomplete); bytes after it are WebSocket frames.
  const size_t scanned = end == std::string_view::npos ? window.size() : end + kHeadEnd.size();
  for (size_t lf = window.find('\n'); lf < scanned; lf = window.find('\n', lf + 1)) {
    if (lf == 0 || window[lf - 1] != '\r')
      return fail(Upgrade::BadRequest, end == std::string_view::npos ? 0 : scanned, kBareLf);
  }
  if (end == std::string_view::npos) {
    if (len >= kMaxRequestHead) return fail(Upgrade::BadRequest, 0, "request head too large");
    UpgradeRequest r{};
    r.status = Upgrade::NeedMore;
    return r;
  }
  const size_t head_len = end + kHeadEnd.size();
  // Every line of the head, each ending in "\r\n" (the blank line is not included).
  std::string_view lines = window.substr(0, end + 2);

  // Splits off the next line; false if it contains a CR that is not part of its "\r\n".
  auto next_line = [&lines](std::string_view* line) {
    const size_t cr = lines.find('\r');
    // lines ends in "\r\n", so a CR is always found and cr + 1 is in range.
    if (lines[cr + 1] != '\n') return false;
    *line = lines.substr(0, cr);
    lines.remove_prefix(cr + 2);
    return true;
  };

  std::string_view line;
  RequestLine rl{};
  if (!next_line(&line) || !parse_request_line(line, &rl))
    return fail(Upgrade::BadRequest, head_len, "malformed request line");
  if (rl.method != "GET") return fail(Upgrade::BadRequest, head_len, "method is not GET");
  if (rl.major < 1 || (rl.major == 1 && rl.minor < 1))
    return fail(Upgrade::BadRequest, head_len, "HTTP/1.1 or later required");

  Headers h;
  while (!lines.empty()) {
    if (!next_line(&line)) return fail(Upgrade::BadRequest, head_len, "stray CR in header");
    // The first blank line ends the head, so an empty line cannot occur here; checked for safety.
    if (line.empty()) return fail(Upgrade::BadRequest, head_len, "malformed header");
    if (is_ows(line.front()))
      return fail(Upgrade::BadRequest, head_len, "obsolete line folding");
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return fail(Upgrade::BadRequest, head_len, "header without colon");
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trim_ows(line.substr(colon + 1));
    if (!is_token(name)) return fail(Upgrade::BadRequest, head_len, "malformed header name");
    if (!valid_field_value(line.substr(colon + 1)))
      return fail(Upgrade::BadRequest, head_len, "control character in header");
    note_header(name, value, &h);
  }

  // RFC 7230 §5.4: a request without Host, or with more than one, is answered 400.
  if (h.host_count != 1) return fail(Upgrade::BadRequest, head_len, "exactly one Host header required");
  std::string_view target = rl.target;
  const size_t query = target.find('?');
  std::string_view token;
  if (query != std::string_view::npos) {
    token = query_parameter(target.substr(query + 1), "token");
    target = target.substr(0, query);
  }
  if (target != path) return fail(Upgrade::NotFound, head_len, "no WebSocket endpoint at this path");
  if (!h.upgrade_websocket || !h.connection_upgrade)
    return fail(Upgrade::UpgradeRequired, head_len, "WebSocket upgrade required");
  if (!h.version_seen || !h.version_13)
    return fail(Upgrade::UpgradeRequired, head_len, "Sec-WebSocket-Version 13 required");
  if (h.key_count != 1 || !valid_key(h.key))
    return fail(Upgrade::BadRequest, head_len, "invalid Sec-WebSocket-Key");

  // Sec-WebSocket-Accept = base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
  uint8_t material[kKeyChars + kWebSocketGuid.size()];
  std::memcpy(material, h.key.data(), kKeyChars);
  std::memcpy(material + kKeyChars, kWebSocketGuid.data(), kWebSocketGuid.size());
  uint8_t digest[kSha1Bytes];
  sha1(material, sizeof material, digest);

  UpgradeRequest r{};
  r.status = Upgrade::Ok;
  r.head_len = head_len;
  const size_t n = base64_encode(digest, sizeof digest, r.accept);
  r.accept[n] = '\0';
  r.starling_v1 = h.starling_v1;
  r.token = token.data();
  r.token_len = token.size();
  r.reason = "ok";
  return r;
}

size_t write_upgrade_response(const UpgradeRequest& req, char* out, size_t cap) {
  if (req.status != Upgrade::Ok) return 0;
  Writer w{out, cap};
  w.put("HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: ");
  w.put(std::string_view(req.accept, kAcceptChars));
  w.put("\r\n");
  if (req.starling_v1) {
    w.put("Sec-WebSocket-Protocol: ");
    w.put(kSubprotocol);
    w.put("\r\n");
  }
  w.put("\r\n");
  return w.result();
}

size_t write_http_error(Upgrade status, const char* reason, char* out, size_t cap) {
  std::string_view status_line;
  switch (status) {
    case Upgrade::BadRequest: status_line = "HTTP/1.1 400 Bad Request\r\n"; break;
    case Upgrade::NotFound: status_line = "HTTP/1.1 404 Not Found\r\n"; break;
    case Upgrade::UpgradeRequired: status_line = "HTTP/1.1 426 Upgrade Required\r\n"; break;
    default: return 0;  // NeedMore and Ok are not errors
  }
  std::string_view why = reason != nullptr ? reason : "";
  if (why.size() > kMaxReasonChars) why = why.substr(0, kMaxReasonChars);
  Writer w{out, cap};
  w.put(status_line);
  w.put("Connection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n");
  if (status == Upgrade::UpgradeRequired) {
    w.put("Upgrade: websocket\r\n"
          "Sec-WebSocket-Version: 13\r\n");
  }
  w.put("Content-Length: ");
  w.put_uint(why.size() + 1);
  w.put("\r\n\r\n");
  w.put(why);
  w.put("\n");
  return w.result();
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
