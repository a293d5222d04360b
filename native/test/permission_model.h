// The reference model of entitlement patterns (PROTOCOL.md "Entitlement", pubsub/permissions.h), written the
// slow, obvious way — segment by segment, entry by entry — for the unit test and the fuzz target to compare
// Permissions::allows against.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "pubsub/permissions.h"

namespace model {

inline std::vector<std::string_view> segments(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 1;  // after the leading '/'
  while (start <= s.size()) {
    size_t end = s.find('/', start);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// "*", or "{name}" with a name of one or more characters and no brace in it.
inline bool wildcard(std::string_view seg) {
  if (seg == "*") return true;
  if (seg.size() < 3 || seg.front() != '{' || seg.back() != '}') return false;
  for (size_t i = 1; i + 1 < seg.size(); i++)
    if (seg[i] == '{' || seg[i] == '}') return false;
  return true;
}

// Whether one (valid) pattern grants one (valid) subject: equal segments up to a wildcard, which grants its
// segment (the subject must have one there) and everything below; without a wildcard, equal segment lists.
inline bool grants(std::string_view pattern, std::string_view subject) {
  const std::vector<std::string_view> p = segments(pattern), s = segments(subject);
  for (size_t i = 0; i < p.size(); i++) {
    if (wildcard(p[i])) return i < s.size();
    if (i >= s.size() || p[i] != s[i]) return false;
  }
  return p.size() == s.size();
}

inline bool allows(const std::vector<starling::PermissionEntry>& entries, starling::Access access,
                   std::string_view subject) {
  for (const starling::PermissionEntry& e : entries)
    if ((e.access & access) && grants(e.pattern, subject)) return true;
  return false;
}

}  // namespace model
