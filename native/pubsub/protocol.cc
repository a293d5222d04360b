// Starling protocol v2. See protocol.h and PROTOCOL.md for the rules.
#include "pubsub/protocol.h"

#include <cstdint>
#include <cstring>

namespace starling {

namespace {

// Error codes of PROTOCOL.md that parsing can produce.
constexpr ErrCode kBadCommand = ErrCode::kBadCommand;
constexpr ErrCode kBadSubject = ErrCode::kBadSubject;

// Printable ASCII, the only bytes a header line may hold; a token excludes the space.
constexpr char kFirstPrintable = 0x20;
constexpr char kLastPrintable = 0x7E;

// A uint64_t has at most 20 decimal digits.
constexpr size_t kMaxSeqDigits = 20;

// Appends to a fixed buffer, silently dropping what does not fit: never allocates, never overruns.
class Writer {
 public:
  Writer(char* buf, size_t cap) : buf_(buf), cap_(cap) {}
  Writer& put(std::string_view s) {
    const size_t n = s.size() < cap_ - len_ ? s.size() : cap_ - len_;
    if (n) std::memcpy(buf_ + len_, s.data(), n);
    len_ += n;
    return *this;
  }
  Writer& num(size_t v) {
    char digits[kMaxSeqDigits];
    size_t k = sizeof digits;
    do {
      digits[--k] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    return put(std::string_view(digits + k, sizeof digits - k));
  }
  Writer& hex(uint8_t b) {
    static const char kHex[] = "0123456789ABCDEF";
    const char text[4] = {'0', 'x', kHex[b >> 4], kHex[b & 15]};
    return put(std::string_view(text, 4));
  }
  // Echoes client text (already printable ASCII), cut to its first max - 3 bytes and "..." if longer.
  Writer& echo(std::string_view s, size_t max) {
    if (s.size() <= max) return put(s);
    return put(s.substr(0, max - 3)).put("...");
  }
  size_t size() const { return len_; }

 private:
  char* buf_;
  size_t cap_;
  size_t len_ = 0;
};

// Longest echo of a verb in an "unknown command" detail.
constexpr size_t kMaxVerbEcho = 32;

Writer detail_writer(Command* out) { return Writer(out->detail_buf, kMaxDetailLen); }

void fail(Command* out, ErrCode error, const Writer& w) {
  out->kind = Cmd::Invalid;
  out->error = error;
  out->detail_len = static_cast<uint16_t>(w.size());
}

void fail(Command* out, ErrCode error, std::string_view detail) {
  Writer w = detail_writer(out);
  w.put(detail);
  fail(out, error, w);
}

// "<subject>: <reason>" for a subject that breaks the rule (bad-subject).
void fail_subject(Command* out, std::string_view subject) {
  Writer w = detail_writer(out);
  w.echo(subject, kMaxSubjectLen).put(": ");
  const size_t n = w.size();
  fail(out, kBadSubject, w);
  out->detail_len = static_cast<uint16_t>(n + subject_problem(subject, out->detail_buf + n, kMaxDetailLen - n));
}

size_t count_tokens(std::string_view s) {
  size_t n = 0;
  while (!s.empty()) {
    next_token(&s);
    n++;
  }
  return n;
}

// Where a SUB token's form begins (PROTOCOL.md v2): the '#' of "<subject>#<digits>" or the '@' of
// "<subject>@<x>:<digits>" in its last segment; npos for a plain subject. The epoch part x is not checked
// here: a malformed one is reported as such, not taken as part of a literal subject name.
size_t spec_form_at(std::string_view token, SpecMode* mode) {
  const size_t slash = token.rfind('/');
  const size_t from = slash == std::string_view::npos ? 0 : slash + 1;
  const std::string_view last = token.substr(from);
  const size_t hash = last.rfind('#');
  if (hash != std::string_view::npos && all_digits(last.substr(hash + 1))) {
    *mode = SpecMode::kHistory;
    return from + hash;
  }
  const size_t at = last.rfind('@');
  if (at == std::string_view::npos) return std::string_view::npos;
  const std::string_view position = last.substr(at + 1);
  const size_t colon = position.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || !all_digits(position.substr(colon + 1)))
    return std::string_view::npos;
  *mode = SpecMode::kRecover;
  return from + at;
}

// Checks one SUB token: its form (bad-command) when `form`, else its subject (bad-subject). On failure
// fills out and returns false.
bool check_spec(std::string_view token, bool form, Command* out) {
  SpecMode mode = SpecMode::kLive;
  const size_t at = spec_form_at(token, &mode);
  const std::string_view subject = token.substr(0, at);
  if (!form) {
    if (valid_subject(subject)) return true;
    fail_subject(out, subject);
    return false;
  }
  if (mode == SpecMode::kHistory) {
    const std::string_view n = token.substr(at + 1);
    if (n.size() > kMaxHistoryDigits) {
      Writer w = detail_writer(out);
      w.echo(token, kMaxSubjectLen).put(": the history count has ").num(n.size()).put(
          " digits; ask for at most 999999999 messages (the cache holds MaxCachedMessagesPerSubject)");
      fail(out, kBadCommand, w);
      return false;
    }
  } else if (mode == SpecMode::kRecover) {
    const std::string_view position = token.substr(at + 1);
    const size_t colon = position.rfind(':');
    uint64_t v;
    if (!parse_epoch(position.substr(0, colon), &v)) {
      Writer w = detail_writer(out);
      w.echo(token, kMaxSubjectLen).put(": \"").echo(position.substr(0, colon), 20).put(
          "\" is not an epoch; use the one of the last MSG, SYNC or RESYNC received (lower-case base 36, at most ")
          .num(kMaxEpochLen).put(" characters)");
      fail(out, kBadCommand, w);
      return false;
    }
    if (!parse_decimal(position.substr(colon + 1), &v)) {
      Writer w = detail_writer(out);
      w.echo(token, kMaxSubjectLen).put(": the sequence number does not fit in 64 bits");
      fail(out, kBadCommand, w);
      return false;
    }
  }
  return true;
}

// "conflate=<ms>" at the start of a SUB.
bool parse_conflate(std::string_view token, Command* out) {
  constexpr std::string_view kKey = "conflate=";
  const std::string_view value = token.substr(kKey.size());
  uint64_t ms = 0;
  if (!all_digits(value) || value.size() > 6 || !parse_decimal(value, &ms) || ms < kConflateStepMs ||
      ms > kMaxConflateMs || ms % kConflateStepMs != 0) {
    Writer w = detail_writer(out);
    w.put("SUB ").echo(token, 40).put(": conflate takes milliseconds in steps of ").num(kConflateStepMs).put(
        " from ").num(kConflateStepMs).put(" to ").num(kMaxConflateMs).put(", e.g. \"SUB conflate=500 /a/b\"");
    fail(out, kBadCommand, w);
    return false;
  }
  out->conflate_ms = static_cast<uint32_t>(ms);
  return true;
}

void fail_body(Command* out, std::string_view verb, std::string_view body) {
  Writer w = detail_writer(out);
  w.put(verb).put(" takes no body, but ").num(body.size()).put(
      " bytes follow the newline; only PUB carries a payload (end the header without a newline or with "
      "nothing after it)");
  fail(out, kBadCommand, w);
}

void parse_subscription(Cmd kind, std::string_view args, std::string_view body, Command* out) {
  const std::string_view verb = kind == Cmd::Sub ? "SUB" : "UNSUB";
  if (args.empty()) {
    Writer w = detail_writer(out);
    w.put(verb).put(" needs at least one subject, e.g. \"").put(verb).put(" /a/b\"");
    return fail(out, kBadCommand, w);
  }
  if (!body.empty()) return fail_body(out, verb, body);
  if (kind == Cmd::Sub) {
    if (args.substr(0, 9) == "conflate=") {
      if (!parse_conflate(next_token(&args), out)) return;
      if (args.empty()) return fail(out, kBadCommand, "SUB conflate=<ms> needs at least one subject after it");
    }
    for (const bool form : {true, false})  // every bad-command check before the bad-subject one
      for (std::string_view rest = args; !rest.empty();)
        if (!check_spec(next_token(&rest), form, out)) return;
  } else {
    for (std::string_view rest = args; !rest.empty();) {
      const std::string_view token = next_token(&rest);
      if (!valid_subject(token)) return fail_subject(out, token);
    }
  }
  out->kind = kind;
  out->subjects = args;
}

void fail_too_long(Command* out, const char* what, size_t len) {
  Writer w = detail_writer(out);
  w.put(what).put(" is ").num(len).put(" characters long; the limit is ").num(kMaxIdLen);
  fail(out, kBadCommand, w);
}

void parse_pub(std::string_view args, std::string_view body, Command* out) {
  constexpr std::string_view kRetained = "+retained";
  const std::string_view subject = next_token(&args);
  std::string_view id = next_token(&args);
  std::string_view option;
  if (!id.empty() && id.front() == '+') {
    option = id;
    id = std::string_view();
  } else if (!args.empty() && args.front() == '+') {
    option = next_token(&args);
  }
  if (subject.empty())
    return fail(out, kBadCommand,
                "PUB needs a subject: \"PUB <subject> [<id>] [+retained]\", a newline, then the payload");
  if (!args.empty()) {
    Writer w = detail_writer(out);
    w.put("PUB takes a subject, an optional id and an optional +retained, got ")
        .num(1 + (id.empty() ? 0 : 1) + (option.empty() ? 0 : 1) + count_tokens(args))
        .put(" arguments; the payload goes after the first newline");
    return fail(out, kBadCommand, w);
  }
  if (id.size() > kMaxIdLen) return fail_too_long(out, "PUB id", id.size());
  if (!option.empty() && option != kRetained) {
    Writer w = detail_writer(out);
    w.put("PUB option \"").echo(option, 40).put("\" is unknown; the only option is +retained (ids may not begin with '+')");
    out->id = id;
    return fail(out, kBadCommand, w);
  }
  if (!valid_subject(subject)) {
    out->id = id;  // well-formed, so the reply can name it
    return fail_subject(out, subject);
  }
  out->kind = Cmd::Pub;
  out->subject = subject;
  out->id = id;
  out->body = body;
  out->retained = !option.empty();
}

void parse_ping(std::string_view args, std::string_view body, Command* out) {
  const std::string_view token = next_token(&args);
  if (!args.empty()) {
    Writer w = detail_writer(out);
    w.put("PING takes at most one token, got ").num(1 + count_tokens(args));
    return fail(out, kBadCommand, w);
  }
  if (token.size() > kMaxIdLen) return fail_too_long(out, "PING token", token.size());
  if (!body.empty()) return fail_body(out, "PING", body);
  out->kind = Cmd::Ping;
  out->id = token;
}

void parse_auth(std::string_view args, std::string_view body, Command* out) {
  const std::string_view token = next_token(&args);
  if (token.empty()) return fail(out, kBadCommand, "AUTH needs a token: \"AUTH <token>\"");
  if (!args.empty()) {
    Writer w = detail_writer(out);
    w.put("AUTH takes one token (no spaces), got ").num(1 + count_tokens(args));
    return fail(out, kBadCommand, w);
  }
  if (!body.empty()) return fail_body(out, "AUTH", body);
  out->kind = Cmd::Auth;
  out->id = token;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); k++) {
    char x = a[k], y = b[k];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 'a' + 'A');
    if (x != y) return false;
  }
  return true;
}

void fail_unknown_verb(std::string_view verb, Command* out) {
  constexpr std::string_view kCommands = "commands are SUB, UNSUB, PUB, PING and AUTH (upper case)";
  Writer w = detail_writer(out);
  w.put("unknown command \"").echo(verb, kMaxVerbEcho).put("\"; ");
  for (std::string_view known : {"SUB", "UNSUB", "PUB", "PING", "AUTH"}) {
    if (equals_ignoring_case(verb, known)) {
      w.put("commands are upper case: ").put(known);
      return fail(out, kBadCommand, w);
    }
  }
  for (std::string_view server : {"MSG", "ACK", "ERR", "PONG"}) {
    if (equals_ignoring_case(verb, server)) {
      w.put(server).put(" is a message the server sends; ");
      break;
    }
  }
  w.put(kCommands);
  fail(out, kBadCommand, w);
}

}  // namespace

const char* err_name(ErrCode code) {
  switch (code) {
    case ErrCode::kNone: return "";
    case ErrCode::kBadCommand: return "bad-command";
    case ErrCode::kBadSubject: return "bad-subject";
    case ErrCode::kTooLarge: return "too-large";
    case ErrCode::kLimit: return "limit";
    case ErrCode::kForbidden: return "forbidden";
    case ErrCode::kUnavailable: return "unavailable";
  }
  return "";
}

void parse_command(const uint8_t* msg, size_t len, Command* out) {
  // Reset every field but detail_buf (written only on failure).
  out->kind = Cmd::Invalid;
  out->subjects = out->subject = out->id = out->body = std::string_view();
  out->conflate_ms = 0;
  out->retained = false;
  out->error = ErrCode::kNone;
  out->detail_len = 0;
  const std::string_view all(reinterpret_cast<const char*>(msg), len);
  if (all.empty()) return fail(out, kBadCommand, "empty message; send a command such as \"PING\"");

  const size_t nl = all.find('\n');
  std::string_view header = all.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
  if (nl != std::string_view::npos && !header.empty() && header.back() == '\r') header.remove_suffix(1);

  for (size_t k = 0; k < header.size(); k++) {
    const char c = header[k];
    if (c >= kFirstPrintable && c <= kLastPrintable) continue;
    Writer w = detail_writer(out);
    if (c == '\r') {
      w.put("'\\r' at offset ").num(k).put(" of the header; a '\\r' is allowed only directly before the '\\n'");
    } else {
      w.put("header byte ").hex(static_cast<uint8_t>(c)).put(" at offset ").num(k).put(
          " is not printable ASCII (0x20-0x7E); only the PUB payload, after the first newline, may hold other "
          "bytes");
    }
    return fail(out, kBadCommand, w);
  }
  if (header.empty())
    return fail(out, kBadCommand, "empty header line; the command (e.g. \"PUB /a/b\") comes before the first newline");
  if (header.front() == ' ' || header.back() == ' ' || header.find("  ") != std::string_view::npos) {
    Writer w = detail_writer(out);
    w.put("tokens must be separated by single spaces; remove the ");
    if (header.front() == ' ') {
      w.put("leading space at offset 0");
    } else {
      const size_t twice = header.find("  ");
      if (twice != std::string_view::npos) {
        w.put("extra space at offset ").num(twice + 1);
      } else {
        w.put("trailing space at offset ").num(header.size() - 1);
      }
    }
    return fail(out, kBadCommand, w);
  }

  // From here no token is empty: next_token returns an empty view only at the end of the header.
  std::string_view args = header;
  const std::string_view verb = next_token(&args);
  if (verb == "SUB") return parse_subscription(Cmd::Sub, args, body, out);
  if (verb == "UNSUB") return parse_subscription(Cmd::Unsub, args, body, out);
  if (verb == "PUB") return parse_pub(args, body, out);
  if (verb == "PING") return parse_ping(args, body, out);
  if (verb == "AUTH") return parse_auth(args, body, out);
  return fail_unknown_verb(verb, out);
}

bool valid_subject(std::string_view s) {
  // Shortest subject: "/" and a one-byte segment.
  constexpr size_t kMinSubjectLen = 2;
  if (s.size() < kMinSubjectLen || s.size() > kMaxSubjectLen || s.front() != '/' || s.back() == '/')
    return false;
  char prev = '\0';
  for (char c : s) {
    if (c == '/') {
      if (prev == '/') return false;  // empty segment
    } else if (c <= kFirstPrintable || c > kLastPrintable || c == '*') {
      return false;  // space, control, non-ASCII or wildcard
    }
    prev = c;
  }
  return true;
}

size_t subject_problem(std::string_view s, char* out, size_t cap) {
  if (valid_subject(s)) return 0;
  Writer w(out, cap);
  if (s.empty()) {
    w.put("empty subject; a subject looks like /a/b");
  } else if (s.front() != '/') {
    w.put("must start with '/'");
  } else if (s.size() > kMaxSubjectLen) {
    w.put("longer than ").num(kMaxSubjectLen).put(" bytes (").num(s.size()).put(")");
  } else if (s.size() == 1) {
    w.put("needs a segment after the '/', e.g. /a");
  } else {
    // The first offending byte, in order; a trailing '/' is reported only if nothing comes before it.
    for (size_t k = 1; k < s.size(); k++) {
      const char c = s[k];
      if (c == '/' && s[k - 1] == '/') {
        w.put("empty segment (two '/' in a row at offset ").num(k - 1).put(")");
        return w.size();
      }
      if (c == '*') {
        w.put("contains '*' at offset ").num(k).put(" (wildcards are not allowed in subjects)");
        return w.size();
      }
      if (c <= kFirstPrintable || c > kLastPrintable) {
        w.put("contains a space or a control/non-ASCII byte (").hex(static_cast<uint8_t>(c)).put(
            ") at offset ").num(k);
        return w.size();
      }
    }
    w.put("ends with '/'; remove the trailing '/'");
  }
  return w.size();
}

std::string_view next_token(std::string_view* rest) {
  const size_t sp = rest->find(' ');
  const std::string_view token = rest->substr(0, sp);
  if (sp == std::string_view::npos) {
    *rest = std::string_view();
  } else {
    rest->remove_prefix(sp + 1);
  }
  return token;
}

namespace {

// "<seq>" as decimal digits into a 20-byte buffer; returns the view (inside buf).
std::string_view decimal(uint64_t v, char (&buf)[kMaxSeqDigits]) {
  size_t k = sizeof buf;
  do {
    buf[--k] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return std::string_view(buf + k, sizeof buf - k);
}

char* put(char* p, std::string_view s) {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

}  // namespace

size_t write_msg_header_backwards(char* out_end, std::string_view subject, std::string_view epoch,
                                  uint64_t seq, std::string_view kind) {
  char digits[kMaxSeqDigits];
  const std::string_view seq_text = decimal(seq, digits);
  const size_t total = 4 + subject.size() + 1 + epoch.size() + 1 + seq_text.size() +
                       (kind.empty() ? 0 : 1 + kind.size()) + 1;
  char* p = out_end - total;
  p = put(p, "MSG ");
  p = put(p, subject);
  p = put(p, " ");
  p = put(p, epoch);
  p = put(p, ":");
  p = put(p, seq_text);
  if (!kind.empty()) {
    p = put(p, " ");
    p = put(p, kind);
  }
  put(p, "\n");
  return total;
}

size_t write_position_line(char* out, std::string_view verb, std::string_view subject, std::string_view epoch,
                           uint64_t seq) {
  char digits[kMaxSeqDigits];
  char* p = put(out, verb);
  p = put(p, " ");
  p = put(p, subject);
  p = put(p, " ");
  p = put(p, epoch);
  p = put(p, ":");
  p = put(p, decimal(seq, digits));
  return static_cast<size_t>(p - out);
}

Spec parse_spec(std::string_view token) {
  Spec spec;
  const size_t at = spec_form_at(token, &spec.mode);
  spec.subject = token.substr(0, at);
  if (spec.mode == SpecMode::kHistory) {
    parse_decimal(token.substr(at + 1), &spec.seq);
  } else if (spec.mode == SpecMode::kRecover) {
    const std::string_view position = token.substr(at + 1);
    const size_t colon = position.rfind(':');
    parse_epoch(position.substr(0, colon), &spec.epoch);
    parse_decimal(position.substr(colon + 1), &spec.seq);
  }
  return spec;
}

bool parse_position_line(std::string_view line, PositionLine* out) {
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0) return false;
  std::string_view pos = line.substr(sp + 1);
  const size_t end = pos.find(' ');
  const std::string_view rest = end == std::string_view::npos ? std::string_view() : pos.substr(end + 1);
  pos = pos.substr(0, end);
  const size_t colon = pos.find(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view seq = pos.substr(colon + 1);
  uint64_t epoch = 0, n = 0;
  if (!parse_epoch(pos.substr(0, colon), &epoch) || !all_digits(seq) || !parse_decimal(seq, &n)) return false;
  *out = PositionLine{line.substr(0, sp), epoch, n, rest};
  return true;
}

bool parse_epoch(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > kMaxEpochLen) return false;
  uint64_t v = 0;
  for (char c : text) {
    uint64_t d;
    if (c >= '0' && c <= '9') d = static_cast<uint64_t>(c - '0');
    else if (c >= 'a' && c <= 'z') d = static_cast<uint64_t>(c - 'a' + 10);
    else return false;
    if (v > (UINT64_MAX - d) / 36) return false;
    v = v * 36 + d;
  }
  *out = v;
  return true;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool parse_decimal(std::string_view digits, uint64_t* out) {
  uint64_t v = 0;
  for (char c : digits) {
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

}  // namespace starling
