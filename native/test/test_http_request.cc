// Unit tests for http_request.cc: request heads (framing, smuggling defences, keep-alive, Expect, WebSocket
// and CORS fields), query parameters, the chunked-body decoder and response heads.
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "check.h"
#include "rng.h"
#include "transport/http_request.h"

using namespace starling;

namespace {

const std::string kGet = "GET /history?subject=a&limit=5 HTTP/1.1\r\nHost: example.com\r\n\r\n";

// Parses from an exact-size heap copy so ASan catches any read past the end. The copies are kept until the
// test binary exits: the request's views point into them.
HttpRequest parse(const std::string& s, VersionPolicy v = VersionPolicy::Http10And11) {
  static std::deque<std::vector<char>> copies;
  const std::vector<char>& copy = copies.emplace_back(s.begin(), s.end());
  return parse_request(copy.data(), copy.size(), v);
}

// A POST /publish head with the given extra header lines.
std::string post(const std::string& headers, const std::string& version = "HTTP/1.1") {
  return "POST /publish " + version + "\r\nHost: x\r\n" + headers + "\r\n";
}

// The error status of s (0 when it is not an Error).
int error_of(const std::string& s) {
  const HttpRequest r = parse(s);
  return r.status == RequestStatus::Error ? r.error_status : 0;
}

// s with min_edits to min_edits + 3 bytes changed (to one of `alphabet`), inserted (any byte) or removed.
std::string mutated(std::string s, std::string_view alphabet, size_t min_edits, Rng* rng) {
  for (size_t k = min_edits + rng->below(4); k > 0 && !s.empty(); k--) {
    const size_t at = rng->below(s.size());
    switch (rng->below(3)) {
      case 0: s[at] = alphabet[rng->below(alphabet.size())]; break;
      case 1: s.insert(s.begin() + static_cast<long>(at), static_cast<char>(rng->byte())); break;
      default: s.erase(at, 1 + rng->below(3)); break;
    }
  }
  return s;
}

std::string reason_of(const std::string& s) {
  const HttpRequest r = parse(s);
  return r.reason != nullptr ? r.reason : "<null>";
}

}  // namespace

// ---- request heads ----

TEST(parses_a_get_with_path_query_and_version) {
  const HttpRequest r = parse(kGet);
  CHECK_EQ(r.status, RequestStatus::Ok);
  CHECK_EQ(r.error_status, 0);
  CHECK_EQ(r.reason, "ok");
  CHECK_EQ(r.head_len, kGet.size());
  CHECK_EQ(r.method, Method::Get);
  CHECK_EQ(r.method_text, "GET");
  CHECK_EQ(r.target, "/history?subject=a&limit=5");
  CHECK_EQ(r.path, "/history");
  CHECK_EQ(r.query, "subject=a&limit=5");
  CHECK_EQ(r.version_major, 1);
  CHECK_EQ(r.version_minor, 1);
  CHECK(r.keep_alive);
  CHECK_EQ(r.body, BodyFraming::None);
  CHECK_EQ(r.content_length, 0u);
  CHECK_EQ(r.expect, Expectation::None);
  CHECK_EQ(r.host, "example.com");
  CHECK_EQ(r.origin, "");
}

TEST(recognises_the_methods_case_sensitively) {
  auto method = [](const std::string& m) { return parse(m + " / HTTP/1.1\r\nHost: x\r\n\r\n").method; };
  CHECK_EQ(method("GET"), Method::Get);
  CHECK_EQ(method("HEAD"), Method::Head);
  CHECK_EQ(method("POST"), Method::Post);
  CHECK_EQ(method("OPTIONS"), Method::Options);
  CHECK_EQ(method("PATCH"), Method::Other);
  CHECK_EQ(method("get"), Method::Other);
  const HttpRequest r = parse("M-SEARCH * HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK_EQ(r.method_text, "M-SEARCH");
  CHECK_EQ(r.path, "*");
}

TEST(splits_the_target_at_the_first_question_mark) {
  auto target = [](const std::string& t) { return parse("GET " + t + " HTTP/1.1\r\nHost: x\r\n\r\n"); };
  CHECK_EQ(target("/sse").query, "");
  CHECK_EQ(target("/sse?").path, "/sse");
  CHECK_EQ(target("/sse?").query, "");
  CHECK_EQ(target("/a?b?c").path, "/a");
  CHECK_EQ(target("/a?b?c").query, "b?c");
  CHECK_EQ(target("?x").path, "");
}

TEST(needs_more_for_every_prefix_and_is_exact_at_the_end) {
  const std::string s = post("Content-Length: 3\r\n");
  for (size_t n = 0; n < s.size(); n++) CHECK_EQ(parse(s.substr(0, n)).status, RequestStatus::NeedMore);
  CHECK_EQ(parse(s).status, RequestStatus::Ok);
  CHECK(parse("GET / HTTP/1.1").reason == nullptr);
}

TEST(head_len_is_exact_for_pipelined_requests) {
  const std::string first = post("Content-Length: 5\r\n");
  const std::string second = "GET /sse HTTP/1.1\r\nHost: y\r\n\r\n";
  const std::string wire = first + "hello" + second + "GET /";
  const HttpRequest a = parse(wire);
  CHECK_EQ(a.status, RequestStatus::Ok);
  CHECK_EQ(a.head_len, first.size());
  CHECK_EQ(a.body, BodyFraming::ContentLength);
  CHECK_EQ(a.content_length, 5u);
  const size_t next = a.head_len + a.content_length;
  const HttpRequest b = parse(wire.substr(next));
  CHECK_EQ(b.status, RequestStatus::Ok);
  CHECK_EQ(b.head_len, second.size());
  CHECK_EQ(b.path, "/sse");
  CHECK_EQ(parse(wire.substr(next + b.head_len)).status, RequestStatus::NeedMore);
  // Two heads back to back with no body: each ends exactly at its own blank line.
  const HttpRequest c = parse(second + second);
  CHECK_EQ(c.head_len, second.size());
  // A bare LF or garbage after a complete head belongs to the next request, not this one.
  CHECK_EQ(parse(second + "\n\x01").status, RequestStatus::Ok);
}

TEST(accepts_http_1_0_without_host_and_refuses_other_versions_with_505) {
  const HttpRequest r = parse("GET / HTTP/1.0\r\n\r\n");
  CHECK_EQ(r.status, RequestStatus::Ok);
  CHECK_EQ(r.version_minor, 0);
  for (const char* v : {"HTTP/0.9", "HTTP/1.2", "HTTP/2.0", "HTTP/9.9"}) {
    const HttpRequest e = parse(std::string("GET / ") + v + "\r\nHost: x\r\n\r\n");
    CHECK_EQ(e.status, RequestStatus::Error);
    CHECK_EQ(e.error_status, 505);
    CHECK(e.reason != nullptr && std::strstr(e.reason, "version") != nullptr);
  }
  // The policy parse_upgrade uses: later versions by the rules of 1.1, earlier ones still 505.
  const HttpRequest later = parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n", VersionPolicy::Http10AndLater);
  CHECK_EQ(later.status, RequestStatus::Ok);
  CHECK_EQ(later.version_major, 2);
  CHECK(later.keep_alive);
  CHECK_EQ(parse("GET / HTTP/2.0\r\n\r\n", VersionPolicy::Http10AndLater).error_status, 400);  // no Host
  CHECK_EQ(parse("GET / HTTP/0.9\r\nHost: x\r\n\r\n", VersionPolicy::Http10AndLater).error_status, 505);
  // Not a version at all is a malformed request line.
  CHECK_EQ(error_of("GET / HTTP/1.10\r\nHost: x\r\n\r\n"), 400);
  CHECK_EQ(error_of("GET / HTTP/x.1\r\nHost: x\r\n\r\n"), 400);
}

TEST(keep_alive_follows_the_version_and_the_connection_tokens) {
  auto ka = [](const std::string& version, const std::string& connection) {
    return parse("GET / " + version + "\r\nHost: x\r\n" + connection + "\r\n").keep_alive;
  };
  CHECK(ka("HTTP/1.1", ""));
  CHECK(!ka("HTTP/1.1", "Connection: close\r\n"));
  CHECK(!ka("HTTP/1.1", "Connection: CLOSE\r\n"));
  CHECK(!ka("HTTP/1.1", "Connection: upgrade, Close\r\n"));
  CHECK(!ka("HTTP/1.1", "Connection: keep-alive\r\nConnection: close\r\n"));
  CHECK(ka("HTTP/1.1", "Connection: closed\r\n"));
  CHECK(ka("HTTP/1.1", "Connection: keep-alive\r\n"));
  CHECK(!ka("HTTP/1.0", ""));
  CHECK(ka("HTTP/1.0", "Connection: Keep-Alive\r\n"));
  CHECK(ka("HTTP/1.0", "Connection: foo ,\tkeep-alive\r\n"));
  CHECK(!ka("HTTP/1.0", "Connection: keep-alive, close\r\n"));
  CHECK(!ka("HTTP/1.0", "Connection: keep-alives\r\n"));
}

TEST(reads_content_length_and_chunked_framing) {
  HttpRequest r = parse(post("Content-Length: 0\r\n"));
  CHECK_EQ(r.body, BodyFraming::ContentLength);
  CHECK_EQ(r.content_length, 0u);
  r = parse(post("Content-Length:  \t 0042 \r\n"));
  CHECK_EQ(r.body, BodyFraming::ContentLength);
  CHECK_EQ(r.content_length, 42u);
  r = parse(post("Content-Length: 9223372036854775807\r\n"));  // 2^63 - 1
  CHECK_EQ(r.status, RequestStatus::Ok);
  CHECK_EQ(r.content_length, 9223372036854775807ull);
  for (const char* te : {"chunked", "Chunked", "CHUNKED", " chunked\t", "\tchunked"}) {
    r = parse(post(std::string("Transfer-Encoding:") + te + "\r\n"));
    CHECK_EQ(r.status, RequestStatus::Ok);
    CHECK_EQ(r.body, BodyFraming::Chunked);
  }
}

// ---- request smuggling defences ----

TEST(refuses_both_content_length_and_transfer_encoding) {
  CHECK_EQ(error_of(post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")), 400);
  CHECK_EQ(error_of(post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")), 400);
  CHECK_EQ(reason_of(post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")),
           "both Content-Length and Transfer-Encoding");
  // Even with a Transfer-Encoding we do not implement: the ambiguity is the worse fault.
  CHECK_EQ(error_of(post("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n")), 400);
}

TEST(refuses_repeated_or_list_content_length) {
  CHECK_EQ(error_of(post("Content-Length: 5\r\nContent-Length: 5\r\n")), 400);
  CHECK_EQ(reason_of(post("Content-Length: 5\r\nContent-Length: 6\r\n")), "more than one Content-Length header");
  CHECK_EQ(error_of(post("Content-Length: 5, 5\r\n")), 400);
  CHECK_EQ(reason_of(post("Content-Length: 5,5\r\n")), "Content-Length with more than one value");
  CHECK_EQ(error_of(post("content-length: 1\r\nCONTENT-LENGTH: 1\r\n")), 400);
}

TEST(refuses_a_content_length_that_is_not_digits_or_overflows) {
  for (const char* v : {"", "-1", "+5", "5a", "0x10", "1 2", "1.0", "\xd9\xa3"}) {
    const std::string s = post(std::string("Content-Length: ") + v + "\r\n");
    CHECK_EQ(error_of(s), 400);
    CHECK_EQ(reason_of(s), "Content-Length is not a number");
  }
  for (const char* v : {"9223372036854775808", "18446744073709551616", "99999999999999999999999999"}) {
    const std::string s = post(std::string("Content-Length: ") + v + "\r\n");
    CHECK_EQ(error_of(s), 400);
    CHECK_EQ(reason_of(s), "Content-Length too large");
  }
}

TEST(refuses_transfer_encoding_in_http_1_0) {
  const std::string s = post("Transfer-Encoding: chunked\r\n", "HTTP/1.0");
  CHECK_EQ(error_of(s), 400);
  CHECK_EQ(reason_of(s), "Transfer-Encoding in an HTTP/1.0 request");
}

TEST(answers_501_to_a_transfer_encoding_other_than_chunked) {
  for (const char* te : {"gzip", "gzip, chunked", "chunked, chunked", "chunked;q=1", "identity", "", "chunk",
                         "chunkedx", "x-chunked"}) {
    const HttpRequest r = parse(post(std::string("Transfer-Encoding: ") + te + "\r\n"));
    CHECK_EQ(r.status, RequestStatus::Error);
    CHECK_EQ(r.error_status, 501);
    CHECK(r.reason != nullptr && std::strstr(r.reason, "chunked") != nullptr);
  }
  CHECK_EQ(error_of(post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")), 501);
  CHECK_EQ(error_of(post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n")), 501);
}

TEST(refuses_obs_fold_and_whitespace_before_the_colon) {
  const std::string fold = post("X-A: one\r\n two\r\n");
  CHECK_EQ(error_of(fold), 400);
  CHECK(reason_of(fold).find("folding") != std::string::npos);
  CHECK_EQ(error_of(post("X-A: one\r\n\ttwo\r\n")), 400);
  // The classic: a folded Transfer-Encoding another parser might join.
  CHECK_EQ(error_of(post("Transfer-Encoding:\r\n chunked\r\n")), 400);
  CHECK_EQ(error_of("GET / HTTP/1.1\r\n Host: x\r\n\r\n"), 400);
  const std::string ws = post("Transfer-Encoding : chunked\r\n");
  CHECK_EQ(error_of(ws), 400);
  CHECK_EQ(reason_of(ws), "whitespace between header name and colon");
  CHECK_EQ(error_of(post("Content-Length\t: 5\r\n")), 400);
}

TEST(refuses_malformed_header_names_and_lines) {
  CHECK_EQ(reason_of(post("NoColon\r\n")), "header without colon");
  CHECK_EQ(reason_of(post(": v\r\n")), "malformed header name");
  CHECK_EQ(reason_of(post("X(A): v\r\n")), "malformed header name");
  CHECK_EQ(reason_of(post("X\xc3\xa9: v\r\n")), "malformed header name");
  CHECK_EQ(reason_of(post("X-A: a\rb\r\n")), "stray CR in header");
  CHECK_EQ(error_of(post("X-A: a\r\r\n")), 400);
}

TEST(refuses_control_characters_in_values_but_not_tabs_or_obs_text) {
  for (char c : {'\x01', '\x08', '\x0b', '\x1f', '\x7f', '\0'}) {
    const std::string s = post(std::string("X-A: a") + c + "z\r\n");
    CHECK_EQ(error_of(s), 400);
    CHECK_EQ(reason_of(s), "control character in header");
  }
  CHECK_EQ(error_of(post("X-A:\ta\tb\t\r\n")), 0);
  CHECK_EQ(error_of(post("User-Agent: caf\xc3\xa9\r\n")), 0);
  CHECK_EQ(error_of(post("X-Empty:\r\n")), 0);
}

TEST(requires_exactly_one_host_in_http_1_1) {
  CHECK_EQ(reason_of("GET / HTTP/1.1\r\n\r\n"), "missing Host header");
  CHECK_EQ(error_of("GET / HTTP/1.1\r\nX: y\r\n\r\n"), 400);
  CHECK_EQ(reason_of("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), "more than one Host header");
  CHECK_EQ(error_of("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  CHECK_EQ(error_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 0);  // empty, but present (RFC 9112 §3.2)
}

TEST(refuses_repeated_single_value_headers) {
  for (const char* name : {"Origin", "Last-Event-ID", "Authorization", "Content-Type", "Accept",
                           "Access-Control-Request-Method", "Access-Control-Request-Headers"}) {
    const std::string s = post(std::string(name) + ": a\r\n" + name + ": b\r\n");
    CHECK_EQ(error_of(s), 400);
    CHECK(reason_of(s).find(name) != std::string::npos);
  }
}

TEST(a_bare_lf_is_refused_at_once_and_decides_first) {
  for (const std::string& s : {std::string("GET / HTTP/1.1\n"), std::string("\n"),
                               std::string("GET / HTTP/1.1\r\nHost: x\n\r\n"),
                               std::string("POST / HTTP/9.9\r\nTransfer-Encoding: gzip\nX")}) {
    const HttpRequest r = parse(s);
    CHECK_EQ(r.error_status, 400);
    CHECK_EQ(r.reason, "bare LF in request head; lines must end with CRLF");
    CHECK(r.head_len <= s.size());
  }
  const std::string complete = "GET / HTTP/1.1\r\nX: a\nb\r\n\r\n";
  CHECK_EQ(parse(complete).head_len, complete.size());
  CHECK_EQ(parse("GET / HTTP/1.1\nHost: x\n\n").head_len, 0u);
}

TEST(answers_431_to_a_head_too_large) {
  const std::string base = "GET / HTTP/1.1\r\nHost: x\r\nX-Fill: ";
  const std::string fits = base + std::string(kMaxRequestHead - base.size() - 4, 'f') + "\r\n\r\n";
  CHECK_EQ(fits.size(), kMaxRequestHead);
  CHECK_EQ(parse(fits).status, RequestStatus::Ok);
  const std::string no_end = base + std::string(kMaxRequestHead - base.size(), 'f');
  CHECK_EQ(parse(no_end.substr(0, kMaxRequestHead - 1)).status, RequestStatus::NeedMore);
  const HttpRequest r = parse(no_end);
  CHECK_EQ(r.error_status, 431);
  CHECK_EQ(r.head_len, 0u);
  CHECK_EQ(r.reason, "request head too large");
  const std::string late = base + std::string(kMaxRequestHead - base.size() - 3, 'f') + "\r\n\r\n";
  CHECK_EQ(error_of(late), 431);
  CHECK_EQ(error_of(std::string(100000, 'G')), 431);
}

TEST(refuses_malformed_request_lines) {
  for (const char* line : {"GET /\r\n", "GET  / HTTP/1.1\r\n", "GET / HTTP/1.1 \r\n", "GET / http/1.1\r\n",
                           " GET / HTTP/1.1\r\n", "GET /a\x01 HTTP/1.1\r\n", "GET /\xc3\xa9 HTTP/1.1\r\n",
                           "G(T / HTTP/1.1\r\n", "\r\n"}) {
    const std::string s = std::string(line) + "Host: x\r\n\r\n";
    CHECK_EQ(error_of(s), 400);
    CHECK_EQ(reason_of(s), "malformed request line");
  }
}

TEST(reads_expect_100_continue_and_flags_other_expectations) {
  CHECK_EQ(parse(post("Expect: 100-continue\r\n")).expect, Expectation::Continue);
  CHECK_EQ(parse(post("Expect:  100-Continue \r\n")).expect, Expectation::Continue);
  CHECK_EQ(parse(post("Expect: 100-continue, foo\r\n")).expect, Expectation::Unsupported);
  CHECK_EQ(parse(post("Expect: 200-ok\r\n")).expect, Expectation::Unsupported);
  CHECK_EQ(parse(post("Expect:\r\n")).expect, Expectation::Unsupported);
  CHECK_EQ(parse(post("Expect: foo\r\nExpect: 100-continue\r\n")).expect, Expectation::Unsupported);
  CHECK_EQ(parse(post("Expect: 100-continue\r\nExpect: foo\r\n")).expect, Expectation::Unsupported);
  CHECK_EQ(parse(post("Expect: 100-continue\r\n", "HTTP/1.0")).expect, Expectation::None);  // ignored in 1.0
  CHECK_EQ(parse(post("")).expect, Expectation::None);
}

TEST(reads_the_websocket_upgrade_fields) {
  const HttpRequest r = parse(
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ== \r\n"
      "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: starling.v1\r\n\r\n");
  CHECK_EQ(r.status, RequestStatus::Ok);
  CHECK(r.upgrade_websocket);
  CHECK(r.connection_upgrade);
  CHECK(r.ws_version_seen);
  CHECK(r.ws_version_13);
  CHECK(r.ws_starling_v1);
  CHECK_EQ(r.ws_key_count, 1);
  CHECK_EQ(r.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
  const HttpRequest plain = parse(kGet);
  CHECK(!plain.upgrade_websocket && !plain.connection_upgrade && !plain.ws_version_seen && !plain.ws_version_13);
  CHECK(!plain.ws_starling_v1);
  CHECK_EQ(plain.ws_key_count, 0);
  const HttpRequest odd = parse("GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8\r\n"
                                "Sec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\nSec-WebSocket-Protocol: Starling.V1\r\n\r\n");
  CHECK(odd.ws_version_seen && !odd.ws_version_13);
  CHECK_EQ(odd.ws_key_count, 2);
  CHECK_EQ(odd.ws_key, "b");
  CHECK(!odd.ws_starling_v1);
}

TEST(hands_over_the_cors_and_transport_headers_trimmed) {
  const HttpRequest r = parse(
      "OPTIONS /publish HTTP/1.1\r\nHost: h\r\norigin: https://app.example\r\nLast-Event-ID: \t42\r\n"
      "AUTHORIZATION: Bearer abc \r\nContent-Type: text/plain\r\nAccept: text/event-stream\r\n"
      "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n");
  CHECK_EQ(r.status, RequestStatus::Ok);
  CHECK_EQ(r.method, Method::Options);
  CHECK_EQ(r.host, "h");
  CHECK_EQ(r.origin, "https://app.example");
  CHECK_EQ(r.last_event_id, "42");
  CHECK_EQ(r.authorization, "Bearer abc");
  CHECK_EQ(r.content_type, "text/plain");
  CHECK_EQ(r.accept, "text/event-stream");
  CHECK_EQ(r.access_control_request_method, "POST");
  CHECK_EQ(r.access_control_request_headers, "authorization, content-type");
}

TEST(every_error_has_a_reason_and_a_bounded_head_len) {
  Rng rng(0x5EED);
  const std::string seeds[] = {kGet, post("Content-Length: 12\r\n"), post("Transfer-Encoding: chunked\r\n"),
                               post("Expect: 100-continue\r\nOrigin: o\r\n")};
  for (int iter = 0; iter < 8000; iter++) {
    const std::string s = mutated(seeds[rng.below(4)], "\r\n :,\t\x01x5", 1, &rng);
    const HttpRequest r = parse(s);
    CHECK(r.head_len <= s.size());
    if (r.status == RequestStatus::Error) {
      CHECK(r.reason != nullptr && r.reason[0] != '\0');
      CHECK(r.error_status == 400 || r.error_status == 431 || r.error_status == 501 || r.error_status == 505);
      CHECK(status_phrase(r.error_status) != nullptr);
    } else if (r.status == RequestStatus::Ok) {
      CHECK(r.head_len >= 4 && s.compare(r.head_len - 4, 4, "\r\n\r\n") == 0);
      CHECK(r.path.size() <= r.target.size());
    }
  }
}

// ---- query parameters ----

namespace {
std::string params(std::string_view q) {
  std::string out;
  std::string_view name, value;
  while (next_query_param(&q, &name, &value)) out += "[" + std::string(name) + "=" + std::string(value) + "]";
  return out;
}
}  // namespace

TEST(iterates_query_parameters_in_order_raw) {
  CHECK_EQ(params(""), "");
  CHECK_EQ(params("a=1&b=2&a=3"), "[a=1][b=2][a=3]");
  CHECK_EQ(params("flag&x="), "[flag=][x=]");
  CHECK_EQ(params("&&a=1&&"), "[a=1]");
  CHECK_EQ(params("=v"), "[=v]");
  CHECK_EQ(params("s=a%2Fb&s=c+d"), "[s=a%2Fb][s=c+d]");
  CHECK_EQ(params("a=b=c"), "[a=b=c]");
  // Collecting every subject= parameter of a parsed request, decoded.
  const HttpRequest r = parse("GET /sse?subject=a.b&x=1&subject=c%2A HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string_view q = r.query, name, value;
  std::vector<std::string> subjects;
  while (next_query_param(&q, &name, &value)) {
    if (name != "subject") continue;
    char buf[64];
    const long n = percent_decode(value, buf, sizeof buf);
    CHECK(n >= 0);
    subjects.emplace_back(buf, static_cast<size_t>(n));
  }
  CHECK_EQ(subjects.size(), 2u);
  if (subjects.size() == 2) {
    CHECK_EQ(subjects[0], "a.b");
    CHECK_EQ(subjects[1], "c*");
  }
}

// ---- chunked bodies ----

namespace {

struct Decoded {
  ChunkedStatus status = ChunkedStatus::NeedMore;
  std::string data;
  size_t consumed = 0;
  std::string reason;
  uint64_t decoded = 0;
};

// Feeds `body` in pieces whose sizes come from next_piece (0: the rest), into a separate buffer or in place
// (decoded bytes kept compact at the front of the same buffer, as the server does).
template <typename Pieces>
Decoded decode(const std::string& body, Pieces next_piece, bool in_place, bool discard_from_start = false) {
  ChunkedDecoder d;
  if (discard_from_start) d.discard();
  std::vector<char> buf(body.begin(), body.end());
  std::vector<char> sep(body.size());
  Decoded out;
  size_t at = 0, written = 0;
  while (true) {
    size_t n = next_piece();
    if (n == 0 || n > body.size() - at) n = body.size() - at;
    // An exact-size copy of the piece when not in place, so ASan sees any read past it.
    std::vector<char> piece(buf.begin() + static_cast<long>(at), buf.begin() + static_cast<long>(at + n));
    const ChunkedStep step = in_place ? d.feed(buf.data() + at, n, buf.data() + written)
                                      : d.feed(piece.data(), n, sep.data() + written);
    CHECK(step.consumed <= n);
    CHECK(step.written <= step.consumed);
    if (step.status == ChunkedStatus::NeedMore) CHECK_EQ(step.consumed, n);
    written += step.written;
    at += step.consumed;
    if (step.status != ChunkedStatus::NeedMore || at == body.size()) {
      out.status = step.status;
      if (step.reason != nullptr) out.reason = step.reason;
      break;
    }
  }
  out.data.assign(in_place ? buf.data() : sep.data(), written);
  out.consumed = at;
  out.decoded = d.decoded();
  CHECK_EQ(d.consumed(), at);
  CHECK_EQ(d.status(), out.status);
  return out;
}

Decoded whole(const std::string& body, bool in_place = false) {
  return decode(body, [] { return size_t(0); }, in_place);
}
Decoded bytewise(const std::string& body, bool in_place = false) {
  return decode(body, [] { return size_t(1); }, in_place);
}

// A chunked encoding of data in chunks of `chunk` bytes, with an optional trailer section.
std::string chunked(const std::string& data, size_t chunk, const std::string& trailers = "") {
  std::string s;
  static const char digits[] = "0123456789abcdef";
  for (size_t at = 0; at < data.size(); at += chunk) {
    const size_t n = std::min(chunk, data.size() - at);
    std::string hex;
    for (size_t v = n; v != 0; v >>= 4) hex.insert(hex.begin(), digits[v & 15]);
    s += hex + "\r\n" + data.substr(at, n) + "\r\n";
  }
  return s + "0\r\n" + trailers + "\r\n";
}

std::string chunked_error(const std::string& body) {
  const Decoded whole_d = whole(body);
  const Decoded byte_d = bytewise(body, true);
  CHECK_EQ(whole_d.status, ChunkedStatus::Error);
  CHECK_EQ(byte_d.status, ChunkedStatus::Error);
  CHECK_EQ(whole_d.reason, byte_d.reason);
  CHECK_EQ(whole_d.consumed, byte_d.consumed);
  return whole_d.reason;
}

}  // namespace

TEST(decodes_a_chunked_body_fed_whole_and_reports_what_it_consumed) {
  const std::string body = "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
  const Decoded d = whole(body + "GET / HTTP/1.1\r\n");
  CHECK_EQ(d.status, ChunkedStatus::Done);
  CHECK_EQ(d.data, "hello, world");
  CHECK_EQ(d.decoded, 12u);
  CHECK_EQ(d.consumed, body.size());  // the next pipelined request starts right after
  // Upper-case hex, leading zeros, extensions and whitespace before them.
  const Decoded e = whole("0A;name=value;flag\r\n0123456789\r\n000\r\n\r\n");
  CHECK_EQ(e.status, ChunkedStatus::Done);
  CHECK_EQ(e.data, "0123456789");
  CHECK_EQ(whole("3 \t;ext=\"q s\"\r\nabc\r\n0\r\n\r\n").data, "abc");
  CHECK_EQ(whole("3  \r\nabc\r\n0\r\n\r\n").data, "abc");
  const Decoded empty = whole("0\r\n\r\n");
  CHECK_EQ(empty.status, ChunkedStatus::Done);
  CHECK_EQ(empty.data, "");
  CHECK_EQ(empty.consumed, 5u);
}

TEST(decodes_byte_by_byte_and_in_random_splits_to_the_same_result) {
  Rng rng(0xC4C4);
  std::string data;
  for (int i = 0; i < 3000; i++) data += static_cast<char>(rng.byte());  // any byte, CR and LF included
  for (size_t chunk : {size_t(1), size_t(7), size_t(256), size_t(5000)}) {
    const std::string body = chunked(data, chunk, chunk == 7 ? "X-Sum: 1\r\nX-B:\t2\r\n" : "") + "NEXT";
    const Decoded reference = whole(body);
    CHECK_EQ(reference.status, ChunkedStatus::Done);
    CHECK(reference.data == data);
    CHECK_EQ(reference.consumed, body.size() - 4);
    for (bool in_place : {false, true}) {
      const Decoded b = bytewise(body, in_place);
      CHECK(b.data == data);
      CHECK_EQ(b.consumed, reference.consumed);
      CHECK_EQ(b.status, ChunkedStatus::Done);
      for (int trial = 0; trial < 20; trial++) {
        const Decoded r = decode(body, [&rng] { return 1 + rng.below(40); }, in_place);
        CHECK(r.data == data);
        CHECK_EQ(r.consumed, reference.consumed);
        CHECK_EQ(r.status, ChunkedStatus::Done);
      }
    }
  }
}

TEST(decodes_in_place_leaving_the_body_compact_at_the_front) {
  const std::string body = "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
  std::vector<char> buf(body.begin(), body.end());
  ChunkedDecoder d;
  const ChunkedStep step = d.feed(buf.data(), buf.size(), buf.data());
  CHECK_EQ(step.status, ChunkedStatus::Done);
  CHECK_EQ(step.written, 5u);
  CHECK_EQ(step.consumed, body.size());
  CHECK_EQ(std::string(buf.data(), 5), "abcde");
}

TEST(trickling_a_64_kib_body_one_byte_at_a_time_is_linear) {
  const std::string data(64 * 1024, 'z');
  const std::string body = chunked(data, 1000);
  ChunkedDecoder d;
  std::vector<char> out(body.size());
  size_t written = 0;
  ChunkedStep step{};
  for (size_t i = 0; i < body.size(); i++) {
    step = d.feed(body.data() + i, 1, out.data() + written);
    written += step.written;
    if (step.status != ChunkedStatus::NeedMore) break;
  }
  CHECK_EQ(step.status, ChunkedStatus::Done);
  CHECK_EQ(written, data.size());
  CHECK_EQ(d.consumed(), body.size());
}

TEST(discard_mode_counts_the_data_without_writing_it) {
  const std::string data(1000, 'q');
  const std::string body = chunked(data, 300) + "next";
  // Discarding from the start: nothing is written, everything is counted, the end is found.
  const Decoded all = decode(body, [] { return size_t(13); }, false, true);
  CHECK_EQ(all.status, ChunkedStatus::Done);
  CHECK_EQ(all.data, "");
  CHECK_EQ(all.decoded, 1000u);
  CHECK_EQ(all.consumed, body.size() - 4);
  // Switched on part way (the body went over the limit): what was written stays, the rest is dropped.
  ChunkedDecoder d;
  std::vector<char> out(body.size(), '#');
  ChunkedStep a = d.feed(body.data(), 100, out.data());
  CHECK_EQ(a.status, ChunkedStatus::NeedMore);
  CHECK_EQ(a.written, 100u - 5u);  // "12c\r\n" then data
  d.discard();
  CHECK(d.discarding());
  ChunkedStep b = d.feed(body.data() + 100, body.size() - 100, nullptr);
  CHECK_EQ(b.status, ChunkedStatus::Done);
  CHECK_EQ(b.written, 0u);
  CHECK_EQ(d.decoded(), 1000u);
  CHECK_EQ(d.consumed(), body.size() - 4);
  // Errors are still found while discarding.
  ChunkedDecoder e;
  e.discard();
  CHECK_EQ(e.feed("5\r\nhelloXX", 10, nullptr).status, ChunkedStatus::Error);
}

TEST(skips_trailers_and_bounds_them) {
  const Decoded t = bytewise("1\r\na\r\n0\r\nX-Checksum: abc\r\nX-Other:\r\n\r\nrest", true);
  CHECK_EQ(t.status, ChunkedStatus::Done);
  CHECK_EQ(t.data, "a");
  CHECK_EQ(t.consumed, std::string("1\r\na\r\n0\r\nX-Checksum: abc\r\nX-Other:\r\n\r\n").size());
  // A trailer section of exactly kMaxRequestHead bytes (final CRLF included) is fine; one more byte is not.
  const std::string fill_prefix = "X: ";
  const std::string fits = "0\r\n" + fill_prefix + std::string(kMaxRequestHead - fill_prefix.size() - 4, 'f') + "\r\n\r\n";
  CHECK_EQ(whole(fits).status, ChunkedStatus::Done);
  const std::string over = "0\r\n" + fill_prefix + std::string(kMaxRequestHead - fill_prefix.size() - 3, 'f') + "\r\n\r\n";
  CHECK_EQ(chunked_error(over), "trailer section too large");
  // Many short trailer lines count too.
  std::string lines = "0\r\n";
  while (lines.size() < 2 * kMaxRequestHead) lines += "A: b\r\n";
  CHECK_EQ(chunked_error(lines + "\r\n"), "trailer section too large");
  CHECK_EQ(chunked_error("0\r\nX: a\x01\r\n\r\n"), "control character in trailer");
  CHECK_EQ(chunked_error("0\r\nX: a\rb\r\n\r\n"), "stray CR in trailer");
  CHECK_EQ(chunked_error("0\r\n\rX"), "stray CR in trailer");
}

TEST(reports_every_chunked_error) {
  const std::string bare_lf = "bare LF in chunked body; lines must end with CRLF";
  CHECK_EQ(chunked_error("x\r\n"), "chunk size is not a hex number");
  CHECK_EQ(chunked_error("\r\n"), "chunk size is not a hex number");
  CHECK_EQ(chunked_error("-1\r\n"), "chunk size is not a hex number");
  CHECK_EQ(chunked_error("0x5\r\n"), "chunk size is not a hex number");
  CHECK_EQ(chunked_error("5 5\r\nhello\r\n"), "chunk size is not a hex number");
  CHECK_EQ(chunked_error(" 5\r\nhello\r\n"), "chunk size is not a hex number");
  CHECK_EQ(chunked_error("8000000000000000\r\n"), "chunk size too large");
  CHECK_EQ(chunked_error("10000000000000000\r\n"), "chunk size too large");
  CHECK_EQ(chunked_error("5;" + std::string(kMaxChunkLine, 'e') + "\r\n"), "chunk size line too long");
  CHECK_EQ(chunked_error(std::string(kMaxChunkLine + 1, '0') + "\r\n"), "chunk size line too long");
  CHECK_EQ(chunked_error("5;a\x01\r\n"), "control character in chunk extension");
  CHECK_EQ(chunked_error("5\rX"), "stray CR in chunk size line");
  CHECK_EQ(chunked_error("5\r\nhelloX\r\n"), "missing CRLF after chunk data");
  CHECK_EQ(chunked_error("5\r\nhello\rX"), "missing CRLF after chunk data");
  CHECK_EQ(chunked_error("5\r\nhelloo\r\n0\r\n\r\n"), "missing CRLF after chunk data");
  CHECK_EQ(chunked_error("5\n"), bare_lf);
  CHECK_EQ(chunked_error("\n"), bare_lf);
  CHECK_EQ(chunked_error("5 \n"), bare_lf);
  CHECK_EQ(chunked_error("5;x\n"), bare_lf);
  CHECK_EQ(chunked_error("5\r\nhello\n"), bare_lf);
  CHECK_EQ(chunked_error("0\r\nX: y\n"), bare_lf);
  CHECK_EQ(chunked_error("0\r\n\n"), bare_lf);
  // The largest size allowed is accepted (and waits for its data).
  CHECK_EQ(whole("7fffffffffffffff\r\nabc").status, ChunkedStatus::NeedMore);
  // A line of exactly kMaxChunkLine bytes is fine.
  CHECK_EQ(whole("1;" + std::string(kMaxChunkLine - 2, 'e') + "\r\nz\r\n0\r\n\r\n").data, "z");
  // Errors report the bytes before the fault, and stick.
  ChunkedDecoder d;
  char out[16];
  const ChunkedStep s = d.feed("3\r\nabcX", 7, out);
  CHECK_EQ(s.status, ChunkedStatus::Error);
  CHECK_EQ(s.consumed, 6u);
  CHECK_EQ(s.written, 3u);
  const ChunkedStep again = d.feed("0\r\n\r\n", 5, out);
  CHECK_EQ(again.status, ChunkedStatus::Error);
  CHECK_EQ(again.consumed, 0u);
  CHECK(again.reason != nullptr);
}

TEST(a_finished_decoder_consumes_nothing_more) {
  ChunkedDecoder d;
  char out[8];
  CHECK_EQ(d.feed("0\r\n\r\n", 5, out).status, ChunkedStatus::Done);
  const ChunkedStep s = d.feed("1\r\na\r\n", 6, out);
  CHECK_EQ(s.status, ChunkedStatus::Done);
  CHECK_EQ(s.consumed, 0u);
  CHECK_EQ(s.written, 0u);
  CHECK_EQ(d.consumed(), 5u);
  CHECK_EQ(d.feed(nullptr, 0, nullptr).status, ChunkedStatus::Done);
  ChunkedDecoder fresh;
  CHECK_EQ(fresh.feed(nullptr, 0, nullptr).status, ChunkedStatus::NeedMore);
}

TEST(survives_random_chunked_bodies_split_anywhere) {
  Rng rng(0xB0D7);
  const std::string base = chunked("hello world, this is a body", 5, "X-T: 1\r\n");
  for (int iter = 0; iter < 3000; iter++) {
    const std::string s = mutated(base, "0123456789abcdefX;\r\n \t", 0, &rng);
    const Decoded a = whole(s);
    const Decoded b = decode(s, [&rng] { return 1 + rng.below(8); }, true);
    CHECK_EQ(a.status, b.status);
    CHECK(a.data == b.data);
    CHECK_EQ(a.consumed, b.consumed);
    CHECK_EQ(a.reason, b.reason);
    CHECK(a.decoded <= a.consumed);
  }
}

// ---- responses ----

TEST(has_a_reason_phrase_for_every_status_the_server_sends) {
  for (int s : {100, 101, 200, 204, 400, 401, 403, 404, 405, 408, 411, 413, 415, 417, 426, 429, 431, 500, 501, 503,
                505}) {
    CHECK(status_phrase(s) != nullptr && status_phrase(s)[0] != '\0');
  }
  CHECK_EQ(status_phrase(200), "OK");
  CHECK_EQ(status_phrase(413), "Content Too Large");
  CHECK_EQ(status_phrase(431), "Request Header Fields Too Large");
  CHECK(status_phrase(0) == nullptr);
  CHECK(status_phrase(299) == nullptr);
  CHECK(status_phrase(-400) == nullptr);
}

TEST(writes_response_heads) {
  char out[256];
  const HeaderField h[] = {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-store"}};
  size_t n = write_response_head(out, sizeof out, 200, h, 2, kNoContentLength);
  CHECK_EQ(std::string(out, n),
           "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n");
  n = write_response_head(out, sizeof out, 413, nullptr, 0, 0);
  CHECK_EQ(std::string(out, n), "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n");
  n = write_response_head(out, sizeof out, 204, h + 1, 1, kNoContentLength);
  CHECK_EQ(std::string(out, n), "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n\r\n");
  n = write_response_head(out, sizeof out, 200, nullptr, 0, 18446744073709551614ull);
  CHECK_EQ(std::string(out, n), "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551614\r\n\r\n");
}

TEST(writes_no_response_head_that_does_not_fit_or_would_split) {
  const HeaderField h[] = {{"Access-Control-Allow-Origin", "https://a.example"}};
  char big[256];
  const size_t need = write_response_head(big, sizeof big, 403, h, 1, 12);
  CHECK(need > 0);
  for (size_t cap = 0; cap < need; cap++) {
    std::vector<char> small(cap);
    CHECK_EQ(write_response_head(small.data(), cap, 403, h, 1, 12), 0u);
  }
  std::vector<char> exact(need);
  CHECK_EQ(write_response_head(exact.data(), need, 403, h, 1, 12), need);
  CHECK_EQ(write_response_head(big, sizeof big, 299, nullptr, 0, 0), 0u);
  const HeaderField split[] = {{"X-A", "a\r\nSet-Cookie: x"}};
  CHECK_EQ(write_response_head(big, sizeof big, 200, split, 1, 0), 0u);
  const HeaderField split_name[] = {{"X\nA", "a"}};
  CHECK_EQ(write_response_head(big, sizeof big, 200, split_name, 1, 0), 0u);
}
