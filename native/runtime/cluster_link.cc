// The cluster link's thread: see cluster_link.h.
#include "runtime/cluster_link.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "runtime/server.h"

#include "cluster/engine_format.h"

namespace starling {

namespace {

// Each producer's ring into the link (envelopes): like a workgroup's publish ring, about a second of the W1 rate.
constexpr uint32_t kInboxRing = 64 * 1024;
// Commands sent to Redis and not answered yet, at most: past it the link takes no more publishes from the
// workgroups (their rings fill, they hold publishes and pause the publishers). 64 Ki is over a second of the
// W1 publish rate in flight; Redis answers in order, so a longer pipeline only adds latency.
constexpr size_t kMaxInFlight = 64 * 1024;
// Bytes of commands not yet written to the socket, at most, before the link stops taking publishes (the same
// rule): a few MaxMessageSize publishes or many small ones.
constexpr size_t kMaxUnsent = 8u << 20;
// Envelopes the workgroups' rings could not take yet, at most, before the link stops reading pub/sub (Redis
// then buffers for us, within its client-output-buffer-limit for pub/sub).
constexpr size_t kMaxBacklog = 256 * 1024;
// Bytes of messages held for one subject while its fill is answered; past it they are dropped and the fill is
// done again from the last number delivered (the stream has them).
constexpr size_t kMaxHeldBytes = 4u << 20;
// Reconnection: first wait, doubled after each failure up to the last (a Redis restart is seconds; a
// failover can take longer, and probing every 2 s costs nothing).
constexpr uint64_t kRetryFirstMs = 100;
constexpr uint64_t kRetryMaxMs = 2000;
// A PING every second measures the round trip (cluster_rtt_us) and finds a Redis that stopped answering: no
// answer for kDeadMs and the connection is dropped and made again.
constexpr uint64_t kProbeMs = 1000;
constexpr uint64_t kDeadMs = 5000;
// Connections: how long a connect may take.
constexpr uint64_t kConnectTimeoutMs = 3000;
// The link's sleep when nothing is due: it wakes for its sockets, its eventfd and its timers anyway; this
// only bounds how late a timer may be noticed.
constexpr int kIdleWaitMs = 100;
// While held back (backlog, unread pub/sub, publishes it cannot take): how soon to look again.
constexpr int kBusyWaitMs = 1;
// What a reply may hold beyond its payloads (stream ids, field names, the message head, RESP framing), per
// message: the parsers' limits follow MaxMessageSize and MaxCachedMessagesPerSubject, so Redis cannot make the
// link hold more than a full fill (Redis trims streams by whole nodes of about 100 entries: kStreamSlack).
constexpr uint64_t kPerMessageOverhead = 512;
constexpr uint64_t kStreamSlack = 200;
constexpr uint64_t kMinReplyBuffer = 1u << 20;
// The longest Redis error kept for the monitor (ClusterStatus::error).
constexpr size_t kMaxErrorText = 300;
// Subjects per SUBSCRIBE after a reconnect: one command per thousand keeps each reply small.
constexpr size_t kSubscribeBatch = 1000;
// Bytes read per recv.
constexpr size_t kReadChunk = 64 * 1024;
// Reads per socket per loop iteration at most, so that one busy connection cannot starve the other and the
// workgroups' rings are drained between.
constexpr int kReadsPerTurn = 16;
// How long a subject's meta (epoch, last number, snapshot) stays in Redis after its last publish or fill.
// Longer than any cache: a subject keeps its epoch while it is in use; one untouched for a week starts again
// (a new epoch, which clients see as RESYNC).
constexpr uint64_t kMetaTtlMs = 7ull * 24 * 3600 * 1000;
// Key and channel names: "starling:{<subject>}:m" (hash: epoch, seq, snapshot), "starling:{<subject>}:l" (the
// stream), channel "starling:<db>:<subject>" (pub/sub is not per database). The braces keep a subject's two keys
// in one Redis Cluster slot.
constexpr std::string_view kPrefix = "starling:";

// The publish script. KEYS: meta, stream. ARGV: channel, payload, flags ("t"/"b", then "r" if retained), stream
// length (0: no history), stream ttl ms (0: none), a new epoch (used only if the subject has none), meta ttl ms.
// Returns {epoch, seq}. The message goes out to the nodes as "<epoch> <seq> <flags>\n<payload>".
constexpr const char* kPublishScript = R"LUA(
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local n = string.format('%d', seq)
if ARGV[4] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], n .. '-0', 'f', ARGV[3], 'd', ARGV[2])
  if ARGV[5] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
end
if string.find(ARGV[3], 'r', 1, true) then
  redis.call('HSET', KEYS[1], 'sseq', n, 'sflags', ARGV[3], 'sdata', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. n .. ' ' .. ARGV[3] .. '\n' .. ARGV[2])
return {epoch, n}
)LUA";

// The fill script. KEYS: meta, stream. ARGV: first number wanted (0: the newest ARGV[2]), count, a new epoch, meta
// ttl ms. A subject without an epoch gets the new one now, at number 0, so that its epoch holds from its first
// subscriber on. A subject whose last number is below what this node already delivered (ARGV[1] - 1) went back in
// time — a failover to a replica that had not received the newest messages, whose numbers it would give again —
// and gets the new epoch too, with its stream emptied: every node and client then sees the change (RESYNC)
// instead of taking new messages for ones it has. Returns {epoch, last, snapshot seq | nil, snapshot flags | nil,
// snapshot payload | nil, entries} with entries as XRANGE gives them (newest first when ARGV[1] is 0).
constexpr const char* kFillScript = R"LUA(
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'sseq', 'sflags', 'sdata')
local epoch = m[1]
local last = m[2]
if not epoch then
  epoch = ARGV[3]
  last = '0'
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
elseif ARGV[1] ~= '0' and tonumber(last) < tonumber(ARGV[1]) - 1 then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local entries
if ARGV[1] == '0' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+')
end
return {epoch, last, m[3], m[4], m[5], entries}
)LUA";

uint64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

ClusterLink::ClusterLink(Server& server)
    : server_(server),
      options_(server.options().cluster),
      max_messages_(server.options().max_cached_messages),
      expire_ms_(server.options().cache_expire_ms),
      workgroups_(server.workgroup_count()),
      backlog_(server.workgroup_count()),
      random_(std::random_device{}()),
      max_messages_text_(std::to_string(max_messages_)),
      expire_text_(std::to_string(expire_ms_)),
      meta_ttl_text_(std::to_string(kMetaTtlMs)) {
  for (unsigned w = 0; w <= workgroups_; w++) inbox_.emplace_back(new SpscRing<EngineOp>(kInboxRing));
  poller_ = Poller::create();
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0 || !poller_->watch_readable(wake_fd_, &wake_fd_)) throw std::runtime_error("cluster link: eventfd");
  status_.state = ClusterState::kConnecting;
  if (!options_.redis.empty())
    status_.redis = options_.redis[0].host + ":" + std::to_string(options_.redis[0].port);
}

ClusterLink::~ClusterLink() {
  stop();
  EngineOp op;
  for (auto& ring : inbox_)
    while (ring->pop(&op)) {
      op.subject->unref();
      if (op.frame) op.frame->unref();
    }
  for (auto& [name, t] : tracks_) {
    for (Held& h : t.held) h.frame->unref();
    t.subject->unref();
  }
  for (auto& q : backlog_)
    for (Envelope& e : q) {
      if (e.subject) e.subject->unref();
      if (e.frame) e.frame->unref();
      delete e.sync;
    }
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void ClusterLink::start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "starling-cluster");
    run();
  });
}

void ClusterLink::stop() {
  stopping_.store(true, std::memory_order_release);
  wake_pending_.store(false);
  wake();
  if (thread_.joinable()) thread_.join();
}

void ClusterLink::wake() {
  if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

ClusterStatus ClusterLink::status() const {
  std::lock_guard<std::mutex> guard(status_lock_);
  return status_;
}

void ClusterLink::read_counters(double* out) const {
  out[0] = static_cast<double>(state_.load(std::memory_order_relaxed));
  out[1] = static_cast<double>(rtt_us_.load(std::memory_order_relaxed));
  out[2] = static_cast<double>(reconnects_.load(std::memory_order_relaxed));
  out[3] = static_cast<double>(published_.load(std::memory_order_relaxed));
  out[4] = static_cast<double>(received_.load(std::memory_order_relaxed));
  out[5] = static_cast<double>(refused_.load(std::memory_order_relaxed));
  out[6] = static_cast<double>(refilled_.load(std::memory_order_relaxed));
}

void ClusterLink::set_status(ClusterState state, const std::string& detail) {
  state_.store(static_cast<uint8_t>(state), std::memory_order_relaxed);
  std::lock_guard<std::mutex> guard(status_lock_);
  status_.state = state;
  status_.detail = detail;
  const RedisAddress& a = options_.redis[address_ % options_.redis.size()];
  status_.redis = a.host + ":" + std::to_string(a.port);
}

std::string ClusterLink::channel(std::string_view name) const {
  std::string c = channel_prefix_;
  c += name;
  return c;
}

std::string_view ClusterLink::key(std::string& out, std::string_view name, char kind) {
  out.assign(kPrefix);
  out += '{';
  out += name;
  out += "}:";
  out += kind;
  return out;
}

std::string_view ClusterLink::candidate_epoch() {
  uint64_t e = 0;
  while (!e) e = random_();
  return std::string_view(epoch_text_, format_epoch(e, epoch_text_));
}

// ---------------------------------------------------------------------------------------------------
// The loop

void ClusterLink::run() {
  connect();
  PollEvent events[8];
  while (!stopping_.load(std::memory_order_acquire)) {
    const uint64_t now = now_ms();
    int timeout = kIdleWaitMs;
    if (backlog_size_ || (sub_.readable && backlog_size_ < kMaxBacklog) || (cmd_.readable)) timeout = kBusyWaitMs;
    if (retry_at_ms_) timeout = std::min<int>(timeout, retry_at_ms_ > now ? static_cast<int>(retry_at_ms_ - now) : 0);
    const int n = poller_->wait(events, 8, timeout);
    for (int i = 0; i < n; i++) {
      if (events[i].tag == &wake_fd_) {
        uint64_t v;
        ssize_t r = ::read(wake_fd_, &v, sizeof v);
        (void)r;
        wake_pending_.store(false, std::memory_order_release);
      } else if (events[i].tag == &cmd_) {
        on_io(cmd_, events[i].events);
      } else if (events[i].tag == &sub_) {
        on_io(sub_, events[i].events);
      }
    }
    try {
      if (cmd_.readable) read_cmd();
      if (sub_.readable && backlog_size_ < kMaxBacklog) read_sub();
      drain_inbox();
      const uint64_t t = now_ms();
      if (retry_at_ms_ && t >= retry_at_ms_) {
        retry_at_ms_ = 0;
        connect();
      }
      if (connect_started_ms_ && !up_.load(std::memory_order_relaxed) && cmd_.tcp.is_open() &&
          t >= connect_started_ms_ + kConnectTimeoutMs)
        fail("no answer within " + std::to_string(kConnectTimeoutMs / 1000) + " s of connecting");
      if (up_.load(std::memory_order_relaxed)) {
        if (ping_out_ && t >= ping_sent_ms_ + kDeadMs) {
          fail("Redis did not answer for " + std::to_string(kDeadMs / 1000) + " s");
        } else if (!ping_out_ && t >= ping_at_ms_) {
          Await a;
          a.kind = Await::kPing;
          a.at_ns = now_ns();
          command(cmd_, {"PING"});
          awaits_.push_back(std::move(a));
          ping_out_ = true;
          ping_sent_ms_ = t;
        }
      }
      flush_backlog();
      if (cmd_.tcp.is_open() && !cmd_.connecting) write(cmd_);
      if (sub_.tcp.is_open() && !sub_.connecting) write(sub_);
    } catch (const std::bad_alloc&) {
      fail("out of memory");
    }
    for (uint64_t mask = wake_mask_; mask; mask &= mask - 1) server_.workgroup(__builtin_ctzll(mask)).wake();
    wake_mask_ = 0;
  }
  cmd_.tcp.close();
  sub_.tcp.close();
}

bool ClusterLink::taking_publishes() const {
  return awaits_.size() < kMaxInFlight && cmd_.out.size() - cmd_.sent < kMaxUnsent;
}

void ClusterLink::drain_inbox() {
  EngineOp op;
  for (unsigned w = 0; w <= workgroups_; w++) {  // (workgroups_: the control thread's)
    SpscRing<EngineOp>& ring = *inbox_[w];
    while (taking_publishes() && ring.pop(&op)) {
      if (op.kind == EngineOp::kInterest) {
        reconcile(op.subject);
        op.subject->unref();
      } else {
        on_publish(op);
      }
    }
  }
}

void ClusterLink::on_publish(const EngineOp& op) {
  Subject* s = op.subject;
  Frame* f = op.frame;
  if (!up_.load(std::memory_order_relaxed)) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    if (op.token) answer(op.from, op.token, EngineAnswer::kRefused);
  } else {
    const std::string_view name = s->name();
    const std::string_view payload(reinterpret_cast<const char*>(f->data()), f->size());
    const char flags[2] = {f->opcode == kOpBinary ? 'b' : 't', 'r'};
    chan_.assign(channel_prefix_).append(name);
    command(cmd_, {"EVALSHA", publish_sha_, "2", key(meta_, name, 'm'), key(log_, name, 'l'), chan_, payload,
                   std::string_view(flags, f->retained ? 2 : 1), max_messages_text_, expire_text_, candidate_epoch(),
                   meta_ttl_text_});
    Await a;
    a.kind = Await::kPublish;
    a.wg = op.from;
    a.token = op.token;
    awaits_.push_back(std::move(a));
  }
  f->unref();
  server_.registry().forget_if_idle(s);  // a subject made for this publish, nobody here follows
  s->unref();
}

void ClusterLink::send_to(unsigned wg, const Envelope& e) {
  if (backlog_[wg].empty() && server_.workgroup(wg).push_engine(e)) {
    wake_mask_ |= uint64_t{1} << wg;
    return;
  }
  backlog_[wg].push_back(e);
  backlog_size_++;
}

void ClusterLink::answer(unsigned wg, uint64_t token, EngineAnswer a) {
  Envelope e;
  e.kind = Envelope::kAnswer;
  e.code = static_cast<uint8_t>(a);
  e.seq = token;
  send_to(wg, e);
}

void ClusterLink::flush_backlog() {
  for (unsigned w = 0; w < workgroups_; w++) {
    auto& q = backlog_[w];
    while (!q.empty() && server_.workgroup(w).push_engine(q.front())) {
      q.pop_front();
      backlog_size_--;
      wake_mask_ |= uint64_t{1} << w;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// What the node follows

void ClusterLink::reconcile(Subject* s) {
  const std::string name(s->name());
  Subject* now = server_.registry().find_ref(name);
  const bool wanted = now && now->interest.load(std::memory_order_acquire) != 0;
  auto it = tracks_.find(name);
  if (it != tracks_.end() && (!wanted || it->second.subject != now)) untrack(it, !wanted);
  if (wanted && tracks_.find(name) == tracks_.end()) track(now);
  if (now) now->unref();
}

void ClusterLink::track(Subject* s) {
  const std::string name(s->name());
  Track& t = tracks_[name];
  s->ref();
  t.subject = s;
  t.phase = Track::kIdle;
  if (!up_.load(std::memory_order_relaxed)) return;  // subscribed when the link is back
  command(sub_, {"SUBSCRIBE", channel(name)});
  subscribing_[name]++;
  t.phase = Track::kSubscribing;
}

void ClusterLink::untrack(std::unordered_map<std::string, Track>::iterator it, bool unsubscribe) {
  Track& t = it->second;
  for (Held& h : t.held) h.frame->unref();
  // The home forgets what it kept for the subject (it would go stale): its reference moves to the envelope.
  Envelope e;
  e.kind = Envelope::kSync;
  e.subject = t.subject;
  e.sync = new EngineSync();
  e.sync->drop = true;
  send_to(t.subject->home, e);
  if (unsubscribe && up_.load(std::memory_order_relaxed)) command(sub_, {"UNSUBSCRIBE", channel(it->first)});
  tracks_.erase(it);
}

void ClusterLink::subscribe_all() {
  std::vector<std::string> channels;
  std::vector<std::string_view> args;
  auto flush = [&] {
    if (channels.empty()) return;
    args.assign(1, "SUBSCRIBE");
    for (const std::string& c : channels) args.push_back(c);
    resp::command(sub_.out, args.data(), args.size());
    channels.clear();
  };
  for (auto& [name, t] : tracks_) {
    for (Held& h : t.held) h.frame->unref();
    t.held.clear();
    t.held_bytes = 0;
    t.phase = Track::kSubscribing;
    subscribing_[name]++;
    channels.push_back(channel(name));
    if (channels.size() == kSubscribeBatch) flush();
  }
  flush();
}

void ClusterLink::start_fill(const std::string& name, Track& t) {
  for (Held& h : t.held) h.frame->unref();  // (what is held is read again from the stream)
  t.held.clear();
  t.held_bytes = 0;
  t.refill = false;
  t.phase = Track::kFilling;
  t.gen++;
  Await a;
  a.kind = Await::kFill;
  a.name = name;
  a.gen = t.gen;
  a.from = t.known ? t.last + 1 : 0;
  const std::string from = std::to_string(a.from);
  command(cmd_, {"EVALSHA", fill_sha_, "2", key(meta_, name, 'm'), key(log_, name, 'l'), from, max_messages_text_,
                 candidate_epoch(), meta_ttl_text_});
  awaits_.push_back(std::move(a));
}

void ClusterLink::on_fill(const Await& a, const resp::Value& v) {
  auto it = tracks_.find(a.name);
  if (it == tracks_.end() || it->second.gen != a.gen || it->second.phase != Track::kFilling) return;
  Track& t = it->second;
  const std::string& name = it->first;
  if (v.type == resp::Type::kError) return fail("fill of " + name + " refused by Redis: " + std::string(v.str));
  engine::Fill fill;
  const char* why = nullptr;
  if (!engine::parse_fill(*cmd_.in, v, a.from == 0, &fill, &why))
    return fail("unexpected fill answer for " + name + ": " + why);
  if (a.from && fill.epoch != t.epoch) {  // the subject started again (a new epoch): read its newest history
    t.known = false;
    return start_fill(name, t);
  }
  std::unique_ptr<EngineSync> y(new EngineSync());
  y->epoch = fill.epoch;
  y->last = fill.last;
  for (const engine::Entry& e : fill.entries) {
    Frame* f = live_frame(name, fill.epoch, e);
    if (!f) return start_fill(name, t);  // out of memory now: read again
    y->entries.push_back(f);
  }
  refilled_.fetch_add(y->entries.size(), std::memory_order_relaxed);
  if (fill.has_snapshot) {
    if (!(y->snapshot = live_frame(name, fill.epoch, fill.snapshot))) return start_fill(name, t);
    y->snapshot_seq = fill.snapshot.seq;
  }
  Envelope e;
  e.kind = Envelope::kSync;
  t.subject->ref();
  e.subject = t.subject;
  e.sync = y.release();
  send_to(t.subject->home, e);
  t.known = true;
  t.epoch = fill.epoch;
  t.last = fill.last;
  t.phase = Track::kLive;
  if (t.refill) return start_fill(name, t);
  std::vector<Held> held;
  held.swap(t.held);
  t.held_bytes = 0;
  for (size_t i = 0; i < held.size(); i++) {
    if (t.phase != Track::kLive) {  // a gap among them: the rest waits for that fill
      t.held.push_back(held[i]);
      t.held_bytes += held[i].frame->size();
      continue;
    }
    deliver_live(name, t, held[i].epoch, held[i].seq, held[i].frame);
  }
}

Frame* ClusterLink::live_frame(std::string_view name, uint64_t epoch, const engine::Entry& e) {
  Frame* f = publish_frame(name, e.data.data(), e.data.size(), e.flags.binary ? kOpBinary : kOpText, e.flags.retained);
  if (f) frame_message(f, name, epoch, e.seq);
  return f;
}

void ClusterLink::deliver_live(const std::string& name, Track& t, uint64_t epoch, uint64_t seq, Frame* f) {
  if (t.phase == Track::kFilling) {
    if (t.held_bytes + f->size() > kMaxHeldBytes) {  // read again from the stream after this fill
      for (Held& h : t.held) h.frame->unref();
      t.held.clear();
      t.held_bytes = 0;
      t.refill = true;
      f->unref();
      return;
    }
    t.held.push_back(Held{epoch, seq, f});
    t.held_bytes += f->size();
    return;
  }
  if (epoch == t.epoch && seq <= t.last) {  // (a fill covered it)
    f->unref();
    return;
  }
  if (epoch != t.epoch || seq != t.last + 1) {  // a gap, or a new epoch: fill from the last delivered
    if (epoch != t.epoch) t.known = false;
    start_fill(name, t);
    t.held.push_back(Held{epoch, seq, f});
    t.held_bytes += f->size();
    return;
  }
  t.last = seq;
  Envelope e;
  e.kind = Envelope::kNumbered;
  t.subject->ref();
  e.subject = t.subject;
  e.frame = f;
  e.seq = seq;
  send_to(t.subject->home, e);
}

void ClusterLink::on_message(std::string_view name, std::string_view payload) {
  auto it = tracks_.find(name_.assign(name));  // (the reused key: no allocation per message)
  if (it == tracks_.end()) return;  // no longer followed
  Track& t = it->second;
  if (t.phase != Track::kFilling && t.phase != Track::kLive) return;  // (the fill to come covers it)
  engine::Message m;
  if (!engine::parse_message(payload, &m))
    return fail("a message of " + std::string(name) + " that Starling did not write (channel " + channel(name) + ")");
  received_.fetch_add(1, std::memory_order_relaxed);
  Frame* f = live_frame(name, m.epoch, engine::Entry{m.seq, m.flags, m.data});
  if (!f) return start_fill(it->first, t);  // fetched again from the stream (out of memory now)
  deliver_live(it->first, t, m.epoch, m.seq, f);
}

// ---------------------------------------------------------------------------------------------------
// Connections

void ClusterLink::connect() {
  const RedisAddress& a = options_.redis[address_ % options_.redis.size()];
  channel_prefix_.assign(kPrefix).append(std::to_string(a.db)).append(":");
  std::string why;
  const uint64_t message = server_.options().max_message + kPerMessageOverhead;
  resp::Limits commands;  // fills: up to a stream's worth of messages (and the snapshot)
  commands.max_bulk = message;
  commands.max_buffer = std::max<uint64_t>(kMinReplyBuffer, (max_messages_ + kStreamSlack + 1) * message);
  resp::Limits messages;  // one message per reply
  messages.max_bulk = message;
  messages.max_buffer = std::max<uint64_t>(kMinReplyBuffer, 2 * message);
  cmd_.in.reset(new resp::Parser(commands));
  sub_.in.reset(new resp::Parser(messages));
  cmd_.out.clear();
  sub_.out.clear();
  cmd_.sent = sub_.sent = 0;
  cmd_ready_ = sub_ready_ = false;
  connect_started_ms_ = now_ms();
  for (Conn* c : {&cmd_, &sub_}) {
    if (!c->tcp.open(a.host, a.port, &why) || !poller_->watch_stream(c->tcp.fd(), c)) {
      if (why.empty()) why = "cannot watch the socket";
      return fail(why);
    }
    c->connecting = true;
    c->readable = false;
  }
  // (Reconnecting keeps the reason of the last failure: the monitor and the log show why, not that it retries.)
  if (!ever_up_ && status().detail.empty()) set_status(ClusterState::kConnecting, "");
}

void ClusterLink::on_io(Conn& c, uint32_t events) {
  if (!c.tcp.is_open()) return;
  if (c.connecting) {
    std::string why;
    if (!(events & (kWritable | kHangup))) return;
    if (!c.tcp.finish_connect(&why)) return fail(why);
    c.connecting = false;
    if (!cmd_.connecting && !sub_.connecting) on_connected();
  }
  if (events & (kReadable | kHangup)) c.readable = true;
  if (events & kWritable) write(c);
}

// Both connections are open: the setup commands go out at once (pipelined); their replies come in order.
void ClusterLink::on_connected() {
  const RedisAddress& a = options_.redis[address_ % options_.redis.size()];
  const std::string node = options_.node.empty() ? "starling" : "starling:" + options_.node;
  awaits_.clear();
  sub_setup_left_ = 0;
  for (Conn* c : {&cmd_, &sub_}) {
    const bool cmd = c == &cmd_;
    auto setup = [&](std::initializer_list<std::string_view> args) {
      command(*c, args);
      if (cmd) {
        Await w;
        w.kind = Await::kSetup;
        awaits_.push_back(std::move(w));
      } else {
        sub_setup_left_++;
      }
    };
    if (!a.password.empty()) {
      if (a.user.empty()) setup({"AUTH", a.password});
      else setup({"AUTH", a.user, a.password});
    }
    if (cmd && a.db) setup({"SELECT", std::to_string(a.db)});
    setup({"CLIENT", "SETNAME", node + (cmd ? ":commands" : ":messages")});
  }
  Await role;
  role.kind = Await::kRole;
  command(cmd_, {"ROLE"});
  awaits_.push_back(role);
  Await lp;
  lp.kind = Await::kLoadPublish;
  command(cmd_, {"SCRIPT", "LOAD", kPublishScript});
  awaits_.push_back(lp);
  Await lf;
  lf.kind = Await::kLoadFill;
  command(cmd_, {"SCRIPT", "LOAD", kFillScript});
  awaits_.push_back(lf);
  if (!sub_setup_left_) sub_ready_ = true;
}

// Publishes are taken from now on, and every followed subject is subscribed and filled again.
void ClusterLink::became_up() {
  if (ever_up_) reconnects_.fetch_add(1, std::memory_order_relaxed);
  ever_up_ = true;
  backoff_ms_ = 0;
  connect_started_ms_ = 0;
  ping_at_ms_ = now_ms() + kProbeMs;
  up_.store(true, std::memory_order_release);
  set_status(ClusterState::kUp, "");
  subscribe_all();
}

void ClusterLink::fail(const std::string& why) {
  const bool was_up = up_.exchange(false, std::memory_order_acq_rel);
  const RedisAddress& a = options_.redis[address_ % options_.redis.size()];
  const std::string where = a.host + ":" + std::to_string(a.port);
  for (Conn* c : {&cmd_, &sub_}) {
    c->tcp.close();
    c->connecting = false;
    c->readable = false;
    c->out.clear();
    c->sent = 0;
  }
  cmd_ready_ = sub_ready_ = false;
  ping_out_ = false;
  connect_started_ms_ = 0;
  // Publishes sent and not answered: their outcome is unknown; fills and probes are simply gone.
  for (const Await& w : awaits_)
    if (w.kind == Await::kPublish && w.token) answer(w.wg, w.token, EngineAnswer::kUnknown);
  awaits_.clear();
  subscribing_.clear();
  for (auto& [name, t] : tracks_) {
    for (Held& h : t.held) h.frame->unref();
    t.held.clear();
    t.held_bytes = 0;
    t.phase = Track::kIdle;
  }
  if (!was_up) address_++;  // could not get this one up: try the next listed (if any)
  backoff_ms_ = was_up ? kRetryFirstMs : std::min(kRetryMaxMs, backoff_ms_ ? backoff_ms_ * 2 : kRetryFirstMs);
  retry_at_ms_ = now_ms() + backoff_ms_;
  set_status(ever_up_ ? ClusterState::kDown : ClusterState::kConnecting, where + ": " + why);
}

void ClusterLink::command(Conn& c, std::initializer_list<std::string_view> args) { resp::command(c.out, args); }

void ClusterLink::write(Conn& c) {
  while (c.sent < c.out.size()) {
    std::string why;
    const ssize_t n = c.tcp.write(c.out.data() + c.sent, c.out.size() - c.sent, &why);
    if (n < 0) return fail(why);
    if (n == 0) return;  // full: the poller says when it drains
    c.sent += static_cast<size_t>(n);
  }
  c.out.clear();
  c.sent = 0;
}

void ClusterLink::read_cmd() {
  for (int i = 0; i < kReadsPerTurn && cmd_.readable && cmd_.tcp.is_open(); i++) {
    std::string why;
    uint8_t* p = cmd_.in->space(kReadChunk);
    const ssize_t n = cmd_.tcp.read(p, kReadChunk, &why);
    if (n < 0) return fail(why);
    if (n == 0) {
      cmd_.readable = false;
      break;
    }
    cmd_.in->commit(static_cast<size_t>(n));
    for (;;) {
      const resp::Parser::Status st = cmd_.in->next();
      if (st == resp::Parser::Status::kNeedMore) break;
      if (st == resp::Parser::Status::kError) return fail("bad reply from Redis: " + std::string(cmd_.in->error()));
      on_reply(cmd_.in->root());
      if (!cmd_.tcp.is_open()) return;  // (on_reply failed the link)
    }
  }
}

void ClusterLink::read_sub() {
  for (int i = 0; i < kReadsPerTurn && sub_.readable && sub_.tcp.is_open() && backlog_size_ < kMaxBacklog; i++) {
    std::string why;
    uint8_t* p = sub_.in->space(kReadChunk);
    const ssize_t n = sub_.tcp.read(p, kReadChunk, &why);
    if (n < 0) return fail(why);
    if (n == 0) {
      sub_.readable = false;
      break;
    }
    sub_.in->commit(static_cast<size_t>(n));
    for (;;) {
      const resp::Parser::Status st = sub_.in->next();
      if (st == resp::Parser::Status::kNeedMore) break;
      if (st == resp::Parser::Status::kError) return fail("bad message from Redis: " + std::string(sub_.in->error()));
      on_push(sub_.in->root());
      if (!sub_.tcp.is_open()) return;
    }
  }
}

void ClusterLink::on_reply(const resp::Value& v) {
  if (awaits_.empty()) return fail("a reply nobody asked for");
  Await a = std::move(awaits_.front());
  awaits_.pop_front();
  resp::Parser& p = *cmd_.in;
  const bool error = v.type == resp::Type::kError;
  switch (a.kind) {
    case Await::kSetup:
      if (error) return fail(std::string(v.str));
      return;
    case Await::kRole: {
      const std::string_view role = v.type == resp::Type::kArray && v.integer > 0 ? p.child(v, 0).str : std::string_view();
      if (role != "master") return fail("not a primary (ROLE says " + std::string(role.empty() ? "nothing" : role) + "); trying the next ClusterRedis");
      return;
    }
    case Await::kLoadPublish:
    case Await::kLoadFill: {
      if (error || v.type != resp::Type::kBulk) return fail("SCRIPT LOAD failed: " + std::string(v.str));
      (a.kind == Await::kLoadPublish ? publish_sha_ : fill_sha_) = std::string(v.str);
      if (a.kind == Await::kLoadFill) {
        cmd_ready_ = true;
        if (sub_ready_) became_up();
      }
      return;
    }
    case Await::kPublish:
      if (error) {
        if (v.str.substr(0, 8) == "NOSCRIPT") {  // (not run)
          if (a.token) answer(a.wg, a.token, EngineAnswer::kRefused);
          return fail("Redis lost the publish script (NOSCRIPT); loading it again");
        }
        if (v.str.substr(0, 8) == "READONLY") {  // (not run) a failover made it a replica: find the primary
          if (a.token) answer(a.wg, a.token, EngineAnswer::kRefused);
          refused_.fetch_add(1, std::memory_order_relaxed);
          return fail("no longer a primary (READONLY); trying the next ClusterRedis");
        }
        refused_.fetch_add(1, std::memory_order_relaxed);
        if (a.token) answer(a.wg, a.token, EngineAnswer::kFailed);
        {
          std::lock_guard<std::mutex> guard(status_lock_);
          status_.error = std::string(v.str.substr(0, kMaxErrorText));
        }
        return;
      }
      published_.fetch_add(1, std::memory_order_relaxed);
      if (a.token) answer(a.wg, a.token, EngineAnswer::kStored);
      return;
    case Await::kFill:
      if (error && v.str.substr(0, 8) == "NOSCRIPT") return fail("Redis lost the fill script (NOSCRIPT); loading it again");
      return on_fill(a, v);
    case Await::kPing:
      ping_out_ = false;
      rtt_us_.store((now_ns() - a.at_ns) / 1000, std::memory_order_relaxed);
      ping_at_ms_ = now_ms() + kProbeMs;
      return;
  }
}

void ClusterLink::on_push(const resp::Value& v) {
  resp::Parser& p = *sub_.in;
  if (sub_setup_left_) {  // AUTH, CLIENT SETNAME
    sub_setup_left_--;
    if (v.type == resp::Type::kError) return fail(std::string(v.str));
    if (!sub_setup_left_) {
      sub_ready_ = true;
      if (cmd_ready_) became_up();  // (the command side finished first)
    }
    return;
  }
  if (v.type == resp::Type::kError) return fail("pub/sub connection: " + std::string(v.str));
  if ((v.type != resp::Type::kArray && v.type != resp::Type::kPush) || v.integer < 3)
    return fail("pub/sub connection: an unexpected reply");
  const std::string_view kind = p.child(v, 0).str;
  const std::string_view ch = p.child(v, 1).str;
  if (ch.substr(0, channel_prefix_.size()) != channel_prefix_) return;  // not ours
  const std::string_view name = ch.substr(channel_prefix_.size());
  if (kind == "message") return on_message(name, p.child(v, 2).str);
  if (kind == "subscribe") {
    auto c = subscribing_.find(name_.assign(name));
    if (c == subscribing_.end()) return;
    if (--c->second) return;  // a later SUBSCRIBE of it is still to be confirmed
    subscribing_.erase(c);
    auto it = tracks_.find(name_);
    if (it != tracks_.end() && it->second.phase == Track::kSubscribing) start_fill(it->first, it->second);
  }
  // "unsubscribe": nothing to do (messages of a subject no longer followed are ignored)
}

}  // namespace starling
