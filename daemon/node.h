// A member's engine room on the loop thread: takes commands from the local API, runs them through
// the replicated log, persists with group commits, applies decided slots to the config map and
// answers each command once it is applied.
//
// The write path (ARCHITECTURE.md, "The critical path of a write"):
//   write() -> log.propose() -> [group commit: promise + accepts + materialized state, one fsync]
//   -> decided -> StateMachine::apply -> reply.
// Applied changes reach LMDB with the *next* group commit, never delaying a reply. A crash before
// that loses nothing: the log entries above the persisted applied slot are still stored and are
// decided again at start.
//
// Ownership: Node borrows the Store and the kj::Timer; both outlive it. Single-threaded.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "daemon/config.h"
#include "daemon/solo_log.h"
#include "election/state_machine.h"
#include "storage/store.h"

namespace capnp {
class MallocMessageBuilder;
}

namespace synod::daemon {

using election::CommandOutcome;
using election::StatusCode;

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
  std::string leader;
  Slot decidedSlot = 0;
  Slot appliedSlot = 0;
  uint64_t revision = 0;
  uint64_t incarnation = 0;
  uint64_t dbSizeBytes = 0;
  uint64_t uptimeMs = 0;
  std::vector<MemberInfo> members;
};

class Node : private kj::TaskSet::ErrorHandler {
 public:
  Node(const Config& config, storage::Store& store, kj::Timer& timer);
  ~Node();

  // Proposes the command in `message` (a records::Command whose operation is set; the id is filled
  // in here) and resolves once it is applied, or with TIMEOUT at the deadline (outcome unknown),
  // NO_SPACE, INVALID_ARGUMENT or UNAVAILABLE when refused before proposing (nothing changed).
  kj::Promise<CommandOutcome> write(capnp::MallocMessageBuilder& message, uint32_t timeoutMs);

  // Resolves (with code OK) once a read served from state() is linearizable, or with a refusal.
  // `serializable` reads resolve at once from the local replica.
  kj::Promise<Refusal> readBarrier(uint32_t timeoutMs, bool serializable);

  const election::StateMachine& state() const { return state_; }
  const Config& config() const { return config_; }
  Ballot ballot() const { return log_->ballot(); }
  NodeStatus status() const;

  // Persists everything pending and answers every write already proposed; afterwards writes are
  // refused with UNAVAILABLE. Used at shutdown.
  void drain();

  // Default and maximum per-request deadline.
  static constexpr uint32_t DEFAULT_TIMEOUT_MS = 5000;
  static constexpr uint32_t MAX_TIMEOUT_MS = 600000;
  // Writes proposed and not yet answered; past this new writes are refused with UNAVAILABLE.
  static constexpr size_t MAX_PENDING_WRITES = 65536;

 private:
  void loadState();
  void scheduleFlush();
  void flushOnce();
  void applyDecided();
  std::optional<Refusal> checkSpace(size_t requestBytes) const;
  kj::Promise<void> deadline(uint32_t timeoutMs);

  const Config& config_;
  storage::Store& store_;
  kj::Timer& timer_;
  election::StateMachine state_;
  std::unique_ptr<SoloLog> log_;
  election::RequestLimits limits_;
  election::MemberIndex self_;
  uint64_t incarnation_;
  std::chrono::steady_clock::time_point startedAt_ = std::chrono::steady_clock::now();
  uint64_t nextSequence_ = 1;
  bool flushScheduled_ = false;
  bool draining_ = false;
  std::unordered_map<uint64_t, kj::Own<kj::PromiseFulfiller<CommandOutcome>>> pending_;
  kj::TaskSet tasks_;

  // A failed group commit or apply is fatal: nothing may continue on state that may not be on disk.
  void taskFailed(kj::Exception&& exception) override;
};

}  // namespace synod::daemon
