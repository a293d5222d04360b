#include "runtime/workgroup.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>

#include "transport/http_upgrade.h"
#include "pubsub/protocol.h"
#include "runtime/server.h"
#include "transport/ws_frame.h"

namespace starling {

namespace {

// The loop's shared receive buffer. 64 KiB takes a whole default-sized loopback segment burst in one
// recv and is the default MaxMessageSize, so common messages are parsed in place without a copy.
constexpr size_t kSharedRxBytes = 64 * 1024;
// Reads per readiness event before the connection yields to the others (it is resumed next iteration).
constexpr int kMaxReadsPerWakeup = 4;
// Events taken from the kernel per loop iteration.
constexpr int kMaxEvents = 512;
// Frames handed to one sendmsg. Linux's IOV_MAX is 1024; 64 already covers a large coalesced burst.
constexpr int kMaxIov = 64;
// Connections written between two looks at the inbox during a flush. A send costs ~4-8 us here, so this
// looks about every millisecond: often enough to coalesce a broadcast that arrives mid-flush, rarely
// enough that the look costs nothing.
constexpr size_t kFlushDrainStride = 256;
// Subjects the server itself publishes on (PUSH monitoring, /__starling__/stats); clients may subscribe
// to them but not publish, so nobody can spoof the server's indicators.
constexpr std::string_view kReservedPrefix = "/__starling__/";
// Initial slots of a connection's output queue (grows by doubling).
constexpr uint32_t kFirstQueueCap = 8;
// Output queues kept for reuse per workgroup, so that a message to an idle connection costs no malloc.
constexpr size_t kQueuePoolMax = 4096;
// A client must finish its HTTP upgrade within this time (slowloris bound).
constexpr uint64_t kHandshakeTimeoutMs = 10000;
// After we send a close frame, the peer has this long to answer before we drop the TCP connection.
constexpr uint64_t kCloseTimeoutMs = 5000;
// How often deadlines are checked when the loop is otherwise idle.
constexpr int kSweepIntervalMs = 250;
// Room added for the rest of a request head that arrived in pieces (heads are bounded by kMaxRequestHead).
constexpr size_t kHandshakeGrowth = 1024;
// Smallest receive buffer a connection with a partial frame keeps.
constexpr size_t kMinRxCap = 256;

enum State : uint8_t {
  kHandshake,    // waiting for the HTTP upgrade request
  kOpen,         // WebSocket open
  kClosing,      // we sent a close frame; waiting for the peer's close or EOF
  kHttpClosing,  // we sent an HTTP error; after it is flushed we shut down writing and wait for EOF
  kDead,         // closed; freed at the end of the iteration
};

enum Flags : uint8_t {
  kDirty = 1 << 0,            // in dirty_
  kRxPending = 1 << 1,        // in rx_pending_
  kSlow = 1 << 2,             // passed MaxBacklog; closed with 1008 at the next flush
  kCloseWhenFlushed = 1 << 3, // close the socket once the output queue is empty
};

// Receive buffer for a partial unit of `need` bytes of which `have` arrived: what is needed, but never more
// than twice what arrived (and at least the shared buffer's size), so a peer that announces a large frame
// and trickles it holds memory in proportion to what it actually sent. A full buffer doubles on the next
// read (on_readable).
size_t rx_capacity(size_t need, size_t have) {
  size_t cap = need > have ? need : have;
  size_t earned = have * 2 > kSharedRxBytes ? have * 2 : kSharedRxBytes;
  if (cap > earned) cap = earned;
  return cap < kMinRxCap ? kMinRxCap : cap;
}

uint64_t monotonic_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

}  // namespace

// Input kept for a connection only while a frame (or request head) is incomplete.
struct Rx {
  size_t len;
  size_t cap;
  uint8_t data[1];
};

// A fragmented message being assembled.
struct Fragments {
  uint8_t opcode;
  size_t len;
  size_t cap;
  uint8_t* data;
};

// Frames waiting to be written to one connection: a ring of Frame pointers, each holding a reference.
struct OutQueue {
  Frame** items;
  uint32_t head;
  uint32_t count;
  uint32_t cap;      // power of two
  uint32_t offset;   // bytes of items[head] already written
  uint64_t bytes;    // unwritten bytes in the queue

  Frame* at(uint32_t i) const { return items[(head + i) & (cap - 1)]; }
};

// One client connection. Kept small: an idle subscribed connection is this struct, one inline
// subscription slot and the fd table entry (no buffers).
struct Conn : Subscriber {
  int fd;
  uint32_t serial;
  uint8_t state;
  uint8_t flags;
  Rx* rx = nullptr;
  Fragments* frag = nullptr;
  OutQueue* out = nullptr;
};

Workgroup::Workgroup(Server& server, unsigned index) : server_(server), index_(index) {
  loop_ = Poller::create();
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  loop_->watch_readable(wake_fd_, nullptr);  // tag nullptr: the wake fd
  unsigned producers = server.workgroup_count() + 2;
  // Ring sizes: a workgroup can fall this many envelopes behind another before messages are dropped
  // (counted in ring_overflows). 64 Ki envelopes is ~3 s of the W1 rate; untouched slots cost nothing.
  constexpr uint32_t kPeerRing = 64 * 1024;
  constexpr uint32_t kAcceptRing = 16 * 1024;   // one accept burst of the capacity workloads
  for (unsigned p = 0; p < producers; p++) {
    uint32_t cap = p == server.producer_acceptor() ? kAcceptRing : kPeerRing;
    inbox_.emplace_back(p == index ? nullptr : new SpscRing<Envelope>(cap));
  }
  rx_buf_ = static_cast<uint8_t*>(std::malloc(kSharedRxBytes));
  if (!rx_buf_) throw std::bad_alloc();
}

Workgroup::~Workgroup() {
  join();
  // Drop whatever is still in the rings (only after a failed start or an abrupt stop).
  for (auto& ring : inbox_) {
    if (!ring) continue;
    Envelope e;
    while (ring->pop(&e)) {
      if (e.kind == Envelope::kNewConn) close(e.fd);
      if (e.subject) e.subject->unref();
      if (e.frame) e.frame->unref();
    }
  }
  for (OutQueue* q : queue_pool_) {
    std::free(q->items);
    delete q;
  }
  std::free(rx_buf_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Workgroup::start(int cpu) {
  thread_ = std::thread([this, cpu] {
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    std::string name = "starling-wg" + std::to_string(index_);
    pthread_setname_np(pthread_self(), name.c_str());
    run();
  });
}

void Workgroup::request_stop() {
  stop_requested_.store(true, std::memory_order_release);
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_, &one, sizeof one);
  (void)ignored;
}

void Workgroup::join() {
  if (thread_.joinable()) thread_.join();
}

void Workgroup::wake() {
  if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_, &one, sizeof one);
  (void)ignored;
}

// ---------------------------------------------------------------------------------------------------
// The loop

void Workgroup::run() {
  PollEvent events[kMaxEvents];
  uint64_t next_sweep = 0;
  for (;;) {
    int timeout = rx_pending_.empty() ? kSweepIntervalMs : 0;
    int n = loop_->wait(events, kMaxEvents, timeout);
    now_ms_ = monotonic_ms();

    if (!rx_pending_.empty()) {
      std::vector<Conn*> resume;
      resume.swap(rx_pending_);
      for (Conn* c : resume) {
        c->flags &= ~kRxPending;
        if (c->state != kDead) on_readable(c, false);
      }
    }
    for (int i = 0; i < n; i++) {
      if (!events[i].tag) {
        uint64_t count;
        ssize_t ignored = read(wake_fd_, &count, sizeof count);
        (void)ignored;
        wake_pending_.store(false, std::memory_order_seq_cst);
        continue;
      }
      Conn* c = static_cast<Conn*>(events[i].tag);
      if (c->state == kDead) continue;
      if (events[i].events & (kReadable | kHangup)) on_readable(c, events[i].events & kHangup);
      if (c->state != kDead && (events[i].events & kWritable)) flush(c);
    }
    drain_inbox();
    flush_dirty();

    for (Conn* c : graveyard_) delete c;
    graveyard_.clear();

    wake_peers();

    if (stop_requested_.load(std::memory_order_acquire) && !draining_) begin_shutdown();
    if (now_ms_ >= next_sweep) {
      sweep(now_ms_);
      next_sweep = now_ms_ + kSweepIntervalMs;
    }
    if (draining_ && (counters_.get(k_connections) == 0 || now_ms_ >= drain_deadline_)) break;
  }
  for (Conn* c : conns_)
    if (c) close_now(c);
  for (Conn* c : graveyard_) delete c;
  graveyard_.clear();
}

void Workgroup::wake_peers() {
  for (uint64_t mask = wake_mask_; mask; mask &= mask - 1) server_.workgroup(__builtin_ctzll(mask)).wake();
  wake_mask_ = 0;
}

void Workgroup::begin_shutdown() {
  draining_ = true;
  drain_deadline_ = now_ms_ + Server::kShutdownGraceMs;
  for (Conn* c : conns_) {
    if (!c) continue;
    if (c->state == kOpen) fail(c, kCloseGoingAway);
    else if (c->state == kHandshake) close_now(c);
  }
  flush_dirty();
}

void Workgroup::drain_inbox() {
  Envelope e;
  for (auto& ring : inbox_) {
    if (!ring) continue;
    while (ring->pop(&e)) {
      switch (e.kind) {
        case Envelope::kNewConn:
          if (draining_) close(e.fd);
          else adopt(e.fd);
          break;
        case Envelope::kPublish:
          publish_home(e.subject, e.frame);
          break;
        case Envelope::kDeliver:
          deliver(e.subject, e.frame);
          e.subject->unref();
          e.frame->unref();
          break;
      }
    }
  }
}

void Workgroup::sweep(uint64_t now) {
  auto expire = [&](std::deque<Timer>& timers, auto on_expiry) {
    while (!timers.empty() && timers.front().deadline_ms <= now) {
      Timer t = timers.front();
      timers.pop_front();
      Conn* c = t.fd < static_cast<int>(conns_.size()) ? conns_[t.fd] : nullptr;
      if (c && c->serial == t.serial) on_expiry(c);
    }
  };
  expire(handshake_timers_, [&](Conn* c) {
    if (c->state != kHandshake) return;
    counters_.add(k_http_errors);
    close_now(c);
  });
  expire(closing_timers_, [&](Conn* c) {
    if (c->state == kClosing || c->state == kHttpClosing) close_now(c);
  });
}

void Workgroup::arm_timer(std::deque<Timer>& timers, Conn* c, uint64_t after_ms) {
  timers.push_back(Timer{c->fd, c->serial, now_ms_ + after_ms});
}

// ---------------------------------------------------------------------------------------------------
// Connections

void Workgroup::adopt(int fd) {
  Conn* c = new Conn();
  c->fd = fd;
  c->serial = next_serial_++;
  c->state = kHandshake;
  c->flags = 0;
  if (static_cast<size_t>(fd) >= conns_.size()) conns_.resize(static_cast<size_t>(fd) + 1024, nullptr);
  conns_[fd] = c;
  counters_.add(k_accepted);
  counters_.add(k_connections);
  if (!loop_->watch_stream(fd, c)) {
    close_now(c);
    return;
  }
  arm_timer(handshake_timers_, c, kHandshakeTimeoutMs);
}

void Workgroup::on_readable(Conn* c, bool hangup) {
  for (int round = 0; round < kMaxReadsPerWakeup; round++) {
    uint8_t* dst;
    size_t room;
    if (!c->rx) {
      dst = rx_buf_;
      room = kSharedRxBytes;
    } else {
      if (c->rx->len == c->rx->cap) {  // full yet incomplete (a request head growing toward its bound)
        Rx* grown = static_cast<Rx*>(std::realloc(c->rx, offsetof(Rx, data) + c->rx->cap * 2));
        if (!grown) throw std::bad_alloc();
        grown->cap *= 2;
        c->rx = grown;
      }
      dst = c->rx->data + c->rx->len;
      room = c->rx->cap - c->rx->len;
    }
    ssize_t n = recv(c->fd, dst, room, 0);
    if (n == 0) {
      // EOF: the peer will send nothing more, but may still read. Hand the kernel what we owe it (replies
      // to its last commands) before closing; nothing is unread, so the close sends FIN, not RST.
      flush(c);
      if (c->state != kDead) close_now(c);
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      close_now(c);
      return;
    }
    counters_.add(k_bytes_in, static_cast<uint64_t>(n));

    size_t need = 0;
    if (!c->rx) {
      size_t used = consume(c, dst, static_cast<size_t>(n), &need);
      if (c->state == kDead) return;
      size_t left = static_cast<size_t>(n) - used;
      if (left) {
        size_t cap = rx_capacity(need, left);
        c->rx = static_cast<Rx*>(std::malloc(offsetof(Rx, data) + cap));
        if (!c->rx) throw std::bad_alloc();
        c->rx->len = left;
        c->rx->cap = cap;
        std::memcpy(c->rx->data, dst + used, left);
      }
    } else {
      Rx* rx = c->rx;
      rx->len += static_cast<size_t>(n);
      size_t used = consume(c, rx->data, rx->len, &need);
      if (c->state == kDead) return;
      rx = c->rx;  // consume never replaces it, but keep the reads explicit
      size_t left = rx->len - used;
      if (!left) {
        std::free(rx);
        c->rx = nullptr;
      } else {
        if (used) std::memmove(rx->data, rx->data + used, left);
        rx->len = left;
        size_t cap = rx_capacity(need, left);
        if (cap > rx->cap) {
          Rx* grown = static_cast<Rx*>(std::realloc(rx, offsetof(Rx, data) + cap));
          if (!grown) throw std::bad_alloc();
          grown->cap = cap;
          c->rx = grown;
        }
      }
    }
    // A short read means the socket is drained and the next edge will tell us more, unless the peer also
    // hung up: then its EOF comes with no further edge, so read on until recv returns 0.
    if (static_cast<size_t>(n) < room && !hangup) return;
  }
  if (!(c->flags & kRxPending)) {
    c->flags |= kRxPending;
    rx_pending_.push_back(c);
  }
}

// Parses and handles as much of p[0..len) as is complete. Returns the bytes consumed; *need is the
// size of the incomplete unit at p[consumed] (a frame or request head) when known, else 0.
size_t Workgroup::consume(Conn* c, uint8_t* p, size_t len, size_t* need) {
  size_t pos = 0;
  *need = 0;
  if (c->state == kHandshake) {
    UpgradeRequest req = parse_upgrade(reinterpret_cast<const char*>(p), len, server_.options().path);
    if (req.status == Upgrade::NeedMore) {
      *need = len + kHandshakeGrowth;
      return 0;
    }
    char out[512];
    if (req.status != Upgrade::Ok) {
      counters_.add(k_http_errors);
      size_t n = write_http_error(req.status, req.reason, out, sizeof out);
      Frame* f = Frame::alloc(n);
      std::memcpy(f->bytes, out, n);
      f->end = static_cast<uint32_t>(n);
      c->state = kHttpClosing;
      arm_timer(closing_timers_, c, kCloseTimeoutMs);
      enqueue(c, f);
      return len;
    }
    size_t n = write_upgrade_response(req, out, sizeof out);
    Frame* f = Frame::alloc(n);
    std::memcpy(f->bytes, out, n);
    f->end = static_cast<uint32_t>(n);
    c->state = kOpen;
    counters_.add(k_handshakes);
    enqueue(c, f);
    pos = req.head_len;
  }
  if (c->state == kHttpClosing) return len;  // nothing more is read from a refused request

  const uint64_t limit = server_.options().max_message + kMaxPubHeader;
  while (pos < len && c->state != kDead) {
    FrameHead head;
    uint16_t code = 0;
    FrameParse r = parse_frame_head(p + pos, len - pos, limit, &head, &code);
    if (r == FrameParse::NeedMore) {
      *need = kMaxClientFrameHead;
      break;
    }
    if (r == FrameParse::Error) {
      if (c->state == kClosing) {  // already closing: the peer keeps misbehaving, hang up
        close_now(c);
        return len;
      }
      fail(c, code);
      return len;
    }
    uint64_t total = head.head_len + head.payload_len;
    if (len - pos < total) {
      *need = static_cast<size_t>(total);
      break;
    }
    uint8_t* payload = p + pos + head.head_len;
    unmask(payload, head.payload_len, head.mask, 0);
    pos += total;
    if (!on_frame(c, head.opcode, head.fin, payload, head.payload_len)) return len;
  }
  return pos;
}

// Handles one complete frame. Returns false when the connection stopped reading (failed or closed).
bool Workgroup::on_frame(Conn* c, uint8_t opcode, bool fin, uint8_t* payload, size_t len) {
  if (opcode == kOpClose) {
    if (c->state == kClosing) {  // the peer answered our close: the handshake is complete
      close_now(c);
      return false;
    }
    uint16_t bad = check_close_payload(payload, len);
    if (bad) {
      fail(c, bad);
      return false;
    }
    // Echo the peer's code (or none) and close once it is written.
    Frame* f = Frame::make(kOpClose, payload, len >= 2 ? 2 : 0);
    drop_subscriptions(c);
    c->state = kClosing;
    c->flags |= kCloseWhenFlushed;
    arm_timer(closing_timers_, c, kCloseTimeoutMs);
    enqueue(c, f);
    return false;
  }
  if (c->state != kOpen) return true;  // closing: only a close frame matters now
  if (opcode == kOpPing) {
    enqueue(c, Frame::make(kOpPong, payload, len));
    return true;
  }
  if (opcode == kOpPong) return true;

  if (opcode == kOpCont) {
    Fragments* fr = c->frag;
    if (!fr) {
      fail(c, kCloseProtocol);
      return false;
    }
    if (fr->len + len > server_.options().max_message + kMaxPubHeader) {
      fail(c, kCloseTooBig);
      return false;
    }
    if (fr->len + len > fr->cap) {
      size_t cap = fr->cap * 2 > fr->len + len ? fr->cap * 2 : fr->len + len;
      uint8_t* grown = static_cast<uint8_t*>(std::realloc(fr->data, cap));
      if (!grown) throw std::bad_alloc();
      fr->data = grown;
      fr->cap = cap;
    }
    std::memcpy(fr->data + fr->len, payload, len);
    fr->len += len;
    if (!fin) return true;
    c->frag = nullptr;
    on_message(c, fr->opcode, fr->data, fr->len);
    std::free(fr->data);
    delete fr;
    return c->state == kOpen;
  }

  // A text or binary frame starts a message.
  if (c->frag) {
    fail(c, kCloseProtocol);  // a new message before the fragmented one finished
    return false;
  }
  if (fin) {
    on_message(c, opcode, payload, len);
    return c->state == kOpen;
  }
  Fragments* fr = new Fragments{opcode, len, len ? len : kMinRxCap, nullptr};
  fr->data = static_cast<uint8_t*>(std::malloc(fr->cap));
  if (!fr->data) throw std::bad_alloc();
  std::memcpy(fr->data, payload, len);
  c->frag = fr;
  return true;
}

void Workgroup::on_message(Conn* c, uint8_t opcode, uint8_t* p, size_t len) {
  if (opcode == kOpText && !utf8_valid(p, len)) {
    fail(c, kCloseInvalidData);
    return;
  }
  Command cmd;
  parse_command(p, len, &cmd);
  switch (cmd.kind) {
    case Cmd::Sub:
      on_sub(c, cmd.subjects);
      break;
    case Cmd::Unsub:
      on_unsub(c, cmd.subjects);
      break;
    case Cmd::Pub:
      on_pub(c, opcode, cmd.subject, cmd.id, cmd.body);
      break;
    case Cmd::Ping: {
      char out[8 + kMaxIdLen];
      size_t n = 0;
      std::memcpy(out, "PONG", 4);
      n = 4;
      if (!cmd.id.empty()) {
        out[n++] = ' ';
        std::memcpy(out + n, cmd.id.data(), cmd.id.size());
        n += cmd.id.size();
      }
      send_text(c, out, n);
      break;
    }
    case Cmd::Invalid:
      reply_err(c, cmd.error, cmd.id, cmd.detail);
      break;
  }
}

void Workgroup::on_sub(Conn* c, std::string_view subjects) {
  // All or nothing: count the subjects new to this connection (a name repeated in one SUB counts once)
  // so that a SUB past the limit changes nothing.
  std::vector<std::string_view>& fresh = scratch_names_;
  fresh.clear();
  std::string_view rest = subjects;
  for (std::string_view s = next_token(&rest); !s.empty(); s = next_token(&rest)) {
    bool have = false;
    for (uint32_t i = 0; i < c->nsubs && !have; i++) have = c->subs[i].subject->name() == s;
    if (!have) fresh.push_back(s);
  }
  std::sort(fresh.begin(), fresh.end());
  fresh.erase(std::unique(fresh.begin(), fresh.end()), fresh.end());
  if (c->nsubs + fresh.size() > server_.options().max_subscriptions) {
    reply_err(c, "limit", {}, "MaxSubscriptionsPerConnection reached");
    return;
  }
  for (std::string_view s : fresh) {
    Subject* subject = server_.registry().acquire(s, index_);
    link(c, subject, index_);
    counters_.add(k_subscriptions);
  }
}

void Workgroup::on_unsub(Conn* c, std::string_view subjects) {
  std::string_view rest = subjects;
  for (std::string_view s = next_token(&rest); !s.empty(); s = next_token(&rest)) {
    for (uint32_t i = 0; i < c->nsubs; i++) {
      if (c->subs[i].subject->name() != s) continue;
      Subject* subject = unlink(c, i, index_);
      counters_.sub(k_subscriptions);
      if (subject->local(index_).size == 0) server_.registry().release(subject, index_);
      break;
    }
  }
}

void Workgroup::on_pub(Conn* c, uint8_t opcode, std::string_view subject, std::string_view id,
                       std::string_view body) {
  if (body.size() > server_.options().max_message) {
    reply_err(c, "too-large", id, "payload over MaxMessageSize");
    return;
  }
  if (subject.compare(0, kReservedPrefix.size(), kReservedPrefix) == 0) {
    reply_err(c, "forbidden", id, "subjects under /__starling__/ are published by the server only");
    return;
  }
  counters_.add(k_messages_in);
  Subject* s = server_.registry().find_ref(subject);
  if (s) {
    Frame* f = Frame::alloc(Frame::kPublishHeadroom + body.size());
    f->begin = static_cast<uint32_t>(Frame::kPublishHeadroom);
    f->end = static_cast<uint32_t>(Frame::kPublishHeadroom + body.size());
    f->opcode = opcode;
    if (!body.empty()) std::memcpy(f->bytes + f->begin, body.data(), body.size());
    if (s->home == index_) {
      publish_home(s, f);
    } else if (server_.workgroup(s->home).post(index_, Envelope{Envelope::kPublish, -1, s, f})) {
      wake_mask_ |= uint64_t{1} << s->home;
    } else {
      s->unref();
      f->unref();
      counters_.add(k_ring_overflows);
      reply_err(c, "limit", id, "server overloaded");
      return;
    }
  }
  if (!id.empty()) {
    char out[4 + kMaxIdLen];
    std::memcpy(out, "ACK ", 4);
    std::memcpy(out + 4, id.data(), id.size());
    send_text(c, out, 4 + id.size());
  }
}

void Workgroup::reply_err(Conn* c, const char* code, std::string_view id, const char* detail) {
  if (!std::strcmp(code, "bad-command")) counters_.add(k_err_bad_command);
  else if (!std::strcmp(code, "bad-subject")) counters_.add(k_err_bad_subject);
  else if (!std::strcmp(code, "too-large")) counters_.add(k_err_too_large);
  else if (!std::strcmp(code, "limit")) counters_.add(k_err_limit);
  else if (!std::strcmp(code, "forbidden")) counters_.add(k_err_forbidden);
  std::string text = "ERR ";
  text += code;
  if (!id.empty()) {
    text += ' ';
    text.append(id.data(), id.size());
  }
  if (detail && *detail) {
    text += ' ';
    text += detail;
  }
  send_text(c, text.data(), text.size());
}

void Workgroup::send_text(Conn* c, const char* p, size_t n) { enqueue(c, Frame::make(kOpText, p, n)); }

// ---------------------------------------------------------------------------------------------------
// Output

OutQueue* Workgroup::new_queue() {
  if (!queue_pool_.empty()) {
    OutQueue* q = queue_pool_.back();
    queue_pool_.pop_back();
    return q;
  }
  OutQueue* q = new OutQueue{nullptr, 0, 0, kFirstQueueCap, 0, 0};
  q->items = static_cast<Frame**>(std::malloc(kFirstQueueCap * sizeof(Frame*)));
  if (!q->items) throw std::bad_alloc();
  return q;
}

void Workgroup::free_queue(OutQueue* q) {
  for (uint32_t i = 0; i < q->count; i++) q->at(i)->unref();
  q->head = q->count = q->offset = 0;
  q->bytes = 0;
  if (queue_pool_.size() < kQueuePoolMax && q->cap == kFirstQueueCap) {
    queue_pool_.push_back(q);
  } else {
    std::free(q->items);
    delete q;
  }
}

void Workgroup::enqueue(Conn* c, Frame* f) {
  if (c->state == kDead) {
    f->unref();
    return;
  }
  OutQueue* q = c->out ? c->out : (c->out = new_queue());
  if (q->count == q->cap) {
    uint32_t cap = q->cap * 2;
    Frame** grown = static_cast<Frame**>(std::malloc(cap * sizeof(Frame*)));
    if (!grown) throw std::bad_alloc();
    for (uint32_t i = 0; i < q->count; i++) grown[i] = q->at(i);
    std::free(q->items);
    q->items = grown;
    q->head = 0;
    q->cap = cap;
  }
  q->items[(q->head + q->count) & (q->cap - 1)] = f;
  q->count++;
  q->bytes += f->size();
  if (q->bytes > server_.options().max_backlog && c->state == kOpen) c->flags |= kSlow;
  if (!(c->flags & kDirty)) {
    c->flags |= kDirty;
    dirty_.push_back(c);
  }
}

void Workgroup::flush_dirty() {
  // Connections may be added while we flush (a close frame, or a message drained below); index, don't
  // iterate.
  for (size_t i = 0; i < dirty_.size(); i++) {
    if (i % kFlushDrainStride == kFlushDrainStride - 1) {
      // A long flush (a broadcast to thousands) outlasts the gap between messages: take in what arrived
      // meanwhile, so connections not yet written leave with several messages in one send.
      drain_inbox();
      wake_peers();
    }
    Conn* c = dirty_[i];
    c->flags &= ~kDirty;
    if (c->state == kDead) continue;
    if (c->flags & kSlow) {
      c->flags &= ~kSlow;
      counters_.add(k_slow_consumer_closes);
      // Keep a frame that is partly written (the stream must stay well-formed), drop the rest.
      OutQueue* q = c->out;
      while (q->count > (q->offset ? 1u : 0u)) {
        uint32_t last = (q->head + q->count - 1) & (q->cap - 1);
        q->bytes -= q->items[last]->size();
        q->items[last]->unref();
        q->count--;
      }
      fail(c, kClosePolicy);
      if (c->state != kDead && c->out) flush(c);
      if (c->state != kDead && c->out) close_now(c);  // it cannot even take the close frame
      continue;
    }
    flush(c);
  }
  dirty_.clear();
}

void Workgroup::flush(Conn* c) {
  OutQueue* q = c->out;
  if (!q) return;  // already written (e.g. by a writability event earlier in this iteration)
  while (q->count) {
    iovec iov[kMaxIov];
    int n = 0;
    size_t want = 0;
    for (uint32_t i = 0; i < q->count && n < kMaxIov; i++, n++) {
      Frame* f = q->at(i);
      size_t skip = i == 0 ? q->offset : 0;
      iov[n].iov_base = const_cast<uint8_t*>(f->data()) + skip;
      iov[n].iov_len = f->size() - skip;
      want += iov[n].iov_len;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n);
    ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // EPOLLOUT (edge) resumes us
      if (errno == EINTR) continue;
      close_now(c);  // EPIPE, ECONNRESET: the peer is gone
      return;
    }
    counters_.add(k_bytes_out, static_cast<uint64_t>(w));
    size_t done = static_cast<size_t>(w);
    q->bytes -= done;
    while (done) {
      Frame* f = q->at(0);
      size_t left = f->size() - q->offset;
      if (done < left) {
        q->offset += static_cast<uint32_t>(done);
        break;
      }
      done -= left;
      q->offset = 0;
      q->head = (q->head + 1) & (q->cap - 1);
      q->count--;
      f->unref();
    }
    if (static_cast<size_t>(w) < want) return;  // the kernel buffer is full
  }
  free_queue(q);
  c->out = nullptr;
  if (c->state == kHttpClosing) {
    shutdown(c->fd, SHUT_WR);  // the response is out; the client closes, or the timer does
  } else if (c->flags & kCloseWhenFlushed) {
    close_now(c);
  }
}

// ---------------------------------------------------------------------------------------------------
// Closing

void Workgroup::drop_subscriptions(Conn* c) {
  while (c->nsubs) {
    Subject* subject = unlink(c, c->nsubs - 1, index_);
    counters_.sub(k_subscriptions);
    if (subject->local(index_).size == 0) server_.registry().release(subject, index_);
  }
}

void Workgroup::fail(Conn* c, uint16_t code) {
  if (c->state != kOpen) {
    close_now(c);
    return;
  }
  if (code == kCloseProtocol) counters_.add(k_close_1002);
  else if (code == kCloseInvalidData) counters_.add(k_close_1007);
  else if (code == kCloseTooBig) counters_.add(k_close_1009);
  uint8_t body[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code & 0xff)};
  drop_subscriptions(c);
  if (c->frag) {
    std::free(c->frag->data);
    delete c->frag;
    c->frag = nullptr;
  }
  c->state = kClosing;
  arm_timer(closing_timers_, c, kCloseTimeoutMs);
  enqueue(c, Frame::make(kOpClose, body, sizeof body));
}

void Workgroup::close_now(Conn* c) {
  if (c->state == kDead) return;
  drop_subscriptions(c);
  if (c->rx) std::free(c->rx);
  if (c->frag) {
    std::free(c->frag->data);
    delete c->frag;
  }
  if (c->out) free_queue(c->out);
  c->rx = nullptr;
  c->frag = nullptr;
  c->out = nullptr;
  if (c->flags & kRxPending) {
    for (size_t i = 0; i < rx_pending_.size(); i++)
      if (rx_pending_[i] == c) {
        rx_pending_[i] = rx_pending_.back();
        rx_pending_.pop_back();
        break;
      }
  }
  close(c->fd);
  conns_[c->fd] = nullptr;
  c->state = kDead;
  counters_.sub(k_connections);
  counters_.add(k_closed);
  graveyard_.push_back(c);
}

// ---------------------------------------------------------------------------------------------------
// Publishing

void Workgroup::publish_home(Subject* s, Frame* f) {
  // Sequence, then write "MSG <subject> <epoch>:<seq>\n" and the WebSocket head in front of the payload.
  uint64_t seq = ++s->seq;
  char epoch[16];
  size_t epoch_len = format_epoch(s->epoch, epoch);
  uint8_t* payload = f->bytes + f->begin;
  size_t mh = write_msg_header_backwards(reinterpret_cast<char*>(payload), s->name(),
                                         std::string_view(epoch, epoch_len), seq);
  uint64_t total = mh + (f->end - f->begin);
  size_t hh = server_head_size(total);
  write_server_head(payload - mh - hh, f->opcode, total);
  f->begin -= static_cast<uint32_t>(mh + hh);

  uint64_t mask = s->interest.load(std::memory_order_acquire);
  for (; mask; mask &= mask - 1) {
    unsigned w = static_cast<unsigned>(__builtin_ctzll(mask));
    if (w == index_) {
      deliver(s, f);
      continue;
    }
    s->ref();
    f->ref();
    if (server_.workgroup(w).post(index_, Envelope{Envelope::kDeliver, -1, s, f})) {
      wake_mask_ |= uint64_t{1} << w;
    } else {
      s->unref();
      f->unref();
      counters_.add(k_ring_overflows);
    }
  }
  s->unref();
  f->unref();
}

void Workgroup::deliver(Subject* s, Frame* f) {
  SubList& list = s->local(index_);
  if (!list.size) return;
  f->ref(list.size);
  counters_.add(k_messages_out, list.size);
  for (uint32_t i = 0; i < list.size; i++) enqueue(static_cast<Conn*>(list.items[i].who), f);
}

}  // namespace starling
