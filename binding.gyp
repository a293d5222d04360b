{
  "targets": [
    {
      "target_name": "starling",
      "sources": [
        "native/binding.cc",
        "native/runtime/server.cc",
        "native/client/client.cc",
        "native/runtime/workgroup.cc",
        "native/runtime/cluster_link.cc",
        "native/cluster/resp.cc",
        "native/cluster/engine_format.cc",
        "native/io/tcp_client.cc",
        "native/pubsub/subject.cc",
        "native/pubsub/broker.cc",
        "native/pubsub/dispatch.cc",
        "native/pubsub/cache.cc",
        "native/pubsub/permissions.cc",
        "native/transport/ws_session.cc",
        "native/transport/http_session.cc",
        "native/transport/http_request.cc",
        "native/io/memory.cc",
        "native/io/arena.cc",
        "native/io/stream_loop.cc",
        "native/io/loop_epoll.cc",
        "native/io/loop_uring.cc",
        "native/io/uring.cc",
        "native/io/poller_epoll.cc",
        "native/transport/ws_frame.cc",
        "native/transport/http_upgrade.cc",
        "native/transport/sse.cc",
        "native/pubsub/protocol.cc"
      ],
      "include_dirs": ["native"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-isystem", "<!(node -p \"require('path').dirname(require.resolve('node-addon-api/napi.h'))\")", "-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wextra", "-Wshadow", "-Wno-unused-parameter", "-Werror", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
