#include "daemon/readiness.h"

#include "daemon/logging.h"

namespace synod::daemon {

namespace {

size_t reachableCount(const NodeStatus& status) {
  size_t reachable = 0;
  for (const MemberInfo& member : status.members) {
    if (member.reachable) ++reachable;
  }
  return reachable;
}

size_t majorityOf(const NodeStatus& status) {
  return status.members.size() / 2 + 1;
}

}  // namespace

std::string waitingFor(const NodeStatus& status) {
  const size_t reachable = reachableCount(status);
  const std::string counted = std::to_string(reachable) + " of " +
                              std::to_string(status.members.size()) + " members reachable";
  if (reachable < majorityOf(status)) return "waiting for a quorum: " + counted;
  if (!status.recoveryStage.empty()) {
    return "recovering an empty data dir, not voting yet: " + status.recoveryStage;
  }
  if (status.leader.empty()) return "waiting for a leader: " + counted;
  if (status.appliedSlot < status.decidedSlot) {
    return "catching up: applied slot " + std::to_string(status.appliedSlot) + " of " +
           std::to_string(status.decidedSlot);
  }
  return "confirming the leadership of " + status.leader + " with a quorum";
}

kj::Promise<Readiness> checkReadiness(Node& node, uint32_t timeoutMs) {
  NodeStatus status = node.status();
  if (reachableCount(status) < majorityOf(status)) return Readiness{false, waitingFor(status)};
  return node.readBarrier(timeoutMs, false).then([&node](Refusal refusal) {
    if (refusal.code == StatusCode::OK) return Readiness{true, "serving linearizable requests"};
    return Readiness{false, waitingFor(node.status())};
  });
}

ReadinessWatch::ReadinessWatch(Node& node, kj::Timer& timer, uint32_t checkTimeoutMs,
                               uint32_t retryMs, WaitingCallback onWaiting, ReadyCallback onReady)
    : node_(node),
      timer_(timer),
      checkTimeoutMs_(checkTimeoutMs),
      retryMs_(retryMs),
      onWaiting_(std::move(onWaiting)),
      onReady_(std::move(onReady)) {
  running_ = attempt().eagerlyEvaluate(
      [](kj::Exception&& e) { logError("readiness checks failed: ", e.getDescription()); });
}

kj::Promise<void> ReadinessWatch::attempt() {
  return checkReadiness(node_, checkTimeoutMs_)
      .then([this](Readiness readiness) -> kj::Promise<void> {
        if (readiness.ready) {
          onReady_();
          return kj::READY_NOW;
        }
        if (readiness.reason != lastReason_) {
          lastReason_ = readiness.reason;
          onWaiting_(readiness.reason);
        }
        return timer_.afterDelay(retryMs_ * kj::MILLISECONDS).then([this]() { return attempt(); });
      });
}

}  // namespace synod::daemon
