// ClientEngine: the benchmark client (benchsub / benchpub). Many WebSocket client connections per native
// thread, each thread with its own event loop, so the load tools are never the bottleneck. Subscribers
// record the latency of every message (the publisher's timestamp is the first 16 bytes of the payload);
// publishers send at a fixed total rate. TypeScript (bench/) reads counters and histograms in batches.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
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

struct ClientOptions {
  std::vector<ListenAddress> servers;      // connections are spread over them round-robin
  std::vector<std::string> local_addresses;// source addresses, round-robin; empty: the kernel's choice
  std::string path = "/";
  Dialect dialect = Dialect::kStarling;
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
};

// Per-thread statistics, in the order read() writes them (then the Welford fields, then the histogram).
#define STARLING_CLIENT_COUNTERS(X)                                       \
  X(connected, "connections open (handshake done)")                       \
  X(connecting, "connections being set up")                               \
  X(connect_failures, "connections that failed to connect or upgrade")     \
  X(disconnects, "open connections the server closed")                    \
  X(messages_received, "messages received")                               \
  X(bytes_received, "bytes read from sockets")                            \
  X(messages_sent, "messages published")                                  \
  X(bytes_sent, "bytes written to sockets")                               \
  X(send_stalls, "publishes skipped because the socket buffer was full")

enum ClientCounter : unsigned {
#define STARLING_ENUM(name, doc) kc_##name,
  STARLING_CLIENT_COUNTERS(STARLING_ENUM)
#undef STARLING_ENUM
  kClientCounterCount
};

// Doubles per thread in read(): counters, Welford (n, mean, m2, min, max), histogram buckets.
constexpr size_t kClientSlotsPerThread = kClientCounterCount + 5 + kLatencyBuckets;

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
  // Writes slots() doubles: for each thread, its counters, Welford fields and histogram (cumulative).
  void read(double* out) const;

 private:
  ClientOptions options_;
  std::vector<std::unique_ptr<ClientThread>> threads_;
};

}  // namespace starling
