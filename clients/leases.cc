#include "clients/leases.h"

#include <algorithm>

namespace synod::clients {

const char* leaseEventName(LeaseEvent event) {
  switch (event) {
    case LeaseEvent::GRANTED:
      return "granted";
    case LeaseEvent::JEOPARDY:
      return "jeopardy";
    case LeaseEvent::SAFE:
      return "safe";
    case LeaseEvent::EXPIRED:
      return "expired";
  }
  return "expired";
}

// ---------------------------------------------------------------------------------------------
// Lease

Lease::Lease(AsyncClient& client, LeaseSettings settingsParam, Listener listenerParam,
             LeaseInfo infoParam, rpc::Lease::Client capParam, kj::TimePoint sentAt)
    : asyncClient(client),
      settings(settingsParam),
      listener(std::move(listenerParam)),
      info(std::move(infoParam)),
      cap(kj::mv(capParam)),
      localDeadline(sentAt + info.remainingMs * kj::MILLISECONDS) {
  uint64_t ttl = std::max<uint64_t>(info.ttlMs, 1);
  uint64_t intervalMs = settings.keepAliveIntervalMs ? settings.keepAliveIntervalMs : ttl / 6;
  uint64_t jeopardyMs = settings.jeopardyMs ? settings.jeopardyMs : ttl / 3;
  interval = std::max<uint64_t>(intervalMs, 1) * kj::MILLISECONDS;
  jeopardy = jeopardyMs * kj::MILLISECONDS;
}

Lease::~Lease() noexcept(false) {
  if (finished) return;
  KJ_IF_MAYBE (lease, cap) {
    asyncClient.addBackgroundTask(
        asyncClient.revokeLease(*lease, WriteOptions{settings.timeoutMs}).ignoreResult());
  }
}

uint64_t Lease::remainingMs() const {
  kj::TimePoint now = asyncClient.timer().now();
  if (now >= localDeadline) return 0;
  return (localDeadline - now) / kj::MILLISECONDS;
}

kj::Promise<Result<kj::Own<Lease>>> Lease::grant(AsyncClient& client, LeaseSettings settings,
                                                 Listener listener) {
  // The deadline counts from before the request left: the daemon's remainingMs is counted from
  // its committed renewal, which precedes the answer but not this send.
  kj::TimePoint sentAt = client.timer().now();
  auto granting = client.grantLease(settings.ttlMs, settings.options, settings.timeoutMs);
  return start(client, settings, std::move(listener), kj::mv(granting), sentAt);
}

kj::Promise<Result<kj::Own<Lease>>> Lease::attach(AsyncClient& client, uint64_t id,
                                                  LeaseSettings settings, Listener listener) {
  kj::TimePoint sentAt = client.timer().now();
  auto attaching = client.attachLease(id, settings.timeoutMs);
  return start(client, settings, std::move(listener), kj::mv(attaching), sentAt);
}

kj::Promise<Result<kj::Own<Lease>>> Lease::start(AsyncClient& client, LeaseSettings settings,
                                                 Listener listener,
                                                 kj::Promise<Result<LeaseGrant>> granting,
                                                 kj::TimePoint sentAt) {
  return granting.then([&client, settings, listener = std::move(listener),
                        sentAt](Result<LeaseGrant>&& granted) mutable {
    Result<kj::Own<Lease>> result;
    result.status = granted.status;
    result.header = granted.header;
    result.answered = granted.answered;
    if (!granted.ok()) return result;
    KJ_IF_MAYBE (cap, granted.reply.lease) {
      auto lease = kj::heap<Lease>(client, settings, std::move(listener), granted.reply.info,
                                   kj::mv(*cap), sentAt);
      lease->emit(LeaseEvent::GRANTED);
      lease->tasks.add(lease->keepAliveLoop(sentAt + lease->interval));
      lease->tasks.add(lease->watchLoop());
      result.reply = kj::mv(lease);
    } else {
      result.status = Status{Code::INTERNAL, "daemon granted a lease without a capability"};
    }
    return result;
  });
}

kj::Promise<void> Lease::keepAliveLoop(kj::TimePoint next) {
  return asyncClient.timer().atTime(next).then([this]() -> kj::Promise<void> {
    if (finished) return kj::READY_NOW;
    kj::TimePoint sentAt = asyncClient.timer().now();
    ++sent;
    auto lease = KJ_ASSERT_NONNULL(cap);
    uint32_t timeoutMs = static_cast<uint32_t>(std::max<uint64_t>(interval / kj::MILLISECONDS, 1));
    return asyncClient.keepAlive(lease, timeoutMs)
        .then([this, sentAt](Result<KeepAliveReply>&& reply) -> kj::Promise<void> {
          onKeepAlive(sentAt, reply);
          if (finished) return kj::READY_NOW;
          return keepAliveLoop(sentAt + interval);
        });
  });
}

void Lease::onKeepAlive(kj::TimePoint sentAt, const Result<KeepAliveReply>& reply) {
  if (finished) return;
  if (reply.status.code == Code::NOT_FOUND) {
    expire("the daemon says lease " + std::to_string(info.id) + " has ended", false);
    return;
  }
  if (!reply.ok()) {
    enterJeopardy("keepAlive failed: " + reply.status.message);
    return;
  }
  ++answered;
  if (reply->ttlMs != 0) info.ttlMs = reply->ttlMs;
  localDeadline = std::max(localDeadline, sentAt + reply->remainingMs * kj::MILLISECONDS);
  kj::TimePoint now = asyncClient.timer().now();
  if (current == LeaseEvent::JEOPARDY && now < localDeadline && localDeadline - now > jeopardy) {
    lastReason.clear();
    emit(LeaseEvent::SAFE);
  }
}

kj::Promise<void> Lease::watchLoop() {
  // The deadline only moves later, so waking early just looks again.
  kj::TimePoint at = current == LeaseEvent::JEOPARDY ? localDeadline : localDeadline - jeopardy;
  return asyncClient.timer().atTime(at).then([this]() -> kj::Promise<void> {
    if (finished) return kj::READY_NOW;
    kj::TimePoint now = asyncClient.timer().now();
    if (now >= localDeadline) {
      expire("the local deadline passed without a renewal", true);
      return kj::READY_NOW;
    }
    if (current != LeaseEvent::JEOPARDY && localDeadline - now <= jeopardy) {
      enterJeopardy("less than " + std::to_string(jeopardy / kj::MILLISECONDS) +
                    " ms left before the local deadline");
    }
    return watchLoop();
  });
}

void Lease::enterJeopardy(std::string reason) {
  lastReason = std::move(reason);
  if (current != LeaseEvent::JEOPARDY) emit(LeaseEvent::JEOPARDY);
}

void Lease::expire(std::string reason, bool revokeAtDaemon) {
  if (finished) return;
  finished = true;
  lastReason = std::move(reason);
  // The app stops acting now; a lease that may still live at the daemon must not keep holding
  // locks nobody uses.
  KJ_IF_MAYBE (lease, cap) {
    if (revokeAtDaemon) {
      asyncClient.addBackgroundTask(
          asyncClient.revokeLease(*lease, WriteOptions{settings.timeoutMs}).ignoreResult());
    }
  }
  cap = nullptr;
  emit(LeaseEvent::EXPIRED);
}

void Lease::emit(LeaseEvent event) {
  current = event;
  if (listener) listener(event);
}

kj::Promise<Result<Empty>> Lease::revoke() {
  KJ_IF_MAYBE (lease, cap) {
    auto revoking = asyncClient.revokeLease(*lease, WriteOptions{settings.timeoutMs});
    expire("revoked by the app", false);
    return kj::mv(revoking);
  }
  Result<Empty> result;
  result.status = Status{Code::NOT_FOUND, "lease " + std::to_string(info.id) + " has " +
                                              (finished ? "expired or been released" : "ended")};
  return result;
}

void Lease::release() {
  finished = true;
  cap = nullptr;
}

// ---------------------------------------------------------------------------------------------
// Lock and Election

namespace {

void validateName(const std::string& name, Status& status) {
  if (name.empty() || name.size() > MAX_LOCK_NAME_BYTES) {
    status = Status{Code::INVALID_ARGUMENT, "lock name must be 1 to " +
                                                std::to_string(MAX_LOCK_NAME_BYTES) +
                                                " bytes, got " + std::to_string(name.size())};
  }
}

template <typename T>
Result<kj::Own<T>> ownedResult(const Result<FenceReply>& reply) {
  Result<kj::Own<T>> result;
  result.status = reply.status;
  result.header = reply.header;
  result.answered = reply.answered;
  return result;
}

}  // namespace

Lock::Lock(Lease& lease, std::string name, uint64_t fence)
    : heldThrough(lease), lockName(std::move(name)), grantFence(fence) {}

Lock::~Lock() noexcept(false) {
  if (given || heldThrough.expired()) return;
  AsyncClient& client = heldThrough.client();
  client.addBackgroundTask(client.unlock(lockName, heldThrough.id()).ignoreResult());
}

kj::Promise<Result<kj::Own<Lock>>> Lock::acquire(Lease& lease, std::string name, bool wait,
                                                 uint32_t timeoutMs) {
  Status invalid;
  validateName(name, invalid);
  if (!invalid.ok()) {
    Result<kj::Own<Lock>> result;
    result.status = invalid;
    return result;
  }
  return lease.client()
      .lock(name, lease.id(), wait, timeoutMs)
      .then([&lease, name](Result<FenceReply>&& reply) -> kj::Promise<Result<kj::Own<Lock>>> {
        auto result = ownedResult<Lock>(reply);
        if (!reply.ok()) return kj::mv(result);
        auto lock = kj::heap<Lock>(lease, name, reply->fence);
        auto& ref = *lock;
        return ref.watchHolder().then([lock = kj::mv(lock), result = kj::mv(result)]() mutable {
          result.reply = kj::mv(lock);
          return kj::mv(result);
        });
      });
}

kj::Promise<void> Lock::watchHolder() {
  return heldThrough.client()
      .observe(lockName, [this](const LockChange& change) { observed(change); })
      .then([this](Result<Observation>&& result) {
        if (result.ok()) observation = kj::mv(result.reply);
      });
}

void Lock::observed(const LockChange& change) {
  if (given || !lost.empty()) return;
  if (!change.hasHolder) {
    lose("the lock is free since revision " + std::to_string(change.revision));
  } else if (change.holder.fence != grantFence) {
    lose("lease " + std::to_string(change.holder.lease) + " holds it with fence " +
         std::to_string(change.holder.fence) + " since revision " +
         std::to_string(change.revision));
  }
}

void Lock::lose(std::string reason) {
  lost = std::move(reason);
  observation = Observation();
  if (lostListener) lostListener(lost);
}

bool Lock::held() const {
  return !given && lost.empty() && !heldThrough.expired();
}

std::string Lock::lostReason() const {
  if (!lost.empty()) return lost;
  if (heldThrough.expired()) return "lease expired: " + heldThrough.reason();
  if (given) return "given up";
  return {};
}

void Lock::onLost(std::function<void(const std::string& reason)> listener) {
  lostListener = std::move(listener);
}

kj::Promise<Result<Empty>> Lock::unlock() {
  given = true;
  observation = Observation();
  return heldThrough.client().unlock(lockName, heldThrough.id());
}

void Lock::release() {
  given = true;
  observation = Observation();
}

Election::Election(Lease& lease, std::string name, std::string value, uint64_t fence)
    : Lock(lease, std::move(name), fence), leaderValue(std::move(value)) {}

kj::Promise<Result<kj::Own<Election>>> Election::campaign(Lease& lease, std::string name,
                                                          std::string value, uint32_t timeoutMs) {
  Status invalid;
  validateName(name, invalid);
  if (!invalid.ok()) {
    Result<kj::Own<Election>> result;
    result.status = invalid;
    return result;
  }
  return lease.client()
      .campaign(name, value, lease.id(), timeoutMs)
      .then([&lease, name,
             value](Result<FenceReply>&& reply) -> kj::Promise<Result<kj::Own<Election>>> {
        auto result = ownedResult<Election>(reply);
        if (!reply.ok()) return kj::mv(result);
        auto election = kj::heap<Election>(lease, name, value, reply->fence);
        auto& ref = *election;
        return ref.watchHolder().then(
            [election = kj::mv(election), result = kj::mv(result)]() mutable {
              result.reply = kj::mv(election);
              return kj::mv(result);
            });
      });
}

kj::Promise<Result<Empty>> Election::proclaim(std::string value) {
  leaderValue = value;
  return heldThrough.client().proclaim(lockName, heldThrough.id(), std::move(value));
}

}  // namespace synod::clients
