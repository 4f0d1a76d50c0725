#include "tests/clients/fake_daemon.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <kj/debug.h>
#include <cstring>
#include <list>
#include <vector>

namespace synod::clients::testing {

namespace {

std::string toString(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

capnp::Data::Reader bytesOf(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

void fillHeader(rpc::Header::Builder header, const FakeState& state) {
  header.setRevision(state.revision);
  header.setMember(state.member);
  header.setBallotRound(7);
  header.setBallotMember(0);
}

void setStatus(rpc::Status::Builder status, rpc::Status::Code code, const char* message = "") {
  status.setCode(code);
  status.setMessage(message);
}

/// Common start of every Kv call: records the call; false when a forced status was answered.
template <typename Results>
bool begin(FakeState& state, Results results) {
  ++state.calls;
  if (state.unimplemented) {
    kj::throwFatalException(KJ_EXCEPTION(UNIMPLEMENTED, "fake daemon: Kv not implemented"));
  }
  KJ_IF_MAYBE (code, state.forcedCode) {
    setStatus(results.initStatus(), *code, "forced by the test");
    fillHeader(results.initHeader(), state);
    return false;
  }
  return true;
}

bool inRange(const std::string& key, const std::string& start, const std::string& rangeEnd) {
  if (rangeEnd.empty()) return key == start;
  if (key < start) return false;
  return rangeEnd == std::string(1, '\0') || key < rangeEnd;
}

uint64_t deleteRange(FakeState& state, const std::string& start, const std::string& rangeEnd) {
  uint64_t deleted = 0;
  for (auto it = state.kvs.begin(); it != state.kvs.end();) {
    if (inRange(it->first, start, rangeEnd)) {
      it = state.kvs.erase(it);
      ++deleted;
    } else {
      ++it;
    }
  }
  return deleted;
}

void putKey(FakeState& state, const std::string& key, const std::string& value,
            uint64_t lease = 0) {
  FakeEntry& entry = state.kvs[key];
  if (entry.version == 0) entry.createRevision = state.revision;
  entry.value = value;
  entry.modRevision = state.revision;
  entry.lease = lease;
  ++entry.version;
}

template <typename T>
bool compareWith(const T& actual, const T& expected, rpc::Compare::Op op) {
  switch (op) {
    case rpc::Compare::Op::EQUAL:
      return actual == expected;
    case rpc::Compare::Op::NOT_EQUAL:
      return actual != expected;
    case rpc::Compare::Op::LESS:
      return actual < expected;
    case rpc::Compare::Op::GREATER:
      return actual > expected;
  }
  return false;
}

bool holds(const FakeState& state, rpc::Compare::Reader compare) {
  auto it = state.kvs.find(toString(compare.getKey()));
  FakeEntry absent;
  const FakeEntry& entry = it == state.kvs.end() ? absent : it->second;
  auto target = compare.getTarget();
  switch (target.which()) {
    case rpc::Compare::Target::VALUE:
      if (it == state.kvs.end()) return compare.getOp() == rpc::Compare::Op::NOT_EQUAL;
      return compareWith(entry.value, toString(target.getValue()), compare.getOp());
    case rpc::Compare::Target::VERSION:
      return compareWith(entry.version, target.getVersion(), compare.getOp());
    case rpc::Compare::Target::CREATE_REVISION:
      return compareWith(entry.createRevision, target.getCreateRevision(), compare.getOp());
    case rpc::Compare::Target::MOD_REVISION:
      return compareWith(entry.modRevision, target.getModRevision(), compare.getOp());
    case rpc::Compare::Target::FENCE: {
      auto lock = state.locks.find(toString(compare.getKey()));
      uint64_t fence = lock == state.locks.end() ? 0 : lock->second.fence;
      return compareWith(fence, target.getFence(), compare.getOp());
    }
  }
  return false;
}

class FakeKv final : public rpc::Kv::Server {
 public:
  explicit FakeKv(FakeState& state) : state(state) {}

  kj::Promise<void> get(GetContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    state.lastSerializable = params.getSerializable();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    if (!begin(state, results)) return kj::READY_NOW;
    fillHeader(results.initHeader(), state);
    auto it = state.kvs.find(toString(params.getKey()));
    if (it == state.kvs.end()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND);
      return kj::READY_NOW;
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    auto kv = results.initKv();
    kv.setKey(bytesOf(it->first));
    kv.setValue(bytesOf(it->second.value));
    kv.setCreateRevision(it->second.createRevision);
    kv.setModRevision(it->second.modRevision);
    kv.setVersion(it->second.version);
    kv.setLease(it->second.lease);
    return kj::READY_NOW;
  }

  kj::Promise<void> put(PutContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    if (!begin(state, results)) return kj::READY_NOW;
    std::string key = toString(params.getOp().getKey());
    uint64_t lease = params.getOp().getLease();
    if (key.empty()) {
      setStatus(results.initStatus(), rpc::Status::Code::INVALID_ARGUMENT, "empty key");
    } else if (lease != 0 && state.leases.count(lease) == 0) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "lease not found");
    } else {
      ++state.revision;
      putKey(state, key, toString(params.getOp().getValue()), lease);
      setStatus(results.initStatus(), rpc::Status::Code::OK);
    }
    fillHeader(results.initHeader(), state);
    return kj::READY_NOW;
  }

  kj::Promise<void> delete_(DeleteContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    if (!begin(state, results)) return kj::READY_NOW;
    uint64_t deleted = deleteRange(state, toString(params.getOp().getKey()),
                                   toString(params.getOp().getRangeEnd()));
    if (deleted > 0) ++state.revision;
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    results.setDeleted(deleted);
    return kj::READY_NOW;
  }

  kj::Promise<void> list(ListContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    state.lastSerializable = params.getSerializable();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    if (!begin(state, results)) return kj::READY_NOW;
    std::string prefix = toString(params.getPrefix());
    std::string startAfter = toString(params.getStartAfter());
    uint32_t limit = params.getLimit();
    if (limit == 0 || limit > state.maxListLimit) limit = state.maxListLimit;
    std::vector<std::pair<std::string, FakeEntry>> selected;
    bool more = false;
    for (const auto& [key, entry] : state.kvs) {
      if (key.compare(0, prefix.size(), prefix) != 0) continue;
      if (!startAfter.empty() && key <= startAfter) continue;
      if (selected.size() == limit) {
        more = true;
        break;
      }
      selected.emplace_back(key, entry);
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    auto kvs = results.initKvs(selected.size());
    for (size_t i = 0; i < selected.size(); ++i) {
      kvs[i].setKey(bytesOf(selected[i].first));
      kvs[i].setValue(bytesOf(selected[i].second.value));
      kvs[i].setCreateRevision(selected[i].second.createRevision);
      kvs[i].setModRevision(selected[i].second.modRevision);
      kvs[i].setVersion(selected[i].second.version);
      kvs[i].setLease(selected[i].second.lease);
    }
    results.setMore(more);
    return kj::READY_NOW;
  }

  kj::Promise<void> txn(TxnContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    if (!begin(state, results)) return kj::READY_NOW;
    auto txn = params.getTxn();
    bool succeeded = true;
    for (auto compare : txn.getCompares())
      succeeded = succeeded && holds(state, compare);
    auto ops = succeeded ? txn.getSuccess() : txn.getFailure();
    if (ops.size() > 0) ++state.revision;
    for (auto op : ops) {
      if (op.isPut()) {
        putKey(state, toString(op.getPut().getKey()), toString(op.getPut().getValue()));
      } else {
        deleteRange(state, toString(op.getDelete().getKey()),
                    toString(op.getDelete().getRangeEnd()));
      }
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    results.setSucceeded(succeeded);
    return kj::READY_NOW;
  }

 private:
  FakeState& state;
};

class FakeAdmin final : public rpc::Admin::Server {
 public:
  explicit FakeAdmin(FakeState& state) : state(state) {}

  kj::Promise<void> status(StatusContext context) override {
    state.lastTimeoutMs = context.getParams().getTimeoutMs();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    auto info = results.initInfo();
    info.setMember(state.member);
    info.setRole("leader");
    info.setBallotRound(7);
    info.setBallotMember(0);
    info.setLeader(state.member);
    info.setDecidedSlot(41);
    info.setAppliedSlot(40);
    info.setRevision(state.revision);
    info.setClusterId("test");
    info.setIncarnation(3);
    info.setDbSizeBytes(4096);
    info.setStoreLimitBytes(1 << 20);
    info.setVersion("fake");
    info.setUptimeMs(1500);
    info.setLeaseLeftMs(1999);
    info.setCommitP50Us(700);
    info.setCommitP99Us(3100);
    info.setStateDigest(0xfedcba9876543210ull);
    auto members = info.initMembers(2);
    members[0].setName(state.member);
    members[0].setAddress("127.0.0.1:7101");
    members[0].setRole("leader");
    members[0].setReachable(true);
    members[0].setReported(true);
    members[0].setBallotRound(7);
    members[0].setBallotMember(0);
    members[0].setLeader(state.member);
    members[0].setDecidedSlot(41);
    members[0].setAppliedSlot(40);
    members[0].setRevision(state.revision);
    members[0].setLeaseLeftMs(1999);
    members[0].setDbSizeBytes(4096);
    members[0].setStoreLimitBytes(1 << 20);
    members[0].setCommitP50Us(700);
    members[0].setCommitP99Us(3100);
    members[0].setIncarnation(3);
    members[0].setUptimeMs(1500);
    members[0].setStateDigest(0xfedcba9876543210ull);
    members[1].setName("n2");
    members[1].setAddress("127.0.0.1:7102");
    members[1].setRole("follower");
    members[1].setReachable(false);
    members[1].setLagSlots(12);
    members[1].setStale(true);
    members[1].setReported(true);
    members[1].setReportAgeMs(4321);
    members[1].setRecovering(true);
    members[1].setRecoveryStage("catching up to slot 41 before voting");
    members[1].setSnapshotFrom(state.member);
    members[1].setSnapshotBytesReceived(3250586);
    members[1].setSnapshotBytesTotal(10485760);
    members[1].setSlotsBehind(41);
    return kj::READY_NOW;
  }

  kj::Promise<void> health(HealthContext context) override {
    state.lastTimeoutMs = context.getParams().getTimeoutMs();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    results.setLive(true);
    results.setReady(state.ready);
    results.setReason(state.ready ? "serving linearizable requests" : state.notReadyReason);
    return kj::READY_NOW;
  }

 private:
  FakeState& state;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Leases and locks

/// The live side of leases and locks: queued waits, observers, deferred revokes.
class FakeDaemon::Runtime {
 public:
  Runtime(FakeState& state, kj::Timer& timer)
      : state(state), timer(timer), self(kj::refcounted<Handle>()) {
    self->runtime = this;
  }
  ~Runtime() noexcept(false) { self->runtime = nullptr; }

  /// What a capability keeps: a hung call can hold one past the daemon, until the loop goes.
  struct Handle : public kj::Refcounted {
    Runtime* runtime = nullptr;
  };
  kj::Own<Handle> handle() { return kj::addRef(*self); }

  struct Outcome {
    rpc::Status::Code code = rpc::Status::Code::OK;
    uint64_t fence = 0;
  };

  void fillInfo(rpc::LeaseInfo::Builder info, uint64_t id, const FakeLease& lease) {
    info.setId(id);
    info.setTtlMs(lease.ttlMs);
    info.setRemainingMs(lease.ttlMs);
    info.setFence(lease.fence);
    auto holder = info.initHolder();
    holder.setMember(state.member);
    holder.setPid(::getpid());
    holder.setUid(::getuid());
    info.setDetached(lease.detached);
    info.setLocal(true);
    info.setAttached(lease.attached);
    info.setEpoch(lease.epoch);
    uint64_t keys = 0;
    for (const auto& [key, entry] : state.kvs)
      keys += entry.lease == id;
    info.setKeys(keys);
    std::vector<std::string> names;
    for (const auto& [name, lock] : state.locks) {
      if (lock.holder == id) names.push_back(name);
    }
    for (const auto& waiter : waiters) {
      if (waiter.lease == id) names.push_back(waiter.name);
    }
    auto list = info.initLocks(names.size());
    for (size_t i = 0; i < names.size(); ++i)
      list.set(i, bytesOf(names[i]));
  }

  void fillHolder(rpc::LockHolder::Builder builder, const FakeLock& lock) {
    builder.setLease(lock.holder);
    builder.setValue(bytesOf(lock.value));
    builder.setFence(lock.fence);
    auto holder = builder.initHolder();
    holder.setMember(state.member);
    holder.setPid(::getpid());
    holder.setUid(::getuid());
  }

  bool revoke(uint64_t id) {
    if (state.leases.erase(id) == 0) return false;
    ++state.revokes;
    ++state.revision;
    for (auto it = state.kvs.begin(); it != state.kvs.end();) {
      it = it->second.lease == id ? state.kvs.erase(it) : std::next(it);
    }
    for (auto it = waiters.begin(); it != waiters.end();) {
      if (it->lease == id) {
        it->fulfiller->fulfill(Outcome{rpc::Status::Code::NOT_FOUND, 0});
        it = waiters.erase(it);
      } else {
        ++it;
      }
    }
    std::vector<std::string> held;
    for (const auto& [name, lock] : state.locks) {
      if (lock.holder == id) held.push_back(name);
    }
    for (const auto& name : held)
      release(name);
    return true;
  }

  /// The holder of `name` is gone: the first waiter gets it.
  void release(const std::string& name) {
    state.locks.erase(name);
    for (auto it = waiters.begin(); it != waiters.end(); ++it) {
      if (it->name != name) continue;
      uint64_t fence = take(name, it->lease, it->value);
      it->fulfiller->fulfill(Outcome{rpc::Status::Code::OK, fence});
      waiters.erase(it);
      return;
    }
    notify(name);
  }

  uint64_t take(const std::string& name, uint64_t lease, const std::string& value) {
    ++state.revision;
    state.locks[name] = FakeLock{lease, value, state.revision};
    notify(name);
    return state.revision;
  }

  kj::Promise<Outcome> lock(const std::string& name, uint64_t lease, const std::string& value,
                            bool wait, uint32_t timeoutMs) {
    if (state.leases.count(lease) == 0) return Outcome{rpc::Status::Code::NOT_FOUND, 0};
    auto it = state.locks.find(name);
    if (it == state.locks.end()) return Outcome{rpc::Status::Code::OK, take(name, lease, value)};
    if (it->second.holder == lease) return Outcome{rpc::Status::Code::OK, it->second.fence};
    if (!wait) return Outcome{rpc::Status::Code::COMPARE_FAILED, 0};
    auto paf = kj::newPromiseAndFulfiller<Outcome>();
    uint64_t waitId = ++nextWaitId;
    waiters.push_back(Waiter{waitId, name, lease, value, kj::mv(paf.fulfiller)});
    if (timeoutMs == 0) return kj::mv(paf.promise);
    return paf.promise.exclusiveJoin(
        timer.afterDelay(timeoutMs * kj::MILLISECONDS).then([this, waitId]() {
          dropWaiter(waitId);
          return Outcome{rpc::Status::Code::TIMEOUT, 0};
        }));
  }

  rpc::Status::Code unlock(const std::string& name, uint64_t lease) {
    auto it = state.locks.find(name);
    if (it != state.locks.end() && it->second.holder == lease) {
      ++state.revision;
      release(name);
      return rpc::Status::Code::OK;
    }
    for (auto waiter = waiters.begin(); waiter != waiters.end(); ++waiter) {
      if (waiter->name == name && waiter->lease == lease) {
        waiter->fulfiller->fulfill(Outcome{rpc::Status::Code::NOT_FOUND, 0});
        waiters.erase(waiter);
        return rpc::Status::Code::OK;
      }
    }
    return rpc::Status::Code::NOT_FOUND;
  }

  void notify(const std::string& name) {
    auto lock = state.locks.find(name);
    for (auto& observer : observers) {
      if (observer.name != name) continue;
      auto request = observer.cap.changedRequest();
      request.setHasHolder(lock != state.locks.end());
      if (lock != state.locks.end()) fillHolder(request.initHolder(), lock->second);
      request.setRevision(state.revision);
      tasks.add(request.send().ignoreResult());
    }
  }

  uint64_t addObserver(const std::string& name, rpc::LockObserver::Client cap) {
    uint64_t id = ++nextObserverId;
    observers.push_back(Observer{id, name, cap});
    ++state.observers;
    auto lock = state.locks.find(name);
    auto request = cap.changedRequest();
    request.setHasHolder(lock != state.locks.end());
    if (lock != state.locks.end()) fillHolder(request.initHolder(), lock->second);
    request.setRevision(state.revision);
    tasks.add(request.send().ignoreResult());
    return id;
  }

  void removeObserver(uint64_t id) {
    for (auto it = observers.begin(); it != observers.end(); ++it) {
      if (it->id == id) {
        observers.erase(it);
        --state.observers;
        return;
      }
    }
  }

  /// A connection-bound lease whose capability went: revoked from a fresh turn of the loop (the
  /// capability's destructor is no place to call out).
  void capabilityDropped(uint64_t id) {
    tasks.add(kj::evalLater([this, id]() {
      auto it = state.leases.find(id);
      if (it == state.leases.end()) return;
      it->second.attached = false;
      if (!it->second.detached) revoke(id);
    }));
  }

  FakeState& state;
  kj::Timer& timer;

 private:
  struct Waiter {
    uint64_t id;
    std::string name;
    uint64_t lease;
    std::string value;
    kj::Own<kj::PromiseFulfiller<Outcome>> fulfiller;
  };
  struct Observer {
    uint64_t id;
    std::string name;
    rpc::LockObserver::Client cap;
  };
  struct IgnoreErrors : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  void dropWaiter(uint64_t waitId) {
    for (auto it = waiters.begin(); it != waiters.end(); ++it) {
      if (it->id == waitId) {
        waiters.erase(it);
        return;
      }
    }
  }

  kj::Own<Handle> self;
  std::list<Waiter> waiters;  // FIFO across all locks
  std::list<Observer> observers;
  uint64_t nextWaitId = 0;
  uint64_t nextObserverId = 0;
  IgnoreErrors ignoreErrors;
  kj::TaskSet tasks{ignoreErrors};
};

namespace {

using Runtime = FakeDaemon::Runtime;

class FakeLeaseCap final : public rpc::Lease::Server {
 public:
  FakeLeaseCap(Runtime& runtime, uint64_t id) : runtime(runtime), handle(runtime.handle()), id(id) {
    auto it = runtime.state.leases.find(id);
    if (it != runtime.state.leases.end()) it->second.attached = true;
  }
  ~FakeLeaseCap() noexcept(false) {
    if (handle->runtime != nullptr) runtime.capabilityDropped(id);
  }

  kj::Promise<void> keepAlive(KeepAliveContext context) override {
    FakeState& state = runtime.state;
    ++state.keepAlives;
    if (state.hangKeepAlive) return kj::NEVER_DONE;
    auto results = context.getResults();
    fillHeader(results.initHeader(), state);
    KJ_IF_MAYBE (code, state.keepAliveCode) {
      setStatus(results.initStatus(), *code, "forced by the test");
      return kj::READY_NOW;
    }
    auto it = state.leases.find(id);
    if (it == state.leases.end()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "lease has ended");
      return kj::READY_NOW;
    }
    ++it->second.epoch;
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    uint64_t remaining = it->second.ttlMs;
    KJ_IF_MAYBE (forced, state.keepAliveRemainingMs) {
      remaining = *forced;
    }
    results.setRemainingMs(remaining);
    results.setTtlMs(it->second.ttlMs);
    return kj::READY_NOW;
  }

  kj::Promise<void> revoke(RevokeContext context) override {
    auto results = context.getResults();
    bool found = runtime.revoke(id);
    setStatus(results.initStatus(), found ? rpc::Status::Code::OK : rpc::Status::Code::NOT_FOUND);
    fillHeader(results.initHeader(), runtime.state);
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext context) override {
    auto results = context.getResults();
    fillHeader(results.initHeader(), runtime.state);
    auto it = runtime.state.leases.find(id);
    if (it == runtime.state.leases.end()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "lease has ended");
      return kj::READY_NOW;
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    runtime.fillInfo(results.initInfo(), id, it->second);
    return kj::READY_NOW;
  }

 private:
  Runtime& runtime;
  kj::Own<Runtime::Handle> handle;
  uint64_t id;
};

class FakeLeases final : public rpc::Leases::Server {
 public:
  explicit FakeLeases(Runtime& runtime) : runtime(runtime), state(runtime.state) {}

  kj::Promise<void> grant(GrantContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    ++state.calls;
    auto results = context.getResults();
    uint64_t ttl = params.getTtlMs();
    if (ttl < state.leaseTtlMinMs || ttl > state.leaseTtlMaxMs) {
      auto message = kj::str("ttlMs ", ttl, " is outside lease_ttl_min_ms..lease_ttl_max_ms (",
                             state.leaseTtlMinMs, "..", state.leaseTtlMaxMs, ")");
      setStatus(results.initStatus(), rpc::Status::Code::INVALID_ARGUMENT, message.cStr());
      fillHeader(results.initHeader(), state);
      return kj::READY_NOW;
    }
    uint64_t id = ++state.nextLeaseId;
    ++state.revision;
    FakeLease lease;
    lease.ttlMs = ttl;
    lease.detached = params.getOptions().getDetached();
    lease.lockDelayMs = params.getOptions().getLockDelayMs();
    lease.fence = state.revision;
    state.leases[id] = lease;
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    results.setLease(kj::heap<FakeLeaseCap>(runtime, id));
    runtime.fillInfo(results.initInfo(), id, state.leases[id]);
    return kj::READY_NOW;
  }

  kj::Promise<void> attach(AttachContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    fillHeader(results.initHeader(), state);
    auto it = state.leases.find(params.getId());
    if (it == state.leases.end()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "lease not found");
      return kj::READY_NOW;
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    results.setLease(kj::heap<FakeLeaseCap>(runtime, params.getId()));
    runtime.fillInfo(results.initInfo(), params.getId(), it->second);
    return kj::READY_NOW;
  }

  kj::Promise<void> list(ListContext context) override {
    state.lastSerializable = context.getParams().getSerializable();
    auto results = context.getResults();
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    fillHeader(results.initHeader(), state);
    auto list = results.initLeases(state.leases.size());
    size_t i = 0;
    for (const auto& [id, lease] : state.leases)
      runtime.fillInfo(list[i++], id, lease);
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext context) override {
    auto params = context.getParams();
    state.lastSerializable = params.getSerializable();
    auto results = context.getResults();
    fillHeader(results.initHeader(), state);
    auto it = state.leases.find(params.getId());
    if (it == state.leases.end()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "lease not found");
      return kj::READY_NOW;
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    runtime.fillInfo(results.initInfo(), it->first, it->second);
    return kj::READY_NOW;
  }

  kj::Promise<void> revoke(RevokeContext context) override {
    auto results = context.getResults();
    bool found = runtime.revoke(context.getParams().getId());
    setStatus(results.initStatus(), found ? rpc::Status::Code::OK : rpc::Status::Code::NOT_FOUND,
              found ? "" : "lease not found");
    fillHeader(results.initHeader(), state);
    return kj::READY_NOW;
  }

 private:
  Runtime& runtime;
  FakeState& state;
};

class FakeObservation final : public rpc::Observation::Server {
 public:
  FakeObservation(Runtime& runtime, uint64_t id)
      : runtime(runtime), handle(runtime.handle()), id(id) {}
  ~FakeObservation() noexcept(false) {
    if (handle->runtime != nullptr) runtime.removeObserver(id);
  }

  kj::Promise<void> cancel(CancelContext) override {
    runtime.removeObserver(id);
    return kj::READY_NOW;
  }

 private:
  Runtime& runtime;
  kj::Own<Runtime::Handle> handle;
  uint64_t id;
};

/// invalidArgument unless 1..511 bytes.
bool validName(const std::string& name) {
  return !name.empty() && name.size() <= 511;
}

class FakeLocks final : public rpc::Locks::Server {
 public:
  explicit FakeLocks(Runtime& runtime) : runtime(runtime), state(runtime.state) {}

  kj::Promise<void> lock(LockContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    return wait(context, toString(params.getName()), params.getLease(), {}, params.getWait(),
                params.getTimeoutMs());
  }

  kj::Promise<void> campaign(CampaignContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    return wait(context, toString(params.getName()), params.getLease(), toString(params.getValue()),
                true, params.getTimeoutMs());
  }

  kj::Promise<void> unlock(UnlockContext context) override {
    auto params = context.getParams();
    auto code = runtime.unlock(toString(params.getName()), params.getLease());
    auto results = context.getResults();
    setStatus(results.initStatus(), code, code == rpc::Status::Code::OK ? "" : "not held");
    fillHeader(results.initHeader(), state);
    return kj::READY_NOW;
  }

  kj::Promise<void> proclaim(ProclaimContext context) override {
    auto params = context.getParams();
    std::string name = toString(params.getName());
    auto results = context.getResults();
    auto it = state.locks.find(name);
    if (it == state.locks.end() || it->second.holder != params.getLease()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "not the holder");
    } else {
      ++state.revision;
      it->second.value = toString(params.getValue());
      runtime.notify(name);
      setStatus(results.initStatus(), rpc::Status::Code::OK);
    }
    fillHeader(results.initHeader(), state);
    return kj::READY_NOW;
  }

  kj::Promise<void> leader(LeaderContext context) override {
    auto params = context.getParams();
    state.lastSerializable = params.getSerializable();
    auto results = context.getResults();
    fillHeader(results.initHeader(), state);
    auto it = state.locks.find(toString(params.getName()));
    if (it == state.locks.end()) {
      setStatus(results.initStatus(), rpc::Status::Code::NOT_FOUND, "no holder");
      return kj::READY_NOW;
    }
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    runtime.fillHolder(results.initHolder(), it->second);
    return kj::READY_NOW;
  }

  kj::Promise<void> checkFence(CheckFenceContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    fillHeader(results.initHeader(), state);
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    auto it = state.locks.find(toString(params.getName()));
    results.setHasHolder(it != state.locks.end());
    results.setCurrent(it != state.locks.end() && it->second.fence == params.getFence());
    if (it != state.locks.end()) runtime.fillHolder(results.initHolder(), it->second);
    return kj::READY_NOW;
  }

  kj::Promise<void> observe(ObserveContext context) override {
    auto params = context.getParams();
    auto results = context.getResults();
    fillHeader(results.initHeader(), state);
    std::string name = toString(params.getName());
    if (!validName(name)) {
      setStatus(results.initStatus(), rpc::Status::Code::INVALID_ARGUMENT, "bad lock name");
      return kj::READY_NOW;
    }
    uint64_t id = runtime.addObserver(name, params.getObserver());
    setStatus(results.initStatus(), rpc::Status::Code::OK);
    results.setObservation(kj::heap<FakeObservation>(runtime, id));
    return kj::READY_NOW;
  }

 private:
  template <typename Context>
  kj::Promise<void> wait(Context& context, std::string name, uint64_t lease, std::string value,
                         bool wait, uint32_t timeoutMs) {
    if (!validName(name)) {
      auto results = context.getResults();
      setStatus(results.initStatus(), rpc::Status::Code::INVALID_ARGUMENT, "bad lock name");
      fillHeader(results.initHeader(), state);
      return kj::READY_NOW;
    }
    return runtime.lock(name, lease, value, wait, timeoutMs)
        .then([this, context](Runtime::Outcome outcome) mutable {
          auto results = context.getResults();
          setStatus(results.initStatus(), outcome.code);
          fillHeader(results.initHeader(), state);
          results.setFence(outcome.fence);
        });
  }

  Runtime& runtime;
  FakeState& state;
};

class FakeSynod final : public rpc::Synod::Server {
 public:
  FakeSynod(FakeState& state, Runtime& runtime) : state(state), runtime(runtime) {}

  kj::Promise<void> leases(LeasesContext context) override {
    context.getResults().setLeases(kj::heap<FakeLeases>(runtime));
    return kj::READY_NOW;
  }

  kj::Promise<void> locks(LocksContext context) override {
    context.getResults().setLocks(kj::heap<FakeLocks>(runtime));
    return kj::READY_NOW;
  }

  kj::Promise<void> kv(KvContext context) override {
    context.getResults().setKv(kj::heap<FakeKv>(state));
    return kj::READY_NOW;
  }

  kj::Promise<void> admin(AdminContext context) override {
    context.getResults().setAdmin(kj::heap<FakeAdmin>(state));
    return kj::READY_NOW;
  }

 private:
  FakeState& state;
  Runtime& runtime;
};

int listenOn(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  KJ_REQUIRE(path.size() < sizeof(address.sun_path), "socket path too long", path);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  int fd;
  KJ_SYSCALL(fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  KJ_SYSCALL(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), path);
  KJ_SYSCALL(::listen(fd, 64));
  return fd;
}

}  // namespace

FakeDaemon::FakeDaemon(kj::AsyncIoContext& io, std::string socketPath)
    : path(std::move(socketPath)),
      runtime(kj::heap<Runtime>(state, io.provider->getTimer())),
      listener(io.lowLevelProvider->wrapListenSocketFd(
          listenOn(path), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                              kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC)),
      server(kj::heap<capnp::TwoPartyServer>(
          rpc::Synod::Client(kj::heap<FakeSynod>(state, *runtime)))) {
  accepting = acceptLoop().eagerlyEvaluate(
      [](kj::Exception&& e) { KJ_LOG(ERROR, "fake daemon stopped accepting", e); });
}

FakeDaemon::~FakeDaemon() noexcept(false) {
  ::unlink(path.c_str());
}

kj::Promise<void> FakeDaemon::acceptLoop() {
  return listener->accept().then([this](kj::Own<kj::AsyncIoStream>&& stream) {
    ++accepted;
    server->accept(kj::mv(stream));
    return acceptLoop();
  });
}

bool FakeDaemon::revokeLease(uint64_t id) {
  return runtime->revoke(id);
}

void FakeDaemon::dropConnections() {
  server =
      kj::heap<capnp::TwoPartyServer>(rpc::Synod::Client(kj::heap<FakeSynod>(state, *runtime)));
}

}  // namespace synod::clients::testing
