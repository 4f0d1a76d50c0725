// The only source of randomness the core may use: a seeded, deterministic generator injected by
// the caller. The daemon seeds it from the OS; the simulator from its run seed, so one seed replays
// a whole run.
#pragma once

#include <cstdint>

namespace synod::election {

// xoshiro256** seeded through splitmix64. Not for cryptography. Copyable: a copy continues the same
// sequence independently.
class Prng {
 public:
  explicit Prng(uint64_t seed) {
    for (uint64_t& word : state_) {
      seed += 0x9e3779b97f4a7c15ULL;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      word = z ^ (z >> 31);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [low, high); returns low when high <= low.
  uint64_t uniform(uint64_t low, uint64_t high) {
    if (high <= low) return low;
    return low + static_cast<uint64_t>((static_cast<__uint128_t>(next()) * (high - low)) >> 64);
  }

  // Uniform in [0, 1).
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  // True with probability p.
  bool chance(double p) { return unit() < p; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace synod::election
