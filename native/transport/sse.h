// Server-sent events (WHATWG HTML "9.2 Server-sent events"): the server's WebSocket output rendered as an
// event stream for `GET /sse` subscribers, and an incremental parser of event streams (the load tools'
// client, the tests). Rendering is pure (no system calls); sse_frame shares one rendition per Frame.
//
// Wire format (the contract; PROTOCOL.md "HTTP transport"). Each server WebSocket frame whose payload is a
// protocol line `VERB args` (up to the first '\n', or the whole payload) becomes at most one event; every
// event ends with a blank line. <pos> is `<epoch>:<seq>` exactly as the line has it.
//
//   MSG <subject> <pos>[ <kind>]\n<payload>, text frame, payload without '\r':
//       event: <kind>\n                       only when the line has a kind (snapshot, history, recovered);
//                                             a live message has none, so EventSource fires "message"
//       id: <subject>@<pos>\n
//       data: <line>\n                        once per line of the payload split at '\n': an empty payload
//                                             is one "data: " line, a payload ending in '\n' ends with an
//                                             empty one, so the client's joined data equals the payload
//       \n
//     "data: " always has its space: the client strips exactly one, so a line's own leading spaces survive.
//   MSG, binary frame:   event: <kind>-base64 (kind "message" when the line has none), the same id,
//                        one "data: <standard base64 of the payload, with padding>", blank line.
//   MSG, text frame whose payload has a '\r' (SSE would read it as a line end):
//                        event: <kind>-utf8-base64, the same id, data: base64 of the exact payload bytes.
//   SYNC <subject> <pos> / RESYNC <subject> <pos>:
//                        event: sync / resync, id: <subject>@<pos>, data: <subject> <pos>.
//   ERR <rest>:          event: err, data: <rest> (no id line: the client's last event id stays).
//   AUTH <rest>:         event: auth, data: <rest> (no id line).
//                        <rest>: the rest of the line after "ERR " / "AUTH " (may be empty).
//   ACK, PONG, every other line, close/ping/pong frames: nothing.
//
// Input is read defensively; what does not fit the rules renders nothing rather than a broken stream: a
// MSG/SYNC/RESYNC line whose subject fails valid_subject(), whose position does not parse
// (parse_position_line), whose kind is not one of the three (MSG) or that has anything after the position
// (SYNC, RESYNC); a MSG line without its '\n'; an ERR or AUTH line containing '\r'. Frame heads are
// checked as this server writes them (FIN set, no RSV bits, unmasked, opcode text/binary/close/ping/pong,
// a 64-bit length below 2^63): a head that is not so, or a frame cut short, ends rendering there (the
// frames before it are rendered).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "io/frame.h"

namespace starling {

// What the server writes to an idle event stream to keep proxies from timing it out: an SSE comment line,
// which clients ignore.
constexpr std::string_view kSseHeartbeat = ":\n";

// Renders the server WebSocket frames in ws[0..len) as server-sent events (the rules above). With out ==
// nullptr only measures; otherwise writes exactly the returned number of bytes to out. Never reads past
// ws[len). Pure.
size_t sse_render(const uint8_t* ws, size_t len, uint8_t* out);

// The SSE rendition of f's bytes (f->data(), f->size()) with one reference taken for the caller, rendered
// once and shared through f->alt: the first caller renders and installs it by compare-and-swap; a caller
// that loses the race frees its own and takes the winner's. Safe for concurrent callers on the same f (each
// holding a reference to f). Returns nullptr when
//   - the rendition is empty (an ACK, a PONG, a control frame): *empty = true, the caller sends nothing.
//     Empty renditions are not cached: such frames are one client's replies, and measuring is cheap;
//   - memory is exhausted, or the rendition would not fit in a Frame (over 4 GiB): *empty = false, the
//     caller sheds the subscriber (DESIGN.md rule 3).
// The rendition's opcode and retained flag mean nothing.
Frame* sse_frame(Frame* f, bool* empty);

// One event as the parser dispatches it. The views point into the parser: valid until its next feed or reset.
struct SseEvent {
  std::string_view type;   // the event field's value, "message" when the event had none (or an empty one)
  std::string_view id;     // the last event ID buffer: the last id field of this stream so far (or empty)
  std::string_view data;   // the data lines joined with '\n'
};

enum class SseStatus : uint8_t {
  kOk,
  kLineTooLong,     // a line (without its end) of more than max_line bytes
  kEventTooLarge,   // an event whose data (the data lines joined with '\n') would exceed max_event bytes
};

// The WHATWG "event stream interpretation" of a byte stream fed in arbitrary pieces. Lines end at CRLF, LF
// or CR (a CRLF split between two pieces is one line end); a UTF-8 BOM at the very start is skipped (also
// when split); lines starting with ':' are comments; fields: "event" sets the type, "data" appends its
// value and '\n' to the data buffer, "id" sets the last event ID unless the value contains NUL, "retry"
// (ASCII digits only, not empty) sets the reconnection time; other fields are ignored. A value starting
// with a space loses that one space. A blank line dispatches: an empty data buffer dispatches nothing (the
// type is reset), otherwise the event (data without its final '\n') is delivered and data and type are
// reset; the last event ID persists. Bytes are not UTF-8 decoded (the caller decodes what it keeps). An
// incomplete event at the end of the stream is never dispatched.
//
// Memory is bounded: one line is buffered at most (max_line bytes), the data buffer holds at most
// max_event + 1 bytes, the type and id at most max_line each. A line or event over its limit stops the
// parser with the status set (every event before it was delivered); the outcome does not depend on how the
// stream was split into pieces. Buffers are reused: in steady state dispatching allocates nothing. Buffers
// are std::string (a client-side parser: its memory is not the server's account).
class SseParser {
 public:
  SseParser(size_t max_line, size_t max_event) : max_line_(max_line), max_event_(max_event) {}

  // Consumes p[0..len) up to and including the line that dispatches an event (then event() is that event),
  // or all of it. Returns the bytes consumed; 0 once status() is not kOk.
  size_t feed(const uint8_t* p, size_t len);

  // The event the last feed dispatched, nullptr if it dispatched none. Valid until the next feed or reset.
  const SseEvent* event() const { return dispatched_ ? &event_ : nullptr; }
  SseStatus status() const { return status_; }

  // Feeds all of p[0..len), calling on_event(const SseEvent&) for each event dispatched. Returns false when
  // the parser stopped (status()).
  template <typename OnEvent>
  bool feed_all(const void* p, size_t len, OnEvent&& on_event) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (;;) {
      const size_t used = feed(b, len);
      b += used;
      len -= used;
      if (const SseEvent* e = event()) on_event(*e);
      if (status_ != SseStatus::kOk) return false;
      if (len == 0) return true;
    }
  }

  // The last event ID of this stream (what a reconnecting client sends as Last-Event-ID).
  std::string_view last_event_id() const { return id_; }
  // The reconnection time the stream asked for (a "retry" field), if any.
  bool has_retry() const { return has_retry_; }
  uint64_t retry_ms() const { return retry_ms_; }

  // Starts a new stream (a reconnection): every buffer empty, the status kOk, no retry. Keeps capacity.
  void reset();

 private:
  bool take_line(std::string_view line);   // true when the line dispatched an event
  void field(std::string_view name, std::string_view value);
  bool too_long(size_t line_len);           // sets kLineTooLong when line_len > max_line_

  size_t max_line_;
  size_t max_event_;
  std::string line_;   // the start of a line whose end has not arrived yet
  std::string data_;
  std::string type_;
  std::string id_;
  SseEvent event_;
  uint64_t retry_ms_ = 0;
  bool has_retry_ = false;
  bool dispatched_ = false;   // event_ is valid; data_ and type_ are cleared at the next feed
  bool after_cr_ = false;     // the last byte consumed was a CR ending a line: an LF next belongs to it
  uint8_t bom_ = 0;           // BOM bytes matched at the stream's start; kBomDone once past it
  SseStatus status_ = SseStatus::kOk;
  static constexpr uint8_t kBomDone = 0xFF;
};

}  // namespace starling
