// Unit tests for protocol.cc: command parsing, subject validation, tokens and the MSG header writer.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "pubsub/protocol.h"
#include "rng.h"

using namespace starling;

namespace {

// Parses from an exact-size heap copy so ASan catches any read past the end. The copy lives in
// `storage` so the views in the result stay valid.
struct Parsed {
  std::vector<uint8_t> storage;
  Command cmd;
};

Parsed parse(const std::string& s) {
  Parsed p;
  p.storage.assign(s.begin(), s.end());
  parse_command(p.storage.data(), p.storage.size(), &p.cmd);
  return p;
}

// The error code of a message, or "ok" when it parses.
std::string error_of(const std::string& s) {
  Parsed p = parse(s);
  if (p.cmd.kind != Cmd::Invalid) return "ok";
  return p.cmd.error != ErrCode::kNone ? err_name(p.cmd.error) : "(null)";
}

// "<code> <detail>" of a refused message, or "ok" when it parses.
std::string refusal(const std::string& s) {
  Parsed p = parse(s);
  if (p.cmd.kind != Cmd::Invalid) return "ok";
  return std::string(err_name(p.cmd.error)) + " " + std::string(p.cmd.detail());
}

// True when every byte of a detail is printable ASCII and its length is within 1..kMaxDetailLen.
bool sane_detail(std::string_view d) {
  if (d.empty() || d.size() > kMaxDetailLen) return false;
  for (char c : d) {
    if (c < 0x20 || c > 0x7E) return false;
  }
  return true;
}

std::vector<std::string> tokens(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) out.emplace_back(next_token(&s));
  return out;
}

std::string repeat(char c, size_t n) { return std::string(n, c); }

}  // namespace

// ---- SUB / UNSUB ----

TEST(parses_sub_with_several_subjects) {
  Parsed p = parse("SUB /a/b /c");
  CHECK_EQ(p.cmd.kind, Cmd::Sub);
  CHECK_EQ(p.cmd.subjects, "/a/b /c");
  CHECK(tokens(p.cmd.subjects) == (std::vector<std::string>{"/a/b", "/c"}));
  CHECK(p.cmd.error == ErrCode::kNone);
}

TEST(parses_unsub_and_allows_a_trailing_newline) {
  Parsed p = parse("UNSUB /Stocks/NYSE/IBM /p/s1/-\r\n");
  CHECK_EQ(p.cmd.kind, Cmd::Unsub);
  CHECK_EQ(p.cmd.subjects, "/Stocks/NYSE/IBM /p/s1/-");
  CHECK_EQ(error_of("SUB /a\n"), "ok");
}

TEST(rejects_sub_without_a_subject_as_bad_command) {
  CHECK_EQ(error_of("SUB"), "bad-command");
  CHECK_EQ(error_of("UNSUB"), "bad-command");
  CHECK_EQ(error_of("SUB\n"), "bad-command");
}

TEST(rejects_an_invalid_subject_in_sub_as_bad_subject) {
  CHECK_EQ(error_of("SUB /a//b"), "bad-subject");
  CHECK_EQ(error_of("SUB /ok /a*"), "bad-subject");
  CHECK_EQ(error_of("UNSUB a"), "bad-subject");
}

TEST(rejects_a_body_on_sub_unsub_and_ping_as_bad_command) {
  CHECK_EQ(error_of("SUB /a\nbody"), "bad-command");
  CHECK_EQ(error_of("UNSUB /a\r\nx"), "bad-command");
  CHECK_EQ(error_of("PING\nx"), "bad-command");
  CHECK_EQ(error_of("PING tok\n\n"), "bad-command");
}

TEST(parses_the_v2_sub_forms_and_refuses_malformed_positions_and_counts) {
  CHECK_EQ(error_of("SUB /a/b@k3x:42"), "ok");
  CHECK_EQ(error_of("SUB /a /b#10"), "ok");
  CHECK_EQ(error_of("SUB conflate=500 /a /b#0 /c@0:0"), "ok");
  {
    const Spec r = parse_spec("/a/b@k3x:42");
    CHECK_EQ(r.subject, "/a/b");
    CHECK(r.mode == SpecMode::kRecover);
    CHECK_EQ(r.epoch, uint64_t{20 * 36 * 36 + 3 * 36 + 33});
    CHECK_EQ(r.seq, 42u);
    const Spec h = parse_spec("/b#10");
    CHECK_EQ(h.subject, "/b");
    CHECK(h.mode == SpecMode::kHistory);
    CHECK_EQ(h.seq, 10u);
    const Spec l = parse_spec("/user@host");
    CHECK_EQ(l.subject, "/user@host");
    CHECK(l.mode == SpecMode::kLive);
    const Spec big = parse_spec("/a@3w5e11264sgsf:18446744073709551615");  // the largest epoch and seq
    CHECK(big.mode == SpecMode::kRecover);
    CHECK_EQ(big.epoch, UINT64_MAX);
    CHECK_EQ(big.seq, UINT64_MAX);
  }
  CHECK_EQ(error_of("SUB /a@3w5e11264sgsg:1"), "bad-command");       // epoch over 64 bits
  CHECK_EQ(error_of("SUB /a@K3X:1"), "bad-command");                 // upper case is not an epoch
  CHECK_EQ(error_of("SUB /a@k3x:18446744073709551616"), "bad-command");  // seq over 64 bits
  CHECK_EQ(error_of("SUB /a#1234567890"), "bad-command");            // 10 digits
  CHECK_EQ(error_of("SUB /#5"), "bad-subject");                      // the subject part breaks the rule
  CHECK_EQ(error_of("SUB conflate=50 /a"), "bad-command");
  CHECK_EQ(error_of("SUB conflate=150 /a"), "bad-command");
  CHECK_EQ(error_of("SUB conflate=60100 /a"), "bad-command");
  CHECK_EQ(error_of("SUB conflate=x /a"), "bad-command");
  CHECK_EQ(error_of("SUB conflate=500"), "bad-command");
  CHECK_EQ(error_of("SUB /a conflate=500"), "bad-subject");          // only first: elsewhere it is a subject
  CHECK_EQ(error_of("UNSUB /a#5"), "ok");                             // UNSUB takes plain subjects
  CHECK_EQ(error_of("PUB /a id +retained\nx"), "ok");
  CHECK_EQ(error_of("PUB /a +retained\nx"), "ok");
  CHECK_EQ(error_of("PUB /a id +sticky\nx"), "bad-command");
  CHECK_EQ(error_of("PUB /a +retained extra\nx"), "bad-command");
  // Other uses of '@', ':' and '#' are ordinary subject characters.
  CHECK_EQ(error_of("SUB /user@host"), "ok");
  CHECK_EQ(error_of("SUB /a#b /c:1 /@:x"), "ok");
  CHECK_EQ(error_of("PUB /a/b#10\nx"), "ok");
}

// ---- PUB ----

TEST(parses_pub_with_a_body_after_the_newline) {
  Parsed p = parse("PUB /a/b\nhello");
  CHECK_EQ(p.cmd.kind, Cmd::Pub);
  CHECK_EQ(p.cmd.subject, "/a/b");
  CHECK_EQ(p.cmd.id, "");
  CHECK_EQ(p.cmd.body, "hello");
}

TEST(parses_pub_with_an_id_and_an_empty_body) {
  Parsed p = parse("PUB /a/b x1\r\n");
  CHECK_EQ(p.cmd.kind, Cmd::Pub);
  CHECK_EQ(p.cmd.subject, "/a/b");
  CHECK_EQ(p.cmd.id, "x1");
  CHECK_EQ(p.cmd.body, "");
}

TEST(parses_pub_without_a_newline_as_an_empty_body) {
  Parsed p = parse("PUB /a/b");
  CHECK_EQ(p.cmd.kind, Cmd::Pub);
  CHECK_EQ(p.cmd.subject, "/a/b");
  CHECK(p.cmd.body.empty());
}

TEST(keeps_a_pub_body_binary_safe) {
  const std::string body("line1\r\nline2\n\0\xff\x80 \r", 19);
  Parsed p = parse("PUB /bin id\r\n" + body);
  CHECK_EQ(p.cmd.kind, Cmd::Pub);
  CHECK_EQ(p.cmd.body, body);
  CHECK_EQ(p.cmd.body.size(), 19u);
}

TEST(accepts_pub_ids_of_1_to_64_printable_characters) {
  Parsed p = parse("PUB /a " + repeat('i', kMaxIdLen) + "\nx");
  CHECK_EQ(p.cmd.kind, Cmd::Pub);
  CHECK_EQ(p.cmd.id.size(), kMaxIdLen);
  CHECK_EQ(error_of("PUB /a !~@#$%^&*()"), "ok");
}

TEST(rejects_a_pub_id_over_64_characters_as_bad_command) {
  Parsed p = parse("PUB /a " + repeat('i', kMaxIdLen + 1));
  CHECK_EQ(p.cmd.kind, Cmd::Invalid);
  CHECK_EQ(std::string(err_name(p.cmd.error)), "bad-command");
  CHECK(p.cmd.id.empty());
}

TEST(reports_the_id_of_a_pub_with_a_bad_subject) {
  Parsed p = parse("PUB bad id7\nx");
  CHECK_EQ(p.cmd.kind, Cmd::Invalid);
  CHECK_EQ(std::string(err_name(p.cmd.error)), "bad-subject");
  CHECK_EQ(p.cmd.id, "id7");
  CHECK_EQ(p.cmd.detail(), "bad: must start with '/'");
  CHECK_EQ(error_of("PUB /a/\nx"), "bad-subject");
  Parsed plain = parse("PUB /a/\nx");
  CHECK(plain.cmd.id.empty());
}

TEST(rejects_malformed_pub_headers_as_bad_command) {
  CHECK_EQ(error_of("PUB"), "bad-command");
  CHECK_EQ(error_of("PUB\nbody"), "bad-command");
  CHECK_EQ(error_of("PUB /a id extra\nx"), "bad-command");
  CHECK_EQ(error_of("PUB /a \nx"), "bad-command");
}

TEST(accepts_the_longest_pub_header_within_kMaxPubHeader) {
  const std::string subject = "/" + repeat('s', kMaxSubjectLen - 1);
  const std::string header = "PUB " + subject + " " + repeat('i', kMaxIdLen) + "\r\n";
  CHECK_EQ(header.size(), kMaxPubHeader);
  Parsed p = parse(header + "payload");
  CHECK_EQ(p.cmd.kind, Cmd::Pub);
  CHECK_EQ(p.cmd.body, "payload");
}

// ---- PING ----

TEST(parses_ping_with_and_without_a_token) {
  Parsed bare = parse("PING");
  CHECK_EQ(bare.cmd.kind, Cmd::Ping);
  CHECK(bare.cmd.id.empty());
  Parsed tok = parse("PING tok");
  CHECK_EQ(tok.cmd.kind, Cmd::Ping);
  CHECK_EQ(tok.cmd.id, "tok");
  CHECK_EQ(error_of("PING\r\n"), "ok");
  CHECK_EQ(error_of("PING " + repeat('t', kMaxIdLen)), "ok");
}

TEST(rejects_malformed_pings_as_bad_command) {
  CHECK_EQ(error_of("PING " + repeat('t', kMaxIdLen + 1)), "bad-command");
  CHECK_EQ(error_of("PING a b"), "bad-command");
  CHECK_EQ(error_of("PING "), "bad-command");
}

// ---- the header line ----

TEST(parses_auth_with_exactly_one_token_and_no_body) {
  Command cmd;
  std::string m = "AUTH eyJ.a-b_c.d=";
  parse_command(reinterpret_cast<const uint8_t*>(m.data()), m.size(), &cmd);
  CHECK(cmd.kind == Cmd::Auth);
  CHECK_EQ(std::string(cmd.id), "eyJ.a-b_c.d=");
  // The token's length is the caller's to bound (it answers "AUTH invalid too large").
  CHECK_EQ(error_of("AUTH " + repeat('t', kMaxTokenLen + 1)), "ok");
  CHECK_EQ(error_of("AUTH x\r\n"), "ok");
  CHECK_EQ(refusal("AUTH"), "bad-command AUTH needs a token: \"AUTH <token>\"");
  CHECK_EQ(refusal("AUTH a b"), "bad-command AUTH takes one token (no spaces), got 2");
  CHECK_EQ(error_of("AUTH a\nbody"), "bad-command");
  CHECK_EQ(refusal("auth x"), "bad-command unknown command \"auth\"; commands are upper case: AUTH");
}

TEST(rejects_unknown_and_lowercase_verbs_as_bad_command) {
  CHECK_EQ(error_of("sub /a"), "bad-command");
  CHECK_EQ(error_of("Pub /a"), "bad-command");
  CHECK_EQ(error_of("SUBX /a"), "bad-command");
  CHECK_EQ(error_of("MSG /a e:1"), "bad-command");
  CHECK_EQ(error_of("PONG"), "bad-command");
}

TEST(rejects_spacing_other_than_single_spaces_as_bad_command) {
  CHECK_EQ(error_of("SUB  /a"), "bad-command");
  CHECK_EQ(error_of(" SUB /a"), "bad-command");
  CHECK_EQ(error_of("SUB /a "), "bad-command");
  CHECK_EQ(error_of("SUB /a  /b"), "bad-command");
  CHECK_EQ(error_of("SUB\t/a"), "bad-command");
  CHECK_EQ(error_of("PUB /a  id\nx"), "bad-command");
  CHECK_EQ(error_of(" "), "bad-command");
}

TEST(rejects_non_printable_bytes_in_the_header_as_bad_command) {
  CHECK_EQ(error_of("SUB /caf\xc3\xa9"), "bad-command");
  CHECK_EQ(error_of("PUB /a \x80\nbody"), "bad-command");
  CHECK_EQ(error_of(std::string("SUB /a\0b", 8)), "bad-command");
  CHECK_EQ(error_of("SUB /a\x7f"), "bad-command");
  CHECK_EQ(error_of("PING\r"), "bad-command");      // '\r' only directly before '\n'
  CHECK_EQ(error_of("PING\r\r\n"), "bad-command");
  CHECK_EQ(error_of("SUB /a\r/b"), "bad-command");
}

TEST(rejects_empty_messages_and_headers_as_bad_command) {
  CHECK_EQ(error_of(""), "bad-command");
  CHECK_EQ(error_of("\n"), "bad-command");
  CHECK_EQ(error_of("\r\n"), "bad-command");
  CHECK_EQ(error_of("\nPUB /a"), "bad-command");
  Parsed p = parse("");
  CHECK_EQ(p.cmd.kind, Cmd::Invalid);
  CHECK_EQ(p.cmd.detail(), "empty message; send a command such as \"PING\"");
}

TEST(bad_command_on_the_header_wins_over_a_bad_subject) {
  CHECK_EQ(error_of("PUB bad " + repeat('i', kMaxIdLen + 1)), "bad-command");
  CHECK_EQ(error_of("SUB bad\nbody"), "bad-command");
  CHECK_EQ(error_of("SUB bad /a@E:1"), "bad-command");
}

// ---- details: what is wrong and what to change ----

TEST(a_refused_subject_is_named_first_with_the_reason) {
  CHECK_EQ(refusal("SUB /a//b"), "bad-subject /a//b: empty segment (two '/' in a row at offset 2)");
  CHECK_EQ(refusal("SUB /ok /a*"), "bad-subject /a*: contains '*' at offset 2 (wildcards are not allowed in subjects)");
  CHECK_EQ(refusal("UNSUB a"), "bad-subject a: must start with '/'");
  CHECK_EQ(refusal("SUB /a/"), "bad-subject /a/: ends with '/'; remove the trailing '/'");
  CHECK_EQ(refusal("SUB /"), "bad-subject /: needs a segment after the '/', e.g. /a");
  CHECK_EQ(refusal("SUB //"), "bad-subject //: empty segment (two '/' in a row at offset 0)");
  CHECK_EQ(refusal("PUB /x//y p1\nbody"), "bad-subject /x//y: empty segment (two '/' in a row at offset 2)");
}

TEST(an_over_long_subject_is_echoed_cut_and_its_length_given) {
  const std::string subject = "/" + repeat('x', 299);
  Parsed p = parse("SUB " + subject);
  CHECK_EQ(std::string(err_name(p.cmd.error)), "bad-subject");
  const std::string_view d = p.cmd.detail();
  CHECK_EQ(d, subject.substr(0, kMaxSubjectLen - 3) + "...: longer than 255 bytes (300)");
  CHECK(sane_detail(d));
  // Exactly 256 bytes.
  CHECK(refusal("SUB /" + repeat('y', kMaxSubjectLen)).find(": longer than 255 bytes (256)") != std::string::npos);
  // A long subject with an empty segment is echoed whole when within the limit.
  const std::string near = "/" + repeat('z', 250) + "//q";
  CHECK_EQ(refusal("SUB " + near), "bad-subject " + near + ": empty segment (two '/' in a row at offset 251)");
}

TEST(subject_problem_says_what_to_change_and_nothing_for_a_valid_subject) {
  char buf[kMaxDetailLen];
  auto problem = [&buf](std::string_view s) { return std::string(buf, subject_problem(s, buf, sizeof buf)); };
  CHECK_EQ(problem("/a/b"), "");
  CHECK_EQ(problem(""), "empty subject; a subject looks like /a/b");
  CHECK_EQ(problem("/a b"), "contains a space or a control/non-ASCII byte (0x20) at offset 2");
  CHECK_EQ(problem("/caf\xc3\xa9"), "contains a space or a control/non-ASCII byte (0xC3) at offset 4");
  CHECK_EQ(problem(std::string_view("/a\0", 3)), "contains a space or a control/non-ASCII byte (0x00) at offset 2");
  // Truncated to the capacity, never past it.
  char small[8];
  CHECK_EQ(subject_problem("a", small, sizeof small), sizeof small);
  CHECK_EQ(std::string_view(small, sizeof small), "must sta");
}

TEST(a_lowercase_verb_gets_the_upper_case_hint) {
  CHECK_EQ(refusal("sub /a"), "bad-command unknown command \"sub\"; commands are upper case: SUB");
  CHECK_EQ(refusal("Pub /a\nx"), "bad-command unknown command \"Pub\"; commands are upper case: PUB");
  CHECK_EQ(refusal("unsub /a"), "bad-command unknown command \"unsub\"; commands are upper case: UNSUB");
  CHECK_EQ(refusal("ping"), "bad-command unknown command \"ping\"; commands are upper case: PING");
}

TEST(other_unknown_verbs_list_the_commands) {
  CHECK_EQ(refusal("FOO"), "bad-command unknown command \"FOO\"; commands are SUB, UNSUB, PUB, PING and AUTH (upper case)");
  CHECK_EQ(refusal("MSG /a e:1"),
           "bad-command unknown command \"MSG\"; MSG is a message the server sends; commands are SUB, UNSUB, PUB, "
           "PING and AUTH (upper case)");
  // A long verb is echoed cut.
  CHECK_EQ(refusal(repeat('V', 100)),
           "bad-command unknown command \"" + repeat('V', 29) + "...\"; commands are SUB, UNSUB, PUB, PING and AUTH (upper case)");
}

TEST(malformed_headers_say_where_and_what_to_change) {
  CHECK_EQ(refusal("SUB"), "bad-command SUB needs at least one subject, e.g. \"SUB /a/b\"");
  CHECK_EQ(refusal("UNSUB\n"), "bad-command UNSUB needs at least one subject, e.g. \"UNSUB /a/b\"");
  CHECK_EQ(refusal("PUB"),
           "bad-command PUB needs a subject: \"PUB <subject> [<id>] [+retained]\", a newline, then the payload");
  CHECK_EQ(refusal("PUB /a hello world"),
           "bad-command PUB takes a subject, an optional id and an optional +retained, got 3 arguments; the payload "
           "goes after the first newline");
  CHECK_EQ(refusal("PUB /a p1 +keep"),
           "bad-command PUB option \"+keep\" is unknown; the only option is +retained (ids may not begin with '+')");
  CHECK_EQ(refusal("PUB /a " + repeat('i', kMaxIdLen + 1)), "bad-command PUB id is 65 characters long; the limit is 64");
  CHECK_EQ(refusal("PING " + repeat('t', 70)), "bad-command PING token is 70 characters long; the limit is 64");
  CHECK_EQ(refusal("PING a b c"), "bad-command PING takes at most one token, got 3");
  CHECK_EQ(refusal("SUB /a\nbody"),
           "bad-command SUB takes no body, but 4 bytes follow the newline; only PUB carries a payload (end the header "
           "without a newline or with nothing after it)");
  CHECK_EQ(refusal("SUB /a  /b"), "bad-command tokens must be separated by single spaces; remove the extra space at offset 7");
  CHECK_EQ(refusal(" SUB /a"), "bad-command tokens must be separated by single spaces; remove the leading space at offset 0");
  CHECK_EQ(refusal("SUB /a "), "bad-command tokens must be separated by single spaces; remove the trailing space at offset 6");
  CHECK_EQ(refusal("SUB /caf\xc3\xa9"),
           "bad-command header byte 0xC3 at offset 8 is not printable ASCII (0x20-0x7E); only the PUB payload, after "
           "the first newline, may hold other bytes");
  CHECK_EQ(refusal("PING\r"), "bad-command '\\r' at offset 4 of the header; a '\\r' is allowed only directly before the '\\n'");
  CHECK_EQ(refusal("\nPUB /a"),
           "bad-command empty header line; the command (e.g. \"PUB /a/b\") comes before the first newline");
  CHECK_EQ(refusal("SUB /a /b@K2X:17"),
           "bad-command /b@K2X:17: \"K2X\" is not an epoch; use the one of the last MSG, SYNC or RESYNC received "
           "(lower-case base 36, at most 13 characters)");
  CHECK_EQ(refusal("SUB conflate=250 /a"),
           "bad-command SUB conflate=250: conflate takes milliseconds in steps of 100 from 100 to 60000, e.g. "
           "\"SUB conflate=500 /a/b\"");
}

TEST(a_command_reused_after_a_refusal_parses_clean) {
  Command c;
  const std::string bad = "SUB /a//b", good = "PING t";
  parse_command(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), &c);
  CHECK_EQ(c.kind, Cmd::Invalid);
  parse_command(reinterpret_cast<const uint8_t*>(good.data()), good.size(), &c);
  CHECK_EQ(c.kind, Cmd::Ping);
  CHECK(c.error == ErrCode::kNone);
  CHECK(c.detail().empty());
}

// ---- subjects ----

TEST(valid_subject_accepts_slash_separated_printable_segments) {
  for (const char* s : {"/a", "/p/s1/-", "/Stocks/NYSE/IBM", "/a:b@c#d", "/!~", "/A/b/C/d/E/f"}) {
    CHECK(valid_subject(s));
  }
  CHECK(valid_subject("/" + repeat('x', kMaxSubjectLen - 1)));
}

TEST(valid_subject_rejects_everything_else) {
  for (const char* s : {"", "/", "a", "a/b", "//", "/a/", "//a", "/a//b", "/a b", "/a*", "/*", "/a/*/b",
                        "/a\x7f", "/\x01", "/caf\xc3\xa9", "/a\tb"}) {
    CHECK(!valid_subject(s));
  }
  CHECK(!valid_subject("/" + repeat('x', kMaxSubjectLen)));
  CHECK(!valid_subject(std::string_view("/a\0b", 4)));
}

// ---- next_token ----

TEST(next_token_splits_on_single_spaces) {
  std::string_view rest = "a bb ccc";
  CHECK_EQ(next_token(&rest), "a");
  CHECK_EQ(rest, "bb ccc");
  CHECK_EQ(next_token(&rest), "bb");
  CHECK_EQ(next_token(&rest), "ccc");
  CHECK(rest.empty());
  CHECK_EQ(next_token(&rest), "");
  CHECK(rest.empty());
}

// ---- MSG header ----

TEST(writes_the_msg_header_right_aligned_before_the_payload) {
  char buf[kMaxMsgHeader + 16];
  std::memset(buf, '#', sizeof buf);
  char* payload = buf + kMaxMsgHeader;
  std::memcpy(payload, "hello", 5);
  const size_t n = write_msg_header_backwards(payload, "/a/b", "e7", 42);
  CHECK_EQ(std::string_view(payload - n, n + 5), "MSG /a/b e7:42\nhello");
  CHECK_EQ(buf[kMaxMsgHeader - n - 1], '#');  // nothing written in front
}

TEST(writes_seq_zero_one_and_the_largest_uint64) {
  char buf[kMaxMsgHeader];
  char* end = buf + sizeof buf;
  size_t n = write_msg_header_backwards(end, "/s", "ep", 0);
  CHECK_EQ(std::string_view(end - n, n), "MSG /s ep:0\n");
  n = write_msg_header_backwards(end, "/s", "ep", 1);
  CHECK_EQ(std::string_view(end - n, n), "MSG /s ep:1\n");
  n = write_msg_header_backwards(end, "/s", "ep", UINT64_MAX);
  CHECK_EQ(std::string_view(end - n, n), "MSG /s ep:18446744073709551615\n");
}

TEST(the_longest_msg_header_is_kMaxMsgHeader_bytes) {
  std::vector<char> buf(kMaxMsgHeader);  // exact size: ASan catches a write in front
  const std::string subject = "/" + repeat('s', kMaxSubjectLen - 1);
  const std::string epoch = repeat('e', 16);
  const size_t n = write_msg_header_backwards(buf.data() + buf.size(), subject, epoch, UINT64_MAX);
  CHECK_EQ(n, kMaxMsgHeader);
  CHECK_EQ(std::string_view(buf.data(), 4), "MSG ");
  CHECK_EQ(buf.back(), '\n');
}

TEST(a_written_msg_header_reads_back_with_next_token) {
  char buf[kMaxMsgHeader];
  char* end = buf + sizeof buf;
  const size_t n = write_msg_header_backwards(end, "/x/y", "abc", 123456789);
  std::string_view line(end - n, n - 1);
  CHECK_EQ(next_token(&line), "MSG");
  CHECK_EQ(next_token(&line), "/x/y");
  CHECK_EQ(next_token(&line), "abc:123456789");
  CHECK(line.empty());
}

// ---- hostile input ----

TEST(parses_the_position_part_of_server_lines) {
  PositionLine pl;
  CHECK(parse_position_line("/a/b k3x9:42", &pl));
  CHECK(pl.subject == "/a/b");
  uint64_t e = 0;
  CHECK(parse_epoch("k3x9", &e));
  CHECK_EQ(pl.epoch, e);
  CHECK_EQ(pl.seq, 42u);
  CHECK(pl.rest.empty());
  CHECK(parse_position_line("/a 0:0 recovered", &pl));
  CHECK(pl.subject == "/a" && pl.epoch == 0 && pl.seq == 0 && pl.rest == "recovered");
  CHECK(parse_position_line("/a 1:18446744073709551615", &pl));
  CHECK_EQ(pl.seq, UINT64_MAX);
}

TEST(refuses_server_lines_that_are_not_positions) {
  PositionLine pl;
  for (const char* bad : {"", "/a", "/a ", " 1:2", "/a 1", "/a :2", "/a 1:", "/a 1:x", "/a 1:-2", "/a 1:+2",
                          "/a A:2", "/a 1:18446744073709551616", "/a 1:99999999999999999999999",
                          "/a zzzzzzzzzzzzzz:1", "/a 1:2:3", "/a 1 :2"}) {
    if (parse_position_line(bad, &pl)) {
      std::fprintf(stderr, "accepted %s\n", bad);
      CHECK(false);
    }
  }
}

TEST(survives_random_bytes_and_keeps_its_invariants) {
  Rng rng(0xBADC0DE);
  const char alphabet[] = "SUBNPIGAT /ab*#@:\r\n1";
  const std::string seeds[] = {"SUB /a/b /c", "UNSUB /x", "PUB /a/b id1\r\nbody", "PING tok", "PUB /a\nb"};
  for (int iter = 0; iter < 20000; iter++) {
    std::string s;
    if (iter % 2 == 0) {
      s.resize(rng.below(64));
      for (char& c : s) c = rng.below(4) ? alphabet[rng.below(sizeof alphabet - 1)] : static_cast<char>(rng.byte());
    } else {
      s = seeds[rng.below(5)];
      for (size_t k = 1 + rng.below(3); k > 0 && !s.empty(); k--) {
        const size_t at = rng.below(s.size());
        switch (rng.below(3)) {
          case 0: s[at] = alphabet[rng.below(sizeof alphabet - 1)]; break;
          case 1: s.insert(s.begin() + at, static_cast<char>(rng.byte())); break;
          default: s.erase(at, 1); break;
        }
      }
    }
    Parsed p = parse(s);
    const Command& c = p.cmd;
    const char* lo = reinterpret_cast<const char*>(p.storage.data());
    const char* hi = lo + p.storage.size();
    auto inside = [&](std::string_view v) { return v.empty() || (v.data() >= lo && v.data() + v.size() <= hi); };
    CHECK(inside(c.subjects) && inside(c.subject) && inside(c.id) && inside(c.body));
    switch (c.kind) {
      case Cmd::Sub:
      case Cmd::Unsub: {
        CHECK(!c.subjects.empty());
        std::string_view rest = c.subjects;
        while (!rest.empty()) CHECK(valid_subject(next_token(&rest)));
        break;
      }
      case Cmd::Pub:
        CHECK(valid_subject(c.subject));
        CHECK(c.id.size() <= kMaxIdLen);
        break;
      case Cmd::Ping:
        CHECK(c.id.size() <= kMaxIdLen);
        break;
      case Cmd::Auth:
        CHECK(!c.id.empty() && c.id.find(' ') == std::string_view::npos && c.body.empty());
        break;
      case Cmd::Invalid:
        CHECK(c.error != ErrCode::kNone && sane_detail(c.detail()));
        CHECK(c.error == ErrCode::kBadCommand || c.error == ErrCode::kBadSubject);
        break;
    }
  }
}
