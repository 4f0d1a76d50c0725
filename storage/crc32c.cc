#include "storage/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace synod::storage {

namespace {

constexpr uint32_t POLYNOMIAL_REFLECTED = 0x82F63B78;

// Slicing-by-8 tables: TABLES[k][b] is the CRC of byte b followed by k zero bytes.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables makeTables() {
  Tables tables{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit)
      crc = (crc >> 1) ^ ((crc & 1) ? POLYNOMIAL_REFLECTED : 0);
    tables[0][byte] = crc;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (uint32_t byte = 0; byte < 256; ++byte) {
      uint32_t previous = tables[k - 1][byte];
      tables[k][byte] = (previous >> 8) ^ tables[0][previous & 0xFF];
    }
  }
  return tables;
}

constexpr Tables TABLES = makeTables();

uint64_t loadLittleEndian64(const unsigned char* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i)
    value = (value << 8) | p[i];
  return value;
}

}  // namespace

uint32_t crc32cSoftware(uint32_t crc, const void* data, size_t size) {
  auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (size >= 8) {
    uint64_t word = loadLittleEndian64(p) ^ crc;
    crc = TABLES[7][word & 0xFF] ^ TABLES[6][(word >> 8) & 0xFF] ^ TABLES[5][(word >> 16) & 0xFF] ^
          TABLES[4][(word >> 24) & 0xFF] ^ TABLES[3][(word >> 32) & 0xFF] ^
          TABLES[2][(word >> 40) & 0xFF] ^ TABLES[1][(word >> 48) & 0xFF] ^ TABLES[0][word >> 56];
    p += 8;
    size -= 8;
  }
  while (size > 0) {
    crc = (crc >> 8) ^ TABLES[0][(crc ^ *p) & 0xFF];
    ++p;
    --size;
  }
  return ~crc;
}

#if defined(__x86_64__)

__attribute__((target("sse4.2"))) uint32_t crc32cHardware(uint32_t crc, const void* data,
                                                          size_t size) {
  auto* p = static_cast<const unsigned char*>(data);
  uint64_t state = ~crc;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));  // unaligned load
    state = _mm_crc32_u64(state, word);
    p += 8;
    size -= 8;
  }
  auto state32 = static_cast<uint32_t>(state);
  while (size > 0) {
    state32 = _mm_crc32_u8(state32, *p);
    ++p;
    --size;
  }
  return ~state32;
}

bool crc32cHardwareAvailable() {
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
}

#else

uint32_t crc32cHardware(uint32_t crc, const void* data, size_t size) {
  return crc32cSoftware(crc, data, size);
}

bool crc32cHardwareAvailable() {
  return false;
}

#endif

uint32_t crc32cExtend(uint32_t crc, const void* data, size_t size) {
  if (crc32cHardwareAvailable()) return crc32cHardware(crc, data, size);
  return crc32cSoftware(crc, data, size);
}

}  // namespace synod::storage
