// libsynod: the C++ client of the local synod daemon.
//
// An app talks to the daemon on its own host over a Unix socket (Cap'n Proto two-party RPC, see
// rpc_schema/synod.capnp). Two faces:
//
// - `Client`: synchronous. Every call blocks until the daemon answers or the client's own deadline
//   passes, and never throws for an expected outcome: the answer is a `Result` whose `status` says
//   what happened. It runs its own KJ event loop, so it needs no event loop in the app — and it
//   must not be used on a thread that already runs a KJ event loop (use the constructor that
//   borrows that loop's `kj::AsyncIoContext`, or `AsyncClient`).
// - `AsyncClient`: the same calls as KJ promises, for apps that run a KJ loop.
//
// Keys and values are bytes held in std::string. The connection is opened on the first call and
// reopened on a later call after it broke (daemon restarted); a failure to connect is reported as
// Code::UNAVAILABLE with "daemon unreachable at PATH: reason".
//
// Deadlines: every call sends `timeoutMs` to the daemon (the per-call option, else the client's
// default). The daemon answers TIMEOUT or NO_QUORUM past it. The client itself gives up
// `deadlineMarginMs` later and reports TIMEOUT, so a hung daemon cannot hang the app. For writes,
// TIMEOUT, NO_QUORUM and a connection lost mid-call mean the outcome is unknown.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rpc_schema/synod.capnp.h"

namespace synod::clients {

/// Outcome of a call. The names (codeName) are the ones synodctl prints and scripts rely on.
enum class Code {
  OK,
  NOT_FOUND,
  COMPARE_FAILED,
  NO_QUORUM,  // for writes: outcome unknown
  TIMEOUT,    // for writes: outcome unknown
  INVALID_ARGUMENT,
  NO_SPACE,
  UNAVAILABLE,  // daemon unreachable, or the connection broke during the call
  INTERNAL,     // the daemon failed unexpectedly or lacks the method (older daemon)
};

/// "OK", "NOT_FOUND", … as in INTERFACES.md.
const char* codeName(Code code);

struct Status {
  Code code = Code::OK;
  std::string message;  // human text naming what was wrong; empty when ok

  bool ok() const { return code == Code::OK; }
};

/// Who served a reply and which state it reflects.
struct Header {
  uint64_t revision = 0;  // the config map's revision
  std::string member;     // name of the member that served it
  uint64_t ballotRound = 0;
  uint32_t ballotMember = 0;
};

/// Every call answers with one of these. `answered` is true when the daemon replied (then `status`
/// and `header` are the daemon's); false when the client gave up (UNAVAILABLE, TIMEOUT, INTERNAL
/// from an RPC exception) and `header` is empty. `reply` is meaningful when `ok()`; a few replies
/// also carry data on failure (a TxnReply says whether the compares held).
template <typename T>
struct Result {
  Status status;
  Header header;
  bool answered = false;
  T reply{};

  bool ok() const { return status.ok(); }
  T& operator*() { return reply; }
  const T& operator*() const { return reply; }
  T* operator->() { return &reply; }
  const T* operator->() const { return &reply; }
};

struct KeyValue {
  std::string key;
  std::string value;
  uint64_t createRevision = 0;
  uint64_t modRevision = 0;
  uint64_t version = 0;  // puts since the key was (re)created; 0 = absent
  uint64_t lease = 0;    // 0 = none
};

struct Empty {};

struct DeleteReply {
  uint64_t deleted = 0;
};

struct ListReply {
  std::vector<KeyValue> kvs;
  bool more = false;  // keys remain: continue with startAfter = kvs.back().key
};

struct TxnReply {
  bool succeeded = false;  // the compares held and the success ops ran
};

struct MemberStatus {
  std::string name;
  std::string address;
  std::string role;  // leader / follower / candidate / learner / unknown
  bool reachable = false;
  uint64_t lagSlots = 0;
  /// The rest comes from the member's own latest report, as of when it was sent; all zero / empty
  /// unless `reported`. The answering member's own row is current (reportAgeMs 0).
  bool reported = false;
  uint64_t reportAgeMs = 0;
  bool stale = false;  // unreachable, no report, or the report is more than 3 s old
  uint64_t ballotRound = 0;
  uint32_t ballotMember = 0;
  std::string leader;  // the leader that member knows; empty when unknown
  uint64_t decidedSlot = 0;
  uint64_t appliedSlot = 0;
  uint64_t revision = 0;
  uint64_t leaseLeftMs = 0;  // leader lease left, at the leader
  uint64_t dbSizeBytes = 0;
  uint64_t storeLimitBytes = 0;
  uint64_t commitP50Us = 0;  // group commit (fsync) latency over its recent commits
  uint64_t commitP99Us = 0;
  uint64_t incarnation = 0;
  uint64_t uptimeMs = 0;
  uint64_t stateDigest = 0;  // equal on members with the same applied state
  /// Catch-up progress, from the same report.
  bool recovering = false;    // empty data dir: not voting until it has caught up
  std::string recoveryStage;  // what the recovery waits for; empty unless recovering
  std::string snapshotFrom;   // a snapshot is being received from this member; empty when none
  uint64_t snapshotBytesReceived = 0;
  uint64_t snapshotBytesTotal = 0;
  /// The highest decided slot of any member (as the answering member knows them) minus this
  /// member's applied slot, at least 0.
  uint64_t slotsBehind = 0;
};

struct StatusInfo {
  std::string member;
  std::string role;
  uint64_t ballotRound = 0;
  uint32_t ballotMember = 0;
  std::string leader;  // empty when unknown
  uint64_t decidedSlot = 0;
  uint64_t appliedSlot = 0;
  uint64_t revision = 0;
  std::vector<MemberStatus> members;
  std::string clusterId;
  uint64_t incarnation = 0;
  uint64_t dbSizeBytes = 0;
  uint64_t storeLimitBytes = 0;
  std::string version;
  uint64_t uptimeMs = 0;
  int32_t callerPid = 0;
  uint32_t callerUid = 0;
  uint32_t callerGid = 0;
  uint64_t leaseLeftMs = 0;  // leader lease left; 0 unless this member leads
  uint64_t commitP50Us = 0;  // group commit (fsync) latency over its recent commits
  uint64_t commitP99Us = 0;
  uint64_t stateDigest = 0;
};

struct TransferReply {
  /// ok: the member now leading. Also on UNAVAILABLE when the member asked does not lead: the
  /// leader it knows (empty when none).
  std::string leader;
};

struct HealthReply {
  bool live = false;   // the daemon's loop answered
  bool ready = false;  // it can serve linearizable requests (the condition of READY=1)
  std::string reason;  // what it waits for when not ready
};

/// One condition of a transaction: `target(key) op operand`. A missing key has version 0,
/// createRevision 0 and modRevision 0.
struct Compare {
  enum class Target { VALUE, VERSION, CREATE_REVISION, MOD_REVISION };
  enum class Op { EQUAL, NOT_EQUAL, LESS, GREATER };

  std::string key;
  Target target = Target::VALUE;
  Op op = Op::EQUAL;
  std::string value;    // the operand when target is VALUE
  uint64_t number = 0;  // the operand otherwise
};

/// One write of a transaction branch.
struct TxnOp {
  enum class Kind { PUT, DELETE };

  Kind kind = Kind::PUT;
  std::string key;
  std::string value;     // PUT
  uint64_t lease = 0;    // PUT, 0 = none
  std::string rangeEnd;  // DELETE: see Client::del

  static TxnOp put(std::string key, std::string value, uint64_t lease = 0);
  static TxnOp del(std::string key, std::string rangeEnd = {});
};

/// All compares are evaluated against one state; if all hold `success` runs, else `failure`,
/// atomically at one new revision.
struct Txn {
  std::vector<Compare> compares;
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

/// Who holds a lease: the member its connection is (or was) to, and SO_PEERCRED of that
/// connection.
struct LeaseHolderInfo {
  std::string member;
  int32_t pid = 0;
  uint32_t uid = 0;
};

/// One lease as the daemon reports it (rpc_schema/synod.capnp, LeaseInfo).
struct LeaseInfo {
  uint64_t id = 0;
  uint64_t ttlMs = 0;
  /// How long the lease is certainly alive, from when the daemon answered (an upper estimate when
  /// `local` is false).
  uint64_t remainingMs = 0;
  uint64_t fence = 0;  // the revision at which it was granted
  LeaseHolderInfo holder;
  bool detached = false;
  bool local = false;              // held through the member that answered
  bool attached = false;           // a connection to that member holds a Lease capability for it
  uint64_t epoch = 0;              // renewals so far + 1
  uint64_t keys = 0;               // keys attached to it
  std::vector<std::string> locks;  // names of the locks it holds or waits for
};

struct LeaseOptions {
  /// Survives the connection: ends only by TTL or revoke, and can be attached by id from another
  /// connection. Otherwise the daemon revokes it when the connection closes or the Lease
  /// capability is dropped (after lockDelayMs).
  bool detached = false;
  int32_t lockDelayMs = -1;  // -1: the daemon's lock_delay_ms
};

/// A granted or attached lease: its info and the capability that keeps it (and, unless detached,
/// ends it when dropped). `lease` is null unless the Result is ok.
struct LeaseGrant {
  LeaseInfo info;
  kj::Maybe<rpc::Lease::Client> lease;
};

struct KeepAliveReply {
  uint64_t remainingMs = 0;  // safe for this long, counted from when the request was sent
  uint64_t ttlMs = 0;
};

struct LeaseListReply {
  std::vector<LeaseInfo> leases;  // ascending id
};

/// The holder of a lock or an election.
struct LockHolder {
  uint64_t lease = 0;
  std::string value;   // the election value; empty for a plain lock
  uint64_t fence = 0;  // the revision of the grant
  LeaseHolderInfo holder;
};

struct FenceReply {
  uint64_t fence = 0;  // the fence of the grant
};

struct CheckFenceReply {
  bool current = false;    // the fence asked about is the current holder's
  bool hasHolder = false;  // the lock is held (then `holder` is the holder)
  LockHolder holder;
};

/// One change of a lock's holder: the holder (none when the lock is free) at `revision`.
struct LockChange {
  bool hasHolder = false;
  LockHolder holder;
  uint64_t revision = 0;
};

/// Shared by an observation and its observer; cleared when the observation goes, so that a change
/// still in flight then is not delivered.
struct ObserverSlot : public kj::Refcounted {
  kj::Maybe<kj::Function<void(const LockChange&)>> onChange;
};

/// A running observation of one lock. Dropping it ends it: the daemon is told, and the callback is
/// not called again. An empty one (default, moved from, or of a failed observe) observes nothing.
class Observation {
 public:
  Observation() = default;
  Observation(rpc::Observation::Client cap, kj::Own<ObserverSlot> slot);
  Observation(Observation&& other) = default;
  Observation& operator=(Observation&& other);
  ~Observation() noexcept(false);

  bool active() const { return slot.get() != nullptr; }

 private:
  void stop();

  kj::Maybe<rpc::Observation::Client> cap;
  kj::Own<ObserverSlot> slot;
};

/// Longest lock (and election) name, as for keys.
inline constexpr size_t MAX_LOCK_NAME_BYTES = 511;

/// The rangeEnd that selects every key starting with `prefix` (the prefix with its last byte
/// below 0xff incremented and what follows dropped); "\0" (every key >= prefix) when the prefix is
/// empty or all 0xff.
std::string prefixRangeEnd(std::string_view prefix);

/// The rangeEnd that selects every key >= the start key.
inline std::string fromKeyRangeEnd() {
  return std::string(1, '\0');
}

/// $SYNOD_SOCKET when set and non-empty, else /run/synod/synod.sock.
std::string defaultSocketPath();

inline constexpr uint32_t DEFAULT_TIMEOUT_MS = 5000;
inline constexpr uint32_t DEFAULT_DEADLINE_MARGIN_MS = 1000;

struct ClientOptions {
  std::string socketPath;                   // empty: defaultSocketPath()
  uint32_t timeoutMs = DEFAULT_TIMEOUT_MS;  // sent with calls that don't set their own; 0 = default
  uint32_t deadlineMarginMs = DEFAULT_DEADLINE_MARGIN_MS;  // client gives up this much later
};

struct ReadOptions {
  bool serializable = false;  // answer from the local replica at once instead of linearizably
  uint32_t timeoutMs = 0;     // 0: the client's default
};

struct WriteOptions {
  uint32_t timeoutMs = 0;  // 0: the client's default
};

struct ListOptions {
  uint32_t limit = 0;      // at most this many keys; 0 = the daemon's maximum
  std::string startAfter;  // exclusive; empty = from the first key with the prefix
  bool serializable = false;
  uint32_t timeoutMs = 0;  // 0: the client's default
};

/// The promise face. Owns the connection; every promise it returns refers to it, so it must
/// outlive them. Calls may be issued concurrently from the loop's thread (it is not thread-safe);
/// they share one connection. No promise it returns ever rejects: failures are in Result::status.
class AsyncClient {
 public:
  /// Uses `io`'s network (for "unix:PATH") and timer; `io` must outlive this. Does not connect.
  AsyncClient(kj::AsyncIoProvider& io, ClientOptions options);
  ~AsyncClient() noexcept(false);
  KJ_DISALLOW_COPY(AsyncClient);

  const std::string& socketPath() const { return options.socketPath; }
  const ClientOptions& clientOptions() const { return options; }

  kj::Promise<Result<KeyValue>> get(std::string key, ReadOptions opts = {});
  kj::Promise<Result<Empty>> put(std::string key, std::string value, WriteOptions opts = {});
  /// Deletes `key` alone when rangeEnd is empty, else every k with key <= k < rangeEnd ("\0": every
  /// k >= key; see prefixRangeEnd).
  kj::Promise<Result<DeleteReply>> del(std::string key, std::string rangeEnd = {},
                                       WriteOptions opts = {});
  kj::Promise<Result<ListReply>> list(std::string prefix, ListOptions opts = {});
  /// status COMPARE_FAILED (with reply.succeeded false) when the compares did not hold and the
  /// failure branch ran.
  kj::Promise<Result<TxnReply>> txn(Txn txn, WriteOptions opts = {});
  kj::Promise<Result<StatusInfo>> status(uint32_t timeoutMs = 0);
  /// Asks the member this client talks to, which must lead, to hand leadership to `target` (a
  /// member name; empty = any up-to-date follower). OK once another member leads (reply.leader);
  /// UNAVAILABLE when the member does not lead (reply.leader names the leader it knows) or cannot
  /// reach the target; INVALID_ARGUMENT for an unknown name; TIMEOUT when no other member was
  /// known to lead in time.
  kj::Promise<Result<TransferReply>> transferLeader(std::string target, uint32_t timeoutMs = 0);
  /// Whether the member is live and ready (rpc_schema/synod.capnp, Admin.health). OK whether or
  /// not it is ready; UNAVAILABLE when the daemon is unreachable.
  kj::Promise<Result<HealthReply>> health(uint32_t timeoutMs = 0);

  // Leases (rpc_schema/synod.capnp, Leases and Lease). See clients/leases.h for the RAII Lease
  // that keeps one alive.

  /// INVALID_ARGUMENT when ttlMs is outside the daemon's lease_ttl_min_ms .. lease_ttl_max_ms.
  kj::Promise<Result<LeaseGrant>> grantLease(uint64_t ttlMs, LeaseOptions leaseOptions = {},
                                             uint32_t timeoutMs = 0);
  /// A capability for an existing lease held through this member. NOT_FOUND when it has ended;
  /// INVALID_ARGUMENT when it is held through another member.
  kj::Promise<Result<LeaseGrant>> attachLease(uint64_t id, uint32_t timeoutMs = 0);
  kj::Promise<Result<LeaseListReply>> listLeases(ReadOptions opts = {});
  kj::Promise<Result<LeaseInfo>> leaseInfo(uint64_t id, ReadOptions opts = {});
  /// Ends any lease at once. NOT_FOUND when there is none.
  kj::Promise<Result<Empty>> revokeLease(uint64_t id, WriteOptions opts = {});
  /// Calls on a capability from grantLease / attachLease (of this client's current connection;
  /// one from a broken connection answers UNAVAILABLE). keepAlive gives up after timeoutMs (0 =
  /// the client's default) plus the margin.
  kj::Promise<Result<KeepAliveReply>> keepAlive(rpc::Lease::Client lease, uint32_t timeoutMs = 0);
  kj::Promise<Result<Empty>> revokeLease(rpc::Lease::Client lease, WriteOptions opts = {});
  kj::Promise<Result<LeaseInfo>> leaseInfo(rpc::Lease::Client lease, uint32_t timeoutMs = 0);
  /// Sets KEY to VALUE attached to `lease` (deleted when the lease ends; 0 = none).
  kj::Promise<Result<Empty>> put(std::string key, std::string value, uint64_t lease,
                                 WriteOptions opts = {});

  // Locks and elections (rpc_schema/synod.capnp, Locks). Names are bytes, 1..511 of them.

  /// `wait` false: COMPARE_FAILED at once when another lease holds it. `wait` true: queues FIFO
  /// until granted; NOT_FOUND at once when the lease ends, TIMEOUT after timeoutMs (0 = no
  /// deadline: the client does not give up either).
  kj::Promise<Result<FenceReply>> lock(std::string name, uint64_t lease, bool wait,
                                       uint32_t timeoutMs = 0);
  /// Waits FIFO among the candidates like lock; timeoutMs 0 = no deadline.
  kj::Promise<Result<FenceReply>> campaign(std::string name, std::string value, uint64_t lease,
                                           uint32_t timeoutMs = 0);
  /// Unlock or resign: NOT_FOUND when the lease neither holds nor waits for it.
  kj::Promise<Result<Empty>> unlock(std::string name, uint64_t lease, WriteOptions opts = {});
  /// The holder replaces its value, keeping its fence. NOT_FOUND when `lease` does not hold it.
  kj::Promise<Result<Empty>> proclaim(std::string name, uint64_t lease, std::string value,
                                      WriteOptions opts = {});
  /// NOT_FOUND when the lock is free.
  kj::Promise<Result<LockHolder>> leader(std::string name, ReadOptions opts = {});
  kj::Promise<Result<CheckFenceReply>> checkFence(std::string name, uint64_t fence,
                                                  ReadOptions opts = {});
  /// Calls `onChange` with the current holder at once, then on every change in order, on this
  /// loop, until the returned observation is dropped or the connection breaks. `onChange` must
  /// outlive the observation.
  kj::Promise<Result<Observation>> observe(std::string name,
                                           kj::Function<void(const LockChange&)> onChange,
                                           uint32_t timeoutMs = 0);

  /// Runs `task` to completion in the background (its failure is ignored); for requests that
  /// must go out but whose answer nobody waits for (a destructor's revoke). Cancelled when this
  /// client is destroyed.
  void addBackgroundTask(kj::Promise<void> task);
  /// Whether the connection is open now (false before the first call and once it broke).
  bool connectionAlive() const;
  /// How many connections this client has opened: a capability obtained while this was N belongs
  /// to a connection that is gone once it is no longer N (or the connection is not alive).
  uint64_t connectionsOpened() const { return opened; }
  /// The loop's timer (the clock of lease deadlines).
  kj::Timer& timer() { return io.getTimer(); }

  /// The bootstrap capability, connecting first if needed, for API not wrapped here. Rejects with
  /// the connect error.
  kj::Promise<rpc::Synod::Client> bootstrap();

 private:
  struct Connection;

  kj::Promise<void> connected();
  template <typename T, typename Call>
  kj::Promise<Result<T>> call(uint32_t timeoutMs, Call&& body);
  /// A call on a capability of a connection (not the client's current one): no reconnect.
  template <typename T, typename Send>
  kj::Promise<Result<T>> callCapability(uint32_t timeoutMs, Send&& send);
  /// Like call, but with timeoutMs 0 sent as is and no deadline of the client's own.
  template <typename T, typename Call>
  kj::Promise<Result<T>> callWaiting(uint32_t timeoutMs, Call&& body);
  template <typename T>
  Result<T> callFailure(Connection& conn, const kj::Exception& error);
  uint32_t effectiveTimeout(uint32_t timeoutMs) const;

  kj::AsyncIoProvider& io;
  ClientOptions options;
  kj::Maybe<kj::Own<Connection>> connection;  // set once connected, until it breaks
  kj::Maybe<kj::ForkedPromise<void>> connecting;
  kj::Maybe<kj::Exception> connectError;  // set by a finished failed connect attempt
  uint64_t opened = 0;
  struct IgnoreErrors : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };
  IgnoreErrors ignoreErrors;
  kj::TaskSet background{ignoreErrors};  // last: cancelled before the rest goes
};

/// The blocking face: each call runs the event loop until its answer (or the deadline).
class Client {
 public:
  /// Runs its own event loop on this thread (kj::setupAsyncIo): at most one per thread, and not on
  /// a thread that already has a KJ event loop.
  explicit Client(ClientOptions options = {});
  Client(std::string socketPath, uint32_t timeoutMs);
  /// Borrows a thread's existing KJ I/O context; calls block by waiting on its wait scope, so
  /// other work on that loop keeps running meanwhile. `io` must outlive this.
  Client(kj::AsyncIoContext& io, ClientOptions options);
  ~Client() noexcept(false);
  KJ_DISALLOW_COPY(Client);

  const std::string& socketPath() const { return client->socketPath(); }

  Result<KeyValue> get(std::string_view key, ReadOptions opts = {});
  Result<Empty> put(std::string_view key, std::string_view value, WriteOptions opts = {});
  Result<DeleteReply> del(std::string_view key, std::string_view rangeEnd = {},
                          WriteOptions opts = {});
  Result<ListReply> list(std::string_view prefix, ListOptions opts = {});
  Result<TxnReply> txn(const Txn& txn, WriteOptions opts = {});
  Result<StatusInfo> status(uint32_t timeoutMs = 0);
  Result<TransferReply> transferLeader(std::string_view target, uint32_t timeoutMs = 0);
  Result<HealthReply> health(uint32_t timeoutMs = 0);

  Result<Empty> put(std::string_view key, std::string_view value, uint64_t lease,
                    WriteOptions opts = {});
  Result<LeaseGrant> grantLease(uint64_t ttlMs, LeaseOptions leaseOptions = {},
                                uint32_t timeoutMs = 0);
  Result<LeaseGrant> attachLease(uint64_t id, uint32_t timeoutMs = 0);
  Result<LeaseListReply> listLeases(ReadOptions opts = {});
  Result<LeaseInfo> leaseInfo(uint64_t id, ReadOptions opts = {});
  Result<Empty> revokeLease(uint64_t id, WriteOptions opts = {});
  Result<KeepAliveReply> keepAlive(rpc::Lease::Client lease, uint32_t timeoutMs = 0);
  Result<FenceReply> lock(std::string_view name, uint64_t lease, bool wait, uint32_t timeoutMs = 0);
  Result<FenceReply> campaign(std::string_view name, std::string_view value, uint64_t lease,
                              uint32_t timeoutMs = 0);
  Result<Empty> unlock(std::string_view name, uint64_t lease, WriteOptions opts = {});
  Result<Empty> proclaim(std::string_view name, uint64_t lease, std::string_view value,
                         WriteOptions opts = {});
  Result<LockHolder> leader(std::string_view name, ReadOptions opts = {});
  Result<CheckFenceReply> checkFence(std::string_view name, uint64_t fence, ReadOptions opts = {});

  /// Runs the event loop for `ms` milliseconds: lets leases keep themselves alive and
  /// observations arrive while the app has nothing to ask.
  void runFor(uint32_t ms);

  /// The promise face on the same connection, and the wait scope to wait on its promises.
  AsyncClient& async() { return *client; }
  kj::WaitScope& waitScope() { return *scope; }

 private:
  kj::Maybe<kj::AsyncIoContext> ownIo;
  kj::WaitScope* scope;
  kj::Own<AsyncClient> client;
};

}  // namespace synod::clients
