// libFuzzer target for cluster/resp.cc. Input: byte 0 picks default or small limits (byte 1 shapes the small
// ones), bytes 2-3 seed the chunking, the rest is the stream. The stream is parsed twice, all at once and in
// chunks (a byte at a time, or random sizes), until kNeedMore or kError; every value of every reply is
// walked (each string byte copied) and checked against the limits and the reply's bytes; both runs must
// give the same replies and the same end. Then commands built from the stream's bytes are encoded with
// command() and must parse back to the same arguments. Build and run with `make fuzz` (needs clang++).
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "cluster/resp.h"
#include "rng.h"

using namespace starling::resp;
using Status = Parser::Status;

namespace {

// Bytes of the input before the stream.
constexpr size_t kControl = 4;

struct Transcript {
  std::vector<std::string> replies;  // each reply's values, serialized
  std::string consumed;              // the replies' raw bytes, concatenated
  Status last = Status::kNeedMore;
  std::string error;
  bool operator==(const Transcript& o) const {
    return replies == o.replies && consumed == o.consumed && last == o.last && error == o.error;
  }
};

bool within(std::string_view v, std::string_view raw) {
  return v.data() >= raw.data() && v.data() + v.size() <= raw.data() + raw.size();
}

// Serializes v into *out (copying every string byte) and checks the invariants; counts values in *values.
void walk(const Parser& p, const Value& v, std::string_view raw, const Limits& l, uint32_t depth, uint64_t* values,
          std::string* out) {
  ++*values;
  out->push_back(static_cast<char>('A' + static_cast<int>(v.type)));
  out->append(reinterpret_cast<const char*>(&v.integer), sizeof v.integer);
  const uint64_t len = v.str.size();
  out->append(reinterpret_cast<const char*>(&len), sizeof len);
  out->append(v.str.data(), v.str.size());
  if (!v.str.empty() && !within(v.str, raw)) abort();
  switch (v.type) {
    case Type::kSimple: case Type::kDouble: case Type::kBigNumber:
      if (v.str.size() > l.max_line) abort();
      break;
    case Type::kError:
      if (v.str.size() > l.max_line && v.str.size() > l.max_bulk) abort();
      break;
    case Type::kBulk:
      if (v.str.size() > l.max_bulk) abort();
      break;
    case Type::kVerbatim:
      if (v.str.size() + 4 > l.max_bulk || v.str.data() < raw.data() + 4 || v.str.data()[-1] != ':') abort();
      break;
    case Type::kBoolean:
      if (v.integer != 0 && v.integer != 1) abort();
      break;
    default:
      break;
  }
  if (!is_aggregate(v.type)) {
    if (v.first != 0 || (v.type != Type::kInteger && v.type != Type::kBoolean && v.integer != 0)) abort();
    if (p.child(v, 0).type != Type::kNull) abort();
    return;
  }
  if (!v.str.empty() || v.integer < 0 || v.integer > l.max_elements || depth >= l.max_depth) abort();
  if (v.type == Type::kMap && v.integer % 2 != 0) abort();
  const auto n = static_cast<uint32_t>(v.integer);
  if (n > 0 && v.first == 0) abort();  // the root is element 0; nothing else can be there
  const Value* first = n > 0 ? &p.child(v, 0) : nullptr;
  for (uint32_t i = 0; i < n; i++) {
    const Value& c = p.child(v, i);
    if (&c != first + i) abort();  // contiguous
    walk(p, c, raw, l, depth + 1, values, out);
  }
  const Value& past = p.child(v, n);
  if (past.type != Type::kNull || past.integer != 0) abort();
}

// Takes every reply the parser has, then checks how it stopped.
void drain(Parser& p, const Limits& l, size_t fed, Transcript* t) {
  for (;;) {
    const Status s = p.next();
    if (s == Status::kReply) {
      const std::string_view raw = p.raw();
      if (raw.empty() || raw.size() > l.max_buffer) abort();
      std::string out;
      uint64_t values = 0;
      walk(p, p.root(), raw, l, 0, &values, &out);
      if (values > l.max_values) abort();
      t->replies.push_back(std::move(out));
      t->consumed.append(raw);
      if (p.buffered() != fed - t->consumed.size() + raw.size()) abort();
      continue;
    }
    t->last = s;
    if (s == Status::kNeedMore) {
      if (!p.error().empty() || p.buffered() != fed - t->consumed.size() || p.buffered() >= l.max_buffer) abort();
      if (p.root().type != Type::kNull || !p.raw().empty()) abort();
    } else {
      if (p.error().empty() || p.buffered() != 0 || p.next() != Status::kError) abort();
      t->error = std::string(p.error());
    }
    return;
  }
}

Transcript run_whole(const uint8_t* s, size_t n, const Limits& l) {
  Parser p(l);
  p.append(s, n);
  Transcript t;
  drain(p, l, n, &t);
  return t;
}

Transcript run_chunked(const uint8_t* s, size_t n, const Limits& l, uint16_t seed) {
  Parser p(l);
  Transcript t;
  Rng rng(seed + 1);
  const bool bytewise = (seed & 1) != 0;
  const size_t max_shift = 1 + seed % 12;
  size_t at = 0;
  while (at < n) {
    size_t k = bytewise ? 1 : 1 + rng.below(size_t(1) << rng.below(max_shift));
    if (k > n - at) k = n - at;
    // Sometimes ask for more room than is written, as a socket read would.
    const size_t room = rng.below(4) == 0 ? k + rng.below(4096) : k;
    std::memcpy(p.space(room), s + at, k);
    p.commit(k);
    at += k;
    drain(p, l, at, &t);
    if (t.last == Status::kError) break;
  }
  if (n == 0) drain(p, l, 0, &t);
  return t;
}

// Commands built from the stream's bytes must encode and parse back to themselves.
void round_trip(const uint8_t* s, size_t n) {
  std::vector<std::vector<std::string>> commands;
  std::string wire;
  size_t at = 0;
  while (at < n && commands.size() < 8) {
    const size_t argc = s[at++] % 9;
    std::vector<std::string> args;
    for (size_t i = 0; i < argc; i++) {
      size_t len = 0;
      if (at < n) {
        const uint8_t b = s[at++];
        len = (b & 0x80) ? (b & 0x7F) * 7u : b & 0x1F;
      }
      len = std::min(len, n - at);
      args.emplace_back(reinterpret_cast<const char*>(s + at), len);
      at += len;
    }
    std::vector<std::string_view> views(args.begin(), args.end());
    const size_t before = wire.size();
    command(wire, views.data(), views.size());
    // The exact size: "*N\r\n" and per argument "$len\r\n<arg>\r\n".
    size_t expect = 3 + std::to_string(argc).size();
    for (const std::string& a : args) expect += 5 + std::to_string(a.size()).size() + a.size();
    if (wire.size() - before != expect) abort();
    commands.push_back(std::move(args));
  }
  Parser p;
  // A byte at a time for the first command, the rest at once.
  const size_t first = std::min<size_t>(wire.size(), 64);
  for (size_t i = 0; i < first; i++) p.append(wire.data() + i, 1);
  p.append(wire.data() + first, wire.size() - first);
  size_t consumed = 0;
  for (const std::vector<std::string>& args : commands) {
    if (p.next() != Status::kReply) abort();
    const Value& r = p.root();
    if (r.type != Type::kArray || r.integer != static_cast<int64_t>(args.size())) abort();
    for (uint32_t i = 0; i < args.size(); i++) {
      const Value& c = p.child(r, i);
      if (c.type != Type::kBulk || c.str != args[i]) abort();
    }
    if (p.raw() != std::string_view(wire).substr(consumed, p.raw().size())) abort();
    consumed += p.raw().size();
  }
  if (consumed != wire.size() || p.next() != Status::kNeedMore || p.buffered() != 0) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kControl) return 0;
  const uint8_t mode = data[0];
  const uint8_t shape = data[1];
  const auto seed = static_cast<uint16_t>(data[2] | data[3] << 8);
  const uint8_t* stream = data + kControl;
  const size_t n = size - kControl;

  Limits l;
  if (mode & 1) {  // small limits, so that every limit is reached by short inputs
    l.max_bulk = (shape & 3) * 8u;
    l.max_elements = (shape >> 2) & 7;
    l.max_depth = (shape >> 5) & 7;
    l.max_line = ((mode >> 1) & 3) * 6u;
    l.max_buffer = uint64_t(8) << ((mode >> 3) & 7);
    l.max_values = 1 + ((mode >> 6) & 3) * 5u;
  }
  const Transcript whole = run_whole(stream, n, l);
  const Transcript chunked = run_chunked(stream, n, l, seed);
  if (!(whole == chunked)) abort();
  if (std::memcmp(whole.consumed.data(), stream, whole.consumed.size()) != 0) abort();

  round_trip(stream, n);
  return 0;
}
