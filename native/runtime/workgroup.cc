#include "runtime/workgroup.h"

#include "runtime/cluster_link.h"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "io/reset.h"
#include "runtime/server.h"
#include "transport/http_upgrade.h"

namespace starling {

namespace {

// How often time-based work runs (slow-consumer deadlines, lingering closes) when the loop is idle.
constexpr int kTickMs = 250;
// Iterations the stopping loop waits for the kernel to confirm closes (io_uring), each up to kTickMs.
constexpr int kFinalCloseIterations = 8;
// Handshake timeouts and keepalive advance in passes over every connection, one a second: a pass over a
// million connections costs a few milliseconds, and one second is the resolution of both settings.
constexpr uint64_t kPassMs = 1000;
// A pass is done in this many slices spread over its second, each over its share of the connections: the pings
// of a keepalive round then leave in small bursts. In one burst (~22,000 pings a second per workgroup at a
// million connections and KeepAlive 30; 3,300 at 15,000 and KeepAlive 3) they and their pongs held every other
// delivery up to 100-450 ms behind them. (A connection added or removed between two slices may move it from
// one slice to another: it is then visited twice in a pass, or not at all, which keepalive's tolerance, from
// half the interval to all of it, absorbs.)
constexpr unsigned kPassSlices = 25;
constexpr uint64_t kSliceMs = kPassMs / kPassSlices;
// How long the loop sleeps while a publish is held or a delivery deferred: the ring that is full belongs
// to another thread, which does not tell us when it drains, so we look again soon.
constexpr int kBackpressurePollMs = 1;
// Ring capacities (envelopes). Publish rings: how far a publisher's workgroup may run ahead of a
// subject's home before its publishers are paused (64 Ki is ~1 s of the W1 rate). Delivery rings: how
// far a home may run ahead of a subscriber workgroup before it defers (and stops taking publishes).
// Untouched slots cost no resident memory. The accept ring takes one accept burst of the capacity
// workloads.
constexpr uint32_t kPublishRing = 64 * 1024;
constexpr uint32_t kDeliverRing = 64 * 1024;
constexpr uint32_t kAcceptRing = 16 * 1024;
// Memory given back to the system (malloc_trim) once the accounted bytes fell this far below their high
// point, or to half of it: after a flood ends the heap shrinks instead of keeping its peak (defect: 1.1 GB
// kept). The half rule matters when the history cache keeps part of the account resident: a 40 MB flood over
// an 8 MB cache falls by less than 32 MiB.
constexpr uint64_t kTrimAfterBytes = 32ull << 20;
// A SUB storm leaves memory in malloc's free lists too, which the account does not see (MaxConnections and
// MaxSubscriptionsPerConnection bound it): the lists of connections with many subscriptions, the subject index's
// tables, the commands' input. Given back once a workgroup's subscriptions fell this far below their high point:
// 2 × 200,000 subscriptions dropped had left ~33 MB there (test/32.core-defects.test.ts).
constexpr uint64_t kTrimAfterSubscriptions = 100'000;
// Connections cut per enforce_memory() call at most: enough to shed a flood in one go (each cut frees its
// whole backlog), few enough that a workgroup holding none of the excess does not stall on it.
constexpr int kMaxCutsPerCall = 64;
// A backlog smaller than this is never cut for the budget: a reader that keeps up holds at most a few
// messages between two flushes, and cutting it would not free memory worth the loss. (The excess sits with
// the clients that do not read; the slow-consumer rule and refused connections cover the rest.)
constexpr uint64_t kMinMemoryCut = 256 * 1024;
// Once over the budget, cut until the account is this fraction (1/8) below it, so that a flood that keeps
// coming is not shed one connection at a time right at the edge (each cut costs a pass over the backlogs).
constexpr uint64_t kCutBelowFraction = 8;

uint64_t monotonic_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

}  // namespace

// One client connection: its transport endpoint, its WebSocket session and its subscriptions, in one
// allocation. An idle subscribed connection is this struct (72 bytes) and the subject's list entry.
struct Conn : Stream, Subscriber, WsSession {
  uint32_t index = 0;        // in Workgroup::conns_
  uint32_t auth_id = 0;      // in Workgroup::awaiting_: paused until the decision on its token (0: none)
  bool backlogged = false;   // in Workgroup::backlogged_: paused until its backlog is under MaxBacklog
};

static Conn* conn_of(Stream* s) { return static_cast<Conn*>(s); }
static Conn* conn_of(WsSession* s) { return static_cast<Conn*>(s); }
static Conn* conn_of(Subscriber* s) { return static_cast<Conn*>(s); }

Workgroup::Workgroup(Server& server, unsigned index)
    : server_(server),
      index_(index),
      engine_(SessionOptions{server.options().path, server.options().allow_origins, server.options().sse_retry_ms,
                             server.options().max_message, server.options().max_subscriptions,
                             server.options().entitlement != EntitlementMode::kNone}),
      accept_ring_(kAcceptRing) {
  const ServerOptions& o = server.options();
  loop_ = Loop::create(*this, LoopOptions{o.max_backlog, o.max_backlog_ms, server.backend(), server.ring_files()});
  // Each workgroup caches the subjects it is home of within an equal share of CacheSize.
  CacheOptions cache{o.max_cached_messages, o.cache_expire_ms, o.cache_size / server.workgroup_count()};
  EntitlementOptions entitlement{o.entitlement != EntitlementMode::kNone, server.anonymous(), o.renew_before_s};
  broker_ = std::make_unique<Broker>(server.registry(), index,
                                     BrokerOptions{o.max_message, o.max_subscriptions, o.max_backlog, cache, entitlement,
                                                   o.cluster.enabled(), o.cluster.guaranteed},
                                     *this, counters_);
  unsigned n = server.workgroup_count();
  for (unsigned p = 0; p <= n; p++)  // n: the control thread (Server::publish)
    publish_.emplace_back(p == index ? nullptr : new SpscRing<Envelope>(kPublishRing));
  if (o.cluster.enabled())  // n + 1: the cluster link (Server::producer_cluster)
    publish_.emplace_back(new SpscRing<Envelope>(kPublishRing));
  for (unsigned p = 0; p < n; p++) deliver_.emplace_back(p == index ? nullptr : new SpscRing<Envelope>(kDeliverRing));
}

Workgroup::~Workgroup() {
  join();
  // Drop whatever is still in the rings (only after a failed start or an abrupt stop).
  Envelope e;
  while (accept_ring_.pop(&e)) ::close(e.fd);
  for (auto* rings : {&publish_, &deliver_})
    for (auto& ring : *rings)
      while (ring && ring->pop(&e)) {
        if (e.subject) e.subject->unref();
        if (e.frame) e.frame->unref();
        if (e.request) {
          if (e.request->answer) e.request->answer->unref();
          delete e.request;
        }
        delete e.sync;
      }
  for (AuthDecision& d : decisions_)
    if (d.perms) d.perms->unref();
  broker_.reset();
}

void Workgroup::push_decisions(std::vector<AuthDecision>& batch) {
  {
    std::lock_guard<std::mutex> lock(decisions_lock_);
    hand_over(decisions_, batch);  // (a failed allocation leaves every decision, and its reference, with the caller)
    decisions_pending_.store(true, std::memory_order_release);
  }
  wake();
}

void Workgroup::start(int cpu) {
  thread_ = std::thread([this, cpu] {
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    std::string name = "starling-wg" + std::to_string(index_);
    pthread_setname_np(pthread_self(), name.c_str());
    mem::bind_thread(index_);
    run();
  });
}

void Workgroup::request_stop() {
  stop_requested_.store(true, std::memory_order_release);
  loop_->wake();
}

void Workgroup::join() {
  if (thread_.joinable()) thread_.join();
}

void Workgroup::wake() {
  if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  loop_->wake();
}

// ---------------------------------------------------------------------------------------------------
// The loop

void Workgroup::run() {
  uint64_t next_tick = 0;
  uint64_t next_slice = monotonic_ms() + kSliceMs;
  for (;;) {
    bool backpressure = broker_->held_publishes() || !broker_->accepting();
    try {
      int timeout = backpressure ? kBackpressurePollMs : kTickMs;
      // (Asked now, not after the flush: a flush stride may have taken deliveries that started a conflation.)
      int due = broker_->conflation_wait();
      if (due >= 0 && due < timeout) timeout = due;
      for (Conn* c : backlogged_)
        if (!over_backlog(c)) timeout = 0;  // drained by the last flush: take its next commands now
      const uint64_t until_slice = next_slice > now_ms_ ? next_slice - now_ms_ : 0;
      if (until_slice < static_cast<uint64_t>(timeout)) timeout = static_cast<int>(until_slice);
      loop_->wait(timeout);
      now_ms_ = monotonic_ms();
      loop_->set_now(now_ms_);
      broker_->set_now(now_ms_);
      drain_inbox();
      // (Not in drain_inbox: a decision resumes its connection, whose commands must not run inside a flush.)
      if (decisions_pending_.load(std::memory_order_acquire)) apply_decisions();
      broker_->retry();
      broker_->flush_conflated();
      enforce_memory();
      if (index_ == 0) note_memory_peak();
      subs_high_ = std::max(subs_high_, counters_.get(k_subscriptions));  // a storm shorter than a pass counts too
      if (now_ms_ >= next_tick) {
        loop_->tick(now_ms_);
        next_tick = now_ms_ + kTickMs;
      }
      if (now_ms_ >= next_slice) {
        pass_slice();
        next_slice = now_ms_ + kSliceMs;
      }
      if (!backlogged_.empty()) resume_drained();  // (their backlogs as the last writes left them)
      if (!auth_out_.empty()) server_.submit_auth(auth_out_);  // this iteration's tokens, in one batch
      loop_->flush();
    } catch (const std::bad_alloc&) {
      // The last line of defence: a container of the broker (a held publish, a name index) could not grow.
      // The loop's own bookkeeping never allocates here (reserved at adopt); count it and go on with the
      // next iteration (DESIGN.md rule 3: never abort on allocation failure).
      counters_.add(k_alloc_failures);
    }
    counters_.set(k_bytes_out, loop_->bytes_written());
    wake_peers();
    if (stop_requested_.load(std::memory_order_acquire) && !draining_) begin_shutdown();
    if (draining_ && (loop_->size() == 0 || now_ms_ >= drain_deadline_)) break;
  }
  // Whatever did not close in time is reset.
  for (Conn* c : conns_) engine_.abort(c, *this, kCloseGoingAway);
  loop_->flush();
  // (io_uring: a connection is let go of once the kernel confirmed its close, a few iterations at most.)
  for (int i = 0; loop_->size() && i < kFinalCloseIterations; i++) {
    loop_->wait(kTickMs);
    loop_->flush();
  }
}

void Workgroup::wake_peers() {
  for (uint64_t mask = wake_mask_; mask; mask &= mask - 1) server_.workgroup(__builtin_ctzll(mask)).wake();
  wake_mask_ = 0;
  if (wake_engine_) server_.cluster()->wake();
  wake_engine_ = false;
}

void Workgroup::on_wake() { wake_pending_.store(false, std::memory_order_seq_cst); }

void Workgroup::on_flush_stride() {
  // A long flush (a broadcast to thousands) outlasts the gap between messages: take in what arrived
  // meanwhile, so connections not yet written leave with several messages in one send.
  try {
    drain_inbox();
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);  // what is left in the rings is taken at the next iteration
  }
  wake_peers();
}

void Workgroup::drain_inbox() {
  Envelope e;
  while (accept_ring_.pop(&e)) {
    if (draining_) {
      ::close(e.fd);
      server_.connection_closed();
    } else {
      adopt(e.fd, e.may_not_publish);
    }
  }
  // Deliveries first and always: queuing to a local connection never waits, so homes that deferred
  // deliveries to us can go on (broker.h: no cycle).
  for (auto& ring : deliver_) {
    if (!ring) continue;
    while (ring->pop(&e)) {
      if (e.request) {
        broker_->on_answer(e.subject, e.request);
        continue;
      }
      broker_->on_deliver(e.subject, e.frame);
      e.subject->unref();
      e.frame->unref();
    }
  }
  // Publishes only while we can fan them out; otherwise they wait in their rings and their publishers
  // are paused when the rings fill.
  for (auto& ring : publish_) {
    if (!ring) continue;
    while (broker_->accepting() && ring->pop(&e)) {
      switch (e.kind) {
        case Envelope::kNumbered: broker_->on_numbered(e.subject, e.frame, e.seq); break;
        case Envelope::kSync: broker_->on_sync(e.subject, e.sync); break;
        case Envelope::kAnswer: broker_->on_engine_answer(e.seq, static_cast<EngineAnswer>(e.code)); break;
        case Envelope::kPlain:
          if (e.request) broker_->on_request(e.subject, e.request);
          else broker_->on_publish(e.subject, e.frame);
          break;
      }
    }
  }
}

void Workgroup::pass_slice() {
  unsigned keepalive = server_.options().keepalive_s;
  const bool entitled = server_.options().entitlement != EntitlementMode::kNone;
  const uint64_t now_s = static_cast<uint64_t>(time(nullptr));
  const size_t n = conns_.size();
  // (By index: a connection that fails below may leave conns_ at once, the last one taking its place.)
  for (size_t i = n * slice_ / kPassSlices, end = n * (slice_ + 1) / kPassSlices; i < end && i < conns_.size(); i++) {
    Conn* c = conns_[i];
    if (WsEngine::handshake_expired(c)) {
      counters_.add(k_http_errors);
      engine_.fail(c, *this, 0);
      continue;
    }
    if (entitled && WsEngine::subscribed(c)) {
      bool expired = false;
      shed_on_failure(c, [&] { expired = broker_->check_expiry(c, now_s) == Broker::Expiry::kExpired; });
      if (expired) {
        engine_.fail(c, *this, kClosePolicy);  // after "AUTH expired", queued ahead of the close frame
        continue;
      }
    } else if (entitled) {
      // An HTTP connection's requests: its token's expiry is checked when a request presents the token again
      // (on_identity), and it is never closed for it; only its count of token decisions restarts.
      broker_->new_pass(c);
    }
    // (A connection waiting for the decision on its token is not read, so its pongs are not seen: its silence
    // is ours, not a dead peer's.)
    if (keepalive && !c->auth_id && engine_.keepalive_pass(c, *this, keepalive) == WsEngine::Keepalive::kDead) {
      counters_.add(k_keepalive_closes);
      engine_.abort(c, *this, kCloseGoingAway);
    }
  }
  if (++slice_ < kPassSlices) return;
  // The pass is complete: once a second.
  slice_ = 0;
  broker_->pass();  // expired cache entries
  mem::arena::collect();  // blocks other workgroups freed into this one's heap; idle memory back after a flood
  server_.retry_auth_notify();  // (a call to the control plane that could not be queued: out of memory)
  // A client that hung up while its token is being decided is gone: its wait (up to the authorize hook's
  // timeout) would hold a connection slot for nobody. (A reset is seen at once by the loop; a FIN only here,
  // since a paused stream's input, the FIN included, is otherwise handled at resume.) Its commands after the
  // AUTH are not carried out.
  if (!awaiting_.empty()) {
    std::vector<Conn*> gone;
    for (const auto& [id, w] : awaiting_)
      if (loop_->peer_closed(w.conn)) gone.push_back(w.conn);
    for (Conn* c : gone) engine_.abort(c, *this, 0);
  }
  // Give memory back after a SUB storm (any workgroup: malloc_trim covers every arena).
  const uint64_t subs = counters_.get(k_subscriptions);
  if (subs_high_ - subs >= kTrimAfterSubscriptions) {
    malloc_trim(0);
    subs_high_ = subs;
  }
  // Give memory back after a flood (one workgroup does it for the process: malloc_trim covers every arena).
  if (index_ == 0) {
    uint64_t total = static_cast<uint64_t>(std::max<int64_t>(0, mem::total(server_.workgroup_count())));
    if (total > high_water_) high_water_ = total;
    uint64_t fell = high_water_ - total;
    if (fell >= kTrimAfterBytes || (fell > 0 && total <= high_water_ / 2 && fell >= kTrimAfterBytes / 8)) {
      malloc_trim(0);
      high_water_ = trimmed_at_ = total;
    }
  }
}

void Workgroup::note_memory_peak() {
  // Every iteration, not only in the pass: a flood that rises and is shed within one second would otherwise
  // leave no high point for the pass to compare with, and its memory would never be given back.
  const int64_t total = mem::total(server_.workgroup_count());
  if (total > 0 && static_cast<uint64_t>(total) > high_water_) high_water_ = static_cast<uint64_t>(total);
}

bool Workgroup::over_budget() const {
  uint64_t budget = server_.options().memory;
  return budget && mem::total(server_.workgroup_count()) > static_cast<int64_t>(budget);
}

void Workgroup::enforce_memory() {
  // Over the budget: cut this workgroup's largest backlogs until the account is an eighth under it (an abort
  // frees the queue at once) — a bounded number per call, so a workgroup holding little cannot spin while
  // another holds the excess. New connections are refused by the acceptor meanwhile.
  if (!over_budget()) return;
  uint64_t budget = server_.options().memory;
  int64_t target = static_cast<int64_t>(budget - budget / kCutBelowFraction);
  for (int i = 0; i < kMaxCutsPerCall && mem::total(server_.workgroup_count()) > target; i++) {
    Stream* s = loop_->largest_backlog();
    if (!s || loop_->backlog(s) < kMinMemoryCut) return;
    counters_.add(k_memory_cuts);
    engine_.abort(conn_of(s), *this, kClosePolicy);
  }
}

void Workgroup::begin_shutdown() {
  draining_ = true;
  drain_deadline_ = now_ms_ + Server::kShutdownGraceMs;
  for (Conn* c : conns_) engine_.fail(c, *this, kCloseGoingAway);
  loop_->flush();
}

void Workgroup::adopt(int fd, bool may_not_publish) {
  Conn* c = new (std::nothrow) Conn();
  if (!c) {
    counters_.add(k_alloc_failures);
    reset_socket(fd);
    server_.connection_closed();
    return;
  }
  counters_.add(k_accepted);
  try {
    conns_.push_back(c);
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);
    ::close(fd);
    server_.connection_closed();
    delete c;
    return;
  }
  if (!loop_->adopt(c, fd)) {  // closes fd
    conns_.pop_back();
    counters_.add(k_alloc_failures);
    server_.connection_closed();
    delete c;
    return;
  }
  mem::charge(sizeof(Conn) + mem::kMallocOverhead);
  counters_.add(k_connections);
  c->index = static_cast<uint32_t>(conns_.size() - 1);
  if (may_not_publish) c->entitle |= kEntitleAddressMayNotPublish;
}

// ---------------------------------------------------------------------------------------------------
// Events from the loop

// Loop callbacks must not throw (the loop is iterating its lists): an allocation the C++ runtime could not make
// while handling one connection's input sheds that connection — it asked for the memory — and nothing else.
template <typename F>
void Workgroup::shed_on_failure(Conn* c, F&& handle) {
  try {
    handle();
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);
    loop_->close(c, CloseMode::kAbort);
  }
}

void Workgroup::on_data(Stream* s, uint8_t* data, size_t len) {
  counters_.add(k_bytes_in, len);
  shed_on_failure(conn_of(s), [&] { engine_.feed(conn_of(s), *this, data, len); });
  // A client whose input made it hold output (replies it does not read) may have pushed the server over
  // its budget within this one read: check now, not only once per loop iteration (a read of 64 KiB of
  // pings queues ~500 KB of pongs).
  if (loop_->backlog(s) > 0 && over_budget()) enforce_memory();
}

void Workgroup::on_hangup(Stream* s) {
  shed_on_failure(conn_of(s), [&] { engine_.hangup(conn_of(s), *this); });
}

void Workgroup::on_slow(Stream* s) {
  // Its socket refused more than MaxBacklog for MaxBacklogTime (or 4 x MaxBacklog at once): reset it,
  // so the kernel frees what it holds too. A close frame could not reach it anyway.
  counters_.add(k_slow_consumer_closes);
  engine_.abort(conn_of(s), *this, kClosePolicy);
}

void Workgroup::on_closed(Stream* s) {
  Conn* c = conn_of(s);
  if (c->backlogged) {
    auto it = std::find(backlogged_.begin(), backlogged_.end(), c);
    *it = backlogged_.back();
    backlogged_.pop_back();
  }
  broker_->on_leave(c);   // (already done when the session left kOpen; closes by the loop land here)
  if (c->auth_id) {       // its decision, when it comes, finds nobody
    awaiting_.erase(c->auth_id);
    counters_.sub(k_auth_waiting);
  }
  engine_.release(c);
  Conn* last = conns_.back();
  conns_[c->index] = last;
  last->index = c->index;
  conns_.pop_back();
  counters_.sub(k_connections);
  counters_.add(k_closed);
  server_.connection_closed();
  mem::release(sizeof(Conn) + mem::kMallocOverhead);
  delete c;
}

// ---------------------------------------------------------------------------------------------------
// The session's environment

bool Workgroup::send(WsSession* s, Frame* f) { return loop_->send(conn_of(s), f); }

void Workgroup::close(WsSession* s, CloseMode mode) { loop_->close(conn_of(s), mode); }

Verdict Workgroup::on_open(WsSession* s, std::string_view token) {
  counters_.add(s->ws_state == WsState::kSse ? k_sse_streams : k_handshakes);
  if (token.empty()) return Verdict::kContinue;
  // "?token=": as if the connection's first command were "AUTH <token>" (its answer is the first message).
  Conn* c = conn_of(s);
  std::string decoded(token.size(), '\0');  // (decoding never lengthens; the head is at most kMaxRequestHead)
  const long n = percent_decode(token, decoded.data(), decoded.size());
  bool printable = n > 0;
  for (long k = 0; printable && k < n; k++) printable = decoded[k] > ' ' && decoded[k] <= '~';
  if (!printable) {
    broker_->decided(c, nullptr, 0, "malformed token parameter: percent-encoded printable ASCII without spaces expected");
    return Verdict::kContinue;
  }
  if (broker_->authenticate(c, std::string_view(decoded.data(), static_cast<size_t>(n)))) return Verdict::kContinue;
  loop_->pause(c);
  return Verdict::kPause;
}

Verdict Workgroup::on_identity(WsSession* s, std::string_view token, bool in_force) {
  Conn* c = conn_of(s);
  if (token.empty()) {
    broker_->forget_token(c);
    return Verdict::kContinue;
  }
  if (in_force && !broker_->token_expired(c, static_cast<uint64_t>(time(nullptr)))) return Verdict::kContinue;
  // A new token, or the one in force presented after its expiry (decided again: the answer says why it is refused).
  if (broker_->authenticate(c, token)) return Verdict::kContinue;  // (answered at once: too many)
  loop_->pause(c);
  return Verdict::kPause;
}

void Workgroup::authenticate(Subscriber* sub, std::string_view token) {
  Conn* c = conn_of(sub);
  if (++next_auth_id_ == 0) ++next_auth_id_;  // 0 means "none"
  char address[64];
  loop_->peer_address(c, address, sizeof address);
  auth_out_.push_back(AuthRequest{index_, next_auth_id_, std::string(token), std::string(address)});
  mem::charge(token.size() + sizeof(AuthRequest));   // released when the control thread takes it
  awaiting_.emplace(next_auth_id_, Waiting{c, now_ms_});
  c->auth_id = next_auth_id_;
  counters_.add(k_auth_waiting);
}

void Workgroup::apply_decisions() {
  std::vector<AuthDecision> batch;
  {
    std::lock_guard<std::mutex> lock(decisions_lock_);
    batch.swap(decisions_);
    decisions_pending_.store(false, std::memory_order_relaxed);
  }
  for (AuthDecision& d : batch) {
    auto it = awaiting_.find(d.id);
    if (it == awaiting_.end()) {  // the connection left meanwhile
      if (d.perms) d.perms->unref();
      continue;
    }
    Conn* c = it->second.conn;
    counters_.add(k_auth_decisions);
    counters_.add(k_auth_wait_ms, now_ms_ - it->second.since_ms);
    counters_.sub(k_auth_waiting);
    awaiting_.erase(it);
    c->auth_id = 0;
    if (!WsEngine::takes_decisions(c)) {
      if (d.perms) d.perms->unref();
      continue;
    }
    shed_on_failure(c, [&] { broker_->decided(c, d.perms, d.expiry, d.detail); });
    resume(c);
  }
}

Verdict Workgroup::on_message(WsSession* s, uint8_t opcode, uint8_t* p, size_t len) {
  Conn* c = conn_of(s);
  c->ack_numbered = !s->websocket();
  return after_command(c, broker_->on_command(c, opcode, p, len));
}

Verdict Workgroup::on_fetch(WsSession* s, std::string_view spec) {
  Conn* c = conn_of(s);
  return after_command(c, broker_->fetch(c, parse_spec(spec)));
}

Verdict Workgroup::after_command(Conn* c, bool go_on) {
  if (!go_on) {
    loop_->pause(c);   // its publish is held, or it waits for answers: the broker resumes it
    return Verdict::kPause;
  }
  if (over_backlog(c)) {  // its replies back up: its next command waits until they drain
    hold_for_backlog(c);
    return Verdict::kPause;
  }
  return Verdict::kContinue;
}

bool Workgroup::over_backlog(Conn* c) const { return loop_->backlog(c) > server_.options().max_backlog; }

bool Workgroup::hold_for_backlog(Conn* c) {
  loop_->pause(c);
  if (c->backlogged) return true;
  try {
    backlogged_.push_back(c);
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);  // cannot be resumed later: shed it (DESIGN.md rule 3)
    loop_->close(c, CloseMode::kAbort);
    return false;
  }
  c->backlogged = true;
  return true;
}

void Workgroup::resume_drained() {
  // Downwards: resume() may hold a connection again, at the back.
  for (size_t i = backlogged_.size(); i-- > 0;) {
    Conn* c = backlogged_[i];
    if (over_backlog(c)) continue;
    c->backlogged = false;
    backlogged_[i] = backlogged_.back();
    backlogged_.pop_back();
    resume(c);
  }
}

void Workgroup::on_leave(WsSession* s, uint16_t code) {
  if (code == kCloseProtocol) counters_.add(k_close_1002);
  else if (code == kCloseInvalidData) counters_.add(k_close_1007);
  else if (code == kCloseTooBig) counters_.add(k_close_1009);
  broker_->on_leave(conn_of(s));
}

void Workgroup::on_http_error(WsSession*) { counters_.add(k_http_errors); }

void Workgroup::on_http_request(WsSession*) { counters_.add(k_http_requests); }

void Workgroup::on_nomem(WsSession*) { counters_.add(k_alloc_failures); }

void Workgroup::on_alloc_failure(Stream*) { counters_.add(k_alloc_failures); }  // (the loop aborts the stream)

// ---------------------------------------------------------------------------------------------------
// The broker's environment

bool Workgroup::post_publish(unsigned home, Subject* s, Frame* f) {
  if (!server_.workgroup(home).push_publish(index_, s, f)) return false;
  wake_mask_ |= uint64_t{1} << home;
  return true;
}

bool Workgroup::post_deliver(unsigned w, Subject* s, Frame* f) {
  if (!server_.workgroup(w).push_deliver(index_, s, f)) return false;
  wake_mask_ |= uint64_t{1} << w;
  return true;
}

bool Workgroup::post_request(unsigned home, Subject* s, Request* r) {
  if (!server_.workgroup(home).push_publish(index_, s, nullptr, r)) return false;
  wake_mask_ |= uint64_t{1} << home;
  return true;
}

bool Workgroup::post_engine(const EngineOp& op) {
  if (!server_.cluster()->push(index_, op)) return false;
  wake_engine_ = true;
  return true;
}

bool Workgroup::engine_up() const { return server_.cluster()->up(); }

void Workgroup::engine_refused() { server_.cluster()->count_refused(); }

bool Workgroup::post_answer(unsigned w, Subject* s, Request* r) {
  if (!server_.workgroup(w).push_deliver(index_, s, nullptr, r)) return false;
  wake_mask_ |= uint64_t{1} << w;
  return true;
}

void Workgroup::send(Subscriber* sub, Frame* f) {
  Conn* c = conn_of(sub);
  if (f && !c->websocket()) return engine_.deliver(c, *this, f);  // rendered for its HTTP transport
  if (f && loop_->send(c, f)) return;
  if (!f || c->ws_state == WsState::kOpen) counters_.add(k_alloc_failures);
  // Reset it. Safe while the broker walks a subscriber list that includes c: the loop only marks it, and its
  // subscriptions are dropped in on_closed, after this iteration's flush.
  loop_->close(c, CloseMode::kAbort);
}

void Workgroup::resume(Subscriber* sub) {
  Conn* c = conn_of(sub);
  if (over_backlog(c)) {  // resumed by resume_drained() once its replies drained
    hold_for_backlog(c);
    return;
  }
  loop_->resume(c);
  shed_on_failure(c, [&] { engine_.resume(c, *this); });
}

}  // namespace starling
