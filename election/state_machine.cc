#include "election/state_machine.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "election/hash.h"

namespace synod::election {

namespace {

std::string_view view(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

// Flat Cap'n Proto messages must be word-aligned; a std::string's buffer need not be.
kj::Array<capnp::word> alignedCopy(std::string_view bytes) {
  auto words =
      kj::heapArray<capnp::word>((bytes.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  if (bytes.size() > 0) std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

CommandOutcome failure(StatusCode code, std::string message, uint64_t revision) {
  CommandOutcome outcome;
  outcome.code = code;
  outcome.message = std::move(message);
  outcome.revision = revision;
  return outcome;
}

// Single byte 0x00 as a range end means "to the end of the key space".
bool isOpenRangeEnd(std::string_view rangeEnd) {
  return rangeEnd.size() == 1 && rangeEnd[0] == 0;
}

template <typename T>
int compareValues(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

bool opHolds(rpc::Compare::Op op, int cmp) {
  switch (op) {
    case rpc::Compare::Op::EQUAL:
      return cmp == 0;
    case rpc::Compare::Op::NOT_EQUAL:
      return cmp != 0;
    case rpc::Compare::Op::LESS:
      return cmp < 0;
    case rpc::Compare::Op::GREATER:
      return cmp > 0;
  }
  return false;  // an op unknown to this version never holds
}

// The keys a txn branch writes must be distinct, so its result cannot depend on op order.
std::optional<std::string> checkBranch(capnp::List<rpc::TxnOp>::Reader ops, const char* branch) {
  std::set<std::string_view> seen;
  for (auto op : ops) {
    std::string_view key;
    switch (op.which()) {
      case rpc::TxnOp::PUT:
        key = view(op.getPut().getKey());
        break;
      case rpc::TxnOp::DELETE:
        if (op.getDelete().getRangeEnd().size() > 0) continue;
        key = view(op.getDelete().getKey());
        break;
      default:
        return std::string("txn ") + branch + ": unknown operation";
    }
    if (key.empty()) return std::string("txn ") + branch + ": empty key";
    if (!seen.insert(key).second) {
      return std::string("txn ") + branch + ": key \"" + std::string(key) + "\" written twice";
    }
  }
  return std::nullopt;
}

std::optional<std::string> checkLockName(const char* what, capnp::Data::Reader name,
                                         uint64_t lease) {
  if (name.size() == 0) return std::string(what) + ": empty lock name";
  if (name.size() > MAX_LOCK_NAME_BYTES) {
    return std::string(what) + ": lock name is " + std::to_string(name.size()) +
           " bytes, more than " + std::to_string(MAX_LOCK_NAME_BYTES);
  }
  if (lease == 0) return std::string(what) + ": lease id 0";
  return std::nullopt;
}

// Structural rules every member enforces identically at apply time.
std::optional<std::string> checkStructure(records::Command::Reader command) {
  switch (command.which()) {
    case records::Command::PUT:
      if (command.getPut().getKey().size() == 0) return "empty key";
      return std::nullopt;
    case records::Command::DELETE: {
      auto op = command.getDelete();
      auto end = view(op.getRangeEnd());
      if (op.getKey().size() == 0 && end.empty()) return "empty key";
      if (!end.empty() && !isOpenRangeEnd(end) && end <= view(op.getKey())) {
        return "range end must sort after the key";
      }
      return std::nullopt;
    }
    case records::Command::TXN: {
      auto txn = command.getTxn();
      for (auto compare : txn.getCompares()) {
        if (compare.getKey().size() == 0) return "txn compare: empty key";
      }
      if (auto bad = checkBranch(txn.getSuccess(), "then")) return bad;
      return checkBranch(txn.getFailure(), "else");
    }
    case records::Command::LEASE_GRANT: {
      auto op = command.getLeaseGrant();
      const uint64_t id = op.getId();
      if ((id & LEASE_ID_COUNTER_MASK) == 0) {
        return "leaseGrant: id " + std::to_string(id) + " has counter 0";
      }
      if (leaseIdMember(id) != op.getHolder().getMember()) {
        return "leaseGrant: id " + std::to_string(id) + " belongs to member " +
               std::to_string(leaseIdMember(id)) + ", not to the holder's member " +
               std::to_string(op.getHolder().getMember());
      }
      if (op.getTtlMs() == 0) return "leaseGrant: ttlMs 0";
      return std::nullopt;
    }
    case records::Command::LEASE_RENEW: {
      std::set<uint64_t> seen;
      for (auto renewal : command.getLeaseRenew().getRenewals()) {
        if (renewal.getId() == 0) return "leaseRenew: lease id 0";
        if (renewal.getEpoch() == 0) return "leaseRenew: epoch 0";
        if (!seen.insert(renewal.getId()).second) {
          return "leaseRenew: lease " + std::to_string(renewal.getId()) + " listed twice";
        }
      }
      return std::nullopt;
    }
    case records::Command::LEASE_REVOKE:
      if (command.getLeaseRevoke().getId() == 0) return "leaseRevoke: lease id 0";
      return std::nullopt;
    case records::Command::LEASE_EXPIRE:
      if (command.getLeaseExpire().getId() == 0) return "leaseExpire: lease id 0";
      return std::nullopt;
    case records::Command::LEASE_CHECKPOINT: {
      std::set<uint64_t> seen;
      for (auto entry : command.getLeaseCheckpoint().getCheckpoints()) {
        if (entry.getId() == 0) return "leaseCheckpoint: lease id 0";
        if (!seen.insert(entry.getId()).second) {
          return "leaseCheckpoint: lease " + std::to_string(entry.getId()) + " listed twice";
        }
      }
      return std::nullopt;
    }
    case records::Command::LOCK:
      return checkLockName("lock", command.getLock().getName(), command.getLock().getLease());
    case records::Command::UNLOCK:
      return checkLockName("unlock", command.getUnlock().getName(), command.getUnlock().getLease());
    case records::Command::PROCLAIM:
      return checkLockName("proclaim", command.getProclaim().getName(),
                           command.getProclaim().getLease());
    case records::Command::COMPACT:
      if (command.getCompact().getRevision() == 0) return "compact: revision 0";
      return std::nullopt;
  }
  return "unknown command";
}

std::optional<std::string> checkSizes(std::string_view what, size_t keyBytes, size_t valueBytes,
                                      const RequestLimits& limits) {
  if (keyBytes > limits.maxKeyBytes) {
    return std::string(what) + ": key is " + std::to_string(keyBytes) +
           " bytes, more than max_key_bytes (" + std::to_string(limits.maxKeyBytes) + ")";
  }
  if (valueBytes > limits.maxValueBytes) {
    return std::string(what) + ": value is " + std::to_string(valueBytes) +
           " bytes, more than max_value_bytes (" + std::to_string(limits.maxValueBytes) + ")";
  }
  return std::nullopt;
}

std::optional<std::string> checkOpSizes(rpc::TxnOp::Reader op, const RequestLimits& limits) {
  if (op.isPut()) {
    return checkSizes("put", op.getPut().getKey().size(), op.getPut().getValue().size(), limits);
  }
  if (op.isDelete()) {
    auto del = op.getDelete();
    return checkSizes("delete", std::max(del.getKey().size(), del.getRangeEnd().size()), 0, limits);
  }
  return "unknown operation";
}

}  // namespace

std::optional<std::string> validateRequest(records::Command::Reader command,
                                           const RequestLimits& limits) {
  if (auto bad = checkStructure(command)) return bad;
  switch (command.which()) {
    case records::Command::PUT: {
      auto put = command.getPut();
      return checkSizes("put", put.getKey().size(), put.getValue().size(), limits);
    }
    case records::Command::DELETE: {
      auto del = command.getDelete();
      return checkSizes("delete", std::max(del.getKey().size(), del.getRangeEnd().size()), 0,
                        limits);
    }
    case records::Command::TXN: {
      auto txn = command.getTxn();
      size_t ops = txn.getCompares().size() + txn.getSuccess().size() + txn.getFailure().size();
      if (ops > limits.maxTxnOps) {
        return "txn: " + std::to_string(ops) + " compares and operations, more than " +
               std::to_string(limits.maxTxnOps);
      }
      for (auto compare : txn.getCompares()) {
        size_t valueBytes =
            compare.getTarget().isValue() ? compare.getTarget().getValue().size() : 0;
        if (auto bad = checkSizes("txn compare", compare.getKey().size(), valueBytes, limits)) {
          return bad;
        }
      }
      for (auto branch : {txn.getSuccess(), txn.getFailure()}) {
        for (auto op : branch) {
          if (auto bad = checkOpSizes(op, limits)) return bad;
        }
      }
      return std::nullopt;
    }
    case records::Command::LEASE_GRANT: {
      const uint64_t ttl = command.getLeaseGrant().getTtlMs();
      if (ttl < limits.leaseTtlMinMs || ttl > limits.leaseTtlMaxMs) {
        return "lease TTL " + std::to_string(ttl) + " ms is outside lease_ttl_min_ms .. " +
               "lease_ttl_max_ms (" + std::to_string(limits.leaseTtlMinMs) + " .. " +
               std::to_string(limits.leaseTtlMaxMs) + " ms)";
      }
      return std::nullopt;
    }
    case records::Command::LOCK:
      return checkSizes("lock", command.getLock().getName().size(),
                        command.getLock().getValue().size(), limits);
    case records::Command::UNLOCK:
      return checkSizes("unlock", command.getUnlock().getName().size(), 0, limits);
    case records::Command::PROCLAIM:
      return checkSizes("proclaim", command.getProclaim().getName().size(),
                        command.getProclaim().getValue().size(), limits);
    case records::Command::LEASE_RENEW:
    case records::Command::LEASE_REVOKE:
    case records::Command::LEASE_EXPIRE:
    case records::Command::LEASE_CHECKPOINT:
    case records::Command::COMPACT:
      return std::nullopt;
  }
  return "unknown command";
}

std::string encodeCommand(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

std::optional<CommandId> commandIdOf(std::string_view encoded) {
  auto words = alignedCopy(encoded);
  try {
    capnp::FlatArrayMessageReader message(words);
    auto id = message.getRoot<records::Command>().getId();
    return CommandId{id.getMember(), id.getIncarnation(), id.getSequence()};
  } catch (const kj::Exception&) {
    return std::nullopt;
  }
}

// --- digest --------------------------------------------------------------------------------

namespace {

using hash::fmix64;
using hash::fnv1a;
using hash::FNV_OFFSET_BASIS;

}  // namespace

uint64_t keyDigest(std::string_view key, const KeyRecord& record) {
  uint64_t hash = FNV_OFFSET_BASIS;
  hash = fnv1a(hash, uint64_t{key.size()});
  hash = fnv1a(hash, key);
  hash = fnv1a(hash, uint64_t{record.value.size()});
  hash = fnv1a(hash, record.value);
  hash = fnv1a(hash, record.createRevision);
  hash = fnv1a(hash, record.modRevision);
  hash = fnv1a(hash, record.version);
  hash = fnv1a(hash, record.lease);
  return fmix64(hash);
}

uint64_t mixRevision(uint64_t digest, uint64_t revision) {
  return fmix64(digest + fmix64(revision ^ 0x9e3779b97f4a7c15ull));
}

uint64_t StateMachine::recomputeDigest() const {
  uint64_t sum = 0;
  for (const auto& [key, record] : keys_)
    sum += keyDigest(key, record);
  return sum;
}

// --- restore -------------------------------------------------------------------------------

void StateMachine::restoreKey(std::string key, KeyRecord record) {
  auto it = keys_.find(key);
  if (it != keys_.end()) {
    digest_ -= keyDigest(it->first, it->second);
    leases_.detachKey(it->second.lease, key);
  }
  digest_ += keyDigest(key, record);
  leases_.attachKey(record.lease, key);
  keys_.insert_or_assign(std::move(key), std::move(record));
}

void StateMachine::restoreSession(MemberIndex member, std::string_view encoded) {
  auto words = alignedCopy(encoded);
  Session session;
  try {
    capnp::FlatArrayMessageReader message(words);
    auto reader = message.getRoot<records::Session>();
    for (auto inc : reader.getIncarnations()) {
      IncarnationSession restored;
      restored.incarnation = inc.getIncarnation();
      restored.floor = inc.getFloor();
      for (auto sequence : inc.getAppliedAbove())
        restored.appliedAbove.insert(sequence);
      session.incarnations.push_back(std::move(restored));
    }
    session.leaseCounter = reader.getLeaseCounter();
  } catch (const kj::Exception& e) {
    throw std::runtime_error("session of member " + std::to_string(member) +
                             " does not decode: " + std::string(e.getDescription().cStr()));
  }
  sessions_[member] = std::move(session);
}

void StateMachine::restoreLease(std::string_view encoded) {
  leases_.putLease(decodeLease(encoded), false);
}

void StateMachine::restoreLock(std::string_view encoded) {
  auto [name, lock] = decodeLock(encoded);
  leases_.putLock(name, std::move(lock), false);
}

void StateMachine::restoreApplied(Slot appliedSlot, uint64_t revision) {
  appliedSlot_ = appliedSlot;
  takenSlot_ = appliedSlot;
  revision_ = revision;
  history_.reset(revision + 1);
  historyTaken_ = revision;
  takenHistoryStart_ = history_.start();
}

void StateMachine::restoreHistory(uint64_t start, std::vector<RevisionChanges> revisions) {
  if (start == 0 || start > revision_ + 1) {
    throw std::runtime_error("history starts at revision " + std::to_string(start) +
                             ", after the applied revision " + std::to_string(revision_) + " + 1");
  }
  history_.reset(start);
  for (auto& revision : revisions) {
    if (revision.revision < start || revision.revision > revision_ ||
        (!history_.revisions().empty() &&
         history_.revisions().back()->revision >= revision.revision)) {
      throw std::runtime_error("history revision " + std::to_string(revision.revision) +
                               " is out of order or outside " + std::to_string(start) + ".." +
                               std::to_string(revision_));
    }
    history_.restore(std::move(revision));
  }
  takenHistoryStart_ = history_.start();
  // The limits may be lower than when these were stored.
  history_.seal(revision_);
}

// --- apply ---------------------------------------------------------------------------------

void StateMachine::apply(Slot slot, const Value& value, std::vector<AppliedCommand>& out) {
  KJ_ASSERT(slot == appliedSlot_ + 1, "slots must be applied in order", slot, appliedSlot_);
  appliedSlot_ = slot;
  for (const auto& encoded : value.commands) {
    auto words = alignedCopy(encoded);
    AppliedCommand applied;
    try {
      capnp::FlatArrayMessageReader message(words);
      auto command = message.getRoot<records::Command>();
      auto id = command.getId();
      applied.id = CommandId{id.getMember(), id.getIncarnation(), id.getSequence()};
      switch (checkSession(applied.id)) {
        case Seen::APPLIED: {
          applied.duplicate = true;
          auto it = recentResults_.find(applied.id);
          if (it != recentResults_.end()) {
            applied.outcome = it->second;
          } else {
            applied.outcome.revision = revision_;
            applied.outcome.message = "already applied; its original result is no longer kept";
          }
          break;
        }
        case Seen::EXPIRED:
          applied.duplicate = true;
          applied.outcome =
              failure(StatusCode::UNAVAILABLE, "command expired before it was applied; not applied",
                      revision_);
          break;
        case Seen::NEW:
          events_.clear();
          applied.outcome = applyCommand(command);
          history_.seal(revision_);
          applied.events = std::move(events_);
          events_.clear();
          recordSession(applied.id);
          recentResults_[applied.id] = applied.outcome;
          recentOrder_.push_back(applied.id);
          if (recentOrder_.size() > MAX_RESULTS_KEPT) {
            recentResults_.erase(recentOrder_.front());
            recentOrder_.pop_front();
          }
          break;
      }
    } catch (const kj::Exception& e) {
      // A command that does not decode can only come from a faulty proposer. Every member fails
      // it the same way and changes nothing.
      applied.outcome =
          failure(StatusCode::INTERNAL,
                  "command does not decode: " + std::string(e.getDescription().cStr()), revision_);
    }
    out.push_back(std::move(applied));
  }
}

CommandOutcome StateMachine::applyCommand(records::Command::Reader command) {
  if (auto bad = checkStructure(command)) {
    return failure(StatusCode::INVALID_ARGUMENT, *bad, revision_);
  }
  switch (command.which()) {
    case records::Command::PUT:
      return applyPut(command.getPut());
    case records::Command::DELETE:
      return applyDelete(command.getDelete());
    case records::Command::TXN:
      return applyTxn(command.getTxn());
    case records::Command::LEASE_GRANT:
      return applyLeaseGrant(command.getLeaseGrant());
    case records::Command::LEASE_RENEW:
      return applyLeaseRenew(command.getLeaseRenew());
    case records::Command::LEASE_REVOKE:
      return applyLeaseRevoke(command.getLeaseRevoke());
    case records::Command::LEASE_EXPIRE:
      return applyLeaseExpire(command.getLeaseExpire());
    case records::Command::LEASE_CHECKPOINT:
      return applyLeaseCheckpoint(command.getLeaseCheckpoint());
    case records::Command::LOCK:
      return applyLock(command.getLock());
    case records::Command::UNLOCK:
      return applyUnlock(command.getUnlock());
    case records::Command::PROCLAIM:
      return applyProclaim(command.getProclaim());
    case records::Command::COMPACT:
      return applyCompact(command.getCompact());
  }
  return failure(StatusCode::INVALID_ARGUMENT, "unknown command", revision_);
}

CommandOutcome StateMachine::applyPut(rpc::PutOp::Reader op) {
  if (op.getLease() != 0 && leases_.lease(op.getLease()) == nullptr) {
    return failure(StatusCode::NOT_FOUND, "lease " + std::to_string(op.getLease()) + " not found",
                   revision_);
  }
  ++revision_;
  putKey(view(op.getKey()), view(op.getValue()), op.getLease(), revision_);
  CommandOutcome outcome;
  outcome.revision = revision_;
  return outcome;
}

CommandOutcome StateMachine::applyDelete(rpc::DeleteOp::Reader op) {
  // A delete that removes nothing does not create a revision.
  uint64_t deleted = deleteRange(view(op.getKey()), view(op.getRangeEnd()), revision_ + 1);
  if (deleted > 0) ++revision_;
  CommandOutcome outcome;
  outcome.deleted = deleted;
  outcome.revision = revision_;
  return outcome;
}

CommandOutcome StateMachine::applyCompact(records::Compact::Reader op) {
  const uint64_t revision = op.getRevision();
  if (revision > revision_ + 1) {
    return failure(StatusCode::INVALID_ARGUMENT,
                   "compact: revision " + std::to_string(revision) +
                       " is ahead of the current revision " + std::to_string(revision_),
                   revision_);
  }
  history_.compact(revision);
  CommandOutcome outcome;
  outcome.revision = revision_;
  return outcome;
}

CommandOutcome StateMachine::applyTxn(rpc::Txn::Reader txn) {
  bool holds = true;
  for (auto compare : txn.getCompares()) {
    if (!compareHolds(compare)) {
      holds = false;
      break;
    }
  }
  auto ops = holds ? txn.getSuccess() : txn.getFailure();
  for (auto op : ops) {
    if (op.isPut() && op.getPut().getLease() != 0 &&
        leases_.lease(op.getPut().getLease()) == nullptr) {
      CommandOutcome outcome =
          failure(StatusCode::NOT_FOUND,
                  "lease " + std::to_string(op.getPut().getLease()) + " not found", revision_);
      outcome.succeeded = holds;
      return outcome;
    }
  }
  // All ops of the branch share one new revision, taken only if something changes.
  uint64_t next = revision_ + 1;
  bool changed = false;
  uint64_t deleted = 0;
  for (auto op : ops) {
    if (op.isPut()) {
      putKey(view(op.getPut().getKey()), view(op.getPut().getValue()), op.getPut().getLease(),
             next);
      changed = true;
    } else if (op.isDelete()) {
      uint64_t n =
          deleteRange(view(op.getDelete().getKey()), view(op.getDelete().getRangeEnd()), next);
      deleted += n;
      changed = changed || n > 0;
    }
  }
  if (changed) revision_ = next;
  CommandOutcome outcome;
  outcome.revision = revision_;
  outcome.deleted = deleted;
  outcome.succeeded = holds;
  return outcome;
}

bool StateMachine::compareHolds(rpc::Compare::Reader compare) const {
  const KeyRecord* record = get(view(compare.getKey()));
  auto target = compare.getTarget();
  switch (target.which()) {
    case rpc::Compare::Target::VALUE:
      // An absent key has no value: every value compare on it fails.
      if (record == nullptr) return false;
      return opHolds(compare.getOp(),
                     compareValues(std::string_view(record->value), view(target.getValue())));
    case rpc::Compare::Target::VERSION:
      return opHolds(compare.getOp(),
                     compareValues(record ? record->version : 0, target.getVersion()));
    case rpc::Compare::Target::CREATE_REVISION:
      return opHolds(compare.getOp(), compareValues(record ? record->createRevision : 0,
                                                    target.getCreateRevision()));
    case rpc::Compare::Target::MOD_REVISION:
      return opHolds(compare.getOp(),
                     compareValues(record ? record->modRevision : 0, target.getModRevision()));
    case rpc::Compare::Target::FENCE: {
      const Lock* lock = leases_.lock(view(compare.getKey()));
      uint64_t current = lock != nullptr && lock->holder ? lock->holder->fence : 0;
      return opHolds(compare.getOp(), compareValues(current, target.getFence()));
    }
  }
  return false;
}

void StateMachine::putKey(std::string_view key, std::string_view value, uint64_t lease,
                          uint64_t revision) {
  auto it = keys_.find(key);
  KeyChange change;
  change.key.assign(key);
  if (it == keys_.end()) {
    it = keys_.emplace(std::string(key), KeyRecord{}).first;
    it->second.createRevision = revision;
  } else {
    change.prev = it->second;
    digest_ -= keyDigest(it->first, it->second);
    leases_.detachKey(it->second.lease, key);
  }
  KeyRecord& record = it->second;
  leases_.attachKey(lease, key);
  record.value.assign(value);
  record.modRevision = revision;
  record.version += 1;
  record.lease = lease;
  digest_ += keyDigest(it->first, record);
  dirtyKeys_.emplace(key);
  change.record = record;
  history_.record(revision, std::move(change));
}

uint64_t StateMachine::deleteRange(std::string_view key, std::string_view rangeEnd,
                                   uint64_t revision) {
  if (rangeEnd.empty()) {
    auto it = keys_.find(key);
    if (it == keys_.end()) return 0;
    history_.record(revision, KeyChange{std::string(key), std::nullopt, it->second});
    digest_ -= keyDigest(it->first, it->second);
    leases_.detachKey(it->second.lease, key);
    keys_.erase(it);
    dirtyKeys_.emplace(key);
    return 1;
  }
  auto first = keys_.lower_bound(key);
  auto last = isOpenRangeEnd(rangeEnd) ? keys_.end() : keys_.lower_bound(rangeEnd);
  uint64_t count = 0;
  for (auto it = first; it != last; ++it, ++count) {
    history_.record(revision, KeyChange{it->first, std::nullopt, it->second});
    digest_ -= keyDigest(it->first, it->second);
    leases_.detachKey(it->second.lease, it->first);
    dirtyKeys_.insert(it->first);
  }
  keys_.erase(first, last);
  return count;
}

// --- sessions ------------------------------------------------------------------------------

StateMachine::Seen StateMachine::checkSession(const CommandId& id) const {
  auto it = sessions_.find(id.member);
  if (it == sessions_.end()) return Seen::NEW;
  const auto& incarnations = it->second.incarnations;
  for (const auto& inc : incarnations) {
    if (inc.incarnation != id.incarnation) continue;
    if (id.sequence < inc.floor) return Seen::APPLIED;
    return inc.appliedAbove.count(id.sequence) ? Seen::APPLIED : Seen::NEW;
  }
  // An incarnation older than every one kept has been forgotten: its daemon restarted at least
  // MAX_INCARNATIONS_KEPT times since. Refuse rather than risk applying a command twice.
  if (incarnations.size() >= MAX_INCARNATIONS_KEPT &&
      id.incarnation < incarnations.front().incarnation) {
    return Seen::EXPIRED;
  }
  return Seen::NEW;
}

void StateMachine::recordSession(const CommandId& id) {
  auto& incarnations = sessions_[id.member].incarnations;
  auto it =
      std::find_if(incarnations.begin(), incarnations.end(),
                   [&](const IncarnationSession& s) { return s.incarnation == id.incarnation; });
  if (it == incarnations.end()) {
    IncarnationSession fresh;
    fresh.incarnation = id.incarnation;
    it = incarnations.insert(
        std::upper_bound(
            incarnations.begin(), incarnations.end(), id.incarnation,
            [](uint64_t inc, const IncarnationSession& s) { return inc < s.incarnation; }),
        std::move(fresh));
    if (incarnations.size() > MAX_INCARNATIONS_KEPT) {
      bool droppedSelf = it == incarnations.begin();
      incarnations.erase(incarnations.begin());
      dirtySessions_.insert(id.member);
      if (droppedSelf) return;  // older than everything kept: nothing to remember
      it = std::find_if(incarnations.begin(), incarnations.end(), [&](const IncarnationSession& s) {
        return s.incarnation == id.incarnation;
      });
    }
  }
  IncarnationSession& session = *it;
  if (id.sequence == session.floor) {
    ++session.floor;
    while (!session.appliedAbove.empty() && *session.appliedAbove.begin() == session.floor) {
      session.appliedAbove.erase(session.appliedAbove.begin());
      ++session.floor;
    }
  } else if (id.sequence > session.floor) {
    session.appliedAbove.insert(id.sequence);
    if (session.appliedAbove.size() > MAX_APPLIED_ABOVE_FLOOR) {
      // A gap this old will not be filled: sequences below the oldest kept one expire.
      session.floor = *session.appliedAbove.begin() + 1;
      session.appliedAbove.erase(session.appliedAbove.begin());
      while (!session.appliedAbove.empty() && *session.appliedAbove.begin() == session.floor) {
        session.appliedAbove.erase(session.appliedAbove.begin());
        ++session.floor;
      }
    }
  }
  dirtySessions_.insert(id.member);
}

std::string StateMachine::encodeSession(const Session& session) const {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<records::Session>();
  root.setLeaseCounter(session.leaseCounter);
  auto list = root.initIncarnations(session.incarnations.size());
  for (size_t i = 0; i < session.incarnations.size(); ++i) {
    const auto& inc = session.incarnations[i];
    auto out = list[i];
    out.setIncarnation(inc.incarnation);
    out.setFloor(inc.floor);
    auto above = out.initAppliedAbove(inc.appliedAbove.size());
    size_t j = 0;
    for (uint64_t sequence : inc.appliedAbove)
      above.set(j++, sequence);
  }
  return encodeCommand(message);
}

// --- reads ---------------------------------------------------------------------------------

const KeyRecord* StateMachine::get(std::string_view key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second;
}

StateMachine::ListResult StateMachine::list(std::string_view prefix, std::string_view startAfter,
                                            size_t limit) const {
  ListResult result;
  auto it = keys_.lower_bound(prefix);
  if (!startAfter.empty() && startAfter >= prefix) it = keys_.upper_bound(startAfter);
  for (; it != keys_.end(); ++it) {
    if (std::string_view(it->first).substr(0, prefix.size()) != prefix) break;
    if (result.kvs.size() == limit) {
      result.more = true;
      break;
    }
    result.kvs.emplace_back(it->first, it->second);
  }
  return result;
}

std::optional<KeyRecord> StateMachine::getAt(std::string_view key, uint64_t revision) const {
  KJ_ASSERT(readableAt(revision), revision, history_.start(), revision_);
  const auto& kept = history_.revisions();
  // The first change after `revision` knows how the key was at `revision`.
  for (size_t i = history_.lowerBound(revision + 1); i < kept.size(); ++i) {
    for (const KeyChange& change : kept[i]->changes) {
      if (change.key == key) return change.prev;
    }
  }
  const KeyRecord* current = get(key);
  return current ? std::optional<KeyRecord>(*current) : std::nullopt;
}

StateMachine::ListResult StateMachine::listAt(const KeyRange& range, std::string_view startAfter,
                                              size_t limit, uint64_t revision) const {
  KJ_ASSERT(readableAt(revision), revision, history_.start(), revision_);
  auto wanted = [&](std::string_view key) {
    return range.contains(key) && (startAfter.empty() || key > startAfter);
  };
  // Keys changed after `revision`: how each was at `revision` (the first change's prev).
  std::map<std::string_view, const std::optional<KeyRecord>*> before;
  const auto& kept = history_.revisions();
  for (size_t i = history_.lowerBound(revision + 1); i < kept.size(); ++i) {
    for (const KeyChange& change : kept[i]->changes) {
      if (wanted(change.key)) before.try_emplace(change.key, &change.prev);
    }
  }
  ListResult result;
  auto current = keys_.lower_bound(range.key);
  if (!startAfter.empty() && startAfter >= range.key) current = keys_.upper_bound(startAfter);
  auto changed = before.begin();
  auto add = [&](std::string_view key, const KeyRecord& record) {
    if (result.kvs.size() == limit) {
      result.more = true;
      return false;
    }
    result.kvs.emplace_back(std::string(key), record);
    return true;
  };
  for (;;) {
    const bool currentLeft = current != keys_.end() && range.contains(current->first);
    if (!currentLeft && changed == before.end()) break;
    if (changed != before.end() && (!currentLeft || changed->first <= current->first)) {
      if (currentLeft && changed->first == current->first) ++current;
      if (*changed->second && !add(changed->first, **changed->second)) break;
      ++changed;
    } else {
      if (!add(current->first, current->second)) break;
      ++current;
    }
  }
  return result;
}

StateChanges StateMachine::takeChanges() {
  StateChanges changes;
  for (const auto& key : dirtyKeys_) {
    auto it = keys_.find(key);
    changes.keys.emplace(key,
                         it == keys_.end() ? std::nullopt : std::optional<KeyRecord>(it->second));
  }
  for (MemberIndex member : dirtySessions_) {
    auto it = sessions_.find(member);
    changes.sessions.emplace(member, it == sessions_.end()
                                         ? std::nullopt
                                         : std::optional<std::string>(encodeSession(it->second)));
  }
  changes.leases = leases_.takeDirtyLeases();
  changes.locks = leases_.takeDirtyLocks();
  dirtyKeys_.clear();
  dirtySessions_.clear();
  changes.appliedSlot = appliedSlot_;
  changes.revision = revision_;
  takenSlot_ = appliedSlot_;
  const auto& kept = history_.revisions();
  for (size_t i = history_.lowerBound(historyTaken_ + 1); i < kept.size(); ++i)
    changes.history.push_back(kept[i]);
  historyTaken_ = revision_;
  changes.historyStart = history_.start();
  takenHistoryStart_ = history_.start();
  return changes;
}

}  // namespace synod::election
