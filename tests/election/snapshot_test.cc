// Snapshots of the state machine: encoding in bounded chunks, assembly, and refusal of every
// malformed or mismatched chunk.
#include "election/snapshot.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <doctest/doctest.h>

#include <string>
#include <vector>

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

}  // namespace
}  // namespace synod::election
