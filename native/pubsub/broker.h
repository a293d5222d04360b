// Broker: one workgroup's share of publish/subscribe — its connections' commands (dispatch.cc) and the
// routing of messages (broker.cc): a publish goes to its subject's home, which sequences it, frames it
// once, caches it (pubsub/cache.h) and fans it out to every interested workgroup; each workgroup queues
// the same frame to its local subscribers. No socket, no thread: the workgroup owns the Broker and drives
// it from its loop, and the BrokerHost is how it reaches the rings and the connections.
//
// Recovery, history and snapshots (PROTOCOL.md v2) are answered at the home, in the subject's sequence:
// a SUB spec that needs them is sent to the home as a Request (publish ring, in order with that
// workgroup's publishes); the home answers with the frames to send and the position N they reach, on the
// same delivery ring as the subject's messages. The asking workgroup marked its interest before asking,
// so messages after N follow the answer on that ring, and it links the subscription only when the answer
// arrives, so none up to N reaches it live: each message exactly once, no gap. The connection reads no
// more commands until its answers are in (so a later PONG still means "every earlier command took effect").
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

#include <queue>

#include "io/frame.h"
#include "pubsub/cache.h"
#include "pubsub/permissions.h"
#include "pubsub/protocol.h"
#include "pubsub/subject.h"
#include "runtime/counters.h"

namespace starling {

// Entitlement (PROTOCOL.md): whether SUB and PUB are checked, and against what before a token is accepted.
struct EntitlementOptions {
  bool on = false;                          // Entitlement != None
  const Permissions* anonymous = nullptr;   // a connection without an accepted token (on: never nullptr) —
                                            // Basic: subscribe to everything; JWT, Custom: nothing
  uint32_t renew_before_s = 60;             // "AUTH expiring" this long before the token expires
};

// ClusterEngine = redis (runtime/cluster_link.h): the engine numbers every subject's messages and fans them out to
// the nodes; a subject's home here keeps a copy of the engine's state (its epoch, last number, history) and
// delivers what the engine sends it. What a workgroup hands to the cluster link:
struct EngineOp {
  enum Kind : uint8_t {
    kPublish,   // frame: the payload behind publish_headroom(subject); token != 0: answer it (on_engine_answer)
    kInterest,  // this workgroup's interest bit of subject changed: the link reconciles what it follows
  };
  Kind kind;
  uint8_t from;        // the workgroup
  Subject* subject;    // one reference, the link's
  Frame* frame;        // kPublish: one reference, the link's
  uint64_t token;      // kPublish: the broker's Pending for a publish acknowledged once stored (0: none)
};

// What the cluster link tells a subject's home: the engine's state of the subject (read after the link began
// receiving its messages, so every later message follows), or, with drop, that the node follows it no more.
struct EngineSync {
  bool drop = false;
  uint64_t epoch = 0;
  uint64_t last = 0;                 // the engine's last number when read
  std::vector<Frame*> entries;       // live frames of numbers last - entries.size() + 1 .. last (one reference each)
  Frame* snapshot = nullptr;         // the retained snapshot (one reference), number snapshot_seq
  uint64_t snapshot_seq = 0;
  EngineSync() = default;
  EngineSync(const EngineSync&) = delete;
  EngineSync& operator=(const EngineSync&) = delete;
  ~EngineSync() {
    for (Frame* f : entries) f->unref();
    if (snapshot) snapshot->unref();
  }
};

// How the link answers a publish with a token (on_engine_answer).
enum class EngineAnswer : uint8_t {
  kStored,      // Redis stored and numbered it
  kRefused,     // the engine was unreachable: never sent
  kUnknown,     // the link was lost after it was sent: it may or may not have been stored
  kFailed,      // Redis answered with an error (logged by the link)
};

struct BrokerOptions {
  uint64_t max_message = 65536;      // MaxMessageSize
  uint32_t max_subscriptions = 1000; // MaxSubscriptionsPerConnection
  uint64_t max_backlog = 1 << 20;    // MaxBacklog: what the recovery and history answers of one SUB may hold
  CacheOptions cache;                // this workgroup's share of the history cache (max_bytes 0: off)
  EntitlementOptions entitlement;
  bool cluster = false;              // ClusterEngine = redis: publishes go to the engine (BrokerHost::post_engine)
  bool guaranteed = false;           // ClusterDeliveryMode = Guaranteed: a PUB with an id is acknowledged once stored
};

// How a Broker reaches the rest of its workgroup. Every method runs on the workgroup's thread.
class BrokerHost {
 public:
  virtual ~BrokerHost() = default;
  // Hands a publish to the subject's home workgroup (references to s and f move on success).
  virtual bool post_publish(unsigned home, Subject* s, Frame* f) = 0;
  // Hands a framed message to workgroup w for its subscribers (references move on success).
  virtual bool post_deliver(unsigned w, Subject* s, Frame* f) = 0;
  // A SUB spec for the subject's home, on the ring post_publish uses (the reference to s and r move on
  // success).
  virtual bool post_request(unsigned home, Subject* s, Request* r) = 0;
  // The home's answer to r->from, on the ring post_deliver uses (references move on success).
  virtual bool post_answer(unsigned w, Subject* s, Request* r) = 0;
  // Queues f to a local connection (one reference taken, even on failure). f == nullptr: a frame for it
  // could not be allocated. Must not call back into the Broker: a connection that cannot take its output
  // is closed later by the host (out of memory is never silent: the connection sees the close).
  virtual void send(Subscriber* c, Frame* f) = 0;
  // A connection paused by on_command (false) may read again; its kept input is parsed by the host.
  virtual void resume(Subscriber* c) = 0;
  // Hands `token` (1..kMaxTokenLen bytes, valid during the call) to the control plane for a decision. The
  // host pauses c until it calls Broker::decided for it (on_command then returns false).
  virtual void authenticate(Subscriber* c, std::string_view token) = 0;
  // Cluster: hands op to the cluster link (references move on success; false: its ring is full). engine_up:
  // whether the link can take publishes now (Redis reachable).
  // engine_refused: a publish was answered ERR unavailable because the link was down (counted with the link's).
  virtual bool post_engine(const EngineOp& op) = 0;
  virtual bool engine_up() const = 0;
  virtual void engine_refused() = 0;
};

// Subjects the server itself publishes on (PUSH monitoring, /__starling__/stats); clients may subscribe to them
// but not publish, so nobody can spoof the server's indicators. Each node has its own: they are never clustered.
constexpr std::string_view kReservedPrefix = "/__starling__/";

// Room a publish payload is placed behind, so the home can write "MSG <subject> <epoch>:<seq>\n" and the
// WebSocket head in front of it without copying the payload again.
constexpr size_t publish_headroom(size_t subject_len) {
  return kMaxServerFrameHead + 4 + subject_len + 1 + 16 + 1 + 20 + 1;
}
// A frame holding the payload behind publish_headroom(subject): what the home's publish_home expects.
// nullptr when out of memory.
Frame* publish_frame(std::string_view subject, const void* payload, size_t len, uint8_t opcode,
                     bool retained = false);
// Writes "MSG <subject> <epoch>:<seq>\n" and the WebSocket head in front of the payload of a publish_frame:
// the live frame every subscriber gets (the home's numbering, or the cluster engine's).
void frame_message(Frame* f, std::string_view subject, uint64_t epoch, uint64_t seq);

class Broker {
 public:
  Broker(Registry& registry, unsigned wg, BrokerOptions options, BrokerHost& host, Counters& counters);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // One client message (dispatch.cc). False: the connection must pause (its publish is held); the host
  // keeps the rest of its input and calls nothing for it until BrokerHost::resume.
  bool on_command(Subscriber* c, uint8_t opcode, uint8_t* p, size_t len);
  // What "SUB <spec>" would send before the live messages — the history (kHistory) or what followed a
  // position (kRecover), then SYNC or RESYNC — without subscribing (GET /history). Checked like a SUB
  // (entitlement; ERR limit when the cache is off). False: c waits for the home's answer, as for a SUB.
  bool fetch(Subscriber* c, const Spec& spec);
  // The connection left: drops its subscriptions and any held publish (never acknowledged).
  void on_leave(Subscriber* c);

  // Entitlement. authenticate: "AUTH <token>" (also a token given on the upgrade URL): answered at once
  // (entitlement off: "AUTH ok 0"; too large; too many AUTH this pass) and true, or handed to the host
  // (BrokerHost::authenticate) and false: c waits. decided: the control plane's answer — perms (one
  // reference, consumed) and expiry (unix s, 0: never) for an accepted token, else nullptr and why. An
  // accepted token replaces the one in force ("AUTH ok <expiry>"), and every subscription it no longer
  // grants is dropped with "ERR forbidden <subject>: ..."; a refused one leaves it in force ("AUTH invalid").
  bool authenticate(Subscriber* c, std::string_view token);
  void decided(Subscriber* c, Permissions* perms, uint32_t expiry, std::string_view detail);
  // Once a pass, for each open connection: "AUTH expiring <s>" once within renew_before_s of its token's
  // expiry; at or past it "AUTH expired" and kExpired (the host closes it with 1008). Resets the AUTH count.
  enum class Expiry : uint8_t { kFine, kExpired };
  Expiry check_expiry(Subscriber* c, uint64_t now_s);
  // Once a pass, for a connection check_expiry does not see (an HTTP connection between or during its
  // requests): resets its AUTH count, so that kMaxAuthsPerPass bounds its token decisions per second too.
  void new_pass(Subscriber* c);
  // HTTP requests, each run under the token it carries (WsEngine keeps which token is in force):
  // forget_token makes c anonymous again — its permission set dropped, no expiry — at once, with no reply and
  // nothing crossing to the control plane (a request without a token after one with). Subscriptions are not
  // looked at: callers have none (an HTTP connection between requests). token_expired: the token in force has
  // an expiry and now_s is at or past it (presented again, it is decided again rather than trusted).
  void forget_token(Subscriber* c);
  bool token_expired(const Subscriber* c, uint64_t now_s) const;

  // From the inbox. on_publish / on_request: this workgroup is the subject's home (they consume one
  // reference to each argument); call only while accepting(). on_deliver: for the local subscribers
  // (borrows both). on_answer: the home's answer to a request of this workgroup (consumes both).
  void on_publish(Subject* s, Frame* f) { publish_home(s, f); }
  void on_request(Subject* s, Request* r);
  void on_deliver(Subject* s, Frame* f) { deliver(s, f); }
  void on_answer(Subject* s, Request* r);
  // From the cluster link (this workgroup is s's home; consume one reference to s and to what comes with it).
  // on_numbered: the engine's message number seq of s, framed (live MSG); delivered and cached like a publish
  // numbered here. on_sync: the engine's state of s (EngineSync); SUBs that waited for it are answered.
  // on_engine_answer: the outcome of a publish of this workgroup that was handed over with a token.
  void on_numbered(Subject* s, Frame* f, uint64_t seq);
  void on_sync(Subject* s, EngineSync* y);
  void on_engine_answer(uint64_t token, EngineAnswer answer);

  // The loop's clock (CLOCK_MONOTONIC ms), set before each iteration's work.
  void set_now(uint64_t now_ms) { now_ms_ = now_ms; }
  // Sends conflated messages whose interval has passed; returns ms until the next is due (-1: none).
  int flush_conflated();
  // Ms from the last set_now until the next conflated message is due (0 if overdue, -1: none).
  int conflation_wait() const;
  // Once a second: drops expired cached messages.
  void pass() { cache_.expire(now_ms_); }
  bool caching() const { return cache_.enabled(); }

  // True while no delivery is deferred: the home may take publishes.
  bool accepting() const { return deferred_.empty(); }
  // Each loop iteration, after the inbox: retries deferred deliveries, then held publishes (in order).
  void retry();

  // Publishes (and cluster notices) waiting for a ring: the loop polls while any is held.
  size_t held_publishes() const { return held_.size() + notices_.size(); }

 private:
  // dispatch.cc
  // What entitlement says about c doing `access` on subject: empty when allowed, else why not.
  std::string_view refusal(const Subscriber* c, Access access, std::string_view subject) const;
  bool on_sub(Subscriber* c, const Command& cmd);
  void on_unsub(Subscriber* c, std::string_view subjects);
  bool on_pub(Subscriber* c, uint8_t opcode, std::string_view subject, std::string_view id, std::string_view body,
              bool retained);
  void reply(Subscriber* c, const char* p, size_t n);
  void reply_err(Subscriber* c, ErrCode code, std::string_view id, std::string_view detail);
  void ack(Subscriber* c, std::string_view id);
  // Subscriber::ack_numbered: "ACK <id>" once s's home (another workgroup) has numbered what c published to
  // it — a barrier request on the publish ring, behind the publish. Takes one reference to s. False: c waits
  // (paused) for it; true: acknowledged at once (no memory for the barrier: the hand-over is acknowledged).
  bool ack_when_numbered(Subscriber* c, Subject* s, std::string_view id);
  // Whether c's publish `id` to s is acknowledged by ack_when_numbered rather than at hand-over (decided before
  // routing: route moves the reference the barrier would need).
  bool wants_barrier(const Subscriber* c, const Subject* s, std::string_view id) const {
    return c && c->ack_numbered && !id.empty() && s->home != wg_;
  }

  // broker.cc
  bool route(Subject* s, Frame* f);   // to the home; false (references kept) when it cannot take it now
  void publish_home(Subject* s, Frame* f);
  // Caches f (number seq) and hands it to every interested workgroup (consumes one reference to s and f).
  void fan_out(Subject* s, Frame* f, uint64_t seq);
  // Cluster. publish_engine: on_pub's path to the engine. hand_to_engine: one publish to the link, with a
  // token when it is acknowledged once stored (false: the ring is full, references kept). notify_engine: this
  // workgroup's interest bit of s changed (consumes one reference to s; kept and retried when the ring is full).
  // park: a request for s waits for the engine's state (consumes the references to s and r).
  bool publish_engine(Subscriber* c, uint8_t opcode, std::string_view subject, std::string_view id,
                      std::string_view body, bool retained);
  bool hand_to_engine(Subscriber* c, Subject* s, Frame* f, std::string_view id, bool* waits);
  void notify_engine(Subject* s);
  void park(Subject* s, Request* r);
  // Whether s is the cluster engine's (ClusterEngine = redis, and not one of this node's reserved subjects).
  bool clustered(const Subject* s) const {
    return opt_.cluster && s->name().compare(0, kReservedPrefix.size(), kReservedPrefix) != 0;
  }
  void answer_request(Subject* s, Request* r);  // at the home: answer r, send it back (consumes both)
  void send_back(Subject* s, Request* r);       // r answered (or failed): to its workgroup (consumes both)
  void deliver(Subject* s, Frame* f);
  void conflate(Subscriber* who, uint32_t interval_ms, Subject* s, Frame* f);
  int find(Subscriber* c, std::string_view name) const;
  void subscribe(Subscriber* c, Subject* s, uint32_t conflate_ms);
  void unsubscribe(Subscriber* c, uint32_t k);
  void drop_conflation(Subscriber* c, Subject* s);
  // Clears this workgroup's interest in s if it has no local subscriber and no request in flight for it.
  void release_if_unused(Subject* s);
  // A spec that needs the home: answered here (home) or sent there. False when c waits for an answer.
  bool ask_home(Subscriber* c, Subject* s, const Spec& spec, uint32_t conflate_ms, uint64_t allowance,
                bool once = false);
  // The answer for c: send it, then link the subscription.
  // once: only the answer (fetch), no subscription.
  void finish(Subscriber* c, Subject* s, const Request& r, uint32_t conflate_ms, bool once);
  void resume_if_done(Subscriber* c);

  struct Held {       // a publish (or a request) waiting for its home's ring (or the cluster link's)
    Subscriber* conn; // nullptr: a publish re-routed by a home (its subject was forgotten meanwhile)
    Subject* subject;
    Frame* frame;     // nullptr for a request
    Request* request;
    std::string id;
    bool engine = false;  // a publish for the cluster link
  };
  struct Deferred {   // a delivery (or an answer) waiting for a workgroup's ring
    unsigned wg;
    Subject* subject;
    Frame* frame;     // nullptr for an answer
    Request* request;
  };
  struct Pending {    // a request in flight for a connection of this workgroup
    Subscriber* conn; // nullptr once it left
    Subject* subject;
    uint32_t conflate_ms;
    bool once;        // fetch: the answer only
    std::string ack;  // a barrier (ack_when_numbered): the publish id its answer acknowledges
    bool barrier = false;
  };
  // c (p.conn) waits for the answer to token: in pending_ and counted in waits_, both or neither (std::bad_alloc
  // leaves nothing). drop_answer undoes it for an answer that will not come (nothing was posted).
  void await_answer(uint64_t token, Pending p);
  void drop_answer(uint64_t token, Subscriber* c);
  // One conflated subscription's state: when it may send next, and the latest message held until then.
  struct ConflationKey {
    const Subscriber* who;
    const Subject* subject;
    bool operator==(const ConflationKey& o) const { return who == o.who && subject == o.subject; }
  };
  struct ConflationHash {
    size_t operator()(const ConflationKey& k) const {
      return std::hash<const void*>()(k.who) * 31 + std::hash<const void*>()(k.subject);
    }
  };
  struct Conflation {
    uint64_t next_ms = 0;
    uint32_t interval_ms = 0;
    Frame* latest = nullptr;
  };
  struct Due {        // a conflated message to send at `at` (stale once its state sent or dropped it)
    uint64_t at;
    Subscriber* who;
    Subject* subject;
    bool operator>(const Due& o) const { return at > o.at; }
  };
  // Name → index into the connection's subscription list, kept for connections with many subscriptions
  // so that SUB/UNSUB cost is proportional to the names in the message, not to what the connection holds.
  using NameIndex = std::unordered_map<std::string_view, uint32_t>;

  Registry& registry_;
  const unsigned wg_;
  const BrokerOptions opt_;
  BrokerHost& host_;
  Counters& counters_;
  HomeCache cache_;
  uint64_t now_ms_ = 0;
  std::deque<Held> held_;
  std::vector<Deferred> deferred_;
  uint64_t next_token_ = 0;
  std::unordered_map<uint64_t, Pending> pending_;           // by Request::token
  std::unordered_map<const Subscriber*, uint32_t> waits_;   // connections paused for answers: how many
  std::unordered_map<ConflationKey, Conflation, ConflationHash> conflated_;
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
  std::unordered_map<const Subscriber*, NameIndex> index_;
  std::vector<Spec> scratch_;  // on_sub's working list, kept to reuse its memory
  // Cluster: interest notices the link's ring could not take yet (one subject reference each), and, at the
  // home, the requests waiting for a subject's engine state (one reference to the subject each).
  std::vector<Subject*> notices_;
  std::unordered_map<Subject*, std::vector<Request*>> parked_;
};

}  // namespace starling
