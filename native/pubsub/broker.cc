// Routing, home sequencing and fan-out. See broker.h for the back-pressure rules.
#include "pubsub/broker.h"

#include <cstring>
#include <new>

namespace starling {

namespace {

// Connections with more subscriptions than this get a name index (NameIndex); below it a linear scan of
// a few entries is cheaper than a hash lookup and costs no memory.
constexpr uint32_t kIndexFrom = 16;

}  // namespace

Frame* publish_frame(std::string_view subject, const void* payload, size_t len, uint8_t opcode, bool retained) {
  size_t room = publish_headroom(subject.size());
  Frame* f = Frame::alloc(room + len);
  if (!f) return nullptr;
  f->begin = static_cast<uint32_t>(room);
  f->end = static_cast<uint32_t>(room + len);
  f->opcode = opcode;
  f->retained = retained;
  if (len) std::memcpy(f->bytes + f->begin, payload, len);
  return f;
}

void frame_message(Frame* f, std::string_view subject, uint64_t epoch, uint64_t seq) {
  char e[16];
  const size_t epoch_len = format_epoch(epoch, e);
  uint8_t* payload = f->bytes + f->begin;
  const size_t mh = write_msg_header_backwards(reinterpret_cast<char*>(payload), subject, std::string_view(e, epoch_len), seq);
  const uint64_t total = mh + (f->end - f->begin);
  const size_t hh = server_head_size(total);
  write_server_head(payload - mh - hh, f->opcode, total);
  f->begin -= static_cast<uint32_t>(mh + hh);
}

Broker::Broker(Registry& registry, unsigned wg, BrokerOptions options, BrokerHost& host, Counters& counters)
    : registry_(registry), wg_(wg), opt_(options), host_(host), counters_(counters),
      cache_(options.cache, registry, counters) {
  // At most one delivery per workgroup is ever deferred (no publish is taken while one is), so this never
  // has to grow: a deferral cannot fail for lack of memory.
  deferred_.reserve(64);
}

namespace {

void drop_request(Request* r) {
  if (r->answer) r->answer->unref();
  delete r;
}

}  // namespace

Broker::~Broker() {
  for (Held& h : held_) {
    h.subject->unref();
    if (h.frame) h.frame->unref();
    if (h.request) drop_request(h.request);
  }
  for (Deferred& d : deferred_) {
    d.subject->unref();
    if (d.frame) d.frame->unref();
    if (d.request) drop_request(d.request);
  }
  for (auto& [key, state] : conflated_)
    if (state.latest) state.latest->unref();
  for (Subject* s : notices_) s->unref();
  for (auto& [s, requests] : parked_)
    for (Request* r : requests) {
      drop_request(r);
      s->unref();
    }
}

bool Broker::route(Subject* s, Frame* f) {
  if (s->home == wg_) {
    if (!accepting()) return false;
    publish_home(s, f);
    return true;
  }
  return host_.post_publish(s->home, s, f);
}

void Broker::retry() {
  for (size_t i = 0; i < deferred_.size();) {
    Deferred& d = deferred_[i];
    if (d.request ? host_.post_answer(d.wg, d.subject, d.request) : host_.post_deliver(d.wg, d.subject, d.frame)) {
      deferred_.erase(deferred_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      i++;
    }
  }
  // Interest notices for the cluster link, in order.
  size_t sent = 0;
  while (sent < notices_.size() && host_.post_engine(EngineOp{EngineOp::kInterest, static_cast<uint8_t>(wg_), notices_[sent], nullptr, 0}))
    sent++;
  notices_.erase(notices_.begin(), notices_.begin() + static_cast<std::ptrdiff_t>(sent));
  // Held publishes leave in the order they were made; the first that still cannot go stops the rest.
  while (!held_.empty() && accepting()) {
    Held& h = held_.front();
    if (h.engine) {
      bool waits = false;
      if (!hand_to_engine(h.conn, h.subject, h.frame, h.id, &waits)) break;
      Subscriber* c = h.conn;
      held_.pop_front();
      counters_.add(k_messages_in);
      if (!waits) host_.resume(c);  // (else resumed by the engine's answer)
      continue;
    }
    if (h.request) {
      if (!host_.post_request(h.subject->home, h.subject, h.request)) break;
      held_.pop_front();  // c stays paused until the answer
      continue;
    }
    Subscriber* c = h.conn;
    Subject* s = h.subject;
    const bool barrier = wants_barrier(c, s, h.id);
    if (barrier) s->ref();  // (route moves the held reference; the barrier needs one of its own)
    if (!route(s, h.frame)) {
      if (barrier) s->unref();
      break;
    }
    std::string id = std::move(h.id);
    held_.pop_front();
    if (!c) continue;  // re-routed by this home: acknowledged where it was published
    counters_.add(k_messages_in);
    if (barrier) {
      if (!ack_when_numbered(c, s, id)) continue;  // resumed by the barrier's answer
    } else {
      ack(c, id);
    }
    host_.resume(c);  // may parse more of c's input, and hold another publish at the back
  }
}

void Broker::publish_home(Subject* s, Frame* f) {
  if (cache_.enabled() && !s->cache && !registry_.hold(s)) {
    // Forgotten since it was routed here (no subscriber, nothing cached): publish to the subject now
    // registered under its name, a new one if need be (PROTOCOL.md: a subject exists from its first
    // publish). Its home may be another workgroup.
    Subject* now;
    try {
      now = registry_.find_or_create_ref(s->name(), wg_);
    } catch (const std::bad_alloc&) {
      counters_.add(k_alloc_failures);
      s->unref();
      f->unref();
      return;
    }
    s->unref();
    if (now->home == wg_) return publish_home(now, f);  // a subject of this home is held below
    if (!host_.post_publish(now->home, now, f)) held_.push_back(Held{nullptr, now, f, nullptr, {}});
    return;
  }
  // The subject's cache is cold (one message per subject now and then, among thousands): fetch it while the
  // header is written.
  if (s->cache) __builtin_prefetch(s->cache, 1);
  const uint64_t seq = ++s->seq;
  frame_message(f, s->name(), s->epoch, seq);
  fan_out(s, f, seq);
}

void Broker::fan_out(Subject* s, Frame* f, uint64_t seq) {
  // Cached before it is handed on: the cache numbers its entries first_seq + i, so no message may be left out
  // (a delivery below that cannot allocate throws past the rest of this function).
  if (cache_.enabled()) cache_.append(s, f, seq, f->retained, now_ms_);

  uint64_t mask = s->interest.load(std::memory_order_acquire);
  for (; mask; mask &= mask - 1) {
    unsigned w = static_cast<unsigned>(__builtin_ctzll(mask));
    if (w == wg_) {
      deliver(s, f);
      continue;
    }
    s->ref();
    f->ref();
    if (!host_.post_deliver(w, s, f)) {
      counters_.add(k_deliveries_deferred);
      deferred_.push_back(Deferred{w, s, f, nullptr});
    }
  }
  s->unref();
  f->unref();
}

void Broker::deliver(Subject* s, Frame* f) {
  SubList& list = s->local(wg_);
  if (!list.size) return;
  f->ref(list.size);
  counters_.add(k_messages_out, list.size);
  for (uint32_t i = 0; i < list.size; i++) {
    const SubRef& r = list.items[i];
    if (r.conflate_ms) conflate(r.who, r.conflate_ms, s, f);
    else host_.send(r.who, f);
  }
}

// At most one message per interval to this subscription, the latest: the first goes at once, later ones
// replace each other until the interval has passed (flush_conflated). One frame reference per
// subscription at most: no queue grows with the publish rate.
void Broker::conflate(Subscriber* who, uint32_t interval_ms, Subject* s, Frame* f) {
  Conflation* st;
  try {
    st = &conflated_[ConflationKey{who, s}];
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);
    host_.send(who, f);  // cannot conflate it: deliver it (more messages, never fewer)
    return;
  }
  st->interval_ms = interval_ms;
  if (now_ms_ >= st->next_ms) {
    if (st->latest) {  // an older one due now: the new one supersedes it
      st->latest->unref();
      st->latest = nullptr;
      counters_.add(k_messages_conflated);
      counters_.sub(k_messages_out);
    }
    st->next_ms = now_ms_ + interval_ms;
    host_.send(who, f);
    return;
  }
  if (st->latest) {
    st->latest->unref();
    counters_.add(k_messages_conflated);
    counters_.sub(k_messages_out);
  } else {
    try {
      due_.push(Due{st->next_ms, who, s});
    } catch (const std::bad_alloc&) {
      counters_.add(k_alloc_failures);
      host_.send(who, f);
      return;
    }
  }
  st->latest = f;
}

int Broker::flush_conflated() {
  while (!due_.empty() && due_.top().at <= now_ms_) {
    Due d = due_.top();
    due_.pop();
    auto it = conflated_.find(ConflationKey{d.who, d.subject});
    if (it == conflated_.end() || !it->second.latest) continue;  // stale: sent or dropped since
    Conflation& st = it->second;
    if (st.next_ms > now_ms_) continue;
    st.next_ms = now_ms_ + st.interval_ms;
    Frame* f = st.latest;
    st.latest = nullptr;
    host_.send(d.who, f);
  }
  return conflation_wait();
}

int Broker::conflation_wait() const {
  if (due_.empty()) return -1;
  return due_.top().at <= now_ms_ ? 0 : static_cast<int>(due_.top().at - now_ms_);
}

void Broker::drop_conflation(Subscriber* c, Subject* s) {
  auto it = conflated_.find(ConflationKey{c, s});
  if (it == conflated_.end()) return;
  if (it->second.latest) it->second.latest->unref();
  conflated_.erase(it);
}

void Broker::release_if_unused(Subject* s) {
  if (s->local(wg_).size) return;
  for (const auto& [token, p] : pending_)
    if (p.subject == s && !p.barrier) return;  // (a barrier does not hold this workgroup's interest)
  if (!clustered(s)) return registry_.release(s, wg_);
  s->ref();  // (release may drop the registry's reference; the notice needs one)
  registry_.release(s, wg_);
  notify_engine(s);
}

void Broker::on_request(Subject* s, Request* r) {
  if (clustered(s) && !r->barrier && !s->synced.load(std::memory_order_relaxed)) return park(s, r);
  answer_request(s, r);
}

void Broker::answer_request(Subject* s, Request* r) {
  cache_.answer(s, *r, now_ms_);
  send_back(s, r);
}

void Broker::park(Subject* s, Request* r) {
  try {
    parked_[s].push_back(r);
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);
    r->answer = nullptr;
    r->failed = true;  // the subscription is refused (ERR limit), not left waiting
    send_back(s, r);
  }
}

void Broker::send_back(Subject* s, Request* r) {
  if (r->from == wg_) {  // (a request of this workgroup that waited here for the engine's state)
    on_answer(s, r);
    return;
  }
  if (!host_.post_answer(r->from, s, r)) {
    counters_.add(k_deliveries_deferred);
    deferred_.push_back(Deferred{r->from, s, nullptr, r});
  }
}

void Broker::on_answer(Subject* s, Request* r) {
  auto it = pending_.find(r->token);
  if (it != pending_.end()) {
    Pending p = std::move(it->second);
    pending_.erase(it);
    if (p.barrier) {  // (it never set this workgroup's interest: nothing to release)
      if (p.conn) {
        ack(p.conn, p.ack);
        resume_if_done(p.conn);
      }
    } else if (p.conn) {
      finish(p.conn, s, *r, p.conflate_ms, p.once);
      resume_if_done(p.conn);
    } else {
      release_if_unused(s);
    }
  }
  drop_request(r);
  s->unref();
}

void Broker::await_answer(uint64_t token, Pending p) {
  Subscriber* c = p.conn;
  pending_.emplace(token, std::move(p));
  try {
    waits_[c]++;
  } catch (const std::bad_alloc&) {
    pending_.erase(token);
    throw;
  }
}

void Broker::drop_answer(uint64_t token, Subscriber* c) {
  pending_.erase(token);
  auto w = waits_.find(c);
  if (--w->second == 0) waits_.erase(w);
}

void Broker::resume_if_done(Subscriber* c) {
  auto w = waits_.find(c);
  if (w == waits_.end() || --w->second) return;
  waits_.erase(w);
  host_.resume(c);
}

bool Broker::ask_home(Subscriber* c, Subject* s, const Spec& spec, uint32_t conflate_ms, uint64_t allowance,
                      bool once) {
  Request* r = new Request();  // std::bad_alloc: on_sub answers ERR limit
  r->token = ++next_token_;
  r->from = wg_;
  r->allowance = allowance;
  r->spec = spec;
  r->spec.subject = std::string_view();
  const bool here = s->home == wg_;
  if (here && (!clustered(s) || s->synced.load(std::memory_order_relaxed))) {
    cache_.answer(s, *r, now_ms_);
    finish(c, s, *r, conflate_ms, once);
    drop_request(r);
    return true;
  }
  try {
    await_answer(r->token, Pending{c, s, conflate_ms, once, {}});
  } catch (const std::bad_alloc&) {
    delete r;
    throw;
  }
  s->ref();
  if (here) park(s, r);  // (cluster: waits for the engine's state of s)
  else if (!host_.post_request(s->home, s, r)) held_.push_back(Held{c, s, nullptr, r, {}});
  return false;
}

bool Broker::ack_when_numbered(Subscriber* c, Subject* s, std::string_view id) {
  Request* r = new (std::nothrow) Request();
  if (r) {
    r->token = ++next_token_;
    r->from = wg_;
    r->barrier = true;
    bool awaited = false;
    try {
      await_answer(r->token, Pending{c, s, 0, true, std::string(id), true});
      awaited = true;
      if (!host_.post_request(s->home, s, r)) held_.push_back(Held{c, s, nullptr, r, {}});
      return false;
    } catch (const std::bad_alloc&) {  // (nothing was posted)
      if (awaited) drop_answer(r->token, c);
      delete r;
    }
  }
  counters_.add(k_alloc_failures);
  s->unref();
  ack(c, id);
  return true;
}

void Broker::finish(Subscriber* c, Subject* s, const Request& r, uint32_t conflate_ms, bool once) {
  if (r.failed) {
    reply_err(c, ErrCode::kLimit, {}, std::string(s->name()) + ": server out of memory; subscribe again later");
    release_if_unused(s);
    return;
  }
  if (r.answer) {
    r.answer->ref();
    host_.send(c, r.answer);
  }
  if (once) {
    release_if_unused(s);
    return;
  }
  try {
    subscribe(c, s, conflate_ms);
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);
    reply_err(c, ErrCode::kLimit, {}, std::string(s->name()) + ": server out of memory");
    release_if_unused(s);
  }
}

int Broker::find(Subscriber* c, std::string_view name) const {
  if (c->nsubs > kIndexFrom) {
    auto it = index_.find(c);
    if (it != index_.end()) {
      auto at = it->second.find(name);
      return at == it->second.end() ? -1 : static_cast<int>(at->second);
    }
  }
  for (uint32_t i = 0; i < c->nsubs; i++)
    if (c->subs[i].subject->name() == name) return static_cast<int>(i);
  return -1;
}

// A connection's index is built when it grows past kIndexFrom subscriptions and erased when it drops to
// kIndexFrom / 2; while it exists it is kept exact (every subscription, at its slot), whatever nsubs is.
void Broker::subscribe(Subscriber* c, Subject* s, uint32_t conflate_ms) {
  link(c, s, wg_, conflate_ms);
  counters_.add(k_subscriptions);
  if (c->nsubs <= kIndexFrom / 2) return;  // no index: one is erased at kIndexFrom / 2
  try {
    auto it = index_.find(c);
    if (it != index_.end()) {
      it->second.emplace(s->name(), c->nsubs - 1);
    } else if (c->nsubs > kIndexFrom) {
      NameIndex& idx = index_[c];
      idx.reserve(c->nsubs * 2);
      for (uint32_t i = 0; i < c->nsubs; i++) idx.emplace(c->subs[i].subject->name(), i);
    }
  } catch (const std::bad_alloc&) {
    // The subscription stands; an incomplete index would hide it, so drop the index (find() scans).
    counters_.add(k_alloc_failures);
    index_.erase(c);
  }
}

void Broker::unsubscribe(Subscriber* c, uint32_t k) {
  auto it = c->nsubs > kIndexFrom / 2 ? index_.find(c) : index_.end();
  if (it != index_.end()) it->second.erase(c->subs[k].subject->name());
  {
    const SubSlot& slot = c->subs[k];
    if (slot.subject->local(wg_).items[slot.index].conflate_ms) drop_conflation(c, slot.subject);
  }
  Subject* s = unlink(c, k, wg_);  // moves the last subscription into slot k
  counters_.sub(k_subscriptions);
  if (it != index_.end()) {
    if (c->nsubs <= kIndexFrom / 2) index_.erase(it);
    else if (k < c->nsubs) it->second[c->subs[k].subject->name()] = k;
  }
  release_if_unused(s);
}

void Broker::on_leave(Subscriber* c) {
  index_.erase(c);
  waits_.erase(c);
  for (auto& [token, p] : pending_)
    if (p.conn == c) p.conn = nullptr;  // its answer releases the subject (release_if_unused)
  while (c->nsubs) {
    const SubSlot& slot = c->subs[c->nsubs - 1];
    if (slot.subject->local(wg_).items[slot.index].conflate_ms) drop_conflation(c, slot.subject);
    Subject* s = unlink(c, c->nsubs - 1, wg_);
    counters_.sub(k_subscriptions);
    release_if_unused(s);
  }
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->conn != c) {
      ++it;
      continue;
    }
    Subject* s = it->subject;
    Request* r = it->request;
    Frame* f = it->frame;
    it = held_.erase(it);
    if (r) {  // never sent: nothing will answer it; this workgroup may no longer need the subject
      pending_.erase(r->token);
      const bool barrier = r->barrier;
      drop_request(r);
      if (!barrier) release_if_unused(s);
    } else {  // never acknowledged; a subject made for it (cache on) and never held is forgotten
      f->unref();
      registry_.forget_if_idle(s);
    }
    s->unref();
  }
}

// ---------------------------------------------------------------------------------------------------
// Cluster (ClusterEngine = redis; runtime/cluster_link.h). The engine numbers; the home delivers and caches.

void Broker::notify_engine(Subject* s) {
  const EngineOp op{EngineOp::kInterest, static_cast<uint8_t>(wg_), s, nullptr, 0};
  if (notices_.empty() && host_.post_engine(op)) return;
  try {
    notices_.push_back(s);
  } catch (const std::bad_alloc&) {
    // Lost notice: the link reconciles this subject at its next notice or reconnect. Counted, never silent.
    counters_.add(k_alloc_failures);
    s->unref();
  }
}

bool Broker::hand_to_engine(Subscriber* c, Subject* s, Frame* f, std::string_view id, bool* waits) {
  // Acknowledged once stored: Guaranteed, and HTTP publishes (their next POST may come through another
  // workgroup, whose ring the link may drain first: only Redis's answer orders them).
  const bool answered = c && !id.empty() && (opt_.guaranteed || c->ack_numbered);
  uint64_t token = 0;
  if (answered) {
    token = ++next_token_;
    await_answer(token, Pending{c, nullptr, 0, true, std::string(id), true});  // std::bad_alloc: nothing posted
  }
  if (!host_.post_engine(EngineOp{EngineOp::kPublish, static_cast<uint8_t>(wg_), s, f, token})) {
    if (answered) drop_answer(token, c);
    return false;
  }
  *waits = answered;
  if (!answered && c) ack(c, id);
  return true;
}

bool Broker::publish_engine(Subscriber* c, uint8_t opcode, std::string_view subject, std::string_view id,
                            std::string_view body, bool retained) {
  if (!host_.engine_up()) {
    host_.engine_refused();
    reply_err(c, ErrCode::kUnavailable, id,
              std::string(subject) + ": the cluster engine (Redis) is unreachable; nothing was published, publish again later");
    return true;
  }
  Subject* s = registry_.find_or_create_ref(subject, wg_);  // (the link drops it once sent: forget_if_idle)
  Frame* f = publish_frame(subject, body.data(), body.size(), opcode, retained);
  if (!f) {
    registry_.forget_if_idle(s);
    s->unref();
    counters_.add(k_alloc_failures);
    reply_err(c, ErrCode::kLimit, id, "server out of memory; publish again later");
    return true;
  }
  bool waits = false;
  if (!hand_to_engine(c, s, f, id, &waits)) {
    counters_.add(k_publish_pauses);  // the link's ring is full: hold it, pause c, retry each iteration
    try {
      held_.push_back(Held{c, s, f, nullptr, std::string(id), true});
    } catch (const std::bad_alloc&) {
      registry_.forget_if_idle(s);
      s->unref();
      f->unref();
      throw;
    }
    return false;
  }
  counters_.add(k_messages_in);
  return !waits;
}

void Broker::on_engine_answer(uint64_t token, EngineAnswer answer) {
  auto it = pending_.find(token);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (!p.conn) return;  // it left meanwhile
  switch (answer) {
    case EngineAnswer::kStored:
      ack(p.conn, p.ack);
      break;
    case EngineAnswer::kRefused:
      reply_err(p.conn, ErrCode::kUnavailable, p.ack,
                "the cluster engine (Redis) became unreachable before this publish was sent; it was not published");
      break;
    case EngineAnswer::kUnknown:
      reply_err(p.conn, ErrCode::kUnavailable, p.ack,
                "the link to Redis was lost before it answered: this publish may or may not have been stored; "
                "publish again if it must arrive (it may then arrive twice)");
      break;
    case EngineAnswer::kFailed:
      reply_err(p.conn, ErrCode::kUnavailable, p.ack, "Redis refused this publish (the server log says why)");
      break;
  }
  resume_if_done(p.conn);
}

void Broker::on_numbered(Subject* s, Frame* f, uint64_t seq) {
  // Held like a subject with a cache, so it keeps its state while followed (the link's drop releases it); one
  // forgotten meanwhile has nobody here to deliver to.
  if (!s->cache && !registry_.hold(s)) {
    s->unref();
    f->unref();
    return;
  }
  if (s->engine_known && seq <= s->seq) {  // already delivered (a sync covered it)
    s->unref();
    f->unref();
    return;
  }
  s->seq = seq;
  fan_out(s, f, seq);
}

void Broker::on_sync(Subject* s, EngineSync* y) {
  if (y->drop) {
    cache_.reset(s);  // (unholds s; the envelope's reference keeps it alive)
    s->synced.store(false, std::memory_order_release);
    delete y;
    s->unref();
    return;
  }
  // Same epoch as what this home delivered: messages after s->seq are new to its subscribers (the node stopped
  // following the subject for a while, or the link reconnected) and are delivered; older ones only fill the
  // cache. Another epoch (or the first sync): the engine's state replaces ours, nothing is delivered, and
  // subscribers see the new epoch with the next message (the client SDK then recovers: RESYNC).
  const bool continuing = s->engine_known && s->epoch == y->epoch;
  if (!continuing) {
    cache_.reset(s);
    s->epoch = y->epoch;
  }
  const bool held = s->cache || registry_.hold(s);
  const uint64_t first = y->last + 1 - y->entries.size();
  for (size_t i = 0; i < y->entries.size(); i++) {
    const uint64_t seq = first + i;
    Frame* f = y->entries[i];
    if (continuing && seq > s->seq) {
      f->ref();
      s->ref();
      s->seq = seq;
      fan_out(s, f, seq);
      continue;
    }
    const Cache* c = s->cache;
    const bool cached = c && c->count && c->first_seq <= seq && seq <= c->last_seq();
    if (held && !cached && cache_.enabled()) cache_.append(s, f, seq, f->retained, now_ms_);
  }
  if (y->snapshot && held && cache_.enabled() &&
      !(s->cache && s->cache->snapshot && s->cache->snapshot_seq == y->snapshot_seq))
    cache_.snapshot(s, y->snapshot, y->snapshot_seq);
  if (!continuing || y->last > s->seq) s->seq = y->last;
  s->engine_known = true;
  s->synced.store(true, std::memory_order_release);
  delete y;
  auto it = parked_.find(s);
  if (it != parked_.end()) {
    std::vector<Request*> waiting = std::move(it->second);
    parked_.erase(it);
    for (Request* r : waiting) answer_request(s, r);  // (each holds its own reference to s)
  }
  s->unref();
}

}  // namespace starling
