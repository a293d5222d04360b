// Workgroup: one native thread with its own event loop, owning a disjoint set of connections, their
// subscriptions (the workgroup's column of every Subject's local lists), and the sequence numbers of the
// subjects it is home of. See THREADS.md for what crosses threads.
#pragma once
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/counters.h"
#include "io/frame.h"
#include "io/poller.h"
#include "runtime/ring.h"
#include "pubsub/subject.h"

namespace starling {

class Server;

// What crosses from one thread to a workgroup. Subject and Frame pointers carry one reference each,
// which the receiving workgroup drops.
struct Envelope {
  enum Kind : uint8_t { kNewConn, kPublish, kDeliver } kind;
  int fd;             // kNewConn: an accepted, non-blocking socket the workgroup now owns
  Subject* subject;   // kPublish (to the home workgroup: assign seq, frame, fan out), kDeliver
  Frame* frame;       // kPublish: payload behind Frame::kPublishHeadroom; kDeliver: the framed MSG
};

struct Conn;
struct OutQueue;

// A connection deadline (handshake, close handshake). Refers to the connection by fd and serial so a
// timer that outlives its connection (or whose fd was reused) is recognised and ignored.
struct Timer {
  int fd;
  uint32_t serial;
  uint64_t deadline_ms;
};

class Workgroup {
 public:
  Workgroup(Server& server, unsigned index);
  ~Workgroup();
  Workgroup(const Workgroup&) = delete;
  Workgroup& operator=(const Workgroup&) = delete;

  void start(int cpu);   // cpu < 0: no pinning
  void request_stop();   // any thread; the workgroup closes its connections with 1001 and exits
  void join();

  // Any thread, but each producer id from one thread at a time (ids: see Server::producer_*).
  // False when that producer's ring is full; the envelope's references stay with the caller.
  bool post(unsigned producer, const Envelope& e) { return inbox_[producer]->push(e); }
  // Any thread: makes the workgroup drain its inbox soon. Costs one eventfd write only when the
  // workgroup may be asleep (it has not drained since the last wake).
  void wake();

  const Counters& counters() const { return counters_; }
  unsigned index() const { return index_; }

 private:
  void run();
  void drain_inbox();
  void flush_dirty();
  void wake_peers();   // wakes the workgroups this one posted to since the last call
  void sweep(uint64_t now_ms);
  void begin_shutdown();

  // Connections.
  void adopt(int fd);
  void on_readable(Conn* c, bool hangup);
  size_t consume(Conn* c, uint8_t* p, size_t len, size_t* need);
  bool on_frame(Conn* c, uint8_t opcode, bool fin, uint8_t* payload, size_t len);
  void on_message(Conn* c, uint8_t opcode, uint8_t* p, size_t len);
  void on_sub(Conn* c, std::string_view subjects);
  void on_unsub(Conn* c, std::string_view subjects);
  void on_pub(Conn* c, uint8_t opcode, std::string_view subject, std::string_view id, std::string_view body);
  void reply_err(Conn* c, const char* code, std::string_view id, const char* detail);
  void send_text(Conn* c, const char* p, size_t n);
  void enqueue(Conn* c, Frame* f);     // takes one reference to f
  void flush(Conn* c);
  void fail(Conn* c, uint16_t code);   // send a close frame, then wait for the peer's close (or timeout)
  void close_now(Conn* c);
  void drop_subscriptions(Conn* c);
  void arm_timer(std::deque<Timer>& timers, Conn* c, uint64_t after_ms);

  // Publishing.
  void publish_home(Subject* s, Frame* f);   // consumes one reference to each
  void deliver(Subject* s, Frame* f);        // borrows both

  OutQueue* new_queue();
  void free_queue(OutQueue* q);

  Server& server_;
  const unsigned index_;
  std::unique_ptr<Poller> loop_;
  int wake_fd_ = -1;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_requested_{false};
  bool draining_ = false;
  uint64_t drain_deadline_ = 0;
  std::thread thread_;
  Counters counters_;

  std::vector<std::unique_ptr<SpscRing<Envelope>>> inbox_;  // one per producer id
  std::vector<Conn*> conns_;          // by fd
  std::vector<Conn*> dirty_;          // connections with output queued this iteration
  std::vector<Conn*> rx_pending_;     // connections with input left to read (fairness cap hit)
  std::vector<Conn*> graveyard_;      // closed this iteration; freed at its end
  std::deque<Timer> handshake_timers_;
  std::deque<Timer> closing_timers_;
  uint64_t wake_mask_ = 0;            // workgroups to wake at the end of this iteration
  std::vector<OutQueue*> queue_pool_;
  uint8_t* rx_buf_ = nullptr;         // the loop's shared receive buffer
  uint32_t next_serial_ = 1;
  uint64_t now_ms_ = 0;
  std::vector<std::string_view> scratch_names_;  // on_sub's working list, kept to reuse its memory
};

}  // namespace starling
