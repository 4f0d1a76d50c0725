// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), the checksum of every stored
// record. Uses the SSE4.2 crc32 instruction when the CPU has it, a table-driven loop otherwise;
// both give identical results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace synod::storage {

// Extends `crc` (the CRC32C of the bytes before `data`, 0 for none) over `size` more bytes.
// crc32c(crc32c(0, a), b) == crc32c(0, a + b).
uint32_t crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32c(std::string_view bytes) {
  return crc32cExtend(0, bytes.data(), bytes.size());
}

// Both implementations, for tests that must check each one whatever the CPU.
uint32_t crc32cSoftware(uint32_t crc, const void* data, size_t size);
// Precondition: crc32cHardwareAvailable().
uint32_t crc32cHardware(uint32_t crc, const void* data, size_t size);
bool crc32cHardwareAvailable();

}  // namespace synod::storage
