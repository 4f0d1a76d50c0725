#include "daemon/lease_service.h"

#include <capnp/message.h>
#include <kj/debug.h>

#include "daemon/app_leases.h"

namespace synod::daemon {

namespace {

using rpc::Status;

std::string text(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

void setHeader(rpc::Header::Builder header, const Node& node, uint64_t revision = 0) {
  header.setRevision(revision != 0 ? revision : node.state().revision());
  header.setMember(node.config().node);
  header.setBallotRound(node.ballot().round);
  header.setBallotMember(node.ballot().member);
}

// Fills status and header of a reply; `revision` 0 = the current one.
template <typename Results>
void answer(Results results, const Node& node, StatusCode code, kj::StringPtr message,
            uint64_t revision = 0) {
  auto status = results.initStatus();
  status.setCode(code);
  status.setMessage(message);
  setHeader(results.initHeader(), node, revision);
}

template <typename Results>
void answer(Results results, const Node& node, const CommandOutcome& outcome) {
  answer(results, node, outcome.code, outcome.message, outcome.revision);
}

kj::Maybe<kj::String> checkTimeout(uint32_t timeoutMs) {
  if (timeoutMs > Node::MAX_TIMEOUT_MS) {
    return kj::str("timeoutMs ", timeoutMs, " is more than the maximum ", Node::MAX_TIMEOUT_MS);
  }
  return nullptr;
}

kj::Maybe<kj::String> checkLease(kj::StringPtr what, uint64_t lease) {
  if (lease == 0) return kj::str(what, ": lease id 0");
  return nullptr;
}

kj::Maybe<kj::String> checkName(kj::StringPtr what, capnp::Data::Reader name) {
  if (name.size() == 0) return kj::str(what, ": empty lock name");
  if (name.size() > election::MAX_LOCK_NAME_BYTES) {
    return kj::str(what, ": lock name is ", name.size(), " bytes, more than ",
                   election::MAX_LOCK_NAME_BYTES);
  }
  return nullptr;
}

// The first problem of several checks.
kj::Maybe<kj::String> firstOf(kj::Maybe<kj::String> a, kj::Maybe<kj::String> b = nullptr,
                              kj::Maybe<kj::String> c = nullptr) {
  KJ_IF_MAYBE (bad, a) {
    return kj::mv(*bad);
  }
  KJ_IF_MAYBE (bad, b) {
    return kj::mv(*bad);
  }
  KJ_IF_MAYBE (bad, c) {
    return kj::mv(*bad);
  }
  return nullptr;
}

// Answers INVALID_ARGUMENT and returns true when `problem` is set.
template <typename Context>
bool refused(Context& context, const Node& node, kj::Maybe<kj::String> problem) {
  KJ_IF_MAYBE (bad, problem) {
    answer(context.getResults(), node, StatusCode::INVALID_ARGUMENT, *bad);
    return true;
  }
  return false;
}

// --- Lease ---------------------------------------------------------------------------------

class LeaseCap final : public rpc::Lease::Server {
 public:
  LeaseCap(Node& node, uint64_t id) : node_(node), id_(id) {}
  ~LeaseCap() noexcept(false) { node_.appLeases().capDropped(id_); }

  kj::Promise<void> keepAlive(KeepAliveContext context) override {
    auto results = context.getResults();
    auto safe = node_.appLeases().keepAlive(id_, bootTimeNow());
    const election::Lease* lease = node_.state().lease(id_);
    if (!safe || lease == nullptr) {
      answer(results, node_, StatusCode::NOT_FOUND, kj::str("lease ", id_, " ended"));
      return kj::READY_NOW;
    }
    answer(results, node_, StatusCode::OK, "");
    results.setRemainingMs(static_cast<uint64_t>(*safe / election::NANOS_PER_MS));
    results.setTtlMs(lease->ttlMs);
    return kj::READY_NOW;
  }

  kj::Promise<void> revoke(RevokeContext context) override {
    const uint32_t timeoutMs = context.getParams().getTimeoutMs();
    if (refused(context, node_, checkTimeout(timeoutMs))) return kj::READY_NOW;
    return node_.appLeases()
        .revoke(id_, timeoutMs)
        .then([this, context](CommandOutcome outcome) mutable {
          answer(context.getResults(), node_, outcome);
        });
  }

  kj::Promise<void> info(InfoContext context) override {
    const uint32_t timeoutMs = context.getParams().getTimeoutMs();
    if (refused(context, node_, checkTimeout(timeoutMs))) return kj::READY_NOW;
    return node_.readBarrier(timeoutMs, false).then([this, context](Refusal refusal) mutable {
      auto results = context.getResults();
      if (refusal.code != StatusCode::OK) {
        answer(results, node_, refusal.code, refusal.message);
        return;
      }
      const election::Lease* lease = node_.state().lease(id_);
      if (lease == nullptr) {
        answer(results, node_, StatusCode::NOT_FOUND, kj::str("lease ", id_, " ended"));
        return;
      }
      answer(results, node_, StatusCode::OK, "");
      node_.appLeases().fillInfo(results.initInfo(), *lease, bootTimeNow());
    });
  }

 private:
  Node& node_;
  uint64_t id_;
};

// --- Leases --------------------------------------------------------------------------------

class LeasesService final : public rpc::Leases::Server {
 public:
  LeasesService(Node& node, PeerCredentials caller) : node_(node), caller_(caller) {}

  kj::Promise<void> grant(GrantContext context) override {
    auto params = context.getParams();
    const uint64_t ttlMs = params.getTtlMs();
    const bool detached = params.getOptions().getDetached();
    const int32_t lockDelayMs = params.getOptions().getLockDelayMs();
    const uint32_t timeoutMs = params.getTimeoutMs();
    if (refused(context, node_, firstOf(checkTimeout(timeoutMs), checkTtl(ttlMs)))) {
      return kj::READY_NOW;
    }
    const uint32_t maxDelayMs = node_.config().leaseTtlMaxMs;
    if (lockDelayMs < -1 || (lockDelayMs > 0 && static_cast<uint32_t>(lockDelayMs) > maxDelayMs)) {
      answer(
          context.getResults(), node_, StatusCode::INVALID_ARGUMENT,
          kj::str("grant: lockDelayMs ", lockDelayMs, " is outside -1 (lock_delay_ms, ",
                  node_.config().lockDelayMs, ") and 0 .. lease_ttl_max_ms (", maxDelayMs, " ms)"));
      return kj::READY_NOW;
    }
    return node_.appLeases()
        .grant(ttlMs, detached, lockDelayMs, caller_, timeoutMs)
        .then([this, context](LeaseReply reply) mutable { answerLease(context, kj::mv(reply)); });
  }

  kj::Promise<void> attach(AttachContext context) override {
    auto params = context.getParams();
    const uint64_t id = params.getId();
    const uint32_t timeoutMs = params.getTimeoutMs();
    if (refused(context, node_, firstOf(checkTimeout(timeoutMs), checkLease("attach", id)))) {
      return kj::READY_NOW;
    }
    return node_.appLeases().attach(id, timeoutMs).then([this, context](LeaseReply reply) mutable {
      answerLease(context, kj::mv(reply));
    });
  }

  kj::Promise<void> list(ListContext context) override {
    auto params = context.getParams();
    if (refused(context, node_, checkTimeout(params.getTimeoutMs()))) return kj::READY_NOW;
    return node_.readBarrier(params.getTimeoutMs(), params.getSerializable())
        .then([this, context](Refusal refusal) mutable {
          auto results = context.getResults();
          if (refusal.code != StatusCode::OK) {
            answer(results, node_, refusal.code, refusal.message);
            return;
          }
          answer(results, node_, StatusCode::OK, "");
          const auto& table = node_.state().leases();
          auto leases = results.initLeases(table.leaseCount());
          const Nanos now = bootTimeNow();
          size_t i = 0;
          table.forEachLease([&](const election::Lease& lease) {
            node_.appLeases().fillInfo(leases[i++], lease, now);
          });
        });
  }

  kj::Promise<void> info(InfoContext context) override {
    auto params = context.getParams();
    if (refused(context, node_,
                firstOf(checkTimeout(params.getTimeoutMs()), checkLease("info", params.getId())))) {
      return kj::READY_NOW;
    }
    return node_.readBarrier(params.getTimeoutMs(), params.getSerializable())
        .then([this, context](Refusal refusal) mutable {
          auto results = context.getResults();
          if (refusal.code != StatusCode::OK) {
            answer(results, node_, refusal.code, refusal.message);
            return;
          }
          const uint64_t id = context.getParams().getId();
          const election::Lease* lease = node_.state().lease(id);
          if (lease == nullptr) {
            answer(results, node_, StatusCode::NOT_FOUND, kj::str("lease ", id, " not found"));
            return;
          }
          answer(results, node_, StatusCode::OK, "");
          node_.appLeases().fillInfo(results.initInfo(), *lease, bootTimeNow());
        });
  }

  kj::Promise<void> revoke(RevokeContext context) override {
    auto params = context.getParams();
    const uint64_t id = params.getId();
    const uint32_t timeoutMs = params.getTimeoutMs();
    if (refused(context, node_, firstOf(checkTimeout(timeoutMs), checkLease("revoke", id)))) {
      return kj::READY_NOW;
    }
    return node_.appLeases()
        .revoke(id, timeoutMs)
        .then([this, context](CommandOutcome outcome) mutable {
          answer(context.getResults(), node_, outcome);
        });
  }

 private:
  // The TTL rule of validateRequest, with its message: never clamped.
  kj::Maybe<kj::String> checkTtl(uint64_t ttlMs) const {
    capnp::MallocMessageBuilder message;
    auto op = message.initRoot<records::Command>().initLeaseGrant();
    op.setId(election::makeLeaseId(node_.self(), 1));
    op.setTtlMs(ttlMs);
    op.initHolder().setMember(node_.self());
    if (auto bad = election::validateRequest(message.getRoot<records::Command>().asReader(),
                                             node_.requestLimits())) {
      return kj::str(bad->c_str());
    }
    return nullptr;
  }

  template <typename Context>
  void answerLease(Context& context, LeaseReply reply) {
    auto results = context.getResults();
    answer(results, node_, reply.code, reply.message, reply.revision);
    if (reply.code != StatusCode::OK) return;
    results.setLease(kj::mv(reply.cap));
    if (const election::Lease* lease = node_.state().lease(reply.lease)) {
      node_.appLeases().fillInfo(results.initInfo(), *lease, bootTimeNow());
    } else {
      results.initInfo().setId(reply.lease);
    }
  }

  Node& node_;
  PeerCredentials caller_;
};

// --- Locks ---------------------------------------------------------------------------------

class ObservationCap final : public rpc::Observation::Server {
 public:
  ObservationCap(Node& node, uint64_t id) : node_(node), id_(id) {}
  ~ObservationCap() noexcept(false) { node_.appLeases().unobserve(id_); }

  kj::Promise<void> cancel(CancelContext) override {
    node_.appLeases().unobserve(id_);
    return kj::READY_NOW;
  }

 private:
  Node& node_;
  uint64_t id_;
};

class LocksService final : public rpc::Locks::Server {
 public:
  explicit LocksService(Node& node) : node_(node) {}

  kj::Promise<void> lock(LockContext context) override {
    auto params = context.getParams();
    return acquire(context, "lock", params.getName(), params.getLease(), {}, params.getWait(),
                   params.getTimeoutMs());
  }

  kj::Promise<void> campaign(CampaignContext context) override {
    auto params = context.getParams();
    return acquire(context, "campaign", params.getName(), params.getLease(), params.getValue(),
                   true, params.getTimeoutMs());
  }

  kj::Promise<void> unlock(UnlockContext context) override {
    auto params = context.getParams();
    if (refused(context, node_,
                firstOf(checkTimeout(params.getTimeoutMs()), checkName("unlock", params.getName()),
                        checkLease("unlock", params.getLease())))) {
      return kj::READY_NOW;
    }
    return node_.appLeases()
        .unlock(text(params.getName()), params.getLease(), params.getTimeoutMs())
        .then([this, context](CommandOutcome outcome) mutable {
          answer(context.getResults(), node_, outcome);
        });
  }

  kj::Promise<void> proclaim(ProclaimContext context) override {
    auto params = context.getParams();
    if (refused(
            context, node_,
            firstOf(checkTimeout(params.getTimeoutMs()), checkName("proclaim", params.getName()),
                    checkLease("proclaim", params.getLease())))) {
      return kj::READY_NOW;
    }
    return node_.appLeases()
        .proclaim(text(params.getName()), params.getLease(), text(params.getValue()),
                  params.getTimeoutMs())
        .then([this, context](CommandOutcome outcome) mutable {
          answer(context.getResults(), node_, outcome);
        });
  }

  kj::Promise<void> leader(LeaderContext context) override {
    auto params = context.getParams();
    if (refused(
            context, node_,
            firstOf(checkTimeout(params.getTimeoutMs()), checkName("leader", params.getName())))) {
      return kj::READY_NOW;
    }
    return node_.readBarrier(params.getTimeoutMs(), params.getSerializable())
        .then([this, context](Refusal refusal) mutable {
          auto results = context.getResults();
          if (refusal.code != StatusCode::OK) {
            answer(results, node_, refusal.code, refusal.message);
            return;
          }
          const std::string name = text(context.getParams().getName());
          auto holder = node_.state().holder(name);
          if (!holder) {
            answer(results, node_, StatusCode::NOT_FOUND,
                   kj::str("lock \"", name.c_str(), "\" is free"));
            return;
          }
          answer(results, node_, StatusCode::OK, "");
          node_.appLeases().fillHolder(results.initHolder(), *holder);
        });
  }

  kj::Promise<void> checkFence(CheckFenceContext context) override {
    auto params = context.getParams();
    if (refused(context, node_,
                firstOf(checkTimeout(params.getTimeoutMs()),
                        checkName("checkFence", params.getName())))) {
      return kj::READY_NOW;
    }
    return node_.readBarrier(params.getTimeoutMs(), params.getSerializable())
        .then([this, context](Refusal refusal) mutable {
          auto results = context.getResults();
          if (refusal.code != StatusCode::OK) {
            answer(results, node_, refusal.code, refusal.message);
            return;
          }
          auto params = context.getParams();
          const std::string name = text(params.getName());
          answer(results, node_, StatusCode::OK, "");
          results.setCurrent(node_.state().checkFence(name, params.getFence()));
          auto holder = node_.state().holder(name);
          results.setHasHolder(holder.has_value());
          if (holder) node_.appLeases().fillHolder(results.initHolder(), *holder);
        });
  }

  kj::Promise<void> observe(ObserveContext context) override {
    auto params = context.getParams();
    if (refused(context, node_, checkName("observe", params.getName()))) return kj::READY_NOW;
    auto results = context.getResults();
    if (!params.hasObserver()) {
      answer(results, node_, StatusCode::INVALID_ARGUMENT, "observe: no observer");
      return kj::READY_NOW;
    }
    AppLeases& leases = node_.appLeases();
    const uint64_t id = leases.observe(text(params.getName()), params.getObserver());
    if (id == 0) {
      answer(
          results, node_, StatusCode::UNAVAILABLE,
          kj::str("observe: this member serves ", AppLeases::MAX_OBSERVERS, " observers already"));
      return kj::READY_NOW;
    }
    answer(results, node_, StatusCode::OK, "");
    results.setObservation(kj::heap<ObservationCap>(node_, id));
    return kj::READY_NOW;
  }

 private:
  template <typename Context>
  kj::Promise<void> acquire(Context& context, kj::StringPtr what, capnp::Data::Reader name,
                            uint64_t lease, capnp::Data::Reader value, bool wait,
                            uint32_t timeoutMs) {
    if (refused(context, node_,
                firstOf(checkTimeout(timeoutMs), checkName(what, name), checkLease(what, lease)))) {
      return kj::READY_NOW;
    }
    // A wait the app gives up on (or whose connection closes) must leave the queue: Cap'n Proto
    // 0.9 cancels a call on the caller's Finish only when allowed.
    context.allowCancellation();
    return node_.appLeases()
        .lock(text(name), lease, text(value), wait, timeoutMs)
        .then([this, context](LeaseReply reply) mutable {
          auto results = context.getResults();
          answer(results, node_, reply.code, reply.message, reply.revision);
          if (reply.code == StatusCode::OK) results.setFence(reply.fence);
        });
  }

  Node& node_;
};

}  // namespace

kj::Own<rpc::Leases::Server> newLeasesService(Node& node, PeerCredentials caller) {
  return kj::heap<LeasesService>(node, caller);
}

kj::Own<rpc::Locks::Server> newLocksService(Node& node) {
  return kj::heap<LocksService>(node);
}

rpc::Lease::Client newLeaseCap(Node& node, uint64_t id) {
  return kj::heap<LeaseCap>(node, id);
}

}  // namespace synod::daemon
