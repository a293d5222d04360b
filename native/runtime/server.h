// Server: the listeners, the acceptor thread, the workgroups and the subject registry. Created and
// driven by the control thread (JavaScript, through binding.cc); see THREADS.md.
#pragma once
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/options.h"
#include "io/loop.h"
#include "io/poller.h"
#include "pubsub/permissions.h"
#include "pubsub/subject.h"
#include "runtime/workgroup.h"

namespace starling {

class ClusterLink;

struct ListenAddress {
  std::string host;   // numeric IPv4/IPv6 or a name (resolved once, first address used)
  uint16_t port;      // 0: ephemeral (see Server::ports)
};

// Entitlement modes as the native side sees them: whether anything is checked, and what a connection may do
// before a token of it is accepted (PROTOCOL.md "Entitlement"). JWT and Custom differ only in TypeScript.
enum class EntitlementMode : uint8_t {
  kNone,    // nothing is checked (PublishAllowFromAddressList still is)
  kBasic,   // anyone may subscribe; publishing needs an accepted token
  kToken,   // JWT, Custom: nothing without an accepted token
};

// IoBackend in the config: which Loop backend the workgroups run (io/loop.h).
enum class IoChoice : uint8_t {
  kAuto,    // io_uring where io_uring_unavailable() says yes, else epoll (the reason is in backend_note())
  kEpoll,
  kUring,   // io_uring or nothing: the Server constructor throws the reason
};

// Plain copy of the validated configuration (validation happens in TypeScript, src/config).
struct ServerOptions {
  std::vector<ListenAddress> listen;
  std::string path = "/";
  std::vector<std::string> allow_origins;  // HTTP.AllowOrigins (SessionOptions::allow_origins)
  uint32_t sse_retry_ms = 2000;      // HTTP.SseRetry
  unsigned workgroups = 1;
  std::vector<int> cpus;             // workgroup i pinned to cpus[i % size]; empty: no pinning
  bool benchmark_mode = false;       // round-robin instead of client-IP hash
  int send_buffer = 0;               // SO_SNDBUF; 0 keeps the kernel default
  int receive_buffer = 0;            // SO_RCVBUF; 0 keeps the kernel default
  uint64_t max_message = 65536;      // largest PUB payload
  uint32_t max_subscriptions = 1000; // per connection
  uint64_t max_backlog = 1 << 20;    // bytes a connection's socket may refuse (see MaxBacklog)
  uint32_t max_backlog_ms = 2000;    // ... for this long before it is a slow consumer (MaxBacklogTime)
  uint64_t memory = 0;               // server-wide budget in bytes (Memory); 0: none
  uint32_t keepalive_s = 30;         // silence after which a connection is pinged, then closed; 0: off
  uint32_t max_connections = 0;      // open client connections; 0: RLIMIT_NOFILE less a reserve
  uint64_t cache_size = 0;           // history cache bytes, all subjects (CacheSize); 0: no cache
  uint32_t max_cached_messages = 1000;  // per subject (MaxCachedMessagesPerSubject)
  uint64_t cache_expire_ms = 180000; // CacheExpireTime; 0: never
  EntitlementMode entitlement = EntitlementMode::kNone;
  uint32_t renew_before_s = 60;      // Entitlement.RenewBefore
  // PublishAllowFromAddressList: "<address>/<bits>" (IPv4 or IPv6, checked in TypeScript); empty: every
  // address may publish.
  std::vector<std::string> publish_allow;
  IoChoice io = IoChoice::kEpoll;
  ClusterOptions cluster;            // ClusterEngine = redis (enabled()): the engine is every subject's home
};

// A token for the control plane to decide on: asked by workgroup `wg` for its connection `id`.
struct AuthRequest {
  uint32_t wg;
  uint32_t id;
  std::string token;
  std::string address;   // the peer's (Loop::peer_address)
};
// The control plane's answer: perms (one reference, moved to the connection) and expiry (unix s, 0: never)
// for an accepted token; nullptr and why (printable ASCII) for a refused one.
struct AuthDecision {
  uint32_t wg;
  uint32_t id;
  Permissions* perms;
  uint32_t expiry;
  std::string detail;
};

// Server-wide counters, after the per-workgroup ones in read_counters().
#define STARLING_SERVER_COUNTERS(X)                                                                       \
  X(subjects, gauge, "subjects registered: with a subscriber, or (cache on) with cached messages or a snapshot")                                             \
  X(accept_refused, counter, "connections refused at once (reset): MaxConnections, Memory, fd table or inbox full") \
  X(memory_bytes, gauge, "bytes clients make the server hold (queues, partial input, connections), against Memory") \
  X(cluster_state, gauge, "cluster link to Redis: 0 off, 1 connecting, 2 up, 3 down (why: clusterStatus)")       \
  X(cluster_rtt_us, gauge, "round-trip time of the last probe of Redis, microseconds")                          \
  X(cluster_reconnects, counter, "connections to Redis made again after one was lost or refused")              \
  X(cluster_published, counter, "publishes the engine stored and numbered (Redis answered)")                    \
  X(cluster_received, counter, "messages received from the engine's fan-out")                                   \
  X(cluster_refused, counter, "publishes refused with ERR unavailable: the engine could not take them")         \
  X(cluster_refilled, counter, "messages read back from the engine's streams: gaps, new subscriptions, reconnects")

class Server {
 public:
  // Binds every listen address. Throws std::runtime_error naming the address and the reason.
  explicit Server(ServerOptions options);
  ~Server();   // stops if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void start();
  // Stops accepting, closes every connection with 1001 (waiting up to kShutdownGraceMs for the close
  // handshakes), and joins all threads. Blocking; idempotent; call from one thread.
  void stop();

  // The bound port of each listen address, in order (resolves port 0).
  const std::vector<uint16_t>& ports() const { return ports_; }

  // Workgroups: a connection handed over by the acceptor is gone (MaxConnections accounting).
  void connection_closed() { open_connections_.fetch_sub(1, std::memory_order_relaxed); }
  // The connection cap in effect (MaxConnections, or its default: see the constructor).
  uint64_t max_connections() const { return max_connections_; }
  // The backend the workgroups run, connections per io_uring ring (0 with epoll), and why auto chose epoll
  // ("" when there is nothing to say).
  IoBackend backend() const { return backend_; }
  uint32_t ring_files() const { return ring_files_; }
  const std::string& backend_note() const { return backend_note_; }

  // Publishes from the control thread (server.publish() in TypeScript): the payload is copied once
  // into a frame and handed to the subject's home workgroup. Returns false if nobody subscribes or the
  // home workgroup's control ring is full (counted as a ring overflow by nobody: the caller reports it).
  // kBadSubject: the subject breaks the protocol's subject rule (pubsub/protocol.h valid_subject), the one
  // definition of it that TypeScript relies on too.
  // kUnavailable: ClusterEngine = redis and the engine cannot take it now (Redis unreachable). In a cluster the
  // answer is kRouted once handed to the engine (other nodes may have subscribers).
  enum class Published { kRouted, kNoSubscribers, kOverflow, kBadSubject, kUnavailable };
  Published publish(std::string_view subject, const uint8_t* payload, size_t len, bool binary);

  // Entitlement (THREADS.md "Decisions"). set_auth_notify: from the control thread; `notify` is called from
  // a workgroup thread, under the requests' lock, when requests wait and none waited before (at most once
  // until the next take_auth_requests), and returns whether the call was queued; one that was not is made
  // again by the next submit_auth or retry_auth_notify (each workgroup's pass), so no token waits for good.
  // set_auth_notify(nullptr) returns once no call is running, and none follows. submit_auth: workgroups hand over their iteration's requests (the vector is
  // emptied). take_auth_requests: the control thread takes every waiting request. decide: the control
  // thread's answers, handed to their workgroups (answers for connections gone meanwhile are dropped there).
  void set_auth_notify(std::function<bool()> notify);
  void submit_auth(std::vector<AuthRequest>& batch);
  void retry_auth_notify();
  std::vector<AuthRequest> take_auth_requests();
  void decide(std::vector<AuthDecision>& batch);
  // What a connection may do before a token of it is accepted (nullptr with EntitlementMode::kNone).
  const Permissions* anonymous() const { return anonymous_; }
  // Whether a peer may publish (PublishAllowFromAddressList).
  bool may_publish_from(const sockaddr_storage& peer) const;

  // The cluster link's state, the Redis server it uses and why it is not up (state kOff without a cluster).
  ClusterStatus cluster_status() const;

  // Number of doubles read_counters() writes: workgroups * kCounterCount + server counters.
  size_t counter_slots() const;
  void read_counters(double* out) const;

  // For workgroups.
  const ServerOptions& options() const { return options_; }
  Registry& registry() { return registry_; }
  Workgroup& workgroup(unsigned i) { return *workgroups_[i]; }
  unsigned workgroup_count() const { return options_.workgroups; }
  // Producer id of the control thread's publish ring into each workgroup (0..N-1 are the workgroups).
  unsigned producer_control() const { return workgroup_count(); }
  // The cluster link (ClusterEngine = redis), nullptr without a cluster.
  ClusterLink* cluster() { return cluster_.get(); }

  // How long stop() waits for clients to answer the 1001 close frame.
  static constexpr int kShutdownGraceMs = 1000;

 private:
  Published publish_engine(std::string_view subject, const uint8_t* payload, size_t len, bool binary);
  void accept_loop();
  void accept_ready(int listen_fd, uint64_t* wake_mask, Poller& poller);
  void refuse(int fd);
  unsigned pick_workgroup(const sockaddr_storage& peer);
  void parse_publish_allow();
  // Decides backend_ (options_.io and the kernel), ring_files_ and max_connections_. Throws for IoBackend =
  // io_uring where the kernel cannot.
  void choose_backend();

  ServerOptions options_;
  Registry registry_;
  std::vector<std::unique_ptr<Workgroup>> workgroups_;
  std::unique_ptr<ClusterLink> cluster_;   // (destroyed before the workgroups: it pushes into their rings)
  std::vector<int> listen_fds_;
  std::vector<uint16_t> ports_;
  int acceptor_wake_fd_ = -1;
  int reserve_fd_ = -1;   // spare descriptor released to shed a connection when the fd table is full
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  bool stopped_ = false;
  unsigned round_robin_ = 0;
  std::atomic<uint64_t> accept_refused_{0};
  std::atomic<int64_t> open_connections_{0};
  uint64_t max_connections_ = 0;
  IoBackend backend_ = IoBackend::kEpoll;
  uint32_t ring_files_ = 0;
  std::string backend_note_;
  bool listening_paused_ = false;   // the fd table is full and no spare descriptor is left: retry later
  std::mutex control_lock_;   // serialises producer_control() across JavaScript threads
  struct Cidr {
    int family;               // AF_INET, AF_INET6
    uint8_t bytes[16];
    unsigned bits;
  };
  std::vector<Cidr> publish_allow_;
  Permissions* anonymous_ = nullptr;
  std::function<bool()> auth_notify_;
  std::atomic<bool> auth_notify_owed_{false};  // requests wait and their notify could not be queued
  std::mutex auth_lock_;      // guards auth_requests_ (held only to append or swap)
  std::vector<AuthRequest> auth_requests_;
};

}  // namespace starling
