// The Store contract, run against both implementations.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "storage/lmdb_store.h"
#include "storage/memory_store.h"
#include "tests/election/lease_commands.h"
#include "tests/storage/temp_dir.h"

namespace synod::storage {
namespace {

using testing::TempDir;

struct LmdbHarness {
  TempDir dir;
  std::unique_ptr<LmdbStore> store;

  LmdbHarness() { reopen(); }
  Store& get() { return *store; }
  void reopen() {
    store.reset();
    store = LmdbStore::open({dir.sub("data"), "test-group", "n1"});
  }
};

struct MemoryHarness {
  MemoryStore store;

  Store& get() { return store; }
  void reopen() { store.restart(); }
};

std::vector<std::pair<std::string, KeyRecord>> allKeys(Store& store) {
  std::vector<std::pair<std::string, KeyRecord>> out;
  store.forEachKey([&](std::string_view key, KeyRecord&& record) {
    out.emplace_back(std::string(key), std::move(record));
  });
  return out;
}

std::vector<std::pair<MemberIndex, std::string>> allSessions(Store& store) {
  std::vector<std::pair<MemberIndex, std::string>> out;
  store.forEachSession([&](MemberIndex member, std::string_view encoded) {
    out.emplace_back(member, std::string(encoded));
  });
  return out;
}

std::vector<std::pair<uint64_t, std::string>> allLeases(Store& store) {
  std::vector<std::pair<uint64_t, std::string>> out;
  store.forEachLease(
      [&](uint64_t id, std::string_view encoded) { out.emplace_back(id, std::string(encoded)); });
  return out;
}

std::vector<std::pair<std::string, std::string>> allLocks(Store& store) {
  std::vector<std::pair<std::string, std::string>> out;
  store.forEachLock([&](std::string_view name, std::string_view encoded) {
    out.emplace_back(std::string(name), std::string(encoded));
  });
  return out;
}

std::vector<LogEntry> logFrom(Store& store, Slot from) {
  std::vector<LogEntry> out;
  store.forEachLogEntry(from, [&](LogEntry&& entry) { out.push_back(std::move(entry)); });
  return out;
}

std::vector<Slot> slotsFrom(Store& store, Slot from) {
  std::vector<Slot> out;
  for (const LogEntry& entry : logFrom(store, from))
    out.push_back(entry.slot);
  return out;
}

LogEntry entry(Slot slot, Ballot ballot, std::vector<std::string> commands) {
  return LogEntry{slot, ballot, {std::move(commands)}};
}

const std::string BINARY_KEY("\x00\xff key", 6);
const std::string BINARY_VALUE("\x00\x01\x02 value \xff", 11);

TEST_CASE_TEMPLATE("Store: everything committed survives a restart", H, LmdbHarness,
                   MemoryHarness) {
  H harness;
  const StartState& first = harness.get().startState();
  CHECK(first.fresh);
  CHECK(first.incarnation == 1);
  CHECK(first.promised.isZero());
  CHECK(first.appliedSlot == 0);
  CHECK(first.revision == 0);
  CHECK(allKeys(harness.get()).empty());
  CHECK(logFrom(harness.get(), 0).empty());

  WriteBatch batch;
  batch.promised = Ballot{3, 1};
  for (Slot s = 1; s <= 5; ++s) {
    batch.accepted.push_back(entry(s, {3, 1}, {"cmd" + std::to_string(s), BINARY_VALUE}));
  }
  batch.accepted.push_back(entry(6, {3, 1}, {}));  // a no-op
  batch.applied = {{2, 7}};
  batch.putKey("a", {"alpha", 1, 5, 3, 42});
  batch.putKey(BINARY_KEY, {BINARY_VALUE, 2, 2, 1, 0});
  batch.putKey("c", {"", 3, 3, 1, 0});
  batch.putKey("\xff high byte", {"h", 4, 4, 1, 0});  // sorts after ASCII: bytes are unsigned
  batch.sessions[0] = std::string("session of member 0");
  batch.sessions[2] = BINARY_VALUE;
  harness.get().commit(batch);

  WriteBatch second;
  second.promised = Ballot{4, 2};
  second.dropLogThrough = 2;
  second.accepted.push_back(entry(4, {4, 2}, {"replaced"}));
  second.accepted.push_back(entry(8, {4, 2}, {"after a hole"}));
  second.applied = {{3, 9}};
  second.deleteKey(BINARY_KEY);
  second.putKey("c", {"see", 3, 9, 2, 0});
  second.deleteKey("never-existed");
  second.sessions[2] = std::nullopt;
  second.sessions[7] = std::string("seven");
  harness.get().commit(second);

  harness.reopen();
  Store& store = harness.get();
  const StartState& start = store.startState();
  CHECK_FALSE(start.fresh);
  CHECK(start.incarnation == 2);
  CHECK(start.promised == Ballot{4, 2});
  CHECK(start.appliedSlot == 3);
  CHECK(start.revision == 9);

  std::vector<std::pair<std::string, KeyRecord>> expectedKeys = {
      {"a", {"alpha", 1, 5, 3, 42}},
      {"c", {"see", 3, 9, 2, 0}},
      {"\xff high byte", {"h", 4, 4, 1, 0}},
  };
  CHECK(allKeys(store) == expectedKeys);

  std::vector<std::pair<MemberIndex, std::string>> expectedSessions = {
      {0, "session of member 0"},
      {7, "seven"},
  };
  CHECK(allSessions(store) == expectedSessions);

  std::vector<LogEntry> expectedLog = {
      entry(3, {3, 1}, {"cmd3", BINARY_VALUE}), entry(4, {4, 2}, {"replaced"}),
      entry(5, {3, 1}, {"cmd5", BINARY_VALUE}), entry(6, {3, 1}, {}),
      entry(8, {4, 2}, {"after a hole"}),
  };
  CHECK(logFrom(store, 0) == expectedLog);
  CHECK(slotsFrom(store, 5) == std::vector<Slot>{5, 6, 8});
  CHECK(slotsFrom(store, 7) == std::vector<Slot>{8});
  CHECK(slotsFrom(store, 9).empty());

  SUBCASE("a drop in the same batch as an accept wins over it") {
    WriteBatch batch3;
    batch3.accepted.push_back(entry(9, {4, 2}, {"x"}));
    batch3.accepted.push_back(entry(10, {4, 2}, {"y"}));
    batch3.dropLogThrough = 9;
    store.commit(batch3);
    CHECK(slotsFrom(store, 0) == std::vector<Slot>{10});
  }
  SUBCASE("dropping past the end empties the log") {
    WriteBatch batch3;
    batch3.dropLogThrough = 1000;
    store.commit(batch3);
    CHECK(logFrom(store, 0).empty());
  }
  SUBCASE("slots order numerically, not by their decimal text") {
    WriteBatch batch3;
    batch3.accepted.push_back(entry(256, {4, 2}, {}));
    batch3.accepted.push_back(entry(0xFFFFFFFFFFFFFFFF, {4, 2}, {}));
    batch3.accepted.push_back(entry(255, {4, 2}, {}));
    store.commit(batch3);
    CHECK(slotsFrom(store, 9) == std::vector<Slot>{255, 256, 0xFFFFFFFFFFFFFFFF});
  }
}

TEST_CASE_TEMPLATE("Store: leases and locks survive a restart; later batches replace and delete", H,
                   LmdbHarness, MemoryHarness) {
  H harness;
  const uint64_t big = 0xfedc'ba98'7654'3210ull;  // ids sort numerically, not by their low byte
  WriteBatch batch;
  batch.leases[big] = std::string("lease big");
  batch.leases[0x100] = BINARY_VALUE;
  batch.leases[2] = std::string("lease 2");
  batch.locks["job"] = std::string("lock job");
  batch.locks[BINARY_KEY] = BINARY_VALUE;
  batch.locks["\xff last"] = std::string("lock ff");
  harness.get().commit(batch);

  WriteBatch second;
  second.leases[2] = std::nullopt;
  second.leases[0x100] = std::string("renewed");
  second.leases[77] = std::nullopt;  // never existed
  second.locks["job"] = std::nullopt;
  second.locks[BINARY_KEY] = std::string("passed on");
  harness.get().commit(second);

  harness.reopen();
  Store& store = harness.get();
  CHECK(allLeases(store) ==
        std::vector<std::pair<uint64_t, std::string>>{{0x100, "renewed"}, {big, "lease big"}});
  CHECK(allLocks(store) == std::vector<std::pair<std::string, std::string>>{
                               {BINARY_KEY, "passed on"}, {"\xff last", "lock ff"}});
}

// What a member does with the state machine's changes at each group commit, and at start-up.
void persist(election::StateMachine& sm, Store& store) {
  election::StateChanges changes = sm.takeChanges();
  WriteBatch batch;
  batch.keys = std::move(changes.keys);
  batch.sessions = std::move(changes.sessions);
  batch.leases = std::move(changes.leases);
  batch.locks = std::move(changes.locks);
  batch.applied = std::make_pair(changes.appliedSlot, changes.revision);
  store.commit(batch);
}

election::StateMachine restore(Store& store) {
  election::StateMachine sm;
  store.forEachKey([&](std::string_view key, KeyRecord&& record) {
    sm.restoreKey(std::string(key), std::move(record));
  });
  store.forEachSession(
      [&](MemberIndex member, std::string_view encoded) { sm.restoreSession(member, encoded); });
  store.forEachLease([&](uint64_t, std::string_view encoded) { sm.restoreLease(encoded); });
  store.forEachLock([&](std::string_view, std::string_view encoded) { sm.restoreLock(encoded); });
  sm.restoreApplied(store.startState().appliedSlot, store.startState().revision);
  return sm;
}

TEST_CASE_TEMPLATE("Store: a state machine's leases and locks are restored at start-up", H,
                   LmdbHarness, MemoryHarness) {
  using election::makeLeaseId;
  H harness;
  election::testing::LeaseHarness h;
  const uint64_t a = makeLeaseId(0, 1), b = makeLeaseId(1, 1), c = makeLeaseId(2, 1);
  for (uint64_t id : {a, b, c})
    h.ok(h.c.grant(id, 4000));
  h.ok(h.c.put("svc/a", "1", a));
  h.ok(h.c.lock("x", a, "va"));
  h.ok(h.c.lock("x", b, "vb"));
  persist(h.sm, harness.get());
  h.ok(h.c.lock("x", c, "vc"));
  h.ok(h.c.renew({{b, 1}}));
  h.ok(h.c.checkpoint({{c, 1, 1500}}));
  persist(h.sm, harness.get());

  harness.reopen();
  election::testing::LeaseHarness twin;
  twin.sm = restore(harness.get());
  CHECK_FALSE(twin.sm.checkLeaseReferences());
  CHECK(twin.sm.stateDigest() == h.sm.stateDigest());
  CHECK(*twin.sm.lease(b) == *h.sm.lease(b));
  CHECK(twin.sm.lease(c)->remainingMs == 1500);
  CHECK(twin.sm.holder("x")->lease == a);

  // Both end lease a alike; its deletion reaches the store.
  const std::string revoke = h.c.revoke(a);
  auto original = h.one(revoke);
  auto restored = twin.one(revoke);
  CHECK(restored.events == original.events);
  CHECK(twin.sm.stateDigest() == h.sm.stateDigest());
  persist(twin.sm, harness.get());
  harness.reopen();
  election::StateMachine again = restore(harness.get());
  CHECK(again.lease(a) == nullptr);
  CHECK(again.get("svc/a") == nullptr);
  CHECK(again.holder("x")->lease == b);
  CHECK(again.stateDigest() == h.sm.stateDigest());
}

std::vector<election::RevisionChanges> allHistory(Store& store) {
  std::vector<election::RevisionChanges> out;
  store.forEachHistory([&](election::RevisionChanges&& r) { out.push_back(std::move(r)); });
  return out;
}

void persistWithHistory(election::StateMachine& sm, Store& store) {
  election::StateChanges changes = sm.takeChanges();
  WriteBatch batch;
  batch.keys = std::move(changes.keys);
  batch.sessions = std::move(changes.sessions);
  batch.applied = std::make_pair(changes.appliedSlot, changes.revision);
  batch.history = std::move(changes.history);
  batch.historyStart = changes.historyStart;
  store.commit(batch);
}

TEST_CASE_TEMPLATE("Store: history revisions and their start survive a restart", H, LmdbHarness,
                   MemoryHarness) {
  H harness;
  CHECK(harness.get().startState().historyStart == 0);
  election::testing::LeaseHarness h;
  h.sm.setHistoryLimits({5, 1 << 30});
  h.ok(h.c.put(BINARY_KEY, BINARY_VALUE));
  h.ok(h.c.put("a", "1"));
  persistWithHistory(h.sm, harness.get());
  h.ok(h.c.put("a", "2"));
  h.ok(h.c.fencedPut({}, "b", "x"));
  persistWithHistory(h.sm, harness.get());
  harness.reopen();
  CHECK(harness.get().startState().historyStart == 1);
  auto stored = allHistory(harness.get());
  REQUIRE(stored.size() == 4);
  for (size_t i = 0; i < stored.size(); ++i)
    CHECK(stored[i] == *h.sm.history().revisions()[i]);
  CHECK(stored[0].changes[0].key == BINARY_KEY);
  CHECK(stored[2].changes[0].prev->value == "1");

  // Retention moves the start: older revisions leave the store in the same batch.
  for (int i = 0; i < 4; ++i)
    h.ok(h.c.put("c", std::to_string(i)));  // revisions 5..8: keeps 4..8
  persistWithHistory(h.sm, harness.get());
  harness.reopen();
  CHECK(harness.get().startState().historyStart == 4);
  stored = allHistory(harness.get());
  REQUIRE(stored.size() == 5);
  CHECK(stored.front().revision == 4);

  election::StateMachine twin = restore(harness.get());
  twin.restoreHistory(harness.get().startState().historyStart, allHistory(harness.get()));
  CHECK(twin.history().start() == 4);
  CHECK(twin.getAt("a", 3)->value == "2");
  CHECK(twin.getAt("c", 5)->value == "0");

  // A snapshot install replaces the history with nothing, starting after its revision.
  WriteBatch install;
  install.replaceState = true;
  install.applied = std::make_pair(Slot{100}, uint64_t{50});
  install.historyStart = 51;
  harness.get().commit(install);
  harness.reopen();
  CHECK(allHistory(harness.get()).empty());
  CHECK(harness.get().startState().historyStart == 51);

  WriteBatch bad;
  bad.historyStart = 0;
  CHECK_THROWS_AS(harness.get().commit(bad), InvalidBatchError);
}

TEST_CASE_TEMPLATE("Store: the incarnation grows with every start and is never reused", H,
                   LmdbHarness, MemoryHarness) {
  H harness;
  for (uint64_t expected = 1; expected <= 4; ++expected) {
    CHECK(harness.get().startState().incarnation == expected);
    CHECK(harness.get().startState().fresh == (expected == 1));
    harness.reopen();
  }
}

TEST_CASE_TEMPLATE("Store: a store created empty is recovering until a batch says recovered", H,
                   LmdbHarness, MemoryHarness) {
  H harness;
  CHECK(harness.get().startState().recovering);
  // A restart before the end of recovery recovers again.
  WriteBatch vote;
  vote.promised = Ballot{3, 1};
  harness.get().commit(vote);
  harness.reopen();
  CHECK(harness.get().startState().recovering);
  WriteBatch done;
  done.recovered = true;
  CHECK_FALSE(done.empty());
  harness.get().commit(done);
  harness.reopen();
  CHECK_FALSE(harness.get().startState().recovering);
  CHECK(harness.get().startState().promised == Ballot{3, 1});
  harness.reopen();
  CHECK_FALSE(harness.get().startState().recovering);
}

TEST_CASE_TEMPLATE("Store: replaceState swaps the whole map and sessions in one batch", H,
                   LmdbHarness, MemoryHarness) {
  H harness;
  Store& store = harness.get();
  WriteBatch before;
  before.putKey("a", KeyRecord{"1", 1, 1, 1, 0});
  before.putKey("b", KeyRecord{"2", 2, 2, 1, 0});
  before.sessions[1] = std::string("session-1");
  before.sessions[2] = std::string("session-2");
  before.leases[5] = std::string("lease-5");
  before.leases[6] = std::string("lease-6");
  before.locks["l1"] = std::string("lock-1");
  before.accepted.push_back(entry(1, {1, 0}, {"x"}));
  before.accepted.push_back(entry(2, {1, 0}, {"y"}));
  before.accepted.push_back(entry(9, {1, 0}, {"z"}));
  before.applied = std::make_pair(Slot{2}, uint64_t{2});
  store.commit(before);

  WriteBatch snapshot;
  snapshot.replaceState = true;
  snapshot.putKey("c", KeyRecord{"3", 7, 7, 1, 0});
  snapshot.sessions[2] = std::string("session-2-new");
  snapshot.leases[6] = std::string("lease-6-new");
  snapshot.locks["l2"] = std::string("lock-2");
  snapshot.applied = std::make_pair(Slot{8}, uint64_t{7});
  snapshot.dropLogThrough = 8;
  store.commit(snapshot);
  harness.reopen();
  Store& after = harness.get();
  auto keys = allKeys(after);
  REQUIRE(keys.size() == 1);
  CHECK(keys[0].first == "c");
  auto sessions = allSessions(after);
  REQUIRE(sessions.size() == 1);
  CHECK(sessions[0] == std::make_pair(MemberIndex{2}, std::string("session-2-new")));
  CHECK(allLeases(after) ==
        std::vector<std::pair<uint64_t, std::string>>{{6, std::string("lease-6-new")}});
  CHECK(allLocks(after) ==
        std::vector<std::pair<std::string, std::string>>{{"l2", std::string("lock-2")}});
  CHECK(after.startState().appliedSlot == 8);
  CHECK(after.startState().revision == 7);
  CHECK(slotsFrom(after, 0) == std::vector<Slot>{9});  // the vote above the snapshot stays
}

TEST_CASE("LmdbStore: a store created empty starts at firstIncarnation, then counts up") {
  TempDir dir;
  LmdbOptions options{dir.sub("data"), "test-group", "n1"};
  options.firstIncarnation = 1'700'000'000'000'000;
  CHECK(LmdbStore::open(options)->startState().incarnation == 1'700'000'000'000'000);
  // Later starts count up from what is stored, whatever firstIncarnation says now.
  options.firstIncarnation = 5;
  CHECK(LmdbStore::open(options)->startState().incarnation == 1'700'000'000'000'001);
}

TEST_CASE_TEMPLATE("Store: a refused batch changes nothing", H, LmdbHarness, MemoryHarness) {
  H harness;
  WriteBatch good;
  good.promised = Ballot{1, 0};
  good.putKey("kept", {"v", 1, 1, 1, 0});
  harness.get().commit(good);

  WriteBatch bad;
  bad.promised = Ballot{9, 9};
  bad.applied = {{5, 5}};
  bad.accepted.push_back(entry(1, {9, 9}, {"x"}));
  bad.dropLogThrough = 100;
  bad.putKey("aaa-valid-and-first", {"v", 2, 2, 1, 0});
  bad.deleteKey("kept");
  bad.sessions[1] = std::string("s");
  bad.leases[3] = std::string("lease");
  bad.locks["aaa"] = std::string("lock");

  std::string expected;
  SUBCASE("empty key") {
    bad.putKey("", {"v", 2, 2, 1, 0});
    expected = "empty key";
  }
  SUBCASE("key longer than LMDB allows") {
    bad.putKey("zzz" + std::string(MAX_KEY_BYTES - 2, 'k'), {"v", 2, 2, 1, 0});
    expected = "bytes starting \"zzzk";
  }
  SUBCASE("deleting an over-long key") {
    bad.deleteKey("zzz" + std::string(MAX_KEY_BYTES, 'k'));
    expected = "longer than the limit of 511 bytes";
  }
  SUBCASE("empty lock name") {
    bad.locks[""] = std::string("l");
    expected = "empty lock name";
  }
  SUBCASE("lock name longer than LMDB allows") {
    bad.locks[std::string(MAX_KEY_BYTES + 1, 'n')] = std::nullopt;
    expected = "lock name of 512 bytes";
  }
  SUBCASE("lease id 0") {
    bad.leases[0] = std::string("l");
    expected = "lease id 0";
  }
  SUBCASE("log slot 0") {
    bad.accepted.push_back(entry(0, {9, 9}, {"x"}));
    expected = "slot 0";
  }
  try {
    harness.get().commit(bad);
    FAIL("the batch was accepted");
  } catch (const InvalidBatchError& e) {
    CHECK(std::string(e.what()).find(expected) != std::string::npos);
  }

  harness.reopen();
  Store& store = harness.get();
  CHECK(store.startState().promised == Ballot{1, 0});
  CHECK(store.startState().appliedSlot == 0);
  CHECK(allKeys(store) ==
        std::vector<std::pair<std::string, KeyRecord>>{{"kept", {"v", 1, 1, 1, 0}}});
  CHECK(allSessions(store).empty());
  CHECK(allLeases(store).empty());
  CHECK(allLocks(store).empty());
  CHECK(logFrom(store, 0).empty());

  // The longest allowed key is fine.
  WriteBatch longest;
  longest.putKey(std::string(MAX_KEY_BYTES, 'k'), {"v", 3, 3, 1, 0});
  store.commit(longest);
  CHECK(allKeys(store).size() == 2);
}

TEST_CASE_TEMPLATE("Store: usedBytes grows with data and an empty batch is fine", H, LmdbHarness,
                   MemoryHarness) {
  H harness;
  Store& store = harness.get();
  uint64_t before = store.usedBytes();
  store.commit(WriteBatch{});
  WriteBatch batch;
  for (int i = 0; i < 100; ++i)
    batch.putKey("key" + std::to_string(i), {std::string(1000, 'v'), 1, 1, 1, 0});
  store.commit(batch);
  uint64_t after = store.usedBytes();
  MESSAGE("usedBytes " << before << " -> " << after);
  CHECK(after >= before + 100 * 1000);
}

}  // namespace
}  // namespace synod::storage
