// Client commands (PROTOCOL.md v2): SUB (with its recovery, history and conflation forms), UNSUB, PUB,
// PING, and their replies.
#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "pubsub/broker.h"

namespace starling {

namespace {


Counter err_counter(ErrCode code) {
  switch (code) {
    case ErrCode::kBadSubject: return k_err_bad_subject;
    case ErrCode::kTooLarge: return k_err_too_large;
    case ErrCode::kLimit: return k_err_limit;
    case ErrCode::kForbidden: return k_err_forbidden;
    case ErrCode::kUnavailable: return k_err_unavailable;
    default: return k_err_bad_command;
  }
}

}  // namespace

bool Broker::on_command(Subscriber* c, uint8_t opcode, uint8_t* p, size_t len) {
  Command cmd;
  parse_command(p, len, &cmd);
  switch (cmd.kind) {
    case Cmd::Sub:
      return on_sub(c, cmd);
    case Cmd::Unsub:
      on_unsub(c, cmd.subjects);
      return true;
    case Cmd::Pub:
      return on_pub(c, opcode, cmd.subject, cmd.id, cmd.body, cmd.retained);
    case Cmd::Ping: {
      char out[5 + kMaxIdLen];
      size_t n = 4;
      std::memcpy(out, "PONG", 4);
      if (!cmd.id.empty()) {
        out[n++] = ' ';
        std::memcpy(out + n, cmd.id.data(), cmd.id.size());
        n += cmd.id.size();
      }
      reply(c, out, n);
      return true;
    }
    case Cmd::Auth:
      return authenticate(c, cmd.id);
    case Cmd::Invalid:
      reply_err(c, cmd.error, cmd.id, cmd.detail());
      return true;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Entitlement

std::string_view Broker::refusal(const Subscriber* c, Access access, std::string_view subject) const {
  if (access == kAccessPublish && (c->entitle & kEntitleAddressMayNotPublish))
    return "publishing is not allowed from this address (PublishAllowFromAddressList)";
  if (!opt_.entitlement.on) return {};
  const Permissions* p = c->perms ? c->perms : opt_.entitlement.anonymous;
  if (p->allows(access, subject)) return {};
  return c->perms ? "not permitted by the token" : "not permitted without a token; send AUTH <token> first";
}

bool Broker::authenticate(Subscriber* c, std::string_view token) {
  if (!opt_.entitlement.on) {  // nothing to check: everything is allowed, for ever
    reply(c, "AUTH ok 0", 9);
    return true;
  }
  if (token.size() > kMaxTokenLen) {
    counters_.add(k_auth_denied);
    std::string text = "AUTH invalid too large (" + std::to_string(token.size()) + " bytes, at most " +
                       std::to_string(kMaxTokenLen) + ")";
    reply(c, text.data(), text.size());
    return true;
  }
  if (c->auths >= kMaxAuthsPerPass) {
    counters_.add(k_auth_denied);
    std::string text = "AUTH invalid " + std::string(kAuthTooMany) + " (at most " + std::to_string(kMaxAuthsPerPass) +
                       " a second); the token in force stays";
    reply(c, text.data(), text.size());
    return true;
  }
  c->auths++;
  host_.authenticate(c, token);
  return false;
}

void Broker::decided(Subscriber* c, Permissions* perms, uint32_t expiry, std::string_view detail) {
  if (!perms) {
    counters_.add(k_auth_denied);
    std::string text = "AUTH invalid ";
    text.append(detail.data(), detail.size());
    reply(c, text.data(), text.size());
    return;
  }
  counters_.add(k_auth_ok);
  if (c->perms) c->perms->unref();
  c->perms = perms;
  c->expiry = expiry;
  c->entitle &= static_cast<uint8_t>(~kEntitleWarned);
  std::string text = "AUTH ok " + std::to_string(expiry);
  reply(c, text.data(), text.size());
  // Revocation by renewal: what the new token does not grant is dropped (downwards: unsubscribe moves the
  // last subscription into the slot it frees).
  for (uint32_t k = c->nsubs; k-- > 0;) {
    Subject* s = c->subs[k].subject;
    if (perms->allows(kAccessSubscribe, s->name())) continue;
    std::string detail_text = std::string(s->name()) + ": not permitted by the renewed token";
    counters_.add(k_denied_subscribes);
    reply_err(c, ErrCode::kForbidden, {}, detail_text);
    unsubscribe(c, k);
  }
}

void Broker::forget_token(Subscriber* c) {
  if (c->perms) c->perms->unref();
  c->perms = nullptr;
  c->expiry = 0;
  c->entitle &= static_cast<uint8_t>(~kEntitleWarned);
}

bool Broker::token_expired(const Subscriber* c, uint64_t now_s) const { return c->expiry && now_s >= c->expiry; }

void Broker::new_pass(Subscriber* c) { c->auths = 0; }

Broker::Expiry Broker::check_expiry(Subscriber* c, uint64_t now_s) {
  new_pass(c);
  if (!c->expiry) return Expiry::kFine;
  if (now_s >= c->expiry) {
    counters_.add(k_auth_expired);
    reply(c, "AUTH expired", 12);
    return Expiry::kExpired;
  }
  const uint64_t left = c->expiry - now_s;
  if (left <= opt_.entitlement.renew_before_s && !(c->entitle & kEntitleWarned)) {
    c->entitle |= kEntitleWarned;
    std::string text = "AUTH expiring " + std::to_string(left);
    reply(c, text.data(), text.size());
  }
  return Expiry::kFine;
}

bool Broker::on_sub(Subscriber* c, const Command& cmd) {
  // All or nothing: count the subjects new to this connection (a subject repeated in one SUB counts once,
  // its first spec wins) so that a SUB past the limit changes nothing. Cost: the specs in the message,
  // each found in O(1).
  std::vector<Spec>& fresh = scratch_;
  fresh.clear();
  std::string_view rest = cmd.subjects;  // (after "conflate=<ms>")
  for (std::string_view token = next_token(&rest); !token.empty(); token = next_token(&rest)) {
    Spec spec = parse_spec(token);
    if (find(c, spec.subject) >= 0) continue;
    const std::string_view why = refusal(c, kAccessSubscribe, spec.subject);
    if (!why.empty()) {  // (answered once per spec; a subject repeated in the SUB is refused each time)
      counters_.add(k_denied_subscribes);
      reply_err(c, ErrCode::kForbidden, {}, std::string(spec.subject) + ": " + std::string(why));
      continue;
    }
    fresh.push_back(spec);
  }
  std::stable_sort(fresh.begin(), fresh.end(), [](const Spec& a, const Spec& b) { return a.subject < b.subject; });
  fresh.erase(std::unique(fresh.begin(), fresh.end(), [](const Spec& a, const Spec& b) { return a.subject == b.subject; }),
              fresh.end());
  if (c->nsubs + fresh.size() > opt_.max_subscriptions) {
    std::string detail = "MaxSubscriptionsPerConnection (" + std::to_string(opt_.max_subscriptions) +
                         ") reached: the connection holds " + std::to_string(c->nsubs) + " and asked for " +
                         std::to_string(fresh.size()) + " more; UNSUB some first";
    reply_err(c, ErrCode::kLimit, {}, detail);
    return true;
  }
  // The answers of one SUB share MaxBacklog bytes (cache.h: a client that does not read cannot make the
  // server hold more than that for one command; the loop stops reading it while it is over MaxBacklog).
  const uint64_t allowance = fresh.empty() ? 0 : opt_.max_backlog / fresh.size();
  bool done = true;
  for (const Spec& spec : fresh) {
    Subject* s = nullptr;
    try {
      bool first = false;
      s = registry_.acquire(spec.subject, wg_, &first);
      if (first && clustered(s)) {
        s->ref();
        notify_engine(s);
      }
      // A plain SUB needs the home only for a snapshot (or, in a cluster, until the home has the engine's state
      // of the subject); the others always (their answer is the home's).
      if (spec.mode == SpecMode::kLive && !s->has_snapshot.load(std::memory_order_acquire) &&
          (!clustered(s) || s->synced.load(std::memory_order_acquire))) {
        subscribe(c, s, cmd.conflate_ms);
      } else if (!ask_home(c, s, spec, cmd.conflate_ms, allowance)) {
        done = false;
      }
    } catch (const std::bad_alloc&) {
      counters_.add(k_alloc_failures);
      if (s) release_if_unused(s);
      reply_err(c, ErrCode::kLimit, {}, std::string(spec.subject) + ": server out of memory");
    }
  }
  return done;
}

bool Broker::fetch(Subscriber* c, const Spec& spec) {
  const std::string_view why = refusal(c, kAccessSubscribe, spec.subject);
  if (!why.empty()) {
    counters_.add(k_denied_subscribes);
    reply_err(c, ErrCode::kForbidden, {}, std::string(spec.subject) + ": " + std::string(why));
    return true;
  }
  if (!cache_.enabled()) {
    reply_err(c, ErrCode::kLimit, {}, std::string(spec.subject) + ": history is off on this server (CacheSize = 0)");
    return true;
  }
  Subject* s = nullptr;
  try {
    bool first = false;
    s = registry_.acquire(spec.subject, wg_, &first);
    if (first && clustered(s)) {
      s->ref();
      notify_engine(s);
    }
    return ask_home(c, s, spec, 0, opt_.max_backlog, true);
  } catch (const std::bad_alloc&) {
    counters_.add(k_alloc_failures);
    if (s) release_if_unused(s);
    reply_err(c, ErrCode::kLimit, {}, std::string(spec.subject) + ": server out of memory");
    return true;
  }
}

void Broker::on_unsub(Subscriber* c, std::string_view subjects) {
  std::string_view rest = subjects;
  for (std::string_view s = next_token(&rest); !s.empty(); s = next_token(&rest)) {
    int k = find(c, s);
    if (k >= 0) unsubscribe(c, static_cast<uint32_t>(k));
  }
}

bool Broker::on_pub(Subscriber* c, uint8_t opcode, std::string_view subject, std::string_view id,
                    std::string_view body, bool retained) {
  if (body.size() > opt_.max_message) {
    reply_err(c, ErrCode::kTooLarge, id,
              "payload of " + std::to_string(body.size()) + " bytes is over MaxMessageSize (" +
                  std::to_string(opt_.max_message) + "); send at most " + std::to_string(opt_.max_message) +
                  " bytes");
    return true;
  }
  if (subject.compare(0, kReservedPrefix.size(), kReservedPrefix) == 0) {
    reply_err(c, ErrCode::kForbidden, id,
              std::string(subject) + ": subjects under /__starling__/ are published by the server only");
    return true;
  }
  const std::string_view why = refusal(c, kAccessPublish, subject);
  if (!why.empty()) {
    counters_.add(k_denied_publishes);
    reply_err(c, ErrCode::kForbidden, id, std::string(subject) + ": " + std::string(why));
    return true;
  }
  if (opt_.cluster) return publish_engine(c, opcode, subject, id, body, retained);
  // With the cache on, a subject exists from its first publish (its home caches it for later history and
  // recovery); without, a publish to a subject nobody subscribes to goes nowhere (PROTOCOL.md v1).
  Subject* s = cache_.enabled() ? registry_.find_or_create_ref(subject, wg_) : registry_.find_ref(subject);
  if (!s) {
    counters_.add(k_messages_in);
    if (!id.empty()) ack(c, id);
    return true;
  }
  Frame* f = publish_frame(subject, body.data(), body.size(), opcode, retained && cache_.enabled());
  if (!f) {
    registry_.forget_if_idle(s);
    s->unref();
    counters_.add(k_alloc_failures);
    reply_err(c, ErrCode::kLimit, id, "server out of memory; publish again later");
    return true;
  }
  const bool barrier = wants_barrier(c, s, id);
  if (barrier) s->ref();  // (route moves one reference; ack_when_numbered takes another)
  if (!route(s, f)) {
    if (barrier) s->unref();  // (retry takes it again when the publish goes)
    // The home cannot take it now: hold it, pause this connection, retry every loop iteration.
    counters_.add(k_publish_pauses);
    try {
      held_.push_back(Held{c, s, f, nullptr, std::string(id)});
    } catch (const std::bad_alloc&) {
      registry_.forget_if_idle(s);
      s->unref();  // never acknowledged: the host sheds this connection, which sees the reset
      f->unref();
      throw;
    }
    return false;
  }
  counters_.add(k_messages_in);
  if (barrier) return ack_when_numbered(c, s, id);
  if (!id.empty()) ack(c, id);
  return true;
}

void Broker::ack(Subscriber* c, std::string_view id) {
  if (id.empty()) return;
  char out[4 + kMaxIdLen];
  std::memcpy(out, "ACK ", 4);
  std::memcpy(out + 4, id.data(), id.size());
  reply(c, out, 4 + id.size());
}

void Broker::reply_err(Subscriber* c, ErrCode code, std::string_view id, std::string_view detail) {
  counters_.add(err_counter(code));
  std::string text = "ERR ";
  text += err_name(code);
  if (!id.empty()) {
    text += ' ';
    text.append(id.data(), id.size());
  }
  if (!detail.empty()) {
    text += ' ';
    text.append(detail.data(), detail.size());
  }
  reply(c, text.data(), text.size());
}

void Broker::reply(Subscriber* c, const char* p, size_t n) {
  Frame* f = Frame::make(kOpText, p, n);
  if (!f) counters_.add(k_alloc_failures);
  host_.send(c, f);  // nullptr: the host closes the connection (a reply it was owed cannot be made)
}

}  // namespace starling
