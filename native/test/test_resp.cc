// Unit tests for cluster/resp.cc: the command encoder's exact bytes, every RESP2/RESP3 reply type, pub/sub
// messages in both protocols, attributes, every rejection with its error text, the limits, and incremental
// feeding (byte at a time, random splits) agreeing with feeding everything at once.
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "cluster/resp.h"
#include "rng.h"

using namespace starling::resp;
using Status = Parser::Status;

namespace {

std::string quoted(std::string_view s) {
  std::string q = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      q += ch;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      q += hex;
    }
  }
  return q + "\"";
}

// A value as text: +s -s :n $"s" _ ,s #t #f =s (s, aggregates as *[..] >[..] ~[..] %{k:v,..}.
std::string dump(const Parser& p, const Value& v) {
  std::string open, close;
  switch (v.type) {
    case Type::kSimple: return "+" + std::string(v.str);
    case Type::kError: return "-" + std::string(v.str);
    case Type::kInteger: return ":" + std::to_string(v.integer);
    case Type::kBulk: return "$" + quoted(v.str);
    case Type::kNull: return "_";
    case Type::kDouble: return "," + std::string(v.str);
    case Type::kBoolean: return v.integer ? "#t" : "#f";
    case Type::kVerbatim: return "=" + quoted(v.str);
    case Type::kBigNumber: return "(" + std::string(v.str);
    case Type::kArray: open = "*["; close = "]"; break;
    case Type::kPush: open = ">["; close = "]"; break;
    case Type::kSet: open = "~["; close = "]"; break;
    case Type::kMap: open = "%{"; close = "}"; break;
  }
  std::string s = open;
  for (uint32_t i = 0; i < v.integer; i++) {
    if (i > 0) s += (v.type == Type::kMap && i % 2 == 1) ? ":" : ",";
    s += dump(p, p.child(v, i));
  }
  return s + close;
}

// What a parser made of a stream: each reply dumped, then how it ended.
struct Outcome {
  std::vector<std::string> replies;
  std::vector<std::string> raws;
  Status last = Status::kNeedMore;
  std::string error;
  bool operator==(const Outcome& o) const {
    return replies == o.replies && raws == o.raws && last == o.last && error == o.error;
  }
};

// Runs next() until it stops returning replies, recording them.
void drain(Parser& p, Outcome* out) {
  for (;;) {
    const Status s = p.next();
    if (s != Status::kReply) {
      out->last = s;
      out->error = std::string(p.error());
      return;
    }
    out->replies.push_back(dump(p, p.root()));
    out->raws.push_back(std::string(p.raw()));
  }
}

// Feeds s in pieces of the given sizes (cycled; 0 = everything at once), draining after each.
Outcome feed(const std::string& s, std::vector<size_t> pieces = {0}, Limits limits = {}) {
  Parser p(limits);
  Outcome out;
  size_t at = 0, k = 0;
  while (at < s.size() && out.last != Status::kError) {
    size_t n = pieces[k++ % pieces.size()];
    if (n == 0 || n > s.size() - at) n = s.size() - at;
    uint8_t* room = p.space(n);
    std::memcpy(room, s.data() + at, n);
    p.commit(n);
    at += n;
    drain(p, &out);
  }
  if (s.empty()) drain(p, &out);
  return out;
}

Outcome whole(const std::string& s, Limits limits = {}) { return feed(s, {0}, limits); }
Outcome bytewise(const std::string& s, Limits limits = {}) { return feed(s, {1}, limits); }

// The single reply s parses to, dumped ("<error: ...>" or "<need more>" otherwise); also checks that feeding
// it a byte at a time gives the same.
std::string one(const std::string& s, Limits limits = {}) {
  const Outcome a = whole(s, limits);
  const Outcome b = bytewise(s, limits);
  CHECK(a == b);
  if (a.last == Status::kError) return "<error: " + a.error + ">";
  if (a.replies.size() != 1) return "<" + std::to_string(a.replies.size()) + " replies>";
  CHECK_EQ(a.raws[0], s);
  return a.replies[0];
}

// The error s ends in (whole and bytewise must agree), or "" if none.
std::string error_of(const std::string& s, Limits limits = {}) {
  const Outcome a = whole(s, limits);
  const Outcome b = bytewise(s, limits);
  CHECK(a == b);
  if (!(a == b)) std::fprintf(stderr, "    whole: %s\n    bytewise: %s\n", a.error.c_str(), b.error.c_str());
  return a.last == Status::kError ? a.error : "";
}

// Status after feeding s (which must not complete a reply) and calling next().
Status status_of(const std::string& s, Limits limits = {}) {
  Parser p(limits);
  p.append(s.data(), s.size());
  return p.next();
}

// A string from a literal with NULs in it.
template <size_t N>
std::string bytes(const char (&lit)[N]) {
  return std::string(lit, N - 1);
}

std::string bulk(std::string_view s) { return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n"; }

// Valid replies of every type, for the equivalence and reclaim tests.
const std::vector<std::string>& corpus() {
  static const std::vector<std::string> c = {
      "+OK\r\n",
      "-ERR unknown command\r\n",
      ":0\r\n",
      ":-9223372036854775808\r\n",
      "$5\r\nhello\r\n",
      "$0\r\n\r\n",
      "$-1\r\n",
      "*-1\r\n",
      "_\r\n",
      ",3.14\r\n",
      ",-inf\r\n",
      "#t\r\n",
      "!21\r\nSYNTAX invalid syntax\r\n",
      "=15\r\ntxt:Some string\r\n",
      "(3492890328409238509324850943850943825024385\r\n",
      "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$6\r\na\r\nb\r\n\r\n",
      ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
      "%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n#f\r\n_\r\n",
      "~2\r\n+a\r\n:2\r\n",
      "*2\r\n*3\r\n:1\r\n$5\r\nhello\r\n:2\r\n#f\r\n",
      "*0\r\n",
      "|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n|1\r\n+a\r\n%0\r\n:2\r\n",
  };
  return c;
}

}  // namespace

// ---- encoder ----

TEST(command_writes_an_array_of_bulk_strings) {
  std::string out;
  command(out, {"SET", "key", "value"});
  CHECK_EQ(out, "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n");
}

TEST(command_appends_and_handles_empty_binary_and_no_args) {
  std::string out = "prefix";
  command(out, {"PUBLISH", "", std::string_view("a\r\n\0b", 5)});
  CHECK_EQ(out, bytes("prefix*3\r\n$7\r\nPUBLISH\r\n$0\r\n\r\n$5\r\na\r\n\0b\r\n"));
  std::string none;
  command(none, {});
  CHECK_EQ(none, "*0\r\n");
  const std::string big(1000, 'x');
  const std::string_view args[] = {"GET", big};
  std::string b;
  command(b, args, 2);
  CHECK_EQ(b, "*2\r\n$3\r\nGET\r\n$1000\r\n" + big + "\r\n");
  std::string ten;
  std::vector<std::string_view> many(10, "a");
  command(ten, many.data(), many.size());
  CHECK_EQ(ten.substr(0, 9), "*10\r\n$1\r\n");
  CHECK_EQ(ten.size(), 5u + 10 * 7);
}

TEST(command_round_trips_through_the_parser) {
  const std::string bin = bytes("\0\r\n$3\r\n*\xff");
  std::string out;
  command(out, {"SUBSCRIBE", bin, ""});
  CHECK_EQ(one(out), "*[$\"SUBSCRIBE\",$\"\\x00\\x0d\\x0a$3\\x0d\\x0a*\\xff\",$\"\"]");
}

// ---- every type ----

TEST(parses_simple_strings_errors_and_integers) {
  CHECK_EQ(one("+OK\r\n"), "+OK");
  CHECK_EQ(one("+\r\n"), "+");
  CHECK_EQ(one("-ERR wrong type\r\n"), "-ERR wrong type");
  CHECK_EQ(one(":42\r\n"), ":42");
  CHECK_EQ(one(":-7\r\n"), ":-7");
  CHECK_EQ(one(":+7\r\n"), ":7");
  CHECK_EQ(one(":007\r\n"), ":7");
  CHECK_EQ(one(":9223372036854775807\r\n"), ":9223372036854775807");
  CHECK_EQ(one(":-9223372036854775808\r\n"), ":-9223372036854775808");
  Parser p;
  p.append(":-5\r\n", 5);
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().type, Type::kInteger);
  CHECK_EQ(p.root().integer, -5);
  CHECK(p.root().str.empty());
  CHECK_EQ(p.root().first, 0u);
}

TEST(parses_bulk_strings_binary_safe_and_empty) {
  CHECK_EQ(one("$5\r\nhello\r\n"), "$\"hello\"");
  CHECK_EQ(one("$0\r\n\r\n"), "$\"\"");
  CHECK_EQ(one(bytes("$6\r\n\r\n\0\r\n\xff\r\n")), "$\"\\x0d\\x0a\\x00\\x0d\\x0a\\xff\"");
  // A payload that looks like RESP is just bytes.
  CHECK_EQ(one("$9\r\n+OK\r\n:1\r\n\r\n"), "$\"+OK\\x0d\\x0a:1\\x0d\\x0a\"");
  Parser p;
  const std::string s = "$3\r\nabc\r\n";
  p.append(s.data(), s.size());
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().type, Type::kBulk);
  CHECK_EQ(p.root().str, "abc");
  CHECK_EQ(p.raw(), s);
  // The view points into the reply's bytes.
  CHECK(p.root().str.data() == p.raw().data() + 4);
}

TEST(parses_every_null_form) {
  for (const char* s : {"_\r\n", "$-1\r\n", "*-1\r\n"}) {
    Parser p;
    p.append(s, std::strlen(s));
    CHECK_EQ(p.next(), Status::kReply);
    CHECK_EQ(p.root().type, Type::kNull);
    CHECK_EQ(p.root().integer, 0);
    CHECK(p.root().str.empty());
  }
  CHECK_EQ(one("*3\r\n$-1\r\n*-1\r\n_\r\n"), "*[_,_,_]");
}

TEST(parses_resp3_scalars) {
  CHECK_EQ(one(",1.23\r\n"), ",1.23");
  for (const char* d : {"10", "-1.5", "1e10", "1.5E-3", "2e+7", "inf", "-inf", "nan", "+inf", "-nan", "NAN",
                        "Infinity", "nan(123abc)", "0"}) {
    CHECK_EQ(one(std::string(",") + d + "\r\n"), std::string(",") + d);
  }
  CHECK_EQ(one("#t\r\n"), "#t");
  CHECK_EQ(one("#f\r\n"), "#f");
  Parser p;
  p.append("#t\r\n", 4);
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().type, Type::kBoolean);
  CHECK_EQ(p.root().integer, 1);
  CHECK_EQ(one("(3492890328409238509324850943850943825024385\r\n"), "(3492890328409238509324850943850943825024385");
  CHECK_EQ(one("(-12\r\n"), "(-12");
  CHECK_EQ(one("!21\r\nSYNTAX invalid syntax\r\n"), "-SYNTAX invalid syntax");
  CHECK_EQ(one("!0\r\n\r\n"), "-");
}

TEST(parses_verbatim_strings_without_their_format_prefix) {
  CHECK_EQ(one("=15\r\ntxt:Some string\r\n"), "=\"Some string\"");
  CHECK_EQ(one("=4\r\nmkd:\r\n"), "=\"\"");
  CHECK_EQ(one("=9\r\ntxt:a\r\nb\r\r\n"), "=\"a\\x0d\\x0ab\\x0d\"");
  Parser p;
  p.append("=5\r\ntxt:x\r\n", 11);
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().type, Type::kVerbatim);
  CHECK_EQ(p.root().str, "x");
}

// ---- aggregates ----

TEST(parses_arrays_maps_sets_and_nesting) {
  CHECK_EQ(one("*0\r\n"), "*[]");
  CHECK_EQ(one("*2\r\n:1\r\n+two\r\n"), "*[:1,+two]");
  CHECK_EQ(one("*2\r\n*3\r\n:1\r\n$5\r\nhello\r\n:2\r\n#f\r\n"), "*[*[:1,$\"hello\",:2],#f]");
  CHECK_EQ(one("%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n"), "%{+first::1,+second::2}");
  CHECK_EQ(one("%0\r\n"), "%{}");
  CHECK_EQ(one("~3\r\n+orange\r\n+apple\r\n#t\r\n"), "~[+orange,+apple,#t]");
  CHECK_EQ(one("*3\r\n*0\r\n*1\r\n*1\r\n*0\r\n%1\r\n~1\r\n:1\r\n>1\r\n_\r\n"), "*[*[],*[*[*[]]],%{~[:1]:>[_]}]");
}

TEST(lays_children_out_contiguously_breadth_first) {
  Parser p;
  const std::string s = "*3\r\n*2\r\n:1\r\n:2\r\n:3\r\n%1\r\n+k\r\n*1\r\n:4\r\n";
  p.append(s.data(), s.size());
  CHECK_EQ(p.next(), Status::kReply);
  const Value& r = p.root();
  CHECK_EQ(r.type, Type::kArray);
  CHECK_EQ(r.integer, 3);
  CHECK_EQ(r.first, 1u);
  const Value& a = p.child(r, 0);
  const Value& m = p.child(r, 2);
  CHECK_EQ(p.child(r, 1).integer, 3);
  CHECK(&p.child(r, 1) == &a + 1);
  CHECK(&m == &a + 2);
  CHECK_EQ(m.type, Type::kMap);
  CHECK_EQ(m.integer, 2);  // one pair, two children
  CHECK_EQ(a.first, 4u);   // after the root's three children
  CHECK_EQ(m.first, 6u);   // after a's two
  CHECK_EQ(p.child(m, 0).str, "k");
  CHECK_EQ(p.child(p.child(m, 1), 0).integer, 4);
  // Out of range, or not an aggregate: a null value.
  CHECK_EQ(p.child(r, 3).type, Type::kNull);
  CHECK_EQ(p.child(p.child(r, 1), 0).type, Type::kNull);
}

TEST(parses_pub_sub_messages_in_resp3_and_resp2) {
  const std::string payload("bin\r\nary\0!", 10);
  const std::string resp3 = ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n" + bulk(payload);
  const std::string resp2 = "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n" + bulk(payload);
  const std::string pmessage = ">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n" + bulk(payload);
  const std::string subscribed = ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n";
  Parser p;
  const std::string all = subscribed + resp3 + resp2 + pmessage;
  p.append(all.data(), all.size());
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().type, Type::kPush);
  CHECK_EQ(p.child(p.root(), 2).integer, 1);
  for (Type t : {Type::kPush, Type::kArray}) {
    CHECK_EQ(p.next(), Status::kReply);
    const Value& r = p.root();
    CHECK_EQ(r.type, t);
    CHECK_EQ(r.integer, 3);
    CHECK_EQ(p.child(r, 0).str, "message");
    CHECK_EQ(p.child(r, 1).str, "news");
    CHECK_EQ(p.child(r, 2).str, payload);
  }
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.child(p.root(), 1).str, "n*");
  CHECK_EQ(p.child(p.root(), 3).str, payload);
  CHECK_EQ(p.next(), Status::kNeedMore);
  CHECK_EQ(p.buffered(), 0u);
}

// ---- attributes ----

TEST(skips_attributes_before_a_reply_and_inside_aggregates) {
  CHECK_EQ(one("|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"),
           "*[:2039123,:9543892]");
  CHECK_EQ(one("*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n"), "*[:1,:2,:3]");
  CHECK_EQ(one("|0\r\n|1\r\n+a\r\n+b\r\n:5\r\n"), ":5");
  CHECK_EQ(one("%1\r\n|1\r\n+a\r\n+b\r\n+k\r\n|0\r\n+v\r\n"), "%{+k:+v}");
  // raw() keeps the attribute's bytes: they are part of the reply.
  Parser p;
  const std::string s = "|1\r\n+a\r\n:1\r\n+OK\r\n";
  p.append(s.data(), s.size());
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.raw(), s);
  CHECK_EQ(p.root().str, "OK");
  // An attribute alone is no reply yet.
  CHECK_EQ(status_of("|1\r\n+a\r\n:1\r\n"), Status::kNeedMore);
  // Its nesting counts against max_depth.
  Limits l;
  l.max_depth = 2;
  CHECK_EQ(one("*1\r\n|1\r\n+a\r\n+b\r\n:1\r\n", l), "*[:1]");
  CHECK_EQ(error_of("*1\r\n|1\r\n+a\r\n*0\r\n:1\r\n", l), "nesting deeper than max_depth (2) at stream offset 12");
}

// ---- streams ----

TEST(returns_several_replies_from_one_append_one_per_call) {
  std::string all;
  for (const std::string& s : corpus()) all += s;
  Parser p;
  p.append(all.data(), all.size());
  CHECK_EQ(p.buffered(), all.size());
  size_t consumed = 0;
  for (const std::string& s : corpus()) {
    CHECK_EQ(p.next(), Status::kReply);
    CHECK_EQ(p.raw(), s);
    CHECK_EQ(p.buffered(), all.size() - consumed);
    consumed += s.size();
  }
  CHECK_EQ(p.next(), Status::kNeedMore);
  CHECK_EQ(p.buffered(), 0u);
  CHECK_EQ(p.root().type, Type::kNull);
  CHECK(p.raw().empty());
}

TEST(needs_more_at_every_truncation_and_completes_at_the_end) {
  for (const std::string& s : corpus()) {
    for (size_t n = 0; n < s.size(); n++) CHECK_EQ(status_of(s.substr(0, n)), Status::kNeedMore);
    CHECK_EQ(status_of(s), Status::kReply);
  }
}

TEST(byte_at_a_time_and_random_splits_agree_with_all_at_once) {
  std::string all;
  for (const std::string& s : corpus()) all += s;
  all += all;
  const Outcome a = whole(all);
  CHECK_EQ(a.replies.size(), 2 * corpus().size());
  CHECK_EQ(a.last, Status::kNeedMore);
  CHECK(bytewise(all) == a);
  Rng rng(7);
  for (int round = 0; round < 50; round++) {
    std::vector<size_t> pieces;
    for (int i = 0; i < 16; i++) pieces.push_back(1 + rng.below(1 + rng.below(64)));
    CHECK(feed(all, pieces) == a);
  }
}

TEST(mutated_streams_give_the_same_verdict_however_split) {
  std::string all;
  for (const std::string& s : corpus()) all += s;
  const std::string alphabet = "\r\n+-:$*%~>|_,#!=(0123456789-?tfx";
  Rng rng(42);
  Limits small;
  small.max_bulk = 16;
  small.max_elements = 3;
  small.max_depth = 2;
  small.max_line = 12;
  small.max_buffer = 64;
  small.max_values = 6;
  size_t errors = 0;
  for (int round = 0; round < 1500; round++) {
    std::string s = all;
    for (size_t k = 1 + rng.below(4); k > 0; k--) {
      const size_t at = rng.below(s.size());
      switch (rng.below(3)) {
        case 0: s[at] = alphabet[rng.below(alphabet.size())]; break;
        case 1: s.insert(s.begin() + static_cast<long>(at), static_cast<char>(rng.byte())); break;
        default: s.erase(at, 1 + rng.below(3)); break;
      }
    }
    const Limits l = round % 2 ? small : Limits{};
    const Outcome a = whole(s, l);
    if (a.last == Status::kError) errors++;
    CHECK(bytewise(s, l) == a);
    CHECK(feed(s, {1 + rng.below(7), 1 + rng.below(30), 2}, l) == a);
  }
  CHECK(errors > 100);  // the mutations do reach the error paths
}

// ---- rejections ----

TEST(rejects_unknown_type_bytes_at_once) {
  CHECK_EQ(error_of("?"), "unknown type byte '?' (0x3f) at stream offset 0");
  CHECK_EQ(error_of(std::string("\0", 1)), "unknown type byte (0x00) at stream offset 0");
  CHECK_EQ(error_of("+OK\r\n:1\r\n\xff"), "unknown type byte (0xff) at stream offset 9");
  CHECK_EQ(error_of(";4\r\nHell\r\n"), "unknown type byte ';' (0x3b) at stream offset 0");
  CHECK_EQ(error_of("*2\r\n:1\r\n.\r\n"), "unknown type byte '.' (0x2e) at stream offset 8");
  CHECK_EQ(error_of("\r\n"), "unknown type byte (0x0d) at stream offset 0");
  CHECK_EQ(error_of("PING\r\n"), "unknown type byte 'P' (0x50) at stream offset 0");
}

TEST(rejects_lines_without_crlf) {
  CHECK_EQ(error_of("+OK\rX"), "CR not followed by LF in a line at stream offset 0");
  CHECK_EQ(error_of("+O\rK\r\n"), "CR not followed by LF in a line at stream offset 0");
  CHECK_EQ(error_of("+OK\n"), "bare LF in a line (lines end with CRLF) at stream offset 0");
  CHECK_EQ(error_of("$3\n"), "bare LF in a line (lines end with CRLF) at stream offset 0");
  CHECK_EQ(error_of("*1\r\n:1\r\r"), "CR not followed by LF in a line at stream offset 4");
  // A CR at the end of the input waits for its LF.
  CHECK_EQ(status_of("+OK\r"), Status::kNeedMore);
}

TEST(rejects_a_long_line_as_soon_as_it_cannot_fit) {
  Limits l;
  l.max_line = 8;
  CHECK_EQ(one("+12345678\r\n", l), "+12345678");
  CHECK_EQ(status_of("+12345678", l), Status::kNeedMore);
  CHECK_EQ(status_of("+12345678\r", l), Status::kNeedMore);
  // The 9th byte cannot be followed by CRLF within the limit: refused without waiting for the CRLF.
  CHECK_EQ(error_of("+123456789", l), "line longer than 8 bytes at stream offset 0");
  CHECK_EQ(error_of("-123456789", l), "line longer than 8 bytes at stream offset 0");
  CHECK_EQ(error_of(":123456789", l), "line longer than 8 bytes at stream offset 0");
  // Lengths, booleans and nulls have a line of at most 20 bytes, whatever max_line.
  CHECK_EQ(error_of("$" + std::string(21, '0')), "line longer than 20 bytes at stream offset 0");
  CHECK_EQ(error_of("*" + std::string(21, '1')), "line longer than 20 bytes at stream offset 0");
  CHECK_EQ(error_of("#" + std::string(21, 't')), "line longer than 20 bytes at stream offset 0");
  CHECK_EQ(error_of("_" + std::string(21, ' ')), "line longer than 20 bytes at stream offset 0");
  CHECK_EQ(status_of("$" + std::string(20, '1')), Status::kNeedMore);
  CHECK_EQ(status_of("$" + std::string(20, '1') + "\r"), Status::kNeedMore);
  // The default allows 64 KiB.
  CHECK_EQ(one("+" + std::string(64 * 1024, 'a') + "\r\n").size(), 1u + 64 * 1024);
  CHECK_EQ(error_of("+" + std::string(64 * 1024 + 1, 'a')), "line longer than 65536 bytes at stream offset 0");
}

TEST(rejects_malformed_lengths) {
  CHECK_EQ(error_of("$\r\n"), "empty length \"\" at stream offset 0");
  CHECK_EQ(error_of("$-2\r\n"), "negative length \"-2\" at stream offset 0");
  CHECK_EQ(error_of("*-5\r\n"), "negative length \"-5\" at stream offset 0");
  CHECK_EQ(error_of("$-0\r\n"), "negative length \"-0\" at stream offset 0");
  CHECK_EQ(error_of("$-\r\n"), "negative length \"-\" at stream offset 0");
  CHECK_EQ(error_of("$abc\r\n"), "length is not a number \"abc\" at stream offset 0");
  CHECK_EQ(error_of("$1a\r\n"), "length is not a number \"1a\" at stream offset 0");
  CHECK_EQ(error_of("$+1\r\n"), "length is not a number \"+1\" at stream offset 0");
  CHECK_EQ(error_of("$ 1\r\n"), "length is not a number \" 1\" at stream offset 0");
  CHECK_EQ(error_of("*1\x01\r\n"), "length is not a number \"1\\x01\" at stream offset 0");
  CHECK_EQ(error_of("$01\r\nx\r\n"), "length with a leading zero \"01\" at stream offset 0");
  CHECK_EQ(error_of("*00\r\n"), "length with a leading zero \"00\" at stream offset 0");
  CHECK_EQ(error_of("$18446744073709551616\r\n"), "length above 64 bits \"18446744073709551616\" at stream offset 0");
  CHECK_EQ(error_of("*99999999999999999999\r\n"), "length above 64 bits \"99999999999999999999\" at stream offset 0");
  // A length that fits 64 bits is then held to the limits.
  CHECK_EQ(error_of("$18446744073709551615\r\n"),
           "blob of 18446744073709551615 bytes over max_bulk (536870912) at stream offset 0");
  // "-1" is a null only for $ and *.
  for (const char* s : {"!-1\r\n", "=-1\r\n", "%-1\r\n", "~-1\r\n", ">-1\r\n", "|-1\r\n"})
    CHECK_EQ(error_of(s), "length -1 (a null only after $ and *) \"-1\" at stream offset 0");
}

TEST(rejects_streamed_strings_and_aggregates) {
  CHECK_EQ(error_of("$?\r\n;4\r\nHell\r\n;0\r\n"), "streamed strings ($?) are not supported at stream offset 0");
  CHECK_EQ(error_of("!?\r\n"), "streamed strings (!?) are not supported at stream offset 0");
  CHECK_EQ(error_of("*?\r\n:1\r\n.\r\n"), "streamed aggregates (*?) are not supported at stream offset 0");
  CHECK_EQ(error_of("%?\r\n"), "streamed aggregates (%?) are not supported at stream offset 0");
  CHECK_EQ(error_of("*1\r\n~?\r\n"), "streamed aggregates (~?) are not supported at stream offset 4");
}

TEST(rejects_malformed_scalars) {
  CHECK_EQ(error_of(":\r\n"), "malformed integer \"\" at stream offset 0");
  CHECK_EQ(error_of(":-\r\n"), "malformed integer \"-\" at stream offset 0");
  CHECK_EQ(error_of(":1.5\r\n"), "malformed integer \"1.5\" at stream offset 0");
  CHECK_EQ(error_of(": 1\r\n"), "malformed integer \" 1\" at stream offset 0");
  CHECK_EQ(error_of(":9223372036854775808\r\n"), "integer outside 64 bits \"9223372036854775808\" at stream offset 0");
  CHECK_EQ(error_of(":-9223372036854775809\r\n"), "integer outside 64 bits \"-9223372036854775809\" at stream offset 0");
  CHECK_EQ(error_of(":99999999999999999999999\r\n"), "integer outside 64 bits \"99999999999999999999999\" at stream offset 0");
  for (const char* d : {"", ".5", "1.", "1e", "1e+", "abc", "1.5.5", "- 1", "inf ", "nan(", "nan(a b)", "0x10", "1,5"})
    CHECK_EQ(error_of(std::string(",") + d + "\r\n"), "malformed double " + quoted(d) + " at stream offset 0");
  CHECK_EQ(error_of("#x\r\n"), "malformed boolean \"x\" (#t or #f) at stream offset 0");
  CHECK_EQ(error_of("#\r\n"), "malformed boolean \"\" (#t or #f) at stream offset 0");
  CHECK_EQ(error_of("#tf\r\n"), "malformed boolean \"tf\" (#t or #f) at stream offset 0");
  CHECK_EQ(error_of("_x\r\n"), "malformed null \"x\" (nothing between _ and CRLF) at stream offset 0");
  CHECK_EQ(error_of("(12a\r\n"), "malformed big number \"12a\" at stream offset 0");
  CHECK_EQ(error_of("(\r\n"), "malformed big number \"\" at stream offset 0");
  CHECK_EQ(error_of("(-\r\n"), "malformed big number \"-\" at stream offset 0");
  // Long offending lines are quoted in part.
  CHECK_EQ(error_of(":" + std::string(40, 'a') + "\r\n"),
           "malformed integer \"" + std::string(32, 'a') + "...\" at stream offset 0");
}

TEST(rejects_a_blob_not_followed_by_crlf_as_soon_as_it_shows) {
  CHECK_EQ(error_of("$3\r\nabcX"), "blob payload of 3 bytes not followed by CRLF at stream offset 0");
  CHECK_EQ(error_of("$3\r\nabc\rX"), "blob payload of 3 bytes not followed by CRLF at stream offset 0");
  CHECK_EQ(error_of("$3\r\nabcd\r\n"), "blob payload of 3 bytes not followed by CRLF at stream offset 0");
  CHECK_EQ(error_of("$0\r\nX"), "blob payload of 0 bytes not followed by CRLF at stream offset 0");
  CHECK_EQ(error_of("*2\r\n:1\r\n!2\r\nab\n\r"), "blob payload of 2 bytes not followed by CRLF at stream offset 8");
  CHECK_EQ(status_of("$3\r\nabc\r"), Status::kNeedMore);
  CHECK_EQ(status_of("$3\r\nab"), Status::kNeedMore);
}

TEST(rejects_a_verbatim_string_without_its_format) {
  CHECK_EQ(error_of("=3\r\ntxt\r\n"), "verbatim string without its format prefix (\"txt:\") at stream offset 0");
  CHECK_EQ(error_of("=4\r\ntxtx\r\n"), "verbatim string without its format prefix (\"txt:\") at stream offset 0");
  CHECK_EQ(error_of("=0\r\n\r\n"), "verbatim string without its format prefix (\"txt:\") at stream offset 0");
}

// ---- limits ----

TEST(holds_blobs_to_max_bulk_before_their_payload) {
  Limits l;
  l.max_bulk = 10;
  CHECK_EQ(one("$10\r\n0123456789\r\n", l), "$\"0123456789\"");
  CHECK_EQ(error_of("$11\r\n", l), "blob of 11 bytes over max_bulk (10) at stream offset 0");
  CHECK_EQ(error_of("!11\r\n", l), "blob of 11 bytes over max_bulk (10) at stream offset 0");
  CHECK_EQ(error_of("*1\r\n=11\r\n", l), "blob of 11 bytes over max_bulk (10) at stream offset 4");
  CHECK_EQ(error_of("$536870913\r\n"), "blob of 536870913 bytes over max_bulk (536870912) at stream offset 0");
}

TEST(holds_aggregates_to_max_elements) {
  Limits l;
  l.max_elements = 4;
  CHECK_EQ(one("*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", l), "*[:1,:2,:3,:4]");
  CHECK_EQ(error_of("*5\r\n", l), "aggregate of 5 elements over max_elements (4) at stream offset 0");
  CHECK_EQ(error_of(">5\r\n", l), "aggregate of 5 elements over max_elements (4) at stream offset 0");
  CHECK_EQ(error_of("~5\r\n", l), "aggregate of 5 elements over max_elements (4) at stream offset 0");
  CHECK_EQ(one("%2\r\n:1\r\n:2\r\n:3\r\n:4\r\n", l), "%{:1::2,:3::4}");
  CHECK_EQ(error_of("%3\r\n", l), "map of 3 pairs over max_elements (4 children, 2 per pair) at stream offset 0");
  CHECK_EQ(error_of("|3\r\n", l), "map of 3 pairs over max_elements (4 children, 2 per pair) at stream offset 0");
  CHECK_EQ(error_of("%18446744073709551615\r\n", l),
           "map of 18446744073709551615 pairs over max_elements (4 children, 2 per pair) at stream offset 0");
  CHECK_EQ(error_of("*1048577\r\n"), "aggregate of 1048577 elements over max_elements (1048576) at stream offset 0");
}

TEST(holds_nesting_to_max_depth) {
  Limits l;
  l.max_depth = 2;
  CHECK_EQ(one("*1\r\n*1\r\n:1\r\n", l), "*[*[:1]]");
  CHECK_EQ(one("*1\r\n*1\r\n*-1\r\n", l), "*[*[_]]");  // a null array is no aggregate
  CHECK_EQ(error_of("*1\r\n*1\r\n*1\r\n", l), "nesting deeper than max_depth (2) at stream offset 8");
  CHECK_EQ(error_of("*1\r\n%1\r\n*0\r\n", l), "nesting deeper than max_depth (2) at stream offset 8");
  l.max_depth = 0;
  CHECK_EQ(one(":1\r\n", l), ":1");
  CHECK_EQ(error_of("*0\r\n", l), "nesting deeper than max_depth (0) at stream offset 0");
  // The default: 8 levels.
  std::string deep;
  for (int i = 0; i < 8; i++) deep += "*1\r\n";
  CHECK_EQ(one(deep + ":1\r\n"), "*[*[*[*[*[*[*[*[:1]]]]]]]]");
  CHECK_EQ(error_of(deep + "*1\r\n"), "nesting deeper than max_depth (8) at stream offset 32");
}

TEST(holds_a_reply_to_max_values_before_reading_its_elements) {
  Limits l;
  l.max_values = 4;
  CHECK_EQ(one("*3\r\n:1\r\n:2\r\n:3\r\n", l), "*[:1,:2,:3]");
  CHECK_EQ(error_of("*4\r\n", l), "reply of more than max_values (4) values at stream offset 0");
  CHECK_EQ(error_of("*2\r\n*3\r\n", l), "reply of more than max_values (4) values at stream offset 4");
  // Values announced by an outer aggregate are counted as they come.
  CHECK_EQ(error_of("*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n", l), "reply of more than max_values (4) values at stream offset 16");
  CHECK_EQ(error_of("*2\r\n:1\r\n*2\r\n", l), "reply of more than max_values (4) values at stream offset 8");
  // The count is per reply.
  CHECK_EQ(whole("*3\r\n:1\r\n:2\r\n:3\r\n*3\r\n:1\r\n:2\r\n:3\r\n", l).replies.size(), 2u);
  // The default leaves room for an aggregate of max_elements scalars, and for values up to UINT32_MAX - 1.
  CHECK_EQ(status_of("*1048576\r\n"), Status::kNeedMore);
  l.max_values = UINT32_MAX;
  l.max_elements = UINT32_MAX;
  CHECK_EQ(error_of("*4294967295\r\n", l), "reply of more than max_values (4294967294) values at stream offset 0");
}

TEST(holds_a_reply_to_max_buffer) {
  Limits l;
  l.max_buffer = 16;
  const std::string exact = "*2\r\n:1\r\n$2\r\nab\r\n";  // 16 bytes
  CHECK_EQ(one(exact, l), "*[:1,$\"ab\"]");
  // Several replies of 16 bytes in one buffer are each within the limit.
  CHECK_EQ(whole(exact + exact + exact, l).replies.size(), 3u);
  // A blob that cannot fit is refused from its header.
  CHECK_EQ(error_of("*2\r\n:1\r\n$3\r\n", l), "reply larger than max_buffer (16 bytes) at stream offset 0");
  CHECK_EQ(error_of("$11\r\n", l), "reply larger than max_buffer (16 bytes) at stream offset 0");
  CHECK_EQ(one("$9\r\n012345678\r\n", l), "$\"012345678\"");  // 15 bytes
  CHECK_EQ(error_of("$10\r\n0123456789\r\n", l), "reply larger than max_buffer (16 bytes) at stream offset 0");
  // Anything else once the limit is reached without an end, whatever the following bytes are.
  CHECK_EQ(error_of("*9\r\n:1\r\n:2\r\n:3\r\n", l), "reply larger than max_buffer (16 bytes) at stream offset 0");
  CHECK_EQ(error_of("*9\r\n:1\r\n:2\r\n:3\r\n:x\r\n", l), "reply larger than max_buffer (16 bytes) at stream offset 0");
  CHECK_EQ(error_of("+OK\r\n+0123456789abcdef", l), "reply larger than max_buffer (16 bytes) at stream offset 5");
  CHECK_EQ(status_of("*9\r\n:1\r\n:2\r\n:3\r", l), Status::kNeedMore);
}

TEST(every_call_after_an_error_fails_and_nothing_is_kept) {
  Parser p;
  p.append("+OK\r\n-bad\rX+more\r\n", 18);
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().str, "OK");
  CHECK_EQ(p.next(), Status::kError);
  CHECK_EQ(p.error(), "CR not followed by LF in a line at stream offset 5");
  CHECK_EQ(p.buffered(), 0u);
  CHECK_EQ(p.root().type, Type::kNull);
  p.append("+OK\r\n", 5);
  CHECK_EQ(p.buffered(), 0u);
  CHECK_EQ(p.next(), Status::kError);
  CHECK_EQ(p.next(), Status::kError);
  CHECK_EQ(p.error(), "CR not followed by LF in a line at stream offset 5");
  CHECK(p.space(100) != nullptr);
  Parser fresh;
  CHECK_EQ(fresh.error(), "");
  CHECK_EQ(fresh.next(), Status::kNeedMore);
}

// ---- incremental work and the buffer ----

// These run the parser over inputs where re-parsing from the reply's start on every byte would be quadratic
// (10^11-10^12 steps); linear, each takes a fraction of a second even under the sanitizers.
TEST(a_one_mib_bulk_fed_a_byte_at_a_time_parses_in_linear_time) {
  std::string payload(1 << 20, 'x');
  for (size_t i = 0; i < payload.size(); i += 4096) payload[i] = '\r';
  const std::string s = bulk(payload);
  Parser p;
  size_t calls_needing_more = 0;
  Status last = Status::kNeedMore;
  for (char c : s) {
    *p.space(1) = static_cast<uint8_t>(c);
    p.commit(1);
    last = p.next();
    if (last == Status::kNeedMore) calls_needing_more++;
  }
  CHECK_EQ(last, Status::kReply);
  CHECK_EQ(calls_needing_more, s.size() - 1);
  CHECK_EQ(p.root().str.size(), payload.size());
  CHECK(p.root().str == payload);
}

TEST(a_100k_element_array_and_a_long_line_fed_a_byte_at_a_time_parse_in_linear_time) {
  std::string s = "*100000\r\n";
  for (int i = 0; i < 100000; i++) s += i % 2 ? ":" + std::to_string(i) + "\r\n" : bulk(std::to_string(i));
  const Outcome a = bytewise(s);
  CHECK_EQ(a.last, Status::kNeedMore);
  CHECK_EQ(a.replies.size(), 1u);
  Parser p;
  p.append(s.data(), s.size());
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().integer, 100000);
  CHECK_EQ(p.child(p.root(), 99999).integer, 99999);
  CHECK_EQ(p.child(p.root(), 99998).str, "99998");
  CHECK(a.replies[0] == dump(p, p.root()));
  // A 64 KiB simple string: its line is scanned once, not once per byte.
  const std::string line = "+" + std::string(64 * 1024, 'y') + "\r\n";
  CHECK_EQ(bytewise(line).replies.size(), 1u);
}

TEST(reclaims_consumed_bytes_without_growing_the_buffer) {
  // 1 MiB of small replies read 1000 bytes at a time: the buffer never needs to grow past its first size,
  // so every space() lands in the first allocation.
  std::string all;
  while (all.size() < (1 << 20))
    for (const std::string& s : corpus()) all += s;
  Parser p;
  const auto base = reinterpret_cast<uintptr_t>(p.space(1));
  size_t replies = 0, max_buffered = 0;
  for (size_t at = 0; at < all.size(); at += 1000) {
    const size_t n = std::min<size_t>(1000, all.size() - at);
    const auto room = reinterpret_cast<uintptr_t>(p.space(n));
    CHECK(room >= base && room + n <= base + 16 * 1024);
    std::memcpy(reinterpret_cast<uint8_t*>(room), all.data() + at, n);
    p.commit(n);
    while (p.next() == Status::kReply) replies++;
    max_buffered = std::max(max_buffered, p.buffered());
  }
  CHECK_EQ(replies % corpus().size(), 0u);
  CHECK(replies > 10000);
  CHECK(max_buffered < 1000 + 100);
  CHECK_EQ(p.buffered(), 0u);
}

TEST(a_large_reply_grows_the_buffer_and_later_replies_still_parse) {
  Parser p;
  const std::string big = bulk(std::string(3 << 20, 'z'));
  for (size_t at = 0; at < big.size(); at += 65536) {
    const size_t n = std::min<size_t>(65536, big.size() - at);
    p.append(big.data() + at, n);
    CHECK_EQ(p.next(), at + n < big.size() ? Status::kNeedMore : Status::kReply);
  }
  CHECK_EQ(p.root().str.size(), 3u << 20);
  CHECK_EQ(p.buffered(), big.size());
  // The next read releases the big reply (and the buffer shrinks); the stream goes on.
  p.append("+after\r\n", 8);
  CHECK_EQ(p.buffered(), 8u);
  CHECK_EQ(p.next(), Status::kReply);
  CHECK_EQ(p.root().str, "after");
}

TEST(a_reply_over_max_buffer_fails_once_its_bytes_reach_the_limit) {
  Limits l;
  l.max_buffer = 1 << 20;
  std::string s = "*1000000\r\n";
  while (s.size() < (2 << 20)) s += ":12345\r\n";
  Parser p(l);
  size_t at = 0;
  Status st = Status::kNeedMore;
  while (st == Status::kNeedMore && at < s.size()) {
    const size_t n = std::min<size_t>(4096, s.size() - at);
    p.append(s.data() + at, n);
    at += n;
    CHECK(p.buffered() <= l.max_buffer + 4096);
    st = p.next();
  }
  CHECK_EQ(st, Status::kError);
  CHECK_EQ(p.error(), "reply larger than max_buffer (1048576 bytes) at stream offset 0");
  CHECK(at >= l.max_buffer && at < l.max_buffer + 4096);
}
