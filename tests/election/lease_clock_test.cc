// The lease clocks (election/lease_clock.h): when the leader expires and checkpoints, what a
// member renews in one batch, and how long it tells its apps they are safe.
#include "election/lease_clock.h"

#include <doctest/doctest.h>

#include <optional>
#include <vector>

#include "tests/election/lease_commands.h"

namespace synod::election {
namespace {

using testing::LeaseHarness;

constexpr Nanos MS = NANOS_PER_MS;
const Ballot B1{1, 0};
const Ballot B2{2, 1};

LeaseClockOptions opts(double drift = 0.0) {
  LeaseClockOptions o;
  o.maxClockDrift = drift;
  o.checkpointIntervalNs = 2000 * MS;
  o.retryNs = 500 * MS;
  o.minBatchIntervalNs = 100 * MS;
  return o;
}

// Applies `command` and feeds the touched leases to the expirer at `now`.
void apply(LeaseHarness& h, LeaseExpirer& e, std::string command, Nanos now) {
  h.ok(std::move(command));
  e.onApplied(h.sm.leases(), h.sm.takeTouchedLeases(), now);
}

const uint64_t L1 = makeLeaseId(0, 1);
const uint64_t L2 = makeLeaseId(0, 2);

TEST_CASE("a leader expires a lease TTL (1 + d) after it applied the grant, naming its epoch") {
  LeaseHarness h;
  LeaseExpirer e(opts(0.1));
  CHECK(e.tick(h.sm.leases(), true, B1, 0).empty());  // takeover with no lease
  apply(h, e, h.c.grant(L1, 1000), 10 * MS);
  REQUIRE(e.deadline(L1));
  CHECK(*e.deadline(L1) == 10 * MS + 1100 * MS);
  CHECK(e.tick(h.sm.leases(), true, B1, 1109 * MS).expire.empty());
  auto due = e.tick(h.sm.leases(), true, B1, 1110 * MS);
  REQUIRE(due.expire.size() == 1);
  CHECK(due.expire[0] == LeaseExpiry{L1, 1});
  // Proposed once, then again only after the retry interval.
  CHECK(e.tick(h.sm.leases(), true, B1, 1200 * MS).expire.empty());
  CHECK(e.tick(h.sm.leases(), true, B1, 1610 * MS).expire.size() == 1);
}

TEST_CASE("an expiry's retries under one ballot back off; a new ballot proposes it at once") {
  LeaseHarness h;
  LeaseExpirer e(opts());
  e.tick(h.sm.leases(), true, B1, 0);
  apply(h, e, h.c.grant(L1, 1000), 0);
  // The leader's queue is backed up: nothing applies. Copies at the deadline, then after
  // 500, 1000, 2000 ms, not one per retry interval.
  std::vector<Nanos> proposed;
  for (Nanos now = 1000 * MS; now <= 5000 * MS; now += 10 * MS) {
    if (!e.tick(h.sm.leases(), true, B1, now).expire.empty()) proposed.push_back(now);
  }
  CHECK(proposed == std::vector<Nanos>{1000 * MS, 1500 * MS, 2500 * MS, 4500 * MS});
  // Leadership ends and comes back under another ballot: the queue is gone, proposed at once.
  CHECK(e.tick(h.sm.leases(), false, B2, 5010 * MS).empty());
  CHECK(e.tick(h.sm.leases(), true, B2, 5020 * MS).expire.size() == 1);
  CHECK(e.tick(h.sm.leases(), true, B2, 5510 * MS).expire.empty());
  CHECK(e.tick(h.sm.leases(), true, B2, 5520 * MS).expire.size() == 1);
}

TEST_CASE("a renewal restarts the clock from its apply time and the expiry names the new epoch") {
  LeaseHarness h;
  LeaseExpirer e(opts());
  e.tick(h.sm.leases(), true, B1, 0);
  apply(h, e, h.c.grant(L1, 1000), 0);
  apply(h, e, h.c.renew({{L1, 1}}), 800 * MS);
  CHECK(e.tick(h.sm.leases(), true, B1, 1500 * MS).expire.empty());
  auto due = e.tick(h.sm.leases(), true, B1, 1800 * MS);
  REQUIRE(due.expire.size() == 1);
  CHECK(due.expire[0] == LeaseExpiry{L1, 2});
}

TEST_CASE("nothing is proposed without the leader lease; a follower's clock goes on at takeover") {
  LeaseHarness h;
  LeaseExpirer e(opts());
  apply(h, e, h.c.grant(L1, 1000), 0);  // applied while following: counted from its apply
  CHECK(*e.deadline(L1) == 1000 * MS);
  CHECK(e.tick(h.sm.leases(), false, B1, 500 * MS).empty());
  // Takeover at 600 ms: the clock started at the apply goes on (and the remainder it counts is
  // checkpointed at once: how fresh the log's copy is is unknown to a new leader).
  auto takeover = e.tick(h.sm.leases(), true, B1, 600 * MS);
  CHECK(takeover.expire.empty());
  CHECK(takeover.checkpoint == std::vector<LeaseCheckpointEntry>{{L1, 1, 400}});
  CHECK(*e.deadline(L1) == 1000 * MS);
  // The leader lease lapses under the same ballot: the clock keeps counting, nothing proposed.
  CHECK(e.tick(h.sm.leases(), false, B1, 1000 * MS).empty());
  CHECK(e.tick(h.sm.leases(), true, B1, 1001 * MS).expire.size() == 1);
  // Another leader took over and this member leads again later: what it proposed is forgotten
  // (proposed again at once), the clock is not restarted.
  CHECK(e.tick(h.sm.leases(), false, B2, 1100 * MS).empty());
  CHECK_FALSE(e.counting());
  auto due = e.tick(h.sm.leases(), true, Ballot{3, 0}, 1200 * MS);
  REQUIRE(due.expire.size() == 1);
  CHECK(due.expire[0] == LeaseExpiry{L1, 1});
  CHECK(*e.deadline(L1) == 1000 * MS);
}

TEST_CASE("leaders changing faster than the checkpoint interval do not keep a lease alive") {
  // Three members apply the grant at 0; leadership moves every 300 ms (no checkpoint is ever
  // due). The lease ends TTL (1 + d) after the grant's apply however often leaders change; a
  // member counting from its own takeover would push the expiry 300 ms further at each change.
  LeaseHarness h;
  LeaseClockOptions o = opts(0.1);
  o.checkpointIntervalNs = 10000 * MS;
  std::vector<LeaseExpirer> members(3, LeaseExpirer(o));
  h.ok(h.c.grant(L1, 1000));
  auto touched = h.sm.takeTouchedLeases();
  for (auto& m : members)
    m.onApplied(h.sm.leases(), touched, 0);
  std::optional<Nanos> expiredAt;
  for (Nanos now = 0; now <= 3000 * MS && !expiredAt; now += 10 * MS) {
    const uint64_t leader = static_cast<uint64_t>(now / (300 * MS));
    for (size_t i = 0; i < members.size(); ++i) {
      const bool leading = leader % members.size() == i;
      auto due = members[i].tick(h.sm.leases(), leading, Ballot{leader + 1, uint32_t(i)}, now);
      if (!due.expire.empty()) expiredAt = now;
    }
  }
  REQUIRE(expiredAt);
  CHECK(*expiredAt == 1100 * MS);
}

TEST_CASE("a member restarted with the lease counts its recorded remainder from its first tick") {
  LeaseHarness h;
  h.ok(h.c.grant(L1, 10000));
  h.ok(h.c.checkpoint({{L1, 1, 4000}}));
  h.sm.takeTouchedLeases();  // restored from the store: nothing applied by this process
  LeaseExpirer e(opts());
  CHECK(e.tick(h.sm.leases(), false, B1, 100 * MS).empty());
  CHECK(*e.deadline(L1) == 4100 * MS);
  // A later checkpoint that ends earlier wins; one that ends later does not.
  apply(h, e, h.c.checkpoint({{L1, 1, 3000}}), 200 * MS);
  CHECK(*e.deadline(L1) == 3200 * MS);
  apply(h, e, h.c.checkpoint({{L1, 1, 3500}}), 300 * MS);
  CHECK(*e.deadline(L1) == 3200 * MS);
}

TEST_CASE("a member without a clock for a lease counts its checkpointed remainder") {
  LeaseHarness h;
  LeaseExpirer old(opts());
  old.tick(h.sm.leases(), true, B1, 0);
  apply(h, old, h.c.grant(L1, 10000), 0);
  h.sm.takeTouchedLeases();
  // At 1 s nothing is stale enough; at 2 s (the interval's half is 1 s) the lease is.
  CHECK(old.tick(h.sm.leases(), true, B1, 999 * MS).checkpoint.empty());
  auto due = old.tick(h.sm.leases(), true, B1, 2000 * MS);
  REQUIRE(due.checkpoint.size() == 1);
  CHECK(due.checkpoint[0] == LeaseCheckpointEntry{L1, 1, 8000});
  h.ok(h.c.checkpoint({{L1, 1, 8000}}));
  CHECK(h.sm.lease(L1)->remainingMs == 8000);

  // A member that has not counted the lease (it got it in a snapshot at 2.5 s) counts the
  // remainder from then.
  LeaseExpirer next(opts());
  next.onApplied(h.sm.leases(), h.sm.takeTouchedLeases(), 2500 * MS);
  due = next.tick(h.sm.leases(), true, B2, 3000 * MS);
  CHECK(due.expire.empty());
  CHECK(due.checkpoint == std::vector<LeaseCheckpointEntry>{{L1, 1, 7500}});
  CHECK(*next.deadline(L1) == 10500 * MS);
}

TEST_CASE("checkpoint remainders are counted in real time: TTL - passed / (1 + d)") {
  LeaseHarness h;
  LeaseExpirer e(opts(0.2));
  e.tick(h.sm.leases(), true, B1, 0);
  apply(h, e, h.c.grant(L1, 10000), 0);  // deadline 12 s on this clock
  // 4 s on this clock are at least 4 / 1.2 s of real time: at most 6.667 s are left.
  auto due = e.tick(h.sm.leases(), true, B1, 4000 * MS);
  REQUIRE(due.checkpoint.size() == 1);
  CHECK(due.checkpoint[0].remainingMs == 6667);
  due = e.tick(h.sm.leases(), true, B1, 8000 * MS);
  REQUIRE(due.checkpoint.size() == 1);
  CHECK(due.checkpoint[0].remainingMs == 3334);
}

TEST_CASE("checkpoints counted again by other members do not stretch a lease by the margin") {
  // A lease handed on by checkpoints: each member applies the previous one's checkpoint and
  // counts it with the (1 + d) margin; the next one checkpoints what it counts. With every clock
  // at the fast end of the drift bound (the worst for the margin), the lease must still end
  // within TTL (1 + d) of local time after the grant: each hop may only lose time, never add
  // the margin again.
  LeaseHarness h;
  const double d = 0.2;
  LeaseExpirer first(opts(d));
  first.tick(h.sm.leases(), true, B1, 0);
  apply(h, first, h.c.grant(L1, 10000), 0);
  Nanos now = 0;
  LeaseExpirer* counter = &first;
  std::vector<LeaseExpirer> hops(5, LeaseExpirer(opts(d)));
  uint64_t ballot = 2;
  for (LeaseExpirer& next : hops) {
    now += 1000 * MS;
    auto due = counter->tick(h.sm.leases(), true, Ballot{ballot++, 0}, now);
    REQUIRE(due.checkpoint.size() == 1);
    h.ok(h.c.checkpoint({{L1, 1, due.checkpoint[0].remainingMs}}));
    next.onApplied(h.sm.leases(), h.sm.takeTouchedLeases(), now);
    next.tick(h.sm.leases(), false, B1, now);  // or restored: counts the record from now
    counter = &next;
  }
  REQUIRE(counter->deadline(L1));
  CHECK(*counter->deadline(L1) <= 12000 * MS + 10 * MS);  // a ms of rounding per hop
}

TEST_CASE(
    "a lease renewed within half the interval needs no checkpoint; idle ones get one each tick") {
  LeaseHarness h;
  LeaseExpirer e(opts());
  e.tick(h.sm.leases(), true, B1, 0);
  apply(h, e, h.c.grant(L1, 10000), 0);
  apply(h, e, h.c.grant(L2, 10000), 0);
  apply(h, e, h.c.renew({{L1, 1}}), 900 * MS);
  auto due = e.tick(h.sm.leases(), true, B1, 1500 * MS);
  REQUIRE(due.checkpoint.size() == 1);
  CHECK(due.checkpoint[0].id == L2);
  apply(h, e, h.c.checkpoint({{L2, 1, due.checkpoint[0].remainingMs}}), 1600 * MS);
  CHECK(e.tick(h.sm.leases(), true, B1, 2499 * MS).checkpoint.empty());  // ticks every 1 s
  apply(h, e, h.c.renew({{L1, 1}}), 2000 * MS);
  due = e.tick(h.sm.leases(), true, B1, 2500 * MS);
  REQUIRE(due.checkpoint.size() == 1);  // L1 renewed 0.5 s ago
  CHECK(due.checkpoint[0].id == L2);
  CHECK(due.checkpoint[0].remainingMs == 7500);
}

TEST_CASE("an ended lease is forgotten by the leader's clocks") {
  LeaseHarness h;
  LeaseExpirer e(opts());
  e.tick(h.sm.leases(), true, B1, 0);
  apply(h, e, h.c.grant(L1, 1000), 0);
  apply(h, e, h.c.revoke(L1), 10 * MS);
  CHECK_FALSE(e.deadline(L1));
  CHECK(e.tick(h.sm.leases(), true, B1, 5000 * MS).empty());
}

TEST_CASE("rule breakers: no drift margin and an ignored renewal expire early") {
  LeaseHarness h;
  LeaseExpirer noMargin(opts(0.1), LeaseRuleBreaker::NO_DRIFT_MARGIN);
  noMargin.tick(h.sm.leases(), true, B1, 0);
  LeaseExpirer ignores(opts(), LeaseRuleBreaker::RENEWAL_IGNORED);
  ignores.tick(h.sm.leases(), true, B1, 0);
  h.ok(h.c.grant(L1, 1000));
  auto touched = h.sm.takeTouchedLeases();
  noMargin.onApplied(h.sm.leases(), touched, 0);
  ignores.onApplied(h.sm.leases(), touched, 0);
  CHECK(*noMargin.deadline(L1) == 1000 * MS);
  h.ok(h.c.renew({{L1, 1}}));
  ignores.onApplied(h.sm.leases(), h.sm.takeTouchedLeases(), 900 * MS);
  auto due = ignores.tick(h.sm.leases(), true, B1, 1000 * MS);
  REQUIRE(due.expire.size() == 1);
  CHECK(due.expire[0] == LeaseExpiry{L1, 2});
}

// --- LeaseRenewer ----------------------------------------------------------------------------

TEST_CASE("the renewer batches kept-alive leases that are due, and only those") {
  LeaseHarness h;
  h.ok(h.c.grant(L1, 3000));
  h.ok(h.c.grant(L2, 3000));
  LeaseRenewer r(opts());
  r.track(L1, 3000, 0);
  r.track(L2, 3000, 500 * MS);
  CHECK_FALSE(r.nextDue());  // no keepalive yet
  CHECK_FALSE(r.dueAtOf(L1));
  r.keepAlive(L1, 200 * MS);
  r.keepAlive(L2, 600 * MS);
  REQUIRE(r.nextDue());
  CHECK(*r.nextDue() == 1000 * MS);  // a third of L1's TTL after its grant was sent
  CHECK(r.dueAtOf(L1) == 1000 * MS);
  CHECK(r.dueAtOf(L2) == 1500 * MS);
  CHECK_FALSE(r.dueAtOf(L2 + 1));  // not tracked
  CHECK_FALSE(r.takeBatch(h.sm.leases(), 999 * MS));
  auto batch = r.takeBatch(h.sm.leases(), 1000 * MS);
  REQUIRE(batch);
  // L2 is due at 1.5 s, more than one batch interval away: it waits for a later batch.
  REQUIRE(batch->renewals.size() == 1);
  CHECK(batch->renewals[0] == std::pair<uint64_t, uint64_t>{L1, 1});
  CHECK(r.batchOutstanding());
  CHECK_FALSE(r.dueAtOf(L1));                          // in the outstanding batch
  CHECK_FALSE(r.takeBatch(h.sm.leases(), 1600 * MS));  // one outstanding at a time
  // Safe from the grant's send time until applied, then from the batch's send time.
  CHECK(*r.safeUntil(L1) == 3000 * MS);
  r.batchApplied(batch->number, {});
  CHECK(*r.safeUntil(L1) == 4000 * MS);
  // L1 was not kept alive since the batch left: only L2 renews now.
  batch = r.takeBatch(h.sm.leases(), 1600 * MS);
  REQUIRE(batch);
  REQUIRE(batch->renewals.size() == 1);
  CHECK(batch->renewals[0].first == L2);
}

TEST_CASE("the renewer's safe time counts from the send time shortened by the drift bound") {
  LeaseHarness h;
  h.ok(h.c.grant(L1, 1000));
  LeaseRenewer r(opts(0.1));
  r.track(L1, 1000, 100 * MS);
  CHECK(*r.safeUntil(L1) == 100 * MS + 900 * MS);
  r.keepAlive(L1, 300 * MS);
  auto batch = r.takeBatch(h.sm.leases(), 500 * MS);
  REQUIRE(batch);
  r.batchApplied(batch->number, {});
  CHECK(*r.safeUntil(L1) == 500 * MS + 900 * MS);
}

TEST_CASE("a failed batch leaves its leases due; a missing lease is forgotten") {
  LeaseHarness h;
  h.ok(h.c.grant(L1, 3000));
  h.ok(h.c.grant(L2, 3000));
  LeaseRenewer r(opts());
  r.track(L1, 3000, 0);
  r.track(L2, 3000, 0);
  r.keepAlive(L1, 10 * MS);
  r.keepAlive(L2, 10 * MS);
  auto batch = r.takeBatch(h.sm.leases(), 1000 * MS);
  REQUIRE(batch);
  CHECK(batch->renewals.size() == 2);
  r.batchFailed(batch->number);
  CHECK(*r.safeUntil(L1) == 3000 * MS);  // unchanged
  batch = r.takeBatch(h.sm.leases(), 1100 * MS);
  REQUIRE(batch);
  CHECK(batch->renewals.size() == 2);
  r.batchApplied(batch->number, {L2});
  CHECK(r.tracks(L1));
  CHECK_FALSE(r.tracks(L2));
  CHECK_FALSE(r.keepAlive(L2, 1200 * MS));
  // A lease gone from the table is dropped when the next batch is built.
  h.ok(h.c.revoke(L1));
  r.keepAlive(L1, 1300 * MS);
  CHECK_FALSE(r.takeBatch(h.sm.leases(), 3000 * MS));
  CHECK_FALSE(r.tracks(L1));
}

}  // namespace
}  // namespace synod::election
