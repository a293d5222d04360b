// The cluster's configuration and state as the native side sees them (ClusterEngine = redis; docs/cluster.md).
// Validation happens in TypeScript (src/config); these are plain copies.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace starling {

// One entry of ClusterRedis: redis://[user[:password]@]host[:port][/db].
struct RedisAddress {
  std::string host;       // a name or a numeric address, resolved by the link each time it connects
  uint16_t port = 6379;
  std::string user;       // "" with a password: AUTH <password> (Redis < 6 style, the default user)
  std::string password;   // "": no AUTH
  uint32_t db = 0;        // SELECT <db> when not 0
};

struct ClusterOptions {
  // ClusterRedis, tried in order until one answers as a primary; empty: ClusterEngine = none.
  std::vector<RedisAddress> redis;
  // ClusterDeliveryMode = Guaranteed: a PUB with an id is acknowledged once Redis has stored it (Standard: once
  // this node has accepted it).
  bool guaranteed = false;
  std::string node;       // ClusterNodeName: named to Redis (CLIENT SETNAME) and in the monitor
  bool enabled() const { return !redis.empty(); }
};

// What the monitor shows of the link (Server::cluster_status).
enum class ClusterState : uint8_t {
  kOff = 0,         // ClusterEngine = none
  kConnecting = 1,  // first connection not made yet
  kUp = 2,          // connected: publishes are taken
  kDown = 3,        // lost or refused: publishes are refused with ERR unavailable until it is back
};

struct ClusterStatus {
  ClusterState state = ClusterState::kOff;
  std::string redis;    // the server in use (host:port), or last tried
  std::string detail;   // why it is not up ("" when up or off), in words for an operator
  std::string error;    // the last error Redis answered to a publish while up (e.g. OOM), "" if none
};

}  // namespace starling
