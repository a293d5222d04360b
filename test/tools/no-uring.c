// no-uring: runs a program in which io_uring_setup(2) fails with EPERM, as under a container's seccomp profile
// (Docker's default one refuses io_uring). test/11.io-backend.test.ts compiles it (cc -O2 -o no-uring no-uring.c)
// and runs `no-uring node ...` to see the server fall back to epoll, or refuse to start, for real.
//
//   no-uring PROGRAM [ARGUMENT...]
//
// It sets no_new_privs (required to install a filter without CAP_SYS_ADMIN), installs a seccomp filter that
// answers io_uring_setup with EPERM and allows every other system call, then execvp()s the program: the filter
// is inherited by it and by everything it starts. System calls of another ABI (a 32-bit binary, the int 0x80
// entry, x32) are refused with ENOSYS: their numbers mean other calls there, or let io_uring_setup through.
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "no-uring knows the audit architecture of x86_64 and aarch64 only"
#endif

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: no-uring PROGRAM [ARGUMENT...]\n");
    return 2;
  }
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
      // The x32 ABI: the same calls with bit 30 set (io_uring_setup too). Nothing here uses it.
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
#endif
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    fprintf(stderr, "no-uring: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
    return 126;
  }
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    fprintf(stderr, "no-uring: prctl(PR_SET_SECCOMP): %s\n", strerror(errno));
    return 126;
  }
  execvp(argv[1], argv + 1);
  fprintf(stderr, "no-uring: %s: %s\n", argv[1], strerror(errno));
  return 127;
}
