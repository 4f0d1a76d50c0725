#include "tests/clients/fake_daemon.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <kj/debug.h>
#include <cstring>
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

void putKey(FakeState& state, const std::string& key, const std::string& value) {
  FakeEntry& entry = state.kvs[key];
  if (entry.version == 0) entry.createRevision = state.revision;
  entry.value = value;
  entry.modRevision = state.revision;
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
    case rpc::Compare::Target::FENCE:
      return compareWith(uint64_t{0}, target.getFence(), compare.getOp());  // the fake has no locks
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
    return kj::READY_NOW;
  }

  kj::Promise<void> put(PutContext context) override {
    auto params = context.getParams();
    state.lastTimeoutMs = params.getTimeoutMs();
    if (state.hang) return kj::NEVER_DONE;
    auto results = context.getResults();
    if (!begin(state, results)) return kj::READY_NOW;
    std::string key = toString(params.getOp().getKey());
    if (key.empty()) {
      setStatus(results.initStatus(), rpc::Status::Code::INVALID_ARGUMENT, "empty key");
    } else {
      ++state.revision;
      putKey(state, key, toString(params.getOp().getValue()));
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

class FakeSynod final : public rpc::Synod::Server {
 public:
  explicit FakeSynod(FakeState& state) : state(state) {}

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
      listener(io.lowLevelProvider->wrapListenSocketFd(
          listenOn(path), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                              kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC)),
      server(kj::heap<capnp::TwoPartyServer>(rpc::Synod::Client(kj::heap<FakeSynod>(state)))) {
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

void FakeDaemon::dropConnections() {
  server = kj::heap<capnp::TwoPartyServer>(rpc::Synod::Client(kj::heap<FakeSynod>(state)));
}

}  // namespace synod::clients::testing
