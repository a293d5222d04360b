// The protocol side of one connection: its HTTP request(s), then either a WebSocket (the upgrade, RFC 6455
// framing and fragments, ping/pong, the close handshake) or the HTTP transport of PROTOCOL.md (an event
// stream for GET /sse; POST /publish requests, pipelined and kept alive; CORS preflights). A state machine
// over bytes: input arrives through WsEngine::feed, and everything it produces goes through a SessionHost
// (frames to send, commands to handle, closes), so a native unit test drives it without sockets
// (native/test/test_ws_session.cc, test_http_session.cc) and a fuzz target feeds it hostile bytes
// (fuzz_session.cc). It never makes a system call. The HTTP side is in http_session.cc.
//
// The HTTP transport speaks the broker's language: an event stream's subjects become one "SUB" command, a
// POST /publish body one "PUB <subject> h" command, handed to SessionHost::on_message like a WebSocket
// message; what the broker sends back comes through WsEngine::deliver, which renders it for the session (an
// SSE event, or the HTTP response to the request waiting for it).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/frame.h"
#include "io/loop.h"

namespace starling {

enum class WsState : uint8_t {
  kHandshake,  // waiting for a request head: a new connection, or a kept-alive HTTP one between requests
  kOpen,       // WebSocket open: messages flow
  kSse,        // an event stream (GET /sse) is open: messages flow as server-sent events; input is ignored
  kHttpBody,   // reading the body of an HTTP request (WsSession::http holds the request)
  kHttpWait,   // an HTTP request was handed to the host: the broker's reply becomes its response
  kClosing,    // a close frame or an HTTP error was sent; the transport closes gracefully (lingering)
  kDone,       // the transport is closed or being aborted; nothing more is parsed
};

// WsSession::ws_flags.
enum SessionFlags : uint8_t {
  kHeard = 1 << 0,     // input arrived since the last keepalive pass
  kPinged = 1 << 1,    // a keepalive ping is unanswered
  kHttpConn = 1 << 2,  // an HTTP connection (event stream or requests), not a WebSocket: set at its first
                       // non-upgrade request, cleared when a later request on it upgrades (it is a WebSocket
                       // from then on); while set, what the broker sends is rendered (deliver)
};

// What a message handler wants next.
enum class Verdict : uint8_t {
  kContinue,  // go on parsing the input
  kPause,     // stop: keep the rest of the input until WsEngine::resume (the handler paused the stream)
};

struct WsPartial;  // input kept between reads: an incomplete frame or request head
struct HttpRequest;
struct HeaderField;
struct WsFragments;
struct HttpExchange;  // an HTTP request in progress (http_session.cc)

// Per-connection protocol state: 24 bytes, no buffer while idle.
struct WsSession {
  WsState ws_state = WsState::kHandshake;
  uint8_t ws_flags = 0;       // SessionFlags
  uint16_t silent_passes = 0; // keepalive passes without input; passes in kHandshake / kHttpBody
  WsPartial* rx = nullptr;
  union {
    WsFragments* frag = nullptr;  // WebSocket: a fragmented message being assembled
    HttpExchange* http;           // HTTP (kHttpConn): the request in progress, or an event stream's SUB;
                                  // between requests, the token in force (if a request's token set one)
  };

  bool websocket() const { return !(ws_flags & kHttpConn); }
};

// The session's environment. The workgroup implements it; unit tests fake it.
class SessionHost {
 public:
  virtual ~SessionHost() = default;
  // Queues f (one reference taken). False if it could not be queued; the session then aborts.
  virtual bool send(WsSession* s, Frame* f) = 0;
  virtual void close(WsSession* s, CloseMode mode) = 0;
  // The upgrade succeeded (the 101 answer is queued), or an event stream opened (its 200 head is queued;
  // ws_state kSse; its SUB follows once this returns kContinue or the session is resumed). `token`: the
  // request's "token" query parameter, still percent-encoded (empty: none), valid during the call. kPause:
  // the session keeps the input after the request head until WsEngine::resume (the host paused the
  // stream, e.g. while the token is decided).
  virtual Verdict on_open(WsSession* s, std::string_view token) = 0;
  // One complete message (text already checked to be UTF-8): a WebSocket message, or the command the HTTP
  // transport made of a request. `p` may be modified; valid during the call.
  virtual Verdict on_message(WsSession* s, uint8_t opcode, uint8_t* p, size_t len) = 0;
  // GET /history: what "SUB <spec>" would answer before the live messages, without subscribing
  // (Broker::fetch; spec is "<subject>#<n>" or "<subject>@<epoch>:<seq>", already checked). The answer comes
  // back through WsEngine::deliver. kPause: the host paused the stream until the answer is in.
  virtual Verdict on_fetch(WsSession* s, std::string_view spec) = 0;
  // Entitlement (SessionOptions::tokens): the identity the connection's next request runs under. Called for a
  // POST /publish or GET /history before it runs (`token`: the one it carries, decoded: printable ASCII
  // without spaces, shorter than a request head, valid during the call; empty: none), and with an empty token when a
  // connection whose identity came from a request's token upgrades or opens an event stream. `in_force`: the
  // session's record says the connection's identity came from this very token. The host:
  //  - token empty: makes the connection anonymous at once (no reply, nothing crosses); kContinue;
  //  - in_force, and the token has not expired: nothing (no reply); kContinue;
  //  - otherwise decides it as "AUTH <token>" would: the broker's "AUTH ok <expiry>" or "AUTH invalid <detail>"
  //    comes through deliver, at once (kContinue), or once the control plane answered (kPause: the host paused
  //    the stream, and resumes it after the answer).
  virtual Verdict on_identity(WsSession* s, std::string_view token, bool in_force) = 0;
  // The session left kOpen: `code` is the close code sent (0 when the peer hung up without one). The
  // host drops the connection's subscriptions and counts the code.
  virtual void on_leave(WsSession* s, uint16_t code) = 0;
  // A request was refused with an HTTP error (queued), or timed out.
  virtual void on_http_error(WsSession* s) = 0;
  // An HTTP request (not an upgrade) was answered or handed on: counted.
  virtual void on_http_request(WsSession* s) = 0;
  // Memory for the session's buffers was refused; the session is aborted.
  virtual void on_nomem(WsSession* s) = 0;
};

struct SessionOptions {
  std::string path = "/";       // the upgrade path
  // HTTP.AllowOrigins: the origins (scheme://host[:port], exactly as browsers send them) whose pages may
  // use the HTTP transport; "*": any. A request from its own origin (Origin naming the Host) is always
  // allowed. Others get 403.
  std::vector<std::string> allow_origins;
  uint32_t sse_retry_ms = 2000;  // the "retry:" an event stream starts with (EventSource's reconnect delay)
  uint64_t max_message = 65536; // largest PUB payload (MaxMessageSize); a message may exceed it by the
                                // longest PUB header line (kMaxPubHeader), and is never refused under
                                // kMaxAuthCommand (an AUTH with a token one byte too long gets its answer)
  // MaxSubscriptionsPerConnection: an event stream asking for more distinct subjects is answered 400 (its
  // SUB would be refused whole by the broker, leaving a stream that carries nothing).
  uint32_t max_subscriptions = 1000;
  // Entitlement is on: the token of each POST /publish and GET /history (Authorization: Bearer, or token=)
  // decides its identity (SessionHost::on_identity). Off: tokens are not looked at, nothing is checked.
  bool tokens = false;
};

class WsEngine {
 public:
  explicit WsEngine(SessionOptions options);
  ~WsEngine();
  WsEngine(const WsEngine&) = delete;
  WsEngine& operator=(const WsEngine&) = delete;

  // Feeds bytes received on the session's transport (valid during the call only).
  void feed(WsSession* s, SessionHost& host, uint8_t* p, size_t len) const;
  // What the broker sends to an HTTP session (kHttpConn; WebSocket sessions take frames as they are): f
  // (one reference, consumed) rendered for it — an event stream's server-sent events (shared by every
  // stream: transport/sse.h), or, for a request in kHttpWait, its HTTP response (the session then reads
  // its next request, or closes). Sent through host.send; nothing for a session that is closing.
  void deliver(WsSession* s, SessionHost& host, Frame* f) const;
  // Parses the input kept when a handler answered kPause. The caller resumed the stream first.
  void resume(WsSession* s, SessionHost& host) const;
  // The peer will send nothing more: close gracefully (queued replies still leave).
  void hangup(WsSession* s, SessionHost& host) const;
  // Server-initiated close of an open session with a close frame (1001 shutdown, 1008 policy...): drops
  // the rest of the input, sends the close frame, closes gracefully. A session still in the handshake is
  // closed gracefully without a frame.
  void fail(WsSession* s, SessionHost& host, uint16_t code) const;
  // Aborts (RST) without a close frame: slow consumers, dead peers.
  void abort(WsSession* s, SessionHost& host, uint16_t code) const;
  // Frees the session's buffers; call once the transport is closed.
  void release(WsSession* s) const;

  // Keepalive, called once per pass (every KeepAlive / kPassesPerKeepAlive seconds) for every session.
  // Returns what the host must do: nothing, send a ping (done here), or treat the peer as dead. An event
  // stream gets a heartbeat comment instead of a ping (one shared frame; it cannot answer, so it is never
  // found dead here: a peer that is gone fails the writes, and one that does not read is a slow consumer).
  enum class Keepalive : uint8_t { kFine, kPinged, kDead };
  Keepalive keepalive_pass(WsSession* s, SessionHost& host, unsigned passes_per_interval) const;
  // Handshake timeout, called once a second for every session: true when the session has been waiting
  // for a request head (or reading a request body) for kHandshakePasses calls (the host then closes it and
  // counts an HTTP error). A kept-alive HTTP connection's count restarts with each request it completes.
  static bool handshake_expired(WsSession* s);

  // Bytes a session holds in buffers (for tests and the memory account).
  static size_t buffered(const WsSession* s);
  // An open session that holds subscriptions and takes commands: a WebSocket or an event stream.
  static bool subscribed(const WsSession* s) { return s->ws_state == WsState::kOpen || s->ws_state == WsState::kSse; }
  // A session a decision on a token is for: an open one, or an HTTP request waiting for its token's decision.
  static bool takes_decisions(const WsSession* s) { return subscribed(s) || s->ws_state == WsState::kHttpWait; }

 private:
  void parse(WsSession* s, SessionHost& host, uint8_t* p, size_t len, bool owned) const;
  size_t consume(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need, bool* paused) const;
  bool on_frame(WsSession* s, SessionHost& host, uint8_t opcode, bool fin, uint8_t* payload, size_t len,
                bool* paused) const;
  bool message(WsSession* s, SessionHost& host, uint8_t opcode, uint8_t* p, size_t len, bool* paused) const;
  void drop_buffers(WsSession* s) const;
  bool upgrade(WsSession* s, SessionHost& host, const char* p, size_t len, size_t* pos, bool* paused) const;
  // States in which input is parsed (the others ignore it).
  static bool parsing(const WsSession* s) {
    return s->ws_state == WsState::kHandshake || s->ws_state == WsState::kOpen || s->ws_state == WsState::kHttpBody ||
           s->ws_state == WsState::kHttpWait;
  }

  // http_session.cc: the requests of a connection before (or instead of) a WebSocket. Same contract as
  // consume; leaves the session in kOpen after a successful upgrade (the rest is WebSocket frames).
  size_t http(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need, bool* paused) const;
  size_t body(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need, bool* paused, bool* go_on) const;
  void publish_head(WsSession* s, SessionHost& host, const HttpRequest& req) const;
  bool publish(WsSession* s, SessionHost& host, uint8_t* body, size_t len, bool* paused) const;
  void preflight(WsSession* s, SessionHost& host, const HttpRequest& req) const;
  void sse_open(WsSession* s, SessionHost& host, const HttpRequest& req, bool* paused) const;
  void history(WsSession* s, SessionHost& host, const HttpRequest& req, std::string_view token, bool* paused) const;
  void history_fetch(WsSession* s, SessionHost& host, bool* paused) const;  // the fetch once its identity is set
  void history_answer(WsSession* s, SessionHost& host, const Frame* f) const;
  void sse_start(WsSession* s, SessionHost& host) const;  // runs an event stream's SUB once it may
  // Entitlement: gives the connection the identity of the request in s->http (its token, or none) before it
  // runs. kGo: run it now; kWait: the session waits for the token's decision (kHttpWait; *paused when the host
  // paused the stream); kAnswered: the decision came at once and refused the request (answered, or its body
  // is being dropped), or the session is closing.
  enum class Identity : uint8_t { kGo, kWait, kAnswered };
  Identity identify(WsSession* s, SessionHost& host, std::string_view token, bool* paused) const;
  // The broker's answer to the token a request waits for ("AUTH ok"/"AUTH invalid", through deliver).
  void token_decided(WsSession* s, SessionHost& host, Frame* f) const;
  // The connection's identity goes back to anonymous (before an upgrade or an event stream) if a request's
  // token gave it one.
  void forget_identity(WsSession* s, SessionHost& host) const;
  // A waiting request whose token was accepted while none of its input was left to parse: it runs now.
  bool http_ready(const WsSession* s) const;
  // The response (its exchange freed); then the next request (keep_alive), or a graceful close.
  void respond(WsSession* s, SessionHost& host, uint16_t status, std::string_view json, bool keep_alive,
               const HeaderField* extra = nullptr, size_t extra_count = 0) const;
  void refuse(WsSession* s, SessionHost& host, uint16_t status, std::string_view detail, bool keep_alive) const;
  size_t response_head(const WsSession* s, char* out, size_t cap, uint16_t status, const HeaderField* extra,
                       size_t extra_count, uint64_t content_length) const;
  void free_exchange(WsSession* s) const;
  // After an answer: the request's state is freed; the exchange itself stays (reset) while it holds the
  // token in force, which the connection's next request is compared with.
  void finish_exchange(WsSession* s) const;

  // Largest message accepted (close 1009 beyond): a PUB of MaxMessageSize bytes, or an AUTH command.
  uint64_t message_limit() const;

  SessionOptions opt_;
  // The event streams' keepalive comment, shared (one reference per send); made at the first heartbeat.
  mutable Frame* heartbeat_ = nullptr;
};

}  // namespace starling
