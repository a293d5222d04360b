// A fake SessionHost and client-side frame helpers shared by test_ws_session.cc, test_http_session.cc and
// fuzz_session.cc.
// The fake records everything the engine does (frames sent, as bytes; closes with their mode; opens,
// leaves and messages), drops each frame's reference once recorded (so the memory account balances),
// and notes any breach of the session contract in `violations` instead of stopping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "io/frame.h"
#include "transport/ws_frame.h"
#include "transport/ws_session.h"

namespace fake {

using starling::CloseMode;
using starling::Frame;
using starling::SessionHost;
using starling::Verdict;
using starling::WsSession;

// The handshake of RFC 6455 §1.3 (its accept value is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=).
inline const std::string kUpgrade =
    "GET / HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";
inline const char kAccept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// One masked client frame. `len_override` (when not ~0) is the length written in the head instead of
// payload.size() (a head announcing more than is sent).
inline std::string client_frame(uint8_t opcode, std::string_view payload, bool fin = true,
                                uint64_t len_override = ~0ull) {
  static const uint8_t mask[4] = {0x37, 0xFA, 0x21, 0x3D};
  const uint64_t len = len_override != ~0ull ? len_override : payload.size();
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0x00) | opcode));
  if (len <= 125) {
    f.push_back(static_cast<char>(0x80 | len));
  } else if (len <= 0xFFFF) {
    f.push_back(static_cast<char>(0x80 | 126));
    f.push_back(static_cast<char>(len >> 8));
    f.push_back(static_cast<char>(len & 0xFF));
  } else {
    f.push_back(static_cast<char>(0x80 | 127));
    for (int i = 7; i >= 0; i--) f.push_back(static_cast<char>((len >> (8 * i)) & 0xFF));
  }
  f.append(reinterpret_cast<const char*>(mask), 4);
  for (size_t i = 0; i < payload.size(); i++) f.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
  return f;
}

// One server frame (unmasked, FIN) carrying payload, as the broker's answers are framed.
inline std::string server_frame(uint8_t opcode, std::string_view payload) {
  std::string f(starling::server_head_size(payload.size()), '\0');
  starling::write_server_head(reinterpret_cast<uint8_t*>(f.data()), opcode, payload.size());
  f.append(payload.data(), payload.size());
  return f;
}

inline std::string text(std::string_view payload, bool fin = true) {
  return client_frame(starling::kOpText, payload, fin);
}

// A close frame payload: the code (big-endian) and a reason.
inline std::string close_body(uint16_t code, std::string_view reason = "") {
  std::string b;
  b.push_back(static_cast<char>(code >> 8));
  b.push_back(static_cast<char>(code & 0xFF));
  b.append(reason.data(), reason.size());
  return b;
}

// A server frame as recorded by the fake (server frames are unmasked, FIN set).
struct ServerFrame {
  bool ok = false;  // the bytes are exactly one well-formed server frame
  uint8_t opcode = 0;
  std::string payload;
};

inline ServerFrame decode(const std::string& raw) {
  ServerFrame f;
  if (raw.size() < 2) return f;
  const uint8_t b0 = static_cast<uint8_t>(raw[0]), b1 = static_cast<uint8_t>(raw[1]);
  if (b0 & 0x70 || !(b0 & 0x80) || b1 & 0x80) return f;
  uint64_t len = b1 & 0x7F;
  size_t head = 2;
  if (len == 126) {
    if (raw.size() < 4) return f;
    len = static_cast<uint64_t>(static_cast<uint8_t>(raw[2])) << 8 | static_cast<uint8_t>(raw[3]);
    head = 4;
  } else if (len == 127) {
    if (raw.size() < 10) return f;
    len = 0;
    for (size_t i = 2; i < 10; i++) len = len << 8 | static_cast<uint8_t>(raw[i]);
    head = 10;
  }
  if (raw.size() != head + len) return f;
  f.ok = true;
  f.opcode = b0 & 0x0F;
  f.payload = raw.substr(head);
  return f;
}

// Every server frame in raw, in order (a frame may carry several WebSocket messages back to back, as a
// recovery answer does); a trailing malformed part gives one entry with ok = false.
inline std::vector<ServerFrame> decode_all(const std::string& raw) {
  std::vector<ServerFrame> out;
  size_t at = 0;
  while (at < raw.size()) {
    if (raw.size() - at < 2) {
      out.push_back(ServerFrame());
      break;
    }
    const uint8_t b1 = static_cast<uint8_t>(raw[at + 1]);
    uint64_t len = b1 & 0x7F;
    size_t head = 2;
    if (len == 126 && raw.size() - at >= 4) {
      len = static_cast<uint64_t>(static_cast<uint8_t>(raw[at + 2])) << 8 | static_cast<uint8_t>(raw[at + 3]);
      head = 4;
    } else if (len == 127 && raw.size() - at >= 10) {
      len = 0;
      for (size_t i = 2; i < 10; i++) len = len << 8 | static_cast<uint8_t>(raw[at + i]);
      head = 10;
    }
    const size_t n = head + len <= raw.size() - at ? head + static_cast<size_t>(len) : raw.size() - at;
    out.push_back(decode(raw.substr(at, n)));
    at += n;
  }
  return out;
}

// The close code in a close frame's payload, 0 when it has none.
inline uint16_t close_code(const ServerFrame& f) {
  if (f.opcode != starling::kOpClose || f.payload.size() < 2) return 0;
  return static_cast<uint16_t>(static_cast<uint8_t>(f.payload[0]) << 8 | static_cast<uint8_t>(f.payload[1]));
}

struct Message {
  uint8_t opcode;
  std::string data;
};

class Host : public SessionHost {
 public:
  std::vector<std::string> sent;        // each frame's bytes, in order
  std::vector<CloseMode> closes;        // every close() call
  std::vector<uint16_t> leaves;         // every on_leave code
  std::vector<Message> messages;        // every on_message
  std::vector<std::string> fetches;     // every on_fetch's spec
  int opens = 0, http_errors = 0, http_requests = 0, nomems = 0;
  std::string open_token;       // the token query parameter on_open was given
  bool pause_on_open = false;   // on_open answers kPause (a token being decided)
  size_t close_frames_sent = 0;         // close frames among `sent`
  std::vector<std::string> violations;  // contract breaches seen (empty when all is well)
  bool refuse_send = false;             // send() fails (and drops the reference), as a full queue would
  // Answers on_message; kContinue when unset. May call reply() to queue an answer.
  std::function<Verdict(Host&, const Message&)> on_msg;
  // Answers on_fetch (GET /history); kContinue when unset.
  std::function<Verdict(Host&, const std::string&)> on_fetch_cb;
  // Every on_identity: the token (empty: anonymous) and whether the session said it is the one in force.
  struct Identity {
    std::string token;
    bool in_force;
  };
  std::vector<Identity> identities;
  // Answers on_identity; kContinue (nothing to decide) when unset. May call reply() with the "AUTH ..." answer.
  std::function<Verdict(Host&, const Identity&)> on_identity_cb;
  // When set, reply() hands frames to an HTTP session through the engine (as the workgroup does).
  const starling::WsEngine* engine = nullptr;

  bool send(WsSession* s, Frame* f) override {
    if (!closes.empty()) violations.push_back("send after close");
    if (refuse_send) {
      f->unref();
      return false;
    }
    sent.emplace_back(reinterpret_cast<const char*>(f->data()), f->size());
    f->unref();
    if (s->websocket() && sent.back().compare(0, 5, "HTTP/") != 0) {
      const ServerFrame d = decode(sent.back());
      if (!d.ok) violations.push_back("malformed server frame");
      if (close_frames_sent) violations.push_back("frame after a close frame");
      close_frames_sent += d.opcode == starling::kOpClose;
    }
    return true;
  }
  void close(WsSession*, CloseMode mode) override { closes.push_back(mode); }
  Verdict on_open(WsSession*, std::string_view token) override {
    if (opens) violations.push_back("second on_open");
    opens++;
    open_token = std::string(token);
    return pause_on_open ? Verdict::kPause : Verdict::kContinue;
  }
  Verdict on_message(WsSession* s, uint8_t opcode, uint8_t* p, size_t len) override {
    if (!closes.empty()) violations.push_back("on_message after close");
    if (!leaves.empty()) violations.push_back("on_message after on_leave");
    if (!opens && s->websocket()) violations.push_back("on_message before on_open");
    if (opcode != starling::kOpText && opcode != starling::kOpBinary) violations.push_back("bad message opcode");
    if (opcode == starling::kOpText && !starling::utf8_valid(p, len)) violations.push_back("invalid UTF-8 delivered");
    messages.push_back(Message{opcode, std::string(reinterpret_cast<const char*>(p), len)});
    session_ = s;
    return on_msg ? on_msg(*this, messages.back()) : Verdict::kContinue;
  }
  Verdict on_fetch(WsSession* s, std::string_view spec) override {
    fetches.push_back(std::string(spec));
    session_ = s;
    return on_fetch_cb ? on_fetch_cb(*this, fetches.back()) : Verdict::kContinue;
  }
  Verdict on_identity(WsSession* s, std::string_view token, bool in_force) override {
    if (!closes.empty()) violations.push_back("on_identity after close");
    if (s->websocket() && !token.empty()) violations.push_back("a request token on a WebSocket session");
    identities.push_back(Identity{std::string(token), in_force});
    session_ = s;
    return on_identity_cb ? on_identity_cb(*this, identities.back()) : Verdict::kContinue;
  }
  void on_leave(WsSession*, uint16_t code) override {
    if (!leaves.empty()) violations.push_back("second on_leave");
    if (!opens) violations.push_back("on_leave without on_open");
    leaves.push_back(code);
  }
  void on_http_error(WsSession*) override { http_errors++; }
  void on_http_request(WsSession*) override { http_requests++; }
  void on_nomem(WsSession*) override { nomems++; }

  // From inside on_msg: queue a text frame to the session, as a handler answering a command would (an HTTP
  // session's through WsEngine::deliver, when `engine` is set, as the workgroup does).
  void reply(std::string_view text) { reply_frame(Frame::make(starling::kOpText, text.data(), text.size())); }
  void reply_frame(Frame* f) {
    if (!f) return;
    if (engine && !session_->websocket()) engine->deliver(session_, *this, f);
    else send(session_, f);
  }

  // The frames sent after the 101 answer, decoded (the HTTP answer, if any, is skipped).
  std::vector<ServerFrame> frames() const {
    std::vector<ServerFrame> out;
    for (const std::string& raw : sent)
      if (raw.compare(0, 5, "HTTP/") != 0) out.push_back(decode(raw));
    return out;
  }

 private:
  WsSession* session_ = nullptr;
};

// Feeds a copy of `bytes` (the engine may modify its input; the caller's string stays intact).
inline void feed(const starling::WsEngine& engine, WsSession* s, Host& host, std::string_view bytes) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  engine.feed(s, host, copy.data(), copy.size());
}

}  // namespace fake
