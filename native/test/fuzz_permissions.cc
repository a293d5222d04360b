// libFuzzer target for permissions.cc: arbitrary pattern lists and subjects. Each input line is an entry or a
// query: "s<pattern>" (subscribe), "p<pattern>" (publish), "a<pattern>" (both), "?<subject>". A set that builds
// must answer every valid subject exactly as the reference model does (permission_model.h); one that does not
// must name a pattern that pattern_problem refuses.
// Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "permission_model.h"
#include "pubsub/permissions.h"
#include "pubsub/protocol.h"

using namespace starling;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<PermissionEntry> entries;
  std::vector<std::string_view> queries;
  size_t start = 0;
  while (start < in.size()) {
    size_t end = in.find('\n', start);
    if (end == std::string_view::npos) end = in.size();
    const std::string_view line = in.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    const std::string_view rest = line.substr(1);
    switch (line[0]) {
      case 's': entries.push_back({kAccessSubscribe, rest}); break;
      case 'p': entries.push_back({kAccessPublish, rest}); break;
      case 'a': entries.push_back({kAccessAll, rest}); break;
      case '?': queries.push_back(rest); break;
      default: break;
    }
  }
  std::string problem;
  Permissions* set = Permissions::build(entries, &problem);
  if (!set) {
    bool refused = false;
    for (const PermissionEntry& e : entries) refused = refused || !Permissions::pattern_problem(e.pattern).empty();
    if (!refused || problem.empty()) abort();
    return 0;
  }
  for (std::string_view q : queries) {
    if (!valid_subject(q)) continue;
    for (Access a : {kAccessSubscribe, kAccessPublish})
      if (set->allows(a, q) != model::allows(entries, a, q)) abort();
  }
  set->unref();
  return 0;
}
