// Starling protocol v1 (docs/protocol.md): parsing client commands and writing server replies.
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

enum class Cmd : uint8_t { Sub, Unsub, Pub, Ping, Invalid };

// The `ERR <code>` codes of PROTOCOL.md. kNone: no error.
enum class ErrCode : uint8_t { kNone, kBadCommand, kBadSubject, kTooLarge, kLimit, kForbidden };
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
  std::string_view id;        // Pub: the optional id (empty if none); Ping: the optional token
  std::string_view body;      // Pub: every byte after the first '\n' (may be empty)
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
// case-sensitive, SUB/UNSUB need at least one subject, PUB takes a subject and an optional id, PING an
// optional token. Reserved verbs (AUTH) and everything else are bad-command, and so is a SUB subject in
// a reserved form (PROTOCOL.md: "<subject>@<epoch>:<seq>", "<subject>#<n>", i.e. a last segment ending
// in "@<epoch>:<digits>" or "#<digits>"). A SUB/UNSUB/PUB subject that fails valid_subject() is bad-subject.
// Only PUB may have a body: SUB, UNSUB and PING with a non-empty body are bad-command. Every
// bad-command check comes before the bad-subject check.
void parse_command(const uint8_t* msg, size_t len, Command* out);

// PROTOCOL.md subject rule: '/' then one or more non-empty segments separated by '/', segment bytes
// printable ASCII 0x21-0x7E except '/' and '*', total length <= 255.
bool valid_subject(std::string_view s);

// Why s breaks the subject rule, as a reason that says what to change ("must start with '/'", "empty
// segment (two '/' in a row at offset 3)", ...), written into out[0..cap) (truncated to cap); returns the
// length written, 0 when s is a valid subject. Allocation-free.
size_t subject_problem(std::string_view s, char* out, size_t cap);

// Splits off the first space-separated token of *rest (advancing *rest past it and its space). Returns
// an empty view when *rest is empty.
std::string_view next_token(std::string_view* rest);

// Writes "MSG <subject> <epoch>:<seq>\n" ending exactly at out_end (right-aligned, so the payload can
// already sit after it in the same buffer). Returns the number of bytes written (<= kMaxMsgHeader when
// subject <= 255 and epoch <= 16 bytes, which the caller guarantees; nothing is checked).
size_t write_msg_header_backwards(char* out_end, std::string_view subject, std::string_view epoch,
                                  uint64_t seq);

}  // namespace starling
