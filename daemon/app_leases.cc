#include "daemon/app_leases.h"

#include <limits>

#include <capnp/message.h>
#include <kj/debug.h>

#include <algorithm>

#include "daemon/lease_service.h"
#include "daemon/logging.h"
#include "daemon/node.h"

namespace synod::daemon {

namespace {

capnp::Data::Reader bytes(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

std::string leaseName(uint64_t id) {
  return "lease " + std::to_string(id);
}

std::string lockName(const std::string& name) {
  return "lock \"" + name + "\"";
}

LeaseReply replyOf(const CommandOutcome& outcome) {
  LeaseReply reply;
  reply.code = outcome.code;
  reply.message = outcome.message;
  reply.revision = outcome.revision;
  reply.fence = outcome.fence;
  return reply;
}

LeaseReply failed(StatusCode code, std::string message) {
  LeaseReply reply;
  reply.code = code;
  reply.message = std::move(message);
  return reply;
}

election::LeaseClockOptions clockOptions(const Config& config) {
  election::LeaseClockOptions options;
  options.maxClockDrift = config.maxClockDrift;
  options.checkpointIntervalNs =
      static_cast<Nanos>(AppLeases::CHECKPOINT_INTERVAL_MS) * election::NANOS_PER_MS;
  return options;
}

// Builds a command with `fill` and proposes it. Node::write encodes the message before it
// returns, so the message need not outlive the call.
template <typename Fill>
kj::Promise<CommandOutcome> propose(Node& node, uint32_t timeoutMs, Fill&& fill) {
  capnp::MallocMessageBuilder message;
  fill(message.initRoot<records::Command>());
  return node.write(message, timeoutMs);
}

}  // namespace

// A lock call between its proposal and its answer. Registered in waits_ while queued; on
// destruction (answered, timed out, or the RPC call cancelled) it leaves waits_ and, unless the
// wait was settled (granted, or failed because the lease or its queue place is gone), proposes
// LockRelease so that no orphan waiter stays queued.
struct AppLeases::PendingLock {
  AppLeases& owner;
  uint64_t lease;
  std::string name;
  bool wait;
  bool settled = false;
  kj::Own<kj::PromiseFulfiller<LeaseReply>> fulfiller;  // set while registered in waits_

  PendingLock(AppLeases& owner, uint64_t lease, std::string name, bool wait)
      : owner(owner), lease(lease), name(std::move(name)), wait(wait) {
    ++owner.pendingLocks_;
  }
  KJ_DISALLOW_COPY(PendingLock);

  ~PendingLock() noexcept(false) {
    --owner.pendingLocks_;
    if (owner.closing_) return;
    if (fulfiller.get() != nullptr) {
      auto it = owner.waits_.find({lease, name});
      if (it != owner.waits_.end()) {
        auto& list = it->second;
        list.erase(std::remove(list.begin(), list.end(), this), list.end());
        if (list.empty()) owner.waits_.erase(it);
      }
    }
    if (wait && !settled) owner.proposeRelease(lease, name);
  }
};

AppLeases::AppLeases(Node& node, kj::Timer& timer)
    : node_(node),
      timer_(timer),
      expirer_(clockOptions(node.config())),
      renewer_(clockOptions(node.config())),
      tasks_(*this) {}

AppLeases::~AppLeases() noexcept(false) {
  closing_ = true;
  for (auto& [key, list] : waits_) {
    for (PendingLock* pending : list)
      pending->fulfiller = nullptr;
  }
  waits_.clear();
}

void AppLeases::taskFailed(kj::Exception&& exception) {
  logWarning("lease task failed: ", exception.getDescription());
}

std::string AppLeases::memberName(election::MemberIndex member) const {
  auto names = node_.config().peerNames();
  if (member < names.size()) return names[member];
  return "member " + std::to_string(member);
}

size_t AppLeases::localLeases() const {
  size_t count = 0;
  node_.state().leases().forEachLease([&](const election::Lease& lease) {
    if (lease.holder.member == node_.self()) ++count;
  });
  return count;
}

// --- applied commands ----------------------------------------------------------------------

void AppLeases::onApplied(const election::AppliedCommand& command) {
  using Kind = election::LeaseEvent::Kind;
  const auto& events = command.events;
  auto endedHere = [&](uint64_t lease) {
    return std::any_of(events.begin(), events.end(), [&](const election::LeaseEvent& e) {
      return e.kind == Kind::LEASE_ENDED && e.lease == lease;
    });
  };
  for (size_t i = 0; i < events.size(); ++i) {
    const election::LeaseEvent& event = events[i];
    switch (event.kind) {
      case Kind::LEASE_ENDED:
        if (event.expired) ++counters_.expiries;
        leaseEnded(event.lease);
        break;
      case Kind::LOCK_GRANTED: {
        LeaseReply granted;
        granted.revision = event.revision;
        granted.fence = event.fence;
        finishWaits(event.lease, event.name, granted);
        queueNote(event.name,
                  Notification{
                      true, {event.lease, event.value, event.fence, event.holder}, event.revision});
        break;
      }
      case Kind::PROCLAIMED:
        queueNote(event.name,
                  Notification{
                      true, {event.lease, event.value, event.fence, event.holder}, event.revision});
        break;
      case Kind::LOCK_RELEASED: {
        // A hold that passed to a waiter in the same step is one change, to the new holder.
        bool passed = std::any_of(events.begin() + i, events.end(), [&](const auto& e) {
          return e.kind == Kind::LOCK_GRANTED && e.name == event.name &&
                 e.revision == event.revision;
        });
        if (passed) break;
        Notification note;
        note.revision = event.revision;
        queueNote(event.name, note);
        break;
      }
      case Kind::WAITER_REMOVED:
        finishWaits(event.lease, event.name,
                    failed(StatusCode::NOT_FOUND,
                           endedHere(event.lease) ? leaseName(event.lease) + " ended"
                                                  : leaseName(event.lease) + " left the queue of " +
                                                        lockName(event.name)));
        break;
    }
  }
  std::vector<uint64_t> toSend;
  for (const auto& event : events) {
    auto it = observersByName_.find(event.name);
    if (it == observersByName_.end()) continue;
    toSend.insert(toSend.end(), it->second.begin(), it->second.end());
  }
  for (uint64_t id : toSend) {
    auto it = observers_.find(id);
    if (it == observers_.end()) continue;
    if (it->second.queue.size() > MAX_OBSERVER_QUEUE) {
      logWarning("observer of ", lockName(it->second.name).c_str(), " fell ",
                 it->second.queue.size(), " changes behind (more than ", MAX_OBSERVER_QUEUE,
                 "): dropped");
      unobserve(id);
      continue;
    }
    sendNext(id);
  }
}

void AppLeases::queueNote(const std::string& name, const Notification& note) {
  auto it = observersByName_.find(name);
  if (it == observersByName_.end()) return;
  for (uint64_t id : it->second)
    observers_.at(id).queue.push_back(note);
}

void AppLeases::afterApply(const std::vector<uint64_t>& touched, Nanos now) {
  expirer_.onApplied(node_.state().leases(), touched, now);
}

void AppLeases::stateReplaced(const std::vector<uint64_t>& touched, Nanos now) {
  expirer_.onApplied(node_.state().leases(), touched, now);
  for (auto it = locals_.begin(); it != locals_.end();) {
    if (node_.state().lease(it->first) == nullptr) {
      renewer_.forget(it->first);
      it = locals_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::pair<uint64_t, std::string>> keys;
  for (const auto& [key, list] : waits_)
    keys.push_back(key);
  for (const auto& [lease, name] : keys) {
    auto holder = node_.state().holder(name);
    if (holder && holder->lease == lease) {
      LeaseReply granted;
      granted.fence = holder->fence;
      finishWaits(lease, name, granted);
    } else if (node_.state().lease(lease) == nullptr) {
      finishWaits(lease, name, failed(StatusCode::NOT_FOUND, leaseName(lease) + " ended"));
    } else if (!waits(lease, name)) {
      finishWaits(
          lease, name,
          failed(StatusCode::NOT_FOUND, leaseName(lease) + " left the queue of " + lockName(name)));
    }
  }
  for (auto& [id, observer] : observers_) {
    Notification note;
    note.revision = node_.state().revision();
    if (auto holder = node_.state().holder(observer.name)) {
      note.hasHolder = true;
      note.holder = *holder;
    }
    observer.queue.push_back(note);
  }
  std::vector<uint64_t> ids;
  for (const auto& [id, observer] : observers_)
    ids.push_back(id);
  for (uint64_t id : ids)
    sendNext(id);
}

void AppLeases::leaseEnded(uint64_t id) {
  renewer_.forget(id);
  locals_.erase(id);
  // Waits of the lease left their queues with WAITER_REMOVED already; any that raced (registered
  // for a queue the lease had just left) fail here.
  std::vector<std::string> names;
  for (auto it = waits_.lower_bound({id, std::string()});
       it != waits_.end() && it->first.first == id; ++it) {
    names.push_back(it->first.second);
  }
  for (const auto& name : names)
    finishWaits(id, name, failed(StatusCode::NOT_FOUND, leaseName(id) + " ended"));
}

void AppLeases::finishWaits(uint64_t lease, const std::string& name, const LeaseReply& reply) {
  auto it = waits_.find({lease, name});
  if (it == waits_.end()) return;
  std::vector<PendingLock*> list = std::move(it->second);
  waits_.erase(it);
  for (PendingLock* pending : list) {
    pending->settled = true;
    auto fulfiller = kj::mv(pending->fulfiller);
    LeaseReply copy;
    copy.code = reply.code;
    copy.message = reply.message;
    copy.revision = reply.revision;
    copy.fence = reply.fence;
    fulfiller->fulfill(kj::mv(copy));
  }
}

bool AppLeases::waits(uint64_t lease, const std::string& name) const {
  const election::Lock* lock = node_.state().leases().lock(name);
  if (lock == nullptr) return false;
  return std::any_of(lock->waiters.begin(), lock->waiters.end(),
                     [&](const election::LockOwner& w) { return w.lease == lease; });
}

// --- clocks --------------------------------------------------------------------------------

void AppLeases::tick(Nanos now) {
  auto due =
      expirer_.tick(node_.state().leases(), node_.holdsLeaderLease(now), node_.ballot(), now);
  if (!due.empty()) proposeExpiries(due);
  maybeRenew(now);
}

std::optional<Nanos> AppLeases::nextDue(Nanos now) const {
  if (!expirer_.seeded()) return now;
  std::optional<Nanos> next = expirer_.nextDue();
  if (renewer_.size() > 0 && !renewer_.batchOutstanding() &&
      renewDueHint_ < std::numeric_limits<Nanos>::max()) {
    const Nanos at = std::max(renewDueHint_, nextRenewCheck_);
    next = next ? std::min(*next, at) : at;
  }
  return next;
}

void AppLeases::lowerRenewHint(Nanos at) {
  if (at >= renewDueHint_) return;
  renewDueHint_ = at;
  node_.timersChanged();
}

void AppLeases::proposeExpiries(const election::LeaseExpirer::Due& due) {
  // One command per expiry; proposed in one turn they share a slot. A copy forwarded to a new
  // leader is still safe: it names the epoch it was counted from and was decided with a valid
  // leader lease. The expirer proposes again after its retry interval if the lease is unchanged.
  const uint32_t timeoutMs = 1000;
  for (const auto& expiry : due.expire) {
    tasks_.add(propose(node_, timeoutMs, [&](records::Command::Builder command) {
                 auto op = command.initLeaseExpire();
                 op.setId(expiry.id);
                 op.setEpoch(expiry.epoch);
               }).ignoreResult());
  }
  if (!due.checkpoint.empty()) {
    ++counters_.checkpoints;
    tasks_.add(propose(node_, timeoutMs, [&](records::Command::Builder command) {
                 auto list = command.initLeaseCheckpoint().initCheckpoints(due.checkpoint.size());
                 for (size_t i = 0; i < due.checkpoint.size(); ++i) {
                   list[i].setId(due.checkpoint[i].id);
                   list[i].setEpoch(due.checkpoint[i].epoch);
                   list[i].setRemainingMs(due.checkpoint[i].remainingMs);
                 }
               }).ignoreResult());
  }
}

void AppLeases::maybeRenew(Nanos now) {
  // takeBatch scans every tracked lease: look at most twice per minimum batch interval.
  constexpr Nanos CHECK_EVERY = 50 * election::NANOS_PER_MS;
  if (renewer_.size() == 0 || renewer_.batchOutstanding() || now < nextRenewCheck_) return;
  nextRenewCheck_ = now + CHECK_EVERY;
  auto batch = renewer_.takeBatch(node_.state().leases(), now);
  renewDueHint_ = renewer_.nextDue().value_or(std::numeric_limits<Nanos>::max());
  if (!batch) return;
  const uint64_t number = batch->number;
  const size_t count = batch->renewals.size();
  auto written = propose(node_, RENEW_TIMEOUT_MS, [&](records::Command::Builder command) {
    auto list = command.initLeaseRenew().initRenewals(batch->renewals.size());
    for (size_t i = 0; i < batch->renewals.size(); ++i) {
      list[i].setId(batch->renewals[i].first);
      list[i].setEpoch(batch->renewals[i].second);
    }
  });
  tasks_.add(written.then([this, number, count](CommandOutcome outcome) {
    if (outcome.code == StatusCode::OK) {
      renewer_.batchApplied(number, outcome.missing);
      ++counters_.renewBatches;
      counters_.renewals += count - std::min(count, outcome.missing.size());
    } else {
      renewer_.batchFailed(number);
    }
    lowerRenewHint(bootTimeNow());
  }));
}

// --- leases --------------------------------------------------------------------------------

kj::Promise<LeaseReply> AppLeases::grant(uint64_t ttlMs, bool detached, int32_t lockDelayMs,
                                         PeerCredentials caller, uint32_t timeoutMs) {
  const uint32_t delay =
      lockDelayMs < 0 ? node_.config().lockDelayMs : static_cast<uint32_t>(lockDelayMs);
  return grantWithCounter(ttlMs, detached, delay, caller, timeoutMs, false);
}

kj::Promise<LeaseReply> AppLeases::grantWithCounter(uint64_t ttlMs, bool detached,
                                                    uint32_t lockDelayMs, PeerCredentials caller,
                                                    uint32_t timeoutMs, bool retried) {
  const election::MemberIndex self = node_.self();
  const uint64_t counter = std::max(node_.state().leaseCounter(self), lastCounter_) + 1;
  lastCounter_ = counter;
  const uint64_t id = election::makeLeaseId(self, counter);
  const Nanos sentAt = bootTimeNow();
  auto written = propose(node_, timeoutMs, [&](records::Command::Builder command) {
    auto op = command.initLeaseGrant();
    op.setId(id);
    op.setTtlMs(ttlMs);
    op.setDetached(detached);
    auto holder = op.initHolder();
    holder.setMember(self);
    holder.setPid(caller.pid);
    holder.setUid(caller.uid);
  });
  return written.then([=, this](CommandOutcome outcome) -> kj::Promise<LeaseReply> {
    if (outcome.code == StatusCode::OK) {
      renewer_.track(id, ttlMs, sentAt);
      LocalLease& local = locals_[id];
      local.detached = detached;
      local.lockDelayMs = lockDelayMs;
      local.attached = true;
      LeaseReply reply = replyOf(outcome);
      reply.lease = id;
      reply.cap = newLeaseCap(node_, id);
      return kj::mv(reply);
    }
    // An earlier incarnation's grant with this counter was decided late: once more, above it.
    if (outcome.code == StatusCode::INVALID_ARGUMENT && !retried &&
        node_.state().leaseCounter(self) >= counter) {
      return grantWithCounter(ttlMs, detached, lockDelayMs, caller, timeoutMs, true);
    }
    return replyOf(outcome);
  });
}

kj::Promise<LeaseReply> AppLeases::attach(uint64_t id, uint32_t timeoutMs) {
  const election::Lease* lease = node_.state().lease(id);
  if (lease == nullptr) return failed(StatusCode::NOT_FOUND, leaseName(id) + " not found");
  if (lease->holder.member != node_.self()) {
    return failed(StatusCode::INVALID_ARGUMENT, leaseName(id) + " is held through member " +
                                                    memberName(lease->holder.member) +
                                                    ": attach to it there");
  }
  auto it = locals_.find(id);
  if (it != locals_.end()) {
    if (it->second.attached) {
      return failed(StatusCode::INVALID_ARGUMENT,
                    leaseName(id) + " is attached to a live connection already");
    }
    if (it->second.revokeInFlight) {
      return failed(StatusCode::NOT_FOUND,
                    leaseName(id) + " is being revoked: its connection closed");
    }
  }
  auto attachNow = [this, id]() {
    LocalLease& local = locals_[id];
    local.attached = true;
    ++local.revokeGeneration;  // cancels a scheduled revoke
    LeaseReply reply;
    reply.lease = id;
    reply.cap = newLeaseCap(node_, id);
    return reply;
  };
  if (it != locals_.end() && renewer_.tracks(id)) return attachNow();
  // Not tracked here (granted by an earlier incarnation of this member): how long it is safe is
  // unknown until a renewal sent now is committed.
  const Nanos sentAt = bootTimeNow();
  const uint64_t ttlMs = lease->ttlMs;
  const bool detached = lease->detached;
  auto written = propose(node_, timeoutMs, [&](records::Command::Builder command) {
    auto renewal = command.initLeaseRenew().initRenewals(1)[0];
    renewal.setId(id);
    renewal.setEpoch(lease->epoch);
  });
  return written.then([=, this](CommandOutcome outcome) -> LeaseReply {
    if (outcome.code != StatusCode::OK) return replyOf(outcome);
    if (!outcome.missing.empty() || node_.state().lease(id) == nullptr) {
      return failed(StatusCode::NOT_FOUND, leaseName(id) + " ended");
    }
    auto it = locals_.find(id);
    if (it != locals_.end() && it->second.attached) {
      return failed(StatusCode::INVALID_ARGUMENT,
                    leaseName(id) + " is attached to a live connection already");
    }
    if (!renewer_.tracks(id)) renewer_.track(id, ttlMs, sentAt);
    if (it == locals_.end()) {
      LocalLease& local = locals_[id];
      local.detached = detached;
      local.lockDelayMs = node_.config().lockDelayMs;
    }
    return attachNow();
  });
}

void AppLeases::capDropped(uint64_t id) {
  if (closing_) return;
  auto it = locals_.find(id);
  if (it == locals_.end()) return;
  LocalLease& local = it->second;
  local.attached = false;
  if (local.detached) return;
  if (node_.state().lease(id) == nullptr) {
    locals_.erase(it);
    return;
  }
  const uint64_t generation = ++local.revokeGeneration;
  tasks_.add(timer_.afterDelay(local.lockDelayMs * kj::MILLISECONDS).then([this, id, generation]() {
    return revokeDropped(id, generation);
  }));
}

kj::Promise<void> AppLeases::revokeDropped(uint64_t id, uint64_t generation) {
  auto it = locals_.find(id);
  if (it == locals_.end() || it->second.attached || it->second.revokeGeneration != generation) {
    return kj::READY_NOW;  // attached again meanwhile, or ended
  }
  if (node_.state().lease(id) == nullptr) {
    locals_.erase(it);
    return kj::READY_NOW;
  }
  if (node_.draining()) return kj::READY_NOW;  // shutting down: it ends by TTL
  it->second.revokeInFlight = true;
  auto written = propose(
      node_, 0, [&](records::Command::Builder command) { command.initLeaseRevoke().setId(id); });
  return written.then([this, id, generation](CommandOutcome outcome) -> kj::Promise<void> {
    if (outcome.code == StatusCode::OK || outcome.code == StatusCode::NOT_FOUND) {
      return kj::READY_NOW;  // ended: LEASE_ENDED forgot it
    }
    auto it = locals_.find(id);
    if (it == locals_.end()) return kj::READY_NOW;
    it->second.revokeInFlight = false;
    logInfo("revoke of ", leaseName(id).c_str(),
            " after its connection closed: ", outcome.message.c_str(), "; retrying");
    return timer_.afterDelay(REVOKE_RETRY_MS * kj::MILLISECONDS).then([this, id, generation]() {
      return revokeDropped(id, generation);
    });
  });
}

std::optional<Nanos> AppLeases::keepAlive(uint64_t id, Nanos now) {
  if (node_.state().lease(id) == nullptr || !renewer_.keepAlive(id, now)) return std::nullopt;
  if (auto due = renewer_.dueAtOf(id)) lowerRenewHint(*due);
  auto until = renewer_.safeUntil(id);
  if (!until) return std::nullopt;
  return std::max<Nanos>(0, *until - now);
}

kj::Promise<CommandOutcome> AppLeases::revoke(uint64_t id, uint32_t timeoutMs) {
  return propose(node_, timeoutMs,
                 [&](records::Command::Builder command) { command.initLeaseRevoke().setId(id); });
}

void AppLeases::fillInfo(rpc::LeaseInfo::Builder info, const election::Lease& lease,
                         Nanos now) const {
  info.setId(lease.id);
  info.setTtlMs(lease.ttlMs);
  uint64_t remainingMs = lease.remainingMs;
  if (auto until = renewer_.safeUntil(lease.id)) {
    remainingMs = static_cast<uint64_t>(std::max<Nanos>(0, *until - now) / election::NANOS_PER_MS);
  }
  info.setRemainingMs(remainingMs);
  info.setFence(lease.grantRevision);
  auto holder = info.initHolder();
  holder.setMember(memberName(lease.holder.member));
  holder.setPid(lease.holder.pid);
  holder.setUid(lease.holder.uid);
  info.setDetached(lease.detached);
  info.setLocal(lease.holder.member == node_.self());
  auto local = locals_.find(lease.id);
  info.setAttached(local != locals_.end() && local->second.attached);
  info.setEpoch(lease.epoch);
  const auto* keys = node_.state().leases().keysOf(lease.id);
  info.setKeys(keys != nullptr ? keys->size() : 0);
  auto names = node_.state().leases().locksOf(lease.id);
  auto locks = info.initLocks(names.size());
  for (size_t i = 0; i < names.size(); ++i)
    locks.set(i, bytes(names[i]));
}

void AppLeases::fillHolder(rpc::LockHolder::Builder out,
                           const election::LockHolderInfo& holder) const {
  out.setLease(holder.lease);
  out.setValue(bytes(holder.value));
  out.setFence(holder.fence);
  auto who = out.initHolder();
  who.setMember(memberName(holder.holder.member));
  who.setPid(holder.holder.pid);
  who.setUid(holder.holder.uid);
}

// --- locks ---------------------------------------------------------------------------------

kj::Promise<LeaseReply> AppLeases::lock(std::string name, uint64_t lease, std::string value,
                                        bool wait, uint32_t timeoutMs) {
  if (pendingLocks_ >= MAX_PENDING_LOCKS) {
    return failed(StatusCode::UNAVAILABLE, "too many lock calls in flight on this member (" +
                                               std::to_string(MAX_PENDING_LOCKS) + "); retry");
  }
  const Nanos startedAt = bootTimeNow();
  auto pending = kj::heap<PendingLock>(*this, lease, name, wait);
  auto written = propose(node_, timeoutMs, [&](records::Command::Builder command) {
    auto op = command.initLock();
    op.setName(bytes(name));
    op.setLease(lease);
    op.setValue(bytes(value));
    op.setWait(wait);
  });
  PendingLock& ref = *pending;
  return written
      .then([this, &ref, startedAt,
             timeoutMs](CommandOutcome outcome) mutable -> kj::Promise<LeaseReply> {
        if (outcome.code != StatusCode::OK) {
          // Refused: nothing queued. Timed out: it may still queue; the release stays due.
          ref.settled =
              outcome.code != StatusCode::TIMEOUT && outcome.code != StatusCode::NO_QUORUM;
          return replyOf(outcome);
        }
        if (outcome.succeeded) {
          ref.settled = true;
          return replyOf(outcome);
        }
        auto holder = node_.state().holder(ref.name);
        if (!ref.wait) {
          ref.settled = true;
          std::string message = lockName(ref.name) + " is held";
          if (holder) {
            message += " by " + leaseName(holder->lease) + " (member " +
                       memberName(holder->holder.member) + ", pid " +
                       std::to_string(holder->holder.pid) + ", uid " +
                       std::to_string(holder->holder.uid) + ")";
          }
          return failed(StatusCode::COMPARE_FAILED, message);
        }
        // Queued when applied; the state now says where it stands.
        if (holder && holder->lease == ref.lease) {
          ref.settled = true;
          LeaseReply reply;
          reply.fence = holder->fence;
          return reply;
        }
        if (!waits(ref.lease, ref.name)) {
          ref.settled = true;
          return failed(StatusCode::NOT_FOUND,
                        node_.state().lease(ref.lease) == nullptr
                            ? leaseName(ref.lease) + " ended"
                            : leaseName(ref.lease) + " left the queue of " + lockName(ref.name));
        }
        auto paf = kj::newPromiseAndFulfiller<LeaseReply>();
        ref.fulfiller = kj::mv(paf.fulfiller);
        waits_[{ref.lease, ref.name}].push_back(&ref);
        if (timeoutMs == 0) return kj::mv(paf.promise);
        const Nanos elapsedMs = (bootTimeNow() - startedAt) / election::NANOS_PER_MS;
        const uint64_t leftMs = std::max<int64_t>(1, int64_t{timeoutMs} - elapsedMs);
        return paf.promise.exclusiveJoin(
            timer_.afterDelay(leftMs * kj::MILLISECONDS).then([&ref, timeoutMs]() {
              return failed(StatusCode::TIMEOUT, lockName(ref.name) + " was not granted within " +
                                                     std::to_string(timeoutMs) +
                                                     " ms; left its queue");
            }));
      })
      .attach(kj::mv(pending));
}

void AppLeases::proposeRelease(uint64_t lease, const std::string& name) {
  if (node_.draining() || node_.state().lease(lease) == nullptr) return;
  tasks_.add(propose(node_, 0, [&](records::Command::Builder command) {
               auto op = command.initUnlock();
               op.setName(bytes(name));
               op.setLease(lease);
             }).ignoreResult());
}

kj::Promise<CommandOutcome> AppLeases::unlock(std::string name, uint64_t lease,
                                              uint32_t timeoutMs) {
  return propose(node_, timeoutMs, [&](records::Command::Builder command) {
    auto op = command.initUnlock();
    op.setName(bytes(name));
    op.setLease(lease);
  });
}

kj::Promise<CommandOutcome> AppLeases::proclaim(std::string name, uint64_t lease, std::string value,
                                                uint32_t timeoutMs) {
  return propose(node_, timeoutMs, [&](records::Command::Builder command) {
    auto op = command.initProclaim();
    op.setName(bytes(name));
    op.setLease(lease);
    op.setValue(bytes(value));
  });
}

// --- observers -----------------------------------------------------------------------------

uint64_t AppLeases::observe(std::string name, rpc::LockObserver::Client observer) {
  if (observers_.size() >= MAX_OBSERVERS) return 0;
  const uint64_t id = nextObserver_++;
  Notification now;
  now.revision = node_.state().revision();
  if (auto holder = node_.state().holder(name)) {
    now.hasHolder = true;
    now.holder = *holder;
  }
  Observer entry{name, kj::mv(observer), {}, false};
  entry.queue.push_back(now);
  observers_.emplace(id, kj::mv(entry));
  observersByName_[name].insert(id);
  sendNext(id);
  return id;
}

void AppLeases::unobserve(uint64_t id) {
  auto it = observers_.find(id);
  if (it == observers_.end()) return;
  auto byName = observersByName_.find(it->second.name);
  if (byName != observersByName_.end()) {
    byName->second.erase(id);
    if (byName->second.empty()) observersByName_.erase(byName);
  }
  observers_.erase(it);
}

void AppLeases::sendNext(uint64_t observerId) {
  auto it = observers_.find(observerId);
  if (it == observers_.end()) return;
  Observer& observer = it->second;
  if (observer.inFlight || observer.queue.empty()) return;
  Notification note = kj::mv(observer.queue.front());
  observer.queue.pop_front();
  auto request = observer.client.changedRequest();
  request.setHasHolder(note.hasHolder);
  if (note.hasHolder) fillHolder(request.initHolder(), note.holder);
  request.setRevision(note.revision);
  observer.inFlight = true;
  tasks_.add(request.send().then(
      [this, observerId](capnp::Response<rpc::LockObserver::ChangedResults>&&) {
        auto it = observers_.find(observerId);
        if (it == observers_.end()) return;
        it->second.inFlight = false;
        sendNext(observerId);
      },
      [this, observerId](kj::Exception&& e) {
        auto it = observers_.find(observerId);
        if (it == observers_.end()) return;
        if (e.getType() != kj::Exception::Type::DISCONNECTED) {
          logInfo("observer of ", lockName(it->second.name).c_str(),
                  " failed: ", e.getDescription(), "; dropped");
        }
        unobserve(observerId);
      }));
}

}  // namespace synod::daemon
