#include "storage/crc32c.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace synod::storage {
namespace {

// RFC 3720 (iSCSI) appendix B.4 test vectors, plus the customary check value.
struct Vector {
  std::string input;
  uint32_t crc;
};

std::vector<Vector> vectors() {
  std::string ascending;
  std::string descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  return {
      {"", 0},
      {"123456789", 0xE3069283},
      {std::string(32, '\0'), 0x8A9136AA},
      {std::string(32, '\xFF'), 0x62A8AB43},
      {ascending, 0x46DD794E},
      {descending, 0x113FDB5C},
  };
}

TEST_CASE("crc32c matches the standard test vectors") {
  for (const Vector& v : vectors()) {
    CAPTURE(v.input.size());
    CHECK(crc32c(v.input) == v.crc);
    CHECK(crc32cSoftware(0, v.input.data(), v.input.size()) == v.crc);
    if (crc32cHardwareAvailable()) {
      CHECK(crc32cHardware(0, v.input.data(), v.input.size()) == v.crc);
    }
  }
}

TEST_CASE("crc32c: both implementations agree at every length and alignment, and extend") {
  std::string bytes;
  uint32_t state = 12345;
  for (int i = 0; i < 300; ++i) {
    state = state * 1103515245 + 12345;
    bytes.push_back(static_cast<char>(state >> 16));
  }
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t size = 0; offset + size <= bytes.size(); size += 7) {
      const char* p = bytes.data() + offset;
      uint32_t software = crc32cSoftware(0, p, size);
      if (crc32cHardwareAvailable()) REQUIRE(crc32cHardware(0, p, size) == software);
      size_t split = size / 3;
      REQUIRE(crc32cExtend(crc32cExtend(0, p, split), p + split, size - split) == software);
    }
  }
}

}  // namespace
}  // namespace synod::storage
