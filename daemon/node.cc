#include "daemon/node.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/debug.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "daemon/app_leases.h"
#include "daemon/logging.h"

namespace synod::daemon {

namespace {

CommandOutcome refusal(StatusCode code, std::string message) {
  CommandOutcome outcome;
  outcome.code = code;
  outcome.message = std::move(message);
  return outcome;
}

Nanos millis(uint64_t ms) {
  return static_cast<Nanos>(ms) * election::NANOS_PER_MS;
}

}  // namespace

Nanos bootTimeNow() {
  timespec ts{};
  KJ_SYSCALL(clock_gettime(CLOCK_BOOTTIME, &ts));
  return static_cast<Nanos>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Node::Node(const Config& config, storage::Store& store, kj::Timer& timer, PeerOutbox* outbox,
           uint64_t seed, CommitRunner* commits)
    : config_(config),
      store_(store),
      timer_(timer),
      outbox_(outbox),
      prng_(seed),
      self_(static_cast<MemberIndex>(config.nodeIndex())),
      incarnation_(store.startState().incarnation),
      commits_(commits != nullptr ? commits : &inlineCommits_),
      usedBytes_(store.usedBytes()),
      tasks_(*this) {
  KJ_REQUIRE(outbox_ != nullptr || config.peers.size() == 1,
             "a group of several members needs a peer transport");
  limits_.maxKeyBytes = config.maxKeyBytes;
  limits_.maxValueBytes = config.maxValueBytes;
  limits_.leaseTtlMinMs = config.leaseTtlMinMs;
  limits_.leaseTtlMaxMs = config.leaseTtlMaxMs;
  peerReports_.resize(config.peers.size());
  loadState();
  appLeases_ = std::make_unique<AppLeases>(*this, timer_);
  watchHub_ = std::make_unique<WatchHub>(state_, timer_);
  inTick_ = true;
  onTick();
  inTick_ = false;
  armTick(nextTickAt(bootTimeNow()));
}

Node::~Node() {
  // First: its pending calls wait on this Node's writes.
  appLeases_.reset();
  if (commitInFlight_) commits_->finish();
}

election::HistoryLimits Node::historyLimits() const {
  election::HistoryLimits limits;
  limits.revisions = config_.historyRevisions;
  return limits;
}

election::Options Node::coreOptions(uint64_t memberCount) const {
  election::Options options;
  options.self = self_;
  options.memberCount = static_cast<uint32_t>(memberCount);
  options.heartbeatIntervalNs = millis(config_.heartbeatMs);
  options.idleHeartbeatIntervalNs = election::derivedIdleHeartbeatInterval(
      millis(config_.heartbeatMs), millis(config_.electionTimeoutMs),
      millis(config_.leaderLeaseMs));
  options.electionTimeoutNs = millis(config_.electionTimeoutMs);
  options.leaderLeaseNs = millis(config_.leaderLeaseMs);
  options.maxClockDrift = config_.maxClockDrift;
  // A group of one has nobody to catch up.
  options.retainedLogSlots = memberCount == 1 ? 0 : config_.logRetentionSlots;
  options.startTimeNs = bootTimeNow();
  options.recovering = store_.startState().recovering;
  return options;
}

void Node::loadState() {
  const storage::StartState& start = store_.startState();
  store_.forEachKey([&](std::string_view key, election::KeyRecord&& record) {
    state_.restoreKey(std::string(key), std::move(record));
  });
  store_.forEachSession([&](MemberIndex member, std::string_view encoded) {
    state_.restoreSession(member, encoded);
  });
  store_.forEachLease([&](uint64_t, std::string_view encoded) { state_.restoreLease(encoded); });
  store_.forEachLock(
      [&](std::string_view, std::string_view encoded) { state_.restoreLock(encoded); });
  if (auto problem = state_.checkLeaseReferences()) {
    throw storage::CorruptionError("stored state is inconsistent: " + *problem);
  }
  state_.restoreApplied(start.appliedSlot, start.revision);
  state_.setHistoryLimits(historyLimits());
  std::vector<election::RevisionChanges> history;
  store_.forEachHistory(
      [&](election::RevisionChanges&& revision) { history.push_back(std::move(revision)); });
  try {
    state_.restoreHistory(start.historyStart == 0 ? start.revision + 1 : start.historyStart,
                          std::move(history));
  } catch (const std::runtime_error& e) {
    throw storage::CorruptionError(std::string("stored history is inconsistent: ") + e.what());
  }
  materializedSlot_ = start.appliedSlot;

  election::PersistedState persisted;
  persisted.promised = start.promised;
  persisted.appliedSlot = start.appliedSlot;
  size_t votes = 0;
  store_.forEachLogEntry(0, [&](LogEntry&& entry) {
    if (entry.slot > start.appliedSlot) ++votes;
    persisted.log.push_back(std::move(entry));
  });
  core_ = std::make_unique<election::Replica>(coreOptions(config_.peers.size()), persisted, prng_);
  logInfo("state loaded: ", state_.keyCount(), " keys at revision ", state_.revision(),
          ", applied slot ", state_.appliedSlot(), ", ", votes,
          " votes above it to be decided again, incarnation ", incarnation_);
  if (core_->recovering()) {
    logNotice(
        "the data dir was empty at the start of this member's recovery: it votes only once a "
        "majority of the other members confirm the group is new, or once it caught up "
        "with what they hold");
  }
}

// --- timers --------------------------------------------------------------------------------

void Node::armTick(Nanos at) {
  tickAt_ = at;
  ticking_ = tickLoop().eagerlyEvaluate([](kj::Exception&& e) {
    logError("fatal: tick loop failed: ", e.getDescription());
    std::abort();
  });
}

kj::Promise<void> Node::tickLoop() {
  // Whole milliseconds, rounded up: a tick just before a deadline would find nothing to do.
  const Nanos delay = std::max<Nanos>(tickAt_ - bootTimeNow(), 0);
  const int64_t delayMs = (delay + election::NANOS_PER_MS - 1) / election::NANOS_PER_MS;
  return timer_.afterDelay(delayMs * kj::MILLISECONDS).then([this]() {
    inTick_ = true;
    onTick();
    inTick_ = false;
    tickAt_ = nextTickAt(bootTimeNow());
    return tickLoop();
  });
}

Nanos Node::nextTickAt(Nanos now) const {
  const Nanos cadence = millis(std::max<uint64_t>(config_.heartbeatMs / 2, 1));
  // onTick's own timers (write retries, read restarts, snapshot transfers, and a leader's app
  // lease expiries and checkpoints) are checked at every tick: while any of them has work, tick
  // at the cadence.
  if (!pending_.empty() || !reads_.empty() || incoming_ || !outgoing_.empty() ||
      (isLeader() && state_.leases().leaseCount() > 0)) {
    return now + cadence;
  }
  // The core's next deadline, the next lease renewal batch, and the next report; at least once
  // per report interval.
  Nanos next = std::min(core_->nextTickAt(), now + millis(REPORT_INTERVAL_MS));
  if (appLeases_) {  // gone first in ~Node
    if (auto due = appLeases_->nextDue(now)) next = std::min(next, std::max(*due, now));
  }
  // While a persist is scheduled or in flight, finishPersist looks again.
  if (materializeAt_ != 0 && !persistScheduled_) next = std::min(next, materializeAt_);
  if (outbox_ != nullptr) {
    next = std::min(next, lastReportAt_ ? *lastReportAt_ + millis(REPORT_INTERVAL_MS) : now);
  }
  return next;
}

void Node::rearmTick() {
  if (inTick_ || draining_) return;
  const Nanos at = nextTickAt(bootTimeNow());
  if (at < tickAt_) armTick(at);
}

void Node::onTick() {
  Nanos now = bootTimeNow();
  ++counters_.ticks;
  core_->tick(now);
  // Writes not applied after a while are submitted again (lost forward, leader change).
  Nanos retryAfter = millis(std::max<uint64_t>(config_.electionTimeoutMs, 200));
  std::vector<uint64_t> due;
  for (auto& [sequence, write] : pending_) {
    if (now - write.submittedAt >= retryAfter) due.push_back(sequence);
  }
  for (uint64_t sequence : due)
    submit(sequence, now);
  restartReads(now);
  snapshotTick(now);
  appLeases_->tick(now);
  if (core_->hasReady() || materializeDue(now)) scheduleFlush();
  maybeSendReport(now);
}

kj::Promise<void> Node::deadline(uint32_t timeoutMs) {
  if (timeoutMs == 0) timeoutMs = DEFAULT_TIMEOUT_MS;
  return timer_.afterDelay(timeoutMs * kj::MILLISECONDS);
}

StatusCode Node::deadlineCode() const {
  // NO_QUORUM when this member knows of no working leader; TIMEOUT when there is one but the
  // request was still not done.
  auto leader = core_->knownLeader();
  if (!leader) return StatusCode::NO_QUORUM;
  if (*leader == self_) {
    // A leader that no majority has acknowledged for a lease has lost its quorum.
    return isLeader() && core_->leaseHeldUntil() > bootTimeNow() ? StatusCode::TIMEOUT
                                                                 : StatusCode::NO_QUORUM;
  }
  return outbox_ != nullptr && outbox_->connected(*leader) ? StatusCode::TIMEOUT
                                                           : StatusCode::NO_QUORUM;
}

// --- writes --------------------------------------------------------------------------------

std::optional<Refusal> Node::checkSpace(size_t requestBytes) const {
  // Refuse before the store can reach its limit, keeping a reserve for deletes and for slots
  // already decided: a decided slot must never fail to apply.
  uint64_t limit = config_.storeLimitBytes;
  uint64_t reserve = limit / 16;
  // The applied writes whose state is not in the store yet will add to it (their log entries
  // leave only once it is).
  uint64_t used = usedBytes() + unmaterializedBytes_ + materializingBytes_;
  if (used + 2 * requestBytes + reserve <= limit) return std::nullopt;
  return Refusal{StatusCode::NO_SPACE, kj::str("store holds ", used, " of its ", limit,
                                               " byte limit (store_limit_bytes, less a ", reserve,
                                               " byte reserve): delete keys or raise the limit")
                                           .cStr()};
}

kj::Promise<CommandOutcome> Node::write(capnp::MallocMessageBuilder& message, uint32_t timeoutMs) {
  auto command = message.getRoot<records::Command>();
  if (draining_) return refusal(StatusCode::UNAVAILABLE, "member is shutting down");
  if (auto bad = election::validateRequest(command.asReader(), limits_)) {
    return refusal(StatusCode::INVALID_ARGUMENT, *bad);
  }
  if (pending_.size() >= MAX_PENDING_WRITES) {
    return refusal(StatusCode::UNAVAILABLE, "too many writes in flight on this member; retry");
  }
  // Deletes and the commands that keep or end leases never grow the store much; refusing them
  // would keep space from being freed or let leases lapse.
  const bool exempt = command.isDelete() || command.isLeaseRenew() || command.isLeaseRevoke() ||
                      command.isLeaseExpire() || command.isLeaseCheckpoint() || command.isUnlock();
  if (!exempt) {
    size_t bytes = capnp::computeSerializedSizeInWords(message) * sizeof(capnp::word);
    if (auto full = checkSpace(bytes)) return refusal(full->code, full->message);
  }
  uint64_t sequence = nextSequence_++;
  auto id = command.initId();
  id.setMember(self_);
  id.setIncarnation(incarnation_);
  id.setSequence(sequence);

  auto paf = kj::newPromiseAndFulfiller<CommandOutcome>();
  pending_.emplace(sequence, PendingWrite{kj::mv(paf.fulfiller), election::encodeCommand(message)});
  submit(sequence, bootTimeNow());
  rearmTick();
  return paf.promise.exclusiveJoin(deadline(timeoutMs).then([this, sequence]() {
    pending_.erase(sequence);
    return refusal(deadlineCode(),
                   "deadline passed before the write was applied; it may still "
                   "be applied");
  }));
}

void Node::submit(uint64_t sequence, Nanos now) {
  auto it = pending_.find(sequence);
  if (it == pending_.end()) return;
  PendingWrite& write = it->second;
  write.submittedAt = now;
  if (isLeader()) {
    auto result = core_->propose(write.command, now);
    switch (result.status) {
      case election::ProposeResult::QUEUED:
        scheduleFlush();
        return;
      case election::ProposeResult::BUSY:
        return;  // the leader's queue is full: the retry timer submits it again
      case election::ProposeResult::TOO_LARGE:
        write.fulfiller->fulfill(
            refusal(StatusCode::INVALID_ARGUMENT, "command is larger than a slot may hold"));
        pending_.erase(it);
        return;
      case election::ProposeResult::NOT_LEADER:
        break;
    }
  }
  auto leader = core_->knownLeader();
  if (leader && *leader != self_ && outbox_ != nullptr) {
    outbox_->sendForward(*leader, {write.command});
  }
  // No leader known: the next leader change or retry submits it.
}

uint64_t Node::sequenceOf(const std::string& command) const {
  auto id = election::commandIdOf(command);
  if (!id || id->member != self_ || id->incarnation != incarnation_) return 0;
  return id->sequence;
}

void Node::onForward(MemberIndex from, std::vector<std::string> commands) {
  Nanos now = bootTimeNow();
  std::vector<std::string> refused;
  for (auto& command : commands) {
    auto result = isLeader() ? core_->propose(command, now)
                             : election::ProposeResult{election::ProposeResult::NOT_LEADER, {}};
    if (result.status == election::ProposeResult::NOT_LEADER) refused.push_back(std::move(command));
    // BUSY / TOO_LARGE: dropped; the sender's retry timer resubmits it.
  }
  if (!refused.empty() && outbox_ != nullptr) {
    outbox_->sendForwardRefused(from, std::move(refused), core_->knownLeader());
  }
  if (core_->hasReady()) scheduleFlush();
  rearmTick();
}

void Node::onForwardRefused(std::vector<std::string> commands,
                            std::optional<MemberIndex> leaderHint) {
  if (!leaderHint || *leaderHint == self_ || outbox_ == nullptr) return;  // retry timer
  std::vector<std::string> ours;
  for (auto& command : commands) {
    if (pending_.count(sequenceOf(command))) ours.push_back(std::move(command));
  }
  if (!ours.empty()) outbox_->sendForward(*leaderHint, std::move(ours));
}

void Node::resubmitAll(Nanos now) {
  std::vector<uint64_t> sequences;
  for (auto& [sequence, write] : pending_)
    sequences.push_back(sequence);
  for (uint64_t sequence : sequences)
    submit(sequence, now);
  restartReads(now);
}

void Node::restartReads(Nanos now) {
  for (auto& [id, read] : reads_) {
    if (!read.started) startRead(id, now);
  }
}

// --- reads ---------------------------------------------------------------------------------

kj::Promise<Refusal> Node::readBarrier(uint32_t timeoutMs, bool serializable) {
  if (serializable) return Refusal{};
  if (reads_.size() >= MAX_PENDING_READS) {
    return Refusal{StatusCode::UNAVAILABLE, "too many reads in flight on this member; retry"};
  }
  election::ReadId id = nextReadId_++;
  auto paf = kj::newPromiseAndFulfiller<Refusal>();
  reads_.emplace(id, PendingRead{kj::mv(paf.fulfiller), false});
  startRead(id, bootTimeNow());
  return paf.promise.exclusiveJoin(deadline(timeoutMs).then([this, id]() {
    reads_.erase(id);
    return Refusal{deadlineCode(), "deadline passed before the read could be linearized"};
  }));
}

void Node::startRead(election::ReadId id, Nanos now) {
  auto it = reads_.find(id);
  if (it == reads_.end()) return;
  auto start = core_->read(id, now);
  it->second.started = start.status == election::ReadStart::PENDING;
  if (it->second.started) scheduleFlush();
  rearmTick();
}

// --- peers ---------------------------------------------------------------------------------

void Node::onPeerMessage(MemberIndex from, const election::PeerMessage& message) {
  core_->step(from, message, bootTimeNow());
  if (core_->hasReady()) scheduleFlush();
  rearmTick();
}

void Node::sendAll(std::vector<election::OutgoingMessage>& messages) {
  if (outbox_ == nullptr) return;
  for (auto& outgoing : messages)
    outbox_->sendCore(outgoing.to, kj::mv(outgoing.message));
  messages.clear();
}

// --- group commit --------------------------------------------------------------------------

void Node::scheduleFlush() {
  if (flushScheduled_ || persistScheduled_) return;
  flushScheduled_ = true;
  // evalLast: run once every event already queued (other requests of this loop iteration) has
  // been handled, so one commit carries all of them.
  tasks_.add(kj::evalLast([this]() {
    flushScheduled_ = false;
    // Scheduled from inside the takeReady() of the flush before it (a leader change resubmits
    // this member's writes): that flush's persist is queued and looks again when it finishes.
    if (persistScheduled_) return;
    if (takeReady()) {
      persistScheduled_ = true;
      // Persist after the replies just made have gone out: applied state is materialized off
      // the reply's path, and a vote's persist still happens in this loop iteration.
      tasks_.add(kj::evalLast([this]() { persist(); }));
    }
  }));
}

bool Node::takeReady() {
  readyTakenAt_ = bootTimeNow();
  if (core_->hasReady()) {
    ready_ = core_->ready();
    handleReady(*ready_);
    return true;
  }
  return materializeDue(readyTakenAt_);
}

bool Node::materializeDue(Nanos now) {
  if (!state_.hasChanges()) {
    materializeAt_ = 0;
    return false;
  }
  if (materializeAt_ == 0) {
    materializeAt_ = now + materializeDelay_;
    rearmTick();
  }
  // Also at once when they hold a thirty-second of the store limit: their log entries leave the
  // store only with them, and checkSpace() counts them on top.
  return draining_ || now >= materializeAt_ ||
         state_.appliedSlot() >= materializedSlot_ + MATERIALIZE_MAX_SLOTS ||
         unmaterializedBytes_ >= config_.storeLimitBytes / 32;
}

void Node::persist() {
  KJ_ASSERT(!commitInFlight_, "a group commit while one is in flight");
  storage::WriteBatch batch;
  if (ready_) {
    batch.promised = ready_->promised;
    batch.accepted = std::move(ready_->accepted);
  }
  Slot materialized = materializedSlot_;
  // Votes and promises commit at once and alone: a small commit is a fast one, and it is on the
  // reply's path. The applied changes go in a commit of their own once due (MATERIALIZE_DELAY_MS),
  // or with whatever commit runs once they are. A log discard alone needs no commit: it waits in
  // dropLogPending_ for the next one.
  if (ready_ && ready_->discardLogThrough) {
    dropLogPending_ = std::max(dropLogPending_, *ready_->discardLogThrough);
  }
  if (state_.hasChanges() && materializeDue(readyTakenAt_)) {
    materializeAt_ = 0;
    materializingBytes_ = std::exchange(unmaterializedBytes_, 0);
    election::StateChanges changes = state_.takeChanges();
    batch.keys = std::move(changes.keys);
    batch.sessions = std::move(changes.sessions);
    batch.leases = std::move(changes.leases);
    batch.locks = std::move(changes.locks);
    batch.history = std::move(changes.history);
    batch.historyStart = changes.historyStart;
    batch.applied = std::make_pair(changes.appliedSlot, changes.revision);
    materialized = changes.appliedSlot;
  }
  batch.recovered = recoveredPending_;
  recoveredPending_ = false;
  if (batch.empty()) {
    finishPersist(materialized, std::move(batch.accepted));
    return;
  }
  // A vote may be forgotten only once the applied state covering its slot is durable: in this
  // same commit at the latest.
  if (dropLogPending_ != 0) {
    batch.dropLogThrough = std::min(dropLogPending_, materialized);
    if (*batch.dropLogThrough == dropLogPending_) dropLogPending_ = 0;
  }
  // The commit may run on another thread: it gets the batch and the store, nothing else. Until
  // it is done persistScheduled_ stays set, so no other Ready is taken (one outstanding at most).
  struct Commit {
    storage::WriteBatch batch;
    Nanos took = 0;
    Nanos finishedAt = 0;
    uint64_t usedBytes = 0;
  };
  auto commit = std::make_shared<Commit>();
  commit->batch = std::move(batch);
  commitInFlight_ = true;
  CommitRunner& runner = commitInline_ ? inlineCommits_ : *commits_;
  runner.run(
      [this, commit] {
        Nanos started = bootTimeNow();
        store_.commit(commit->batch);
        commit->finishedAt = bootTimeNow();
        commit->took = commit->finishedAt - started;
        commit->usedBytes = store_.usedBytes();
      },
      [this, commit, materialized](std::exception_ptr error) {
        commitInFlight_ = false;
        if (error) {
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            logError("fatal: group commit failed: ", e.what(),
                     "; stopping so that restart and peers recover");
          } catch (...) {
            logError("fatal: group commit failed; stopping so that restart and peers recover");
          }
          std::abort();
        }
        recordCommit(commit->took);
        counters_.fsyncSeconds.observe(static_cast<double>(commit->took) / 1e9);
        counters_.groupCommitSeconds.observe(
            static_cast<double>(commit->finishedAt - readyTakenAt_) / 1e9);
        ++counters_.commits;
        usedBytes_ = commit->usedBytes;
        materializingBytes_ = 0;  // counted in usedBytes_ now
        finishPersist(materialized, std::move(commit->batch.accepted));
      });
}

void Node::whenStoreIdle(std::function<void()> fn) {
  if (!commitInFlight_) {
    fn();
  } else {
    whenStoreIdle_.push_back(std::move(fn));
  }
}

void Node::finishPersist(Slot materialized, std::vector<LogEntry> accepted) {
  for (auto& fn : std::exchange(whenStoreIdle_, {}))
    fn();
  persistScheduled_ = false;
  materializedSlot_ = materialized;
  if (ready_) {
    sendAll(ready_->sendAfterPersist);
    ready_->accepted = std::move(accepted);
    core_->advance(*ready_);
    ready_.reset();
  }
  maybeInstallSnapshot();
  if (core_->hasReady() || materializeDue(bootTimeNow())) scheduleFlush();
  rearmTick();
}

void Node::handleReady(election::Ready& ready) {
  sendAll(ready.sendBeforePersist);
  applyEntries(ready.apply);
  for (const auto& outcome : ready.reads) {
    auto it = reads_.find(outcome.id);
    if (it == reads_.end()) continue;  // deadline passed
    if (outcome.ok) {
      // The applied state includes readIndex: this Ready's entries were applied above.
      it->second.fulfiller->fulfill(Refusal{});
      reads_.erase(it);
    } else {
      it->second.started = false;  // retried at the next tick or leader change
    }
  }
  if (ready.snapshotNeeded) startSnapshot(*ready.snapshotNeeded, bootTimeNow());
  if (ready.recovered) noteRecovered(*ready.recovered);
  for (const auto& command : ready.droppedCommands) {
    auto it = pending_.find(sequenceOf(command));
    if (it != pending_.end()) it->second.submittedAt = 0;  // resubmit at the next tick
  }
  if (ready.status) {
    const auto& status = *ready.status;
    if (status.leader != lastLeader_) {
      if (status.leader) {
        const std::string leader = config_.peerNames()[*status.leader];
        logAt(Priority::INFO,
              LogFields{kj::str(status.ballot.round, ".", status.ballot.member).cStr(), leader},
              "leader is ", leader.c_str(), " (ballot ", status.ballot.round, ".",
              status.ballot.member, "); this member is ", election::roleName(status.role));
      } else {
        logInfo("no leader known; this member is ", election::roleName(status.role));
      }
      lastLeader_ = status.leader;
      resubmitAll(bootTimeNow());
    }
    maybeSendReport(bootTimeNow());
  }
}

void Node::applyEntries(const std::vector<LogEntry>& entries) {
  std::vector<election::AppliedCommand> applied;
  for (const auto& entry : entries) {
    applied.clear();
    // Up to three times its size once materialized: the key's record and the history's new and
    // previous state (the log entry leaves with it).
    for (const auto& command : entry.value.commands)
      unmaterializedBytes_ += 3 * command.size();
    state_.apply(entry.slot, entry.value, applied);
    counters_.slotCommands.observe(double(applied.size()));
    for (const auto& command : applied)
      appLeases_->onApplied(command);
    appLeases_->afterApply(state_.takeTouchedLeases(), bootTimeNow());
    for (auto& command : applied) {
      if (command.id.member != self_ || command.id.incarnation != incarnation_) continue;
      auto it = pending_.find(command.id.sequence);
      if (it == pending_.end()) continue;  // timed out, or answered by an earlier copy
      it->second.fulfiller->fulfill(kj::mv(command.outcome));
      pending_.erase(it);
    }
  }
  if (!entries.empty()) watchHub_->changed();
}

std::optional<MemberIndex> Node::preferredHandoffTarget(const std::vector<HandoffPeer>& peers,
                                                        uint64_t restartWindowMs) {
  std::optional<HandoffPeer> best;
  size_t past = 0;
  for (const HandoffPeer& peer : peers) {
    if (!peer.reportCurrent || peer.uptimeMs <= restartWindowMs) continue;
    ++past;
    if (!best || peer.decidedSlot > best->decidedSlot) best = peer;
  }
  if (!best || past == peers.size()) return std::nullopt;
  return best->index;
}

bool Node::transferLeadership(std::optional<MemberIndex> target) {
  if (draining_) return false;
  const Nanos now = bootTimeNow();
  if (!target && isLeader()) {
    // A peer restarted moments ago (a rolling restart) would make the group wait out its
    // restart window: prefer one that is past it.
    std::vector<HandoffPeer> peers;
    for (MemberIndex i = 0; i < peerReports_.size(); ++i) {
      if (i == self_) continue;
      HandoffPeer peer;
      peer.index = i;
      peer.decidedSlot = core_->peerDecidedSlot(i);
      if (const auto& received = peerReports_[i]) {
        const uint64_t ageMs = static_cast<uint64_t>(
            std::max<Nanos>(0, now - received->receivedAt) / election::NANOS_PER_MS);
        peer.reportCurrent = ageMs <= REPORT_STALE_MS;
        peer.uptimeMs = received->report.uptimeMs + ageMs;
      }
      peers.push_back(peer);
    }
    const auto windowMs = static_cast<uint64_t>(
        std::ceil(static_cast<double>(config_.leaderLeaseMs) * (1 + config_.maxClockDrift)));
    // The core refuses a target it has not heard from lately: then it picks as usual.
    auto preferred = preferredHandoffTarget(peers, windowMs);
    if (preferred && core_->transferLeadership(*preferred, now)) {
      target = preferred;
    } else if (!core_->transferLeadership(std::nullopt, now)) {
      return false;
    }
  } else if (!core_->transferLeadership(target, now)) {
    return false;
  }
  logInfo("handing leadership over", target ? " to " : "",
          target ? config_.peerNames()[*target].c_str() : "");
  scheduleFlush();
  rearmTick();
  return true;
}

kj::Promise<std::optional<MemberIndex>> Node::otherLeader(uint32_t timeoutMs) {
  auto leader = core_->knownLeader();
  if (leader && *leader != self_) return leader;
  if (timeoutMs == 0) return std::optional<MemberIndex>();
  const uint32_t step = std::min<uint32_t>(timeoutMs, 5);
  return timer_.afterDelay(step * kj::MILLISECONDS).then([this, timeoutMs, step]() {
    return otherLeader(timeoutMs - step);
  });
}

void Node::limitsChanged() {
  limits_.maxKeyBytes = config_.maxKeyBytes;
  limits_.maxValueBytes = config_.maxValueBytes;
  limits_.leaseTtlMinMs = config_.leaseTtlMinMs;
  limits_.leaseTtlMaxMs = config_.leaseTtlMaxMs;
}

void Node::drain() {
  draining_ = true;
  ticking_ = nullptr;  // no more timers: the loop may end
  // Everything from here on is committed on this thread, before drain() returns.
  if (commitInFlight_) commits_->finish();
  commitInline_ = true;
  if (persistScheduled_) persist();
  while (takeReady())
    persist();
}

void Node::taskFailed(kj::Exception&& exception) {
  logError("fatal: ", exception.getDescription(), "; stopping so that restart and peers recover");
  std::abort();
}

// --- status --------------------------------------------------------------------------------

NodeStatus Node::status() const {
  NodeStatus status;
  status.member = config_.node;
  status.role = election::roleName(core_->role());
  status.ballot = core_->ballot();
  auto names = config_.peerNames();
  if (auto leader = core_->knownLeader()) status.leader = names[*leader];
  status.decidedSlot = core_->decidedSlot();
  status.appliedSlot = state_.appliedSlot();
  status.revision = state_.revision();
  status.incarnation = incarnation_;
  status.dbSizeBytes = usedBytes();
  status.uptimeMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - startedAt_)
                        .count();
  Nanos now = bootTimeNow();
  Nanos leaseUntil = core_->leaseHeldUntil();
  status.leaseLeftNs = std::max<Nanos>(0, leaseUntil - now);
  MemberReport own = selfReport(now);
  status.commitP50Us = own.commitP50Us;
  status.commitP99Us = own.commitP99Us;
  status.stateDigest = own.stateDigest;
  status.recoveryStage = catchUpStatus().recoveryStage;
  for (size_t i = 0; i < names.size(); ++i) {
    MemberInfo member;
    member.name = names[i];
    member.address = config_.peers.at(names[i]).toString();
    bool isSelf = i == self_;
    bool isLeaderMember = core_->knownLeader() == static_cast<MemberIndex>(i);
    member.role = isLeaderMember ? "leader" : (isSelf ? status.role : "follower");
    member.reachable = isSelf || (outbox_ != nullptr && outbox_->connected(i));
    if (isSelf) {
      member.report = own;
      member.stale = false;
    } else if (const auto& received = peerReports_[i]) {
      member.report = received->report;
      member.reportAgeMs = static_cast<uint64_t>(std::max<Nanos>(0, now - received->receivedAt) /
                                                 election::NANOS_PER_MS);
      member.stale = !member.reachable || member.reportAgeMs > REPORT_STALE_MS;
      // A current report is the member's own word on its role.
      if (!member.stale) member.role = received->report.role;
    }
    if (!member.reachable) member.role = "unknown";
    // Only the leader knows how far each follower is behind.
    if (isLeader() && !isSelf) {
      Slot peerDecided = core_->peerDecidedSlot(static_cast<MemberIndex>(i));
      member.lagSlots = status.decidedSlot > peerDecided ? status.decidedSlot - peerDecided : 0;
    }
    status.members.push_back(std::move(member));
  }
  Slot highestDecided = 0;
  for (const MemberInfo& member : status.members) {
    if (member.report) highestDecided = std::max(highestDecided, member.report->decidedSlot);
  }
  for (MemberInfo& member : status.members) {
    if (member.report && highestDecided > member.report->appliedSlot)
      member.slotsBehind = highestDecided - member.report->appliedSlot;
  }
  return status;
}

}  // namespace synod::daemon
