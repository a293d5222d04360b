// Unit tests for cluster/engine_format.cc: the messages and fill answers the cluster link reads back from Redis.
#include <string>

#include "check.h"
#include "cluster/engine_format.h"
#include "cluster/resp.h"
#include "pubsub/protocol.h"

using namespace starling;

namespace {

// The parser fed with one reply; next() already called (kReply expected).
struct Parsed {
  resp::Parser p;
  resp::Parser::Status st;
  explicit Parsed(const std::string& bytes) {
    p.append(bytes.data(), bytes.size());
    st = p.next();
  }
};

std::string bulk(const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; }
std::string entry(uint64_t seq, const std::string& flags, const std::string& data) {
  return "*2\r\n" + bulk(std::to_string(seq) + "-0") + "*4\r\n" + bulk("f") + bulk(flags) + bulk("d") + bulk(data);
}
std::string fill(const std::string& epoch, uint64_t last, const std::string& snapshot, const std::vector<std::string>& entries) {
  std::string s = "*6\r\n" + bulk(epoch) + bulk(std::to_string(last)) + snapshot + "*" + std::to_string(entries.size()) + "\r\n";
  for (const std::string& e : entries) s += e;
  return s;
}
const std::string kNoSnapshot = "$-1\r\n$-1\r\n$-1\r\n";

}  // namespace

TEST(engine_message_parsed) {
  engine::Message m;
  CHECK(engine::parse_message("2zt4blpbs3b16 17 tr\nhello\r\nworld", &m));
  uint64_t epoch = 0;
  CHECK(parse_epoch("2zt4blpbs3b16", &epoch));
  CHECK_EQ(m.epoch, epoch);
  CHECK_EQ(m.seq, uint64_t{17});
  CHECK(!m.flags.binary);
  CHECK(m.flags.retained);
  CHECK_EQ(m.data, std::string_view("hello\r\nworld"));
  CHECK(engine::parse_message("a 1 b\n", &m));
  CHECK(m.flags.binary && !m.flags.retained && m.data.empty());
}

TEST(engine_message_refused) {
  engine::Message m;
  for (const char* bad : {"", "a 1 t", "a 1 t x\n", "A 1 t\n", "a 0 t\n", "a -1 t\n", "a 1 x\n", "a 1 tt\n", "a 1 rt\n",
                          "a  1 t\n", "a 1  t\n", "a 99999999999999999999 t\n", "a 1\n", "\n", "a 1 tr \n",
                          "zzzzzzzzzzzzzz 1 t\n"})
    CHECK(!engine::parse_message(bad, &m));
}

TEST(engine_fill_parsed_both_orders) {
  const std::string snapshot = bulk("3") + bulk("tr") + bulk("snap");
  {
    Parsed r(fill("k2", 5, snapshot, {entry(3, "tr", "c"), entry(4, "b", "d"), entry(5, "t", "e")}));
    CHECK(r.st == resp::Parser::Status::kReply);
    engine::Fill f;
    const char* why = nullptr;
    CHECK(engine::parse_fill(r.p, r.p.root(), false, &f, &why));
    CHECK_EQ(f.last, uint64_t{5});
    CHECK_EQ(f.entries.size(), size_t{3});
    CHECK_EQ(f.entries[0].seq, uint64_t{3});
    CHECK(f.entries[1].flags.binary);
    CHECK_EQ(f.entries[2].data, std::string_view("e"));
    CHECK(f.has_snapshot);
    CHECK_EQ(f.snapshot.seq, uint64_t{3});
    CHECK_EQ(f.snapshot.data, std::string_view("snap"));
  }
  {  // XREVRANGE order
    Parsed r(fill("k2", 5, kNoSnapshot, {entry(5, "t", "e"), entry(4, "t", "d")}));
    engine::Fill f;
    const char* why = nullptr;
    CHECK(engine::parse_fill(r.p, r.p.root(), true, &f, &why));
    CHECK_EQ(f.entries.size(), size_t{2});
    CHECK_EQ(f.entries[0].seq, uint64_t{4});
    CHECK(!f.has_snapshot);
  }
}

TEST(engine_fill_keeps_the_run_that_ends_last) {
  {  // a hole: only what follows it
    Parsed r(fill("k2", 9, kNoSnapshot, {entry(2, "t", "b"), entry(3, "t", "c"), entry(8, "t", "h"), entry(9, "t", "i")}));
    engine::Fill f;
    const char* why = nullptr;
    CHECK(engine::parse_fill(r.p, r.p.root(), false, &f, &why));
    CHECK_EQ(f.entries.size(), size_t{2});
    CHECK_EQ(f.entries[0].seq, uint64_t{8});
  }
  {  // a run that stops short of last: nothing (a gap the numbers show)
    Parsed r(fill("k2", 9, kNoSnapshot, {entry(2, "t", "b"), entry(3, "t", "c")}));
    engine::Fill f;
    const char* why = nullptr;
    CHECK(engine::parse_fill(r.p, r.p.root(), false, &f, &why));
    CHECK(f.entries.empty());
    CHECK_EQ(f.last, uint64_t{9});
  }
}

TEST(engine_fill_refused) {
  const char* why = nullptr;
  engine::Fill f;
  auto refused = [&](const std::string& bytes) {
    Parsed r(bytes);
    if (r.st != resp::Parser::Status::kReply) return true;
    return !engine::parse_fill(r.p, r.p.root(), false, &f, &why) && why != nullptr;
  };
  CHECK(refused("+OK\r\n"));
  CHECK(refused("*5\r\n" + bulk("k2") + bulk("1") + kNoSnapshot));
  CHECK(refused(fill("K2", 1, kNoSnapshot, {})));                                  // not an epoch
  CHECK(refused(fill("k2", 1, kNoSnapshot, {entry(1, "x", "a")})));                 // flags
  CHECK(refused(fill("k2", 2, bulk("3") + bulk("t") + bulk("s"), {})));            // snapshot after last
  CHECK(refused(fill("k2", 2, bulk("0") + bulk("t") + bulk("s"), {})));            // snapshot number 0
  CHECK(refused(fill("k2", 1, kNoSnapshot, {"*2\r\n" + bulk("1-1") + "*0\r\n"})));  // not our id
  CHECK(refused(fill("k2", 1, kNoSnapshot, {"*2\r\n" + bulk("1-0") + "*2\r\n" + bulk("f") + bulk("t")})));  // no data
  CHECK(refused(fill("k2", 1, kNoSnapshot, {":1\r\n"})));
  Parsed ok(fill("k2", 0, kNoSnapshot, {}));
  CHECK(engine::parse_fill(ok.p, ok.p.root(), false, &f, &why));
  CHECK(f.entries.empty() && f.last == 0);
}
