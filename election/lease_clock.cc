#include "election/lease_clock.h"

#include <algorithm>
#include <cmath>

namespace synod::election {

namespace {

Nanos msToNanos(uint64_t ms) {
  return static_cast<Nanos>(std::min<uint64_t>(ms, uint64_t{1} << 40)) * NANOS_PER_MS;
}

}  // namespace

// --- LeaseExpirer ----------------------------------------------------------------------------

LeaseExpirer::LeaseExpirer(LeaseClockOptions options, LeaseRuleBreaker breaker)
    : options_(options), breaker_(breaker) {}

Nanos LeaseExpirer::scaled(uint64_t ms) const {
  const double margin =
      breaker_ == LeaseRuleBreaker::NO_DRIFT_MARGIN ? 1.0 : 1.0 + options_.maxClockDrift;
  return static_cast<Nanos>(std::ceil(static_cast<double>(msToNanos(ms)) * margin));
}

uint64_t LeaseExpirer::realRemainingMs(const Clock& clock, Nanos now) const {
  // At most remainingMs was left at `base`, and at least (now - base) / (1 + d) of real time has
  // passed since. (Not the deadline's distance / (1 - d): that would stack the margin on top of
  // the one the deadline already has, and each checkpoint counted again by another member would
  // grow the lease by (1 + d) / (1 - d).)
  const double margin =
      breaker_ == LeaseRuleBreaker::NO_DRIFT_MARGIN ? 1.0 : 1.0 + options_.maxClockDrift;
  const double passedMs =
      static_cast<double>(std::max<Nanos>(0, now - clock.base)) / margin / NANOS_PER_MS;
  const double left = static_cast<double>(clock.remainingMs) - passedMs;
  if (left <= 0) return 0;
  return std::min<uint64_t>(clock.ttlMs, static_cast<uint64_t>(std::ceil(left)));
}

void LeaseExpirer::start(const Lease& lease, uint64_t remainingMs, Nanos now, bool fresh) {
  erase(lease.id);
  Clock clock;
  clock.epoch = lease.epoch;
  clock.ttlMs = lease.ttlMs;
  clock.base = now;
  clock.remainingMs = std::min(remainingMs, lease.ttlMs);
  clock.deadline = now + scaled(clock.remainingMs);
  clock.measuredAt = fresh ? now : -1;
  clocks_.emplace(lease.id, clock);
  byDeadline_.emplace(clock.deadline, lease.id);
}

void LeaseExpirer::erase(uint64_t id) {
  auto it = clocks_.find(id);
  if (it == clocks_.end()) return;
  byDeadline_.erase({it->second.deadline, id});
  clocks_.erase(it);
}

void LeaseExpirer::onApplied(const LeaseTable& table, const std::vector<uint64_t>& touched,
                             Nanos now) {
  // Every member counts, leading or not: a leader that takes over keeps counting from its own
  // applies, so that no takeover restarts a lease's time (with leaders changing faster than the
  // checkpoint interval, counting from each takeover would keep a lease alive forever).
  for (uint64_t id : touched) {
    const Lease* lease = table.lease(id);
    if (lease == nullptr) {
      erase(id);
      continue;
    }
    auto it = clocks_.find(id);
    if (it == clocks_.end()) {
      // Granted (the full TTL, true from the grant's send), or restored from a snapshot (a
      // remainder measured at some unknown earlier time: the log's copy may be stale).
      start(*lease, lease->remainingMs, now, lease->remainingMs == lease->ttlMs);
      continue;
    }
    if (it->second.epoch == lease->epoch) {
      // A checkpoint at the epoch this member counts. Its own clock and the recorded remainder
      // counted from now both end at or after the lease's real end: keep the earlier.
      Clock& clock = it->second;
      const uint64_t recorded = std::min(lease->remainingMs, lease->ttlMs);
      const Nanos fromCheckpoint = now + scaled(recorded);
      if (fromCheckpoint < clock.deadline) {
        byDeadline_.erase({clock.deadline, id});
        clock.base = now;
        clock.remainingMs = recorded;
        clock.deadline = fromCheckpoint;
        byDeadline_.emplace(clock.deadline, id);
      }
      // The remainder in the log is fresh as of this member's own proposal. A checkpoint
      // someone else proposed was measured at a time this member does not know (its apply may
      // be late): it does not make the log's copy look fresh here.
      if (clock.checkpointProposedAt >= 0) {
        clock.measuredAt = std::max(clock.measuredAt, clock.checkpointProposedAt);
      }
      clock.checkpointProposedAt = -1;
      continue;
    }
    if (breaker_ == LeaseRuleBreaker::RENEWAL_IGNORED) {
      it->second.epoch = lease->epoch;
      continue;
    }
    start(*lease, lease->remainingMs, now, true);  // renewed: a full TTL from now
  }
}

LeaseExpirer::Due LeaseExpirer::tick(const LeaseTable& table, bool leading, Ballot ballot,
                                     Nanos now) {
  Due due;
  if (!seeded_) {
    // The leases this member started with (restored from its store) count their recorded
    // remainders from its first tick, which is after they were recorded.
    seeded_ = true;
    table.forEachLease([&](const Lease& lease) {
      if (clocks_.count(lease.id) == 0) start(lease, lease.remainingMs, now, false);
    });
  }
  if (!leading) {
    // Not leading, or the leader lease lapsed. The clocks keep counting either way; under a new
    // ballot the next lead is a takeover, and what this member proposed before is forgotten.
    if (ballot_ && *ballot_ != ballot) {
      counting_ = false;
      ballot_.reset();
      for (auto& [id, clock] : clocks_) {
        clock.expireProposedAt = -1;
        clock.expireRetries = 0;
        clock.checkpointProposedAt = -1;
      }
    }
    return due;
  }
  if (!counting_ || !ballot_ || *ballot_ != ballot) {
    // Takeover: the clocks this member kept from its own applies go on; a lease it has no clock
    // for at this epoch counts its recorded remainder from now. How fresh the log's remainders
    // are is unknown here (the previous leader's last checkpoints, a restore, late applies): the
    // new leader checkpoints every lease at once, so that a member restarting or catching up
    // next counts a remainder measured now, even when leaders change faster than the interval.
    table.forEachLease([&](const Lease& lease) {
      auto it = clocks_.find(lease.id);
      if (it == clocks_.end() || it->second.epoch != lease.epoch) {
        start(lease, lease.remainingMs, now, false);
      }
    });
    for (auto& [id, clock] : clocks_)
      clock.measuredAt = -1;
    counting_ = true;
    ballot_ = ballot;
    nextCheckpointAt_ = now;
  }
  std::vector<uint64_t> gone;
  for (auto it = byDeadline_.begin(); it != byDeadline_.end() && it->first <= now; ++it) {
    if (due.expire.size() >= options_.maxEntriesPerCommand) break;
    if (table.lease(it->second) == nullptr) {
      gone.push_back(it->second);  // ended in a snapshot this member installed
      continue;
    }
    Clock& clock = clocks_.at(it->second);
    // Under one ballot an expiry this member proposed stays in its queue until it gets a slot or
    // leadership ends (which resets this): a copy proposed again only queues behind it. Each retry
    // waits twice as long as the one before, so that a backlog is not fed a copy of every expiring
    // lease per retry interval, which grows the backlog the expiries wait behind.
    if (clock.expireProposedAt >= 0 &&
        now - clock.expireProposedAt < (options_.retryNs << std::min(clock.expireRetries, 20u))) {
      continue;
    }
    if (clock.expireProposedAt >= 0) ++clock.expireRetries;
    clock.expireProposedAt = now;
    due.expire.push_back({it->second, clock.epoch});
  }
  for (uint64_t id : gone)
    erase(id);
  if (now >= nextCheckpointAt_) {
    // Leases whose remainder in the log is staler than half the interval: with a tick every half
    // interval, no remainder in the log is ever staler than the interval (plus a commit).
    const Nanos stale = options_.checkpointIntervalNs / 2;
    bool complete = true;
    for (auto& [id, clock] : clocks_) {
      if (clock.deadline <= now) continue;  // expiring
      if (clock.measuredAt >= 0 && now - clock.measuredAt < stale) continue;
      if (clock.checkpointProposedAt >= 0 && now - clock.checkpointProposedAt < options_.retryNs)
        continue;
      if (due.checkpoint.size() >= options_.maxEntriesPerCommand) {
        complete = false;
        break;
      }
      uint64_t remainingMs = realRemainingMs(clock, now);
      if (breaker_ == LeaseRuleBreaker::CHECKPOINT_SHORT) remainingMs /= 2;
      clock.checkpointProposedAt = now;
      due.checkpoint.push_back({id, clock.epoch, remainingMs});
    }
    nextCheckpointAt_ = complete ? now + options_.checkpointIntervalNs / 2 : now;
  }
  return due;
}

std::optional<Nanos> LeaseExpirer::nextDue() const {
  if (!counting_ || clocks_.empty()) return std::nullopt;
  return std::min(byDeadline_.begin()->first, nextCheckpointAt_);
}

std::optional<Nanos> LeaseExpirer::deadline(uint64_t id) const {
  auto it = clocks_.find(id);
  if (it == clocks_.end()) return std::nullopt;
  return it->second.deadline;
}

// --- LeaseRenewer ----------------------------------------------------------------------------

LeaseRenewer::LeaseRenewer(LeaseClockOptions options) : options_(options) {}

void LeaseRenewer::track(uint64_t id, uint64_t ttlMs, Nanos sentAt) {
  Local local;
  local.ttlMs = ttlMs;
  local.committedSentAt = sentAt;
  local.aliveAt = sentAt;
  leases_[id] = local;
}

void LeaseRenewer::forget(uint64_t id) {
  leases_.erase(id);
}

bool LeaseRenewer::keepAlive(uint64_t id, Nanos now) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return false;
  it->second.aliveAt = std::max(it->second.aliveAt, now);
  return true;
}

Nanos LeaseRenewer::dueAt(const Local& local) const {
  return local.committedSentAt +
         static_cast<Nanos>(static_cast<double>(msToNanos(local.ttlMs)) * options_.renewFraction);
}

std::optional<LeaseRenewer::Batch> LeaseRenewer::takeBatch(const LeaseTable& table, Nanos now) {
  if (outstanding_) return std::nullopt;
  if (lastBatchAt_ >= 0 && now - lastBatchAt_ < options_.minBatchIntervalNs) return std::nullopt;
  Batch batch;
  batch.sentAt = now;
  Outstanding out;
  bool anyDue = false;
  for (auto it = leases_.begin(); it != leases_.end();) {
    const Lease* lease = table.lease(it->first);
    if (lease == nullptr) {
      it = leases_.erase(it);
      continue;
    }
    Local& local = it->second;
    // Kept alive since its last renewal left, and due now or within the next batch interval (so
    // that leases close to due ride along instead of needing a batch of their own).
    if (local.aliveAt > local.committedSentAt &&
        dueAt(local) <= now + options_.minBatchIntervalNs &&
        batch.renewals.size() < options_.maxEntriesPerCommand) {
      anyDue = anyDue || dueAt(local) <= now;
      batch.renewals.emplace_back(it->first, lease->epoch);
    }
    ++it;
  }
  if (!anyDue) return std::nullopt;
  batch.number = nextBatch_++;
  out.number = batch.number;
  out.sentAt = now;
  for (const auto& [id, epoch] : batch.renewals) {
    out.ids.push_back(id);
    leases_.at(id).includedSentAt = now;
  }
  outstanding_ = std::move(out);
  lastBatchAt_ = now;
  return batch;
}

void LeaseRenewer::batchApplied(uint64_t number, const std::vector<uint64_t>& missing) {
  if (!outstanding_ || outstanding_->number != number) return;
  for (uint64_t id : outstanding_->ids) {
    auto it = leases_.find(id);
    if (it == leases_.end()) continue;
    it->second.committedSentAt = std::max(it->second.committedSentAt, outstanding_->sentAt);
    it->second.includedSentAt = -1;
  }
  for (uint64_t id : missing)
    leases_.erase(id);
  outstanding_.reset();
}

void LeaseRenewer::batchFailed(uint64_t number) {
  if (!outstanding_ || outstanding_->number != number) return;
  for (uint64_t id : outstanding_->ids) {
    auto it = leases_.find(id);
    if (it != leases_.end()) it->second.includedSentAt = -1;
  }
  outstanding_.reset();
}

std::optional<Nanos> LeaseRenewer::safeUntil(uint64_t id) const {
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  const Local& local = it->second;
  return local.committedSentAt + static_cast<Nanos>(static_cast<double>(msToNanos(local.ttlMs)) *
                                                    (1.0 - options_.maxClockDrift));
}

std::optional<Nanos> LeaseRenewer::dueAtOf(uint64_t id) const {
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  const Local& local = it->second;
  if (local.aliveAt <= local.committedSentAt || local.includedSentAt >= 0) return std::nullopt;
  return dueAt(local);
}

std::optional<Nanos> LeaseRenewer::nextDue() const {
  std::optional<Nanos> next;
  for (const auto& [id, local] : leases_) {
    if (local.aliveAt <= local.committedSentAt || local.includedSentAt >= 0) continue;
    Nanos at = dueAt(local);
    if (!next || at < *next) next = at;
  }
  if (next && lastBatchAt_ >= 0) next = std::max(*next, lastBatchAt_ + options_.minBatchIntervalNs);
  return next;
}

}  // namespace synod::election
