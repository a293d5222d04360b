// libFuzzer target for the broker with the history cache on (broker.cc, dispatch.cc, cache.cc, subject.cc):
// two workgroups' Brokers over one Registry, six connections, and a fake host whose rings hold posts until
// the input says to move them (so requests, answers, publishes and deliveries interleave in every order the
// real rings allow) and can refuse posts (full rings: held publishes, deferred deliveries). The input is a
// program: SUB with every spec form and conflation, UNSUB, PUB (+retained), raw command bytes, partial and
// full pumps, connections leaving mid-recovery, time passing (expiry, conflation), full rings.
//
// What must hold, besides no crash, leak or sanitizer report (ASan checks everything is freed when the
// brokers and registry go): on each connection and subject, between two SUB/UNSUB of it by the program,
// messages come with strictly increasing seq in one epoch; without conflation, a live message after a
// SYNC/RESYNC at N is N+1 and after a live n is n+1 (nothing lost, nothing twice); SYNC follows the
// history/recovered messages it closes.
// Build and run with `make fuzz` (needs clang++).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fake_session.h"
#include "pubsub/broker.h"

using namespace starling;

// Names the check that failed (the crash report alone would not say which).
#define FAIL() (std::fprintf(stderr, "fuzz_broker: check at line %d failed\n", __LINE__), std::abort())

namespace {

struct Post {
  unsigned wg;
  Subject* subject;
  Frame* frame;
  Request* request;
};

void drop(Post& p) {
  p.subject->unref();
  if (p.frame) p.frame->unref();
  if (p.request) {
    if (p.request->answer) p.request->answer->unref();
    delete p.request;
  }
}

struct Conn;

// FUZZ_TRACE=1 ./build/fuzz_broker <input>: prints the program and what each connection receives.
const bool kTrace = std::getenv("FUZZ_TRACE") != nullptr;

// What one connection has seen of one subject since the program last subscribed or unsubscribed it.
struct Track {
  bool conflated = false;
  bool have = false;       // `last` is a position the next live message must follow
  bool exact = false;      // ... exactly (a SYNC/RESYNC or a live message without conflation)
  std::string epoch;
  uint64_t last = 0;
  uint64_t replay_last = 0;  // last history/recovered seq since the latest SUB: SYNC names it
  bool asked = false;        // the latest SUB asked to recover after `from` in `from_epoch`
  std::string from_epoch;
  uint64_t from = 0;
};

class Host : public BrokerHost {
 public:
  bool allow_publish = true, allow_deliver = true;
  std::vector<Post> publishes, deliveries;
  std::map<const Subscriber*, Conn*>* conns = nullptr;
  std::vector<std::string>* epochs = nullptr;

  ~Host() override {
    for (Post& p : publishes) drop(p);
    for (Post& p : deliveries) drop(p);
  }
  bool post_publish(unsigned home, Subject* s, Frame* f) override { return post(publishes, allow_publish, {home, s, f, nullptr}); }
  bool post_deliver(unsigned w, Subject* s, Frame* f) override { return post(deliveries, allow_deliver, {w, s, f, nullptr}); }
  bool post_request(unsigned home, Subject* s, Request* r) override { return post(publishes, allow_publish, {home, s, nullptr, r}); }
  bool post_answer(unsigned w, Subject* s, Request* r) override { return post(deliveries, allow_deliver, {w, s, nullptr, r}); }
  void send(Subscriber* c, Frame* f) override;
  void resume(Subscriber* c) override;
  void authenticate(Subscriber* c, std::string_view) override { asked.push_back(c); }
  bool post_engine(const EngineOp&) override { return false; }  // (no cluster in this target)
  bool engine_up() const override { return false; }
  void engine_refused() override {}
  std::vector<Subscriber*> asked;   // connections waiting for a decision on their token

 private:
  static bool post(std::vector<Post>& to, bool allow, Post p) {
    if (!allow) return false;
    to.push_back(p);
    return true;
  }
};

struct Conn {
  Subscriber sub;
  unsigned wg;
  bool paused = false;
  bool raw = false;  // sent arbitrary bytes: its subscriptions may be conflated
  std::map<std::string, Track> tracks;
};

// Entitlement on: what a connection without an accepted token may do (nullptr: entitlement off).
const Permissions* g_anonymous = nullptr;

// Checks one server message against what the connection saw before.
void check(Conn& c, const fake::ServerFrame& f, std::vector<std::string>& epochs) {
  if (!f.ok) FAIL();
  const std::string& m = f.payload;
  if (kTrace) std::fprintf(stderr, "  -> conn %p: %s\n", static_cast<void*>(&c), m.substr(0, m.find('\n')).c_str());
  const size_t nl = m.find('\n');
  const std::string head = m.substr(0, nl);
  const bool msg = head.rfind("MSG ", 0) == 0;
  const bool sync = head.rfind("SYNC ", 0) == 0, resync = head.rfind("RESYNC ", 0) == 0;
  if (!msg && !sync && !resync) return;  // ACK, ERR, PONG
  const size_t s0 = head.find(' ') + 1, s1 = head.find(' ', s0);
  if (s1 == std::string::npos) FAIL();
  const std::string subject = head.substr(s0, s1 - s0);
  const size_t colon = head.find(':', s1);
  if (colon == std::string::npos) FAIL();
  const std::string epoch = head.substr(s1 + 1, colon - s1 - 1);
  const size_t end = head.find(' ', colon);
  const uint64_t seq = std::strtoull(head.substr(colon + 1, end - colon - 1).c_str(), nullptr, 10);
  const std::string kind = end == std::string::npos ? "" : head.substr(end + 1);
  if (epochs.size() < 16) epochs.push_back(epoch);
  // Nothing reaches a connection on a subject its entitlement (as it is now) does not let it subscribe to.
  if (msg && g_anonymous && !(c.sub.perms ? c.sub.perms : g_anonymous)->allows(kAccessSubscribe, subject)) FAIL();
  Track& t = c.tracks[subject];
  if (c.raw) t.conflated = true;
  if (t.have && !t.epoch.empty() && t.epoch != epoch) FAIL();  // a subscribed subject keeps its epoch
  t.epoch = epoch;
  if (sync || resync) {
    if (sync && t.replay_last && t.replay_last != seq) FAIL();  // SYNC names the last message replayed
    // A recovery that SYNCs continues exactly where the client was: it replayed from+1..N, or N is from.
    if (sync && t.asked && (t.from_epoch != epoch || (!t.replay_last && seq != t.from))) FAIL();
    t.asked = false;
    t.have = t.exact = true;
    t.last = seq;
    t.replay_last = 0;
    return;
  }
  if (kind == "history" || kind == "recovered") {
    if (t.replay_last && seq != t.replay_last + 1) FAIL();  // a replay is consecutive
    if (kind == "recovered" && (!t.asked || t.from_epoch != epoch || (!t.replay_last && seq != t.from + 1))) FAIL();
    t.replay_last = seq;
    return;
  }
  if (kind == "snapshot") return;
  if (!kind.empty()) FAIL();
  if (t.have) {
    if (seq <= t.last) FAIL();                                  // nothing twice, nothing backwards
    if (t.exact && !t.conflated && seq != t.last + 1) FAIL();   // nothing lost
  }
  t.have = true;
  t.exact = !t.conflated;
  t.last = seq;
}

void Host::send(Subscriber* s, Frame* f) {
  if (!f) return;
  auto it = conns->find(s);
  if (it != conns->end())
    for (const fake::ServerFrame& d : fake::decode_all(std::string(reinterpret_cast<const char*>(f->data()), f->size())))
      check(*it->second, d, *epochs);
  f->unref();
}

void Host::resume(Subscriber* s) {
  auto it = conns->find(s);
  if (it == conns->end()) FAIL();  // resumed after it left
  it->second->paused = false;
}

class Input {
 public:
  Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool more() const { return i_ < n_; }
  uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  std::string bytes(size_t max) {
    size_t k = byte() % (max + 1);
    std::string out;
    while (k-- && i_ < n_) out += static_cast<char>(d_[i_++]);
    return out;
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t i_ = 0;
};

const char* const kSubjects[] = {"/a", "/b", "/c/d"};

}  // namespace

// The permission sets an AUTH may be decided with (index 0: refused).
Permissions* make_set(std::vector<PermissionEntry> entries) {
  std::string problem;
  Permissions* p = Permissions::build(entries, &problem);
  if (!p) FAIL();
  return p;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Registry registry(2, 1);
  Counters c0, c1;
  Host h0, h1;
  BrokerOptions o;
  o.cache = CacheOptions{4, 50, 2048};  // 4 per subject, 50 ms, 2 KiB per workgroup: every eviction path
  o.max_backlog = 1500;                 // answers that do not fit: RESYNC, history cut short
  // The first byte: entitlement off, Basic (anyone subscribes), or token-only (nothing without a token).
  const uint8_t mode = data[0] % 3;
  data++;
  size--;
  std::unique_ptr<Permissions, void (*)(Permissions*)> anonymous(
      mode == 0 ? nullptr : make_set(mode == 1 ? std::vector<PermissionEntry>{{kAccessSubscribe, "/*"}} : std::vector<PermissionEntry>{}),
      [](Permissions* p) { if (p) p->unref(); });
  Permissions* sets[] = {nullptr, make_set({{kAccessAll, "/*"}}), make_set({{kAccessSubscribe, "/a"}}),
                         make_set({{kAccessSubscribe, "/c/*"}, {kAccessPublish, "/*"}}), make_set({}),
                         make_set({{kAccessAll, "/b"}, {kAccessSubscribe, "/c/{x}"}})};
  o.entitlement = EntitlementOptions{mode != 0, anonymous.get(), 60};
  g_anonymous = anonymous.get();
  std::map<const Subscriber*, Conn*> by_sub;
  std::vector<std::string> epochs;
  h0.conns = h1.conns = &by_sub;
  h0.epochs = h1.epochs = &epochs;
  auto b0 = std::make_unique<Broker>(registry, 0, o, h0, c0);
  auto b1 = std::make_unique<Broker>(registry, 1, o, h1, c1);
  Broker* brokers[2] = {b0.get(), b1.get()};
  Host* hosts[2] = {&h0, &h1};
  std::unique_ptr<Conn> conns[6];
  auto fresh = [&](int k) {
    if (conns[k]) {
      brokers[conns[k]->wg]->on_leave(&conns[k]->sub);
      by_sub.erase(&conns[k]->sub);
      for (Host* h : {&h0, &h1})  // (the workgroup forgets a connection's wait when it closes)
        h->asked.erase(std::remove(h->asked.begin(), h->asked.end(), &conns[k]->sub), h->asked.end());
    }
    conns[k] = std::make_unique<Conn>();
    conns[k]->wg = k < 3 ? 0 : 1;
    by_sub[&conns[k]->sub] = conns[k].get();
  };
  for (int k = 0; k < 6; k++) fresh(k);
  uint64_t now = 1000;
  auto command = [&](Conn& c, std::string msg, uint8_t opcode = kOpText) {
    if (kTrace) std::fprintf(stderr, "conn %p wg%u%s: %s\n", static_cast<void*>(&c), c.wg, c.paused ? " (paused)" : "", msg.c_str());
    if (c.paused) return;
    if (!brokers[c.wg]->on_command(&c.sub, opcode, reinterpret_cast<uint8_t*>(msg.data()), msg.size())) c.paused = true;
  };
  // Moves the first post of one host (or all of them) into the brokers.
  auto move = [&](Host& h, bool all) {
    for (bool again = true; again;) {
      again = false;
      if (!h.deliveries.empty()) {
        Post p = h.deliveries.front();
        h.deliveries.erase(h.deliveries.begin());
        if (p.request) {
          brokers[p.wg]->on_answer(p.subject, p.request);
        } else {
          brokers[p.wg]->on_deliver(p.subject, p.frame);
          p.subject->unref();
          p.frame->unref();
        }
        again = all;
      } else if (!h.publishes.empty() && brokers[h.publishes.front().wg]->accepting()) {
        Post p = h.publishes.front();
        h.publishes.erase(h.publishes.begin());
        if (p.request) brokers[p.wg]->on_request(p.subject, p.request);
        else brokers[p.wg]->on_publish(p.subject, p.frame);
        again = all;
      }
    }
  };

  // Decides the first waiting token of one host's connections with set k (0: refused); the connection reads on.
  auto decide = [&](Host& h, unsigned k) {
    if (h.asked.empty()) return;
    Subscriber* s = h.asked.front();
    h.asked.erase(h.asked.begin());
    auto it = by_sub.find(s);
    if (it == by_sub.end()) return;  // it left meanwhile
    Conn& c = *it->second;
    Permissions* p = sets[k % 6];
    if (p) p->ref();
    brokers[c.wg]->decided(s, p, 0, "refused");
    c.paused = false;
  };
  Input in(data, size);
  while (in.more()) {
    const uint8_t op = in.byte();
    const int k = in.byte() % 6;
    Conn& c = *conns[k];
    const std::string subject = kSubjects[in.byte() % 3];
    switch (op % 10) {
      case 0: {  // SUB with one or two specs
        std::string cmd = "SUB ";
        const bool conflate = in.byte() % 4 == 0;
        if (conflate) cmd += "conflate=100 ";
        const int n = 1 + in.byte() % 2;
        std::set<std::string> seen;  // the server takes the first spec of a subject in one SUB
        for (int j = 0; j < n; j++) {
          const std::string s = j == 0 ? subject : kSubjects[in.byte() % 3];
          if (j) cmd += ' ';
          const uint8_t form = in.byte();
          cmd += s;
          std::string e;
          uint64_t from = 0;
          if (form % 3 == 1) {
            e = epochs.empty() || form & 0x80 ? "zz" : epochs[in.byte() % epochs.size()];
            from = in.byte() % 12;
            cmd += "@" + e + ":" + std::to_string(from);
          } else if (form % 3 == 2) {
            cmd += "#" + std::to_string(in.byte() % 8);
          }
          // (A SUB of a subject already subscribed is ignored by the server, conflation included: a
          // conflated subscription stays conflated in the checks until the program unsubscribes it.)
          if (seen.count(s) || c.paused) continue;  // the first spec of a subject wins; a paused one sends nothing
          seen.insert(s);
          Track& t = c.tracks[s];
          const bool was = t.conflated;
          t = Track();
          t.conflated = conflate || was || c.raw;
          if (form % 3 == 1) {
            t.asked = true;
            t.from_epoch = e;
            t.from = from;
          }
        }
        command(c, cmd);
        break;
      }
      case 1:
        if (!c.paused) c.tracks.erase(subject);
        command(c, "UNSUB " + subject);
        break;
      case 2: {
        std::string cmd = "PUB " + subject;
        const uint8_t flags = in.byte();
        if (flags & 1) cmd += " id" + std::to_string(flags);
        if (flags & 2) cmd += " +retained";
        command(c, cmd + "\n" + in.bytes(300), flags & 4 ? kOpBinary : kOpText);
        break;
      }
      case 3: {  // anything at all (it may subscribe with conflation: check this connection loosely from now on)
        c.raw = true;
        for (auto& [name, t] : c.tracks) t.conflated = true;
        command(c, in.bytes(64));
        break;
      }
      case 4:
        move(*hosts[in.byte() % 2], false);
        break;
      case 5:
        move(h0, true);
        move(h1, true);
        break;
      case 6:  // the connection leaves (perhaps with answers in flight) and a new one takes its place
        fresh(k);
        break;
      case 7:
        now += in.byte();
        for (Broker* b : brokers) {
          b->set_now(now);
          b->pass();
          b->flush_conflated();
        }
        break;
      case 8: {
        Host& h = *hosts[in.byte() % 2];
        h.allow_publish = in.byte() & 1;
        h.allow_deliver = in.byte() & 1;
        for (Broker* b : brokers) b->retry();
        break;
      }
      case 9:
        if (mode && in.byte() % 2) {
          command(c, "AUTH t");
          decide(*hosts[in.byte() % 2], in.byte());
        } else {
          command(c, "PING x");
        }
        break;
    }
  }
  while (!h0.asked.empty() || !h1.asked.empty()) {
    decide(h0, 1);
    decide(h1, 1);
  }
  // Drain everything with open rings: every held publish, deferred delivery and answer must go through.
  h0.allow_publish = h0.allow_deliver = h1.allow_publish = h1.allow_deliver = true;
  for (int round = 0; round < 8; round++) {
    for (Broker* b : brokers) b->retry();
    move(h0, true);
    move(h1, true);
  }
  for (auto& k : conns)
    if (k->paused && h0.publishes.empty() && h1.publishes.empty() && h0.deliveries.empty() && h1.deliveries.empty() &&
        !b0->held_publishes() && !b1->held_publishes())
      FAIL();  // a connection left paused with nothing in flight would never read again
  for (int k = 0; k < 6; k++) {
    brokers[conns[k]->wg]->on_leave(&conns[k]->sub);
    by_sub.erase(&conns[k]->sub);
  }
  b0.reset();
  b1.reset();
  for (Permissions* p : sets)
    if (p) p->unref();
  g_anonymous = nullptr;
  return 0;
}
