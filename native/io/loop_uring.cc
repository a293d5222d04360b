// io_uring backend of Loop (io/loop.h). Each connection is a direct descriptor in one of the loop's rings
// (io/uring.h): the socket leaves the process's fd table once it is installed, so the loop holds more
// connections than RLIMIT_NOFILE (a ring's table may be as large as the limit, and the loop adds rings as
// connections need them). Input arrives by one receive per connection at a time into the ring's shared provided
// buffers (an idle connection holds no receive buffer): a multishot receive that ends after kRecvLimit bytes, or a
// single-shot one where the kernel takes no limit (uring_recv_limit), armed again while the stream is not gated;
// output leaves as one SENDMSG per connection
// in flight, its frames pinned by the queue until the completion says what the socket took; every SQE an
// iteration prepares reaches the kernel in the one io_uring_enter that also waits for the next events.
// Closing, resetting (SO_LINGER through a socket command) and cancelling go through the ring too.
//
// Paused input: a paused (or backlog-gated) connection's receive stays armed; what arrives is held, in
// arrival order, and handed over at resume (before anything received later). At the first byte held the receive
// is cancelled and it is not armed again while the stream is gated, so the rest waits in the kernel and TCP pushes
// back on the peer, as with epoll. What the kernel posted before the cancel took effect is at most what is left of
// that one receive: a paused connection holds at most kMaxHeld bytes, however fast its peer floods (DESIGN.md rule
// 3: memory is bounded by configuration, not by clients).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/memory.h"
#include "io/stream_loop.h"
#include "io/uring.h"

namespace starling {

namespace {

// Stream::fd is (ring << kSlotBits) | slot: a table has at most 2^20 slots (IORING_MAX_FIXED_FILES). Rings per
// loop: at RLIMIT_NOFILE 20,000 per table, 255 rings are 5.1 million connections per workgroup, far past what
// memory allows.
constexpr int kSlotBits = 20;
constexpr unsigned kMaxRings = 255;
// Provided receive buffers per ring, and their size. 16 KiB takes a typical burst of small messages in one
// completion; 256 of them (4 MiB) are what one ring's connections can have in completions not yet handled
// before a receive finds none and is re-armed (a busy connection rarely holds more than one at a time).
constexpr unsigned kRecvBuffers = 256;
// Receives re-armed per ring per iteration at most: as many as the ring has buffers. A multishot receive armed
// while the buffers are gone ends at once with ENOBUFS, so re-arming a burst of thousands (pongs to a keepalive
// round at 60,000 connections) all at once would only fail them again, every iteration; the rest wait their turn.
constexpr size_t kRearmsPerIteration = kRecvBuffers;
constexpr unsigned kRecvBufferBytes = 16 * 1024;
// Frames handed to one SENDMSG (the iovec array lives until the submit): 16 covers a coalesced burst of
// small messages; a longer queue goes in several sends.
constexpr int kMaxIov = 16;
// Sends prepared between two submits (their msghdr and iovecs must stay put until the kernel copied them,
// IORING_FEAT_SUBMIT_STABLE). When they run out mid-flush, what is prepared is submitted and they are reused.
constexpr unsigned kSendArena = 1024;
// Bytes one multishot receive may deliver before it ends (sqe->optlen, uring_recv_limit) and the loop arms the next,
// only if the stream is not gated. It bounds what a paused connection holds: a multishot receive without a limit
// keeps filling buffers until the cancel takes effect, and a flooding peer filled the ring's 4 MiB for each paused
// connection before it did (40 flooders that never read grew the server by ~300 MB). Two buffers: a stream that keeps
// sending costs one more SQE per 32 KiB received, which is nothing beside the receive itself.
constexpr unsigned kRecvLimit = 2 * kRecvBufferBytes;
// The most input the loop holds for one paused connection: what one receive can deliver. With the limit, the
// kernel takes a whole buffer for the receive that reaches it (so up to kRecvBufferBytes - 1 past it); without it,
// receives are single-shot, one buffer each.
constexpr size_t kMaxHeld = kRecvLimit + kRecvBufferBytes - 1;

// user_data: a Stream pointer (8-aligned) or a ring index shifted left by 3, with the operation in the low bits
// (7 is the ring's own: Ring::kInternal).
// kOpPoll: ring 0 polls another ring's descriptor (the index above the op bits) or the wake eventfd (kWakeIndex).
enum Op : uint64_t { kOpRecv = 1, kOpSend = 2, kOpClose = 3, kOpOther = 4, kOpPoll = 5, kOpShut = 6 };
constexpr uint64_t kOpMask = 7;
// Above the 47 bits of a user-space address: marks a kOpOther that is a stream's hang-up poll.
constexpr uint64_t kHupPoll = 1ull << 63;
constexpr uint64_t kWakeIndex = 0xffff;

struct Held {
  uint8_t* data = nullptr;
  size_t len = 0;
  size_t cap = 0;
};

class UringLoop final : public StreamLoop {
 public:
  UringLoop(StreamEvents& events, const LoopOptions& options)
      : StreamLoop(events, options), recv_limit_(uring_recv_limit() && !options.uring_single_shot) {
    msgs_.resize(kSendArena);
    iovs_.resize(static_cast<size_t>(kSendArena) * kMaxIov);
    std::string why;
    if (!add_ring(&why)) throw std::runtime_error("io_uring: " + why);
    arm_wake();
  }

  ~UringLoop() override {
    for (auto& [s, h] : held_) mem::free(h.data, h.cap);
    rings_.clear();  // closing a ring cancels what is in flight and drops its descriptors
    for (uint8_t* a : addresses_) std::free(a);
  }

  bool adopt(Stream* s, int fd) override {
    if (!reserve_one() || !reserve_own()) {
      ::close(fd);
      return false;
    }
    int r = ring_with_room();
    if (r < 0) {
      ::close(fd);
      return false;
    }
    Ring& ring = *rings_[r];
    int slot = ring.take_slot();
    // The peer's address, kept for peer_address() (the descriptor it could be asked of is about to go).
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    uint8_t* a = addresses_[r] + static_cast<size_t>(slot) * 16;
    std::memset(a, 0, 16);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
      if (peer.ss_family == AF_INET6) {
        std::memcpy(a, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, 16);
      } else if (peer.ss_family == AF_INET) {
        a[10] = a[11] = 0xff;  // as IPv4-mapped IPv6
        std::memcpy(a + 12, &reinterpret_cast<sockaddr_in*>(&peer)->sin_addr, 4);
      }
    }
    int rc = ring.install(fd, slot);
    ::close(fd);
    if (rc < 0) {
      if (getenv("URING_DEBUG")) fprintf(stderr, "install error %d slot %d\n", rc, slot);
      ring.put_slot(slot);
      return false;
    }
    s->fd = (r << kSlotBits) | slot;
    s->io_flags = 0;
    s->io_more = 0;
    s->ops = 0;
    s->out = nullptr;
    open_++;
    arm_recv(s);
    return true;
  }

  void wait(int timeout_ms) override {
    retry_closes();
    // Receives waiting for re-arming (rearm_) count as work: a sleep of up to timeout_ms with them queued left a
    // connection whose receive ended for want of buffers (a publisher's, in a burst of keepalive pongs) unread for
    // the tick, and its messages 100-450 ms late.
    bool ready = !ready_.empty() || !rearm_.empty();
    for (auto& ring : rings_) ready = ready || ring->ready();
    for (size_t r = 1; r < rings_.size(); r++) rings_[r]->submit();
    rings_[0]->submit(!ready, ready ? 0 : timeout_ms);
    arena_used_ = 0;
    run_ready();
    for (size_t r = 0; r < rings_.size(); r++) {
      Ring& ring = *rings_[r];
      unsigned n = ring.ready();
      for (unsigned i = 0; i < n; i++) {
        const io_uring_cqe c = ring.cqe(i);
        complete(ring, c);
      }
      ring.advance(n);
      ring.provide_returns();  // ahead of the receives armed below
    }
    // Receives that ended (their buffers given back just above): armed again now, after the buffers.
    const size_t take = std::min(rearm_.size(), kRearmsPerIteration * rings_.size());
    for (size_t i = 0; i < take; i++) {
      Stream* s = rearm_[i];
      if (wants_recv(s)) arm_recv(s);
      settle(s);  // (the count defer_rearm took)
    }
    rearm_.erase(rearm_.begin(), rearm_.begin() + static_cast<long>(take));
  }

  void flush() override {
    // Sends that found the submission queue full last time.
    for (Stream* s : resend_)
      if (!(s->io_flags & kDead)) mark_dirty(s);
    resend_.clear();
    StreamLoop::flush();
  }

  bool peer_closed(const Stream* s) const override {
    return (s->io_flags & kPeerClosed) || (s->io_more & kFinSeen);
  }

  void peer_address(const Stream* s, char* out, size_t cap) const override {
    sockaddr_storage peer{};
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&peer);
    in6->sin6_family = AF_INET6;
    std::memcpy(&in6->sin6_addr, addresses_[ring_index(s)] + static_cast<size_t>(slot_of(s)) * 16, 16);
    static const uint8_t kNone[16] = {};
    if (std::memcmp(&in6->sin6_addr, kNone, 16) == 0) {
      out[0] = '\0';
      return;
    }
    format_address(peer, out, cap);
  }


 private:
  // Stream::io_more.
  enum UringFlags : uint8_t {
    kRecvArmed = 1 << 0,      // a receive is in flight
    kCancelSent = 1 << 1,     // that receive is being cancelled (input is held)
    kHeld = 1 << 2,           // held_ has input for it
    kAbortClose = 1 << 3,     // its close, still to be submitted, is a reset
    kShutInFlight = 1 << 4,   // a SHUTDOWN names its slot: the slot is not closed before it completes (the kernel
                              // resolves a shutdown's slot only when a worker runs it, which may be after a close
                              // and the slot's reuse by another connection)
    kClosePending = 1 << 5,   // dead, its close waits for the shutdown
    kHupPolled = 1 << 6,      // no receive is armed (gated): a poll watches for the peer's FIN, reset or error
    kFinSeen = 1 << 7,        // that poll saw the FIN (data may still wait in the kernel: the receive reads it)
  };
  static int slot_of(const Stream* s) { return s->fd & ((1 << kSlotBits) - 1); }
  static size_t ring_index(const Stream* s) { return static_cast<size_t>(s->fd) >> kSlotBits; }

  static uint64_t tag(Stream* s, Op op) { return reinterpret_cast<uint64_t>(s) | op; }
  static Stream* stream_of(uint64_t user_data) { return reinterpret_cast<Stream*>(user_data & ~(kOpMask | kHupPoll)); }
  Ring& ring_of(const Stream* s) { return *rings_[ring_index(s)]; }

  bool add_ring(std::string* why) {
    if (rings_.size() >= kMaxRings) {
      *why = "too many rings";
      return false;
    }
    RingSize size;
    size.files = opt_.ring_files;
    size.buffers = kRecvBuffers;
    size.buffer_bytes = kRecvBufferBytes;
    size.classic_buffers = uring_classic_buffers();
    try {
      rings_.reserve(rings_.size() + 1);
      addresses_.reserve(rings_.size() + 1);
    } catch (const std::bad_alloc&) {
      *why = "out of memory";
      return false;
    }
    // (calloc: pages are touched only as slots fill)
    uint8_t* addresses = static_cast<uint8_t*>(std::calloc(size.files, 16));
    if (!addresses) {
      *why = "out of memory";
      return false;
    }
    std::unique_ptr<Ring> ring = Ring::create(size, why);
    if (!ring) {
      std::free(addresses);
      return false;
    }
    rings_.push_back(std::move(ring));
    addresses_.push_back(addresses);
    if (rings_.size() > 1) arm_ring_poll(rings_.size() - 1);
    return true;
  }

  // The ring to put a new connection in (adding one when all are full), or -1.
  int ring_with_room() {
    for (size_t i = 0; i < rings_.size(); i++) {
      size_t r = (fill_ + i) % rings_.size();
      if (rings_[r]->free_slots()) {
        fill_ = r;
        return static_cast<int>(r);
      }
    }
    std::string why;
    if (!add_ring(&why)) return -1;
    fill_ = rings_.size() - 1;
    return static_cast<int>(fill_);
  }

  // The lists only this backend keeps, sized like the shared ones (never grown on the I/O path).
  bool reserve_own() {
    size_t want = ready_.capacity();
    try {
      for (auto* list : {&rearm_, &resend_, &closes_, &retry_}) list->reserve(want);
    } catch (const std::bad_alloc&) {
      return false;
    }
    return true;
  }

  // Ring 0 hears of the other rings' completions through a multishot poll of their descriptors, so that one
  // wait covers them all.
  void arm_ring_poll(size_t r) {
    io_uring_sqe* e = rings_[0]->sqe();
    if (!e) return;  // (its completions are still read every iteration; only a sleep could oversleep them)
    e->opcode = IORING_OP_POLL_ADD;
    e->fd = rings_[r]->fd();
    e->poll32_events = POLLIN_EVENTS;
    e->len = IORING_POLL_ADD_MULTI;
    e->user_data = (static_cast<uint64_t>(r) << 3) | kOpPoll;
  }

  void arm_wake() {
    io_uring_sqe* e = rings_[0]->sqe();
    if (!e) return;
    e->opcode = IORING_OP_POLL_ADD;
    e->fd = wake_fd_;
    e->poll32_events = POLLIN_EVENTS;
    e->len = IORING_POLL_ADD_MULTI;
    e->user_data = (kWakeIndex << 3) | kOpPoll;
  }
  static constexpr uint32_t POLLIN_EVENTS = 0x001;  // POLLIN

  // Arms s's receive after this iteration's completions (and their buffers); it counts as an operation meanwhile,
  // so that it is not let go of while it waits in rearm_ (which may be for several iterations).
  void defer_rearm(Stream* s) {
    rearm_.push_back(s);  // (reserved: at most once, since its receive ended once)
    s->ops++;
  }

  // A gated stream without a receive: the peer's FIN, reset or error is still seen (as epoll sees them), so a
  // connection waiting for a decision whose client left is let go of, and a reset one is closed now.
  void arm_hup_poll(Stream* s) {
    if (s->io_more & kHupPolled) return;
    io_uring_sqe* e = ring_of(s).sqe();
    if (!e) return;  // (then seen at resume, as before)
    e->opcode = IORING_OP_POLL_ADD;
    e->fd = slot_of(s);
    e->flags = IOSQE_FIXED_FILE;
    e->poll32_events = kPollRdHup | kPollHup | kPollErr;
    e->len = IORING_POLL_ADD_MULTI;
    e->user_data = tag(s, kOpOther) | kHupPoll;
    s->io_more |= kHupPolled;
    s->ops++;
  }
  static constexpr uint32_t kPollErr = 0x008, kPollHup = 0x010, kPollRdHup = 0x2000;

  // A completion of s's hang-up poll. The poll is multishot: once the FIN is in, every wake-up of the socket posts
  // another completion with IORING_CQE_F_MORE, and only the last one (without it) ends the operation.
  void on_hup_poll(Stream* s, int res, uint32_t flags) {
    const bool last = !(flags & IORING_CQE_F_MORE);
    if (last) s->io_more &= ~kHupPolled;
    if (res > 0 && !(s->io_flags & (kDead | kClosing))) {
      if ((res & (kPollHup | kPollErr)) && gated(s)) {
        s->io_flags |= kPeerClosed;
        abort_now(s);  // nothing can reach it
      } else if (res & kPollRdHup) {
        s->io_more |= kFinSeen;
      }
    }
    if (last) settle(s);
  }

  void arm_recv(Stream* s) {
    if (s->io_more & kHupPolled) {  // the receive sees the FIN from now on
      io_uring_sqe* c = ring_of(s).sqe();
      if (c) {
        prep_cancel(c, tag(s, kOpOther) | kHupPoll, tag(s, kOpOther));
        s->ops++;
      }
    }
    io_uring_sqe* e = ring_of(s).sqe();
    if (!e) {  // the submission queue is stuck full: try again next iteration
      s->io_flags |= kReadable;
      make_ready(s);
      return;
    }
    // Multishot up to kRecvLimit bytes, or single-shot (one buffer, then on_recv arms the next).
    prep_recv(e, slot_of(s), tag(s, kOpRecv), recv_limit_, recv_limit_ ? kRecvLimit : 0);
    s->io_more |= kRecvArmed;
    s->io_more &= ~kCancelSent;
    s->ops++;
  }

  void cancel_recv(Stream* s) {
    io_uring_sqe* e = ring_of(s).sqe();
    if (!e) return;  // the next completion tries again
    prep_cancel(e, tag(s, kOpRecv), tag(s, kOpOther));
    s->io_more |= kCancelSent;
    s->ops++;
  }

  // Whether a stream whose receive ended should have it armed again now.
  static bool wants_recv(const Stream* s) {
    if ((s->io_flags & (kDead | kPeerClosed)) || (s->io_more & kRecvArmed)) return false;
    if (s->io_flags & kClosing) return true;  // read (and drop) until the peer's FIN
    return !gated(s);  // otherwise resume() or ungating arms it
  }

  // Input is not handed over now: paused, over its backlog, or behind input held earlier.
  static bool gated(const Stream* s) { return (s->io_flags & (kPaused | kOver)) || (s->io_more & kHeld); }

  void complete(Ring& ring, const io_uring_cqe& c) {
    switch (c.user_data & kOpMask) {
      case Ring::kInternal: return;
      case kOpPoll: {
        const uint64_t index = c.user_data >> 3;
        if (index != kWakeIndex) {  // another ring has completions: they are read in this same pass
          if (!(c.flags & IORING_CQE_F_MORE)) arm_ring_poll(index);
          return;
        }
        if (!(c.flags & IORING_CQE_F_MORE)) arm_wake();
        take_wake();
        return;
      }
      case kOpRecv: on_recv(ring, stream_of(c.user_data), c.res, c.flags); return;
      case kOpSend: on_send(stream_of(c.user_data), c.res); return;
      case kOpShut: {
        Stream* s = stream_of(c.user_data);
        s->io_more &= ~kShutInFlight;
        if (s->io_more & kClosePending) {
          s->io_more &= ~kClosePending;
          if (!submit_close(s)) closes_.push_back(s);  // (reserved) retried at the next wait
        }
        settle(s);
        return;
      }
      case kOpClose: {
        Stream* s = stream_of(c.user_data);
        // (A failed close leaves the slot taken, so that it is never reused while it may still name this socket.)
        if (c.res >= 0) rings_[ring_index(s)]->put_slot(slot_of(s));
        settle(s);
        return;
      }
      default:
        if (c.user_data & kHupPoll) on_hup_poll(stream_of(c.user_data), c.res, c.flags);
        else settle(stream_of(c.user_data));
        return;
    }
  }

  // One operation naming s has ended.
  void settle(Stream* s) {
    s->ops--;
    if ((s->io_flags & kDead) && s->ops == 0) bury(s);
  }

  void on_recv(Ring& ring, Stream* s, int res, uint32_t flags) {
    const bool more = flags & IORING_CQE_F_MORE;
    uint8_t* data = nullptr;
    uint16_t bid = 0;
    if (flags & IORING_CQE_F_BUFFER) {
      bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
      data = ring.buffer(bid);
    }
    if (!more) s->io_more &= ~(kRecvArmed | kCancelSent);
    uint16_t& fl = s->io_flags;
    if (fl & kDead) {
      // (dropped)
    } else if (res > 0) {
      if (fl & kClosing) {
        // dropped: a closing stream reads only to see the peer's FIN
      } else if (gated(s)) {
        if (!hold(s, data, static_cast<size_t>(res))) {
          if (data) ring.give_back(bid);
          if (!more) settle(s);
          ev_.on_alloc_failure(s);
          abort_now(s);
          return;
        }
        if ((s->io_more & kRecvArmed) && !(s->io_more & kCancelSent)) cancel_recv(s);
      } else {
        ev_.on_data(s, data, static_cast<size_t>(res));
        gate_if_over(s);
      }
    } else if (res == 0) {
      fl |= kPeerClosed;
      if (fl & kClosing) {
        if (fl & kShut) finish(s, false);
      } else if (!gated(s)) {
        hangup(s);
      }  // else reported once the held input is handed over (resume)
    } else if (res == -ENOBUFS) {
      if (!more) defer_rearm(s);
    } else if (res == -ECANCELED) {
      // we cancelled it: resume() or ungating arms it again
    } else {  // the connection failed (reset)
      fl |= kPeerClosed;
      if (fl & kClosing) finish(s, false);
      else if (gated(s)) abort_now(s);  // nothing can reach it: close now, as epoll does on EPOLLHUP
      else hangup(s);
    }
    if (data) ring.give_back(bid);
    if (!more) {
      // (Also a cancelled receive: resume() or close() may have come before the cancel completed.)
      if (!(fl & kDead) && (res > 0 || res == -ECANCELED) && wants_recv(s)) defer_rearm(s);
      if (!(fl & (kDead | kClosing | kPeerClosed)) && gated(s) && res != -ENOBUFS) arm_hup_poll(s);
      if (!(fl & (kDead | kPeerClosed)) && gated(s)) fl |= kReadable;  // resume() or ungating arms it
      settle(s);
    }
  }

  void hangup(Stream* s) {
    if (s->io_flags & kHangupSent) return;
    s->io_flags |= kHangupSent;
    ev_.on_hangup(s);
  }

  // Appends to s's held input. False when memory ran out (nothing is held then that was not before; the caller
  // sheds s). What one stream holds stays within kMaxHeld (one receive's worth, see the top of the file), so the
  // buffer doubles up to that and no further.
  bool hold(Stream* s, const uint8_t* data, size_t len) {
    Held* h;
    try {
      h = &held_[s];
    } catch (const std::bad_alloc&) {
      return false;
    }
    if (h->len + len > h->cap) {
      size_t cap = std::max(h->len + len, std::min(h->cap * 2, kMaxHeld));
      void* grown = mem::grow(h->data, h->cap, cap);
      if (!grown) {
        if (!h->len) held_.erase(s);  // (the entry made just now)
        return false;
      }
      h->data = static_cast<uint8_t*>(grown);
      h->cap = cap;
    }
    std::memcpy(h->data + h->len, data, len);
    h->len += len;
    s->io_more |= kHeld;
    s->io_flags |= kReadable;
    return true;
  }

  void drop_held(Stream* s) {
    if (!(s->io_more & kHeld)) return;
    auto it = held_.find(s);
    if (it != held_.end()) {
      mem::free(it->second.data, it->second.cap);
      held_.erase(it);
    }
    s->io_more &= ~kHeld;
  }

  // A stream in ready_: held input to hand over, a receive to arm, or a hang-up to report.
  void input(Stream* s) override {
    uint16_t& fl = s->io_flags;
    if (fl & kDead) return;
    fl &= ~kReadable;
    if (fl & kClosing) {
      drop_held(s);
      if (wants_recv(s)) arm_recv(s);
      return;
    }
    if (fl & (kPaused | kOver)) {
      fl |= kReadable;  // resume() or ungating brings it back
      return;
    }
    if (s->io_more & kHeld) {
      auto it = held_.find(s);
      Held h = it->second;
      held_.erase(it);
      s->io_more &= ~kHeld;
      ev_.on_data(s, h.data, h.len);
      mem::free(h.data, h.cap);
      if (fl & kDead) return;
      gate_if_over(s);
      if (fl & kClosing) {
        make_ready(s);  // to arm the receive that waits for the FIN
        return;
      }
      if (fl & (kPaused | kOver)) {
        fl |= kReadable;
        return;
      }
    }
    if (fl & kPeerClosed) {
      hangup(s);
      return;
    }
    if (wants_recv(s)) arm_recv(s);
  }

  void write_out(Stream* s) override {
    OutQueue* q = s->out;
    if (!q) return;
    if (!q->count) {
      written_all(s);
      return;
    }
    if (arena_used_ == kSendArena) {  // hand what is prepared to the kernel, then reuse the arena
      bool taken = true;
      for (auto& ring : rings_) taken = ring->submit() && ring->pending() == 0 && taken;
      if (!taken) {  // the kernel did not take them all: their msghdrs must stay as they are
        resend_.push_back(s);  // (reserved; at most once)
        return;
      }
      arena_used_ = 0;
    }
    io_uring_sqe* e = ring_of(s).sqe();
    if (!e) {
      resend_.push_back(s);  // (reserved; at most once: it stays unblocked and undirty until then)
      return;
    }
    msghdr& m = msgs_[arena_used_];
    iovec* iov = &iovs_[static_cast<size_t>(arena_used_) * kMaxIov];
    arena_used_++;
    int n = 0;
    for (uint32_t i = 0; i < q->count && n < kMaxIov; i++, n++) {
      Frame* f = q->at(i);
      size_t skip = i == 0 ? q->offset : 0;
      iov[n].iov_base = const_cast<uint8_t*>(f->data()) + skip;
      iov[n].iov_len = f->size() - skip;
    }
    m = msghdr{};
    m.msg_iov = iov;
    m.msg_iovlen = static_cast<size_t>(n);
    e->opcode = IORING_OP_SENDMSG;
    e->fd = slot_of(s);
    e->flags = IOSQE_FIXED_FILE;
    e->addr = reinterpret_cast<uint64_t>(&m);
    e->len = 1;
    e->msg_flags = MSG_NOSIGNAL;
    e->user_data = tag(s, kOpSend);
    s->io_flags |= kWriteBlocked;  // until the completion: one send in flight per stream keeps the order
    s->ops++;
  }

  void on_send(Stream* s, int res) {
    s->io_flags &= ~kWriteBlocked;
    if (res > 0) consume(s, static_cast<size_t>(res));
    if (s->io_flags & kDead) {
      if (s->out) release_queue(s);  // its frames were pinned by the send
    } else if (res < 0 && res != -EINTR && res != -EAGAIN) {
      abort_now(s);  // EPIPE, ECONNRESET: the peer is gone and takes nothing more
    } else {
      mark_dirty(s);  // the rest (or the end of the queue) and the backlog rule, at flush
    }
    settle(s);
  }

  void shut(Stream* s) override {
    if (s->io_flags & kPeerClosed) {  // the peer's FIN was read, so nothing is left unread: close() sends ours
      finish(s, false);
      return;
    }
    io_uring_sqe* e = ring_of(s).sqe();
    if (!e) {
      finish(s, false);  // close() sends the FIN as well, only without waiting for the peer's
      return;
    }
    e->opcode = IORING_OP_SHUTDOWN;
    e->fd = slot_of(s);
    e->flags = IOSQE_FIXED_FILE;
    e->len = SHUT_WR;
    e->user_data = tag(s, kOpShut);
    s->io_more |= kShutInFlight;
    s->ops++;
    if (wants_recv(s)) arm_recv(s);
  }

  void abort_now(Stream* s) override { finish(s, true); }

  // Ends s: cancels what is in flight for it and closes its slot (reset first for an abort). on_closed follows
  // when the last operation naming it has completed.
  void finish(Stream* s, bool reset) {
    if (s->io_flags & kDead) return;
    s->io_flags |= kDead;
    drop_held(s);
    if (s->out) {
      if (s->io_flags & kClosing) {
        remove_closing(s);
        s->io_flags &= ~kClosing;
      }
      if (!(s->io_flags & kWriteBlocked)) release_queue(s);  // else when the send in flight completes
    }
    if (reset) s->io_more |= kAbortClose;
    if (s->io_more & kShutInFlight) s->io_more |= kClosePending;  // closed when the shutdown completes
    else if (!submit_close(s)) closes_.push_back(s);  // (reserved) retried at the next wait
  }

  bool submit_close(Stream* s) {
    Ring& ring = ring_of(s);
    // The SQEs go in queue order, each done inline (the kernel issues them in that order).
    io_uring_sqe* e = ring.sqe();
    if (!e) return false;
    if (s->io_more & kAbortClose) {
      prep_linger_reset(e, slot_of(s), tag(s, kOpOther));
      s->ops++;
      s->io_more &= ~kAbortClose;
      e = ring.sqe();
      if (!e) return false;  // (the reset is set; the rest is retried)
    }
    // What may be in flight on the slot is cancelled by its user_data (prep_cancel): a cancel by descriptor scans
    // every request the ring has armed (twice with IORING_ASYNC_CANCEL_ALL) — at 20,000 connections a ring, ~1 ms
    // a close, and a storm of closes took both cores (at 290,000 connections).
    const uint64_t armed[] = {
        (s->io_more & kRecvArmed) ? tag(s, kOpRecv) : 0,
        (s->io_more & kHupPolled) ? tag(s, kOpOther) | kHupPoll : 0,
        (s->io_flags & kWriteBlocked) ? tag(s, kOpSend) : 0,
    };
    for (uint64_t key : armed) {
      if (!key) continue;
      prep_cancel(e, key, tag(s, kOpOther));
      s->ops++;
      e = ring.sqe();
      if (!e) return false;  // (cancelling again is harmless)
    }
    prep_close(e, slot_of(s), tag(s, kOpClose));
    s->ops++;
    return true;
  }

  void retry_closes() {
    if (closes_.empty()) return;
    retry_.swap(closes_);
    for (Stream* s : retry_)
      if (!submit_close(s)) closes_.push_back(s);
    retry_.clear();
  }


  std::vector<std::unique_ptr<Ring>> rings_;
  std::vector<uint8_t*> addresses_;  // per ring: each slot's peer address (16 bytes, IPv4 as IPv4-mapped)
  size_t fill_ = 0;                  // the ring new connections go to while it has room
  std::vector<msghdr> msgs_;         // the send arena (kSendArena)
  std::vector<iovec> iovs_;
  unsigned arena_used_ = 0;
  const bool recv_limit_;            // receives are multishot with a limit (kRecvLimit), else single-shot
  // Input that arrived while its stream was gated (at most kMaxHeld bytes each); nodes and table charged to the
  // memory account.
  std::unordered_map<Stream*, Held, std::hash<Stream*>, std::equal_to<Stream*>,
                     mem::Allocator<std::pair<Stream* const, Held>>>
      held_;
  std::vector<Stream*> rearm_;       // receives that ended (for want of a buffer, or done): armed after the batch
  std::vector<Stream*> resend_;      // sends that found no SQE
  std::vector<Stream*> closes_;      // closes that found no SQE
  std::vector<Stream*> retry_;
};


}  // namespace

std::unique_ptr<Loop> make_uring_loop(StreamEvents& events, const LoopOptions& options) {
  return std::make_unique<UringLoop>(events, options);
}

}  // namespace starling
