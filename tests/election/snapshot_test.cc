// Snapshots of the state machine: encoding in bounded chunks, assembly, and refusal of every
// malformed or mismatched chunk.
#include "election/snapshot.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/election/lease_commands.h"

namespace synod::election {
namespace {

std::string putCommand(uint32_t member, uint64_t sequence, const std::string& key,
                       const std::string& value) {
  capnp::MallocMessageBuilder message;
  auto command = message.initRoot<records::Command>();
  auto id = command.initId();
  id.setMember(member);
  id.setIncarnation(1);
  id.setSequence(sequence);
  auto put = command.initPut();
  put.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
  put.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
  return encodeCommand(message);
}

// A state machine with `keys` keys of `valueBytes` each, applied over several slots by two members.
StateMachine filled(size_t keys, size_t valueBytes) {
  StateMachine state;
  std::vector<AppliedCommand> out;
  Slot slot = 0;
  for (size_t i = 0; i < keys; i += 10) {
    Value value;
    for (size_t k = i; k < std::min(keys, i + 10); ++k) {
      value.commands.push_back(
          putCommand(static_cast<uint32_t>(k % 2), k + 1, "key/" + std::to_string(100000 + k),
                     std::string(valueBytes, static_cast<char>('a' + k % 26))));
    }
    state.apply(++slot, value, out);
  }
  return state;
}

std::vector<std::pair<std::string, KeyRecord>> keysOf(const StateMachine& state) {
  std::vector<std::pair<std::string, KeyRecord>> out;
  state.forEachKey(
      [&](std::string_view key, const KeyRecord& record) { out.emplace_back(key, record); });
  return out;
}

std::vector<std::pair<MemberIndex, std::string>> sessionsOf(const StateMachine& state) {
  std::vector<std::pair<MemberIndex, std::string>> out;
  state.forEachSession(
      [&](MemberIndex member, std::string_view encoded) { out.emplace_back(member, encoded); });
  return out;
}

TEST_CASE("a snapshot in bounded chunks assembles into the same state") {
  StateMachine source = filled(2000, 300);
  auto chunks = encodeSnapshot(source, 64 << 10);
  CHECK(chunks.size() > 5);
  for (const auto& chunk : chunks)
    CHECK(chunk.size() < (64 << 10) + 4096);
  SnapshotAssembler assembler;
  for (const auto& chunk : chunks) {
    CHECK_FALSE(assembler.complete());
    auto problem = assembler.add(chunk, 511);
    REQUIRE_MESSAGE(!problem, *problem);
  }
  REQUIRE(assembler.complete());
  CHECK(assembler.slot() == source.appliedSlot());
  StateMachine copy = assembler.take();
  CHECK(copy.appliedSlot() == source.appliedSlot());
  CHECK(copy.revision() == source.revision());
  CHECK(keysOf(copy) == keysOf(source));
  CHECK(sessionsOf(copy) == sessionsOf(source));
  CHECK_FALSE(copy.hasChanges());

  // The copy decides duplicates like the source: a retried command is not applied again.
  std::vector<AppliedCommand> a, b;
  Value retry{{putCommand(1, 2, "key/100001", "changed")}};
  source.apply(source.appliedSlot() + 1, retry, a);
  copy.apply(copy.appliedSlot() + 1, retry, b);
  REQUIRE(a.size() == 1);
  REQUIRE(b.size() == 1);
  CHECK(a[0].duplicate);
  CHECK(b[0].duplicate);
  CHECK(keysOf(copy) == keysOf(source));
}

TEST_CASE("an empty state is one chunk") {
  StateMachine empty;
  empty.restoreApplied(5, 0);
  auto chunks = encodeSnapshot(empty, 1 << 20);
  REQUIRE(chunks.size() == 1);
  SnapshotAssembler assembler;
  CHECK_FALSE(assembler.add(chunks[0], 511));
  CHECK(assembler.complete());
  CHECK(assembler.take().keyCount() == 0);
}

TEST_CASE("chunks that do not fit are refused with the reason") {
  StateMachine source = filled(300, 500);
  auto chunks = encodeSnapshot(source, 16 << 10);
  REQUIRE(chunks.size() >= 3);
  StateMachine other = filled(310, 500);
  auto otherChunks = encodeSnapshot(other, 16 << 10);

  auto refusal = [](std::vector<std::string> sequence) -> std::string {
    SnapshotAssembler assembler;
    for (const auto& chunk : sequence) {
      if (auto problem = assembler.add(chunk, 511)) return *problem;
    }
    return assembler.complete() ? "" : "incomplete";
  };
  CHECK(refusal(chunks).empty());
  CHECK(refusal({chunks[1]}).find("chunk 1 where 0") != std::string::npos);
  CHECK(refusal({chunks[0], chunks[0]}).find("chunk 0 where 1") != std::string::npos);
  CHECK(refusal({chunks[0], otherChunks[1]}).find("another snapshot") != std::string::npos);
  CHECK(refusal({"garbage that is no message"}).find("does not decode") != std::string::npos);
  CHECK(refusal({std::string()}).size() > 0);
  // Keys longer than this member allows.
  SnapshotAssembler strict;
  auto problem = strict.add(chunks[0], 4);
  REQUIRE(problem);
  CHECK(problem->find("key of") != std::string::npos);
  // Truncated chunk.
  SnapshotAssembler truncated;
  CHECK(truncated.add(chunks[0].substr(0, chunks[0].size() / 2), 511));
}

// A state with many leases (some with keys, checkpoints, renewals) and locks with waiters.
void withLeases(testing::LeaseHarness& h, int leases) {
  for (int i = 1; i <= leases; ++i) {
    const uint64_t id = makeLeaseId(i % 3, static_cast<uint64_t>(i));
    h.ok(h.c.grant(id, 1000 + i, i % 2 == 0, 100 + i, 1000));
    h.ok(h.c.put("svc/" + std::to_string(i), "addr", id));
    if (i % 3 == 0) h.ok(h.c.renew({{id, 1}}));
    if (i % 4 == 0) h.ok(h.c.checkpoint({{id, h.sm.lease(id)->epoch, 500}}));
    h.ok(h.c.lock("lock/" + std::to_string(i % 10), id, "v" + std::to_string(i)));
  }
  h.ok(h.c.put("plain", "x"));
}

StateMachine assemble(const std::vector<std::string>& chunks) {
  SnapshotAssembler assembler;
  for (const auto& chunk : chunks) {
    auto problem = assembler.add(chunk, 511);
    REQUIRE_MESSAGE(!problem, *problem);
  }
  REQUIRE(assembler.complete());
  return assembler.take();
}

TEST_CASE("a snapshot carries leases and locks, spread over bounded chunks") {
  testing::LeaseHarness h;
  withLeases(h, 300);
  auto chunks = encodeSnapshot(h.sm, 4096);
  CHECK(chunks.size() > 10);
  size_t chunksWithLeases = 0, chunksWithLocks = 0;
  for (const auto& chunk : chunks) {
    CHECK(chunk.size() < 4096 + 2048);
    auto words = kj::heapArray<capnp::word>(chunk.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), chunk.data(), chunk.size());
    capnp::FlatArrayMessageReader message(words);
    auto root = message.getRoot<records::SnapshotChunk>();
    chunksWithLeases += root.getLeases().size() > 0;
    chunksWithLocks += root.getLocks().size() > 0;
  }
  CHECK(chunksWithLeases > 1);
  CHECK(chunksWithLocks >= 1);

  StateMachine copy = assemble(chunks);
  CHECK(copy.stateDigest() == h.sm.stateDigest());
  CHECK(copy.leases().leaseCount() == 300);
  CHECK(copy.leases().lockCount() == 10);
  CHECK(copy.leases().digest() == h.sm.leases().digest());
  CHECK(*copy.lease(makeLeaseId(0, 12)) == *h.sm.lease(makeLeaseId(0, 12)));
  REQUIRE(copy.leases().lock("lock/3") != nullptr);
  CHECK(copy.leases().lock("lock/3")->waiters == h.sm.leases().lock("lock/3")->waiters);
  CHECK_FALSE(copy.hasChanges());

  // The copy behaves the same: ending a lease deletes its key and passes its lock on.
  const uint64_t holder = h.sm.holder("lock/3")->lease;
  testing::LeaseHarness twin;
  twin.sm = std::move(copy);
  const std::string revoke = h.c.revoke(holder);
  auto original = h.one(revoke);
  auto replayed = twin.one(revoke);
  CHECK(replayed.outcome.deleted == 1);
  CHECK(replayed.events == original.events);
  CHECK(twin.sm.stateDigest() == h.sm.stateDigest());
}

// A one-chunk snapshot with the given leases and locks (encoded records) and no keys.
std::string chunkWith(std::vector<std::string> leases, std::vector<std::string> locks,
                      std::vector<std::pair<std::string, uint64_t>> keys = {}) {
  capnp::MallocMessageBuilder message;
  auto chunk = message.initRoot<records::SnapshotChunk>();
  chunk.setSlot(5);
  chunk.setRevision(9);
  chunk.setCount(1);
  chunk.setKeyCount(keys.size());
  auto keyList = chunk.initKeys(static_cast<unsigned>(keys.size()));
  for (size_t i = 0; i < keys.size(); ++i) {
    keyList[i].setKey(testing::bytes(keys[i].first));
    auto record = keyList[i].initRecord();
    record.setCreateRevision(1);
    record.setModRevision(1);
    record.setVersion(1);
    record.setLease(keys[i].second);
  }
  auto leaseList = chunk.initLeases(static_cast<unsigned>(leases.size()));
  for (size_t i = 0; i < leases.size(); ++i)
    leaseList.set(static_cast<unsigned>(i), testing::bytes(leases[i]));
  auto lockList = chunk.initLocks(static_cast<unsigned>(locks.size()));
  for (size_t i = 0; i < locks.size(); ++i)
    lockList.set(static_cast<unsigned>(i), testing::bytes(locks[i]));
  return encodeCommand(message);
}

TEST_CASE("snapshot leases and locks that do not fit are refused") {
  auto lease = [](uint64_t counter) {
    Lease l;
    l.id = makeLeaseId(1, counter);
    l.ttlMs = 1000;
    l.remainingMs = 1000;
    l.holder.member = 1;
    return encodeLease(l);
  };
  auto lock = [](const std::string& name, uint64_t leaseId) {
    Lock l;
    l.holder = LockOwner{leaseId, "", 3};
    return encodeLock(name, l);
  };
  auto problem = [](const std::string& chunk) {
    SnapshotAssembler assembler;
    auto refused = assembler.add(chunk, 511);
    return refused ? *refused : std::string();
  };
  const uint64_t L1 = makeLeaseId(1, 1);
  CHECK(problem(chunkWith({lease(1), lease(2)}, {lock("a", L1), lock("b", L1)},
                          {{"k", makeLeaseId(1, 2)}})) == "");
  CHECK(problem(chunkWith({lease(2), lease(1)}, {})) == "snapshot leases out of order");
  CHECK(problem(chunkWith({lease(1)}, {lock("b", L1), lock("a", L1)})) ==
        "snapshot locks out of order");
  CHECK(problem(chunkWith({lease(1)}, {lock("a", makeLeaseId(1, 9))})).find("does not exist") !=
        std::string::npos);
  CHECK(problem(chunkWith({lease(1)}, {}, {{"k", makeLeaseId(1, 9)}})).find("does not exist") !=
        std::string::npos);
  CHECK(problem(chunkWith({"garbage!"}, {})).find("snapshot chunk refused") != std::string::npos);
}

}  // namespace
}  // namespace synod::election
