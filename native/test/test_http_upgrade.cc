// Unit tests for http_upgrade.cc: request parsing, 101 and error responses, SHA-1 and base64.
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "transport/http_upgrade.h"
#include "rng.h"

using namespace starling;

namespace {

// RFC 6455 §1.3's example key and the accept value it must produce.
constexpr const char* kRfcKey = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr const char* kRfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const std::string kRequestLine = "GET / HTTP/1.1\r\n";
const std::string kHeaders =
    "Host: example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n";
const std::string kValid = kRequestLine + kHeaders + "\r\n";

// Parses from an exact-size heap copy so ASan catches any read past the end.
UpgradeRequest parse(const std::string& s, std::string_view path = "/") {
  std::vector<char> copy(s.begin(), s.end());
  return parse_upgrade(copy.data(), copy.size(), path);
}

Upgrade status(const std::string& s, std::string_view path = "/") { return parse(s, path).status; }

// The valid request with `from` (a whole header line, or the request line) replaced by `to`.
std::string with(const std::string& from, const std::string& to) {
  std::string s = kValid;
  const size_t at = s.find(from);
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// True if s[0..n) has a '\n' not preceded by '\r'.
bool has_bare_lf(const std::string& s, size_t n) {
  for (size_t i = 0; i < n && i < s.size(); i++)
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  return false;
}

std::string hex(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::string sha1_hex(const std::string& s) {
  uint8_t d[20];
  sha1(reinterpret_cast<const uint8_t*>(s.data()), s.size(), d);
  return hex(d, 20);
}

std::string b64(const std::string& s) {
  char out[64];
  const size_t n = base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size(), out);
  return std::string(out, n);
}

}  // namespace

// ---- accepted upgrades ----

TEST(accepts_the_rfc_6455_example_and_computes_its_accept_key) {
  UpgradeRequest r = parse(kValid);
  CHECK_EQ(r.status, Upgrade::Ok);
  CHECK_EQ(r.head_len, kValid.size());
  CHECK_EQ(std::strlen(r.accept), 28u);
  CHECK_EQ(r.accept, kRfcAccept);
  CHECK(!r.starling_v1);
}

TEST(head_len_stops_at_the_blank_line_when_frames_follow) {
  UpgradeRequest r = parse(kValid + "\x81\x85\x37\xfa\x21\x3d");
  CHECK_EQ(r.status, Upgrade::Ok);
  CHECK_EQ(r.head_len, kValid.size());
}

TEST(needs_more_for_every_prefix_of_a_request) {
  for (size_t len = 0; len < kValid.size(); len++) {
    CHECK_EQ(status(kValid.substr(0, len)), Upgrade::NeedMore);
  }
}

TEST(matches_header_names_and_upgrade_tokens_case_insensitively) {
  const std::string s = kRequestLine +
                        "hOsT: x\r\n"
                        "UPGRADE: WebSocket\r\n"
                        "connection: keep-alive, UPGRADE\r\n"
                        "sec-websocket-key: " + std::string(kRfcKey) + "\r\n"
                        "SEC-WEBSOCKET-VERSION: 13\r\n\r\n";
  UpgradeRequest r = parse(s);
  CHECK_EQ(r.status, Upgrade::Ok);
  CHECK_EQ(r.accept, kRfcAccept);
}

TEST(finds_tokens_anywhere_in_comma_separated_lists) {
  CHECK_EQ(status(with("Connection: Upgrade\r\n", "Connection: keep-alive,Upgrade\r\n")), Upgrade::Ok);
  CHECK_EQ(status(with("Connection: Upgrade\r\n", "Connection: ,\t upgrade ,\r\n")), Upgrade::Ok);
  CHECK_EQ(status(with("Upgrade: websocket\r\n", "Upgrade: h2c, websocket\r\n")), Upgrade::Ok);
  // Tokens spread over repeated header lines count too.
  CHECK_EQ(status(with("Connection: Upgrade\r\n", "Connection: keep-alive\r\nConnection: upgrade\r\n")),
           Upgrade::Ok);
}

TEST(sets_starling_v1_when_the_subprotocol_is_offered) {
  auto offered = [](const std::string& header) {
    UpgradeRequest r = parse(kRequestLine + kHeaders + header + "\r\n");
    return r.status == Upgrade::Ok && r.starling_v1;
  };
  CHECK(offered("Sec-WebSocket-Protocol: starling.v1\r\n"));
  CHECK(offered("Sec-WebSocket-Protocol: chat, starling.v1\r\n"));
  CHECK(offered("Sec-WebSocket-Protocol: starling.v1 , chat\r\n"));
  CHECK(offered("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: starling.v1\r\n"));
  CHECK(!offered("Sec-WebSocket-Protocol: chat\r\n"));
  CHECK(!offered("Sec-WebSocket-Protocol: starling.v1x\r\n"));
  CHECK(!offered("Sec-WebSocket-Protocol: starling.v12, starling\r\n"));
  CHECK(!offered("Sec-WebSocket-Protocol: Starling.V1\r\n"));  // subprotocol names are exact
}

TEST(ignores_a_query_string_after_the_path) {
  CHECK_EQ(status(with("GET / ", "GET /?token=abc&x=1 ")), Upgrade::Ok);
  CHECK_EQ(status(with("GET / ", "GET /ws?x "), "/ws"), Upgrade::Ok);
}

TEST(accepts_http_versions_above_1_1) {
  CHECK_EQ(status(with("HTTP/1.1\r\n", "HTTP/1.2\r\n")), Upgrade::Ok);
  CHECK_EQ(status(with("HTTP/1.1\r\n", "HTTP/2.0\r\n")), Upgrade::Ok);
}

TEST(accepts_tabs_and_obs_text_in_header_values) {
  CHECK_EQ(status(with("Host: example.com\r\n", "Host:\texample.com\t\r\n")), Upgrade::Ok);
  CHECK_EQ(status(kRequestLine + kHeaders + "User-Agent: caf\xc3\xa9\r\n\r\n"), Upgrade::Ok);
  CHECK_EQ(status(kRequestLine + kHeaders + "X-Empty:\r\n\r\n"), Upgrade::Ok);
}

TEST(trims_whitespace_around_the_key) {
  UpgradeRequest r = parse(with("Sec-WebSocket-Key: ", "Sec-WebSocket-Key:   "));
  CHECK_EQ(r.status, Upgrade::Ok);
  CHECK_EQ(r.accept, kRfcAccept);
}

TEST(accepts_a_head_of_exactly_kMaxRequestHead_bytes) {
  const std::string base = kRequestLine + kHeaders;
  const std::string filler_prefix = "X-Fill: ";
  const size_t fill = kMaxRequestHead - base.size() - filler_prefix.size() - 4;
  const std::string s = base + filler_prefix + std::string(fill, 'f') + "\r\n\r\n";
  CHECK_EQ(s.size(), kMaxRequestHead);
  UpgradeRequest r = parse(s);
  CHECK_EQ(r.status, Upgrade::Ok);
  CHECK_EQ(r.head_len, kMaxRequestHead);
}

// ---- 400 ----

TEST(answers_400_to_a_head_too_large) {
  const std::string base = kRequestLine + kHeaders + "X-Fill: ";
  const std::string no_end = base + std::string(kMaxRequestHead - base.size(), 'f');
  CHECK_EQ(no_end.size(), kMaxRequestHead);
  CHECK_EQ(status(no_end.substr(0, kMaxRequestHead - 1)), Upgrade::NeedMore);
  UpgradeRequest r = parse(no_end);
  CHECK_EQ(r.status, Upgrade::BadRequest);
  CHECK(r.reason != nullptr);
  // The blank line arrives one byte too late.
  const std::string late = base + std::string(kMaxRequestHead - base.size() - 3, 'f') + "\r\n\r\n";
  CHECK_EQ(late.size(), kMaxRequestHead + 1);
  CHECK_EQ(status(late), Upgrade::BadRequest);
  CHECK_EQ(status(std::string(100000, 'G')), Upgrade::BadRequest);
}

TEST(answers_400_to_a_method_other_than_GET) {
  CHECK_EQ(status(with("GET ", "POST ")), Upgrade::BadRequest);
  CHECK_EQ(status(with("GET ", "get ")), Upgrade::BadRequest);  // methods are case-sensitive
  CHECK_EQ(status(with("GET ", "HEAD ")), Upgrade::BadRequest);
}

TEST(answers_400_to_http_before_1_1) {
  CHECK_EQ(status(with("HTTP/1.1\r\n", "HTTP/1.0\r\n")), Upgrade::BadRequest);
  CHECK_EQ(status(with("HTTP/1.1\r\n", "HTTP/0.9\r\n")), Upgrade::BadRequest);
}

TEST(answers_400_to_a_malformed_request_line) {
  for (const char* line : {"GET /\r\n", "GET  / HTTP/1.1\r\n", "GET / HTTP/1.1 \r\n", "GET / http/1.1\r\n",
                           "GET / HTTP/11\r\n", "GET / HTTP/1.x\r\n", "GET / HTTP/1.10\r\n", " GET / HTTP/1.1\r\n",
                           "GET /a\x01 HTTP/1.1\r\n", "GET /\xc3\xa9 HTTP/1.1\r\n", "\r\n"}) {
    CHECK_EQ(status(with(kRequestLine, line)), Upgrade::BadRequest);
  }
  CHECK_EQ(status("\r\n\r\n"), Upgrade::BadRequest);
}

TEST(answers_400_to_missing_or_repeated_host) {
  CHECK_EQ(status(with("Host: example.com\r\n", "")), Upgrade::BadRequest);
  CHECK_EQ(status(with("Host: example.com\r\n", "Host: a\r\nHost: b\r\n")), Upgrade::BadRequest);
}

TEST(answers_400_to_a_header_line_without_a_colon) {
  CHECK_EQ(status(kRequestLine + kHeaders + "NoColonHere\r\n\r\n"), Upgrade::BadRequest);
}

TEST(answers_400_to_obsolete_line_folding) {
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: one\r\n two\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: one\r\n\ttwo\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + " Host: x\r\n" + kHeaders + "\r\n"), Upgrade::BadRequest);
}

TEST(answers_400_to_control_characters_in_headers) {
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: a\x01z\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: a\x7fz\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + std::string("X-A: a\0z\r\n\r\n", 12)), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: a\nz\r\n\r\n"), Upgrade::BadRequest);   // bare LF (see below)
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: a\rz\r\n\r\n"), Upgrade::BadRequest);   // bare CR
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A: a\r\r\n\r\n"), Upgrade::BadRequest);
}

TEST(answers_400_to_malformed_header_names) {
  CHECK_EQ(status(kRequestLine + kHeaders + ": value\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "X-A : value\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "X(A): value\r\n\r\n"), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "X\xc3\xa9: value\r\n\r\n"), Upgrade::BadRequest);
}

TEST(answers_400_to_a_key_that_is_not_base64_of_16_bytes) {
  const std::string bad_keys[] = {
      "",                                // empty
      "dGhlIHNhbXBsZSBub25jZQ=",         // 23 chars
      "dGhlIHNhbXBsZSBub25jZQ===",       // 25 chars
      "dGhlIHNhbXBsZSBub25j",            // 15 bytes, unpadded
      "dGhlIHNhbXBsZSBub25jZQ",          // 16 bytes without padding
      "dGhlIHNhbXBsZSBub25jZSE=",        // 17 bytes
      "dGhlIHNhbXBsZSBub25jZQ!=",        // bad padding
      "dGhlIHNhbXBsZSBub25j*Q==",        // not in the alphabet
      "dGhlIHNhbXBsZSBu b25jZQ==",       // inner space
      "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
  };
  for (const std::string& key : bad_keys) {
    CHECK_EQ(status(with(std::string("Sec-WebSocket-Key: ") + kRfcKey + "\r\n", "Sec-WebSocket-Key: " + key + "\r\n")),
             Upgrade::BadRequest);
  }
  CHECK_EQ(status(with(std::string("Sec-WebSocket-Key: ") + kRfcKey + "\r\n", "")), Upgrade::BadRequest);
  CHECK_EQ(status(kRequestLine + kHeaders + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n"),
           Upgrade::BadRequest);  // two keys
}

// ---- bare LF: refused at once, complete head or not ----

namespace {

constexpr const char* kBareLfReason = "bare LF in request head; lines must end with CRLF";

// The valid request with the CR of its line ending number `line` (0: the request line; the last is the
// blank line) removed, so that its LF is bare. Sets *lf to that LF's offset. Empty if there is no such line.
std::string with_bare_lf(size_t line, size_t* lf) {
  size_t at = 0;
  for (size_t k = 0;; k++) {
    at = kValid.find("\r\n", at);
    if (at == std::string::npos) return "";
    if (k == line) break;
    at += 2;
  }
  *lf = at;
  return kValid.substr(0, at) + kValid.substr(at + 1);
}

}  // namespace

TEST(answers_400_at_once_to_the_audit_request_with_bare_lf_line_endings) {
  const std::string audit = "GET / HTTP/1.1\nHost: x\n\n";
  UpgradeRequest r = parse(audit);
  CHECK_EQ(r.status, Upgrade::BadRequest);
  CHECK_EQ(r.reason, kBareLfReason);
  CHECK_EQ(r.head_len, 0u);  // the head never ended with "\r\n\r\n"
  // Answered as soon as the first line has arrived: nothing waits for the handshake timeout.
  CHECK_EQ(parse("GET / HTTP/1.1\n").status, Upgrade::BadRequest);
  CHECK_EQ(parse("GET / HTTP/1.1\n").reason, kBareLfReason);
  CHECK_EQ(status("GET / HTTP/1.1"), Upgrade::NeedMore);
}

TEST(answers_400_to_a_bare_lf_at_any_line_end_of_a_head_split_at_every_byte) {
  // Each line end of the valid request in turn loses its CR; the head arrives in two pieces split at
  // every position, parsed after each as the server does. Up to the bare LF it is a prefix of a valid
  // request (NeedMore); once the LF is in, it is refused, whatever follows.
  size_t lines = 0;
  for (size_t line = 0;; line++) {
    size_t lf = 0;
    const std::string s = with_bare_lf(line, &lf);
    if (s.empty()) break;
    lines++;
    for (size_t split = 0; split <= s.size(); split++) {
      const UpgradeRequest first = parse(s.substr(0, split));
      if (split <= lf) {
        CHECK_EQ(first.status, Upgrade::NeedMore);
      } else {
        CHECK_EQ(first.status, Upgrade::BadRequest);
        CHECK_EQ(first.reason, kBareLfReason);
      }
      const UpgradeRequest both = parse(s);
      CHECK_EQ(both.status, Upgrade::BadRequest);
      CHECK_EQ(both.reason, kBareLfReason);
    }
  }
  CHECK_EQ(lines, 7u);  // request line, five headers, blank line
}

TEST(answers_400_to_bare_lf_anywhere_in_the_head) {
  const std::string cases[] = {
      "\n",                                              // the very first byte
      "\n\n",
      "GET\n",                                           // inside the request line
      "GET / HTTP/1.1\r\n\n",                            // a bare LF as the blank line
      "GET / HTTP/1.1\r\nHost: x\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n\n\r\n",             // CR LF LF CR LF: no CRLFCRLF
      kRequestLine + kHeaders + "X-A: a\nz\r\n\r\n",     // inside a header value, complete head
      kRequestLine + "X-A: a\nz",                        // the same, incomplete
      kRequestLine + kHeaders + "\n\r\n",                // LF CR LF before the blank line
      kRequestLine + "X-A: \r\r\n" + "\n",               // after a stray CR
  };
  for (const std::string& c : cases) {
    const UpgradeRequest r = parse(c);
    CHECK_EQ(r.status, Upgrade::BadRequest);
    CHECK_EQ(r.reason, kBareLfReason);
    CHECK(r.head_len <= c.size());
  }
  // A complete head with a bare LF inside: head_len still names its end.
  const std::string complete = kRequestLine + kHeaders + "X-A: a\nz\r\n\r\n";
  CHECK_EQ(parse(complete).head_len, complete.size());
  // The bare LF decides before any other fault of the head (here: POST, no Host).
  CHECK_EQ(parse("POST / HTTP/1.0\r\nX: y\n").reason, kBareLfReason);
  // A bare LF past kMaxRequestHead is never looked at: the head is too large first.
  const std::string big = kRequestLine + "X-Fill: " + std::string(kMaxRequestHead, 'f') + "\n";
  const UpgradeRequest r = parse(big);
  CHECK_EQ(r.status, Upgrade::BadRequest);
  CHECK(r.reason != nullptr && std::string(r.reason) != kBareLfReason);
}

TEST(does_not_mistake_crlf_split_between_reads_or_frame_bytes_for_a_bare_lf) {
  // A CR at the end of what has arrived is an unfinished CRLF, not an error.
  CHECK_EQ(status("GET / HTTP/1.1\r"), Upgrade::NeedMore);
  CHECK_EQ(status(kRequestLine + "Host: x\r\n\r"), Upgrade::NeedMore);
  // Bytes after a complete head belong to WebSocket frames and may hold any byte, LF included.
  UpgradeRequest r = parse(kValid + "\n\n\x81\x0a");
  CHECK_EQ(r.status, Upgrade::Ok);
  CHECK_EQ(r.head_len, kValid.size());
  r = parse(std::string("GET /x HTTP/1.1\r\nHost: x\r\n\r\n") + "\n");
  CHECK_EQ(r.status, Upgrade::NotFound);
}

// ---- 404 and 426, and their order ----

TEST(answers_404_to_another_path_with_or_without_upgrade_headers) {
  CHECK_EQ(status(with("GET / ", "GET /nope ")), Upgrade::NotFound);
  CHECK_EQ(status("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), Upgrade::NotFound);
  CHECK_EQ(status(kValid, "/ws"), Upgrade::NotFound);
  CHECK_EQ(status(with("GET / ", "GET /ws/ "), "/ws"), Upgrade::NotFound);
  CHECK_EQ(status(with("GET / ", "GET /wsx "), "/ws"), Upgrade::NotFound);
  CHECK_EQ(status(with("GET / ", "GET http://example.com/ ")), Upgrade::NotFound);
  CHECK_EQ(status(with("GET / ", "GET * ")), Upgrade::NotFound);
}

TEST(answers_426_to_a_plain_get_for_the_path) {
  CHECK_EQ(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Upgrade: websocket\r\n", "")), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Connection: Upgrade\r\n", "")), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Upgrade: websocket\r\n", "Upgrade: websocket2\r\n")), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Connection: Upgrade\r\n", "Connection: upgraded\r\n")), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Connection: Upgrade\r\n", "Connection: keep-alive\r\n")), Upgrade::UpgradeRequired);
}

TEST(answers_426_to_a_websocket_version_other_than_13) {
  CHECK_EQ(status(with("Sec-WebSocket-Version: 13\r\n", "")), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version: 8\r\n")), Upgrade::UpgradeRequired);
  CHECK_EQ(status(with("Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version: 13, 8\r\n")),
           Upgrade::UpgradeRequired);
  CHECK_EQ(status(kRequestLine + kHeaders + "Sec-WebSocket-Version: 8\r\n\r\n"), Upgrade::UpgradeRequired);
}

TEST(gives_a_reason_with_every_error) {
  const std::string errors[] = {"POST / HTTP/1.1\r\n\r\n", "GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
                                "GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::string(kMaxRequestHead, 'x')};
  for (const std::string& e : errors) {
    UpgradeRequest r = parse(e);
    CHECK(r.status != Upgrade::Ok && r.status != Upgrade::NeedMore);
    CHECK(r.reason != nullptr && r.reason[0] != '\0');
  }
}

// ---- responses ----

TEST(writes_the_101_response) {
  UpgradeRequest r = parse(kValid);
  char out[256];
  const size_t n = write_upgrade_response(r, out, sizeof out);
  CHECK_EQ(std::string(out, n),
           "HTTP/1.1 101 Switching Protocols\r\n"
           "Upgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
           "\r\n");
}

TEST(echoes_starling_v1_in_the_101_response_when_offered) {
  UpgradeRequest r = parse(kRequestLine + kHeaders + "Sec-WebSocket-Protocol: chat, starling.v1\r\n\r\n");
  char out[256];
  const size_t n = write_upgrade_response(r, out, sizeof out);
  CHECK_EQ(std::string(out, n),
           "HTTP/1.1 101 Switching Protocols\r\n"
           "Upgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
           "Sec-WebSocket-Protocol: starling.v1\r\n"
           "\r\n");
}

TEST(writes_nothing_when_the_101_does_not_fit_or_the_request_is_not_ok) {
  UpgradeRequest r = parse(kRequestLine + kHeaders + "Sec-WebSocket-Protocol: starling.v1\r\n\r\n");
  char big[256];
  const size_t need = write_upgrade_response(r, big, sizeof big);
  CHECK(need > 0 && need < 256);
  for (size_t cap = 0; cap < need; cap++) {
    std::vector<char> out(cap);
    CHECK_EQ(write_upgrade_response(r, out.data(), cap), 0u);
  }
  std::vector<char> exact(need);
  CHECK_EQ(write_upgrade_response(r, exact.data(), need), need);
  CHECK_EQ(write_upgrade_response(parse("GET /x HTTP/1.1\r\nHost: x\r\n\r\n"), big, sizeof big), 0u);
}

TEST(writes_well_formed_error_responses) {
  char out[512];
  size_t n = write_http_error(Upgrade::BadRequest, "bad key", out, sizeof out);
  CHECK_EQ(std::string(out, n),
           "HTTP/1.1 400 Bad Request\r\n"
           "Connection: close\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n"
           "Content-Length: 8\r\n"
           "\r\n"
           "bad key\n");
  n = write_http_error(Upgrade::NotFound, "no", out, sizeof out);
  CHECK_EQ(std::string(out, n),
           "HTTP/1.1 404 Not Found\r\n"
           "Connection: close\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n"
           "Content-Length: 3\r\n"
           "\r\n"
           "no\n");
  n = write_http_error(Upgrade::UpgradeRequired, "WebSocket upgrade required", out, sizeof out);
  CHECK_EQ(std::string(out, n),
           "HTTP/1.1 426 Upgrade Required\r\n"
           "Connection: close\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n"
           "Upgrade: websocket\r\n"
           "Sec-WebSocket-Version: 13\r\n"
           "Content-Length: 27\r\n"
           "\r\n"
           "WebSocket upgrade required\n");
}

TEST(error_content_length_matches_the_body_for_every_parser_reason) {
  const std::string requests[] = {"POST / HTTP/1.1\r\n\r\n", "GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
                                  "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.0\r\n\r\n",
                                  with("Sec-WebSocket-Version: 13\r\n", ""), std::string(kMaxRequestHead, 'x'),
                                  "GET / HTTP/1.1\nHost: x\n\n"};
  for (const std::string& req : requests) {
    UpgradeRequest r = parse(req);
    char out[512];
    const size_t n = write_http_error(r.status, r.reason, out, sizeof out);
    CHECK(n > 0);
    const std::string resp(out, n);
    const size_t blank = resp.find("\r\n\r\n");
    const size_t cl = resp.find("Content-Length: ");
    CHECK(blank != std::string::npos && cl != std::string::npos);
    if (blank == std::string::npos || cl == std::string::npos) continue;
    CHECK_EQ(std::stoul(resp.substr(cl + 16)), n - blank - 4);
  }
}

TEST(error_responses_fit_in_512_bytes_and_report_a_small_buffer) {
  const std::string long_reason(5000, 'r');
  char out[512];
  const size_t n = write_http_error(Upgrade::UpgradeRequired, long_reason.c_str(), out, sizeof out);
  CHECK(n > 0 && n <= 512);
  for (size_t cap = 0; cap < n; cap++) {
    std::vector<char> small(cap);
    CHECK_EQ(write_http_error(Upgrade::UpgradeRequired, long_reason.c_str(), small.data(), cap), 0u);
  }
  CHECK(write_http_error(Upgrade::BadRequest, nullptr, out, sizeof out) > 0);
  CHECK_EQ(write_http_error(Upgrade::Ok, "x", out, sizeof out), 0u);
  CHECK_EQ(write_http_error(Upgrade::NeedMore, "x", out, sizeof out), 0u);
}

// ---- SHA-1 and base64 ----

TEST(sha1_matches_the_rfc_3174_and_fips_180_vectors) {
  CHECK_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
           "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  CHECK_EQ(sha1_hex(std::string(1000000, 'a')), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

TEST(sha1_pads_correctly_around_block_boundaries) {
  CHECK_EQ(sha1_hex(std::string(55, 'a')), "c1c8bbdc22796e28c0e15163d20899b65621d65a");
  CHECK_EQ(sha1_hex(std::string(56, 'a')), "c2db330f6083854c99d4b5bfb6e8f29f201be699");
  CHECK_EQ(sha1_hex(std::string(63, 'a')), "03f09f5b158a7a8cdad920bddc29b81c18a551f5");
  CHECK_EQ(sha1_hex(std::string(64, 'a')), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
  CHECK_EQ(sha1_hex(std::string(119, 'a')), "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56");
  CHECK_EQ(sha1_hex(std::string(120, 'a')), "f34c1488385346a55709ba056ddd08280dd4c6d6");
  CHECK_EQ(sha1_hex(std::string(1000, 'a')), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
}

TEST(base64_matches_the_rfc_4648_vectors) {
  CHECK_EQ(b64(""), "");
  CHECK_EQ(b64("f"), "Zg==");
  CHECK_EQ(b64("fo"), "Zm8=");
  CHECK_EQ(b64("foo"), "Zm9v");
  CHECK_EQ(b64("foob"), "Zm9vYg==");
  CHECK_EQ(b64("fooba"), "Zm9vYmE=");
  CHECK_EQ(b64("foobar"), "Zm9vYmFy");
  CHECK_EQ(b64("\xfb\xff\xbf"), "+/+/");
  CHECK_EQ(b64("the sample nonce"), kRfcKey);
}

// ---- hostile input ----

TEST(survives_random_bytes_and_mutated_requests) {
  Rng rng(0xC0FFEE);
  const std::string extra = kRequestLine + kHeaders + "Sec-WebSocket-Protocol: starling.v1\r\n\r\n";
  for (int iter = 0; iter < 6000; iter++) {
    std::string s;
    switch (iter % 3) {
      case 0: {  // random bytes, biased to the characters HTTP cares about
        const char alphabet[] = "GET /HTTP1.:\r\n \t,";
        s.resize(rng.below(300));
        for (char& c : s) c = rng.below(2) ? alphabet[rng.below(sizeof alphabet - 1)] : static_cast<char>(rng.byte());
        if (rng.below(2)) s += "\r\n\r\n";
        break;
      }
      case 1: {  // a valid request with a few bytes changed, inserted or removed
        s = rng.below(2) ? kValid : extra;
        for (size_t k = 1 + rng.below(4); k > 0; k--) {
          const size_t at = rng.below(s.size());
          switch (rng.below(3)) {
            case 0: s[at] = static_cast<char>(rng.byte()); break;
            case 1: s.insert(s.begin() + at, static_cast<char>(rng.byte())); break;
            default: s.erase(at, 1 + rng.below(3)); break;
          }
        }
        break;
      }
      default:  // a truncated valid request
        s = kValid.substr(0, rng.below(kValid.size() + 1));
        break;
    }
    UpgradeRequest r = parse(s);
    if (r.status == Upgrade::NeedMore) {
      CHECK(s.size() < kMaxRequestHead);
      CHECK(!has_bare_lf(s, s.size()));  // a bare LF is never left waiting
      continue;
    }
    if (r.status == Upgrade::Ok) CHECK(!has_bare_lf(s, r.head_len));
    CHECK(r.reason != nullptr);
    CHECK(r.head_len <= s.size() && r.head_len <= kMaxRequestHead);
    char out[512];
    if (r.status == Upgrade::Ok) {
      CHECK_EQ(std::strlen(r.accept), 28u);
      CHECK(r.head_len >= 4 && s.compare(r.head_len - 4, 4, "\r\n\r\n") == 0);
      CHECK(write_upgrade_response(r, out, sizeof out) > 0);
    } else {
      CHECK(write_http_error(r.status, r.reason, out, sizeof out) > 0);
    }
  }
}

// ---- the token query parameter ----

namespace {
std::string with_target(const std::string& target) {
  std::string req = kValid;
  const size_t at = req.find(' ') + 1;
  req.replace(at, req.find(' ', at) - at, target);
  return req;
}
std::string token_of(const std::string& target) {
  const std::string req = with_target(target);
  UpgradeRequest r = parse_upgrade(req.data(), req.size(), "/chat");
  if (r.status != Upgrade::Ok) return "<status " + std::to_string(static_cast<int>(r.status)) + ">";
  return std::string(r.token, r.token_len);
}
std::string decoded(std::string_view in, size_t cap = 64) {
  char out[64];
  long n = percent_decode(in, out, cap);
  return n < 0 ? "<refused>" : std::string(out, static_cast<size_t>(n));
}
}  // namespace

TEST(the_first_token_parameter_of_the_query_is_handed_over_raw) {
  CHECK_EQ(token_of("/chat"), "");
  CHECK_EQ(token_of("/chat?"), "");
  CHECK_EQ(token_of("/chat?token=abc"), "abc");
  CHECK_EQ(token_of("/chat?a=1&token=x.y.z&b"), "x.y.z");
  CHECK_EQ(token_of("/chat?token=first&token=second"), "first");
  CHECK_EQ(token_of("/chat?tokens=no&xtoken=no"), "");
  CHECK_EQ(token_of("/chat?token"), "");
  CHECK_EQ(token_of("/chat?token=a%20b"), "a%20b");
  CHECK_EQ(token_of("/other?token=abc"), "<status 3>");  // 404: another path
}

TEST(percent_decoding_refuses_truncated_escapes_and_overflow) {
  CHECK_EQ(decoded("a%2Eb%2fc+d"), "a.b/c d");
  CHECK_EQ(decoded(""), "");
  CHECK_EQ(decoded("%"), "<refused>");
  CHECK_EQ(decoded("%2"), "<refused>");
  CHECK_EQ(decoded("ab%"), "<refused>");
  CHECK_EQ(decoded("%zz"), "<refused>");
  CHECK_EQ(decoded("%00"), std::string(1, '\0'));
  CHECK_EQ(decoded("abcd", 3), "<refused>");
  CHECK_EQ(decoded("abc", 3), "abc");
}
