// What a member tells its peers about itself for operators (peer.capnp MemberReport): sent to
// every connected peer about once a second and when its role or known leader changes. Nothing in
// the protocol depends on it; a lost report only makes the next one older.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "election/types.h"

namespace synod::daemon {

// Longest recoveryStage a report carries: the encoder cuts a longer one, the decoder refuses it.
constexpr size_t MAX_RECOVERY_STAGE_BYTES = 256;

struct MemberReport {
  std::string role;  // leader / follower / candidate / unknown (a role this build does not know)
  election::Ballot ballot;
  std::optional<election::MemberIndex> leader;
  election::Slot decidedSlot = 0;
  election::Slot appliedSlot = 0;
  uint64_t revision = 0;
  uint64_t leaseLeftMs = 0;  // 0 unless leading
  uint64_t dbSizeBytes = 0;
  uint64_t storeLimitBytes = 0;
  uint64_t commitP50Us = 0;  // over the recent group commits; 0 when there were none
  uint64_t commitP99Us = 0;
  uint64_t incarnation = 0;
  uint64_t uptimeMs = 0;
  uint64_t stateDigest = 0;  // election::StateMachine::stateDigest()
  // Catch-up progress (Node::catchUpStatus()).
  bool recovering = false;    // empty data dir: not voting until it has caught up
  std::string recoveryStage;  // human text while recovering; at most MAX_RECOVERY_STAGE_BYTES
  std::optional<election::MemberIndex> snapshotFrom;  // a snapshot is being received from it
  uint64_t snapshotBytesReceived = 0;                 // 0 unless a snapshot is in progress
  uint64_t snapshotBytesTotal = 0;

  bool operator==(const MemberReport&) const = default;
};

}  // namespace synod::daemon
