#include "daemon/service.h"

#include <capnp/message.h>
#include <kj/debug.h>

#include "daemon/lease_service.h"
#include "daemon/readiness.h"
#include "daemon/watch_service.h"

namespace synod::daemon {

namespace {

using rpc::Status;

constexpr uint32_t MAX_LIST_LIMIT = 10000;
// A list reply stops growing past this many bytes (and says `more`), so a reply always fits the
// client's message size limit.
constexpr size_t MAX_LIST_REPLY_BYTES = 16 << 20;

std::string_view view(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

capnp::Data::Reader bytes(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

void setStatus(Status::Builder status, StatusCode code, kj::StringPtr message) {
  status.setCode(code);
  status.setMessage(message);
}

void setHeader(rpc::Header::Builder header, const Node& node) {
  header.setRevision(node.state().revision());
  header.setMember(node.config().node);
  header.setBallotRound(node.ballot().round);
  header.setBallotMember(node.ballot().member);
}

void setKeyValue(rpc::KeyValue::Builder out, std::string_view key,
                 const election::KeyRecord& record) {
  out.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
  out.setValue(bytes(record.value));
  out.setCreateRevision(record.createRevision);
  out.setModRevision(record.modRevision);
  out.setVersion(record.version);
  out.setLease(record.lease);
}

// Checks the fields every request carries; returns a message naming what is wrong.
kj::Maybe<kj::String> checkTimeout(uint32_t timeoutMs) {
  if (timeoutMs > Node::MAX_TIMEOUT_MS) {
    return kj::str("timeoutMs ", timeoutMs, " is more than the maximum ", Node::MAX_TIMEOUT_MS);
  }
  return nullptr;
}

kj::Maybe<kj::String> checkKey(const Node& node, kj::StringPtr what, capnp::Data::Reader key) {
  if (key.size() == 0) return kj::str(what, ": empty key");
  if (key.size() > node.config().maxKeyBytes) {
    return kj::str(what, ": key is ", key.size(), " bytes, more than max_key_bytes (",
                   node.config().maxKeyBytes, ")");
  }
  return nullptr;
}

// Fills status and header of a reply that refuses the request.
template <typename Results>
void refuse(Results results, const Node& node, StatusCode code, kj::StringPtr message) {
  setStatus(results.initStatus(), code, message);
  setHeader(results.initHeader(), node);
}

class KvService final : public rpc::Kv::Server {
 public:
  explicit KvService(Node& node) : node_(node) {}

  kj::Promise<void> get(GetContext context) override {
    auto params = context.getParams();
    KJ_IF_MAYBE (bad, checkTimeout(params.getTimeoutMs())) {
      refuse(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    KJ_IF_MAYBE (bad, checkKey(node_, "get", params.getKey())) {
      refuse(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    return node_.readBarrier(params.getTimeoutMs(), params.getSerializable())
        .then([this, context](Refusal refusal) mutable {
          auto results = context.getResults();
          if (refusal.code != StatusCode::OK) {
            refuse(results, node_, refusal.code, refusal.message);
            return;
          }
          auto key = view(context.getParams().getKey());
          setHeader(results.initHeader(), node_);
          const election::KeyRecord* record = node_.state().get(key);
          if (record == nullptr) {
            setStatus(results.initStatus(), StatusCode::NOT_FOUND, kj::str("key not found"));
            return;
          }
          setStatus(results.initStatus(), StatusCode::OK, "");
          setKeyValue(results.initKv(), key, *record);
        });
  }

  kj::Promise<void> put(PutContext context) override {
    auto params = context.getParams();
    return propose(context, params.getTimeoutMs(),
                   [&](records::Command::Builder command) { command.setPut(params.getOp()); });
  }

  kj::Promise<void> delete_(DeleteContext context) override {
    auto params = context.getParams();
    return propose(context, params.getTimeoutMs(),
                   [&](records::Command::Builder command) { command.setDelete(params.getOp()); });
  }

  kj::Promise<void> txn(TxnContext context) override {
    auto params = context.getParams();
    return propose(context, params.getTimeoutMs(),
                   [&](records::Command::Builder command) { command.setTxn(params.getTxn()); });
  }

  kj::Promise<void> list(ListContext context) override {
    auto params = context.getParams();
    KJ_IF_MAYBE (bad, checkTimeout(params.getTimeoutMs())) {
      refuse(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    if (params.getLimit() > MAX_LIST_LIMIT) {
      refuse(
          context.getResults(), node_, StatusCode::INVALID_ARGUMENT,
          kj::str("list: limit ", params.getLimit(), " is more than the maximum ", MAX_LIST_LIMIT));
      return kj::READY_NOW;
    }
    if (params.getPrefix().size() > node_.config().maxKeyBytes ||
        params.getStartAfter().size() > node_.config().maxKeyBytes) {
      refuse(context.getResults(), node_, StatusCode::INVALID_ARGUMENT,
             kj::str("list: prefix or startAfter longer than max_key_bytes (",
                     node_.config().maxKeyBytes, ")"));
      return kj::READY_NOW;
    }
    return node_.readBarrier(params.getTimeoutMs(), params.getSerializable())
        .then([this, context](Refusal refusal) mutable { answerList(context, refusal); });
  }

 private:
  void answerList(ListContext& context, const Refusal& refusal) {
    auto params = context.getParams();
    auto results = context.getResults();
    if (refusal.code != StatusCode::OK) {
      refuse(results, node_, refusal.code, refusal.message);
      return;
    }
    uint32_t limit = params.getLimit() == 0 ? MAX_LIST_LIMIT : params.getLimit();
    auto page = node_.state().list(view(params.getPrefix()), view(params.getStartAfter()), limit);
    size_t replyBytes = 0;
    size_t count = 0;
    for (; count < page.kvs.size(); ++count) {
      replyBytes += page.kvs[count].first.size() + page.kvs[count].second.value.size() + 64;
      if (replyBytes > MAX_LIST_REPLY_BYTES && count > 0) break;
    }
    setStatus(results.initStatus(), StatusCode::OK, "");
    setHeader(results.initHeader(), node_);
    auto kvs = results.initKvs(count);
    for (size_t i = 0; i < count; ++i)
      setKeyValue(kvs[i], page.kvs[i].first, page.kvs[i].second);
    results.setMore(page.more || count < page.kvs.size());
  }

  // Builds a command with `fill`, proposes it and answers with its outcome.
  template <typename Context, typename Fill>
  kj::Promise<void> propose(Context& context, uint32_t timeoutMs, Fill&& fill) {
    KJ_IF_MAYBE (bad, checkTimeout(timeoutMs)) {
      refuse(context.getResults(), node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    auto message = kj::heap<capnp::MallocMessageBuilder>();
    fill(message->template initRoot<records::Command>());
    auto written = node_.write(*message, timeoutMs);
    return written.then([this, context, message = kj::mv(message)](CommandOutcome outcome) mutable {
      answer(context.getResults(), outcome);
    });
  }

  void answer(rpc::Kv::PutResults::Builder results, const CommandOutcome& outcome) {
    answerCommon(results, outcome);
  }
  void answer(rpc::Kv::DeleteResults::Builder results, const CommandOutcome& outcome) {
    answerCommon(results, outcome);
    results.setDeleted(outcome.deleted);
  }
  void answer(rpc::Kv::TxnResults::Builder results, const CommandOutcome& outcome) {
    answerCommon(results, outcome);
    results.setSucceeded(outcome.succeeded);
  }
  template <typename Results>
  void answerCommon(Results results, const CommandOutcome& outcome) {
    setStatus(results.initStatus(), outcome.code, outcome.message);
    setHeader(results.initHeader(), node_);
    // The revision the command produced (or saw), not whatever the map has reached since.
    if (outcome.code == StatusCode::OK || outcome.revision != 0) {
      results.getHeader().setRevision(outcome.revision);
    }
  }

  Node& node_;
};

// The fields of a member's row that come from its report.
void setReport(rpc::MemberStatus::Builder out, const MemberReport& report, uint64_t ageMs,
               const std::vector<std::string>& names) {
  out.setReported(true);
  out.setReportAgeMs(ageMs);
  out.setBallotRound(report.ballot.round);
  out.setBallotMember(report.ballot.member);
  if (report.leader && *report.leader < names.size()) out.setLeader(names[*report.leader]);
  out.setDecidedSlot(report.decidedSlot);
  out.setAppliedSlot(report.appliedSlot);
  out.setRevision(report.revision);
  out.setLeaseLeftMs(report.leaseLeftMs);
  out.setDbSizeBytes(report.dbSizeBytes);
  out.setStoreLimitBytes(report.storeLimitBytes);
  out.setCommitP50Us(report.commitP50Us);
  out.setCommitP99Us(report.commitP99Us);
  out.setIncarnation(report.incarnation);
  out.setUptimeMs(report.uptimeMs);
  out.setStateDigest(report.stateDigest);
  out.setRecovering(report.recovering);
  out.setRecoveryStage(report.recoveryStage);
  if (report.snapshotFrom && *report.snapshotFrom < names.size())
    out.setSnapshotFrom(names[*report.snapshotFrom]);
  out.setSnapshotBytesReceived(report.snapshotBytesReceived);
  out.setSnapshotBytesTotal(report.snapshotBytesTotal);
}

class AdminService final : public rpc::Admin::Server {
 public:
  AdminService(Node& node, PeerCredentials caller) : node_(node), caller_(caller) {}

  kj::Promise<void> status(StatusContext context) override {
    auto results = context.getResults();
    KJ_IF_MAYBE (bad, checkTimeout(context.getParams().getTimeoutMs())) {
      refuse(results, node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    NodeStatus status = node_.status();
    const std::vector<std::string> names = node_.config().peerNames();
    setStatus(results.initStatus(), StatusCode::OK, "");
    setHeader(results.initHeader(), node_);
    auto info = results.initInfo();
    info.setMember(status.member);
    info.setRole(status.role);
    info.setBallotRound(status.ballot.round);
    info.setBallotMember(status.ballot.member);
    info.setLeader(status.leader);
    info.setDecidedSlot(status.decidedSlot);
    info.setAppliedSlot(status.appliedSlot);
    info.setRevision(status.revision);
    info.setClusterId(node_.config().clusterId);
    info.setIncarnation(status.incarnation);
    info.setDbSizeBytes(status.dbSizeBytes);
    info.setStoreLimitBytes(node_.config().storeLimitBytes);
    info.setVersion(SYNOD_VERSION);
    info.setUptimeMs(status.uptimeMs);
    info.setCallerPid(caller_.pid);
    info.setCallerUid(caller_.uid);
    info.setCallerGid(caller_.gid);
    info.setLeaseLeftMs(static_cast<uint64_t>(status.leaseLeftNs / election::NANOS_PER_MS));
    info.setCommitP50Us(status.commitP50Us);
    info.setCommitP99Us(status.commitP99Us);
    info.setStateDigest(status.stateDigest);
    auto members = info.initMembers(status.members.size());
    for (size_t i = 0; i < status.members.size(); ++i) {
      const MemberInfo& member = status.members[i];
      members[i].setName(member.name);
      members[i].setAddress(member.address);
      members[i].setRole(member.role);
      members[i].setReachable(member.reachable);
      members[i].setLagSlots(member.lagSlots);
      members[i].setStale(member.stale);
      if (member.report) setReport(members[i], *member.report, member.reportAgeMs, names);
      members[i].setSlotsBehind(member.slotsBehind);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> transferLeader(TransferLeaderContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    KJ_IF_MAYBE (bad, checkTimeout(params.getTimeoutMs())) {
      refuse(results, node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    const std::vector<std::string> names = node_.config().peerNames();
    const std::string self = node_.config().node;
    std::optional<MemberIndex> target;
    const std::string wanted = params.getTarget();
    if (!wanted.empty()) {
      for (MemberIndex i = 0; i < names.size(); ++i) {
        if (names[i] == wanted) target = i;
      }
      if (!target) {
        std::string all;
        for (const std::string& name : names)
          all += (all.empty() ? "" : ", ") + name;
        refuse(results, node_, StatusCode::INVALID_ARGUMENT,
               kj::str("unknown member '", wanted, "'; the members are ", all));
        return kj::READY_NOW;
      }
    }
    const auto known = node_.knownLeader();
    if (known) results.setLeader(names[*known]);
    if (!node_.isLeader()) {
      refuse(results, node_, StatusCode::UNAVAILABLE,
             known ? kj::str(self, " does not lead; ask the leader, ", names[*known])
                   : kj::str(self, " does not lead and knows no leader"));
      return kj::READY_NOW;
    }
    if (target && *target == node_.self()) {
      refuse(results, node_, StatusCode::OK, "");  // it leads already
      return kj::READY_NOW;
    }
    if (!node_.transferLeadership(target)) {
      refuse(results, node_, StatusCode::UNAVAILABLE,
             target ? kj::str(wanted, " has not been heard from within an election timeout")
                    : kj::str("no follower has been heard from within an election timeout"));
      return kj::READY_NOW;
    }
    const uint32_t timeoutMs =
        params.getTimeoutMs() == 0 ? Node::DEFAULT_TIMEOUT_MS : params.getTimeoutMs();
    return node_.otherLeader(timeoutMs).then(
        [this, context, names, timeoutMs](std::optional<MemberIndex> leader) mutable {
          auto results = context.getResults();
          if (leader) {
            results.setLeader(names[*leader]);
            refuse(results, node_, StatusCode::OK, "");
          } else {
            refuse(results, node_, StatusCode::TIMEOUT,
                   kj::str("this member stepped down but no other member was known to lead "
                           "within ",
                           timeoutMs, " ms"));
          }
        });
  }

  kj::Promise<void> health(HealthContext context) override {
    auto results = context.getResults();
    KJ_IF_MAYBE (bad, checkTimeout(context.getParams().getTimeoutMs())) {
      refuse(results, node_, StatusCode::INVALID_ARGUMENT, *bad);
      return kj::READY_NOW;
    }
    // A health probe answers within a short bound unless the caller asked for longer.
    uint32_t timeoutMs = context.getParams().getTimeoutMs();
    if (timeoutMs == 0) timeoutMs = HEALTH_DEFAULT_TIMEOUT_MS;
    return checkReadiness(node_, timeoutMs).then([this, context](Readiness readiness) mutable {
      auto results = context.getResults();
      setStatus(results.initStatus(), StatusCode::OK, "");
      setHeader(results.initHeader(), node_);
      results.setLive(true);
      results.setReady(readiness.ready);
      results.setReason(readiness.reason);
    });
  }

 private:
  static constexpr uint32_t HEALTH_DEFAULT_TIMEOUT_MS = 2000;

  Node& node_;
  PeerCredentials caller_;
};

class SynodService final : public rpc::Synod::Server {
 public:
  SynodService(Node& node, PeerCredentials caller)
      : node_(node), caller_(caller), kv_(kj::heap<KvService>(node)) {}

  kj::Promise<void> kv(KvContext context) override {
    context.getResults().setKv(kv_);
    return kj::READY_NOW;
  }

  kj::Promise<void> admin(AdminContext context) override {
    context.getResults().setAdmin(kj::heap<AdminService>(node_, caller_));
    return kj::READY_NOW;
  }

  kj::Promise<void> leases(LeasesContext context) override {
    context.getResults().setLeases(newLeasesService(node_, caller_));
    return kj::READY_NOW;
  }

  kj::Promise<void> locks(LocksContext context) override {
    context.getResults().setLocks(newLocksService(node_));
    return kj::READY_NOW;
  }

  kj::Promise<void> watches(WatchesContext context) override {
    context.getResults().setWatches(newWatchesService(node_));
    return kj::READY_NOW;
  }

 private:
  Node& node_;
  PeerCredentials caller_;
  rpc::Kv::Client kv_;
};

}  // namespace

kj::Own<rpc::Synod::Server> newSynodBootstrap(Node& node, PeerCredentials caller) {
  return kj::heap<SynodService>(node, caller);
}

}  // namespace synod::daemon
