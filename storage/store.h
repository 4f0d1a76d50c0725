// The Store: how a member's durable state is read at start-up and written by group commits.
// The LMDB implementation lives in lmdb_store.h; the simulator has an in-memory twin.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "election/history.h"
#include "election/types.h"

namespace synod::storage {

using election::Ballot;
using election::LogEntry;
using election::MemberIndex;
using election::Slot;

using election::KeyRecord;

// Everything one group commit writes, applied in one write transaction: all or nothing.
// Later changes to the same key within one batch replace earlier ones.
struct WriteBatch {
  std::optional<Ballot> promised;                    // the acceptor's new promise
  std::vector<LogEntry> accepted;                    // acceptor votes (replace any earlier vote)
  std::optional<Slot> dropLogThrough;                // delete log entries with slot <= this
  std::optional<std::pair<Slot, uint64_t>> applied;  // (applied slot, config map revision)
  std::map<std::string, std::optional<KeyRecord>> keys;  // nullopt = delete the key
  // De-duplication state, per member: an encoded records::Session (nullopt = delete).
  std::map<MemberIndex, std::optional<std::string>> sessions;
  // Leases by id (an encoded records::Lease) and locks by name (an encoded records::Lock);
  // nullopt = delete. Lease ids are never 0; lock names obey the key limits.
  std::map<uint64_t, std::optional<std::string>> leases;
  std::map<std::string, std::optional<std::string>> locks;
  // History (election/history.h): revisions to add, ascending, and the history's new start. Every
  // stored revision below historyStart is deleted, and so is any of `history` below it.
  std::vector<election::RevisionPtr> history;
  std::optional<uint64_t> historyStart;
  // Installing a snapshot: every stored key, session, lease, lock and history revision is deleted
  // before `keys`, `sessions`, `leases`, `locks` and `history` are written (together with
  // `applied` and `dropLogThrough`, in the same transaction).
  bool replaceState = false;
  // The member finished recovering from an empty data dir: clears StartState::recovering for
  // later starts.
  bool recovered = false;

  bool empty() const {
    return !promised && accepted.empty() && !dropLogThrough && !applied && keys.empty() &&
           sessions.empty() && leases.empty() && locks.empty() && history.empty() &&
           !historyStart && !replaceState && !recovered;
  }
  void putKey(std::string key, KeyRecord record) { keys[std::move(key)] = std::move(record); }
  void deleteKey(std::string key) { keys[std::move(key)] = std::nullopt; }
};

// Longest key a Store accepts: LMDB's compile-time key limit (511 bytes in Debian's liblmdb). The
// in-memory twin enforces the same bound so the simulator refuses what LMDB would. Whoever accepts
// keys from apps must cap them at this (the config's max_key_bytes may not exceed it).
constexpr size_t MAX_KEY_BYTES = 511;

// A batch that no Store may apply: an empty key or lock name, one longer than MAX_KEY_BYTES, a
// lease id 0, or a log entry for slot 0. A caller bug: commit() throws it before changing anything.
class InvalidBatchError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Why `batch` cannot be committed, or nullopt if it can.
std::optional<std::string> checkBatch(const WriteBatch& batch);

// The member's durable state as found at start-up (after open() bumped the incarnation).
struct StartState {
  bool fresh = false;  // the data dir held no state before this start
  // The store was created empty and no batch with `recovered` was committed since: the member
  // may have forgotten promises and votes, and must recover before it votes
  // (election::Options::recovering).
  bool recovering = false;
  uint64_t incarnation = 0;  // this start's incarnation, already durable; first start = 1
  Ballot promised;
  Slot appliedSlot = 0;
  uint64_t revision = 0;  // config map revision at appliedSlot
  // The stored history's start (WriteBatch::historyStart); 0 when none was stored: the history
  // then starts at revision + 1.
  uint64_t historyStart = 0;
};

// Expected refusals at open (wrong data dir, already locked, unreadable): the daemon prints the
// message and exits 1.
class OpenError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A record failed its checksum or could not be decoded. The message names the table and key.
// Fatal: the daemon stops; the README says how to recover (wipe the member and let it catch up).
class CorruptionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Contract for every implementation:
// - commit() returns only once the batch is durable (fsync'd); on a disk error it throws
//   std::runtime_error and the caller must stop the process: nothing may continue on state that
//   may not be on disk. A batch that checkBatch() refuses throws InvalidBatchError and changes
//   nothing. Within a batch, dropLogThrough applies after `accepted`: afterwards no log entry
//   <= dropLogThrough remains.
// - forEach* callbacks run inside a read snapshot: they must not call back into the store, and
//   views they receive are valid only during the call. Decoding failures throw CorruptionError.
// - Reads see every committed batch.
// - Not thread-safe: one caller at a time (commit may run on a worker thread while the loop
//   thread does not touch the store).
class Store {
 public:
  virtual ~Store() = default;

  virtual const StartState& startState() const = 0;

  virtual void commit(const WriteBatch& batch) = 0;

  // Every stored key in byte order.
  virtual void forEachKey(const std::function<void(std::string_view key, KeyRecord&&)>& fn) = 0;
  // Every stored session (encoded records::Session).
  virtual void forEachSession(
      const std::function<void(MemberIndex member, std::string_view encoded)>& fn) = 0;
  // Every stored lease by ascending id (encoded records::Lease).
  virtual void forEachLease(
      const std::function<void(uint64_t id, std::string_view encoded)>& fn) = 0;
  // Every stored lock by name in byte order (encoded records::Lock).
  virtual void forEachLock(
      const std::function<void(std::string_view name, std::string_view encoded)>& fn) = 0;
  // Every stored history revision, ascending.
  virtual void forEachHistory(const std::function<void(election::RevisionChanges&&)>& fn) = 0;
  // Log entries with slot >= from, ascending.
  virtual void forEachLogEntry(Slot from, const std::function<void(LogEntry&&)>& fn) = 0;

  // Bytes the store's data occupies now (LMDB: pages in use, free pages not counted).
  virtual uint64_t usedBytes() const = 0;
};

}  // namespace synod::storage
