// Workgroup: one native thread that ties the layers together for a disjoint set of connections — its
// event loop (io/loop.h) carries their bytes, a WebSocket session (transport/ws_session.h) per connection
// frames them, and its Broker (pubsub/broker.h) handles their commands, their subscriptions (the
// workgroup's column of every Subject's lists) and the sequencing of the subjects it is home of.
// See THREADS.md for what crosses threads.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "io/loop.h"
#include "pubsub/broker.h"
#include "pubsub/subject.h"
#include "runtime/counters.h"
#include "runtime/ring.h"
#include "transport/ws_session.h"

namespace starling {

class Server;
struct AuthDecision;
struct AuthRequest;

// What crosses from one thread to a workgroup. Subject and Frame pointers carry one reference each,
// which the receiving workgroup drops.
struct Envelope {
  // What the cluster link sends (on the publish ring of producer Server::producer_cluster()).
  enum Kind : uint8_t {
    kPlain,     // everything else: a connection, a publish, a delivery, a request or its answer
    kNumbered,  // frame: the engine's message number seq of subject, framed (Broker::on_numbered)
    kSync,      // sync: the engine's state of subject (Broker::on_sync)
    kAnswer,    // seq: a publish's token, code: its EngineAnswer (Broker::on_engine_answer); no subject
  };
  int fd = -1;               // new connection: an accepted, non-blocking socket the workgroup now owns
  bool may_not_publish = false;  // ... whose address is not in PublishAllowFromAddressList
  Kind kind = kPlain;
  uint8_t code = 0;
  Subject* subject = nullptr;
  Frame* frame = nullptr;    // publish: the payload behind publish_headroom(); delivery: the framed MSG
  Request* request = nullptr;  // instead of a frame: a SUB spec for the home (publish ring), its answer
                               // (delivery ring); owned by the envelope
  EngineSync* sync = nullptr;  // kSync: owned by the envelope
  uint64_t seq = 0;
};

struct Conn;

class Workgroup final : public StreamEvents, public SessionHost, public BrokerHost {
 public:
  Workgroup(Server& server, unsigned index);
  ~Workgroup() override;
  Workgroup(const Workgroup&) = delete;
  Workgroup& operator=(const Workgroup&) = delete;

  void start(int cpu);   // cpu < 0: no pinning
  void request_stop();   // any thread; the workgroup closes its connections with 1001 and exits
  void join();

  // Rings into this workgroup, each with one producer thread (THREADS.md). False when full: the
  // envelope's references stay with the caller, who pushes back (never drops).
  bool push_conn(int fd, bool may_not_publish) {
    Envelope e;
    e.fd = fd;
    e.may_not_publish = may_not_publish;
    return accept_ring_.push(e);
  }
  bool push_publish(unsigned producer, Subject* s, Frame* f, Request* r = nullptr) {
    Envelope e;
    e.subject = s;
    e.frame = f;
    e.request = r;
    return publish_[producer]->push(e);
  }
  bool push_deliver(unsigned producer, Subject* s, Frame* f, Request* r = nullptr) {
    Envelope e;
    e.subject = s;
    e.frame = f;
    e.request = r;
    return deliver_[producer]->push(e);
  }
  // The cluster link's ring (only with ClusterEngine = redis).
  bool push_engine(const Envelope& e) { return publish_.back()->push(e); }
  // The control thread's decisions on tokens this workgroup asked about (the vector is emptied); wakes it.
  void push_decisions(std::vector<AuthDecision>& batch);
  // Any thread: makes the workgroup drain its inbox soon. Costs one eventfd write only when the
  // workgroup may be asleep (it has not drained since the last wake).
  void wake();

  const Counters& counters() const { return counters_; }
  unsigned index() const { return index_; }

 private:
  void run();
  void drain_inbox();
  void wake_peers();   // wakes the workgroups this one posted to since the last call
  // One slice of the pass over every connection (handshake timeouts, keepalive; the pass's once-a-second work
  // after its last slice). kPassSlices slices make a pass, one every kPassMs / kPassSlices.
  void pass_slice();
  void enforce_memory();
  void note_memory_peak();  // workgroup 0: the account's high point since the last trim (see pass)
  bool over_budget() const;
  void begin_shutdown();
  void adopt(int fd, bool may_not_publish);
  void apply_decisions();
  template <typename F>
  void shed_on_failure(Conn* c, F&& handle);
  bool over_backlog(Conn* c) const;
  bool hold_for_backlog(Conn* c);   // pauses c until its backlog is under MaxBacklog; false: c was reset
  void resume_drained();            // resumes the held connections whose backlog fell under MaxBacklog

  // StreamEvents (io)
  void on_data(Stream* s, uint8_t* data, size_t len) override;
  void on_hangup(Stream* s) override;
  void on_slow(Stream* s) override;
  void on_closed(Stream* s) override;
  void on_wake() override;
  void on_flush_stride() override;
  void on_alloc_failure(Stream* s) override;
  // SessionHost (transport)
  bool send(WsSession* s, Frame* f) override;
  void close(WsSession* s, CloseMode mode) override;
  Verdict on_open(WsSession* s, std::string_view token) override;
  Verdict on_message(WsSession* s, uint8_t opcode, uint8_t* p, size_t len) override;
  Verdict on_fetch(WsSession* s, std::string_view spec) override;
  Verdict on_identity(WsSession* s, std::string_view token, bool in_force) override;
  Verdict after_command(Conn* c, bool go_on);  // on_message's and on_fetch's pause rules
  void on_leave(WsSession* s, uint16_t code) override;
  void on_http_error(WsSession* s) override;
  void on_http_request(WsSession* s) override;
  void on_nomem(WsSession* s) override;
  // BrokerHost (pubsub)
  bool post_publish(unsigned home, Subject* s, Frame* f) override;
  bool post_deliver(unsigned w, Subject* s, Frame* f) override;
  bool post_request(unsigned home, Subject* s, Request* r) override;
  bool post_answer(unsigned w, Subject* s, Request* r) override;
  bool post_engine(const EngineOp& op) override;
  bool engine_up() const override;
  void engine_refused() override;
  void send(Subscriber* c, Frame* f) override;
  void resume(Subscriber* c) override;
  void authenticate(Subscriber* c, std::string_view token) override;

  Server& server_;
  const unsigned index_;
  Counters counters_;
  WsEngine engine_;
  std::unique_ptr<Loop> loop_;
  std::unique_ptr<Broker> broker_;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stop_requested_{false};
  bool draining_ = false;
  uint64_t drain_deadline_ = 0;
  uint64_t now_ms_ = 0;
  unsigned slice_ = 0;               // the next slice of the pass (pass_slice)
  uint64_t trimmed_at_ = 0;          // accounted bytes after the last malloc_trim (workgroup 0)
  uint64_t high_water_ = 0;          // most accounted bytes since then (seen by any loop iteration)
  uint64_t subs_high_ = 0;           // most subscriptions of this workgroup since its last malloc_trim
  std::thread thread_;

  SpscRing<Envelope> accept_ring_;
  std::vector<std::unique_ptr<SpscRing<Envelope>>> publish_;  // by producer: workgroups, then control
  std::vector<std::unique_ptr<SpscRing<Envelope>>> deliver_;  // by producer workgroup
  std::vector<Conn*> conns_;         // every connection, for the passes (Conn::index)
  // Connections whose commands wait because their backlog is over MaxBacklog (Conn::backlogged): the rule
  // "a client that does not read its replies is not read either" holds for input already read, command by
  // command — one read may carry many commands, each answered with up to MaxBacklog (a recovery).
  std::vector<Conn*> backlogged_;
  uint64_t wake_mask_ = 0;           // workgroups to wake at the end of this iteration
  bool wake_engine_ = false;         // ... and the cluster link
  // Entitlement decisions (THREADS.md "Decisions"): this iteration's requests, handed to the Server at its
  // end; the connections waiting for a decision, by request id (Conn::auth_id), with when they asked; the
  // decisions the control thread handed back.
  std::vector<AuthRequest> auth_out_;
  struct Waiting {
    Conn* conn;
    uint64_t since_ms;
  };
  std::unordered_map<uint32_t, Waiting> awaiting_;
  uint32_t next_auth_id_ = 0;
  std::mutex decisions_lock_;        // guards decisions_ (held only to append or swap)
  std::vector<AuthDecision> decisions_;
  std::atomic<bool> decisions_pending_{false};
};

}  // namespace starling
