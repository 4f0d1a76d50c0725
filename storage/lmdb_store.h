// The Store on LMDB: one environment per data dir, one named database per table.
//
// Layout of dataDir:
//   LOCK      exclusive flock held while open, holds the owner's pid (two daemons on one data
//             dir would be one acceptor voting twice)
//   data.mdb  the LMDB data file; lock.mdb  LMDB's reader table
//
// Tables: meta (identity, incarnation, promise, applied), log (8-byte big-endian slot ->
// LogRecord), kv (key -> KeyRecord), sessions (4-byte big-endian member index -> Session), and
// leases, locks, history (8-byte big-endian revision -> HistoryRevision; meta "history" holds its
// start). Every value is framed by record.h (version + CRC32C + flat
// message); the session payload is the caller's encoded records::Session, stored as given.
//
// Environment flags: MDB_NOTLS only.
// - MDB_NOTLS: read transactions belong to the transaction object, not to the thread, so commit()
//   may run on a worker thread while reads run on the loop thread, one at a time.
// - Full durability: never MDB_NOSYNC, MDB_NOMETASYNC or MDB_MAPASYNC; commit() returns after the
//   data pages and the meta page are synced.
// - No MDB_WRITEMAP: the map stays read-only, so a stray write in the process faults instead of
//   corrupting the data file; the data file grows with use instead of being extended to the map
//   size, and growing the map needs no file allocation. The commit cost is the fsyncs either way.
// - A data dir rather than MDB_NOSUBDIR: the lock file and LMDB's two files live side by side.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "storage/store.h"

struct MDB_txn;

namespace synod::storage {

struct LmdbOptions {
  std::string dataDir;     // created (mode 0750, parents too) if missing
  std::string clusterId;   // must match what the data dir was created with
  std::string memberName;  // must match what the data dir was created with
  // First size of the memory map; it doubles whenever a commit finds it full.
  uint64_t initialMapBytes = 64ull << 20;
  // The leader refuses new writes before usedBytes() reaches this; 0 = no limit. The store
  // itself only derives the map's cap from it (see maxMapBytes).
  uint64_t storeLimitBytes = 0;
  // The map never grows past this; a commit that still does not fit throws std::runtime_error
  // ("store full") and the member stops. 0 = storeLimitBytes + 25% headroom, so slots decided
  // before the leader's alarm still apply; unlimited when storeLimitBytes is 0 as well.
  uint64_t maxMapBytes = 0;
  // The incarnation of a store created empty (later starts add 1). Commands are de-duplicated by
  // (member, incarnation, sequence) in the replicated sessions, which outlive a wiped data dir:
  // a member that lost its data dir must never start again at an incarnation its earlier life
  // used, or its new writes would be taken for old ones and silently skipped. The daemon passes
  // the wall clock in microseconds; tests may pass anything >= 1.
  uint64_t firstIncarnation = 1;
};

class LmdbStore final : public Store {
 public:
  // Takes the data dir's lock, opens or creates the environment, checks or writes the identity
  // and durably bumps the incarnation before returning.
  // Throws OpenError for refusals (in use, identity mismatch, unusable dir or options),
  // CorruptionError for a corrupt meta record, std::runtime_error for other LMDB errors.
  static std::unique_ptr<LmdbStore> open(const LmdbOptions& options);

  // Closes the environment, then releases the lock.
  ~LmdbStore() override;
  LmdbStore(const LmdbStore&) = delete;
  LmdbStore& operator=(const LmdbStore&) = delete;

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
  // Pages in use: (last used page + 1 - pages on LMDB's free list) * page size. Deleting keys and
  // compacting the log lower it, though the file itself never shrinks (freed pages are reused
  // before it grows again).
  uint64_t usedBytes() const override;

  // The memory map's current size.
  uint64_t mapBytes() const;
  // A new storeLimitBytes while running (SIGHUP). When the map's cap derives from the limit
  // (maxMapBytes was 0) it follows a raised limit; it never shrinks, so slots decided under the
  // old limit still apply. The leader's alarm enforces a lowered limit. No transaction may be
  // live in this process.
  void setStoreLimitBytes(uint64_t storeLimitBytes);
  uint64_t maxMapBytes() const;
  // The LMDB data file (tests corrupt it on purpose).
  std::string dataFilePath() const;
  const LmdbOptions& options() const { return options_; }

  struct Environment;  // opaque: the LMDB environment, its table handles and the lock file

 private:
  LmdbStore(LmdbOptions options, std::unique_ptr<Environment> environment);
  // The history part of a commit, inside its write transaction.
  static void writeHistory(MDB_txn* txn, Environment& e, const WriteBatch& batch);

  LmdbOptions options_;
  std::unique_ptr<Environment> environment_;
  StartState startState_;
};

}  // namespace synod::storage
