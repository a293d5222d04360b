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

Frame* publish_frame(std::string_view subject, const void* payload, size_t len, uint8_t opcode) {
  size_t room = publish_headroom(subject.size());
  Frame* f = Frame::alloc(room + len);
  if (!f) return nullptr;
  f->begin = static_cast<uint32_t>(room);
  f->end = static_cast<uint32_t>(room + len);
  f->opcode = opcode;
  if (len) std::memcpy(f->bytes + f->begin, payload, len);
  return f;
}

Broker::Broker(Registry& registry, unsigned wg, BrokerOptions options, BrokerHost& host, Counters& counters)
    : registry_(registry), wg_(wg), opt_(options), host_(host), counters_(counters) {
  // At most one delivery per workgroup is ever deferred (no publish is taken while one is), so this never
  // has to grow: a deferral cannot fail for lack of memory.
  deferred_.reserve(64);
}

Broker::~Broker() {
  for (Held& h : held_) {
    h.subject->unref();
    h.frame->unref();
  }
  for (Deferred& d : deferred_) {
    d.subject->unref();
    d.frame->unref();
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
    if (host_.post_deliver(d.wg, d.subject, d.frame)) {
      deferred_.erase(deferred_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      i++;
    }
  }
  // Held publishes leave in the order they were made; the first that still cannot go stops the rest.
  while (!held_.empty() && accepting()) {
    Held& h = held_.front();
    if (!route(h.subject, h.frame)) break;
    Subscriber* c = h.conn;
    std::string id = std::move(h.id);
    held_.pop_front();
    counters_.add(k_messages_in);
    ack(c, id);
    host_.resume(c);  // may parse more of c's input, and hold another publish at the back
  }
}

void Broker::publish_home(Subject* s, Frame* f) {
  // Sequence, then write "MSG <subject> <epoch>:<seq>\n" and the WebSocket head in front of the payload.
  uint64_t seq = ++s->seq;
  char epoch[16];
  size_t epoch_len = format_epoch(s->epoch, epoch);
  uint8_t* payload = f->bytes + f->begin;
  size_t mh = write_msg_header_backwards(reinterpret_cast<char*>(payload), s->name(),
                                         std::string_view(epoch, epoch_len), seq);
  uint64_t total = mh + (f->end - f->begin);
  size_t hh = server_head_size(total);
  write_server_head(payload - mh - hh, f->opcode, total);
  f->begin -= static_cast<uint32_t>(mh + hh);

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
      deferred_.push_back(Deferred{w, s, f});
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
  for (uint32_t i = 0; i < list.size; i++) host_.send(list.items[i].who, f);
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
void Broker::subscribe(Subscriber* c, Subject* s) {
  link(c, s, wg_);
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
  Subject* s = unlink(c, k, wg_);  // moves the last subscription into slot k
  counters_.sub(k_subscriptions);
  if (it != index_.end()) {
    if (c->nsubs <= kIndexFrom / 2) index_.erase(it);
    else if (k < c->nsubs) it->second[c->subs[k].subject->name()] = k;
  }
  if (s->local(wg_).size == 0) registry_.release(s, wg_);
}

void Broker::on_leave(Subscriber* c) {
  index_.erase(c);
  while (c->nsubs) {
    Subject* s = unlink(c, c->nsubs - 1, wg_);
    counters_.sub(k_subscriptions);
    if (s->local(wg_).size == 0) registry_.release(s, wg_);
  }
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->conn == c) {
      it->subject->unref();
      it->frame->unref();
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace starling
