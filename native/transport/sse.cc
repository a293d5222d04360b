// Server-sent events: rendering server WebSocket frames, sharing the rendition, parsing event streams. See sse.h.
#include "transport/sse.h"

#include <cstdint>
#include <cstring>

#include "pubsub/protocol.h"
#include "transport/http_upgrade.h"

namespace starling {

namespace {

// Frame offsets and costs are uint32_t: a rendition must leave room within them for the frame's own fields
// and malloc's overhead.
constexpr size_t kMaxRendition = UINT32_MAX - sizeof(Frame) - mem::kMallocOverhead;

constexpr std::string_view kKinds[] = {"snapshot", "history", "recovered"};
constexpr std::string_view kDefaultKind = "message";

std::string_view as_view(const uint8_t* p, size_t n) { return std::string_view(reinterpret_cast<const char*>(p), n); }

// Where the rendering goes: out, or nowhere when out is nullptr (measuring). n counts either way.
struct Sink {
  uint8_t* out;
  size_t n = 0;

  void put(std::string_view s) {
    if (out && !s.empty()) std::memcpy(out + n, s.data(), s.size());
    n += s.size();
  }
  void base64(std::string_view s) {
    if (out) base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size(), reinterpret_cast<char*>(out + n));
    n += (s.size() + 2) / 3 * 4;
  }
  void field(std::string_view name, std::string_view a, std::string_view b = {}, std::string_view c = {}) {
    put(name);
    put(": ");
    put(a);
    put(b);
    put(c);
    put("\n");
  }
};

// "<subject> <pos>[ <rest>]" of a MSG/SYNC/RESYNC line, checked: false unless the subject is valid and the
// position parses. *pos is "<epoch>:<seq>" as written.
bool position(std::string_view args, PositionLine* pl, std::string_view* pos) {
  if (!parse_position_line(args, pl) || !valid_subject(pl->subject)) return false;
  *pos = args.substr(pl->subject.size() + 1);
  const size_t space = pos->find(' ');
  *pos = pos->substr(0, space);
  return space == std::string_view::npos || !pl->rest.empty();   // no trailing space
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

void render_msg(Sink& out, std::string_view line, std::string_view body, bool binary) {
  PositionLine pl;
  std::string_view pos;
  if (!position(line.substr(4), &pl, &pos)) return;
  const std::string_view kind = pl.rest;
  if (!kind.empty()) {
    bool known = false;
    for (std::string_view k : kKinds) known |= kind == k;
    if (!known) return;
  }
  const bool has_cr = !binary && body.find('\r') != std::string_view::npos;
  if (binary || has_cr) {
    out.field("event", kind.empty() ? kDefaultKind : kind, binary ? "-base64" : "-utf8-base64");
  } else if (!kind.empty()) {
    out.field("event", kind);
  }
  out.field("id", pl.subject, "@", pos);
  if (binary || has_cr) {
    out.put("data: ");
    out.base64(body);
    out.put("\n");
  } else {
    for (;;) {
      const size_t nl = body.find('\n');
      out.field("data", body.substr(0, nl));
      if (nl == std::string_view::npos) break;
      body.remove_prefix(nl + 1);
    }
  }
  out.put("\n");
}

void render_position(Sink& out, std::string_view type, std::string_view args) {
  PositionLine pl;
  std::string_view pos;
  if (!position(args, &pl, &pos) || !pl.rest.empty()) return;
  out.field("event", type);
  out.field("id", pl.subject, "@", pos);
  out.field("data", args);
  out.put("\n");
}

void render_text(Sink& out, std::string_view type, std::string_view rest) {
  if (rest.find('\r') != std::string_view::npos) return;
  out.field("event", type);
  out.field("data", rest);
  out.put("\n");
}

// One text or binary frame's payload.
void render_payload(Sink& out, std::string_view payload, bool binary) {
  const size_t nl = payload.find('\n');
  const std::string_view line = payload.substr(0, nl);
  if (starts_with(line, "MSG ")) {
    if (nl != std::string_view::npos) render_msg(out, line, payload.substr(nl + 1), binary);
  } else if (starts_with(line, "SYNC ")) {
    render_position(out, "sync", line.substr(5));
  } else if (starts_with(line, "RESYNC ")) {
    render_position(out, "resync", line.substr(7));
  } else if (starts_with(line, "ERR ")) {
    render_text(out, "err", line.substr(4));
  } else if (starts_with(line, "AUTH ")) {
    render_text(out, "auth", line.substr(5));
  }
}

}  // namespace

size_t sse_render(const uint8_t* ws, size_t len, uint8_t* out) {
  Sink sink{out};
  FrameHead h;
  while (len && parse_server_frame_head(ws, len, &h) == FrameParse::Ok && h.payload_len <= len - h.head_len) {
    const size_t n = static_cast<size_t>(h.payload_len);
    if (h.opcode == kOpText || h.opcode == kOpBinary)
      render_payload(sink, as_view(ws + h.head_len, n), h.opcode == kOpBinary);
    ws += h.head_len + n;
    len -= h.head_len + n;
  }
  return sink.n;
}

Frame* sse_frame(Frame* f, bool* empty) {
  *empty = false;
  if (Frame* alt = f->alt.load(std::memory_order_acquire)) {
    alt->ref();
    return alt;
  }
  const size_t n = sse_render(f->data(), f->size(), nullptr);
  if (n == 0) {
    *empty = true;
    return nullptr;
  }
  if (n > kMaxRendition) return nullptr;
  Frame* mine = Frame::alloc(n);
  if (!mine) return nullptr;
  mine->end = static_cast<uint32_t>(sse_render(f->data(), f->size(), mine->bytes));
  mine->ref();   // one for f->alt, one for the caller
  Frame* winner = nullptr;
  if (f->alt.compare_exchange_strong(winner, mine)) {
    f->charge_alt();  // (a cached message's rendition lives as long as it: counted in CacheSize)
    return mine;
  }
  // Another caller installed its rendition first: nobody else has seen ours.
  mine->refs.store(1, std::memory_order_relaxed);
  mine->unref();
  winner->ref();
  return winner;
}

// ---- SseParser ----

namespace {

constexpr uint8_t kBom[] = {0xEF, 0xBB, 0xBF};

// The first CR or LF in p[0..n), n when there is none.
size_t line_end(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] == '\n' || p[i] == '\r') return i;
  return n;
}

}  // namespace

void SseParser::reset() {
  line_.clear();
  data_.clear();
  type_.clear();
  id_.clear();
  retry_ms_ = 0;
  has_retry_ = false;
  dispatched_ = false;
  after_cr_ = false;
  bom_ = 0;
  status_ = SseStatus::kOk;
}

bool SseParser::too_long(size_t line_len) {
  if (line_len <= max_line_) return false;
  status_ = SseStatus::kLineTooLong;
  return true;
}

size_t SseParser::feed(const uint8_t* p, size_t len) {
  if (dispatched_) {
    data_.clear();
    type_.clear();
    dispatched_ = false;
  }
  if (status_ != SseStatus::kOk) return 0;
  size_t i = 0;
  while (bom_ != kBomDone && i < len) {
    if (p[i] == kBom[bom_]) {
      i++;
      if (++bom_ == sizeof kBom) bom_ = kBomDone;
      continue;
    }
    // Not a BOM after all: the bytes matched so far start the first line.
    if (too_long(bom_)) return i;
    line_.assign(reinterpret_cast<const char*>(kBom), bom_);
    bom_ = kBomDone;
  }
  while (i < len) {
    if (after_cr_) {
      after_cr_ = false;
      if (p[i] == '\n') {
        i++;
        continue;
      }
    }
    const uint8_t* s = p + i;
    const size_t n = len - i;
    const size_t e = line_end(s, n);
    if (too_long(line_.size() + e)) return i;
    if (e == n) {
      line_.append(reinterpret_cast<const char*>(s), n);
      return len;
    }
    after_cr_ = s[e] == '\r';
    i += e + 1;
    bool got;
    if (line_.empty()) {
      got = take_line(as_view(s, e));
    } else {
      line_.append(reinterpret_cast<const char*>(s), e);
      got = take_line(line_);
      line_.clear();
    }
    if (got || status_ != SseStatus::kOk) return i;
  }
  return i;
}

bool SseParser::take_line(std::string_view line) {
  if (line.empty()) {
    if (data_.empty()) {
      type_.clear();
      return false;
    }
    event_.type = type_.empty() ? kDefaultKind : std::string_view(type_);
    event_.id = id_;
    event_.data = std::string_view(data_.data(), data_.size() - 1);   // without its final '\n'
    dispatched_ = true;
    return true;
  }
  if (line[0] == ':') return false;
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    field(line, {});
    return false;
  }
  std::string_view value = line.substr(colon + 1);
  if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  field(line.substr(0, colon), value);
  return false;
}

void SseParser::field(std::string_view name, std::string_view value) {
  if (name == "event") {
    type_.assign(value.data(), value.size());
  } else if (name == "data") {
    // The data so far is data_ without its final '\n'; with this line it is data_ + value.
    if (data_.size() + value.size() > max_event_) {
      status_ = SseStatus::kEventTooLarge;
      return;
    }
    data_.append(value.data(), value.size());
    data_ += '\n';
  } else if (name == "id") {
    if (value.find('\0') == std::string_view::npos) id_.assign(value.data(), value.size());
  } else if (name == "retry") {
    if (value.empty()) return;
    uint64_t ms = 0;
    for (char c : value) {
      if (c < '0' || c > '9') return;
      const uint64_t d = static_cast<uint64_t>(c - '0');
      ms = ms > (UINT64_MAX - d) / 10 ? UINT64_MAX : ms * 10 + d;   // saturates: "wait very long"
    }
    retry_ms_ = ms;
    has_retry_ = true;
  }
}

}  // namespace starling
