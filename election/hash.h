// The fixed 64-bit hash behind the state digests (keys, leases, locks): FNV-1a over the fields,
// MurmurHash3's fmix64 as finalizer. Fixed forever: members built differently must agree.
#pragma once

#include <cstdint>
#include <string_view>

namespace synod::election::hash {

constexpr uint64_t FNV_OFFSET_BASIS = 0xcbf29ce484222325ull;
constexpr uint64_t FNV_PRIME = 0x100000001b3ull;

inline uint64_t fnv1a(uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= FNV_PRIME;
  }
  return hash;
}

// A number as its 8 little-endian bytes.
inline uint64_t fnv1a(uint64_t hash, uint64_t number) {
  for (int i = 0; i < 8; ++i) {
    hash ^= (number >> (8 * i)) & 0xff;
    hash *= FNV_PRIME;
  }
  return hash;
}

// Length-prefixed bytes, so that adjacent fields cannot run into each other.
inline uint64_t fnv1aBytes(uint64_t hash, std::string_view bytes) {
  return fnv1a(fnv1a(hash, uint64_t{bytes.size()}), bytes);
}

inline uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

}  // namespace synod::election::hash
