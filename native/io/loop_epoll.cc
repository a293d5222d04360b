// epoll backend of Loop (io/loop.h): edge-triggered, one epoll_ctl per connection for its whole life.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/loop.h"
#include "io/reset.h"

namespace starling {

namespace {

// The loop's shared receive buffer. 64 KiB takes a whole default-sized loopback segment burst in one
// recv and is the default MaxMessageSize, so common messages are parsed in place without a copy.
constexpr size_t kSharedRxBytes = 64 * 1024;
// Reads per stream per loop iteration before it yields to the others (it is resumed next iteration):
// 4 x 64 KiB bounds how long one flooding client delays the rest of its workgroup.
constexpr int kMaxReadsPerWakeup = 4;
// Events taken from the kernel per epoll_wait: large enough that a burst of 10k events costs ~20 calls,
// small enough for the stack.
constexpr int kMaxEvents = 512;
// Frames handed to one sendmsg. Linux's IOV_MAX is 1024; 64 already covers a large coalesced burst.
constexpr int kMaxIov = 64;
// Streams written between two on_flush_stride calls. A send costs ~4-8 us here, so this looks at the
// owner's inbox about every millisecond of a long flush: often enough to coalesce a broadcast arriving
// mid-flush, rarely enough that the look costs nothing.
constexpr size_t kFlushStride = 256;
// First slots of an output queue (grows by doubling): a burst of a few messages needs no growth.
constexpr uint32_t kFirstQueueCap = 8;
// Output queues kept for reuse, so that a message to an idle connection costs no malloc.
constexpr size_t kQueuePoolMax = 4096;
// What one queued frame reference costs besides the frame: its queue slot.
constexpr uint64_t kSlotCost = sizeof(Frame*);

enum IoFlags : uint16_t {
  kReadable = 1 << 0,     // the kernel may hold input for us: set by an edge, cleared by a drained read
  kPeerClosed = 1 << 1,   // FIN or an error seen. Persists until reported (an edge is never repeated)
  kPaused = 1 << 2,       // the owner paused input
  kInReady = 1 << 3,      // in ready_
  kDirty = 1 << 4,        // in dirty_
  kWriteBlocked = 1 << 5, // the socket refused output; EPOLLOUT resumes it
  kClosing = 1 << 6,      // graceful close: writing the rest, then FIN, then draining input
  kShut = 1 << 7,         // FIN sent; waiting for the peer's
  kDead = 1 << 8,         // socket closed; on_closed at the end of this flush
  kHangupSent = 1 << 9,   // on_hangup called
  kOver = 1 << 10,        // backlog over max_backlog: input gated, slow-consumer clock running
  kSlowSent = 1 << 11,    // on_slow called
};

}  // namespace

// Frames waiting to be written to one stream: a ring of Frame pointers, each holding a reference. Exists
// only while something is queued or the stream is closing.
struct OutQueue {
  Frame** items;
  uint32_t head;
  uint32_t count;
  uint32_t cap;          // power of two
  uint32_t offset;       // bytes of items[head] already written
  uint64_t bytes;        // backlog: cost of the queued frames plus their slots
  uint64_t over_since;   // when the backlog went over max_backlog (kOver)
  uint64_t progress;     // bytes the socket took since over_since
  uint64_t over_base;    // the backlog at over_since (a burst that was there before the socket was judged)
  uint64_t deadline;     // kClosing: when the linger ends
  uint32_t queued_index; // index in queued_
  uint32_t closing_index;// index in closing_ (kClosing)

  Frame* at(uint32_t i) const { return items[(head + i) & (cap - 1)]; }
};

namespace {

class EpollLoop final : public Loop {
 public:
  EpollLoop(StreamEvents& events, const LoopOptions& options) : ev_(events), opt_(options) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
      ::close(epfd_);
      throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake fd
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    rx_ = static_cast<uint8_t*>(mem::alloc(kSharedRxBytes));
    if (!rx_) throw std::runtime_error("out of memory for the receive buffer");
  }

  ~EpollLoop() override {
    // The owner closed every stream before destroying the loop; free what is pooled.
    for (OutQueue* q : pool_) free_queue_memory(q);
    mem::free(rx_, kSharedRxBytes);
    ::close(wake_fd_);
    ::close(epfd_);
  }

  bool adopt(Stream* s, int fd) override {
    // Every list a stream can be in is reserved for all open streams here, so that nothing on the I/O path
    // allocates bookkeeping later (a stream is at most once in each list): under memory pressure a new
    // connection is refused instead of an event being lost halfway.
    if (open_ + 1 > reserved_) {
      size_t want = (open_ + 1) * 2;
      try {
        for (auto* list : {&ready_, &resume_, &dirty_, &queued_, &closing_, &graveyard_, &done_, &due_})
          list->reserve(want);
      } catch (const std::bad_alloc&) {
        ::close(fd);
        return false;
      }
      reserved_ = want;
    }
    s->fd = fd;
    s->io_flags = 0;
    s->out = nullptr;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = s;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      return false;
    }
    open_++;
    return true;
  }

  bool send(Stream* s, Frame* f) override {
    if (s->io_flags & (kClosing | kDead)) {
      f->unref();
      return false;
    }
    OutQueue* q = s->out ? s->out : (s->out = new_queue(s));
    if (!q || (q->count == q->cap && !grow(q))) {
      f->unref();
      return false;
    }
    q->items[(q->head + q->count) & (q->cap - 1)] = f;
    q->count++;
    q->bytes += f->cost + kSlotCost;
    mark_dirty(s);
    return true;
  }

  uint64_t backlog(const Stream* s) const override { return s->out ? s->out->bytes : 0; }

  void pause(Stream* s) override { s->io_flags |= kPaused; }

  void resume(Stream* s) override {
    if (!(s->io_flags & kPaused)) return;
    s->io_flags &= ~kPaused;
    make_ready(s);
  }

  void close(Stream* s, CloseMode mode) override {
    if (s->io_flags & kDead) return;
    if (mode == CloseMode::kAbort) {
      abort_now(s);
      return;
    }
    if (s->io_flags & kClosing) return;
    OutQueue* q = s->out ? s->out : (s->out = new_queue(s));
    if (!q) {
      abort_now(s);
      return;
    }
    s->io_flags |= kClosing;
    s->io_flags &= ~(kOver | kPaused);
    q->deadline = now_ + kLingerMs;
    q->closing_index = static_cast<uint32_t>(closing_.size());
    closing_.push_back(s);
    mark_dirty(s);  // flush() writes the rest, then sends FIN
  }

  void wait(int timeout_ms) override {
    if (!ready_.empty()) timeout_ms = 0;
    epoll_event events[kMaxEvents];
    int n = epoll_wait(epfd_, events, kMaxEvents, timeout_ms);
    if (!ready_.empty()) {
      resume_.swap(ready_);
      for (Stream* s : resume_) {
        s->io_flags &= ~kInReady;
        input(s);
      }
      resume_.clear();
    }
    for (int i = 0; i < n; i++) {
      if (!events[i].data.ptr) {
        uint64_t count;
        ssize_t ignored = read(wake_fd_, &count, sizeof count);
        (void)ignored;
        ev_.on_wake();
        continue;
      }
      Stream* s = static_cast<Stream*>(events[i].data.ptr);
      if (s->io_flags & kDead) continue;
      uint32_t e = events[i].events;
      if ((e & (EPOLLHUP | EPOLLERR)) && (s->io_flags & (kPaused | kOver)) && !(s->io_flags & kClosing)) {
        // The peer reset (or both directions are shut): nothing more can reach it. Its input is gated, so its
        // owner would hear of it only at a resume, which may be far off (a connection waiting for the decision
        // on its token waits up to the authorize hook's timeout): close it now. (A FIN alone is reported once
        // the input before it was handled, as ever: the commands a client sent before it still count.)
        abort_now(s);
        continue;
      }
      if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->io_flags |= kPeerClosed | kReadable;
      if (e & EPOLLIN) s->io_flags |= kReadable;
      if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) input(s);
      if ((e & EPOLLOUT) && !(s->io_flags & kDead)) {
        s->io_flags &= ~kWriteBlocked;
        if (s->out) mark_dirty(s);  // written (and judged) in flush(), with whatever else is queued
      }
    }
  }

  void flush() override {
    // Streams may be added while we flush (on_flush_stride queues more): index, don't iterate.
    for (size_t i = 0; i < dirty_.size(); i++) {
      if (i % kFlushStride == kFlushStride - 1) ev_.on_flush_stride();
      Stream* s = dirty_[i];
      s->io_flags &= ~kDirty;
      if (s->io_flags & kDead) continue;
      if (!(s->io_flags & kWriteBlocked)) write_out(s);
      if (!(s->io_flags & kDead)) judge(s);
    }
    dirty_.clear();
    reap();
  }

  void tick(uint64_t now_ms) override {
    now_ = now_ms;
    // Closing streams past their linger: the peer did not take our last bytes or never sent FIN.
    for (size_t i = 0; i < closing_.size();) {
      Stream* s = closing_[i];
      if (s->out->deadline <= now_) abort_now(s);  // removes s from closing_
      else i++;
    }
    // Slow consumers that receive nothing new are judged here. A stream waiting for flush (new output,
    // or its socket became writable) is left to flush, which judges it right after its write attempt:
    // its socket may have taken enough to restart the clock (judging it here, before that write, called
    // a reader slow that kept up but whose server had been busy longer than max_backlog_ms).
    // on_slow may close streams, which reorders queued_: collect first, then report.
    due_.clear();
    for (Stream* s : queued_)
      if ((s->io_flags & kOver) && !(s->io_flags & (kClosing | kSlowSent | kDirty)) &&
          now_ - s->out->over_since >= opt_.max_backlog_ms)
        due_.push_back(s);
    for (Stream* s : due_)
      if (!(s->io_flags & (kDead | kClosing | kSlowSent))) slow(s);  // not freed before reap()
    due_.clear();
    reap();
  }

  void set_now(uint64_t now_ms) override { now_ = now_ms; }

  Stream* largest_backlog() override {
    Stream* best = nullptr;
    for (Stream* s : queued_)
      if (!(s->io_flags & (kClosing | kDead)) && (!best || s->out->bytes > best->out->bytes)) best = s;
    return best;
  }

  size_t size() const override { return open_; }

  uint64_t bytes_written() const override { return bytes_written_; }

  bool peer_closed(const Stream* s) const override { return s->io_flags & kPeerClosed; }

  void peer_address(const Stream* s, char* out, size_t cap) const override {
    out[0] = '\0';
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    if (getpeername(s->fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
    if (peer.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr, out, static_cast<socklen_t>(cap));
    } else if (peer.ss_family == AF_INET6) {
      const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr;
      if (IN6_IS_ADDR_V4MAPPED(&a)) inet_ntop(AF_INET, a.s6_addr + 12, out, static_cast<socklen_t>(cap));
      else inet_ntop(AF_INET6, &a, out, static_cast<socklen_t>(cap));
    }
  }

  void wake() override {
    uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof one);
    (void)ignored;
  }

 private:
  void mark_dirty(Stream* s) {
    if (s->io_flags & kDirty) return;
    s->io_flags |= kDirty;
    dirty_.push_back(s);
  }

  void make_ready(Stream* s) {
    if ((s->io_flags & (kInReady | kDead)) || !(s->io_flags & (kReadable | kPeerClosed))) return;
    s->io_flags |= kInReady;
    ready_.push_back(s);
  }

  // Reads what the socket holds, up to the fairness cap, and hands it to the owner.
  void input(Stream* s) {
    uint16_t& fl = s->io_flags;
    if (fl & kDead) return;
    if (fl & kClosing) {
      discard_input(s);
      return;
    }
    if (fl & (kPaused | kOver)) return;  // resume() or a drained backlog brings it back
    for (int round = 0; round < kMaxReadsPerWakeup; round++) {
      if (!(fl & kReadable)) break;
      ssize_t n = recv(s->fd, rx_, kSharedRxBytes, 0);
      if (n > 0) {
        ev_.on_data(s, rx_, static_cast<size_t>(n));
        // Replies count against the backlog too: a client that does not read them is not read either.
        if (s->out && s->out->bytes > opt_.max_backlog && !(fl & (kDead | kClosing | kOver))) {
          fl |= kOver;
          start_judging(s->out);
        }
        if (fl & (kDead | kClosing | kPaused | kOver)) {
          if ((fl & kClosing) && !(fl & kDead)) make_ready(s);  // go on discarding next iteration
          return;
        }
        // A short read drained the socket and the next edge will tell us more, unless the peer also
        // hung up: its EOF comes with no further edge, so read on until recv returns 0.
        if (static_cast<size_t>(n) < kSharedRxBytes && !(fl & kPeerClosed)) fl &= ~kReadable;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        fl &= ~kReadable;
        if (!(fl & kPeerClosed)) return;
        // An error flagged by epoll with nothing to read: report it as a hang-up below.
      }
      fl &= ~kReadable;
      fl |= kPeerClosed;
      if (!(fl & kHangupSent)) {
        fl |= kHangupSent;
        ev_.on_hangup(s);
      }
      return;
    }
    if (fl & (kReadable | kPeerClosed)) make_ready(s);
  }

  // A closing stream: read and drop whatever arrives until the peer's FIN, then finish the close.
  void discard_input(Stream* s) {
    for (int round = 0; round < kMaxReadsPerWakeup; round++) {
      ssize_t n = recv(s->fd, rx_, kSharedRxBytes, 0);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->io_flags &= ~kReadable;
        return;
      }
      s->io_flags |= kPeerClosed;  // EOF or error
      s->io_flags &= ~kReadable;
      if (s->io_flags & kShut) finish(s);
      return;
    }
    s->io_flags |= kReadable;
    make_ready(s);
  }

  // Writes as much of s's queue as the socket takes.
  void write_out(Stream* s) {
    OutQueue* q = s->out;
    if (!q) return;
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
      ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          s->io_flags |= kWriteBlocked;
          return;
        }
        if (errno == EINTR) continue;
        abort_now(s);  // EPIPE, ECONNRESET: the peer is gone and takes nothing more
        return;
      }
      q->progress += static_cast<uint64_t>(w);
      bytes_written_ += static_cast<uint64_t>(w);
      size_t done = static_cast<size_t>(w);
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
        q->bytes -= f->cost + kSlotCost;
        f->unref();
      }
      if (static_cast<size_t>(w) < want) {  // the kernel buffer is full
        s->io_flags |= kWriteBlocked;
        return;
      }
    }
    // Everything is written.
    if (s->io_flags & kClosing) {
      if (!(s->io_flags & kShut)) {
        s->io_flags |= kShut;
        shutdown(s->fd, SHUT_WR);  // the peer reads all we sent, then our FIN
        if (s->io_flags & kPeerClosed) finish(s);
        else discard_input(s);
      }
      return;
    }
    ungate(s);
    release_queue(s);
  }

  // The backlog rule (LoopOptions), applied right after a write attempt.
  void judge(Stream* s) {
    OutQueue* q = s->out;
    if (!q || (s->io_flags & (kClosing | kSlowSent))) return;
    if (q->bytes <= opt_.max_backlog) {
      ungate(s);
      return;
    }
    if (!(s->io_flags & kOver)) {
      // Newly over: whatever queued while the server was busy (a stall, a burst drained from the inbox) is
      // not held against the client yet — its socket is judged from now on.
      s->io_flags |= kOver;
      start_judging(q);
      return;
    }
    if (q->progress >= opt_.max_backlog) {  // it is reading, only slower than the burst came: restart
      start_judging(q);
      return;
    }
    // Its socket has not taken MaxBacklog bytes since it went over: too slow for MaxBacklogTime, or its
    // backlog grew past the hard bound on top of what it held when its grace ended.
    const uint64_t over_ms = now_ - q->over_since;
    if (over_ms >= opt_.max_backlog_ms) {
      slow(s);
      return;
    }
    if (over_ms < hard_grace_ms()) {  // still the burst: the client had no fair chance to read it yet
      if (q->bytes > q->over_base) q->over_base = q->bytes;
      return;
    }
    if (q->bytes > q->over_base + opt_.max_backlog * (kHardBacklogFactor - 1)) slow(s);
  }

  uint32_t hard_grace_ms() const { return std::min(opt_.max_backlog_ms, kHardBacklogGraceMs); }

  void start_judging(OutQueue* q) {
    q->over_since = now_;
    q->progress = 0;
    q->over_base = q->bytes > opt_.max_backlog ? q->bytes : opt_.max_backlog;
  }

  void ungate(Stream* s) {
    if (!(s->io_flags & kOver)) return;
    s->io_flags &= ~kOver;
    make_ready(s);
  }

  void slow(Stream* s) {
    s->io_flags |= kSlowSent;
    ev_.on_slow(s);
  }

  void abort_now(Stream* s) {
    if (s->io_flags & kDead) return;
    set_reset_on_close(s->fd);  // the close in finish() sends RST; the kernel frees the unsent data at once
    finish(s);
  }

  // Closes the socket and schedules on_closed.
  void finish(Stream* s) {
    ::close(s->fd);
    s->io_flags |= kDead;
    if (s->out) {
      if (s->io_flags & kClosing) remove_closing(s);
      release_queue(s);
    }
    graveyard_.push_back(s);
  }

  void remove_closing(Stream* s) {
    uint32_t i = s->out->closing_index;
    Stream* last = closing_.back();
    closing_[i] = last;
    last->out->closing_index = i;
    closing_.pop_back();
  }

  void reap() {
    if (graveyard_.empty()) return;
    // Dead streams may still sit in ready_, and in dirty_ when tick() reaps (an abort after wait() marked
    // them for flush): drop them before their owner frees them.
    drop_dead(ready_);
    drop_dead(dirty_);
    done_.swap(graveyard_);  // both reserved: the swap keeps graveyard_'s capacity
    for (Stream* s : done_) {
      open_--;
      ev_.on_closed(s);
    }
    done_.clear();
  }

  static void drop_dead(std::vector<Stream*>& list) {
    size_t k = 0;
    for (Stream* s : list)
      if (!(s->io_flags & kDead)) list[k++] = s;
    list.resize(k);
  }

  OutQueue* new_queue(Stream* s) {
    OutQueue* q;
    if (!pool_.empty()) {
      q = pool_.back();
      pool_.pop_back();
    } else {
      q = static_cast<OutQueue*>(mem::alloc(sizeof(OutQueue)));
      if (!q) return nullptr;
      q->items = static_cast<Frame**>(mem::alloc(kFirstQueueCap * sizeof(Frame*)));
      if (!q->items) {
        mem::free(q, sizeof(OutQueue));
        return nullptr;
      }
      q->cap = kFirstQueueCap;
    }
    q->head = q->count = q->offset = 0;
    q->bytes = q->over_since = q->progress = q->over_base = q->deadline = 0;
    q->queued_index = static_cast<uint32_t>(queued_.size());
    q->closing_index = 0;
    queued_.push_back(s);
    return q;
  }

  bool grow(OutQueue* q) {
    uint32_t cap = q->cap * 2;
    Frame** grown = static_cast<Frame**>(mem::alloc(cap * sizeof(Frame*)));
    if (!grown) return false;
    for (uint32_t i = 0; i < q->count; i++) grown[i] = q->at(i);
    mem::free(q->items, q->cap * sizeof(Frame*));
    q->items = grown;
    q->head = 0;
    q->cap = cap;
    return true;
  }

  // Drops what is still queued and returns the queue to the pool.
  void release_queue(Stream* s) {
    OutQueue* q = s->out;
    for (uint32_t i = 0; i < q->count; i++) q->at(i)->unref();
    uint32_t i = q->queued_index;
    Stream* last = queued_.back();
    queued_[i] = last;
    last->out->queued_index = i;
    queued_.pop_back();
    s->out = nullptr;
    if (pool_.size() < kQueuePoolMax && q->cap == kFirstQueueCap) pool_.push_back(q);
    else free_queue_memory(q);
  }

  static void free_queue_memory(OutQueue* q) {
    mem::free(q->items, q->cap * sizeof(Frame*));
    mem::free(q, sizeof(OutQueue));
  }

  StreamEvents& ev_;
  const LoopOptions opt_;
  int epfd_ = -1;
  int wake_fd_ = -1;
  uint8_t* rx_ = nullptr;
  uint64_t now_ = 0;
  size_t open_ = 0;
  uint64_t bytes_written_ = 0;
  std::vector<Stream*> ready_;      // input left to read (fairness cap, or resumed)
  std::vector<Stream*> resume_;     // ready_ being processed
  std::vector<Stream*> dirty_;      // output queued since the last flush
  std::vector<Stream*> queued_;     // every stream with an output queue
  std::vector<Stream*> closing_;    // graceful closes in progress
  std::vector<Stream*> graveyard_;  // closed; on_closed at the end of the flush
  std::vector<Stream*> due_;        // tick(): slow consumers to report
  std::vector<Stream*> done_;       // reap(): the graveyard being reported
  size_t reserved_ = 0;             // capacity reserved in every list above
  std::vector<OutQueue*> pool_;
};

}  // namespace

std::unique_ptr<Loop> Loop::create(StreamEvents& events, const LoopOptions& options) {
  return std::make_unique<EpollLoop>(events, options);
}

}  // namespace starling
