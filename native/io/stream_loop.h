// What both backends of Loop (io/loop.h) share: output queues of refcounted frames, the backlog and slow-consumer
// rules, graceful-close bookkeeping and the lists a loop iteration walks. A backend adds only its system calls:
// how input arrives (adopt, wait), how a queue is written (write_out) and how a socket ends (abort_now, and the
// shutdown that follows a written queue). Backend-private: included by loop_epoll.cc and loop_uring.cc only.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "io/loop.h"

namespace starling {

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

// A peer address as Loop::peer_address gives it (an IPv4-mapped IPv6 address as IPv4).
void format_address(const sockaddr_storage& peer, char* out, size_t cap);

std::unique_ptr<Loop> make_epoll_loop(StreamEvents& events, const LoopOptions& options);
std::unique_ptr<Loop> make_uring_loop(StreamEvents& events, const LoopOptions& options);

class StreamLoop : public Loop {
 public:
  bool send(Stream* s, Frame* f) override;
  uint64_t backlog(const Stream* s) const override { return s->out ? s->out->bytes : 0; }
  void pause(Stream* s) override { s->io_flags |= kPaused; }
  void resume(Stream* s) override;
  void close(Stream* s, CloseMode mode) override;
  void flush() override;
  void tick(uint64_t now_ms) override;
  void set_now(uint64_t now_ms) override { now_ = now_ms; }
  Stream* largest_backlog() override;
  size_t size() const override { return open_; }
  uint64_t bytes_written() const override { return bytes_written_; }
  bool peer_closed(const Stream* s) const override { return s->io_flags & kPeerClosed; }
  void wake() override;

 protected:
  enum IoFlags : uint16_t {
    kReadable = 1 << 0,     // input may be waiting for us (epoll: an edge; io_uring: held bytes, or no receive armed)
    kPeerClosed = 1 << 1,   // FIN or an error seen. Persists until reported
    kPaused = 1 << 2,       // the owner paused input
    kInReady = 1 << 3,      // in ready_
    kDirty = 1 << 4,        // in dirty_
    kWriteBlocked = 1 << 5, // epoll: the socket refused output, EPOLLOUT resumes it; io_uring: a send is in flight
    kClosing = 1 << 6,      // graceful close: writing the rest, then FIN, then draining input
    kShut = 1 << 7,         // FIN sent; waiting for the peer's
    kDead = 1 << 8,         // socket closed (or closing through the ring); on_closed follows
    kHangupSent = 1 << 9,   // on_hangup called
    kOver = 1 << 10,        // backlog over max_backlog: input gated, slow-consumer clock running
    kSlowSent = 1 << 11,    // on_slow called
  };

  // Throws std::runtime_error if the wake eventfd cannot be made.
  StreamLoop(StreamEvents& events, const LoopOptions& options);
  ~StreamLoop() override;

  // The backend watches wake_fd_ (readable after wake()); take_wake() empties it and calls on_wake().
  void take_wake();
  // Calls input() for every stream in ready_ (those that become ready meanwhile wait for the next call).
  void run_ready();

  // Writes as much of s's queue as the backend can now (called by flush unless kWriteBlocked). When the queue is
  // empty it calls written_all(s).
  virtual void write_out(Stream* s) = 0;
  // Input for a stream in ready_ (resumed, ungated, or left over by a fairness cap).
  virtual void input(Stream* s) = 0;
  // Resets s now (RST) and ends it; its on_closed follows once the backend has let go of it.
  virtual void abort_now(Stream* s) = 0;
  // A closing stream's output is all written: send FIN (shutdown SHUT_WR) and finish once the peer's arrives.
  virtual void shut(Stream* s) = 0;

  // Every list a stream can be in holds one more stream without growing: false when memory ran out (the new
  // connection is then refused, instead of an event being lost halfway later).
  bool reserve_one();
  void mark_dirty(Stream* s);
  void make_ready(Stream* s);
  // After on_data: replies count against the backlog too (a client that does not read them is not read either).
  void gate_if_over(Stream* s);
  // The socket took `written` bytes of s's queue: drop the frames done.
  void consume(Stream* s, size_t written);
  // The queue is empty: a closing stream shuts, any other lets its queue go.
  void written_all(Stream* s);
  void judge(Stream* s);
  void start_judging(OutQueue* q);
  void ungate(Stream* s);
  void slow(Stream* s);
  void remove_closing(Stream* s);
  // s is done: on_closed at the next reap (the backend has let go of it).
  void bury(Stream* s) { graveyard_.push_back(s); }
  void reap();
  OutQueue* new_queue(Stream* s);
  bool grow(OutQueue* q);
  void release_queue(Stream* s);  // drops what is still queued and returns the queue to the pool

  StreamEvents& ev_;
  const LoopOptions opt_;
  int wake_fd_ = -1;
  uint64_t now_ = 0;
  size_t open_ = 0;
  uint64_t bytes_written_ = 0;
  std::vector<Stream*> ready_;      // input left to deliver (fairness cap, held input, or resumed)

 private:
  static void drop_dead(std::vector<Stream*>& list);
  static void free_queue_memory(OutQueue* q);
  uint32_t hard_grace_ms() const;

  std::vector<Stream*> resume_;     // ready_ being processed
  std::vector<Stream*> dirty_;      // output queued since the last flush
  std::vector<Stream*> queued_;     // every stream with an output queue
  std::vector<Stream*> closing_;    // graceful closes in progress
  std::vector<Stream*> graveyard_;  // done; on_closed at the next reap
  std::vector<Stream*> due_;        // tick(): slow consumers to report
  std::vector<Stream*> done_;       // reap(): the graveyard being reported
  size_t reserved_ = 0;             // capacity reserved in every list above
  std::vector<OutQueue*> pool_;
};

}  // namespace starling
