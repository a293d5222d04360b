// The HTTP transport of a connection (PROTOCOL.md "HTTP transport"): the request heads before (or instead
// of) a WebSocket, event streams, POST /publish, CORS preflights. See ws_session.h for the contracts and
// docs/http.md for what clients see.
#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "pubsub/protocol.h"
#include "transport/http_request.h"
#include "transport/http_upgrade.h"
#include "transport/sse.h"
#include "transport/ws_frame.h"
#include "transport/ws_session.h"

namespace starling {

namespace {

constexpr std::string_view kSsePath = "/sse";
constexpr std::string_view kPublishPath = "/publish";
constexpr std::string_view kHistoryPath = "/history";
// The id of the PUB command an HTTP publish becomes: a connection has one request with the broker at a
// time (it reads no further until that one is answered), so the ACK or ERR that comes back is its answer.
constexpr std::string_view kHttpPubId = "h";
// How long a browser may cache a preflight's answer (Access-Control-Max-Age, seconds): ten minutes spares a
// page that publishes often one OPTIONS per publish, and a change of HTTP.AllowOrigins reaches it soon.
constexpr std::string_view kPreflightMaxAge = "600";
// Request headers a cross-origin page may send (preflight): what the SDK and EventSource polyfills use.
constexpr std::string_view kAllowedHeaders[] = {"content-type", "authorization", "last-event-id", "cache-control",
                                                "x-requested-with", "accept"};
// Room for a response head: the status line, our headers and one echoed origin (configuration keeps each
// allowed origin under 512 bytes).
constexpr size_t kMaxResponseHead = 1536;
// Room added for the rest of a request head that arrived in pieces (heads are bounded by kMaxRequestHead).
constexpr size_t kHeadGrowth = 1024;
// Room kept in front of a chunked body for "PUB <subject> h +retained\n".
constexpr size_t kPubRoom = kMaxPubHeader + 16;
// Retry-After of a 429 (a request whose token is one change too many): the count of token decisions of a
// connection restarts once a second (kMaxAuthsPerPass per pass).
constexpr std::string_view kRetryAfter = "1";

// CORS verdict of a request (HttpExchange::origin): no header to add, "*", or an index into allow_origins.
constexpr int16_t kOriginNone = -1;     // no Origin, or the server's own: nothing to add
constexpr int16_t kOriginAny = -2;      // HTTP.AllowOrigins has "*"
constexpr int16_t kOriginRefused = -3;  // answered 403

// Content types published as text messages (the rest as binary): text/*, JSON, XML, form data and
// JavaScript, with or without parameters (charset is not looked at: the body must be UTF-8).
bool is_text_type(std::string_view type) {
  type = trim_ows(type.substr(0, type.find(';')));
  auto starts = [&](std::string_view prefix) {
    return type.size() >= prefix.size() && iequals(type.substr(0, prefix.size()), prefix);
  };
  auto ends = [&](std::string_view suffix) {
    return type.size() >= suffix.size() && iequals(type.substr(type.size() - suffix.size()), suffix);
  };
  return starts("text/") || iequals(type, "application/json") || iequals(type, "application/xml") ||
         iequals(type, "application/javascript") || iequals(type, "application/x-www-form-urlencoded") ||
         ends("+json") || ends("+xml");
}

// {"ok":false,"error":"<code>","detail":"<detail>"}; details are printable ASCII (quotes escaped).
std::string error_json(std::string_view code, std::string_view detail) {
  std::string out = "{\"ok\":false,\"error\":\"";
  out.append(code.data(), code.size());
  out += "\",\"detail\":\"";
  for (char c : detail.substr(0, kMaxDetailLen)) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) continue;
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += "\"}";
  return out;
}

// The detail of that 429: what a client (or the proxy in front of it) should change.
std::string too_many_tokens() {
  return "this connection changed tokens more than " + std::to_string(kMaxAuthsPerPass) +
         " times in a second (each change is decided like an AUTH): use one connection per identity, or retry "
         "after a second";
}

// The JSON error code of a status the session decides itself.
std::string_view status_code_name(uint16_t status) {
  switch (status) {
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not-found";
    case 405: return "method-not-allowed";
    case 413: return "too-large";
    case 417: return "expectation-failed";
    case 429: return "too-many-tokens";
    case 431: return "head-too-large";
    case 501: return "not-implemented";
    case 505: return "http-version";
    default: return "bad-request";
  }
}

// The HTTP status of a broker ERR code (PROTOCOL.md).
uint16_t status_of_err(std::string_view code) {
  if (code == "bad-subject" || code == "bad-command") return 400;
  if (code == "forbidden") return 403;
  if (code == "too-large") return 413;
  return 503;  // limit: the server is out of memory or over a limit; try again later
}

// The text of a server WebSocket frame (a reply: "ACK h", "ERR ..."); empty if f holds no text frame.
std::string_view reply_text(const Frame* f) {
  FrameHead head;
  if (parse_server_frame_head(f->data(), f->size(), &head) != FrameParse::Ok || head.opcode != kOpText ||
      f->size() - head.head_len < head.payload_len)
    return {};
  return std::string_view(reinterpret_cast<const char*>(f->data() + head.head_len), static_cast<size_t>(head.payload_len));
}

// Where a request stands with its token (Entitlement; HttpExchange::step).
enum class TokenStep : uint8_t {
  kNone,    // nothing to decide, or decided
  kAuth,    // kHttpWait: the token it carries is being decided (the answer: an "AUTH" line through deliver)
  kAuthed,  // kHttpWait: accepted; the request runs when the session is resumed
};

}  // namespace

// One HTTP request being read or waiting for its answer (WsSession::http), or an event stream's SUB command
// waiting to be run. Allocated per request, charged to the memory account, freed when it is answered — except
// while it holds the token in force, which must outlive the request: then it is reset for the next one
// (finish_exchange) and freed with the connection.
struct HttpExchange {
  bool keep_alive = true;
  bool http10 = false;        // an HTTP/1.0 request: a kept-alive answer confirms it (Connection: keep-alive)
  bool chunked = false;
  bool discard = false;       // the body is read and dropped, then the request is answered `status`
  bool retained = false;
  bool history = false;       // GET /history: the answer is a history (kHttpWait)
  TokenStep step = TokenStep::kNone;
  uint8_t opcode = kOpBinary;
  uint16_t status = 0;        // discard: the answer
  const char* reason = "";    // discard: its detail; nullptr: the detail is body[0..body_len) (a decision's)
  int16_t origin = kOriginNone;
  uint32_t head_len = 0;      // Content-Length body: the head stays in front of the body until it is in
  uint64_t length = 0;        // Content-Length (discarding: what is still to be dropped)
  ChunkedDecoder chunks;
  uint8_t subject_len = 0;
  char subject[kMaxSubjectLen];
  // A chunked body (behind kPubRoom bytes for the PUB header), or an event stream's SUB command.
  uint8_t* body = nullptr;
  size_t body_len = 0;
  size_t body_cap = 0;
  // Entitlement (SessionOptions::tokens), each a charged copy of a request's token (shorter than a request
  // head): the token in force — the connection's identity came from its decision (nullptr: anonymous, or an
  // identity no request gave) —, and the token being decided (kAuth; in force once accepted).
  char* token = nullptr;
  char* asked = nullptr;
  uint16_t token_len = 0;
  uint16_t asked_len = 0;
};

namespace {

HttpExchange* new_exchange() {
  void* mem = mem::alloc(sizeof(HttpExchange));
  return mem ? new (mem) HttpExchange() : nullptr;
}

// A charged copy of a token (nullptr when out of memory); freed with free_token.
char* copy_token(std::string_view token) {
  char* p = static_cast<char*>(mem::alloc(token.size()));
  if (p) std::memcpy(p, token.data(), token.size());
  return p;
}

void free_token(char** p, uint16_t* len) {
  mem::free(*p, *len);
  *p = nullptr;
  *len = 0;
}

// The detail a dropped body is answered with (HttpExchange::reason).
std::string_view discard_reason(const HttpExchange& ex) {
  if (ex.reason) return ex.reason;
  return std::string_view(reinterpret_cast<const char*>(ex.body), ex.body_len);
}

// An error decided from the head: answered `status` once the request's body (if any) was read and dropped, on a
// connection kept alive (kHttpBody in discard mode). The answer carries no CORS header for a refused origin.
void discard_then_refuse(WsSession* s, uint16_t status, const char* reason) {
  HttpExchange* ex = s->http;
  if (ex->origin == kOriginRefused) ex->origin = kOriginNone;
  ex->discard = true;
  ex->status = status;
  ex->reason = reason;
  if (ex->chunked) ex->chunks.discard();
  s->ws_state = WsState::kHttpBody;
}

bool reserve_body(HttpExchange* ex, size_t want) {
  if (want <= ex->body_cap) return true;
  const size_t cap = std::max(want, ex->body_cap * 2);
  void* grown = ex->body ? mem::grow(ex->body, ex->body_cap, cap) : mem::alloc(cap);
  if (!grown) return false;
  ex->body = static_cast<uint8_t*>(grown);
  ex->body_cap = cap;
  return true;
}

// "PUB <subject> h[ +retained]\n", written so that it ends at `end` (in the room before the body, without an
// allocation per publish); returns its length.
size_t write_pub_header(uint8_t* end, const HttpExchange& ex) {
  constexpr std::string_view kRetained = " +retained";
  uint8_t* p = end;
  auto put = [&p](std::string_view piece) {
    p -= piece.size();
    std::memcpy(p, piece.data(), piece.size());
  };
  put("\n");
  if (ex.retained) put(kRetained);
  put(kHttpPubId);
  put(" ");
  put(std::string_view(ex.subject, ex.subject_len));
  put("PUB ");
  return static_cast<size_t>(end - p);
}

// The request's CORS verdict (kOrigin* or an index into allowed).
int16_t origin_verdict(const HttpRequest& r, const std::vector<std::string>& allowed) {
  if (r.origin.empty()) return kOriginNone;
  const size_t scheme = r.origin.find("://");
  if (scheme != std::string_view::npos && !r.host.empty() && iequals(r.origin.substr(scheme + 3), r.host))
    return kOriginNone;  // the server's own origin
  for (size_t i = 0; i < allowed.size(); i++) {
    if (allowed[i] == "*") return kOriginAny;
    if (iequals(allowed[i], r.origin)) return static_cast<int16_t>(i);
  }
  return kOriginRefused;
}

// True if every header a preflight asks for is one a page may send (kAllowedHeaders).
bool headers_allowed(std::string_view list) {
  bool more = true;
  std::string_view item;
  while (next_list_item(&list, &more, &item)) {
    bool known = item.empty();
    for (std::string_view h : kAllowedHeaders) known = known || iequals(item, h);
    if (!known) return false;
  }
  return true;
}

// A query parameter's value, percent-decoded into out (printable ASCII without spaces, at most cap bytes).
// False if it does not decode or holds anything else.
bool decode_param(std::string_view raw, std::string* out, size_t cap) {
  out->resize(raw.size());
  const long n = percent_decode(raw, out->data(), out->size());
  if (n < 0 || static_cast<size_t>(n) > cap) return false;
  out->resize(static_cast<size_t>(n));
  for (char c : *out)
    if (c <= ' ' || c > '~') return false;
  return true;
}

// The token a request carries: "Authorization: Bearer <token>" (the scheme case-insensitive), or a token=
// parameter (percent-encoded, as /sse and the WebSocket URL take it; empty: none). Both may be sent if they
// carry the same token. Returns null with *out the token (empty: none), or why the request is malformed.
const char* request_token(const HttpRequest& req, std::string* out) {
  out->clear();
  std::string param;
  int params = 0;
  std::string_view rest = req.query, name, value;
  while (next_query_param(&rest, &name, &value)) {
    if (name != "token") continue;
    if (++params > 1) return "at most one token= parameter";
    if (!decode_param(value, &param, kMaxRequestHead))
      return "the token= parameter must be percent-encoded printable ASCII without spaces (encodeURIComponent)";
  }
  if (req.authorization.empty()) {
    *out = std::move(param);
    return nullptr;
  }
  const std::string_view auth = req.authorization;  // (trimmed by the parser)
  const size_t space = auth.find(' ');
  if (!iequals(auth.substr(0, space), "Bearer"))
    return "Authorization: only the Bearer scheme is read (Authorization: Bearer <token>)";
  const std::string_view token = space == std::string_view::npos ? std::string_view() : trim_ows(auth.substr(space));
  if (token.empty()) return "Authorization: Bearer needs a token";
  for (char c : token)
    if (c <= ' ' || c > '~') return "Authorization: Bearer <token>: the token is one word of printable ASCII";
  if (!param.empty() && param != token)
    return "the Authorization header and the token= parameter carry different tokens: send one";
  out->assign(token.data(), token.size());
  return nullptr;
}

}  // namespace

void WsEngine::free_exchange(WsSession* s) const {
  HttpExchange* ex = s->http;
  if (!ex) return;
  if (ex->body) mem::free(ex->body, ex->body_cap);
  free_token(&ex->token, &ex->token_len);
  free_token(&ex->asked, &ex->asked_len);
  ex->~HttpExchange();
  mem::free(ex, sizeof(HttpExchange));
  s->http = nullptr;
}

void WsEngine::finish_exchange(WsSession* s) const {
  HttpExchange* ex = s->http;
  if (!ex || !ex->token) return free_exchange(s);
  char* token = ex->token;
  const uint16_t token_len = ex->token_len;
  ex->token = nullptr;
  ex->token_len = 0;
  if (ex->body) mem::free(ex->body, ex->body_cap);
  free_token(&ex->asked, &ex->asked_len);
  ex->~HttpExchange();
  new (ex) HttpExchange();
  ex->token = token;
  ex->token_len = token_len;
}

bool WsEngine::http_ready(const WsSession* s) const {
  return !s->websocket() && s->ws_state == WsState::kHttpWait && s->http && s->http->step == TokenStep::kAuthed;
}

void WsEngine::forget_identity(WsSession* s, SessionHost& host) const {
  HttpExchange* ex = s->websocket() ? nullptr : s->http;
  if (!ex || !ex->token) return;
  free_token(&ex->token, &ex->token_len);
  host.on_identity(s, {}, false);
}

WsEngine::Identity WsEngine::identify(WsSession* s, SessionHost& host, std::string_view token, bool* paused) const {
  HttpExchange* ex = s->http;
  if (!opt_.tokens) return Identity::kGo;
  if (token.empty()) {  // anonymous: at once, nothing to decide
    forget_identity(s, host);
    return Identity::kGo;
  }
  const bool in_force = ex->token && std::string_view(ex->token, ex->token_len) == token;
  if (!in_force) {
    ex->asked = copy_token(token);
    if (!ex->asked) {
      host.on_nomem(s);
      abort(s, host, 0);
      return Identity::kAnswered;
    }
    ex->asked_len = static_cast<uint16_t>(token.size());
  }
  const WsState state = s->ws_state;
  s->ws_state = WsState::kHttpWait;
  ex->step = TokenStep::kAuth;
  const Verdict v = host.on_identity(s, token, in_force);  // (an answer at once comes through deliver)
  if (v == Verdict::kPause) *paused = true;
  if (s->ws_state != WsState::kHttpWait) return Identity::kAnswered;  // refused, or closed
  if (v == Verdict::kPause) return Identity::kWait;
  // Accepted at once, or nothing to decide (the token in force, unexpired).
  ex->step = TokenStep::kNone;
  free_token(&ex->asked, &ex->asked_len);
  s->ws_state = state;
  return Identity::kGo;
}

void WsEngine::token_decided(WsSession* s, SessionHost& host, Frame* f) const {
  HttpExchange* ex = s->http;
  std::string_view rest = reply_text(f);
  const std::string_view verb = next_token(&rest), what = next_token(&rest);
  if (verb != "AUTH" || (what != "ok" && what != "invalid")) {  // (AUTH expiring/expired: not about this token)
    f->unref();
    return;
  }
  if (what == "ok") {
    f->unref();
    if (ex->asked) {  // (none when the token in force was decided again, once expired)
      free_token(&ex->token, &ex->token_len);
      ex->token = ex->asked;
      ex->token_len = ex->asked_len;
      ex->asked = nullptr;
      ex->asked_len = 0;
    }
    ex->step = TokenStep::kAuthed;  // runs when the session is resumed
    return;
  }
  // Refused: the identity in force stays (the broker keeps it, and so does the record), this request is not run.
  free_token(&ex->asked, &ex->asked_len);
  ex->step = TokenStep::kNone;
  const bool too_many = rest.substr(0, kAuthTooMany.size()) == kAuthTooMany;
  const uint16_t status = too_many ? 429 : 401;
  const std::string detail = too_many ? too_many_tokens() : std::string(rest);
  f->unref();  // (rest points into it)
  if (ex->history) {
    refuse(s, host, status, detail, ex->keep_alive);
    return;
  }
  // A publish: its body is still to come (or to be read from the input): read and dropped, then answered.
  if (!ex->chunked) {  // (the head was kept in front of the body: dropped with it)
    ex->length += ex->head_len;
    ex->head_len = 0;
  }
  const char* reason = nullptr;
  if (reserve_body(ex, detail.size())) {
    std::memcpy(ex->body, detail.data(), detail.size());
    ex->body_len = detail.size();
  } else {
    reason = status == 429 ? "too many token changes on this connection" : "the token is refused";
  }
  discard_then_refuse(s, status, reason);
}

// Writes the response head with the CORS headers the exchange calls for; 0 if it does not fit.
size_t WsEngine::response_head(const WsSession* s, char* out, size_t cap, uint16_t status, const HeaderField* extra,
                               size_t extra_count, uint64_t content_length) const {
  HeaderField fields[12];
  size_t n = 0;
  const int16_t origin = s->http ? s->http->origin : kOriginNone;
  if (origin == kOriginAny) fields[n++] = {"Access-Control-Allow-Origin", "*"};
  if (origin >= 0) {
    fields[n++] = {"Access-Control-Allow-Origin", opt_.allow_origins[static_cast<size_t>(origin)]};
    fields[n++] = {"Vary", "Origin"};
  }
  for (size_t i = 0; i < extra_count && n < sizeof fields / sizeof fields[0]; i++) fields[n++] = extra[i];
  return write_response_head(out, cap, status, fields, n, content_length);
}

void WsEngine::respond(WsSession* s, SessionHost& host, uint16_t status, std::string_view json, bool keep_alive,
                       const HeaderField* extra, size_t extra_count) const {
  HeaderField fields[8];
  size_t n = 0;
  if (!json.empty()) {
    fields[n++] = {"Content-Type", "application/json"};
    fields[n++] = {"Cache-Control", "no-store"};
  }
  if (!keep_alive) fields[n++] = {"Connection", "close"};
  // An HTTP/1.0 client that asked for keep-alive assumes a close unless the answer confirms it (RFC 9112 §9.3).
  else if (s->http && s->http->http10) fields[n++] = {"Connection", "keep-alive"};
  for (size_t i = 0; i < extra_count && n < sizeof fields / sizeof fields[0]; i++) fields[n++] = extra[i];
  char head[kMaxResponseHead];
  const size_t hn = response_head(s, head, sizeof head, status, fields, n, json.size());
  Frame* f = hn ? Frame::alloc(hn + json.size()) : nullptr;
  if (f) {
    std::memcpy(f->bytes, head, hn);
    if (!json.empty()) std::memcpy(f->bytes + hn, json.data(), json.size());
    f->end = static_cast<uint32_t>(hn + json.size());
  }
  finish_exchange(s);
  if (!f || !host.send(s, f)) {
    host.on_nomem(s);
    s->ws_state = WsState::kDone;
    host.close(s, CloseMode::kAbort);
    return;
  }
  if (!keep_alive) {
    s->ws_state = WsState::kClosing;  // (its buffers go with the session: the caller may be parsing them)
    host.close(s, CloseMode::kGraceful);
    return;
  }
  s->ws_state = WsState::kHandshake;  // the next request; its head has kHandshakePasses again
  s->silent_passes = 0;
}

void WsEngine::refuse(WsSession* s, SessionHost& host, uint16_t status, std::string_view detail, bool keep_alive) const {
  host.on_http_error(s);
  // A 401 names the scheme tokens are taken in (RFC 9110 §11.6.1); a 429 says when to try again (RFC 6585 §4).
  HeaderField extra[1];
  size_t n = 0;
  if (status == 401) extra[n++] = {"WWW-Authenticate", "Bearer"};
  if (status == 429) extra[n++] = {"Retry-After", kRetryAfter};
  respond(s, host, status, error_json(status_code_name(status), detail), keep_alive, extra, n);
}

// The body is in: PUB it. Returns false when parsing must stop (paused for the answer, or closed).
bool WsEngine::publish(WsSession* s, SessionHost& host, uint8_t* body, size_t len, bool* paused) const {
  HttpExchange* ex = s->http;
  if (ex->opcode == kOpText && !utf8_valid(body, len)) {
    refuse(s, host, 400, "a text body (by its Content-Type) must be UTF-8; send binary data as application/octet-stream",
           ex->keep_alive);
    return s->ws_state == WsState::kHandshake;
  }
  const size_t hn = write_pub_header(body, *ex);
  s->ws_state = WsState::kHttpWait;
  host.on_http_request(s);
  const Verdict v = host.on_message(s, ex->opcode, body - hn, hn + len);  // (its ACK or ERR: deliver)
  if (s->ws_state == WsState::kHttpWait || (v == Verdict::kPause && s->ws_state == WsState::kHandshake)) {
    *paused = true;  // held by the broker, or its answers are not read: resumed later
    return false;
  }
  return s->ws_state == WsState::kHandshake;
}

// Reads (or drops) the body of the exchange from p[0..len). Returns the bytes consumed.
size_t WsEngine::body(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need, bool* paused,
                      bool* go_on) const {
  HttpExchange* ex = s->http;
  *go_on = false;
  if (!ex->chunked) {
    if (ex->discard) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(ex->length, len));
      ex->length -= take;
      if (ex->length) return take;
      refuse(s, host, ex->status, discard_reason(*ex), ex->keep_alive);
      *go_on = s->ws_state == WsState::kHandshake;
      return take;
    }
    // The head stays in front of the body until the body is complete: the PUB header is written over it.
    const size_t total = ex->head_len + static_cast<size_t>(ex->length);
    if (len < total) {
      *need = total;
      return 0;
    }
    *go_on = publish(s, host, p + ex->head_len, static_cast<size_t>(ex->length), paused);
    return total;
  }
  if (!ex->discard && !reserve_body(ex, kPubRoom + ex->body_len + len)) {
    host.on_nomem(s);
    abort(s, host, 0);
    return len;
  }
  char* out = ex->discard ? nullptr : reinterpret_cast<char*>(ex->body + kPubRoom + ex->body_len);
  const ChunkedStep step = ex->chunks.feed(reinterpret_cast<const char*>(p), len, out);
  ex->body_len += step.written;
  if (step.status == ChunkedStatus::Error) {
    refuse(s, host, 400, step.reason, false);
    return len;
  }
  if (!ex->discard && ex->chunks.decoded() > opt_.max_message)
    discard_then_refuse(s, 413, "the body is larger than MaxMessageSize");
  if (step.status == ChunkedStatus::NeedMore) return step.consumed;
  if (ex->discard) {
    refuse(s, host, ex->status, discard_reason(*ex), ex->keep_alive);
    *go_on = s->ws_state == WsState::kHandshake;
    return step.consumed;
  }
  *go_on = publish(s, host, ex->body + kPubRoom, ex->body_len, paused);
  return step.consumed;
}

// The requests in p[0..len), in order. Returns the bytes consumed (see consume).
size_t WsEngine::http(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need, bool* paused) const {
  size_t pos = 0;
  for (;;) {
    if (s->ws_state == WsState::kHttpBody) {
      bool go_on = false;
      pos += body(s, host, p + pos, len - pos, need, paused, &go_on);
      if (s->ws_state == WsState::kClosing || s->ws_state == WsState::kDone) return len;
      if (!go_on) return pos;
      continue;
    }
    if (s->ws_state == WsState::kHttpWait) {
      if (!http_ready(s)) {  // (resumed before its answer)
        *paused = true;
        return pos;
      }
      s->http->step = TokenStep::kNone;  // its token was accepted: it runs under it now
      if (!s->http->history) {
        s->ws_state = WsState::kHttpBody;
        continue;
      }
      history_fetch(s, host, paused);
      if (s->ws_state != WsState::kHandshake) return s->ws_state == WsState::kHttpWait ? pos : len;
      continue;
    }
    if (s->ws_state != WsState::kHandshake || pos == len) return pos;

    const char* head = reinterpret_cast<const char*>(p + pos);
    const HttpRequest req = parse_request(head, len - pos, VersionPolicy::Http10AndLater);
    if (req.status == RequestStatus::NeedMore) {
      *need = len - pos + kHeadGrowth;
      return pos;
    }
    if (req.status == RequestStatus::Error) {
      refuse(s, host, req.error_status, req.reason, false);
      return len;
    }
    if (req.path == opt_.path) {  // a WebSocket upgrade, or a refused one (as before the HTTP transport)
      if (!upgrade(s, host, head, len - pos, &pos, paused)) return len;
      return pos;
    }
    if (req.upgrade_websocket) {  // a WebSocket client at the wrong path: it cannot go on, say so and close
      refuse(s, host, 404, "no WebSocket at this path (see Path)", false);
      return len;
    }
    s->ws_flags |= kHttpConn;
    HttpExchange* ex = s->http ? s->http : new_exchange();  // (kept, reset, while it holds the token in force)
    if (!ex) {
      host.on_nomem(s);
      abort(s, host, 0);
      return len;
    }
    s->http = ex;
    ex->keep_alive = req.keep_alive;
    ex->http10 = req.version_major == 1 && req.version_minor == 0;
    ex->origin = origin_verdict(req, opt_.allow_origins);
    ex->chunked = req.body == BodyFraming::Chunked;
    ex->length = req.body == BodyFraming::ContentLength ? req.content_length : 0;
    pos += req.head_len;
    auto refuse_after_body = [&](uint16_t status, const char* reason) { discard_then_refuse(s, status, reason); };
    if (req.expect == Expectation::Unsupported) {
      refuse(s, host, 417, "only Expect: 100-continue is supported", false);
      return len;
    }
    if (ex->origin == kOriginRefused) {
      refuse_after_body(403, "the page's origin is not in HTTP.AllowOrigins");
      continue;
    }
    const bool ours = req.path == kSsePath || req.path == kPublishPath || req.path == kHistoryPath;
    if (req.method == Method::Options && ours) {
      preflight(s, host, req);
      if (s->ws_state != WsState::kHandshake) return len;
      continue;
    }
    if (req.path == kSsePath) {
      if (req.method != Method::Get) {
        refuse_after_body(405, "GET /sse opens an event stream");
        continue;
      }
      sse_open(s, host, req, paused);
      return len;  // the stream's input is ignored
    }
    if (req.path == kHistoryPath) {
      if (req.method != Method::Get) {
        refuse_after_body(405, "GET /history?subject=<subject>&n=<count> (or &since=<epoch>:<seq>)");
        continue;
      }
      if (ex->chunked || ex->length) {
        refuse_after_body(400, "GET /history takes no body");
        continue;
      }
      std::string token;
      if (const char* bad = opt_.tokens ? request_token(req, &token) : nullptr) {
        refuse_after_body(400, bad);
        continue;
      }
      history(s, host, req, token, paused);
      if (s->ws_state != WsState::kHandshake) return s->ws_state == WsState::kHttpWait ? pos : len;
      continue;
    }
    if (req.path != kPublishPath) {
      refuse_after_body(404, "not found: the HTTP transport serves GET /sse, POST /publish and GET /history");
      continue;
    }
    if (req.method != Method::Post) {
      refuse_after_body(405, "POST /publish?subject=<subject> with the message as the body");
      continue;
    }
    std::string token;
    if (const char* bad = opt_.tokens ? request_token(req, &token) : nullptr) {
      refuse_after_body(400, bad);
      continue;
    }
    publish_head(s, host, req);
    if (s->ws_state == WsState::kClosing || s->ws_state == WsState::kDone) return len;
    if (s->ws_state == WsState::kHttpBody && !ex->chunked && !ex->discard) {
      pos -= req.head_len;  // the head stays in front of the body (the PUB header is written over its end)
      ex->head_len = static_cast<uint32_t>(req.head_len);
    }
    if (s->ws_state == WsState::kHttpBody && !ex->discard) {  // (its body is read once its identity is set)
      const Identity id = identify(s, host, token, paused);
      if (s->ws_state == WsState::kClosing || s->ws_state == WsState::kDone) return len;
      if (id == Identity::kWait || *paused) return pos;
    }
  }
}

// POST /publish: checks what the head says and readies the exchange for the body (kHttpBody).
void WsEngine::publish_head(WsSession* s, SessionHost& host, const HttpRequest& req) const {
  HttpExchange* ex = s->http;
  auto refuse_after_body = [&](uint16_t status, const char* reason) { discard_then_refuse(s, status, reason); };
  std::string subject, retained;
  int subjects = 0;
  bool bad_retained = false;
  std::string_view rest = req.query, name, value;
  while (next_query_param(&rest, &name, &value)) {
    if (name == "subject") {
      if (++subjects == 1 && !decode_param(value, &subject, kMaxSubjectLen)) subject.assign(1, ' ');
    } else if (name == "retained") {
      bad_retained = !(value == "1" || value == "true" || value == "0" || value == "false");
      ex->retained = value == "1" || value == "true";
    }
  }
  if (subjects != 1) return refuse_after_body(400, "exactly one subject= parameter: POST /publish?subject=<subject>");
  if (bad_retained) return refuse_after_body(400, "retained= takes 1 or 0 (true or false)");
  if (!valid_subject(subject)) {
    return refuse_after_body(400, "the subject parameter is not a valid subject: '/' and non-empty segments of "
                                  "printable ASCII without spaces or '*', at most 255 bytes");
  }
  ex->subject_len = static_cast<uint8_t>(subject.size());
  std::memcpy(ex->subject, subject.data(), subject.size());
  ex->opcode = is_text_type(req.content_type) ? kOpText : kOpBinary;
  const bool too_large = req.body == BodyFraming::ContentLength && req.content_length > opt_.max_message;
  if (req.expect == Expectation::Continue) {
    if (too_large) {  // answered before the body is sent: the client does not send it, so the connection ends
      refuse(s, host, 413, "the body is larger than MaxMessageSize", false);
      return;
    }
    Frame* f = Frame::copy("HTTP/1.1 100 Continue\r\n\r\n", 25);
    if (!f || !host.send(s, f)) {
      host.on_nomem(s);
      abort(s, host, 0);
      return;
    }
  }
  if (too_large) return refuse_after_body(413, "the body is larger than MaxMessageSize");
  s->ws_state = WsState::kHttpBody;
}

// OPTIONS on one of our paths: a CORS preflight (or a plain OPTIONS), answered at once, kept alive.
void WsEngine::preflight(WsSession* s, SessionHost& host, const HttpRequest& req) const {
  HttpExchange* ex = s->http;
  host.on_http_request(s);
  const std::string_view method = req.access_control_request_method;
  if (!req.origin.empty() && ex->origin != kOriginNone) {
    if (!(method == "GET" || method == "POST") || !headers_allowed(req.access_control_request_headers)) {
      refuse(s, host, 403, "the preflight asks for a method or header the HTTP transport does not allow", ex->keep_alive);
      return;
    }
  }
  HeaderField fields[] = {{"Allow", "GET, POST, OPTIONS"},
                          {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
                          {"Access-Control-Allow-Headers", "Content-Type, Authorization, Last-Event-ID, Cache-Control"},
                          {"Access-Control-Max-Age", kPreflightMaxAge}};
  if (ex->chunked || ex->length) {  // an OPTIONS with a body: not worth reading; say so and close
    refuse(s, host, 400, "OPTIONS with a body", false);
    return;
  }
  respond(s, host, 204, {}, ex->keep_alive, fields, sizeof fields / sizeof fields[0]);
}

// GET /sse: the response head, then the stream's SUB (once a ?token= is decided).
void WsEngine::sse_open(WsSession* s, SessionHost& host, const HttpRequest& req, bool* paused) const {
  HttpExchange* ex = s->http;
  std::string sub = "SUB", token, conflate, last_id, spec;
  std::vector<std::string> specs;
  std::string_view rest = req.query, name, value;
  while (next_query_param(&rest, &name, &value)) {
    if (name == "subject") {
      if (!decode_param(value, &spec, kMaxSubjectLen + 32)) {
        refuse(s, host, 400, "a subject parameter must be percent-encoded printable ASCII without spaces", false);
        return;
      }
      specs.push_back(spec);
    } else if (name == "conflate") {
      conflate.assign(value.data(), value.size());
    } else if (name == "token") {
      token.assign(value.data(), value.size());
    } else if (name == "lastEventId") {
      if (!decode_param(value, &last_id, kMaxSubjectLen + 64)) last_id.clear();
    }
  }
  if (!req.last_event_id.empty()) last_id.assign(req.last_event_id.data(), req.last_event_id.size());
  {  // (a subject asked for twice counts once, as the broker counts it)
    std::vector<std::string_view> distinct;
    for (const std::string& one : specs) distinct.push_back(parse_spec(one).subject);
    std::sort(distinct.begin(), distinct.end());
    const size_t n = static_cast<size_t>(std::unique(distinct.begin(), distinct.end()) - distinct.begin());
    if (n > opt_.max_subscriptions) {
      const std::string detail = std::to_string(n) + " subjects; an event stream may have at most " +
                                 std::to_string(opt_.max_subscriptions) +
                                 " (MaxSubscriptionsPerConnection): open several streams, or raise the setting";
      refuse(s, host, 400, detail, false);
      return;
    }
  }
  if (!conflate.empty()) {
    if (conflate.find_first_not_of("0123456789") != std::string::npos) {
      refuse(s, host, 400, "conflate= takes milliseconds (a multiple of 100)", false);
      return;
    }
    sub += " conflate=" + conflate;
  }
  // Last-Event-ID ("<subject>@<epoch>:<seq>", the id of the last event the client saw): that subject recovers
  // from there. The stream's other subjects have no position the client kept, so they are asked for at a
  // position that cannot be recovered: each is answered RESYNC (never a silent gap) and goes on live.
  // A Last-Event-ID that is not a position on one of the stream's subjects in the form this server writes
  // (garbage, a bad epoch, a sequence number over 64 bits, anything with a space) is an unknown position: every
  // subject is answered RESYNC, as for any other id; never a 400, which an EventSource takes as final.
  const Spec last = last_id.empty() ? Spec{} : parse_spec(last_id);
  const bool reconnect = !last_id.empty();
  bool usable = last.mode == SpecMode::kRecover;
  for (char c : last_id) usable = usable && c > ' ' && c <= '~';
  if (usable) {
    const std::string probe = "SUB " + last_id;
    Command one;
    parse_command(reinterpret_cast<const uint8_t*>(probe.data()), probe.size(), &one);
    usable = one.kind == Cmd::Sub;
  }
  for (const std::string& one : specs) {
    const Spec asked = parse_spec(one);
    sub += ' ';
    if (!reconnect) {
      sub += one;
    } else if (usable && asked.subject == last.subject) {
      sub += last_id;
    } else {
      sub.append(asked.subject.data(), asked.subject.size());
      sub += "@0:0";
    }
  }
  // Checked now, so that a bad subject or count is a 400 the client sees, not an event on a stream it opened.
  // A stream without a subject subscribes to nothing: it carries heartbeats and auth events only, until the
  // client opens another one with subjects (the SDK's event-stream transport keeps one while it has none).
  if (specs.empty()) sub.clear();
  Command cmd;
  if (!sub.empty()) parse_command(reinterpret_cast<const uint8_t*>(sub.data()), sub.size(), &cmd);
  if (!sub.empty() && cmd.kind != Cmd::Sub) {
    refuse(s, host, 400, cmd.kind == Cmd::Invalid ? cmd.detail() : std::string_view("not a subscription"), false);
    return;
  }
  if (!sub.empty() && !reserve_body(ex, sub.size())) {
    host.on_nomem(s);
    abort(s, host, 0);
    return;
  }
  if (!sub.empty()) std::memcpy(ex->body, sub.data(), sub.size());
  ex->body_len = sub.size();

  char retry[48];
  const int rn = std::snprintf(retry, sizeof retry, "retry: %u\n\n", opt_.sse_retry_ms);
  HeaderField fields[] = {{"Content-Type", "text/event-stream"},
                          {"Cache-Control", "no-cache"},
                          {"X-Accel-Buffering", "no"},  // nginx: pass events on as they come
                          {"Connection", "close"}};     // the stream ends with the connection
  char head[kMaxResponseHead];
  const size_t hn = response_head(s, head, sizeof head, 200, fields, sizeof fields / sizeof fields[0], kNoContentLength);
  Frame* f = hn ? Frame::alloc(hn + static_cast<size_t>(rn)) : nullptr;
  if (f) {
    std::memcpy(f->bytes, head, hn);
    std::memcpy(f->bytes + hn, retry, static_cast<size_t>(rn));
    f->end = static_cast<uint32_t>(hn + static_cast<size_t>(rn));
  }
  if (!f || !host.send(s, f)) {
    host.on_nomem(s);
    abort(s, host, 0);
    return;
  }
  forget_identity(s, host);  // (a stream runs under its own token=, or none: never an earlier request's)
  s->ws_state = WsState::kSse;
  host.on_http_request(s);
  const Verdict v = host.on_open(s, token);
  if (s->ws_state != WsState::kSse) return;
  if (v == Verdict::kPause) {
    *paused = true;
    return;
  }
  sse_start(s, host);
}

void WsEngine::sse_start(WsSession* s, SessionHost& host) const {
  HttpExchange* ex = s->http;
  if (!ex || s->ws_state != WsState::kSse) return;
  // (Freed after the call: the command is parsed from it. Its answers reach the stream through deliver.)
  if (ex->body_len) host.on_message(s, kOpText, ex->body, ex->body_len);
  free_exchange(s);
}

// What the broker sends to an HTTP session.
void WsEngine::deliver(WsSession* s, SessionHost& host, Frame* f) const {
  if (s->ws_state == WsState::kSse) {
    bool empty = false;
    Frame* e = sse_frame(f, &empty);
    f->unref();
    if (!e) {
      if (empty) return;
      host.on_nomem(s);
      abort(s, host, 0);
      return;
    }
    if (!host.send(s, e)) {
      host.on_nomem(s);
      abort(s, host, 0);
    }
    return;
  }
  if (s->ws_state != WsState::kHttpWait) {  // nothing is waiting for it (closing, or an AUTH warning)
    f->unref();
    return;
  }
  if (s->http->step == TokenStep::kAuth) return token_decided(s, host, f);
  std::string_view first = reply_text(f);
  if (s->http->step == TokenStep::kAuthed || next_token(&first) == "AUTH") {  // (not an answer to the request)
    f->unref();
    return;
  }
  if (s->http->history) {
    history_answer(s, host, f);
    f->unref();
    return;
  }
  const std::string_view line = reply_text(f);
  std::string_view rest = line, verb = next_token(&rest);
  if (verb == "ACK") {
    f->unref();
    respond(s, host, 200, "{\"ok\":true}", s->http->keep_alive);
    return;
  }
  if (verb == "ERR") {
    const std::string_view code = next_token(&rest);
    if (rest.substr(0, kHttpPubId.size() + 1) == std::string(kHttpPubId) + " ") rest.remove_prefix(kHttpPubId.size() + 1);
    else if (rest == kHttpPubId) rest = {};
    const std::string json = error_json(code, rest);
    const uint16_t status = status_of_err(code);
    f->unref();  // (code and rest point into it)
    host.on_http_error(s);
    respond(s, host, status, json, s->http->keep_alive);
    return;
  }
  f->unref();
}

}  // namespace starling

namespace starling {

namespace {

// Appends s as the inside of a JSON string: quotes, backslashes and control characters escaped; other
// bytes as they are (a text message is UTF-8).
void append_json_text(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
}

}  // namespace

// GET /history?subject=<subject>&n=<count> | &since=<epoch>:<seq>: handed to the broker as a fetch, once the
// connection has the request's identity (`token`).
void WsEngine::history(WsSession* s, SessionHost& host, const HttpRequest& req, std::string_view token,
                       bool* paused) const {
  std::string subject, n, since, value_text;
  int subjects = 0;
  std::string_view rest = req.query, name, value;
  while (next_query_param(&rest, &name, &value)) {
    if (name == "subject") {
      if (++subjects == 1 && !decode_param(value, &subject, kMaxSubjectLen)) subject.assign(1, ' ');
    } else if (name == "n") {
      n.assign(value.data(), value.size());
    } else if (name == "since") {
      if (!decode_param(value, &since, 64)) since.assign(1, ' ');
    }
  }
  if (subjects != 1 || (n.empty() == since.empty())) {
    refuse(s, host, 400, "GET /history?subject=<subject>&n=<count> or ...&since=<epoch>:<seq> (one subject; n or since)",
           s->http->keep_alive);
    return;
  }
  const std::string spec = subject + (n.empty() ? "@" + since : "#" + n);
  Command cmd;
  const std::string sub = "SUB " + spec;
  parse_command(reinterpret_cast<const uint8_t*>(sub.data()), sub.size(), &cmd);
  if (cmd.kind != Cmd::Sub) {
    refuse(s, host, 400, cmd.kind == Cmd::Invalid ? cmd.detail() : std::string_view("bad request"), s->http->keep_alive);
    return;
  }
  HttpExchange* ex = s->http;
  if (!reserve_body(ex, spec.size())) {  // (kept for history_fetch: the request may wait for its token's decision)
    host.on_nomem(s);
    abort(s, host, 0);
    return;
  }
  std::memcpy(ex->body, spec.data(), spec.size());
  ex->body_len = spec.size();
  ex->history = true;
  if (identify(s, host, token, paused) == Identity::kGo) history_fetch(s, host, paused);
}

void WsEngine::history_fetch(WsSession* s, SessionHost& host, bool* paused) const {
  // (A copy: the answer may come during the call, and answering frees the exchange's buffers.)
  const std::string spec(reinterpret_cast<const char*>(s->http->body), s->http->body_len);
  s->ws_state = WsState::kHttpWait;
  host.on_http_request(s);
  const Verdict v = host.on_fetch(s, spec);  // (its answer: deliver)
  if (s->ws_state == WsState::kHttpWait || (v == Verdict::kPause && s->ws_state == WsState::kHandshake)) *paused = true;
}

// The home's answer to a fetch (frames: MSG … history|recovered|snapshot, then SYNC or RESYNC), or an ERR,
// as the JSON answer of GET /history.
void WsEngine::history_answer(WsSession* s, SessionHost& host, const Frame* f) const {
  const bool keep_alive = s->http->keep_alive;
  std::string out = "{\"ok\":true,\"messages\":[";
  bool first = true;
  std::string tail;
  const uint8_t* p = f->data();
  size_t left = f->size();
  while (left) {
    FrameHead head;
    if (parse_server_frame_head(p, left, &head) != FrameParse::Ok || left - head.head_len < head.payload_len) break;
    const std::string_view msg(reinterpret_cast<const char*>(p + head.head_len), static_cast<size_t>(head.payload_len));
    p += head.head_len + head.payload_len;
    left -= static_cast<size_t>(head.head_len + head.payload_len);
    const size_t nl = msg.find('\n');
    const std::string_view line = msg.substr(0, nl);
    const std::string_view body = nl == std::string_view::npos ? std::string_view() : msg.substr(nl + 1);
    std::string_view rest = line;
    const std::string_view verb = next_token(&rest);
    if (verb == "ERR") {
      const std::string_view code = next_token(&rest);
      host.on_http_error(s);
      respond(s, host, status_of_err(code), error_json(code, rest), keep_alive);
      return;
    }
    PositionLine pos;
    if (!parse_position_line(rest, &pos)) continue;
    // (The epoch as written: "<subject> <epoch>:<seq>".)
    const std::string_view after = rest.substr(pos.subject.size() + 1);
    const std::string_view epoch = after.substr(0, after.find(':'));
    if (verb == "MSG") {
      out += first ? "{" : ",{";
      first = false;
      out += "\"seq\":" + std::to_string(pos.seq) + ",\"kind\":\"";
      out.append(pos.rest.data(), pos.rest.size());
      if (head.opcode == kOpBinary) {
        std::string b64(4 * ((body.size() + 2) / 3), '\0');
        base64_encode(reinterpret_cast<const uint8_t*>(body.data()), body.size(), b64.data());
        out += "\",\"base64\":\"" + b64 + "\"}";
      } else {
        out += "\",\"text\":\"";
        append_json_text(out, body);
        out += "\"}";
      }
    } else if (verb == "SYNC" || verb == "RESYNC") {
      tail = "],\"subject\":\"";
      tail.append(pos.subject.data(), pos.subject.size());
      tail += "\",\"epoch\":\"" + std::string(epoch) + "\",\"seq\":" + std::to_string(pos.seq) +
              ",\"resync\":" + (verb == "RESYNC" ? "true" : "false") + "}";
    }
  }
  if (tail.empty()) {  // (an answer always ends with SYNC or RESYNC; anything else is our bug, said plainly)
    host.on_http_error(s);
    respond(s, host, 500, error_json("internal", "the history answer was incomplete"), false);
    return;
  }
  out += tail;
  respond(s, host, 200, out, keep_alive);
}

}  // namespace starling
