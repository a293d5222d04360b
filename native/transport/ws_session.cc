#include "transport/ws_session.h"

#include <cstdint>
#include <cstring>

#include "pubsub/protocol.h"
#include "transport/http_upgrade.h"
#include "transport/sse.h"
#include "transport/ws_frame.h"

namespace starling {

namespace {

// Smallest buffer kept for a partial unit: most partial frames are small commands split by TCP.
constexpr size_t kMinPartial = 256;
// Passes (one a second, see Workgroup) a client has to finish its HTTP upgrade: the slowloris bound.
constexpr unsigned kHandshakePasses = 10;

// Keepalive phase: a session heard in some pass is pinged after between half of KeepAlive's passes of silence
// and all of them, by an offset of its own, so that connections heard in the same second (opened in one burst,
// or answering one round of pings) do not all get their ping — and send their pong — in one pass. 15,000 pings in
// one pass stalled every delivery of their workgroup for ~300 ms (W1 at 30 s windows: p99 64 ms, max 288 ms with
// KeepAlive 30; 5.5 and 22 ms with it off); spread over the last quarter of the interval, 16 and 62 ms; over the
// last half, 9.7 and 36 ms. Earlier, never later: dead peers are found as soon as before.
constexpr unsigned kKeepaliveSpreadDivisor = 2;
// Shorter intervals are not spread: the offset counts whole passes (seconds), and one pass would be a third or
// more of such an interval (they are for tests, and for a few connections whose pings cost nothing).
constexpr unsigned kKeepaliveSpreadMinPasses = 4;

uint16_t keepalive_phase(const WsSession* s, unsigned passes_per_interval) {
  if (passes_per_interval < kKeepaliveSpreadMinPasses) return 0;
  const unsigned spread = passes_per_interval / kKeepaliveSpreadDivisor;
  const uint64_t h = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(s) >> 4) * 0x9E3779B97F4A7C15ull;
  return static_cast<uint16_t>((h >> 32) % (spread + 1));
}

}  // namespace

struct WsPartial {
  size_t len;
  size_t cap;
  uint8_t data[1];
};

struct WsFragments {
  uint8_t opcode;
  size_t len;
  size_t cap;
  uint8_t data[1];
};

static size_t partial_bytes(size_t cap) { return offsetof(WsPartial, data) + cap; }
static size_t fragments_bytes(size_t cap) { return offsetof(WsFragments, data) + cap; }

WsEngine::WsEngine(SessionOptions options) : opt_(std::move(options)) {}

WsEngine::~WsEngine() {
  if (heartbeat_) heartbeat_->unref();
}

void WsEngine::feed(WsSession* s, SessionHost& host, uint8_t* p, size_t len) const {
  if (s->ws_state == WsState::kSse) return;  // an event stream's input is ignored
  if (!parsing(s)) return;
  s->ws_flags |= kHeard;
  WsPartial* rx = s->rx;
  if (!rx) {
    parse(s, host, p, len, false);
    return;
  }
  if (rx->len + len > rx->cap) {
    // Grow to what arrived, at least doubling: memory in proportion to what the peer actually sent, not
    // to what a frame head announced.
    size_t cap = rx->cap * 2 > rx->len + len ? rx->cap * 2 : rx->len + len;
    WsPartial* grown = static_cast<WsPartial*>(mem::grow(rx, partial_bytes(rx->cap), partial_bytes(cap)));
    if (!grown) {
      host.on_nomem(s);
      abort(s, host, 0);
      return;
    }
    grown->cap = cap;
    s->rx = rx = grown;
  }
  std::memcpy(rx->data + rx->len, p, len);
  rx->len += len;
  parse(s, host, rx->data, rx->len, true);
}

void WsEngine::resume(WsSession* s, SessionHost& host) const {
  if (s->ws_state == WsState::kSse) return sse_start(s, host);  // its SUB, once its ?token= was decided
  if (s->rx && parsing(s)) return parse(s, host, s->rx->data, s->rx->len, true);
  if (http_ready(s)) {  // an HTTP request whose token was accepted, with no input kept (a GET /history): it runs
    uint8_t none = 0;
    parse(s, host, &none, 0, false);
  }
}

// Parses p[0..len); `owned` says p is s->rx's buffer. Keeps the unparsed rest in s->rx.
void WsEngine::parse(WsSession* s, SessionHost& host, uint8_t* p, size_t len, bool owned) const {
  size_t need = 0;
  bool paused = false;
  size_t used = consume(s, host, p, len, &need, &paused);
  if (!parsing(s)) return;  // closed (its buffers may be gone), or an event stream (input ignored)
  size_t left = len - used;
  if (owned) {
    if (!left) {
      mem::free(s->rx, partial_bytes(s->rx->cap));
      s->rx = nullptr;
    } else if (used) {
      std::memmove(s->rx->data, s->rx->data + used, left);
      s->rx->len = left;
    }
    return;
  }
  if (!left) return;
  // Keep the rest: what is needed to complete the unit, but never more than twice what arrived (a peer
  // that announces a large frame and trickles it holds memory in proportion to what it sent).
  size_t cap = need > left ? need : left;
  if (cap > 2 * left && cap > 64 * 1024) cap = 2 * left > 64 * 1024 ? 2 * left : 64 * 1024;
  if (cap < kMinPartial) cap = kMinPartial;
  WsPartial* rx = static_cast<WsPartial*>(mem::alloc(partial_bytes(cap)));
  if (!rx) {
    host.on_nomem(s);
    abort(s, host, 0);
    return;
  }
  rx->len = left;
  rx->cap = cap;
  std::memcpy(rx->data, p + used, left);
  s->rx = rx;
  (void)paused;
}

uint64_t WsEngine::message_limit() const {
  const uint64_t pub = opt_.max_message + kMaxPubHeader;
  return pub > kMaxAuthCommand ? pub : kMaxAuthCommand;
}

// The request head at p[0..len) is for the WebSocket path: the 101 answer (kOpen, *pos advanced past the head)
// or a refusal as before the HTTP transport (400, 404, 426 with the connection closed: false).
bool WsEngine::upgrade(WsSession* s, SessionHost& host, const char* p, size_t len, size_t* pos, bool* paused) const {
  UpgradeRequest req = parse_upgrade(p, len, opt_.path);
  char out[512];
  if (req.status != Upgrade::Ok) {  // (not NeedMore: parse_request found the head complete)
    host.on_http_error(s);
    size_t n = write_http_error(req.status == Upgrade::NeedMore ? Upgrade::BadRequest : req.status, req.reason, out,
                                sizeof out);
    s->ws_state = WsState::kClosing;
    Frame* f = Frame::copy(out, n);
    if (!f || !host.send(s, f)) {
      s->ws_state = WsState::kDone;
      host.close(s, CloseMode::kAbort);
      return false;
    }
    host.close(s, CloseMode::kGraceful);  // the client reads the answer, then our FIN
    return false;
  }
  size_t n = write_upgrade_response(req, out, sizeof out);
  Frame* f = Frame::copy(out, n);
  if (!f || !host.send(s, f)) {
    host.on_nomem(s);
    abort(s, host, 0);
    return false;
  }
  // A kept-alive HTTP connection (earlier requests answered) that upgrades is a WebSocket from now on: what
  // the broker sends must go out as frames, not be rendered for HTTP (it would be dropped), and the session's
  // union holds WebSocket fragments, not an exchange (drop_buffers would free one as the other).
  if (!s->websocket()) {
    forget_identity(s, host);  // (the WebSocket starts anonymous, or with its own ?token=)
    free_exchange(s);
    s->ws_flags &= static_cast<uint8_t>(~kHttpConn);
  }
  s->ws_state = WsState::kOpen;
  *pos += req.head_len;
  Verdict v = host.on_open(s, std::string_view(req.token, req.token_len));
  if (s->ws_state != WsState::kOpen) return false;
  if (v == Verdict::kPause) *paused = true;
  return true;
}

// Handles the complete units in p[0..len). Returns the bytes consumed; *need is the size of the
// incomplete unit at p[consumed] when known; *paused when a handler answered kPause.
size_t WsEngine::consume(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need,
                         bool* paused) const {
  size_t pos = 0;
  if (s->ws_state != WsState::kOpen) {  // HTTP requests first: an upgrade, or the HTTP transport
    pos = http(s, host, p, len, need, paused);
    if (s->ws_state != WsState::kOpen || *paused) return pos;
  }

  const uint64_t limit = message_limit();
  while (pos < len && s->ws_state == WsState::kOpen) {
    FrameHead head;
    uint16_t code = 0;
    FrameParse r = parse_frame_head(p + pos, len - pos, limit, &head, &code);
    if (r == FrameParse::NeedMore) {
      *need = kMaxClientFrameHead;
      break;
    }
    if (r == FrameParse::Error) {
      fail(s, host, code);  // the rest of the input is dropped: it cannot be framed any more
      return len;
    }
    uint64_t total = head.head_len + head.payload_len;
    if (len - pos < total) {
      *need = static_cast<size_t>(total);
      break;
    }
    uint8_t* payload = p + pos + head.head_len;
    unmask(payload, head.payload_len, head.mask, 0);
    pos += total;
    if (!on_frame(s, host, head.opcode, head.fin, payload, head.payload_len, paused)) {
      return s->ws_state == WsState::kOpen ? pos : len;
    }
  }
  return pos;
}

// One complete frame. Returns false when parsing must stop (closed, or paused).
bool WsEngine::on_frame(WsSession* s, SessionHost& host, uint8_t opcode, bool fin, uint8_t* payload, size_t len,
                        bool* paused) const {
  if (opcode == kOpClose) {
    uint16_t bad = check_close_payload(payload, len);
    if (bad) {
      fail(s, host, bad);
      return false;
    }
    // Echo the peer's code (or none), then close gracefully: the peer reads our close frame and FIN.
    uint16_t code = len >= 2 ? static_cast<uint16_t>(payload[0] << 8 | payload[1]) : 0;
    Frame* f = Frame::make(kOpClose, payload, len >= 2 ? 2 : 0);  // before the buffers (and payload) go
    drop_buffers(s);
    s->ws_state = WsState::kClosing;
    host.on_leave(s, code);
    if (!f || !host.send(s, f)) {
      s->ws_state = WsState::kDone;
      host.close(s, CloseMode::kAbort);
      return false;
    }
    host.close(s, CloseMode::kGraceful);
    return false;
  }
  if (opcode == kOpPing) {
    Frame* f = Frame::make(kOpPong, payload, len);
    if (!f || !host.send(s, f)) {
      host.on_nomem(s);
      abort(s, host, 0);
      return false;
    }
    return true;
  }
  if (opcode == kOpPong) {
    s->ws_flags &= ~kPinged;
    return true;
  }

  if (opcode == kOpCont) {
    WsFragments* fr = s->frag;
    if (!fr) {
      fail(s, host, kCloseProtocol);
      return false;
    }
    if (fr->len + len > message_limit()) {
      fail(s, host, kCloseTooBig);
      return false;
    }
    if (fr->len + len > fr->cap) {
      size_t cap = fr->cap * 2 > fr->len + len ? fr->cap * 2 : fr->len + len;
      WsFragments* grown =
          static_cast<WsFragments*>(mem::grow(fr, fragments_bytes(fr->cap), fragments_bytes(cap)));
      if (!grown) {
        host.on_nomem(s);
        abort(s, host, 0);
        return false;
      }
      grown->cap = cap;
      s->frag = fr = grown;
    }
    std::memcpy(fr->data + fr->len, payload, len);
    fr->len += len;
    if (!fin) return true;
    s->frag = nullptr;
    bool go = message(s, host, fr->opcode, fr->data, fr->len, paused);
    mem::free(fr, fragments_bytes(fr->cap));
    return go;
  }

  // A text or binary frame starts a message.
  if (s->frag) {
    fail(s, host, kCloseProtocol);  // a new message before the fragmented one finished
    return false;
  }
  if (fin) return message(s, host, opcode, payload, len, paused);
  size_t cap = len > kMinPartial ? len : kMinPartial;
  WsFragments* fr = static_cast<WsFragments*>(mem::alloc(fragments_bytes(cap)));
  if (!fr) {
    host.on_nomem(s);
    abort(s, host, 0);
    return false;
  }
  fr->opcode = opcode;
  fr->len = len;
  fr->cap = cap;
  std::memcpy(fr->data, payload, len);
  s->frag = fr;
  return true;
}

bool WsEngine::message(WsSession* s, SessionHost& host, uint8_t opcode, uint8_t* p, size_t len, bool* paused) const {
  if (opcode == kOpText && !utf8_valid(p, len)) {
    fail(s, host, kCloseInvalidData);
    return false;
  }
  Verdict v = host.on_message(s, opcode, p, len);
  if (s->ws_state != WsState::kOpen) return false;
  if (v == Verdict::kPause) {
    *paused = true;
    return false;
  }
  return true;
}

void WsEngine::hangup(WsSession* s, SessionHost& host) const {
  if (subscribed(s)) host.on_leave(s, 0);
  if (subscribed(s) || parsing(s)) {
    s->ws_state = WsState::kClosing;
    drop_buffers(s);
    host.close(s, CloseMode::kGraceful);
  }
}

void WsEngine::fail(WsSession* s, SessionHost& host, uint16_t code) const {
  if (s->ws_state == WsState::kSse) host.on_leave(s, code);
  if (s->ws_state != WsState::kOpen && (parsing(s) || s->ws_state == WsState::kSse)) {  // no WebSocket: the FIN ends it
    s->ws_state = WsState::kClosing;
    drop_buffers(s);
    host.close(s, CloseMode::kGraceful);
    return;
  }
  if (s->ws_state != WsState::kOpen) return;
  s->ws_state = WsState::kClosing;
  drop_buffers(s);
  host.on_leave(s, code);
  uint8_t body[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code & 0xff)};
  Frame* f = Frame::make(kOpClose, body, sizeof body);
  if (!f || !host.send(s, f)) {
    s->ws_state = WsState::kDone;
    host.close(s, CloseMode::kAbort);
    return;
  }
  host.close(s, CloseMode::kGraceful);
}

void WsEngine::abort(WsSession* s, SessionHost& host, uint16_t code) const {
  if (s->ws_state == WsState::kDone) return;
  if (subscribed(s)) host.on_leave(s, code);
  s->ws_state = WsState::kDone;
  drop_buffers(s);
  host.close(s, CloseMode::kAbort);
}

void WsEngine::release(WsSession* s) const {
  drop_buffers(s);
  s->ws_state = WsState::kDone;
}

void WsEngine::drop_buffers(WsSession* s) const {
  if (s->rx) mem::free(s->rx, partial_bytes(s->rx->cap));
  s->rx = nullptr;
  if (!s->websocket()) return free_exchange(s);
  if (s->frag) mem::free(s->frag, fragments_bytes(s->frag->cap));
  s->frag = nullptr;
}

WsEngine::Keepalive WsEngine::keepalive_pass(WsSession* s, SessionHost& host, unsigned passes_per_interval) const {
  if (s->ws_state == WsState::kSse) {  // a heartbeat comment every interval (it cannot answer one)
    if (++s->silent_passes < passes_per_interval) return Keepalive::kFine;
    s->silent_passes = keepalive_phase(s, passes_per_interval);
    if (!heartbeat_) heartbeat_ = Frame::copy(kSseHeartbeat.data(), kSseHeartbeat.size());  // (the first stream's)
    Frame* f = heartbeat_;
    if (f) f->ref();
    if (!f || !host.send(s, f)) return Keepalive::kDead;
    return Keepalive::kFine;
  }
  if (s->ws_state != WsState::kOpen) return Keepalive::kFine;
  if (s->ws_flags & kHeard) {
    s->ws_flags &= ~(kHeard | kPinged);
    s->silent_passes = keepalive_phase(s, passes_per_interval);
    return Keepalive::kFine;
  }
  if (++s->silent_passes < passes_per_interval) return Keepalive::kFine;
  s->silent_passes = 0;
  if (s->ws_flags & kPinged) return Keepalive::kDead;
  s->ws_flags |= kPinged;
  Frame* f = Frame::make(kOpPing, nullptr, 0);
  if (!f || !host.send(s, f)) return Keepalive::kDead;
  return Keepalive::kPinged;
}

bool WsEngine::handshake_expired(WsSession* s) {
  if (s->ws_state != WsState::kHandshake && s->ws_state != WsState::kHttpBody) return false;
  return ++s->silent_passes >= kHandshakePasses;
}

size_t WsEngine::buffered(const WsSession* s) {
  return (s->rx ? s->rx->cap : 0) + (s->websocket() && s->frag ? s->frag->cap : 0);
}

}  // namespace starling
