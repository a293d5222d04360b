// Unit tests for io/loop_epoll.cc, the epoll backend of the stream-level Loop (io/loop.h), driven with
// real sockets: AF_UNIX socketpairs, and connected TCP loopback pairs where TCP behaviour matters (FIN,
// RST, SO_LINGER). A recording StreamEvents collects the callbacks and, like the server, frees a stream in
// on_closed (so ASan reports any later use of it by the loop). The loop is driven by hand with a fake
// clock: wait / set_now / send / tick / flush, in the order the workgroup uses.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "io/frame.h"
#include "io/loop.h"
#include "io/memory.h"

using namespace starling;

// ---------------------------------------------------------------------------------------------------
// sendmsg calls on one watched fd are counted (to see that frames queued together leave in one write).
// This definition takes precedence over libc's (and the sanitizer's) for the whole test binary; every
// call is passed on unchanged.

namespace {
std::atomic<int> g_counted_fd{-1};
std::atomic<int> g_sendmsg_calls{0};
}  // namespace

extern "C" ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  using Real = ssize_t (*)(int, const struct msghdr*, int);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "sendmsg"));
  if (fd == g_counted_fd.load(std::memory_order_relaxed)) g_sendmsg_calls.fetch_add(1, std::memory_order_relaxed);
  return real(fd, msg, flags);
}

namespace {

constexpr size_t kKiB = 1024;

// Setup failures (no sockets, no loopback) are not test failures: stop at once.
int sys(int r, const char* what) {
  if (r < 0) {
    std::fprintf(stderr, "test_loop: %s: %s\n", what, std::strerror(errno));
    std::abort();
  }
  return r;
}

void set_int(int fd, int level, int opt, int value, const char* what) {
  sys(setsockopt(fd, level, opt, &value, sizeof value), what);
}

void set_nonblocking(int fd) {
  int fl = sys(fcntl(fd, F_GETFL), "F_GETFL");
  sys(fcntl(fd, F_SETFL, fl | O_NONBLOCK), "F_SETFL");
}

// The test's end of a connection (non-blocking); the loop owns the other end.
struct Peer {
  int fd = -1;
  Peer() = default;
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// An AF_UNIX stream pair; returns the loop's end. Buffer sizes of 0 keep the defaults.
int unix_pair(Peer& peer, int loop_sndbuf = 0, int peer_sndbuf = 0) {
  int sv[2];
  sys(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), "socketpair");
  if (loop_sndbuf) set_int(sv[0], SOL_SOCKET, SO_SNDBUF, loop_sndbuf, "SO_SNDBUF");
  if (peer_sndbuf) set_int(sv[1], SOL_SOCKET, SO_SNDBUF, peer_sndbuf, "SO_SNDBUF");
  peer.fd = sv[1];
  return sv[0];
}

struct TcpOptions {
  int loop_rcvbuf = 0;
  int loop_sndbuf = 0;
  int peer_rcvbuf = 0;
  int peer_sndbuf = 0;
};

// A connected TCP pair over 127.0.0.1 (ephemeral port), Nagle off on both ends; returns the loop's end
// (the accepted socket, as in the server).
int tcp_pair(Peer& peer, const TcpOptions& o = TcpOptions{}) {
  int listener = sys(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket");
  if (o.loop_rcvbuf) set_int(listener, SOL_SOCKET, SO_RCVBUF, o.loop_rcvbuf, "SO_RCVBUF");  // inherited
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  sys(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind");
  sys(listen(listener, 1), "listen");
  socklen_t len = sizeof addr;
  sys(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
  int client = sys(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket");
  if (o.peer_rcvbuf) set_int(client, SOL_SOCKET, SO_RCVBUF, o.peer_rcvbuf, "SO_RCVBUF");
  if (o.peer_sndbuf) set_int(client, SOL_SOCKET, SO_SNDBUF, o.peer_sndbuf, "SO_SNDBUF");
  sys(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), "connect");
  int server = sys(accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC), "accept4");
  ::close(listener);
  if (o.loop_sndbuf) set_int(server, SOL_SOCKET, SO_SNDBUF, o.loop_sndbuf, "SO_SNDBUF");
  set_int(server, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  set_int(client, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
  set_nonblocking(client);
  peer.fd = client;
  return server;
}

// Writes as much of s as the socket takes now; returns the bytes taken.
size_t peer_write(int fd, const std::string& s, size_t from = 0) {
  size_t done = from;
  while (done < s.size()) {
    ssize_t n = send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  return done - from;
}

constexpr int kEof = 1;
constexpr int kNothingMore = 0;

// Reads what fd holds now into *out: kEof at end of stream, kNothingMore when it would block, -errno.
int read_avail(int fd, std::string* out) {
  static char buf[64 * kKiB];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (out) out->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return kEof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return kNothingMore;
    return -errno;
  }
}

// Reads until the end of the stream or an error, waiting up to timeout_ms for more (nobody else needs
// to act meanwhile). kEof, -errno, or kNothingMore on timeout.
int read_to_end(int fd, std::string* out, int timeout_ms = 2000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int r = read_avail(fd, out);
    if (r != kNothingMore) return r;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return kNothingMore;
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, static_cast<int>(left.count()));
  }
}

// Distinct, non-periodic bytes, so that a lost, doubled or reordered piece shows.
std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& ch : s) {
    x = x * 1103515245u + 12345u;
    ch = static_cast<char>(x >> 24);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------------
// The recording owner

enum class Phase { kIdle, kWait, kFlush, kTick, kClose, kSend };

struct Conn : Stream {
  int id = 0;
};

struct Record {
  std::string data;
  int data_events = 0;
  int hangups = 0;
  int slows = 0;
  int closed = 0;
  bool data_after_hangup = false;
  uint64_t max_backlog_at_data = 0;  // the stream's backlog during its on_data calls, at most
  Phase closed_in = Phase::kIdle;
};

class Recorder final : public StreamEvents {
 public:
  Loop* loop = nullptr;
  Phase phase = Phase::kIdle;
  std::map<int, Record> records;
  std::set<Conn*> live;
  int wakes = 0;
  bool close_on_hangup = false;  // close(kGraceful) from on_hangup, as the server does
  bool abort_on_slow = false;    // close(kAbort) from on_slow, as the server does

  Record& of(Stream* s) { return records[static_cast<Conn*>(s)->id]; }

  void on_data(Stream* s, uint8_t* data, size_t len) override {
    Record& r = of(s);
    CHECK(live.count(static_cast<Conn*>(s)) == 1);
    if (r.hangups) r.data_after_hangup = true;
    r.data.append(reinterpret_cast<const char*>(data), len);
    r.data_events++;
    uint64_t b = loop->backlog(s);
    if (b > r.max_backlog_at_data) r.max_backlog_at_data = b;
  }
  void on_hangup(Stream* s) override {
    CHECK(live.count(static_cast<Conn*>(s)) == 1);
    of(s).hangups++;
    if (close_on_hangup) loop->close(s, CloseMode::kGraceful);
  }
  void on_slow(Stream* s) override {
    CHECK(live.count(static_cast<Conn*>(s)) == 1);
    of(s).slows++;
    if (abort_on_slow) loop->close(s, CloseMode::kAbort);
  }
  void on_closed(Stream* s) override {
    Conn* c = static_cast<Conn*>(s);
    CHECK(live.count(c) == 1);
    CHECK(phase == Phase::kFlush || phase == Phase::kTick);  // never from inside close() (or wait())
    Record& r = of(s);
    r.closed++;
    r.closed_in = phase;
    live.erase(c);
    delete c;  // as the server does: any later use by the loop is a heap-use-after-free
  }
  void on_wake() override { wakes++; }
};

class Fixture {
 public:
  Recorder rec;
  std::unique_ptr<Loop> loop;
  uint64_t now = 1000;

  explicit Fixture(const LoopOptions& options = LoopOptions{}) : loop(Loop::create(rec, options)) {
    rec.loop = loop.get();
    loop->set_now(now);
  }
  ~Fixture() {
    std::vector<Conn*> left(rec.live.begin(), rec.live.end());
    for (Conn* c : left) close(c, CloseMode::kAbort);
    flush();
    CHECK(rec.live.empty());
    CHECK_EQ(loop->size(), 0u);
  }

  Conn* adopt(int fd) {
    Conn* c = new Conn();
    c->id = next_id_++;
    rec.records[c->id];
    if (!loop->adopt(c, fd)) {
      CHECK(!"adopt failed");
      delete c;
      std::abort();
    }
    rec.live.insert(c);
    return c;
  }
  Record& r(int id) { return rec.records[id]; }
  bool closed(int id) { return rec.records[id].closed > 0; }

  bool send(Conn* c, const std::string& bytes) {
    Frame* f = Frame::copy(bytes.data(), bytes.size());
    CHECK(f != nullptr);
    return send(c, f);
  }
  bool send(Conn* c, Frame* f) {
    rec.phase = Phase::kSend;
    bool ok = loop->send(c, f);
    rec.phase = Phase::kIdle;
    return ok;
  }
  void close(Conn* c, CloseMode mode) {
    rec.phase = Phase::kClose;
    loop->close(c, mode);
    rec.phase = Phase::kIdle;
  }
  void wait(int timeout_ms) {
    rec.phase = Phase::kWait;
    loop->wait(timeout_ms);
    rec.phase = Phase::kIdle;
  }
  void flush() {
    rec.phase = Phase::kFlush;
    loop->flush();
    rec.phase = Phase::kIdle;
  }
  void set_now(uint64_t t) {
    now = t;
    loop->set_now(t);
  }
  void tick(uint64_t t) {
    now = t;
    rec.phase = Phase::kTick;
    loop->tick(t);
    rec.phase = Phase::kIdle;
  }
  void pump(int timeout_ms = 0) {
    wait(timeout_ms);
    flush();
  }
  // Pumps (wait + flush) until done() holds; a bounded number of iterations, the later ones waiting 1 ms
  // for the kernel. False if it never held.
  template <typename Done>
  bool pump_until(Done done, int iterations = 400) {
    for (int i = 0; i < iterations; i++) {
      if (done()) return true;
      pump(i < 50 ? 0 : 1);
    }
    return done();
  }

  // Queues frames of `frame` bytes to c and flushes, until the socket refuses some (the peer does not
  // read). Returns what was queued (in order) via *queued.
  void fill_until_refused(Conn* c, size_t frame, std::string* queued) {
    for (int i = 0; i < 10000 && loop->backlog(c) == 0; i++) {
      std::string bytes = pattern(frame, static_cast<uint32_t>(queued->size()));
      CHECK(send(c, bytes));
      queued->append(bytes);
      flush();
    }
    CHECK(loop->backlog(c) > 0);
  }
  // Queues frames of `frame` bytes (without flushing) until the backlog is over `bytes`.
  void queue_past(Conn* c, uint64_t bytes, size_t frame, std::string* queued) {
    while (loop->backlog(c) <= bytes) {
      std::string b = pattern(frame, static_cast<uint32_t>(queued->size()));
      CHECK(send(c, b));
      queued->append(b);
    }
  }

 private:
  int next_id_ = 0;
};

LoopOptions small_backlog() {
  LoopOptions o;
  o.max_backlog = 64 * kKiB;
  o.max_backlog_ms = 1000;
  return o;
}

// ---------------------------------------------------------------------------------------------------
// 1. Input and hang-up

void data_then_one_hangup(bool tcp) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(tcp ? tcp_pair(peer) : unix_pair(peer));
  const int id = c->id;
  Record& r = fx.r(id);
  CHECK_EQ(fx.loop->size(), 1u);
  fx.pump();
  CHECK_EQ(r.data_events, 0);

  CHECK_EQ(peer_write(peer.fd, "hello"), 5u);
  CHECK(fx.pump_until([&] { return r.data == "hello"; }));
  CHECK_EQ(r.hangups, 0);

  CHECK_EQ(peer_write(peer.fd, " world"), 6u);
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  CHECK(fx.pump_until([&] { return r.hangups > 0; }));
  CHECK_EQ(r.data, "hello world");
  CHECK_EQ(r.hangups, 1);
  CHECK(!r.data_after_hangup);
  for (int i = 0; i < 5; i++) fx.pump(1);
  CHECK_EQ(r.hangups, 1);  // once per stream
  CHECK_EQ(r.closed, 0);   // the owner decides how to close
  CHECK_EQ(fx.loop->size(), 1u);
}

TEST(loop_delivers_data_then_one_hangup_after_the_last_data_unix) { data_then_one_hangup(false); }
TEST(loop_delivers_data_then_one_hangup_after_the_last_data_tcp) { data_then_one_hangup(true); }

TEST(loop_hangup_is_reported_when_the_owner_closes_from_it) {
  Fixture fx;
  fx.rec.close_on_hangup = true;
  Peer peer;
  Conn* c = fx.adopt(tcp_pair(peer));
  const int id = c->id;
  CHECK(fx.send(c, "bye"));
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  CHECK(fx.pump_until([&] { return fx.closed(id); }));
  CHECK_EQ(fx.r(id).hangups, 1);
  CHECK(fx.r(id).closed_in == Phase::kFlush);
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), kEof);
  CHECK_EQ(got, "bye");
}

// 2. Regression (audited defect): the peer's FIN arriving during a read burst larger than the per-wakeup
// read cap (4 x 64 KiB) must still give on_hangup. The stream is resumed from the ready list, and
// edge-triggered epoll does not report the FIN a second time: a dropped hang-up flag leaked the connection.

constexpr size_t kBurst = 600 * kKiB;

void check_burst_then_hangup(Fixture& fx, int id, const std::string& sent) {
  Record& r = fx.r(id);
  CHECK(fx.pump_until([&] { return r.hangups > 0; }, 200));
  CHECK_EQ(r.hangups, 1);
  CHECK_EQ(r.data.size(), sent.size());
  CHECK(r.data == sent);
  CHECK(!r.data_after_hangup);
  CHECK(r.data_events >= static_cast<int>(sent.size() / (64 * kKiB)));
}

TEST(loop_fin_behind_a_burst_over_the_read_cap_gives_hangup_unix) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer, 0, 4 << 20));
  const int id = c->id;
  const std::string sent = pattern(kBurst, 2);
  CHECK_EQ(peer_write(peer.fd, sent), sent.size());  // all of it, and the FIN, before the loop reads
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  check_burst_then_hangup(fx, id, sent);
}

TEST(loop_fin_behind_a_burst_over_the_read_cap_gives_hangup_tcp) {
  Fixture fx;
  Peer peer;
  TcpOptions o;
  o.loop_rcvbuf = 2 << 20;
  o.peer_sndbuf = 2 << 20;
  Conn* c = fx.adopt(tcp_pair(peer, o));
  const int id = c->id;
  const std::string sent = pattern(kBurst, 3);
  size_t done = peer_write(peer.fd, sent);
  for (int i = 0; i < 1000 && done < sent.size(); i++) {  // only if the window was smaller than the burst
    fx.pump(1);
    done += peer_write(peer.fd, sent, done);
  }
  CHECK_EQ(done, sent.size());
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  check_burst_then_hangup(fx, id, sent);
}

TEST(loop_fin_arriving_while_the_stream_waits_on_the_ready_list_gives_hangup) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer, 0, 4 << 20));
  const int id = c->id;
  const std::string sent = pattern(kBurst, 4);
  CHECK_EQ(peer_write(peer.fd, sent), sent.size());
  fx.pump();  // one wakeup: at most 4 x 64 KiB read, the rest left for the next iteration
  CHECK(fx.r(id).data.size() > 0);
  CHECK(fx.r(id).data.size() <= 4 * 64 * kKiB);
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  check_burst_then_hangup(fx, id, sent);
}

TEST(loop_fin_behind_a_capped_burst_survives_pause_and_resume) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer, 0, 4 << 20));
  const int id = c->id;
  const std::string sent = pattern(kBurst, 5);
  CHECK_EQ(peer_write(peer.fd, sent), sent.size());
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  fx.pump();
  const size_t first = fx.r(id).data.size();
  CHECK(first > 0 && first < sent.size());
  fx.loop->pause(c);
  for (int i = 0; i < 5; i++) fx.pump(1);
  CHECK_EQ(fx.r(id).data.size(), first);
  CHECK_EQ(fx.r(id).hangups, 0);
  fx.loop->resume(c);
  check_burst_then_hangup(fx, id, sent);
}

// ---------------------------------------------------------------------------------------------------
// 3. Output

TEST(loop_send_waits_for_flush_and_frames_of_one_iteration_leave_in_one_write) {
  Fixture fx;
  Peer peer;
  int fd = unix_pair(peer);
  Conn* c = fx.adopt(fd);
  const std::string big = pattern(1000, 6);
  Frame* frames[] = {Frame::make(kOpText, "one", 3), Frame::copy("two", 3), Frame::make(kOpBinary, big.data(), big.size()),
                     Frame::copy("", 0), Frame::make(kOpText, "three", 5)};
  std::string expected;
  uint64_t cost = 0;
  for (Frame* f : frames) {
    CHECK(f != nullptr);
    expected.append(reinterpret_cast<const char*>(f->data()), f->size());
    cost += f->cost;
    CHECK(fx.send(c, f));
  }
  CHECK(fx.loop->backlog(c) >= cost);
  std::string got;
  CHECK_EQ(read_avail(peer.fd, &got), kNothingMore);  // nothing leaves before flush
  CHECK_EQ(fx.loop->bytes_written(), 0u);

  g_counted_fd = fd;
  g_sendmsg_calls = 0;
  fx.flush();
  CHECK_EQ(g_sendmsg_calls.load(), 1);
  CHECK_EQ(fx.loop->bytes_written(), expected.size());
  CHECK_EQ(fx.loop->backlog(c), 0u);
  CHECK_EQ(read_avail(peer.fd, &got), kNothingMore);
  CHECK(got == expected);

  // A second iteration: 50 small frames, one write again, in order after the first.
  std::string more;
  for (int i = 0; i < 50; i++) {
    std::string m = "m" + std::to_string(i) + ";";
    more += m;
    CHECK(fx.send(c, m));
  }
  fx.flush();
  CHECK_EQ(g_sendmsg_calls.load(), 2);
  fx.flush();  // nothing queued: no write
  fx.pump();
  CHECK_EQ(g_sendmsg_calls.load(), 2);
  g_counted_fd = -1;
  CHECK_EQ(fx.loop->bytes_written(), expected.size() + more.size());
  got.clear();
  CHECK_EQ(read_avail(peer.fd, &got), kNothingMore);
  CHECK(got == more);
}

TEST(loop_one_frame_shared_by_several_streams) {
  const int64_t start = mem::total();
  {
    Fixture fx;
    Peer p1, p2, p3;
    Conn* cs[] = {fx.adopt(unix_pair(p1)), fx.adopt(unix_pair(p2)), fx.adopt(tcp_pair(p3))};
    const std::string body = pattern(3000, 7);
    Frame* f = Frame::make(kOpBinary, body.data(), body.size());
    CHECK(f != nullptr);
    const std::string wire(reinterpret_cast<const char*>(f->data()), f->size());
    f->ref(2);  // one reference per send
    for (Conn* c : cs) CHECK(fx.send(c, f));
    CHECK_EQ(f->refs.load(), 3u);
    fx.flush();
    CHECK_EQ(fx.loop->bytes_written(), 3 * wire.size());
    for (Peer* p : {&p1, &p2, &p3}) {
      std::string got;
      CHECK(fx.pump_until([&] {
        read_avail(p->fd, &got);
        return got.size() >= wire.size();
      }));
      CHECK(got == wire);
    }
  }
  CHECK_EQ(mem::total(), start);  // the frame was freed by its last holder
}

// ---------------------------------------------------------------------------------------------------
// 4. pause / resume

TEST(loop_pause_holds_input_and_resume_delivers_it_then_the_hangup) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  Record& r = fx.r(id);
  fx.loop->pause(c);
  CHECK_EQ(peer_write(peer.fd, "abc"), 3u);
  for (int i = 0; i < 5; i++) fx.pump(1);
  CHECK_EQ(r.data_events, 0);
  fx.loop->resume(c);
  CHECK(fx.pump_until([&] { return r.data == "abc"; }));

  fx.loop->pause(c);
  CHECK_EQ(peer_write(peer.fd, "def"), 3u);
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  for (int i = 0; i < 5; i++) fx.pump(1);
  CHECK_EQ(r.data, "abc");
  CHECK_EQ(r.hangups, 0);  // a hang-up is reported only once input is resumed and drained
  fx.loop->resume(c);
  CHECK(fx.pump_until([&] { return r.hangups > 0; }));
  CHECK_EQ(r.data, "abcdef");
  CHECK_EQ(r.hangups, 1);
  CHECK(!r.data_after_hangup);
}

TEST(loop_a_paused_stream_whose_peer_resets_is_closed_without_waiting_for_a_resume) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(tcp_pair(peer));
  const int id = c->id;
  fx.loop->pause(c);
  CHECK_EQ(peer_write(peer.fd, "AUTH t"), 6u);
  linger reset{1, 0};
  sys(setsockopt(peer.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset), "SO_LINGER");
  peer.close();  // RST
  CHECK(fx.pump_until([&] { return fx.closed(id); }));
  CHECK_EQ(fx.r(id).data_events, 0);  // nothing of it was handled: it could answer nobody
}

TEST(loop_peer_closed_reports_a_fin_while_the_stream_is_paused) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(tcp_pair(peer));
  const int id = c->id;
  fx.loop->pause(c);
  CHECK(!fx.loop->peer_closed(c));
  CHECK_EQ(peer_write(peer.fd, "AUTH t"), 6u);
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  CHECK(fx.pump_until([&] { return fx.loop->peer_closed(c); }));
  CHECK_EQ(fx.r(id).hangups, 0);  // (the hang-up itself is reported after the input, at resume)
  CHECK(!fx.closed(id));
  fx.loop->resume(c);
  CHECK(fx.pump_until([&] { return fx.r(id).hangups > 0; }));
  CHECK_EQ(fx.r(id).data, "AUTH t");
}

TEST(loop_pause_from_on_data_stops_the_burst) {
  // The owner pauses from inside on_data (its parser is full): no more on_data until resume.
  class Pauser final : public StreamEvents {
   public:
    Loop* loop = nullptr;
    size_t got = 0;
    int calls = 0;
    int hangups = 0;
    void on_data(Stream* s, uint8_t*, size_t len) override {
      got += len;
      calls++;
      loop->pause(s);
    }
    void on_hangup(Stream*) override { hangups++; }
    void on_slow(Stream*) override {}
    void on_closed(Stream*) override {}
    void on_wake() override {}
  } ev;
  std::unique_ptr<Loop> loop = Loop::create(ev, LoopOptions{});
  ev.loop = loop.get();
  Peer peer;
  Stream s;
  CHECK(loop->adopt(&s, unix_pair(peer, 0, 4 << 20)));
  const std::string sent = pattern(300 * kKiB, 8);
  CHECK_EQ(peer_write(peer.fd, sent), sent.size());
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  for (int i = 0; i < 5; i++) {
    loop->wait(1);
    loop->flush();
  }
  CHECK_EQ(ev.calls, 1);
  for (int i = 0; i < 100 && ev.hangups == 0; i++) {
    loop->resume(&s);
    loop->wait(i < 20 ? 0 : 1);
    loop->flush();
  }
  CHECK_EQ(ev.got, sent.size());
  CHECK_EQ(ev.hangups, 1);
  loop->close(&s, CloseMode::kAbort);
  loop->flush();
  CHECK_EQ(loop->size(), 0u);
}

// ---------------------------------------------------------------------------------------------------
// 5. Graceful close

TEST(loop_graceful_close_writes_the_rest_sends_fin_discards_input_and_closes_on_peer_fin) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(tcp_pair(peer));
  const int id = c->id;
  Record& r = fx.r(id);
  CHECK_EQ(peer_write(peer.fd, "request"), 7u);
  CHECK(fx.pump_until([&] { return r.data == "request"; }));

  const std::string tail = pattern(100 * kKiB, 9);
  CHECK(fx.send(c, "reply-1,"));
  CHECK(fx.send(c, tail));
  CHECK(fx.send(c, "close-frame"));
  fx.close(c, CloseMode::kGraceful);
  CHECK_EQ(r.closed, 0);  // never from inside close()
  CHECK(!fx.send(c, "late"));  // a closing stream takes nothing more (the reference is dropped)
  fx.close(c, CloseMode::kGraceful);  // closing twice changes nothing
  CHECK_EQ(fx.loop->size(), 1u);

  // The peer reads everything, then the FIN.
  std::string got;
  int end = kNothingMore;
  CHECK(fx.pump_until([&] {
    end = read_avail(peer.fd, &got);
    return end != kNothingMore;
  }));
  CHECK_EQ(end, kEof);
  CHECK(got == "reply-1," + tail + "close-frame");
  CHECK_EQ(r.closed, 0);

  // What the peer still sends is read and dropped; the stream stays open until the peer's FIN.
  CHECK_EQ(peer_write(peer.fd, pattern(10 * kKiB, 10)), 10 * kKiB);
  for (int i = 0; i < 5; i++) fx.pump(1);
  CHECK_EQ(r.data, "request");
  CHECK_EQ(r.hangups, 0);
  CHECK_EQ(r.closed, 0);
  CHECK_EQ(fx.loop->size(), 1u);

  peer.close();
  CHECK(fx.pump_until([&] { return r.closed > 0; }));
  CHECK_EQ(r.closed, 1);
  CHECK(r.closed_in == Phase::kFlush);
  CHECK_EQ(r.hangups, 0);  // no on_hangup after close()
  CHECK_EQ(fx.loop->size(), 0u);
}

TEST(loop_graceful_close_of_a_stuck_stream_aborts_after_the_linger) {
  Fixture fx;
  Peer peer;
  TcpOptions o;
  o.loop_sndbuf = 16 * kKiB;
  o.peer_rcvbuf = 16 * kKiB;
  Conn* c = fx.adopt(tcp_pair(peer, o));
  const int id = c->id;
  std::string queued;
  for (int i = 0; i < 16; i++) {
    std::string b = pattern(64 * kKiB, static_cast<uint32_t>(i));
    CHECK(fx.send(c, b));
    queued += b;
  }
  fx.flush();
  CHECK(fx.loop->backlog(c) > 0);  // the peer does not read
  const uint64_t closed_at = fx.now;
  fx.close(c, CloseMode::kGraceful);
  for (int i = 0; i < 3; i++) fx.pump(1);
  fx.tick(closed_at + kLingerMs - 1);
  fx.flush();
  CHECK_EQ(fx.r(id).closed, 0);
  fx.tick(closed_at + kLingerMs);
  CHECK_EQ(fx.r(id).closed, 1);
  CHECK(fx.r(id).closed_in == Phase::kTick);
  CHECK_EQ(fx.loop->size(), 0u);
  // The peer reads what got through, then the reset (not an EOF).
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), -ECONNRESET);
  CHECK(got.size() < queued.size());
  CHECK(got == queued.substr(0, got.size()));
}

TEST(loop_graceful_close_aborts_after_the_linger_when_the_peer_never_closes) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(tcp_pair(peer));
  const int id = c->id;
  CHECK(fx.send(c, "last words"));
  const uint64_t closed_at = fx.now;
  fx.close(c, CloseMode::kGraceful);
  fx.flush();
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), kEof);  // everything, then FIN; the peer keeps its end open
  CHECK_EQ(got, "last words");
  for (int i = 0; i < 3; i++) fx.pump(1);
  fx.tick(closed_at + kLingerMs / 2);
  CHECK_EQ(fx.r(id).closed, 0);
  fx.tick(closed_at + kLingerMs);
  CHECK_EQ(fx.r(id).closed, 1);
  CHECK(fx.r(id).closed_in == Phase::kTick);
  // It was reset: the peer's socket reports an error and takes nothing more.
  pollfd p{peer.fd, POLLIN, 0};
  for (int i = 0; i < 100 && !(p.revents & (POLLERR | POLLHUP)); i++) poll(&p, 1, 10);
  CHECK(p.revents & POLLERR);
  CHECK(send(peer.fd, "x", 1, MSG_NOSIGNAL) < 0);
}

TEST(loop_graceful_close_after_the_peer_hung_up_finishes_in_the_next_flush) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  sys(shutdown(peer.fd, SHUT_WR), "shutdown");
  CHECK(fx.pump_until([&] { return fx.r(id).hangups > 0; }));
  CHECK(fx.send(c, "goodbye"));
  fx.close(c, CloseMode::kGraceful);
  CHECK_EQ(fx.r(id).closed, 0);
  fx.flush();
  CHECK_EQ(fx.r(id).closed, 1);
  CHECK(fx.r(id).closed_in == Phase::kFlush);
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), kEof);
  CHECK_EQ(got, "goodbye");
}

// ---------------------------------------------------------------------------------------------------
// 6. Abort

TEST(loop_abort_resets_the_connection_even_with_unsent_frames) {
  Fixture fx;
  Peer peer;
  Conn* c = fx.adopt(tcp_pair(peer));
  const int id = c->id;
  CHECK(fx.send(c, "never sent"));
  CHECK(fx.send(c, pattern(10 * kKiB, 11)));
  fx.close(c, CloseMode::kAbort);
  CHECK_EQ(fx.r(id).closed, 0);  // not from inside close()
  CHECK_EQ(fx.loop->size(), 1u);
  fx.flush();
  CHECK_EQ(fx.r(id).closed, 1);
  CHECK(fx.r(id).closed_in == Phase::kFlush);
  CHECK_EQ(fx.loop->bytes_written(), 0u);
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), -ECONNRESET);
  CHECK(got.empty());
}

TEST(loop_abort_of_a_blocked_stream_drops_its_backlog_and_resets) {
  Fixture fx;
  Peer peer;
  TcpOptions o;
  o.loop_sndbuf = 16 * kKiB;
  o.peer_rcvbuf = 16 * kKiB;
  Conn* c = fx.adopt(tcp_pair(peer, o));
  const int id = c->id;
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.queue_past(c, 256 * kKiB, 16 * kKiB, &queued);
  fx.close(c, CloseMode::kAbort);
  fx.flush();
  CHECK_EQ(fx.r(id).closed, 1);
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), -ECONNRESET);
  CHECK(got.size() < queued.size());
  CHECK(got == queued.substr(0, got.size()));
}

TEST(loop_abort_of_a_closing_stream_aborts_now) {
  Fixture fx;
  Peer peer;
  TcpOptions o;
  o.loop_sndbuf = 16 * kKiB;
  o.peer_rcvbuf = 16 * kKiB;
  Conn* c = fx.adopt(tcp_pair(peer, o));
  const int id = c->id;
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.close(c, CloseMode::kGraceful);
  fx.pump();
  CHECK_EQ(fx.r(id).closed, 0);
  fx.close(c, CloseMode::kAbort);
  fx.flush();
  CHECK_EQ(fx.r(id).closed, 1);
  std::string got;
  CHECK_EQ(read_to_end(peer.fd, &got), -ECONNRESET);
}

// ---------------------------------------------------------------------------------------------------
// 7. Backlog and slow consumers (max_backlog 64 KiB, max_backlog_ms 1000)

TEST(loop_backlog_over_the_limit_is_slow_only_after_max_backlog_ms) {
  Fixture fx(small_backlog());
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.queue_past(c, 80 * kKiB, 16 * kKiB, &queued);
  const uint64_t t0 = fx.now;
  fx.flush();
  CHECK(fx.loop->backlog(c) > 64 * kKiB);
  CHECK(fx.loop->backlog(c) < 4 * 64 * kKiB);
  CHECK_EQ(fx.r(id).slows, 0);
  fx.tick(t0 + 500);
  fx.pump();
  CHECK_EQ(fx.r(id).slows, 0);
  fx.tick(t0 + 999);
  CHECK_EQ(fx.r(id).slows, 0);
  fx.tick(t0 + 1001);
  CHECK_EQ(fx.r(id).slows, 1);
  CHECK_EQ(fx.r(id).closed, 0);  // the owner decides
  fx.tick(t0 + 3000);
  CHECK(fx.send(c, "more"));
  fx.pump();
  CHECK_EQ(fx.r(id).slows, 1);  // once
}

TEST(loop_backlog_growing_by_the_hard_bound_after_its_grace_is_slow_at_once) {
  Fixture fx(small_backlog());
  fx.rec.abort_on_slow = true;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.queue_past(c, kHardBacklogFactor * 64 * kKiB, 16 * kKiB, &queued);
  CHECK_EQ(fx.r(id).slows, 0);  // send() does not judge
  fx.flush();                    // the clock has not moved
  // A burst that queued while the server was busy is not held against the client on its own: the first
  // judgement only starts the clock.
  CHECK_EQ(fx.r(id).slows, 0);
  // What queues within the grace is part of the burst, however much (a workgroup catching up after a stall).
  fx.set_now(fx.now + kHardBacklogGraceMs / 2);
  fx.queue_past(c, fx.loop->backlog(c) + 2 * kHardBacklogFactor * 64 * kKiB, 16 * kKiB, &queued);
  fx.flush();
  CHECK_EQ(fx.r(id).slows, 0);
  // The grace is over (still well within max_backlog_ms): from here on the hard bound counts.
  fx.set_now(fx.now + kHardBacklogGraceMs);
  const uint64_t base = fx.loop->backlog(c);
  fx.queue_past(c, base + 16 * kKiB, 16 * kKiB, &queued);
  fx.flush();                    // grew a little on top of the burst: not yet
  CHECK_EQ(fx.r(id).slows, 0);
  fx.queue_past(c, base + (kHardBacklogFactor - 1) * 64 * kKiB, 16 * kKiB, &queued);
  fx.flush();                    // its socket took nothing since and it grew past the hard bound: cut now
  CHECK_EQ(fx.r(id).slows, 1);
  CHECK_EQ(fx.r(id).closed, 1);  // aborted from on_slow, reaped by the same flush
}

TEST(loop_input_is_gated_while_over_the_backlog_and_resumes_once_drained) {
  Fixture fx(small_backlog());
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  Record& r = fx.r(id);
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.queue_past(c, 80 * kKiB, 16 * kKiB, &queued);
  fx.flush();
  CHECK(fx.loop->backlog(c) > 64 * kKiB);

  CHECK_EQ(peer_write(peer.fd, "ping"), 4u);
  for (int i = 0; i < 5; i++) fx.pump(1);
  CHECK_EQ(r.data_events, 0);

  std::string got;
  CHECK(fx.pump_until([&] {
    read_avail(peer.fd, &got);  // the peer drains its input
    return r.data == "ping";
  }));
  CHECK(r.max_backlog_at_data <= 64 * kKiB);
  CHECK(fx.pump_until([&] {
    read_avail(peer.fd, &got);
    return got.size() == queued.size();
  }));
  CHECK(got == queued);
  CHECK_EQ(r.slows, 0);
}

TEST(loop_replies_queued_from_on_data_gate_further_input) {
  // The owner answers every chunk with more than max_backlog; the peer does not read. The loop stops
  // reading that stream after the first chunk instead of queuing a reply per chunk.
  class Echo final : public StreamEvents {
   public:
    Loop* loop = nullptr;
    int calls = 0;
    void on_data(Stream* s, uint8_t*, size_t) override {
      calls++;
      const std::string reply = pattern(100 * kKiB, static_cast<uint32_t>(calls));
      loop->send(s, Frame::copy(reply.data(), reply.size()));
    }
    void on_hangup(Stream*) override {}
    void on_slow(Stream*) override {}
    void on_closed(Stream*) override {}
    void on_wake() override {}
  } ev;
  std::unique_ptr<Loop> loop = Loop::create(ev, small_backlog());
  ev.loop = loop.get();
  loop->set_now(1000);
  Peer peer;
  Stream s;
  CHECK(loop->adopt(&s, unix_pair(peer, 16 * kKiB, 4 << 20)));  // small send buffer: replies back up
  CHECK_EQ(peer_write(peer.fd, pattern(512 * kKiB, 12)), 512 * kKiB);
  loop->wait(1);
  CHECK_EQ(ev.calls, 1);
  for (int i = 0; i < 5; i++) {
    loop->flush();
    loop->wait(1);
  }
  CHECK(ev.calls <= 2);
  CHECK(loop->backlog(&s) < kHardBacklogFactor * 64 * kKiB);
  loop->close(&s, CloseMode::kAbort);
  loop->flush();
}

// 8. A reader that keeps up is never slow, however far the clock moves between iterations.

TEST(loop_a_draining_reader_is_never_slow_even_when_iterations_are_long) {
  Fixture fx(small_backlog());
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  std::string queued, got;
  int over = 0;
  for (int i = 0; i < 12; i++) {
    // As the workgroup does: wait, set the clock, take in messages, tick, flush. The server was busy
    // 1.5 s (more than max_backlog_ms) since the last iteration.
    fx.wait(0);
    fx.set_now(fx.now + 1500);
    while (fx.loop->backlog(c) < 320 * kKiB) {  // a burst: more than the socket takes at once
      std::string b = pattern(16 * kKiB, static_cast<uint32_t>(queued.size()));
      CHECK(fx.send(c, b));
      queued += b;
    }
    fx.tick(fx.now);
    fx.flush();
    if (fx.loop->backlog(c) > 64 * kKiB) over++;
    read_avail(peer.fd, &got);  // the peer reads everything it was sent
  }
  CHECK(over >= 10);  // the stream was over max_backlog after (nearly) every flush
  CHECK_EQ(fx.r(id).slows, 0);
  CHECK(fx.pump_until([&] {
    read_avail(peer.fd, &got);
    return got.size() == queued.size();
  }));
  CHECK(got == queued);
  CHECK_EQ(fx.r(id).slows, 0);
}

// A blocked stream receiving nothing new is judged by tick(); every one of several slow consumers is
// reported by one tick, even when the owner aborts them from on_slow.
TEST(loop_one_tick_reports_every_slow_consumer) {
  Fixture fx(small_backlog());
  fx.rec.abort_on_slow = true;
  Peer peers[3];
  int ids[3];
  for (int k = 0; k < 3; k++) {
    Conn* c = fx.adopt(unix_pair(peers[k]));
    ids[k] = c->id;
    std::string queued;
    fx.fill_until_refused(c, 16 * kKiB, &queued);
    fx.queue_past(c, 80 * kKiB, 16 * kKiB, &queued);
  }
  const uint64_t t0 = fx.now;
  fx.flush();
  fx.tick(t0 + 500);
  for (int id : ids) CHECK_EQ(fx.r(id).slows, 0);
  fx.tick(t0 + 1001);
  for (int id : ids) {
    CHECK_EQ(fx.r(id).slows, 1);
    CHECK_EQ(fx.r(id).closed, 1);
  }
  CHECK_EQ(fx.loop->size(), 0u);
}

// A stream aborted and reaped by tick() (linger over) while it waits in the flush list (EPOLLOUT after
// its peer read a little) must not be touched by the next flush: the owner freed it in on_closed.
TEST(loop_stream_reaped_by_tick_is_not_touched_by_the_next_flush) {
  Fixture fx(small_backlog());
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.queue_past(c, 200 * kKiB, 16 * kKiB, &queued);
  const uint64_t closed_at = fx.now;
  fx.close(c, CloseMode::kGraceful);
  fx.flush();
  std::string got;
  read_avail(peer.fd, &got);  // the peer reads what it holds: the loop's socket becomes writable
  fx.wait(10);                // EPOLLOUT: the stream goes on the flush list
  fx.tick(closed_at + kLingerMs);
  CHECK_EQ(fx.r(id).closed, 1);
  fx.flush();  // would read the freed stream
  CHECK_EQ(fx.r(id).closed, 1);
}

// The same with a slow consumer that got a new message before the tick (workgroup order: messages are
// taken in, then tick, then flush).
TEST(loop_slow_stream_aborted_in_tick_with_output_pending_is_not_touched_by_flush) {
  Fixture fx(small_backlog());
  fx.rec.abort_on_slow = true;
  Peer peer;
  Conn* c = fx.adopt(unix_pair(peer));
  const int id = c->id;
  std::string queued;
  fx.fill_until_refused(c, 16 * kKiB, &queued);
  fx.queue_past(c, 80 * kKiB, 16 * kKiB, &queued);
  const uint64_t t0 = fx.now;
  fx.flush();
  fx.wait(0);
  fx.set_now(t0 + 1001);
  CHECK(fx.send(c, "one more message"));
  fx.tick(t0 + 1001);
  fx.flush();
  CHECK_EQ(fx.r(id).slows, 1);
  CHECK_EQ(fx.r(id).closed, 1);
}

// ---------------------------------------------------------------------------------------------------
// 9. largest_backlog

TEST(loop_largest_backlog_is_the_stream_with_the_most_queued) {
  Fixture fx;
  Peer p0, p1, p2;
  Conn* c0 = fx.adopt(unix_pair(p0));
  Conn* c1 = fx.adopt(unix_pair(p1));
  Conn* c2 = fx.adopt(unix_pair(p2));
  CHECK(fx.loop->largest_backlog() == nullptr);
  CHECK(fx.send(c0, pattern(1 * kKiB, 13)));
  CHECK(fx.send(c1, pattern(50 * kKiB, 14)));
  CHECK(fx.send(c2, pattern(10 * kKiB, 15)));
  CHECK(fx.loop->largest_backlog() == c1);
  CHECK(fx.loop->backlog(c1) > fx.loop->backlog(c2));
  CHECK(fx.loop->backlog(c2) > fx.loop->backlog(c0));
  CHECK(fx.send(c2, pattern(50 * kKiB, 16)));
  CHECK(fx.loop->largest_backlog() == c2);
  fx.close(c2, CloseMode::kGraceful);  // closing streams are not candidates
  CHECK(fx.loop->largest_backlog() == c1);
  fx.flush();  // everything fits in the sockets
  CHECK(fx.loop->largest_backlog() == nullptr);
}

// ---------------------------------------------------------------------------------------------------
// 10. wake

TEST(loop_wake_from_another_thread_ends_a_long_wait) {
  Fixture fx;
  Loop* loop = fx.loop.get();
  auto t0 = std::chrono::steady_clock::now();
  std::thread waker([loop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    loop->wake();
  });
  fx.wait(10000);
  auto waited = std::chrono::steady_clock::now() - t0;
  waker.join();
  CHECK_EQ(fx.rec.wakes, 1);
  CHECK(waited < std::chrono::seconds(3));
  fx.wait(0);
  CHECK_EQ(fx.rec.wakes, 1);  // drained
  loop->wake();
  loop->wake();
  fx.wait(1000);
  CHECK_EQ(fx.rec.wakes, 2);  // wakes before a wait are one wake
  fx.wait(0);
  CHECK_EQ(fx.rec.wakes, 2);
}

// ---------------------------------------------------------------------------------------------------
// 11. Memory account

TEST(loop_memory_account_returns_to_its_start_once_streams_are_closed) {
  const int64_t start = mem::total();
  {
    Fixture fx(small_backlog());
    fx.rec.close_on_hangup = true;
    fx.rec.abort_on_slow = true;
    Peer pa, pb, pc, pd;
    Conn* a = fx.adopt(unix_pair(pa));  // reads, then closes gracefully
    TcpOptions small;
    small.loop_sndbuf = 16 * kKiB;
    small.peer_rcvbuf = 16 * kKiB;
    Conn* b = fx.adopt(tcp_pair(pb, small));  // never reads: aborted as a slow consumer
    Conn* c = fx.adopt(unix_pair(pc));        // hangs up; closed from on_hangup
    Conn* d = fx.adopt(tcp_pair(pd, small));  // closed gracefully while stuck: aborted after the linger
    const int ida = a->id, idb = b->id, idc = c->id, idd = d->id;
    const int64_t before = mem::total();
    std::string qa, qb, qd;
    for (int i = 0; i < 20; i++) {
      std::string m = pattern(8 * kKiB, static_cast<uint32_t>(i));
      CHECK(fx.send(a, m));
      qa += m;
    }
    CHECK(mem::total() >= before + static_cast<int64_t>(qa.size()));  // frames are charged while queued
    fx.fill_until_refused(b, 16 * kKiB, &qb);
    fx.queue_past(b, 80 * kKiB, 16 * kKiB, &qb);
    fx.fill_until_refused(d, 16 * kKiB, &qd);
    CHECK(fx.send(c, "to c"));
    fx.flush();
    fx.close(d, CloseMode::kGraceful);
    const uint64_t t0 = fx.now;

    std::string got;
    CHECK(fx.pump_until([&] {
      read_avail(pa.fd, &got);
      return got.size() == qa.size();
    }));
    CHECK(got == qa);
    fx.close(a, CloseMode::kGraceful);
    sys(shutdown(pc.fd, SHUT_WR), "shutdown");
    fx.pump();
    pa.close();
    CHECK(fx.pump_until([&] { return fx.closed(ida) && fx.closed(idc); }));
    fx.tick(t0 + 1001);
    CHECK_EQ(fx.r(idb).slows, 1);
    fx.tick(t0 + kLingerMs);
    CHECK(fx.closed(idb) && fx.closed(idd));
    CHECK_EQ(fx.loop->size(), 0u);
  }
  CHECK_EQ(mem::total(), start);
}

}  // namespace
