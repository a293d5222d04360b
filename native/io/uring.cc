#include "io/uring.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "io/memory.h"

// Newer than the 6.1 headers Debian 12 builds with; the values are the kernel's ABI.
#ifndef SOCKET_URING_OP_SETSOCKOPT
#define SOCKET_URING_OP_SETSOCKOPT 3
#endif

namespace starling {

namespace {

int sys_setup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}
int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags, const void* arg, size_t argsz) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz));
}
int sys_register(int fd, unsigned op, const void* arg, unsigned nr) {
  return static_cast<int>(syscall(__NR_io_uring_register, fd, op, arg, nr));
}

template <typename T>
T load_acquire(const T* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
template <typename T>
void store_release(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

// What the backend cannot do without (each since 5.5-5.11, so only a very old kernel lacks one).
constexpr uint32_t kNeededFeatures = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP | IORING_FEAT_SUBMIT_STABLE |
                                     IORING_FEAT_FAST_POLL | IORING_FEAT_EXT_ARG;

std::string errno_text(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

}  // namespace

std::unique_ptr<Ring> Ring::create(const RingSize& size, std::string* why) {
  std::unique_ptr<Ring> ring(new (std::nothrow) Ring(size));
  if (!ring) {
    *why = "out of memory";
    return nullptr;
  }
  if (!ring->setup(why)) return nullptr;
  return ring;
}

bool Ring::setup(std::string* why) {
  io_uring_params p{};
  // CQSIZE: completions are sized apart from submissions. SUBMIT_ALL: one bad SQE does not stop the batch.
  // COOP_TASKRUN: completions are run when this thread enters the kernel anyway, not by interrupting it;
  // TASKRUN_FLAG: the kernel says so in the SQ flags when such work waits, so submit() knows to enter.
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = size_.cq_entries;
  fd_ = sys_setup(size_.sq_entries, &p);
  if (fd_ < 0) {
    int err = errno;
    *why = errno_text("io_uring_setup", err);
    if (err == EPERM || err == EACCES)
      *why += " (io_uring is disabled for this process: kernel.io_uring_disabled, or a seccomp filter)";
    else if (err == ENOSYS)
      *why += " (the kernel was built without io_uring, or a seccomp filter hides it)";
    return false;
  }
  if ((p.features & kNeededFeatures) != kNeededFeatures) {
    *why = "the kernel's io_uring lacks features the backend needs (NODROP, SUBMIT_STABLE, FAST_POLL, EXT_ARG)";
    return false;
  }
  sq_map_len_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cq_map_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  if (cq_map_len_ > sq_map_len_) sq_map_len_ = cq_map_len_;  // one mapping holds both (FEAT_SINGLE_MMAP)
  sq_map_ = mmap(nullptr, sq_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
  if (sq_map_ == MAP_FAILED) {
    sq_map_ = nullptr;
    *why = errno_text("mmap of the io_uring queues", errno);
    return false;
  }
  cq_map_ = sq_map_;
  cq_map_len_ = 0;  // (not mapped separately)
  sqes_len_ = p.sq_entries * sizeof(io_uring_sqe);
  void* sqes = mmap(nullptr, sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) {
    *why = errno_text("mmap of the io_uring submission entries", errno);
    return false;
  }
  sqes_ = static_cast<io_uring_sqe*>(sqes);
  auto* base = static_cast<uint8_t*>(sq_map_);
  sq_head_ = reinterpret_cast<unsigned*>(base + p.sq_off.head);
  sq_tail_ = reinterpret_cast<unsigned*>(base + p.sq_off.tail);
  sq_flags_ = reinterpret_cast<unsigned*>(base + p.sq_off.flags);
  sq_mask_ = *reinterpret_cast<unsigned*>(base + p.sq_off.ring_mask);
  unsigned* array = reinterpret_cast<unsigned*>(base + p.sq_off.array);
  for (unsigned i = 0; i < p.sq_entries; i++) array[i] = i;  // SQE i sits at index i: the array is the identity
  sq_tail_local_ = *sq_tail_;
  cq_head_ = reinterpret_cast<unsigned*>(base + p.cq_off.head);
  cq_tail_ = reinterpret_cast<unsigned*>(base + p.cq_off.tail);
  cq_mask_ = *reinterpret_cast<unsigned*>(base + p.cq_off.ring_mask);
  cqes_ = reinterpret_cast<io_uring_cqe*>(base + p.cq_off.cqes);
  cq_head_local_ = *cq_head_;

  // The direct-descriptor table, empty.
  io_uring_rsrc_register files{};
  files.nr = size_.files;
  files.flags = IORING_RSRC_REGISTER_SPARSE;
  if (sys_register(fd_, IORING_REGISTER_FILES2, &files, sizeof files) < 0) {
    int err = errno;
    *why = errno_text("registering a table of direct descriptors", err);
    if (err == EMFILE) *why += " (the table is larger than the open-file limit, RLIMIT_NOFILE)";
    return false;
  }
  try {
    free_.reserve(size_.files);
  } catch (const std::bad_alloc&) {
    *why = "out of memory";
    return false;
  }
  for (unsigned i = size_.files; i-- > 0;) free_.push_back(static_cast<int>(i));

  // The provided receive buffers.
  buffers_ = static_cast<uint8_t*>(mem::alloc(static_cast<size_t>(size_.buffers) * size_.buffer_bytes));
  if (!buffers_) {
    *why = "out of memory for the receive buffers";
    return false;
  }
  if (!size_.classic_buffers) return setup_buffer_ring(why);
  try {
    returns_.reserve(size_.buffers);
  } catch (const std::bad_alloc&) {
    *why = "out of memory";
    return false;
  }
  for (unsigned i = 0; i < size_.buffers; i++) returns_.push_back(static_cast<uint16_t>(i));
  provide_returns();
  return submit();
}

bool Ring::setup_buffer_ring(std::string* why) {
  buf_ring_len_ = size_.buffers * sizeof(io_uring_buf);
  void* br = mmap(nullptr, buf_ring_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED) {
    *why = errno_text("mmap of the buffer ring", errno);
    return false;
  }
  buf_ring_ = static_cast<io_uring_buf_ring*>(br);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
  reg.ring_entries = size_.buffers;
  reg.bgid = kBufferGroup;
  if (sys_register(fd_, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
    *why = errno_text("registering the provided-buffer ring", errno);
    return false;
  }
  for (unsigned i = 0; i < size_.buffers; i++) {
    io_uring_buf& b = buf_ring_->bufs[i];
    b.addr = reinterpret_cast<uint64_t>(buffer(static_cast<uint16_t>(i)));
    b.len = size_.buffer_bytes;
    b.bid = static_cast<uint16_t>(i);
  }
  store_release(&buf_ring_->tail, static_cast<uint16_t>(size_.buffers));
  return true;
}

Ring::~Ring() {
  if (fd_ >= 0) ::close(fd_);  // the kernel cancels what is in flight and drops the table's descriptors
  if (sqes_) munmap(sqes_, sqes_len_);
  if (sq_map_) munmap(sq_map_, sq_map_len_);
  if (buf_ring_) munmap(buf_ring_, buf_ring_len_);
  if (buffers_) mem::free(buffers_, static_cast<size_t>(size_.buffers) * size_.buffer_bytes);
}

io_uring_sqe* Ring::raw_sqe() {
  if (sq_tail_local_ - load_acquire(sq_head_) >= size_.sq_entries) return nullptr;
  io_uring_sqe* e = &sqes_[sq_tail_local_ & sq_mask_];
  std::memset(e, 0, sizeof *e);
  sq_tail_local_++;
  return e;
}

io_uring_sqe* Ring::sqe() {
  io_uring_sqe* e = raw_sqe();
  if (e) return e;
  submit();
  return raw_sqe();
}

void Ring::provide_returns() {
  if (returns_.empty()) return;
  std::sort(returns_.begin(), returns_.end());
  size_t i = 0;
  while (i < returns_.size()) {
    size_t j = i + 1;
    while (j < returns_.size() && returns_[j] == returns_[j - 1] + 1) j++;
    io_uring_sqe* e = raw_sqe();
    if (!e) break;  // the rest at the next submit
    e->opcode = IORING_OP_PROVIDE_BUFFERS;
    e->fd = static_cast<int>(j - i);  // how many
    e->addr = reinterpret_cast<uint64_t>(buffer(returns_[i]));
    e->len = size_.buffer_bytes;
    e->off = returns_[i];  // the first id
    e->buf_group = kBufferGroup;
    e->user_data = kInternal;
    i = j;
  }
  returns_.erase(returns_.begin(), returns_.begin() + static_cast<long>(i));
}

bool Ring::submit(bool wait, int timeout_ms) {
  provide_returns();
  store_release(sq_tail_, sq_tail_local_);
  unsigned to_submit = sq_tail_local_ - load_acquire(sq_head_);
  // Always GETEVENTS: it also moves completions the kernel kept aside on overflow back into the queue.
  unsigned flags = IORING_ENTER_GETEVENTS;
  unsigned min_complete = 0;
  __kernel_timespec ts{};
  io_uring_getevents_arg arg{};
  const void* argp = nullptr;
  size_t argsz = 0;
  if (wait && timeout_ms != 0 && ready() == 0) {
    min_complete = 1;
    if (timeout_ms > 0) {
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
      arg.ts = reinterpret_cast<uint64_t>(&ts);
      arg.sigmask_sz = _NSIG / 8;
      flags |= IORING_ENTER_EXT_ARG;
      argp = &arg;
      argsz = sizeof arg;
    }
  }
  if (!to_submit && !min_complete && !(load_acquire(sq_flags_) & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)))
    return true;  // nothing to hand over, nothing to wait for: no system call
  int r = sys_enter(fd_, to_submit, min_complete, flags, argp, argsz);
  if (r >= 0) return true;
  return errno == EINTR || errno == ETIME || errno == EBUSY || errno == EAGAIN;
}

unsigned Ring::ready() const { return load_acquire(cq_tail_) - cq_head_local_; }

void Ring::advance(unsigned n) {
  cq_head_local_ += n;
  store_release(cq_head_, cq_head_local_);
}

void Ring::give_back(uint16_t bid) {
  if (!buf_ring_) {
    returns_.push_back(bid);  // (reserved for every buffer)
    return;
  }
  uint16_t tail = buf_ring_->tail;  // only this thread writes it
  io_uring_buf& b = buf_ring_->bufs[tail & (size_.buffers - 1)];
  b.addr = reinterpret_cast<uint64_t>(buffer(bid));
  b.len = size_.buffer_bytes;
  b.bid = bid;
  store_release(&buf_ring_->tail, static_cast<uint16_t>(tail + 1));
}

int Ring::take_slot() {
  if (free_.empty()) return -1;
  int slot = free_.back();
  free_.pop_back();
  return slot;
}

void Ring::put_slot(int slot) { free_.push_back(slot); }  // (reserved for every slot: never allocates)

int Ring::install(int fd, int slot) {
  io_uring_files_update up{};
  up.offset = static_cast<uint32_t>(slot);
  up.fds = reinterpret_cast<uint64_t>(&fd);
  int r = sys_register(fd_, IORING_REGISTER_FILES_UPDATE, &up, 1);
  if (r == 1) return 0;
  return r < 0 ? -errno : -EIO;
}

// ---------------------------------------------------------------------------------------------------
// The probe: everything the backend does, once, on a loopback TCP pair.

namespace {

std::string kernel_release() {
  utsname u{};
  return uname(&u) == 0 ? std::string(u.release) : std::string("unknown");
}

bool loopback_pair(int* a, int* b) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  bool ok = bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && listen(l, 1) == 0 &&
            getsockname(l, reinterpret_cast<sockaddr*>(&sa), &len) == 0;
  *a = ok ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
  ok = ok && *a >= 0 && connect(*a, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  *b = ok ? accept4(l, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  ::close(l);
  if (*b >= 0) return true;
  if (*a >= 0) ::close(*a);
  return false;
}

}  // namespace

void prep_recv(io_uring_sqe* e, int slot, uint64_t user_data, bool multishot, unsigned limit) {
  e->opcode = IORING_OP_RECV;
  e->fd = slot;
  e->flags = IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
  if (multishot) e->ioprio = IORING_RECV_MULTISHOT;
  e->file_index = limit;  // (optlen: the bytes a multishot receive may deliver in all; the header predates the name)
  e->buf_group = Ring::kBufferGroup;
  e->user_data = user_data;
}

void prep_linger_reset(io_uring_sqe* e, int slot, uint64_t user_data) {
  static const linger kReset{1, 0};
  e->opcode = IORING_OP_URING_CMD;
  e->fd = slot;
  e->flags = IOSQE_FIXED_FILE;
  e->off = SOCKET_URING_OP_SETSOCKOPT;                                 // cmd_op
  e->addr = SOL_SOCKET | (static_cast<uint64_t>(SO_LINGER) << 32);    // level, optname
  e->addr3 = reinterpret_cast<uint64_t>(&kReset);                      // optval
  e->file_index = sizeof kReset;                                       // optlen
  e->user_data = user_data;
}

void prep_cancel(io_uring_sqe* e, uint64_t key, uint64_t user_data) {
  e->opcode = IORING_OP_ASYNC_CANCEL;
  e->addr = key;
  e->user_data = user_data;
}

void prep_close(io_uring_sqe* e, int slot, uint64_t user_data) {
  e->opcode = IORING_OP_CLOSE;
  e->file_index = static_cast<uint32_t>(slot) + 1;  // one-based
  e->user_data = user_data;
}

namespace {

// The probes' ring: one slot, two small buffers of the given kind.
RingSize probe_size(bool classic) {
  RingSize size;
  size.classic_buffers = classic;
  size.sq_entries = 8;
  size.cq_entries = 16;
  size.files = 1;
  size.buffers = 2;
  size.buffer_bytes = 4096;
  return size;
}

// Tries everything on a ring with buffers of the given kind: "" if it all works. *buffers_failed: only the
// receive into a provided buffer failed.
std::string probe(bool classic, bool* buffers_failed) {
  *buffers_failed = false;
  std::string why;
  std::unique_ptr<Ring> ring = Ring::create(probe_size(classic), &why);
  if (!ring) return why;
  const std::string need = " (kernel " + kernel_release() + "; the io_uring backend needs 6.7 or later)";

  // Every opcode the backend submits.
  constexpr unsigned kOps = 64;
  std::vector<uint8_t> buf(sizeof(io_uring_probe) + kOps * sizeof(io_uring_probe_op), 0);
  auto* probe = reinterpret_cast<io_uring_probe*>(buf.data());
  if (sys_register(ring->fd(), IORING_REGISTER_PROBE, probe, kOps) < 0) return errno_text("io_uring probe", errno) + need;
  const struct { uint8_t op; const char* name; } ops[] = {
      {IORING_OP_RECV, "RECV"}, {IORING_OP_SENDMSG, "SENDMSG"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
      {IORING_OP_CLOSE, "CLOSE"}, {IORING_OP_SHUTDOWN, "SHUTDOWN"}, {IORING_OP_POLL_ADD, "POLL_ADD"},
      {IORING_OP_URING_CMD, "URING_CMD"}};
  for (const auto& o : ops)
    if (o.op > probe->last_op || !(probe->ops[o.op].flags & IO_URING_OP_SUPPORTED))
      return std::string("the kernel's io_uring lacks IORING_OP_") + o.name + need;

  // The real thing on a loopback connection: a direct descriptor, a multishot receive into a provided
  // buffer, SO_LINGER through a socket command (how aborts reset), cancellation by descriptor, and close.
  int a, b;
  if (!loopback_pair(&a, &b)) return errno_text("a loopback connection for the probe", errno);
  int r = ring->install(b, 0);
  ::close(b);
  if (r < 0) {
    ::close(a);
    return errno_text("installing a direct descriptor", -r) + need;
  }
  enum : uint64_t { kRecv = 1, kLinger, kCancel, kClose };
  io_uring_sqe* e = ring->sqe();
  prep_recv(e, 0, kRecv, true);
  ring->submit();
  ssize_t w = ::send(a, "probe", 5, MSG_NOSIGNAL);
  bool got_data = false, multishot = false, lingered = false, canceled = false, closed = false;
  int linger_res = 0;
  for (int round = 0; round < 50 && !(lingered && canceled && closed); round++) {
    if (round == 1 && w == 5) {  // after the data: the socket command, the cancellation, the close
      prep_linger_reset(ring->sqe(), 0, kLinger);
      e = ring->sqe();
      e->opcode = IORING_OP_ASYNC_CANCEL;
      e->fd = 0;
      e->cancel_flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_FD_FIXED | IORING_ASYNC_CANCEL_ALL;
      e->user_data = kCancel;
      prep_close(ring->sqe(), 0, kClose);
    }
    ring->submit(true, 100);
    unsigned n = ring->ready();
    for (unsigned i = 0; i < n; i++) {
      const io_uring_cqe& c = ring->cqe(i);
      switch (c.user_data) {
        case kRecv:
          if (c.res == 5 && (c.flags & IORING_CQE_F_BUFFER)) {
            got_data = true;
            multishot = c.flags & IORING_CQE_F_MORE;
            ring->give_back(static_cast<uint16_t>(c.flags >> IORING_CQE_BUFFER_SHIFT));
          }
          // The receive's last completion (cancelled, or ended some other way, as by ENOBUFS where the kernel's
          // buffer rings do not work): the probe stops waiting once this, the reset and the close are in.
          if (!(c.flags & IORING_CQE_F_MORE)) canceled = true;
          break;
        case kLinger: lingered = true; linger_res = c.res; break;
        case kCancel: break;  // (its own result: how many it found)
        case kClose: closed = c.res == 0; break;
      }
    }
    ring->advance(n);
  }
  ::close(a);
  if (!got_data) {
    *buffers_failed = true;
    return "a multishot receive into a provided buffer did not complete" + need;
  }
  if (!multishot) return "the kernel's io_uring has no multishot receive" + need;
  if (linger_res < 0) return errno_text("setsockopt through io_uring (SOCKET_URING_OP_SETSOCKOPT)", -linger_res) + need;
  if (!lingered || !canceled || !closed) return "cancelling and closing a direct descriptor did not complete" + need;
  return "";
}

// Whether a multishot receive takes a byte limit (uring_recv_limit): with 16 bytes waiting and a limit of 8, the
// receive that supports it completes once, with the data and without IORING_CQE_F_MORE; a kernel without it fails
// the receive with EINVAL (the field was file_index, which a receive must leave 0).
bool probe_recv_limit(bool classic) {
  std::string why;
  std::unique_ptr<Ring> ring = Ring::create(probe_size(classic), &why);
  if (!ring) return false;
  int a, b;
  if (!loopback_pair(&a, &b)) return false;
  int r = ring->install(b, 0);
  ::close(b);
  if (r < 0 || ::send(a, "0123456789abcdef", 16, MSG_NOSIGNAL) != 16) {
    ::close(a);
    return false;
  }
  io_uring_sqe* e = ring->sqe();
  if (!e) {
    ::close(a);
    return false;
  }
  prep_recv(e, 0, 1, true, 8);
  bool limited = false, done = false;
  for (int round = 0; round < 20 && !done; round++) {
    ring->submit(true, 100);
    unsigned n = ring->ready();
    for (unsigned i = 0; i < n; i++) {
      const io_uring_cqe& c = ring->cqe(i);
      if (c.user_data != 1) continue;
      done = true;
      limited = c.res > 0 && !(c.flags & IORING_CQE_F_MORE);
    }
    ring->advance(n);
  }
  ::close(a);  // (closing the ring cancels a receive still armed)
  return limited;
}

struct Support {
  std::string why;
  bool classic = false;
  bool recv_limit = false;
};

const Support& support() {
  static const Support s = [] {
    Support r;
    bool buffers_failed;
    r.why = probe(false, &buffers_failed);
    if (buffers_failed && probe(true, &buffers_failed).empty()) {
      r.why.clear();
      r.classic = true;
    }
    if (r.why.empty()) r.recv_limit = probe_recv_limit(r.classic);
    return r;
  }();
  return s;
}

}  // namespace

std::string io_uring_unavailable() { return support().why; }
bool uring_classic_buffers() { return support().classic; }
bool uring_recv_limit() { return !support().why.empty() ? false : support().recv_limit; }

}  // namespace starling
