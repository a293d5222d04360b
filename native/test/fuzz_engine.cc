// libFuzzer target for cluster/engine_format.cc: what the cluster link reads back from Redis (replies parsed by
// cluster/resp.cc, then the fill answer and the pub/sub messages), on arbitrary bytes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cluster/engine_format.h"
#include "cluster/resp.h"

using namespace starling;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  engine::Message m;
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  if (engine::parse_message(all, &m) && (m.seq == 0 || m.data.data() < all.data() || m.data.data() + m.data.size() > all.data() + all.size()))
    abort();
  resp::Limits limits;
  limits.max_bulk = 1 << 16;
  resp::Parser p(limits);
  p.append(data, size);
  for (int replies = 0; replies < 64 && p.next() == resp::Parser::Status::kReply; replies++) {
    const resp::Value& v = p.root();
    for (bool descending : {false, true}) {
      engine::Fill f;
      const char* why = nullptr;
      if (engine::parse_fill(p, v, descending, &f, &why)) {
        if (why) abort();
        for (size_t i = 0; i < f.entries.size(); i++)
          if ((i && f.entries[i].seq != f.entries[i - 1].seq + 1) || (i + 1 == f.entries.size() && f.entries[i].seq != f.last))
            abort();
        if (f.has_snapshot && (f.snapshot.seq == 0 || f.snapshot.seq > f.last)) abort();
      } else if (!why) {
        abort();
      }
    }
    if (v.type == resp::Type::kArray && v.integer == 3) engine::parse_message(p.child(v, 2).str, &m);
  }
  return 0;
}
