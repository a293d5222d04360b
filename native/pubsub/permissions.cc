// Compiled entitlement permissions. See permissions.h.
#include "pubsub/permissions.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "io/memory.h"
#include "pubsub/protocol.h"

namespace starling {

namespace {

// FNV-1a, 32 bits: computed left to right, so the hash of every prefix of a subject comes on the way.
constexpr uint32_t kFnvOffset = 2166136261u;
constexpr uint32_t kFnvPrime = 16777619u;
inline uint32_t fnv_step(uint32_t h, char c) { return (h ^ static_cast<uint8_t>(c)) * kFnvPrime; }
inline uint32_t slot_hash(uint32_t h) { return h ? h : 1; }  // 0 marks an empty slot

uint32_t hash_of(std::string_view s) {
  uint32_t h = kFnvOffset;
  for (char c : s) h = fnv_step(h, c);
  return slot_hash(h);
}

// "*", or "{name}": a name of one or more characters, none of them a brace ("{a{b}" is a plain segment).
bool is_wildcard(std::string_view segment) {
  if (segment == "*") return true;
  if (segment.size() < 3 || segment.front() != '{' || segment.back() != '}') return false;
  return segment.substr(1, segment.size() - 2).find_first_of("{}") == std::string_view::npos;
}

struct Key {
  std::string_view bytes;
  uint8_t exact;
  uint8_t below;
};

// The key a valid pattern compiles to: an exact subject, or a prefix ending in '/'.
Key key_of(std::string_view pattern, uint8_t access) {
  size_t start = 1;
  while (start <= pattern.size()) {
    size_t end = pattern.find('/', start);
    if (end == std::string_view::npos) end = pattern.size();
    if (is_wildcard(pattern.substr(start, end - start))) return Key{pattern.substr(0, start), 0, access};
    start = end + 1;
  }
  return Key{pattern, access, 0};
}

}  // namespace

std::string Permissions::pattern_problem(std::string_view pattern) {
  if (pattern.empty() || pattern.front() != '/') return "a pattern is a subject: it begins with '/'";
  size_t start = 1;
  while (start <= pattern.size()) {
    size_t end = pattern.find('/', start);
    if (end == std::string_view::npos) end = pattern.size();
    const std::string_view segment = pattern.substr(start, end - start);
    if (is_wildcard(segment)) {
      if (end != pattern.size()) return "a wildcard ('*' or '{name}') is the last segment: it grants everything below it";
      // The prefix before the wildcard must itself be "/" or a subject followed by '/'.
      if (start > 1 && !valid_subject(pattern.substr(0, start - 1)))
        return "the part before the wildcard is not a subject (empty segment, space, control or non-ASCII byte, or longer than 255 bytes)";
      return {};
    }
    if (segment.empty()) return "empty segment";
    if (segment.find('*') != std::string_view::npos) return "'*' is a wildcard only as a whole segment";
    start = end + 1;
  }
  if (!valid_subject(pattern)) return "not a subject (space, control or non-ASCII byte, or longer than 255 bytes)";
  return {};
}

Permissions* Permissions::build(const std::vector<PermissionEntry>& entries, std::string* problem) {
  problem->clear();
  std::vector<Key> keys;
  try {
    keys.reserve(entries.size());
    for (const PermissionEntry& e : entries) {
      std::string why = pattern_problem(e.pattern);
      if (!why.empty()) {
        *problem = "\"" + std::string(e.pattern.substr(0, 300)) + "\": " + why;
        return nullptr;
      }
      if (e.access & kAccessAll) keys.push_back(key_of(e.pattern, e.access & kAccessAll));
    }
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  // Merge duplicates: one key, the union of what its entries grant.
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) { return a.bytes < b.bytes; });
  size_t n = 0, arena = 0;
  for (size_t i = 0; i < keys.size(); i++) {
    if (n && keys[n - 1].bytes == keys[i].bytes) {
      keys[n - 1].exact |= keys[i].exact;
      keys[n - 1].below |= keys[i].below;
      continue;
    }
    keys[n++] = keys[i];
    arena += keys[i].bytes.size();
  }
  // At most half full: a miss ends within a probe or two.
  uint32_t slots = 2;
  while (slots < 2 * n) slots <<= 1;
  const size_t bytes = sizeof(Permissions) + slots * sizeof(Slot) + arena;
  void* mem = mem::alloc(bytes);
  if (!mem) return nullptr;
  Permissions* p = new (mem) Permissions();
  p->mask_ = slots - 1;
  p->count_ = static_cast<uint32_t>(n);
  p->bytes_ = bytes;
  Slot* table = p->slots();
  std::memset(static_cast<void*>(table), 0, slots * sizeof(Slot));
  char* out = const_cast<char*>(p->arena());
  uint32_t offset = 0;
  for (size_t i = 0; i < n; i++) {
    const Key& k = keys[i];
    const uint32_t h = hash_of(k.bytes);
    uint32_t at = h & p->mask_;
    while (table[at].hash) at = (at + 1) & p->mask_;
    std::memcpy(out + offset, k.bytes.data(), k.bytes.size());
    table[at] = Slot{h, offset, static_cast<uint16_t>(k.bytes.size()), k.exact, k.below};
    offset += static_cast<uint32_t>(k.bytes.size());
  }
  return p;
}

const Permissions::Slot* Permissions::find(uint32_t hash, std::string_view key) const {
  const Slot* table = slots();
  for (uint32_t at = hash & mask_;; at = (at + 1) & mask_) {
    const Slot& s = table[at];
    if (!s.hash) return nullptr;
    if (s.hash == hash && s.len == key.size() && std::memcmp(arena() + s.offset, key.data(), key.size()) == 0)
      return &s;
  }
}

bool Permissions::allows(Access access, std::string_view subject) const {
  if (!count_) return false;
  uint32_t h = kFnvOffset;
  for (size_t i = 0; i < subject.size(); i++) {
    h = fnv_step(h, subject[i]);
    if (subject[i] != '/') continue;
    const Slot* s = find(slot_hash(h), subject.substr(0, i + 1));
    if (s && (s->below & access)) return true;
  }
  const Slot* s = find(slot_hash(h), subject);
  return s && (s->exact & access);
}

void Permissions::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  const size_t bytes = bytes_;
  this->~Permissions();
  mem::free(this, bytes);
}

}  // namespace starling
