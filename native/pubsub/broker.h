// Broker: one workgroup's share of publish/subscribe — its connections' commands (dispatch.cc) and the
// routing of messages (broker.cc): a publish goes to its subject's home, which sequences it, frames it
// once and fans it out to every interested workgroup; each workgroup queues the same frame to its local
// subscribers. No socket, no thread: the workgroup owns the Broker and drives it from its loop, and the
// BrokerHost is how it reaches the rings and the connections.
//
// Back-pressure (DESIGN.md rule 2). Nothing is dropped between threads:
// - A publish whose home's ring is full is held (with its connection paused: nothing more is read from
//   it) and retried each loop iteration; its ACK is sent only when it was handed on.
// - A delivery whose target's ring is full is deferred; while any is deferred the home takes no new
//   publish (from its connections or its publish rings), so its publishers back up in turn. Delivery
//   rings are always drained (queuing to a local connection never waits), so deferred deliveries always
//   drain: no cycle can form.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/frame.h"
#include "pubsub/protocol.h"
#include "pubsub/subject.h"
#include "runtime/counters.h"

namespace starling {

struct BrokerOptions {
  uint64_t max_message = 65536;      // MaxMessageSize
  uint32_t max_subscriptions = 1000; // MaxSubscriptionsPerConnection
};

// How a Broker reaches the rest of its workgroup. Every method runs on the workgroup's thread.
class BrokerHost {
 public:
  virtual ~BrokerHost() = default;
  // Hands a publish to the subject's home workgroup (references to s and f move on success).
  virtual bool post_publish(unsigned home, Subject* s, Frame* f) = 0;
  // Hands a framed message to workgroup w for its subscribers (references move on success).
  virtual bool post_deliver(unsigned w, Subject* s, Frame* f) = 0;
  // Queues f to a local connection (one reference taken, even on failure). f == nullptr: a frame for it
  // could not be allocated. Must not call back into the Broker: a connection that cannot take its output
  // is closed later by the host (out of memory is never silent: the connection sees the close).
  virtual void send(Subscriber* c, Frame* f) = 0;
  // A connection paused by on_command (false) may read again; its kept input is parsed by the host.
  virtual void resume(Subscriber* c) = 0;
};

// Room a publish payload is placed behind, so the home can write "MSG <subject> <epoch>:<seq>\n" and the
// WebSocket head in front of it without copying the payload again.
constexpr size_t publish_headroom(size_t subject_len) {
  return kMaxServerFrameHead + 4 + subject_len + 1 + 16 + 1 + 20 + 1;
}
// A frame holding the payload behind publish_headroom(subject): what the home's publish_home expects.
// nullptr when out of memory.
Frame* publish_frame(std::string_view subject, const void* payload, size_t len, uint8_t opcode);

class Broker {
 public:
  Broker(Registry& registry, unsigned wg, BrokerOptions options, BrokerHost& host, Counters& counters);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // One client message (dispatch.cc). False: the connection must pause (its publish is held); the host
  // keeps the rest of its input and calls nothing for it until BrokerHost::resume.
  bool on_command(Subscriber* c, uint8_t opcode, uint8_t* p, size_t len);
  // The connection left: drops its subscriptions and any held publish (never acknowledged).
  void on_leave(Subscriber* c);

  // From the inbox. on_publish: this workgroup is the subject's home (consumes one reference to each);
  // call only while accepting(). on_deliver: for the local subscribers (borrows both).
  void on_publish(Subject* s, Frame* f) { publish_home(s, f); }
  void on_deliver(Subject* s, Frame* f) { deliver(s, f); }

  // True while no delivery is deferred: the home may take publishes.
  bool accepting() const { return deferred_.empty(); }
  // Each loop iteration, after the inbox: retries deferred deliveries, then held publishes (in order).
  void retry();

  size_t held_publishes() const { return held_.size(); }

 private:
  // dispatch.cc
  void on_sub(Subscriber* c, std::string_view subjects);
  void on_unsub(Subscriber* c, std::string_view subjects);
  bool on_pub(Subscriber* c, uint8_t opcode, std::string_view subject, std::string_view id, std::string_view body);
  void reply(Subscriber* c, const char* p, size_t n);
  void reply_err(Subscriber* c, ErrCode code, std::string_view id, std::string_view detail);
  void ack(Subscriber* c, std::string_view id);

  // broker.cc
  bool route(Subject* s, Frame* f);   // to the home; false (references kept) when it cannot take it now
  void publish_home(Subject* s, Frame* f);
  void deliver(Subject* s, Frame* f);
  int find(Subscriber* c, std::string_view name) const;
  void subscribe(Subscriber* c, Subject* s);
  void unsubscribe(Subscriber* c, uint32_t k);

  struct Held {       // a publish waiting for its home's ring
    Subscriber* conn;
    Subject* subject;
    Frame* frame;
    std::string id;
  };
  struct Deferred {   // a delivery waiting for a workgroup's ring
    unsigned wg;
    Subject* subject;
    Frame* frame;
  };
  // Name → index into the connection's subscription list, kept for connections with many subscriptions
  // so that SUB/UNSUB cost is proportional to the names in the message, not to what the connection holds.
  using NameIndex = std::unordered_map<std::string_view, uint32_t>;

  Registry& registry_;
  const unsigned wg_;
  const BrokerOptions opt_;
  BrokerHost& host_;
  Counters& counters_;
  std::deque<Held> held_;
  std::vector<Deferred> deferred_;
  std::unordered_map<const Subscriber*, NameIndex> index_;
  std::vector<std::string_view> scratch_;  // on_sub's working list, kept to reuse its memory
};

}  // namespace starling
