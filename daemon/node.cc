#include "daemon/node.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/debug.h>

#include <cstdlib>

#include "daemon/logging.h"

namespace synod::daemon {

namespace {

CommandOutcome refusal(StatusCode code, std::string message) {
  CommandOutcome outcome;
  outcome.code = code;
  outcome.message = std::move(message);
  return outcome;
}

}  // namespace

Node::Node(const Config& config, storage::Store& store, kj::Timer& timer)
    : config_(config),
      store_(store),
      timer_(timer),
      self_(static_cast<election::MemberIndex>(config.nodeIndex())),
      incarnation_(store.startState().incarnation),
      tasks_(*this) {
  limits_.maxKeyBytes = config.maxKeyBytes;
  limits_.maxValueBytes = config.maxValueBytes;
  loadState();
}

Node::~Node() {}

void Node::loadState() {
  const storage::StartState& start = store_.startState();
  store_.forEachKey([&](std::string_view key, election::KeyRecord&& record) {
    state_.restoreKey(std::string(key), record);
  });
  store_.forEachSession([&](election::MemberIndex member, std::string_view encoded) {
    state_.restoreSession(member, encoded);
  });
  state_.restoreApplied(start.appliedSlot, start.revision);
  std::vector<LogEntry> unapplied;
  store_.forEachLogEntry(start.appliedSlot + 1,
                         [&](LogEntry&& entry) { unapplied.push_back(std::move(entry)); });
  size_t replay = unapplied.size();
  log_ = std::make_unique<SoloLog>(self_, start.promised, start.appliedSlot, std::move(unapplied),
                                   SoloLog::Limits{});
  // Take the new ballot and decide what was accepted before the last stop, before serving.
  while (log_->hasReady() || state_.hasChanges())
    flushOnce();
  logInfo("state loaded: ", state_.keyCount(), " keys at revision ", state_.revision(),
          ", applied slot ", state_.appliedSlot(), " (", replay, " replayed from the log)",
          ", incarnation ", incarnation_);
}

kj::Promise<void> Node::deadline(uint32_t timeoutMs) {
  if (timeoutMs == 0) timeoutMs = DEFAULT_TIMEOUT_MS;
  return timer_.afterDelay(timeoutMs * kj::MILLISECONDS);
}

std::optional<Refusal> Node::checkSpace(size_t requestBytes) const {
  // Refuse before the store can reach its limit, keeping a reserve for deletes and for slots
  // already decided: a decided slot must never fail to apply.
  uint64_t limit = config_.storeLimitBytes;
  uint64_t reserve = limit / 16;
  uint64_t used = store_.usedBytes();
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
  if (!command.isDelete()) {
    size_t bytes = capnp::computeSerializedSizeInWords(message) * sizeof(capnp::word);
    if (auto full = checkSpace(bytes)) return refusal(full->code, full->message);
  }
  uint64_t sequence = nextSequence_++;
  auto id = command.initId();
  id.setMember(self_);
  id.setIncarnation(incarnation_);
  id.setSequence(sequence);
  log_->propose(election::encodeCommand(message));

  auto paf = kj::newPromiseAndFulfiller<CommandOutcome>();
  pending_.emplace(sequence, kj::mv(paf.fulfiller));
  scheduleFlush();
  return paf.promise.exclusiveJoin(deadline(timeoutMs).then([this, sequence]() {
    pending_.erase(sequence);
    return refusal(StatusCode::TIMEOUT,
                   "deadline passed before the write was applied; it may "
                   "still be applied");
  }));
}

kj::Promise<Refusal> Node::readBarrier(uint32_t, bool) {
  // A group of one: everything acknowledged has been applied to state_, and this member is the
  // only one that can decide, so its applied state is linearizable at once.
  return Refusal{};
}

void Node::scheduleFlush() {
  if (flushScheduled_) return;
  flushScheduled_ = true;
  // evalLast: run once every event already queued (other requests of this loop iteration) has
  // been handled, so one commit carries all of them.
  tasks_.add(kj::evalLast([this]() { flushOnce(); }));
}

void Node::flushOnce() {
  flushScheduled_ = false;
  storage::WriteBatch batch;
  LogReady ready;
  if (log_->hasReady()) {
    ready = log_->ready();
    batch.promised = ready.promise;
    batch.accepted = std::move(ready.accept);
  }
  if (state_.hasChanges()) {
    election::StateChanges changes = state_.takeChanges();
    batch.keys = std::move(changes.keys);
    batch.sessions = std::move(changes.sessions);
    batch.applied = std::make_pair(changes.appliedSlot, changes.revision);
    // Materialized slots are needed by nobody else in a group of one.
    batch.dropLogThrough = changes.appliedSlot;
  }
  if (!batch.empty()) store_.commit(batch);
  log_->advance(ready);
  applyDecided();
  // What was just applied is materialized by the next commit, after the replies have gone out.
  if (log_->hasReady() || state_.hasChanges()) scheduleFlush();
}

void Node::applyDecided() {
  std::vector<election::AppliedCommand> applied;
  for (auto& entry : log_->takeDecided()) {
    applied.clear();
    state_.apply(entry.slot, entry.value, applied);
    for (auto& command : applied) {
      if (command.id.member != self_ || command.id.incarnation != incarnation_) continue;
      auto it = pending_.find(command.id.sequence);
      if (it == pending_.end()) continue;  // timed out, or already answered
      it->second->fulfill(kj::mv(command.outcome));
      pending_.erase(it);
    }
  }
}

void Node::drain() {
  draining_ = true;
  while (log_->hasReady() || state_.hasChanges())
    flushOnce();
}

void Node::taskFailed(kj::Exception&& exception) {
  logError("fatal: ", exception.getDescription(), "; stopping so that restart and peers recover");
  std::abort();
}

NodeStatus Node::status() const {
  NodeStatus status;
  status.member = config_.node;
  status.role = "leader";
  status.ballot = log_->ballot();
  status.leader = config_.node;
  status.decidedSlot = log_->decidedSlot();
  status.appliedSlot = state_.appliedSlot();
  status.revision = state_.revision();
  status.incarnation = incarnation_;
  status.dbSizeBytes = store_.usedBytes();
  status.uptimeMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - startedAt_)
                        .count();
  for (const auto& [name, address] : config_.peers) {
    MemberInfo member;
    member.name = name;
    member.address = address.toString();
    member.role = name == config_.node ? "leader" : "unknown";
    member.reachable = name == config_.node;
    status.members.push_back(std::move(member));
  }
  return status;
}

}  // namespace synod::daemon
