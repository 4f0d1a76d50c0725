#include "election/replica.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <functional>
#include <stdexcept>

#include <kj/debug.h>

namespace synod::election {

namespace {

// Bounds the work one ready() does for the shell; the rest follows in the next Ready.
constexpr Slot MAX_APPLY_PER_READY = 4096;
// Heartbeat rounds remembered for acks; older acks only matter for older rounds.
constexpr size_t MAX_HEARTBEAT_ROUNDS = 16;

template <typename... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

uint64_t valueBytes(const Value& value) {
  uint64_t bytes = 0;
  for (const std::string& command : value.commands)
    bytes += command.size();
  return bytes;
}

}  // namespace

const char* recoveryOutcomeName(RecoveryOutcome outcome) {
  switch (outcome) {
    case RecoveryOutcome::NEW_GROUP:
      return "new group";
    case RecoveryOutcome::CAUGHT_UP:
      return "caught up";
  }
  return "?";
}

const char* roleName(Role role) {
  switch (role) {
    case Role::FOLLOWER:
      return "follower";
    case Role::CANDIDATE:
      return "candidate";
    case Role::LEADER:
      return "leader";
  }
  return "unknown";
}

Nanos derivedIdleHeartbeatInterval(Nanos heartbeat, Nanos electionTimeout, Nanos leaderLease) {
  const Nanos idle = std::min({4 * heartbeat, 2 * electionTimeout / 5, leaderLease / 2});
  return idle > heartbeat ? idle : 0;
}

std::optional<std::string> validateOptions(const Options& o) {
  if (o.memberCount < 1 || o.memberCount > Options::MAX_MEMBERS) {
    return "memberCount must be in 1.." + std::to_string(Options::MAX_MEMBERS);
  }
  if (o.self >= o.memberCount) return "self must be below memberCount";
  if (o.heartbeatIntervalNs <= 0) return "heartbeatIntervalNs must be positive";
  if (o.electionTimeoutNs < 2 * o.heartbeatIntervalNs) {
    return "electionTimeoutNs must be at least twice heartbeatIntervalNs";
  }
  if (o.leaderLeaseNs < o.heartbeatIntervalNs) {
    return "leaderLeaseNs must be at least heartbeatIntervalNs";
  }
  if (o.idleHeartbeatIntervalNs != 0) {
    if (o.idleHeartbeatIntervalNs < o.heartbeatIntervalNs) {
      return "idleHeartbeatIntervalNs must be 0 or at least heartbeatIntervalNs";
    }
    if (o.electionTimeoutNs < 2 * o.idleHeartbeatIntervalNs) {
      return "electionTimeoutNs must be at least twice idleHeartbeatIntervalNs";
    }
    if (o.leaderLeaseNs < 2 * o.idleHeartbeatIntervalNs) {
      return "leaderLeaseNs must be at least twice idleHeartbeatIntervalNs";
    }
  }
  if (!(o.maxClockDrift >= 0 && o.maxClockDrift < 0.5)) return "maxClockDrift must be in [0, 0.5)";
  if (o.pipelineWindow < 1 || o.pipelineWindow > (1u << 20)) {
    return "pipelineWindow must be in 1..1048576";
  }
  if (o.maxBatchCommands < 1) return "maxBatchCommands must be positive";
  if (o.maxBatchBytes < 1) return "maxBatchBytes must be positive";
  if (o.maxQueuedCommands < 1) return "maxQueuedCommands must be positive";
  if (o.maxQueuedBytes < o.maxBatchBytes) return "maxQueuedBytes must be at least maxBatchBytes";
  if (o.maxPendingReads < 1) return "maxPendingReads must be positive";
  if (o.readTimeoutNs <= 0) return "readTimeoutNs must be positive";
  if (o.maxFetchSlots < 1) return "maxFetchSlots must be positive";
  if (o.maxFetchBytes < 1) return "maxFetchBytes must be positive";
  if (o.acceptAheadSlots < o.pipelineWindow) {
    return "acceptAheadSlots must be at least pipelineWindow";
  }
  return std::nullopt;
}

Replica::Replica(const Options& options, const PersistedState& persisted, Prng& prng)
    : options_(options), prng_(prng), lastNow_(options.startTimeNs) {
  if (auto problem = validateOptions(options)) throw std::invalid_argument(*problem);
  leaseForAcceptorsNs_ = options_.leaderLeaseNs;

  promised_ = persisted.promised;
  highestRoundSeen_ = promised_.round;
  appliedSlot_ = decidedSlot_ = persisted.appliedSlot;
  Slot previous = 0;
  for (const LogEntry& entry : persisted.log) {
    if (entry.slot == 0 || entry.slot <= previous) {
      throw std::invalid_argument("persisted log entries must have ascending slots above 0");
    }
    previous = entry.slot;
    log_.emplace(entry.slot, entry);
  }
  // Only a contiguous run of decided values up to appliedSlot can be served to peers.
  logStart_ = appliedSlot_ + 1;
  while (logStart_ > 1 && log_.count(logStart_ - 1))
    --logStart_;
  log_.erase(log_.begin(), log_.lower_bound(logStart_));
  discardedThrough_ = logStart_ - 1;

  // It may have acked a heartbeat just before it stopped: honour that lease without knowing it.
  refusePhase1Until_ =
      options_.memberCount > 1
          ? options_.startTimeNs +
                static_cast<Nanos>(std::ceil(static_cast<double>(options_.leaderLeaseNs) *
                                             (1 + options_.maxClockDrift)))
          : options_.startTimeNs;
  lastLeaderContact_ = options_.startTimeNs;
  electionDeadline_ = options_.memberCount > 1 ? options_.startTimeNs + randomElectionTimeout()
                                               : options_.startTimeNs;
  lastHeardFrom_.assign(options_.memberCount, options_.startTimeNs);
  peerAckedDecided_.assign(options_.memberCount, 0);

  if (options_.recovering) {
    if (options_.memberCount == 1) {
      recovered_ = RecoveryOutcome::NEW_GROUP;  // it is the whole group
    } else {
      recovering_ = true;
      recoveryNonce_ = prng_.next() | 1;
      const double scale = (1 + options_.maxClockDrift) / (1 - options_.maxClockDrift);
      recoveryNotBefore_ = options_.startTimeNs +
                           static_cast<Nanos>(std::ceil(
                               2.0 * static_cast<double>(options_.electionTimeoutNs) * scale));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Inputs

void Replica::tick(Nanos now) {
  lastNow_ = std::max(lastNow_, now);
  now = lastNow_;
  const Nanos interval = options_.heartbeatIntervalNs;
  expireReads(now);

  if (fetchInFlight_ && now - fetchSentAt_ >= interval) {
    fetchInFlight_ = false;
    if (decidedSlot_ < peerDecidedSlot_ && role_ == Role::FOLLOWER) {
      maybeFetch(leader_ ? *leader_ : fetchPeer_, now);
    }
  }
  if (recovering_) recoveryTick(now);
  for (FollowerRead& read : followerReads_) {
    if (!read.indexKnown && now - read.lastSentAt >= interval) {
      read.lastSentAt = now;
      send(read.leader, ReadIndexRequest{read.requestId}, false);
    }
  }

  switch (role_) {
    case Role::LEADER:
      leaderTick(now);
      break;
    case Role::CANDIDATE:
      if (now >= campaign_.deadline) {
        startPreVote(now);
      } else if (now - campaign_.lastSentAt >= interval) {
        campaign_.lastSentAt = now;
        for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
          if (peer == options_.self || (campaign_.promisedMask & bit(peer))) continue;
          send(peer, Prepare{ballot_, campaign_.fromSlot}, true);
        }
      }
      break;
    case Role::FOLLOWER:
      if (recovering_) {
        break;  // it may not vote, so it may not campaign either
      } else if (preVoting_) {
        if (isMajority(preVoteGrants_) && mayPromiseNewBallot(options_.self, now)) {
          startCampaign(now);
        } else if (now >= preVoteDeadline_) {
          startPreVote(now);
        } else if (now - preVoteSentAt_ >= interval) {
          preVoteSentAt_ = now;
          for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
            if (peer == options_.self || (preVoteGrants_ & bit(peer))) continue;
            send(peer, PreVoteRequest{preVoteRound_, decidedSlot_}, false);
          }
        }
      } else if (handoffBallot_ && now < handoffUntil_) {
        if (promised_ != *handoffBallot_ || leader_) {
          handoffBallot_.reset();
        } else if (mayPromiseNewBallot(options_.self, now)) {
          handoffBallot_.reset();
          startCampaign(now);
        }
      } else if (now >= electionDeadline_) {
        startPreVote(now);
      }
      break;
  }
}

Nanos Replica::nextTickAt() const {
  const Nanos interval = options_.heartbeatIntervalNs;
  const Nanos soon = lastNow_ + std::max<Nanos>(interval / 2, 1);
  // States whose timers are not modelled here keep the cadence tick() was written for.
  if (recovering_ || fetchInFlight_ || !followerReads_.empty() || !leaderReads_.empty()) {
    return soon;
  }
  switch (role_) {
    case Role::CANDIDATE:
      return soon;
    case Role::FOLLOWER:
      if (preVoting_ || handoffBallot_) return soon;
      return electionDeadline_;
    case Role::LEADER:
      break;
  }
  if (heartbeatWanted_) return soon;
  Nanos next = lastHeartbeatAt_ + leaderHeartbeatInterval(lastNow_);
  for (const auto& [slot, flight] : inFlight_) {
    if (!flight.decided) next = std::min(next, flight.lastSentAt + interval);
  }
  // leaderTick steps down once it led an election timeout and has not heard from a majority
  // within one. Without new messages the majority is lost when the freshest peers it needs go
  // stale: at the k-th latest staleness time, k = the peers a majority needs besides itself.
  std::array<Nanos, Options::MAX_MEMBERS> staleAt{};
  size_t peers = 0;
  for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
    if (peer != options_.self) staleAt[peers++] = lastHeardFrom_[peer] + options_.electionTimeoutNs;
  }
  const size_t needed = options_.memberCount / 2;  // majority minus itself
  if (needed > 0 && needed <= peers) {
    std::nth_element(staleAt.begin(), staleAt.begin() + (needed - 1), staleAt.begin() + peers,
                     std::greater<Nanos>());
    const Nanos majorityLostAt = staleAt[needed - 1];
    next = std::min(next, std::max(leaderSince_ + options_.electionTimeoutNs, majorityLostAt));
  }
  return next;
}

void Replica::step(MemberIndex from, const PeerMessage& message, Nanos now) {
  lastNow_ = std::max(lastNow_, now);
  now = lastNow_;
  if (from >= options_.memberCount || from == options_.self) {
    ++ignoredMessages_;
    return;
  }
  std::visit(Overloaded{
                 [&](const PreVoteRequest& m) { onPreVoteRequest(from, m, now); },
                 [&](const PreVoteReply& m) { onPreVoteReply(from, m, now); },
                 [&](const Prepare& m) { onPrepare(from, m, now); },
                 [&](const Promise& m) { onPromise(from, m, now); },
                 [&](const Accept& m) { onAccept(from, m, now); },
                 [&](const Accepted& m) { onAccepted(from, m, now); },
                 [&](const Rejected& m) { onRejected(from, m, now); },
                 [&](const Heartbeat& m) { onHeartbeat(from, m, now); },
                 [&](const HeartbeatAck& m) { onHeartbeatAck(from, m, now); },
                 [&](const FetchRequest& m) { onFetchRequest(from, m); },
                 [&](const FetchReply& m) { onFetchReply(from, m, now); },
                 [&](const ReadIndexRequest& m) { onReadIndexRequest(from, m, now); },
                 [&](const ReadIndexReply& m) { onReadIndexReply(from, m); },
                 [&](const Handoff& m) { onHandoff(from, m, now); },
                 [&](const RecoveryQuery& m) { onRecoveryQuery(from, m); },
                 [&](const RecoveryReply& m) { onRecoveryReply(from, m, now); },
             },
             message);
}

ProposeResult Replica::propose(std::string encodedCommand, Nanos now) {
  lastNow_ = std::max(lastNow_, now);
  if (role_ != Role::LEADER) return {ProposeResult::NOT_LEADER, leader_};
  lastBusyAt_ = lastNow_;
  const uint64_t bytes = encodedCommand.size();
  if (bytes > options_.maxBatchBytes) return {ProposeResult::TOO_LARGE, leader_};
  if (queue_.size() >= options_.maxQueuedCommands ||
      queuedBytes_ + bytes > options_.maxQueuedBytes) {
    return {ProposeResult::BUSY, leader_};
  }
  queue_.push_back(std::move(encodedCommand));
  queuedBytes_ += bytes;
  return {ProposeResult::QUEUED, leader_};
}

ReadStart Replica::read(ReadId id, Nanos now) {
  lastNow_ = std::max(lastNow_, now);
  now = lastNow_;
  if (pendingReads() >= options_.maxPendingReads) return {ReadStart::BUSY, leader_};
  if (role_ == Role::LEADER) {
    lastBusyAt_ = now;
    LeaderRead read;
    read.local = true;
    read.id = id;
    addLeaderRead(read, now);
    return {ReadStart::PENDING, leader_};
  }
  if (role_ == Role::FOLLOWER && leader_) {
    FollowerRead read;
    read.id = id;
    read.requestId = prng_.next();
    read.leader = *leader_;
    read.lastSentAt = now;
    read.deadline = now + options_.readTimeoutNs;
    followerReads_.push_back(read);
    send(read.leader, ReadIndexRequest{read.requestId}, false);
    return {ReadStart::PENDING, leader_};
  }
  return {ReadStart::NOT_LEADER, leader_};
}

bool Replica::transferLeadership(std::optional<MemberIndex> target, Nanos now) {
  lastNow_ = std::max(lastNow_, now);
  now = lastNow_;
  if (role_ != Role::LEADER) return false;
  auto reachable = [&](MemberIndex peer) {
    return peer != options_.self && peer < options_.memberCount &&
           now - lastHeardFrom_[peer] < options_.electionTimeoutNs;
  };
  if (target) {
    if (!reachable(*target)) return false;
  } else {
    for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
      if (!reachable(peer)) continue;
      const bool better = !target || peerAckedDecided_[peer] > peerAckedDecided_[*target] ||
                          (peerAckedDecided_[peer] == peerAckedDecided_[*target] &&
                           lastHeardFrom_[peer] > lastHeardFrom_[*target]);
      if (better) target = peer;
    }
    if (!target) return false;
  }
  const Ballot ending = ballot_;
  if (!breaks(RuleBreaker::HANDOFF_KEEPS_LEASE)) {
    // Gives up the lease before anyone learns of the Handoff: once an acceptor releases its grant
    // another proposer may win, and this member must no longer serve lease reads by then.
    becomeFollower(now, true);
    if (grantedLeaseHolder_ == options_.self && grantedLeaseBallot_ == ending) {
      grantedLeaseUntil_ = 0;
    }
  }
  broadcast(Handoff{ending, *target}, false);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Ready / advance

bool Replica::hasReady() const {
  if (readyOutstanding_) return false;
  if (pendingPromise_ || !pendingLog_.empty() || !sendBefore_.empty() || !sendAfter_.empty() ||
      !readOutcomes_.empty() || !dropped_.empty() || snapshotNeeded_ || recovered_) {
    return true;
  }
  if (decidedSlot_ > appliedSlot_) return true;
  if (!reportedStatus_ || reportedStatus_->role != role_ || reportedStatus_->ballot != ballot() ||
      reportedStatus_->leader != leader_) {
    return true;
  }
  if (role_ == Role::LEADER) {
    if (heartbeatWanted_) return true;
    if (windowOpen() && (!recovery_.empty() || !queue_.empty() || nextSlot_ <= fillThrough_)) {
      return true;
    }
  }
  if (discardDue()) return true;
  for (const LeaderRead& read : leaderReads_) {
    if (confirmedSequence_ >= read.needSequence &&
        (!read.local || read.readIndex <= appliedSlot_)) {
      return true;
    }
  }
  for (const FollowerRead& read : followerReads_) {
    if (read.indexKnown && read.readIndex <= appliedSlot_) return true;
  }
  return false;
}

Slot Replica::discardLimit() const {
  const Slot retained = options_.retainedLogSlots;
  Slot limit = appliedSlot_ > retained ? appliedSlot_ - retained : 0;
  if (holdLogFrom_) limit = std::min(limit, *holdLogFrom_ > 0 ? *holdLogFrom_ - 1 : 0);
  return limit;
}

bool Replica::discardDue() const {
  const Slot step = std::max<Slot>(1, options_.retainedLogSlots / 8);
  return discardLimit() >= discardedThrough_ + step;
}

Ready Replica::ready() {
  KJ_ASSERT(!readyOutstanding_, "ready() called again before advance()");
  proposeMore();
  if (role_ == Role::LEADER && heartbeatWanted_) sendHeartbeat(lastNow_);

  Ready out;
  const Slot applyThrough = std::min(decidedSlot_, appliedSlot_ + MAX_APPLY_PER_READY);
  for (Slot slot = appliedSlot_ + 1; slot <= applyThrough; ++slot) {
    auto it = log_.find(slot);
    KJ_ASSERT(it != log_.end(), "decided slot without a value", slot, logStart_);
    out.apply.push_back(it->second);
  }
  resolveReads(applyThrough);

  if (discardDue()) {
    const Slot through = discardLimit();
    out.discardLogThrough = through;
    log_.erase(log_.begin(), log_.upper_bound(through));
    pendingLog_.erase(pendingLog_.begin(), pendingLog_.upper_bound(through));
    discardedThrough_ = through;
    logStart_ = std::max(logStart_, through + 1);
  }

  out.promised = pendingPromise_;
  pendingPromise_.reset();
  out.accepted.reserve(pendingLog_.size());
  for (auto& [slot, entry] : pendingLog_)
    out.accepted.push_back(std::move(entry));
  pendingLog_.clear();

  out.sendBeforePersist = std::move(sendBefore_);
  sendBefore_.clear();
  out.sendAfterPersist = std::move(sendAfter_);
  sendAfter_.clear();
  out.reads = std::move(readOutcomes_);
  readOutcomes_.clear();
  out.droppedCommands = std::move(dropped_);
  dropped_.clear();
  out.snapshotNeeded = snapshotNeeded_;
  snapshotNeeded_.reset();
  out.recovered = recovered_;
  recovered_.reset();

  StatusChange now{role_, ballot(), leader_};
  if (!reportedStatus_ || reportedStatus_->role != now.role ||
      reportedStatus_->ballot != now.ballot || reportedStatus_->leader != now.leader) {
    out.status = now;
    reportedStatus_ = now;
  }
  readyOutstanding_ = true;
  return out;
}

void Replica::advance(const Ready& ready) {
  KJ_ASSERT(readyOutstanding_, "advance() without an outstanding Ready");
  readyOutstanding_ = false;
  if (!ready.apply.empty()) {
    KJ_ASSERT(ready.apply.front().slot == appliedSlot_ + 1, "Ready applied out of order");
    appliedSlot_ = ready.apply.back().slot;
  }
  if (ready.promised && role_ == Role::CANDIDATE && *ready.promised == ballot_) {
    campaign_.ownPromiseDurable = true;
    maybeWinCampaign(lastNow_);
  }
  if (role_ == Role::LEADER) {
    for (const LogEntry& entry : ready.accepted) {
      if (entry.ballot == ballot_) countVote(options_.self, entry.slot);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Election

bool Replica::mayPromiseNewBallot(MemberIndex proposer, Nanos now) const {
  if (now < refusePhase1Until_) return false;
  // Protects the leader lease this acceptor granted by acking a heartbeat.
  if (now < grantedLeaseUntil_ && grantedLeaseHolder_ != proposer) return false;
  return true;
}

bool Replica::grantsPreVote(MemberIndex candidate, Slot candidateDecided, Nanos now) const {
  if (role_ == Role::LEADER || recovering_) return false;
  // Pre-vote rule: support an election only if this member lost the leader too.
  if (now - lastLeaderContact_ < options_.electionTimeoutNs) return false;
  if (!mayPromiseNewBallot(candidate, now)) return false;
  if (candidateDecided + options_.maxFetchSlots < decidedSlot_) return false;
  return true;
}

void Replica::startPreVote(Nanos now) {
  if (role_ != Role::FOLLOWER) becomeFollower(now, false);
  if (leader_) {
    leader_.reset();
    failUnconfirmedFollowerReads();
  }
  preVoting_ = true;
  preVoteRound_ = std::max(promised_.round, highestRoundSeen_) + 1;
  preVoteGrants_ = bit(options_.self);
  preVoteSentAt_ = now;
  preVoteDeadline_ = now + randomElectionTimeout();
  broadcast(PreVoteRequest{preVoteRound_, decidedSlot_}, false);
  if (isMajority(preVoteGrants_) && mayPromiseNewBallot(options_.self, now)) startCampaign(now);
}

void Replica::startCampaign(Nanos now) {
  preVoting_ = false;
  handoffBallot_.reset();
  ballot_ = Ballot{std::max(promised_.round, highestRoundSeen_) + 1, options_.self};
  role_ = Role::CANDIDATE;
  leader_.reset();
  // The ballot is durable before any Prepare leaves, so a restart never reuses it.
  raisePromise(ballot_);
  campaign_ = Campaign{};
  campaign_.fromSlot = decidedSlot_ + 1;
  campaign_.lastSentAt = now;
  campaign_.deadline = now + randomElectionTimeout();
  broadcast(Prepare{ballot_, campaign_.fromSlot}, true);
}

void Replica::maybeWinCampaign(Nanos now) {
  if (role_ != Role::CANDIDATE || !campaign_.ownPromiseDurable) return;
  if (isMajority(campaign_.promisedMask | bit(options_.self))) becomeLeader(now);
}

void Replica::foldVote(const LogEntry& vote) {
  auto [it, inserted] = campaign_.chosen.emplace(vote.slot, vote);
  if (inserted) return;
  // The highest-ballot vote per slot is the only value that may already be chosen.
  const bool replace = breaks(RuleBreaker::LEADER_PICKS_ANY_VALUE)
                           ? vote.ballot < it->second.ballot
                           : vote.ballot > it->second.ballot;
  if (replace) it->second = vote;
}

void Replica::becomeLeader(Nanos now) {
  for (auto it = log_.lower_bound(campaign_.fromSlot); it != log_.end(); ++it) {
    foldVote(it->second);
  }
  role_ = Role::LEADER;
  leader_ = options_.self;
  leaderSince_ = now;
  lastBusyAt_ = now;
  maxPromisedSlot_ = campaign_.chosen.empty() ? 0 : campaign_.chosen.rbegin()->first;
  recovery_.clear();
  for (Slot slot = decidedSlot_ + 1; slot <= maxPromisedSlot_; ++slot) {
    auto it = campaign_.chosen.find(slot);
    // A hole nobody in the majority voted for cannot have been chosen: fill it with a no-op.
    recovery_.emplace_back(slot, it == campaign_.chosen.end() ? Value{} : it->second.value);
  }
  nextSlot_ = std::max(maxPromisedSlot_, decidedSlot_) + 1;
  campaign_ = Campaign{};
  inFlight_.clear();
  leaseUntil_ = 0;
  heartbeatRounds_.clear();
  confirmedSequence_ = heartbeatSequence_;
  lastHeardFrom_.assign(options_.memberCount, now);
  sendHeartbeat(now);
  proposeMore();
}

void Replica::becomeFollower(Nanos now, bool resetContact) {
  if (role_ == Role::LEADER) {
    for (std::string& command : queue_)
      dropped_.push_back(std::move(command));
    queue_.clear();
    queuedBytes_ = 0;
    inFlight_.clear();
    recovery_.clear();
    heartbeatRounds_.clear();
    heartbeatWanted_ = false;
    leaseUntil_ = 0;
    failLeaderReads();
  }
  role_ = Role::FOLLOWER;
  leader_.reset();
  campaign_ = Campaign{};
  preVoting_ = false;
  if (resetContact) lastLeaderContact_ = now;
  electionDeadline_ = lastLeaderContact_ + randomElectionTimeout();
}

void Replica::followLeader(MemberIndex leader, Ballot ballot, Nanos now) {
  if (ballot > promised_) raisePromise(ballot);
  if (role_ != Role::FOLLOWER) becomeFollower(now, true);
  if (leader_ != leader) {
    failUnconfirmedFollowerReads();
    leader_ = leader;
  }
  preVoting_ = false;
  lastLeaderContact_ = now;
  electionDeadline_ = now + electionDraw_;
}

void Replica::raisePromise(Ballot ballot) {
  promised_ = ballot;
  pendingPromise_ = ballot;
  noteRound(ballot);
}

void Replica::noteRound(const Ballot& ballot) {
  highestRoundSeen_ = std::max(highestRoundSeen_, ballot.round);
}

// ---------------------------------------------------------------------------------------------
// Message handlers

void Replica::onPreVoteRequest(MemberIndex from, const PreVoteRequest& m, Nanos now) {
  send(from, PreVoteReply{m.round, grantsPreVote(from, m.decidedSlot, now), decidedSlot_}, false);
}

void Replica::onPreVoteReply(MemberIndex from, const PreVoteReply& m, Nanos now) {
  peerDecidedSlot_ = std::max(peerDecidedSlot_, m.decidedSlot);
  if (role_ != Role::LEADER && m.decidedSlot > decidedSlot_ + options_.maxFetchSlots) {
    maybeFetch(from, now);
  }
  if (!preVoting_ || m.round != preVoteRound_ || !m.granted) return;
  preVoteGrants_ |= bit(from);
  if (isMajority(preVoteGrants_) && mayPromiseNewBallot(options_.self, now)) startCampaign(now);
}

void Replica::onPrepare(MemberIndex from, const Prepare& m, Nanos now) {
  if (m.ballot.member != from || m.ballot.round == 0 || m.fromSlot == 0) {
    ++ignoredMessages_;
    return;
  }
  noteRound(m.ballot);
  if (recovering_) return;  // it may have forgotten promises and votes: no Promise yet
  const bool belowPromise = m.ballot < promised_;
  if (belowPromise && !breaks(RuleBreaker::ACCEPTOR_IGNORES_PROMISE)) {
    send(from, Rejected{promised_}, false);
    return;
  }
  if (m.ballot > promised_) {
    if (!mayPromiseNewBallot(from, now)) return;  // it retries once the lease is over
    // Bounds the Promise: a candidate this far behind catches up before it can lead.
    if (m.fromSlot + options_.maxFetchSlots < decidedSlot_) return;
    raisePromise(m.ballot);
    if (role_ != Role::FOLLOWER) {
      becomeFollower(now, true);
    } else {
      if (leader_) {
        leader_.reset();
        failUnconfirmedFollowerReads();
      }
      preVoting_ = false;
      lastLeaderContact_ = now;
      electionDeadline_ = now + electionDraw_;
    }
  }
  Promise promise;
  promise.ballot = m.ballot;
  promise.fromSlot = m.fromSlot;
  promise.logStart = logStart_;
  promise.decidedSlot = decidedSlot_;
  if (m.fromSlot >= logStart_) {
    for (auto it = log_.lower_bound(m.fromSlot); it != log_.end(); ++it) {
      promise.accepted.push_back(it->second);
    }
  }
  send(from, std::move(promise), true);
}

void Replica::onPromise(MemberIndex from, const Promise& m, Nanos now) {
  if (role_ != Role::CANDIDATE || m.ballot != ballot_ || m.fromSlot != campaign_.fromSlot) return;
  Slot previous = m.fromSlot - 1;
  const Slot limit = m.fromSlot + options_.maxFetchSlots + options_.acceptAheadSlots;
  for (const LogEntry& entry : m.accepted) {
    if (entry.slot <= previous || entry.slot > limit) {
      ++ignoredMessages_;
      return;
    }
    previous = entry.slot;
  }
  peerDecidedSlot_ = std::max(peerDecidedSlot_, m.decidedSlot);
  if (m.logStart > campaign_.fromSlot) {
    // The acceptor discarded slots this candidate never learned: it must catch up first.
    becomeFollower(now, true);
    maybeFetch(from, now);
    return;
  }
  if (campaign_.promisedMask & bit(from)) return;
  campaign_.promisedMask |= bit(from);
  for (const LogEntry& entry : m.accepted)
    foldVote(entry);
  maybeWinCampaign(now);
}

void Replica::onAccept(MemberIndex from, const Accept& m, Nanos now) {
  if (m.ballot.member != from || m.ballot.round == 0 || m.slot == 0) {
    ++ignoredMessages_;
    return;
  }
  noteRound(m.ballot);
  const bool belowPromise = m.ballot < promised_;
  if (belowPromise && !breaks(RuleBreaker::ACCEPTOR_IGNORES_PROMISE)) {
    send(from, Rejected{promised_}, false);
    return;
  }
  if (!belowPromise) followLeader(from, m.ballot, now);
  if (recovering_) {
    // Learns the decided index, never votes: a vote of a member that forgot its promises could
    // complete a quorum for a value some other ballot already excluded.
    if (!belowPromise) learnDecided(from, m.ballot, m.decidedSlot, now);
    return;
  }
  if (m.slot > decidedSlot_ + options_.acceptAheadSlots) return;  // catch up first
  // A slot already decided here keeps its value; voting for it again changes nothing.
  if (m.slot > decidedSlot_ && m.slot >= logStart_) {
    auto it = log_.find(m.slot);
    if (it == log_.end() || it->second.ballot != m.ballot || it->second.value != m.value) {
      LogEntry vote{m.slot, m.ballot, m.value};
      pendingLog_[m.slot] = vote;
      log_[m.slot] = std::move(vote);
    }
  }
  send(from, Accepted{m.ballot, m.slot}, true);
  if (!belowPromise) learnDecided(from, m.ballot, m.decidedSlot, now);
}

void Replica::onAccepted(MemberIndex from, const Accepted& m, Nanos now) {
  if (role_ != Role::LEADER || m.ballot != ballot_) return;
  lastHeardFrom_[from] = now;
  countVote(from, m.slot);
}

void Replica::onRejected(MemberIndex, const Rejected& m, Nanos now) {
  noteRound(m.promised);
  // Someone promised a higher ballot: this ballot can no longer win anything.
  if (role_ != Role::FOLLOWER && m.promised > ballot_) becomeFollower(now, true);
}

void Replica::onHeartbeat(MemberIndex from, const Heartbeat& m, Nanos now) {
  if (m.ballot.member != from || m.ballot.round == 0) {
    ++ignoredMessages_;
    return;
  }
  noteRound(m.ballot);
  if (m.ballot < promised_) {
    send(from, Rejected{promised_}, false);
    return;
  }
  followLeader(from, m.ballot, now);
  if (recovering_) {
    // An ack is a lease vote: this member may have forgotten that it promised a newer ballot,
    // and its ack could complete a quorum for a deposed leader's lease (and its stale reads).
    // It learns the decided index and stays silent.
    learnDecided(from, m.ballot, m.decidedSlot, now);
    return;
  }
  grantedLeaseUntil_ = now + leaseForAcceptorsNs_;
  grantedLeaseHolder_ = from;
  grantedLeaseBallot_ = m.ballot;
  learnDecided(from, m.ballot, m.decidedSlot, now);
  send(from, HeartbeatAck{m.ballot, m.sequence, decidedSlot_}, false);
}

void Replica::onHeartbeatAck(MemberIndex from, const HeartbeatAck& m, Nanos now) {
  if (role_ != Role::LEADER || m.ballot != ballot_) return;
  lastHeardFrom_[from] = now;
  peerAckedDecided_[from] = m.decidedSlot;
  for (HeartbeatRound& round : heartbeatRounds_) {
    if (round.sequence != m.sequence) continue;
    round.acks |= bit(from);
    if (isMajority(round.acks) && round.sequence > confirmedSequence_) {
      confirmedSequence_ = round.sequence;
      leaseUntil_ = std::max(leaseUntil_, round.sentAt + leaseDuration());
    }
    break;
  }
  while (!heartbeatRounds_.empty() && heartbeatRounds_.front().sequence <= confirmedSequence_) {
    heartbeatRounds_.pop_front();
  }
}

void Replica::onFetchRequest(MemberIndex from, const FetchRequest& m) {
  if (m.fromSlot == 0) {
    ++ignoredMessages_;
    return;
  }
  FetchReply reply;
  reply.fromSlot = m.fromSlot;
  reply.logStart = logStart_;
  reply.decidedSlot = decidedSlot_;
  if (m.fromSlot >= logStart_) {
    uint64_t bytes = 0;
    auto it = log_.find(m.fromSlot);
    for (Slot slot = m.fromSlot; slot <= decidedSlot_ && it != log_.end() && it->first == slot &&
                                 reply.entries.size() < options_.maxFetchSlots;
         ++slot, ++it) {
      const uint64_t size = valueBytes(it->second.value);
      if (!reply.entries.empty() && bytes + size > options_.maxFetchBytes) break;
      bytes += size;
      reply.entries.push_back(it->second);
    }
  }
  send(from, std::move(reply), false);
}

void Replica::onFetchReply(MemberIndex from, const FetchReply& m, Nanos now) {
  fetchInFlight_ = false;
  if (role_ == Role::LEADER) return;  // a leader knows every decided slot it needs
  Slot expected = m.fromSlot;
  for (const LogEntry& entry : m.entries) {
    if (entry.slot != expected || entry.slot > m.decidedSlot) {
      ++ignoredMessages_;
      return;
    }
    ++expected;
  }
  peerDecidedSlot_ = std::max(peerDecidedSlot_, m.decidedSlot);
  if (m.entries.empty() && m.fromSlot < m.logStart && m.fromSlot == decidedSlot_ + 1) {
    snapshotNeeded_ = SnapshotNeeded{from, m.logStart};
    return;
  }
  const Slot before = decidedSlot_;
  for (const LogEntry& entry : m.entries) {
    if (entry.slot <= decidedSlot_) continue;
    if (entry.slot != decidedSlot_ + 1) break;
    adoptDecided(entry);
  }
  if (decidedSlot_ > before && decidedSlot_ < peerDecidedSlot_) maybeFetch(from, now);
}

void Replica::onReadIndexRequest(MemberIndex from, const ReadIndexRequest& m, Nanos now) {
  if (role_ != Role::LEADER) {
    send(from, ReadIndexReply{m.requestId, false, 0}, false);
    return;
  }
  lastBusyAt_ = now;
  if (pendingReads() >= options_.maxPendingReads) return;  // the follower's read times out
  LeaderRead read;
  read.local = false;
  read.from = from;
  read.requestId = m.requestId;
  addLeaderRead(read, now);
}

void Replica::onReadIndexReply(MemberIndex from, const ReadIndexReply& m) {
  for (auto it = followerReads_.begin(); it != followerReads_.end(); ++it) {
    if (it->requestId != m.requestId || it->leader != from || it->indexKnown) continue;
    if (m.ok) {
      it->indexKnown = true;
      it->readIndex = m.readIndex;
    } else {
      readOutcomes_.push_back(ReadOutcome{it->id, false, 0, ReadFailure::NOT_LEADER, leader_});
      followerReads_.erase(it);
    }
    return;
  }
}

void Replica::onHandoff(MemberIndex from, const Handoff& m, Nanos now) {
  if (m.ballot.member != from || m.ballot.round == 0 || m.target >= options_.memberCount) {
    ++ignoredMessages_;
    return;
  }
  noteRound(m.ballot);
  // Only the grant made to this very leadership: a Handoff delayed past a newer leadership of the
  // same member must not release the newer grant.
  if (grantedLeaseHolder_ != from || grantedLeaseBallot_ != m.ballot) return;
  grantedLeaseUntil_ = 0;
  if (role_ != Role::FOLLOWER || m.ballot < promised_) return;
  if (leader_ == from) {
    leader_.reset();
    failUnconfirmedFollowerReads();
  }
  if (m.target != options_.self || recovering_) return;
  // The restart window still holds: a member that may have forgotten a grant waits it out, then
  // campaigns (tick).
  if (mayPromiseNewBallot(options_.self, now)) {
    startCampaign(now);
  } else {
    handoffBallot_ = m.ballot;
    handoffUntil_ = now + options_.electionTimeoutNs;
  }
}

// ---------------------------------------------------------------------------------------------
// Leader

void Replica::proposeMore() {
  while (role_ == Role::LEADER && windowOpen()) {
    if (!recovery_.empty()) {
      auto [slot, value] = std::move(recovery_.front());
      recovery_.pop_front();
      startSlot(slot, std::move(value));
    } else if (queue_.empty() && nextSlot_ <= fillThrough_) {
      startSlot(nextSlot_++, Value{});
    } else if (!queue_.empty()) {
      Value batch;
      uint64_t bytes = 0;
      while (!queue_.empty() && batch.commands.size() < options_.maxBatchCommands) {
        const uint64_t size = queue_.front().size();
        if (!batch.commands.empty() && bytes + size > options_.maxBatchBytes) break;
        bytes += size;
        batch.commands.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queuedBytes_ -= bytes;
      startSlot(nextSlot_++, std::move(batch));
    } else {
      break;
    }
  }
}

void Replica::startSlot(Slot slot, Value value) {
  KJ_ASSERT(slot == decidedSlot_ + inFlight_.size() + 1, "leader slots must be contiguous", slot);
  LogEntry vote{slot, ballot_, value};
  pendingLog_[slot] = vote;
  log_[slot] = std::move(vote);
  // The Accepts leave before the leader's own vote is durable; that vote counts only later.
  broadcast(Accept{ballot_, slot, value, decidedSlot_}, false);
  InFlight& flight = inFlight_[slot];
  flight.value = std::move(value);
  flight.lastSentAt = lastNow_;
}

void Replica::countVote(MemberIndex voter, Slot slot) {
  auto it = inFlight_.find(slot);
  if (it == inFlight_.end() || it->second.decided) return;
  it->second.votes |= bit(voter);
  if (!isMajority(it->second.votes)) return;
  it->second.decided = true;
  const Slot before = decidedSlot_;
  while (!inFlight_.empty() && inFlight_.begin()->second.decided) {
    KJ_ASSERT(inFlight_.begin()->first == decidedSlot_ + 1);
    ++decidedSlot_;
    inFlight_.erase(inFlight_.begin());
  }
  // Tell the followers at once rather than at the next heartbeat: a follower answers its own
  // apps' writes only once it applies them.
  if (decidedSlot_ != before) heartbeatWanted_ = true;
}

void Replica::sendHeartbeat(Nanos now) {
  heartbeatWanted_ = false;
  lastHeartbeatAt_ = now;
  HeartbeatRound round;
  round.sequence = ++heartbeatSequence_;
  round.sentAt = now;
  round.acks = bit(options_.self);
  // The leader's own acceptor refuses other proposers like any acker.
  grantedLeaseUntil_ = now + leaseForAcceptorsNs_;
  grantedLeaseHolder_ = options_.self;
  grantedLeaseBallot_ = ballot_;
  if (isMajority(round.acks)) {
    confirmedSequence_ = round.sequence;
    leaseUntil_ = std::max(leaseUntil_, now + leaseDuration());
  } else {
    heartbeatRounds_.push_back(round);
    if (heartbeatRounds_.size() > MAX_HEARTBEAT_ROUNDS) heartbeatRounds_.pop_front();
  }
  broadcast(Heartbeat{ballot_, round.sequence, decidedSlot_}, false);
}

Nanos Replica::leaderHeartbeatInterval(Nanos now) const {
  const Nanos idle = options_.idleHeartbeatIntervalNs;
  if (idle == 0 || now - lastBusyAt_ < options_.electionTimeoutNs || !queue_.empty() ||
      !recovery_.empty() || !leaderReads_.empty()) {
    return options_.heartbeatIntervalNs;
  }
  for (const auto& [slot, flight] : inFlight_) {
    if (!flight.decided) return options_.heartbeatIntervalNs;
  }
  return idle;
}

void Replica::leaderTick(Nanos now) {
  const Nanos interval = options_.heartbeatIntervalNs;
  if (now - lastHeartbeatAt_ >= leaderHeartbeatInterval(now)) sendHeartbeat(now);
  for (auto& [slot, flight] : inFlight_) {
    if (flight.decided || now - flight.lastSentAt < interval) continue;
    flight.lastSentAt = now;
    for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
      if (peer == options_.self || (flight.votes & bit(peer))) continue;
      send(peer, Accept{ballot_, slot, flight.value, decidedSlot_}, false);
    }
  }
  // A leader that lost its majority steps down, so its clients go elsewhere.
  if (now - leaderSince_ >= options_.electionTimeoutNs) {
    uint64_t heard = bit(options_.self);
    for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
      if (now - lastHeardFrom_[peer] < options_.electionTimeoutNs) heard |= bit(peer);
    }
    if (!isMajority(heard)) becomeFollower(now, true);
  }
}

Nanos Replica::leaseDuration() const {
  const double lease = static_cast<double>(options_.leaderLeaseNs);
  if (breaks(RuleBreaker::LEASE_NOT_SHORTENED)) return options_.leaderLeaseNs;
  // The leader's clock may run slow by the drift bound and an acker's fast: its lease must end
  // before any acker's refusal does.
  const double drift = options_.maxClockDrift;
  return static_cast<Nanos>(std::floor(lease * (1 - drift) / (1 + drift)));
}

// ---------------------------------------------------------------------------------------------
// Learner

void Replica::learnDecided(MemberIndex leader, const Ballot& ballot, Slot leaderDecided,
                           Nanos now) {
  if (role_ == Role::LEADER) return;
  peerDecidedSlot_ = std::max(peerDecidedSlot_, leaderDecided);
  while (decidedSlot_ < leaderDecided) {
    auto it = log_.find(decidedSlot_ + 1);
    // Only a vote in the leader's own ballot is the value that leader decided.
    if (it == log_.end()) break;
    if (it->second.ballot != ballot && !breaks(RuleBreaker::HEARTBEAT_DECIDES_OTHER_BALLOT)) break;
    ++decidedSlot_;
  }
  if (decidedSlot_ < leaderDecided) maybeFetch(leader, now);
}

void Replica::adoptDecided(const LogEntry& entry) {
  auto it = log_.find(entry.slot);
  if (it == log_.end() || it->second.value != entry.value) {
    // Replacing a vote by the chosen value is safe when its ballot does not go down: any later
    // Phase 1 that picks it picks the chosen value.
    LogEntry decided{entry.slot, entry.ballot, entry.value};
    if (it != log_.end() && it->second.ballot > decided.ballot) decided.ballot = it->second.ballot;
    pendingLog_[entry.slot] = decided;
    log_[entry.slot] = std::move(decided);
  }
  decidedSlot_ = entry.slot;
}

void Replica::maybeFetch(MemberIndex peer, Nanos now) {
  if (fetchInFlight_) return;
  fetchPeer_ = peer;
  fetchInFlight_ = true;
  fetchSentAt_ = now;
  send(peer, FetchRequest{decidedSlot_ + 1}, false);
}

// ---------------------------------------------------------------------------------------------
// Reads

void Replica::addLeaderRead(LeaderRead read, Nanos now) {
  const bool promisedSlotsDecided =
      decidedSlot_ >= maxPromisedSlot_ || breaks(RuleBreaker::LEASE_READ_IGNORES_PROMISED_SLOTS);
  if (now < leaseUntil_ && promisedSlotsDecided) {
    read.readIndex = decidedSlot_;
    read.needSequence = 0;
  } else {
    read.readIndex = std::max(decidedSlot_, maxPromisedSlot_);
    read.needSequence = heartbeatSequence_ + 1;  // a round sent after this read arrived
    heartbeatWanted_ = true;
  }
  read.deadline = now + options_.readTimeoutNs;
  leaderReads_.push_back(read);
}

void Replica::failLeaderReads() {
  for (const LeaderRead& read : leaderReads_) {
    if (read.local) {
      readOutcomes_.push_back(ReadOutcome{read.id, false, 0, ReadFailure::NOT_LEADER, {}});
    } else {
      send(read.from, ReadIndexReply{read.requestId, false, 0}, false);
    }
  }
  leaderReads_.clear();
}

void Replica::failUnconfirmedFollowerReads() {
  auto unconfirmed = [](const FollowerRead& read) { return !read.indexKnown; };
  for (const FollowerRead& read : followerReads_) {
    if (unconfirmed(read)) {
      readOutcomes_.push_back(ReadOutcome{read.id, false, 0, ReadFailure::NOT_LEADER, {}});
    }
  }
  std::erase_if(followerReads_, unconfirmed);
}

void Replica::resolveReads(Slot appliedThrough) {
  std::erase_if(leaderReads_, [&](const LeaderRead& read) {
    if (confirmedSequence_ < read.needSequence) return false;
    if (!read.local) {
      send(read.from, ReadIndexReply{read.requestId, true, read.readIndex}, false);
      return true;
    }
    if (read.readIndex > appliedThrough) return false;
    readOutcomes_.push_back(ReadOutcome{read.id, true, read.readIndex, ReadFailure::NONE, leader_});
    return true;
  });
  std::erase_if(followerReads_, [&](const FollowerRead& read) {
    if (!read.indexKnown || read.readIndex > appliedThrough) return false;
    readOutcomes_.push_back(ReadOutcome{read.id, true, read.readIndex, ReadFailure::NONE, leader_});
    return true;
  });
}

void Replica::expireReads(Nanos now) {
  std::erase_if(leaderReads_, [&](const LeaderRead& read) {
    if (now < read.deadline) return false;
    if (read.local) {
      readOutcomes_.push_back(ReadOutcome{read.id, false, 0, ReadFailure::TIMEOUT, leader_});
    }
    return true;
  });
  std::erase_if(followerReads_, [&](const FollowerRead& read) {
    if (now < read.deadline) return false;
    readOutcomes_.push_back(ReadOutcome{read.id, false, 0, ReadFailure::TIMEOUT, leader_});
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers

void Replica::send(MemberIndex to, PeerMessage message, bool afterPersist) {
  (afterPersist ? sendAfter_ : sendBefore_).push_back(OutgoingMessage{to, std::move(message)});
}

void Replica::broadcast(const PeerMessage& message, bool afterPersist) {
  for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
    if (peer != options_.self) send(peer, message, afterPersist);
  }
}

Nanos Replica::randomElectionTimeout() {
  electionDraw_ =
      options_.electionTimeoutNs +
      static_cast<Nanos>(prng_.uniform(0, static_cast<uint64_t>(options_.electionTimeoutNs)));
  return electionDraw_;
}

bool Replica::isMajority(uint64_t mask) const {
  return static_cast<uint32_t>(std::popcount(mask)) * 2 > options_.memberCount;
}

}  // namespace synod::election

namespace synod::election {

// ---------------------------------------------------------------------------------------------
// Snapshots and recovery

void Replica::installSnapshot(Slot slot, Nanos now) {
  KJ_ASSERT(!readyOutstanding_, "installSnapshot() with a Ready outstanding");
  KJ_ASSERT(slot > appliedSlot_, "a snapshot must be ahead of the applied state", slot,
            appliedSlot_);
  lastNow_ = std::max(lastNow_, now);
  if (role_ != Role::FOLLOWER) becomeFollower(lastNow_, false);
  // Every slot <= slot is decided and its effect is in the snapshot; the votes and values the log
  // held for them are gone from the store too (the shell removed them in the same commit).
  log_.erase(log_.begin(), log_.upper_bound(slot));
  pendingLog_.erase(pendingLog_.begin(), pendingLog_.upper_bound(slot));
  // Slots decided above the snapshot stay decided: log_ keeps their values.
  decidedSlot_ = std::max(decidedSlot_, slot);
  appliedSlot_ = slot;
  discardedThrough_ = slot;
  logStart_ = slot + 1;
  snapshotNeeded_.reset();
  fetchInFlight_ = false;
  if (decidedSlot_ < peerDecidedSlot_) maybeFetch(leader_ ? *leader_ : fetchPeer_, lastNow_);
}

void Replica::holdLogFrom(std::optional<Slot> slot) {
  holdLogFrom_ = slot;
}

RecoveryProgress Replica::recoveryProgress() const {
  RecoveryProgress progress;
  progress.recovering = recovering_;
  progress.answers = static_cast<uint32_t>(recoveryAnswers_.size());
  progress.answersNeeded = recovering_ ? answersNeeded() : 0;
  progress.targetKnown = recoveryTarget_.has_value();
  progress.targetSlot = recoveryTarget_.value_or(0);
  return progress;
}

void Replica::sendRecoveryQuery(Nanos now) {
  recoverySentAt_ = now;
  const RecoveryQuery query{recoveryNonce_, recoveryTarget_.value_or(0)};
  for (MemberIndex peer = 0; peer < options_.memberCount; ++peer) {
    if (peer == options_.self || recoveryAnswers_.count(peer)) continue;
    send(peer, query, false);
  }
}

void Replica::recoveryTick(Nanos now) {
  if (!recoveryTarget_) {
    if (recoverySentAt_ == 0 || now - recoverySentAt_ >= options_.heartbeatIntervalNs) {
      sendRecoveryQuery(now);
    }
    return;
  }
  if (decidedSlot_ < *recoveryTarget_) {
    // Asks the leader (every election timeout) to fill the slots up to the target with no-ops.
    if (leader_ && now - recoverySentAt_ >= options_.electionTimeoutNs) {
      recoverySentAt_ = now;
      send(*leader_, RecoveryQuery{recoveryNonce_, *recoveryTarget_}, false);
    }
    return;
  }
  if (!recoveryNewGroup_ && now < recoveryNotBefore_) return;
  recovering_ = false;
  recovered_ = recoveryNewGroup_ ? RecoveryOutcome::NEW_GROUP : RecoveryOutcome::CAUGHT_UP;
  recoveryAnswers_.clear();
  electionDeadline_ = std::max(electionDeadline_, lastLeaderContact_ + randomElectionTimeout());
}

void Replica::onRecoveryQuery(MemberIndex from, const RecoveryQuery& m) {
  if (m.nonce == 0) {
    ++ignoredMessages_;
    return;
  }
  if (role_ == Role::LEADER && m.fillThrough > fillThrough_) {
    fillThrough_ = std::min(m.fillThrough, decidedSlot_ + options_.acceptAheadSlots);
  }
  RecoveryReply reply;
  reply.nonce = m.nonce;
  reply.recovering = recovering_;
  reply.promised = promised_;
  reply.decidedSlot = decidedSlot_;
  reply.lastLogSlot = log_.empty() ? 0 : log_.rbegin()->first;
  reply.fresh = promised_ == Ballot{} && log_.empty() && decidedSlot_ == 0;
  send(from, reply, false);
}

void Replica::onRecoveryReply(MemberIndex from, const RecoveryReply& m, Nanos now) {
  if (m.promised.round != 0 && m.promised.member >= options_.memberCount) {
    ++ignoredMessages_;
    return;
  }
  noteRound(m.promised);
  if (!recovering_ || m.nonce != recoveryNonce_ || recoveryTarget_) return;
  recoveryAnswers_[from] = m;
  if (recoveryAnswers_.size() < answersNeeded()) return;

  bool allFresh = true;
  Ballot highestPromise;
  Slot target = 0;
  MemberIndex mostDecided = from;
  Slot mostDecidedSlot = 0;
  for (const auto& [member, answer] : recoveryAnswers_) {
    allFresh = allFresh && answer.fresh;
    highestPromise = std::max(highestPromise, answer.promised);
    target = std::max({target, answer.decidedSlot, answer.lastLogSlot});
    if (answer.decidedSlot >= mostDecidedSlot) {
      mostDecidedSlot = answer.decidedSlot;
      mostDecided = member;
    }
  }
  recoveryNewGroup_ = allFresh;
  recoveryTarget_ = allFresh ? 0 : target;
  // A promise it gave before losing its state may be part of a finished Phase 1: never accept
  // below what the majority it asked has promised.
  if (highestPromise > promised_) raisePromise(highestPromise);
  peerDecidedSlot_ = std::max(peerDecidedSlot_, mostDecidedSlot);
  if (decidedSlot_ < mostDecidedSlot) maybeFetch(leader_ ? *leader_ : mostDecided, now);
  recoveryTick(now);
}

}  // namespace synod::election
