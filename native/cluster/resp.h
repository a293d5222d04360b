// The Redis protocol for the cluster link: an encoder for commands (RESP arrays of bulk strings, which every
// Redis version accepts) and an incremental parser for replies of RESP2 and RESP3 (every reply type of
// RESP3, pushes included). Pure bytes in, values out: no system calls, no threads, no sockets.
//
// The parser treats its input as hostile. Lengths are plain decimal (no sign, no leading zero; "-1" only as
// the RESP2 null of `$` and `*`), every line ends in CRLF, lines and strings and aggregates and nesting and
// the whole reply are bounded by Limits, and a violation is reported as soon as the bytes showing it are in,
// not when the rest of a too-long item would have arrived. Its work is linear in the bytes fed, however they
// are split (it resumes where it stopped instead of rescanning), and the only exception it throws is
// std::bad_alloc from space() and append().
//
// RESP3 attributes (`|`) are skipped: an attribute is parsed (under the same limits) and dropped, and the
// value it annotates takes its place. Streamed strings and aggregates (`$?`, `*?`, `%?`, ...) are refused.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace starling::resp {

// ---- encoder ----

// Appends one command to out as a RESP array of bulk strings: "*N\r\n" then "$len\r\n<arg>\r\n" per argument.
// Arguments are binary-safe (any bytes, CR and LF included); an empty argument is "$0\r\n\r\n" and no
// arguments at all is "*0\r\n" (which Redis ignores). out grows once.
void command(std::string& out, std::initializer_list<std::string_view> args);
void command(std::string& out, const std::string_view* args, size_t n);

// ---- parser ----

enum class Type : uint8_t {
  kSimple,     // +text
  kError,      // -text, and RESP3's blob error !len
  kInteger,    // :n
  kBulk,       // $len (blob string)
  kNull,       // RESP3 _, RESP2's $-1 and *-1
  kArray,      // *n
  kPush,       // >n (RESP3 out-of-band data: pub/sub messages)
  kMap,        // %n (n pairs: 2n children, key, value, key, value, ...)
  kSet,        // ~n
  kDouble,     // ,text (the text as sent: digits, inf, nan)
  kBoolean,    // #t, #f
  kVerbatim,   // =len (blob with a 3-byte format and ':' in front, "txt:...")
  kBigNumber,  // (text (optional sign, then digits)
};

// True for the types with children: kArray, kPush, kMap, kSet.
constexpr bool is_aggregate(Type t) {
  return t == Type::kArray || t == Type::kPush || t == Type::kMap || t == Type::kSet;
}

// One parsed value. Strings are views into the parser's buffer, valid until the next call to next(), space()
// or append() on that parser.
struct Value {
  Type type = Type::kNull;
  // kInteger: the value. kBoolean: 0 or 1. Aggregates: the number of children (a map of n pairs has 2n).
  // 0 for the other types.
  int64_t integer = 0;
  // kSimple, kError (either form), kBulk, kDouble, kBigNumber: the bytes as sent. kVerbatim: the payload after
  // its format prefix ("txt:"). Empty for the other types.
  std::string_view str;
  // Aggregates: where their children start in the reply's value list (see Parser::child); 0 otherwise.
  uint32_t first = 0;
};

struct Limits {
  uint64_t max_bulk = 512ull << 20;  // longest blob ($ ! =) accepted: Redis's own proto-max-bulk-len default
  uint32_t max_elements = 1u << 20;  // most children of one aggregate (a map of n pairs counts 2n)
  uint32_t max_depth = 8;            // deepest nesting of aggregates, attributes included (1: no nesting,
                                     // 0: no aggregates at all; a null array is no aggregate)
  uint32_t max_line = 64 * 1024;     // longest content of a + - : , ( line, CRLF not counted
  uint64_t max_buffer = 1ull << 30;  // largest reply, in bytes; also bounds the buffer (see space())
  // Most values in one reply, all levels, attributes included; room for an aggregate of max_elements
  // scalars, or of as many small pairs. A reply's values cost 72 bytes each (a 32-byte node while parsing,
  // then a 40-byte Value) against as few as 3 bytes of input ("_\r\n"), so this bounds that memory apart from
  // max_buffer: ~150 MiB at the default (vector slack aside). It also keeps the uint32_t indexes of the
  // value list in range (above UINT32_MAX - 1 it counts as that).
  uint32_t max_values = 1u << 21;
};

// Parses a stream of replies. Feed bytes with space() + commit() (or append()), then call next() until it
// says kNeedMore; each kReply is one top-level reply, in stream order.
//
// Values of a reply are held in one flat list in breadth-first order: the root is element 0 and the
// children of every aggregate lie contiguously at [first, first + integer), so child() is one index. (The
// parser collects values depth-first as bytes arrive and reorders them once, when the reply is complete.)
class Parser {
 public:
  enum class Status : uint8_t {
    kReply,     // a complete reply: root(), child() and raw() are valid until the next next()/space()/append()
    kNeedMore,  // the bytes so far are a valid prefix: feed more and call again
    kError,     // the stream is broken (error() says why); this and every later next() returns kError
  };

  explicit Parser(Limits limits = {});
  // Neither copied nor moved (views into its buffer are handed out); hold one by unique_ptr to move it.
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Room to receive into: at least `min` writable bytes at the returned pointer; then commit(n) the n bytes
  // written there. Ends the life of the last reply's values. Reclaims consumed bytes lazily: only when the
  // room is short, by moving the bytes still held to the front (or while growing); gives back a buffer over
  // 1 MiB once the bytes held fit in a quarter of it. Throws std::bad_alloc if the buffer cannot grow.
  // Memory: a caller that runs next() to kNeedMore between reads has a buffer of at most
  // max(max_buffer + its largest read, 16 KiB), and the old one too while it grows; after kError the
  // buffer is freed and committed bytes are dropped. Copying is amortized O(1) per byte fed.
  uint8_t* space(size_t min);
  // Adds n bytes written at space(); n must not exceed the room space() gave (more is clamped to it).
  void commit(size_t n);
  // space(n), memcpy, commit(n).
  void append(const void* p, size_t n);

  // Parses the next complete top-level reply (an attribute before it is skipped). Errors, with error() text:
  // an unknown type byte; a line without CRLF (a CR not followed by LF, a bare LF); a line longer than its
  // limit (max_line, or 20 bytes for lengths, booleans and nulls); a malformed length (empty, not digits,
  // a leading zero, negative other than the "-1" null of $ and *, above 64 bits) or a streamed one ("?");
  // a malformed integer (or one outside int64), double, boolean, null or big number; a blob over max_bulk
  // or whose payload is not followed by CRLF; a verbatim string without its "xxx:" format; an aggregate over
  // max_elements, nesting over max_depth, values over max_values; a reply over max_buffer bytes.
  Status next();

  // The root value of the reply next() returned (a kNull value when there is none).
  const Value& root() const;
  // The i-th child of aggregate v of the current reply, 0 <= i < v.integer; O(1). A kNull value if v is
  // not an aggregate or i is out of range.
  const Value& child(const Value& v, uint32_t i) const;
  // The bytes of the reply next() returned, as received (an attribute before it included).
  std::string_view raw() const;
  // Why the stream broke, with the stream offset (bytes since the parser's start) of the item at fault, or
  // of the reply's start for max_buffer: fit for a log line. Empty before kError.
  std::string_view error() const;
  // Bytes held: the current reply's and those not parsed yet (0 after kError).
  size_t buffered() const;

 private:
  // A value as collected while parsing, in depth-first order. String bytes are located by their offset
  // from the start of the reply, which stays valid when the buffer moves.
  struct Node {
    int64_t integer;  // as Value::integer
    uint64_t off;     // string types: the payload's offset from reply_
    uint64_t len;     // string types: the payload's length
    uint32_t end;     // index one past the last node of this value's subtree (index + 1 for a leaf)
    Type type;
  };
  // An aggregate still waiting for children.
  struct Frame {
    uint32_t node;       // its Node
    uint64_t remaining;  // children still to come
    bool attribute;      // a `|` attribute: dropped when complete, and not a child of its parent
  };

  // Breaks the stream: error() becomes `what` and the stream offset given; the buffer is dropped.
  Status fail(uint64_t offset, std::string what);
  Status too_large();
  Status need_more();
  // Appends a node (false, after fail(), past max_values); `at` is the item's stream offset for the error.
  bool add_node(Type type, int64_t integer, size_t off, size_t len, uint64_t at);
  // A value at the current level is complete: counts it in its parent, closing every parent it completes.
  void value_done();
  // Reorders the complete reply's nodes into values_.
  void finish_reply();
  // Ends the life of the returned reply's values and consumes its bytes.
  void release_reply();
  void reset_buffer();

  Limits limits_;
  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_ = 0;
  // Offsets into buf_: reply_ <= pos_ <= end_ <= cap_. reply_ starts the reply being parsed (or returned),
  // pos_ is the first byte not yet consumed by it, end_ ends the committed bytes.
  size_t reply_ = 0;
  size_t pos_ = 0;
  size_t end_ = 0;
  uint64_t stream_base_ = 0;  // stream offset of buf_[0], for error messages
  // Resume state of the item at pos_: how many bytes of its line have been scanned without finding its
  // end, or (in_blob_) the blob whose header has been consumed and whose payload is awaited at pos_.
  size_t scan_ = 0;
  bool in_blob_ = false;
  Type blob_type_ = Type::kBulk;
  uint64_t blob_len_ = 0;
  uint64_t blob_at_ = 0;  // stream offset of the blob's type byte, for error messages

  std::vector<Frame> stack_;
  std::vector<Node> nodes_;
  std::vector<Value> values_;
  bool have_reply_ = false;
  bool failed_ = false;
  std::string error_;
};

}  // namespace starling::resp
