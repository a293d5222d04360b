// Deterministic pseudo-random bytes for the hostile-input tests (xorshift64*: fast, seedable, and the
// same sequence on every machine, so a failure reproduces).
#pragma once
#include <cstddef>
#include <cstdint>

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed ? seed : 1) {}
  uint64_t next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Dull;
  }
  // Uniform enough in [0, n) for tests; n > 0.
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  uint8_t byte() { return static_cast<uint8_t>(next() >> 56); }
};
