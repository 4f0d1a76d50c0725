// The simulator's lease invariants, in real (simulated global) time. Pure bookkeeping: the
// simulator reports what happened, in the order it first happened anywhere (the first apply of
// each decided slot), and the checker answers with a violation or nothing.
//
// For a lease whose grant or last renewal before its end was sent at real time s (the latest
// such send, when several renewals applied), with TTL T and drift bound d:
//
//   lease-no-early-expiry: an expiry is first applied at real time e >= s + T.
//   lease-lifetime-bound:  e <= s + T(1+d)/(1-d) + checkpoint interval + N(s, e) + C + slack,
//                          where N(s, e) is the real time within [s, e] during which no member
//                          was leader holding a valid leader lease on its own clock (and not
//                          paused), C the time from s to that grant's or renewal's first apply
//                          (members count from their applies), and slack a constant for ticks and
//                          the expiry's own commit (the simulator's: see chooseParams).
//                          Checked at the expiry, and for a lease nobody keeps alive any more also
//                          while it lives (a lease that never ends is caught too). This is the
//                          bound the checkpoints give while members do not restart and lead
//                          repeatedly within one lease's life (election/lease_clock.h states the
//                          unconditional one); the simulator checks this tighter one, so that
//                          stale checkpoints show up as violations.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "election/types.h"

namespace synod::sim {

struct LeaseViolation {
  std::string invariant;
  std::string detail;
};

struct LeaseBoundOptions {
  double drift = 0;
  election::Nanos checkpointIntervalNs = 0;
  election::Nanos slackNs = 0;
};

class LeaseChecker {
 public:
  explicit LeaseChecker(LeaseBoundOptions options) : options_(options) {}

  // Real time passes from the last step to `now`; until `coveredUntil` (computed at the last
  // step) some member was a valid leader.
  void advance(election::Nanos now, election::Nanos coveredUntil);
  // Real time without a valid leader since the run began.
  election::Nanos noLeaderTotal() const { return noLeaderTotal_; }

  // A grant of `id` sent at real time `sentAt` (when the noLeaderTotal was `noLeaderAtSend`)
  // was applied.
  void granted(uint64_t id, uint64_t ttlMs, election::Nanos sentAt, election::Nanos noLeaderAtSend,
               election::Nanos now);
  // A renewal batch sent at `sentAt` renewed `id`.
  void renewed(uint64_t id, election::Nanos sentAt, election::Nanos noLeaderAtSend,
               election::Nanos now);
  // Nobody keeps `id` alive any more (its app stopped, revoked it, or its member crashed).
  void stopped(uint64_t id);
  // `id` ended at `now` (its end first applied anywhere).
  std::optional<LeaseViolation> ended(uint64_t id, bool expired, election::Nanos now);
  // Leases nobody keeps alive that outlived their bound.
  std::optional<LeaseViolation> sweep(election::Nanos now);

  size_t live() const { return leases_.size(); }
  // The largest (end - bound) seen at an expiry, in ns: how close the workload came to the
  // lifetime bound (negative: below it by that much).
  election::Nanos worstExcessNs() const { return worstExcess_; }

 private:
  struct Ledger {
    uint64_t ttlMs = 0;
    election::Nanos sentAt = 0;     // latest send of the grant or an applied renewal
    election::Nanos appliedAt = 0;  // its first apply
    election::Nanos noLeaderAtSend = 0;
    bool stopped = false;
  };
  election::Nanos bound(const Ledger& lease) const;
  std::string describe(uint64_t id, const Ledger& lease, election::Nanos now) const;

  LeaseBoundOptions options_;
  std::map<uint64_t, Ledger> leases_;
  election::Nanos lastStep_ = 0;
  election::Nanos noLeaderTotal_ = 0;
  election::Nanos worstExcess_ = INT64_MIN;
};

}  // namespace synod::sim
