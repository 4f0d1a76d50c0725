#include "tests/sim/lease_checker.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace synod::sim {

using election::Nanos;
using election::NANOS_PER_MS;

void LeaseChecker::advance(Nanos now, Nanos coveredUntil) {
  if (now > lastStep_) noLeaderTotal_ += now - std::max(lastStep_, std::min(now, coveredUntil));
  lastStep_ = std::max(lastStep_, now);
}

void LeaseChecker::granted(uint64_t id, uint64_t ttlMs, Nanos sentAt, Nanos noLeaderAtSend,
                           Nanos now) {
  Ledger& lease = leases_[id];
  lease.appliedAt = now;
  lease.ttlMs = ttlMs;
  lease.sentAt = sentAt;
  lease.noLeaderAtSend = noLeaderAtSend;
}

void LeaseChecker::renewed(uint64_t id, Nanos sentAt, Nanos noLeaderAtSend, Nanos now) {
  auto it = leases_.find(id);
  if (it == leases_.end() || sentAt <= it->second.sentAt) return;
  it->second.appliedAt = now;
  it->second.sentAt = sentAt;
  it->second.noLeaderAtSend = noLeaderAtSend;
}

void LeaseChecker::stopped(uint64_t id) {
  auto it = leases_.find(id);
  if (it != leases_.end()) it->second.stopped = true;
}

Nanos LeaseChecker::bound(const Ledger& lease) const {
  const double d = options_.drift;
  const double ttl = static_cast<double>(lease.ttlMs * NANOS_PER_MS);
  const Nanos noLeader = noLeaderTotal_ - lease.noLeaderAtSend;
  return lease.appliedAt + static_cast<Nanos>(std::ceil(ttl * (1 + d) / (1 - d))) +
         options_.checkpointIntervalNs + noLeader + options_.slackNs;
}

std::string LeaseChecker::describe(uint64_t id, const Ledger& lease, Nanos now) const {
  std::ostringstream out;
  out << "lease " << (id >> 48) << ":" << (id & ((uint64_t{1} << 48) - 1)) << " ttl " << lease.ttlMs
      << "ms, last grant/renewal sent at " << lease.sentAt / 1000 << "us (first applied "
      << (lease.appliedAt - lease.sentAt) / 1000 << "us later), now " << now / 1000 << "us ("
      << (now - lease.sentAt) / 1000 << "us later), no valid leader for "
      << (noLeaderTotal_ - lease.noLeaderAtSend) / 1000 << "us since";
  return out.str();
}

std::optional<LeaseViolation> LeaseChecker::ended(uint64_t id, bool expired, Nanos now) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  const Ledger lease = it->second;
  leases_.erase(it);
  if (!expired) return std::nullopt;
  const Nanos earliest = lease.sentAt + static_cast<Nanos>(lease.ttlMs) * NANOS_PER_MS;
  if (now < earliest) {
    return LeaseViolation{"lease-no-early-expiry", describe(id, lease, now) + ": expired " +
                                                       std::to_string((earliest - now) / 1000) +
                                                       "us before its TTL ran out"};
  }
  const Nanos latest = bound(lease);
  worstExcess_ = std::max(worstExcess_, now - latest);
  if (now > latest) {
    return LeaseViolation{"lease-lifetime-bound", describe(id, lease, now) + ": expired " +
                                                      std::to_string((now - latest) / 1000) +
                                                      "us after its bound"};
  }
  return std::nullopt;
}

std::optional<LeaseViolation> LeaseChecker::sweep(Nanos now) {
  for (const auto& [id, lease] : leases_) {
    if (!lease.stopped) continue;
    const Nanos latest = bound(lease);
    if (now > latest) {
      return LeaseViolation{"lease-lifetime-bound",
                            describe(id, lease, now) + ": nobody keeps it alive, still live " +
                                std::to_string((now - latest) / 1000) + "us after its bound"};
    }
  }
  return std::nullopt;
}

}  // namespace synod::sim
