// SpscRing: a bounded single-producer single-consumer queue. Workgroups talk to each other through one
// ring per (producer, consumer) pair, so neither side ever takes a lock or retries a CAS.
#pragma once
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>
#include <memory>

namespace starling {

template <typename T>
class SpscRing {
 public:
  // capacity is rounded up to a power of two. Untouched slots cost no resident memory.
  explicit SpscRing(uint32_t capacity) {
    cap_ = 1;
    while (cap_ < capacity) cap_ <<= 1;
    slots_.reset(new T[cap_]);
  }

  // Producer thread only. False when full (the caller decides what a full ring means).
  bool push(const T& value) {
    uint32_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_seen_ == cap_) {
      head_seen_ = head_.load(std::memory_order_acquire);
      if (tail - head_seen_ == cap_) return false;
    }
    slots_[tail & (cap_ - 1)] = value;
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer thread only. False when empty.
  bool pop(T* out) {
    uint32_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_seen_) {
      tail_seen_ = tail_.load(std::memory_order_acquire);
      if (head == tail_seen_) return false;
    }
    *out = slots_[head & (cap_ - 1)];
    head_.store(head + 1, std::memory_order_release);
    return true;
  }

 private:
  // Producer and consumer fields on separate cache lines so the two threads do not false-share.
  alignas(64) std::atomic<uint32_t> head_{0};
  uint32_t tail_seen_ = 0;   // consumer's cached copy of tail_
  alignas(64) std::atomic<uint32_t> tail_{0};
  uint32_t head_seen_ = 0;   // producer's cached copy of head_
  alignas(64) uint32_t cap_;
  std::unique_ptr<T[]> slots_;
};

// The other way batches cross threads (entitlement's tokens and decisions, THREADS.md "Decisions"): a vector
// guarded by a mutex the caller holds. Moves every element of `from` to the end of `into` and empties `from`;
// an allocation that fails throws before anything moved, so the caller still owns every element.
template <typename T>
void hand_over(std::vector<T>& into, std::vector<T>& from) {
  if (into.empty()) {
    into.swap(from);
  } else {
    into.reserve(into.size() + from.size());
    for (T& x : from) into.push_back(std::move(x));
  }
  from.clear();
}

}  // namespace starling
