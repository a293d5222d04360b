// libFuzzer target for ws_session.cc: arbitrary bytes fed to a WsEngine with a fake host
// (fake_session.h), in chunks, with the host pausing on some messages and resuming before the next read.
// Checks the session contract: no message after a close was requested or after on_leave, at most one
// close frame and one close(), every frame well-formed, buffers bounded by the input, and the memory
// account back to its baseline after release().
// Input: byte 0 = flags, byte 1 = the chunk delimiter, then the bytes (split at each delimiter byte).
//   flags bit 0: feed a valid upgrade request first (so half the inputs reach the framing code at once)
//   flags bits 1-2: pause on every message (1), every second (2), every third (3), never (0)
//   flags bit 3: the host answers each message with a text frame (replies must precede a close frame)
//   flags bit 4: hang up after the last chunk;  bit 5: run keepalive passes after each chunk
//   flags bit 6: call handshake_expired after each chunk (and close like the host when it expires)
//   flags bit 7: Entitlement on (SessionOptions::tokens): HTTP requests' tokens are decided — a token starting
//     with 'm' is refused at once as one too many, the others wait for a decision delivered before the next
//     resume ("AUTH invalid" for a token starting with 'b', else "AUTH ok"), and an "AUTH expiring" line is
//     delivered before each decision (it must not be taken for an answer)
// Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fake_session.h"
#include "io/memory.h"
#include "transport/ws_session.h"

using namespace starling;

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_session: invariant broken: %s\n", what);
  std::abort();
}

void check_host(const fake::Host& h, const WsSession& s) {
  for (const std::string& v : h.violations) require(false, v.c_str());
  require(h.closes.size() <= 1, "close() called more than once");
  require(h.close_frames_sent <= 1, "more than one close frame");  // (and the fake flags any frame after it)
  require(h.leaves.size() <= 1, "on_leave called more than once");
  if (!h.closes.empty())
    require(s.ws_state == WsState::kClosing || s.ws_state == WsState::kDone, "closed but still parsing");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t flags = data[0];
  const uint8_t delim = data[1];
  data += 2;
  size -= 2;

  const int64_t baseline = mem::total();
  {
    SessionOptions o;
    o.max_message = 64;  // a limit the fuzzer reaches (64 + kMaxPubHeader bytes)
    o.tokens = flags & 128;
    WsEngine engine(o);
    WsSession s;
    fake::Host host;
    const unsigned pause_every = (flags >> 1) & 3;
    bool paused = false;
    std::string deciding;  // the token whose decision is delivered at the next resume
    bool pending = false;
    host.engine = &engine;
    host.on_identity_cb = [&](fake::Host& h, const fake::Host::Identity& id) {
      if (id.token.empty() || id.in_force) return Verdict::kContinue;
      if (id.token[0] == 'm') {
        h.reply("AUTH invalid too many AUTH commands (at most 4 a second); the token in force stays");
        return Verdict::kContinue;
      }
      deciding = id.token;
      pending = paused = true;
      return Verdict::kPause;
    };
    // The decision, as the workgroup applies it: the broker's answer through deliver, then the resume.
    auto decide = [&] {
      if (!pending) return;
      pending = false;
      if (s.websocket() || !WsEngine::takes_decisions(&s)) return;  // (closed meanwhile: nobody to tell)
      const std::string answer = deciding[0] == 'b' ? "AUTH invalid bad signature" : "AUTH ok 0";
      for (const std::string& line : {std::string("AUTH expiring 5"), answer})
        engine.deliver(&s, host, Frame::make(kOpText, line.data(), line.size()));
      check_host(host, s);
    };
    // HTTP sessions: the broker's answers, as the workgroup hands them over (WsEngine::deliver) — an ACK or an
    // ERR for a publish, a message for an event stream's SUB, a history answer for a fetch.
    host.on_fetch_cb = [&](fake::Host& h, const std::string&) {
      std::string answer = fake::server_frame(kOpText, "MSG /a 1:1 history\nx") + fake::server_frame(kOpBinary, "MSG /a 1:2 history\n\x01") +
                           fake::server_frame(kOpText, (flags & 8) ? "ERR forbidden /a: no" : "SYNC /a 1:2");
      h.reply_frame(Frame::copy(answer.data(), answer.size()));
      return Verdict::kContinue;
    };
    host.on_msg = [&](fake::Host& h, const fake::Message& m) {
      if (!s.websocket()) {
        if (m.data.compare(0, 4, "PUB ") == 0) h.reply((flags & 8) ? "ERR too-large h payload over the limit" : "ACK h");
        else h.reply("MSG /a 1:3\nlive\ntext");
      } else if (flags & 8) {
        h.reply(m.opcode == kOpText ? m.data : "bin");
      }
      if (pause_every && h.messages.size() % pause_every == 0) {
        paused = true;
        return Verdict::kPause;
      }
      return Verdict::kContinue;
    };

    if (flags & 1) fake::feed(engine, &s, host, fake::kUpgrade);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
      if (i < size && data[i] != delim) continue;
      if (i > start) {
        std::vector<uint8_t> chunk(data + start, data + i);
        // The host reads nothing from a paused stream: it resumes (as the broker would) before reading.
        while (paused) {
          paused = false;
          decide();
          engine.resume(&s, host);
          check_host(host, s);
        }
        engine.feed(&s, host, chunk.data(), chunk.size());
        check_host(host, s);
        require(WsEngine::buffered(&s) <= 4 * size + 256 * 1024, "buffers out of proportion to the input");
      }
      start = i + 1;
      if (flags & 32) {
        if (engine.keepalive_pass(&s, host, 1) == WsEngine::Keepalive::kDead) engine.abort(&s, host, 0);
        check_host(host, s);
      }
      if ((flags & 64) && WsEngine::handshake_expired(&s)) {
        host.http_errors++;
        engine.fail(&s, host, 0);
        check_host(host, s);
      }
    }
    while (paused) {
      paused = false;
      decide();
      engine.resume(&s, host);
      check_host(host, s);
    }
    if (flags & 16) engine.hangup(&s, host);
    check_host(host, s);
    require(host.opens <= 1, "opened twice");
    if (host.opens == 0 && s.websocket()) require(host.messages.empty() && host.leaves.empty(), "messages without an upgrade");
    engine.release(&s);
    require(WsEngine::buffered(&s) == 0, "buffers kept after release");
  }
  require(mem::total() == baseline, "memory account not back to its baseline after release()");
  return 0;
}
