// A connection's entitlement (PROTOCOL.md "Entitlement"): which subjects it may subscribe to and publish on.
// TypeScript decides (verifies the token, computes the permissions) and hands the result over once per
// distinct token; the native side checks every SUB and PUB against it without crossing the boundary.
//
// An entry is a subject pattern with the access it grants (subscribe, publish, or both — the JWT claim's
// "sub", "pub" and "all" lists). A pattern is a subject ("/a/b" grants exactly /a/b), or a subject whose
// last segment is a wildcard, `*` or `{name}` (at least one character between the braces): the wildcard
// grants that segment and everything below it ("/a/*" and "/a/{id}" grant /a/x and /a/x/y, not /a itself;
// "/*" grants every subject). A wildcard anywhere else is refused: "/a/*/c" would grant all of /a/x/y, which
// is not what it says (the same rule as the JWT layer, src/entitlement/jwt.ts).
//
// The compiled set is immutable and shared (reference-counted) by every connection holding the same token.
// One allocation: an open-addressing table of keys — an exact subject, or a wildcard's prefix up to and
// including its '/' — with the access each key grants, and the keys' bytes. A check hashes the subject once,
// left to right, looking up the prefix at each '/' and the whole subject at the end: O(subject length).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace starling {

enum Access : uint8_t {
  kAccessSubscribe = 1,
  kAccessPublish = 2,
  kAccessAll = kAccessSubscribe | kAccessPublish,
};

struct PermissionEntry {
  uint8_t access;           // Access bits
  std::string_view pattern;
};

class Permissions {
 public:
  // Compiles `entries` (duplicates merge). Returns nullptr with *problem set (naming the pattern and what
  // is wrong with it) if a pattern is not one, or nullptr with an empty *problem when out of memory. The
  // result holds one reference.
  static Permissions* build(const std::vector<PermissionEntry>& entries, std::string* problem);
  // Why `pattern` is not a permission pattern (empty: it is one).
  static std::string pattern_problem(std::string_view pattern);

  // Whether `subject` (a valid subject: protocol.h valid_subject) is granted `access` (one bit).
  bool allows(Access access, std::string_view subject) const;

  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref();                        // frees it with the last reference
  size_t bytes() const { return bytes_; }
  uint32_t keys() const { return count_; }

 private:
  struct Slot {
    uint32_t hash;    // 0: empty (hashes are forced non-zero)
    uint32_t offset;  // of the key's bytes in the arena
    uint16_t len;
    uint8_t exact;    // Access granted to the subject equal to the key
    uint8_t below;    // Access granted to every subject the key (ending in '/') is a prefix of
  };
  Permissions() = default;
  const Slot* find(uint32_t hash, std::string_view key) const;
  const char* arena() const { return reinterpret_cast<const char*>(slots() + mask_ + 1); }
  Slot* slots() const { return reinterpret_cast<Slot*>(const_cast<Permissions*>(this) + 1); }

  std::atomic<uint32_t> refs_{1};
  uint32_t mask_ = 0;   // slots - 1 (a power of two)
  uint32_t count_ = 0;
  size_t bytes_ = 0;
};

}  // namespace starling
