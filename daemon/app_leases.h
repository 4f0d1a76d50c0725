// The daemon side of app leases, locks and elections (ARCHITECTURE.md "Leases, locks,
// elections"): what a member does with the replicated lease and lock tables of its StateMachine.
// Owned by the Node; every command it proposes goes through Node::write.
//
// - Grants pick lease ids (election::makeLeaseId) above every counter this member used, track the
//   lease in the LeaseRenewer and bind it to the granting connection unless it is detached.
// - Keepalives stop here (LeaseRenewer::keepAlive); renewals leave as one batched LeaseRenew at a
//   time, counted from the send time of the batch (the moment it was handed to Node::write).
// - On every member the LeaseExpirer follows the applied leases; while this member leads with a
//   valid leader lease it proposes the expiries and checkpoints the expirer decides.
// - A connection-bound lease whose Lease capability is dropped is revoked after its lock delay,
//   unless it is attached again meanwhile; the revoke is retried until applied.
// - Lock waits queued through this member resolve when this member applies the grant, and fail at
//   once when their lease ends or they leave the queue; a wait that times out or is cancelled
//   proposes LockRelease so no orphan waiter stays queued.
// - Observers of a lock are told every holder change this member applies, in order, one call at
//   a time each.
//
// Single-threaded, on the Node's loop. The Node must outlive every object handed out here
// (capabilities hold a reference); the daemon closes connections before destroying the Node.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "daemon/uv_loop.h"  // PeerCredentials
#include "election/lease_clock.h"
#include "election/state_machine.h"
#include "rpc_schema/synod.capnp.h"

namespace synod::daemon {

class Node;

using election::CommandOutcome;
using election::Nanos;
using election::StatusCode;

// Counters for the metrics endpoint; since start.
struct LeaseCounters {
  uint64_t renewBatches = 0;  // LeaseRenew batches this member had applied
  uint64_t renewals = 0;      // lease renewals in those batches
  uint64_t expiries = 0;      // leases ended by expiry, as applied on this member
  uint64_t checkpoints = 0;   // LeaseCheckpoint commands this member proposed
};

// The answer to a lock, campaign, grant or attach.
struct LeaseReply {
  StatusCode code = StatusCode::OK;
  std::string message;
  uint64_t revision = 0;  // the revision the outcome reflects; 0 = the current one
  uint64_t fence = 0;     // lock / campaign
  uint64_t lease = 0;     // grant / attach
  // grant / attach on OK: the Lease capability, created in the same turn the lease was marked
  // attached, so that dropping the reply drops the capability and revokes a bound lease.
  rpc::Lease::Client cap = nullptr;
};

class AppLeases : private kj::TaskSet::ErrorHandler {
 public:
  AppLeases(Node& node, kj::Timer& timer);
  ~AppLeases() noexcept(false);
  KJ_DISALLOW_COPY(AppLeases);

  // --- Node hooks ---
  // Every command applied on this member, in order (whoever proposed it).
  void onApplied(const election::AppliedCommand& command);
  // After each applied slot: feeds the leases it touched (StateMachine::takeTouchedLeases) to the
  // expirer.
  void afterApply(const std::vector<uint64_t>& touched, Nanos now);
  // Every Node tick: the expirer's proposals while leading, the next renewal batch.
  void tick(Nanos now);
  // When tick() next has work (`now` before the first tick; the expirer's next deadline while
  // leading; the next renewal batch), nullopt when none. Node ticks no later than this; anything
  // here that moves it earlier calls Node::timersChanged().
  std::optional<Nanos> nextDue(Nanos now) const;
  // The state was replaced by a snapshot (no events): settles the waits, tells every observer
  // the current holder and forgets leases that are gone.
  void stateReplaced(const std::vector<uint64_t>& touched, Nanos now);

  // --- Leases ---
  // Grants a lease held by `caller` through this member. On OK `lease` is its id and `cap` its
  // Lease capability; it is tracked for keepalives and, unless detached, revoked once the
  // capability is dropped.
  kj::Promise<LeaseReply> grant(uint64_t ttlMs, bool detached, int32_t lockDelayMs,
                                PeerCredentials caller, uint32_t timeoutMs);
  // Whether lease `id` can be attached (see Leases.attach); answers after renewing it once when
  // this member does not track it yet (a lease of an earlier incarnation).
  kj::Promise<LeaseReply> attach(uint64_t id, uint32_t timeoutMs);
  // The Lease capability for `id` was destroyed (dropped by the app or its connection closed).
  void capDropped(uint64_t id);
  // A keepalive: how long the lease is safe from `now`, or nullopt when it ended (or is not held
  // through this member).
  std::optional<Nanos> keepAlive(uint64_t id, Nanos now);
  kj::Promise<CommandOutcome> revoke(uint64_t id, uint32_t timeoutMs);
  void fillInfo(rpc::LeaseInfo::Builder info, const election::Lease& lease, Nanos now) const;
  void fillHolder(rpc::LockHolder::Builder out, const election::LockHolderInfo& holder) const;
  std::string memberName(election::MemberIndex member) const;

  // --- Locks ---
  kj::Promise<LeaseReply> lock(std::string name, uint64_t lease, std::string value, bool wait,
                               uint32_t timeoutMs);
  kj::Promise<CommandOutcome> unlock(std::string name, uint64_t lease, uint32_t timeoutMs);
  kj::Promise<CommandOutcome> proclaim(std::string name, uint64_t lease, std::string value,
                                       uint32_t timeoutMs);
  // Starts telling `observer` about lock `name`: the current holder at once, then every change.
  // Returns the observation's id for unobserve(), or 0 past MAX_OBSERVERS.
  uint64_t observe(std::string name, rpc::LockObserver::Client observer);
  void unobserve(uint64_t id);

  const LeaseCounters& counters() const { return counters_; }
  size_t localLeases() const;

  // The leader checkpoints remainders at least this often (election::LeaseClockOptions).
  static constexpr uint64_t CHECKPOINT_INTERVAL_MS = 5000;
  // Renewal batches and expiries whose outcome is not known after this are given up and retried.
  static constexpr uint32_t RENEW_TIMEOUT_MS = 2000;
  // A revoke of a dropped lease that failed (no quorum) is tried again after this.
  static constexpr uint64_t REVOKE_RETRY_MS = 500;
  // Notifications queued for one observer; past this the observer is dropped with a log line.
  static constexpr size_t MAX_OBSERVER_QUEUE = 1024;
  // Observers of one member in all; past this observe() is refused.
  static constexpr size_t MAX_OBSERVERS = 65536;
  // Lock calls in flight on one member (proposed or queued); past this lock() answers
  // UNAVAILABLE.
  static constexpr size_t MAX_PENDING_LOCKS = 65536;

 private:
  struct LocalLease {
    bool detached = false;
    uint32_t lockDelayMs = 0;
    bool attached = false;          // a live Lease capability exists
    uint64_t revokeGeneration = 0;  // bumped to cancel a scheduled revoke
    bool revokeInFlight = false;
  };
  // A lock call waiting in the queue; owned by the call's promise chain.
  struct PendingLock;
  struct Notification {
    bool hasHolder = false;
    election::LockHolderInfo holder;
    uint64_t revision = 0;
  };
  struct Observer {
    std::string name;
    rpc::LockObserver::Client client;
    std::deque<Notification> queue;
    bool inFlight = false;
  };

  kj::Promise<LeaseReply> grantWithCounter(uint64_t ttlMs, bool detached, uint32_t lockDelayMs,
                                           PeerCredentials caller, uint32_t timeoutMs,
                                           bool retried);
  kj::Promise<void> revokeDropped(uint64_t id, uint64_t generation);
  void proposeRelease(uint64_t lease, const std::string& name);
  void proposeExpiries(const election::LeaseExpirer::Due& due);
  void maybeRenew(Nanos now);
  void leaseEnded(uint64_t id);
  void finishWaits(uint64_t lease, const std::string& name, const LeaseReply& reply);
  void queueNote(const std::string& name, const Notification& note);
  void sendNext(uint64_t observerId);
  bool waits(uint64_t lease, const std::string& name) const;
  void taskFailed(kj::Exception&& exception) override;

  Node& node_;
  kj::Timer& timer_;
  election::LeaseExpirer expirer_;
  election::LeaseRenewer renewer_;
  uint64_t lastCounter_ = 0;  // the highest lease id counter this member proposed
  std::map<uint64_t, LocalLease> locals_;
  std::map<std::pair<uint64_t, std::string>, std::vector<PendingLock*>> waits_;
  std::map<uint64_t, Observer> observers_;
  std::map<std::string, std::set<uint64_t>> observersByName_;
  uint64_t nextObserver_ = 1;
  size_t pendingLocks_ = 0;  // PendingLock objects alive
  Nanos nextRenewCheck_ = 0;
  // No renewal is due before this (a lower bound on renewer_.nextDue(), which scans every lease):
  // recomputed when maybeRenew scans anyway, lowered by keepAlive() and track(), set to now by a
  // batch's outcome. Too early only costs a tick that finds nothing.
  Nanos renewDueHint_ = 0;
  void lowerRenewHint(Nanos at);
  LeaseCounters counters_;
  bool closing_ = false;
  kj::TaskSet tasks_;
};

}  // namespace synod::daemon
