// Unit tests for runtime/ring.h (SpscRing): capacity rounding, full and empty behaviour, FIFO order
// across wrap-around, and a producer and a consumer thread passing sequence numbers through a small ring.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <thread>

#include "check.h"
#include "runtime/ring.h"

using namespace starling;

namespace {

// How many pushes an empty ring takes before it reports full: its real capacity.
template <typename T>
uint32_t fill(SpscRing<T>& ring, uint32_t limit = 1u << 20) {
  uint32_t n = 0;
  while (n < limit && ring.push(T(n))) n++;
  return n;
}

// An element that shows a torn or stale slot: check is always ~seq when written by the producer.
struct Item {
  uint64_t seq = 0;
  uint64_t check = 0;
};

}  // namespace

TEST(ring_rounds_capacity_up_to_a_power_of_two) {
  const struct {
    uint32_t asked, real;
  } cases[] = {{0, 1}, {1, 1}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {63, 64}, {64, 64}, {65, 128}, {1000, 1024},
               {4096, 4096}};
  for (const auto& c : cases) {
    SpscRing<uint32_t> ring(c.asked);
    CHECK_EQ(fill(ring), c.real);
  }
}

TEST(ring_is_empty_when_new_and_after_draining) {
  SpscRing<int> ring(4);
  int out = -7;
  CHECK(!ring.pop(&out));
  CHECK_EQ(out, -7);  // a failed pop leaves *out alone
  CHECK(ring.push(1));
  CHECK(ring.pop(&out));
  CHECK_EQ(out, 1);
  out = -7;
  CHECK(!ring.pop(&out));
  CHECK(!ring.pop(&out));
  CHECK_EQ(out, -7);
}

TEST(ring_refuses_a_push_when_full_and_keeps_its_contents) {
  SpscRing<uint32_t> ring(8);
  CHECK_EQ(fill(ring), 8u);
  CHECK(!ring.push(100));
  CHECK(!ring.push(101));  // still full: the producer's refreshed view of head_ says so too
  uint32_t out = 0;
  CHECK(ring.pop(&out));
  CHECK_EQ(out, 0u);
  CHECK(ring.push(8));     // one slot freed, one push accepted
  CHECK(!ring.push(102));
  for (uint32_t want = 1; want <= 8; want++) {
    CHECK(ring.pop(&out));
    CHECK_EQ(out, want);   // the refused values never went in
  }
  CHECK(!ring.pop(&out));
}

TEST(ring_keeps_fifo_order_across_many_wrap_arounds) {
  SpscRing<uint64_t> ring(16);
  uint64_t next_in = 0, next_out = 0;
  size_t wrong = 0;
  // Uneven batches so head and tail meet every slot at every fill level.
  for (int round = 0; round < 2000; round++) {
    const int in = 1 + round % 17, out = 1 + (round * 7) % 13;
    for (int k = 0; k < in && ring.push(next_in); k++) next_in++;
    uint64_t v = 0;
    for (int k = 0; k < out && ring.pop(&v); k++) {
      if (v != next_out) wrong++;
      next_out++;
    }
  }
  uint64_t v = 0;
  while (ring.pop(&v)) {
    if (v != next_out) wrong++;
    next_out++;
  }
  CHECK_EQ(wrong, 0u);
  CHECK_EQ(next_out, next_in);
  CHECK(next_in > 16 * 100);  // the indices went round the ring many times
}

TEST(ring_passes_every_sequence_number_once_and_in_order_between_two_threads) {
  // A ring far smaller than the stream, so the producer often finds it full and the consumer often
  // finds it empty: both retry, yielding (the cores may be shared).
  constexpr uint64_t kCount = 2000000;
  SpscRing<Item> ring(64);
  std::atomic<bool> producer_done{false};
  uint64_t full_retries = 0;

  std::thread producer([&] {
    for (uint64_t seq = 0; seq < kCount; seq++) {
      const Item item{seq, ~seq};
      while (!ring.push(item)) {
        full_retries++;
        std::this_thread::yield();
      }
    }
    producer_done.store(true, std::memory_order_release);
  });

  // The consumer runs here; failures are counted and checked after the join (check.h is not thread-safe).
  uint64_t received = 0, out_of_order = 0, torn = 0, extra = 0, empty_retries = 0;
  auto take = [&](const Item& it) {
    if (it.check != ~it.seq) torn++;
    if (received >= kCount) {
      extra++;
    } else if (it.seq != received) {
      out_of_order++;  // a loss shows as a jump, a duplicate as a repeat
    }
    received++;
  };
  Item item;
  while (true) {
    if (ring.pop(&item)) {
      take(item);
      continue;
    }
    // Empty. Once the producer is done (acquire: all its pushes are visible), drain what is left.
    if (producer_done.load(std::memory_order_acquire)) {
      while (ring.pop(&item)) take(item);
      break;
    }
    empty_retries++;
    std::this_thread::yield();
  }
  producer.join();

  CHECK_EQ(received, kCount);
  CHECK_EQ(out_of_order, 0u);
  CHECK_EQ(torn, 0u);
  CHECK_EQ(extra, 0u);
  std::printf("  ring stress: %llu items, %llu full retries, %llu empty retries\n",
              static_cast<unsigned long long>(received), static_cast<unsigned long long>(full_retries),
              static_cast<unsigned long long>(empty_retries));
}
