// Unit tests for http_session.cc, tokens on HTTP requests (docs/http.md "Entitlement"): POST /publish and
// GET /history run under the token each carries (Authorization: Bearer, or token=), decided through
// SessionHost::on_identity as an AUTH would be, the answer coming back as an "AUTH ..." line through
// WsEngine::deliver. The fake host below plays the workgroup and the broker: it keeps the identity the
// connection would have, answers publishes and fetches by it, and decides tokens when the test says so.
#include <string>
#include <vector>

#include "check.h"
#include "fake_session.h"
#include "io/memory.h"
#include "pubsub/protocol.h"
#include "transport/ws_session.h"

using namespace starling;
using fake::Host;

namespace {

constexpr std::string_view kTooMany = "AUTH invalid too many AUTH commands (at most 4 a second); the token in force stays";

SessionOptions auth_options(bool tokens = true) {
  SessionOptions o;
  o.max_message = 1000;
  o.tokens = tokens;
  return o;
}

struct Response {
  int status = 0;
  std::string head;
  std::string body;
};

// The HTTP responses among what the host sent, parsed (status, head, body).
std::vector<Response> responses(const Host& h) {
  std::vector<Response> out;
  for (const std::string& raw : h.sent) {
    if (raw.compare(0, 9, "HTTP/1.1 ") != 0) continue;
    Response r;
    r.status = std::stoi(raw.substr(9, 3));
    const size_t end = raw.find("\r\n\r\n");
    r.head = raw.substr(0, end);
    r.body = end == std::string::npos ? "" : raw.substr(end + 4);
    out.push_back(r);
  }
  return out;
}

std::vector<int> statuses(const Host& h) {
  std::vector<int> out;
  for (const Response& r : responses(h)) out.push_back(r.status);
  return out;
}

std::string publish(std::string_view body, std::string_view headers = "", std::string_view query = "") {
  return "POST /publish?subject=/a" + std::string(query) + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" +
         std::string(headers) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

std::string bearer(std::string_view token) { return "Authorization: Bearer " + std::string(token) + "\r\n"; }

std::string history(std::string_view headers = "") {
  return "GET /history?subject=/a&n=5 HTTP/1.1\r\nHost: x\r\n" + std::string(headers) + "\r\n";
}

// A session with tokens on and a host that behaves like the workgroup and broker: identities are tokens;
// one starting with "A" may publish and read history, any other may not; a token starting with "bad" is
// refused ("bad signature"), one starting with "many" is refused at once as one decision too many.
struct Fixture {
  WsEngine engine;
  WsSession s;
  Host host;
  std::string identity;  // what the broker holds: the accepted token ("" anonymous)
  std::string asked;     // the token being decided (waiting)
  bool waiting = false;
  bool expired = false;  // the token in force has expired: presented again, it is decided again (and refused)
  std::vector<std::string> ran_as;  // the identity each publish and fetch ran under

  explicit Fixture(bool tokens = true) : engine(auth_options(tokens)) {
    host.engine = &engine;
    host.on_identity_cb = [this](Host& h, const Host::Identity& id) {
      if (id.token.empty()) {
        identity.clear();
        return Verdict::kContinue;
      }
      if (id.in_force && !expired) return Verdict::kContinue;
      if (id.token.rfind("many", 0) == 0) {
        h.reply(kTooMany);
        return Verdict::kContinue;
      }
      asked = id.token;
      waiting = true;
      return Verdict::kPause;
    };
    host.on_msg = [this](Host& h, const fake::Message&) {
      ran_as.push_back(identity);
      if (identity.rfind("A", 0) == 0) h.reply("ACK h");
      else if (identity.empty()) h.reply("ERR forbidden h /a: not permitted without a token; send AUTH <token> first");
      else h.reply("ERR forbidden h /a: not permitted by the token");
      return Verdict::kContinue;
    };
    host.on_fetch_cb = [this](Host& h, const std::string&) {
      ran_as.push_back(identity);
      if (identity.rfind("A", 0) != 0) {
        h.reply("ERR forbidden /a: not permitted by the token");
      } else {
        const std::string answer = fake::server_frame(kOpText, "MSG /a k:1 history\nx") + fake::server_frame(kOpText, "SYNC /a k:1");
        h.reply_frame(Frame::copy(answer.data(), answer.size()));
      }
      return Verdict::kContinue;
    };
  }
  ~Fixture() { engine.release(&s); }

  void feed(std::string_view bytes) { fake::feed(engine, &s, host, bytes); }
  // A frame from the broker to the session (as Workgroup::send hands it to an HTTP session).
  void deliver(std::string_view text) { engine.deliver(&s, host, Frame::make(kOpText, text.data(), text.size())); }
  // The control plane's answer to the token being decided, then the session resumed (Workgroup::apply_decisions).
  void decide() {
    CHECK(waiting);
    waiting = false;
    if (asked.rfind("bad", 0) == 0 || (expired && asked == identity)) {
      deliver(std::string("AUTH invalid ") + (expired ? "expired" : "bad signature"));
    } else {
      identity = asked;
      expired = false;
      deliver("AUTH ok 1767225600");
    }
    engine.resume(&s, host);
  }
};

}  // namespace

TEST(http_token_is_decided_before_the_publish_runs_and_stays_in_force_for_the_next_request) {
  Fixture t;
  t.feed(publish("one", bearer("A1")) + publish("two", bearer("A1")));
  CHECK_EQ(t.host.identities.size(), 1u);
  CHECK_EQ(t.host.identities[0].token, "A1");
  CHECK(!t.host.identities[0].in_force);
  CHECK(t.host.messages.empty());  // nothing runs before the decision
  CHECK(t.host.sent.empty());      // and nothing of the AUTH answer leaks out
  CHECK_EQ(t.s.ws_state, WsState::kHttpWait);
  t.decide();
  CHECK_EQ(t.host.identities.size(), 2u);
  if (t.host.identities.size() == 2) {
    CHECK_EQ(t.host.identities[1].token, "A1");
    CHECK(t.host.identities[1].in_force);  // the same token: nothing to decide
  }
  CHECK(!t.waiting);
  CHECK(statuses(t.host) == (std::vector<int>{200, 200}));
  CHECK_EQ(t.host.messages.size(), 2u);
  if (t.host.messages.size() == 2) {
    CHECK_EQ(t.host.messages[0].data, "PUB /a h\none");
    CHECK_EQ(t.host.messages[1].data, "PUB /a h\ntwo");
  }
  CHECK(t.ran_as == (std::vector<std::string>{"A1", "A1"}));
  CHECK_EQ(t.s.ws_state, WsState::kHandshake);
  CHECK(t.host.violations.empty());
}

TEST(http_request_without_a_token_runs_anonymous_and_the_next_token_is_decided_again) {
  Fixture t;
  t.feed(publish("1", bearer("A1")) + publish("2") + publish("3", bearer("A1")) + publish("4", bearer("B2")));
  t.decide();  // A1
  t.decide();  // A1 again: the anonymous request in between forgot it
  t.decide();  // B2
  CHECK(t.ran_as == (std::vector<std::string>{"A1", "", "A1", "B2"}));
  CHECK(statuses(t.host) == (std::vector<int>{200, 403, 200, 403}));
  CHECK_EQ(t.host.identities.size(), 4u);
  if (t.host.identities.size() == 4) {
    CHECK_EQ(t.host.identities[1].token, "");
    CHECK(!t.host.identities[2].in_force);
  }
  const std::vector<Response> r = responses(t.host);
  if (r.size() == 4) CHECK(r[1].body.find("\"error\":\"forbidden\"") != std::string::npos);
}

TEST(http_no_token_on_an_anonymous_connection_asks_nothing) {
  Fixture t;
  t.feed(publish("1") + history());
  CHECK(t.host.identities.empty());
  CHECK(statuses(t.host) == (std::vector<int>{403, 403}));
}

TEST(http_token_query_parameter_is_decoded_bearer_scheme_is_case_insensitive_and_both_must_agree) {
  {
    Fixture t;
    t.feed(publish("1", "", "&token=A%2Eb.c"));
    CHECK_EQ(t.asked, "A.b.c");
    t.decide();
    t.feed(publish("2", "authorization: bEARer   A.b.c  \r\n", "&token=A.b.c"));
    CHECK(statuses(t.host) == (std::vector<int>{200, 200}));
    CHECK_EQ(t.host.identities.size(), 2u);
  }
  const char* bad[][2] = {
      {"Authorization: Bearer A1\r\n", "&token=A2"},  // disagree
      {"Authorization: Basic dTpw\r\n", ""},          // another scheme
      {"Authorization: Bearer\r\n", ""},              // no token
      {"Authorization: Bearer a b\r\n", ""},          // two words
      {"", "&token=A1&token=A1"},                     // twice
      {"", "&token=A%201"},                           // a space
      {"", "&token=%zz"},                             // does not decode
  };
  for (const auto& c : bad) {
    Fixture t;
    t.feed(publish("body", c[0], c[1]) + publish("after"));
    CHECK(statuses(t.host) == (std::vector<int>{400, 403}));  // the connection goes on
    CHECK(t.host.identities.empty());
    CHECK(t.ran_as == (std::vector<std::string>{""}));  // only the second request ran
  }
}

TEST(http_refused_token_answers_401_with_the_detail_drops_the_body_and_keeps_the_connection) {
  for (const bool chunked : {false, true}) {
    Fixture t;
    std::string req;
    if (chunked) {
      req = "POST /publish?subject=/a HTTP/1.1\r\nHost: x\r\n" + bearer("bad1") +
            "Transfer-Encoding: chunked\r\n\r\n";
      t.feed(req);
      t.decide();  // the body has not arrived: it is dropped as it comes
      t.feed("3\r\nabc\r\n0\r\n\r\n" + publish("next", bearer("A1")));
    } else {
      t.feed(publish("abc", bearer("bad1")) + publish("next", bearer("A1")));
      t.decide();
    }
    t.decide();  // A1
    CHECK(statuses(t.host) == (std::vector<int>{401, 200}));
    const std::vector<Response> r = responses(t.host);
    if (r.size() == 2) {
      CHECK(r[0].head.find("\r\nWWW-Authenticate: Bearer\r\n") != std::string::npos);
      CHECK_EQ(r[0].body, "{\"ok\":false,\"error\":\"unauthorized\",\"detail\":\"bad signature\"}");
      CHECK(r[0].head.find("Connection: close") == std::string::npos);
    }
    CHECK_EQ(t.host.messages.size(), 1u);  // only the second publish
    if (t.host.messages.size() == 1) CHECK_EQ(t.host.messages[0].data, "PUB /a h\nnext");
    CHECK(t.host.violations.empty());
  }
}

TEST(http_refused_token_leaves_the_token_in_force) {
  Fixture t;
  t.feed(publish("1", bearer("A1")) + publish("2", bearer("bad")) + publish("3", bearer("A1")));
  t.decide();
  t.decide();
  CHECK(!t.waiting);  // A1 is still in force: the third request is not decided again
  CHECK(statuses(t.host) == (std::vector<int>{200, 401, 200}));
  CHECK(t.host.identities.back().in_force);
}

TEST(http_one_token_change_too_many_answers_429_with_retry_after) {
  Fixture t;
  t.feed(publish("dropped", bearer("many1")) + history(bearer("many2")) + publish("ok"));
  CHECK(statuses(t.host) == (std::vector<int>{429, 429, 403}));
  const std::vector<Response> r = responses(t.host);
  if (r.size() == 3) {
    CHECK(r[0].head.find("\r\nRetry-After: 1\r\n") != std::string::npos);
    CHECK(r[0].body.find("\"error\":\"too-many-tokens\"") != std::string::npos);
    CHECK(r[0].body.find("one connection per identity") != std::string::npos);
  }
  CHECK(t.ran_as == (std::vector<std::string>{""}));
}

TEST(http_history_waits_for_its_token_then_fetches_under_it) {
  Fixture t;
  t.feed(history(bearer("A1")));
  CHECK(t.host.fetches.empty());
  CHECK(t.host.sent.empty());
  t.decide();  // (nothing of its input is left to parse: the resume runs it)
  CHECK(t.host.fetches == (std::vector<std::string>{"/a#5"}));
  CHECK(statuses(t.host) == (std::vector<int>{200}));
  const std::vector<Response> r = responses(t.host);
  if (r.size() == 1) CHECK(r[0].body.find("\"text\":\"x\"") != std::string::npos);
  t.feed(history(bearer("bad")));
  t.decide();
  t.feed(history());
  CHECK(statuses(t.host) == (std::vector<int>{200, 401, 403}));
  CHECK(t.ran_as == (std::vector<std::string>{"A1", ""}));
}

TEST(http_expired_token_in_force_is_decided_again_and_refused) {
  Fixture t;
  t.feed(publish("1", bearer("A1")));
  t.decide();
  t.expired = true;
  t.feed(publish("2", bearer("A1")));
  CHECK(t.waiting);
  CHECK(t.host.identities.back().in_force);
  t.decide();
  CHECK(statuses(t.host) == (std::vector<int>{200, 401}));
  const std::vector<Response> r = responses(t.host);
  if (r.size() == 2) CHECK(r[1].body.find("\"detail\":\"expired\"") != std::string::npos);
  CHECK_EQ(t.host.messages.size(), 1u);
}

TEST(http_auth_lines_from_the_broker_never_become_answers) {
  Fixture t;
  t.deliver("AUTH expiring 30");  // idle between requests
  CHECK(t.host.sent.empty());
  bool hold = true;
  t.host.on_msg = [&](Host& h, const fake::Message&) {
    if (!hold) h.reply("ACK h");
    return Verdict::kContinue;
  };
  t.feed(publish("1"));
  CHECK_EQ(t.s.ws_state, WsState::kHttpWait);
  t.deliver("AUTH expiring 30");  // waiting for the ACK
  t.deliver("AUTH expired");
  CHECK(t.host.sent.empty());
  t.deliver("ACK h");
  CHECK(statuses(t.host) == (std::vector<int>{200}));
  t.host.on_fetch_cb = [](Host&, const std::string&) { return Verdict::kContinue; };
  t.feed(history());
  t.deliver("AUTH expiring 10");  // waiting for a history answer: not taken for it
  t.deliver("SYNC /a k:0");
  CHECK(statuses(t.host) == (std::vector<int>{200, 200}));
  // While a token is decided, an AUTH line that is not its answer changes nothing.
  t.feed(publish("2", bearer("A1")));
  t.deliver("AUTH expiring 5");
  CHECK(t.waiting);
  CHECK_EQ(t.s.ws_state, WsState::kHttpWait);
  hold = false;
  t.decide();
  CHECK(statuses(t.host) == (std::vector<int>{200, 200, 200}));
  CHECK(t.host.violations.empty());
}

TEST(http_tokens_are_not_looked_at_when_entitlement_is_off) {
  Fixture t(false);
  t.identity = "A-everything";  // (entitlement off: everything is allowed)
  t.feed(publish("1", bearer("x"), "&token=y") + publish("2", "Authorization: Basic dTpw\r\n") + history(bearer("z")));
  CHECK(t.host.identities.empty());
  CHECK(statuses(t.host) == (std::vector<int>{200, 200, 200}));
}

TEST(http_upgrade_or_event_stream_after_a_request_with_a_token_starts_anonymous) {
  {
    Fixture t;
    t.feed(publish("1", bearer("A1")));
    t.decide();
    t.feed(fake::kUpgrade);
    CHECK_EQ(t.s.ws_state, WsState::kOpen);
    CHECK_EQ(t.host.identities.back().token, "");
    CHECK_EQ(t.identity, "");
  }
  {
    Fixture t;
    t.feed(history(bearer("A1")));
    t.decide();
    t.feed("GET /sse?subject=/a&token=B2 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK_EQ(t.s.ws_state, WsState::kSse);
    CHECK_EQ(t.host.identities.back().token, "");  // forgotten before the stream's own token= is decided
    CHECK_EQ(t.host.open_token, "B2");
  }
  {
    Fixture t;  // no token in force: nothing to forget
    t.feed(fake::kUpgrade);
    CHECK(t.host.identities.empty());
  }
}

TEST(http_token_flow_survives_any_split_of_the_input) {
  const std::string input = publish("one", bearer("A1")) + publish("two") + history(bearer("A1")) +
                            "POST /publish?subject=/a HTTP/1.1\r\nHost: x\r\n" + bearer("bad") +
                            "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + publish("three", bearer("A1"));
  for (size_t cut = 1; cut < input.size(); cut++) {
    Fixture t;
    for (const std::string& piece : {input.substr(0, cut), input.substr(cut)}) {
      while (t.waiting) t.decide();
      t.feed(piece);
    }
    while (t.waiting) t.decide();
    CHECK(statuses(t.host) == (std::vector<int>{200, 403, 200, 401, 200}));
    CHECK(t.ran_as == (std::vector<std::string>{"A1", "", "A1", "A1"}));
    CHECK(t.host.violations.empty());
  }
}

TEST(http_token_in_force_is_charged_and_returned_with_the_connection) {
  const int64_t before = mem::total();
  {
    Fixture t;
    const std::string token = "A" + std::string(4000, 't');
    t.feed(publish("1", bearer(token)));
    t.decide();
    // Between requests the record of the token in force is held (and charged): at least the token's bytes.
    CHECK(mem::total() - before >= static_cast<int64_t>(token.size()));
    t.feed(publish("2"));  // anonymous: the record goes
    CHECK(mem::total() - before < static_cast<int64_t>(token.size()));
    t.feed(publish("3", bearer(token)));
    t.decide();
    CHECK(statuses(t.host) == (std::vector<int>{200, 403, 200}));
  }
  CHECK_EQ(mem::total(), before);
  {
    Fixture t;  // closed while a decision is awaited
    t.feed(publish("1", bearer("A1")));
    t.engine.hangup(&t.s, t.host);
  }
  CHECK_EQ(mem::total(), before);
}
