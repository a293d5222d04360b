// The event-loop interface. One implementation per file (loop_epoll.cc; an io_uring backend is to come)
// and Poller::create() chooses in one place. A Loop belongs to one thread: no method is thread-safe.
#pragma once
#include <cstdint>
#include <memory>

namespace starling {

// PollEvent::events bits.
constexpr uint32_t kReadable = 1u << 0;
constexpr uint32_t kWritable = 1u << 1;
constexpr uint32_t kHangup = 1u << 2;  // peer closed or socket error; the owner reads to find out which

struct PollEvent {
  void* tag;        // what was passed to watch()
  uint32_t events;  // kReadable | kWritable | kHangup
};

class Poller {
 public:
  virtual ~Poller() = default;

  // Creates the backend for this machine (epoll). Throws std::runtime_error if it cannot.
  static std::unique_ptr<Poller> create();

  // Watches a connection socket for readability and writability, edge-triggered: the owner must read
  // until a short read or EAGAIN, and is told about writability only after a write hit EAGAIN. Costs
  // no further system call for the socket's lifetime; closing the fd unwatches it.
  virtual bool watch_stream(int fd, void* tag) = 0;

  // Watches fd (a listening socket or an eventfd) for readability, level-triggered.
  virtual bool watch_readable(int fd, void* tag) = 0;

  virtual void unwatch(int fd) = 0;

  // Waits up to timeout_ms (-1: forever) and fills at most max events. Returns how many (0 on
  // timeout or EINTR).
  virtual int wait(PollEvent* out, int max, int timeout_ms) = 0;
};

}  // namespace starling
