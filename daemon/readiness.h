// Whether this member can serve linearizable requests: the meaning of READY=1 (sd_notify) and of
// Admin.health's `ready`.
//
// Ready means a linearizable read barrier (Node::readBarrier) has just succeeded: a leader (this
// member or another) confirmed its leadership with a majority (lease or read-index round), and
// this member has applied every slot up to the leader's decided index as of that confirmation.
// Nothing is guessed from status fields; they only explain why a member is not ready.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <string>

#include "daemon/node.h"

namespace synod::daemon {

struct Readiness {
  bool ready = false;
  std::string reason;  // what it waits for; "serving linearizable requests" when ready
};

// What a member whose status is `status` waits for before it can be ready, as one short line for
// STATUS= and `synodctl health`: a quorum of reachable members, a leader, catching up with the
// decided slots, or a confirmation round with the leader. Pure: unit-testable.
std::string waitingFor(const NodeStatus& status);

// Resolves with ready = true once a read barrier succeeded within `timeoutMs` (0 = the Node's
// default). Resolves at once with ready = false when fewer than a majority of members are
// reachable: no barrier can succeed then, and a health probe should not wait for its deadline.
kj::Promise<Readiness> checkReadiness(Node& node, uint32_t timeoutMs);

// Drives start-up readiness: checks again and again until a check succeeds, reporting each new
// reason through `onWaiting` (only when the text changes) and then calling `onReady` once.
// Between failed checks it waits `retryMs`. Owned by the daemon; dropping it stops the checks.
class ReadinessWatch {
 public:
  using WaitingCallback = std::function<void(const std::string& reason)>;
  using ReadyCallback = std::function<void()>;

  ReadinessWatch(Node& node, kj::Timer& timer, uint32_t checkTimeoutMs, uint32_t retryMs,
                 WaitingCallback onWaiting, ReadyCallback onReady);

 private:
  kj::Promise<void> attempt();

  Node& node_;
  kj::Timer& timer_;
  uint32_t checkTimeoutMs_;
  uint32_t retryMs_;
  WaitingCallback onWaiting_;
  ReadyCallback onReady_;
  std::string lastReason_;
  kj::Promise<void> running_ = nullptr;
};

}  // namespace synod::daemon
