// ClientEngine: the benchmark client (benchsub / benchpub). Many WebSocket client connections per native
// thread, each thread with its own event loop, so the load tools are never the bottleneck. Subscribers
// record the latency of every message (the publisher's timestamp is the first 16 bytes of the payload);
// publishers send at a fixed total rate. TypeScript (bench/) reads counters and histograms in batches.
//
// Starling subscribers also check the sequence of every subject they receive (PROTOCOL.md v2): they keep
// the last <epoch>:<seq> per subject, count a gap within an epoch as lost messages and a seq at or below
// the last as a duplicate, and count SYNC / RESYNC and the kinds of non-live messages. reconnect() drops
// a chosen set of open subscriber connections and opens them again, subscribing each subject from its
// last position (SUB <s>@<epoch>:<seq>); the time from the drop to the connection's last SYNC (or
// RESYNC) is recorded in a second histogram (workload W5, BENCHMARKS.md).
//
// Transport::kHttp (Starling only, PROTOCOL.md "HTTP transport"): a subscriber is a server-sent event stream,
// `GET /sse?subject=<s>&subject=<s2>...`, whose message events are checked and timed exactly as MSG frames
// (sync / resync / err events as SYNC / RESYNC / ERR); a publisher POSTs each message to
// `/publish?subject=<s>` on a kept-alive connection, pipelining at most kHttpPipelineWindow requests.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "client/latency.h"
#include "runtime/server.h"

namespace starling {

// How a benchmark client talks to a server.
enum class Dialect : uint8_t {
  kStarling,  // SUB <s> / PUB <s>\n<payload> / MSG <s> <e>:<seq>\n<payload>
  kPlain,     // peers (bench/peers): SUB <s> / PUB <s> <payload> / the payload alone
  kNats,      // NATS over WebSocket: CONNECT, SUB <s> <sid>, PUB <s> <n>, MSG <s> <sid> <n>, PING/PONG
};

// How a benchmark client's connections carry the protocol.
enum class Transport : uint8_t {
  kWebSocket,  // one upgraded WebSocket per connection
  kHttp,       // Starling's HTTP transport: subscribers GET /sse (event streams), publishers POST /publish
};

struct ClientOptions {
  std::vector<ListenAddress> servers;      // connections are spread over them round-robin
  std::vector<std::string> local_addresses;// source addresses, round-robin; empty: the kernel's choice
  std::string path = "/";
  Dialect dialect = Dialect::kStarling;
  Transport transport = Transport::kWebSocket;  // kHttp needs Dialect::kStarling (the engine refuses others)
  unsigned threads = 1;
  uint32_t connections = 0;
  uint32_t first_index = 0;                // number of the first connection (benchsub worker processes)
  // Subscribers: connection i subscribes subjects[(i * subjects_per_client + j) % subjects.size()] for
  // j < subjects_per_client (so OneToOne is subjects_per_client = 1 with as many subjects as clients).
  // Publishers: every message goes to a uniformly random subject.
  std::vector<std::string> subjects;
  uint32_t subjects_per_client = 1;
  bool publisher = false;
  double frequency = 0;                    // publishers: messages per second, all connections together
  uint32_t message_size = 512;             // publishers: payload bytes (at least the 16-byte timestamp)
  uint32_t max_connecting = 1000;          // connection attempts in flight per thread
  int socket_buffer = 0;                   // SO_RCVBUF and SO_SNDBUF; 0: kernel default
  // Entitlement tokens: connection i upgrades with "?token=" + tokens[i % size] after the path (URL-safe
  // characters only, as JWTs are); empty: no token. Transport::kHttp: "&token=" on the /sse request, and on
  // every /publish request.
  std::vector<std::string> tokens;
  // Subscribers: once a connection is open and its SUBs are written, move its socket into an io_uring ring as a
  // direct descriptor and receive with a multishot recv into the ring's shared buffers. The process's fd limit
  // then bounds only the connections being set up (max_connecting per thread), not those held, so one process
  // holds a million (rings are added as they fill, each with a table as large as RLIMIT_NOFILE). The engine
  // refuses to start, with the reason, where io_uring_unavailable() says no.
  bool direct = false;
};

// HTTP publishers (Transport::kHttp): requests sent and not yet answered, per connection, at most. The server
// serves a connection's publishes one at a time (the next request is read once the broker has taken the last),
// so a deeper pipeline only waits in socket buffers: 64 keeps every recv of the server's a batch of requests
// to parse while a W1 window (64 requests of ~650 bytes, 42 KB) fits in a default socket buffer, and a
// publisher the server does not keep up with skips messages (send_stalls) instead of queueing them, so the
// offered rate stays what the server took.
constexpr uint32_t kHttpPipelineWindow = 64;

// Per-thread statistics, in the order read() writes them (then the Welford fields, then the histogram).
#define STARLING_CLIENT_COUNTERS(X)                                       \
  X(connected, "connections open (handshake done)")                       \
  X(connecting, "connections being set up")                               \
  X(connect_failures, "connections that failed to connect or upgrade")     \
  X(disconnects, "open connections the server closed")                    \
  X(messages_received, "live messages received (their latency recorded)") \
  X(bytes_received, "bytes read from sockets")                            \
  X(messages_sent, "messages published")                                  \
  X(bytes_sent, "bytes written to sockets")                               \
  X(send_stalls, "publishes skipped: the socket buffer was full (HTTP: kHttpPipelineWindow requests unanswered)")                                 \
  X(lost, "messages missing from a subject's sequence: gaps within an epoch (MSG or SYNC past last + 1)")   \
  X(duplicated, "messages whose seq was at or below the last one received on their subject and epoch")    \
  X(recovered, "messages of kind recovered (not in messages_received or the latency histogram)")          \
  X(snapshots, "messages of kind snapshot (not sequence-checked, not in messages_received)")              \
  X(history, "messages of kind history (not in messages_received)")                                      \
  X(syncs, "SYNC lines received")                                                                         \
  X(resyncs, "RESYNC lines received (the position asked for could not be recovered)")                      \
  X(epoch_changes, "MSG or SYNC in another epoch than the subject's last position, outside a RESYNC")      \
  X(errors, "ERR lines received (SSE: err events, and streams the parser refused; HTTP publishers: answers other than 200)") \
  X(acknowledged, "HTTP publishers: publishes answered 200")                                              \
  X(unpositioned, "gauge: subscriptions that have not received a message, SYNC or RESYNC yet")             \
  X(reconnects, "open connections dropped by reconnect() and opened again")                                \
  X(reconnects_synced, "reconnected connections whose every recovery SUB was answered (SYNC or RESYNC)")     \
  X(reconnects_unpositioned, "reconnected connections with no position to recover from (plain SUB, no SYNC)") \
  X(direct, "gauge: open connections held as io_uring direct descriptors (ClientOptions::direct)")            \
  X(direct_failures, "connections that could not be moved into a ring (they stay on epoll; the reason is in errno)")

enum ClientCounter : unsigned {
#define STARLING_ENUM(name, doc) kc_##name,
  STARLING_CLIENT_COUNTERS(STARLING_ENUM)
#undef STARLING_ENUM
  kClientCounterCount
};

// Doubles per thread in read(): counters, then four latency records, each Welford (n, mean, m2, min, max)
// and histogram buckets: message latency (live messages); reconnect(): the time from a connection's drop to
// the SYNC/RESYNC of its last subject; and from its recovery SUBs (sent on the 101) to that SYNC/RESYNC; and
// the connect time of each new connection (socket opened to the 101, with a token to its AUTH answer).
constexpr size_t kClientLatencySlots = 5 + kLatencyBuckets;
constexpr unsigned kClientLatencyRecords = 4;
constexpr size_t kClientSlotsPerThread = kClientCounterCount + kClientLatencyRecords * kClientLatencySlots;

// Which connections reconnect() drops: global indices i in [from, to) with (i - from) % every == 0, those
// open at the time (others are left alone).
struct ReconnectRequest {
  uint32_t from = 0;
  uint32_t to = 0;
  uint32_t every = 1;
  // false: abrupt, SO_LINGER 0 then close() (the server sees a TCP reset, as from a client whose network
  // went away); true: a close frame (1001 going away) written, then close() without waiting for the
  // server's answer (an event stream has no close frame: close() alone, the server sees a FIN).
  bool close_frame = false;
};

class ClientThread;

class ClientEngine {
 public:
  explicit ClientEngine(ClientOptions options);   // throws std::runtime_error on bad options
  ~ClientEngine();
  ClientEngine(const ClientEngine&) = delete;
  ClientEngine& operator=(const ClientEngine&) = delete;

  void start();
  void stop();   // blocking; closes every connection; idempotent
  size_t slots() const { return threads_.size() * kClientSlotsPerThread; }
  // Writes slots() doubles: for each thread, its counters, Welford fields and histograms (cumulative).
  void read(double* out) const;
  // Asks every thread to drop and reopen the selected open connections (asynchronous: returns at once;
  // the counters reconnects, reconnects_synced and the second histogram tell what happened).
  void reconnect(const ReconnectRequest& request);

 private:
  ClientOptions options_;
  // Subject → its index in options_.subjects, for subscribers of several subjects each (sequence checks).
  std::unordered_map<std::string_view, uint32_t> subject_index_;
  std::vector<std::unique_ptr<ClientThread>> threads_;
};

}  // namespace starling
