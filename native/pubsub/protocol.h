// Starling protocol v2 (docs/protocol.md): parsing client commands and writing server replies.
// Pure functions over bytes. A command is one WebSocket message: a header line up to the first '\n'
// (a '\r' before it is ignored), then a binary-safe body.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace starling {

constexpr size_t kMaxSubjectLen = 255;   // PROTOCOL.md: subjects are at most 255 bytes
constexpr size_t kMaxIdLen = 64;         // PROTOCOL.md: PUB ids and PING tokens are 1-64 printable chars
// Longest header line a valid command can have that carries a body (PUB): "PUB " + subject + " " + id.
// A WebSocket message may exceed MaxMessageSize by this much, so that a payload of exactly
// MaxMessageSize bytes is accepted.
constexpr size_t kMaxPubHeader = 4 + kMaxSubjectLen + 1 + kMaxIdLen + 2;
// Longest MSG header the server writes in front of a payload:
// "MSG " + subject + " " + epoch (<= 16) + ":" + seq (<= 20 digits) + "\n".
constexpr size_t kMaxMsgHeader = 4 + kMaxSubjectLen + 1 + 16 + 1 + 20 + 1;
// The kinds a MSG may carry after its position (v2): " snapshot", " history", " recovered".
constexpr size_t kMaxKindLen = 10;
// "SUB conflate=<ms>": steps of 100 ms (the resolution of the conflation timer), at most a minute (a
// longer interval is a poll: ask for history instead).
constexpr uint32_t kConflateStepMs = 100;
constexpr uint32_t kMaxConflateMs = 60000;
// "SUB <subject>#<n>": n has at most 9 digits (the cache holds far fewer; more is a typo).
constexpr size_t kMaxHistoryDigits = 9;
// A base-36 epoch token of a uint64_t has at most 13 characters.
constexpr size_t kMaxEpochLen = 13;
// "AUTH <token>": an entitlement token (a JWT, or the Basic allow-token) is at most this many bytes. Ample
// for a header, the registered claims and a few dozen permission patterns; a longer one is answered
// "AUTH invalid too large" without being looked at (nothing of it crosses to TypeScript).
constexpr size_t kMaxTokenLen = 8192;
// Longest AUTH command that gets an answer rather than a 1009 close: a WebSocket message may be this long
// even when MaxMessageSize is smaller, so that "AUTH <token of kMaxTokenLen + 1 bytes>" still gets its answer.
constexpr size_t kMaxAuthCommand = 5 + kMaxTokenLen + 64;
// At most this many AUTH commands of one connection cross to the control plane per pass (a second); more
// are answered "AUTH invalid too many" at once (Broker::authenticate; HTTP requests that change tokens count
// too). One crossing at a time per connection already (its later commands wait for the decision); this bounds
// the control plane's work a single client can cause.
constexpr uint8_t kMaxAuthsPerPass = 4;
// The start of the detail of "AUTH invalid" for an AUTH over kMaxAuthsPerPass (broker.h): the HTTP transport
// recognises it (a request that switches tokens too often is answered 429, not 401).
constexpr std::string_view kAuthTooMany = "too many AUTH commands";

// What one SUB token asks for (PROTOCOL.md v2).
enum class SpecMode : uint8_t {
  kLive,      // "<subject>": the retained snapshot if any, then live
  kRecover,   // "<subject>@<epoch>:<seq>": what came after that position, SYNC, live (or RESYNC)
  kHistory,   // "<subject>#<n>": the snapshot if older than the history, the last n cached, SYNC, live
};
struct Spec {
  std::string_view subject;
  SpecMode mode = SpecMode::kLive;
  uint64_t epoch = 0;   // kRecover
  uint64_t seq = 0;     // kRecover: the last position the client holds; kHistory: n
};

enum class Cmd : uint8_t { Sub, Unsub, Pub, Ping, Auth, Invalid };

// The `ERR <code>` codes of PROTOCOL.md. kNone: no error.
// kUnavailable: ClusterEngine = redis and the engine cannot take a publish now (Redis unreachable, or the link
// lost before Redis answered: the outcome is then unknown).
enum class ErrCode : uint8_t { kNone, kBadCommand, kBadSubject, kTooLarge, kLimit, kForbidden, kUnavailable };
// The code as written on the wire ("bad-command", ...); "" for kNone.
const char* err_name(ErrCode code);

// Longest detail parse_command writes (an echoed subject of at most kMaxSubjectLen bytes plus the reason).
constexpr size_t kMaxDetailLen = 400;

struct Command {
  Cmd kind = Cmd::Invalid;
  // Sub/Unsub: the subjects, space-separated exactly as sent (iterate with next_token). Every one has
  // been checked with valid_subject().
  std::string_view subjects;
  std::string_view subject;   // Pub
  std::string_view id;        // Pub: the optional id (empty if none); Ping: the optional token; Auth: the
                              // token (1 or more printable bytes without spaces; its length is not bounded
                              // here: the caller answers one over kMaxTokenLen)
  std::string_view body;      // Pub: every byte after the first '\n' (may be empty)
  uint32_t conflate_ms = 0;   // Sub: "conflate=<ms>" (0: none)
  bool retained = false;      // Pub: "+retained"
  // Invalid: the error code to send (kBadCommand, kBadSubject) and, when the command was a PUB
  // with a well-formed id, that id (so the reply can be "ERR <code> <id>"). (A PUB header that is
  // malformed is bad-command with no id: the id is set only with bad-subject.)
  ErrCode error = ErrCode::kNone;
  // Invalid: the detail for humans, 1..kMaxDetailLen printable ASCII bytes, saying what is wrong and what
  // to change; for a refused subject it begins with "<subject>: " (a subject over kMaxSubjectLen bytes
  // is echoed cut to its first bytes and "..."). Written into detail_buf, so parsing never allocates;
  // the buffer is left uninitialized (not touched) for a valid command.
  std::string_view detail() const { return std::string_view(detail_buf, detail_len); }
  uint16_t detail_len = 0;
  char detail_buf[kMaxDetailLen];
};

// Parses one client message. Never fails on hostile input: anything unparseable is Cmd::Invalid with
// error set. Rules (PROTOCOL.md): the header is printable ASCII (0x20-0x7E; '\r' only directly before
// '\n'), tokens are separated by exactly one space (no leading/trailing/double spaces), the verb is
// case-sensitive, SUB/UNSUB need at least one subject, SUB may start with "conflate=<ms>" and its tokens
// are specs (parse_spec), PUB takes a subject, an optional id and an optional "+retained", PING an
// optional token, AUTH exactly one token. Everything else is bad-command, and so is a malformed
// position or count in a SUB spec. A subject that fails valid_subject() is bad-subject.
// Only PUB may have a body: SUB, UNSUB, PING and AUTH with a non-empty body are bad-command. Every
// bad-command check comes before the bad-subject check.
void parse_command(const uint8_t* msg, size_t len, Command* out);

// PROTOCOL.md subject rule: '/' then one or more non-empty segments separated by '/', segment bytes
// printable ASCII 0x21-0x7E except '/' and '*', total length <= 255.
bool valid_subject(std::string_view s);

// Why s breaks the subject rule, as a reason that says what to change ("must start with '/'", "empty
// segment (two '/' in a row at offset 3)", ...), written into out[0..cap) (truncated to cap); returns the
// length written, 0 when s is a valid subject. Allocation-free.
size_t subject_problem(std::string_view s, char* out, size_t cap);

// Splits one token of a parsed SUB (Command::subjects) into its subject and what it asks for: a last
// segment ending in "#<digits>" is history, one ending in "@<epoch>:<digits>" a recovery, anything else
// a plain subject. parse_command has checked every token of a Cmd::Sub.
Spec parse_spec(std::string_view token);

// A base-36 epoch token ([0-9a-z]{1,13}, fitting in 64 bits) as written by format_epoch. False if not one.
bool parse_epoch(std::string_view text, uint64_t* out);

// The position part of a server line as a client reads it: what follows "MSG ", "SYNC " or "RESYNC " up to
// the end of the line, "<subject> <epoch>:<seq>[ <rest>]" (rest: MSG's kind, empty for a live message). The
// views point into the line. Server output is input to a client: anything else is refused (false) — an empty
// subject, an epoch parse_epoch refuses, a seq that is not decimal or does not fit in 64 bits.
struct PositionLine {
  std::string_view subject;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  std::string_view rest;
};
bool parse_position_line(std::string_view line, PositionLine* out);

// True if s is non-empty and all ASCII digits.
bool all_digits(std::string_view s);

// The value of a string of ASCII digits (checked by the caller: see all_digits); false when it does not fit
// in 64 bits.
bool parse_decimal(std::string_view digits, uint64_t* out);

// Splits off the first space-separated token of *rest (advancing *rest past it and its space). Returns
// an empty view when *rest is empty.
std::string_view next_token(std::string_view* rest);

// Writes "MSG <subject> <epoch>:<seq>[ <kind>]\n" ending exactly at out_end (right-aligned, so the payload
// can already sit after it in the same buffer). Returns the number of bytes written (<= kMaxMsgHeader +
// kMaxKindLen when subject <= 255 and epoch <= 16 bytes and kind <= 9, which the caller guarantees;
// nothing is checked).
size_t write_msg_header_backwards(char* out_end, std::string_view subject, std::string_view epoch,
                                  uint64_t seq, std::string_view kind = {});

// Writes "<verb> <subject> <epoch>:<seq>" (SYNC, RESYNC) at out, which has room for kMaxMsgHeader +
// kMaxKindLen bytes; returns its length.
size_t write_position_line(char* out, std::string_view verb, std::string_view subject, std::string_view epoch,
                           uint64_t seq);

}  // namespace starling
