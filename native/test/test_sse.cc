// Unit tests for sse.cc: rendering server frames as server-sent events, sharing the rendition, parsing
// event streams, and the round trip of random messages through both.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "io/frame.h"
#include "pubsub/protocol.h"
#include "pubsub/subject.h"
#include "rng.h"
#include "transport/http_upgrade.h"
#include "transport/sse.h"

using namespace starling;

namespace {

// A complete server frame (as Frame::make writes it) of `payload`.
std::string ws(uint8_t op, std::string_view payload) {
  std::string out(server_head_size(payload.size()) + payload.size(), '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(&out[0]);
  const size_t h = write_server_head(p, op, payload.size());
  out.replace(h, payload.size(), payload);
  return out;
}
std::string text(std::string_view payload) { return ws(kOpText, payload); }

// The rendition of `frames`, checking that measuring agrees with writing. The input is copied into a buffer of
// exactly its size and the output is written into one of exactly the measured size (ASan catches an overrun).
std::string render(const std::string& frames) {
  std::vector<uint8_t> in(frames.begin(), frames.end());
  const size_t n = sse_render(in.data(), in.size(), nullptr);
  std::vector<uint8_t> out(n);
  const size_t written = sse_render(in.data(), in.size(), out.data());
  CHECK_EQ(written, n);
  return std::string(out.begin(), out.end());
}

struct Event {
  std::string type, id, data;
};

Event owned(const SseEvent& e) { return {std::string(e.type), std::string(e.id), std::string(e.data)}; }

// The events as "type|id|data;" each, to compare in one check.
std::string summary(const std::vector<Event>& events) {
  std::string out;
  for (const Event& e : events) out += e.type + "|" + e.id + "|" + e.data + ";";
  return out;
}

// Feeds `stream` to a parser in pieces of at most `piece` bytes (0: whole) and collects the events.
std::vector<Event> parse(std::string_view stream, size_t piece = 0, SseStatus* status = nullptr,
                         size_t max_line = 1 << 20, size_t max_event = 1 << 20) {
  SseParser parser(max_line, max_event);
  std::vector<Event> events;
  const auto collect = [&](const SseEvent& e) { events.push_back(owned(e)); };
  if (piece == 0) piece = stream.size() + 1;
  for (size_t at = 0; at < stream.size(); at += piece) {
    const std::string_view part = stream.substr(at, piece);
    if (!parser.feed_all(part.data(), part.size(), collect)) break;
  }
  if (status) *status = parser.status();
  return events;
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with padding; false for anything else.
bool b64_decode(std::string_view in, std::string* out) {
  out->clear();
  if (in.size() % 4) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
    if (pad == 1 && in[i + 2] == '=') return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
      const int d = k >= 4 - pad ? 0 : b64_value(in[i + k]);
      if (d < 0) return false;
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out->push_back(static_cast<char>(v >> 16));
    if (pad < 2) out->push_back(static_cast<char>(v >> 8));
    if (pad < 1) out->push_back(static_cast<char>(v));
  }
  return true;
}

std::string b64(std::string_view s) {
  std::string out((s.size() + 2) / 3 * 4, '\0');
  base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size(), &out[0]);
  return out;
}

}  // namespace

// ---- rendering ----

TEST(sse_renders_a_live_text_message_without_an_event_line) {
  CHECK_EQ(render(text("MSG /a/b 1x:42\nhello")), "id: /a/b@1x:42\ndata: hello\n\n");
}

TEST(sse_renders_the_kind_as_the_event_type) {
  for (std::string kind : {"snapshot", "history", "recovered"})
    CHECK_EQ(render(text("MSG /a 0:1 " + kind + "\nx")), "event: " + kind + "\nid: /a@0:1\ndata: x\n\n");
}

TEST(sse_renders_payload_lines_empty_payloads_and_a_final_newline_so_the_joined_data_is_exact) {
  CHECK_EQ(render(text("MSG /a 0:1\n")), "id: /a@0:1\ndata: \n\n");
  CHECK_EQ(render(text("MSG /a 0:1\na\n")), "id: /a@0:1\ndata: a\ndata: \n\n");
  CHECK_EQ(render(text("MSG /a 0:1\na\n\nb")), "id: /a@0:1\ndata: a\ndata: \ndata: b\n\n");
  CHECK_EQ(render(text("MSG /a 0:1\n  two\n one\n")), "id: /a@0:1\ndata:   two\ndata:  one\ndata: \n\n");
  for (std::string_view payload : {"", "\n", "a\n", "\n\n", "  two\n one\n", " :x\ndata: y"}) {
    const std::vector<Event> e = parse(render(text("MSG /a 0:1\n" + std::string(payload))));
    CHECK_EQ(e.size(), 1u);
    if (e.size() == 1) CHECK_EQ(e[0].data, payload);
  }
}

TEST(sse_renders_binary_payloads_as_base64_under_a_base64_event_type) {
  CHECK_EQ(render(ws(kOpBinary, std::string("MSG /a 0:1\n\x00\xff\n", 14))),
           "event: message-base64\nid: /a@0:1\ndata: AP8K\n\n");
  CHECK_EQ(render(ws(kOpBinary, "MSG /a 0:1 history\nab")), "event: history-base64\nid: /a@0:1\ndata: YWI=\n\n");
  CHECK_EQ(render(ws(kOpBinary, "MSG /a 0:1\n")), "event: message-base64\nid: /a@0:1\ndata: \n\n");
}

TEST(sse_renders_text_with_a_carriage_return_as_utf8_base64) {
  CHECK_EQ(render(text("MSG /a 0:1\na\r\nb")), "event: message-utf8-base64\nid: /a@0:1\ndata: YQ0KYg==\n\n");
  CHECK_EQ(render(text("MSG /a 0:1 recovered\n\r")), "event: recovered-utf8-base64\nid: /a@0:1\ndata: DQ==\n\n");
}

TEST(sse_renders_sync_resync_err_and_auth_lines) {
  CHECK_EQ(render(text("SYNC /a/b z9:7")), "event: sync\nid: /a/b@z9:7\ndata: /a/b z9:7\n\n");
  CHECK_EQ(render(text("RESYNC /a 0:0")), "event: resync\nid: /a@0:0\ndata: /a 0:0\n\n");
  CHECK_EQ(render(text("ERR forbidden /x: not granted")), "event: err\ndata: forbidden /x: not granted\n\n");
  CHECK_EQ(render(text("AUTH ok 1700000000")), "event: auth\ndata: ok 1700000000\n\n");
}

namespace {

// Each of `frames` renders nothing (a failure shows which by its index).
void check_renders_nothing(const std::vector<std::string>& frames) {
  for (size_t i = 0; i < frames.size(); i++)
    CHECK_EQ(std::to_string(i) + ": " + render(frames[i]), std::to_string(i) + ": ");
}

}  // namespace

TEST(sse_renders_nothing_for_acks_pongs_control_frames_and_unknown_lines) {
  check_renders_nothing({text("ACK id1"), text("PONG"), text("PONG tok"), ws(kOpClose, "\x03\xe8"), ws(kOpPing, ""),
                         ws(kOpPong, "x"), text("HELLO /a 0:1"), text(""), ""});
}

TEST(sse_renders_nothing_for_lines_that_break_the_rules) {
  check_renders_nothing({
      text("MSG a 0:1\nx"),            // subject without '/'
      text("MSG /a 0:1 live\nx"),      // unknown kind
      text("MSG /a 0:1 \nx"),          // trailing space
      text("MSG /a 0:1"),              // no '\n'
      text("MSG /a A:1\nx"),           // epoch not base 36 lower case
      text("MSG /a 0:x\nx"),           // seq not decimal
      text("SYNC /a 0:1 recovered"),   // SYNC with a kind
      text("SYNC /a 0:1 "),
      text("ERR bad\rthing"),
      text("AUTH \r"),
  });
}

TEST(sse_renders_a_multi_frame_recovery_answer_as_one_event_per_frame) {
  const std::string answer = text("MSG /r 5:1 recovered\none") + ws(kOpBinary, "MSG /r 5:2 recovered\n\x01") +
                             text("MSG /r 5:3 recovered\nthree\n") + text("SYNC /r 5:3");
  CHECK_EQ(render(answer),
           "event: recovered\nid: /r@5:1\ndata: one\n\n"
           "event: recovered-base64\nid: /r@5:2\ndata: AQ==\n\n"
           "event: recovered\nid: /r@5:3\ndata: three\ndata: \n\n"
           "event: sync\nid: /r@5:3\ndata: /r 5:3\n\n");
  const std::vector<Event> e = parse(render(answer), 3);
  CHECK_EQ(e.size(), 4u);
  if (e.size() == 4) {
    CHECK_EQ(e[2].data, "three\n");
    CHECK_EQ(e[3].type, "sync");
    CHECK_EQ(e[3].id, "/r@5:3");
  }
}

TEST(sse_renders_frames_with_16_bit_and_64_bit_length_heads) {
  for (size_t n : {125u, 126u, 200u, 65535u, 65536u, 70000u}) {
    const std::string payload(n, 'p');
    const std::string frame = text("MSG /big 1:2\n" + payload);
    CHECK_EQ(render(frame), "id: /big@1:2\ndata: " + payload + "\n\n");
    const std::string bin = ws(kOpBinary, "MSG /big 1:2\n" + payload);
    CHECK_EQ(render(bin), "event: message-base64\nid: /big@1:2\ndata: " + b64(payload) + "\n\n");
  }
  // A 64-bit length written for a small payload (not minimal) is still read.
  std::string odd = "\x81\x7f";
  const std::string line = "SYNC /a 0:1";
  for (int i = 7; i >= 0; i--) odd += static_cast<char>(i == 0 ? line.size() : 0);
  CHECK_EQ(render(odd + line), "event: sync\nid: /a@0:1\ndata: /a 0:1\n\n");
}

TEST(sse_rendering_stops_at_a_truncated_or_malformed_frame) {
  const std::string first = text("MSG /a 0:1\nx");
  const std::string second = text("MSG /a 0:2\n" + std::string(300, 'y'));
  const std::string expect_first = render(first);
  for (size_t cut = 0; cut < second.size(); cut++)
    CHECK_EQ(render(first + second.substr(0, cut)), expect_first);
  CHECK_EQ(render(first + second), expect_first + render(second));
  std::string bad = text("SYNC /a 0:1");
  for (uint8_t flip : {0x80, 0x40, 0x20, 0x10}) {   // FIN cleared, RSV1-3 set
    std::string b = bad;
    b[0] = static_cast<char>(b[0] ^ flip);
    CHECK_EQ(render(first + b + first), expect_first);
  }
  std::string masked = bad;
  masked[1] = static_cast<char>(masked[1] | 0x80);
  CHECK_EQ(render(first + masked), expect_first);
  std::string reserved_op = bad;
  reserved_op[0] = static_cast<char>(0x83);
  CHECK_EQ(render(first + reserved_op), expect_first);
  CHECK_EQ(render(first + std::string("\x81\x7f\x80\0\0\0\0\0\0\0", 10)), expect_first);   // top bit of 64
}

// ---- sharing ----

TEST(sse_frame_renders_once_and_shares_the_rendition_through_alt) {
  const int64_t before = mem::total();
  const std::string payload = "MSG /s 0:9\nhi";
  Frame* f = Frame::make(kOpText, payload.data(), payload.size());
  CHECK(f != nullptr);
  bool empty = true;
  Frame* a = sse_frame(f, &empty);
  CHECK(a != nullptr);
  CHECK(!empty);
  CHECK(f->alt.load() == a);
  CHECK_EQ(std::string(reinterpret_cast<const char*>(a->data()), a->size()), "id: /s@0:9\ndata: hi\n\n");
  Frame* b = sse_frame(f, &empty);
  CHECK(b == a);
  CHECK_EQ(a->refs.load(), 3u);   // f->alt and the two callers
  a->unref();
  b->unref();
  CHECK_EQ(a->refs.load(), 1u);
  CHECK(mem::total() > before);
  f->unref();                     // frees the rendition with the frame
  CHECK_EQ(mem::total(), before);
}

TEST(sse_frame_returns_nothing_for_an_empty_rendition_and_does_not_cache_it) {
  const int64_t before = mem::total();
  Frame* f = Frame::make(kOpText, "ACK x", 5);
  bool empty = false;
  CHECK(sse_frame(f, &empty) == nullptr);
  CHECK(empty);
  CHECK(f->alt.load() == nullptr);
  f->unref();
  CHECK_EQ(mem::total(), before);
}

TEST(sse_frame_shares_one_rendition_between_racing_threads) {
  const int64_t before = mem::total();
  constexpr int kRounds = 300;
  constexpr int kCallsPerThread = 20;
  const std::string payload = "MSG /race 0:1\n" + std::string(100, 'r');
  for (int round = 0; round < kRounds; round++) {
    Frame* f = Frame::make(kOpText, payload.data(), payload.size());
    std::atomic<int> ready{0};
    Frame* seen[2] = {nullptr, nullptr};
    bool agreed[2] = {true, true};
    const auto worker = [&](int t) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      for (int i = 0; i < kCallsPerThread; i++) {
        bool empty = false;
        Frame* a = sse_frame(f, &empty);
        if (!seen[t]) seen[t] = a;
        agreed[t] = agreed[t] && a == seen[t] && a != nullptr;
        if (a) a->unref();
      }
    };
    std::thread t0(worker, 0), t1(worker, 1);
    t0.join();
    t1.join();
    CHECK(agreed[0] && agreed[1]);
    CHECK(seen[0] == seen[1]);
    CHECK(f->alt.load() == seen[0]);
    if (seen[0]) CHECK_EQ(seen[0]->refs.load(), 1u);
    f->unref();
  }
  CHECK_EQ(mem::total(), before);
}

// ---- parsing ----

TEST(sse_parser_follows_the_spec_examples) {
  CHECK_EQ(summary(parse("data: YHOO\ndata: +2\ndata: 10\n\n")), "message||YHOO\n+2\n10;");
  // The last block has no blank line after it and is never dispatched.
  CHECK_EQ(summary(parse(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n")),
           "message|1|first event;message||second event;");
  CHECK_EQ(summary(parse("data\n\ndata\ndata\n\ndata:")), "message||;message||\n;");
  CHECK_EQ(summary(parse("data:test\n\ndata: test\n\n")), "message||test;message||test;");
}

TEST(sse_parser_accepts_every_line_end_in_any_split) {
  const std::string streams[] = {"event: e\r\ndata: a\r\n\r\ndata: b\r\n\r\n", "event: e\rdata: a\r\rdata: b\r\r",
                                 "event: e\ndata: a\n\ndata: b\n\n", "event: e\r\ndata: a\r\rdata: b\n\r\n"};
  for (const std::string& s : streams) {
    for (size_t piece = 0; piece <= 4; piece++) {
      const std::vector<Event> e = parse(s, piece);
      CHECK_EQ(e.size(), 2u);
      if (e.size() != 2) continue;
      CHECK_EQ(e[0].type, "e");
      CHECK_EQ(e[0].data, "a");
      CHECK_EQ(e[1].type, "message");   // the type is reset after each dispatch
      CHECK_EQ(e[1].data, "b");
    }
  }
}

TEST(sse_parser_skips_one_leading_bom_even_when_split) {
  for (size_t piece = 0; piece <= 3; piece++) {
    CHECK_EQ(parse("\xEF\xBB\xBF" "data: x\n\n", piece).size(), 1u);
    CHECK_EQ(parse("\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n", piece).size(), 0u);   // a second is content
    CHECK_EQ(parse("\xEF\xBB" "data: x\n\n", piece).size(), 0u);   // half a BOM is content
    CHECK_EQ(parse("\xEF\ndata: x\n\n", piece).size(), 1u);
  }
}

TEST(sse_parser_handles_ids_types_retry_and_empty_events) {
  SseParser p(1000, 1000);
  std::vector<Event> e;
  const auto collect = [&](const SseEvent& ev) { e.push_back(owned(ev)); };
  const std::string s = std::string("id: 7\nevent: skipped\n\ndata: a\n\nid: bad") + '\0' +
                        "id\ndata: b\n\nretry: 12x\nretry: 2500\nretry:\nunknown: 1\ndata: c\nid\n\n";
  CHECK(p.feed_all(s.data(), s.size(), collect));
  CHECK_EQ(e.size(), 3u);
  if (e.size() == 3) {
    CHECK_EQ(e[0].type, "message");   // the type of an event without data was dropped
    CHECK_EQ(e[0].id, "7");
    CHECK_EQ(e[1].id, "7");           // an id with NUL is ignored
    CHECK_EQ(e[2].id, "");            // "id" alone empties it
    CHECK_EQ(e[2].data, "c");
  }
  CHECK(p.has_retry());
  CHECK_EQ(p.retry_ms(), 2500u);
  CHECK_EQ(p.last_event_id(), "");
  p.reset();
  CHECK(!p.has_retry());
}

TEST(sse_parser_reuses_its_buffers_from_event_to_event) {
  SseParser p(1000, 1000);
  const char* first = nullptr;
  bool same = true;
  int n = 0;
  const auto check_buffer = [&](const SseEvent& ev) {
    if (!first) first = ev.data.data();
    same = same && ev.data.data() == first;
    n++;
  };
  for (int i = 0; i < 100; i++) {
    const std::string s = "data: " + std::string(50, static_cast<char>('a' + i % 26)) + "\n" + "data: x\n\n";
    CHECK(p.feed_all(s.data(), 3, check_buffer));   // a piece ending mid-line, then the rest
    CHECK(p.feed_all(s.data() + 3, s.size() - 3, check_buffer));
  }
  CHECK_EQ(n, 100);
  CHECK(same);
}

TEST(sse_parser_stops_on_a_line_or_event_over_its_limit_whatever_the_split) {
  for (size_t piece = 0; piece <= 5; piece++) {
    SseStatus status;
    std::vector<Event> e = parse("data: 1\n\ndata: 0123456789\n\ndata: 2\n\n", piece, &status, 10, 100);
    CHECK_EQ(e.size(), 1u);
    CHECK(status == SseStatus::kLineTooLong);
    e = parse("data: 01\n\ndata: 01234", piece, &status, 10, 100);   // an unfinished line too
    CHECK_EQ(e.size(), 1u);
    CHECK(status == SseStatus::kLineTooLong);
    e = parse("data: 1234\ndata: 12\n\n", piece, &status, 10, 7);   // exactly 7: "1234\n12"
    CHECK_EQ(e.size(), 1u);
    CHECK(status == SseStatus::kOk);
    e = parse("data: 1234\ndata: 123\n\ndata: 3\n\n", piece, &status, 10, 7);
    CHECK_EQ(e.size(), 0u);
    CHECK(status == SseStatus::kEventTooLarge);
  }
  SseParser p(4, 4);
  CHECK(!p.feed_all("data: x\n\n", 9, [](const SseEvent&) {}));
  CHECK_EQ(p.feed(reinterpret_cast<const uint8_t*>("\n"), 1), 0u);   // stays stopped
  p.reset();
  CHECK(p.status() == SseStatus::kOk);
}

// ---- round trip ----

TEST(sse_round_trip_of_random_messages_gives_back_every_type_id_and_payload) {
  const size_t failures_before = check::counters().failures;
  Rng rng(20240611);
  constexpr std::string_view kKinds[] = {"", "snapshot", "history", "recovered"};
  const std::string alphabet = "ab \n\r\t:/x\x7f\xc3\xa9";
  for (int iter = 0; iter < 1500; iter++) {
    std::string stream_ws;
    std::vector<Event> expect;
    const size_t frames = 1 + rng.below(6);
    for (size_t k = 0; k < frames; k++) {
      std::string subject;
      const size_t segments = 1 + rng.below(3);
      for (size_t s = 0; s < segments; s++) {
        subject += '/';
        const size_t len = 1 + rng.below(8);
        for (size_t c = 0; c < len; c++) {
          char ch;
          do ch = static_cast<char>(0x21 + rng.below(0x7E - 0x21 + 1));
          while (ch == '/' || ch == '*');
          subject += ch;
        }
      }
      char epoch[16];
      const size_t epoch_len = format_epoch(rng.next() >> rng.below(64), epoch);
      const uint64_t seq = rng.next() >> rng.below(64);
      const std::string_view kind = kKinds[rng.below(4)];
      const bool binary = rng.below(3) == 0;
      const size_t size_class = rng.below(20);
      const size_t len = size_class == 0 ? 0 : size_class == 1 ? 126 + rng.below(300)
                                          : size_class == 2 && iter % 50 == 0 ? 65536 + rng.below(10) : rng.below(20);
      std::string payload;
      const bool plain = rng.below(2) == 0;   // half without '\r', so the data: lines path is taken
      for (size_t i = 0; i < len; i++) {
        char ch = binary ? static_cast<char>(rng.byte()) : alphabet[rng.below(alphabet.size())];
        if (plain && ch == '\r') ch = ' ';
        payload += ch;
      }
      char header[kMaxMsgHeader + kMaxKindLen];
      const size_t hl = write_msg_header_backwards(header + sizeof header, subject, std::string_view(epoch, epoch_len),
                                                   seq, kind);
      stream_ws += ws(binary ? kOpBinary : kOpText, std::string(header + sizeof header - hl, hl) + payload);
      const bool cr = !binary && payload.find('\r') != std::string::npos;
      std::string type = kind.empty() ? "message" : std::string(kind);
      if (binary) type += "-base64";
      if (cr) type += "-utf8-base64";
      expect.push_back({type, subject + "@" + std::string(epoch, epoch_len) + ":" + std::to_string(seq), payload});
      if (rng.below(4) == 0) stream_ws += text("PONG");   // renders nothing, changes nothing
    }
    const std::string sse = render(stream_ws);
    // Random pieces: the parser must not care where the stream was split.
    SseParser parser(1 << 20, 1 << 20);
    std::vector<Event> got;
    const auto collect = [&](const SseEvent& e) {
      std::string data(e.data);
      if (e.type.size() > 7 && e.type.substr(e.type.size() - 7) == "-base64" && !b64_decode(e.data, &data))
        data = "<not base64>";
      got.push_back({std::string(e.type), std::string(e.id), data});
    };
    for (size_t at = 0; at < sse.size();) {
      const size_t piece = 1 + rng.below(rng.below(2) ? 8 : 200);
      const size_t n = piece < sse.size() - at ? piece : sse.size() - at;
      CHECK(parser.feed_all(sse.data() + at, n, collect));
      at += n;
    }
    CHECK_EQ(got.size(), expect.size());
    if (got.size() != expect.size()) return;
    for (size_t i = 0; i < got.size(); i++) {
      CHECK_EQ(got[i].type, expect[i].type);
      CHECK_EQ(got[i].id, expect[i].id);
      CHECK_EQ(got[i].data, expect[i].data);
    }
    if (check::counters().failures != failures_before) return;   // one failing case is enough output
  }
}
