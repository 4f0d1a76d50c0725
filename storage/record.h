// Framing of every value synod stores in LMDB:
//
//   [format version: u32 little-endian][CRC32C of payload: u32 little-endian][payload]
//
// The payload is a flat Cap'n Proto message (capnp::messageToFlatArray) of a records.capnp struct.
// Reading checks, in order: length, version (an unknown version is refused, never guessed), CRC,
// then decodes. Every failure is a CorruptionError whose message names the table and the key, e.g.
//   corrupt record in table "kv" key "app/x": checksum mismatch
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "election/history.h"
#include "election/types.h"
#include "rpc_schema/records.capnp.h"
#include "storage/store.h"

namespace synod::storage {

constexpr uint32_t RECORD_FORMAT_VERSION = 1;
constexpr size_t RECORD_HEADER_BYTES = 8;

// How a table's keys are written in error messages.
enum class KeyFormat {
  BYTES,   // "app/x" for printable ASCII, 0x00ff.. otherwise
  SLOT,    // 8-byte big-endian slot: slot 42
  MEMBER,  // 4-byte big-endian member index: member 3
  LEASE,   // 8-byte big-endian lease id: lease 281474976710657
};

// Names a record in error messages. Views only: cheap to build for every record read, described
// only when something is wrong.
struct RecordName {
  std::string_view table;
  std::string_view key;
  KeyFormat format = KeyFormat::BYTES;
};

// "\"app/x\"" for printable ASCII keys (with \" and \\ escaped), "0x00ff.." for any other key.
std::string describeKey(std::string_view key);
// The key as KeyFormat says, falling back to describeKey when its length is wrong.
std::string describeRecordKey(const RecordName& name);

// Big-endian keys sort numerically in LMDB's default byte order.
std::string slotKey(Slot slot);                  // 8 bytes
std::string memberKey(MemberIndex member);       // 4 bytes
std::string leaseKey(uint64_t id);               // 8 bytes
uint64_t loadBigEndian(std::string_view bytes);  // precondition: size <= 8

// Throws CorruptionError "corrupt record in table T key K: <what>".
[[noreturn]] void throwCorrupt(const RecordName& name, std::string_view what);

// Wraps an arbitrary payload in the frame.
std::string frameRecord(std::string_view payload);
// Wraps the flat form of `message` in the frame.
std::string encodeRecord(capnp::MessageBuilder& message);

// Checks length, version and checksum of a stored frame; returns the payload, a view into
// `stored`.
std::string_view unframeRecord(std::string_view stored, const RecordName& name);

// A payload copied to word-aligned memory (stored values need not be 8-byte aligned) and checked
// to be one whole flat message, nothing more.
class RecordReader {
 public:
  RecordReader(std::string_view stored, const RecordName& name);

  // Any decode failure of the root or its fields inside `read` becomes a CorruptionError naming
  // the record. `read` must not keep readers past its return.
  template <typename Root, typename Fn>
  auto read(Fn&& read) {
    try {
      return read(message_->getRoot<Root>());
    } catch (const kj::Exception& e) {
      throwCorrupt(name_, std::string("cannot decode: ") + e.getDescription().cStr());
    }
  }

 private:
  RecordName name_;  // views that outlive the reader
  kj::Array<capnp::word> words_;
  kj::Own<capnp::FlatArrayMessageReader> message_;
};

// --- Encoders and decoders of each stored record (records.capnp) ---

std::string encodeKeyRecord(const KeyRecord& record);
KeyRecord decodeKeyRecord(std::string_view stored, const RecordName& name);

// The log record holds the ballot and value; the slot is the key.
std::string encodeLogRecord(const LogEntry& entry);
LogEntry decodeLogRecord(Slot slot, std::string_view stored, const RecordName& name);

struct Identity {
  std::string clusterId;
  std::string member;
  uint32_t schemaVersion = 0;
};
std::string encodeIdentity(const Identity& identity);
Identity decodeIdentity(std::string_view stored, const RecordName& name);

std::string encodePromise(const Ballot& ballot);
Ballot decodePromise(std::string_view stored, const RecordName& name);

std::string encodeApplied(Slot slot, uint64_t revision);
std::pair<Slot, uint64_t> decodeApplied(std::string_view stored, const RecordName& name);

std::string encodeIncarnation(uint64_t incarnation);
uint64_t decodeIncarnation(std::string_view stored, const RecordName& name);

// history table: the revision is the key as well (KeyFormat::SLOT, big-endian).
std::string encodeHistoryRevision(const election::RevisionChanges& revision);
election::RevisionChanges decodeHistoryRevision(std::string_view stored, const RecordName& name);
std::string encodeHistoryStart(uint64_t start);
uint64_t decodeHistoryStart(std::string_view stored, const RecordName& name);

}  // namespace synod::storage
