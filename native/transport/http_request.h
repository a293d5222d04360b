// HTTP/1.1 requests (RFC 9112): a request-head parser, a query-string iterator, an incremental chunked-body
// decoder and a response-head writer. Pure functions over bytes: no system calls, no allocation; every
// string_view handed out points into the caller's input and is valid while that is. Input is hostile:
// nothing here reads past the length given, and the work is linear in it.
// parse_upgrade (http_upgrade.h) is built on parse_request; the HTTP transport (GET /sse, POST /publish,
// GET /history, OPTIONS preflight) uses all of it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "transport/http_upgrade.h"  // kMaxRequestHead, percent_decode

namespace starling {

// ---- request heads ----

// The WebSocket subprotocol Starling speaks (PROTOCOL.md), offered in Sec-WebSocket-Protocol.
constexpr std::string_view kStarlingSubprotocol = "starling.v1";

enum class RequestStatus : uint8_t {
  NeedMore,  // no "\r\n\r\n" yet, no bare LF so far and fewer than kMaxRequestHead bytes: read more
  Ok,        // a well-formed head of head_len bytes; every field below is set
  Error,     // answer error_status (with `reason`) and close the connection: the framing cannot be trusted
};

enum class Method : uint8_t { Get, Head, Post, Options, Other };  // methods are case-sensitive (RFC 9110 §9.1)

enum class BodyFraming : uint8_t {
  None,           // no body (neither Content-Length nor Transfer-Encoding)
  ContentLength,  // exactly content_length bytes follow the head (may be 0)
  Chunked,        // a chunked body follows the head: feed it to a ChunkedDecoder
};

enum class Expectation : uint8_t {
  None,         // no Expect header (or "100-continue" in an HTTP/1.0 request, which RFC 9110 §10.1.1 ignores)
  Continue,     // "Expect: 100-continue": answer "100 Continue" before reading the body (or the final status)
  Unsupported,  // any other Expect value: answer 417 Expectation Failed
};

// Which HTTP versions parse_request accepts. Versions are "HTTP/" DIGIT "." DIGIT; others are 400.
enum class VersionPolicy : uint8_t {
  Http10And11,     // 1.0 and 1.1; any other version is 505
  Http10AndLater,  // also 1.2 .. 9.9, parsed by the rules of 1.1 (below 1.0 is still 505); parse_upgrade
                   // has always accepted later versions, as RFC 6455 §4.1 allows
};

struct HttpRequest {
  RequestStatus status;
  // When Error: 400 malformed (or a request-smuggling defence), 431 head too large, 501 a Transfer-Encoding
  // other than exactly "chunked", 505 an HTTP version not accepted. 0 otherwise.
  uint16_t error_status;
  // When Error: what was wrong, in words an operator understands (a static string, also fit for the body
  // of the error response). "ok" when Ok; null when NeedMore.
  const char* reason;
  // Bytes of the head including its final "\r\n\r\n": a pipelined request or the body starts at p + head_len.
  // Set when Ok, and on Error when the head had an end (0 when it was too large, or refused for a bare LF
  // before its "\r\n\r\n" arrived). On Error only status, error_status, reason and head_len are meaningful.
  size_t head_len;

  Method method;
  std::string_view method_text;  // the method as sent ("GET", "PATCH", ...)
  std::string_view target;       // the request-target as sent: visible ASCII, never empty
  std::string_view path;         // target before the first '?' (all of it when there is none)
  std::string_view query;        // target after the first '?', without it; empty when there is none
  uint8_t version_major;         // 1 for HTTP/1.x (more only under VersionPolicy::Http10AndLater)
  uint8_t version_minor;         // 0 or 1 (more only under VersionPolicy::Http10AndLater)
  // The connection may carry another request after this one: HTTP/1.1 (and later) unless Connection has the
  // token "close"; HTTP/1.0 only when Connection has "keep-alive" and not "close" (RFC 9112 §9.3).
  bool keep_alive;

  BodyFraming body;
  uint64_t content_length;  // when body is ContentLength (< 2^63); 0 otherwise
  Expectation expect;

  // WebSocket upgrade (RFC 6455 §4.2.1), as parse_upgrade judges it. Upgrade and Connection are
  // comma-separated token lists, compared case-insensitively; tokens on repeated lines count too.
  bool upgrade_websocket;    // Upgrade has the token "websocket"
  bool connection_upgrade;   // Connection has the token "upgrade"
  bool ws_version_seen;      // at least one Sec-WebSocket-Version header
  bool ws_version_13;        // ws_version_seen and every Sec-WebSocket-Version value is exactly "13"
  bool ws_starling_v1;       // a Sec-WebSocket-Protocol list offered "starling.v1" (compared exactly)
  uint16_t ws_key_count;     // Sec-WebSocket-Key headers seen
  std::string_view ws_key;   // the last Sec-WebSocket-Key value, OWS trimmed (not validated here)

  // Values (OWS trimmed) of headers the transport reads; empty when absent. Each may appear once: a repeated
  // one is 400 (two Origins or two Authorizations are ambiguous, and a proxy may have read the other).
  std::string_view host;
  std::string_view origin;
  std::string_view last_event_id;
  std::string_view authorization;
  std::string_view content_type;
  std::string_view accept;
  std::string_view access_control_request_method;
  std::string_view access_control_request_headers;
};

// Parses the request head in p[0..len). Every line must end with CRLF: a bare LF ('\n' not preceded by '\r')
// anywhere in the head is 400 as soon as it is in p, before the head is complete (bytes after a complete head
// are not looked at: they are the body or the next request). Checks, the first failure deciding:
//   bare LF (400); no "\r\n\r\n" within the first kMaxRequestHead bytes (431); request line: method a token,
//   one SP, a target of visible ASCII, one SP, "HTTP/" DIGIT "." DIGIT (400); version (505, see policy);
//   then the header lines in order: a CR not followed by LF, obs-fold (a line starting with SP or HTAB),
//   no colon, whitespace between name and colon, a name that is not a token, a control character in a value,
//   a repeated Host/Origin/Last-Event-ID/Authorization/Content-Type/Accept/Access-Control-Request-*,
//   more than one Content-Length, a Content-Length that is a list ("5, 5"), not all digits or >= 2^63 (400);
//   then Host missing in HTTP/1.1 (400); both Content-Length and Transfer-Encoding (400); Transfer-Encoding in
//   HTTP/1.0 (400); Transfer-Encoding other than one header whose value is "chunked" (case-insensitive,
//   OWS trimmed) (501).
// Never reads past p[len); linear in min(len, kMaxRequestHead).
HttpRequest parse_request(const char* p, size_t len, VersionPolicy versions = VersionPolicy::Http10And11);

// ---- query strings ----

// Splits the next parameter off the query string *rest ("a=1&b=2&a=3": "a"/"1", then "b"/"2", then "a"/"3"),
// raw (still percent-encoded: see percent_decode); a parameter without '=' has an empty value, empty
// parameters ("a=1&&b") are skipped. Returns false when *rest holds no more parameters.
bool next_query_param(std::string_view* rest, std::string_view* name, std::string_view* value);

// ---- chunked request bodies (RFC 9112 §7.1) ----

// Longest chunk-size line (size, extensions; CRLF not counted). A size line is a few hex digits; extensions
// are allowed but nothing here reads them, so this only bounds what a client can make us skip.
constexpr size_t kMaxChunkLine = 1024;

enum class ChunkedStatus : uint8_t {
  NeedMore,  // all input consumed, the body is not finished
  Done,      // the last chunk and the trailer section are complete; bytes after them are the next request
  Error,     // malformed body: answer 400 (with `reason`) and close the connection
};

struct ChunkedStep {
  ChunkedStatus status;
  size_t consumed;     // input bytes used by this call: all of them when NeedMore; when Done, up to and
                       // including the final CRLF of the trailer section; when Error, those before the fault
  size_t written;      // data bytes written to out by this call (0 in discard mode)
  const char* reason;  // when Error: a static string naming the fault; null otherwise
};

// Decodes a chunked body fed in pieces of any size (one byte at a time costs linear time overall). Chunk
// data is written to out; decoding in place is supported: out may equal in, or lie before it in the same
// buffer (data written never passes the read position), so a caller can keep the decoded body compact at
// the front of its buffer. Errors: a chunk size that is not hex or is >= 2^63, a size line longer than
// kMaxChunkLine or with control characters, a chunk not followed by CRLF, a CR not followed by LF, a bare LF,
// a trailer section longer than kMaxRequestHead. Trailer fields are checked for CRLF and control
// characters only, and dropped.
class ChunkedDecoder {
 public:
  // Feeds in[0..len). out must have room for len bytes (or may be null in discard mode). Once Done or Error,
  // further calls return the same status, consuming and writing nothing.
  ChunkedStep feed(const char* in, size_t len, char* out);

  // From now on chunk data is counted (decoded()) but not written: used once the body exceeds the size limit,
  // so it can be read and dropped, a 413 answered and the connection kept.
  void discard() { discard_ = true; }
  bool discarding() const { return discard_; }

  uint64_t decoded() const { return decoded_; }    // chunk data bytes so far, written or discarded
  uint64_t consumed() const { return consumed_; }  // raw body bytes consumed so far
  ChunkedStatus status() const;

 private:
  enum class State : uint8_t {
    SizeStart,     // before the first hex digit of a chunk size
    Size,          // in the hex digits
    SizeOws,       // whitespace after the digits (only ';' or CR may follow)
    Extension,     // after ';': skipped up to the CR
    SizeLf,        // after the CR of the size line
    Data,          // chunk_left_ data bytes to go
    DataCr,        // expecting the CR after the data
    DataLf,        // expecting its LF
    TrailerStart,  // at the start of a trailer line (CR here: the end of the body)
    TrailerLine,   // inside a trailer line
    TrailerLf,     // after the CR of a trailer line
    EndLf,         // after the CR of the final blank line
    Done,
    Error,
  };
  ChunkedStep fail(size_t consumed, size_t written, const char* reason);

  State state_ = State::SizeStart;
  uint64_t chunk_left_ = 0;  // the size being read (Size), then the data bytes left (Data)
  size_t line_len_ = 0;      // bytes of the current size line
  size_t trailer_len_ = 0;   // bytes of the trailer section so far
  uint64_t decoded_ = 0;
  uint64_t consumed_ = 0;
  bool discard_ = false;
};

// ---- responses ----

// Reason phrase for a status the server sends (100, 101, 200, 204, 400, 401, 403, 404, 405, 408, 411, 413, 415,
// 417, 426, 429, 431, 500, 501, 503, 505); null for any other.
const char* status_phrase(int status);

struct HeaderField {
  std::string_view name, value;
};

// Pass as content_length for a response whose body is streamed until the connection closes (server-sent
// events), or that has none by definition (1xx, 204): no Content-Length line is written.
constexpr uint64_t kNoContentLength = UINT64_MAX;

// Writes "HTTP/1.1 <status> <phrase>\r\n", then "<name>: <value>\r\n" for each of headers[0..count), then
// "Content-Length: <n>\r\n" unless content_length is kNoContentLength, then "\r\n". Returns bytes written, or
// 0 if cap is too small, status has no phrase in status_phrase, or a name or value holds a CR or LF (which
// would split the response).
size_t write_response_head(char* out, size_t cap, int status, const HeaderField* headers, size_t count,
                           uint64_t content_length);

// ---- helpers shared with http_upgrade.cc and http_session.cc ----

// ASCII case-insensitive equality (header names, tokens, media types).
bool iequals(std::string_view a, std::string_view b);
// s without the spaces and tabs around it (RFC 9110 OWS).
std::string_view trim_ows(std::string_view s);
// Splits the next element off a comma-separated list (RFC 9110 §5.6.1: OWS around elements, trimmed; empty
// elements allowed and returned). Start with *more = true; false once the list is used up.
bool next_list_item(std::string_view* list, bool* more, std::string_view* item);

// Value of a hex digit, or -1.
int hex_digit(char c);

// Appends to a fixed buffer; remembers overflow so the caller checks once at the end.
struct ResponseWriter {
  char* out;
  size_t cap;
  size_t n = 0;
  bool overflow = false;

  void put(std::string_view s) {
    if (overflow || s.size() > cap - n) {
      overflow = true;
      return;
    }
    if (!s.empty()) std::memcpy(out + n, s.data(), s.size());
    n += s.size();
  }
  void put_uint(uint64_t v) {
    char digits[20];  // 2^64 - 1 has 20 digits
    size_t k = sizeof digits;
    do {
      digits[--k] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    put(std::string_view(digits + k, sizeof digits - k));
  }
  size_t result() const { return overflow ? 0 : n; }  // bytes written, or 0 after an overflow
};

}  // namespace starling
