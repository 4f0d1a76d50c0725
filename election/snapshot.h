// Snapshots of the replicated state (config map, revisions, de-duplication sessions) at an applied
// slot, cut into chunks (records::SnapshotChunk) for a member that fell behind the others' logs.
//
// The source encodes its whole StateMachine at once, so the chunks describe one consistent slot
// however long the transfer takes; the receiver assembles them into a new StateMachine and swaps it
// in only once every chunk arrived and checked, so a failed transfer changes nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "election/state_machine.h"
#include "election/types.h"

namespace synod::election {

// The state at state.appliedSlot() as chunks of roughly `chunkBytes` each (a chunk holds at least
// one key, lease or lock, so one large value can make a chunk larger). Never empty: an empty map
// is one chunk. Keys come first, then leases, then locks; sessions in the last chunk.
std::vector<std::string> encodeSnapshot(const StateMachine& state, size_t chunkBytes);

// Takes the chunks of one snapshot in order. Every input is untrusted (it comes from a peer): a
// chunk that does not fit (wrong index, another slot, keys out of order, bad encoding, more keys
// than announced) is refused with a message naming the problem, and the assembler must be thrown
// away.
class SnapshotAssembler {
 public:
  // Returns nullopt when the chunk was taken, else what is wrong with it.
  std::optional<std::string> add(std::string_view chunk, size_t maxKeyBytes);

  bool started() const { return count_ > 0; }
  bool complete() const { return count_ > 0 && next_ == count_; }
  Slot slot() const { return slot_; }
  uint32_t chunksReceived() const { return next_; }
  uint32_t chunkCount() const { return count_; }
  uint64_t bytesReceived() const { return bytes_; }

  // The assembled state; only once complete().
  StateMachine take();

 private:
  StateMachine state_;
  Slot slot_ = 0;
  uint64_t revision_ = 0;
  uint32_t count_ = 0;
  uint32_t next_ = 0;
  uint64_t keyCount_ = 0;
  uint64_t keysSeen_ = 0;
  uint64_t bytes_ = 0;
  std::string lastKey_;
  uint64_t leaseCount_ = 0;
  uint64_t lastLease_ = 0;
  std::string locks_;  // the last lock name taken; empty before the first
};

}  // namespace synod::election
