// The replicated lease and lock rules: every command, the renewal/expiry race, attached keys,
// FIFO promotion, fences, refusals, persistence of the tables.
#include <capnp/serialize.h>
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "election/leases.h"
#include "election/prng.h"
#include "election/state_machine.h"
#include "tests/election/lease_commands.h"

namespace synod::election {
namespace {

using testing::LeaseHarness;

const uint64_t A = makeLeaseId(0, 1);
const uint64_t B = makeLeaseId(1, 1);
const uint64_t C = makeLeaseId(2, 7);

using Kind = LeaseEvent::Kind;

bool hasEvent(const AppliedCommand& applied, Kind kind, uint64_t lease,
              const std::string& name = "") {
  for (const auto& event : applied.events)
    if (event.kind == kind && event.lease == lease && event.name == name) return true;
  return false;
}

// Everything a refusal must leave alone.
struct Fingerprint {
  uint64_t stateDigest;
  uint64_t revision;
  size_t leases, locks, keys;
  bool operator==(const Fingerprint&) const = default;
};
Fingerprint fingerprint(const StateMachine& sm) {
  return {sm.stateDigest(), sm.revision(), sm.leases().leaseCount(), sm.leases().lockCount(),
          sm.keyCount()};
}

TEST_CASE("leaseGrant records the lease and takes no revision") {
  LeaseHarness h;
  auto applied = h.ok(h.c.grant(A, 5000, true, 4321, 77));
  CHECK(applied.outcome.succeeded);
  CHECK(applied.outcome.revision == 0);
  CHECK(h.sm.revision() == 0);
  const Lease* lease = h.sm.lease(A);
  REQUIRE(lease != nullptr);
  CHECK(lease->id == A);
  CHECK(lease->ttlMs == 5000);
  CHECK(lease->epoch == 1);
  CHECK(lease->remainingMs == 5000);
  CHECK(lease->holder == LeaseHolder{0, 4321, 77});
  CHECK(lease->detached);
  CHECK(leaseIdMember(B) == 1);
  CHECK((B & LEASE_ID_COUNTER_MASK) == 1);
}

TEST_CASE("bad grants are refused and change nothing") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  h.sm.takeChanges();
  const Fingerprint before = fingerprint(h.sm);

  auto duplicate = h.one(h.c.grant(A, 9000));
  CHECK(duplicate.outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(duplicate.outcome.message.find("already exists") != std::string::npos);
  CHECK(h.sm.lease(A)->ttlMs == 5000);

  CHECK(h.one(h.c.grant(0, 5000)).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.one(h.c.grant(makeLeaseId(3, 0), 5000)).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.one(h.c.grant(B, 0)).outcome.code == StatusCode::INVALID_ARGUMENT);

  // An id whose member bits are not the holder's member.
  capnp::MallocMessageBuilder message;
  auto command = message.initRoot<records::Command>();
  command.initId().setSequence(1000);
  auto grant = command.initLeaseGrant();
  grant.setId(makeLeaseId(2, 5));
  grant.setTtlMs(5000);
  grant.initHolder().setMember(1);
  auto foreign = h.one(encodeCommand(message));
  CHECK(foreign.outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(foreign.outcome.message.find("belongs to member 2") != std::string::npos);

  CHECK(fingerprint(h.sm) == before);
  auto changes = h.sm.takeChanges();
  CHECK(changes.leases.empty());
  CHECK(changes.locks.empty());
  CHECK(changes.keys.empty());
}

TEST_CASE("lease ids are never reused, so a late expiry cannot end a newer lease") {
  LeaseHarness h;
  const uint64_t first = makeLeaseId(1, 5);
  h.ok(h.c.grant(first, 5000));
  CHECK(h.sm.leaseCounter(1) == 5);
  CHECK(h.sm.leaseCounter(0) == 0);
  const std::string lateExpiry = h.c.expire(first, 1);  // decided by a leader, still in flight
  h.ok(h.c.revoke(first));
  h.sm.takeChanges();
  const Fingerprint before = fingerprint(h.sm);
  for (uint64_t counter : {5, 4, 1}) {
    auto again = h.one(h.c.grant(makeLeaseId(1, counter), 5000));
    CHECK(again.outcome.code == StatusCode::INVALID_ARGUMENT);
    CHECK(again.outcome.message.find("never reused") != std::string::npos);
  }
  CHECK(fingerprint(h.sm) == before);
  CHECK(h.sm.takeChanges().sessions.size() == 1);  // only the commands' own session (member 0)
  h.ok(h.c.grant(makeLeaseId(1, 6), 5000));
  CHECK(h.one(lateExpiry).outcome.code == StatusCode::NOT_FOUND);
  CHECK(h.sm.lease(makeLeaseId(1, 6)) != nullptr);

  // The counter is persisted with the member's session.
  auto changes = h.sm.takeChanges();
  REQUIRE(changes.sessions.count(1) == 1);
  StateMachine restored;
  restored.restoreSession(1, *changes.sessions.at(1));
  CHECK(restored.leaseCounter(1) == 6);
}

TEST_CASE(
    "leaseRenew: one batch renews many, bumps epochs, resets checkpoints, reports ended ids") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  h.ok(h.c.grant(B, 8000));
  h.ok(h.c.checkpoint({{A, 1, 1200}}));
  CHECK(h.sm.lease(A)->remainingMs == 1200);

  auto applied = h.ok(h.c.renew({{A, 1}, {B, 1}, {C, 3}}));
  CHECK(applied.outcome.missing == std::vector<uint64_t>{C});
  CHECK(h.sm.lease(A)->epoch == 2);
  CHECK(h.sm.lease(A)->remainingMs == 5000);
  CHECK(h.sm.lease(B)->epoch == 2);
  CHECK(h.sm.revision() == 0);

  // A renewal behind the lease's epoch still renews (its holder believes it renewed).
  h.ok(h.c.renew({{A, 1}}));
  CHECK(h.sm.lease(A)->epoch == 3);

  // An epoch the lease never had: the whole batch is refused.
  const Fingerprint before = fingerprint(h.sm);
  auto ahead = h.one(h.c.renew({{B, 2}, {A, 9}}));
  CHECK(ahead.outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.sm.lease(B)->epoch == 2);
  CHECK(fingerprint(h.sm) == before);
  CHECK(h.one(h.c.renew({{A, 3}, {A, 3}})).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.one(h.c.renew({{0, 1}})).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(fingerprint(h.sm) == before);
}

TEST_CASE("leaseExpire: a renewal decided between the leader's decision and its expiry wins") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  h.ok(h.c.put("svc/a", "addr", A));
  // The leader saw epoch 1 run out and proposes expire(A, 1); a renewal is decided first.
  const std::string expiry = h.c.expire(A, 1);
  h.ok(h.c.renew({{A, 1}}));
  const uint64_t revision = h.sm.revision();
  auto ignored = h.ok(expiry);
  CHECK_FALSE(ignored.outcome.succeeded);
  CHECK(ignored.outcome.message.find("renewed") != std::string::npos);
  CHECK(ignored.events.empty());
  REQUIRE(h.sm.lease(A) != nullptr);
  CHECK(h.sm.get("svc/a") != nullptr);
  CHECK(h.sm.revision() == revision);

  // At the current epoch the expiry ends the lease.
  auto ended = h.ok(h.c.expire(A, 2));
  CHECK(ended.outcome.succeeded);
  CHECK(h.sm.lease(A) == nullptr);
  CHECK(h.sm.get("svc/a") == nullptr);
  REQUIRE(ended.events.size() == 1);
  CHECK(ended.events[0].kind == Kind::LEASE_ENDED);
  CHECK(ended.events[0].expired);

  CHECK(h.one(h.c.expire(A, 2)).outcome.code == StatusCode::NOT_FOUND);
}

TEST_CASE("leaseCheckpoint applies only at the epoch it was measured at") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  h.ok(h.c.grant(B, 5000));
  h.ok(h.c.checkpoint({{A, 1, 3000}, {B, 1, 4000}}));
  CHECK(h.sm.lease(A)->remainingMs == 3000);
  // Measured at epoch 1, decided after a renewal: must not shorten the renewed lease.
  const std::string stale = h.c.checkpoint({{A, 1, 100}, {B, 1, 2500}, {C, 1, 1}});
  h.ok(h.c.renew({{A, 1}}));
  auto applied = h.ok(stale);
  CHECK(applied.outcome.missing == std::vector<uint64_t>{C});
  CHECK(h.sm.lease(A)->remainingMs == 5000);
  CHECK(h.sm.lease(B)->remainingMs == 2500);

  const Fingerprint before = fingerprint(h.sm);
  auto tooLong = h.one(h.c.checkpoint({{B, 1, 1000}, {A, 2, 5001}}));
  CHECK(tooLong.outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.sm.lease(B)->remainingMs == 2500);
  CHECK(fingerprint(h.sm) == before);
}

TEST_CASE("keys attached to a lease are deleted at the revision of its end") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  h.ok(h.c.grant(B, 5000));
  h.ok(h.c.put("svc/1", "x", A));
  h.ok(h.c.put("svc/2", "y", A));
  h.ok(h.c.put("svc/3", "z", A));
  h.ok(h.c.put("svc/3", "z2", B));  // moved to B
  h.ok(h.c.put("svc/4", "w", A));
  h.ok(h.c.put("svc/4", "w2"));              // detached: a plain key now
  h.ok(h.c.fencedPut({}, "svc/5", "t", A));  // a txn put attaches too
  CHECK(h.sm.get("svc/1")->lease == A);
  CHECK(h.sm.get("svc/5")->lease == A);
  REQUIRE(h.sm.leases().keysOf(A) != nullptr);
  CHECK(h.sm.leases().keysOf(A)->size() == 3);

  const uint64_t before = h.sm.revision();
  h.sm.takeChanges();
  auto revoked = h.ok(h.c.revoke(A));
  CHECK(revoked.outcome.revision == before + 1);
  CHECK(revoked.outcome.deleted == 3);
  CHECK(h.sm.revision() == before + 1);
  for (auto key : {"svc/1", "svc/2", "svc/5"})
    CHECK(h.sm.get(key) == nullptr);
  REQUIRE(h.sm.get("svc/3") != nullptr);
  REQUIRE(h.sm.get("svc/4") != nullptr);
  CHECK(h.sm.get("svc/3")->value == "z2");
  CHECK(h.sm.get("svc/4")->lease == 0);
  CHECK(h.sm.leases().keysOf(A) == nullptr);
  CHECK(hasEvent(revoked, Kind::LEASE_ENDED, A));
  CHECK_FALSE(revoked.events.back().expired);
  CHECK(revoked.events.back().revision == before + 1);

  auto changes = h.sm.takeChanges();
  CHECK(changes.keys.size() == 3);
  for (const auto& [key, record] : changes.keys)
    CHECK_FALSE(record.has_value());
  CHECK(changes.leases.size() == 1);
  CHECK_FALSE(changes.leases.at(A).has_value());

  // A key deleted by hand leaves the lease's index.
  h.ok(h.c.put("svc/6", "v", B));
  h.ok(h.c.put("other", "v", B));
  auto del = h.ok([&] {
    capnp::MallocMessageBuilder message;
    auto command = message.initRoot<records::Command>();
    command.initId().setSequence(5000);
    auto op = command.initDelete();
    op.setKey(testing::bytes("svc/"));
    op.setRangeEnd(testing::bytes("svc0"));
    return encodeCommand(message);
  }());
  CHECK(del.outcome.deleted == 3);  // svc/3 and svc/6 of B, plain svc/4
  CHECK(h.sm.leases().keysOf(B)->size() == 1);
  CHECK(h.ok(h.c.revoke(B)).outcome.deleted == 1);
  CHECK(h.sm.get("other") == nullptr);
}

TEST_CASE("puts with an unknown lease are refused and change nothing") {
  LeaseHarness h;
  h.ok(h.c.put("k", "v"));
  const Fingerprint before = fingerprint(h.sm);
  auto put = h.one(h.c.put("k", "w", A));
  CHECK(put.outcome.code == StatusCode::NOT_FOUND);
  auto txn = h.one(h.c.fencedPut({}, "k", "w", A));
  CHECK(txn.outcome.code == StatusCode::NOT_FOUND);
  CHECK(fingerprint(h.sm) == before);
  CHECK(h.sm.get("k")->value == "v");
  h.ok(h.c.grant(A, 1000));
  h.ok(h.c.revoke(A));
  CHECK(h.one(h.c.put("k", "w", A)).outcome.code == StatusCode::NOT_FOUND);
  CHECK(h.one(h.c.revoke(A)).outcome.code == StatusCode::NOT_FOUND);
}

TEST_CASE("locks: a free lock is taken with a fence, others queue FIFO, tryLock does not queue") {
  LeaseHarness h;
  for (uint64_t id : {A, B, C})
    h.ok(h.c.grant(id, 5000));
  h.ok(h.c.put("unrelated", "x"));

  auto first = h.ok(h.c.lock("job", A));
  CHECK(first.outcome.succeeded);
  CHECK(first.outcome.fence == h.sm.revision());
  CHECK(first.outcome.fence == 2);
  CHECK(hasEvent(first, Kind::LOCK_GRANTED, A, "job"));

  auto second = h.ok(h.c.lock("job", B));
  CHECK_FALSE(second.outcome.succeeded);
  CHECK(second.outcome.fence == 0);
  CHECK(h.sm.revision() == 2);  // queueing takes no revision
  auto third = h.ok(h.c.lock("job", C));
  CHECK_FALSE(third.outcome.succeeded);

  auto again = h.ok(h.c.lock("job", A));  // the holder's retry keeps its grant
  CHECK(again.outcome.succeeded);
  CHECK(again.outcome.fence == 2);
  h.ok(h.c.lock("job", B));  // and a waiter's retry does not queue it twice
  CHECK(h.sm.leases().lock("job")->waiters.size() == 2);

  // tryLock on a held lock fails and does not queue.
  const uint64_t D = makeLeaseId(0, 2);
  h.ok(h.c.grant(D, 5000));
  auto tried = h.ok(h.c.lock("job", D, "", false));
  CHECK_FALSE(tried.outcome.succeeded);
  CHECK(h.sm.leases().lock("job")->waiters.size() == 2);
  CHECK(h.sm.leases().locksOf(D).empty());

  // A lease that ends while holding passes the lock to the first waiter, at the end's revision.
  auto ended = h.ok(h.c.revoke(A));
  auto holder = h.sm.holder("job");
  REQUIRE(holder);
  CHECK(holder->lease == B);
  CHECK(holder->fence == ended.outcome.revision);
  CHECK(holder->fence > 2);
  CHECK(hasEvent(ended, Kind::LOCK_RELEASED, A, "job"));
  CHECK(hasEvent(ended, Kind::LOCK_GRANTED, B, "job"));

  // Unlock by the holder promotes the next; unlock of a waiter just leaves the queue.
  h.ok(h.c.lock("job", D));
  auto unlocked = h.ok(h.c.unlock("job", B));
  CHECK(h.sm.holder("job")->lease == C);
  CHECK(h.sm.holder("job")->fence == unlocked.outcome.revision);
  const uint64_t revision = h.sm.revision();
  auto left = h.ok(h.c.unlock("job", D));
  CHECK(hasEvent(left, Kind::WAITER_REMOVED, D, "job"));
  CHECK(h.sm.revision() == revision);
  CHECK(h.sm.leases().lock("job")->waiters.empty());

  // The last holder's unlock removes the lock.
  h.ok(h.c.unlock("job", C));
  CHECK_FALSE(h.sm.holder("job"));
  CHECK(h.sm.leases().lock("job") == nullptr);
  CHECK(h.sm.leases().lockCount() == 0);
}

TEST_CASE("a lease that ends leaves every queue it waits in, and its own pending locks") {
  LeaseHarness h;
  for (uint64_t id : {A, B, C})
    h.ok(h.c.grant(id, 5000));
  h.ok(h.c.lock("x", A));
  h.ok(h.c.lock("y", A));
  h.ok(h.c.lock("x", B));
  h.ok(h.c.lock("y", B));
  h.ok(h.c.lock("x", C));
  auto expired = h.ok(h.c.expire(B, 1));
  CHECK(hasEvent(expired, Kind::WAITER_REMOVED, B, "x"));
  CHECK(hasEvent(expired, Kind::WAITER_REMOVED, B, "y"));
  CHECK(h.sm.leases().lock("y")->waiters.empty());
  REQUIRE(h.sm.leases().lock("x")->waiters.size() == 1);
  CHECK(h.sm.leases().lock("x")->waiters[0].lease == C);
  CHECK(h.sm.leases().locksOf(B).empty());
  // A's end releases both locks at one revision; x passes to C, y is gone.
  auto ended = h.ok(h.c.revoke(A));
  CHECK(h.sm.holder("x")->lease == C);
  CHECK(h.sm.holder("x")->fence == ended.outcome.revision);
  CHECK_FALSE(h.sm.holder("y"));
}

TEST_CASE("fences of a lock strictly increase across grants") {
  LeaseHarness h;
  std::vector<uint64_t> fences;
  uint64_t counter = 0;
  for (int round = 0; round < 20; ++round) {
    const uint64_t holder = makeLeaseId(round % 3, ++counter);
    const uint64_t waiter = makeLeaseId((round + 1) % 3, ++counter);
    h.ok(h.c.grant(holder, 5000));
    h.ok(h.c.grant(waiter, 5000));
    auto got = h.ok(h.c.lock("leader", holder, "v" + std::to_string(round)));
    if (got.outcome.succeeded) fences.push_back(got.outcome.fence);
    h.ok(h.c.lock("leader", waiter));
    h.ok(h.c.put("noise", std::to_string(round)));
    // Alternate how the holder goes: revoke, expire, unlock.
    const uint64_t current = h.sm.holder("leader")->lease;
    AppliedCommand applied;
    if (round % 3 == 0) applied = h.ok(h.c.revoke(current));
    if (round % 3 == 1) applied = h.ok(h.c.expire(current, h.sm.lease(current)->epoch));
    if (round % 3 == 2) applied = h.ok(h.c.unlock("leader", current));
    for (const auto& event : applied.events)
      if (event.kind == Kind::LOCK_GRANTED) fences.push_back(event.fence);
  }
  REQUIRE(fences.size() >= 20);
  for (size_t i = 1; i < fences.size(); ++i)
    CHECK(fences[i - 1] < fences[i]);
}

TEST_CASE("elections: the holder's value, proclaim, holder info and checkFence") {
  LeaseHarness h;
  h.ok(h.c.grant(B, 5000, false, 555, 42));
  h.ok(h.c.grant(C, 5000));
  auto won = h.ok(h.c.lock("web", B, "10.0.0.1:80"));
  h.ok(h.c.lock("web", C, "10.0.0.2:80"));
  auto leader = h.sm.holder("web");
  REQUIRE(leader);
  CHECK(leader->lease == B);
  CHECK(leader->value == "10.0.0.1:80");
  CHECK(leader->fence == won.outcome.fence);
  CHECK(leader->holder == LeaseHolder{1, 555, 42});
  CHECK(h.sm.checkFence("web", won.outcome.fence));
  CHECK_FALSE(h.sm.checkFence("web", won.outcome.fence + 1));
  CHECK_FALSE(h.sm.checkFence("web", 0));
  CHECK_FALSE(h.sm.checkFence("other", won.outcome.fence));

  auto proclaimed = h.ok(h.c.proclaim("web", B, "10.0.0.1:8080"));
  CHECK(proclaimed.outcome.revision == won.outcome.revision + 1);
  CHECK(h.sm.holder("web")->value == "10.0.0.1:8080");
  CHECK(h.sm.holder("web")->fence == won.outcome.fence);
  CHECK(hasEvent(proclaimed, Kind::PROCLAIMED, B, "web"));

  const Fingerprint before = fingerprint(h.sm);
  CHECK(h.one(h.c.proclaim("web", C, "usurper")).outcome.code == StatusCode::NOT_FOUND);
  CHECK(h.one(h.c.proclaim("none", B, "x")).outcome.code == StatusCode::NOT_FOUND);
  CHECK(h.one(h.c.unlock("web", A)).outcome.code == StatusCode::NOT_FOUND);
  CHECK(h.one(h.c.lock("web", A)).outcome.code == StatusCode::NOT_FOUND);  // unknown lease
  CHECK(h.one(h.c.lock("", B)).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.one(h.c.lock(std::string(512, 'n'), B)).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(h.one(h.c.lock("web", 0)).outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(fingerprint(h.sm) == before);

  h.ok(h.c.unlock("web", B));  // resign
  CHECK_FALSE(h.sm.checkFence("web", won.outcome.fence));
  CHECK(h.sm.holder("web")->lease == C);
  CHECK(h.sm.holder("web")->value == "10.0.0.2:80");
}

TEST_CASE("a txn can require a current fence") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  h.ok(h.c.grant(B, 5000));
  const uint64_t fenceA = h.ok(h.c.lock("cfg-writer", A)).outcome.fence;
  h.ok(h.c.lock("cfg-writer", B));

  auto guarded = h.ok(h.c.fencedPut({{"cfg-writer", fenceA}}, "config", "by A"));
  CHECK(guarded.outcome.succeeded);
  CHECK(h.sm.get("config")->value == "by A");

  h.ok(h.c.revoke(A));
  const uint64_t fenceB = h.sm.holder("cfg-writer")->fence;
  auto stale = h.ok(h.c.fencedPut({{"cfg-writer", fenceA}}, "config", "late A"));
  CHECK_FALSE(stale.outcome.succeeded);
  CHECK(h.sm.get("config")->value == "else");
  CHECK(h.ok(h.c.fencedPut({{"cfg-writer", fenceB}}, "config", "by B")).outcome.succeeded);
  // Other ops compare the current fence (0 without a holder).
  CHECK(h.ok(h.c.fencedPut({{"cfg-writer", fenceA}}, "config", "x", 0, rpc::Compare::Op::GREATER))
            .outcome.succeeded);
  CHECK(h.ok(h.c.fencedPut({{"free", 0}}, "config", "x")).outcome.succeeded);
  CHECK_FALSE(h.ok(h.c.fencedPut({{"free", 1}}, "config", "x")).outcome.succeeded);
}

TEST_CASE("a retried duplicate is not applied again and reports no events") {
  LeaseHarness h;
  h.ok(h.c.grant(A, 5000));
  const std::string renew = h.c.renew({{A, 1}});
  h.ok(renew);
  auto again = h.one(renew);
  CHECK(again.duplicate);
  CHECK(again.events.empty());
  CHECK(h.sm.lease(A)->epoch == 2);
  const std::string revoke = h.c.revoke(A);
  CHECK_FALSE(h.ok(revoke).events.empty());
  auto revokedAgain = h.one(revoke);
  CHECK(revokedAgain.duplicate);
  CHECK(revokedAgain.events.empty());
}

// Builds some state with every kind of record.
void populate(LeaseHarness& h) {
  for (uint64_t id : {A, B, C})
    h.ok(h.c.grant(id, 5000 + id % 7, id == B));
  h.ok(h.c.put("svc/a", "1", A));
  h.ok(h.c.put("svc/b", "2", B));
  h.ok(h.c.put("plain", "3"));
  h.ok(h.c.lock("x", A, "va"));
  h.ok(h.c.lock("x", B, "vb"));
  h.ok(h.c.lock("x", C, "vc"));
  h.ok(h.c.lock("y", C));
  h.ok(h.c.renew({{B, 1}}));
  h.ok(h.c.checkpoint({{C, 1, 1234}}));
}

TEST_CASE("takeChanges carries leases and locks; a restore from them is the same state") {
  LeaseHarness h;
  populate(h);
  StateChanges changes = h.sm.takeChanges();
  CHECK(changes.leases.size() == 3);
  CHECK(changes.locks.size() == 2);
  CHECK_FALSE(h.sm.hasChanges());

  StateMachine restored;
  for (auto& [key, record] : changes.keys)
    restored.restoreKey(key, *record);
  for (auto& [member, session] : changes.sessions)
    restored.restoreSession(member, *session);
  // Locks before leases: restore order must not matter.
  for (auto& [name, encoded] : changes.locks)
    restored.restoreLock(*encoded);
  for (auto& [id, encoded] : changes.leases)
    restored.restoreLease(*encoded);
  restored.restoreApplied(changes.appliedSlot, changes.revision);
  CHECK_FALSE(restored.hasChanges());
  CHECK(restored.stateDigest() == h.sm.stateDigest());
  CHECK(restored.leases().digest() == restored.leases().recomputeDigest());
  CHECK(*restored.lease(C) == *h.sm.lease(C));
  CHECK(restored.holder("x")->value == "va");
  CHECK(restored.leases().lock("x")->waiters == h.sm.leases().lock("x")->waiters);

  // The derived indexes were rebuilt: ending A on both deletes its key and promotes B alike.
  LeaseHarness twin;
  twin.sm = std::move(restored);
  std::string revoke = h.c.revoke(A);
  auto original = h.one(revoke);
  auto copy = twin.one(revoke);
  CHECK(copy.outcome.deleted == 1);
  CHECK(copy.events == original.events);
  CHECK(twin.sm.holder("x")->lease == B);
  CHECK(twin.sm.stateDigest() == h.sm.stateDigest());
  CHECK(twin.sm.get("svc/a") == nullptr);

  CHECK_THROWS(StateMachine().restoreLease("not a lease"));
  CHECK_THROWS(StateMachine().restoreLock(encodeLock("z", Lock{})));  // neither holder nor waiter
}

TEST_CASE("the lease digest is kept up to date and does not depend on order") {
  LeaseHarness one;
  populate(one);
  CHECK(one.sm.leases().digest() == one.sm.leases().recomputeDigest());
  CHECK(one.sm.leases().digest() != 0);
  one.ok(one.c.revoke(A));
  one.ok(one.c.unlock("y", C));
  CHECK(one.sm.leases().digest() == one.sm.leases().recomputeDigest());

  // Same leases granted in the other order: same digest.
  LeaseHarness a, b;
  a.ok(a.c.grant(A, 5000));
  a.ok(a.c.grant(B, 6000));
  b.ok(b.c.grant(B, 6000));
  b.ok(b.c.grant(A, 5000));
  CHECK(a.sm.stateDigest() == b.sm.stateDigest());
  // A renewal changes it without a new revision.
  a.ok(a.c.renew({{A, 1}}));
  CHECK(a.sm.revision() == b.sm.revision());
  CHECK(a.sm.stateDigest() != b.sm.stateDigest());

  // Without leases or locks the digest is the map's alone (members of older versions agree).
  LeaseHarness empty;
  empty.ok(empty.c.put("k", "v"));
  CHECK(empty.sm.leases().digest() == 0);
  CHECK(empty.sm.stateDigest() == mixRevision(empty.sm.digest(), empty.sm.revision()));
}

TEST_CASE("validateRequest: lease TTLs outside the configured range are refused") {
  RequestLimits limits;
  limits.leaseTtlMinMs = 2000;
  limits.leaseTtlMaxMs = 60000;
  testing::Commands c;
  auto check = [&](const std::string& encoded) {
    auto words = kj::heapArray<capnp::word>(encoded.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), encoded.data(), encoded.size());
    capnp::FlatArrayMessageReader message(words);
    return validateRequest(message.getRoot<records::Command>(), limits);
  };
  CHECK_FALSE(check(c.grant(A, 2000)));
  CHECK_FALSE(check(c.grant(A, 60000)));
  auto low = check(c.grant(A, 1999));
  REQUIRE(low);
  CHECK(low->find("lease_ttl_min_ms") != std::string::npos);
  CHECK(check(c.grant(A, 60001)));
  CHECK_FALSE(check(c.lock("n", A, "v")));
  limits.maxValueBytes = 3;
  CHECK(check(c.lock("n", A, "four")));
  CHECK(check(c.proclaim("n", A, "four")));
  CHECK_FALSE(check(c.put("k", "v", A)));  // a put with a lease is checked at apply
}

// Random sequences of every lease, lock and key command, with invariants checked after each step
// and persistence checked along the way.
TEST_CASE("random lease and lock histories keep every invariant") {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    CAPTURE(seed);
    Prng prng(seed);
    LeaseHarness h;
    std::vector<uint64_t> ids;  // every id ever granted or tried
    uint64_t counters[3] = {0, 0, 0};
    std::map<std::string, uint64_t> lastFence;
    // What a store would hold: every takeChanges() folded in.
    std::map<std::string, KeyRecord> keys;
    std::map<MemberIndex, std::string> sessions;
    std::map<uint64_t, std::string> leases;
    std::map<std::string, std::string> locks;
    auto pickId = [&]() -> uint64_t {
      if (ids.empty() || prng.chance(0.05)) return makeLeaseId(1, 999999);  // unknown
      return ids[prng.uniform(0, ids.size())];
    };
    auto pickName = [&] { return "lock/" + std::to_string(prng.uniform(0, 4)); };
    for (int step = 0; step < 1500; ++step) {
      CAPTURE(step);
      std::string command;
      const uint64_t id = pickId();
      const Lease* lease = h.sm.lease(id);
      const uint64_t epoch = lease ? lease->epoch : 1;
      switch (prng.uniform(0, 11)) {
        case 0:
        case 1: {
          const MemberIndex member = static_cast<MemberIndex>(prng.uniform(0, 3));
          // Now and then an id that was used before: must be refused.
          const uint64_t counter =
              prng.chance(0.1) && counters[member] > 0 ? counters[member] : ++counters[member];
          const uint64_t fresh = makeLeaseId(member, counter);
          ids.push_back(fresh);
          command = h.c.grant(fresh, prng.uniform(1, 10000), prng.chance(0.5));
          break;
        }
        case 2: {
          std::vector<std::pair<uint64_t, uint64_t>> renewals;
          std::set<uint64_t> seen;
          for (int i = 0; i < 4; ++i) {
            const uint64_t r = pickId();
            const Lease* l = h.sm.lease(r);
            if (seen.insert(r).second) {
              renewals.emplace_back(r, l ? l->epoch - prng.uniform(0, l->epoch) : 1);
            }
          }
          command = h.c.renew(renewals);
          break;
        }
        case 3:
          command = h.c.revoke(id);
          break;
        case 4:
          command = h.c.expire(id, prng.chance(0.7) ? epoch : epoch + 1 - prng.uniform(1, 3));
          break;
        case 5:
          command = h.c.checkpoint(
              {{id, epoch, lease ? prng.uniform(0, lease->ttlMs + 2) : prng.uniform(0, 100)}});
          break;
        case 6:
        case 7:
          command = h.c.lock(pickName(), id, "v" + std::to_string(step), prng.chance(0.8));
          break;
        case 8:
          command = prng.chance(0.7) ? h.c.unlock(pickName(), id)
                                     : h.c.proclaim(pickName(), id, "p" + std::to_string(step));
          break;
        case 9:
          command =
              h.c.put("k/" + std::to_string(prng.uniform(0, 20)), "v", prng.chance(0.7) ? id : 0);
          break;
        case 10:
          command = h.c.fencedPut({{pickName(), prng.uniform(0, h.sm.revision() + 2)}},
                                  "k/" + std::to_string(prng.uniform(0, 20)), "t",
                                  prng.chance(0.5) ? id : 0);
          break;
      }
      const Fingerprint before = fingerprint(h.sm);
      auto applied = h.one(command);
      if (applied.outcome.code != StatusCode::OK) {
        REQUIRE(fingerprint(h.sm) == before);
        REQUIRE(applied.events.empty());
      }
      for (const auto& event : applied.events) {
        REQUIRE(event.revision == h.sm.revision());
        if (event.kind == Kind::LOCK_GRANTED) REQUIRE(event.fence == h.sm.revision());
      }

      // Invariants.
      REQUIRE(h.sm.leases().digest() == h.sm.leases().recomputeDigest());
      REQUIRE(h.sm.digest() == h.sm.recomputeDigest());
      REQUIRE_FALSE(h.sm.checkLeaseReferences());
      std::map<uint64_t, std::set<std::string, std::less<>>> attached;
      h.sm.forEachKey([&](std::string_view key, const KeyRecord& record) {
        if (record.lease != 0) attached[record.lease].emplace(key);
      });
      h.sm.leases().forEachLease([&](const Lease& l) {
        const auto* indexed = h.sm.leases().keysOf(l.id);
        const auto expected =
            attached.count(l.id) ? attached[l.id] : decltype(attached)::mapped_type{};
        REQUIRE((indexed ? *indexed : decltype(attached)::mapped_type{}) == expected);
        REQUIRE(l.remainingMs <= l.ttlMs);
        REQUIRE((l.id & LEASE_ID_COUNTER_MASK) <= h.sm.leaseCounter(leaseIdMember(l.id)));
      });
      h.sm.leases().forEachLock([&](std::string_view name, const Lock& lock) {
        REQUIRE(lock.holder);
        REQUIRE(h.sm.checkFence(name, lock.holder->fence));
        uint64_t& last = lastFence[std::string(name)];
        if (lock.holder->fence != last) {
          REQUIRE(lock.holder->fence > last);
          last = lock.holder->fence;
        }
        std::set<uint64_t> owners{lock.holder->lease};
        for (const auto& waiter : lock.waiters)
          REQUIRE(owners.insert(waiter.lease).second);  // each lease at most once per lock
      });

      // Fold the changes in, as a group commit would; now and then restart from them.
      StateChanges changes = h.sm.takeChanges();
      for (auto& [key, record] : changes.keys)
        record ? void(keys[key] = *record) : void(keys.erase(key));
      for (auto& [member, encoded] : changes.sessions)
        encoded ? void(sessions[member] = *encoded) : void(sessions.erase(member));
      for (auto& [leaseId, encoded] : changes.leases)
        encoded ? void(leases[leaseId] = *encoded) : void(leases.erase(leaseId));
      for (auto& [name, encoded] : changes.locks)
        encoded ? void(locks[name] = *encoded) : void(locks.erase(name));
      if (step % 250 == 249) {
        StateMachine restored;
        for (const auto& [key, record] : keys)
          restored.restoreKey(key, record);
        for (const auto& [member, encoded] : sessions)
          restored.restoreSession(member, encoded);
        for (const auto& [leaseId, encoded] : leases)
          restored.restoreLease(encoded);
        for (const auto& [name, encoded] : locks)
          restored.restoreLock(encoded);
        restored.restoreApplied(changes.appliedSlot, changes.revision);
        REQUIRE(restored.stateDigest() == h.sm.stateDigest());
        REQUIRE(restored.leases().lockCount() == h.sm.leases().lockCount());
        for (MemberIndex m = 0; m < 3; ++m)
          REQUIRE(restored.leaseCounter(m) == h.sm.leaseCounter(m));
        // Continue on the restored machine: whatever follows must behave the same.
        h.sm = std::move(restored);
      }
    }
  }
}

}  // namespace
}  // namespace synod::election
