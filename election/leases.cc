#include "election/leases.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include <cstring>
#include <stdexcept>
#include <utility>

#include "election/hash.h"
#include "rpc_schema/records.capnp.h"

namespace synod::election {

namespace {

std::string_view view(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

capnp::Data::Reader dataOf(std::string_view bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
}

kj::Array<capnp::word> alignedCopy(std::string_view bytes) {
  auto words =
      kj::heapArray<capnp::word>((bytes.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  if (!bytes.empty()) std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

std::string flatten(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

using hash::fmix64;
using hash::fnv1a;
using hash::fnv1aBytes;
using hash::FNV_OFFSET_BASIS;

uint64_t ownerHash(uint64_t hash, const LockOwner& owner) {
  hash = fnv1a(hash, owner.lease);
  hash = fnv1aBytes(hash, owner.value);
  return fnv1a(hash, owner.fence);
}

void setOwner(records::LockOwner::Builder out, const LockOwner& owner) {
  out.setLease(owner.lease);
  out.setValue(dataOf(owner.value));
  out.setFence(owner.fence);
}

LockOwner getOwner(records::LockOwner::Reader in) {
  LockOwner owner;
  owner.lease = in.getLease();
  owner.value = std::string(view(in.getValue()));
  owner.fence = in.getFence();
  return owner;
}

}  // namespace

// --- records -------------------------------------------------------------------------------

std::string encodeLease(const Lease& lease) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<records::Lease>();
  out.setId(lease.id);
  out.setTtlMs(lease.ttlMs);
  out.setEpoch(lease.epoch);
  out.setRemainingMs(lease.remainingMs);
  auto holder = out.initHolder();
  holder.setMember(lease.holder.member);
  holder.setPid(lease.holder.pid);
  holder.setUid(lease.holder.uid);
  out.setDetached(lease.detached);
  out.setGrantRevision(lease.grantRevision);
  return flatten(message);
}

Lease decodeLease(std::string_view encoded) {
  auto words = alignedCopy(encoded);
  Lease lease;
  try {
    capnp::FlatArrayMessageReader message(words);
    auto in = message.getRoot<records::Lease>();
    lease.id = in.getId();
    lease.ttlMs = in.getTtlMs();
    lease.epoch = in.getEpoch();
    lease.remainingMs = in.getRemainingMs();
    lease.holder.member = in.getHolder().getMember();
    lease.holder.pid = in.getHolder().getPid();
    lease.holder.uid = in.getHolder().getUid();
    lease.detached = in.getDetached();
    lease.grantRevision = in.getGrantRevision();
  } catch (const kj::Exception& e) {
    throw std::runtime_error("lease record does not decode: " +
                             std::string(e.getDescription().cStr()));
  }
  if (lease.id == 0 || lease.ttlMs == 0 || lease.epoch == 0 || lease.remainingMs > lease.ttlMs ||
      leaseIdMember(lease.id) != lease.holder.member) {
    throw std::runtime_error("lease record " + std::to_string(lease.id) + " is inconsistent");
  }
  return lease;
}

std::string encodeLock(std::string_view name, const Lock& lock) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<records::Lock>();
  out.setName(dataOf(name));
  out.setHasHolder(lock.holder.has_value());
  if (lock.holder) setOwner(out.initHolder(), *lock.holder);
  auto waiters = out.initWaiters(static_cast<unsigned>(lock.waiters.size()));
  for (size_t i = 0; i < lock.waiters.size(); ++i)
    setOwner(waiters[i], lock.waiters[i]);
  return flatten(message);
}

std::pair<std::string, Lock> decodeLock(std::string_view encoded) {
  auto words = alignedCopy(encoded);
  std::pair<std::string, Lock> result;
  try {
    capnp::FlatArrayMessageReader message(words);
    auto in = message.getRoot<records::Lock>();
    result.first = std::string(view(in.getName()));
    if (in.getHasHolder()) result.second.holder = getOwner(in.getHolder());
    for (auto waiter : in.getWaiters())
      result.second.waiters.push_back(getOwner(waiter));
  } catch (const kj::Exception& e) {
    throw std::runtime_error("lock record does not decode: " +
                             std::string(e.getDescription().cStr()));
  }
  const Lock& lock = result.second;
  bool bad = result.first.empty() || result.first.size() > MAX_LOCK_NAME_BYTES ||
             (!lock.holder && lock.waiters.empty()) ||
             (lock.holder && (lock.holder->lease == 0 || lock.holder->fence == 0));
  for (const auto& waiter : lock.waiters)
    bad = bad || waiter.lease == 0 || waiter.fence != 0;
  if (bad) throw std::runtime_error("lock record is inconsistent");
  return result;
}

uint64_t leaseDigest(const Lease& lease) {
  uint64_t hash = FNV_OFFSET_BASIS;
  hash = fnv1a(hash, lease.id);
  hash = fnv1a(hash, lease.ttlMs);
  hash = fnv1a(hash, lease.epoch);
  hash = fnv1a(hash, lease.remainingMs);
  hash = fnv1a(hash, uint64_t{lease.holder.member});
  hash = fnv1a(hash, static_cast<uint64_t>(static_cast<uint32_t>(lease.holder.pid)));
  hash = fnv1a(hash, uint64_t{lease.holder.uid});
  hash = fnv1a(hash, uint64_t{lease.detached});
  hash = fnv1a(hash, lease.grantRevision);
  return fmix64(hash);
}

uint64_t lockDigest(std::string_view name, const Lock& lock) {
  // A different basis than leases', so a lock can never cancel a lease's term by construction.
  uint64_t hash = fnv1a(FNV_OFFSET_BASIS, uint64_t{0x4c4f434b});
  hash = fnv1aBytes(hash, name);
  hash = fnv1a(hash, uint64_t{lock.holder.has_value()});
  if (lock.holder) hash = ownerHash(hash, *lock.holder);
  hash = fnv1a(hash, uint64_t{lock.waiters.size()});
  for (const auto& waiter : lock.waiters)
    hash = ownerHash(hash, waiter);
  return fmix64(hash);
}

// --- LeaseTable ------------------------------------------------------------------------------

const Lease* LeaseTable::lease(uint64_t id) const {
  auto it = leases_.find(id);
  return it == leases_.end() ? nullptr : &it->second;
}

const Lock* LeaseTable::lock(std::string_view name) const {
  auto it = locks_.find(name);
  return it == locks_.end() ? nullptr : &it->second;
}

std::vector<std::string> LeaseTable::locksOf(uint64_t id) const {
  auto it = locksByLease_.find(id);
  if (it == locksByLease_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

const std::set<std::string, std::less<>>* LeaseTable::keysOf(uint64_t id) const {
  auto it = keysByLease_.find(id);
  return it == keysByLease_.end() ? nullptr : &it->second;
}

uint64_t LeaseTable::recomputeDigest() const {
  uint64_t sum = 0;
  for (const auto& [id, lease] : leases_)
    sum += leaseDigest(lease);
  for (const auto& [name, lock] : locks_)
    sum += lockDigest(name, lock);
  return sum;
}

void LeaseTable::putLease(const Lease& lease, bool dirty) {
  auto [it, inserted] = leases_.try_emplace(lease.id, lease);
  if (!inserted) {
    digest_ -= leaseDigest(it->second);
    it->second = lease;
  }
  digest_ += leaseDigest(lease);
  if (dirty) dirtyLeases_.insert(lease.id);
  if (touchedSet_.insert(lease.id).second) touched_.push_back(lease.id);
}

std::vector<uint64_t> LeaseTable::takeTouched() {
  touchedSet_.clear();
  return std::exchange(touched_, {});
}

void LeaseTable::eraseLease(uint64_t id) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  digest_ -= leaseDigest(it->second);
  leases_.erase(it);
  dirtyLeases_.insert(id);
  if (touchedSet_.insert(id).second) touched_.push_back(id);
}

void LeaseTable::indexLock(std::string_view name, const Lock& lock, bool add) {
  auto update = [&](uint64_t lease) {
    if (add) {
      locksByLease_[lease].emplace(name);
      return;
    }
    auto it = locksByLease_.find(lease);
    if (it == locksByLease_.end()) return;
    if (auto n = it->second.find(name); n != it->second.end()) it->second.erase(n);
    if (it->second.empty()) locksByLease_.erase(it);
  };
  if (lock.holder) update(lock.holder->lease);
  for (const auto& waiter : lock.waiters)
    update(waiter.lease);
}

void LeaseTable::putLock(std::string_view nameView, Lock lock, bool dirty) {
  const std::string name(nameView);  // the view may be into the entry replaced here
  auto it = locks_.find(name);
  if (it != locks_.end()) {
    digest_ -= lockDigest(it->first, it->second);
    indexLock(name, it->second, false);
    if (!lock.holder && lock.waiters.empty()) {
      locks_.erase(it);
    } else {
      it->second = std::move(lock);
    }
  } else if (lock.holder || !lock.waiters.empty()) {
    it = locks_.emplace(std::string(name), std::move(lock)).first;
  }
  it = locks_.find(name);
  if (it != locks_.end()) {
    digest_ += lockDigest(it->first, it->second);
    indexLock(name, it->second, true);
  }
  if (dirty) dirtyLocks_.emplace(name);
}

void LeaseTable::attachKey(uint64_t id, std::string_view key) {
  if (id != 0) keysByLease_[id].emplace(key);
}

void LeaseTable::detachKey(uint64_t id, std::string_view key) {
  auto it = keysByLease_.find(id);
  if (it == keysByLease_.end()) return;
  if (auto k = it->second.find(key); k != it->second.end()) it->second.erase(k);
  if (it->second.empty()) keysByLease_.erase(it);
}

std::map<uint64_t, std::optional<std::string>> LeaseTable::takeDirtyLeases() {
  std::map<uint64_t, std::optional<std::string>> out;
  for (uint64_t id : dirtyLeases_) {
    auto it = leases_.find(id);
    out.emplace(id, it == leases_.end() ? std::nullopt
                                        : std::optional<std::string>(encodeLease(it->second)));
  }
  dirtyLeases_.clear();
  return out;
}

std::map<std::string, std::optional<std::string>> LeaseTable::takeDirtyLocks() {
  std::map<std::string, std::optional<std::string>> out;
  for (const auto& name : dirtyLocks_) {
    auto it = locks_.find(name);
    out.emplace(name, it == locks_.end()
                          ? std::nullopt
                          : std::optional<std::string>(encodeLock(name, it->second)));
  }
  dirtyLocks_.clear();
  return out;
}

}  // namespace synod::election
