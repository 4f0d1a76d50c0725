// A member's engine room on the loop thread: takes commands and reads from the local API, runs
// them through the Multi-Paxos core (election/replica.h), persists its Ready with group commits,
// applies decided slots to the config map and answers each command once it is applied.
//
// The write path (ARCHITECTURE.md, "The critical path of a write"):
//   write() -> core.propose() at the leader (a follower forwards the command to the leader)
//   -> [group commit: promise + votes + materialized state, one fsync] -> decided
//   -> StateMachine::apply on every member -> the member that took the request answers it.
// Applied changes reach LMDB with the *next* group commit, never delaying a reply. A crash before
// that loses nothing: the log entries above the persisted applied slot are still stored.
//
// Retries: a command not yet applied is submitted again when the leader changes and every
// RETRY_INTERVAL; the state machine applies each (member, incarnation, sequence) once.
//
// Ownership: Node borrows the Store, the kj::Timer and the PeerOutbox; they outlive it.
// Single-threaded.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/commit_runner.h"
#include "daemon/config.h"
#include "daemon/member_report.h"
#include "daemon/metrics.h"
#include "daemon/peer_codec.h"
#include "daemon/watch_hub.h"
#include "election/prng.h"
#include "election/replica.h"
#include "election/snapshot.h"
#include "election/state_machine.h"
#include "storage/store.h"

namespace capnp {
class MallocMessageBuilder;
}

namespace synod::daemon {

class AppLeases;

using election::Ballot;
using election::CommandOutcome;
using election::LogEntry;
using election::MemberIndex;
using election::Nanos;
using election::Slot;
using election::StatusCode;

// Now on CLOCK_BOOTTIME (keeps counting through suspend), in nanoseconds. Read at every use:
// uv_now() is cached per loop iteration and goes stale across a SIGSTOP.
Nanos bootTimeNow();

// Where a Node's messages to other members go. The peer transport implements it; a group of one
// needs none.
class PeerOutbox {
 public:
  virtual ~PeerOutbox() = default;
  virtual void sendCore(MemberIndex to, election::PeerMessage message) = 0;
  // Commands for the leader to propose on this member's behalf.
  virtual void sendForward(MemberIndex to, std::vector<std::string> commands) = 0;
  // The receiver of a Forward is not the leader: the sender should retry with `leaderHint`.
  virtual void sendForwardRefused(MemberIndex to, std::vector<std::string> commands,
                                  std::optional<MemberIndex> leaderHint) = 0;
  // Catch-up by snapshot (Node::onSnapshotRequest / onSnapshotChunk).
  virtual void sendSnapshotRequest(MemberIndex to, SnapshotRequest request) = 0;
  virtual void sendSnapshotChunk(MemberIndex to, SnapshotChunk chunk) = 0;
  // This member's report for operators (daemon/member_report.h).
  virtual void sendReport(MemberIndex to, const MemberReport& report) = 0;
  virtual bool connected(MemberIndex peer) const = 0;
};

// Where a member that fell behind its peers' logs stands (for status and logs).
struct CatchUpStatus {
  bool recovering = false;    // empty data dir: not voting yet (election::Replica)
  std::string recoveryStage;  // human text while recovering
  bool snapshotInProgress = false;
  std::string snapshotFrom;  // member name
  Slot snapshotSlot = 0;
  uint64_t snapshotBytesReceived = 0;
  uint64_t snapshotBytesTotal = 0;
  uint64_t snapshotsInstalled = 0;
  uint64_t snapshotsServed = 0;
};

// The outcome of a read barrier or a refused request.
struct Refusal {
  StatusCode code = StatusCode::OK;
  std::string message;
};

struct MemberInfo {
  std::string name;
  std::string address;
  std::string role;
  bool reachable = false;
  uint64_t lagSlots = 0;
  // The member's latest report: this member's own, current, for itself; nullopt when none was
  // received since this member started.
  std::optional<MemberReport> report;
  uint64_t reportAgeMs = 0;  // since the report was received
  bool stale = true;         // unreachable, no report, or older than Node::REPORT_STALE_MS
  // The highest decidedSlot of every report known here (this member's included) minus this
  // member's appliedSlot, at least 0; 0 without a report.
  uint64_t slotsBehind = 0;
};

// What the metrics endpoint exports beyond NodeStatus (daemon/metrics_server.h); since start.
struct NodeCounters {
  // From taking the core's Ready (or the applied changes) to the end of the store commit that
  // persists it: what a vote waits for.
  Histogram groupCommitSeconds{latencyBucketsSeconds()};
  // Store::commit alone: LMDB's write transaction, ending with its fsyncs.
  Histogram fsyncSeconds{latencyBucketsSeconds()};
  // Commands in each slot this member applied (0 for a no-op slot).
  Histogram slotCommands{slotCommandBuckets()};
  uint64_t commits = 0;  // group commits written to the store
  uint64_t ticks = 0;    // timer ticks (onTick): how often an idle member wakes up
};

struct NodeStatus {
  std::string member;
  std::string role;
  Ballot ballot;
  std::string leader;  // empty when unknown
  Slot decidedSlot = 0;
  Slot appliedSlot = 0;
  uint64_t revision = 0;
  uint64_t incarnation = 0;
  uint64_t dbSizeBytes = 0;
  uint64_t uptimeMs = 0;
  Nanos leaseLeftNs = 0;
  uint64_t commitP50Us = 0;  // over the last Node::COMMIT_SAMPLES group commits; 0 when none
  uint64_t commitP99Us = 0;
  uint64_t stateDigest = 0;  // election::StateMachine::stateDigest()
  // Non-empty while this member recovers from an empty data dir and does not vote yet: what it
  // waits for (election::Replica, "Recovery").
  std::string recoveryStage;
  std::vector<MemberInfo> members;
};

class Node : private kj::TaskSet::ErrorHandler {
 public:
  // `commits` runs group commits (a worker thread in the daemon); nullptr = on the calling thread.
  Node(const Config& config, storage::Store& store, kj::Timer& timer, PeerOutbox* outbox,
       uint64_t seed, CommitRunner* commits = nullptr);
  ~Node();

  // Proposes the command in `message` (a records::Command whose operation is set; the id is filled
  // in here) and resolves once it is applied, or with TIMEOUT / NO_QUORUM at the deadline (outcome
  // unknown), or NO_SPACE, INVALID_ARGUMENT, UNAVAILABLE when refused before proposing (nothing
  // changed).
  kj::Promise<CommandOutcome> write(capnp::MallocMessageBuilder& message, uint32_t timeoutMs);

  // Resolves (code OK) once a read served from state() is linearizable, or with a refusal at the
  // deadline. `serializable` reads resolve at once from the local replica.
  kj::Promise<Refusal> readBarrier(uint32_t timeoutMs, bool serializable);

  // Input from peers (the transport calls these).
  void onPeerMessage(MemberIndex from, const election::PeerMessage& message);
  void onForward(MemberIndex from, std::vector<std::string> commands);
  void onForwardRefused(std::vector<std::string> commands, std::optional<MemberIndex> leaderHint);
  void onSnapshotRequest(MemberIndex from, const SnapshotRequest& request);
  void onSnapshotChunk(MemberIndex from, SnapshotChunk&& chunk);
  // Keeps the latest report of each peer, with the time it arrived.
  void onMemberReport(MemberIndex from, MemberReport report);

  const election::StateMachine& state() const { return state_; }
  // The watches this member serves from its replica (daemon/watch_hub.h).
  WatchHub& watchHub() { return *watchHub_; }
  const Config& config() const { return config_; }
  Ballot ballot() const { return core_->ballot(); }
  bool isLeader() const { return core_->role() == election::Role::LEADER; }
  std::optional<MemberIndex> knownLeader() const { return core_->knownLeader(); }
  MemberIndex self() const { return self_; }
  // Whether this member leads and its leader lease is valid at `now`: the condition for
  // proposing lease expiries (election/lease_clock.h).
  bool holdsLeaderLease(Nanos now) const { return isLeader() && core_->leaseHeldUntil() > now; }
  bool draining() const { return draining_; }
  const election::RequestLimits& requestLimits() const { return limits_; }
  // App leases, locks and elections served through this member.
  AppLeases& appLeases() { return *appLeases_; }
  const AppLeases& appLeases() const { return *appLeases_; }

  // Leader only: hands leadership to `target`, or to the most up-to-date reachable peer
  // (election::Replica::transferLeadership), and sends the Handoff. False, changing nothing, if
  // this member does not lead, is draining, or no such peer is reachable. Writes queued here go to
  // the new leader once it is known.
  bool transferLeadership(std::optional<MemberIndex> target);
  // What a leader knows of a peer when it picks whom to hand over to.
  struct HandoffPeer {
    MemberIndex index = 0;
    bool reportCurrent = false;  // a report received within REPORT_STALE_MS
    uint64_t uptimeMs = 0;       // the peer's uptime now, from that report
    Slot decidedSlot = 0;        // as the leader last heard
  };
  // A member refuses every Phase 1, its own included, for leaderLeaseMs * (1 + maxClockDrift)
  // after it starts (election::Replica): a Handoff to it waits out the rest of that window. Among
  // peers whose current report says they are past it, the most up to date; nullopt when every
  // peer is past it or none is known to be (the core then picks as usual).
  static std::optional<MemberIndex> preferredHandoffTarget(const std::vector<HandoffPeer>& peers,
                                                           uint64_t restartWindowMs);
  // Resolves with the leader once a member other than this one is known to lead, or with nullopt
  // after `timeoutMs`. Polls; never blocks the loop.
  kj::Promise<std::optional<MemberIndex>> otherLeader(uint32_t timeoutMs);
  NodeStatus status() const;
  // Runs `fn` (which may use the store) at once if no group commit is in flight, else right after
  // it: the store is the commit thread's while a commit runs.
  void whenStoreIdle(std::function<void()> fn);
  CatchUpStatus catchUpStatus() const;
  const NodeCounters& counters() const { return counters_; }
  size_t pendingWrites() const { return pending_.size(); }
  size_t pendingReads() const { return reads_.size(); }
  // The live limits in the Config this Node borrows were changed (SIGHUP, applyLiveKeys): take
  // them from the next request on. Requests already accepted are not checked again.
  void limitsChanged();

  // A component's next deadline (AppLeases::nextDue) may have moved earlier: plans the next tick
  // again.
  void timersChanged() { rearmTick(); }
  // Tests: how long applied changes wait for their commit (MATERIALIZE_DELAY_MS); 0 makes them
  // due at every flush.
  void setMaterializeDelay(Nanos delay) { materializeDelay_ = delay; }

  // Persists everything pending and stops the core's timers; afterwards writes are refused with
  // UNAVAILABLE. Used at shutdown.
  void drain();

  // Default and maximum per-request deadline.
  static constexpr uint32_t DEFAULT_TIMEOUT_MS = 5000;
  static constexpr uint32_t MAX_TIMEOUT_MS = 600000;
  // Writes proposed and not yet answered; past this new writes are refused with UNAVAILABLE.
  static constexpr size_t MAX_PENDING_WRITES = 65536;
  static constexpr size_t MAX_PENDING_READS = 65536;
  // Snapshot transfer: chunk size, the pace a source serves at (catch-up must not starve the live
  // group), concurrent transfers a source serves, and how long a silent transfer lives.
  static constexpr size_t SNAPSHOT_CHUNK_BYTES = 1 << 20;
  static constexpr uint64_t SNAPSHOT_BYTES_PER_SECOND = 32 << 20;
  static constexpr size_t MAX_SNAPSHOTS_SERVED = 2;
  static constexpr uint64_t SNAPSHOT_IDLE_MS = 10000;
  static constexpr uint64_t SNAPSHOT_RETRY_MS = 1000;
  // Each member sends its report to every connected peer this often, and at once when its role
  // or the leader it knows changes. A report older than REPORT_STALE_MS is shown as stale.
  static constexpr uint64_t REPORT_INTERVAL_MS = 1000;
  static constexpr uint64_t REPORT_STALE_MS = 3 * REPORT_INTERVAL_MS;
  // Group commits whose durations the commit latency percentiles are taken over.
  static constexpr size_t COMMIT_SAMPLES = 256;
  // Applied changes are written MATERIALIZE_DELAY_MS after the first of them, in one commit for
  // all (sooner once MATERIALIZE_MAX_SLOTS applied slots wait, so replay at restart stays short),
  // not with each vote: the votes' commits stay small, and a small LMDB commit is a fast one.
  // Measured on one disk shared by three members: put p50 840-940 us this way, 1040-1100 us with
  // the applied changes riding on every vote's commit, 1370 us with a commit of their own after
  // each reply.
  static constexpr uint64_t MATERIALIZE_DELAY_MS = 100;
  static constexpr Slot MATERIALIZE_MAX_SLOTS = 1024;

 private:
  struct PendingWrite {
    kj::Own<kj::PromiseFulfiller<CommandOutcome>> fulfiller;
    std::string command;  // encoded, for resubmission
    Nanos submittedAt = 0;
  };
  struct PendingRead {
    kj::Own<kj::PromiseFulfiller<Refusal>> fulfiller;
    bool started = false;  // the core has it; else waiting to be (re)started
  };

  // A snapshot this member serves: encoded once, shared by the transfers that use it.
  struct SnapshotImage {
    Slot slot = 0;
    std::vector<std::string> chunks;
    uint64_t totalBytes = 0;
  };
  struct OutgoingSnapshot {
    MemberIndex peer = 0;
    uint64_t requestId = 0;
    std::shared_ptr<const SnapshotImage> image;
    Nanos lastRequestAt = 0;
  };
  struct IncomingSnapshot {
    MemberIndex peer = 0;
    uint64_t requestId = 0;
    election::SnapshotAssembler assembler;
    uint64_t totalBytes = 0;
    Nanos lastProgressAt = 0;
  };

  election::Options coreOptions(uint64_t memberCount) const;
  // Catch-up (node_snapshot.cc).
  void startSnapshot(const election::SnapshotNeeded& needed, Nanos now);
  void requestChunk(uint32_t index);
  void maybeInstallSnapshot();
  void snapshotTick(Nanos now);
  void sendChunk(MemberIndex to, uint64_t requestId, std::shared_ptr<const SnapshotImage> image,
                 uint32_t index);
  void updateLogHold();
  void noteRecovered(election::RecoveryOutcome outcome);
  void loadState();
  election::HistoryLimits historyLimits() const;
  void submit(uint64_t sequence, Nanos now);
  void startRead(election::ReadId id, Nanos now);
  // Ticks at nextTickAt(): at the core's cadence while anything is in progress, else only when
  // the core or a report is due (an idle follower wakes about once a second).
  kj::Promise<void> tickLoop();
  void onTick();
  Nanos nextTickAt(Nanos now) const;
  // After an input that may need a tick sooner than the one scheduled: moves it earlier.
  void rearmTick();
  void armTick(Nanos at);
  // Group commit, in two steps: takeReady() sends, applies and answers; persist() commits and
  // advances the core.
  void scheduleFlush();
  bool takeReady();
  void persist();
  // Whether the applied changes not yet in the store must be written now (see
  // MATERIALIZE_DELAY_MS); notes when they become due otherwise.
  bool materializeDue(Nanos now);
  // After the commit of persist() is durable: send the votes, advance the core, go on.
  void finishPersist(Slot materialized, std::vector<LogEntry> accepted);
  // Store bytes in use as of the last commit (store_ itself is the commit thread's meanwhile).
  uint64_t usedBytes() const { return usedBytes_; }
  void handleReady(election::Ready& ready);
  void applyEntries(const std::vector<LogEntry>& entries);
  void sendAll(std::vector<election::OutgoingMessage>& messages);
  void resubmitAll(Nanos now);
  void restartReads(Nanos now);
  StatusCode deadlineCode() const;
  MemberReport selfReport(Nanos now) const;
  // Sends this member's report to every connected peer when the interval passed or its role or
  // known leader changed since the last one.
  void maybeSendReport(Nanos now);
  void recordCommit(Nanos duration);
  std::optional<Refusal> checkSpace(size_t requestBytes) const;
  kj::Promise<void> deadline(uint32_t timeoutMs);
  uint64_t sequenceOf(const std::string& command) const;

  // A failed group commit or apply is fatal: nothing may continue on state that may not be on disk.
  void taskFailed(kj::Exception&& exception) override;

  const Config& config_;
  storage::Store& store_;
  kj::Timer& timer_;
  PeerOutbox* outbox_;
  election::Prng prng_;
  std::unique_ptr<election::Replica> core_;
  election::StateMachine state_;
  election::RequestLimits limits_;
  MemberIndex self_;
  uint64_t incarnation_;
  uint64_t nextSequence_ = 1;
  election::ReadId nextReadId_ = 1;
  Slot materializedSlot_ = 0;  // the applied slot durable in the store
  Nanos materializeAt_ = 0;    // when the applied changes waiting for a commit are due; 0: none
  Nanos materializeDelay_ = MATERIALIZE_DELAY_MS * election::NANOS_PER_MS;
  Slot dropLogPending_ = 0;  // log slots through this the core discarded, still in the store
  // What the applied state not yet taken for a commit, and the one in flight, will add to the
  // store (3 x their command bytes): checkSpace() adds them to usedBytes_ until a commit counts
  // them.
  uint64_t unmaterializedBytes_ = 0;
  uint64_t materializingBytes_ = 0;
  std::optional<MemberIndex> lastLeader_;
  bool flushScheduled_ = false;
  bool persistScheduled_ = false;
  std::optional<election::Ready> ready_;  // taken, not yet persisted
  bool draining_ = false;
  std::chrono::steady_clock::time_point startedAt_ = std::chrono::steady_clock::now();
  std::map<uint64_t, PendingWrite> pending_;
  std::map<election::ReadId, PendingRead> reads_;
  InlineCommitRunner inlineCommits_;
  CommitRunner* commits_;
  bool commitInFlight_ = false;  // store_ belongs to the commit runner until it is done
  bool commitInline_ = false;    // draining: commits run on this thread
  uint64_t usedBytes_ = 0;
  std::vector<std::function<void()>> whenStoreIdle_;
  std::optional<IncomingSnapshot> incoming_;
  Nanos snapshotRetryAt_ = 0;
  std::map<uint64_t, OutgoingSnapshot> outgoing_;  // by request id
  std::shared_ptr<const SnapshotImage> lastImage_;
  Nanos snapshotSendAt_ = 0;  // pacing: when the next chunk may leave
  uint64_t snapshotsInstalled_ = 0;
  uint64_t snapshotsServed_ = 0;
  bool recoveredPending_ = false;  // Ready::recovered seen; persisted with the next commit
  struct ReceivedReport {
    MemberReport report;
    Nanos receivedAt = 0;
  };
  std::vector<std::optional<ReceivedReport>> peerReports_;  // by member index
  std::optional<Nanos> lastReportAt_;
  election::Role reportedRole_ = election::Role::FOLLOWER;
  std::optional<MemberIndex> reportedLeader_;
  // Durations of the last COMMIT_SAMPLES group commits, a ring written at nextCommitSample_.
  std::vector<uint64_t> commitMicros_;
  size_t nextCommitSample_ = 0;
  Nanos readyTakenAt_ = 0;  // when the group commit persist() will write began
  NodeCounters counters_;
  std::unique_ptr<AppLeases> appLeases_;
  kj::Promise<void> ticking_ = nullptr;
  Nanos tickAt_ = 0;     // when ticking_ fires
  bool inTick_ = false;  // onTick runs: it schedules the next tick itself
  // Declared after state_: destroyed before the state it reads.
  std::unique_ptr<WatchHub> watchHub_;
  kj::TaskSet tasks_;
};

}  // namespace synod::daemon
