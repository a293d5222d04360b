// HTTP/1.1 requests. See http_request.h for the contracts.
#include "transport/http_request.h"

#include <cstring>

#include "pubsub/protocol.h"

namespace starling {

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Splits the next element off a comma-separated list (RFC 9110 §5.6.1: OWS around elements, empty elements
// allowed and returned). False when the list is used up.
bool next_list_item(std::string_view* list, bool* more, std::string_view* item) {
  if (!*more) return false;
  const size_t comma = list->find(',');
  *item = trim_ows(list->substr(0, comma));
  if (comma == std::string_view::npos) {
    *more = false;
  } else {
    list->remove_prefix(comma + 1);
  }
  return true;
}

namespace {

constexpr std::string_view kHeadEnd = "\r\n\r\n";
constexpr const char* kBareLf = "bare LF in request head; lines must end with CRLF";
constexpr const char* kBareLfBody = "bare LF in chunked body; lines must end with CRLF";
// Content-Length and chunk sizes must stay below 2^63, so that any count of body bytes fits a signed 64-bit
// integer (what Node and the rest of the server use) with room to add.
constexpr uint64_t kMaxBodyLength = (uint64_t(1) << 63) - 1;

// RFC 9110 §5.6.2 tchar: the characters of a method or header name.
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

// A control character other than HTAB: not allowed in a field value (RFC 9110 §5.5) or a chunk extension.
bool is_ctl(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return (c < 0x20 && c != '\t') || c == 0x7F;
}

// RFC 9110 §5.5 field-value: HTAB, visible ASCII, SP and obs-text (0x80-0xFF); no other controls.
bool valid_field_value(std::string_view s) {
  for (char c : s) {
    if (is_ctl(c)) return false;
  }
  return true;
}

// True if the list has an element equal to `want`, compared case-insensitively or exactly.
bool list_contains(std::string_view list, std::string_view want, bool case_insensitive) {
  bool more = true;
  std::string_view item;
  while (next_list_item(&list, &more, &item)) {
    if (case_insensitive ? iequals(item, want) : item == want) return true;
  }
  return false;
}

HttpRequest fail(uint16_t error_status, size_t head_len, const char* reason) {
  HttpRequest r{};
  r.status = RequestStatus::Error;
  r.error_status = error_status;
  r.head_len = head_len;
  r.reason = reason;
  return r;
}

// Request line: method SP request-target SP HTTP-version (RFC 9112 §3). Sets method_text, target, path, query
// and the version; false if malformed.
bool parse_request_line(std::string_view line, HttpRequest* r) {
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return false;
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return false;
  r->method_text = line.substr(0, sp1);
  r->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(r->method_text) || r->target.empty()) return false;
  for (char ch : r->target) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7F) return false;  // visible ASCII only
  }
  // "HTTP/" DIGIT "." DIGIT
  constexpr std::string_view kVersionPrefix = "HTTP/";
  constexpr size_t kVersionLen = 8;
  if (version.size() != kVersionLen || version.substr(0, kVersionPrefix.size()) != kVersionPrefix) return false;
  const char major = version[5], dot = version[6], minor = version[7];
  if (major < '0' || major > '9' || dot != '.' || minor < '0' || minor > '9') return false;
  r->version_major = static_cast<uint8_t>(major - '0');
  r->version_minor = static_cast<uint8_t>(minor - '0');

  const std::string_view m = r->method_text;
  r->method = m == "GET" ? Method::Get
            : m == "HEAD" ? Method::Head
            : m == "POST" ? Method::Post
            : m == "OPTIONS" ? Method::Options
            : Method::Other;
  const size_t q = r->target.find('?');
  r->path = r->target.substr(0, q);
  if (q != std::string_view::npos) r->query = r->target.substr(q + 1);
  return true;
}

// The headers whose value is handed over as a view, and may appear once.
struct ViewHeader {
  std::string_view name;  // lower case
  std::string_view HttpRequest::*field;
  const char* repeated;  // the reason when it appears twice
};
constexpr ViewHeader kViewHeaders[] = {
    {"host", &HttpRequest::host, "more than one Host header"},
    {"origin", &HttpRequest::origin, "more than one Origin header"},
    {"last-event-id", &HttpRequest::last_event_id, "more than one Last-Event-ID header"},
    {"authorization", &HttpRequest::authorization, "more than one Authorization header"},
    {"content-type", &HttpRequest::content_type, "more than one Content-Type header"},
    {"accept", &HttpRequest::accept, "more than one Accept header"},
    {"access-control-request-method", &HttpRequest::access_control_request_method,
     "more than one Access-Control-Request-Method header"},
    {"access-control-request-headers", &HttpRequest::access_control_request_headers,
     "more than one Access-Control-Request-Headers header"},
};
constexpr size_t kHostIndex = 0;  // kViewHeaders[0]
static_assert(sizeof kViewHeaders / sizeof kViewHeaders[0] <= 16, "seen bits are a uint16_t");

// What the header lines said beyond the fields of HttpRequest, for the checks made once all are read.
struct HeaderState {
  uint16_t seen = 0;  // bit i: kViewHeaders[i] was present
  bool content_length = false;
  int transfer_encodings = 0;
  std::string_view transfer_encoding;
  bool ws_version_other = false;  // a Sec-WebSocket-Version other than "13"
  bool close = false, keep_alive = false;  // Connection tokens
};

// Records one header line; returns the reason when it makes the request malformed (400), else null.
const char* note_header(std::string_view name, std::string_view value, HttpRequest* r, HeaderState* h) {
  for (size_t i = 0; i < sizeof kViewHeaders / sizeof kViewHeaders[0]; i++) {
    if (!iequals(name, kViewHeaders[i].name)) continue;
    const uint16_t bit = static_cast<uint16_t>(1u << i);
    if (h->seen & bit) return kViewHeaders[i].repeated;
    h->seen |= bit;
    r->*kViewHeaders[i].field = value;
    return nullptr;
  }
  if (iequals(name, "content-length")) {
    if (h->content_length) return "more than one Content-Length header";
    h->content_length = true;
    if (value.find(',') != std::string_view::npos) return "Content-Length with more than one value";
    if (!all_digits(value)) return "Content-Length is not a number";
    if (!parse_decimal(value, &r->content_length) || r->content_length > kMaxBodyLength)
      return "Content-Length too large";
  } else if (iequals(name, "transfer-encoding")) {
    h->transfer_encodings++;
    h->transfer_encoding = value;
  } else if (iequals(name, "connection")) {
    bool more = true;
    std::string_view token;
    while (next_list_item(&value, &more, &token)) {
      if (iequals(token, "close")) h->close = true;
      else if (iequals(token, "keep-alive")) h->keep_alive = true;
      else if (iequals(token, "upgrade")) r->connection_upgrade = true;
    }
  } else if (iequals(name, "upgrade")) {
    if (list_contains(value, "websocket", true)) r->upgrade_websocket = true;
  } else if (iequals(name, "expect")) {
    if (r->expect != Expectation::Unsupported)
      r->expect = iequals(value, "100-continue") ? Expectation::Continue : Expectation::Unsupported;
  } else if (iequals(name, "sec-websocket-version")) {
    r->ws_version_seen = true;
    if (value != "13") h->ws_version_other = true;
  } else if (iequals(name, "sec-websocket-key")) {
    if (r->ws_key_count < UINT16_MAX) r->ws_key_count++;
    r->ws_key = value;
  } else if (iequals(name, "sec-websocket-protocol")) {
    // Subprotocol names are compared exactly; the one we echo is "starling.v1".
    if (list_contains(value, kStarlingSubprotocol, false)) r->ws_starling_v1 = true;
  }
  return nullptr;
}

}  // namespace

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

HttpRequest parse_request(const char* p, size_t len, VersionPolicy versions) {
  // Find the end of the head within the first kMaxRequestHead bytes.
  const std::string_view window(p, len < kMaxRequestHead ? len : kMaxRequestHead);
  const size_t end = window.find(kHeadEnd);
  // A bare LF is refused as soon as it arrives: a client that ends its lines with "\n" alone would
  // otherwise never send "\r\n\r\n" and wait for a timeout. Only the head is scanned (up to its end, or all
  // of the window while it is incomplete); bytes after it are the body or the next request.
  const size_t scanned = end == std::string_view::npos ? window.size() : end + kHeadEnd.size();
  for (size_t lf = window.find('\n'); lf < scanned; lf = window.find('\n', lf + 1)) {
    if (lf == 0 || window[lf - 1] != '\r') return fail(400, end == std::string_view::npos ? 0 : scanned, kBareLf);
  }
  if (end == std::string_view::npos) {
    if (len >= kMaxRequestHead) return fail(431, 0, "request head too large");
    HttpRequest r{};
    r.status = RequestStatus::NeedMore;
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

  HttpRequest r{};
  std::string_view line;
  if (!next_line(&line) || !parse_request_line(line, &r)) return fail(400, head_len, "malformed request line");
  const bool below_1_0 = r.version_major == 0;
  const bool above_1_1 = r.version_major > 1 || (r.version_major == 1 && r.version_minor > 1);
  if (below_1_0 || (above_1_1 && versions == VersionPolicy::Http10And11))
    return fail(505, head_len, "HTTP version not supported: HTTP/1.0 or HTTP/1.1 required");
  const bool http_1_0 = r.version_major == 1 && r.version_minor == 0;

  HeaderState h;
  while (!lines.empty()) {
    if (!next_line(&line)) return fail(400, head_len, "stray CR in header");
    // The first blank line ends the head, so an empty line cannot occur here; checked for safety.
    if (line.empty()) return fail(400, head_len, "malformed header");
    if (is_ows(line.front())) return fail(400, head_len, "obsolete line folding (header line starts with whitespace)");
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return fail(400, head_len, "header without colon");
    const std::string_view name = line.substr(0, colon);
    if (!name.empty() && is_ows(name.back())) return fail(400, head_len, "whitespace between header name and colon");
    if (!is_token(name)) return fail(400, head_len, "malformed header name");
    const std::string_view raw_value = line.substr(colon + 1);
    if (!valid_field_value(raw_value)) return fail(400, head_len, "control character in header");
    if (const char* why = note_header(name, trim_ows(raw_value), &r, &h)) return fail(400, head_len, why);
  }

  // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (more than one already was).
  if (!http_1_0 && !(h.seen & (1u << kHostIndex))) return fail(400, head_len, "missing Host header");
  // RFC 9112 §6.1-6.3: the defences against request smuggling, where two parsers disagree on a body's length.
  if (h.transfer_encodings > 0) {
    if (h.content_length) return fail(400, head_len, "both Content-Length and Transfer-Encoding");
    if (http_1_0) return fail(400, head_len, "Transfer-Encoding in an HTTP/1.0 request");
    if (h.transfer_encodings > 1) return fail(501, head_len, "more than one Transfer-Encoding header; only chunked is supported");
    if (!iequals(h.transfer_encoding, "chunked")) return fail(501, head_len, "Transfer-Encoding other than chunked");
    r.body = BodyFraming::Chunked;
  } else if (h.content_length) {
    r.body = BodyFraming::ContentLength;
  }

  r.keep_alive = http_1_0 ? h.keep_alive && !h.close : !h.close;
  // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
  if (http_1_0 && r.expect == Expectation::Continue) r.expect = Expectation::None;
  r.ws_version_13 = r.ws_version_seen && !h.ws_version_other;
  r.status = RequestStatus::Ok;
  r.head_len = head_len;
  r.reason = "ok";
  return r;
}

bool next_query_param(std::string_view* rest, std::string_view* name, std::string_view* value) {
  while (!rest->empty()) {
    const size_t amp = rest->find('&');
    const std::string_view pair = rest->substr(0, amp);
    rest->remove_prefix(amp == std::string_view::npos ? rest->size() : amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    *name = pair.substr(0, eq);
    *value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    return true;
  }
  return false;
}

// ---- chunked bodies ----

ChunkedStatus ChunkedDecoder::status() const {
  if (state_ == State::Done) return ChunkedStatus::Done;
  if (state_ == State::Error) return ChunkedStatus::Error;
  return ChunkedStatus::NeedMore;
}

ChunkedStep ChunkedDecoder::fail(size_t consumed, size_t written, const char* reason) {
  state_ = State::Error;
  consumed_ += consumed;
  return {ChunkedStatus::Error, consumed, written, reason};
}

ChunkedStep ChunkedDecoder::feed(const char* in, size_t len, char* out) {
  if (state_ == State::Done) return {ChunkedStatus::Done, 0, 0, nullptr};
  if (state_ == State::Error) return {ChunkedStatus::Error, 0, 0, "chunked body already failed"};
  size_t i = 0, w = 0;
  while (i < len) {
    if (state_ == State::Data) {
      // The bulk of the body: copied in one run. memmove, as in place out + w may overlap in + i (w <= i).
      const size_t avail = len - i;
      const size_t n = chunk_left_ < avail ? static_cast<size_t>(chunk_left_) : avail;
      if (!discard_) {
        std::memmove(out + w, in + i, n);
        w += n;
      }
      i += n;
      decoded_ += n;
      chunk_left_ -= n;
      if (chunk_left_ == 0) state_ = State::DataCr;
      continue;
    }
    const char c = in[i];
    switch (state_) {
      case State::SizeStart:
      case State::Size: {
        const int d = hex_digit(c);
        if (d >= 0) {
          if (chunk_left_ > (kMaxBodyLength >> 4)) return fail(i, w, "chunk size too large");
          chunk_left_ = (chunk_left_ << 4) | static_cast<uint64_t>(d);
          state_ = State::Size;
          break;
        }
        if (state_ == State::SizeStart) return fail(i, w, c == '\n' ? kBareLfBody : "chunk size is not a hex number");
        if (c == ';') state_ = State::Extension;
        else if (is_ows(c)) state_ = State::SizeOws;
        else if (c == '\r') state_ = State::SizeLf;
        else if (c == '\n') return fail(i, w, kBareLfBody);
        else return fail(i, w, "chunk size is not a hex number");
        break;
      }
      case State::SizeOws:
        if (c == ';') state_ = State::Extension;
        else if (c == '\r') state_ = State::SizeLf;
        else if (c == '\n') return fail(i, w, kBareLfBody);
        else if (!is_ows(c)) return fail(i, w, "chunk size is not a hex number");
        break;
      case State::Extension:
        if (c == '\r') state_ = State::SizeLf;
        else if (c == '\n') return fail(i, w, kBareLfBody);
        else if (is_ctl(c)) return fail(i, w, "control character in chunk extension");
        break;
      case State::SizeLf:
        if (c != '\n') return fail(i, w, "stray CR in chunk size line");
        line_len_ = 0;
        state_ = chunk_left_ == 0 ? State::TrailerStart : State::Data;
        i++;
        continue;  // the LF does not count towards the size line
      case State::DataCr:
        if (c == '\n') return fail(i, w, kBareLfBody);
        if (c != '\r') return fail(i, w, "missing CRLF after chunk data");
        state_ = State::DataLf;
        break;
      case State::DataLf:
        if (c != '\n') return fail(i, w, "missing CRLF after chunk data");
        state_ = State::SizeStart;
        break;
      case State::TrailerStart:
      case State::TrailerLine:
        if (c == '\r') state_ = state_ == State::TrailerStart ? State::EndLf : State::TrailerLf;
        else if (c == '\n') return fail(i, w, kBareLfBody);
        else if (is_ctl(c)) return fail(i, w, "control character in trailer");
        else state_ = State::TrailerLine;
        break;
      case State::TrailerLf:
        if (c != '\n') return fail(i, w, "stray CR in trailer");
        state_ = State::TrailerStart;
        break;
      case State::EndLf:
        if (c != '\n') return fail(i, w, "stray CR in trailer");
        if (++trailer_len_ > kMaxRequestHead) return fail(i, w, "trailer section too large");
        state_ = State::Done;
        consumed_ += i + 1;
        return {ChunkedStatus::Done, i + 1, w, nullptr};
      case State::Data:
      case State::Done:
      case State::Error:
        break;  // handled above
    }
    // A byte of a size line or of the trailer section: bounded, so a client cannot make us skip forever.
    // (The CRLF ending a size line is not counted; every byte of the trailer section is, its
    // last LF in EndLf above.)
    const bool in_size_line = state_ == State::Size || state_ == State::SizeOws || state_ == State::Extension;
    if (in_size_line && ++line_len_ > kMaxChunkLine) return fail(i, w, "chunk size line too long");
    const bool in_trailer = state_ == State::TrailerStart || state_ == State::TrailerLine ||
                            state_ == State::TrailerLf || state_ == State::EndLf;
    if (in_trailer && ++trailer_len_ > kMaxRequestHead) return fail(i, w, "trailer section too large");
    i++;
  }
  consumed_ += len;
  return {ChunkedStatus::NeedMore, len, w, nullptr};
}

// ---- responses ----

const char* status_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return nullptr;
  }
}

size_t write_response_head(char* out, size_t cap, int status, const HeaderField* headers, size_t count,
                           uint64_t content_length) {
  const char* phrase = status_phrase(status);
  if (phrase == nullptr) return 0;
  ResponseWriter w{out, cap};
  w.put("HTTP/1.1 ");
  w.put_uint(static_cast<uint64_t>(status));
  w.put(" ");
  w.put(phrase);
  w.put("\r\n");
  for (size_t k = 0; k < count; k++) {
    const HeaderField& f = headers[k];
    if (f.name.find_first_of("\r\n") != std::string_view::npos ||
        f.value.find_first_of("\r\n") != std::string_view::npos)
      return 0;
    w.put(f.name);
    w.put(": ");
    w.put(f.value);
    w.put("\r\n");
  }
  if (content_length != kNoContentLength) {
    w.put("Content-Length: ");
    w.put_uint(content_length);
    w.put("\r\n");
  }
  w.put("\r\n");
  return w.result();
}

}  // namespace starling
