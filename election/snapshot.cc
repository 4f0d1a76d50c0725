#include "election/snapshot.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/debug.h>

#include <cstring>
#include <stdexcept>

#include "rpc_schema/records.capnp.h"

namespace synod::election {

namespace {

// Per-key overhead of the encoding, roughly: list pointers, the KeyRecord struct, padding.
constexpr size_t KEY_OVERHEAD_BYTES = 96;
// Per encoded lease or lock: its list pointer and padding.
constexpr size_t RECORD_OVERHEAD_BYTES = 16;

struct Part {
  std::vector<std::pair<std::string_view, const KeyRecord*>> keys;
  std::vector<std::string> leases;
  std::vector<std::string> locks;
  bool sessions = false;
};

std::string flatten(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

kj::Array<capnp::word> alignedWords(std::string_view bytes) {
  auto words =
      kj::heapArray<capnp::word>((bytes.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  if (!bytes.empty()) std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

std::string_view asView(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

capnp::Data::Reader dataOf(std::string_view bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
}

}  // namespace

std::vector<std::string> encodeSnapshot(const StateMachine& state, size_t chunkBytes) {
  std::vector<Part> parts(1);
  size_t partBytes = 0;
  uint64_t keyCount = 0;
  state.forEachKey([&](std::string_view key, const KeyRecord& record) {
    const size_t size = key.size() + record.value.size() + KEY_OVERHEAD_BYTES;
    if (!parts.back().keys.empty() && partBytes + size > chunkBytes) {
      parts.emplace_back();
      partBytes = 0;
    }
    parts.back().keys.emplace_back(key, &record);
    partBytes += size;
    ++keyCount;
  });
  // Leases, then locks, follow the keys, cut the same way.
  auto fits = [&](size_t size) {
    const Part& part = parts.back();
    if ((!part.keys.empty() || !part.leases.empty() || !part.locks.empty()) &&
        partBytes + size > chunkBytes) {
      parts.emplace_back();
      partBytes = 0;
    }
    partBytes += size;
  };
  state.forEachEncodedLease([&](std::string_view encoded) {
    fits(encoded.size() + RECORD_OVERHEAD_BYTES);
    parts.back().leases.emplace_back(encoded);
  });
  state.forEachEncodedLock([&](std::string_view encoded) {
    fits(encoded.size() + RECORD_OVERHEAD_BYTES);
    parts.back().locks.emplace_back(encoded);
  });
  std::vector<std::pair<MemberIndex, std::string>> sessions;
  state.forEachSession([&](MemberIndex member, std::string_view encoded) {
    sessions.emplace_back(member, std::string(encoded));
  });
  parts.back().sessions = true;

  std::vector<std::string> chunks;
  chunks.reserve(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    capnp::MallocMessageBuilder message;
    auto chunk = message.initRoot<records::SnapshotChunk>();
    chunk.setSlot(state.appliedSlot());
    chunk.setRevision(state.revision());
    chunk.setIndex(static_cast<uint32_t>(i));
    chunk.setCount(static_cast<uint32_t>(parts.size()));
    chunk.setKeyCount(keyCount);
    auto keys = chunk.initKeys(static_cast<unsigned>(parts[i].keys.size()));
    for (size_t k = 0; k < parts[i].keys.size(); ++k) {
      const auto& [key, record] = parts[i].keys[k];
      keys[k].setKey(dataOf(key));
      auto out = keys[k].initRecord();
      out.setValue(dataOf(record->value));
      out.setCreateRevision(record->createRevision);
      out.setModRevision(record->modRevision);
      out.setVersion(record->version);
      out.setLease(record->lease);
    }
    if (!parts[i].leases.empty()) {
      auto list = chunk.initLeases(static_cast<unsigned>(parts[i].leases.size()));
      for (size_t l = 0; l < parts[i].leases.size(); ++l)
        list.set(static_cast<unsigned>(l), dataOf(parts[i].leases[l]));
    }
    if (!parts[i].locks.empty()) {
      auto list = chunk.initLocks(static_cast<unsigned>(parts[i].locks.size()));
      for (size_t l = 0; l < parts[i].locks.size(); ++l)
        list.set(static_cast<unsigned>(l), dataOf(parts[i].locks[l]));
    }
    if (parts[i].sessions) {
      auto list = chunk.initSessions(static_cast<unsigned>(sessions.size()));
      for (size_t s = 0; s < sessions.size(); ++s) {
        list[s].setMember(sessions[s].first);
        list[s].setSession(dataOf(sessions[s].second));
      }
    }
    chunks.push_back(flatten(message));
  }
  return chunks;
}

std::optional<std::string> SnapshotAssembler::add(std::string_view bytes, size_t maxKeyBytes) {
  auto words = alignedWords(bytes);
  try {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = words.size() * 2 + 1024;
    capnp::FlatArrayMessageReader message(words, options);
    auto chunk = message.getRoot<records::SnapshotChunk>();
    if (chunk.getCount() == 0) return "snapshot chunk: count 0";
    if (chunk.getIndex() != next_) {
      return "snapshot chunk " + std::to_string(chunk.getIndex()) + " where " +
             std::to_string(next_) + " was expected";
    }
    if (next_ == 0) {
      slot_ = chunk.getSlot();
      revision_ = chunk.getRevision();
      count_ = chunk.getCount();
      keyCount_ = chunk.getKeyCount();
      if (slot_ == 0) return "snapshot chunk: slot 0";
    } else if (chunk.getSlot() != slot_ || chunk.getRevision() != revision_ ||
               chunk.getCount() != count_ || chunk.getKeyCount() != keyCount_) {
      return "snapshot chunk " + std::to_string(next_) + " belongs to another snapshot";
    }
    auto keys = chunk.getKeys();
    if (keysSeen_ + keys.size() > keyCount_) return "snapshot holds more keys than announced";
    for (auto entry : keys) {
      auto keyData = entry.getKey();
      std::string key(reinterpret_cast<const char*>(keyData.begin()), keyData.size());
      if (key.empty() || key.size() > maxKeyBytes) {
        return "snapshot key of " + std::to_string(key.size()) + " bytes";
      }
      if (keysSeen_ > 0 && key <= lastKey_) return "snapshot keys out of order";
      auto in = entry.getRecord();
      KeyRecord record;
      auto value = in.getValue();
      record.value.assign(reinterpret_cast<const char*>(value.begin()), value.size());
      record.createRevision = in.getCreateRevision();
      record.modRevision = in.getModRevision();
      record.version = in.getVersion();
      record.lease = in.getLease();
      if (record.modRevision > revision_ || record.createRevision > record.modRevision ||
          record.version == 0) {
        return "snapshot key with impossible revisions";
      }
      lastKey_ = key;
      state_.restoreKey(std::move(key), std::move(record));
      ++keysSeen_;
    }
    // Leases (ascending id) and locks (ascending name) come after every key.
    if ((chunk.hasLeases() || chunk.hasLocks()) && keysSeen_ != keyCount_) {
      return "snapshot leases or locks before its last key";
    }
    for (auto encoded : chunk.getLeases()) {
      if (!locks_.empty()) return "snapshot lease after a lock";
      Lease lease = decodeLease(asView(encoded));
      if (leaseCount_ > 0 && lease.id <= lastLease_) return "snapshot leases out of order";
      state_.restoreLease(asView(encoded));
      lastLease_ = lease.id;
      ++leaseCount_;
    }
    for (auto encoded : chunk.getLocks()) {
      auto [name, lock] = decodeLock(asView(encoded));
      if (!locks_.empty() && name <= locks_) return "snapshot locks out of order";
      state_.restoreLock(asView(encoded));
      locks_ = std::move(name);
    }
    const bool last = next_ + 1 == count_;
    if (chunk.hasSessions() && !last) return "snapshot sessions before the last chunk";
    for (auto session : chunk.getSessions()) {
      auto data = session.getSession();
      state_.restoreSession(
          session.getMember(),
          std::string_view(reinterpret_cast<const char*>(data.begin()), data.size()));
    }
    if (last && keysSeen_ != keyCount_) return "snapshot holds fewer keys than announced";
    if (last) {
      if (auto bad = state_.checkLeaseReferences()) return "snapshot refused: " + *bad;
    }
  } catch (const kj::Exception& e) {
    return "snapshot chunk does not decode: " + std::string(e.getDescription().cStr());
  } catch (const std::exception& e) {
    return std::string("snapshot chunk refused: ") + e.what();
  }
  bytes_ += bytes.size();
  ++next_;
  if (complete()) state_.restoreApplied(slot_, revision_);
  return std::nullopt;
}

StateMachine SnapshotAssembler::take() {
  KJ_ASSERT(complete(), "snapshot taken before its last chunk");
  return std::move(state_);
}

}  // namespace synod::election
