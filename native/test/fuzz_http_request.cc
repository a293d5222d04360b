// libFuzzer target for http_request.cc: request heads of arbitrary bytes, and the same bytes as a chunked
// body fed to the decoder in two pieces (split where the first byte says), once in place and once into a
// separate buffer, which must agree byte for byte. Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bare_lf.h"
#include "transport/http_request.h"

using namespace starling;

namespace {

// True if v is empty or lies within [begin, end).
bool within(std::string_view v, const char* begin, const char* end) {
  return v.empty() || (v.data() >= begin && v.data() + v.size() <= end);
}

void check_head(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  const HttpRequest r = parse_request(p, size);
  if (r.head_len > size || r.head_len > kMaxRequestHead) abort();
  switch (r.status) {
    case RequestStatus::NeedMore:
      if (size >= kMaxRequestHead || has_bare_lf(data, size) || r.reason != nullptr) abort();
      break;
    case RequestStatus::Ok: {
      if (r.head_len < 4 || std::memcmp(data + r.head_len - 4, "\r\n\r\n", 4) != 0) abort();
      if (has_bare_lf(data, r.head_len)) abort();
      const char* end = p + r.head_len;
      for (std::string_view v : {r.method_text, r.target, r.path, r.query, r.ws_key, r.host, r.origin, r.last_event_id,
                                 r.authorization, r.content_type, r.accept, r.access_control_request_method,
                                 r.access_control_request_headers}) {
        if (!within(v, p, end)) abort();
      }
      if (r.target.empty() || r.version_major != 1 || r.version_minor > 1) abort();
      if (r.body != BodyFraming::ContentLength && r.content_length != 0) abort();
      if (r.content_length >= (uint64_t(1) << 63)) abort();
      if (r.ws_version_13 && !r.ws_version_seen) abort();
      // Every query parameter is a piece of the query; the iteration ends.
      std::string_view q = r.query, name, value;
      size_t params = 0;
      while (next_query_param(&q, &name, &value)) {
        if (!within(name, r.query.data(), r.query.data() + r.query.size()) ||
            !within(value, r.query.data(), r.query.data() + r.query.size()))
          abort();
        if (++params > r.query.size()) abort();
        char decoded[kMaxRequestHead];
        if (percent_decode(value, decoded, sizeof decoded) > static_cast<long>(value.size())) abort();
      }
      // A response naming the parsed fields fits (they hold no CR or LF).
      char out[2 * kMaxRequestHead];
      const HeaderField echo[] = {{"X-Path", r.path}, {"Access-Control-Allow-Origin", r.origin}};
      if (write_response_head(out, sizeof out, 200, echo, 2, r.content_length) == 0) abort();
      break;
    }
    case RequestStatus::Error:
      if (r.reason == nullptr || r.reason[0] == '\0' || status_phrase(r.error_status) == nullptr) abort();
      if (r.error_status != 400 && r.error_status != 431 && r.error_status != 501 && r.error_status != 505) abort();
      break;
  }
}

struct BodyRun {
  ChunkedStep last{};
  std::vector<char> data;
  size_t consumed = 0;
  uint64_t decoded = 0;
};

// Feeds body[0..size) to a decoder in two pieces, the first of `split` bytes: in place (out = the start of
// the same buffer) or into a separate one.
BodyRun run_body(const uint8_t* body, size_t size, size_t split, bool in_place) {
  std::vector<char> buf(body, body + size);
  std::vector<char> sep(size);
  ChunkedDecoder d;
  BodyRun run;
  size_t written = 0;
  for (int piece = 0; piece < 2; piece++) {
    const size_t from = piece == 0 ? 0 : run.consumed;
    const size_t n = piece == 0 ? split : size - from;
    char* out = in_place ? buf.data() + written : sep.data() + written;
    run.last = d.feed(buf.data() + from, n, out);
    if (run.last.consumed > n || run.last.written > run.last.consumed) abort();
    if (run.last.status == ChunkedStatus::NeedMore && run.last.consumed != n) abort();
    if ((run.last.status == ChunkedStatus::Error) != (run.last.reason != nullptr)) abort();
    written += run.last.written;
    run.consumed += run.last.consumed;
    if (written > run.consumed) abort();  // in place, data never passes the read position
    if (run.last.status != ChunkedStatus::NeedMore) break;
  }
  if (d.consumed() != run.consumed || d.decoded() != written || d.decoded() > d.consumed()) abort();
  if (d.status() != run.last.status) abort();
  run.data.assign(in_place ? buf.data() : sep.data(), (in_place ? buf.data() : sep.data()) + written);
  run.decoded = d.decoded();
  return run;
}

void check_body(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const uint8_t* body = data + 1;
  const size_t len = size - 1;
  const size_t split = len == 0 ? 0 : data[0] % (len + 1);
  const BodyRun a = run_body(body, len, split, true);
  const BodyRun b = run_body(body, len, split, false);
  const BodyRun whole = run_body(body, len, len, false);
  for (const BodyRun* r : {&b, &whole}) {
    if (r->last.status != a.last.status || r->consumed != a.consumed || r->data != a.data) abort();
    if (a.last.status == ChunkedStatus::Error && std::strcmp(r->last.reason, a.last.reason) != 0) abort();
  }
  // Discarding counts the same bytes and finds the same end.
  ChunkedDecoder d;
  d.discard();
  const ChunkedStep s = d.feed(reinterpret_cast<const char*>(body), len, nullptr);
  if (s.status != a.last.status || s.written != 0 || d.decoded() != a.decoded || d.consumed() != a.consumed) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_head(data, size);
  check_body(data, size);
  return 0;
}
