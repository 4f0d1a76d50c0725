// The clocks of app leases: pure decisions about time, no I/O. Time comes in as `now`, the
// member's own monotonic clock, which runs at real speed within the drift bound `d`: over a real
// interval r it advances between r(1 - d) and r(1 + d).
//
// Two sides (ARCHITECTURE.md, "Leases, locks, elections"):
//
// LeaseRenewer, on the member the apps are connected to. Apps' keepalives stop here; the member
// renews every lease that was kept alive in one batched LeaseRenew command. The group never ends a
// lease earlier than TTL after the *send* time s of a committed renewal (real time), so the
// member tells an app it is safe until s + TTL(1 - d) on its own clock, which is at or before
// s + TTL in real time.
//
// LeaseExpirer, on every member; only the leader proposes. It counts each lease's time on its own
// clock from the moment it applied the lease's last renewal (at or after that renewal's send, in
// real time), leading or not, so that a takeover does not restart anything; for the leases it
// started with (restored from its store) or got in a snapshot, from then with the remainder
// recorded in the state. A lease expires when TTL(1 + d) (or remainder (1 + d)) has passed on the
// member's clock, which is at least TTL in real time. The expiry names the renewal epoch it was
// counted from: a renewal that won the race makes it a no-op (StateMachine). The leader also
// checkpoints remainders into the log, at its takeover and every half interval, so that a member
// that restarts or catches up does not count a long-idle lease's full TTL again; an applied
// checkpoint ending earlier than a member's own clock wins. A checkpoint records the real time
// at most left (remainder at the clock's base less the time passed at the slow end of the
// bound), so counting it again on another member never adds the margin twice.
//
// The resulting bound, for a lease whose last committed renewal was sent at real time s and first
// applied at s + C (see README "Leases"): it ends no earlier than s + TTL, and no later than
// s + C + TTL(1+d)/(1-d) + checkpoint interval + N + slack, N being the time the group had no
// leader holding a valid leader lease and slack two ticks, the retry interval and the expiry's
// commit. The argument: a valid leader counts from its own apply, or from a remainder the log
// held when it restarted, caught up or took over, and that remainder is at most a checkpoint
// interval (plus N) old. A member that counts a recorded remainder from its restart overestimates
// it by the record's age; if it then leads and checkpoints, that age is written into the log and
// can add up over several restart-then-lead cycles within one lease's life. Unconditionally, every
// clock ends within TTL(1+d) of its count's start, so a lease ends no later than
// X + TTL(1+d)/(1-d) + N + slack, X being the latest time a member started counting its current
// epoch (its apply of the renewal, its restart with the lease in its store, a snapshot, a
// takeover without a clock for it).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "election/leases.h"
#include "election/types.h"

namespace synod::election {

struct LeaseClockOptions {
  double maxClockDrift = 0.01;
  // How stale a remainder recorded in the log may grow before the leader checkpoints it.
  Nanos checkpointIntervalNs = 5000 * NANOS_PER_MS;
  // An expiry or checkpoint proposed but not applied is proposed again after this.
  Nanos retryNs = 1000 * NANOS_PER_MS;
  // Entries per command, so that one command stays well below the slot size limit.
  size_t maxEntriesPerCommand = 4096;
  // Renewer: a lease is renewed once this fraction of its TTL passed since its last committed
  // renewal was sent; batches leave at most this often.
  double renewFraction = 1.0 / 3;
  Nanos minBatchIntervalNs = 100 * NANOS_PER_MS;
};

// ---------------------------------------------------------------------------------------------
// Leader side.
struct LeaseExpiry {
  uint64_t id = 0;
  uint64_t epoch = 0;
  bool operator==(const LeaseExpiry&) const = default;
};

struct LeaseCheckpointEntry {
  uint64_t id = 0;
  uint64_t epoch = 0;
  uint64_t remainingMs = 0;
  bool operator==(const LeaseCheckpointEntry&) const = default;
};

// Test-only switches that break one lease rule each, so the simulator can be shown to catch them.
// (Proposing without a valid leader lease is refused too, but is not among them: an expiry is
// conditional on the epoch it was counted from and a leader counts from its own apply times, so a
// proposer without the lease cannot end a lease early; the gate keeps stale members quiet.)
enum class LeaseRuleBreaker {
  NONE,
  NO_DRIFT_MARGIN,   // counts TTL and remainders on its own clock without the (1 + d) margin
  RENEWAL_IGNORED,   // a renewal does not restart the clock; expiries name the current epoch
  CHECKPOINT_SHORT,  // records half the remainder it counts, so a later leader expires early
};

class LeaseExpirer {
 public:
  explicit LeaseExpirer(LeaseClockOptions options = {},
                        LeaseRuleBreaker breaker = LeaseRuleBreaker::NONE);

  // Leases whose record changed in applied commands (LeaseTable::takeTouched), at `now`: a grant
  // or renewal (new epoch) restarts the lease's clock at `now` from its recorded remainder; a
  // checkpoint at the counted epoch ends the clock at now + remainder (1 + d) if that is earlier;
  // an ended lease is forgotten. Call after every apply, leading or not.
  void onApplied(const LeaseTable& table, const std::vector<uint64_t>& touched, Nanos now);

  struct Due {
    std::vector<LeaseExpiry> expire;
    std::vector<LeaseCheckpointEntry> checkpoint;
    bool empty() const { return expire.empty() && checkpoint.empty(); }
  };
  // Call on every tick, leading or not. `leading`: this member leads under `ballot` and holds a
  // valid leader lease at `now`. The first call starts a clock for every lease in `table` (the
  // restored ones) from its recorded remainder. The first call leading under a ballot is the
  // takeover: the clocks go on. Not leading: nothing is due. Returns what to propose now; each
  // expiry and checkpoint is proposed once, then again after retryNs if its lease is unchanged
  // (and again at once under a new ballot); an expiry's later retries under one ballot wait
  // 2 retryNs, 4 retryNs, ... (the earlier copies are still queued).
  Due tick(const LeaseTable& table, bool leading, Ballot ballot, Nanos now);

  // When tick() may next have something to propose; nullopt when not leading or no lease.
  std::optional<Nanos> nextDue() const;
  // The local time at which this member, leading, expires lease `id` at its current epoch.
  std::optional<Nanos> deadline(uint64_t id) const;
  bool counting() const { return counting_; }
  // Whether the first tick() has run (it starts the restored leases' clocks).
  bool seeded() const { return seeded_; }

 private:
  struct Clock {
    uint64_t epoch = 0;
    uint64_t ttlMs = 0;
    // Counted from `base` (own clock), when at most `remainingMs` of real time was left: the
    // apply of the grant or renewal, of a checkpoint that ended earlier, or the restore.
    Nanos base = 0;
    uint64_t remainingMs = 0;
    Nanos deadline = 0;  // base + remainingMs (1 + d): expire at or after this
    // When the remainder in the log was last known fresh on this clock (the renewal's apply, a
    // checkpoint this member proposed). Unknown (-1) for remainders it did not see measured.
    Nanos measuredAt = -1;
    Nanos expireProposedAt = -1;
    uint32_t expireRetries = 0;  // proposed again under this ballot: the next waits retryNs 2^n
    Nanos checkpointProposedAt = -1;
  };
  void start(const Lease& lease, uint64_t remainingMs, Nanos now, bool fresh);
  // At most how much real time is left of the lease at `now`, in ms.
  uint64_t realRemainingMs(const Clock& clock, Nanos now) const;
  void erase(uint64_t id);
  Nanos scaled(uint64_t ms) const;

  LeaseClockOptions options_;
  LeaseRuleBreaker breaker_;
  bool counting_ = false;
  bool seeded_ = false;  // the leases in the table at the first tick have clocks
  std::optional<Ballot> ballot_;
  std::map<uint64_t, Clock> clocks_;
  std::set<std::pair<Nanos, uint64_t>> byDeadline_;
  Nanos nextCheckpointAt_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Member side.
class LeaseRenewer {
 public:
  explicit LeaseRenewer(LeaseClockOptions options = {});

  // A lease held through this member: its grant was sent at `sentAt` and has been applied.
  void track(uint64_t id, uint64_t ttlMs, Nanos sentAt);
  void forget(uint64_t id);
  bool tracks(uint64_t id) const { return leases_.count(id) != 0; }
  // The app holding `id` is alive at `now`. False if the lease is not tracked here.
  bool keepAlive(uint64_t id, Nanos now);

  struct Batch {
    uint64_t number = 0;
    Nanos sentAt = 0;
    std::vector<std::pair<uint64_t, uint64_t>> renewals;  // id, epoch
  };
  // The next renewal batch, if one is due at `now`: every tracked lease kept alive since its last
  // renewal was sent whose renewal is due (renewFraction of its TTL passed) or will be within the
  // next minBatchInterval. At most one batch is outstanding; epochs come from `table`; leases no
  // longer in `table` are forgotten.
  std::optional<Batch> takeBatch(const LeaseTable& table, Nanos now);
  // The outstanding batch was applied: its leases are safe counted from its send time, except
  // `missing` (ended before it applied), which are forgotten.
  void batchApplied(uint64_t number, const std::vector<uint64_t>& missing);
  // The outstanding batch's outcome is unknown or it was refused: its leases are due again.
  void batchFailed(uint64_t number);
  bool batchOutstanding() const { return outstanding_.has_value(); }

  // Local time until which the lease is certainly alive in the group: the send time of its last
  // committed renewal (or its grant) + TTL (1 - d). nullopt if not tracked.
  std::optional<Nanos> safeUntil(uint64_t id) const;
  // When takeBatch() may next return a batch; nullopt when nothing is pending. O(leases).
  std::optional<Nanos> nextDue() const;
  // When lease `id` alone is due for renewal: nullopt if it is not tracked, not kept alive since
  // its last renewal, or in the outstanding batch. O(log leases).
  std::optional<Nanos> dueAtOf(uint64_t id) const;
  size_t size() const { return leases_.size(); }

 private:
  struct Local {
    uint64_t ttlMs = 0;
    Nanos committedSentAt = 0;  // send time of the last committed renewal or of the grant
    Nanos aliveAt = 0;          // last keepalive
    Nanos includedSentAt = -1;  // send time of the outstanding batch that includes it, if any
  };
  Nanos dueAt(const Local& local) const;

  LeaseClockOptions options_;
  std::map<uint64_t, Local> leases_;
  struct Outstanding {
    uint64_t number = 0;
    Nanos sentAt = 0;
    std::vector<uint64_t> ids;
  };
  std::optional<Outstanding> outstanding_;
  uint64_t nextBatch_ = 1;
  Nanos lastBatchAt_ = -1;
};

}  // namespace synod::election
