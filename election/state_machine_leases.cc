// The rules of the lease and lock commands (records.capnp LeaseGrant .. LockProclaim).
//
// Revisions: granting, renewing and checkpointing a lease and queueing for a lock change no key
// and take no revision. Ending a lease always takes one new revision, at which its keys are
// deleted and its locks pass on. Taking a free lock, a hold passing to a waiter, and proclaim each
// take a new revision. A grant's fence is the revision it happened at, so the fences of one lock
// strictly increase (each command grants a lock at most once, at a revision of its own).
//
// A refused command (INVALID_ARGUMENT / NOT_FOUND) changes nothing.
#include <capnp/message.h>

#include <algorithm>
#include <string>

#include "election/state_machine.h"

namespace synod::election {

namespace {

std::string_view view(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

CommandOutcome refuse(StatusCode code, std::string message, uint64_t revision) {
  CommandOutcome outcome;
  outcome.code = code;
  outcome.message = std::move(message);
  outcome.revision = revision;
  return outcome;
}

std::string leaseName(uint64_t id) {
  return "lease " + std::to_string(id);
}

std::string lockName(std::string_view name) {
  return "lock \"" + std::string(name) + "\"";
}

}  // namespace

CommandOutcome StateMachine::applyLeaseGrant(records::LeaseGrant::Reader op) {
  if (leases_.lease(op.getId()) != nullptr) {
    return refuse(StatusCode::INVALID_ARGUMENT, leaseName(op.getId()) + " already exists",
                  revision_);
  }
  const MemberIndex member = leaseIdMember(op.getId());
  const uint64_t counter = op.getId() & LEASE_ID_COUNTER_MASK;
  if (counter <= leaseCounter(member)) {
    return refuse(StatusCode::INVALID_ARGUMENT,
                  leaseName(op.getId()) + ": counter " + std::to_string(counter) +
                      " is not above member " + std::to_string(member) + "'s last granted " +
                      std::to_string(leaseCounter(member)) + " (lease ids are never reused)",
                  revision_);
  }
  sessions_[member].leaseCounter = counter;
  dirtySessions_.insert(member);
  Lease lease;
  lease.id = op.getId();
  lease.ttlMs = op.getTtlMs();
  lease.epoch = 1;
  lease.remainingMs = lease.ttlMs;
  lease.holder.member = op.getHolder().getMember();
  lease.holder.pid = op.getHolder().getPid();
  lease.holder.uid = op.getHolder().getUid();
  lease.detached = op.getDetached();
  lease.grantRevision = revision_;
  leases_.putLease(lease);
  CommandOutcome outcome;
  outcome.revision = revision_;
  outcome.succeeded = true;
  return outcome;
}

CommandOutcome StateMachine::applyLeaseRenew(records::LeaseRenew::Reader op) {
  // Checked in full first: a renewal naming an epoch its lease never had comes from a faulty
  // proposer, and the whole batch is refused rather than half applied.
  for (auto renewal : op.getRenewals()) {
    const Lease* lease = leases_.lease(renewal.getId());
    if (lease != nullptr && renewal.getEpoch() > lease->epoch) {
      return refuse(StatusCode::INVALID_ARGUMENT,
                    "leaseRenew: " + leaseName(renewal.getId()) + " is at epoch " +
                        std::to_string(lease->epoch) + ", not " +
                        std::to_string(renewal.getEpoch()),
                    revision_);
    }
  }
  CommandOutcome outcome;
  for (auto renewal : op.getRenewals()) {
    const Lease* lease = leases_.lease(renewal.getId());
    if (lease == nullptr) {
      outcome.missing.push_back(renewal.getId());
      continue;
    }
    Lease renewed = *lease;
    renewed.epoch += 1;
    renewed.remainingMs = renewed.ttlMs;
    leases_.putLease(renewed);
  }
  outcome.revision = revision_;
  outcome.succeeded = true;
  return outcome;
}

CommandOutcome StateMachine::applyLeaseRevoke(records::LeaseRevoke::Reader op) {
  if (leases_.lease(op.getId()) == nullptr) {
    return refuse(StatusCode::NOT_FOUND, leaseName(op.getId()) + " not found", revision_);
  }
  return endLease(op.getId(), false);
}

CommandOutcome StateMachine::applyLeaseExpire(records::LeaseExpire::Reader op) {
  const Lease* lease = leases_.lease(op.getId());
  if (lease == nullptr) {
    return refuse(StatusCode::NOT_FOUND, leaseName(op.getId()) + " not found", revision_);
  }
  if (lease->epoch != op.getEpoch()) {
    // A renewal was decided after the leader made its decision: the renewal wins.
    CommandOutcome outcome;
    outcome.revision = revision_;
    outcome.message = leaseName(op.getId()) + " was renewed (epoch " +
                      std::to_string(lease->epoch) + ", expiry was for epoch " +
                      std::to_string(op.getEpoch()) + "): not expired";
    return outcome;
  }
  return endLease(op.getId(), true);
}

CommandOutcome StateMachine::applyLeaseCheckpoint(records::LeaseCheckpoint::Reader op) {
  for (auto entry : op.getCheckpoints()) {
    const Lease* lease = leases_.lease(entry.getId());
    if (lease != nullptr && entry.getRemainingMs() > lease->ttlMs) {
      return refuse(StatusCode::INVALID_ARGUMENT,
                    "leaseCheckpoint: " + leaseName(entry.getId()) + " remainingMs " +
                        std::to_string(entry.getRemainingMs()) + " exceeds its TTL " +
                        std::to_string(lease->ttlMs) + " ms",
                    revision_);
    }
  }
  CommandOutcome outcome;
  for (auto entry : op.getCheckpoints()) {
    const Lease* lease = leases_.lease(entry.getId());
    if (lease == nullptr) {
      outcome.missing.push_back(entry.getId());
      continue;
    }
    // Measured at an older epoch: a renewal since reset the lease to its full TTL.
    if (lease->epoch != entry.getEpoch() || lease->remainingMs == entry.getRemainingMs()) continue;
    Lease checkpointed = *lease;
    checkpointed.remainingMs = entry.getRemainingMs();
    leases_.putLease(checkpointed);
  }
  outcome.revision = revision_;
  outcome.succeeded = true;
  return outcome;
}

CommandOutcome StateMachine::applyLock(records::LockAcquire::Reader op) {
  const std::string_view name = view(op.getName());
  const uint64_t leaseId = op.getLease();
  if (leases_.lease(leaseId) == nullptr) {
    return refuse(StatusCode::NOT_FOUND, leaseName(leaseId) + " not found", revision_);
  }
  const Lock* current = leases_.lock(name);
  CommandOutcome outcome;
  outcome.revision = revision_;
  if (current != nullptr && current->holder) {
    if (current->holder->lease == leaseId) {
      // A retry by the holder: it keeps its grant (its value changes only by proclaim).
      outcome.succeeded = true;
      outcome.fence = current->holder->fence;
      return outcome;
    }
    bool queued = std::any_of(current->waiters.begin(), current->waiters.end(),
                              [&](const LockOwner& w) { return w.lease == leaseId; });
    if (queued || !op.getWait()) {
      outcome.message = lockName(name) + " is held by " + leaseName(current->holder->lease);
      return outcome;
    }
    Lock lock = *current;
    lock.waiters.push_back(LockOwner{leaseId, std::string(view(op.getValue())), 0});
    leases_.putLock(name, std::move(lock));
    outcome.message = lockName(name) + " is held by " + leaseName(current->holder->lease);
    return outcome;
  }
  ++revision_;
  Lock lock;
  lock.holder = LockOwner{leaseId, std::string(view(op.getValue())), revision_};
  leases_.putLock(name, std::move(lock));
  events_.push_back({LeaseEvent::Kind::LOCK_GRANTED, leaseId, std::string(name), revision_,
                     revision_, false, std::string(view(op.getValue())),
                     leases_.lease(leaseId)->holder});
  outcome.revision = revision_;
  outcome.succeeded = true;
  outcome.fence = revision_;
  return outcome;
}

CommandOutcome StateMachine::applyUnlock(records::LockRelease::Reader op) {
  const std::string_view name = view(op.getName());
  const uint64_t leaseId = op.getLease();
  const Lock* current = leases_.lock(name);
  bool member =
      current != nullptr && ((current->holder && current->holder->lease == leaseId) ||
                             std::any_of(current->waiters.begin(), current->waiters.end(),
                                         [&](const LockOwner& w) { return w.lease == leaseId; }));
  if (!member) {
    return refuse(StatusCode::NOT_FOUND,
                  leaseName(leaseId) + " neither holds nor waits for " + lockName(name), revision_);
  }
  const bool holds = current->holder->lease == leaseId;
  if (holds) ++revision_;
  leaveLock(name, leaseId, revision_);
  CommandOutcome outcome;
  outcome.revision = revision_;
  outcome.succeeded = true;
  return outcome;
}

CommandOutcome StateMachine::applyProclaim(records::LockProclaim::Reader op) {
  const std::string_view name = view(op.getName());
  const Lock* current = leases_.lock(name);
  if (current == nullptr || !current->holder || current->holder->lease != op.getLease()) {
    return refuse(StatusCode::NOT_FOUND,
                  leaseName(op.getLease()) + " does not hold " + lockName(name), revision_);
  }
  ++revision_;
  Lock lock = *current;
  lock.holder->value = std::string(view(op.getValue()));
  const uint64_t fence = lock.holder->fence;
  leases_.putLock(name, std::move(lock));
  const Lease* holderLease = leases_.lease(op.getLease());
  events_.push_back({LeaseEvent::Kind::PROCLAIMED, op.getLease(), std::string(name), fence,
                     revision_, false, std::string(view(op.getValue())),
                     holderLease != nullptr ? holderLease->holder : LeaseHolder{}});
  CommandOutcome outcome;
  outcome.revision = revision_;
  outcome.succeeded = true;
  outcome.fence = fence;
  return outcome;
}

bool StateMachine::leaveLock(std::string_view name, uint64_t leaseId, uint64_t revision) {
  const Lock* current = leases_.lock(name);
  if (current == nullptr) return false;
  Lock lock = *current;
  bool holderChanged = false;
  auto waiter = std::find_if(lock.waiters.begin(), lock.waiters.end(),
                             [&](const LockOwner& w) { return w.lease == leaseId; });
  if (waiter != lock.waiters.end()) {
    lock.waiters.erase(waiter);
    events_.push_back(
        {LeaseEvent::Kind::WAITER_REMOVED, leaseId, std::string(name), 0, revision, false, {}, {}});
  }
  if (lock.holder && lock.holder->lease == leaseId) {
    events_.push_back({LeaseEvent::Kind::LOCK_RELEASED,
                       leaseId,
                       std::string(name),
                       lock.holder->fence,
                       revision,
                       false,
                       {},
                       {}});
    lock.holder.reset();
    if (!lock.waiters.empty()) {
      lock.holder = std::move(lock.waiters.front());
      lock.waiters.pop_front();
      lock.holder->fence = revision;
      const Lease* holderLease = leases_.lease(lock.holder->lease);
      events_.push_back({LeaseEvent::Kind::LOCK_GRANTED, lock.holder->lease, std::string(name),
                         revision, revision, false, lock.holder->value,
                         holderLease != nullptr ? holderLease->holder : LeaseHolder{}});
    }
    holderChanged = true;
  }
  leases_.putLock(name, std::move(lock));
  return holderChanged;
}

CommandOutcome StateMachine::endLease(uint64_t id, bool expired) {
  ++revision_;
  CommandOutcome outcome;
  if (const auto* keys = leases_.keysOf(id)) {
    const std::vector<std::string> attached(keys->begin(), keys->end());
    for (const auto& key : attached)
      outcome.deleted += deleteRange(key, "", revision_);
  }
  for (const auto& name : leases_.locksOf(id))
    leaveLock(name, id, revision_);
  leases_.eraseLease(id);
  events_.push_back(
      {LeaseEvent::Kind::LEASE_ENDED, id, std::string(), 0, revision_, expired, {}, {}});
  outcome.revision = revision_;
  outcome.succeeded = true;
  return outcome;
}

// --- reads -----------------------------------------------------------------------------------

std::optional<std::string> StateMachine::checkLeaseReferences() const {
  for (const auto& [key, record] : keys_) {
    if (record.lease != 0 && leases_.lease(record.lease) == nullptr) {
      return "key \"" + key + "\" is attached to " + leaseName(record.lease) +
             ", which does not exist";
    }
  }
  std::optional<std::string> bad;
  leases_.forEachLock([&](std::string_view name, const Lock& lock) {
    auto check = [&](const LockOwner& owner) {
      if (!bad && leases_.lease(owner.lease) == nullptr) {
        bad = lockName(name) + " names " + leaseName(owner.lease) + ", which does not exist";
      }
    };
    if (lock.holder) check(*lock.holder);
    for (const auto& waiter : lock.waiters)
      check(waiter);
  });
  return bad;
}

uint64_t StateMachine::leaseCounter(MemberIndex member) const {
  auto it = sessions_.find(member);
  return it == sessions_.end() ? 0 : it->second.leaseCounter;
}

std::optional<LockHolderInfo> StateMachine::holder(std::string_view name) const {
  const Lock* lock = leases_.lock(name);
  if (lock == nullptr || !lock->holder) return std::nullopt;
  LockHolderInfo info;
  info.lease = lock->holder->lease;
  info.value = lock->holder->value;
  info.fence = lock->holder->fence;
  if (const Lease* lease = leases_.lease(info.lease)) info.holder = lease->holder;
  return info;
}

bool StateMachine::checkFence(std::string_view name, uint64_t fence) const {
  const Lock* lock = leases_.lock(name);
  return fence != 0 && lock != nullptr && lock->holder && lock->holder->fence == fence;
}

void StateMachine::forEachEncodedLease(const std::function<void(std::string_view)>& fn) const {
  leases_.forEachLease([&](const Lease& lease) { fn(encodeLease(lease)); });
}

void StateMachine::forEachEncodedLock(const std::function<void(std::string_view)>& fn) const {
  leases_.forEachLock([&](std::string_view name, const Lock& lock) { fn(encodeLock(name, lock)); });
}

}  // namespace synod::election
