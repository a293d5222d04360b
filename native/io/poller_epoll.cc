// epoll backend of Loop (loop.h).
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/poller.h"

namespace starling {

namespace {

class EpollPoller final : public Poller {
 public:
  EpollPoller() : epfd_(epoll_create1(EPOLL_CLOEXEC)) {
    if (epfd_ < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
  }
  ~EpollPoller() override { close(epfd_); }

  bool watch_stream(int fd, void* tag) override {
    return add(fd, tag, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
  }
  bool watch_readable(int fd, void* tag) override { return add(fd, tag, EPOLLIN); }
  void unwatch(int fd) override { epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

  int wait(PollEvent* out, int max, int timeout_ms) override {
    if (static_cast<int>(buf_.size()) < max) buf_.resize(max);
    int n = epoll_wait(epfd_, buf_.data(), max, timeout_ms);
    if (n < 0) return 0;  // EINTR: the caller loops anyway
    for (int i = 0; i < n; i++) {
      uint32_t e = buf_[i].events;
      out[i].tag = buf_[i].data.ptr;
      out[i].events = ((e & EPOLLIN) ? kReadable : 0) | ((e & EPOLLOUT) ? kWritable : 0) |
                      ((e & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) ? kHangup : 0);
    }
    return n;
  }

 private:
  bool add(int fd, void* tag, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = tag;
    return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  }

  int epfd_;
  std::vector<epoll_event> buf_;
};

}  // namespace

std::unique_ptr<Poller> Poller::create() { return std::make_unique<EpollPoller>(); }

}  // namespace starling
