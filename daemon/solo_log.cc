#include "daemon/solo_log.h"

#include <kj/debug.h>

namespace synod::daemon {

SoloLog::SoloLog(MemberIndex self, Ballot promised, Slot appliedSlot,
                 std::vector<LogEntry> unapplied, Limits limits)
    : limits_(limits),
      ballot_{promised.round + 1, self},
      nextSlot_(appliedSlot + 1),
      decidedSlot_(appliedSlot) {
  for (auto& entry : unapplied) {
    KJ_ASSERT(entry.slot == nextSlot_, "log has a hole above the applied slot", entry.slot,
              nextSlot_);
    entry.ballot = ballot_;
    toAccept_.push_back(std::move(entry));
    ++nextSlot_;
  }
}

void SoloLog::propose(std::string command) {
  batchBytes_ += command.size();
  batch_.push_back(std::move(command));
  if (batch_.size() >= limits_.maxCommandsPerSlot || batchBytes_ >= limits_.maxBytesPerSlot) {
    closeBatch();
  }
}

void SoloLog::closeBatch() {
  if (batch_.empty()) return;
  toAccept_.push_back(LogEntry{nextSlot_++, ballot_, Value{std::move(batch_)}});
  batch_.clear();
  batchBytes_ = 0;
}

bool SoloLog::hasReady() const {
  return promisePending_ || !batch_.empty() || !toAccept_.empty();
}

LogReady SoloLog::ready() {
  KJ_ASSERT(inFlight_.empty(), "ready() called twice without advance()");
  closeBatch();
  LogReady ready;
  if (promisePending_) ready.promise = ballot_;
  ready.accept = toAccept_;
  inFlight_ = std::move(toAccept_);
  toAccept_.clear();
  return ready;
}

std::vector<LogEntry> SoloLog::takeDecided() {
  std::vector<LogEntry> out = std::move(decided_);
  decided_.clear();
  return out;
}

void SoloLog::advance(const LogReady& ready) {
  if (ready.promise) promisePending_ = false;
  // Our own accept is the majority: durable means decided.
  for (auto& entry : inFlight_) {
    decidedSlot_ = entry.slot;
    decided_.push_back(std::move(entry));
  }
  inFlight_.clear();
}

}  // namespace synod::daemon
