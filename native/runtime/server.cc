#include "runtime/server.h"

#include "runtime/cluster_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <new>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>

#include "io/poller.h"
#include "io/reset.h"
#include "io/uring.h"
#include "pubsub/protocol.h"

namespace starling {

namespace {

// Pending-connection queue of each listening socket; the kernel clamps it to net.core.somaxconn. The
// capacity workloads open tens of thousands of connections in a burst.
constexpr int kListenBacklog = 65535;
// Connections accepted per readiness event before the acceptor wakes the workgroups it fed.
constexpr int kAcceptBatch = 256;
// Descriptors kept free for everything that is not a client connection (listeners, eventfds, epoll fds,
// the monitor port and its MonitorHTTP.MaxConnections, Node's own, log files): the default
// MaxConnections is the open-file limit less this, so clients alone never fill the fd table.
constexpr uint64_t kReservedFds = 256;
// With the fd table full and no spare descriptor to shed a connection, the acceptor stops watching the
// listeners for this long instead of spinning on a readable listener it cannot serve.
constexpr int kAcceptRetryMs = 100;
// With io_uring a full fd table is only a connect burst the workgroups have not installed into their rings
// yet (each accepted descriptor leaves the table within an iteration): the acceptor waits this long, and the
// pending clients wait in the listen queue instead of being refused.
constexpr int kInstallWaitMs = 2;
// The kernel's largest direct-descriptor table (IORING_MAX_FIXED_FILES).
constexpr uint64_t kMaxRingFiles = 1u << 20;

std::string describe(const ListenAddress& a) {
  bool v6 = a.host.find(':') != std::string::npos;
  return (v6 ? "[" + a.host + "]" : a.host) + ":" + std::to_string(a.port);
}

[[noreturn]] void fail_listen(const ListenAddress& a, const char* what, int err) {
  throw std::runtime_error("listen " + describe(a) + ": " + what + ": " + std::strerror(err));
}

int open_listener(const ListenAddress& a, uint16_t* bound_port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(a.port);
  int rc = getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) throw std::runtime_error("listen " + describe(a) + ": cannot resolve host: " + gai_strerror(rc));
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int err = errno;
    freeaddrinfo(res);
    fail_listen(a, "socket", err);
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
    int err = errno;
    freeaddrinfo(res);
    close(fd);
    fail_listen(a, "bind", err);
  }
  freeaddrinfo(res);
  if (listen(fd, kListenBacklog) != 0) {
    int err = errno;
    close(fd);
    fail_listen(a, "listen", err);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *bound_port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

uint64_t epoch_base() {
  // Microseconds since the Unix epoch: every server start (and every re-creation of a subject, which
  // takes the next value) gets an epoch no earlier run has used, unless subjects were created faster
  // than one per microsecond for the whole previous run.
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

}  // namespace

Server::Server(ServerOptions options) : options_(std::move(options)), registry_(options_.workgroups, epoch_base()) {
  if (options_.workgroups < 1 || options_.workgroups > 64) throw std::runtime_error("workgroups must be 1..64");
  if (options_.listen.empty()) throw std::runtime_error("no listen address");
  try {
    for (const ListenAddress& a : options_.listen) {
      uint16_t port = 0;
      listen_fds_.push_back(open_listener(a, &port));
      ports_.push_back(port);
    }
    parse_publish_allow();
    choose_backend();
    if (options_.entitlement != EntitlementMode::kNone) {
      // Basic: anyone may subscribe to anything ("/*" grants every subject); JWT, Custom: nothing.
      std::vector<PermissionEntry> anyone;
      if (options_.entitlement == EntitlementMode::kBasic) anyone.push_back(PermissionEntry{kAccessSubscribe, "/*"});
      std::string problem;
      anonymous_ = Permissions::build(anyone, &problem);
      if (!anonymous_) throw std::bad_alloc();
    }
    for (unsigned i = 0; i < options_.workgroups; i++) workgroups_.emplace_back(new Workgroup(*this, i));
    if (options_.cluster.enabled()) cluster_ = std::make_unique<ClusterLink>(*this);
    acceptor_wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (acceptor_wake_fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  } catch (...) {
    for (int fd : listen_fds_) close(fd);
    if (acceptor_wake_fd_ >= 0) close(acceptor_wake_fd_);
    workgroups_.clear();
    if (anonymous_) anonymous_->unref();
    throw;
  }
}

void Server::choose_backend() {
  if (options_.io != IoChoice::kEpoll) {
    std::string why = io_uring_unavailable();
    if (why.empty()) backend_ = IoBackend::kUring;
    else if (options_.io == IoChoice::kUring) throw std::runtime_error("IoBackend = io_uring: " + why);
    else backend_note_ = "io_uring unavailable: " + why;
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  const uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? kMaxRingFiles : rl.rlim_cur;
  const uint64_t per_table = limit > 2 * kReservedFds ? limit - kReservedFds : limit / 2;
  max_connections_ = options_.max_connections;
  if (backend_ == IoBackend::kUring) {
    // A ring's table may be as large as the limit (the kernel's only check on it): it holds no process descriptor.
    ring_files_ = static_cast<uint32_t>(std::min(limit, kMaxRingFiles));
    if (!max_connections_) max_connections_ = per_table * options_.workgroups;
  } else if (!max_connections_) {
    max_connections_ = per_table;
  }
}

Server::~Server() {
  stop();
  for (int fd : listen_fds_) close(fd);
  if (acceptor_wake_fd_ >= 0) close(acceptor_wake_fd_);
  if (reserve_fd_ >= 0) close(reserve_fd_);
  workgroups_.clear();   // (their brokers borrow anonymous_)
  if (anonymous_) anonymous_->unref();
}

void Server::parse_publish_allow() {
  for (const std::string& entry : options_.publish_allow) {
    Cidr c{};
    const size_t slash = entry.find('/');
    const std::string address = entry.substr(0, slash);
    c.family = address.find(':') == std::string::npos ? AF_INET : AF_INET6;
    const unsigned max_bits = c.family == AF_INET ? 32 : 128;
    c.bits = slash == std::string::npos ? max_bits : static_cast<unsigned>(std::strtoul(entry.c_str() + slash + 1, nullptr, 10));
    if (inet_pton(c.family, address.c_str(), c.bytes) != 1 || c.bits > max_bits)
      throw std::runtime_error("PublishAllowFromAddressList: not an address or network: " + entry);
    publish_allow_.push_back(c);
  }
}

bool Server::may_publish_from(const sockaddr_storage& peer) const {
  if (publish_allow_.empty()) return true;
  int family = peer.ss_family;
  const uint8_t* bytes;
  if (family == AF_INET) {
    bytes = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr);
  } else {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr;
    bytes = a.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) {  // an IPv4 client of a dual-stack listener
      family = AF_INET;
      bytes += 12;
    }
  }
  for (const Cidr& c : publish_allow_) {
    if (c.family != family) continue;
    const unsigned whole = c.bits / 8, rest = c.bits % 8;
    if (std::memcmp(c.bytes, bytes, whole) != 0) continue;
    if (rest && ((c.bytes[whole] ^ bytes[whole]) & static_cast<uint8_t>(0xff << (8 - rest)))) continue;
    return true;
  }
  return false;
}

void Server::set_auth_notify(std::function<bool()> notify) {
  std::lock_guard<std::mutex> lock(auth_lock_);
  auth_notify_ = std::move(notify);
}

void Server::submit_auth(std::vector<AuthRequest>& batch) {
  std::lock_guard<std::mutex> lock(auth_lock_);
  const bool was_empty = auth_requests_.empty();
  hand_over(auth_requests_, batch);
  // Under the lock, so that set_auth_notify(nullptr) is a barrier (a non-blocking queue push: short).
  if ((was_empty || auth_notify_owed_.load(std::memory_order_relaxed)) && auth_notify_)
    auth_notify_owed_.store(!auth_notify_(), std::memory_order_relaxed);
}

void Server::retry_auth_notify() {
  if (!auth_notify_owed_.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(auth_lock_);
  if (auth_notify_owed_.load(std::memory_order_relaxed) && auth_notify_ && !auth_requests_.empty())
    auth_notify_owed_.store(!auth_notify_(), std::memory_order_relaxed);
}

std::vector<AuthRequest> Server::take_auth_requests() {
  std::vector<AuthRequest> out;
  {
    std::lock_guard<std::mutex> lock(auth_lock_);
    out.swap(auth_requests_);
  }
  size_t bytes = 0;  // charged by the workgroups that asked (Workgroup::authenticate)
  for (const AuthRequest& r : out) bytes += r.token.size() + sizeof(AuthRequest);
  mem::release(bytes);
  return out;
}

void Server::decide(std::vector<AuthDecision>& batch) {
  // Grouped by workgroup, so each is woken once and takes its share in one lock. Out of memory on the way, every
  // reference is dropped once: those still in `batch` by the caller, those grouped here below.
  std::vector<std::vector<AuthDecision>> by(workgroup_count());
  try {
    for (AuthDecision& d : batch) {
      if (d.wg < workgroup_count()) by[d.wg].push_back(std::move(d));
      else if (d.perms) d.perms->unref();
      d.perms = nullptr;  // (gone with the move, or dropped)
    }
    batch.clear();
    for (unsigned w = 0; w < workgroup_count(); w++)
      if (!by[w].empty()) workgroups_[w]->push_decisions(by[w]);
  } catch (...) {
    for (auto& group : by)
      for (AuthDecision& d : group)
        if (d.perms) d.perms->unref();
    throw;
  }
}

namespace {

// glibc.malloc.top_pad in GLIBC_TUNABLES (docs/tuning.md, huge pages) makes every thread's heap writable whole, so
// each counts 64 MiB against RLIMIT_DATA: a limit that fits the server without it may not fit it with it.
std::string top_pad_hint() {
  const char* t = getenv("GLIBC_TUNABLES");
  return t && strstr(t, "glibc.malloc.top_pad") ? " GLIBC_TUNABLES sets glibc.malloc.top_pad: each thread's heap "
                                                  "then counts whole against ulimit -d (docs/tuning.md)."
                                                : "";
}

}  // namespace

void Server::start() {
  if (started_) return;
  bool cluster_running = false;
  unsigned running = 0;  // workgroups whose thread runs
  try {
    if (cluster_) {
      cluster_->start();
      cluster_running = true;
    }
    for (; running < workgroups_.size(); running++) {
      int cpu = options_.cpus.empty() ? -1 : options_.cpus[running % options_.cpus.size()];
      workgroups_[running]->start(cpu);
    }
    acceptor_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "starling-accept");
      accept_loop();
    });
  } catch (const std::system_error& e) {
    // A thread could not be made: the process is at a limit on threads or on memory for their stacks. Stop the
    // ones made (nothing was accepted yet) and say which limit to look at, rather than end the process.
    for (unsigned i = 0; i < running; i++) workgroups_[i]->request_stop();
    for (unsigned i = 0; i < running; i++) workgroups_[i]->join();
    if (cluster_running) cluster_->stop();
    throw std::runtime_error("cannot start the server's threads (" + std::to_string(running) + " of " +
                             std::to_string(workgroups_.size() + 1) + " started): " + e.what() +
                             ". The process is at a limit: threads (ulimit -u, a cgroup's pids.max) or memory for "
                             "their stacks (ulimit -d and ulimit -s; systemd LimitDATA=, LimitSTACK=). Raise it, or "
                             "lower Workgroups." + top_pad_hint());
  }
  started_ = true;
}

void Server::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  uint64_t one = 1;
  ssize_t ignored = write(acceptor_wake_fd_, &one, sizeof one);
  (void)ignored;
  acceptor_.join();
  for (int fd : listen_fds_) close(fd);
  listen_fds_.clear();
  for (auto& wg : workgroups_) wg->request_stop();
  for (auto& wg : workgroups_) wg->join();
  if (cluster_) cluster_->stop();
}

void Server::accept_loop() {
  std::unique_ptr<Poller> poller = Poller::create();
  poller->watch_readable(acceptor_wake_fd_, nullptr);
  for (int& fd : listen_fds_) poller->watch_readable(fd, &fd);
  PollEvent events[16];
  while (!stopping_.load(std::memory_order_acquire)) {
    const int paused_ms = backend_ == IoBackend::kUring ? kInstallWaitMs : kAcceptRetryMs;
    int n = poller->wait(events, 16, listening_paused_ ? paused_ms : -1);
    if (listening_paused_) {
      // Try to get the spare back; watch the listeners again either way (the next EMFILE pauses again).
      if (reserve_fd_ < 0) reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
      listening_paused_ = false;
      for (int& fd : listen_fds_) poller->watch_readable(fd, &fd);
      continue;
    }
    uint64_t wake_mask = 0;
    try {
      for (int i = 0; i < n; i++)
        if (events[i].tag) accept_ready(*static_cast<int*>(events[i].tag), &wake_mask, *poller);
    } catch (const std::bad_alloc&) {
      // Nothing here allocates on purpose; if the C++ runtime did and failed, accept on the next event.
    }
    for (; wake_mask; wake_mask &= wake_mask - 1) workgroups_[__builtin_ctzll(wake_mask)]->wake();
  }
}

// Refuses an accepted connection at once: a reset tells the client immediately (no hanging connect).
void Server::refuse(int fd) {
  reset_socket(fd);
  accept_refused_.fetch_add(1, std::memory_order_relaxed);
}

void Server::accept_ready(int listen_fd, uint64_t* wake_mask, Poller& poller) {
  for (int i = 0; i < kAcceptBatch && !listening_paused_; i++) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if ((errno == EMFILE || errno == ENFILE) && backend_ == IoBackend::kUring) {
        // Descriptors accepted and not yet installed in a ring fill the table: wait for the workgroups.
        listening_paused_ = true;
        for (int lfd : listen_fds_) poller.unwatch(lfd);
        return;
      }
      if (errno == EMFILE || errno == ENFILE) {
        // The fd table is full (something besides our clients took the reserve). Free the spare
        // descriptor, take the connection off the queue and reset it, so the client is told at once.
        if (reserve_fd_ >= 0) {
          close(reserve_fd_);
          reserve_fd_ = -1;
          int shed = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (shed >= 0) refuse(shed);
          reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
          if (shed >= 0 && reserve_fd_ >= 0) continue;
        }
        // Another thread took the freed descriptor: no spare. Stop watching the listeners for a while
        // rather than spin on them (the kernel keeps the pending clients in the listen queue).
        listening_paused_ = true;
        for (int lfd : listen_fds_) poller.unwatch(lfd);
        return;
      }
      return;  // EAGAIN, or an error the next readiness event will retry
    }
    if (open_connections_.load(std::memory_order_relaxed) >= static_cast<int64_t>(max_connections_) ||
        (options_.memory && mem::total(workgroup_count()) > static_cast<int64_t>(options_.memory))) {
      refuse(fd);  // MaxConnections, or over the Memory budget
      continue;
    }
    int one = 1;
    // Starling coalesces its own writes per loop iteration; Nagle would only add delay.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (options_.send_buffer > 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options_.send_buffer, sizeof options_.send_buffer);
    if (options_.receive_buffer > 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options_.receive_buffer, sizeof options_.receive_buffer);
    unsigned w = pick_workgroup(peer);
    if (!workgroups_[w]->push_conn(fd, !may_publish_from(peer))) {
      refuse(fd);
      continue;
    }
    open_connections_.fetch_add(1, std::memory_order_relaxed);
    *wake_mask |= uint64_t{1} << w;
  }
}

unsigned Server::pick_workgroup(const sockaddr_storage& peer) {
  unsigned n = workgroup_count();
  if (options_.benchmark_mode) return round_robin_++ % n;
  // Client-IP hash: all connections from one address share a workgroup (FNV-1a over the address).
  const uint8_t* p;
  size_t len;
  if (peer.ss_family == AF_INET6) {
    p = reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr.s6_addr;
    len = 16;
  } else {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr.s_addr);
    len = 4;
  }
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 16777619u;
  return h % n;
}

Server::Published Server::publish(std::string_view subject, const uint8_t* payload, size_t len, bool binary) {
  if (!valid_subject(subject)) return Published::kBadSubject;
  if (cluster_ && subject.compare(0, kReservedPrefix.size(), kReservedPrefix) != 0) return publish_engine(subject, payload, len, binary);
  // With the cache on the message is kept for later subscribers (a subject created here gets a home by its
  // name's hash); without, nobody subscribing means nowhere to go.
  Subject* s;
  try {
    s = options_.cache_size ? registry_.find_or_create_ref(subject, hash_subject(subject) % workgroup_count())
                            : registry_.find_ref(subject);
  } catch (const std::bad_alloc&) {
    return Published::kOverflow;
  }
  if (!s) return Published::kNoSubscribers;
  const bool had_subscribers = s->interest.load(std::memory_order_relaxed) != 0;
  Frame* f = publish_frame(subject, payload, len, binary ? kOpBinary : kOpText);
  if (!f) {
    registry_.forget_if_idle(s);
    s->unref();
    return Published::kOverflow;
  }
  Workgroup& home = *workgroups_[s->home];
  std::lock_guard<std::mutex> guard(control_lock_);
  if (!home.push_publish(producer_control(), s, f)) {
    registry_.forget_if_idle(s);
    s->unref();
    f->unref();
    return Published::kOverflow;
  }
  home.wake();
  // Routed to the home either way; the answer says whether anyone subscribes now (with the cache on, a
  // message nobody subscribes to is still kept for history and recovery).
  return had_subscribers ? Published::kRouted : Published::kNoSubscribers;
}

size_t Server::counter_slots() const {
#define STARLING_COUNT(name, kind, doc) +1
  return workgroups_.size() * kCounterCount + (0 STARLING_SERVER_COUNTERS(STARLING_COUNT));
#undef STARLING_COUNT
}

void Server::read_counters(double* out) const {
  size_t k = 0;
  for (const auto& wg : workgroups_)
    for (unsigned c = 0; c < kCounterCount; c++) out[k++] = static_cast<double>(wg->counters().get(static_cast<Counter>(c)));
  out[k++] = static_cast<double>(registry_.size());
  out[k++] = static_cast<double>(accept_refused_.load(std::memory_order_relaxed));
  out[k++] = static_cast<double>(mem::total(workgroup_count()));
  // The cluster counters (STARLING_SERVER_COUNTERS, the link's order): zero without a cluster.
  if (cluster_) cluster_->read_counters(out + k);
  else for (int i = 0; i < 7; i++) out[k + i] = 0;
}

// A cluster subject's message goes to the engine, like a client's (the link's ring of the control thread); the
// nodes that follow the subject deliver it.
Server::Published Server::publish_engine(std::string_view subject, const uint8_t* payload, size_t len, bool binary) {
  if (!cluster_->up()) return Published::kUnavailable;
  Subject* s;
  try {
    s = registry_.find_or_create_ref(subject, hash_subject(subject) % workgroup_count());
  } catch (const std::bad_alloc&) {
    return Published::kOverflow;
  }
  Frame* f = publish_frame(subject, payload, len, binary ? kOpBinary : kOpText);
  if (!f) {
    registry_.forget_if_idle(s);
    s->unref();
    return Published::kOverflow;
  }
  std::lock_guard<std::mutex> guard(control_lock_);
  if (!cluster_->push(workgroup_count(), EngineOp{EngineOp::kPublish, static_cast<uint8_t>(workgroup_count()), s, f, 0})) {
    registry_.forget_if_idle(s);
    s->unref();
    f->unref();
    return Published::kOverflow;
  }
  cluster_->wake();
  return Published::kRouted;
}

ClusterStatus Server::cluster_status() const { return cluster_ ? cluster_->status() : ClusterStatus{}; }

}  // namespace starling
