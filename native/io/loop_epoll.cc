// epoll backend of Loop (io/loop.h): edge-triggered, one epoll_ctl per connection for its whole life.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
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

#include "io/stream_loop.h"
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

class EpollLoop final : public StreamLoop {
 public:
  EpollLoop(StreamEvents& events, const LoopOptions& options) : StreamLoop(events, options) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake fd
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    rx_ = static_cast<uint8_t*>(mem::alloc(kSharedRxBytes));
    if (!rx_) throw std::runtime_error("out of memory for the receive buffer");
  }

  ~EpollLoop() override {
    mem::free(rx_, kSharedRxBytes);
    ::close(epfd_);
  }

  bool adopt(Stream* s, int fd) override {
    if (!reserve_one()) {
      ::close(fd);
      return false;
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

  void wait(int timeout_ms) override {
    if (!ready_.empty()) timeout_ms = 0;
    epoll_event events[kMaxEvents];
    int n = epoll_wait(epfd_, events, kMaxEvents, timeout_ms);
    run_ready();
    for (int i = 0; i < n; i++) {
      if (!events[i].data.ptr) {
        take_wake();
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

  void peer_address(const Stream* s, char* out, size_t cap) const override {
    out[0] = '\0';
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    if (getpeername(s->fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
    format_address(peer, out, cap);
  }


 private:
  // Reads what the socket holds, up to the fairness cap, and hands it to the owner.
  void input(Stream* s) override {
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
        gate_if_over(s);
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
  void write_out(Stream* s) override {
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
      consume(s, static_cast<size_t>(w));
      if (static_cast<size_t>(w) < want) {  // the kernel buffer is full
        s->io_flags |= kWriteBlocked;
        return;
      }
    }
    written_all(s);
  }

  void shut(Stream* s) override {
    shutdown(s->fd, SHUT_WR);
    if (s->io_flags & kPeerClosed) finish(s);
    else discard_input(s);
  }

  void abort_now(Stream* s) override {
    if (s->io_flags & kDead) return;
    set_reset_on_close(s->fd);  // the close in finish() sends RST; the kernel frees the unsent data at once
    finish(s);
  }

  // Closes the socket and schedules on_closed.
  void finish(Stream* s) {
    ::close(s->fd);
    s->io_flags |= kDead;
    if (s->out) release_queue(s);
    bury(s);
  }

  int epfd_ = -1;
  uint8_t* rx_ = nullptr;
};

}  // namespace

std::unique_ptr<Loop> make_epoll_loop(StreamEvents& events, const LoopOptions& options) {
  return std::make_unique<EpollLoop>(events, options);
}

}  // namespace starling
