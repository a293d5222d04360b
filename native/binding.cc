// The Node-API boundary: the only file that includes napi.h. It marshals and nothing else: values are
// checked in TypeScript (src/native.ts), copied here into plain structs, and handed to Server.
// Nothing here runs per message or per connection.
#include <napi.h>

#include <memory>
#include <string>

#include "client/client.h"
#include "io/uring.h"
#include "pubsub/permissions.h"
#include "pubsub/protocol.h"
#include "runtime/counters.h"
#include "runtime/server.h"

namespace starling {

namespace {

// One counter as TypeScript sees it: the X-macro's name, kind and description, so that the names in
// /stats, Prometheus and the dashboard all come from counters.h.
struct CounterInfo {
  const char* name;
  const char* kind;
  const char* doc;
};

const std::vector<CounterInfo>& workgroup_counters() {
  static const std::vector<CounterInfo> list = {
#define STARLING_INFO(name, kind, doc) {#name, #kind, doc},
      STARLING_WORKGROUP_COUNTERS(STARLING_INFO)
#undef STARLING_INFO
  };
  return list;
}

const std::vector<CounterInfo>& server_counters() {
  static const std::vector<CounterInfo> list = {
#define STARLING_INFO(name, kind, doc) {#name, #kind, doc},
      STARLING_SERVER_COUNTERS(STARLING_INFO)
#undef STARLING_INFO
  };
  return list;
}

Napi::Array to_array(Napi::Env env, const std::vector<CounterInfo>& list) {
  Napi::Array a = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", list[i].name);
    o.Set("kind", list[i].kind);
    o.Set("doc", list[i].doc);
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

// The protocol's numeric contracts (pubsub/protocol.h), so TypeScript and the docs never restate them.
Napi::Object protocol_limits(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("maxSubjectBytes", static_cast<double>(kMaxSubjectLen));
  o.Set("maxIdBytes", static_cast<double>(kMaxIdLen));
  o.Set("maxPubHeaderBytes", static_cast<double>(kMaxPubHeader));
  o.Set("maxTokenBytes", static_cast<double>(kMaxTokenLen));
  return o;
}

Napi::Array to_array(Napi::Env env, const std::vector<std::string>& names) {
  Napi::Array a = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) a.Set(static_cast<uint32_t>(i), names[i]);
  return a;
}

std::vector<ListenAddress> read_addresses(const Napi::Array& list);
std::vector<std::string> read_strings(const Napi::Array& list);
ClusterOptions read_cluster(const Napi::Object& o);

ServerOptions read_options(const Napi::Object& o) {
  ServerOptions opts;
  opts.listen = read_addresses(o.Get("listen").As<Napi::Array>());
  opts.path = o.Get("path").As<Napi::String>().Utf8Value();
  opts.allow_origins = read_strings(o.Get("allowOrigins").As<Napi::Array>());
  opts.sse_retry_ms = o.Get("sseRetry").As<Napi::Number>().Uint32Value();
  opts.workgroups = o.Get("workgroups").As<Napi::Number>().Uint32Value();
  Napi::Array cpus = o.Get("cpus").As<Napi::Array>();
  for (uint32_t i = 0; i < cpus.Length(); i++) opts.cpus.push_back(cpus.Get(i).As<Napi::Number>().Int32Value());
  opts.benchmark_mode = o.Get("benchmarkMode").As<Napi::Boolean>().Value();
  opts.send_buffer = o.Get("sendBuffer").As<Napi::Number>().Int32Value();
  opts.receive_buffer = o.Get("receiveBuffer").As<Napi::Number>().Int32Value();
  opts.max_message = static_cast<uint64_t>(o.Get("maxMessageSize").As<Napi::Number>().Int64Value());
  opts.max_subscriptions = o.Get("maxSubscriptions").As<Napi::Number>().Uint32Value();
  opts.max_backlog = static_cast<uint64_t>(o.Get("maxBacklog").As<Napi::Number>().Int64Value());
  opts.max_backlog_ms = static_cast<uint32_t>(o.Get("maxBacklogTime").As<Napi::Number>().Uint32Value());
  opts.memory = static_cast<uint64_t>(o.Get("memory").As<Napi::Number>().Int64Value());
  opts.keepalive_s = o.Get("keepAlive").As<Napi::Number>().Uint32Value();
  opts.max_connections = o.Get("maxConnections").As<Napi::Number>().Uint32Value();
  opts.cache_size = static_cast<uint64_t>(o.Get("cacheSize").As<Napi::Number>().Int64Value());
  opts.max_cached_messages = o.Get("maxCachedMessagesPerSubject").As<Napi::Number>().Uint32Value();
  opts.cache_expire_ms = static_cast<uint64_t>(o.Get("cacheExpireTime").As<Napi::Number>().Int64Value()) * 1000;
  opts.entitlement = static_cast<EntitlementMode>(o.Get("entitlement").As<Napi::Number>().Uint32Value());
  opts.renew_before_s = o.Get("renewBefore").As<Napi::Number>().Uint32Value();
  opts.publish_allow = read_strings(o.Get("publishAllow").As<Napi::Array>());
  opts.io = static_cast<IoChoice>(o.Get("ioBackend").As<Napi::Number>().Uint32Value());
  opts.cluster = read_cluster(o.Get("cluster").As<Napi::Object>());
  return opts;
}

// NativeOptions.cluster: { redis: [{ host, port, user, password, db }], guaranteed, node }; redis empty without a
// cluster (ClusterEngine = none).
ClusterOptions read_cluster(const Napi::Object& o) {
  ClusterOptions cluster;
  Napi::Array redis = o.Get("redis").As<Napi::Array>();
  for (uint32_t i = 0; i < redis.Length(); i++) {
    Napi::Object a = redis.Get(i).As<Napi::Object>();
    RedisAddress r;
    r.host = a.Get("host").As<Napi::String>().Utf8Value();
    r.port = static_cast<uint16_t>(a.Get("port").As<Napi::Number>().Uint32Value());
    r.user = a.Get("user").As<Napi::String>().Utf8Value();
    r.password = a.Get("password").As<Napi::String>().Utf8Value();
    r.db = a.Get("db").As<Napi::Number>().Uint32Value();
    cluster.redis.push_back(std::move(r));
  }
  cluster.guaranteed = o.Get("guaranteed").As<Napi::Boolean>().Value();
  cluster.node = o.Get("node").As<Napi::String>().Utf8Value();
  return cluster;
}

// ClusterState as NativeServer.clusterStatus() names it (src/native.ts ClusterStatus.state).
const char* cluster_state_name(ClusterState state) {
  switch (state) {
    case ClusterState::kOff:
      return "off";
    case ClusterState::kConnecting:
      return "connecting";
    case ClusterState::kUp:
      return "up";
    case ClusterState::kDown:
      return "down";
  }
  return "down";  // not reached: every state is named above
}

std::vector<std::string> client_counter_names() {
  return {
#define STARLING_NAME(name, doc) #name,
      STARLING_CLIENT_COUNTERS(STARLING_NAME)
#undef STARLING_NAME
  };
}

std::vector<ListenAddress> read_addresses(const Napi::Array& list) {
  std::vector<ListenAddress> out;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Object a = list.Get(i).As<Napi::Object>();
    out.push_back(ListenAddress{a.Get("host").As<Napi::String>().Utf8Value(),
                                static_cast<uint16_t>(a.Get("port").As<Napi::Number>().Uint32Value())});
  }
  return out;
}

std::vector<std::string> read_strings(const Napi::Array& list) {
  std::vector<std::string> out;
  for (uint32_t i = 0; i < list.Length(); i++) out.push_back(list.Get(i).As<Napi::String>().Utf8Value());
  return out;
}

ClientOptions read_client_options(const Napi::Object& o) {
  ClientOptions opts;
  opts.servers = read_addresses(o.Get("servers").As<Napi::Array>());
  opts.local_addresses = read_strings(o.Get("localAddresses").As<Napi::Array>());
  opts.path = o.Get("path").As<Napi::String>().Utf8Value();
  std::string dialect = o.Get("dialect").As<Napi::String>().Utf8Value();
  opts.dialect = dialect == "plain" ? Dialect::kPlain : dialect == "nats" ? Dialect::kNats : Dialect::kStarling;
  // "websocket", or "sse" (subscribers) / "http" (publishers): Starling's HTTP transport.
  const std::string transport = o.Has("transport") ? o.Get("transport").ToString().Utf8Value() : "websocket";
  opts.transport = transport == "sse" || transport == "http" ? Transport::kHttp : Transport::kWebSocket;
  opts.threads = o.Get("threads").As<Napi::Number>().Uint32Value();
  opts.connections = o.Get("connections").As<Napi::Number>().Uint32Value();
  opts.first_index = o.Get("firstIndex").As<Napi::Number>().Uint32Value();
  opts.subjects = read_strings(o.Get("subjects").As<Napi::Array>());
  opts.subjects_per_client = o.Get("subjectsPerClient").As<Napi::Number>().Uint32Value();
  opts.publisher = o.Get("publisher").As<Napi::Boolean>().Value();
  opts.frequency = o.Get("frequency").As<Napi::Number>().DoubleValue();
  opts.message_size = o.Get("messageSize").As<Napi::Number>().Uint32Value();
  opts.max_connecting = o.Get("maxConnecting").As<Napi::Number>().Uint32Value();
  opts.socket_buffer = o.Get("socketBuffer").As<Napi::Number>().Int32Value();
  opts.tokens = read_strings(o.Get("tokens").As<Napi::Array>());
  opts.direct = o.Has("direct") && o.Get("direct").ToBoolean().Value();
  return opts;
}

// Runs the callback of onAuthRequests on the JavaScript thread. Written against the C API (a thread-safe
// function's call_js), so that no C++ exception can leave it, since nothing above it would catch one: a call
// still queued when Node tears the environment down (the function does not keep the event loop alive) comes
// without an environment, or fails quietly; an exception the callback throws stays pending in JavaScript,
// which reports it as any uncaught exception.
void call_auth_callback(napi_env env, napi_value callback, void*, void*) {
  if (env == nullptr || callback == nullptr) return;
  napi_value undefined;
  if (napi_get_undefined(env, &undefined) != napi_ok) return;
  napi_call_function(env, undefined, callback, 0, nullptr, nullptr);
}

// The JavaScript callback a server calls when tokens wait for decisions, and its release: once no workgroup
// can call it any more (Server::set_auth_notify(nullptr) is a barrier).
struct AuthCallback {
  napi_threadsafe_function tsfn = nullptr;
  void release(Server& server) {
    if (!tsfn) return;
    server.set_auth_notify(nullptr);
    napi_release_threadsafe_function(tsfn, napi_tsfn_release);
    tsfn = nullptr;
  }
};

// Runs Server::stop() (which blocks while connections close) off the JavaScript thread.
class StopWorker : public Napi::AsyncWorker {
 public:
  StopWorker(Napi::Env env, std::shared_ptr<Server> server, std::shared_ptr<AuthCallback> auth)
      : Napi::AsyncWorker(env),
        server_(std::move(server)),
        auth_(std::move(auth)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  void Execute() override { server_->stop(); }
  void OnOK() override {
    auth_->release(*server_);
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    auth_->release(*server_);
    deferred_.Reject(e.Value());
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 private:
  std::shared_ptr<Server> server_;
  std::shared_ptr<AuthCallback> auth_;
  Napi::Promise::Deferred deferred_;
};

// A compiled permission set held by JavaScript (one reference, dropped when the wrapper is collected).
Napi::Value wrap_permissions(Napi::Env env, Permissions* p) {
  return Napi::External<Permissions>::New(env, p, [](Napi::Env, Permissions* q) { q->unref(); });
}


class JsServer : public Napi::ObjectWrap<JsServer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeServer",
                       {InstanceMethod<&JsServer::JS_start>("start"),
                        InstanceMethod<&JsServer::JS_ports>("ports"),
                        InstanceMethod<&JsServer::JS_io>("io"),
                        InstanceMethod<&JsServer::JS_publish>("publish"),
                        InstanceMethod<&JsServer::JS_counterSlots>("counterSlots"),
                        InstanceMethod<&JsServer::JS_readCounters>("readCounters"),
                        InstanceMethod<&JsServer::JS_onAuthRequests>("onAuthRequests"),
                        InstanceMethod<&JsServer::JS_takeAuthRequests>("takeAuthRequests"),
                        InstanceMethod<&JsServer::JS_decide>("decide"),
                        InstanceMethod<&JsServer::JS_clusterStatus>("clusterStatus"),
                        InstanceMethod<&JsServer::JS_stop>("stop")});
  }

  // new NativeServer(options): binds the listen addresses; throws with the reason if one fails.
  explicit JsServer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsServer>(info) {
    try {
      server_ = std::make_shared<Server>(read_options(info[0].As<Napi::Object>()));
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  // A server dropped by JavaScript without stop() is stopped here, blocking, as the last resort.
  ~JsServer() override { auth_->release(*server_); }

 private:
  // start(): the threads; throws with the reason if they cannot be made (the server is then stopped).
  void JS_start(const Napi::CallbackInfo& info) {
    try {
      server_->start();
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  Napi::Value JS_io(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("backend", server_->backend() == IoBackend::kUring ? "io_uring" : "epoll");
    o.Set("note", server_->backend_note());
    o.Set("ringFiles", static_cast<double>(server_->ring_files()));
    o.Set("maxConnections", static_cast<double>(server_->max_connections()));
    return o;
  }

  Napi::Value JS_ports(const Napi::CallbackInfo& info) {
    const auto& ports = server_->ports();
    Napi::Array a = Napi::Array::New(info.Env(), ports.size());
    for (size_t i = 0; i < ports.size(); i++) a.Set(static_cast<uint32_t>(i), ports[i]);
    return a;
  }

  // publish(subject: string, payload: Buffer, binary: boolean) → 0 routed, 1 no subscribers, 2 overflow
  Napi::Value JS_publish(const Napi::CallbackInfo& info) {
    try {
      std::string subject = info[0].As<Napi::String>().Utf8Value();
      Napi::Buffer<uint8_t> payload = info[1].As<Napi::Buffer<uint8_t>>();
      bool binary = info[2].As<Napi::Boolean>().Value();
      auto r = server_->publish(subject, payload.Data(), payload.Length(), binary);
      if (r == Server::Published::kBadSubject) {
        // The same reason a client's PUB would get (pubsub/protocol.h), as a TypeError.
        char reason[256];
        size_t n = subject_problem(subject, reason, sizeof reason);
        std::string echo = subject.size() > 64 ? subject.substr(0, 61) + "..." : subject;
        throw Napi::TypeError::New(info.Env(), "publish: invalid subject \"" + echo + "\": " + std::string(reason, n));
      }
      return Napi::Number::New(info.Env(), static_cast<int>(r));
    } catch (const std::bad_alloc&) {
      // Out of memory is an error for the caller, never an abort of the process.
      throw Napi::Error::New(info.Env(), "publish: out of memory");
    }
  }

  // clusterStatus() → { state: 'off' | 'connecting' | 'up' | 'down', redis: host:port or "", detail: why not up }
  Napi::Value JS_clusterStatus(const Napi::CallbackInfo& info) {
    ClusterStatus st = server_->cluster_status();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("state", cluster_state_name(st.state));
    o.Set("redis", st.redis);
    o.Set("detail", st.detail);
    o.Set("error", st.error);
    return o;
  }

  Napi::Value JS_counterSlots(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(server_->counter_slots()));
  }

  // readCounters(out: Float64Array of counterSlots() elements): one batched snapshot.
  void JS_readCounters(const Napi::CallbackInfo& info) {
    Napi::Float64Array out = info[0].As<Napi::Float64Array>();
    if (out.ElementLength() < server_->counter_slots())
      throw Napi::RangeError::New(info.Env(), "readCounters: array too small");
    server_->read_counters(out.Data());
  }

  // stop() → Promise resolved once every connection is closed and every thread has exited.
  Napi::Value JS_stop(const Napi::CallbackInfo& info) {
    auto* worker = new StopWorker(info.Env(), server_, auth_);
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  }

  // onAuthRequests(callback): before start(). The callback (no arguments) runs on the JavaScript thread when
  // tokens wait for decisions; it takes them with takeAuthRequests(). Does not keep the process alive.
  void JS_onAuthRequests(const Napi::CallbackInfo& info) {
    napi_env env = info.Env();
    napi_value name;
    napi_threadsafe_function tsfn;
    if (auth_->tsfn || napi_create_string_utf8(env, "starling-auth", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, info[0], nullptr, name, 0, 1, nullptr, nullptr, nullptr,
                                         call_auth_callback, &tsfn) != napi_ok)
      throw Napi::Error::New(info.Env(), "onAuthRequests: cannot create the callback (called twice?)");
    napi_unref_threadsafe_function(env, tsfn);
    auth_->tsfn = tsfn;
    server_->set_auth_notify([tsfn] { return napi_call_threadsafe_function(tsfn, nullptr, napi_tsfn_nonblocking) == napi_ok; });
  }

  // takeAuthRequests() → [wg, id, token, address, wg, id, ...]: every request waiting, in one flat array.
  Napi::Value JS_takeAuthRequests(const Napi::CallbackInfo& info) {
    std::vector<AuthRequest> batch = server_->take_auth_requests();
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env, batch.size() * 4);
    uint32_t k = 0;
    for (const AuthRequest& r : batch) {
      out.Set(k++, Napi::Number::New(env, r.wg));
      out.Set(k++, Napi::Number::New(env, r.id));
      out.Set(k++, Napi::String::New(env, r.token));
      out.Set(k++, Napi::String::New(env, r.address));
    }
    return out;
  }

  // decide([wg, id, set | null, expiry, detail, ...]): the answers, five values each; `set` is a
  // compilePermissions() result (null: refused, with detail).
  void JS_decide(const Napi::CallbackInfo& info) {
    Napi::Array list = info[0].As<Napi::Array>();
    std::vector<AuthDecision> batch;
    try {
      batch.reserve(list.Length() / 5);
      for (uint32_t k = 0; k + 5 <= list.Length(); k += 5) {
        AuthDecision d{list.Get(k).As<Napi::Number>().Uint32Value(), list.Get(k + 1).As<Napi::Number>().Uint32Value(),
                       nullptr, list.Get(k + 3).As<Napi::Number>().Uint32Value(),
                       list.Get(k + 4).As<Napi::String>().Utf8Value()};
        Napi::Value set = list.Get(k + 2);
        if (set.IsExternal()) {
          d.perms = set.As<Napi::External<Permissions>>().Data();
          d.perms->ref();  // the connection's own
        }
        batch.push_back(std::move(d));
      }
      server_->decide(batch);
    } catch (const std::bad_alloc&) {
      for (AuthDecision& d : batch)
        if (d.perms) d.perms->unref();
      throw Napi::Error::New(info.Env(), "decide: out of memory");
    }
  }

  std::shared_ptr<Server> server_;
  std::shared_ptr<AuthCallback> auth_ = std::make_shared<AuthCallback>();
};

// The benchmark client engine (bench/benchsub, bench/benchpub).
class JsClient : public Napi::ObjectWrap<JsClient> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeClient",
                       {InstanceMethod<&JsClient::JS_start>("start"), InstanceMethod<&JsClient::JS_stop>("stop"),
                        InstanceMethod<&JsClient::JS_slots>("slots"), InstanceMethod<&JsClient::JS_read>("read"),
                        InstanceMethod<&JsClient::JS_reconnect>("reconnect")});
  }

  explicit JsClient(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsClient>(info) {
    try {
      engine_ = std::make_unique<ClientEngine>(read_client_options(info[0].As<Napi::Object>()));
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

 private:
  void JS_start(const Napi::CallbackInfo& info) { engine_->start(); }
  // stop(): blocks until the client threads exit (they exit at their next tick).
  void JS_stop(const Napi::CallbackInfo& info) { engine_->stop(); }
  Napi::Value JS_slots(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(engine_->slots()));
  }
  // read(out: Float64Array of slots() elements): per thread, counters, Welford fields, histogram.
  void JS_read(const Napi::CallbackInfo& info) {
    Napi::Float64Array out = info[0].As<Napi::Float64Array>();
    if (out.ElementLength() < engine_->slots()) throw Napi::RangeError::New(info.Env(), "read: array too small");
    engine_->read(out.Data());
  }
  // reconnect({ from, to, every, closeFrame }): checked in TypeScript (bench/tools.ts); returns at once.
  void JS_reconnect(const Napi::CallbackInfo& info) {
    Napi::Object o = info[0].As<Napi::Object>();
    ReconnectRequest r;
    r.from = o.Get("from").As<Napi::Number>().Uint32Value();
    r.to = o.Get("to").As<Napi::Number>().Uint32Value();
    r.every = o.Get("every").As<Napi::Number>().Uint32Value();
    r.close_frame = o.Get("closeFrame").As<Napi::Boolean>().Value();
    engine_->reconnect(r);
  }

  std::unique_ptr<ClientEngine> engine_;
};

// compilePermissions(sub: string[], pub: string[], all: string[]) → an opaque set for decide(). Throws a
// TypeError naming a pattern that is not one (pubsub/permissions.h), an Error when out of memory.
Napi::Value compile_permissions(const Napi::CallbackInfo& info) {
  std::vector<std::string> patterns[3];
  const uint8_t access[3] = {kAccessSubscribe, kAccessPublish, kAccessAll};
  std::vector<PermissionEntry> entries;
  for (int i = 0; i < 3; i++) patterns[i] = read_strings(info[i].As<Napi::Array>());
  for (int i = 0; i < 3; i++)
    for (const std::string& p : patterns[i]) entries.push_back(PermissionEntry{access[i], p});
  std::string problem;
  Permissions* p = Permissions::build(entries, &problem);
  if (!p) {
    if (problem.empty()) throw Napi::Error::New(info.Env(), "compilePermissions: out of memory");
    throw Napi::TypeError::New(info.Env(), problem);
  }
  return wrap_permissions(info.Env(), p);
}

// What io_uring allows here: { unavailable: "" or why the io_uring backend cannot run, classicBuffers }. Tries it
// once per process (io/uring.h); for `starling doctor`, the tests and the log.
Napi::Value io_uring_support(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("unavailable", io_uring_unavailable());
  o.Set("classicBuffers", uring_classic_buffers());
  return o;
}

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports, {InstanceValue("NativeServer", JsServer::Define(env), napi_enumerable),
                          InstanceValue("compilePermissions", Napi::Function::New(env, compile_permissions), napi_enumerable),
                          InstanceValue("ioUring", Napi::Function::New(env, io_uring_support), napi_enumerable),
                          InstanceValue("workgroupCounters", to_array(env, workgroup_counters()), napi_enumerable),
                          InstanceValue("serverCounters", to_array(env, server_counters()), napi_enumerable),
                          InstanceValue("NativeClient", JsClient::Define(env), napi_enumerable),
                          InstanceValue("clientCounters", to_array(env, client_counter_names()), napi_enumerable),
                          InstanceValue("latencyBuckets", Napi::Number::New(env, kLatencyBuckets), napi_enumerable),
                          InstanceValue("protocolLimits", protocol_limits(env), napi_enumerable)});
  }
};

}  // namespace

}  // namespace starling

using StarlingAddon = starling::Addon;
NODE_API_ADDON(StarlingAddon)
