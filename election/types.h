// Value types shared by the consensus core, the state machine and storage. Plain data, no I/O.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace synod::election {

// A position in the replicated log. Slot 0 is never used; the first slot is 1.
using Slot = uint64_t;

// Index of a member in the group's peer list sorted by name.
using MemberIndex = uint32_t;

// Time as the core sees it: nanoseconds on the host's CLOCK_BOOTTIME (or the simulator's clock).
// Only differences mean anything.
using Nanos = int64_t;

constexpr Nanos NANOS_PER_MS = 1'000'000;

// Paxos ballot: (round, member index). Ordered by round, then member index. The zero ballot
// (round 0) is below every real ballot and means "none".
struct Ballot {
  uint64_t round = 0;
  MemberIndex member = 0;

  bool isZero() const { return round == 0; }
  auto operator<=>(const Ballot&) const = default;
  bool operator==(const Ballot&) const = default;
};

// The value of one log slot: a batch of encoded state machine commands (records.capnp Command,
// each a flat Cap'n Proto message). An empty batch is a no-op. The core never looks inside.
struct Value {
  std::vector<std::string> commands;

  bool isNoop() const { return commands.empty(); }
  bool operator==(const Value&) const = default;
};

// An acceptor's vote for one slot.
struct LogEntry {
  Slot slot = 0;
  Ballot ballot;
  Value value;

  bool operator==(const LogEntry&) const = default;
};

// One key of the replicated config map.
struct KeyRecord {
  std::string value;
  uint64_t createRevision = 0;
  uint64_t modRevision = 0;
  uint64_t version = 0;  // puts since the key was (re)created; an absent key has version 0
  uint64_t lease = 0;    // 0 = none

  bool operator==(const KeyRecord&) const = default;
};

}  // namespace synod::election
