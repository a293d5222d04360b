// Resetting a socket: close() with SO_LINGER 0 sends RST, so the peer learns at once and the kernel frees any
// unsent data immediately. One definition for the acceptor's refusals, the workgroups' and the loop's aborts.
#pragma once
#include <sys/socket.h>
#include <unistd.h>

namespace starling {

// Makes the next close() of fd a reset.
inline void set_reset_on_close(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

// Resets and closes fd.
inline void reset_socket(int fd) {
  set_reset_on_close(fd);
  ::close(fd);
}

}  // namespace starling
