// The replicated lease and lock tables, owned by the StateMachine.
//
// Like the config map they change only by applying decided commands, identically on every member.
// Time is never read here: a lease's TTL, renewal epoch and checkpointed remainder are recorded so
// that the leader (which owns the clocks) can decide expiries and propose them as commands, and a
// new leader can count every lease's remainder from its takeover.
//
// LeaseTable is plain data with its invariants, digest and dirty tracking; the rules of each
// command (which need the config map too) live in StateMachine.
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

#include "election/types.h"

namespace synod::election {

// A lease id is (member << LEASE_ID_MEMBER_SHIFT) | counter: the member that granted it picks it,
// so ids from different members never collide. Counters are nonzero and each grant's must exceed
// every earlier grant's of that member (StateMachine::leaseCounter): ids are never reused.
constexpr unsigned LEASE_ID_MEMBER_SHIFT = 48;
constexpr uint64_t LEASE_ID_COUNTER_MASK = (uint64_t{1} << LEASE_ID_MEMBER_SHIFT) - 1;

inline uint64_t makeLeaseId(MemberIndex member, uint64_t counter) {
  return (uint64_t{member} << LEASE_ID_MEMBER_SHIFT) | (counter & LEASE_ID_COUNTER_MASK);
}
inline MemberIndex leaseIdMember(uint64_t id) {
  return static_cast<MemberIndex>(id >> LEASE_ID_MEMBER_SHIFT);
}

// Longest lock name: the store's key limit (storage::MAX_KEY_BYTES), so a decided lock always fits.
constexpr size_t MAX_LOCK_NAME_BYTES = 511;

// Who holds a lease: the member the app is connected to and the app's SO_PEERCRED.
struct LeaseHolder {
  MemberIndex member = 0;
  int32_t pid = 0;
  uint32_t uid = 0;

  bool operator==(const LeaseHolder&) const = default;
};

struct Lease {
  uint64_t id = 0;
  uint64_t ttlMs = 0;
  uint64_t epoch = 1;        // 1 at grant, +1 per renewal
  uint64_t remainingMs = 0;  // last checkpoint at `epoch`; ttlMs right after a grant or renewal
  LeaseHolder holder;
  bool detached = false;
  uint64_t grantRevision = 0;  // the config map's revision when granted

  bool operator==(const Lease&) const = default;
};

// A holder or waiter of a lock.
struct LockOwner {
  uint64_t lease = 0;
  std::string value;   // the election value
  uint64_t fence = 0;  // revision of the grant; 0 while waiting

  bool operator==(const LockOwner&) const = default;
};

struct Lock {
  std::optional<LockOwner> holder;
  std::deque<LockOwner> waiters;  // FIFO

  bool operator==(const Lock&) const = default;
};

// The current holder of a lock as queries report it.
struct LockHolderInfo {
  uint64_t lease = 0;
  std::string value;
  uint64_t fence = 0;
  LeaseHolder holder;  // of the lease
};

// Encodings of the stored records (records.capnp Lease / Lock), for the leases and locks tables
// and snapshots. The decoders throw std::runtime_error naming what is wrong.
std::string encodeLease(const Lease& lease);
Lease decodeLease(std::string_view encoded);
std::string encodeLock(std::string_view name, const Lock& lock);
std::pair<std::string, Lock> decodeLock(std::string_view encoded);

// Digest terms (FNV-1a-64 over every field in schema order, lengths before bytes, finished with
// fmix64, like keyDigest); fixed forever.
uint64_t leaseDigest(const Lease& lease);
uint64_t lockDigest(std::string_view name, const Lock& lock);

class LeaseTable {
 public:
  // --- Reads ---
  const Lease* lease(uint64_t id) const;
  const Lock* lock(std::string_view name) const;
  size_t leaseCount() const { return leases_.size(); }
  size_t lockCount() const { return locks_.size(); }
  // Names of the locks the lease holds or waits for, ascending.
  std::vector<std::string> locksOf(uint64_t id) const;
  // Keys attached to the lease (KeyRecord.lease == id), ascending.
  const std::set<std::string, std::less<>>* keysOf(uint64_t id) const;

  void forEachLease(const std::function<void(const Lease&)>& fn) const {
    for (const auto& [id, lease] : leases_)
      fn(lease);
  }
  void forEachLock(const std::function<void(std::string_view, const Lock&)>& fn) const {
    for (const auto& [name, lock] : locks_)
      fn(name, lock);
  }

  // Sum mod 2^64 of leaseDigest and lockDigest over every lease and lock; 0 when both are empty.
  uint64_t digest() const { return digest_; }
  uint64_t recomputeDigest() const;

  // --- Writes: each keeps the digest, the indexes and the dirty sets up to date ---
  // `dirty` false: restoring from storage or a snapshot, nothing to persist.
  void putLease(const Lease& lease, bool dirty = true);
  void eraseLease(uint64_t id);
  // Replaces (or, when the lock has neither holder nor waiters, removes) the lock.
  void putLock(std::string_view name, Lock lock, bool dirty = true);

  // The key index follows KeyRecord.lease; it is derived, never stored.
  void attachKey(uint64_t id, std::string_view key);
  void detachKey(uint64_t id, std::string_view key);

  // Dirty records since the last take: encoded record, or nullopt when gone.
  std::map<uint64_t, std::optional<std::string>> takeDirtyLeases();
  std::map<std::string, std::optional<std::string>> takeDirtyLocks();
  bool hasDirty() const { return !dirtyLeases_.empty() || !dirtyLocks_.empty(); }
  // Ids of the leases put or erased since the last take, in the order first touched (for the
  // leader's lease clocks, election/lease_clock.h). Restores count too.
  std::vector<uint64_t> takeTouched();

 private:
  void indexLock(std::string_view name, const Lock& lock, bool add);

  std::map<uint64_t, Lease> leases_;
  std::map<std::string, Lock, std::less<>> locks_;
  std::map<uint64_t, std::set<std::string, std::less<>>> keysByLease_;
  std::map<uint64_t, std::set<std::string, std::less<>>> locksByLease_;
  uint64_t digest_ = 0;
  std::set<uint64_t> dirtyLeases_;
  std::set<std::string, std::less<>> dirtyLocks_;
  std::vector<uint64_t> touched_;
  std::set<uint64_t> touchedSet_;
};

}  // namespace synod::election
