// libFuzzer target for protocol.cc: arbitrary messages through parse_command, checking that every
// accepted command holds only valid subjects and views into the message, and every refusal a bounded,
// printable detail; and the same bytes as a server line's position part (parse_position_line).
// Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "pubsub/protocol.h"
#include "pubsub/subject.h"

using namespace starling;

namespace {

bool inside(std::string_view v, const uint8_t* data, size_t size) {
  const char* lo = reinterpret_cast<const char*>(data);
  return v.empty() || (v.data() >= lo && v.data() + v.size() <= lo + size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Command c;
  parse_command(data, size, &c);
  if (!inside(c.subjects, data, size) || !inside(c.subject, data, size) || !inside(c.id, data, size) ||
      !inside(c.body, data, size))
    abort();
  switch (c.kind) {
    case Cmd::Sub:
    case Cmd::Unsub: {
      if (c.subjects.empty()) abort();
      if (c.conflate_ms && (c.kind != Cmd::Sub || c.conflate_ms % kConflateStepMs || c.conflate_ms > kMaxConflateMs))
        abort();
      std::string_view rest = c.subjects;
      while (!rest.empty()) {
        const std::string_view token = next_token(&rest);
        // SUB tokens are specs whose subject part is valid; UNSUB tokens are subjects.
        const std::string_view subject = c.kind == Cmd::Sub ? parse_spec(token).subject : token;
        if (!valid_subject(subject) || !inside(subject, data, size)) abort();
      }
      break;
    }
    case Cmd::Pub: {
      if (!valid_subject(c.subject) || c.id.size() > kMaxIdLen) abort();
      // Echo it back as a MSG header, as the server would.
      char buf[kMaxMsgHeader + kMaxKindLen];
      const size_t n = write_msg_header_backwards(buf + sizeof buf, c.subject, "fuzz", size, "recovered");
      if (n > kMaxMsgHeader + kMaxKindLen || std::memcmp(buf + sizeof buf - n, "MSG ", 4) != 0) abort();
      break;
    }
    case Cmd::Ping:
      if (c.id.size() > kMaxIdLen) abort();
      break;
    case Cmd::Auth:
      // One token of printable bytes, no space, no body.
      if (c.id.empty() || c.id.find(' ') != std::string_view::npos || !c.body.empty()) abort();
      for (char ch : c.id)
        if (ch < 0x21 || ch > 0x7e) abort();
      break;
    case Cmd::Invalid: {
      // A detail is always given, within its bound, and printable ASCII (it is echoed in a text frame).
      const std::string_view d = c.detail();
      if (c.error == ErrCode::kNone || d.empty() || d.size() > kMaxDetailLen) abort();
      for (char ch : d) {
        if (ch < 0x20 || ch > 0x7E) abort();
      }
      break;
    }
  }
  // The same bytes as a server line's position part, as a client reads it: an accepted one has a subject and
  // views inside the input, and writes back as the same "<subject> <epoch>:<seq>" (the canonical forms: an
  // epoch without leading zeros, a seq without them).
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  PositionLine pl;
  if (parse_position_line(line, &pl)) {
    if (pl.subject.empty() || !inside(pl.subject, data, size) || !inside(pl.rest, data, size)) abort();
    if (pl.subject.size() <= 255) {
      char epoch[16];
      const size_t elen = format_epoch(pl.epoch, epoch);
      char out[kMaxMsgHeader + kMaxKindLen];
      const size_t n = write_position_line(out, "SYNC", pl.subject, std::string_view(epoch, elen), pl.seq);
      PositionLine back;
      if (!parse_position_line(std::string_view(out + 5, n - 5), &back) || back.subject != pl.subject ||
          back.epoch != pl.epoch || back.seq != pl.seq || !back.rest.empty())
        abort();
    }
  }
  return 0;
}
