// ClusterLink: the node's link to the cluster engine (ClusterEngine = redis; docs/cluster.md). One thread,
// `starling-cluster`, with two connections to one Redis primary: commands (one script per publish, the fills) and
// pub/sub (the messages of the subjects this node follows). See THREADS.md "Cluster".
//
// The engine is every subject's home:
// - A publish (Broker::publish_engine) crosses from its workgroup to the link (one ring per workgroup), which runs
//   the publish script: next number, append to the subject's capped stream, keep the snapshot, PUBLISH to the
//   nodes. Redis's answer acknowledges it (Guaranteed, HTTP) or reports why not.
// - The link follows (SUBSCRIBE) exactly the subjects some workgroup of this node has interest in: workgroups
//   send a notice when their interest bit changes, and the link reconciles with the bits themselves.
// - Following a subject starts with a fill, read after the subscription took effect: the engine's epoch, last
//   number, newest history and snapshot, handed to the subject's home here (EngineSync), which then takes the
//   messages one by one (Envelope::kNumbered). A message that does not follow the last one (a gap: Redis dropped
//   our pub/sub connection's backlog, a reconnect) or comes with another epoch makes the link fill again from the
//   last number it delivered; messages that arrive meanwhile wait in order. Nothing is skipped silently: what the
//   engine no longer has shows as a gap in the numbers, which the client SDK recovers from (RESYNC).
// - Redis unreachable: publishes are refused (ERR unavailable); the link retries with back-off and, once back,
//   subscribes again and fills every followed subject from its last number.
//
// Bounded (DESIGN.md rule 3): commands in flight (kMaxInFlight) and unsent bytes (kMaxUnsent) stop the link
// taking publishes (the workgroups then hold them and pause their publishers); envelopes the workgroups' rings
// cannot take yet (kMaxBacklog) stop it reading pub/sub (Redis then buffers, up to its client-output-buffer-limit,
// past which it drops the connection: a reconnect and fills); messages held during a fill (kMaxHeldBytes) are
// dropped and fetched again from the stream.
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cluster/engine_format.h"
#include "cluster/options.h"
#include "cluster/resp.h"
#include "io/poller.h"
#include "io/tcp_client.h"
#include "pubsub/broker.h"
#include "runtime/ring.h"
#include "runtime/workgroup.h"

namespace starling {

class Server;

class ClusterLink {
 public:
  // Reads server.options() (cluster, cache, max_message). Throws std::runtime_error if it cannot set up its
  // poller or eventfd.
  explicit ClusterLink(Server& server);
  ~ClusterLink();   // stops; drops what is still queued
  ClusterLink(const ClusterLink&) = delete;
  ClusterLink& operator=(const ClusterLink&) = delete;

  void start();
  // Joins the thread. Call after the workgroups stopped (nothing is pushed any more).
  void stop();

  // Workgroup wg's thread (wg = the workgroup count: the control thread, under Server::control_lock_, with no
  // token): hands op over (false: the ring is full, references stay with the caller).
  bool push(unsigned wg, const EngineOp& op) { return inbox_[wg]->push(op); }
  // Any thread: the link drains its rings soon (one eventfd write while it may be asleep).
  void wake();
  // Whether publishes are taken now (connected, scripts loaded).
  bool up() const { return up_.load(std::memory_order_acquire); }
  // Any thread: a publish was refused because the link was down (cluster_refused).
  void count_refused() { refused_.fetch_add(1, std::memory_order_relaxed); }

  ClusterStatus status() const;
  // The cluster_* server counters, in STARLING_SERVER_COUNTERS order (7 values).
  void read_counters(double* out) const;

 private:
  struct Conn {                  // one connection to Redis
    TcpClient tcp;
    std::unique_ptr<resp::Parser> in;
    std::string out;             // commands not yet written, from `sent`
    size_t sent = 0;
    bool connecting = false;
    bool readable = false;       // edge-triggered: more may be waiting to be read
  };
  struct Await {                 // what a reply on the command connection answers, in order
    enum Kind : uint8_t { kSetup, kRole, kLoadPublish, kLoadFill, kPublish, kFill, kPing } kind;
    uint8_t wg = 0;              // kPublish
    uint64_t token = 0;          // kPublish: the broker's (0: nobody waits)
    uint64_t at_ns = 0;          // kPing
    std::string name;            // kFill
    uint64_t gen = 0;            // kFill: the track's generation it was sent for
    uint64_t from = 0;           // kFill: first number asked for (0: the newest history)
  };
  struct Held {                  // a message that arrived while its subject was being filled
    uint64_t epoch;
    uint64_t seq;
    Frame* frame;                // live frame (one reference)
  };
  struct Track {                 // a subject this node follows
    Subject* subject = nullptr;  // one reference
    enum Phase : uint8_t {
      kSubscribing,              // SUBSCRIBE sent, its confirmation awaited
      kFilling,                  // fill sent, its answer awaited (messages are held)
      kLive,                     // messages are delivered as they come
      kIdle,                     // the link is down: filled again when it is back
    } phase = kIdle;
    bool known = false;          // epoch and last are the engine's
    uint64_t epoch = 0;
    uint64_t last = 0;           // the last number handed to the home
    uint64_t gen = 0;            // fills sent for it (a late answer of an older one is ignored)
    std::vector<Held> held;
    size_t held_bytes = 0;
    bool refill = false;         // held messages were dropped: fill again after this fill
  };

  void run();
  void drain_inbox();
  void on_publish(const EngineOp& op);
  void reconcile(Subject* s);
  void track(Subject* s);
  void untrack(std::unordered_map<std::string, Track>::iterator it, bool unsubscribe);
  void subscribe_all();
  void start_fill(const std::string& name, Track& t);
  void on_fill(const Await& a, const resp::Value& v);
  void on_message(std::string_view name, std::string_view payload);
  void deliver_live(const std::string& name, Track& t, uint64_t epoch, uint64_t seq, Frame* f);
  // The live frame of message e of subject name (nullptr when out of memory).
  static Frame* live_frame(std::string_view name, uint64_t epoch, const engine::Entry& e);

  // Connections.
  void connect();
  void on_connected();
  void fail(const std::string& why);
  void became_up();
  void on_io(Conn& c, uint32_t events);
  void read_cmd();
  void read_sub();
  void on_reply(const resp::Value& v);
  void on_push(const resp::Value& v);
  void write(Conn& c);
  void command(Conn& c, std::initializer_list<std::string_view> args);
  bool taking_publishes() const;

  // Workgroups.
  void send_to(unsigned wg, const Envelope& e);
  void answer(unsigned wg, uint64_t token, EngineAnswer a);
  void flush_backlog();

  void set_status(ClusterState state, const std::string& detail);
  // Names at Redis (cluster_link.cc, kPrefix): the channel of a subject; its meta hash ('m') or stream ('l') key,
  // written into out. A fresh epoch for a subject that has none (valid until the next call).
  std::string channel(std::string_view name) const;
  static std::string_view key(std::string& out, std::string_view name, char kind);
  std::string_view candidate_epoch();

  Server& server_;
  const ClusterOptions options_;
  const uint32_t max_messages_;  // MaxCachedMessagesPerSubject: the streams' length and a fill's history
  const uint64_t expire_ms_;     // CacheExpireTime: an idle stream's lifetime
  const unsigned workgroups_;
  std::vector<std::unique_ptr<SpscRing<EngineOp>>> inbox_;
  std::unique_ptr<Poller> poller_;
  int wake_fd_ = -1;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> up_{false};
  std::thread thread_;

  Conn cmd_, sub_;
  std::deque<Await> awaits_;
  unsigned sub_setup_left_ = 0;  // replies of the pub/sub connection's setup still to come
  bool cmd_ready_ = false, sub_ready_ = false, ever_up_ = false;
  size_t address_ = 0;           // index into options_.redis of the server in use or next tried
  uint64_t retry_at_ms_ = 0;     // when to connect again (0: not waiting)
  uint64_t backoff_ms_ = 0;
  uint64_t ping_at_ms_ = 0;      // when the next probe goes
  bool ping_out_ = false;
  uint64_t ping_sent_ms_ = 0;
  uint64_t connect_started_ms_ = 0;  // while connecting and setting up (kConnectTimeoutMs)
  std::string publish_sha_, fill_sha_;

  std::unordered_map<std::string, Track> tracks_;
  std::unordered_map<std::string, uint32_t> subscribing_;  // SUBSCRIBEs sent per subject, confirmations awaited
  std::vector<std::deque<Envelope>> backlog_;              // per workgroup, what its ring could not take yet
  size_t backlog_size_ = 0;
  uint64_t wake_mask_ = 0;
  std::mt19937_64 random_;
  // The publish command's fixed arguments, and scratch space reused by every publish (no allocation per publish
  // once grown).
  const std::string max_messages_text_, expire_text_, meta_ttl_text_;
  std::string channel_prefix_;   // "starling:<db>:" of the server in use
  std::string meta_, log_, chan_;
  std::string name_;             // a subject name as the maps' key, for lookups from a message
  char epoch_text_[16];

  mutable std::mutex status_lock_;   // guards status_ (the control thread reads it)
  ClusterStatus status_;
  std::atomic<uint64_t> rtt_us_{0}, reconnects_{0}, published_{0}, received_{0}, refused_{0}, refilled_{0};
  std::atomic<uint8_t> state_{static_cast<uint8_t>(ClusterState::kConnecting)};
};

}  // namespace starling
