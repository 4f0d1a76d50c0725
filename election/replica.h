// The Multi-Paxos core: acceptor, proposer and learner of one member, with the group's leader
// election and leader lease. A pure state machine: no I/O, no clocks, no threads. Time comes in as
// `now` (CLOCK_BOOTTIME nanoseconds, or the simulator's clock for this member), randomness from the
// injected Prng, peer messages through step(), commands through propose().
//
// Driving it (the shell's loop, one thread):
//
//   core.tick(now) / core.step(from, message, now) / core.propose(...) / core.read(...)
//   if (core.hasReady()) {
//     Ready r = core.ready();
//     send r.sendBeforePersist                    // may leave at once
//     apply r.apply in order; then serve r.reads  // in-memory view; reads need the applied state
//     persist r.promised, r.accepted, r.discardLogThrough in ONE group commit (async is fine)
//     ... once durable: send r.sendAfterPersist, then core.advance(r)
//   }
//
// At most one Ready is outstanding: ready() must not be called again before advance() of the
// previous one, but tick/step/propose/read may be called in between (they accumulate into the next
// Ready). A crash loses whatever was not yet durable; restart from the store (PersistedState) with
// a new Replica. Nothing the core emits before the persist depends on state that a crash could
// take back: Promise, Accepted (votes) only leave after their persist; the leader's own vote
// counts only after advance() reports its accept durable.
//
// Protocol summary (ARCHITECTURE.md "Protocol notes"):
// - Ballot = (round, member). Phase 1 runs once per leadership from the first undecided slot; the
//   new leader re-proposes, per slot, the value of the highest ballot reported in the majority's
//   promises (its own included) and fills holes with no-ops.
// - Phase 2 is pipelined: at most `pipelineWindow` slots undecided at once; queued commands are
//   batched into one slot at each ready().
// - Followers mark a slot decided from the leader's decided index (heartbeat or Accept) only if
//   they accepted that slot in the same ballot; otherwise they fetch the decided value.
// - A member that hears no leader for a randomized election timeout first asks the others
//   (pre-vote) whether they lost the leader too; only with a majority does it start Phase 1.
// - Leader lease: an acceptor that acks a heartbeat at its local time t refuses other proposers'
//   Phase 1 until t + leaderLease. The leader holds the lease once a majority acked a heartbeat,
//   from that heartbeat's send time, for leaderLease * (1 - drift) / (1 + drift), so its lease ends
//   first even if its clock is slow and theirs fast. A member refuses all Phase 1 (its own too)
//   for leaderLease * (1 + drift) after it starts, since it forgot whom it acked.
// - Reads: at the leader with a valid lease, once every slot reported in its Phase-1 promises is
//   decided, a read is ready at the current decided index (lease read). Otherwise read-index: the
//   leader confirms its leadership with a majority heartbeat round sent after the read arrived;
//   followers ask the leader for the index. A read is reported ready once the member applied the
//   index, or in the same Ready that applies it.
//
// Recovery (ARCHITECTURE.md: a member with an empty data dir): an acceptor that lost its state may
// have forgotten promises and votes, and voting on would let two different values be chosen. A
// member whose store was created empty starts with `recovering` set (the shell keeps the flag
// durable until Ready::recovered reports the end) and does not vote: no Promise, no Accepted, no
// pre-vote grant, no campaign. It follows the leader and catches up like any learner, and asks the
// others what they hold (RecoveryQuery) until it has answers from a majority of the group not
// counting itself — such a set meets every quorum the lost state could have been part of. Then:
// - every answer fresh (nothing promised, voted or decided anywhere): the group is new; it votes
//   at once;
// - otherwise it raises its promise to the highest promise reported, waits until it has decided
//   every slot up to the highest slot any answer holds a vote or decided value for, and waits out
//   two maximal election timeouts (drift included) since its start, so no campaign still counting
//   a promise it gave before losing its state can be running; then it votes.
// Assumes the members that lost their state recover one at a time (answers from another member
// that is still recovering are counted, and would hide votes both forgot).
//
// Bad peer input (wrong member index, malformed message) is ignored and counted; it never changes
// state or crashes. A broken internal invariant is a bug: KJ_ASSERT.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "election/messages.h"
#include "election/prng.h"
#include "election/types.h"

namespace synod::election {

enum class Role { FOLLOWER, CANDIDATE, LEADER };
const char* roleName(Role role);

// Test-only switches that break one protocol rule each, so the simulator's checkers can be shown
// to catch the breakage. Never set outside tests.
enum class RuleBreaker {
  NONE,
  ACCEPTOR_IGNORES_PROMISE,           // promises and accepts below its promise
  LEADER_PICKS_ANY_VALUE,             // re-proposes the lowest-ballot reported value
  LEASE_NOT_SHORTENED,                // lease = send time + leaderLease, no drift margin
  LEASE_READ_IGNORES_PROMISED_SLOTS,  // lease reads before the promised slots are decided
  HEARTBEAT_DECIDES_OTHER_BALLOT,     // marks slots decided from any ballot's heartbeat
  HANDOFF_KEEPS_LEASE,                // sends Handoff but keeps leading, lease included
};

struct Options {
  MemberIndex self = 0;
  uint32_t memberCount = 1;  // 1..MAX_MEMBERS; a group of one elects itself at once

  Nanos heartbeatIntervalNs = 100 * NANOS_PER_MS;
  // A leader with nothing to replicate, no read and no proposal for an election timeout heartbeats
  // this often instead (0: heartbeatIntervalNs). Heartbeats then only keep followers from
  // campaigning and renew the leader lease, so both bounds below must hold; any proposal or read
  // returns to heartbeatIntervalNs at once. Saves an idle group most of its wake-ups.
  Nanos idleHeartbeatIntervalNs = 0;
  // Minimum; each member draws its timeout from [electionTimeoutNs, 2 * electionTimeoutNs).
  Nanos electionTimeoutNs = 1000 * NANOS_PER_MS;
  Nanos leaderLeaseNs = 800 * NANOS_PER_MS;
  // Bound on |clock rate - 1| between any two members' clocks, e.g. 0.01.
  double maxClockDrift = 0.01;

  uint32_t pipelineWindow = 64;  // slots proposed and not yet decided, at most
  uint32_t maxBatchCommands = 4096;
  uint64_t maxBatchBytes = 4 << 20;  // a single larger command is refused (TOO_LARGE)
  // Commands queued at the leader waiting for a slot; past this propose() answers BUSY.
  uint32_t maxQueuedCommands = 65536;
  uint64_t maxQueuedBytes = 64 << 20;
  uint32_t maxPendingReads = 65536;  // past this read() answers BUSY
  Nanos readTimeoutNs = 2000 * NANOS_PER_MS;

  // Decided slots kept after they were applied, so lagging peers can fetch them.
  Slot retainedLogSlots = 100000;
  uint32_t maxFetchSlots = 512;  // per FetchReply; also how far behind a candidate may be
  uint64_t maxFetchBytes = 4 << 20;
  // An acceptor ignores Accepts more than this many slots above its decided index (a bound on its
  // memory); it catches up by fetching first. Must be >= pipelineWindow.
  Slot acceptAheadSlots = 65536;

  Nanos startTimeNs = 0;  // `now` at construction
  // The store was created empty and this member has not finished recovering (see above).
  bool recovering = false;
  RuleBreaker ruleBreaker = RuleBreaker::NONE;

  static constexpr uint32_t MAX_MEMBERS = 15;
};

// Returns a message naming the first invalid option, or nullopt.
std::optional<std::string> validateOptions(const Options& options);

// The idle heartbeat interval the daemon and the simulator use: four heartbeat intervals, but at
// least two and a half heartbeats per (minimum) election timeout and two per leader lease; 0 (off)
// when that is not longer than `heartbeat`.
Nanos derivedIdleHeartbeatInterval(Nanos heartbeat, Nanos electionTimeout, Nanos leaderLease);

// What the store holds for this member at start-up (storage/store.h StartState + forEachLogEntry).
struct PersistedState {
  Ballot promised;
  Slot appliedSlot = 0;
  // Ascending by slot. Entries <= appliedSlot are decided values kept for catch-up (the core
  // writes the decided value over a differing vote before the slot is applied); entries above are
  // this acceptor's votes.
  std::vector<LogEntry> log;
};

struct OutgoingMessage {
  MemberIndex to = 0;
  PeerMessage message;
};

using ReadId = uint64_t;

enum class ReadFailure { NONE, NOT_LEADER, TIMEOUT };

struct ReadOutcome {
  ReadId id = 0;
  bool ok = false;
  // ok: serve the read from the applied state, which already includes readIndex (after applying
  // this Ready's entries).
  Slot readIndex = 0;
  ReadFailure failure = ReadFailure::NONE;
  std::optional<MemberIndex> leaderHint;
};

struct StatusChange {
  Role role = Role::FOLLOWER;
  Ballot ballot;
  std::optional<MemberIndex> leader;
};

// Catch-up hook: a peer no longer holds the slots this member needs (it discarded them). Until
// snapshots exist the member stays behind and keeps reporting this.
struct SnapshotNeeded {
  MemberIndex peer = 0;
  Slot peerLogStart = 0;
};

enum class RecoveryOutcome {
  NEW_GROUP,  // a majority of the others never promised or voted: the group is new
  CAUGHT_UP,  // caught up with what a majority of the others hold
};
const char* recoveryOutcomeName(RecoveryOutcome outcome);

// Where a recovering member stands, for status and logs.
struct RecoveryProgress {
  bool recovering = false;
  uint32_t answers = 0;  // distinct other members that answered the current query round
  uint32_t answersNeeded = 0;
  bool targetKnown = false;  // enough answers: waiting for targetSlot and the time window
  Slot targetSlot = 0;
};

struct Ready {
  // --- Persist, in one group commit ---
  std::optional<Ballot> promised;
  // Votes and decided values to store (replacing any earlier entry of the slot), ascending.
  std::vector<LogEntry> accepted;
  // The core no longer needs slots <= this. The shell may delete them once its applied state
  // covering them is durable (e.g. in the same commit as that applied state), never earlier:
  // an acceptor that forgets a vote for a slot it has not durably applied can break agreement.
  std::optional<Slot> discardLogThrough;

  // --- Send ---
  std::vector<OutgoingMessage> sendBeforePersist;  // the leader's Accepts, heartbeats, replies
  std::vector<OutgoingMessage> sendAfterPersist;   // every Promise and Accepted

  // --- Apply, in this order, contiguous from appliedSlot() + 1 ---
  std::vector<LogEntry> apply;

  // --- Notify ---
  std::vector<ReadOutcome> reads;
  // Commands propose() queued that will never be decided: leadership ended before they got a
  // slot. (Commands already in a slot have an unknown outcome; the shell's deadline covers them.)
  std::vector<std::string> droppedCommands;
  std::optional<StatusChange> status;
  std::optional<SnapshotNeeded> snapshotNeeded;
  // Recovery ended in this Ready: the shell makes that durable (with or after this Ready's
  // promise) so a restart does not recover again. Losing it in a crash only repeats recovery.
  std::optional<RecoveryOutcome> recovered;

  bool needsPersist() const { return promised || !accepted.empty() || discardLogThrough; }
};

struct ProposeResult {
  enum Status { QUEUED, NOT_LEADER, BUSY, TOO_LARGE };
  Status status = QUEUED;
  std::optional<MemberIndex> leaderHint;  // NOT_LEADER: the leader this member knows, if any
};

struct ReadStart {
  enum Status { PENDING, NOT_LEADER, BUSY };
  Status status = PENDING;  // PENDING: a ReadOutcome with this id follows in a later Ready
  std::optional<MemberIndex> leaderHint;
};

class Replica {
 public:
  // Throws std::invalid_argument naming the problem if the options or the persisted state are
  // invalid. `prng` must outlive the Replica.
  Replica(const Options& options, const PersistedState& persisted, Prng& prng);

  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Timers: heartbeats, election timeouts, retransmissions, read timeouts. Call at least every
  // heartbeatIntervalNs / 2; `now` never decreases.
  void tick(Nanos now);
  // The earliest local time at which tick() may have something to do, given the state as of the
  // last input: a shell may sleep until then instead of ticking every heartbeatIntervalNs / 2.
  // Exact for a quiet follower (its election deadline) and a quiet leader (its next heartbeat, or
  // the first time it could find its majority silent); in every other state (candidate, pre-vote,
  // hand-off, recovery, reads, fetches, undecided slots) it asks for the usual cadence,
  // lastNow + heartbeatIntervalNs / 2. Valid until the next tick, step, propose, read,
  // transferLeadership, installSnapshot, ready or advance: ask again after each. May be <= now
  // (tick at once). Pure: changes nothing.
  Nanos nextTickAt() const;
  // A message from peer `from`.
  void step(MemberIndex from, const PeerMessage& message, Nanos now);
  // Queues an encoded command for the next slot (leader only).
  ProposeResult propose(std::string encodedCommand, Nanos now);
  // Starts a linearizable read; its outcome comes in a later Ready. `id` is the caller's.
  ReadStart read(ReadId id, Nanos now);
  // Leader only: hands leadership to `target`, or else to the most up-to-date peer heard from
  // within an election timeout (the most recently heard among equals). Returns false, changing
  // nothing, if this member does not lead or no such peer exists (an explicit target must be a
  // peer heard from within an election timeout).
  //
  // Steps down at once: gives up its lease (no lease read after this call), fails its pending
  // reads, reports its queued commands in droppedCommands, becomes a follower with no known
  // leader that counts `now` as leader contact (so it does not campaign itself for an election
  // timeout), and releases its own acceptor's grant to itself. Then broadcasts Handoff: acceptors
  // that granted it the lease under this ballot release the grant, and the target campaigns at
  // once without pre-vote. A lost Handoff costs an ordinary election timeout, nothing more.
  bool transferLeadership(std::optional<MemberIndex> target, Nanos now);

  // The shell installed a snapshot of the state machine at `slot` (every slot <= slot decided and
  // applied) and made it durable together with the removal of every log entry <= slot. Call only
  // with no Ready outstanding and slot > appliedSlot(). Votes above `slot` stay; a candidate
  // becomes a follower (its campaign started from a slot now covered).
  void installSnapshot(Slot slot, Nanos now);
  // Keeps slots >= `slot` in the log (no discardLogThrough reaches them) until released with
  // nullopt: a peer installing this member's snapshot fetches the slots after it from here.
  void holdLogFrom(std::optional<Slot> slot);

  bool hasReady() const;
  Ready ready();
  // `ready` must be the last Ready returned, now durable (sendAfterPersist sent or about to be).
  void advance(const Ready& ready);

  // --- Status ---
  Role role() const { return role_; }
  // The ballot this member leads or campaigns with; a follower's promised ballot.
  Ballot ballot() const { return role_ == Role::FOLLOWER ? promised_ : ballot_; }
  Ballot promisedBallot() const { return promised_; }
  std::optional<MemberIndex> knownLeader() const { return leader_; }
  Slot decidedSlot() const { return decidedSlot_; }
  Slot appliedSlot() const { return appliedSlot_; }
  Slot logStart() const { return logStart_; }
  // Local time until which this member holds the leader lease; 0 when it holds none.
  Nanos leaseHeldUntil() const { return role_ == Role::LEADER ? leaseUntil_ : 0; }
  size_t queuedCommands() const { return queue_.size(); }
  // The decided index `peer` reported in its latest HeartbeatAck to this member while it led
  // (0 if none): how far behind a follower is, as the leader last heard.
  Slot peerDecidedSlot(MemberIndex peer) const {
    return peer < peerAckedDecided_.size() ? peerAckedDecided_[peer] : 0;
  }
  uint64_t ignoredMessages() const { return ignoredMessages_; }
  bool recovering() const { return recovering_; }
  RecoveryProgress recoveryProgress() const;

 private:
  struct Campaign {
    Slot fromSlot = 1;
    Nanos lastSentAt = 0;
    Nanos deadline = 0;
    uint64_t promisedMask = 0;  // peers whose Promise arrived; self once durable
    bool ownPromiseDurable = false;
    std::map<Slot, LogEntry> chosen;  // per slot, the vote to re-propose so far
  };
  struct InFlight {
    Value value;
    uint64_t votes = 0;  // self only once its accept is durable
    Nanos lastSentAt = 0;
    bool decided = false;
  };
  struct HeartbeatRound {
    uint64_t sequence = 0;
    Nanos sentAt = 0;
    uint64_t acks = 0;
  };
  struct LeaderRead {
    bool local = true;     // else a follower's ReadIndexRequest
    ReadId id = 0;         // local
    MemberIndex from = 0;  // remote
    uint64_t requestId = 0;
    Slot readIndex = 0;
    uint64_t needSequence = 0;  // heartbeat round that must be confirmed; 0 = lease read
    Nanos deadline = 0;
  };
  struct FollowerRead {
    ReadId id = 0;
    uint64_t requestId = 0;
    MemberIndex leader = 0;
    bool indexKnown = false;
    Slot readIndex = 0;
    Nanos lastSentAt = 0;
    Nanos deadline = 0;
  };

  // Message handlers.
  void onPreVoteRequest(MemberIndex from, const PreVoteRequest& m, Nanos now);
  void onPreVoteReply(MemberIndex from, const PreVoteReply& m, Nanos now);
  void onPrepare(MemberIndex from, const Prepare& m, Nanos now);
  void onPromise(MemberIndex from, const Promise& m, Nanos now);
  void onAccept(MemberIndex from, const Accept& m, Nanos now);
  void onAccepted(MemberIndex from, const Accepted& m, Nanos now);
  void onRejected(MemberIndex from, const Rejected& m, Nanos now);
  void onHeartbeat(MemberIndex from, const Heartbeat& m, Nanos now);
  void onHeartbeatAck(MemberIndex from, const HeartbeatAck& m, Nanos now);
  void onFetchRequest(MemberIndex from, const FetchRequest& m);
  void onFetchReply(MemberIndex from, const FetchReply& m, Nanos now);
  void onReadIndexRequest(MemberIndex from, const ReadIndexRequest& m, Nanos now);
  void onReadIndexReply(MemberIndex from, const ReadIndexReply& m);
  void onHandoff(MemberIndex from, const Handoff& m, Nanos now);
  void onRecoveryQuery(MemberIndex from, const RecoveryQuery& m);
  void onRecoveryReply(MemberIndex from, const RecoveryReply& m, Nanos now);

  // Recovery.
  void recoveryTick(Nanos now);
  void sendRecoveryQuery(Nanos now);
  uint32_t answersNeeded() const { return options_.memberCount / 2 + 1; }

  // Roles.
  void startPreVote(Nanos now);
  bool mayPromiseNewBallot(MemberIndex proposer, Nanos now) const;
  bool grantsPreVote(MemberIndex candidate, Slot candidateDecided, Nanos now) const;
  void startCampaign(Nanos now);
  void maybeWinCampaign(Nanos now);
  void foldVote(const LogEntry& vote);
  void becomeLeader(Nanos now);
  // resetContact: count `now` as leader contact (waits a full election timeout before campaigning).
  void becomeFollower(Nanos now, bool resetContact);
  void followLeader(MemberIndex leader, Ballot ballot, Nanos now);
  void raisePromise(Ballot ballot);
  void noteRound(const Ballot& ballot);

  // Leader.
  void proposeMore();
  // Pipeline rule: at most pipelineWindow slots proposed and not yet decided.
  bool windowOpen() const { return inFlight_.size() < options_.pipelineWindow; }
  void startSlot(Slot slot, Value value);
  void countVote(MemberIndex voter, Slot slot);
  void sendHeartbeat(Nanos now);
  // The leader's heartbeat interval at `now`: idleHeartbeatIntervalNs once idle (see Options).
  Nanos leaderHeartbeatInterval(Nanos now) const;
  void leaderTick(Nanos now);
  Nanos leaseDuration() const;

  // Learner.
  void learnDecided(MemberIndex leader, const Ballot& ballot, Slot leaderDecided, Nanos now);
  void adoptDecided(const LogEntry& entry);
  void maybeFetch(MemberIndex peer, Nanos now);

  // Reads.
  void addLeaderRead(LeaderRead read, Nanos now);
  void failLeaderReads();
  void failUnconfirmedFollowerReads();
  void resolveReads(Slot appliedThrough);
  void expireReads(Nanos now);
  // Highest slot the log may be discarded through now (retention and holdLogFrom).
  Slot discardLimit() const;
  bool discardDue() const;
  size_t pendingReads() const { return leaderReads_.size() + followerReads_.size(); }

  void send(MemberIndex to, PeerMessage message, bool afterPersist);
  void broadcast(const PeerMessage& message, bool afterPersist);
  Nanos randomElectionTimeout();
  bool isMajority(uint64_t mask) const;
  uint64_t bit(MemberIndex member) const { return uint64_t{1} << member; }
  bool breaks(RuleBreaker rule) const { return options_.ruleBreaker == rule; }

  Options options_;
  Prng& prng_;
  Nanos leaseForAcceptorsNs_;  // how long an ack binds an acceptor: leaderLeaseNs
  Nanos lastNow_;

  // Acceptor. promised_ and log_ are the in-memory view: durable state plus pending writes.
  Ballot promised_;
  std::map<Slot, LogEntry> log_;
  Slot logStart_ = 1;  // slots below were discarded (decided and applied)
  std::optional<Ballot> pendingPromise_;
  std::map<Slot, LogEntry> pendingLog_;
  Nanos refusePhase1Until_ = 0;  // the restart window
  Nanos grantedLeaseUntil_ = 0;  // the lease this acceptor granted by acking a heartbeat
  MemberIndex grantedLeaseHolder_ = 0;
  // The holder's ballot: a Handoff releases the grant only for the leadership it ends.
  Ballot grantedLeaseBallot_;
  uint64_t highestRoundSeen_ = 0;

  // Learner.
  Slot decidedSlot_ = 0;  // every slot <= this is decided, and log_ holds its value
  Slot appliedSlot_ = 0;
  Slot discardedThrough_ = 0;
  Slot peerDecidedSlot_ = 0;  // highest decided index a peer reported
  bool fetchInFlight_ = false;
  Nanos fetchSentAt_ = 0;
  std::optional<SnapshotNeeded> snapshotNeeded_;
  MemberIndex fetchPeer_ = 0;
  std::optional<Slot> holdLogFrom_;

  // Recovery.
  bool recovering_ = false;
  uint64_t recoveryNonce_ = 0;
  Nanos recoverySentAt_ = 0;
  Nanos recoveryNotBefore_ = 0;  // end of the window for campaigns that may hold a lost promise
  std::map<MemberIndex, RecoveryReply> recoveryAnswers_;
  std::optional<Slot> recoveryTarget_;
  bool recoveryNewGroup_ = false;
  std::optional<RecoveryOutcome> recovered_;

  // Roles and election.
  Role role_ = Role::FOLLOWER;
  Ballot ballot_;  // candidate's or leader's ballot
  std::optional<MemberIndex> leader_;
  Nanos lastLeaderContact_ = 0;
  Nanos electionDeadline_ = 0;
  Nanos electionDraw_ = 0;  // the last randomized election timeout
  // A Handoff named this member while its restart window refused Phase 1: it campaigns once the
  // window ends, if it still promised only that leadership's ballot and knows no leader, until
  // `handoffUntil_` (an election timeout after the Handoff; then the ordinary election takes over).
  std::optional<Ballot> handoffBallot_;
  Nanos handoffUntil_ = 0;
  bool preVoting_ = false;
  uint64_t preVoteRound_ = 0;
  uint64_t preVoteGrants_ = 0;
  Nanos preVoteSentAt_ = 0;
  Nanos preVoteDeadline_ = 0;
  Campaign campaign_;

  // Leader.
  std::map<Slot, InFlight> inFlight_;
  std::deque<std::pair<Slot, Value>> recovery_;  // re-proposals after Phase 1, ascending
  Slot nextSlot_ = 1;
  Slot maxPromisedSlot_ = 0;  // highest slot any Phase-1 promise reported
  // A recovering member waits for slots up to this to be decided: the leader fills them with
  // no-ops if no command comes (stale votes of old leaders above its slots decide nothing).
  Slot fillThrough_ = 0;
  std::deque<std::string> queue_;
  uint64_t queuedBytes_ = 0;
  Nanos leaderSince_ = 0;
  Nanos lastBusyAt_ = 0;  // the leader's last proposal or read (idle heartbeats after that)
  Nanos leaseUntil_ = 0;
  uint64_t heartbeatSequence_ = 0;
  Nanos lastHeartbeatAt_ = 0;
  bool heartbeatWanted_ = false;
  std::deque<HeartbeatRound> heartbeatRounds_;
  uint64_t confirmedSequence_ = 0;
  std::vector<Nanos> lastHeardFrom_;
  std::vector<Slot> peerAckedDecided_;  // decided index in each peer's latest HeartbeatAck

  // Reads.
  std::deque<LeaderRead> leaderReads_;
  std::vector<FollowerRead> followerReads_;
  std::vector<ReadOutcome> readOutcomes_;

  // Output not yet handed out.
  std::vector<OutgoingMessage> sendBefore_;
  std::vector<OutgoingMessage> sendAfter_;
  std::vector<std::string> dropped_;
  std::optional<StatusChange> reportedStatus_;
  bool readyOutstanding_ = false;
  uint64_t ignoredMessages_ = 0;
};

}  // namespace synod::election
