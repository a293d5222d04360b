#include "io/tcp_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace starling {

bool TcpClient::open(const std::string& host, uint16_t port, std::string* why) {
  close();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    *why = "cannot resolve " + host + ": " + gai_strerror(rc);
    return false;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *why = std::string("socket: ") + strerror(errno);
    freeaddrinfo(res);
    return false;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  const int err = errno;
  freeaddrinfo(res);
  if (rc != 0 && err != EINPROGRESS) {
    *why = std::string("connect: ") + strerror(err);
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
}

bool TcpClient::finish_connect(std::string* why) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) return true;
  *why = std::string("connect: ") + strerror(err);
  return false;
}

ssize_t TcpClient::read(void* p, size_t n, std::string* why) {
  for (;;) {
    ssize_t r = ::recv(fd_, p, n, 0);
    if (r > 0) return r;
    if (r == 0) {
      *why = "connection closed by Redis";
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    *why = std::string("read: ") + strerror(errno);
    return -1;
  }
}

ssize_t TcpClient::write(const void* p, size_t n, std::string* why) {
  for (;;) {
    ssize_t r = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    *why = std::string("write: ") + strerror(errno);
    return -1;
  }
}

void TcpClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace starling
