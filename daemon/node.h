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

#include "daemon/config.h"
#include "election/prng.h"
#include "election/replica.h"
#include "election/state_machine.h"
#include "storage/store.h"

namespace capnp {
class MallocMessageBuilder;
}

namespace synod::daemon {

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
  virtual bool connected(MemberIndex peer) const = 0;
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
  std::vector<MemberInfo> members;
};

class Node : private kj::TaskSet::ErrorHandler {
 public:
  Node(const Config& config, storage::Store& store, kj::Timer& timer, PeerOutbox* outbox,
       uint64_t seed);
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

  const election::StateMachine& state() const { return state_; }
  const Config& config() const { return config_; }
  Ballot ballot() const { return core_->ballot(); }
  bool isLeader() const { return core_->role() == election::Role::LEADER; }
  std::optional<MemberIndex> knownLeader() const { return core_->knownLeader(); }
  MemberIndex self() const { return self_; }

  // Leader only: hands leadership to `target`, or to the most up-to-date reachable peer
  // (election::Replica::transferLeadership), and sends the Handoff. False, changing nothing, if
  // this member does not lead, is draining, or no such peer is reachable. Writes queued here go to
  // the new leader once it is known.
  bool transferLeadership(std::optional<MemberIndex> target);
  // Resolves with the leader once a member other than this one is known to lead, or with nullopt
  // after `timeoutMs`. Polls; never blocks the loop.
  kj::Promise<std::optional<MemberIndex>> otherLeader(uint32_t timeoutMs);
  NodeStatus status() const;
  // The live limits in the Config this Node borrows were changed (SIGHUP, applyLiveKeys): take
  // them from the next request on. Requests already accepted are not checked again.
  void limitsChanged();

  // Persists everything pending and stops the core's timers; afterwards writes are refused with
  // UNAVAILABLE. Used at shutdown.
  void drain();

  // Default and maximum per-request deadline.
  static constexpr uint32_t DEFAULT_TIMEOUT_MS = 5000;
  static constexpr uint32_t MAX_TIMEOUT_MS = 600000;
  // Writes proposed and not yet answered; past this new writes are refused with UNAVAILABLE.
  static constexpr size_t MAX_PENDING_WRITES = 65536;
  static constexpr size_t MAX_PENDING_READS = 65536;
  // Decided slots kept after they were applied, for peers that fall behind.
  static constexpr Slot RETAINED_LOG_SLOTS = 10000;

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

  election::Options coreOptions(uint64_t memberCount) const;
  void loadState();
  void submit(uint64_t sequence, Nanos now);
  void startRead(election::ReadId id, Nanos now);
  kj::Promise<void> tickLoop();
  void onTick();
  // Group commit, in two steps: takeReady() sends, applies and answers; persist() commits and
  // advances the core.
  void scheduleFlush();
  bool takeReady();
  void persist();
  void handleReady(election::Ready& ready);
  void applyEntries(const std::vector<LogEntry>& entries);
  void sendAll(std::vector<election::OutgoingMessage>& messages);
  void resubmitAll(Nanos now);
  void restartReads(Nanos now);
  StatusCode deadlineCode() const;
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
  std::optional<MemberIndex> lastLeader_;
  bool flushScheduled_ = false;
  bool persistScheduled_ = false;
  std::optional<election::Ready> ready_;  // taken, not yet persisted
  bool draining_ = false;
  std::chrono::steady_clock::time_point startedAt_ = std::chrono::steady_clock::now();
  std::map<uint64_t, PendingWrite> pending_;
  std::map<election::ReadId, PendingRead> reads_;
  kj::Promise<void> ticking_ = nullptr;
  kj::TaskSet tasks_;
};

}  // namespace synod::daemon
