#include "cluster/engine_format.h"

#include "pubsub/protocol.h"

namespace starling::engine {

namespace {

bool decimal(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t n = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    const uint64_t d = static_cast<uint64_t>(ch - '0');
    if (n > (UINT64_MAX - d) / 10) return false;
    n = n * 10 + d;
  }
  *out = n;
  return true;
}

// "<n>-0", a stream id as the publish script writes it.
bool stream_id(std::string_view id, uint64_t* out) {
  if (id.size() < 3 || id.substr(id.size() - 2) != "-0") return false;
  return decimal(id.substr(0, id.size() - 2), out) && *out > 0;
}

}  // namespace

bool parse_flags(std::string_view f, Flags* out) {
  if (f.empty() || f.size() > 2 || (f[0] != 't' && f[0] != 'b') || (f.size() == 2 && f[1] != 'r')) return false;
  out->binary = f[0] == 'b';
  out->retained = f.size() == 2;
  return true;
}

bool parse_number(const resp::Value& v, uint64_t* out) {
  if (v.type == resp::Type::kInteger) {
    if (v.integer < 0) return false;
    *out = static_cast<uint64_t>(v.integer);
    return true;
  }
  return (v.type == resp::Type::kBulk || v.type == resp::Type::kSimple) && decimal(v.str, out);
}

bool parse_message(std::string_view payload, Message* out) {
  const size_t nl = payload.find('\n');
  if (nl == std::string_view::npos) return false;
  const std::string_view head = payload.substr(0, nl);
  const size_t a = head.find(' ');
  if (a == std::string_view::npos) return false;
  const size_t b = head.find(' ', a + 1);
  if (b == std::string_view::npos) return false;
  if (!parse_epoch(head.substr(0, a), &out->epoch) || !decimal(head.substr(a + 1, b - a - 1), &out->seq) ||
      out->seq == 0 || !parse_flags(head.substr(b + 1), &out->flags))
    return false;
  out->data = payload.substr(nl + 1);
  return true;
}

bool parse_fill(const resp::Parser& p, const resp::Value& v, bool descending, Fill* out, const char** why) {
  *why = nullptr;
  if (v.type != resp::Type::kArray || v.integer != 6) return (*why = "not a list of 6"), false;
  const resp::Value& ev = p.child(v, 0);
  if (ev.type != resp::Type::kBulk || !parse_epoch(ev.str, &out->epoch)) return (*why = "epoch"), false;
  if (!parse_number(p.child(v, 1), &out->last)) return (*why = "last number"), false;
  out->has_snapshot = false;
  const resp::Value& sseq = p.child(v, 2);
  if (sseq.type != resp::Type::kNull) {
    if (!parse_number(sseq, &out->snapshot.seq) || out->snapshot.seq == 0 || out->snapshot.seq > out->last ||
        !parse_flags(p.child(v, 3).str, &out->snapshot.flags) || p.child(v, 4).type != resp::Type::kBulk)
      return (*why = "snapshot"), false;
    out->snapshot.data = p.child(v, 4).str;
    out->has_snapshot = true;
  }
  const resp::Value& list = p.child(v, 5);
  if (list.type != resp::Type::kArray) return (*why = "entries"), false;
  const uint32_t n = static_cast<uint32_t>(list.integer);
  out->entries.clear();
  out->entries.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    const resp::Value& e = p.child(list, descending ? n - 1 - i : i);
    Entry entry;
    if (e.type != resp::Type::kArray || e.integer != 2 || !stream_id(p.child(e, 0).str, &entry.seq))
      return (*why = "entry id"), false;
    const resp::Value& fields = p.child(e, 1);
    if (fields.type != resp::Type::kArray) return (*why = "entry fields"), false;
    bool flags = false, data = false;
    for (uint32_t k = 0; k + 1 < static_cast<uint32_t>(fields.integer); k += 2) {
      const std::string_view key = p.child(fields, k).str;
      const resp::Value& value = p.child(fields, k + 1);
      if (key == "f") flags = parse_flags(value.str, &entry.flags);
      else if (key == "d" && value.type == resp::Type::kBulk) entry.data = value.str, data = true;
    }
    if (!flags || !data) return (*why = "entry fields"), false;
    if (!out->entries.empty() && entry.seq != out->entries.back().seq + 1) out->entries.clear();
    out->entries.push_back(entry);
  }
  if (!out->entries.empty() && out->entries.back().seq != out->last) out->entries.clear();
  return true;
}

}  // namespace starling::engine
