// Starling protocol v1. See protocol.h and PROTOCOL.md for the rules.
#include "pubsub/protocol.h"

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

void fail(Command* out, ErrCode error, const char* detail) {
  out->kind = Cmd::Invalid;
  out->error = error;
  out->detail = detail;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// PROTOCOL.md reserves "SUB <subject>@<epoch>:<seq>" and "SUB <subject>#<n>" for later versions; a
// token of either shape is refused (bad-command) rather than taken as a literal subject, so that a
// later version can give it its meaning.
bool reserved_sub_form(std::string_view token) {
  const size_t slash = token.rfind('/');
  const std::string_view last = slash == std::string_view::npos ? token : token.substr(slash + 1);
  const size_t hash = last.rfind('#');
  if (hash != std::string_view::npos && all_digits(last.substr(hash + 1))) return true;
  const size_t at = last.rfind('@');
  if (at == std::string_view::npos) return false;
  const std::string_view position = last.substr(at + 1);
  const size_t colon = position.rfind(':');
  return colon != std::string_view::npos && colon > 0 && all_digits(position.substr(colon + 1));
}

void parse_subscription(Cmd kind, std::string_view args, std::string_view body, Command* out) {
  if (args.empty()) return fail(out, kBadCommand, "missing subject");
  if (!body.empty()) return fail(out, kBadCommand, "body not allowed");
  if (kind == Cmd::Sub) {
    for (std::string_view rest = args; !rest.empty();) {
      if (reserved_sub_form(next_token(&rest)))
        return fail(out, kBadCommand, "subscription position/history is not supported in v1");
    }
  }
  for (std::string_view rest = args; !rest.empty();) {
    if (!valid_subject(next_token(&rest))) return fail(out, kBadSubject, "invalid subject");
  }
  out->kind = kind;
  out->subjects = args;
}

void parse_pub(std::string_view args, std::string_view body, Command* out) {
  const std::string_view subject = next_token(&args);
  const std::string_view id = next_token(&args);
  if (subject.empty()) return fail(out, kBadCommand, "missing subject");
  if (!args.empty()) return fail(out, kBadCommand, "too many arguments");
  if (id.size() > kMaxIdLen) return fail(out, kBadCommand, "id longer than 64 characters");
  if (!valid_subject(subject)) {
    out->id = id;  // well-formed, so the reply can name it
    return fail(out, kBadSubject, "invalid subject");
  }
  out->kind = Cmd::Pub;
  out->subject = subject;
  out->id = id;
  out->body = body;
}

void parse_ping(std::string_view args, std::string_view body, Command* out) {
  const std::string_view token = next_token(&args);
  if (!args.empty()) return fail(out, kBadCommand, "too many arguments");
  if (token.size() > kMaxIdLen) return fail(out, kBadCommand, "token longer than 64 characters");
  if (!body.empty()) return fail(out, kBadCommand, "body not allowed");
  out->kind = Cmd::Ping;
  out->id = token;
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
  }
  return "";
}

void parse_command(const uint8_t* msg, size_t len, Command* out) {
  *out = Command{};
  out->kind = Cmd::Invalid;
  const std::string_view all(reinterpret_cast<const char*>(msg), len);
  if (all.empty()) return fail(out, kBadCommand, "empty message");

  const size_t nl = all.find('\n');
  std::string_view header = all.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
  if (nl != std::string_view::npos && !header.empty() && header.back() == '\r') header.remove_suffix(1);

  for (char c : header) {
    if (c < kFirstPrintable || c > kLastPrintable)
      return fail(out, kBadCommand, "header must be printable ASCII");
  }
  if (header.empty()) return fail(out, kBadCommand, "empty header");
  if (header.front() == ' ' || header.back() == ' ' || header.find("  ") != std::string_view::npos)
    return fail(out, kBadCommand, "tokens must be separated by single spaces");

  // From here no token is empty: next_token returns an empty view only at the end of the header.
  std::string_view args = header;
  const std::string_view verb = next_token(&args);
  if (verb == "SUB") return parse_subscription(Cmd::Sub, args, body, out);
  if (verb == "UNSUB") return parse_subscription(Cmd::Unsub, args, body, out);
  if (verb == "PUB") return parse_pub(args, body, out);
  if (verb == "PING") return parse_ping(args, body, out);
  return fail(out, kBadCommand, "unknown command");  // includes the reserved AUTH
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

size_t write_msg_header_backwards(char* out_end, std::string_view subject, std::string_view epoch,
                                  uint64_t seq) {
  char digits[kMaxSeqDigits];
  size_t k = sizeof digits;
  do {
    digits[--k] = static_cast<char>('0' + seq % 10);
    seq /= 10;
  } while (seq != 0);
  const std::string_view seq_text(digits + k, sizeof digits - k);

  const size_t total = 4 + subject.size() + 1 + epoch.size() + 1 + seq_text.size() + 1;
  char* p = out_end - total;
  auto put = [&p](std::string_view s) {
    std::memcpy(p, s.data(), s.size());
    p += s.size();
  };
  put("MSG ");
  put(subject);
  put(" ");
  put(epoch);
  put(":");
  put(seq_text);
  put("\n");
  return total;
}

}  // namespace starling
