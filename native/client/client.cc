#include "client/client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>

#include "io/poller.h"
#include "io/uring.h"
#include "pubsub/protocol.h"
#include "pubsub/subject.h"
#include "transport/sse.h"
#include "transport/ws_frame.h"

namespace starling {

namespace {

// The client threads' shared receive buffer: large, so one recv drains a busy subscriber socket.
constexpr size_t kClientRxBytes = 256 * 1024;
// Publisher pacing tick. At 20,000 msg/s over 4 connections this sends ~5 messages per connection per
// tick, coalesced into one send each, as a real publisher batching its output would.
constexpr int kTickMs = 1;
// Most messages one tick may owe after a stall (100 ms worth): a stalled publisher does not then burst
// an unbounded backlog at the server.
constexpr double kMaxCatchUpSeconds = 0.1;
// Bytes a publisher connection may have unsent before it skips messages (counted as send_stalls).
constexpr size_t kMaxPendingTx = 4 * 1024 * 1024;
// Width of the decimal microsecond timestamp that starts every benchmark payload.
constexpr size_t kStampDigits = 16;

// Direct descriptors (ClientOptions::direct). A ring's id and a slot in its table make a connection's
// direct id, (ring << kSlotBits) | slot; user_data is that id shifted left by 3 over the operation's kind.
constexpr unsigned kSlotBits = 20;        // a table of at most 2^20 slots (the kernel's own maximum)
constexpr unsigned kMaxRings = 255;       // per thread: 255 × 20,000 (the usual fd limit) is 5.1 million
// Provided receive buffers per ring, small and many: what arrives on a held subscriber is mostly one small
// frame (a W4 message of ~560 bytes, a keepalive ping of 2), each taking a whole buffer, and a keepalive round
// reaches thousands of a ring's connections at once. A receive that finds none left ends (ENOBUFS) and is
// re-armed once they come back, at most kRingBuffers a ring per iteration (more would only fail again, every
// iteration: at 400,000 connections that spin took the client's threads). Larger frames span buffers.
constexpr unsigned kRingBuffers = 1024;
constexpr unsigned kRingBufferBytes = 2048;
enum DirectOp : uint64_t { kRingRecv = 1, kRingSend = 2, kRingClose = 3, kRingOther = 4 };  // 7: Ring::kInternal
constexpr int kNotDirect = -1;

const char kHandshakeKey[] = "dGhlIHNhbXBsZSBub25jZQ==";  // fixed: the tools do not need unpredictability

// Event streams (Transport::kHttp subscribers). The largest payload benchpub sends (its MessageSize maximum,
// bench/tools.ts): subscribers are not told the size, so a line or event is bounded by that payload as base64
// (4/3 of it) plus kSseRoom for the field name and anything the server adds; a stream past the bound is refused.
constexpr size_t kMaxBenchPayload = 64 * 1024 * 1024;
constexpr size_t kSseRoom = 1024;
constexpr size_t kSseMaxEvent = (kMaxBenchPayload + 2) / 3 * 4 + kSseRoom;
// Base64 characters that carry the 16-byte timestamp (18 bytes decoded): the rest of a payload is not decoded.
constexpr size_t kStampBase64 = 24;

uint64_t realtime_us() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// "/p/s1/-" → "p.s1.-": NATS separates tokens with dots.
std::string nats_subject(const std::string& s) {
  std::string out = s.size() && s[0] == '/' ? s.substr(1) : s;
  for (char& c : out)
    if (c == '/') c = '.';
  return out;
}

// Appends s to out percent-encoded for a query value: every byte but unreserved characters and '/', ':', '@'.
void append_query_value(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || std::strchr("-._~/:@", c)) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

// Decodes standard base64 in[0..n) (padding allowed) into out until `want` bytes are written or the input ends.
// Returns the bytes written; stops early at a character that is not base64.
size_t base64_prefix(const char* in, size_t n, uint8_t* out, size_t want) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  size_t w = 0;
  uint32_t bits = 0;
  unsigned have = 0;
  for (size_t i = 0; i < n && w < want; i++) {
    const int v = value(in[i]);
    if (v < 0) break;
    bits = bits << 6 | static_cast<uint32_t>(v);
    have += 6;
    if (have >= 8) {
      have -= 8;
      out[w++] = static_cast<uint8_t>(bits >> have);
    }
  }
  return w;
}

// The value of header `name` (lower case, with its colon) in an HTTP response head, or empty.
std::string_view header_value(std::string_view head, std::string_view name) {
  for (size_t at = head.find("\r\n"); at != std::string_view::npos; at = head.find("\r\n", at + 2)) {
    const std::string_view line = head.substr(at + 2, head.find("\r\n", at + 2) - at - 2);
    if (line.size() < name.size()) continue;
    bool match = true;
    for (size_t i = 0; i < name.size() && match; i++) match = std::tolower(static_cast<unsigned char>(line[i])) == name[i];
    if (!match) continue;
    std::string_view v = line.substr(name.size());
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    return v;
  }
  return {};
}

// The epoch text of a position, as the server writes it (pubsub/subject.h format_epoch).
void append_epoch36(std::string& out, uint64_t v) {
  char buf[16];
  out.append(buf, format_epoch(v, buf));
}

// One latency record: the HDR-style histogram and Welford accumulator one thread writes and TypeScript
// reads (as kClientLatencySlots doubles).
class LatencyRecord {
 public:
  LatencyRecord() : hist_(new std::atomic<uint64_t>[kLatencyBuckets]) {
    for (unsigned i = 0; i < kLatencyBuckets; i++) hist_[i].store(0, std::memory_order_relaxed);
    for (auto& w : out_) w.store(0, std::memory_order_relaxed);
  }
  void add(uint64_t us) {
    unsigned b = latency_bucket(us);
    hist_[b].store(hist_[b].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    w_.add(static_cast<double>(us));
    out_[0].store(w_.n, std::memory_order_relaxed);
    out_[1].store(w_.mean, std::memory_order_relaxed);
    out_[2].store(w_.m2, std::memory_order_relaxed);
    out_[3].store(w_.min, std::memory_order_relaxed);
    out_[4].store(w_.max, std::memory_order_relaxed);
  }
  // Writes kClientLatencySlots doubles: Welford (n, mean, m2, min, max), then the buckets.
  double* read(double* out) const {
    for (unsigned i = 0; i < 5; i++) *out++ = out_[i].load(std::memory_order_relaxed);
    for (unsigned i = 0; i < kLatencyBuckets; i++) *out++ = static_cast<double>(hist_[i].load(std::memory_order_relaxed));
    return out;
  }

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> hist_;
  Welford w_;
  std::atomic<double> out_[5];
};

struct Resolved {
  sockaddr_storage addr;
  socklen_t len;
};

Resolved resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string p = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), p.c_str(), &hints, &res);
  if (rc != 0) throw std::runtime_error("cannot resolve " + host + ": " + gai_strerror(rc));
  Resolved r{};
  std::memcpy(&r.addr, res->ai_addr, res->ai_addrlen);
  r.len = res->ai_addrlen;
  freeaddrinfo(res);
  return r;
}

}  // namespace

// The last position received on one subscribed subject (Starling dialect subscribers).
struct Position {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  bool known = false;
};

struct CConn {
  int fd = -1;
  int direct = kNotDirect;       // its direct id while held in a ring (fd is then -1)
  uint32_t index = 0;            // global connection number (subject assignment)
  enum : uint8_t { kConnecting, kUpgrading, kOpen, kClosed } state = kConnecting;
  bool dirty = false;
  bool reconnecting = false;     // dropped by reconnect(), not yet back in sync
  uint32_t awaiting = 0;         // recovery SUBs of this connection not yet answered SYNC or RESYNC
  uint32_t in_flight = 0;        // HTTP publishers: requests not yet answered (at most kHttpPipelineWindow)
  uint32_t open_at = 0;          // its place in ClientThread::open_ while kOpen
  uint64_t dropped_ns = 0;       // when reconnect() dropped it (monotonic)
  uint64_t resubscribed_ns = 0;  // when it sent its recovery SUBs (monotonic)
  uint64_t connect_ns = 0;       // when its socket was opened (monotonic); 0 once its connect time is recorded
  std::vector<uint8_t> rx;       // partial input (HTTP response, frame, or an event stream's incomplete event)
  std::vector<uint8_t> stream;   // NATS: protocol bytes carried across frames
  std::string tx;                // output not yet accepted by the kernel
  std::unique_ptr<Position[]> pos;  // per subscribed subject (slot j), kept across reconnects
};

// One ring of a thread's direct descriptors and what its slots are doing. A slot is free again once its
// connection is gone (owner null), its multishot receive has ended and its close has completed.
struct DirectRing {
  enum : uint8_t { kInUse = 1, kArmed = 2, kClosing = 4, kSending = 8 };
  std::unique_ptr<Ring> ring;
  std::vector<CConn*> owner;
  std::vector<uint8_t> busy;
  std::vector<std::string> sending;  // by slot: the bytes of its send in flight (kSending)
  std::vector<int> rearm;            // slots whose receive ended and must be armed again
  unsigned held = 0;                 // slots with an owner
};

class ClientThread {
 public:
  ClientThread(const ClientOptions& o, const std::unordered_map<std::string_view, uint32_t>& subject_index, unsigned index,
               std::vector<uint32_t> mine)
      : o_(o), subject_index_(subject_index), index_(index), mine_(std::move(mine)) {
    http_ = o_.transport == Transport::kHttp;
    track_ = o_.dialect == Dialect::kStarling && !o_.publisher && !o_.subjects.empty();
    slots_ = o_.subjects.empty() ? 0 : std::min<uint32_t>(o_.subjects_per_client, static_cast<uint32_t>(o_.subjects.size()));
    for (auto& a : o_.servers) servers_.push_back(resolve(a.host, a.port, false));
    for (auto& l : o_.local_addresses) locals_.push_back(resolve(l, 0, true));
    loop_ = Poller::create();
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop_->watch_readable(wake_fd_, nullptr);
    rx_buf_.resize(kClientRxBytes);
    for (auto& c : counters_) c.store(0, std::memory_order_relaxed);
    rng_ = 0x9E3779B97F4A7C15ull ^ (uint64_t{index} << 32) ^ realtime_us();
  }

  ~ClientThread() {
    stop();
    for (CConn* c : conns_) {
      if (c->fd >= 0) close(c->fd);
      delete c;
    }
    close(wake_fd_);
  }

  void start() { thread_ = std::thread([this] { run(); }); }

  void stop() {
    stopping_.store(true, std::memory_order_release);
    uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof one);
    (void)ignored;
    if (thread_.joinable()) thread_.join();
  }

  void read(double* out) const {
    double* counters = out;
    for (unsigned i = 0; i < kClientCounterCount; i++) *out++ = static_cast<double>(counters_[i].load(std::memory_order_relaxed));
    const double* histogram = out + 5;
    out = latency_.read(out);
    // Live messages are the histogram's count, from this same read: the thread goes on recording while another
    // reads, so a counter read apart from the buckets could differ from them (1,802 recorded against 1,800).
    double received = 0;
    for (unsigned i = 0; i < kLatencyBuckets; i++) received += histogram[i];
    counters[kc_messages_received] = received;
    out = sync_time_.read(out);
    out = resubscribe_time_.read(out);
    connect_time_.read(out);
  }

  // A new connection is ready: upgraded, and with a token, its AUTH answered (entitlement decided).
  void connected_in(CConn* c) {
    connect_time_.add((monotonic_ns() - c->connect_ns) / 1000);
    c->connect_ns = 0;
  }

  // Called from another thread: queued, and the thread woken to act on it.
  void request(const ReconnectRequest& r) {
    {
      std::lock_guard<std::mutex> lock(requests_mu_);
      requests_.push_back(r);
    }
    has_requests_.store(true, std::memory_order_release);
    uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof one);
    (void)ignored;
  }

 private:
  void add(ClientCounter c, uint64_t n = 1) {
    counters_[c].store(counters_[c].load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void sub(ClientCounter c, uint64_t n = 1) {
    counters_[c].store(counters_[c].load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }

  uint64_t next_random() {  // xorshift64*
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 2685821657736338717ull;
  }

  void run() {
    PollEvent events[512];
    size_t next_to_open = 0;
    uint64_t started_ns = monotonic_ns();
    uint64_t published = 0;
    double rate = o_.publisher && o_.connections ? o_.frequency * static_cast<double>(mine_.size()) / o_.connections : 0;
    while (!stopping_.load(std::memory_order_acquire)) {
      // Open more connections while fewer than max_connecting are in flight: reconnections first.
      while ((!reopen_.empty() || next_to_open < mine_.size()) &&
             counters_[kc_connecting].load(std::memory_order_relaxed) < o_.max_connecting) {
        if (!reopen_.empty()) {
          CConn* c = reopen_.front();
          reopen_.pop_front();
          connect_socket(c);
        } else {
          CConn* c = new CConn();
          c->index = mine_[next_to_open++];
          conns_.push_back(c);
          connect_socket(c);
        }
      }

      int n = loop_->wait(events, 512, rearms_left_ ? 0 : o_.publisher ? kTickMs : 100);
      uint64_t now_us = realtime_us();
      for (int i = 0; i < n; i++) {
        if (is_ring_tag(events[i].tag)) {
          drain(static_cast<unsigned>(static_cast<char*>(events[i].tag) - ring_tags_), now_us);
          continue;
        }
        CConn* c = static_cast<CConn*>(events[i].tag);
        if (!c) {  // the wake eventfd (level-triggered): drain it
          uint64_t v;
          ssize_t ignored = ::read(wake_fd_, &v, sizeof v);
          (void)ignored;
          continue;
        }
        if (c->state == CConn::kClosed) continue;
        if (c->state == CConn::kConnecting) {
          if (events[i].events & (kWritable | kHangup)) connected(c);
          continue;
        }
        if (events[i].events & (kReadable | kHangup)) on_readable(c, now_us);
        if (c->state != CConn::kClosed && (events[i].events & kWritable) && !c->tx.empty()) flush(c);
      }
      if (has_requests_.load(std::memory_order_acquire)) serve_requests();
      if (rate > 0 && !open_.empty()) {
        double elapsed = static_cast<double>(monotonic_ns() - started_ns) / 1e9;
        double owed = elapsed * rate - static_cast<double>(published);
        if (owed > rate * kMaxCatchUpSeconds) {
          published += static_cast<uint64_t>(owed - rate * kMaxCatchUpSeconds);  // skip what a stall lost
          owed = rate * kMaxCatchUpSeconds;
        }
        for (; owed >= 1; owed -= 1) {
          publish_one(open_[rr_++ % open_.size()]);
          published++;
        }
      }
      for (CConn* c : dirty_) {
        c->dirty = false;
        if (c->state != CConn::kClosed) flush(c);
      }
      dirty_.clear();
      rearms_left_ = service_rings();
    }
  }

  // Opens c's socket and starts connecting (a new connection, or one reconnect() dropped).
  void connect_socket(CConn* c) {
    const uint32_t index = c->index;
    c->state = CConn::kConnecting;
    c->connect_ns = c->reconnecting ? 0 : monotonic_ns();  // (reconnect() has records of its own)
    const Resolved& server = servers_[index % servers_.size()];
    c->fd = socket(server.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
      fail(c);
      return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o_.socket_buffer > 0) {
      setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &o_.socket_buffer, sizeof o_.socket_buffer);
      setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &o_.socket_buffer, sizeof o_.socket_buffer);
    }
    if (!locals_.empty()) {
      // Choose the port at connect() time, per destination, so each source address serves the whole
      // ephemeral range for every server address (the seeds' LocalAddresses).
      setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      const Resolved& local = locals_[index % locals_.size()];
      if (bind(c->fd, reinterpret_cast<const sockaddr*>(&local.addr), local.len) != 0) {
        fail(c);
        return;
      }
    }
    add(kc_connecting);
    int rc = connect(c->fd, reinterpret_cast<const sockaddr*>(&server.addr), server.len);
    if (rc != 0 && errno != EINPROGRESS) {
      sub(kc_connecting);
      fail(c);
      return;
    }
    loop_->watch_stream(c->fd, c);
  }

  void connected(CConn* c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      sub(kc_connecting);
      fail(c);
      return;
    }
    if (http_ && o_.publisher) {  // nothing to set up: each publish is a request of its own
      if (c->connect_ns) connected_in(c);
      on_open(c);
      return;
    }
    c->state = CConn::kUpgrading;
    if (http_) {
      sse_request(c);
    } else {
      std::string target = o_.path;
      if (!o_.tokens.empty()) target += "?token=" + o_.tokens[c->index % o_.tokens.size()];
      c->tx += "GET " + target + " HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: " + std::string(kHandshakeKey) + "\r\nSec-WebSocket-Version: 13\r\n\r\n";
    }
    flush(c);
  }

  // Appends `GET /sse` for every subject of subscriber c to c->tx: after reconnect(), each subject with a
  // position as a recovery spec (as the SUBs of a WebSocket).
  void sse_request(CConn* c) {
    std::string& r = c->tx;
    r += "GET /sse?";
    for (uint32_t j = 0; j < slots_; j++) {
      r += j ? "&subject=" : "subject=";
      append_spec(r, c, j, true);
    }
    if (!o_.tokens.empty()) r += "&token=" + o_.tokens[c->index % o_.tokens.size()];
    r += " HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n";
    if (c->reconnecting) c->resubscribed_ns = monotonic_ns();
  }

  // Appends subject j of c to out (percent-encoded for a query when `query`); while c reconnects and has a
  // position on it, as the recovery spec "<subject>@<epoch>:<seq>", counted in c->awaiting.
  void append_spec(std::string& out, CConn* c, uint32_t j, bool query) {
    const std::string& s = subject_of(c, j);
    if (query) append_query_value(out, s);
    else out += s;
    if (!c->reconnecting || !track_ || !c->pos || !c->pos[j].known) return;
    out += '@';
    append_epoch36(out, c->pos[j].epoch);
    out += ':';
    out += std::to_string(c->pos[j].seq);
    c->awaiting++;
  }

  void fail(CConn* c) {
    add(kc_connect_failures);
    drop(c);
  }

  // Closes c for good (the server closed it, or it failed to connect): its subscriptions that never got
  // a position leave the unpositioned gauge, and a reconnection in progress ends unsynced.
  void drop(CConn* c) {
    detach(c);
    c->reconnecting = false;
    c->awaiting = 0;
    if (c->pos) {
      for (uint32_t j = 0; j < slots_; j++)
        if (!c->pos[j].known) sub(kc_unpositioned);
      c->pos.reset();
    }
  }

  // Closes c's socket (with reset: a direct descriptor's by a TCP reset) and forgets its stream state (not its
  // positions).
  void detach(CConn* c, bool reset = false) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->direct != kNotDirect) close_direct(c, reset);
    if (c->state == CConn::kOpen) {
      sub(kc_connected);
      CConn* moved = open_.back();
      open_[c->open_at] = moved;
      moved->open_at = c->open_at;
      open_.pop_back();
    }
    c->state = CConn::kClosed;
    c->rx.clear();
    c->rx.shrink_to_fit();
    c->stream.clear();
    c->tx.clear();
  }

  void serve_requests() {
    std::vector<ReconnectRequest> todo;
    {
      std::lock_guard<std::mutex> lock(requests_mu_);
      todo.swap(requests_);
      has_requests_.store(false, std::memory_order_relaxed);
    }
    for (const ReconnectRequest& r : todo) {
      const uint32_t every = r.every ? r.every : 1;
      // open_ changes as connections are dropped: select first.
      std::vector<CConn*> chosen;
      for (CConn* c : open_)
        if (c->index >= r.from && c->index < r.to && (c->index - r.from) % every == 0) chosen.push_back(c);
      for (CConn* c : chosen) drop_for_reconnect(c, r.close_frame);
    }
  }

  // reconnect(): closes c (abruptly, or after writing a close frame) and queues it to be opened again.
  void drop_for_reconnect(CConn* c, bool close_frame) {
    if (close_frame && http_) {
      // An event stream has no close frame: close() alone, and the server reads the end of the stream.
    } else if (close_frame) {
      static const char kGoingAway[2] = {0x03, static_cast<char>(0xe9)};  // 1001
      c->tx.clear();
      frame(c, kOpClose, kGoingAway, sizeof kGoingAway);
      if (c->direct != kNotDirect) {
        send_direct(c);  // done inline, before the close queued after it
      } else {
        ssize_t ignored = send(c->fd, c->tx.data(), c->tx.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)ignored;
      }
    } else if (c->fd >= 0) {
      linger l{1, 0};
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    detach(c, !close_frame);
    c->reconnecting = true;
    c->awaiting = 0;
    c->dropped_ns = monotonic_ns();
    add(kc_reconnects);
    reopen_.push_back(c);
  }

  // Appends one masked client frame carrying `payload` to c->tx.
  void frame(CConn* c, uint8_t opcode, const char* p, size_t n) {
    uint8_t head[14];
    size_t h = 2;
    head[0] = static_cast<uint8_t>(0x80 | opcode);
    if (n < 126) {
      head[1] = static_cast<uint8_t>(0x80 | n);
    } else if (n < 65536) {
      head[1] = 0x80 | 126;
      head[2] = static_cast<uint8_t>(n >> 8);
      head[3] = static_cast<uint8_t>(n);
      h = 4;
    } else {
      head[1] = 0x80 | 127;
      for (int i = 0; i < 8; i++) head[2 + i] = static_cast<uint8_t>(static_cast<uint64_t>(n) >> (56 - 8 * i));
      h = 10;
    }
    uint32_t m = static_cast<uint32_t>(next_random());
    uint8_t mask[4];
    std::memcpy(mask, &m, 4);
    std::memcpy(head + h, mask, 4);
    h += 4;
    size_t at = c->tx.size();
    c->tx.append(reinterpret_cast<char*>(head), h);
    c->tx.append(p, n);
    unmask(reinterpret_cast<uint8_t*>(&c->tx[at + h]), n, mask, 0);  // XOR masks as well as unmasks
    mark_dirty(c);
  }

  // c is flushed at the end of this iteration (and, a subscriber with ClientOptions::direct, moved into a ring).
  void mark_dirty(CConn* c) {
    if (!c->dirty) {
      c->dirty = true;
      dirty_.push_back(c);
    }
  }

  void on_open(CConn* c) {
    c->state = CConn::kOpen;
    sub(kc_connecting);
    add(kc_connected);
    c->open_at = static_cast<uint32_t>(open_.size());
    open_.push_back(c);
    if (o_.dialect == Dialect::kNats) {
      static const char kConnect[] = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n";
      frame(c, kOpBinary, kConnect, sizeof kConnect - 1);
    }
    if (o_.publisher || o_.subjects.empty()) return;
    if (track_ && !c->pos) {
      c->pos.reset(new Position[slots_]);
      add(kc_unpositioned, slots_);
    }
    if (http_) {
      mark_dirty(c);  // (its subjects went with the request: nothing to send, but a flush parks it when direct)
    } else {
      for (uint32_t j = 0; j < (track_ ? slots_ : o_.subjects_per_client); j++) {
        std::string cmd;
        if (o_.dialect == Dialect::kNats) {
          cmd = "SUB " + nats_subject(subject_of(c, j)) + " " + std::to_string(j + 1) + "\r\n";
        } else {
          // Recovering: from the last position, what came after it, then SYNC (or RESYNC), then live.
          cmd = "SUB ";
          append_spec(cmd, c, j, false);
        }
        frame(c, o_.dialect == Dialect::kNats ? kOpBinary : kOpText, cmd.data(), cmd.size());
      }
      if (c->reconnecting) c->resubscribed_ns = monotonic_ns();
    }
    if (c->reconnecting && c->awaiting == 0) {  // no position to recover from: no SYNC will come
      c->reconnecting = false;
      add(kc_reconnects_unpositioned);
    }
  }

  const std::string& subject_of(const CConn* c, uint32_t j) const {
    return o_.subjects[(static_cast<uint64_t>(c->index) * o_.subjects_per_client + j) % o_.subjects.size()];
  }

  // The slot of `subject` among c's subscriptions, or -1 if c did not subscribe to it.
  int slot_of(const CConn* c, std::string_view subject) const {
    if (slots_ == 1) return subject == subject_of(c, 0) ? 0 : -1;
    auto it = subject_index_.find(subject);
    if (it == subject_index_.end()) return -1;
    const uint64_t size = o_.subjects.size();
    const uint64_t base = (static_cast<uint64_t>(c->index) * o_.subjects_per_client) % size;
    const uint64_t j = (it->second + size - base) % size;
    return j < slots_ ? static_cast<int>(j) : -1;
  }

  // A MSG at (epoch, seq) on slot j: the sequence check.
  void check_sequence(CConn* c, int j, uint64_t epoch, uint64_t seq) {
    Position& q = c->pos[j];
    if (!q.known) {
      q = Position{epoch, seq, true};
      sub(kc_unpositioned);
      return;
    }
    if (q.epoch != epoch) {
      add(kc_epoch_changes);
      q.epoch = epoch;
      q.seq = seq;
      return;
    }
    if (seq == q.seq + 1) {
      q.seq = seq;
    } else if (seq <= q.seq) {
      add(kc_duplicated);
    } else {
      add(kc_lost, seq - q.seq - 1);
      q.seq = seq;
    }
  }

  // SYNC or RESYNC <subject> <epoch>:<seq> on c.
  void on_position(CConn* c, std::string_view line, bool resync) {
    add(resync ? kc_resyncs : kc_syncs);
    PositionLine pl;
    if (!track_ || !c->pos || !parse_position_line(line, &pl)) return;
    int j = slot_of(c, pl.subject);
    if (j < 0) return;
    Position& q = c->pos[j];
    if (!q.known) {
      sub(kc_unpositioned);
      q = Position{pl.epoch, pl.seq, true};
    } else if (resync) {
      // What was missed is reported by the RESYNC count; live messages follow from this position.
      q = Position{pl.epoch, pl.seq, true};
    } else if (q.epoch != pl.epoch) {
      add(kc_epoch_changes);
      q = Position{pl.epoch, pl.seq, true};
    } else if (pl.seq > q.seq) {
      // Everything up to pl.seq was sent, the server says, but not received.
      add(kc_lost, pl.seq - q.seq);
      q.seq = pl.seq;
    }
    // pl.seq < q.seq: messages past the SYNC arrived before it; sent again, they count as duplicates.
    if (c->reconnecting && c->awaiting > 0 && --c->awaiting == 0) {
      c->reconnecting = false;
      add(kc_reconnects_synced);
      const uint64_t now = monotonic_ns();
      sync_time_.add((now - c->dropped_ns) / 1000);
      resubscribe_time_.add((now - c->resubscribed_ns) / 1000);
    }
  }

  void publish_one(CConn* c) {
    if (c->tx.size() > kMaxPendingTx) {
      add(kc_send_stalls);
      return;
    }
    const std::string& s = o_.subjects[next_random() % o_.subjects.size()];
    size_t size = o_.message_size < kStampDigits ? kStampDigits : o_.message_size;
    if (http_) {
      post_one(c, s, size);
      return;
    }
    std::string& m = scratch_;
    m.clear();
    if (o_.dialect == Dialect::kStarling) {
      m += "PUB ";
      m += s;
      m += '\n';
    } else if (o_.dialect == Dialect::kPlain) {
      m += "PUB ";
      m += s;
      m += ' ';
    } else {
      m += "PUB " + nats_subject(s) + " " + std::to_string(size) + "\r\n";
    }
    append_stamp(m);
    m.append(size - kStampDigits, 'x');
    if (o_.dialect == Dialect::kNats) m += "\r\n";
    frame(c, o_.dialect == Dialect::kNats ? kOpBinary : kOpText, m.data(), m.size());
    add(kc_messages_sent);
  }

  // One message as `POST /publish` on HTTP publisher c: the payload of a WebSocket PUB (the timestamp, then
  // 'x' up to `size` bytes), as text (the WebSocket publisher sends text frames); skipped (send_stalls) while
  // kHttpPipelineWindow requests are unanswered.
  void post_one(CConn* c, const std::string& subject, size_t size) {
    if (c->in_flight >= kHttpPipelineWindow) {
      add(kc_send_stalls);
      return;
    }
    std::string& r = c->tx;
    r += "POST /publish?subject=";
    append_query_value(r, subject);
    if (!o_.tokens.empty()) r += "&token=" + o_.tokens[c->index % o_.tokens.size()];
    r += " HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: ";
    r += std::to_string(size);
    r += "\r\n\r\n";
    append_stamp(r);
    r.append(size - kStampDigits, 'x');
    c->in_flight++;
    mark_dirty(c);
    add(kc_messages_sent);
  }

  // Appends the 16-digit creation time (µs) that starts every benchmark payload.
  static void append_stamp(std::string& out) {
    char stamp[kStampDigits + 1];
    snprintf(stamp, sizeof stamp, "%016llu", static_cast<unsigned long long>(realtime_us()));
    out.append(stamp, kStampDigits);
  }

  // HTTP publisher c's responses in p[0..n): each complete one (head and Content-Length body) answers its
  // oldest request, 200 counted as acknowledged and anything else as an error. Returns the bytes consumed.
  size_t consume_responses(CConn* c, const uint8_t* p, size_t n) {
    const std::string_view in(reinterpret_cast<const char*>(p), n);
    size_t pos = 0;
    for (;;) {
      const size_t end = in.find("\r\n\r\n", pos);
      if (end == std::string_view::npos) return pos;
      const std::string_view head = in.substr(pos, end + 2 - pos);
      uint64_t body = 0;
      for (char d : header_value(head, "content-length:")) {
        if (d < '0' || d > '9') break;
        body = body * 10 + static_cast<uint64_t>(d - '0');
      }
      if (n - (end + 4) < body) return pos;
      pos = end + 4 + static_cast<size_t>(body);
      if (head.size() < 12 || head.substr(9, 3) == "100") continue;  // (an interim answer: the final one follows)
      add(head.substr(9, 3) == "200" ? kc_acknowledged : kc_errors);
      if (c->in_flight) c->in_flight--;
    }
  }

  // A subscriber's event stream in p[0..n): the complete events (up to the last blank line, and the comment
  // lines, heartbeats, right after it) go through the thread's parser, one connection at a time; the rest, an
  // event not complete yet, waits in c->rx for more input, so an idle stream holds no buffer. Starling ends
  // lines with LF alone (transport/sse.h), so a blank line is "\n\n". Returns the bytes consumed.
  size_t consume_events(CConn* c, const uint8_t* p, size_t n, uint64_t now_us) {
    size_t cut = 0;
    for (size_t i = 0; i < n;) {
      const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p + i, '\n', n - i));
      if (!nl) break;
      const size_t end = static_cast<size_t>(nl - p) + 1;
      if (end - i == 1 || (i == cut && p[i] == ':')) cut = end;
      i = end;
    }
    bool ok = cut > 0 || n <= kSseMaxEvent;
    if (cut > 0) {
      sse_.reset();
      ok = sse_.feed_all(p, cut, [&](const SseEvent& e) { on_event(c, e, now_us); });
    }
    if (!ok) {  // a line or event past the bounds: not a stream this tool can follow
      add(kc_errors);
      add(kc_disconnects);
      drop(c);
      return n;
    }
    return cut;
  }

  // One event of c's stream (transport/sse.h has the forms): a message event as a MSG of its kind, sync and
  // resync as SYNC and RESYNC, err as ERR, auth as AUTH; the rest is ignored.
  void on_event(CConn* c, const SseEvent& e, uint64_t now_us) {
    std::string_view type = e.type;
    bool base64 = false;
    for (std::string_view suffix : {std::string_view("-utf8-base64"), std::string_view("-base64")}) {
      if (type.size() > suffix.size() && type.substr(type.size() - suffix.size()) == suffix) {
        type.remove_suffix(suffix.size());
        base64 = true;
        break;
      }
    }
    if (type == "sync" || type == "resync") {
      on_position(c, e.data, type == "resync");
    } else if (type == "err") {
      add(kc_errors);
    } else if (type == "auth") {
      if (c->connect_ns) connected_in(c);
    } else if (type == "message" || type == "snapshot" || type == "history" || type == "recovered") {
      const std::string_view kind = type == "message" ? std::string_view() : type;
      if (track_ && c->pos) {
        const Spec at = parse_spec(e.id);  // the id is "<subject>@<epoch>:<seq>"
        if (at.mode == SpecMode::kRecover) check_message(c, at.subject, at.epoch, at.seq, kind);
      }
      if (!kind.empty() || !base64) {
        delivered(kind, reinterpret_cast<const uint8_t*>(e.data.data()), e.data.size(), now_us);
      } else {
        uint8_t stamp[kStampDigits + 2];
        const size_t got = base64_prefix(e.data.data(), std::min(e.data.size(), kStampBase64), stamp, kStampDigits);
        record(stamp, got, now_us);
      }
    }
  }

  void flush(CConn* c) {
    if (c->direct != kNotDirect) {
      send_direct(c);
      return;
    }
    while (!c->tx.empty()) {
      ssize_t w = send(c->fd, c->tx.data(), c->tx.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        if (c->state == CConn::kOpen) add(kc_disconnects);
        drop(c);
        return;
      }
      add(kc_bytes_sent, static_cast<uint64_t>(w));
      c->tx.erase(0, static_cast<size_t>(w));
    }
    // An open subscriber whose SUBs are written leaves the fd table.
    if (o_.direct && !o_.publisher && c->state == CConn::kOpen && !direct_off_) park(c);
  }

  void on_readable(CConn* c, uint64_t now_us) {
    for (;;) {
      ssize_t n = recv(c->fd, rx_buf_.data(), rx_buf_.size(), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        if (c->state == CConn::kOpen) add(kc_disconnects);
        else {
          sub(kc_connecting);
          add(kc_connect_failures);
        }
        drop(c);
        return;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      on_input(c, rx_buf_.data(), static_cast<size_t>(n), now_us);
      if (c->state == CConn::kClosed || static_cast<size_t>(n) < rx_buf_.size()) return;
    }
  }

  // n bytes received on c (from recv, or a ring's buffer): consumed after what was left of earlier input.
  void on_input(CConn* c, uint8_t* p, size_t n, uint64_t now_us) {
    add(kc_bytes_received, n);
    size_t len = n;
    if (!c->rx.empty()) {
      c->rx.insert(c->rx.end(), p, p + len);
      p = c->rx.data();
      len = c->rx.size();
    }
    size_t used = consume(c, p, len, now_us);
    if (c->state == CConn::kClosed) return;
    if (!c->rx.empty()) c->rx.erase(c->rx.begin(), c->rx.begin() + static_cast<long>(used));
    else if (used < len) c->rx.assign(p + used, p + len);
  }

  // --- Direct descriptors (ClientOptions::direct) --------------------------------------------------------

  static uint64_t op_tag(unsigned ri, int slot, DirectOp op) {
    return ((uint64_t{ri} << kSlotBits | static_cast<uint64_t>(slot)) << 3) | op;
  }
  bool is_ring_tag(void* tag) const {
    const char* p = static_cast<const char*>(tag);
    return p >= ring_tags_ && p < ring_tags_ + kMaxRings;
  }

  // A ring for more connections, its table as large as RLIMIT_NOFILE (the kernel's only check on it).
  bool add_ring() {
    if (rings_.size() >= kMaxRings) return false;
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    RingSize size;
    size.sq_entries = 2048;   // (as many re-arms as buffers, with room for sends and closes)
    size.cq_entries = 16384;  // a keepalive round's completions without overflowing into the kernel's list
    size.files = static_cast<unsigned>(std::min<rlim_t>(lim.rlim_cur, (rlim_t{1} << kSlotBits) - 1));
    size.buffers = kRingBuffers;
    size.buffer_bytes = kRingBufferBytes;
    size.classic_buffers = uring_classic_buffers();
    std::string why;
    std::unique_ptr<Ring> ring = Ring::create(size, &why);
    const unsigned ri = static_cast<unsigned>(rings_.size());
    if (!ring || !loop_->watch_readable(ring->fd(), &ring_tags_[ri])) return false;
    DirectRing r;
    r.ring = std::move(ring);
    r.owner.assign(size.files, nullptr);
    r.busy.assign(size.files, 0);
    r.sending.resize(size.files);
    rings_.push_back(std::move(r));
    return true;
  }

  // Moves open subscriber c into a ring (its socket leaves the fd table). If that fails it stays on epoll.
  void park(CConn* c) {
    unsigned ri = 0;
    while (ri < rings_.size() && rings_[ri].ring->free_slots() == 0) ri++;
    if (ri == rings_.size() && !add_ring()) {
      add(kc_direct_failures);
      direct_off_ = true;  // (no ring can be added: the rest stay on epoll too)
      return;
    }
    DirectRing& r = rings_[ri];
    const int slot = r.ring->take_slot();
    if (slot < 0 || r.ring->install(c->fd, slot) != 0) {
      if (slot >= 0) r.ring->put_slot(slot);
      add(kc_direct_failures);
      return;
    }
    loop_->unwatch(c->fd);  // the socket lives on in the table, and epoll would go on reporting it
    close(c->fd);
    c->fd = -1;
    c->direct = static_cast<int>(ri << kSlotBits | static_cast<unsigned>(slot));
    r.owner[slot] = c;
    r.busy[slot] = DirectRing::kInUse;
    add(kc_direct);
    arm_recv(ri, slot);
  }

  void arm_recv(unsigned ri, int slot) {
    DirectRing& r = rings_[ri];
    io_uring_sqe* e = r.ring->sqe();
    if (!e) {  // the submission queue is stuck full: the next iteration tries again
      r.rearm.push_back(slot);
      return;
    }
    prep_recv(e, slot, op_tag(ri, slot, kRingRecv), true);
    r.busy[slot] |= DirectRing::kArmed;
  }

  // Writes c->tx with one SEND (none while another is in flight: its completion sends the rest).
  void send_direct(CConn* c) {
    const unsigned ri = static_cast<unsigned>(c->direct) >> kSlotBits;
    const int slot = c->direct & ((1 << kSlotBits) - 1);
    DirectRing& r = rings_[ri];
    if (c->tx.empty() || (r.busy[slot] & DirectRing::kSending)) return;
    io_uring_sqe* e = r.ring->sqe();
    if (!e) return;  // (left in c->tx: the next frame sends it)
    std::string& b = r.sending[slot];
    b.swap(c->tx);
    e->opcode = IORING_OP_SEND;
    e->fd = slot;
    e->flags = IOSQE_FIXED_FILE;
    e->addr = reinterpret_cast<uint64_t>(b.data());
    e->len = static_cast<uint32_t>(b.size());
    e->msg_flags = MSG_NOSIGNAL;
    e->user_data = op_tag(ri, slot, kRingSend);
    r.busy[slot] |= DirectRing::kSending;
  }

  // c leaves its ring: [a TCP reset armed], its receive (and send) cancelled, its slot closed. The kernel issues the SQEs
  // inline in queue order; the slot is reused once the close and the receive's last completion are in.
  void close_direct(CConn* c, bool reset) {
    const unsigned ri = static_cast<unsigned>(c->direct) >> kSlotBits;
    const int slot = c->direct & ((1 << kSlotBits) - 1);
    DirectRing& r = rings_[ri];
    c->direct = kNotDirect;
    r.owner[slot] = nullptr;
    sub(kc_direct);
    Ring& ring = *r.ring;
    if (reset) {
      if (io_uring_sqe* e = ring.sqe()) prep_linger_reset(e, slot, op_tag(ri, slot, kRingOther));
    }
    // Cancelled by user_data (prep_cancel), not by descriptor.
    for (DirectOp op : {kRingRecv, kRingSend}) {
      if (!(r.busy[slot] & (op == kRingRecv ? DirectRing::kArmed : DirectRing::kSending))) continue;
      if (io_uring_sqe* e = ring.sqe()) prep_cancel(e, op_tag(ri, slot, op), op_tag(ri, slot, kRingOther));
    }
    if (io_uring_sqe* e = ring.sqe()) {
      prep_close(e, slot, op_tag(ri, slot, kRingClose));
      r.busy[slot] |= DirectRing::kClosing;
    } else {
      add(kc_direct_failures);  // the slot stays taken (the ring's submission queue failed)
    }
  }

  // The slot goes back to its ring once nothing names it any more.
  void release(DirectRing& r, int slot) {
    if (r.busy[slot] == DirectRing::kInUse && !r.owner[slot]) {
      r.busy[slot] = 0;
      std::string().swap(r.sending[slot]);
      r.ring->put_slot(slot);
    }
  }

  // Every completion of ring ri.
  void drain(unsigned ri, uint64_t now_us) {
    DirectRing& r = rings_[ri];
    Ring& ring = *r.ring;
    for (unsigned n; (n = ring.ready()) > 0;) {
      for (unsigned i = 0; i < n; i++) {
        const io_uring_cqe q = ring.cqe(i);
        if (q.user_data == Ring::kInternal) continue;
        const int slot = static_cast<int>((q.user_data >> 3) & ((1u << kSlotBits) - 1));
        switch (q.user_data & 7) {
          case kRingRecv:
            on_recv(r, slot, q, now_us);
            break;
          case kRingSend:
            on_sent(r, slot, q.res);
            break;
          case kRingClose:
            r.busy[slot] &= ~DirectRing::kClosing;
            release(r, slot);
            break;
          default:
            break;
        }
      }
      ring.advance(n);
    }
  }

  void on_recv(DirectRing& r, int slot, const io_uring_cqe& q, uint64_t now_us) {
    const bool more = q.flags & IORING_CQE_F_MORE;
    if (!more) r.busy[slot] &= ~DirectRing::kArmed;
    if (q.flags & IORING_CQE_F_BUFFER) {
      const uint16_t bid = static_cast<uint16_t>(q.flags >> IORING_CQE_BUFFER_SHIFT);
      if (r.owner[slot] && q.res > 0) on_input(r.owner[slot], r.ring->buffer(bid), static_cast<size_t>(q.res), now_us);
      r.ring->give_back(bid);
    }
    CConn* c = r.owner[slot];  // (the input may have closed it)
    if (c && (q.res == 0 || (q.res < 0 && q.res != -ENOBUFS && q.res != -ECANCELED))) {
      add(kc_disconnects);  // the server closed it (or reset it)
      drop(c);
    } else if (c && !more) {
      r.rearm.push_back(slot);  // out of buffers, or the kernel ended it: armed again once buffers are back
    }
    if (!more) release(r, slot);
  }

  void on_sent(DirectRing& r, int slot, int res) {
    r.busy[slot] &= ~DirectRing::kSending;
    std::string& b = r.sending[slot];
    CConn* c = r.owner[slot];
    if (c && res < 0) {
      add(kc_disconnects);
      drop(c);
    } else if (c) {
      add(kc_bytes_sent, static_cast<uint64_t>(res));
      if (static_cast<size_t>(res) < b.size()) c->tx.insert(0, b, static_cast<size_t>(res), std::string::npos);
      std::string().swap(b);
      send_direct(c);
    }
    release(r, slot);
  }

  // End of an iteration: buffers given back are provided again, receives that ended are armed again (after
  // the buffers, which the kernel takes first; at most kRingBuffers a ring), and every ring's SQEs are
  // submitted. Returns whether re-arms are left for the next iteration (which then does not sleep).
  bool service_rings() {
    bool more = false;
    for (unsigned ri = 0; ri < rings_.size(); ri++) {
      DirectRing& r = rings_[ri];
      r.ring->provide_returns();
      if (!r.rearm.empty()) {
        const size_t take = std::min<size_t>(r.rearm.size(), kRingBuffers);
        rearm_.assign(r.rearm.begin(), r.rearm.begin() + static_cast<long>(take));
        r.rearm.erase(r.rearm.begin(), r.rearm.begin() + static_cast<long>(take));
        for (int slot : rearm_)
          if (r.owner[slot] && !(r.busy[slot] & DirectRing::kArmed)) arm_recv(ri, slot);
        rearm_.clear();
        more = more || !r.rearm.empty();
      }
      r.ring->submit();
    }
    return more;
  }

  size_t consume(CConn* c, uint8_t* p, size_t len, uint64_t now_us) {
    size_t pos = 0;
    if (c->state == CConn::kUpgrading) {
      const char* end = static_cast<const char*>(memmem(p, len, "\r\n\r\n", 4));
      if (!end) return 0;
      if (len < 12 || std::memcmp(p + 9, http_ ? "200" : "101", 3) != 0) {
        sub(kc_connecting);
        fail(c);
        return len;
      }
      pos = static_cast<size_t>(end - reinterpret_cast<const char*>(p)) + 4;
      if (c->connect_ns && o_.tokens.empty()) connected_in(c);  // (with a token: at its AUTH answer)
      on_open(c);
    }
    if (http_) return pos + (o_.publisher ? consume_responses(c, p + pos, len - pos) : consume_events(c, p + pos, len - pos, now_us));
    while (pos + 2 <= len) {
      uint8_t b0 = p[pos], b1 = p[pos + 1];
      uint64_t plen = b1 & 0x7f;
      size_t h = 2;
      if (plen == 126) {
        if (pos + 4 > len) break;
        plen = (uint64_t{p[pos + 2]} << 8) | p[pos + 3];
        h = 4;
      } else if (plen == 127) {
        if (pos + 10 > len) break;
        plen = 0;
        for (int i = 0; i < 8; i++) plen = (plen << 8) | p[pos + 2 + i];
        h = 10;
      }
      if (len - pos - h < plen) break;
      uint8_t opcode = b0 & 0x0f;
      uint8_t* payload = p + pos + h;
      pos += h + plen;
      if (opcode == kOpClose) {
        add(kc_disconnects);
        drop(c);
        return len;
      }
      if (opcode == kOpPing) {
        frame(c, kOpPong, reinterpret_cast<char*>(payload), plen);
        continue;
      }
      if (opcode == kOpPong) continue;
      on_message(c, payload, plen, now_us);
      if (c->state == CConn::kClosed) return len;
    }
    return pos;
  }

  void record(const uint8_t* stamp, size_t avail, uint64_t now_us) {
    if (avail < kStampDigits) return;
    uint64_t sent = 0;
    for (size_t i = 0; i < kStampDigits; i++) {
      if (stamp[i] < '0' || stamp[i] > '9') return;  // not a benchmark payload
      sent = sent * 10 + (stamp[i] - '0');
    }
    latency_.add(now_us > sent ? now_us - sent : 0);
    add(kc_messages_received);
  }

  static bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

  // A message of `kind` (empty: live) whose payload is p[0..n): a live one's latency recorded, the others counted.
  void delivered(std::string_view kind, const uint8_t* p, size_t n, uint64_t now_us) {
    if (kind.empty()) {
      record(p, n, now_us);
    } else if (kind == "recovered") {
      add(kc_recovered);
    } else if (kind == "snapshot") {
      add(kc_snapshots);
    } else if (kind == "history") {
      add(kc_history);
    }
  }

  // A message at (epoch, seq) on `subject` of c: the sequence check, unless c did not subscribe it or it is a
  // snapshot (whose position is the subject's last message, not the next).
  void check_message(CConn* c, std::string_view subject, uint64_t epoch, uint64_t seq, std::string_view kind) {
    const int j = slot_of(c, subject);
    if (j >= 0 && kind != "snapshot") check_sequence(c, j, epoch, seq);
  }

  void on_message(CConn* c, const uint8_t* p, size_t n, uint64_t now_us) {
    switch (o_.dialect) {
      case Dialect::kStarling: {
        const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p, '\n', n));
        std::string_view head(reinterpret_cast<const char*>(p), nl ? static_cast<size_t>(nl - p) : n);
        if (!head.empty() && head.back() == '\r') head.remove_suffix(1);
        if (starts_with(head, "MSG ")) {
          std::string_view kind;
          if (track_ && c->pos) {
            PositionLine pl;
            if (parse_position_line(head.substr(4), &pl)) {
              kind = pl.rest;
              check_message(c, pl.subject, pl.epoch, pl.seq, kind);
            }
          } else {
            size_t sp = head.rfind(' ');
            std::string_view last = sp == std::string_view::npos ? std::string_view() : head.substr(sp + 1);
            if (last == "recovered" || last == "snapshot" || last == "history") kind = last;
          }
          const uint8_t* body = nl ? nl + 1 : p + n;
          if (nl || !kind.empty()) delivered(kind, body, static_cast<size_t>(p + n - body), now_us);
        } else if (starts_with(head, "SYNC ")) {
          on_position(c, head.substr(5), false);
        } else if (starts_with(head, "RESYNC ")) {
          on_position(c, head.substr(7), true);
        } else if (starts_with(head, "ERR ")) {
          add(kc_errors);
        } else if (starts_with(head, "AUTH ") && c->connect_ns) {
          connected_in(c);
        }
        return;
      }
      case Dialect::kPlain:
        record(p, n, now_us);
        return;
      case Dialect::kNats:
        c->stream.insert(c->stream.end(), p, p + n);
        nats_parse(c, now_us);
        return;
    }
  }

  // NATS protocol lines arrive as a byte stream over WebSocket frames: INFO, +OK, -ERR, PING, PONG and
  // MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n.
  void nats_parse(CConn* c, uint64_t now_us) {
    std::vector<uint8_t>& s = c->stream;
    size_t pos = 0;
    while (pos < s.size()) {
      const uint8_t* line = s.data() + pos;
      const uint8_t* eol = static_cast<const uint8_t*>(memmem(line, s.size() - pos, "\r\n", 2));
      if (!eol) break;
      size_t line_len = static_cast<size_t>(eol - line);
      if (line_len >= 4 && std::memcmp(line, "MSG ", 4) == 0) {
        const uint8_t* sp = line + line_len;
        while (sp > line && sp[-1] != ' ') sp--;
        uint64_t bytes = 0;
        for (const uint8_t* d = sp; d < line + line_len; d++) bytes = bytes * 10 + (*d - '0');
        size_t need = line_len + 2 + bytes + 2;
        if (s.size() - pos < need) break;
        record(line + line_len + 2, bytes, now_us);
        pos += need;
        continue;
      }
      if (line_len == 4 && std::memcmp(line, "PING", 4) == 0) frame(c, kOpBinary, "PONG\r\n", 6);
      pos += line_len + 2;
    }
    s.erase(s.begin(), s.begin() + static_cast<long>(pos));
  }

  const ClientOptions& o_;
  const std::unordered_map<std::string_view, uint32_t>& subject_index_;
  const unsigned index_;
  bool track_ = false;   // Starling subscribers: sequence checks and recovery
  bool http_ = false;    // Transport::kHttp: event streams (subscribers) or POST /publish (publishers)
  uint32_t slots_ = 0;   // distinct subjects per subscriber connection
  std::vector<uint32_t> mine_;
  std::vector<Resolved> servers_;
  std::vector<Resolved> locals_;
  std::unique_ptr<Poller> loop_;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::vector<CConn*> conns_;
  std::vector<CConn*> open_;
  std::vector<CConn*> dirty_;
  std::deque<CConn*> reopen_;  // dropped by reconnect(), waiting for a connection slot
  std::mutex requests_mu_;
  std::vector<ReconnectRequest> requests_;
  std::atomic<bool> has_requests_{false};
  std::vector<uint8_t> rx_buf_;
  std::string scratch_;
  SseParser sse_{kSseMaxEvent, kSseMaxEvent};  // every event stream of the thread, one connection's complete events at a time
  std::vector<DirectRing> rings_;  // direct descriptors (ClientOptions::direct), added as they fill
  char ring_tags_[kMaxRings] = {};  // &ring_tags_[i]: ring i's tag in loop_ (told from CConn* by address)
  std::vector<int> rearm_;
  bool rearms_left_ = false;       // receives still to re-arm (service_rings): the next wait does not sleep
  bool direct_off_ = false;        // a ring could not be added: connections stay on epoll
  size_t rr_ = 0;
  uint64_t rng_;
  std::atomic<uint64_t> counters_[kClientCounterCount];
  LatencyRecord latency_;    // live messages: publisher's timestamp to receipt
  LatencyRecord sync_time_;  // reconnect(): drop to the connection's last SYNC / RESYNC
  LatencyRecord resubscribe_time_;  // reconnect(): recovery SUBs sent (on the 101) to that SYNC / RESYNC
  LatencyRecord connect_time_;      // a new connection: socket opened to the 101 (with a token: to its AUTH answer)
};

ClientEngine::ClientEngine(ClientOptions options) : options_(std::move(options)) {
  if (options_.servers.empty()) throw std::runtime_error("no server address");
  if (options_.direct && !options_.publisher) {
    std::string why = io_uring_unavailable();
    if (!why.empty()) throw std::runtime_error("io_uring cannot hold the connections: " + why);
  }
  if (options_.threads < 1) throw std::runtime_error("threads must be at least 1");
  if (options_.transport == Transport::kHttp && options_.dialect != Dialect::kStarling)
    throw std::runtime_error("the HTTP transport (server-sent events, POST /publish) is Starling's: use Dialect = starling");
  if (options_.transport == Transport::kHttp && options_.subjects.empty())
    throw std::runtime_error("an event stream needs subjects");
  if (options_.subjects.empty() && options_.publisher) throw std::runtime_error("a publisher needs subjects");
  if (!options_.publisher && options_.subjects_per_client > 1)
    for (uint32_t k = 0; k < options_.subjects.size(); k++) subject_index_.emplace(options_.subjects[k], k);
  std::vector<std::vector<uint32_t>> share(options_.threads);
  for (uint32_t i = 0; i < options_.connections; i++) share[i % options_.threads].push_back(options_.first_index + i);
  for (unsigned t = 0; t < options_.threads; t++)
    threads_.emplace_back(new ClientThread(options_, subject_index_, t, std::move(share[t])));
}

ClientEngine::~ClientEngine() { stop(); }

void ClientEngine::start() {
  for (auto& t : threads_) t->start();
}

void ClientEngine::stop() {
  for (auto& t : threads_) t->stop();
}

void ClientEngine::read(double* out) const {
  for (size_t t = 0; t < threads_.size(); t++) threads_[t]->read(out + t * kClientSlotsPerThread);
}

void ClientEngine::reconnect(const ReconnectRequest& request) {
  for (auto& t : threads_) t->request(request);
}

}  // namespace starling
