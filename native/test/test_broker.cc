// Unit tests for broker.cc and dispatch.cc: a Broker over a real Registry of 2 workgroups, with a fake
// BrokerHost whose rings can refuse posts (full), which records the frames sent to each subscriber and
// the connections resumed. Plain Subscriber objects stand for connections.
#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "fake_session.h"
#include "io/memory.h"
#include "pubsub/broker.h"
#include "transport/sse.h"
#include "rng.h"

using namespace starling;

namespace {

struct Post {
  unsigned wg;
  Subject* subject;
  Frame* frame;
  Request* request = nullptr;
};

class FakeBrokerHost : public BrokerHost {
 public:
  bool allow_publish = true;   // false: the home's publish ring is full
  bool allow_deliver = true;   // false: the target's delivery ring is full
  std::vector<Post> publishes; // posts taken (their references are held here until taken back)
  std::vector<Post> deliveries;
  std::map<const Subscriber*, std::vector<std::string>> sent;  // payloads of the frames sent, per connection
  std::vector<Subscriber*> resumed;
  int refused_publishes = 0, refused_deliveries = 0, null_frames = 0;

  ~FakeBrokerHost() override {
    drop_engine_ops();
    for (Post& p : publishes) drop(p);
    for (Post& p : deliveries) drop(p);
  }
  static void drop(Post& p) {
    if (p.subject) p.subject->unref();
    if (p.frame) p.frame->unref();
    if (p.request) {
      if (p.request->answer) p.request->answer->unref();
      delete p.request;
    }
    p.subject = nullptr;
    p.frame = nullptr;
    p.request = nullptr;
  }
  bool post_request(unsigned home, Subject* s, Request* r) override {
    if (!allow_publish) {
      refused_publishes++;
      return false;
    }
    publishes.push_back(Post{home, s, nullptr, r});
    return true;
  }
  bool post_answer(unsigned w, Subject* s, Request* r) override {
    if (!allow_deliver) {
      refused_deliveries++;
      return false;
    }
    deliveries.push_back(Post{w, s, nullptr, r});
    return true;
  }

  bool post_publish(unsigned home, Subject* s, Frame* f) override {
    if (!allow_publish) {
      refused_publishes++;
      return false;
    }
    publishes.push_back(Post{home, s, f});
    return true;
  }
  bool post_deliver(unsigned w, Subject* s, Frame* f) override {
    if (!allow_deliver) {
      refused_deliveries++;
      return false;
    }
    deliveries.push_back(Post{w, s, f});
    return true;
  }
  bool render_sse = false;  // render every frame sent as an SSE session does (transport/sse.h: Frame::alt)
  void send(Subscriber* c, Frame* f) override {
    if (!f) {
      null_frames++;
      return;
    }
    if (render_sse) {
      bool empty = false;
      if (Frame* a = sse_frame(f, &empty)) a->unref();
    }
    for (const fake::ServerFrame& d : fake::decode_all(std::string(reinterpret_cast<const char*>(f->data()), f->size())))
      sent[c].push_back(d.ok ? d.payload : "<malformed frame>");
    f->unref();
  }
  void resume(Subscriber* c) override { resumed.push_back(c); }
  std::vector<std::string> tokens;  // asked of the control plane (authenticate), in order
  void authenticate(Subscriber*, std::string_view token) override { tokens.emplace_back(token); }
  // Cluster: what was handed to the link (references held here), and whether it is up.
  std::vector<EngineOp> engine_ops;
  bool engine_is_up = true, engine_takes = true;
  bool post_engine(const EngineOp& op) override {
    if (!engine_takes) return false;
    engine_ops.push_back(op);
    return true;
  }
  bool engine_up() const override { return engine_is_up; }
  int engine_refusals = 0;
  void engine_refused() override { engine_refusals++; }
  void drop_engine_ops() {
    for (EngineOp& op : engine_ops) {
      op.subject->unref();
      if (op.frame) op.frame->unref();
    }
    engine_ops.clear();
  }

  const std::vector<std::string>& to(const Subscriber& c) { return sent[&c]; }
};

// Sends one client message to the broker.
bool command(Broker& b, Subscriber& c, const std::string& msg, uint8_t opcode = kOpText) {
  std::string copy = msg;
  return b.on_command(&c, opcode, reinterpret_cast<uint8_t*>(copy.data()), copy.size());
}

// "MSG <subject> <epoch>:<seq>\n<body>" split into its parts; seq 0 when it is not a MSG.
struct Msg {
  std::string subject, epoch, body;
  uint64_t seq = 0;
};

Msg parse_msg(const std::string& s) {
  Msg m;
  if (s.compare(0, 4, "MSG ") != 0) return m;
  size_t sp = s.find(' ', 4), colon = s.find(':', sp), nl = s.find('\n');
  if (sp == std::string::npos || colon == std::string::npos || nl == std::string::npos || colon > nl) return m;
  m.subject = s.substr(4, sp - 4);
  m.epoch = s.substr(sp + 1, colon - sp - 1);
  m.seq = std::stoull(s.substr(colon + 1, nl - colon - 1));
  m.body = s.substr(nl + 1);
  return m;
}

struct World {
  Registry registry{2, 1};
  Counters counters0, counters1;
  FakeBrokerHost host0, host1;
  BrokerOptions options;
  Broker b0, b1;  // workgroups 0 and 1

  explicit World(BrokerOptions o = BrokerOptions())
      : options(o), b0(registry, 0, o, host0, counters0), b1(registry, 1, o, host1, counters1) {}
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(broker_sub_then_pub_on_a_home_subject_delivers_seq_1_2_3) {
  World w;
  Subscriber sub, pub;
  CHECK(command(w.b0, sub, "SUB /a"));
  CHECK_EQ(w.registry.size(), 1u);
  for (int i = 1; i <= 3; i++) CHECK(command(w.b0, pub, "PUB /a\nhello " + std::to_string(i)));
  const auto& got = w.host0.to(sub);
  CHECK_EQ(got.size(), 3u);
  std::string epoch;
  for (size_t i = 0; i < got.size(); i++) {
    const Msg m = parse_msg(got[i]);
    CHECK_EQ(m.subject, "/a");
    CHECK_EQ(m.seq, i + 1);
    CHECK_EQ(m.body, "hello " + std::to_string(i + 1));
    if (i == 0) epoch = m.epoch;
    CHECK_EQ(m.epoch, epoch);
    CHECK(!m.epoch.empty());
  }
  CHECK(w.host0.to(pub).empty());          // no ACK without an id
  CHECK(w.host0.publishes.empty());        // home here: nothing crossed to the other workgroup
  CHECK(w.host0.deliveries.empty());
  CHECK_EQ(w.counters0.get(k_messages_in), 3u);
  CHECK_EQ(w.counters0.get(k_messages_out), 3u);
  w.b0.on_leave(&sub);
  CHECK_EQ(w.registry.size(), 0u);
}

TEST(broker_binary_publish_keeps_its_opcode) {
  World w;
  Subscriber sub, pub;
  command(w.b0, sub, "SUB /bin");
  command(w.b0, pub, std::string("PUB /bin\n\x00\xff", 11), kOpBinary);
  const auto& got = w.host0.to(sub);
  CHECK_EQ(got.size(), 1u);
  if (got.size() == 1) CHECK_EQ(parse_msg(got[0]).body, std::string("\x00\xff", 2));
  w.b0.on_leave(&sub);
}

TEST(broker_pub_without_subscribers_is_acked_at_once) {
  World w;
  Subscriber pub;
  CHECK(command(w.b0, pub, "PUB /nobody id-1\nx"));
  CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK id-1"});
  CHECK_EQ(w.b0.held_publishes(), 0u);
}

TEST(broker_ping_and_bad_commands_are_answered) {
  World w;
  Subscriber c;
  CHECK(command(w.b0, c, "PING tok"));
  CHECK(command(w.b0, c, "PING"));
  CHECK(command(w.b0, c, "HELLO"));
  CHECK(command(w.b0, c, "SUB nope"));
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 4u);
  if (got.size() == 4) {
    CHECK_EQ(got[0], "PONG tok");
    CHECK_EQ(got[1], "PONG");
    CHECK_EQ(got[2], "ERR bad-command unknown command \"HELLO\"; commands are SUB, UNSUB, PUB, PING and AUTH (upper case)");
    CHECK_EQ(got[3], "ERR bad-subject nope: must start with '/'");
  }
}

TEST(broker_err_replies_carry_the_id_then_the_subject_and_reason) {
  World w;
  Subscriber c;
  CHECK(command(w.b0, c, "PUB /a//b p7\nx"));
  CHECK(command(w.b0, c, "sub /a"));
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 2u);
  if (got.size() == 2) {
    CHECK_EQ(got[0], "ERR bad-subject p7 /a//b: empty segment (two '/' in a row at offset 2)");
    CHECK_EQ(got[1], "ERR bad-command unknown command \"sub\"; commands are upper case: SUB");
  }
  CHECK_EQ(w.counters0.get(k_err_bad_subject), 1u);
  CHECK_EQ(w.counters0.get(k_err_bad_command), 1u);
}

TEST(broker_pub_is_acked_only_once_handed_to_its_home) {
  World w;
  Subscriber remote, pub;
  CHECK(command(w.b1, remote, "SUB /b"));  // subscribed on workgroup 1: /b's home is 1
  w.host0.allow_publish = false;           // workgroup 1's publish ring is full
  CHECK(!command(w.b0, pub, "PUB /b id1\npayload"));  // pause
  CHECK(w.host0.to(pub).empty());                    // no ACK yet
  CHECK_EQ(w.b0.held_publishes(), 1u);
  CHECK_EQ(w.counters0.get(k_publish_pauses), 1u);
  w.b0.retry();                                      // still full
  CHECK_EQ(w.b0.held_publishes(), 1u);
  CHECK(w.host0.to(pub).empty());
  CHECK(w.host0.resumed.empty());

  w.host0.allow_publish = true;
  w.b0.retry();
  CHECK_EQ(w.b0.held_publishes(), 0u);
  CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK id1"});
  CHECK(w.host0.resumed == std::vector<Subscriber*>{&pub});
  CHECK_EQ(w.host0.publishes.size(), 1u);
  if (w.host0.publishes.size() == 1) {
    // Workgroup 1 takes it from its inbox: sequenced and delivered there.
    Post p = w.host0.publishes[0];
    CHECK_EQ(p.wg, 1u);
    w.host0.publishes.clear();
    w.b1.on_publish(p.subject, p.frame);
    const auto& got = w.host1.to(remote);
    CHECK_EQ(got.size(), 1u);
    if (got.size() == 1) {
      CHECK_EQ(parse_msg(got[0]).seq, 1u);
      CHECK_EQ(parse_msg(got[0]).body, "payload");
    }
  }
  w.b1.on_leave(&remote);
  CHECK_EQ(w.registry.size(), 0u);
}

// Subscriber::ack_numbered (HTTP publishes): the ACK waits for a barrier request posted behind the publish, so
// that the client's next publish — which may come on another connection, read by another workgroup — cannot
// be numbered first. Fails on a broker that acknowledges on hand-over.
TEST(broker_ack_numbered_waits_for_the_home_to_number_the_publish) {
  const int64_t before = mem::total();
  {
    World w;
    Subscriber remote, pub, gone;
    pub.ack_numbered = gone.ack_numbered = true;
    CHECK(command(w.b1, remote, "SUB /b"));             // /b's home is workgroup 1
    CHECK(!command(w.b0, pub, "PUB /b h\none"));       // handed over, not acknowledged: paused
    CHECK(w.host0.to(pub).empty());
    CHECK_EQ(w.host0.publishes.size(), 2u);
    if (w.host0.publishes.size() == 2) {
      Post publish = w.host0.publishes[0], barrier = w.host0.publishes[1];
      w.host0.publishes.clear();
      CHECK(publish.frame != nullptr);
      CHECK(barrier.request != nullptr && barrier.request->barrier);  // behind the publish, on the same ring
      CHECK_EQ(barrier.wg, 1u);
      w.b1.on_publish(publish.subject, publish.frame);
      w.b1.on_request(barrier.subject, barrier.request);
      CHECK_EQ(w.host1.to(remote).size(), 1u);                        // numbered (and delivered) first
      CHECK_EQ(w.host1.deliveries.size(), 1u);
      if (w.host1.deliveries.size() == 1) {
        Post answer = w.host1.deliveries[0];
        w.host1.deliveries.clear();
        CHECK(answer.request->answer == nullptr);                     // a barrier carries nothing
        CHECK(w.host0.resumed.empty());
        w.b0.on_answer(answer.subject, answer.request);
      }
    }
    CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK h"});
    CHECK(w.host0.resumed == std::vector<Subscriber*>{&pub});

    // Held by a full ring, then sent: the barrier follows it; a connection that leaves meanwhile gets nothing.
    w.host0.allow_publish = false;
    CHECK(!command(w.b0, gone, "PUB /b h\ntwo"));
    w.host0.allow_publish = true;
    w.b0.retry();
    CHECK_EQ(w.host0.publishes.size(), 2u);
    CHECK(w.host0.resumed.size() == 1u);  // (not resumed by the hand-over)
    w.b0.on_leave(&gone);
    if (w.host0.publishes.size() == 2) {
      Post publish = w.host0.publishes[0], barrier = w.host0.publishes[1];
      w.host0.publishes.clear();
      w.b1.on_publish(publish.subject, publish.frame);
      w.b1.on_request(barrier.subject, barrier.request);
      if (w.host1.deliveries.size() == 1) {
        Post answer = w.host1.deliveries[0];
        w.host1.deliveries.clear();
        w.b0.on_answer(answer.subject, answer.request);
      }
    }
    CHECK(w.host0.to(gone).empty());
    CHECK_EQ(w.host1.to(remote).size(), 2u);

    // A WebSocket connection (ack_numbered false) is acknowledged on hand-over, as before.
    Subscriber ws;
    CHECK(command(w.b0, ws, "PUB /b id\nthree"));
    CHECK(w.host0.to(ws) == std::vector<std::string>{"ACK id"});
    CHECK_EQ(w.host0.publishes.size(), 1u);
    w.b1.on_leave(&remote);
    w.b0.on_leave(&pub);
  }
  CHECK_EQ(mem::total(), before);
}

TEST(broker_held_publishes_leave_in_order) {
  World w;
  Subscriber remote, p1, p2;
  command(w.b1, remote, "SUB /b");
  w.host0.allow_publish = false;
  CHECK(!command(w.b0, p1, "PUB /b one\n1"));
  CHECK(!command(w.b0, p2, "PUB /b two\n2"));
  CHECK_EQ(w.b0.held_publishes(), 2u);
  w.host0.allow_publish = true;
  w.b0.retry();
  CHECK_EQ(w.b0.held_publishes(), 0u);
  CHECK(w.host0.resumed == (std::vector<Subscriber*>{&p1, &p2}));
  CHECK(w.host0.to(p1) == std::vector<std::string>{"ACK one"});
  CHECK(w.host0.to(p2) == std::vector<std::string>{"ACK two"});
  CHECK_EQ(w.host0.publishes.size(), 2u);
  if (w.host0.publishes.size() == 2) {
    for (Post& p : w.host0.publishes) {
      w.b1.on_publish(p.subject, p.frame);
      p.subject = nullptr;
      p.frame = nullptr;
    }
    const auto& got = w.host1.to(remote);
    CHECK_EQ(got.size(), 2u);
    if (got.size() == 2) {
      CHECK_EQ(parse_msg(got[0]).body, "1");
      CHECK_EQ(parse_msg(got[1]).body, "2");
    }
  }
  w.b1.on_leave(&remote);
}

TEST(broker_deferred_delivery_stops_accepting_until_retried) {
  World w;
  Subscriber local, remote, pub;
  command(w.b0, local, "SUB /c");   // home 0
  command(w.b1, remote, "SUB /c");  // and interest on workgroup 1
  w.host0.allow_deliver = false;    // workgroup 1's delivery ring is full
  CHECK(command(w.b0, pub, "PUB /c first\n1"));
  CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK first"});  // handed to its home (here)
  CHECK_EQ(w.host0.to(local).size(), 1u);                          // local delivery is never deferred
  CHECK(!w.b0.accepting());
  CHECK_EQ(w.counters0.get(k_deliveries_deferred), 1u);

  // The home takes no new publish while a delivery is deferred.
  CHECK(!command(w.b0, pub, "PUB /c second\n2"));
  CHECK_EQ(w.b0.held_publishes(), 1u);
  CHECK_EQ(w.host0.to(local).size(), 1u);
  w.b0.retry();
  CHECK(!w.b0.accepting());
  CHECK_EQ(w.b0.held_publishes(), 1u);
  CHECK(w.host0.deliveries.empty());

  w.host0.allow_deliver = true;
  w.b0.retry();
  CHECK(w.b0.accepting());
  CHECK_EQ(w.b0.held_publishes(), 0u);
  CHECK(w.host0.resumed == std::vector<Subscriber*>{&pub});
  CHECK(w.host0.to(pub) == (std::vector<std::string>{"ACK first", "ACK second"}));
  // Both deliveries went to workgroup 1, in sequence order.
  CHECK_EQ(w.host0.deliveries.size(), 2u);
  for (size_t i = 0; i < w.host0.deliveries.size(); i++) {
    Post& p = w.host0.deliveries[i];
    CHECK_EQ(p.wg, 1u);
    w.b1.on_deliver(p.subject, p.frame);  // borrows
  }
  const auto& remote_got = w.host1.to(remote);
  CHECK_EQ(remote_got.size(), 2u);
  if (remote_got.size() == 2) {
    CHECK_EQ(parse_msg(remote_got[0]).seq, 1u);
    CHECK_EQ(parse_msg(remote_got[1]).seq, 2u);
  }
  const auto& local_got = w.host0.to(local);
  CHECK_EQ(local_got.size(), 2u);
  if (local_got.size() == 2) {
    CHECK_EQ(parse_msg(local_got[0]).seq, 1u);
    CHECK_EQ(parse_msg(local_got[1]).seq, 2u);
  }
  w.b0.on_leave(&local);
  w.b1.on_leave(&remote);
  CHECK_EQ(w.registry.size(), 0u);
}

TEST(broker_on_leave_drops_held_publishes_and_subscriptions) {
  const int64_t before = mem::total();
  {
    World w;
    Subscriber remote, c;
    command(w.b1, remote, "SUB /b");
    CHECK(command(w.b0, c, "SUB /x /y /z"));
    CHECK_EQ(w.registry.size(), 4u);
    CHECK_EQ(w.counters0.get(k_subscriptions), 3u);
    w.host0.allow_publish = false;
    CHECK(!command(w.b0, c, "PUB /b id\nheld"));
    CHECK_EQ(w.b0.held_publishes(), 1u);
    CHECK(mem::total() > before);  // the held frame
    w.b0.on_leave(&c);
    CHECK_EQ(w.b0.held_publishes(), 0u);
    CHECK_EQ(c.nsubs, 0u);
    CHECK_EQ(w.counters0.get(k_subscriptions), 0u);
    CHECK_EQ(w.registry.size(), 1u);
    CHECK_EQ(mem::total(), before);  // the held frame is freed
    w.host0.allow_publish = true;
    w.b0.retry();                    // nothing is left to hand on, acknowledge or resume
    CHECK(w.host0.publishes.empty());
    CHECK(w.host0.to(c).empty());
    CHECK(w.host0.resumed.empty());
    w.b1.on_leave(&remote);
    CHECK_EQ(w.registry.size(), 0u);
  }
  CHECK_EQ(mem::total(), before);
}

TEST(broker_unsub_releases_subjects) {
  World w;
  Subscriber a, b;
  command(w.b0, a, "SUB /s /t");
  command(w.b0, b, "SUB /s");
  CHECK_EQ(w.registry.size(), 2u);
  command(w.b0, a, "UNSUB /s /t /never");
  CHECK_EQ(a.nsubs, 0u);
  CHECK_EQ(w.registry.size(), 1u);  // b still holds /s
  Subscriber pub;
  command(w.b0, pub, "PUB /s\nm");
  CHECK(w.host0.to(a).empty());
  CHECK_EQ(w.host0.to(b).size(), 1u);
  command(w.b0, b, "UNSUB /s");
  CHECK_EQ(w.registry.size(), 0u);
}

TEST(broker_sub_limit_is_all_or_nothing_and_names_the_limit) {
  BrokerOptions o;
  o.max_subscriptions = 3;
  World w(o);
  Subscriber c;
  command(w.b0, c, "SUB /a /b");
  CHECK_EQ(c.nsubs, 2u);
  command(w.b0, c, "SUB /c /d");
  CHECK_EQ(c.nsubs, 2u);  // neither was added
  CHECK_EQ(w.registry.size(), 2u);
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 1u);
  if (got.size() == 1) {
    CHECK(got[0].rfind("ERR limit ", 0) == 0);
    CHECK(contains(got[0], "MaxSubscriptionsPerConnection (3)"));
  }
  CHECK_EQ(w.counters0.get(k_err_limit), 1u);
  // Names already held and repeated names count once.
  command(w.b0, c, "SUB /a /c /c /b");
  CHECK_EQ(c.nsubs, 3u);
  CHECK_EQ(w.host0.to(c).size(), 1u);
  command(w.b0, c, "SUB /a");  // at the limit, nothing new: fine
  CHECK_EQ(w.host0.to(c).size(), 1u);
  w.b0.on_leave(&c);
  CHECK_EQ(w.registry.size(), 0u);
}

TEST(broker_too_large_names_size_and_limit) {
  BrokerOptions o;
  o.max_message = 10;
  World w(o);
  Subscriber sub, c;
  command(w.b0, sub, "SUB /a");
  CHECK(command(w.b0, c, "PUB /a big\n" + std::string(11, 'x')));
  CHECK(command(w.b0, c, "PUB /a fits\n" + std::string(10, 'x')));
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 2u);
  if (got.size() == 2) {
    CHECK(got[0].rfind("ERR too-large big ", 0) == 0);
    CHECK(contains(got[0], "11 bytes"));
    CHECK(contains(got[0], "MaxMessageSize (10)"));
    CHECK_EQ(got[1], "ACK fits");
  }
  CHECK_EQ(w.host0.to(sub).size(), 1u);
  CHECK_EQ(w.counters0.get(k_err_too_large), 1u);
  w.b0.on_leave(&sub);
}

TEST(broker_reserved_subjects_are_forbidden_to_publish) {
  World w;
  Subscriber sub, c;
  command(w.b0, sub, "SUB /__starling__/stats");  // subscribing is allowed
  CHECK_EQ(sub.nsubs, 1u);
  CHECK(command(w.b0, c, "PUB /__starling__/stats x1\nspoof"));
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 1u);
  if (got.size() == 1)
    CHECK_EQ(got[0], "ERR forbidden x1 /__starling__/stats: subjects under /__starling__/ are published by the server only");
  CHECK(w.host0.to(sub).empty());
  CHECK_EQ(w.counters0.get(k_err_forbidden), 1u);
  w.b0.on_leave(&sub);
}

// The name index of a connection with many subscriptions must follow it down below kIndexFrom (16)
// and back up: every SUB/UNSUB/PUB still sees exactly what the connection holds.
TEST(broker_subscriptions_stay_right_when_a_connection_shrinks_and_grows_again) {
  World w;
  Subscriber c, pub;
  std::string all = "SUB";
  for (int i = 1; i <= 17; i++) all += " /a" + std::to_string(i);
  command(w.b0, c, all);
  CHECK_EQ(c.nsubs, 17u);
  command(w.b0, c, "UNSUB /a17");  // 16 left
  command(w.b0, c, "UNSUB /a1");   // 15: /a16 moves into /a1's slot
  command(w.b0, c, "SUB /b");      // 16
  command(w.b0, c, "SUB /c");      // 17
  CHECK_EQ(c.nsubs, 17u);
  // Subscribing again to what it holds adds nothing; to /a1 (dropped) adds it.
  command(w.b0, c, "SUB /b /a16");
  CHECK_EQ(c.nsubs, 17u);
  command(w.b0, c, "SUB /a1");
  CHECK_EQ(c.nsubs, 18u);
  // Every subject it holds delivers exactly once; UNSUB removes exactly the name given.
  for (const char* s : {"/a1", "/a2", "/a16", "/b", "/c"}) command(w.b0, pub, std::string("PUB ") + s + "\nm");
  CHECK_EQ(w.host0.to(c).size(), 5u);
  command(w.b0, c, "UNSUB /a16");
  CHECK_EQ(c.nsubs, 17u);
  command(w.b0, pub, "PUB /a16\nm");
  command(w.b0, pub, "PUB /b\nm");
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 6u);
  if (got.size() == 6) CHECK_EQ(parse_msg(got[5]).subject, "/b");
  // Down to nothing and back over the index size.
  std::string unsub_all = "UNSUB /a1 /b /c";
  for (int i = 2; i <= 15; i++) unsub_all += " /a" + std::to_string(i);
  command(w.b0, c, unsub_all);
  CHECK_EQ(c.nsubs, 0u);
  CHECK_EQ(w.registry.size(), 0u);
  command(w.b0, c, all);
  CHECK_EQ(c.nsubs, 17u);
  CHECK_EQ(w.registry.size(), 17u);
  w.b0.on_leave(&c);
  CHECK_EQ(w.registry.size(), 0u);
}

TEST(broker_random_sub_unsub_matches_a_model_across_the_index_thresholds) {
  // Random SUB/UNSUB of up to 3 names from a pool of 40, so the connection wanders across 8 and 16
  // subscriptions (where its name index is dropped and built) many times.
  World w;
  Subscriber c, pub;
  std::set<std::string> model;
  Rng rng(20240611);
  for (int step = 0; step < 3000; step++) {
    const bool sub = rng.below(2) == 0;
    std::string msg = sub ? "SUB" : "UNSUB";
    for (size_t n = 1 + rng.below(3); n; n--) {
      std::string name = "/n" + std::to_string(rng.below(40));
      msg += " " + name;
      if (sub) model.insert(name);
      else model.erase(name);
    }
    command(w.b0, c, msg);
    CHECK_EQ(c.nsubs, model.size());
    CHECK_EQ(w.registry.size(), model.size());
    if (step % 100 == 99) {
      // Each held subject delivers to it exactly once, and nothing else does.
      w.host0.sent[&c].clear();
      for (int i = 0; i < 40; i++) command(w.b0, pub, "PUB /n" + std::to_string(i) + "\nm");
      std::set<std::string> got;
      for (const std::string& m : w.host0.to(c)) got.insert(parse_msg(m).subject);
      CHECK(got == model);
      CHECK_EQ(w.host0.to(c).size(), model.size());
    }
  }
  w.b0.on_leave(&c);
  CHECK_EQ(w.registry.size(), 0u);
}

TEST(broker_sub_and_unsub_cost_the_names_sent_not_the_names_held) {
  // Long names sharing a long prefix: a scan of what the connection holds for each name sent (20,000 x
  // 5,000 comparisons of 250 bytes) would take many seconds; index lookups take milliseconds.
  BrokerOptions o;
  o.max_subscriptions = 100000;
  World w(o);
  Subscriber c;
  const std::string prefix = "/" + std::string(238, 'p') + "/";
  auto name = [&](int i) {
    char digits[16];
    std::snprintf(digits, sizeof digits, "%010d", i);
    return prefix + digits;
  };
  auto names = [&](const char* verb, int from, int to) {
    std::string m = verb;
    for (int i = from; i < to; i++) m += " " + name(i);
    return m;
  };
  command(w.b0, c, names("SUB", 0, 20000));
  CHECK_EQ(c.nsubs, 20000u);
  CHECK_EQ(name(0).size(), 250u);

  const std::string sub = names("SUB", 20000, 25000), unsub = names("UNSUB", 5000, 10000);
  const auto t0 = std::chrono::steady_clock::now();
  command(w.b0, c, sub);
  command(w.b0, c, unsub);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_EQ(c.nsubs, 20000u);
  CHECK_EQ(w.registry.size(), 20000u);
  CHECK(seconds < 2.0);
  if (seconds >= 2.0) std::fprintf(stderr, "  SUB + UNSUB of 5,000 names took %.2f s\n", seconds);
  CHECK(w.host0.to(c).empty());
  w.b0.on_leave(&c);
  CHECK_EQ(w.registry.size(), 0u);
}

// ---- protocol v2: history cache, snapshots, recovery, conflation ----

namespace {

BrokerOptions cached(uint32_t max_messages = 1000, uint64_t max_bytes = 1 << 20, uint64_t expire_ms = 0) {
  BrokerOptions o;
  o.cache = CacheOptions{max_messages, expire_ms, max_bytes};
  return o;
}

// "<kind> <seq> <body>" for a MSG ("live 3 m3", "recovered 4 m4"), or the line itself (SYNC, RESYNC, ACK ...)
// with the epoch replaced by "E" so that tests can compare whole streams.
std::string brief(const std::string& s) {
  if (s.compare(0, 4, "MSG ") == 0) {
    const Msg m = parse_msg(s);
    const size_t nl = s.find('\n');
    const std::string head = s.substr(0, nl);
    const size_t kind_at = head.find(' ', head.find(':'));
    const std::string kind = kind_at == std::string::npos ? "live" : head.substr(kind_at + 1);
    return kind + " " + std::to_string(m.seq) + " " + m.body;
  }
  const size_t colon = s.rfind(':');
  const size_t sp = s.rfind(' ', colon);
  if (colon != std::string::npos && sp != std::string::npos && (s.rfind("SYNC", 0) == 0 || s.rfind("RESYNC", 0) == 0))
    return s.substr(0, sp + 1) + "E" + s.substr(colon);
  return s;
}

std::vector<std::string> briefs(const std::vector<std::string>& got) {
  std::vector<std::string> out;
  for (const std::string& s : got) out.push_back(brief(s));
  return out;
}

// The epoch token of the subject's MSGs as the subscriber saw it.
std::string epoch_of(const std::vector<std::string>& got) {
  for (const std::string& s : got)
    if (s.rfind("MSG ", 0) == 0) return parse_msg(s).epoch;
  return "";
}

// Moves everything host `from` posted into the brokers, in order (publishes and requests to their home,
// deliveries and answers to their target), until nothing moves.
void pump(World& w) {
  for (bool moved = true; moved;) {
    moved = false;
    for (FakeBrokerHost* h : {&w.host0, &w.host1}) {
      std::vector<Post> publishes, deliveries;
      publishes.swap(h->publishes);
      deliveries.swap(h->deliveries);
      for (Post& p : deliveries) {
        Broker& b = p.wg == 0 ? w.b0 : w.b1;
        if (p.request) {
          b.on_answer(p.subject, p.request);
        } else {
          b.on_deliver(p.subject, p.frame);
          p.subject->unref();
          p.frame->unref();
        }
        moved = true;
      }
      for (Post& p : publishes) {
        Broker& b = p.wg == 0 ? w.b0 : w.b1;
        if (p.request) b.on_request(p.subject, p.request);
        else b.on_publish(p.subject, p.frame);
        moved = true;
      }
    }
  }
}

}  // namespace

TEST(cache_history_on_a_subject_nobody_subscribed_to) {
  World w(cached(3));
  Subscriber pub, sub;
  for (int i = 1; i <= 5; i++) CHECK(command(w.b0, pub, "PUB /h\nm" + std::to_string(i)));
  CHECK_EQ(w.registry.size(), 1u);  // the publish created it (cache on)
  CHECK_EQ(w.counters0.get(k_cached_messages), 3u);
  CHECK_EQ(w.counters0.get(k_cache_evictions), 2u);
  CHECK(command(w.b0, sub, "SUB /h#2"));
  CHECK(briefs(w.host0.to(sub)) == (std::vector<std::string>{"history 4 m4", "history 5 m5", "SYNC /h E:5"}));
  Subscriber more;
  CHECK(command(w.b0, more, "SUB /h#100 /nothing#0"));
  CHECK(briefs(w.host0.to(more)) ==
        (std::vector<std::string>{"history 3 m3", "history 4 m4", "history 5 m5", "SYNC /h E:5", "SYNC /nothing E:0"}));
  CHECK(command(w.b0, pub, "PUB /h\nm6"));
  CHECK_EQ(brief(w.host0.to(sub).back()), "live 6 m6");
  w.b0.on_leave(&sub);
  w.b0.on_leave(&more);
  CHECK_EQ(w.registry.size(), 1u);  // /h is kept for its cache, /nothing is forgotten
}

TEST(cache_snapshot_goes_first_and_survives_count_eviction) {
  World w(cached(2));
  Subscriber pub, late, hist;
  CHECK(command(w.b0, pub, "PUB /s p1 +retained\nsnap"));
  CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK p1"});
  for (int i = 2; i <= 4; i++) CHECK(command(w.b0, pub, "PUB /s\nm" + std::to_string(i)));
  CHECK(command(w.b0, late, "SUB /s"));
  CHECK(briefs(w.host0.to(late)) == std::vector<std::string>{"snapshot 1 snap"});
  CHECK(command(w.b0, pub, "PUB /s\nm5"));
  CHECK_EQ(brief(w.host0.to(late).back()), "live 5 m5");
  // The snapshot is older than the two cached messages: it comes first.
  CHECK(command(w.b0, hist, "SUB /s#2"));
  CHECK(briefs(w.host0.to(hist)) ==
        (std::vector<std::string>{"snapshot 1 snap", "history 4 m4", "history 5 m5", "SYNC /s E:5"}));
  CHECK_EQ(w.counters0.get(k_snapshots_sent), 2u);
  w.b0.on_leave(&late);
  w.b0.on_leave(&hist);
}

TEST(cache_recovery_positions_sync_or_resync) {
  World w(cached(3));
  Subscriber pub, first;
  CHECK(command(w.b0, first, "SUB /r"));
  for (int i = 1; i <= 5; i++) CHECK(command(w.b0, pub, "PUB /r\nm" + std::to_string(i)));
  const std::string e = epoch_of(w.host0.to(first));
  CHECK(!e.empty());
  auto ask = [&](const std::string& spec) {
    Subscriber c;
    CHECK(command(w.b0, c, "SUB " + spec));
    std::vector<std::string> got = briefs(w.host0.to(c));
    w.b0.on_leave(&c);
    w.host0.sent.erase(&c);  // the next Subscriber may live at the same address
    return got;
  };
  CHECK(ask("/r@" + e + ":5") == std::vector<std::string>{"SYNC /r E:5"});                        // nothing missed
  CHECK(ask("/r@" + e + ":3") == (std::vector<std::string>{"recovered 4 m4", "recovered 5 m5", "SYNC /r E:5"}));
  CHECK(ask("/r@" + e + ":2") ==
        (std::vector<std::string>{"recovered 3 m3", "recovered 4 m4", "recovered 5 m5", "SYNC /r E:5"}));
  CHECK(ask("/r@" + e + ":1") == std::vector<std::string>{"RESYNC /r E:5"});   // 2 was evicted (count 3)
  CHECK(ask("/r@" + e + ":9") == std::vector<std::string>{"RESYNC /r E:5"});   // ahead of the subject
  CHECK(ask("/r@zz:3") == std::vector<std::string>{"RESYNC /r E:5"});          // another epoch
  CHECK_EQ(w.counters0.get(k_recoveries), 3u);
  CHECK_EQ(w.counters0.get(k_resyncs), 3u);
  CHECK_EQ(w.counters0.get(k_messages_replayed), 5u);
  w.b0.on_leave(&first);
}

TEST(cache_recovery_across_workgroups_is_exact_while_the_home_keeps_publishing) {
  // The subscriber's workgroup (1) asks the home (0) while messages 6, 7 are already on their way to it and
  // 8 is published after the answer: it must get 3..7 recovered, SYNC 7, then 8 live — nothing twice, no gap.
  World w(cached());
  Subscriber home_sub, pub, c;
  CHECK(command(w.b0, home_sub, "SUB /x"));  // home 0
  for (int i = 1; i <= 5; i++) CHECK(command(w.b0, pub, "PUB /x\nm" + std::to_string(i)));
  const std::string e = epoch_of(w.host0.to(home_sub));
  CHECK(!command(w.b1, c, "SUB /x@" + e + ":2"));   // paused: waits for the home's answer
  CHECK_EQ(w.host1.publishes.size(), 1u);           // the request, not yet taken by the home
  CHECK(command(w.b0, pub, "PUB /x\nm6"));
  CHECK(command(w.b0, pub, "PUB /x\nm7"));
  CHECK_EQ(w.host0.deliveries.size(), 2u);          // 6 and 7 fan out to workgroup 1 (its interest is set)
  // The home takes the request (after 7), then 8 is published; then workgroup 1 drains its ring in order.
  std::vector<Post> req;
  req.swap(w.host1.publishes);
  w.b0.on_request(req[0].subject, req[0].request);
  CHECK(command(w.b0, pub, "PUB /x\nm8"));
  CHECK(w.host1.resumed.empty());
  pump(w);
  CHECK(briefs(w.host1.to(c)) == (std::vector<std::string>{"recovered 3 m3", "recovered 4 m4", "recovered 5 m5",
                                                            "recovered 6 m6", "recovered 7 m7", "SYNC /x E:7",
                                                            "live 8 m8"}));
  CHECK(w.host1.resumed == std::vector<Subscriber*>{&c});
  w.b1.on_leave(&c);
  w.b0.on_leave(&home_sub);
}

TEST(cache_answer_for_a_connection_that_left_releases_the_subject) {
  World w(cached(1000, 0));  // cache off: the subject is not kept for a cache, only for subscribers
  Subscriber home_sub, c;
  CHECK(command(w.b0, home_sub, "SUB /y"));
  CHECK(!command(w.b1, c, "SUB /y#5"));
  w.b1.on_leave(&c);          // gone before the answer
  pump(w);                    // the answer arrives for nobody
  CHECK(w.host1.to(c).empty());
  w.b0.on_leave(&home_sub);
  CHECK_EQ(w.registry.size(), 0u);  // workgroup 1 let go of its interest: nothing keeps /y
}

TEST(cache_expires_by_age_and_forgets_idle_subjects) {
  World w(cached(1000, 1 << 20, 1000));
  Subscriber pub, c;
  w.b0.set_now(10'000);
  CHECK(command(w.b0, pub, "PUB /t\nold"));
  w.b0.set_now(10'600);
  CHECK(command(w.b0, pub, "PUB /t\nnew"));
  w.b0.set_now(11'100);  // "old" is 1.1 s old
  CHECK(command(w.b0, c, "SUB /t#5"));
  CHECK(briefs(w.host0.to(c)) == (std::vector<std::string>{"history 2 new", "SYNC /t E:2"}));
  w.b0.on_leave(&c);
  CHECK_EQ(w.registry.size(), 1u);
  w.b0.set_now(12'000);
  w.b0.pass();           // everything expired, nobody subscribes: forgotten (a later SUB gets a new epoch)
  CHECK_EQ(w.registry.size(), 0u);
  CHECK_EQ(w.counters0.get(k_cached_messages), 0u);
  CHECK_EQ(w.counters0.get(k_cached_bytes), 0u);
}

TEST(cache_size_bound_evicts_the_oldest_message_of_any_subject_first) {
  World w(cached(1000, 4096));
  Subscriber pub, c;
  const std::string big(500, 'x');
  uint64_t now = 1000;
  for (int i = 0; i < 20; i++) {
    w.b0.set_now(now++);
    CHECK(command(w.b0, pub, "PUB /old\n" + big));
  }
  CHECK(w.counters0.get(k_cached_bytes) <= 4096u);
  const uint64_t kept_old = w.counters0.get(k_cached_messages);
  CHECK(kept_old >= 2u);
  for (int i = 0; i < 3; i++) {
    w.b0.set_now(now++);
    CHECK(command(w.b0, pub, "PUB /new\n" + big));
  }
  CHECK(w.counters0.get(k_cached_bytes) <= 4096u);
  CHECK(command(w.b0, c, "SUB /new#10"));
  CHECK_EQ(w.host0.to(c).size(), 4u);  // /new kept its 3, /old's oldest paid for them
  // Interleaved publishing: both subjects keep about the same span (the oldest message goes first,
  // whichever subject it belongs to), rather than one subject losing everything.
  for (int i = 0; i < 20; i++) {
    w.b0.set_now(now++);
    CHECK(command(w.b0, pub, std::string(i % 2 ? "PUB /new\n" : "PUB /old\n") + big));
  }
  Subscriber h_old, h_new;
  CHECK(command(w.b0, h_old, "SUB /old#100"));
  CHECK(command(w.b0, h_new, "SUB /new#100"));
  const size_t n_old = w.host0.to(h_old).size() - 1, n_new = w.host0.to(h_new).size() - 1;
  CHECK(n_old >= 1 && n_new >= 1);
  CHECK(n_old + 1 >= n_new && n_new + 1 >= n_old);
  w.b0.on_leave(&c);
  w.b0.on_leave(&h_old);
  w.b0.on_leave(&h_new);
}

// Many subjects, publishes at random, CacheSize and CacheExpireTime both biting, and caches removed from the
// middle of the eviction heap (a SUB's answer drops a subject's expired messages): whatever is kept and not
// expired is always the newest messages of all, every one of them, in order per subject (eviction takes the
// oldest of any subject, expiry takes only older ones).
TEST(cache_size_and_age_eviction_keep_exactly_the_newest_messages_of_many_subjects) {
  constexpr int kSubjects = 300, kPublishes = 6000;
  constexpr uint64_t kExpireMs = 3000;
  World w(cached(1000, 256 << 10, kExpireMs));
  Rng rng(20261203);
  Subscriber pub;
  std::vector<uint64_t> at(kPublishes);  // when message i was published
  uint64_t now = 1000;
  auto name = [](size_t k) { return "/s" + std::to_string(k); };
  for (int i = 0; i < kPublishes; i++) {
    now += 1 + rng.below(2);
    at[i] = now;
    w.b0.set_now(now);
    std::string body = std::to_string(i);
    body.resize(200, '.');
    CHECK(command(w.b0, pub, "PUB " + name(rng.below(kSubjects)) + "\n" + body));
    if (i % 3 == 0) {  // an answer that expires a subject's messages: its cache leaves the heap wherever it is
      Subscriber probe;
      CHECK(command(w.b0, probe, "SUB " + name(rng.below(kSubjects)) + "#1000"));
      w.b0.on_leave(&probe);
      w.host0.sent.erase(&probe);  // (the next probe has the same address)
    }
    if (i % 500 == 0) w.b0.pass();
  }
  CHECK(w.counters0.get(k_cached_bytes) <= (256u << 10));
  CHECK(w.counters0.get(k_cache_evictions) > 0u);
  std::vector<bool> served(kPublishes);
  size_t total = 0;
  for (size_t k = 0; k < kSubjects; k++) {
    Subscriber h;
    CHECK(command(w.b0, h, "SUB " + name(k) + "#1000"));
    int last = -1;
    for (const std::string& got : w.host0.to(h)) {
      const Msg m = parse_msg(got);
      if (!m.seq) continue;  // SYNC
      const int i = std::stoi(m.body);
      CHECK(i > last);
      last = i;
      served[i] = true;
      total++;
    }
    w.b0.on_leave(&h);
    w.host0.sent.erase(&h);
  }
  // A suffix: from the oldest message served on, every later one was served; and it reaches the last.
  int first = 0;
  while (first < kPublishes && !served[first]) first++;
  CHECK(first < kPublishes);
  CHECK_EQ(total, static_cast<size_t>(kPublishes - first));
  CHECK(at[first] + kExpireMs > now);                   // nothing expired is served
  CHECK(first == 0 || at[first - 1] + kExpireMs <= now  // the one before expired, or went for the bound
        || w.counters0.get(k_cached_bytes) + 400 > (256u << 10));
}

// MaxCachedMessagesPerSubject drops a subject's oldest by itself, leaving its entry in the home's age queue
// behind, stale. Those entries must neither evict anything (a subject flooding past its count must not take
// another subject's old message, nor a message of its own that is still among its last) nor pile up (a queue
// of every message ever published, behind one old message that never expires).
TEST(cache_count_eviction_leaves_nothing_that_evicts_or_grows) {
  {
    World w(cached(3, 8 << 20));  // CacheSize far from full, no expiry
    Subscriber pub;
    CHECK(command(w.b0, pub, "PUB /old\nfirst"));
    for (int i = 0; i < 20000; i++) CHECK(command(w.b0, pub, "PUB /busy" + std::to_string(i % 50) + "\nm"));
    CHECK_EQ(w.counters0.get(k_cached_messages), 151u);
    CHECK(w.counters0.get(k_cached_bytes) < (64u << 10));  // not 20,000 entries of 16 bytes
    Subscriber h;
    CHECK(command(w.b0, h, "SUB /old#10"));
    CHECK(briefs(w.host0.to(h)) == (std::vector<std::string>{"history 1 first", "SYNC /old E:1"}));
    w.b0.on_leave(&h);
  }
  {
    constexpr int kSubjects = 50, kPublishes = 5000;
    World w(cached(3, 48 << 10));  // room for about a hundred of the 150 a count of 3 allows
    Rng rng(7);
    Subscriber pub;
    std::vector<size_t> subject(kPublishes);
    for (int i = 0; i < kPublishes; i++) {
      subject[i] = rng.below(kSubjects);
      std::string body = std::to_string(i);
      body.resize(200, '.');
      CHECK(command(w.b0, pub, "PUB /r" + std::to_string(subject[i]) + "\n" + body));
    }
    // Which messages are among the last 3 of their subject.
    std::vector<bool> last3(kPublishes);
    std::vector<int> seen(kSubjects);
    for (int i = kPublishes - 1; i >= 0; i--) last3[i] = seen[subject[i]]++ < 3;
    std::vector<bool> served(kPublishes);
    for (size_t k = 0; k < kSubjects; k++) {
      Subscriber h;
      CHECK(command(w.b0, h, "SUB /r" + std::to_string(k) + "#10"));
      for (const std::string& got : w.host0.to(h))
        if (parse_msg(got).seq) served[std::stoi(parse_msg(got).body)] = true;
      w.b0.on_leave(&h);
      w.host0.sent.erase(&h);
    }
    int first = 0;
    while (first < kPublishes && !served[first]) first++;
    CHECK(kPublishes - first > 50);
    // Kept: from the oldest kept on, exactly the messages still among their subject's last 3.
    for (int i = first; i < kPublishes; i++) CHECK_EQ(served[i], static_cast<bool>(last3[i]));
  }
}

// The SSE renditions of cached messages live as long as they do: counted in the cache's bound (CacheSize), once
// per frame (a retained message is in the ring and the snapshot), and no longer once the cache lets them go.
TEST(cache_counts_the_sse_renditions_of_the_messages_it_keeps) {
  const int64_t before = mem::total();
  {
    World rendered(cached(1000, 1 << 20)), plain(cached(1000, 1 << 20));
    rendered.host0.render_sse = true;
    Subscriber c1, c2, pub;
    CHECK(command(rendered.b0, c1, "SUB /r"));
    CHECK(command(plain.b0, c2, "SUB /r"));
    const std::string body(300, 'y');
    for (int i = 0; i < 10; i++) {
      CHECK(command(rendered.b0, pub, "PUB /r\n" + body));
      CHECK(command(plain.b0, pub, "PUB /r\n" + body));
    }
    CHECK(command(rendered.b0, pub, "PUB /r k +retained\n" + body));
    CHECK(command(plain.b0, pub, "PUB /r k +retained\n" + body));
    const uint64_t with = rendered.counters0.get(k_cached_bytes), without = plain.counters0.get(k_cached_bytes);
    CHECK(with >= without + 11 * 300);      // every rendition counted...
    CHECK(with <= without + 11 * 2 * 400);  // ...once (the retained one is in the ring and the snapshot)
    rendered.b0.on_leave(&c1);
    plain.b0.on_leave(&c2);
  }
  {
    // The bound holds with the renditions in it; a cache that let its messages go no longer counts theirs.
    World rendered(cached(1000, 8192)), plain(cached(1000, 8192));
    rendered.host0.render_sse = true;
    Subscriber c1, c2, pub;
    CHECK(command(rendered.b0, c1, "SUB /r"));
    CHECK(command(plain.b0, c2, "SUB /r"));
    const std::string body(300, 'y');
    size_t kept_rendered = 0, kept_plain = 0;
    for (int i = 0; i < 50; i++) {
      CHECK(command(rendered.b0, pub, "PUB /r\n" + body));
      CHECK(command(plain.b0, pub, "PUB /r\n" + body));
      CHECK(rendered.counters0.get(k_cached_bytes) <= 8192u);
      kept_rendered = rendered.counters0.get(k_cached_messages);
      kept_plain = plain.counters0.get(k_cached_messages);
    }
    CHECK(kept_rendered < kept_plain);  // the renditions took room
    // Another subject (nobody subscribed: nothing rendered) pushes every /r message out of both.
    for (int i = 0; i < 50; i++) {
      CHECK(command(rendered.b0, pub, "PUB /q\n" + body));
      CHECK(command(plain.b0, pub, "PUB /q\n" + body));
    }
    CHECK_EQ(rendered.counters0.get(k_cached_bytes), plain.counters0.get(k_cached_bytes));
    rendered.b0.on_leave(&c1);
    plain.b0.on_leave(&c2);
  }
  CHECK_EQ(mem::total(), before);
}

TEST(cache_answers_fit_in_max_backlog_shared_by_the_specs_of_one_sub) {
  BrokerOptions o = cached();
  o.max_backlog = 2000;
  World w(o);
  Subscriber pub, first;
  CHECK(command(w.b0, first, "SUB /m"));
  for (int i = 1; i <= 6; i++) CHECK(command(w.b0, pub, "PUB /m\n" + std::string(500, 'a' + i)));
  const std::string e = epoch_of(w.host0.to(first));
  Subscriber a, b, h, two;
  CHECK(command(w.b0, a, "SUB /m@" + e + ":3"));   // 3 x ~510 bytes fit in 2000
  CHECK_EQ(w.host0.to(a).size(), 4u);
  CHECK(command(w.b0, b, "SUB /m@" + e + ":1"));   // 5 do not: RESYNC (nothing half-sent)
  CHECK(briefs(w.host0.to(b)) == std::vector<std::string>{"RESYNC /m E:6"});
  CHECK(command(w.b0, h, "SUB /m#6"));             // history: the newest that fit
  CHECK_EQ(w.host0.to(h).size(), 4u);
  CHECK_EQ(parse_msg(w.host0.to(h)[0]).seq, 4u);
  CHECK(command(w.b0, two, "SUB /m@" + e + ":3 /other#0"));  // two specs: 1000 bytes each
  CHECK(briefs(w.host0.to(two)) == (std::vector<std::string>{"RESYNC /m E:6", "SYNC /other E:0"}));
  for (Subscriber* s : {&first, &a, &b, &h, &two}) w.b0.on_leave(s);
}

TEST(conflation_sends_the_latest_once_per_interval) {
  World w;
  Subscriber c, pub;
  w.b0.set_now(1000);
  CHECK(command(w.b0, c, "SUB conflate=100 /q"));
  CHECK(command(w.b0, pub, "PUB /q\n1"));   // the first goes at once
  w.b0.set_now(1010);
  CHECK(command(w.b0, pub, "PUB /q\n2"));
  CHECK(command(w.b0, pub, "PUB /q\n3"));
  CHECK_EQ(w.host0.to(c).size(), 1u);
  CHECK_EQ(w.b0.flush_conflated(), 90);     // due at 1100
  w.b0.set_now(1100);
  CHECK_EQ(w.b0.flush_conflated(), -1);
  CHECK(briefs(w.host0.to(c)) == (std::vector<std::string>{"live 1 1", "live 3 3"}));
  CHECK_EQ(w.counters0.get(k_messages_conflated), 1u);
  CHECK_EQ(w.counters0.get(k_messages_out), 2u);
  w.b0.set_now(1150);
  CHECK(command(w.b0, pub, "PUB /q\n4"));   // within the interval that began at 1100: held
  w.b0.on_leave(&c);                        // the held frame is dropped with the subscription
  CHECK_EQ(w.host0.to(c).size(), 2u);
}

// ---------------------------------------------------------------------------------------------------
// Entitlement

namespace {

Permissions* permissions(std::vector<std::pair<uint8_t, std::string>> entries) {
  std::vector<PermissionEntry> list;
  for (auto& [access, pattern] : entries) list.push_back(PermissionEntry{access, pattern});
  std::string problem;
  Permissions* p = Permissions::build(list, &problem);
  CHECK(p != nullptr);
  return p;
}

// An entitled broker pair: anonymous connections may do what `anonymous` grants (the mode's default).
struct Entitled {
  Permissions* anonymous;
  World w;
  explicit Entitled(std::vector<std::pair<uint8_t, std::string>> anon)
      : anonymous(permissions(std::move(anon))), w(options(anonymous)) {}
  ~Entitled() { anonymous->unref(); }
  static BrokerOptions options(Permissions* anonymous) {
    BrokerOptions o;
    o.entitlement.on = true;
    o.entitlement.anonymous = anonymous;
    o.entitlement.renew_before_s = 60;
    return o;
  }
};

}  // namespace

TEST(broker_without_entitlement_answers_auth_ok_0_without_asking) {
  World w;
  Subscriber c;
  CHECK(command(w.b0, c, "AUTH anything"));
  CHECK(w.host0.tokens.empty());
  CHECK(w.host0.to(c) == std::vector<std::string>{"AUTH ok 0"});
}

TEST(broker_basic_anonymous_may_subscribe_but_not_publish_until_its_token_is_accepted) {
  Entitled e({{kAccessSubscribe, "/*"}});
  World& w = e.w;
  Subscriber sub, pub;
  CHECK(command(w.b0, sub, "SUB /a"));
  CHECK(command(w.b0, pub, "PUB /a 7\nx"));
  CHECK(w.host0.to(sub).empty());
  CHECK(w.host0.to(pub) ==
        std::vector<std::string>{"ERR forbidden 7 /a: not permitted without a token; send AUTH <token> first"});
  CHECK_EQ(w.counters0.get(k_denied_publishes), 1u);
  CHECK(!command(w.b0, pub, "AUTH secret-token"));  // waits for the decision
  CHECK(w.host0.tokens == std::vector<std::string>{"secret-token"});
  w.b0.decided(&pub, permissions({{kAccessAll, "/*"}}), 0, {});
  CHECK(command(w.b0, pub, "PUB /a 8\ny"));
  CHECK_EQ(w.host0.to(pub).back(), "ACK 8");
  CHECK_EQ(w.host0.to(pub)[1], "AUTH ok 0");
  CHECK_EQ(w.host0.to(sub).size(), 1u);
  CHECK_EQ(w.counters0.get(k_auth_ok), 1u);
  w.b0.on_leave(&sub);
}

TEST(broker_refused_subjects_get_err_forbidden_and_do_not_count_against_the_limit) {
  Entitled e({});
  World& w = e.w;
  Subscriber c;
  CHECK(!command(w.b0, c, "AUTH t"));
  w.b0.decided(&c, permissions({{kAccessSubscribe, "/a/*"}, {kAccessPublish, "/p"}}), 2000000000, {});
  CHECK(command(w.b0, c, "SUB /a/x /b /a /a/y/z"));
  const auto& got = w.host0.to(c);
  CHECK_EQ(got.size(), 3u);
  if (got.size() == 3) {
    CHECK_EQ(got[0], "AUTH ok 2000000000");
    CHECK_EQ(got[1], "ERR forbidden /b: not permitted by the token");
    CHECK_EQ(got[2], "ERR forbidden /a: not permitted by the token");
  }
  CHECK_EQ(c.nsubs, 2u);
  CHECK_EQ(w.counters0.get(k_denied_subscribes), 2u);
  CHECK(command(w.b0, c, "PUB /a/x 1\nz"));  // subscribe-only
  CHECK_EQ(w.host0.to(c).back(), "ERR forbidden 1 /a/x: not permitted by the token");
  CHECK(command(w.b0, c, "PUB /p 2\nz"));
  CHECK_EQ(w.host0.to(c).back(), "ACK 2");
  w.b0.on_leave(&c);
}

TEST(broker_renewal_that_drops_permissions_drops_those_subscriptions) {
  Entitled e({});
  World& w = e.w;
  Subscriber c, pub;
  command(w.b0, c, "AUTH t1");
  w.b0.decided(&c, permissions({{kAccessSubscribe, "/*"}}), 0, {});
  command(w.b0, pub, "AUTH p");
  w.b0.decided(&pub, permissions({{kAccessPublish, "/*"}}), 0, {});
  CHECK(command(w.b0, c, "SUB /keep /drop/1 /drop/2 /keep/too"));
  CHECK_EQ(c.nsubs, 4u);
  command(w.b0, c, "AUTH t2");
  w.b0.decided(&c, permissions({{kAccessSubscribe, "/keep"}, {kAccessSubscribe, "/keep/*"}}), 0, {});
  CHECK_EQ(c.nsubs, 2u);
  std::vector<std::string> got = w.host0.to(c);
  std::sort(got.begin() + 2, got.end());
  CHECK(got == (std::vector<std::string>{"AUTH ok 0", "AUTH ok 0", "ERR forbidden /drop/1: not permitted by the renewed token",
                                         "ERR forbidden /drop/2: not permitted by the renewed token"}));
  command(w.b0, pub, "PUB /drop/1\nx");
  command(w.b0, pub, "PUB /keep\ny");
  CHECK_EQ(w.host0.to(c).size(), 5u);
  CHECK_EQ(parse_msg(w.host0.to(c).back()).body, "y");
  // A refused renewal leaves the token in force.
  command(w.b0, c, "AUTH bad");
  w.b0.decided(&c, nullptr, 0, "bad signature");
  CHECK_EQ(w.host0.to(c).back(), "AUTH invalid bad signature");
  CHECK_EQ(c.nsubs, 2u);
  CHECK_EQ(w.counters0.get(k_auth_denied), 1u);
  w.b0.on_leave(&c);
}

TEST(broker_expiry_warns_once_then_expires) {
  Entitled e({});
  World& w = e.w;
  Subscriber c;
  command(w.b0, c, "AUTH t");
  w.b0.decided(&c, permissions({{kAccessSubscribe, "/*"}}), 1000, {});
  CHECK(w.b0.check_expiry(&c, 900) == Broker::Expiry::kFine);
  CHECK_EQ(w.host0.to(c).size(), 1u);
  CHECK(w.b0.check_expiry(&c, 940) == Broker::Expiry::kFine);
  CHECK_EQ(w.host0.to(c).back(), "AUTH expiring 60");
  CHECK(w.b0.check_expiry(&c, 950) == Broker::Expiry::kFine);
  CHECK_EQ(w.host0.to(c).size(), 2u);  // once
  // A renewal re-arms the warning.
  command(w.b0, c, "AUTH t2");
  w.b0.decided(&c, permissions({{kAccessSubscribe, "/*"}}), 1100, {});
  CHECK(w.b0.check_expiry(&c, 1045) == Broker::Expiry::kFine);
  CHECK_EQ(w.host0.to(c).back(), "AUTH expiring 55");
  CHECK(w.b0.check_expiry(&c, 1100) == Broker::Expiry::kExpired);
  CHECK_EQ(w.host0.to(c).back(), "AUTH expired");
  CHECK_EQ(w.counters0.get(k_auth_expired), 1u);
}

TEST(broker_auth_over_the_size_or_rate_bound_is_answered_without_asking) {
  Entitled e({});
  World& w = e.w;
  Subscriber c;
  CHECK(command(w.b0, c, "AUTH " + std::string(kMaxTokenLen + 1, 't')));
  CHECK_EQ(w.host0.to(c).back(), "AUTH invalid too large (8193 bytes, at most 8192)");
  CHECK(w.host0.tokens.empty());
  for (unsigned i = 0; i < kMaxAuthsPerPass; i++) {
    CHECK(!command(w.b0, c, "AUTH t"));
    w.b0.decided(&c, nullptr, 0, "expired");
  }
  CHECK(command(w.b0, c, "AUTH t"));
  CHECK_EQ(w.host0.to(c).back(), "AUTH invalid too many AUTH commands (at most 4 a second); the token in force stays");
  CHECK_EQ(w.host0.tokens.size(), static_cast<size_t>(kMaxAuthsPerPass));
  w.b0.check_expiry(&c, 1);  // the next pass
  CHECK(!command(w.b0, c, "AUTH t"));
  w.b0.decided(&c, nullptr, 0, "expired");
}

TEST(broker_forget_token_makes_a_connection_anonymous_without_a_reply_or_a_decision) {
  Entitled e({});
  World& w = e.w;
  Subscriber c;
  command(w.b0, c, "AUTH t");
  w.b0.decided(&c, permissions({{kAccessPublish, "/p"}}), 1000, {});
  CHECK(!w.b0.token_expired(&c, 999));
  CHECK(w.b0.token_expired(&c, 1000));
  CHECK(command(w.b0, c, "PUB /p 1\nx"));
  CHECK_EQ(w.host0.to(c).back(), "ACK 1");
  const size_t replies = w.host0.to(c).size();
  const size_t asked = w.host0.tokens.size();
  w.b0.forget_token(&c);
  CHECK_EQ(w.host0.to(c).size(), replies);  // no reply
  CHECK_EQ(w.host0.tokens.size(), asked);   // nothing asked of the control plane
  CHECK(c.perms == nullptr);
  CHECK(!w.b0.token_expired(&c, 5000));  // no expiry any more
  CHECK(w.b0.check_expiry(&c, 5000) == Broker::Expiry::kFine);
  CHECK(command(w.b0, c, "PUB /p 2\nx"));
  CHECK_EQ(w.host0.to(c).back(), "ERR forbidden 2 /p: not permitted without a token; send AUTH <token> first");
  w.b0.forget_token(&c);  // (anonymous already: nothing changes)
  CHECK(c.perms == nullptr);
}

TEST(broker_new_pass_restarts_the_auth_count_of_a_connection_check_expiry_does_not_see) {
  Entitled e({});
  World& w = e.w;
  Subscriber c;
  for (unsigned i = 0; i < kMaxAuthsPerPass; i++) {
    CHECK(!command(w.b0, c, "AUTH t"));
    w.b0.decided(&c, nullptr, 0, "expired");
  }
  CHECK(command(w.b0, c, "AUTH t"));
  CHECK(w.host0.to(c).back().rfind(std::string("AUTH invalid ") + std::string(kAuthTooMany), 0) == 0);
  w.b0.new_pass(&c);
  CHECK(!command(w.b0, c, "AUTH t"));
  w.b0.decided(&c, nullptr, 0, "expired");
}

TEST(broker_address_not_in_the_allow_list_may_not_publish_even_without_entitlement) {
  World w;
  Subscriber c;
  c.entitle |= kEntitleAddressMayNotPublish;
  CHECK(command(w.b0, c, "PUB /a 1\nx"));
  CHECK_EQ(w.host0.to(c).back(),
           "ERR forbidden 1 /a: publishing is not allowed from this address (PublishAllowFromAddressList)");
  CHECK(command(w.b0, c, "SUB /a"));
  CHECK_EQ(c.nsubs, 1u);
  w.b0.on_leave(&c);
}

// ---------------------------------------------------------------------------------------------------
// Cluster (ClusterEngine = redis): the broker's side of the link (runtime/cluster_link.h). The link is played by
// hand: its envelopes are Broker::on_sync / on_numbered / on_engine_answer calls at the subject's home, with frames
// built as the link builds them (publish_frame, then frame_message with the engine's epoch and number).

namespace {

// The last element, or a default one when there is none (a check then fails instead of crashing).
template <typename T>
T last(const std::vector<T>& v) {
  return v.empty() ? T() : v.back();
}

BrokerOptions clustered(bool guaranteed = false, uint64_t cache_bytes = 1 << 20) {
  BrokerOptions o = cached(1000, cache_bytes);
  o.cluster = true;
  o.guaranteed = guaranteed;
  return o;
}

// Epochs the engine picks (not the registry's: those start at 1 in World).
constexpr uint64_t kEpochA = 0x5eed0001234ull, kEpochB = 0x7a11ce000042ull;

std::string epoch_text(uint64_t epoch) {
  char e[16];
  return std::string(e, format_epoch(epoch, e));
}

// A live frame as the link makes one: the payload behind publish_headroom, then the engine's MSG header.
Frame* engine_frame(const std::string& name, const std::string& body, uint64_t epoch, uint64_t seq,
                    bool retained = false) {
  Frame* f = publish_frame(name, body.data(), body.size(), kOpText, retained);
  CHECK(f != nullptr);
  frame_message(f, name, epoch, seq);
  return f;
}

// The engine's state of name: epoch, last number, the entries from..last ("m<seq>"; from 0: none).
EngineSync* engine_sync(const std::string& name, uint64_t epoch, uint64_t last, uint64_t from) {
  EngineSync* y = new EngineSync();
  y->epoch = epoch;
  y->last = last;
  if (from)
    for (uint64_t q = from; q <= last; q++) y->entries.push_back(engine_frame(name, "m" + std::to_string(q), epoch, q));
  return y;
}

// The link's envelopes to the home of name (each with the link's reference to the subject).
void sync(World& w, Broker& home, const std::string& name, EngineSync* y) {
  Subject* s = w.registry.find_ref(name);
  CHECK(s != nullptr);
  if (!s) {
    delete y;
    return;
  }
  CHECK_EQ(&home == &w.b0 ? 0u : 1u, static_cast<unsigned>(s->home));
  home.on_sync(s, y);
}

void drop(World& w, Broker& home, const std::string& name) {
  EngineSync* y = new EngineSync();
  y->drop = true;
  sync(w, home, name, y);
}

void numbered(World& w, Broker& home, const std::string& name, uint64_t epoch, uint64_t seq) {
  Subject* s = w.registry.find_ref(name);
  CHECK(s != nullptr);
  if (!s) return;
  home.on_numbered(s, engine_frame(name, "m" + std::to_string(seq), epoch, seq), seq);
}

std::vector<EngineOp> ops(const FakeBrokerHost& h, EngineOp::Kind kind) {
  std::vector<EngineOp> out;
  for (const EngineOp& op : h.engine_ops)
    if (op.kind == kind) out.push_back(op);
  return out;
}

std::string payload(const Frame* f) { return std::string(reinterpret_cast<const char*>(f->data()), f->size()); }

// Every reply a fresh connection of workgroup b gets for one SUB, the home's answer pumped through.
std::vector<std::string> ask(World& w, Broker& b, const std::string& sub) {
  Subscriber c;
  command(b, c, sub);
  pump(w);
  FakeBrokerHost& h = &b == &w.b0 ? w.host0 : w.host1;
  std::vector<std::string> got = h.to(c);
  b.on_leave(&c);
  pump(w);
  h.sent.erase(&c);  // (the next Subscriber may live at the same address)
  return got;
}

}  // namespace

TEST(cluster_pub_hands_the_payload_to_the_link_and_acks_at_once_in_standard) {
  World w(clustered());
  Subscriber pub;
  const std::string body("\x00\n\xff zz", 6);
  CHECK(command(w.b0, pub, "PUB /p b1\n" + body, kOpBinary));
  CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK b1"});  // handed over: acknowledged at once
  CHECK(command(w.b0, pub, "PUB /p/q +retained\nsnap"));         // no id: no reply
  CHECK(w.host0.to(pub).size() == 1u);
  CHECK_EQ(w.host0.engine_ops.size(), 2u);
  if (w.host0.engine_ops.size() == 2) {
    const EngineOp& a = w.host0.engine_ops[0];
    CHECK(a.kind == EngineOp::kPublish);
    CHECK_EQ(static_cast<unsigned>(a.from), 0u);
    CHECK_EQ(a.subject->name(), "/p");
    CHECK_EQ(a.token, 0u);
    CHECK(a.frame != nullptr);
    if (a.frame) {
      CHECK_EQ(payload(a.frame), body);  // the bytes intact, behind the room for the home's header
      CHECK_EQ(a.frame->begin, static_cast<uint32_t>(publish_headroom(2)));
      CHECK_EQ(static_cast<unsigned>(a.frame->opcode), static_cast<unsigned>(kOpBinary));
      CHECK(!a.frame->retained);
    }
    const EngineOp& b = w.host0.engine_ops[1];
    CHECK(b.kind == EngineOp::kPublish);
    CHECK_EQ(b.subject->name(), "/p/q");
    CHECK_EQ(b.token, 0u);
    if (b.frame) {
      CHECK_EQ(payload(b.frame), "snap");
      CHECK(b.frame->retained);
    }
  }
  // Nothing numbered or delivered here: the engine is the home.
  CHECK(w.host0.publishes.empty());
  CHECK(w.host0.deliveries.empty());
  CHECK(w.host0.resumed.empty());
  CHECK_EQ(w.counters0.get(k_messages_in), 2u);
  CHECK_EQ(w.b0.held_publishes(), 0u);
}

TEST(cluster_guaranteed_pub_is_acked_or_refused_by_the_engine_answer) {
  World w(clustered(true));
  Subscriber pub;
  CHECK(!command(w.b0, pub, "PUB /g g1\none"));  // waits (paused) for the engine's answer
  CHECK(w.host0.to(pub).empty());
  CHECK_EQ(w.host0.engine_ops.size(), 1u);
  const uint64_t t1 = last(w.host0.engine_ops).token;
  CHECK(t1 != 0u);
  w.b0.on_engine_answer(t1 + 1000, EngineAnswer::kStored);  // another token: nobody
  CHECK(w.host0.to(pub).empty());
  CHECK(w.host0.resumed.empty());
  w.b0.on_engine_answer(t1, EngineAnswer::kStored);
  CHECK(w.host0.to(pub) == std::vector<std::string>{"ACK g1"});
  CHECK(w.host0.resumed == std::vector<Subscriber*>{&pub});
  w.b0.on_engine_answer(t1, EngineAnswer::kFailed);  // answered once only
  CHECK_EQ(w.host0.to(pub).size(), 1u);
  CHECK_EQ(w.host0.resumed.size(), 1u);

  // Each answer but kStored: ERR unavailable with the id and why, and the connection reads again.
  const std::pair<EngineAnswer, std::string> refusals[] = {
      {EngineAnswer::kRefused,
       "ERR unavailable g2 the cluster engine (Redis) became unreachable before this publish was sent; it was not published"},
      {EngineAnswer::kUnknown,
       "ERR unavailable g3 the link to Redis was lost before it answered: this publish may or may not have been stored; "
       "publish again if it must arrive (it may then arrive twice)"},
      {EngineAnswer::kFailed, "ERR unavailable g4 Redis refused this publish (the server log says why)"},
  };
  int id = 2;
  for (const auto& [answer, reply] : refusals) {
    const std::string gid = "g" + std::to_string(id++);
    CHECK(!command(w.b0, pub, "PUB /g " + gid + "\nx"));
    const uint64_t t = last(w.host0.engine_ops).token;
    CHECK(t != 0u);
    CHECK(last(w.host0.to(pub)).find(gid) == std::string::npos);  // nothing yet
    w.b0.on_engine_answer(t, answer);
    CHECK_EQ(last(w.host0.to(pub)), reply);
    CHECK_EQ(w.host0.resumed.size(), static_cast<size_t>(id - 1));
    CHECK(last(w.host0.resumed) == &pub);
  }
  CHECK_EQ(w.counters0.get(k_err_unavailable), 3u);
  // Tokens are distinct.
  std::set<uint64_t> tokens;
  for (const EngineOp& op : w.host0.engine_ops) tokens.insert(op.token);
  CHECK_EQ(tokens.size(), 4u);

  // Without an id there is nothing to acknowledge: handed over without a token, nothing waits.
  CHECK(command(w.b0, pub, "PUB /g\nfire and forget"));
  CHECK_EQ(last(w.host0.engine_ops).token, 0u);
  CHECK_EQ(w.host0.to(pub).size(), 4u);
  CHECK_EQ(w.host0.resumed.size(), 4u);

  // In Standard mode an HTTP publisher (ack_numbered) waits for the answer too; a WebSocket one does not.
  World s(clustered(false));
  Subscriber http, ws;
  http.ack_numbered = true;
  CHECK(command(s.b1, ws, "PUB /g w1\nx"));
  CHECK(s.host1.to(ws) == std::vector<std::string>{"ACK w1"});
  CHECK_EQ(last(s.host1.engine_ops).token, 0u);
  CHECK(!command(s.b1, http, "PUB /g h1\nx"));
  CHECK(s.host1.to(http).empty());
  const uint64_t th = last(s.host1.engine_ops).token;
  CHECK(th != 0u);
  CHECK_EQ(static_cast<unsigned>(last(s.host1.engine_ops).from), 1u);
  s.b1.on_engine_answer(th, EngineAnswer::kStored);
  CHECK(s.host1.to(http) == std::vector<std::string>{"ACK h1"});
  CHECK(s.host1.resumed == std::vector<Subscriber*>{&http});
}

TEST(cluster_pub_while_the_engine_is_down_is_refused_and_nothing_is_handed_over) {
  for (bool guaranteed : {false, true}) {
    World w(clustered(guaranteed));
    Subscriber pub;
    w.host0.engine_is_up = false;
    CHECK(command(w.b0, pub, "PUB /d d1\nx"));  // answered at once: not paused
    CHECK(command(w.b0, pub, "PUB /d\ny"));
    CHECK(w.host0.to(pub) ==
          (std::vector<std::string>{
              "ERR unavailable d1 /d: the cluster engine (Redis) is unreachable; nothing was published, publish again later",
              "ERR unavailable /d: the cluster engine (Redis) is unreachable; nothing was published, publish again later"}));
    CHECK(w.host0.engine_ops.empty());
    CHECK_EQ(w.registry.size(), 0u);  // no subject made for it
    CHECK_EQ(w.b0.held_publishes(), 0u);
    CHECK_EQ(w.counters0.get(k_err_unavailable), 2u);
    CHECK_EQ(w.counters0.get(k_messages_in), 0u);
    w.host0.engine_is_up = true;
    CHECK_EQ(command(w.b0, pub, "PUB /d d2\nz"), !guaranteed);
    CHECK_EQ(w.host0.engine_ops.size(), 1u);
  }
}

TEST(cluster_pub_held_while_the_link_ring_is_full_is_retried_in_order_and_acked_then) {
  World w(clustered());
  Subscriber p1, p2;
  w.host0.engine_takes = false;
  CHECK(!command(w.b0, p1, "PUB /h h1\none"));  // held, p1 paused
  CHECK(!command(w.b0, p2, "PUB /h h2\ntwo"));
  CHECK(w.host0.to(p1).empty());
  CHECK(w.host0.to(p2).empty());
  CHECK_EQ(w.b0.held_publishes(), 2u);
  CHECK_EQ(w.counters0.get(k_publish_pauses), 2u);
  w.b0.retry();  // still full
  CHECK_EQ(w.b0.held_publishes(), 2u);
  CHECK(w.host0.engine_ops.empty());
  CHECK(w.host0.resumed.empty());
  CHECK(w.host0.to(p1).empty());
  w.host0.engine_takes = true;
  w.b0.retry();
  CHECK_EQ(w.b0.held_publishes(), 0u);
  CHECK_EQ(w.host0.engine_ops.size(), 2u);
  if (w.host0.engine_ops.size() == 2) {
    CHECK_EQ(payload(w.host0.engine_ops[0].frame), "one");
    CHECK_EQ(payload(w.host0.engine_ops[1].frame), "two");
    CHECK_EQ(w.host0.engine_ops[0].token, 0u);
  }
  CHECK(w.host0.to(p1) == std::vector<std::string>{"ACK h1"});
  CHECK(w.host0.to(p2) == std::vector<std::string>{"ACK h2"});
  CHECK(w.host0.resumed == (std::vector<Subscriber*>{&p1, &p2}));
  CHECK_EQ(w.counters0.get(k_messages_in), 2u);

  // Guaranteed: handed over by retry with a token, acknowledged (and resumed) only by the answer.
  World g(clustered(true));
  Subscriber p;
  g.host0.engine_takes = false;
  CHECK(!command(g.b0, p, "PUB /h g1\nthree"));
  g.host0.engine_takes = true;
  g.b0.retry();
  CHECK_EQ(g.b0.held_publishes(), 0u);
  CHECK_EQ(g.host0.engine_ops.size(), 1u);
  const uint64_t t = g.host0.engine_ops.empty() ? 0 : g.host0.engine_ops[0].token;
  CHECK(t != 0u);
  CHECK(g.host0.to(p).empty());
  CHECK(g.host0.resumed.empty());
  g.b0.on_engine_answer(t, EngineAnswer::kStored);
  CHECK(g.host0.to(p) == std::vector<std::string>{"ACK g1"});
  CHECK(g.host0.resumed == std::vector<Subscriber*>{&p});
}

TEST(cluster_interest_notices_follow_the_workgroup_interest_bit) {
  World w(clustered());
  Subscriber a, b, c;
  auto notices = [](const FakeBrokerHost& h) { return ops(h, EngineOp::kInterest); };
  CHECK(!command(w.b0, a, "SUB /i"));  // (waits at its home, here, for the engine's state)
  CHECK_EQ(notices(w.host0).size(), 1u);
  if (!notices(w.host0).empty()) {
    const EngineOp op = notices(w.host0)[0];
    CHECK_EQ(op.subject->name(), "/i");
    CHECK_EQ(static_cast<unsigned>(op.from), 0u);
    CHECK(op.frame == nullptr);
    CHECK_EQ(op.token, 0u);
    CHECK_EQ(op.subject->interest.load() & 1u, 1u);  // the bit the link reads is already set
  }
  CHECK(!command(w.b0, b, "SUB /i"));  // second subscriber of this workgroup: no notice
  CHECK_EQ(notices(w.host0).size(), 1u);
  sync(w, w.b0, "/i", engine_sync("/i", kEpochA, 0, 0));
  CHECK(w.host0.resumed == (std::vector<Subscriber*>{&a, &b}));
  CHECK(command(w.b1, c, "SUB /i"));   // the other workgroup's first: its own notice
  CHECK_EQ(notices(w.host1).size(), 1u);
  if (!notices(w.host1).empty()) CHECK_EQ(static_cast<unsigned>(notices(w.host1)[0].from), 1u);
  CHECK_EQ(notices(w.host0).size(), 1u);

  CHECK(command(w.b0, a, "UNSUB /i"));  // b still subscribes
  CHECK_EQ(notices(w.host0).size(), 1u);
  CHECK(command(w.b0, b, "UNSUB /i"));  // the last: one notice, the bit already clear
  CHECK_EQ(notices(w.host0).size(), 2u);
  CHECK_EQ((w.host0.engine_ops.empty() ? 1u : last(w.host0.engine_ops).subject->interest.load() & 1u), 0u);
  CHECK(command(w.b0, b, "SUB /i"));    // first again (synced: at once)
  CHECK_EQ(notices(w.host0).size(), 3u);
  w.b0.on_leave(&b);                    // the last leaves
  CHECK_EQ(notices(w.host0).size(), 4u);
  w.b0.on_leave(&a);                    // (holds nothing)
  CHECK_EQ(notices(w.host0).size(), 4u);
  w.b1.on_leave(&c);
  CHECK_EQ(notices(w.host1).size(), 2u);
  CHECK_EQ(w.host1.engine_ops.empty() ? 1u : last(w.host1.engine_ops).subject->interest.load(), 0u);
  CHECK(ops(w.host0, EngineOp::kPublish).empty());

  // A notice the link's ring cannot take waits (counted as held) and leaves in order when it can.
  Subscriber d, e;
  w.host0.engine_takes = false;
  CHECK(!command(w.b0, d, "SUB /j"));
  CHECK(!command(w.b0, e, "SUB /k"));
  CHECK_EQ(w.b0.held_publishes(), 2u);
  CHECK_EQ(notices(w.host0).size(), 4u);
  w.b0.retry();
  CHECK_EQ(w.b0.held_publishes(), 2u);
  w.host0.engine_takes = true;
  w.b0.retry();
  CHECK_EQ(w.b0.held_publishes(), 0u);
  CHECK_EQ(notices(w.host0).size(), 6u);
  if (notices(w.host0).size() == 6) {
    CHECK_EQ(notices(w.host0)[4].subject->name(), "/j");
    CHECK_EQ(notices(w.host0)[5].subject->name(), "/k");
  }
  w.b0.on_leave(&d);
  w.b0.on_leave(&e);
}

TEST(cluster_plain_sub_waits_at_the_home_until_the_engine_state_arrives) {
  World w(clustered());
  Subscriber h, c, later;
  CHECK(!command(w.b0, h, "SUB /w"));  // home 0 (made here): waits at the home
  CHECK(!command(w.b1, c, "SUB /w"));  // another workgroup: its request goes to the home
  CHECK(w.host0.to(h).empty());
  CHECK(w.host1.to(c).empty());
  CHECK_EQ(w.host1.publishes.size(), 1u);
  if (!w.host1.publishes.empty()) CHECK_EQ(w.host1.publishes[0].wg, 0u);
  pump(w);                              // the home takes it and parks it: nothing is answered yet
  CHECK(w.host0.deliveries.empty());
  CHECK(w.host0.resumed.empty());
  CHECK(w.host1.resumed.empty());
  CHECK(w.host1.to(c).empty());

  sync(w, w.b0, "/w", engine_sync("/w", kEpochA, 2, 1));
  CHECK(w.host0.resumed == std::vector<Subscriber*>{&h});
  CHECK(w.host0.to(h).empty());        // a plain SUB: no history, no snapshot
  CHECK_EQ(w.host0.deliveries.size(), 1u);  // c's answer, to workgroup 1
  pump(w);
  CHECK(w.host1.resumed == std::vector<Subscriber*>{&c});
  CHECK(w.host1.to(c).empty());
  CHECK_EQ(h.nsubs, 1u);
  CHECK_EQ(c.nsubs, 1u);

  // PONG after the resume: the subscription is live, the next message arrives.
  CHECK(command(w.b1, c, "PING 1"));
  CHECK(command(w.b0, h, "PING 2"));
  numbered(w, w.b0, "/w", kEpochA, 3);
  pump(w);
  const std::string live3 = "MSG /w " + epoch_text(kEpochA) + ":3\nm3";
  CHECK(w.host1.to(c) == (std::vector<std::string>{"PONG 1", live3}));
  CHECK(w.host0.to(h) == (std::vector<std::string>{"PONG 2", live3}));

  // Synced now: a plain SUB elsewhere is linked at once, without asking the home.
  CHECK(command(w.b1, later, "SUB /w"));
  CHECK(w.host1.publishes.empty());
  numbered(w, w.b0, "/w", kEpochA, 4);
  pump(w);
  CHECK(briefs(w.host1.to(later)) == std::vector<std::string>{"live 4 m4"});
  for (Subscriber* s : {&c, &later}) w.b1.on_leave(s);
  w.b0.on_leave(&h);
}

TEST(cluster_first_sync_delivers_nothing_and_answers_history_and_recovery_in_the_engine_epoch) {
  World w(clustered());
  Subscriber h, c;
  CHECK(!command(w.b0, h, "SUB /f"));
  CHECK(!command(w.b1, c, "SUB /f"));
  pump(w);
  std::string old_epoch;
  {
    Subject* s = w.registry.find_ref("/f");
    old_epoch = epoch_text(s->epoch);  // the registry's, before the engine's replaces it
    s->unref();
  }
  CHECK(old_epoch != epoch_text(kEpochA));
  sync(w, w.b0, "/f", engine_sync("/f", kEpochA, 5, 2));  // the engine has 2..5
  pump(w);
  CHECK(w.host0.to(h).empty());  // not delivered: they are history
  CHECK(w.host1.to(c).empty());
  CHECK_EQ(w.counters0.get(k_messages_out), 0u);
  CHECK_EQ(w.counters0.get(k_cached_messages), 4u);

  const std::string e = epoch_text(kEpochA);
  CHECK(ask(w, w.b1, "SUB /f#3") == (std::vector<std::string>{"MSG /f " + e + ":3 history\nm3", "MSG /f " + e + ":4 history\nm4",
                                                               "MSG /f " + e + ":5 history\nm5", "SYNC /f " + e + ":5"}));
  CHECK(ask(w, w.b0, "SUB /f#9") ==
        (std::vector<std::string>{"MSG /f " + e + ":2 history\nm2", "MSG /f " + e + ":3 history\nm3",
                                  "MSG /f " + e + ":4 history\nm4", "MSG /f " + e + ":5 history\nm5", "SYNC /f " + e + ":5"}));
  CHECK(ask(w, w.b1, "SUB /f@" + e + ":3") ==
        (std::vector<std::string>{"MSG /f " + e + ":4 recovered\nm4", "MSG /f " + e + ":5 recovered\nm5", "SYNC /f " + e + ":5"}));
  CHECK(ask(w, w.b1, "SUB /f@" + e + ":1") == (std::vector<std::string>{"MSG /f " + e + ":2 recovered\nm2",
                                                                        "MSG /f " + e + ":3 recovered\nm3",
                                                                        "MSG /f " + e + ":4 recovered\nm4",
                                                                        "MSG /f " + e + ":5 recovered\nm5", "SYNC /f " + e + ":5"}));
  CHECK(ask(w, w.b1, "SUB /f@" + e + ":5") == std::vector<std::string>{"SYNC /f " + e + ":5"});
  CHECK(ask(w, w.b1, "SUB /f@" + e + ":0") == std::vector<std::string>{"RESYNC /f " + e + ":5"});  // 1: not cached
  CHECK(ask(w, w.b1, "SUB /f@" + old_epoch + ":3") == std::vector<std::string>{"RESYNC /f " + e + ":5"});

  // The next message continues the engine's numbering, to everyone.
  numbered(w, w.b0, "/f", kEpochA, 6);
  pump(w);
  CHECK(w.host0.to(h) == std::vector<std::string>{"MSG /f " + e + ":6\nm6"});
  CHECK(w.host1.to(c) == std::vector<std::string>{"MSG /f " + e + ":6\nm6"});
  w.b0.on_leave(&h);
  w.b1.on_leave(&c);
}

TEST(cluster_continuing_sync_delivers_what_follows_the_last_delivered_once_in_order) {
  World w(clustered());
  Subscriber h, r, n;
  CHECK(!command(w.b0, h, "SUB /c"));
  CHECK(!command(w.b1, r, "SUB /c"));
  pump(w);
  sync(w, w.b0, "/c", engine_sync("/c", kEpochA, 3, 1));
  pump(w);
  numbered(w, w.b0, "/c", kEpochA, 4);
  pump(w);
  CHECK(briefs(w.host0.to(h)) == std::vector<std::string>{"live 4 m4"});
  CHECK(briefs(w.host1.to(r)) == std::vector<std::string>{"live 4 m4"});

  // The link stopped following it (its cache goes) while r and h still subscribe; a recovery asked meanwhile
  // waits for the engine's state again.
  drop(w, w.b0, "/c");
  const std::string e = epoch_text(kEpochA);
  CHECK(!command(w.b1, n, "SUB /c@" + e + ":4"));
  pump(w);
  CHECK(w.host1.to(n).empty());
  // Followed again: the engine's state in the same epoch, past what the home delivered (4). 2..4 only fill the
  // cache; 5..7 go to the subscribers, in order, before n's answer (n is linked after it: none twice).
  sync(w, w.b0, "/c", engine_sync("/c", kEpochA, 7, 2));
  pump(w);
  CHECK(briefs(w.host0.to(h)) == (std::vector<std::string>{"live 4 m4", "live 5 m5", "live 6 m6", "live 7 m7"}));
  CHECK(briefs(w.host1.to(r)) == (std::vector<std::string>{"live 4 m4", "live 5 m5", "live 6 m6", "live 7 m7"}));
  CHECK(briefs(w.host1.to(n)) ==
        (std::vector<std::string>{"recovered 5 m5", "recovered 6 m6", "recovered 7 m7", "SYNC /c E:7"}));
  CHECK(last(w.host1.to(n)) == "SYNC /c " + e + ":7");
  // A message the sync covered is not delivered again; the next one is, to all three.
  numbered(w, w.b0, "/c", kEpochA, 7);
  numbered(w, w.b0, "/c", kEpochA, 8);
  pump(w);
  CHECK_EQ(brief(last(w.host0.to(h))), "live 8 m8");
  CHECK_EQ(w.host0.to(h).size(), 5u);
  CHECK_EQ(brief(last(w.host1.to(r))), "live 8 m8");
  CHECK_EQ(w.host1.to(r).size(), 5u);
  CHECK_EQ(brief(last(w.host1.to(n))), "live 8 m8");
  CHECK_EQ(w.host1.to(n).size(), 5u);
  // The cache holds the whole run: 2..4 from the sync, 5..8 as delivered.
  CHECK(briefs(ask(w, w.b1, "SUB /c#10")) ==
        (std::vector<std::string>{"history 2 m2", "history 3 m3", "history 4 m4", "history 5 m5", "history 6 m6",
                                  "history 7 m7", "history 8 m8", "SYNC /c E:8"}));
  // A continuing sync that brings nothing new delivers nothing.
  sync(w, w.b0, "/c", engine_sync("/c", kEpochA, 8, 6));
  pump(w);
  CHECK_EQ(w.host0.to(h).size(), 5u);
  CHECK_EQ(w.host1.to(r).size(), 5u);
  w.b0.on_leave(&h);
  w.b1.on_leave(&r);
  w.b1.on_leave(&n);
}

TEST(cluster_epoch_change_replaces_the_cache_and_delivers_nothing) {
  World w(clustered());
  Subscriber h, r;
  CHECK(!command(w.b0, h, "SUB /e"));
  CHECK(!command(w.b1, r, "SUB /e"));
  pump(w);
  sync(w, w.b0, "/e", engine_sync("/e", kEpochA, 5, 1));
  numbered(w, w.b0, "/e", kEpochA, 6);
  pump(w);
  CHECK(briefs(w.host1.to(r)) == std::vector<std::string>{"live 6 m6"});
  // The subject started again in the engine (another epoch): its numbers 7..9 are not after our 6.
  sync(w, w.b0, "/e", engine_sync("/e", kEpochB, 9, 7));
  pump(w);
  CHECK_EQ(w.host0.to(h).size(), 1u);
  CHECK_EQ(w.host1.to(r).size(), 1u);
  const std::string a = epoch_text(kEpochA), b = epoch_text(kEpochB);
  CHECK(ask(w, w.b1, "SUB /e@" + a + ":6") == std::vector<std::string>{"RESYNC /e " + b + ":9"});
  CHECK(ask(w, w.b1, "SUB /e@" + a + ":3") == std::vector<std::string>{"RESYNC /e " + b + ":9"});
  CHECK(ask(w, w.b0, "SUB /e@" + b + ":7") ==
        (std::vector<std::string>{"MSG /e " + b + ":8 recovered\nm8", "MSG /e " + b + ":9 recovered\nm9", "SYNC /e " + b + ":9"}));
  CHECK(briefs(ask(w, w.b1, "SUB /e#20")) ==
        (std::vector<std::string>{"history 7 m7", "history 8 m8", "history 9 m9", "SYNC /e E:9"}));
  numbered(w, w.b0, "/e", kEpochB, 10);
  pump(w);
  CHECK_EQ(last(w.host1.to(r)), "MSG /e " + b + ":10\nm10");
  CHECK_EQ(last(w.host0.to(h)), "MSG /e " + b + ":10\nm10");
  w.b0.on_leave(&h);
  w.b1.on_leave(&r);
}

TEST(cluster_numbered_gap_is_delivered_and_the_cache_restarts_its_run) {
  World w(clustered());
  Subscriber r;
  CHECK(!command(w.b1, r, "SUB /g"));  // home 1 this time; workgroup 0 asks across
  sync(w, w.b1, "/g", engine_sync("/g", kEpochA, 3, 1));
  numbered(w, w.b1, "/g", kEpochA, 4);
  numbered(w, w.b1, "/g", kEpochA, 7);  // 5 and 6 are lost (the engine no longer had them)
  pump(w);
  CHECK(briefs(w.host1.to(r)) == (std::vector<std::string>{"live 4 m4", "live 7 m7"}));
  const std::string e = epoch_text(kEpochA);
  CHECK(ask(w, w.b1, "SUB /g@" + e + ":3") == std::vector<std::string>{"RESYNC /g " + e + ":7"});
  CHECK(ask(w, w.b0, "SUB /g@" + e + ":4") == std::vector<std::string>{"RESYNC /g " + e + ":7"});
  CHECK(ask(w, w.b1, "SUB /g@" + e + ":5") == std::vector<std::string>{"RESYNC /g " + e + ":7"});
  CHECK(ask(w, w.b1, "SUB /g@" + e + ":6") == (std::vector<std::string>{"MSG /g " + e + ":7 recovered\nm7", "SYNC /g " + e + ":7"}));
  CHECK(briefs(ask(w, w.b0, "SUB /g#10")) == (std::vector<std::string>{"history 7 m7", "SYNC /g E:7"}));
  numbered(w, w.b1, "/g", kEpochA, 8);
  pump(w);
  CHECK(briefs(ask(w, w.b0, "SUB /g@" + e + ":6")) == (std::vector<std::string>{"recovered 7 m7", "recovered 8 m8", "SYNC /g E:8"}));
  CHECK(briefs(w.host1.to(r)) == (std::vector<std::string>{"live 4 m4", "live 7 m7", "live 8 m8"}));
  w.b1.on_leave(&r);
}

TEST(cluster_sync_snapshot_goes_first_to_a_plain_sub) {
  World w(clustered());
  Subscriber h, waiting, later;
  CHECK(!command(w.b0, h, "SUB /n"));
  CHECK(!command(w.b1, waiting, "SUB /n"));
  pump(w);
  EngineSync* y = engine_sync("/n", kEpochA, 5, 4);
  y->snapshot = engine_frame("/n", "snap", kEpochA, 2, true);
  y->snapshot_seq = 2;
  sync(w, w.b0, "/n", y);
  pump(w);
  const std::string e = epoch_text(kEpochA), snapshot = "MSG /n " + e + ":2 snapshot\nsnap";
  CHECK(w.host0.to(h) == std::vector<std::string>{snapshot});        // the SUBs that waited for the sync
  CHECK(w.host1.to(waiting) == std::vector<std::string>{snapshot});
  CHECK(!command(w.b1, later, "SUB /n"));                             // later: asks the home for it
  pump(w);
  CHECK(w.host1.to(later) == std::vector<std::string>{snapshot});
  CHECK(last(w.host1.resumed) == &later);
  numbered(w, w.b0, "/n", kEpochA, 6);
  pump(w);
  CHECK(w.host1.to(later) == (std::vector<std::string>{snapshot, "MSG /n " + e + ":6\nm6"}));
  CHECK(ask(w, w.b1, "SUB /n#2") == (std::vector<std::string>{snapshot, "MSG /n " + e + ":5 history\nm5",
                                                               "MSG /n " + e + ":6 history\nm6", "SYNC /n " + e + ":6"}));
  CHECK_EQ(w.counters0.get(k_snapshots_sent), 4u);
  w.b0.on_leave(&h);
  w.b1.on_leave(&waiting);
  w.b1.on_leave(&later);
}

TEST(cluster_answer_for_a_publisher_that_left_finds_nobody) {
  const int64_t before = mem::total();
  {
    World w(clustered(true));
    Subscriber* gone = new Subscriber();
    Subscriber* gone2 = new Subscriber();
    CHECK(!command(w.b0, *gone, "PUB /l g1\nx"));
    CHECK(!command(w.b0, *gone2, "PUB /l g2\ny"));
    CHECK_EQ(w.host0.engine_ops.size(), 2u);
    const uint64_t t1 = w.host0.engine_ops.size() == 2 ? w.host0.engine_ops[0].token : 0, t2 = last(w.host0.engine_ops).token;
    w.b0.on_leave(gone);
    w.b0.on_leave(gone2);
    delete gone;  // ASan: an answer that still reached them would use freed memory
    delete gone2;
    w.b0.on_engine_answer(t1, EngineAnswer::kStored);
    w.b0.on_engine_answer(t2, EngineAnswer::kUnknown);
    CHECK(w.host0.resumed.empty());
    CHECK_EQ(w.counters0.get(k_err_unavailable), 0u);
    size_t replies = 0;
    for (const auto& [who, got] : w.host0.sent) replies += got.size();
    CHECK_EQ(replies, 0u);

    // One held by a full ring when it left: never handed over, its frame freed.
    Subscriber* held = new Subscriber();
    w.host0.engine_takes = false;
    CHECK(!command(w.b0, *held, "PUB /l g3\nz"));
    CHECK_EQ(w.b0.held_publishes(), 1u);
    w.b0.on_leave(held);
    delete held;
    CHECK_EQ(w.b0.held_publishes(), 0u);
    w.host0.engine_takes = true;
    w.b0.retry();
    CHECK_EQ(w.host0.engine_ops.size(), 2u);
    CHECK(w.host0.resumed.empty());
    w.host0.drop_engine_ops();  // the link sent them
    CHECK_EQ(mem::total(), before);
  }
  CHECK_EQ(mem::total(), before);
}

// The link's drop (the node follows the subject no more) leaves nothing held: a subject nobody subscribes to is
// forgotten, whether its home cached something for it or not.
TEST(cluster_drop_releases_a_subject_nobody_follows) {
  for (uint64_t cache_bytes : {uint64_t{1} << 20, uint64_t{0}}) {
    for (uint64_t top : {uint64_t{0}, uint64_t{2}}) {
      for (bool message : {false, true}) {
        World w(clustered(false, cache_bytes));
        Subscriber c;
        CHECK(!command(w.b0, c, "SUB /x"));
        sync(w, w.b0, "/x", engine_sync("/x", kEpochA, top, top ? 1 : 0));
        if (message) numbered(w, w.b0, "/x", kEpochA, top + 1);
        CHECK_EQ(w.host0.to(c).size(), message ? 1u : 0u);
        CHECK(command(w.b0, c, "UNSUB /x"));
        CHECK_EQ(ops(w.host0, EngineOp::kInterest).size(), 2u);
        w.host0.drop_engine_ops();
        drop(w, w.b0, "/x");
        CHECK_EQ(w.registry.size(), 0u);
        if (w.registry.size() != 0)
          std::fprintf(stderr, "  still registered after the drop: cache %s, engine last %llu, %s\n", cache_bytes ? "on" : "off",
                       static_cast<unsigned long long>(top), message ? "a message after the sync" : "no message");
        // Subscribed again: it waits for the engine's state again, and starts from it.
        Subscriber d;
        CHECK(!command(w.b0, d, "SUB /x"));
        sync(w, w.b0, "/x", engine_sync("/x", kEpochB, 1, 1));
        CHECK(last(w.host0.resumed) == &d);
        CHECK(w.host0.to(d).empty());
        numbered(w, w.b0, "/x", kEpochB, 2);
        CHECK(w.host0.to(d) == std::vector<std::string>{"MSG /x " + epoch_text(kEpochB) + ":2\nm2"});
        w.b0.on_leave(&d);
      }
    }
  }
}
