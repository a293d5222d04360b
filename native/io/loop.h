// The stream-level event loop: one per workgroup thread. The backend owns every system call on a
// connection — receive, send, shutdown, close — and its output queue; the protocol code above sees
// only bytes in (StreamEvents::on_data) and frames out (Loop::send). This is the shape a completion
// backend needs too (io_uring: multishot recv into provided buffers, sends in flight that pin their
// frames, cancellation), so it sits beside epoll without touching the protocol code. One backend per
// file (loop_epoll.cc), chosen in Loop::create(). Nothing here is thread-safe except Loop::wake().
#pragma once
#include <cstdint>
#include <memory>

#include "io/frame.h"

namespace starling {

struct OutQueue;   // backend-private: frames waiting to be written to one stream

// One connection's transport endpoint. The owner embeds it in its connection object (so that an idle
// connection is a single allocation) and must keep that object alive until StreamEvents::on_closed.
// Every field is the backend's; the owner never reads or writes them.
struct Stream {
  int fd = -1;               // epoll: the socket; io_uring: its ring and its slot in that ring's descriptor table
  uint16_t io_flags = 0;
  uint8_t io_more = 0;       // io_uring: the backend's own flags
  uint8_t ops = 0;           // io_uring: operations in flight that name it (it is freed only at zero)
  OutQueue* out = nullptr;   // non-null only while output is queued (an idle stream holds no buffer)
};

enum class IoBackend : uint8_t { kEpoll, kUring };

enum class CloseMode : uint8_t {
  // Write what is queued, then half-close (FIN), then read and discard until the peer closes or
  // kLingerMs pass, so that the peer reads everything we sent (a close frame, an HTTP error) instead of
  // a reset. If the output cannot be written within kLingerMs the stream is aborted.
  kGraceful,
  // Reset now (RST): the kernel drops the unsent data at once. For slow consumers and dead peers.
  kAbort,
};

// Backpressure and slow-consumer rules, from the config.
struct LoopOptions {
  // A stream whose socket has refused more than this many bytes (its backlog, charged by frame cost)
  // is not read until the backlog is back under it: a client that does not read its replies cannot
  // make the server queue more for it.
  uint64_t max_backlog = 1 << 20;
  // A stream whose backlog stays over max_backlog this long without its socket taking max_backlog bytes
  // meanwhile is a slow consumer (StreamEvents::on_slow). Time the server itself was busy does not
  // count against it: the backlog is judged only right after a write attempt.
  uint32_t max_backlog_ms = 2000;
  IoBackend backend = IoBackend::kEpoll;
  // io_uring: connections per ring (the size of its direct-descriptor table; the kernel allows at most
  // RLIMIT_NOFILE). The loop adds rings as connections need them, up to kMaxRings.
  uint32_t ring_files = 1024;
  // io_uring, for tests: receive single-shot (one buffer per receive) even where the kernel takes a limit on a
  // multishot receive, as on kernels before 6.16 (uring_recv_limit in io/uring.h).
  bool uring_single_shot = false;
};

// The hard per-connection bound (DESIGN.md rule 3), for a flood faster than MaxBacklogTime: a stream that is
// over max_backlog, whose socket has not taken max_backlog bytes since, and whose backlog grew by more than
// (kHardBacklogFactor - 1) x max_backlog on top of what it held when its grace ended, is a slow consumer at once.
// A burst that queued while the server was busy is never held against it: a workgroup catching up after a
// stall pours what piled up in its rings into the backlog within milliseconds, far faster than any reader
// could take it, so what arrives during the first kHardBacklogGraceMs over max_backlog (or max_backlog_ms,
// if shorter) counts as the burst. The grace is a scheduler's worst hiccup on a loaded machine (a test
// process sharing two cores with a busy server was seen to read nothing for 300 ms and more), and short
// enough that a flood's growth meanwhile stays a fraction of what MaxBacklogTime would let pile up.
constexpr uint64_t kHardBacklogFactor = 4;
constexpr uint32_t kHardBacklogGraceMs = 500;
// How long a gracefully closing stream may take to write its last bytes and see the peer's FIN.
// Long enough for a close frame to cross a slow link; short enough that closing connections cannot
// pile up (defect: a malformed close once kept the connection 5 s).
constexpr uint32_t kLingerMs = 2000;

// What the backend tells its owner. Called only on the loop's thread, from inside Loop::wait() and
// Loop::flush(). A callback may call any Loop method, including close() on the stream it was given.
class StreamEvents {
 public:
  virtual ~StreamEvents() = default;
  // Bytes received on s. `data` is valid only during the call: the owner copies what it keeps.
  virtual void on_data(Stream* s, uint8_t* data, size_t len) = 0;
  // The peer will send nothing more (FIN), or the connection failed. Called once per stream, after its
  // last on_data. The owner decides how to close (normally close(kGraceful), so queued replies leave).
  virtual void on_hangup(Stream* s) = 0;
  // s is a slow consumer (see LoopOptions). The owner closes it (usually kAbort) and counts it.
  virtual void on_slow(Stream* s) = 0;
  // The socket is closed and its output dropped; the owner may free s now. Nothing else about s follows.
  virtual void on_closed(Stream* s) = 0;
  // Loop::wake() was called on another thread.
  virtual void on_wake() = 0;
  // Called every few hundred streams during a long flush (a broadcast to thousands), so the owner can
  // take in messages that arrived meanwhile and have them leave with this flush.
  virtual void on_flush_stride() {}
  // The loop could not allocate memory it needed for s (io_uring: input held while s is paused) and aborts s: no
  // on_data or on_hangup follows, on_closed does. For the owner's count of allocation failures (DESIGN.md rule 3).
  virtual void on_alloc_failure(Stream*) {}
};

class Loop {
 public:
  virtual ~Loop() = default;

  // The backend options.backend names (io_uring only where io_uring_unavailable() said yes). Throws
  // std::runtime_error naming what failed.
  static std::unique_ptr<Loop> create(StreamEvents& events, const LoopOptions& options);

  // Takes ownership of a connected, non-blocking socket. False if it cannot be watched (the socket is
  // then closed and no callback follows).
  virtual bool adopt(Stream* s, int fd) = 0;

  // Queues f for s, taking one reference. Written at the next flush(), coalesced with everything else
  // queued to s. False when s is closing or the queue could not grow (out of memory): the reference is
  // dropped and the owner should abort s.
  virtual bool send(Stream* s, Frame* f) = 0;

  // Bytes queued for s and not yet taken by its socket (frame costs).
  virtual uint64_t backlog(const Stream* s) const = 0;

  // Stops / restarts delivering s's input. While paused, data stays in the kernel (TCP pushes back on the
  // peer); a hang-up is reported only once input is resumed and drained.
  virtual void pause(Stream* s) = 0;
  virtual void resume(Stream* s) = 0;

  // Closes s (see CloseMode). After this no on_data or on_hangup follows for s; on_closed follows later,
  // never from inside this call. Closing an already closing stream with kAbort makes it abort now.
  virtual void close(Stream* s, CloseMode mode) = 0;

  // Waits up to timeout_ms (0 when input is pending) for events and dispatches them.
  virtual void wait(int timeout_ms) = 0;

  // Writes what was queued since the last flush, judges slow consumers, finishes closes and calls
  // on_closed for streams that are done.
  virtual void flush() = 0;

  // Time-based work: slow-consumer deadlines of streams that stopped getting output, linger timeouts.
  // now_ms is the owner's monotonic clock, passed to every call that needs time.
  virtual void tick(uint64_t now_ms) = 0;
  virtual void set_now(uint64_t now_ms) = 0;

  // The stream with the largest backlog, or nullptr (memory budget enforcement).
  virtual Stream* largest_backlog() = 0;

  // Open streams, closing ones included.
  virtual size_t size() const = 0;

  // Bytes written to sockets since the loop was created.
  virtual uint64_t bytes_written() const = 0;

  // Whether the peer hung up (FIN, reset or error seen), also while s's input is paused: an owner that keeps
  // a stream paused for long (a decision on its token) looks, rather than wait for the report at resume.
  virtual bool peer_closed(const Stream* s) const = 0;

  // The peer's address as text ("192.0.2.1", "2001:db8::1"; an IPv4-mapped IPv6 address as IPv4), NUL-
  // terminated in out[0..cap), cap >= 46 (INET6_ADDRSTRLEN); "" when unknown. For the control plane's
  // decisions (the Custom hook's `address`), never per message.
  virtual void peer_address(const Stream* s, char* out, size_t cap) const = 0;

  // Any thread: makes wait() return and call on_wake() soon.
  virtual void wake() = 0;
};

}  // namespace starling
