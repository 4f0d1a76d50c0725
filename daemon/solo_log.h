// The replicated log of a group of one member: propose -> durable accept -> decided -> apply,
// through the same Ready/advance contract the Multi-Paxos core (election/replica.h) offers, so the
// daemon's write path is the one a multi-member group uses.
//
// A group of one is its own majority: a slot is decided as soon as its accept is durable. At start
// the member runs "Phase 1 with itself": it takes a ballot above its promise and re-accepts every
// accepted slot above the applied one in that ballot, so a value accepted before a crash is
// decided, never lost or replaced.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "election/types.h"

namespace synod::daemon {

using election::Ballot;
using election::LogEntry;
using election::MemberIndex;
using election::Slot;
using election::Value;

// What must be durable before the log may go on.
struct LogReady {
  std::optional<Ballot> promise;  // the member's new promise
  std::vector<LogEntry> accept;   // its votes; each slot is decided once its vote is durable
  bool empty() const { return !promise && accept.empty(); }
};

class SoloLog {
 public:
  struct Limits {
    size_t maxCommandsPerSlot = 4096;
    size_t maxBytesPerSlot = 4 << 20;
  };

  // `unapplied`: the accepted entries with slot > appliedSlot, ascending, as stored.
  SoloLog(MemberIndex self, Ballot promised, Slot appliedSlot, std::vector<LogEntry> unapplied,
          Limits limits);

  // Queues a command for the next slot. A group of one always leads, so this never refuses.
  void propose(std::string command);

  // Whether ready() has something to persist.
  bool hasReady() const;
  // What to persist now. Call advance() once all of it is durable, before the next ready().
  LogReady ready();
  void advance(const LogReady& ready);
  // Decided entries not yet handed out, ascending and contiguous: apply them in this order.
  std::vector<LogEntry> takeDecided();

  Ballot ballot() const { return ballot_; }
  Slot decidedSlot() const { return decidedSlot_; }
  Slot lastSlot() const { return nextSlot_ - 1; }

 private:
  Limits limits_;
  Ballot ballot_;
  bool promisePending_ = true;
  Slot nextSlot_;
  Slot decidedSlot_;
  std::vector<LogEntry> toAccept_;  // formed, not yet handed out
  std::vector<LogEntry> inFlight_;  // handed out in a ready, durable at advance
  std::vector<LogEntry> decided_;   // durable, not yet handed out for apply
  std::vector<std::string> batch_;  // proposed commands not yet in a slot
  size_t batchBytes_ = 0;

  void closeBatch();
};

}  // namespace synod::daemon
