#include "storage/memory_store.h"

namespace synod::storage {

MemoryStore::MemoryStore() {
  startState_.fresh = true;
  startState_.recovering = true;
  startState_.incarnation = incarnation_;
}

const StartState& MemoryStore::restart() {
  ++incarnation_;
  startState_ = StartState{};
  startState_.fresh = false;
  startState_.incarnation = incarnation_;
  startState_.promised = promised_;
  startState_.appliedSlot = appliedSlot_;
  startState_.revision = revision_;
  startState_.recovering = recovering_;
  startState_.historyStart = historyStart_;
  return startState_;
}

uint64_t MemoryStore::sizeOf(const LogEntry& entry) {
  uint64_t bytes = RECORD_OVERHEAD_BYTES;
  for (const std::string& command : entry.value.commands)
    bytes += command.size() + 8;
  return bytes;
}

// Every check happens before the first change, so a refused batch changes nothing.
void MemoryStore::commit(const WriteBatch& batch) {
  if (auto problem = checkBatch(batch)) {
    throw InvalidBatchError("refusing write batch: " + *problem);
  }
  if (batch.promised) promised_ = *batch.promised;
  for (const LogEntry& entry : batch.accepted) {
    auto [it, inserted] = log_.try_emplace(entry.slot, entry);
    if (!inserted) {
      usedBytes_ -= sizeOf(it->second);
      it->second = entry;
    }
    usedBytes_ += sizeOf(entry);
  }
  if (batch.dropLogThrough) {
    auto end = log_.upper_bound(*batch.dropLogThrough);
    for (auto it = log_.begin(); it != end; ++it)
      usedBytes_ -= sizeOf(it->second);
    log_.erase(log_.begin(), end);
  }
  if (batch.recovered) recovering_ = false;
  if (batch.replaceState) {
    for (const auto& [key, record] : keys_)
      usedBytes_ -= RECORD_OVERHEAD_BYTES + key.size() + record.value.size();
    for (const auto& [member, encoded] : sessions_)
      usedBytes_ -= RECORD_OVERHEAD_BYTES + encoded.size();
    for (const auto& [id, encoded] : leases_)
      usedBytes_ -= RECORD_OVERHEAD_BYTES + encoded.size();
    for (const auto& [name, encoded] : locks_)
      usedBytes_ -= RECORD_OVERHEAD_BYTES + name.size() + encoded.size();
    for (const auto& [revision, changes] : history_)
      usedBytes_ -= changes.bytes();
    keys_.clear();
    sessions_.clear();
    leases_.clear();
    locks_.clear();
    history_.clear();
  }
  if (batch.applied) std::tie(appliedSlot_, revision_) = *batch.applied;
  for (const auto& [key, record] : batch.keys) {
    auto it = keys_.find(key);
    if (it != keys_.end()) {
      usedBytes_ -= RECORD_OVERHEAD_BYTES + key.size() + it->second.value.size();
      keys_.erase(it);
    }
    if (record) {
      keys_.emplace(key, *record);
      usedBytes_ += RECORD_OVERHEAD_BYTES + key.size() + record->value.size();
    }
  }
  for (const auto& [member, encoded] : batch.sessions) {
    auto it = sessions_.find(member);
    if (it != sessions_.end()) {
      usedBytes_ -= RECORD_OVERHEAD_BYTES + it->second.size();
      sessions_.erase(it);
    }
    if (encoded) {
      sessions_.emplace(member, *encoded);
      usedBytes_ += RECORD_OVERHEAD_BYTES + encoded->size();
    }
  }
  for (const auto& [id, encoded] : batch.leases) {
    auto it = leases_.find(id);
    if (it != leases_.end()) {
      usedBytes_ -= RECORD_OVERHEAD_BYTES + it->second.size();
      leases_.erase(it);
    }
    if (encoded) {
      leases_.emplace(id, *encoded);
      usedBytes_ += RECORD_OVERHEAD_BYTES + encoded->size();
    }
  }
  for (const auto& [name, encoded] : batch.locks) {
    auto it = locks_.find(name);
    if (it != locks_.end()) {
      usedBytes_ -= RECORD_OVERHEAD_BYTES + name.size() + it->second.size();
      locks_.erase(it);
    }
    if (encoded) {
      locks_.emplace(name, *encoded);
      usedBytes_ += RECORD_OVERHEAD_BYTES + name.size() + encoded->size();
    }
  }
  commitHistory(batch);
}

void MemoryStore::commitHistory(const WriteBatch& batch) {
  if (batch.historyStart) {
    historyStart_ = *batch.historyStart;
    auto end = history_.lower_bound(historyStart_);
    for (auto it = history_.begin(); it != end; ++it)
      usedBytes_ -= it->second.bytes();
    history_.erase(history_.begin(), end);
  }
  for (const auto& revision : batch.history) {
    if (batch.historyStart && revision->revision < *batch.historyStart) continue;
    auto it = history_.find(revision->revision);
    if (it != history_.end()) {
      usedBytes_ -= it->second.bytes();
      history_.erase(it);
    }
    usedBytes_ += revision->bytes();
    history_.emplace(revision->revision, *revision);
  }
}

void MemoryStore::forEachHistory(const std::function<void(election::RevisionChanges&&)>& fn) {
  for (const auto& [revision, changes] : history_)
    fn(election::RevisionChanges(changes));
}

void MemoryStore::forEachKey(const std::function<void(std::string_view key, KeyRecord&&)>& fn) {
  for (const auto& [key, record] : keys_)
    fn(key, KeyRecord(record));
}

void MemoryStore::forEachSession(
    const std::function<void(MemberIndex member, std::string_view encoded)>& fn) {
  for (const auto& [member, encoded] : sessions_)
    fn(member, encoded);
}

void MemoryStore::forEachLease(
    const std::function<void(uint64_t id, std::string_view encoded)>& fn) {
  for (const auto& [id, encoded] : leases_)
    fn(id, encoded);
}

void MemoryStore::forEachLock(
    const std::function<void(std::string_view name, std::string_view encoded)>& fn) {
  for (const auto& [name, encoded] : locks_)
    fn(name, encoded);
}

void MemoryStore::forEachLogEntry(Slot from, const std::function<void(LogEntry&&)>& fn) {
  for (auto it = log_.lower_bound(from); it != log_.end(); ++it)
    fn(LogEntry(it->second));
}

}  // namespace synod::storage
