// Latency recording for the benchmark client engine: a log-linear histogram in the style of HDR (every value
// kept to within 1/1024 of itself, 0.1%) plus Welford's running mean and variance. Recorded by one client
// thread per message; read in batches by TypeScript (bench/stats.ts interprets the buckets with the same
// mapping, merges threads and processes, and computes percentiles and confidence intervals).
#pragma once
#include <cmath>
#include <cstdint>

namespace starling {

// Values are whole microseconds. Below kLinear every value has its own bucket; above, each power of two
// [2^e, 2^(e+1)) is split into kSubBuckets equal buckets (e = 11 .. 11 + kOctaves - 1).
constexpr uint64_t kLinear = 2048;
constexpr uint64_t kSubBuckets = 1024;
constexpr unsigned kOctaves = 25;  // up to 2^36 us (~19 hours): nothing a benchmark measures is longer
constexpr unsigned kLatencyBuckets = kLinear + kOctaves * kSubBuckets;

// Bucket of a value (values past the range land in the last bucket).
inline unsigned latency_bucket(uint64_t us) {
  if (us < kLinear) return static_cast<unsigned>(us);
  unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(us));  // 2^e <= us, e >= 11
  unsigned octave = e - 11;
  if (octave >= kOctaves) return kLatencyBuckets - 1;
  uint64_t sub = (us >> (e - 10)) - kSubBuckets;  // top 11 bits of us, minus the leading one
  return static_cast<unsigned>(kLinear + octave * kSubBuckets + sub);
}

// Smallest value of a bucket (bench/stats.ts mirrors this).
inline uint64_t latency_bucket_low(unsigned b) {
  if (b < kLinear) return b;
  unsigned octave = (b - kLinear) / kSubBuckets;
  uint64_t sub = (b - kLinear) % kSubBuckets;
  return (kSubBuckets + sub) << (octave + 1);
}

struct Welford {
  double n = 0, mean = 0, m2 = 0, min = INFINITY, max = 0;
  void add(double x) {
    n += 1;
    double d = x - mean;
    mean += d / n;
    m2 += d * (x - mean);
    if (x < min) min = x;
    if (x > max) max = x;
  }
};

}  // namespace starling
