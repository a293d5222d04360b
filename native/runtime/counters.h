// Per-workgroup counters: written only by their workgroup's thread (relaxed load + store, no locked
// instruction), read by the control thread once a second in one batch (Server::read_counters).
#pragma once
#include <atomic>
#include <cstdint>

namespace starling {

// X(name, kind, description). The names are exported to TypeScript in this order.
#define STARLING_WORKGROUP_COUNTERS(X)                                                                     \
  X(connections, gauge, "connections open: WebSocket, HTTP and handshaking (closing ones included)")                   \
  X(accepted, counter, "TCP connections handed to this workgroup")                                         \
  X(closed, counter, "connections closed, for any reason")                                                 \
  X(handshakes, counter, "successful WebSocket upgrades")                                                  \
  X(http_errors, counter, "requests answered with an HTTP error (4xx, 5xx) or timed out")                 \
  X(http_requests, counter, "HTTP transport requests taken: event streams opened, publishes, preflights")    \
  X(sse_streams, counter, "event streams (GET /sse) opened")                                               \
  X(subscriptions, gauge, "subscriptions held by this workgroup's connections")                            \
  X(messages_in, counter, "PUB commands accepted (handed to the subject's home)")                          \
  X(bytes_in, counter, "bytes read from sockets")                                                          \
  X(messages_out, counter, "MSG deliveries queued to subscribers")                                         \
  X(bytes_out, counter, "bytes written to sockets")                                                        \
  X(slow_consumer_closes, counter, "connections cut for refusing more than MaxBacklog for MaxBacklogTime") \
  X(memory_cuts, counter, "connections cut because the server was over its Memory budget")                 \
  X(keepalive_closes, counter, "connections closed for answering no keepalive ping (dead peers)")           \
  X(close_1002, counter, "connections closed with 1002 (protocol error)")                                 \
  X(close_1007, counter, "connections closed with 1007 (invalid UTF-8)")                                  \
  X(close_1009, counter, "connections closed with 1009 (message too big)")                                \
  X(err_bad_command, counter, "ERR bad-command replies")                                                   \
  X(err_bad_subject, counter, "ERR bad-subject replies")                                                   \
  X(err_too_large, counter, "ERR too-large replies")                                                       \
  X(err_limit, counter, "ERR limit replies")                                                               \
  X(err_forbidden, counter, "ERR forbidden replies (a subject the connection's entitlement does not grant, or server-only)") \
  X(err_unavailable, counter, "ERR unavailable replies (ClusterEngine = redis: the engine could not take a publish)") \
  X(publish_pauses, counter, "publishes held (their connection paused) because the home could not take them") \
  X(deliveries_deferred, counter, "deliveries held back because a workgroup's inbox was full")             \
  X(alloc_failures, counter, "allocations refused (out of memory); the client that asked was shed")        \
  X(cached_messages, gauge, "messages in the history caches of the subjects this workgroup is home of")    \
  X(cached_bytes, gauge, "bytes those caches and snapshots keep alive (their messages' SSE renditions included), against this workgroup's share of CacheSize") \
  X(cache_evictions, counter, "cached messages dropped by MaxCachedMessagesPerSubject, CacheExpireTime or CacheSize") \
  X(recoveries, counter, "SUB <subject>@<epoch>:<seq> answered SYNC: every missed message was sent")       \
  X(resyncs, counter, "SUB <subject>@<epoch>:<seq> answered RESYNC: the position could not be recovered")   \
  X(history_requests, counter, "SUB <subject>#<n> answered from the cache")                                \
  X(messages_replayed, counter, "cached messages sent as recovered or history")                            \
  X(snapshots_sent, counter, "retained snapshots sent to new subscribers")                                 \
  X(messages_conflated, counter, "messages not sent to a conflated subscription because a later one replaced them") \
  X(auth_ok, counter, "tokens accepted (AUTH or ?token=): AUTH ok")                                          \
  X(auth_denied, counter, "tokens refused: AUTH invalid")                                                    \
  X(auth_expired, counter, "connections closed (1008) because their token expired without a renewal")      \
  X(auth_waiting, gauge, "connections waiting for the decision on their token")                            \
  X(auth_decisions, counter, "decisions on tokens made by the control plane (one per AUTH that crossed)")  \
  X(auth_wait_ms, counter, "milliseconds connections waited for those decisions, in total (/ auth_decisions: the mean)") \
  X(denied_subscribes, counter, "subjects of SUB refused by entitlement (ERR forbidden), renewals included") \
  X(denied_publishes, counter, "PUB refused by entitlement or PublishAllowFromAddressList (ERR forbidden)")

enum Counter : unsigned {
#define STARLING_ENUM(name, kind, doc) k_##name,
  STARLING_WORKGROUP_COUNTERS(STARLING_ENUM)
#undef STARLING_ENUM
  kCounterCount
};

struct Counters {
  std::atomic<uint64_t> v[kCounterCount];

  Counters() {
    for (auto& x : v) x.store(0, std::memory_order_relaxed);
  }
  // Owner thread only.
  void add(Counter c, uint64_t n = 1) { v[c].store(v[c].load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void set(Counter c, uint64_t n) { v[c].store(n, std::memory_order_relaxed); }
  void sub(Counter c, uint64_t n = 1) { v[c].store(v[c].load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
  // Any thread.
  uint64_t get(Counter c) const { return v[c].load(std::memory_order_relaxed); }
};

}  // namespace starling
