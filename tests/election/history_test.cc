// The config map's history: what every revision changed, retention and compaction, reads at a
// past revision, and how it survives a restore and a snapshot install.
#include "election/history.h"

#include <capnp/message.h>
#include <doctest/doctest.h>

#include <map>
#include <random>

#include "election/snapshot.h"
#include "election/state_machine.h"
#include "lease_commands.h"

namespace synod::election {
namespace {

using testing::bytes;

// Commands the lease helpers do not build, from member 1 (their own sequence space).
class MoreCommands {
 public:
  std::string del(const std::string& key, const std::string& rangeEnd = "") {
    return build([&](records::Command::Builder c) {
      auto op = c.initDelete();
      op.setKey(bytes(key));
      op.setRangeEnd(bytes(rangeEnd));
    });
  }
  // Unconditional txn: puts then deletes, one revision.
  std::string txn(std::vector<std::pair<std::string, std::string>> puts,
                  std::vector<std::string> deletes) {
    return build([&](records::Command::Builder c) {
      auto ops = c.initTxn().initSuccess(static_cast<unsigned>(puts.size() + deletes.size()));
      unsigned i = 0;
      for (auto& [key, value] : puts) {
        auto put = ops[i++].initPut();
        put.setKey(bytes(key));
        put.setValue(bytes(value));
      }
      for (auto& key : deletes)
        ops[i++].initDelete().setKey(bytes(key));
    });
  }
  std::string compact(uint64_t revision) {
    return build([&](records::Command::Builder c) { c.initCompact().setRevision(revision); });
  }

 private:
  template <typename Fn>
  std::string build(Fn&& fill) {
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<records::Command>();
    auto id = root.initId();
    id.setMember(1);
    id.setIncarnation(1);
    id.setSequence(++sequence_);
    fill(root);
    return encodeCommand(message);
  }
  uint64_t sequence_ = 0;
};

struct Fixture : testing::LeaseHarness {
  MoreCommands m;
};

const RevisionChanges& revisionAt(const StateMachine& sm, uint64_t revision) {
  const auto& kept = sm.history().revisions();
  size_t i = sm.history().lowerBound(revision);
  REQUIRE(i < kept.size());
  REQUIRE(kept[i]->revision == revision);
  return *kept[i];
}

TEST_CASE("every revision's changes are recorded in order, with the previous state") {
  Fixture f;
  f.ok(f.c.put("a", "1"));                         // 1
  f.ok(f.c.put("a", "2"));                         // 2
  f.ok(f.m.txn({{"b", "x"}, {"c", "y"}}, {"a"}));  // 3: one revision for the whole txn
  f.ok(f.m.del("b", "d"));                         // 4: range delete of b and c
  f.ok(f.m.del("nothing"));                        // no revision
  REQUIRE(f.sm.revision() == 4);
  REQUIRE(f.sm.history().revisions().size() == 4);
  CHECK(f.sm.history().start() == 1);

  const auto& r1 = revisionAt(f.sm, 1);
  REQUIRE(r1.changes.size() == 1);
  CHECK(r1.changes[0].key == "a");
  CHECK(r1.changes[0].record->value == "1");
  CHECK(!r1.changes[0].prev);

  const auto& r2 = revisionAt(f.sm, 2);
  CHECK(r2.changes[0].record->version == 2);
  CHECK(r2.changes[0].record->createRevision == 1);
  CHECK(r2.changes[0].prev->value == "1");

  const auto& r3 = revisionAt(f.sm, 3);
  REQUIRE(r3.changes.size() == 3);
  CHECK(r3.changes[0].key == "b");
  CHECK(r3.changes[1].key == "c");
  CHECK(r3.changes[2].key == "a");
  CHECK(!r3.changes[2].record);
  CHECK(r3.changes[2].prev->value == "2");

  const auto& r4 = revisionAt(f.sm, 4);
  REQUIRE(r4.changes.size() == 2);
  CHECK(!r4.changes[0].record);
  CHECK(!r4.changes[1].record);
}

TEST_CASE("a lease's end deletes its keys at a revision of its own, in the history") {
  Fixture f;
  const uint64_t lease = (uint64_t{0} << 48) | 1;
  f.ok(f.c.grant(lease, 5000));          // revision unchanged (0)
  f.ok(f.c.put("eph/1", "a", lease));    // 1
  f.ok(f.c.put("eph/2", "b", lease));    // 2
  f.ok(f.c.put("keep", "c"));            // 3
  auto ended = f.ok(f.c.revoke(lease));  // 4
  CHECK(ended.outcome.revision == 4);
  const auto& r4 = revisionAt(f.sm, 4);
  REQUIRE(r4.changes.size() == 2);
  CHECK(r4.changes[0].key == "eph/1");
  CHECK(r4.changes[1].key == "eph/2");
  CHECK(!r4.changes[0].record);
  CHECK(r4.changes[0].prev->lease == lease);
}

TEST_CASE("retention keeps the last history_revisions revisions, changed keys or not") {
  Fixture f;
  f.sm.setHistoryLimits({3, 1 << 30});
  for (int i = 0; i < 5; ++i)
    f.ok(f.c.put("k", std::to_string(i)));  // revisions 1..5
  CHECK(f.sm.history().start() == 3);
  CHECK(f.sm.history().revisions().size() == 3);
  CHECK(f.sm.readableAt(2));
  CHECK(!f.sm.readableAt(1));
  const uint64_t lease = 1;
  f.ok(f.c.grant(lease, 5000));
  f.ok(f.c.lock("L", lease));  // revision 6, no key changed
  CHECK(f.sm.revision() == 6);
  CHECK(f.sm.history().start() == 4);
}

TEST_CASE("the byte bound drops the oldest revisions") {
  Fixture f;
  f.sm.setHistoryLimits({1000, 4096});
  for (int i = 0; i < 20; ++i)
    f.ok(f.c.put("k" + std::to_string(i), std::string(500, 'v')));
  CHECK(f.sm.history().bytes() <= 4096);
  CHECK(f.sm.history().start() > 1);
  CHECK(f.sm.history().revisions().front()->revision == f.sm.history().start());
  CHECK(f.sm.history().revisions().back()->revision == 20);
}

TEST_CASE("compact is a command: refused ahead of the map, creates no revision") {
  Fixture f;
  for (int i = 0; i < 5; ++i)
    f.ok(f.c.put("k", std::to_string(i)));
  auto ahead = f.one(f.m.compact(7));
  CHECK(ahead.outcome.code == StatusCode::INVALID_ARGUMENT);
  CHECK(f.sm.history().start() == 1);
  auto zero = f.one(f.m.compact(0));
  CHECK(zero.outcome.code == StatusCode::INVALID_ARGUMENT);
  auto done = f.ok(f.m.compact(4));
  CHECK(done.outcome.revision == 5);
  CHECK(f.sm.revision() == 5);
  CHECK(f.sm.history().start() == 4);
  CHECK(f.sm.history().revisions().size() == 2);
  f.ok(f.m.compact(2));  // already compacted: nothing changes
  CHECK(f.sm.history().start() == 4);
  f.ok(f.m.compact(6));  // the whole history
  CHECK(f.sm.history().revisions().empty());
  CHECK(f.sm.readableAt(5));
  CHECK(!f.sm.readableAt(4));
}

// Random puts, deletes, range deletes and txns; the map is copied after every revision. Every
// read at a kept revision must equal the copy of that revision.
TEST_CASE("reads at every kept revision equal the map as it was then") {
  Fixture f;
  f.sm.setHistoryLimits({60, 1 << 30});
  std::mt19937_64 random(7);
  std::map<uint64_t, std::map<std::string, KeyRecord>> past;
  auto snapshot = [&] {
    std::map<std::string, KeyRecord> now;
    f.sm.forEachKey([&](std::string_view key, const KeyRecord& r) { now[std::string(key)] = r; });
    past[f.sm.revision()] = now;
  };
  snapshot();
  auto key = [&] { return "k/" + std::to_string(random() % 12); };
  for (int i = 0; i < 200; ++i) {
    switch (random() % 4) {
      case 0:
      case 1:
        f.one(f.c.put(key(), std::to_string(i)));
        break;
      case 2: {
        std::string a = key(), b = key();
        if (a > b) std::swap(a, b);
        f.one(b == a ? f.m.del(a) : f.m.del(a, b));
        break;
      }
      case 3: {
        std::string a = key(), b = key();
        f.one(a == b ? f.m.txn({{a, "t"}}, {}) : f.m.txn({{a, "t"}}, {b}));
        break;
      }
    }
    snapshot();
  }
  REQUIRE(f.sm.revision() > 100);
  const uint64_t oldest = f.sm.history().start() - 1;
  CHECK(oldest == f.sm.revision() - 60);
  for (uint64_t revision = oldest; revision <= f.sm.revision(); ++revision) {
    INFO("revision ", revision);
    REQUIRE(f.sm.readableAt(revision));
    const auto& expected = past.at(revision);
    auto all = f.sm.listAt({"k/", true}, "", 1000, revision);
    REQUIRE(all.kvs.size() == expected.size());
    size_t i = 0;
    for (const auto& [k, record] : expected) {
      CHECK(all.kvs[i].first == k);
      CHECK(all.kvs[i].second == record);
      CHECK(f.sm.getAt(k, revision) == record);
      ++i;
    }
    // Paged: pages of 3, continuing after the last key.
    std::vector<std::string> paged;
    std::string after;
    for (;;) {
      auto page = f.sm.listAt({"k/", true}, after, 3, revision);
      for (auto& kv : page.kvs)
        paged.push_back(kv.first);
      if (!page.more) break;
      after = page.kvs.back().first;
    }
    CHECK(paged.size() == expected.size());
    for (int k = 0; k < 12; ++k) {
      std::string name = "k/" + std::to_string(k);
      if (!expected.count(name)) CHECK(!f.sm.getAt(name, revision));
    }
  }
}

TEST_CASE("takeChanges hands each revision over once; a restore gets the same history") {
  Fixture f;
  f.sm.setHistoryLimits({4, 1 << 30});
  f.ok(f.c.put("a", "1"));
  f.ok(f.c.put("b", "2"));
  auto first = f.sm.takeChanges();
  REQUIRE(first.history.size() == 2);
  CHECK(first.historyStart == 1);
  for (int i = 0; i < 4; ++i)
    f.ok(f.c.put("c", std::to_string(i)));  // revisions 3..6
  auto second = f.sm.takeChanges();
  REQUIRE(second.history.size() == 4);
  CHECK(second.history.front()->revision == 3);
  CHECK(second.historyStart == 3);
  CHECK(!f.sm.hasChanges());
  CHECK(f.sm.takeChanges().history.empty());

  // What a store would hold: revisions >= the start.
  std::vector<RevisionChanges> stored;
  for (auto& r : second.history)
    stored.push_back(*r);
  StateMachine restored;
  f.sm.forEachKey(
      [&](std::string_view k, const KeyRecord& r) { restored.restoreKey(std::string(k), r); });
  restored.restoreApplied(f.sm.appliedSlot(), f.sm.revision());
  restored.restoreHistory(second.historyStart, stored);
  CHECK(restored.history().start() == f.sm.history().start());
  CHECK(restored.listAt({"", true}, "", 100, 2).kvs.size() == 2);
  CHECK(restored.getAt("c", 4)->value == "1");

  StateMachine bad;
  bad.restoreApplied(6, 6);
  CHECK_THROWS_AS(bad.restoreHistory(8, {}), std::runtime_error);
  std::vector<RevisionChanges> outOfOrder{stored[1], stored[0]};
  CHECK_THROWS_AS(bad.restoreHistory(3, outOfOrder), std::runtime_error);
}

TEST_CASE("after a snapshot install the history starts at the snapshot's revision") {
  Fixture f;
  for (int i = 0; i < 6; ++i)
    f.ok(f.c.put("k" + std::to_string(i % 3), std::to_string(i)));
  auto chunks = encodeSnapshot(f.sm, 1 << 20);
  SnapshotAssembler assembler;
  for (auto& chunk : chunks)
    REQUIRE(!assembler.add(chunk, 511));
  StateMachine installed = assembler.take();
  CHECK(installed.revision() == 6);
  CHECK(installed.history().start() == 7);
  CHECK(installed.history().revisions().empty());
  CHECK(installed.readableAt(6));
  CHECK(!installed.readableAt(5));
  CHECK(installed.listAt({"k", true}, "", 10, 6).kvs.size() == 3);
  // It records from there on like any member.
  std::vector<AppliedCommand> out;
  installed.apply(installed.appliedSlot() + 1, Value{{f.c.put("k9", "x")}}, out);
  REQUIRE(installed.history().revisions().size() == 1);
  CHECK(installed.history().revisions()[0]->revision == 7);
  auto changes = installed.takeChanges();
  CHECK(changes.historyStart == 7);
  CHECK(changes.history.size() == 1);
}

}  // namespace
}  // namespace synod::election
