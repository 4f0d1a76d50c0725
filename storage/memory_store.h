// The Store in memory: the simulator's disk and unit tests' store. Same semantics as LmdbStore
// (same batch checks, same ordering), without files, locks or framing.
//
// Crash model: commit() is durable at once. The simulator models writes that were not yet synced
// by holding batches back before calling commit(); a simulated crash drops those, and restart()
// then starts from exactly what was committed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "storage/store.h"

namespace synod::storage {

class MemoryStore final : public Store {
 public:
  // An empty store as a first start finds it: fresh, incarnation 1.
  MemoryStore();

  // Copies are independent stores with the same committed state (a snapshot of a member's disk).
  MemoryStore(const MemoryStore&) = default;
  MemoryStore& operator=(const MemoryStore&) = default;
  std::unique_ptr<MemoryStore> clone() const { return std::make_unique<MemoryStore>(*this); }

  // A process restart on the same disk: bumps the incarnation and returns the new start state,
  // loaded from what was committed. Never fresh.
  const StartState& restart();

  const StartState& startState() const override { return startState_; }
  void commit(const WriteBatch& batch) override;
  void forEachKey(const std::function<void(std::string_view key, KeyRecord&&)>& fn) override;
  void forEachSession(
      const std::function<void(MemberIndex member, std::string_view encoded)>& fn) override;
  void forEachLease(const std::function<void(uint64_t id, std::string_view encoded)>& fn) override;
  void forEachLock(
      const std::function<void(std::string_view name, std::string_view encoded)>& fn) override;
  void forEachLogEntry(Slot from, const std::function<void(LogEntry&&)>& fn) override;
  void forEachHistory(const std::function<void(election::RevisionChanges&&)>& fn) override;
  // A deterministic estimate: payload bytes plus a fixed overhead per record.
  uint64_t usedBytes() const override { return usedBytes_; }

  // Direct views of the committed state, for checkers.
  const Ballot& promised() const { return promised_; }
  Slot appliedSlot() const { return appliedSlot_; }
  bool recovering() const { return recovering_; }
  uint64_t revision() const { return revision_; }
  const std::map<Slot, LogEntry>& log() const { return log_; }
  const std::map<std::string, KeyRecord, std::less<>>& keys() const { return keys_; }
  const std::map<MemberIndex, std::string>& sessions() const { return sessions_; }
  const std::map<uint64_t, std::string>& leases() const { return leases_; }
  const std::map<std::string, std::string, std::less<>>& locks() const { return locks_; }
  const std::map<uint64_t, election::RevisionChanges>& history() const { return history_; }
  uint64_t historyStart() const { return historyStart_; }

 private:
  static constexpr uint64_t RECORD_OVERHEAD_BYTES = 64;
  static uint64_t sizeOf(const LogEntry& entry);
  void commitHistory(const WriteBatch& batch);

  StartState startState_;
  uint64_t incarnation_ = 1;
  bool recovering_ = true;  // created empty; cleared by a batch with `recovered`
  Ballot promised_;
  Slot appliedSlot_ = 0;
  uint64_t revision_ = 0;
  std::map<Slot, LogEntry> log_;
  std::map<std::string, KeyRecord, std::less<>> keys_;
  std::map<MemberIndex, std::string> sessions_;
  std::map<uint64_t, std::string> leases_;
  std::map<std::string, std::string, std::less<>> locks_;
  std::map<uint64_t, election::RevisionChanges> history_;
  uint64_t historyStart_ = 0;  // 0: none stored
  uint64_t usedBytes_ = 0;
};

}  // namespace synod::storage
