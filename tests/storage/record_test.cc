#include "storage/record.h"

#include <doctest/doctest.h>

#include "storage/crc32c.h"

namespace synod::storage {
namespace {

std::string messageOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const CorruptionError& e) {
    return e.what();
  }
  FAIL("no CorruptionError");
  return "";
}

void setLittleEndian32(std::string& frame, size_t at, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    frame[at + i] = static_cast<char>((value >> (8 * i)) & 0xFF);
}

TEST_CASE("record frame: version, checksum, payload") {
  std::string frame = frameRecord("payload");
  REQUIRE(frame.size() == RECORD_HEADER_BYTES + 7);
  CHECK(frame.substr(0, 4) == std::string("\x01\x00\x00\x00", 4));
  uint32_t crc = crc32c("payload");
  CHECK(static_cast<unsigned char>(frame[4]) == (crc & 0xFF));
  CHECK(static_cast<unsigned char>(frame[7]) == (crc >> 24));
  CHECK(unframeRecord(frame, {"kv", "k"}) == "payload");
}

TEST_CASE("record frame: every defect is a CorruptionError naming table and key") {
  std::string frame = encodeKeyRecord({"value", 1, 2, 3, 4});
  RecordName name{"kv", "app/x"};

  SUBCASE("short") {
    CHECK(messageOf([&] { unframeRecord(frame.substr(0, 7), name); }) ==
          "corrupt record in table \"kv\" key \"app/x\": record of 7 bytes is shorter than its "
          "header");
  }
  SUBCASE("unknown version") {
    setLittleEndian32(frame, 0, 2);
    CHECK(messageOf([&] { decodeKeyRecord(frame, name); }) ==
          "corrupt record in table \"kv\" key \"app/x\": unsupported record version 2 (this "
          "synod reads version 1)");
  }
  SUBCASE("checksum") {
    frame[frame.size() - 3] ^= 0x10;
    CHECK(messageOf([&] { decodeKeyRecord(frame, name); }) ==
          "corrupt record in table \"kv\" key \"app/x\": checksum mismatch");
  }
  SUBCASE("checksum of the header") {
    frame[5] ^= 0x01;
    CHECK(messageOf([&] { decodeKeyRecord(frame, name); }).find("checksum mismatch") !=
          std::string::npos);
  }
  SUBCASE("payload not whole words, with a valid checksum") {
    std::string bad = frameRecord(frame.substr(RECORD_HEADER_BYTES) + "x");
    CHECK(messageOf([&] { decodeKeyRecord(bad, name); }).find("not a whole number of words") !=
          std::string::npos);
  }
  SUBCASE("trailing words after the message") {
    std::string bad = frameRecord(frame.substr(RECORD_HEADER_BYTES) + std::string(8, '\0'));
    CHECK(messageOf([&] { decodeKeyRecord(bad, name); }).find("trailing") != std::string::npos);
  }
  SUBCASE("garbage with a valid checksum") {
    std::string bad = frameRecord(std::string(16, '\xFF'));
    CHECK(messageOf([&] { decodeKeyRecord(bad, name); }).find("cannot decode") !=
          std::string::npos);
  }
  SUBCASE("a root pointer out of bounds with a valid checksum") {
    // The segment table and root pointer only: the struct the pointer names is missing.
    std::string payload = frame.substr(RECORD_HEADER_BYTES, 16);
    setLittleEndian32(payload, 0, 0);  // one segment
    setLittleEndian32(payload, 4, 1);  // of one word
    std::string bad = frameRecord(payload);
    CHECK(messageOf([&] { decodeKeyRecord(bad, name); }).find("cannot decode") !=
          std::string::npos);
  }
}

TEST_CASE("record names: printable keys quoted, others in hex, slots and members as numbers") {
  CHECK(describeKey("app/x") == "\"app/x\"");
  CHECK(describeKey("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(describeKey(std::string("\x00\xff\n", 3)) == "0x00ff0a");
  CHECK(describeRecordKey({"log", slotKey(42), KeyFormat::SLOT}) == "slot 42");
  CHECK(describeRecordKey({"sessions", memberKey(3), KeyFormat::MEMBER}) == "member 3");
  CHECK(describeRecordKey({"log", "abc", KeyFormat::SLOT}) == "\"abc\"");
  CHECK(slotKey(0x0102030405060708) == "\x01\x02\x03\x04\x05\x06\x07\x08");
  CHECK(loadBigEndian(slotKey(0xFFFFFFFFFFFFFFFE)) == 0xFFFFFFFFFFFFFFFE);
  CHECK(slotKey(255) < slotKey(256));
}

TEST_CASE("records round trip") {
  KeyRecord key{std::string("v\0w", 3), 5, 9, 2, 77};
  CHECK(decodeKeyRecord(encodeKeyRecord(key), {"kv", "k"}) == key);

  LogEntry entry{12, {3, 2}, {{"one", std::string("\0\1", 2), ""}}};
  CHECK(decodeLogRecord(12, encodeLogRecord(entry), {"log", slotKey(12), KeyFormat::SLOT}) ==
        entry);
  LogEntry noop{13, {4, 0}, {}};
  CHECK(decodeLogRecord(13, encodeLogRecord(noop), {"log", slotKey(13), KeyFormat::SLOT}) == noop);

  Identity identity = decodeIdentity(encodeIdentity({"group", "n2", 1}), {"meta", "identity"});
  CHECK(identity.clusterId == "group");
  CHECK(identity.member == "n2");
  CHECK(identity.schemaVersion == 1);
  CHECK(decodePromise(encodePromise({7, 1}), {"meta", "promise"}) == Ballot{7, 1});
  CHECK(decodeApplied(encodeApplied(10, 20), {"meta", "applied"}) ==
        std::pair<Slot, uint64_t>(10, 20));
  CHECK(decodeIncarnation(encodeIncarnation(99), {"meta", "incarnation"}) == 99);
}

}  // namespace
}  // namespace synod::storage
