// libFuzzer target for sse.cc: rendering arbitrary bytes as server frames, and parsing arbitrary bytes as an
// event stream in pieces. Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "transport/sse.h"

using namespace starling;

namespace {

// Small limits, so that inputs reach the over-the-limit paths.
constexpr size_t kMaxLine = 64;
constexpr size_t kMaxEvent = 256;

void require(bool ok) {
  if (!ok) abort();
}

struct Outcome {
  std::string events;   // every event as type, id, data with their lengths
  SseStatus status;
  std::string last_id;
  bool has_retry;
  uint64_t retry_ms;
};

void append(std::string* out, std::string_view s) {
  out->append(std::to_string(s.size()));
  out->push_back(':');
  out->append(s.data(), s.size());
}

// Parses p[0..len) fed in pieces of `piece` bytes (0: all at once).
Outcome parse(const uint8_t* p, size_t len, size_t piece) {
  SseParser parser(kMaxLine, kMaxEvent);
  Outcome o;
  const auto collect = [&](const SseEvent& e) {
    require(!e.type.empty() && e.data.size() <= kMaxEvent && e.type.size() <= kMaxLine && e.id.size() <= kMaxLine);
    append(&o.events, e.type);
    append(&o.events, e.id);
    append(&o.events, e.data);
  };
  if (piece == 0) piece = len + 1;
  for (size_t at = 0; at < len; at += piece) {
    const size_t n = piece < len - at ? piece : len - at;
    if (!parser.feed_all(p + at, n, collect)) break;
  }
  o.status = parser.status();
  o.last_id = std::string(parser.last_event_id());
  o.has_retry = parser.has_retry();
  o.retry_ms = parser.retry_ms();
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // (a) Rendering: measuring and writing agree, the output fits exactly the measured size (ASan: out is a
  // heap block of that size; data is libFuzzer's exact-size copy), and what is rendered parses as whole events.
  const size_t n = sse_render(data, size, nullptr);
  std::vector<uint8_t> out(n);
  require(sse_render(data, size, out.data()) == n);
  require(n == 0 || (n >= 2 && out[n - 1] == '\n' && out[n - 2] == '\n'));
  SseParser check(SIZE_MAX, SIZE_MAX);
  size_t events = 0;
  require(check.feed_all(out.data(), out.size(), [&](const SseEvent&) { events++; }));
  require((events == 0) == (n == 0));

  // (b) Parsing: the first byte sets the piece size; the outcome equals feeding everything at once.
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 16;
  const Outcome whole = parse(data + 1, size - 1, 0);
  const Outcome pieces = parse(data + 1, size - 1, piece);
  require(whole.events == pieces.events);
  require(whole.status == pieces.status);
  require(whole.last_id == pieces.last_id);
  require(whole.has_retry == pieces.has_retry && whole.retry_ms == pieces.retry_ms);
  return 0;
}
