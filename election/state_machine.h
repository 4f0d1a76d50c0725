// The replicated config map: the deterministic state machine every member applies decided slots to.
//
// Determinism is the contract: given the same starting state and the same sequence of decided
// Values, every member ends in the same state (keys, revision, sessions). Nothing here may depend
// on local configuration, time or randomness. Size limits from the config are checked by the member
// that accepts a request from an app, before it is proposed (see validateRequest), never here.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "election/history.h"
#include "election/leases.h"
#include "election/types.h"
#include "rpc_schema/records.capnp.h"
#include "rpc_schema/synod.capnp.h"

namespace synod::election {

using StatusCode = rpc::Status::Code;

// Who sent a command (records.capnp CommandId).
struct CommandId {
  MemberIndex member = 0;
  uint64_t incarnation = 0;
  uint64_t sequence = 0;

  auto operator<=>(const CommandId&) const = default;
  bool operator==(const CommandId&) const = default;
};

// What applying one command produced; becomes the reply to the app that sent it.
struct CommandOutcome {
  StatusCode code = StatusCode::OK;
  std::string message;     // set when code != OK
  uint64_t revision = 0;   // the map's revision right after this command
  uint64_t deleted = 0;    // delete and txn: keys deleted
  bool succeeded = false;  // txn: whether the compares held (leases and locks: see below)
  // leaseExpire: whether the lease ended; lock: whether the lease holds the lock afterwards, and
  // then `fence` is its fence.
  uint64_t fence = 0;
  // leaseRenew, leaseCheckpoint: the ids of entries whose lease had ended.
  std::vector<uint64_t> missing;
};

// What a command did to leases and locks, in the order it happened, so that the daemon can tell
// the apps concerned: wake a waiter that was granted, fail the pending calls of an ended lease,
// feed observers. Lock names are not keys: locks have a namespace of their own.
struct LeaseEvent {
  enum class Kind {
    LEASE_ENDED,     // `lease` was revoked or (`expired`) expired; its keys were deleted
    LOCK_GRANTED,    // `lease` now holds lock `name` with `fence`
    LOCK_RELEASED,   // `lease` no longer holds lock `name` (unlock, or its lease ended)
    WAITER_REMOVED,  // `lease` left the queue of lock `name` (unlock, or its lease ended)
    PROCLAIMED,      // the holder `lease` of lock `name` set a new value
  };
  Kind kind = Kind::LEASE_ENDED;
  uint64_t lease = 0;
  std::string name;
  uint64_t fence = 0;
  uint64_t revision = 0;  // the map's revision the event happened at
  bool expired = false;
  // LOCK_GRANTED, PROCLAIMED: the holder's value and its lease's holder as of this event (a later
  // command of the same slot may change either before the daemon reads the state).
  std::string value;
  LeaseHolder holder;

  bool operator==(const LeaseEvent&) const = default;
};

// One command applied from a decided slot.
struct AppliedCommand {
  CommandId id;
  CommandOutcome outcome;
  // The command had been applied before (a retried duplicate): state was not changed again;
  // outcome is the first application's when still remembered.
  bool duplicate = false;
  std::vector<LeaseEvent> events;  // empty for a duplicate
};

// What changed since the last takeChanges(): the next group commit persists exactly this.
struct StateChanges {
  std::map<std::string, std::optional<KeyRecord>> keys;        // nullopt = deleted
  std::map<MemberIndex, std::optional<std::string>> sessions;  // encoded records::Session
  std::map<uint64_t, std::optional<std::string>> leases;       // id -> encoded records::Lease
  std::map<std::string, std::optional<std::string>> locks;     // name -> encoded records::Lock
  Slot appliedSlot = 0;
  uint64_t revision = 0;
  // Revisions recorded since the last takeChanges() and still kept, ascending, and the history's
  // start: the store drops every stored revision below it.
  std::vector<RevisionPtr> history;
  uint64_t historyStart = 1;
};

// Limits a request from an app must satisfy before it is proposed (from the member's config).
struct RequestLimits {
  uint64_t maxKeyBytes = 511;
  uint64_t maxValueBytes = 1 << 20;
  uint32_t maxTxnOps = 128;
  uint64_t leaseTtlMinMs = 1000;
  uint64_t leaseTtlMaxMs = 3600000;
};

// Checks a command built from an app's request; returns a message naming what is wrong, or nullopt.
// Lease grants must have a TTL within leaseTtlMinMs..leaseTtlMaxMs (no clamping). Renewals,
// expiries and checkpoints come from daemons, never from apps: this does not decide who proposes.
std::optional<std::string> validateRequest(records::Command::Reader command,
                                           const RequestLimits& limits);

// The digest term of one key: FNV-1a-64 over the key's length (8 bytes, little-endian), the key,
// the value's length, the value, then createRevision, modRevision, version and lease (8 bytes
// each, little-endian), finished with MurmurHash3's fmix64 so that every input bit reaches every
// output bit. Fixed forever: members built from different versions must agree on it.
uint64_t keyDigest(std::string_view key, const KeyRecord& record);

// A map digest with the revision mixed in (what members report): fmix64 of the digest plus
// fmix64 of the revision xor a constant.
uint64_t mixRevision(uint64_t digest, uint64_t revision);

// Encodes a command as the flat message stored in a Value.
std::string encodeCommand(capnp::MessageBuilder& message);

// The id of an encoded command, or nullopt if it does not decode.
std::optional<CommandId> commandIdOf(std::string_view encoded);

class StateMachine {
 public:
  // --- Restoring from storage at start-up (before any apply) ---
  void restoreKey(std::string key, KeyRecord record);
  // Throws std::runtime_error if `encoded` is not a valid records::Session.
  void restoreSession(MemberIndex member, std::string_view encoded);
  // Throw std::runtime_error if `encoded` is not a valid records::Lease / records::Lock.
  void restoreLease(std::string_view encoded);
  void restoreLock(std::string_view encoded);
  // Also resets the history: it starts at revision + 1 (restoreHistory may extend it back).
  void restoreApplied(Slot appliedSlot, uint64_t revision);
  // After restoreApplied: the stored history, every revision >= start, ascending, none above the
  // applied revision. Throws std::runtime_error when they do not fit.
  void restoreHistory(uint64_t start, std::vector<RevisionChanges> revisions);
  // After a restore: what is inconsistent between keys, leases and locks (a key or lock naming a
  // lease that does not exist), or nullopt.
  std::optional<std::string> checkLeaseReferences() const;

  // Applies the decided value of `slot`, which must be appliedSlot() + 1. Appends one
  // AppliedCommand per command that carries a readable CommandId. A command that fails to decode
  // or is structurally invalid changes nothing and gets an INTERNAL / INVALID_ARGUMENT outcome.
  void apply(Slot slot, const Value& value, std::vector<AppliedCommand>& out);

  // --- Reads of the applied state ---
  const KeyRecord* get(std::string_view key) const;
  struct ListResult {
    std::vector<std::pair<std::string, KeyRecord>> kvs;
    bool more = false;
  };
  // Keys with `prefix`, strictly after `startAfter` (if non-empty), at most `limit`.
  ListResult list(std::string_view prefix, std::string_view startAfter, size_t limit) const;

  // --- History (election/history.h) ---
  const History& history() const { return history_; }
  // The member's own limits; they bound what past revisions it can serve, never the state.
  void setHistoryLimits(const HistoryLimits& limits) { history_.setLimits(limits); }
  // Whether `revision` can be read: history().start() - 1 <= revision <= revision().
  bool readableAt(uint64_t revision) const {
    return revision + 1 >= history_.start() && revision <= revision_;
  }
  // The key as it was at `revision` (precondition: readableAt(revision)); nullopt when absent.
  std::optional<KeyRecord> getAt(std::string_view key, uint64_t revision) const;
  // Keys of `range` as they were at `revision` (precondition: readableAt(revision)), strictly
  // after `startAfter` (if non-empty), at most `limit`. Costs the changes kept after `revision`.
  ListResult listAt(const KeyRange& range, std::string_view startAfter, size_t limit,
                    uint64_t revision) const;

  // --- Leases and locks ---
  const Lease* lease(uint64_t id) const { return leases_.lease(id); }
  const LeaseTable& leases() const { return leases_; }
  // Leases granted, renewed, checkpointed or ended since the last call (LeaseTable::takeTouched).
  std::vector<uint64_t> takeTouchedLeases() { return leases_.takeTouched(); }
  // The highest lease id counter granted for `member` so far: its next grant must use a larger one.
  uint64_t leaseCounter(MemberIndex member) const;
  // The current holder of lock `name`, with its lease's holder.
  std::optional<LockHolderInfo> holder(std::string_view name) const;
  // Whether `fence` is the fence of the current holder of lock `name` (never for fence 0).
  bool checkFence(std::string_view name, uint64_t fence) const;
  // Every lease (ascending id) and lock (ascending name), encoded as records::Lease / Lock (for
  // snapshots). The views are valid during the call only.
  void forEachEncodedLease(const std::function<void(std::string_view)>& fn) const;
  void forEachEncodedLock(const std::function<void(std::string_view)>& fn) const;

  uint64_t revision() const { return revision_; }
  Slot appliedSlot() const { return appliedSlot_; }
  size_t keyCount() const { return keys_.size(); }

  // Every key in byte order, and every member's session encoded as a records::Session (for
  // snapshots). The views are valid during the call only.
  void forEachKey(const std::function<void(std::string_view, const KeyRecord&)>& fn) const {
    for (const auto& [key, record] : keys_)
      fn(key, record);
  }
  void forEachSession(const std::function<void(MemberIndex, std::string_view)>& fn) const {
    for (const auto& [member, session] : sessions_)
      fn(member, encodeSession(session));
  }
  // Order-independent digest of the config map: the sum mod 2^64 of keyDigest() over every key,
  // kept up to date wherever a key is set or erased. Equal maps give equal digests whatever
  // sequence of slots and batches built them; a put undone by a delete restores it.
  uint64_t digest() const { return digest_; }
  // digest() with the revision mixed in: members at the same applied slot report the same one.
  // Leases and locks count too (LeaseTable::digest, 0 without any), so this is equal on members
  // at the same applied slot; renewals change it without a new revision.
  uint64_t stateDigest() const { return mixRevision(digest_ + leases_.digest(), revision_); }
  // The digest computed from scratch over every key (O(size of the map)); equals digest().
  uint64_t recomputeDigest() const;

  // Hands over everything changed since the last call, and forgets it.
  StateChanges takeChanges();
  // Whether takeChanges() would report anything (keys, sessions or a newer applied slot).
  bool hasChanges() const {
    return !dirtyKeys_.empty() || !dirtySessions_.empty() || leases_.hasDirty() ||
           appliedSlot_ != takenSlot_ || history_.start() != takenHistoryStart_;
  }

  // How many incarnations per member, out-of-order sequences per incarnation and remembered
  // results in all are kept. Past a bound the oldest is dropped (deterministically).
  static constexpr size_t MAX_INCARNATIONS_KEPT = 4;
  static constexpr size_t MAX_APPLIED_ABOVE_FLOOR = 4096;
  static constexpr size_t MAX_RESULTS_KEPT = 1024;

 private:
  struct IncarnationSession {
    uint64_t incarnation = 0;
    uint64_t floor = 1;               // every sequence < floor counts as applied
    std::set<uint64_t> appliedAbove;  // applied sequences > floor
  };
  struct Session {
    std::vector<IncarnationSession> incarnations;  // ascending by incarnation
    uint64_t leaseCounter = 0;                     // records::Session.leaseCounter
  };
  enum class Seen { NEW, APPLIED, EXPIRED };

  Seen checkSession(const CommandId& id) const;
  void recordSession(const CommandId& id);
  std::string encodeSession(const Session& session) const;

  CommandOutcome applyCommand(records::Command::Reader command);
  CommandOutcome applyPut(rpc::PutOp::Reader op);
  CommandOutcome applyDelete(rpc::DeleteOp::Reader op);
  CommandOutcome applyTxn(rpc::Txn::Reader txn);
  bool compareHolds(rpc::Compare::Reader compare) const;
  CommandOutcome applyLeaseGrant(records::LeaseGrant::Reader op);
  CommandOutcome applyLeaseRenew(records::LeaseRenew::Reader op);
  CommandOutcome applyLeaseRevoke(records::LeaseRevoke::Reader op);
  CommandOutcome applyLeaseExpire(records::LeaseExpire::Reader op);
  CommandOutcome applyLeaseCheckpoint(records::LeaseCheckpoint::Reader op);
  CommandOutcome applyLock(records::LockAcquire::Reader op);
  CommandOutcome applyUnlock(records::LockRelease::Reader op);
  CommandOutcome applyProclaim(records::LockProclaim::Reader op);
  CommandOutcome applyCompact(records::Compact::Reader op);
  // Ends a lease at a new revision: deletes its keys, releases its locks (promoting the next
  // waiters) and leaves its queues.
  CommandOutcome endLease(uint64_t id, bool expired);
  // `lease` leaves lock `name` (holder or waiter) at revision `revision`; a released hold passes
  // to the first waiter. Returns whether the holder changed.
  bool leaveLock(std::string_view name, uint64_t lease, uint64_t revision);
  // Writes without bumping the revision; the caller bumps it once per command.
  void putKey(std::string_view key, std::string_view value, uint64_t lease, uint64_t revision);
  // Deletes at `revision` (recorded in the history); the caller bumps the revision if any went.
  uint64_t deleteRange(std::string_view key, std::string_view rangeEnd, uint64_t revision);

  std::map<std::string, KeyRecord, std::less<>> keys_;
  std::map<MemberIndex, Session> sessions_;
  // Recent outcomes, in memory only, to answer a retried duplicate like the original.
  std::map<CommandId, CommandOutcome> recentResults_;
  std::deque<CommandId> recentOrder_;  // insertion order, to evict the oldest past the bound
  uint64_t revision_ = 0;
  uint64_t digest_ = 0;  // see digest()
  Slot appliedSlot_ = 0;
  Slot takenSlot_ = 0;  // appliedSlot_ as of the last takeChanges() or restore

  LeaseTable leases_;
  std::vector<LeaseEvent> events_;  // of the command being applied

  std::set<std::string, std::less<>> dirtyKeys_;
  std::set<MemberIndex> dirtySessions_;

  History history_;
  uint64_t historyTaken_ = 0;       // the highest revision handed to takeChanges()
  uint64_t takenHistoryStart_ = 1;  // history_.start() as of the last takeChanges() or restore
};

}  // namespace synod::election
