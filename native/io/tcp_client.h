// TcpClient: one outgoing TCP connection of the server itself (the cluster link's connections to Redis,
// runtime/cluster_link.h). It makes the system calls so that the layers above it do not: name resolution
// (blocking: call it from a thread that may wait, never a workgroup), a non-blocking connect, reads and writes.
// One thread owns it; no method is thread-safe.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>

namespace starling {

class TcpClient {
 public:
  TcpClient() = default;
  ~TcpClient() { close(); }
  TcpClient(const TcpClient&) = delete;
  TcpClient& operator=(const TcpClient&) = delete;

  // Resolves host (a name or a numeric address; the first address returned is used) and starts a
  // non-blocking connect with TCP_NODELAY. False, with the reason in *why, when it cannot even start.
  bool open(const std::string& host, uint16_t port, std::string* why);
  // After the socket reported writable (or hung up) while connecting: whether the connect succeeded.
  bool finish_connect(std::string* why);
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // Reads up to n bytes: > 0 bytes read; 0: nothing more now; -1: closed by the peer or failed (*why).
  ssize_t read(void* p, size_t n, std::string* why);
  // Writes up to n bytes: how many went (0: the socket is full now); -1: failed (*why).
  ssize_t write(const void* p, size_t n, std::string* why);
  void close();

 private:
  int fd_ = -1;
};

}  // namespace starling
