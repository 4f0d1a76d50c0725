#include "storage/record.h"

#include "storage/crc32c.h"

namespace synod::storage {

namespace {

void appendLittleEndian32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

uint32_t loadLittleEndian32(const char* p) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i)
    value = (value << 8) | static_cast<unsigned char>(p[i]);
  return value;
}

std::string_view view(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

capnp::Data::Reader asData(std::string_view bytes) {
  return {reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()};
}

std::string_view view(capnp::Text::Reader text) {
  return {text.begin(), text.size()};
}

}  // namespace

std::string describeKey(std::string_view key) {
  bool printable = true;
  for (char c : key)
    printable = printable && c >= 0x20 && c <= 0x7E;
  std::string out;
  if (printable) {
    out.push_back('"');
    for (char c : key) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
    return out;
  }
  static constexpr char HEX[] = "0123456789abcdef";
  out = "0x";
  for (char c : key) {
    auto byte = static_cast<unsigned char>(c);
    out.push_back(HEX[byte >> 4]);
    out.push_back(HEX[byte & 0xF]);
  }
  return out;
}

std::string describeRecordKey(const RecordName& name) {
  if (name.format == KeyFormat::SLOT && name.key.size() == sizeof(Slot)) {
    return "slot " + std::to_string(loadBigEndian(name.key));
  }
  if (name.format == KeyFormat::LEASE && name.key.size() == sizeof(uint64_t)) {
    return "lease " + std::to_string(loadBigEndian(name.key));
  }
  if (name.format == KeyFormat::MEMBER && name.key.size() == sizeof(MemberIndex)) {
    return "member " + std::to_string(loadBigEndian(name.key));
  }
  return describeKey(name.key);
}

std::string leaseKey(uint64_t id) {
  return slotKey(id);
}

std::string slotKey(Slot slot) {
  std::string key(sizeof(Slot), '\0');
  for (size_t i = 0; i < sizeof(Slot); ++i) {
    key[i] = static_cast<char>((slot >> (8 * (sizeof(Slot) - 1 - i))) & 0xFF);
  }
  return key;
}

std::string memberKey(MemberIndex member) {
  std::string key(sizeof(MemberIndex), '\0');
  for (size_t i = 0; i < sizeof(MemberIndex); ++i) {
    key[i] = static_cast<char>((member >> (8 * (sizeof(MemberIndex) - 1 - i))) & 0xFF);
  }
  return key;
}

uint64_t loadBigEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes)
    value = (value << 8) | static_cast<unsigned char>(c);
  return value;
}

void throwCorrupt(const RecordName& name, std::string_view what) {
  throw CorruptionError("corrupt record in table \"" + std::string(name.table) + "\" key " +
                        describeRecordKey(name) + ": " + std::string(what));
}

std::string frameRecord(std::string_view payload) {
  std::string out;
  out.reserve(RECORD_HEADER_BYTES + payload.size());
  appendLittleEndian32(out, RECORD_FORMAT_VERSION);
  appendLittleEndian32(out, crc32c(payload));
  out.append(payload);
  return out;
}

std::string encodeRecord(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  return frameRecord({reinterpret_cast<const char*>(bytes.begin()), bytes.size()});
}

std::string_view unframeRecord(std::string_view stored, const RecordName& name) {
  if (stored.size() < RECORD_HEADER_BYTES) {
    throwCorrupt(
        name, "record of " + std::to_string(stored.size()) + " bytes is shorter than its header");
  }
  uint32_t version = loadLittleEndian32(stored.data());
  if (version != RECORD_FORMAT_VERSION) {
    throwCorrupt(name, "unsupported record version " + std::to_string(version) +
                           " (this synod reads version " + std::to_string(RECORD_FORMAT_VERSION) +
                           ")");
  }
  std::string_view payload = stored.substr(RECORD_HEADER_BYTES);
  if (loadLittleEndian32(stored.data() + 4) != crc32c(payload)) {
    throwCorrupt(name, "checksum mismatch");
  }
  return payload;
}

RecordReader::RecordReader(std::string_view stored, const RecordName& name) : name_(name) {
  std::string_view payload = unframeRecord(stored, name);
  if (payload.size() % sizeof(capnp::word) != 0) {
    throwCorrupt(name, "payload of " + std::to_string(payload.size()) +
                           " bytes is not a whole number of words");
  }
  words_ = kj::heapArray<capnp::word>(payload.size() / sizeof(capnp::word));
  if (!payload.empty()) std::memcpy(words_.begin(), payload.data(), payload.size());
  try {
    message_ = kj::heap<capnp::FlatArrayMessageReader>(words_.asPtr());
  } catch (const kj::Exception& e) {
    throwCorrupt(name, std::string("cannot decode: ") + e.getDescription().cStr());
  }
  if (message_->getEnd() != words_.end()) throwCorrupt(name, "trailing bytes after the message");
}

std::string encodeKeyRecord(const KeyRecord& record) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::KeyRecord>();
  root.setValue(asData(record.value));
  root.setCreateRevision(record.createRevision);
  root.setModRevision(record.modRevision);
  root.setVersion(record.version);
  root.setLease(record.lease);
  return encodeRecord(message);
}

KeyRecord decodeKeyRecord(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name).read<records::KeyRecord>([](records::KeyRecord::Reader root) {
    KeyRecord record;
    record.value = std::string(view(root.getValue()));
    record.createRevision = root.getCreateRevision();
    record.modRevision = root.getModRevision();
    record.version = root.getVersion();
    record.lease = root.getLease();
    return record;
  });
}

std::string encodeLogRecord(const LogEntry& entry) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::LogRecord>();
  auto ballot = root.initBallot();
  ballot.setRound(entry.ballot.round);
  ballot.setMember(entry.ballot.member);
  auto commands = root.initCommands(static_cast<unsigned>(entry.value.commands.size()));
  for (unsigned i = 0; i < commands.size(); ++i)
    commands.set(i, asData(entry.value.commands[i]));
  return encodeRecord(message);
}

LogEntry decodeLogRecord(Slot slot, std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name).read<records::LogRecord>([&](records::LogRecord::Reader root) {
    LogEntry entry;
    entry.slot = slot;
    entry.ballot.round = root.getBallot().getRound();
    entry.ballot.member = root.getBallot().getMember();
    auto commands = root.getCommands();
    entry.value.commands.reserve(commands.size());
    for (auto command : commands)
      entry.value.commands.emplace_back(view(command));
    return entry;
  });
}

std::string encodeIdentity(const Identity& identity) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::Identity>();
  root.setClusterId(identity.clusterId);
  root.setMember(identity.member);
  root.setSchemaVersion(identity.schemaVersion);
  return encodeRecord(message);
}

Identity decodeIdentity(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name).read<records::Identity>([](records::Identity::Reader root) {
    Identity identity;
    identity.clusterId = std::string(view(root.getClusterId()));
    identity.member = std::string(view(root.getMember()));
    identity.schemaVersion = root.getSchemaVersion();
    return identity;
  });
}

std::string encodePromise(const Ballot& ballot) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::Promise>().initBallot();
  root.setRound(ballot.round);
  root.setMember(ballot.member);
  return encodeRecord(message);
}

Ballot decodePromise(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name).read<records::Promise>([](records::Promise::Reader root) {
    return Ballot{root.getBallot().getRound(), root.getBallot().getMember()};
  });
}

std::string encodeApplied(Slot slot, uint64_t revision) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::Applied>();
  root.setSlot(slot);
  root.setRevision(revision);
  return encodeRecord(message);
}

std::pair<Slot, uint64_t> decodeApplied(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name).read<records::Applied>([](records::Applied::Reader root) {
    return std::pair<Slot, uint64_t>(root.getSlot(), root.getRevision());
  });
}

std::string encodeIncarnation(uint64_t incarnation) {
  capnp::MallocMessageBuilder message;
  message.initRoot<records::Incarnation>().setValue(incarnation);
  return encodeRecord(message);
}

uint64_t decodeIncarnation(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name)
      .read<records::Incarnation>(
          [](records::Incarnation::Reader root) { return root.getValue(); });
}

namespace {

void setKeyRecord(records::KeyRecord::Builder out, const KeyRecord& record) {
  out.setValue(asData(record.value));
  out.setCreateRevision(record.createRevision);
  out.setModRevision(record.modRevision);
  out.setVersion(record.version);
  out.setLease(record.lease);
}

KeyRecord readKeyRecord(records::KeyRecord::Reader in) {
  KeyRecord record;
  record.value = std::string(view(in.getValue()));
  record.createRevision = in.getCreateRevision();
  record.modRevision = in.getModRevision();
  record.version = in.getVersion();
  record.lease = in.getLease();
  return record;
}

}  // namespace

std::string encodeHistoryRevision(const election::RevisionChanges& revision) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::HistoryRevision>();
  root.setRevision(revision.revision);
  auto changes = root.initChanges(static_cast<unsigned>(revision.changes.size()));
  for (size_t i = 0; i < revision.changes.size(); ++i) {
    const election::KeyChange& change = revision.changes[i];
    auto out = changes[static_cast<unsigned>(i)];
    out.setKey(asData(change.key));
    out.setDeleted(!change.record);
    if (change.record) setKeyRecord(out.initRecord(), *change.record);
    out.setHasPrev(change.prev.has_value());
    if (change.prev) setKeyRecord(out.initPrev(), *change.prev);
  }
  return encodeRecord(message);
}

election::RevisionChanges decodeHistoryRevision(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name)
      .read<records::HistoryRevision>([&](records::HistoryRevision::Reader root) {
        election::RevisionChanges revision;
        revision.revision = root.getRevision();
        for (auto in : root.getChanges()) {
          election::KeyChange change;
          change.key = std::string(view(in.getKey()));
          if (change.key.empty()) throwCorrupt(name, "a change of an empty key");
          if (!in.getDeleted()) change.record = readKeyRecord(in.getRecord());
          if (in.getHasPrev()) change.prev = readKeyRecord(in.getPrev());
          revision.changes.push_back(std::move(change));
        }
        return revision;
      });
}

std::string encodeHistoryStart(uint64_t start) {
  capnp::MallocMessageBuilder message;
  message.initRoot<records::HistoryStart>().setStart(start);
  return encodeRecord(message);
}

uint64_t decodeHistoryStart(std::string_view stored, const RecordName& name) {
  return RecordReader(stored, name)
      .read<records::HistoryStart>(
          [](records::HistoryStart::Reader root) { return root.getStart(); });
}

}  // namespace synod::storage
