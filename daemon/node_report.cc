// Node's reports for operators: its own MemberReport, sending it to peers, keeping theirs, and
// the group commit latency it includes.
#include <algorithm>
#include <chrono>
#include <vector>

#include "daemon/node.h"

namespace synod::daemon {

namespace {

// Nearest-rank percentile `p` (0 < p <= 100) of `samples`, which it reorders; 0 when empty.
uint64_t percentile(std::vector<uint64_t>& samples, unsigned p) {
  if (samples.empty()) return 0;
  size_t rank = (samples.size() * p + 99) / 100;
  auto nth = samples.begin() + (std::max<size_t>(rank, 1) - 1);
  std::nth_element(samples.begin(), nth, samples.end());
  return *nth;
}

}  // namespace

void Node::recordCommit(Nanos duration) {
  uint64_t micros = duration <= 0 ? 0 : static_cast<uint64_t>(duration / 1000);
  if (commitMicros_.size() < COMMIT_SAMPLES) {
    commitMicros_.push_back(micros);
  } else {
    commitMicros_[nextCommitSample_] = micros;
  }
  nextCommitSample_ = (nextCommitSample_ + 1) % COMMIT_SAMPLES;
}

MemberReport Node::selfReport(Nanos now) const {
  MemberReport report;
  report.role = election::roleName(core_->role());
  report.ballot = core_->ballot();
  report.leader = core_->knownLeader();
  report.decidedSlot = core_->decidedSlot();
  report.appliedSlot = state_.appliedSlot();
  report.revision = state_.revision();
  if (isLeader()) {
    report.leaseLeftMs = static_cast<uint64_t>(std::max<Nanos>(0, core_->leaseHeldUntil() - now) /
                                               election::NANOS_PER_MS);
  }
  report.dbSizeBytes = usedBytes();
  report.storeLimitBytes = config_.storeLimitBytes;
  std::vector<uint64_t> samples = commitMicros_;
  report.commitP50Us = percentile(samples, 50);
  report.commitP99Us = percentile(samples, 99);
  report.incarnation = incarnation_;
  report.uptimeMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - startedAt_)
                        .count();
  report.stateDigest = state_.stateDigest();
  CatchUpStatus catchUp = catchUpStatus();
  report.recovering = catchUp.recovering;
  report.recoveryStage = catchUp.recoveryStage;
  if (catchUp.snapshotInProgress) {
    auto names = config_.peerNames();
    auto from = std::find(names.begin(), names.end(), catchUp.snapshotFrom);
    if (from != names.end()) report.snapshotFrom = static_cast<MemberIndex>(from - names.begin());
    report.snapshotBytesReceived = catchUp.snapshotBytesReceived;
    report.snapshotBytesTotal = catchUp.snapshotBytesTotal;
  }
  return report;
}

void Node::maybeSendReport(Nanos now) {
  if (outbox_ == nullptr || draining_) return;
  bool changed = core_->role() != reportedRole_ || core_->knownLeader() != reportedLeader_;
  if (!changed && lastReportAt_ &&
      now - *lastReportAt_ < Nanos(REPORT_INTERVAL_MS) * election::NANOS_PER_MS)
    return;
  lastReportAt_ = now;
  reportedRole_ = core_->role();
  reportedLeader_ = core_->knownLeader();
  MemberReport report = selfReport(now);
  for (MemberIndex i = 0; i < peerReports_.size(); ++i) {
    // Only to connected peers: a queued report would be stale by the time it leaves.
    if (i != self_ && outbox_->connected(i)) outbox_->sendReport(i, report);
  }
}

void Node::onMemberReport(MemberIndex from, MemberReport report) {
  if (from >= peerReports_.size() || from == self_) return;
  peerReports_[from] = ReceivedReport{std::move(report), bootTimeNow()};
}

}  // namespace synod::daemon
