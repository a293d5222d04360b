// libFuzzer target for http_upgrade.cc: request heads of arbitrary bytes, then the response writers.
// Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "bare_lf.h"
#include "transport/http_upgrade.h"

using namespace starling;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const UpgradeRequest r = parse_upgrade(reinterpret_cast<const char*>(data), size, "/");
  char out[512];
  switch (r.status) {
    case Upgrade::NeedMore:
      if (size >= kMaxRequestHead || has_bare_lf(data, size)) abort();
      break;
    case Upgrade::Ok:
      if (r.head_len > size || std::strlen(r.accept) != 28) abort();
      if (std::memcmp(data + r.head_len - 4, "\r\n\r\n", 4) != 0) abort();
      if (has_bare_lf(data, r.head_len)) abort();
      if (write_upgrade_response(r, out, sizeof out) == 0) abort();
      // The token is a view into the request line; decoding it never writes past its buffer and never
      // makes it longer.
      if (r.token_len) {
        if (r.token < reinterpret_cast<const char*>(data) ||
            r.token + r.token_len > reinterpret_cast<const char*>(data) + r.head_len)
          abort();
        char decoded[kMaxRequestHead];
        const long n = percent_decode(std::string_view(r.token, r.token_len), decoded, sizeof decoded);
        if (n > static_cast<long>(r.token_len)) abort();
      }
      break;
    default:
      if (r.head_len > size || r.reason == nullptr) abort();
      if (write_http_error(r.status, r.reason, out, sizeof out) == 0) abort();
      break;
  }
  return 0;
}
