// The Redis protocol for the cluster link. See resp.h for the contracts.
#include "cluster/resp.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <new>

namespace starling::resp {

namespace {

constexpr std::string_view kCrlf = "\r\n";
// Decimal digits of UINT64_MAX.
constexpr size_t kMaxDigits = 20;
// Longest content of a length, boolean or null line: any uint64 fits (and "-1" and "t" do). Bounding these
// lines apart from max_line refuses a runaway length as soon as its 21st byte arrives.
constexpr size_t kShortLine = kMaxDigits;
// Bytes in front of a verbatim string's text: a 3-byte format and ':' ("txt:").
constexpr size_t kVerbatimPrefix = 4;
constexpr size_t kVerbatimColon = 3;
// First buffer allocated: a few typical replies, and a socket read's worth.
constexpr size_t kInitialBuffer = 16 * 1024;
// A buffer larger than this is given back (reallocated smaller) once the bytes held fit in a quarter of it,
// so one huge reply does not pin its memory for the life of the link.
constexpr size_t kRetainBuffer = 1 << 20;
// Value and node lists larger than this (in entries) are freed after their reply, for the same reason.
constexpr size_t kRetainValues = 1 << 16;
// Bytes of a string quoted into an error message.
constexpr size_t kQuoteMax = 32;
// The value list is indexed with uint32_t, and `end` is one past an index.
constexpr uint32_t kMaxValuesCap = UINT32_MAX - 1;

const Value kNullValue{};

// Digits of n in decimal, written at out (which holds kMaxDigits bytes); returns how many.
size_t decimal(char* out, uint64_t n) {
  const std::to_chars_result r = std::to_chars(out, out + kMaxDigits, n);
  return static_cast<size_t>(r.ptr - out);
}

void put_header(std::string& out, char type, uint64_t n) {
  char digits[kMaxDigits];
  out += type;
  out.append(digits, decimal(digits, n));
  out += kCrlf;
}

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

// s for an error message: printable ASCII as is, other bytes as \xNN, at most kQuoteMax bytes, in quotes.
std::string quote(std::string_view s) {
  std::string q = "\"";
  for (size_t i = 0; i < s.size() && i < kQuoteMax; i++) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      q += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      q += "\\x";
      q += kHex[c >> 4];
      q += kHex[c & 0xF];
    }
  }
  if (s.size() > kQuoteMax) q += "...";
  return q + "\"";
}

std::string number(uint64_t n) {
  char digits[kMaxDigits];
  return std::string(digits, decimal(digits, n));
}

// Parses a length: plain decimal digits without a leading zero, or "-1" (a null) where allow_null. Returns
// nullptr with *n (or *is_null) set, or the error text.
const char* parse_length(std::string_view s, bool allow_null, uint64_t* n, bool* is_null) {
  *is_null = false;
  if (s.empty()) return "empty length";
  if (s[0] == '-') {
    if (s == "-1") {
      if (allow_null) {
        *is_null = true;
        return nullptr;
      }
      return "length -1 (a null only after $ and *)";
    }
    return "negative length";
  }
  if (s.size() > 1 && s[0] == '0') return "length with a leading zero";
  uint64_t v = 0;
  for (char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    if (!is_digit(c)) return "length is not a number";
    const uint64_t d = c - '0';
    if (v > (UINT64_MAX - d) / 10) return "length above 64 bits";
    v = v * 10 + d;
  }
  *n = v;
  return nullptr;
}

// Parses a RESP integer: an optional sign and one or more digits, within int64. Returns nullptr or the
// error text.
const char* parse_integer(std::string_view s, int64_t* out) {
  size_t i = 0;
  const bool negative = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) i++;
  if (i == s.size()) return "malformed integer";
  // The magnitude allowed: 2^63 for a negative number, 2^63 - 1 otherwise.
  const uint64_t max = negative ? uint64_t(1) << 63 : (uint64_t(1) << 63) - 1;
  uint64_t v = 0;
  for (; i < s.size(); i++) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (!is_digit(c)) return "malformed integer";
    const uint64_t d = c - '0';
    if (v > (max - d) / 10) return "integer outside 64 bits";
    v = v * 10 + d;
  }
  // Two's complement without signed overflow: -2^63 is (0 - 2^63) in uint64 converted back.
  *out = negative ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return nullptr;
}

// Skips the digits at s[*i]. False if there is none.
bool skip_digits(std::string_view s, size_t* i) {
  const size_t from = *i;
  while (*i < s.size() && is_digit(static_cast<uint8_t>(s[*i]))) ++*i;
  return *i > from;
}

bool equals_ignoring_case(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

// A RESP3 double: [sign] digits [. digits] [(e|E) [sign] digits], or [sign] inf / nan. Redis before 7.2 sent
// whatever libc printed for infinities and NaN, so those words are accepted in any case, "infinity" too,
// and "nan(chars)" with letters, digits and '_' inside.
bool valid_double(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
  const std::string_view word = s.substr(i);
  if (equals_ignoring_case(word, "inf") || equals_ignoring_case(word, "infinity") ||
      equals_ignoring_case(word, "nan"))
    return true;
  constexpr std::string_view kNanOpen = "nan(";
  if (word.size() > kNanOpen.size() && equals_ignoring_case(word.substr(0, kNanOpen.size()), kNanOpen) &&
      word.back() == ')') {
    for (size_t k = kNanOpen.size(); k + 1 < word.size(); k++) {
      const auto c = static_cast<uint8_t>(word[k]);
      if (!is_digit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && c != '_') return false;
    }
    return true;
  }
  if (!skip_digits(s, &i)) return false;
  if (i < s.size() && s[i] == '.') {
    i++;
    if (!skip_digits(s, &i)) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
    if (!skip_digits(s, &i)) return false;
  }
  return i == s.size();
}

// A RESP3 big number: an optional sign and one or more digits.
bool valid_big_number(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
  return skip_digits(s, &i) && i == s.size();
}

// Types whose Value carries str.
bool has_text(Type t) {
  return t == Type::kSimple || t == Type::kError || t == Type::kBulk || t == Type::kVerbatim ||
         t == Type::kDouble || t == Type::kBigNumber;
}

}  // namespace

// ---- encoder ----

void command(std::string& out, std::initializer_list<std::string_view> args) {
  command(out, args.begin(), args.size());
}

void command(std::string& out, const std::string_view* args, size_t n) {
  // Per header: the type byte, its digits, CRLF; per argument also its bytes and CRLF.
  constexpr size_t kHeaderMax = 1 + kMaxDigits + kCrlf.size();
  size_t total = kHeaderMax;
  for (size_t i = 0; i < n; i++) total += kHeaderMax + args[i].size() + kCrlf.size();
  out.reserve(out.size() + total);
  put_header(out, '*', n);
  for (size_t i = 0; i < n; i++) {
    put_header(out, '$', args[i].size());
    out += args[i];
    out += kCrlf;
  }
}

// ---- parser ----

Parser::Parser(Limits limits) : limits_(limits) {
  if (limits_.max_values > kMaxValuesCap) limits_.max_values = kMaxValuesCap;
}

uint8_t* Parser::space(size_t min) {
  release_reply();
  const size_t live = end_ - reply_;
  if (min > SIZE_MAX - live) throw std::bad_alloc();
  const size_t need = live + min;
  const bool oversized = cap_ > kRetainBuffer && need <= cap_ / 4;
  if (!oversized) {
    if (cap_ - end_ >= min) return buf_.get() + end_;
    // Move the held bytes to the front. They are (when the caller drains next() between reads) the start of
    // one reply, which is moved at most once: from then on it starts at 0 and, being at most max_buffer
    // bytes, fits a buffer grown as below. So moves cost at most the bytes fed.
    if (cap_ >= need) {
      std::memmove(buf_.get(), buf_.get() + reply_, live);
      stream_base_ += reply_;
      pos_ -= reply_;
      end_ -= reply_;
      reply_ = 0;
      return buf_.get() + end_;
    }
  }
  size_t new_cap;
  if (oversized) {
    new_cap = std::max(kRetainBuffer, 2 * need);
  } else {
    // Double. While the bytes held are under max_buffer (always, for a caller that drains next() between
    // reads) no more than max_buffer + min is ever needed, so no more is taken; a caller that lets more pile
    // up gets plain doubling.
    size_t grow = std::max(kInitialBuffer, cap_ <= SIZE_MAX / 2 ? cap_ * 2 : SIZE_MAX);
    if (live < limits_.max_buffer) {
      const auto most = static_cast<size_t>(
          std::min<uint64_t>(limits_.max_buffer, SIZE_MAX - min) + min);  // saturates, never wraps
      grow = std::min(grow, most);
    }
    new_cap = std::max(need, grow);
  }
  std::unique_ptr<uint8_t[]> fresh(new uint8_t[new_cap]);
  if (live > 0) std::memcpy(fresh.get(), buf_.get() + reply_, live);
  buf_ = std::move(fresh);
  cap_ = new_cap;
  stream_base_ += reply_;
  pos_ -= reply_;
  end_ -= reply_;
  reply_ = 0;
  return buf_.get() + end_;
}

void Parser::commit(size_t n) {
  if (failed_) return;
  end_ += std::min(n, cap_ - end_);
}

void Parser::append(const void* p, size_t n) {
  if (n == 0) return;
  std::memcpy(space(n), p, n);
  commit(n);
}

const Value& Parser::root() const { return have_reply_ ? values_[0] : kNullValue; }

const Value& Parser::child(const Value& v, uint32_t i) const {
  if (!have_reply_ || !is_aggregate(v.type) || v.integer < 0 || i >= static_cast<uint64_t>(v.integer))
    return kNullValue;
  const size_t at = size_t(v.first) + i;
  return at < values_.size() ? values_[at] : kNullValue;
}

std::string_view Parser::raw() const {
  if (!have_reply_) return {};
  return std::string_view(reinterpret_cast<const char*>(buf_.get() + reply_), pos_ - reply_);
}

std::string_view Parser::error() const { return error_; }

size_t Parser::buffered() const { return end_ - reply_; }

Parser::Status Parser::fail(uint64_t offset, std::string what) {
  error_ = std::move(what);
  error_ += " at stream offset ";
  error_ += number(offset);
  failed_ = true;
  reset_buffer();
  return Status::kError;
}

void Parser::reset_buffer() {
  buf_.reset();
  cap_ = reply_ = pos_ = end_ = 0;
  scan_ = 0;
  in_blob_ = false;
  have_reply_ = false;
  std::vector<Frame>().swap(stack_);
  std::vector<Node>().swap(nodes_);
  std::vector<Value>().swap(values_);
}

Parser::Status Parser::too_large() {
  return fail(stream_base_ + reply_, "reply larger than max_buffer (" + number(limits_.max_buffer) + " bytes)");
}

// Called when the item at pos_ needs bytes past those visible: the reply is over max_buffer if all of its
// max_buffer bytes are in already, else more must be read.
Parser::Status Parser::need_more() {
  if (end_ - reply_ >= limits_.max_buffer) return too_large();
  return Status::kNeedMore;
}

bool Parser::add_node(Type type, int64_t integer, size_t off, size_t len, uint64_t at) {
  if (nodes_.size() >= limits_.max_values) {
    fail(at, "reply of more than max_values (" + number(limits_.max_values) + ") values");
    return false;
  }
  const auto index = static_cast<uint32_t>(nodes_.size());
  nodes_.push_back(Node{integer, off, len, index + 1, type});
  return true;
}

void Parser::value_done() {
  while (!stack_.empty()) {
    Frame& f = stack_.back();
    if (--f.remaining > 0) return;
    const uint32_t node = f.node;
    const bool attribute = f.attribute;
    stack_.pop_back();
    if (attribute) {
      // Dropped with its subtree (the last nodes), and no child of its parent: the parent still waits.
      nodes_.resize(node);
      return;
    }
    nodes_[node].end = static_cast<uint32_t>(nodes_.size());
  }
}

void Parser::finish_reply() {
  // Depth-first nodes to breadth-first values: each aggregate's children are found by hopping from its first
  // child (the next node) over each sibling's subtree, and appended together, so they end up contiguous.
  const char* base = reinterpret_cast<const char*>(buf_.get() + reply_);
  values_.clear();
  values_.reserve(nodes_.size());
  auto make = [&](uint32_t d) {
    const Node& n = nodes_[d];
    Value v;
    v.type = n.type;
    v.integer = n.integer;
    if (has_text(n.type)) v.str = std::string_view(base + n.off, n.len);
    v.first = d;  // the node, until the value's children are placed
    return v;
  };
  values_.push_back(make(0));
  for (size_t i = 0; i < values_.size(); i++) {
    const uint32_t d = values_[i].first;
    if (!is_aggregate(values_[i].type)) {
      values_[i].first = 0;
      continue;
    }
    values_[i].first = static_cast<uint32_t>(values_.size());
    uint32_t c = d + 1;
    for (int64_t k = 0; k < values_[i].integer; k++) {
      values_.push_back(make(c));
      c = nodes_[c].end;
    }
  }
  nodes_.clear();
  have_reply_ = true;
}

void Parser::release_reply() {
  if (!have_reply_) return;
  have_reply_ = false;
  reply_ = pos_;
  values_.clear();
  if (values_.capacity() > kRetainValues) std::vector<Value>().swap(values_);
  if (nodes_.capacity() > kRetainValues) std::vector<Node>().swap(nodes_);
}

namespace {

// The error for a type byte that starts no RESP item.
std::string unknown_type(uint8_t type) {
  static const char kHex[] = "0123456789abcdef";
  std::string what = "unknown type byte ";
  if (type >= 0x20 && type < 0x7F) {
    what += '\'';
    what += static_cast<char>(type);
    what += "' ";
  }
  what += "(0x";
  what += kHex[type >> 4];
  what += kHex[type & 0xF];
  what += ')';
  return what;
}

}  // namespace

Parser::Status Parser::next() {
  if (failed_) return Status::kError;
  release_reply();
  // The parser sees at most max_buffer bytes of a reply: needing a byte past them means the reply is too
  // large. So the same bytes give the same verdicts however they were split into reads.
  const size_t lim = end_ - reply_ > limits_.max_buffer ? reply_ + static_cast<size_t>(limits_.max_buffer) : end_;
  const uint8_t* b = buf_.get();
  for (;;) {
    if (in_blob_) {
      const size_t avail = lim - pos_;
      // The payload must be followed by CRLF: refused as soon as the byte that should be CR or LF is in.
      if (avail > blob_len_ &&
          (b[pos_ + blob_len_] != '\r' || (avail > blob_len_ + 1 && b[pos_ + blob_len_ + 1] != '\n')))
        return fail(blob_at_, "blob payload of " + number(blob_len_) + " bytes not followed by CRLF");
      if (avail < blob_len_ + kCrlf.size()) return need_more();
      const auto len = static_cast<size_t>(blob_len_);
      size_t off = pos_ - reply_;
      size_t text = len;
      if (blob_type_ == Type::kVerbatim) {
        if (len < kVerbatimPrefix || b[pos_ + kVerbatimColon] != ':')
          return fail(blob_at_, "verbatim string without its format prefix (\"txt:\")");
        off += kVerbatimPrefix;
        text -= kVerbatimPrefix;
      }
      if (!add_node(blob_type_, 0, off, text, blob_at_)) return Status::kError;
      in_blob_ = false;
      pos_ += len + kCrlf.size();
      value_done();
      if (stack_.empty() && !nodes_.empty()) break;
      continue;
    }

    if (pos_ >= lim) return need_more();
    const uint8_t type = b[pos_];
    const uint64_t at = stream_base_ + pos_;  // where this item starts in the stream, for errors
    size_t line_max;
    switch (type) {
      case '+': case '-': case ':': case ',': case '(':
        line_max = limits_.max_line;
        break;
      case '$': case '!': case '=': case '*': case '%': case '~': case '>': case '|': case '#': case '_':
        line_max = kShortLine;
        break;
      default:
        return fail(at, unknown_type(type));
    }
    // Scan the line from where the last call stopped. Content byte k sits at pos_ + 1 + k.
    size_t k = scan_;
    bool complete = false;
    while (pos_ + 1 + k < lim) {
      const uint8_t c = b[pos_ + 1 + k];
      if (c == '\r') {
        if (pos_ + 2 + k >= lim) break;  // its LF is not in yet
        if (b[pos_ + 2 + k] != '\n') return fail(at, "CR not followed by LF in a line");
        complete = true;
        break;
      }
      if (c == '\n') return fail(at, "bare LF in a line (lines end with CRLF)");
      if (k >= line_max) return fail(at, "line longer than " + number(line_max) + " bytes");
      k++;
    }
    if (!complete) {
      scan_ = k;
      return need_more();
    }
    scan_ = 0;
    const std::string_view line(reinterpret_cast<const char*>(b + pos_ + 1), k);
    const size_t line_off = pos_ + 1 - reply_;
    const size_t next_item = pos_ + 1 + k + kCrlf.size();

    // Each case adds the item's node and breaks to complete a value, or consumes a header and continues.
    bool ok = true;
    switch (type) {
      case '+':
        ok = add_node(Type::kSimple, 0, line_off, k, at);
        break;
      case '-':
        ok = add_node(Type::kError, 0, line_off, k, at);
        break;
      case ':': {
        int64_t v = 0;
        if (const char* bad = parse_integer(line, &v)) return fail(at, bad + (" " + quote(line)));
        ok = add_node(Type::kInteger, v, 0, 0, at);
        break;
      }
      case ',':
        if (!valid_double(line)) return fail(at, "malformed double " + quote(line));
        ok = add_node(Type::kDouble, 0, line_off, k, at);
        break;
      case '(':
        if (!valid_big_number(line)) return fail(at, "malformed big number " + quote(line));
        ok = add_node(Type::kBigNumber, 0, line_off, k, at);
        break;
      case '#':
        if (line != "t" && line != "f") return fail(at, "malformed boolean " + quote(line) + " (#t or #f)");
        ok = add_node(Type::kBoolean, line == "t" ? 1 : 0, 0, 0, at);
        break;
      case '_':
        if (!line.empty()) return fail(at, "malformed null " + quote(line) + " (nothing between _ and CRLF)");
        ok = add_node(Type::kNull, 0, 0, 0, at);
        break;
      case '$': case '!': case '=': {
        if (line == "?")
          return fail(at, std::string("streamed strings (") + static_cast<char>(type) + "?) are not supported");
        uint64_t len = 0;
        bool is_null = false;
        if (const char* bad = parse_length(line, type == '$', &len, &is_null))
          return fail(at, bad + (" " + quote(line)));
        if (is_null) {
          ok = add_node(Type::kNull, 0, 0, 0, at);
          break;
        }
        if (len > limits_.max_bulk)
          return fail(at, "blob of " + number(len) + " bytes over max_bulk (" + number(limits_.max_bulk) + ")");
        // The payload and its CRLF must fit in max_buffer with what precedes them in the reply.
        const uint64_t before = next_item - reply_;
        if (before > limits_.max_buffer || limits_.max_buffer - before < len ||
            limits_.max_buffer - before - len < kCrlf.size())
          return too_large();
        in_blob_ = true;
        blob_type_ = type == '$' ? Type::kBulk : type == '!' ? Type::kError : Type::kVerbatim;
        blob_len_ = len;
        blob_at_ = at;
        pos_ = next_item;
        continue;
      }
      default: {  // '*', '%', '~', '>', '|'
        if (line == "?")
          return fail(at, std::string("streamed aggregates (") + static_cast<char>(type) + "?) are not supported");
        uint64_t count = 0;
        bool is_null = false;
        if (const char* bad = parse_length(line, type == '*', &count, &is_null))
          return fail(at, bad + (" " + quote(line)));
        if (is_null) {
          ok = add_node(Type::kNull, 0, 0, 0, at);
          break;
        }
        const bool pairs = type == '%' || type == '|';
        if (count > limits_.max_elements || (pairs && count * 2 > limits_.max_elements)) {
          return fail(at, pairs ? "map of " + number(count) + " pairs over max_elements (" +
                                      number(limits_.max_elements) + " children, 2 per pair)"
                                : "aggregate of " + number(count) + " elements over max_elements (" +
                                      number(limits_.max_elements) + ")");
        }
        const uint64_t children = pairs ? count * 2 : count;
        if (stack_.size() >= limits_.max_depth)
          return fail(at, "nesting deeper than max_depth (" + number(limits_.max_depth) + ")");
        // Each child is at least one more value: refuse now rather than after reading them.
        if (nodes_.size() + 1 + children > limits_.max_values)
          return fail(at, "reply of more than max_values (" + number(limits_.max_values) + ") values");
        const Type t = type == '*'   ? Type::kArray
                       : type == '>' ? Type::kPush
                       : type == '~' ? Type::kSet
                                     : Type::kMap;
        const auto node = static_cast<uint32_t>(nodes_.size());
        if (!add_node(t, static_cast<int64_t>(children), 0, 0, at)) return Status::kError;
        if (children > 0) {
          stack_.push_back(Frame{node, children, type == '|'});
          pos_ = next_item;
          continue;
        }
        if (type == '|') {  // an empty attribute: nothing to keep, and it stands for no value
          nodes_.pop_back();
          pos_ = next_item;
          continue;
        }
        break;  // an empty aggregate is a complete value
      }
    }
    if (!ok) return Status::kError;
    pos_ = next_item;
    value_done();
    if (stack_.empty() && !nodes_.empty()) break;
  }
  finish_reply();
  return Status::kReply;
}

}  // namespace starling::resp
