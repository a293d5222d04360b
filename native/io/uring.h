// A thin io_uring ring over the raw system calls and <linux/io_uring.h> (no liburing, so nothing extra to
// build against): the mapped submission and completion queues, a sparse table of direct descriptors, and a
// ring of provided receive buffers. It knows nothing of streams; loop_uring.cc (and a client engine) builds
// on it. One thread owns a Ring: nothing here is thread-safe.
#pragma once
#include <linux/io_uring.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace starling {

// What a ring is made of. The defaults are the server's.
struct RingSize {
  // Submission queue entries: the SQEs one loop iteration prepares before they must be submitted (a flush
  // to 4,096 streams fills it once; more are submitted in several calls).
  unsigned sq_entries = 4096;
  // Completion queue entries: completions waiting to be read. The kernel keeps overflow beyond it
  // (IORING_FEAT_NODROP, required), so this only needs to cover one iteration's usual burst.
  unsigned cq_entries = 16384;
  // Direct-descriptor table size: the connections this ring can hold. The kernel refuses a table larger
  // than RLIMIT_NOFILE, and that is its only tie to the fd limit.
  unsigned files = 1024;
  // Provided receive buffers (a power of two) and their size. Shared by every connection of the ring, so
  // an idle connection holds no receive buffer; a burst that finds none left is re-armed once some return.
  unsigned buffers = 64;
  unsigned buffer_bytes = 16 * 1024;
  // Hand the buffers over with IORING_OP_PROVIDE_BUFFERS instead of a registered buffer ring: for kernels whose
  // buffer rings do not work (uring_classic_buffers() says which; seen on 6.18 here: a receive into a filled
  // ring fails with ENOBUFS, while the same receive into classic provided buffers works).
  bool classic_buffers = false;
};

class Ring {
 public:
  // A ring, or nullptr with *why saying what the kernel refused.
  static std::unique_ptr<Ring> create(const RingSize& size, std::string* why);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  int fd() const { return fd_; }

  // A zeroed SQE to fill, or nullptr if the queue is full and submitting it failed (the caller retries at
  // its next submit). Queued SQEs reach the kernel at submit().
  io_uring_sqe* sqe();
  // SQEs prepared and not yet taken by the kernel.
  unsigned pending() const { return sq_tail_local_ - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE); }
  // Publishes and submits what is pending; with wait, blocks until at least one completion or timeout_ms
  // (-1: no limit). Returns false only on an error other than an interrupted or busy wait.
  bool submit(bool wait = false, int timeout_ms = -1);

  // Completions ready to read: peek, then advance by how many were handled.
  unsigned ready() const;
  const io_uring_cqe& cqe(unsigned i) const { return cqes_[(cq_head_local_ + i) & cq_mask_]; }
  void advance(unsigned n);

  // user_data of the ring's own SQEs (classic buffer returns): the owner skips their completions. Its low
  // three bits are all set, so owners that tag user_data in those bits keep the value 7 free for it.
  static constexpr uint64_t kInternal = 7;

  // Provided buffers (buffer group 0).
  static constexpr uint16_t kBufferGroup = 0;
  uint8_t* buffer(uint16_t bid) const { return buffers_ + static_cast<size_t>(bid) * size_.buffer_bytes; }
  void give_back(uint16_t bid);  // returns a buffer to the kernel once its bytes were used
  // Classic buffers: queues the PROVIDE_BUFFERS for what was given back, a SQE per run of ids (also done by
  // submit()). Call it before queuing receives that may need those buffers: the kernel takes SQEs in order, and a
  // multishot receive armed while the group is empty ends at once with ENOBUFS.
  void provide_returns();

  // Direct descriptors. take_slot: a free table index, or -1 when the table is full.
  int take_slot();
  void put_slot(int slot);  // after the slot's close completed
  unsigned free_slots() const { return static_cast<unsigned>(free_.size()); }
  // Moves a plain descriptor into the table at slot (the caller closes its own copy). 0 or -errno.
  int install(int fd, int slot);

  const RingSize& size() const { return size_; }

 private:
  explicit Ring(const RingSize& size) : size_(size) {}
  bool setup(std::string* why);
  bool setup_buffer_ring(std::string* why);
  io_uring_sqe* raw_sqe();      // a free SQE, or nullptr (never submits)

  RingSize size_;
  int fd_ = -1;
  void* sq_map_ = nullptr;
  size_t sq_map_len_ = 0;
  void* cq_map_ = nullptr;
  size_t cq_map_len_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqes_len_ = 0;
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_flags_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_tail_local_ = 0;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned cq_mask_ = 0;
  unsigned cq_head_local_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_len_ = 0;
  uint8_t* buffers_ = nullptr;
  std::vector<int> free_;  // free table slots, taken from the back
  std::vector<uint16_t> returns_;  // classic buffers given back and not yet provided again (reserved: buffers)
};

// Preparers of the SQEs the loops share (on a zeroed SQE from Ring::sqe(); slot: a direct descriptor).
// A receive into the ring's provided buffers: multishot, ending after limit bytes where the kernel takes a limit
// (uring_recv_limit; 0: no limit), or single-shot (one buffer).
void prep_recv(io_uring_sqe* e, int slot, uint64_t user_data, bool multishot, unsigned limit = 0);
// SO_LINGER {1, 0} through the ring (SOCKET_URING_OP_SETSOCKOPT, Linux 6.7): the close that follows is a reset.
void prep_linger_reset(io_uring_sqe* e, int slot, uint64_t user_data);
// Cancels the request whose user_data is key (found in one bucket of the kernel's cancel table; a cancel by
// descriptor scans every request the ring has armed).
void prep_cancel(io_uring_sqe* e, uint64_t key, uint64_t user_data);
// Closes the slot (the table's reference; the socket goes once no request holds it).
void prep_close(io_uring_sqe* e, int slot, uint64_t user_data);

// Whether this process can run the io_uring backend: "" if so, else why not (the kernel lacks a feature the
// backend needs, io_uring is disabled by kernel.io_uring_disabled, or a seccomp filter refuses it). Checked once
// by trying everything the backend does on a socket pair.
std::string io_uring_unavailable();
// After io_uring_unavailable() said yes: whether rings must use classic provided buffers (RingSize).
bool uring_classic_buffers();
// After io_uring_unavailable() said yes: whether a multishot receive takes a byte limit (6.16 and later: sqe->optlen,
// file_index in older headers, is the total it may receive; the completion that reaches it has no IORING_CQE_F_MORE and the
// owner arms a new receive). The kernel takes a whole provided buffer for the receive that reaches the limit, so one
// receive delivers at most limit + buffer_bytes - 1 bytes. Without it (older kernels refuse the field with EINVAL),
// the owner receives single-shot: one buffer per receive.
bool uring_recv_limit();

}  // namespace starling
