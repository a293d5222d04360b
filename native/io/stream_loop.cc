#include "io/stream_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace starling {

namespace {

// First slots of an output queue (grows by doubling): a burst of a few messages needs no growth.
constexpr uint32_t kFirstQueueCap = 8;
// Output queues kept for reuse, so that a message to an idle connection costs no malloc.
constexpr size_t kQueuePoolMax = 4096;
// What one queued frame reference costs besides the frame: its queue slot.
constexpr uint64_t kSlotCost = sizeof(Frame*);
// Streams written between two on_flush_stride calls. A send costs ~4-8 us here, so this looks at the
// owner's inbox about every millisecond of a long flush: often enough to coalesce a broadcast arriving
// mid-flush, rarely enough that the look costs nothing.
constexpr size_t kFlushStride = 256;

}  // namespace

std::unique_ptr<Loop> Loop::create(StreamEvents& events, const LoopOptions& options) {
  return options.backend == IoBackend::kUring ? make_uring_loop(events, options) : make_epoll_loop(events, options);
}

void format_address(const sockaddr_storage& peer, char* out, size_t cap) {
  out[0] = '\0';
  if (peer.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr, out, static_cast<socklen_t>(cap));
  } else if (peer.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) inet_ntop(AF_INET, a.s6_addr + 12, out, static_cast<socklen_t>(cap));
    else inet_ntop(AF_INET6, &a, out, static_cast<socklen_t>(cap));
  }
}

StreamLoop::StreamLoop(StreamEvents& events, const LoopOptions& options) : ev_(events), opt_(options) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
}

StreamLoop::~StreamLoop() {
  // The owner closed every stream before destroying the loop; free what is pooled.
  for (OutQueue* q : pool_) free_queue_memory(q);
  ::close(wake_fd_);
}

void StreamLoop::wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_, &one, sizeof one);
  (void)ignored;
}

void StreamLoop::run_ready() {
  if (ready_.empty()) return;
  resume_.swap(ready_);  // (both reserved)
  for (Stream* s : resume_) {
    s->io_flags &= ~kInReady;
    input(s);
  }
  resume_.clear();
}

void StreamLoop::take_wake() {
  uint64_t count;
  ssize_t ignored = read(wake_fd_, &count, sizeof count);
  (void)ignored;
  ev_.on_wake();
}

bool StreamLoop::reserve_one() {
  if (open_ + 1 <= reserved_) return true;
  size_t want = (open_ + 1) * 2;
  try {
    for (auto* list : {&ready_, &resume_, &dirty_, &queued_, &closing_, &graveyard_, &done_, &due_}) list->reserve(want);
  } catch (const std::bad_alloc&) {
    return false;
  }
  reserved_ = want;
  return true;
}

bool StreamLoop::send(Stream* s, Frame* f) {
  if (s->io_flags & (kClosing | kDead)) {
    f->unref();
    return false;
  }
  OutQueue* q = s->out ? s->out : (s->out = new_queue(s));
  if (!q || (q->count == q->cap && !grow(q))) {
    f->unref();
    return false;
  }
  q->items[(q->head + q->count) & (q->cap - 1)] = f;
  q->count++;
  q->bytes += f->cost + kSlotCost;
  mark_dirty(s);
  return true;
}

void StreamLoop::resume(Stream* s) {
  if (!(s->io_flags & kPaused)) return;
  s->io_flags &= ~kPaused;
  make_ready(s);
}

void StreamLoop::close(Stream* s, CloseMode mode) {
  if (s->io_flags & kDead) return;
  if (mode == CloseMode::kAbort) {
    abort_now(s);
    return;
  }
  if (s->io_flags & kClosing) return;
  OutQueue* q = s->out ? s->out : (s->out = new_queue(s));
  if (!q) {
    abort_now(s);
    return;
  }
  s->io_flags |= kClosing;
  s->io_flags &= ~(kOver | kPaused);
  q->deadline = now_ + kLingerMs;
  q->closing_index = static_cast<uint32_t>(closing_.size());
  closing_.push_back(s);
  mark_dirty(s);  // flush() writes the rest, then sends FIN
}

void StreamLoop::flush() {
  // Streams may be added while we flush (on_flush_stride queues more): index, don't iterate.
  for (size_t i = 0; i < dirty_.size(); i++) {
    if (i % kFlushStride == kFlushStride - 1) ev_.on_flush_stride();
    Stream* s = dirty_[i];
    s->io_flags &= ~kDirty;
    if (s->io_flags & kDead) continue;
    if (!(s->io_flags & kWriteBlocked)) write_out(s);
    if (!(s->io_flags & kDead)) judge(s);
  }
  dirty_.clear();
  reap();
}

void StreamLoop::tick(uint64_t now_ms) {
  now_ = now_ms;
  // Closing streams past their linger: the peer did not take our last bytes or never sent FIN.
  for (size_t i = 0; i < closing_.size();) {
    Stream* s = closing_[i];
    if (s->out->deadline <= now_) abort_now(s);  // removes s from closing_
    else i++;
  }
  // Slow consumers that receive nothing new are judged here. A stream waiting for flush (new output,
  // or its socket became writable) is left to flush, which judges it right after its write attempt:
  // its socket may have taken enough to restart the clock (judging it here, before that write, called
  // a reader slow that kept up but whose server had been busy longer than max_backlog_ms).
  // on_slow may close streams, which reorders queued_: collect first, then report.
  due_.clear();
  for (Stream* s : queued_)
    if ((s->io_flags & kOver) && !(s->io_flags & (kClosing | kSlowSent | kDirty | kDead)) &&
        now_ - s->out->over_since >= opt_.max_backlog_ms)
      due_.push_back(s);
  for (Stream* s : due_)
    if (!(s->io_flags & (kDead | kClosing | kSlowSent))) slow(s);  // not freed before reap()
  due_.clear();
  reap();
}

Stream* StreamLoop::largest_backlog() {
  Stream* best = nullptr;
  for (Stream* s : queued_)
    if (!(s->io_flags & (kClosing | kDead)) && (!best || s->out->bytes > best->out->bytes)) best = s;
  return best;
}

void StreamLoop::mark_dirty(Stream* s) {
  if (s->io_flags & kDirty) return;
  s->io_flags |= kDirty;
  dirty_.push_back(s);
}

void StreamLoop::make_ready(Stream* s) {
  if ((s->io_flags & (kInReady | kDead)) || !(s->io_flags & (kReadable | kPeerClosed))) return;
  s->io_flags |= kInReady;
  ready_.push_back(s);
}

void StreamLoop::gate_if_over(Stream* s) {
  if (s->out && s->out->bytes > opt_.max_backlog && !(s->io_flags & (kDead | kClosing | kOver))) {
    s->io_flags |= kOver;
    start_judging(s->out);
  }
}

void StreamLoop::consume(Stream* s, size_t written) {
  OutQueue* q = s->out;
  q->progress += written;
  bytes_written_ += written;
  while (written) {
    Frame* f = q->at(0);
    size_t left = f->size() - q->offset;
    if (written < left) {
      q->offset += static_cast<uint32_t>(written);
      break;
    }
    written -= left;
    q->offset = 0;
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->bytes -= f->cost + kSlotCost;
    f->unref();
  }
}

void StreamLoop::written_all(Stream* s) {
  if (s->io_flags & kClosing) {
    if (!(s->io_flags & kShut)) {
      s->io_flags |= kShut;
      shut(s);  // the peer reads all we sent, then our FIN
    }
    return;
  }
  ungate(s);
  release_queue(s);
}

// The backlog rule (LoopOptions), applied right after a write attempt.
void StreamLoop::judge(Stream* s) {
  OutQueue* q = s->out;
  if (!q || (s->io_flags & (kClosing | kSlowSent))) return;
  if (q->bytes <= opt_.max_backlog) {
    ungate(s);
    return;
  }
  if (!(s->io_flags & kOver)) {
    // Newly over: whatever queued while the server was busy (a stall, a burst drained from the inbox) is
    // not held against the client yet — its socket is judged from now on.
    s->io_flags |= kOver;
    start_judging(q);
    return;
  }
  if (q->progress >= opt_.max_backlog) {  // it is reading, only slower than the burst came: restart
    start_judging(q);
    return;
  }
  // Its socket has not taken MaxBacklog bytes since it went over: too slow for MaxBacklogTime, or its
  // backlog grew past the hard bound on top of what it held when its grace ended.
  const uint64_t over_ms = now_ - q->over_since;
  if (over_ms >= opt_.max_backlog_ms) {
    slow(s);
    return;
  }
  if (over_ms < hard_grace_ms()) {  // still the burst: the client had no fair chance to read it yet
    if (q->bytes > q->over_base) q->over_base = q->bytes;
    return;
  }
  if (q->bytes > q->over_base + opt_.max_backlog * (kHardBacklogFactor - 1)) slow(s);
}

uint32_t StreamLoop::hard_grace_ms() const { return std::min(opt_.max_backlog_ms, kHardBacklogGraceMs); }

void StreamLoop::start_judging(OutQueue* q) {
  q->over_since = now_;
  q->progress = 0;
  q->over_base = q->bytes > opt_.max_backlog ? q->bytes : opt_.max_backlog;
}

void StreamLoop::ungate(Stream* s) {
  if (!(s->io_flags & kOver)) return;
  s->io_flags &= ~kOver;
  make_ready(s);
}

void StreamLoop::slow(Stream* s) {
  s->io_flags |= kSlowSent;
  ev_.on_slow(s);
}

void StreamLoop::remove_closing(Stream* s) {
  uint32_t i = s->out->closing_index;
  Stream* last = closing_.back();
  closing_[i] = last;
  last->out->closing_index = i;
  closing_.pop_back();
}

void StreamLoop::reap() {
  if (graveyard_.empty()) return;
  // Dead streams may still sit in ready_, and in dirty_ when tick() reaps (an abort after wait() marked
  // them for flush): drop them before their owner frees them.
  drop_dead(ready_);
  drop_dead(dirty_);
  done_.swap(graveyard_);  // both reserved: the swap keeps graveyard_'s capacity
  for (Stream* s : done_) {
    open_--;
    ev_.on_closed(s);
  }
  done_.clear();
}

void StreamLoop::drop_dead(std::vector<Stream*>& list) {
  size_t k = 0;
  for (Stream* s : list)
    if (!(s->io_flags & kDead)) list[k++] = s;
  list.resize(k);
}

OutQueue* StreamLoop::new_queue(Stream* s) {
  OutQueue* q;
  if (!pool_.empty()) {
    q = pool_.back();
    pool_.pop_back();
  } else {
    q = static_cast<OutQueue*>(mem::alloc(sizeof(OutQueue)));
    if (!q) return nullptr;
    q->items = static_cast<Frame**>(mem::alloc(kFirstQueueCap * sizeof(Frame*)));
    if (!q->items) {
      mem::free(q, sizeof(OutQueue));
      return nullptr;
    }
    q->cap = kFirstQueueCap;
  }
  q->head = q->count = q->offset = 0;
  q->bytes = q->over_since = q->progress = q->over_base = q->deadline = 0;
  q->queued_index = static_cast<uint32_t>(queued_.size());
  q->closing_index = 0;
  queued_.push_back(s);
  return q;
}

bool StreamLoop::grow(OutQueue* q) {
  uint32_t cap = q->cap * 2;
  Frame** grown = static_cast<Frame**>(mem::alloc(cap * sizeof(Frame*)));
  if (!grown) return false;
  for (uint32_t i = 0; i < q->count; i++) grown[i] = q->at(i);
  mem::free(q->items, q->cap * sizeof(Frame*));
  q->items = grown;
  q->head = 0;
  q->cap = cap;
  return true;
}

void StreamLoop::release_queue(Stream* s) {
  OutQueue* q = s->out;
  if (s->io_flags & kClosing) remove_closing(s);
  for (uint32_t i = 0; i < q->count; i++) q->at(i)->unref();
  uint32_t i = q->queued_index;
  Stream* last = queued_.back();
  queued_[i] = last;
  last->out->queued_index = i;
  queued_.pop_back();
  s->out = nullptr;
  if (pool_.size() < kQueuePoolMax && q->cap == kFirstQueueCap) pool_.push_back(q);
  else free_queue_memory(q);
}

void StreamLoop::free_queue_memory(OutQueue* q) {
  mem::free(q->items, q->cap * sizeof(Frame*));
  mem::free(q, sizeof(OutQueue));
}

}  // namespace starling
