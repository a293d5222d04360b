// The WebSocket side of one connection: the HTTP upgrade, RFC 6455 framing and fragments, ping/pong,
// and the close handshake. A state machine over bytes: input arrives through WsEngine::feed, and
// everything it produces goes through a SessionHost (frames to send, messages to handle, closes), so a
// native unit test drives it without sockets (native/test/test_ws_session.cc) and a fuzz target feeds it
// hostile bytes (fuzz_session.cc). It never makes a system call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "io/frame.h"
#include "io/loop.h"

namespace starling {

enum class WsState : uint8_t {
  kHandshake,  // waiting for the HTTP upgrade request
  kOpen,       // WebSocket open: messages flow
  kClosing,    // a close frame or an HTTP error was sent; the transport closes gracefully (lingering)
  kDone,       // the transport is closed or being aborted; nothing more is parsed
};

// What a message handler wants next.
enum class Verdict : uint8_t {
  kContinue,  // go on parsing the input
  kPause,     // stop: keep the rest of the input until WsEngine::resume (the handler paused the stream)
};

struct WsPartial;  // input kept between reads: an incomplete frame or request head
struct WsFragments;

// Per-connection WebSocket state: 24 bytes, no buffer while idle.
struct WsSession {
  WsState ws_state = WsState::kHandshake;
  uint8_t ws_flags = 0;       // kHeard, kPinged (keepalive, see WsEngine::keepalive_pass)
  uint16_t silent_passes = 0; // keepalive passes without input
  WsPartial* rx = nullptr;
  WsFragments* frag = nullptr;
};

// The session's environment. The workgroup implements it; unit tests fake it.
class SessionHost {
 public:
  virtual ~SessionHost() = default;
  // Queues f (one reference taken). False if it could not be queued; the session then aborts.
  virtual bool send(WsSession* s, Frame* f) = 0;
  virtual void close(WsSession* s, CloseMode mode) = 0;
  // The upgrade succeeded (the 101 answer is queued). `token`: the request's "token" query parameter,
  // still percent-encoded (empty: none), valid during the call. kPause: the session keeps the input after
  // the request head until WsEngine::resume (the host paused the stream, e.g. while the token is decided).
  virtual Verdict on_open(WsSession* s, std::string_view token) = 0;
  // One complete message (text already checked to be UTF-8). `p` may be modified; valid during the call.
  virtual Verdict on_message(WsSession* s, uint8_t opcode, uint8_t* p, size_t len) = 0;
  // The session left kOpen: `code` is the close code sent (0 when the peer hung up without one). The
  // host drops the connection's subscriptions and counts the code.
  virtual void on_leave(WsSession* s, uint16_t code) = 0;
  // The upgrade request was refused with an HTTP error (queued), or timed out.
  virtual void on_http_error(WsSession* s) = 0;
  // Memory for the session's buffers was refused; the session is aborted.
  virtual void on_nomem(WsSession* s) = 0;
};

struct SessionOptions {
  std::string path = "/";       // the upgrade path
  uint64_t max_message = 65536; // largest PUB payload (MaxMessageSize); a message may exceed it by the
                                // longest PUB header line (kMaxPubHeader), and is never refused under
                                // kMaxAuthCommand (an AUTH with a token one byte too long gets its answer)
};

class WsEngine {
 public:
  explicit WsEngine(SessionOptions options);

  // Feeds bytes received on the session's transport (valid during the call only).
  void feed(WsSession* s, SessionHost& host, uint8_t* p, size_t len) const;
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
  // Returns what the host must do: nothing, send a ping (done here), or treat the peer as dead.
  enum class Keepalive : uint8_t { kFine, kPinged, kDead };
  Keepalive keepalive_pass(WsSession* s, SessionHost& host, unsigned passes_per_interval) const;
  // Handshake timeout, called once a second for every session: true when the session has been in the
  // handshake for kHandshakePasses calls (the host then closes it and counts an HTTP error).
  static bool handshake_expired(WsSession* s);

  // Bytes a session holds in buffers (for tests and the memory account).
  static size_t buffered(const WsSession* s);

 private:
  void parse(WsSession* s, SessionHost& host, uint8_t* p, size_t len, bool owned) const;
  size_t consume(WsSession* s, SessionHost& host, uint8_t* p, size_t len, size_t* need, bool* paused) const;
  bool on_frame(WsSession* s, SessionHost& host, uint8_t opcode, bool fin, uint8_t* payload, size_t len,
                bool* paused) const;
  bool message(WsSession* s, SessionHost& host, uint8_t opcode, uint8_t* p, size_t len, bool* paused) const;
  void drop_buffers(WsSession* s) const;

  // Largest message accepted (close 1009 beyond): a PUB of MaxMessageSize bytes, or an AUTH command.
  uint64_t message_limit() const;

  SessionOptions opt_;
};

}  // namespace starling
