{
  "targets": [
    {
      "target_name": "starling",
      "sources": [
        "native/binding.cc",
        "native/server.cc",
        "native/client.cc",
        "native/workgroup.cc",
        "native/subject.cc",
        "native/loop_epoll.cc",
        "native/ws_frame.cc",
        "native/http_upgrade.cc",
        "native/protocol.cc"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-isystem", "<!(node -p \"require('path').dirname(require.resolve('node-addon-api/napi.h'))\")", "-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wextra", "-Wshadow", "-Wno-unused-parameter", "-Werror", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
