#include "clients/synod_client.h"

#include <cstdlib>

namespace synod::clients {

namespace {

capnp::Data::Reader bytesOf(std::string_view s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

std::string toString(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

std::string toString(capnp::Text::Reader text) {
  return std::string(text.cStr(), text.size());
}

std::string toString(kj::StringPtr text) {
  return std::string(text.cStr(), text.size());
}

Status statusFrom(rpc::Status::Reader status) {
  Status result;
  result.message = toString(status.getMessage());
  switch (status.getCode()) {
    case rpc::Status::Code::OK:
      result.code = Code::OK;
      return result;
    case rpc::Status::Code::NOT_FOUND:
      result.code = Code::NOT_FOUND;
      break;
    case rpc::Status::Code::COMPARE_FAILED:
      result.code = Code::COMPARE_FAILED;
      break;
    case rpc::Status::Code::NO_QUORUM:
      result.code = Code::NO_QUORUM;
      break;
    case rpc::Status::Code::TIMEOUT:
      result.code = Code::TIMEOUT;
      break;
    case rpc::Status::Code::INVALID_ARGUMENT:
      result.code = Code::INVALID_ARGUMENT;
      break;
    case rpc::Status::Code::NO_SPACE:
      result.code = Code::NO_SPACE;
      break;
    case rpc::Status::Code::UNAVAILABLE:
      result.code = Code::UNAVAILABLE;
      break;
    case rpc::Status::Code::INTERNAL:
      result.code = Code::INTERNAL;
      break;
    default:
      // A newer daemon may add codes; say so rather than guess what it meant.
      result.code = Code::INTERNAL;
      result.message = "daemon answered with unknown status code " +
                       std::to_string(static_cast<unsigned>(status.getCode())) +
                       (result.message.empty() ? "" : ": " + result.message);
      return result;
  }
  if (result.message.empty()) result.message = codeName(result.code);
  return result;
}

Header headerFrom(rpc::Header::Reader header) {
  Header result;
  result.revision = header.getRevision();
  result.member = toString(header.getMember());
  result.ballotRound = header.getBallotRound();
  result.ballotMember = header.getBallotMember();
  return result;
}

KeyValue keyValueFrom(rpc::KeyValue::Reader kv) {
  KeyValue result;
  result.key = toString(kv.getKey());
  result.value = toString(kv.getValue());
  result.createRevision = kv.getCreateRevision();
  result.modRevision = kv.getModRevision();
  result.version = kv.getVersion();
  result.lease = kv.getLease();
  return result;
}

MemberStatus memberFrom(rpc::MemberStatus::Reader member) {
  MemberStatus result;
  result.name = toString(member.getName());
  result.address = toString(member.getAddress());
  result.role = toString(member.getRole());
  result.reachable = member.getReachable();
  result.lagSlots = member.getLagSlots();
  result.reported = member.getReported();
  result.reportAgeMs = member.getReportAgeMs();
  result.stale = member.getStale();
  result.ballotRound = member.getBallotRound();
  result.ballotMember = member.getBallotMember();
  result.leader = toString(member.getLeader());
  result.decidedSlot = member.getDecidedSlot();
  result.appliedSlot = member.getAppliedSlot();
  result.revision = member.getRevision();
  result.leaseLeftMs = member.getLeaseLeftMs();
  result.dbSizeBytes = member.getDbSizeBytes();
  result.storeLimitBytes = member.getStoreLimitBytes();
  result.commitP50Us = member.getCommitP50Us();
  result.commitP99Us = member.getCommitP99Us();
  result.incarnation = member.getIncarnation();
  result.uptimeMs = member.getUptimeMs();
  result.stateDigest = member.getStateDigest();
  result.recovering = member.getRecovering();
  result.recoveryStage = toString(member.getRecoveryStage());
  result.snapshotFrom = toString(member.getSnapshotFrom());
  result.snapshotBytesReceived = member.getSnapshotBytesReceived();
  result.snapshotBytesTotal = member.getSnapshotBytesTotal();
  result.slotsBehind = member.getSlotsBehind();
  return result;
}

StatusInfo statusInfoFrom(rpc::StatusInfo::Reader info) {
  StatusInfo result;
  result.member = toString(info.getMember());
  result.role = toString(info.getRole());
  result.ballotRound = info.getBallotRound();
  result.ballotMember = info.getBallotMember();
  result.leader = toString(info.getLeader());
  result.decidedSlot = info.getDecidedSlot();
  result.appliedSlot = info.getAppliedSlot();
  result.revision = info.getRevision();
  for (auto member : info.getMembers())
    result.members.push_back(memberFrom(member));
  result.clusterId = toString(info.getClusterId());
  result.incarnation = info.getIncarnation();
  result.dbSizeBytes = info.getDbSizeBytes();
  result.storeLimitBytes = info.getStoreLimitBytes();
  result.version = toString(info.getVersion());
  result.uptimeMs = info.getUptimeMs();
  result.callerPid = info.getCallerPid();
  result.callerUid = info.getCallerUid();
  result.callerGid = info.getCallerGid();
  result.leaseLeftMs = info.getLeaseLeftMs();
  result.commitP50Us = info.getCommitP50Us();
  result.commitP99Us = info.getCommitP99Us();
  result.stateDigest = info.getStateDigest();
  return result;
}

/// A Result filled from a daemon reply that has `status` and `header` fields.
template <typename T, typename Reply>
Result<T> answeredResult(const Reply& reply) {
  Result<T> result;
  result.answered = true;
  result.status = statusFrom(reply.getStatus());
  result.header = headerFrom(reply.getHeader());
  return result;
}

template <typename T>
Result<T> failedResult(Code code, std::string message) {
  Result<T> result;
  result.status.code = code;
  result.status.message = std::move(message);
  return result;
}

void fillPut(rpc::PutOp::Builder builder, const std::string& key, const std::string& value,
             uint64_t lease) {
  builder.setKey(bytesOf(key));
  builder.setValue(bytesOf(value));
  builder.setLease(lease);
}

void fillDelete(rpc::DeleteOp::Builder builder, const std::string& key,
                const std::string& rangeEnd) {
  builder.setKey(bytesOf(key));
  builder.setRangeEnd(bytesOf(rangeEnd));
}

rpc::Compare::Op opOf(Compare::Op op) {
  switch (op) {
    case Compare::Op::EQUAL:
      return rpc::Compare::Op::EQUAL;
    case Compare::Op::NOT_EQUAL:
      return rpc::Compare::Op::NOT_EQUAL;
    case Compare::Op::LESS:
      return rpc::Compare::Op::LESS;
    case Compare::Op::GREATER:
      return rpc::Compare::Op::GREATER;
  }
  KJ_UNREACHABLE;
}

void fillCompare(rpc::Compare::Builder builder, const Compare& compare) {
  builder.setKey(bytesOf(compare.key));
  builder.setOp(opOf(compare.op));
  auto target = builder.getTarget();
  switch (compare.target) {
    case Compare::Target::VALUE:
      target.setValue(bytesOf(compare.value));
      return;
    case Compare::Target::VERSION:
      target.setVersion(compare.number);
      return;
    case Compare::Target::CREATE_REVISION:
      target.setCreateRevision(compare.number);
      return;
    case Compare::Target::MOD_REVISION:
      target.setModRevision(compare.number);
      return;
  }
  KJ_UNREACHABLE;
}

void fillTxnOps(capnp::List<rpc::TxnOp>::Builder builders, const std::vector<TxnOp>& ops) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const TxnOp& op = ops[i];
    switch (op.kind) {
      case TxnOp::Kind::PUT:
        fillPut(builders[i].initPut(), op.key, op.value, op.lease);
        break;
      case TxnOp::Kind::DELETE:
        fillDelete(builders[i].initDelete(), op.key, op.rangeEnd);
        break;
    }
  }
}

LeaseHolderInfo holderFrom(rpc::LeaseHolderInfo::Reader holder) {
  LeaseHolderInfo result;
  result.member = toString(holder.getMember());
  result.pid = holder.getPid();
  result.uid = holder.getUid();
  return result;
}

LeaseInfo leaseInfoFrom(rpc::LeaseInfo::Reader info) {
  LeaseInfo result;
  result.id = info.getId();
  result.ttlMs = info.getTtlMs();
  result.remainingMs = info.getRemainingMs();
  result.fence = info.getFence();
  result.holder = holderFrom(info.getHolder());
  result.detached = info.getDetached();
  result.local = info.getLocal();
  result.attached = info.getAttached();
  result.epoch = info.getEpoch();
  result.keys = info.getKeys();
  for (auto name : info.getLocks())
    result.locks.push_back(toString(name));
  return result;
}

LockHolder lockHolderFrom(rpc::LockHolder::Reader holder) {
  LockHolder result;
  result.lease = holder.getLease();
  result.value = toString(holder.getValue());
  result.fence = holder.getFence();
  result.holder = holderFrom(holder.getHolder());
  return result;
}

/// The Result of a call that failed with an RPC exception.
template <typename T>
Result<T> exceptionResult(const std::string& socketPath, const kj::Exception& error) {
  std::string description = toString(error.getDescription());
  switch (error.getType()) {
    case kj::Exception::Type::DISCONNECTED:
      return failedResult<T>(Code::UNAVAILABLE,
                             "connection to daemon at " + socketPath + " lost: " + description);
    case kj::Exception::Type::OVERLOADED:
      return failedResult<T>(Code::UNAVAILABLE, "daemon overloaded: " + description);
    case kj::Exception::Type::UNIMPLEMENTED:
      return failedResult<T>(Code::INTERNAL, "daemon does not implement this call: " + description);
    default:
      return failedResult<T>(Code::INTERNAL, "daemon error: " + description);
  }
}

/// Serves the client's side of Locks.observe: hands each change to the slot's callback while the
/// Observation that shares the slot lives.
class ObserverServer final : public rpc::LockObserver::Server {
 public:
  explicit ObserverServer(kj::Own<ObserverSlot> slot) : slot(kj::mv(slot)) {}

  kj::Promise<void> changed(ChangedContext context) override {
    auto params = context.getParams();
    LockChange change;
    change.hasHolder = params.getHasHolder();
    if (change.hasHolder) change.holder = lockHolderFrom(params.getHolder());
    change.revision = params.getRevision();
    KJ_IF_MAYBE (onChange, slot->onChange) {
      (*onChange)(change);
    }
    return kj::READY_NOW;
  }

 private:
  kj::Own<ObserverSlot> slot;
};

}  // namespace

Observation::Observation(rpc::Observation::Client cap, kj::Own<ObserverSlot> slot)
    : cap(kj::mv(cap)), slot(kj::mv(slot)) {}

Observation& Observation::operator=(Observation&& other) {
  stop();
  cap = kj::mv(other.cap);
  slot = kj::mv(other.slot);
  return *this;
}

Observation::~Observation() noexcept(false) {
  stop();
}

void Observation::stop() {
  if (slot.get() != nullptr) slot->onChange = nullptr;
  slot = nullptr;
  cap = nullptr;
}

namespace {}  // namespace

const char* codeName(Code code) {
  switch (code) {
    case Code::OK:
      return "OK";
    case Code::NOT_FOUND:
      return "NOT_FOUND";
    case Code::COMPARE_FAILED:
      return "COMPARE_FAILED";
    case Code::NO_QUORUM:
      return "NO_QUORUM";
    case Code::TIMEOUT:
      return "TIMEOUT";
    case Code::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case Code::NO_SPACE:
      return "NO_SPACE";
    case Code::UNAVAILABLE:
      return "UNAVAILABLE";
    case Code::INTERNAL:
      return "INTERNAL";
  }
  return "INTERNAL";
}

TxnOp TxnOp::put(std::string key, std::string value, uint64_t lease) {
  TxnOp op;
  op.kind = Kind::PUT;
  op.key = std::move(key);
  op.value = std::move(value);
  op.lease = lease;
  return op;
}

TxnOp TxnOp::del(std::string key, std::string rangeEnd) {
  TxnOp op;
  op.kind = Kind::DELETE;
  op.key = std::move(key);
  op.rangeEnd = std::move(rangeEnd);
  return op;
}

std::string prefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return fromKeyRangeEnd();
}

std::string defaultSocketPath() {
  const char* fromEnv = std::getenv("SYNOD_SOCKET");
  if (fromEnv != nullptr && *fromEnv != '\0') return fromEnv;
  return "/run/synod/synod.sock";
}

// ---------------------------------------------------------------------------------------------
// AsyncClient

/// One open connection. Refcounted: the client holds a reference until the connection breaks, and
/// every call in flight holds one, so the RPC system outlives the calls made through it.
struct AsyncClient::Connection : public kj::Refcounted {
  explicit Connection(kj::Own<kj::AsyncIoStream> streamParam)
      : stream(kj::mv(streamParam)),
        rpcClient(*stream),
        synod(rpcClient.bootstrap().castAs<rpc::Synod>()),
        kv(synod.kvRequest().send().getKv()),
        admin(synod.adminRequest().send().getAdmin()),
        disconnectWatch(
            rpcClient.onDisconnect()
                .then([this]() { broken = true; }, [this](kj::Exception&&) { broken = true; })
                .eagerlyEvaluate(nullptr)) {}

  // Declaration order is destruction order reversed: capabilities go before the RPC system, the
  // RPC system before the stream it reads.
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpcClient;
  rpc::Synod::Client synod;
  rpc::Kv::Client kv;
  rpc::Admin::Client admin;
  bool broken = false;
  kj::Promise<void> disconnectWatch;
};

AsyncClient::AsyncClient(kj::AsyncIoProvider& io, ClientOptions options)
    : io(io), options(std::move(options)) {
  if (this->options.socketPath.empty()) this->options.socketPath = defaultSocketPath();
}

AsyncClient::~AsyncClient() noexcept(false) {}

uint32_t AsyncClient::effectiveTimeout(uint32_t timeoutMs) const {
  if (timeoutMs != 0) return timeoutMs;
  if (options.timeoutMs != 0) return options.timeoutMs;
  return DEFAULT_TIMEOUT_MS;
}

kj::Promise<void> AsyncClient::connected() {
  KJ_IF_MAYBE (existing, connection) {
    if (!(*existing)->broken) return kj::READY_NOW;
    connection = nullptr;
    connecting = nullptr;
  }
  KJ_IF_MAYBE (attempt, connecting) {
    if (connectError == nullptr) return attempt->addBranch();
    // The last attempt failed: try again.
    connecting = nullptr;
    connectError = nullptr;
  }
  auto attempt = io.getNetwork()
                     .parseAddress(kj::str("unix:", options.socketPath.c_str()))
                     .then([](kj::Own<kj::NetworkAddress>&& address) {
                       auto stream = address->connect();
                       return stream.attach(kj::mv(address));
                     })
                     .then(
                         [this](kj::Own<kj::AsyncIoStream>&& stream) {
                           connection = kj::refcounted<Connection>(kj::mv(stream));
                           ++opened;
                         },
                         [this](kj::Exception&& error) { connectError = kj::mv(error); })
                     .fork();
  auto branch = attempt.addBranch();
  connecting = kj::mv(attempt);
  return branch;
}

kj::Promise<rpc::Synod::Client> AsyncClient::bootstrap() {
  return connected().then([this]() -> rpc::Synod::Client {
    KJ_IF_MAYBE (existing, connection) {
      return (*existing)->synod;
    }
    KJ_IF_MAYBE (error, connectError) {
      kj::throwFatalException(kj::cp(*error));
    }
    KJ_FAIL_REQUIRE("connection to daemon closed", options.socketPath);
  });
}

template <typename T>
Result<T> AsyncClient::callFailure(Connection& conn, const kj::Exception& error) {
  std::string description = toString(error.getDescription());
  switch (error.getType()) {
    case kj::Exception::Type::DISCONNECTED:
      conn.broken = true;
      return failedResult<T>(Code::UNAVAILABLE, "connection to daemon at " + options.socketPath +
                                                    " lost: " + description);
    case kj::Exception::Type::OVERLOADED:
      return failedResult<T>(Code::UNAVAILABLE, "daemon overloaded: " + description);
    case kj::Exception::Type::UNIMPLEMENTED:
      return failedResult<T>(Code::INTERNAL, "daemon does not implement this call: " + description);
    default:
      return failedResult<T>(Code::INTERNAL, "daemon error: " + description);
  }
}

template <typename T, typename Call>
kj::Promise<Result<T>> AsyncClient::call(uint32_t timeoutMs, Call&& body) {
  uint32_t timeout = effectiveTimeout(timeoutMs);
  uint64_t budgetMs = uint64_t{timeout} + options.deadlineMarginMs;
  auto deadline =
      io.getTimer().afterDelay(budgetMs * kj::MILLISECONDS).then([this, budgetMs]() -> Result<T> {
        return failedResult<T>(Code::TIMEOUT, "no answer from daemon at " + options.socketPath +
                                                  " within " + std::to_string(budgetMs) + " ms");
      });
  return callWaiting<T>(timeout, kj::fwd<Call>(body)).exclusiveJoin(kj::mv(deadline));
}

template <typename T, typename Call>
kj::Promise<Result<T>> AsyncClient::callWaiting(uint32_t timeout, Call&& body) {
  // No step here turns a plain Result into a promise: g++ 12 reports a false "may be used
  // uninitialized" inside KJ's ImmediatePromiseNode for a Result holding a std::vector.
  return connected()
      .then([this]() -> kj::Own<Connection> {
        KJ_IF_MAYBE (existing, connection) {
          return kj::addRef(**existing);
        }
        KJ_IF_MAYBE (error, connectError) {
          kj::throwFatalException(kj::cp(*error));
        }
        KJ_FAIL_REQUIRE("connection closed");
      })
      .then([this, timeout, body = kj::fwd<Call>(body)](
                kj::Own<Connection>&& conn) mutable -> kj::Promise<Result<T>> {
        Connection& connRef = *conn;
        return body(connRef, timeout)
            .catch_(
                [this, &connRef](kj::Exception&& error) { return callFailure<T>(connRef, error); })
            .attach(kj::mv(conn));
      })
      .catch_([this](kj::Exception&& error) -> Result<T> {
        return failedResult<T>(Code::UNAVAILABLE, "daemon unreachable at " + options.socketPath +
                                                      ": " + toString(error.getDescription()));
      });
}

kj::Promise<Result<KeyValue>> AsyncClient::get(std::string key, ReadOptions opts) {
  return call<KeyValue>(
      opts.timeoutMs, [key = std::move(key), opts](Connection& conn, uint32_t timeout) {
        auto request = conn.kv.getRequest();
        request.setKey(bytesOf(key));
        request.setTimeoutMs(timeout);
        request.setSerializable(opts.serializable);
        return request.send().then([](capnp::Response<rpc::Kv::GetResults>&& response) {
          auto result = answeredResult<KeyValue>(response);
          if (result.ok()) result.reply = keyValueFrom(response.getKv());
          return result;
        });
      });
}

kj::Promise<Result<Empty>> AsyncClient::put(std::string key, std::string value, WriteOptions opts) {
  return call<Empty>(opts.timeoutMs, [key = std::move(key), value = std::move(value)](
                                         Connection& conn, uint32_t timeout) {
    auto request = conn.kv.putRequest();
    fillPut(request.initOp(), key, value, 0);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Kv::PutResults>&& response) {
      return answeredResult<Empty>(response);
    });
  });
}

kj::Promise<Result<DeleteReply>> AsyncClient::del(std::string key, std::string rangeEnd,
                                                  WriteOptions opts) {
  return call<DeleteReply>(opts.timeoutMs, [key = std::move(key), rangeEnd = std::move(rangeEnd)](
                                               Connection& conn, uint32_t timeout) {
    auto request = conn.kv.deleteRequest();
    fillDelete(request.initOp(), key, rangeEnd);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Kv::DeleteResults>&& response) {
      auto result = answeredResult<DeleteReply>(response);
      result.reply.deleted = response.getDeleted();
      return result;
    });
  });
}

kj::Promise<Result<ListReply>> AsyncClient::list(std::string prefix, ListOptions opts) {
  uint32_t timeoutMs = opts.timeoutMs;
  return call<ListReply>(timeoutMs, [prefix = std::move(prefix), opts = std::move(opts)](
                                        Connection& conn, uint32_t timeout) {
    auto request = conn.kv.listRequest();
    request.setPrefix(bytesOf(prefix));
    request.setLimit(opts.limit);
    request.setStartAfter(bytesOf(opts.startAfter));
    request.setTimeoutMs(timeout);
    request.setSerializable(opts.serializable);
    return request.send().then([](capnp::Response<rpc::Kv::ListResults>&& response) {
      auto result = answeredResult<ListReply>(response);
      if (result.ok()) {
        for (auto kv : response.getKvs())
          result.reply.kvs.push_back(keyValueFrom(kv));
        result.reply.more = response.getMore();
      }
      return result;
    });
  });
}

kj::Promise<Result<TxnReply>> AsyncClient::txn(Txn txn, WriteOptions opts) {
  return call<TxnReply>(opts.timeoutMs, [txn = std::move(txn)](Connection& conn, uint32_t timeout) {
    auto request = conn.kv.txnRequest();
    auto builder = request.initTxn();
    auto compares = builder.initCompares(txn.compares.size());
    for (size_t i = 0; i < txn.compares.size(); ++i)
      fillCompare(compares[i], txn.compares[i]);
    fillTxnOps(builder.initSuccess(txn.success.size()), txn.success);
    fillTxnOps(builder.initFailure(txn.failure.size()), txn.failure);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Kv::TxnResults>&& response) {
      auto result = answeredResult<TxnReply>(response);
      result.reply.succeeded = result.ok() && response.getSucceeded();
      // One outcome, one code: a txn whose compares did not hold is COMPARE_FAILED whether the
      // daemon says so in the status or only in `succeeded`.
      if (result.ok() && !result.reply.succeeded) {
        result.status.code = Code::COMPARE_FAILED;
        result.status.message = "the compares did not hold; the failure branch ran";
      }
      return result;
    });
  });
}

kj::Promise<Result<StatusInfo>> AsyncClient::status(uint32_t timeoutMs) {
  return call<StatusInfo>(timeoutMs, [](Connection& conn, uint32_t timeout) {
    auto request = conn.admin.statusRequest();
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Admin::StatusResults>&& response) {
      auto result = answeredResult<StatusInfo>(response);
      if (result.ok()) result.reply = statusInfoFrom(response.getInfo());
      return result;
    });
  });
}

kj::Promise<Result<TransferReply>> AsyncClient::transferLeader(std::string target,
                                                               uint32_t timeoutMs) {
  return call<TransferReply>(timeoutMs, [target = std::move(target)](Connection& conn,
                                                                     uint32_t timeout) {
    auto request = conn.admin.transferLeaderRequest();
    request.setTarget(target);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Admin::TransferLeaderResults>&& response) {
      auto result = answeredResult<TransferReply>(response);
      result.reply.leader = toString(response.getLeader());
      return result;
    });
  });
}

kj::Promise<Result<HealthReply>> AsyncClient::health(uint32_t timeoutMs) {
  return call<HealthReply>(timeoutMs, [](Connection& conn, uint32_t timeout) {
    auto request = conn.admin.healthRequest();
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Admin::HealthResults>&& response) {
      auto result = answeredResult<HealthReply>(response);
      result.reply.live = response.getLive();
      result.reply.ready = response.getReady();
      result.reply.reason = toString(response.getReason());
      return result;
    });
  });
}

// Leases, locks, elections

template <typename T, typename Send>
kj::Promise<Result<T>> AsyncClient::callCapability(uint32_t timeoutMs, Send&& send) {
  uint64_t budgetMs = uint64_t{effectiveTimeout(timeoutMs)} + options.deadlineMarginMs;
  auto work = kj::evalNow([&]() { return send(); }).catch_([this](kj::Exception&& error) {
    return exceptionResult<T>(options.socketPath, error);
  });
  auto deadline =
      io.getTimer().afterDelay(budgetMs * kj::MILLISECONDS).then([this, budgetMs]() -> Result<T> {
        return failedResult<T>(Code::TIMEOUT, "no answer from daemon at " + options.socketPath +
                                                  " within " + std::to_string(budgetMs) + " ms");
      });
  return work.exclusiveJoin(kj::mv(deadline));
}

namespace {

void fillLeaseOptions(rpc::LeaseOptions::Builder builder, const LeaseOptions& options) {
  builder.setDetached(options.detached);
  builder.setLockDelayMs(options.lockDelayMs);
}

template <typename Response>
Result<LeaseGrant> leaseGrantFrom(Response& response) {
  auto result = answeredResult<LeaseGrant>(response);
  if (result.ok()) {
    result.reply.info = leaseInfoFrom(response.getInfo());
    result.reply.lease = response.getLease();
  }
  return result;
}

}  // namespace

kj::Promise<Result<LeaseGrant>> AsyncClient::grantLease(uint64_t ttlMs, LeaseOptions leaseOptions,
                                                        uint32_t timeoutMs) {
  return call<LeaseGrant>(timeoutMs, [ttlMs, leaseOptions](Connection& conn, uint32_t timeout) {
    auto request = conn.synod.leasesRequest().send().getLeases().grantRequest();
    request.setTtlMs(ttlMs);
    fillLeaseOptions(request.initOptions(), leaseOptions);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Leases::GrantResults>&& response) {
      return leaseGrantFrom(response);
    });
  });
}

kj::Promise<Result<LeaseGrant>> AsyncClient::attachLease(uint64_t id, uint32_t timeoutMs) {
  return call<LeaseGrant>(timeoutMs, [id](Connection& conn, uint32_t timeout) {
    auto request = conn.synod.leasesRequest().send().getLeases().attachRequest();
    request.setId(id);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Leases::AttachResults>&& response) {
      return leaseGrantFrom(response);
    });
  });
}

kj::Promise<Result<LeaseListReply>> AsyncClient::listLeases(ReadOptions opts) {
  return call<LeaseListReply>(opts.timeoutMs, [opts](Connection& conn, uint32_t timeout) {
    auto request = conn.synod.leasesRequest().send().getLeases().listRequest();
    request.setTimeoutMs(timeout);
    request.setSerializable(opts.serializable);
    return request.send().then([](capnp::Response<rpc::Leases::ListResults>&& response) {
      auto result = answeredResult<LeaseListReply>(response);
      if (result.ok()) {
        for (auto info : response.getLeases())
          result.reply.leases.push_back(leaseInfoFrom(info));
      }
      return result;
    });
  });
}

kj::Promise<Result<LeaseInfo>> AsyncClient::leaseInfo(uint64_t id, ReadOptions opts) {
  return call<LeaseInfo>(opts.timeoutMs, [id, opts](Connection& conn, uint32_t timeout) {
    auto request = conn.synod.leasesRequest().send().getLeases().infoRequest();
    request.setId(id);
    request.setTimeoutMs(timeout);
    request.setSerializable(opts.serializable);
    return request.send().then([](capnp::Response<rpc::Leases::InfoResults>&& response) {
      auto result = answeredResult<LeaseInfo>(response);
      if (result.ok()) result.reply = leaseInfoFrom(response.getInfo());
      return result;
    });
  });
}

kj::Promise<Result<Empty>> AsyncClient::revokeLease(uint64_t id, WriteOptions opts) {
  return call<Empty>(opts.timeoutMs, [id](Connection& conn, uint32_t timeout) {
    auto request = conn.synod.leasesRequest().send().getLeases().revokeRequest();
    request.setId(id);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Leases::RevokeResults>&& response) {
      return answeredResult<Empty>(response);
    });
  });
}

kj::Promise<Result<KeepAliveReply>> AsyncClient::keepAlive(rpc::Lease::Client lease,
                                                           uint32_t timeoutMs) {
  return callCapability<KeepAliveReply>(timeoutMs, [&lease]() {
    return lease.keepAliveRequest().send().then(
        [](capnp::Response<rpc::Lease::KeepAliveResults>&& response) {
          auto result = answeredResult<KeepAliveReply>(response);
          result.reply.remainingMs = response.getRemainingMs();
          result.reply.ttlMs = response.getTtlMs();
          return result;
        });
  });
}

kj::Promise<Result<Empty>> AsyncClient::revokeLease(rpc::Lease::Client lease, WriteOptions opts) {
  uint32_t timeout = effectiveTimeout(opts.timeoutMs);
  return callCapability<Empty>(timeout, [&lease, timeout]() {
    auto request = lease.revokeRequest();
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Lease::RevokeResults>&& response) {
      return answeredResult<Empty>(response);
    });
  });
}

kj::Promise<Result<LeaseInfo>> AsyncClient::leaseInfo(rpc::Lease::Client lease,
                                                      uint32_t timeoutMs) {
  uint32_t timeout = effectiveTimeout(timeoutMs);
  return callCapability<LeaseInfo>(timeout, [&lease, timeout]() {
    auto request = lease.infoRequest();
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Lease::InfoResults>&& response) {
      auto result = answeredResult<LeaseInfo>(response);
      if (result.ok()) result.reply = leaseInfoFrom(response.getInfo());
      return result;
    });
  });
}

kj::Promise<Result<Empty>> AsyncClient::put(std::string key, std::string value, uint64_t lease,
                                            WriteOptions opts) {
  return call<Empty>(opts.timeoutMs, [key = std::move(key), value = std::move(value), lease](
                                         Connection& conn, uint32_t timeout) {
    auto request = conn.kv.putRequest();
    fillPut(request.initOp(), key, value, lease);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Kv::PutResults>&& response) {
      return answeredResult<Empty>(response);
    });
  });
}

namespace {

Result<FenceReply> fenceResult(capnp::Response<rpc::Locks::LockResults>& response) {
  auto result = answeredResult<FenceReply>(response);
  result.reply.fence = response.getFence();
  return result;
}

Result<FenceReply> fenceResult(capnp::Response<rpc::Locks::CampaignResults>& response) {
  auto result = answeredResult<FenceReply>(response);
  result.reply.fence = response.getFence();
  return result;
}

}  // namespace

kj::Promise<Result<FenceReply>> AsyncClient::lock(std::string name, uint64_t lease, bool wait,
                                                  uint32_t timeoutMs) {
  auto body = [name = std::move(name), lease, wait](Connection& conn, uint32_t timeout) {
    auto request = conn.synod.locksRequest().send().getLocks().lockRequest();
    request.setName(bytesOf(name));
    request.setLease(lease);
    request.setWait(wait);
    request.setTimeoutMs(timeout);
    return request.send().then(
        [](capnp::Response<rpc::Locks::LockResults>&& response) { return fenceResult(response); });
  };
  if (wait && timeoutMs == 0) return callWaiting<FenceReply>(0, kj::mv(body));
  return call<FenceReply>(timeoutMs, kj::mv(body));
}

kj::Promise<Result<FenceReply>> AsyncClient::campaign(std::string name, std::string value,
                                                      uint64_t lease, uint32_t timeoutMs) {
  auto body = [name = std::move(name), value = std::move(value), lease](Connection& conn,
                                                                        uint32_t timeout) {
    auto request = conn.synod.locksRequest().send().getLocks().campaignRequest();
    request.setName(bytesOf(name));
    request.setValue(bytesOf(value));
    request.setLease(lease);
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Locks::CampaignResults>&& response) {
      return fenceResult(response);
    });
  };
  if (timeoutMs == 0) return callWaiting<FenceReply>(0, kj::mv(body));
  return call<FenceReply>(timeoutMs, kj::mv(body));
}

kj::Promise<Result<Empty>> AsyncClient::unlock(std::string name, uint64_t lease,
                                               WriteOptions opts) {
  return call<Empty>(
      opts.timeoutMs, [name = std::move(name), lease](Connection& conn, uint32_t timeout) {
        auto request = conn.synod.locksRequest().send().getLocks().unlockRequest();
        request.setName(bytesOf(name));
        request.setLease(lease);
        request.setTimeoutMs(timeout);
        return request.send().then([](capnp::Response<rpc::Locks::UnlockResults>&& response) {
          return answeredResult<Empty>(response);
        });
      });
}

kj::Promise<Result<Empty>> AsyncClient::proclaim(std::string name, uint64_t lease,
                                                 std::string value, WriteOptions opts) {
  return call<Empty>(opts.timeoutMs, [name = std::move(name), lease, value = std::move(value)](
                                         Connection& conn, uint32_t timeout) {
    auto request = conn.synod.locksRequest().send().getLocks().proclaimRequest();
    request.setName(bytesOf(name));
    request.setLease(lease);
    request.setValue(bytesOf(value));
    request.setTimeoutMs(timeout);
    return request.send().then([](capnp::Response<rpc::Locks::ProclaimResults>&& response) {
      return answeredResult<Empty>(response);
    });
  });
}

kj::Promise<Result<LockHolder>> AsyncClient::leader(std::string name, ReadOptions opts) {
  return call<LockHolder>(
      opts.timeoutMs, [name = std::move(name), opts](Connection& conn, uint32_t timeout) {
        auto request = conn.synod.locksRequest().send().getLocks().leaderRequest();
        request.setName(bytesOf(name));
        request.setTimeoutMs(timeout);
        request.setSerializable(opts.serializable);
        return request.send().then([](capnp::Response<rpc::Locks::LeaderResults>&& response) {
          auto result = answeredResult<LockHolder>(response);
          if (result.ok()) result.reply = lockHolderFrom(response.getHolder());
          return result;
        });
      });
}

kj::Promise<Result<CheckFenceReply>> AsyncClient::checkFence(std::string name, uint64_t fence,
                                                             ReadOptions opts) {
  return call<CheckFenceReply>(
      opts.timeoutMs, [name = std::move(name), fence, opts](Connection& conn, uint32_t timeout) {
        auto request = conn.synod.locksRequest().send().getLocks().checkFenceRequest();
        request.setName(bytesOf(name));
        request.setFence(fence);
        request.setTimeoutMs(timeout);
        request.setSerializable(opts.serializable);
        return request.send().then([](capnp::Response<rpc::Locks::CheckFenceResults>&& response) {
          auto result = answeredResult<CheckFenceReply>(response);
          if (result.ok()) {
            result.reply.current = response.getCurrent();
            result.reply.hasHolder = response.getHasHolder();
            if (result.reply.hasHolder) result.reply.holder = lockHolderFrom(response.getHolder());
          }
          return result;
        });
      });
}

kj::Promise<Result<Observation>> AsyncClient::observe(
    std::string name, kj::Function<void(const LockChange&)> onChange, uint32_t timeoutMs) {
  auto slot = kj::refcounted<ObserverSlot>();
  slot->onChange = kj::mv(onChange);
  return call<Observation>(
      timeoutMs, [name = std::move(name), slot = kj::mv(slot)](Connection& conn, uint32_t) mutable {
        auto request = conn.synod.locksRequest().send().getLocks().observeRequest();
        request.setName(bytesOf(name));
        request.setObserver(kj::heap<ObserverServer>(kj::addRef(*slot)));
        return request.send().then(
            [slot = kj::mv(slot)](capnp::Response<rpc::Locks::ObserveResults>&& response) mutable {
              auto result = answeredResult<Observation>(response);
              if (result.ok()) {
                result.reply = Observation(response.getObservation(), kj::mv(slot));
              } else {
                slot->onChange = nullptr;
              }
              return result;
            });
      });
}

bool AsyncClient::connectionAlive() const {
  KJ_IF_MAYBE (existing, connection) {
    return !(*existing)->broken;
  }
  return false;
}

void AsyncClient::addBackgroundTask(kj::Promise<void> task) {
  background.add(kj::mv(task));
}

// ---------------------------------------------------------------------------------------------
// Client

Client::Client(ClientOptions options) : ownIo(kj::setupAsyncIo()) {
  auto& io = KJ_ASSERT_NONNULL(ownIo);
  scope = &io.waitScope;
  client = kj::heap<AsyncClient>(*io.provider, std::move(options));
}

Client::Client(std::string socketPath, uint32_t timeoutMs)
    : Client(ClientOptions{std::move(socketPath), timeoutMs, DEFAULT_DEADLINE_MARGIN_MS}) {}

Client::Client(kj::AsyncIoContext& io, ClientOptions options)
    : scope(&io.waitScope), client(kj::heap<AsyncClient>(*io.provider, std::move(options))) {}

Client::~Client() noexcept(false) {}

Result<KeyValue> Client::get(std::string_view key, ReadOptions opts) {
  return client->get(std::string(key), opts).wait(*scope);
}

Result<Empty> Client::put(std::string_view key, std::string_view value, WriteOptions opts) {
  return client->put(std::string(key), std::string(value), opts).wait(*scope);
}

Result<DeleteReply> Client::del(std::string_view key, std::string_view rangeEnd,
                                WriteOptions opts) {
  return client->del(std::string(key), std::string(rangeEnd), opts).wait(*scope);
}

Result<ListReply> Client::list(std::string_view prefix, ListOptions opts) {
  return client->list(std::string(prefix), std::move(opts)).wait(*scope);
}

Result<TxnReply> Client::txn(const Txn& txn, WriteOptions opts) {
  return client->txn(txn, opts).wait(*scope);
}

Result<StatusInfo> Client::status(uint32_t timeoutMs) {
  return client->status(timeoutMs).wait(*scope);
}

Result<TransferReply> Client::transferLeader(std::string_view target, uint32_t timeoutMs) {
  return client->transferLeader(std::string(target), timeoutMs).wait(*scope);
}

Result<HealthReply> Client::health(uint32_t timeoutMs) {
  return client->health(timeoutMs).wait(*scope);
}

Result<Empty> Client::put(std::string_view key, std::string_view value, uint64_t lease,
                          WriteOptions opts) {
  return client->put(std::string(key), std::string(value), lease, opts).wait(*scope);
}

Result<LeaseGrant> Client::grantLease(uint64_t ttlMs, LeaseOptions leaseOptions,
                                      uint32_t timeoutMs) {
  return client->grantLease(ttlMs, leaseOptions, timeoutMs).wait(*scope);
}

Result<LeaseGrant> Client::attachLease(uint64_t id, uint32_t timeoutMs) {
  return client->attachLease(id, timeoutMs).wait(*scope);
}

Result<LeaseListReply> Client::listLeases(ReadOptions opts) {
  return client->listLeases(opts).wait(*scope);
}

Result<LeaseInfo> Client::leaseInfo(uint64_t id, ReadOptions opts) {
  return client->leaseInfo(id, opts).wait(*scope);
}

Result<Empty> Client::revokeLease(uint64_t id, WriteOptions opts) {
  return client->revokeLease(id, opts).wait(*scope);
}

Result<KeepAliveReply> Client::keepAlive(rpc::Lease::Client lease, uint32_t timeoutMs) {
  return client->keepAlive(kj::mv(lease), timeoutMs).wait(*scope);
}

Result<FenceReply> Client::lock(std::string_view name, uint64_t lease, bool wait,
                                uint32_t timeoutMs) {
  return client->lock(std::string(name), lease, wait, timeoutMs).wait(*scope);
}

Result<FenceReply> Client::campaign(std::string_view name, std::string_view value, uint64_t lease,
                                    uint32_t timeoutMs) {
  return client->campaign(std::string(name), std::string(value), lease, timeoutMs).wait(*scope);
}

Result<Empty> Client::unlock(std::string_view name, uint64_t lease, WriteOptions opts) {
  return client->unlock(std::string(name), lease, opts).wait(*scope);
}

Result<Empty> Client::proclaim(std::string_view name, uint64_t lease, std::string_view value,
                               WriteOptions opts) {
  return client->proclaim(std::string(name), lease, std::string(value), opts).wait(*scope);
}

Result<LockHolder> Client::leader(std::string_view name, ReadOptions opts) {
  return client->leader(std::string(name), opts).wait(*scope);
}

Result<CheckFenceReply> Client::checkFence(std::string_view name, uint64_t fence,
                                           ReadOptions opts) {
  return client->checkFence(std::string(name), fence, opts).wait(*scope);
}

void Client::runFor(uint32_t ms) {
  client->timer().afterDelay(ms * kj::MILLISECONDS).wait(*scope);
}

}  // namespace synod::clients
