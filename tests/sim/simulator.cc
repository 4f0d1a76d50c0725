#include "tests/sim/simulator.h"

#include <capnp/message.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "election/lease_clock.h"
#include "election/leases.h"
#include "election/prng.h"
#include "election/replica.h"
#include "election/snapshot.h"
#include "election/state_machine.h"
#include "rpc_schema/records.capnp.h"
#include "storage/memory_store.h"
#include "tests/sim/lease_checker.h"
#include "tests/sim/linearizability.h"

namespace synod::sim {

using election::Ballot;
using election::LeaseRuleBreaker;
using election::LogEntry;
using election::MemberIndex;
using election::Nanos;
using election::PeerMessage;
using election::Prng;
using election::Ready;
using election::Replica;
using election::Role;
using election::RuleBreaker;
using election::Slot;
using election::Value;

namespace {

constexpr Nanos MS = election::NANOS_PER_MS;
constexpr size_t MAX_KEYS = 4;
constexpr uint64_t UNKNOWN = RegisterOp::UNKNOWN;
// Lease commands are the members' own (as in the daemon, where apps never propose them); member i
// proposes them as CommandId member NODE_MEMBER_BASE + i, apart from the clients' ids.
constexpr uint32_t NODE_MEMBER_BASE = 64;

// ---------------------------------------------------------------------------------------------
// Client commands are real records::Command puts, applied by the real StateMachine. Each client
// plays a member of its own in the CommandId (member = client index, incarnation 1), so its
// retries, wherever they land, are de-duplicated by the replicated sessions: exactly-once.

std::string keyName(uint8_t key) {
  return "k" + std::to_string(key);
}

std::string encodePut(uint32_t client, uint64_t sequence, uint8_t key, uint64_t value) {
  capnp::MallocMessageBuilder message;
  auto command = message.initRoot<records::Command>();
  auto id = command.initId();
  id.setMember(client);
  id.setIncarnation(1);
  id.setSequence(sequence);
  auto put = command.initPut();
  const std::string k = keyName(key), v = std::to_string(value);
  put.setKey(kj::arrayPtr(reinterpret_cast<const kj::byte*>(k.data()), k.size()));
  put.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(v.data()), v.size()));
  return election::encodeCommand(message);
}

// A member's own command: CommandId (NODE_MEMBER_BASE + node, incarnation, sequence); `fill`
// sets the union.
template <typename Fill>
std::string encodeMemberCommand(uint32_t node, uint64_t incarnation, uint64_t sequence,
                                Fill&& fill) {
  capnp::MallocMessageBuilder message;
  auto command = message.initRoot<records::Command>();
  auto id = command.initId();
  id.setMember(NODE_MEMBER_BASE + node);
  id.setIncarnation(incarnation);
  id.setSequence(sequence);
  fill(command);
  return election::encodeCommand(message);
}

uint64_t valueId(uint32_t client, uint64_t sequence) {
  return (uint64_t{client} + 1) << 40 | sequence;
}

uint64_t hashValue(const Value& value) {
  uint64_t h = 1469598103934665603ULL;
  for (const std::string& command : value.commands) {
    for (char ch : command)
      h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
  }
  return h | 1;  // 0 means "not decided yet"
}

// ---------------------------------------------------------------------------------------------

struct Params {
  Nanos heartbeat, electionTimeout, lease;
  double drift;
  uint32_t window, batchCommands;
  Slot retainedSlots;
  Nanos netMin, netMax, diskMin, diskMax, tickMin, tickMax;
  uint32_t clients, keys;
  Nanos thinkMax, attemptTimeout, readTimeout;
  Nanos chaosMin, chaosMax, faultGapMin, faultGapMax;
  Nanos livenessBound;
  // Lease workload.
  uint32_t leaseApps;  // per member
  uint64_t leaseTtlMinMs, leaseTtlMaxMs;
  Nanos leaseCommandRetry, leaseCommandGiveUp;
  election::LeaseClockOptions leaseClock;
  Nanos leaseSlack;
};

enum class EventKind : uint8_t {
  DELIVER,
  TICK,
  PERSIST_DONE,
  CLIENT,
  FAULT,
  RESTART,
  PARTITION_END,
  FLAP,
  CALM_START,
  CALM_CHECK,
  CHAOS_START,
  SNAPSHOT_DONE,  // a snapshot transfer to `node` from member `from` arrives
  LEASE_APP,      // app `payload` of `node` (life `tag`, attempt `from`) acts
  FORWARD,        // a member's command forwarded from `from` reaches the leader `node`
};

const char* eventName(EventKind kind) {
  switch (kind) {
    case EventKind::DELIVER:
      return "deliver";
    case EventKind::TICK:
      return "tick";
    case EventKind::PERSIST_DONE:
      return "persisted";
    case EventKind::CLIENT:
      return "client";
    case EventKind::FAULT:
      return "fault";
    case EventKind::RESTART:
      return "restart";
    case EventKind::PARTITION_END:
      return "partition-end";
    case EventKind::FLAP:
      return "flap";
    case EventKind::CALM_START:
      return "calm-start";
    case EventKind::CALM_CHECK:
      return "calm-check";
    case EventKind::CHAOS_START:
      return "chaos-start";
    case EventKind::SNAPSHOT_DONE:
      return "snapshot";
    case EventKind::LEASE_APP:
      return "lease-app";
    case EventKind::FORWARD:
      return "forward";
  }
  return "?";
}

struct Event {
  Nanos at = 0;
  uint64_t order = 0;
  EventKind kind = EventKind::TICK;
  uint32_t node = 0;
  uint32_t from = 0;
  uint64_t tag = 0;
  uint32_t payload = 0;
};

struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return a.at != b.at ? a.at > b.at : a.order > b.order;
  }
};

// A local app holding leases through its member; one lease at a time.
struct LeaseApp {
  enum State { IDLE, GRANTING, HOLDING, REVOKING };
  State state = IDLE;
  uint64_t lease = 0;
  uint64_t ttlMs = 0;
  Nanos keepAliveUntil = 0;  // real time: then the app revokes its lease, or stops (crashes)
  bool revokes = false;
  uint32_t attempt = 0;  // its events of an earlier attempt are void
};

enum class LeaseCommandKind : uint8_t { GRANT, RENEW, REVOKE, EXPIRE, CHECKPOINT };

// A grant, renewal batch or revoke of this member, until this member applies it or gives up.
struct PendingLeaseCommand {
  std::string encoded;
  LeaseCommandKind kind = LeaseCommandKind::GRANT;
  uint32_t app = 0;
  uint64_t batch = 0;
  Nanos sentLocal = 0;  // first submission, on the member's clock
  Nanos resubmitAt = 0;
  Nanos giveUpAt = 0;
};

// What a member issued, for the checks at the command's first apply anywhere.
struct IssuedLeaseCommand {
  LeaseCommandKind kind = LeaseCommandKind::GRANT;
  Nanos sentAt = 0;  // real time
  Nanos noLeaderAtSend = 0;
  uint64_t lease = 0;
  uint64_t ttlMs = 0;
  std::vector<uint64_t> ids;  // renewals
  size_t entries = 0;         // checkpoint entries
};

struct Node {
  bool up = false;
  Nanos pausedUntil = 0;  // a stopped process (GC, SIGSTOP, VM stall): input waits until then
  uint64_t life = 0;      // bumped at every crash: events of an earlier life are void
  std::unique_ptr<Prng> prng;
  std::unique_ptr<Replica> core;
  storage::MemoryStore store;
  std::unique_ptr<election::StateMachine> state;  // the in-memory view; durable in `store`
  Slot applied = 0;
  Ballot maxDurablePromised, previousDurablePromised;
  double rate = 1;
  Nanos baseTrue = 0, baseLocal = 0;
  bool persisting = false;
  Ready inFlight;
  bool snapshotPending = false;  // a transfer is on its way; further SnapshotNeeded wait for it
  std::unordered_map<election::ReadId, uint32_t> readWaiters;
  // The lease clocks and apps live in the process: a restart starts them empty.
  std::unique_ptr<election::LeaseRenewer> renewer;
  std::unique_ptr<election::LeaseExpirer> expirer;
  std::vector<LeaseApp> apps;
  std::map<uint64_t, PendingLeaseCommand> pendingLease;  // by sequence
  uint64_t nextSequence = 1;
  uint64_t nextLeaseCounter = 1;
  uint64_t incarnation() const { return life + 1; }
};

struct Client {
  enum State { IDLE, WAITING, BACKOFF };
  State state = IDLE;
  uint64_t sequence = 0;  // of the current or last write
  size_t op = 0;          // history index of the current op
  bool write = false;
  uint8_t key = 0;
  std::string encoded;
  uint32_t node = 0;
  uint64_t attempt = 0;
  election::ReadId readId = 0;
};

struct OpRecord {
  uint32_t client = 0;
  uint8_t key = 0;
  bool write = false;
  uint64_t value = 0;
  uint64_t invoke = 0;
  uint64_t response = UNKNOWN;
};

struct Partition {
  uint64_t id = 0;
  std::vector<uint32_t> cut;  // per sender: bitmask of receivers it cannot reach
  bool active = true;
  bool flapping = false;
};

struct Trace {
  uint64_t step = 0;
  Nanos at = 0;
  EventKind kind = EventKind::TICK;
  uint32_t node = 0;
  uint32_t from = 0;
  std::string what;
};

struct Stats {
  uint64_t leaderships = 0, slots = 0, writesAcked = 0, readsOk = 0, leaseReads = 0, indexReads = 0,
           followerReads = 0, crashes = 0, partitions = 0, messages = 0, dropped = 0,
           duplicated = 0, calmPeriods = 0, pauses = 0, snapshotNeeded = 0, readsFailed = 0,
           commits = 0, handoffs = 0, handoffsRefused = 0, snapshotsInstalled = 0, wipes = 0,
           recoveries = 0;
  Nanos worstCalmNs = 0;
  uint64_t leaseGrants = 0, leaseRenewals = 0, renewBatches = 0, leaseExpiries = 0,
           expiriesIgnored = 0, leaseRevokes = 0, checkpoints = 0, checkpointCommands = 0,
           holderChecks = 0;
};

class Violation : public std::runtime_error {
 public:
  Violation(std::string invariant, const std::string& detail)
      : std::runtime_error(detail), invariant(std::move(invariant)) {}
  std::string invariant;
};

RuleBreaker coreBreaker(const std::string& name) {
  if (name == "acceptor-ignores-promise") return RuleBreaker::ACCEPTOR_IGNORES_PROMISE;
  if (name == "leader-picks-any-value") return RuleBreaker::LEADER_PICKS_ANY_VALUE;
  if (name == "lease-not-shortened") return RuleBreaker::LEASE_NOT_SHORTENED;
  if (name == "lease-read-ignores-promised-slots") {
    return RuleBreaker::LEASE_READ_IGNORES_PROMISED_SLOTS;
  }
  if (name == "heartbeat-decides-other-ballot") return RuleBreaker::HEARTBEAT_DECIDES_OTHER_BALLOT;
  if (name == "handoff-keeps-lease") return RuleBreaker::HANDOFF_KEEPS_LEASE;
  return RuleBreaker::NONE;
}

LeaseRuleBreaker leaseBreaker(const std::string& name) {
  if (name == "lease-no-drift-margin") return LeaseRuleBreaker::NO_DRIFT_MARGIN;
  if (name == "lease-renewal-ignored") return LeaseRuleBreaker::RENEWAL_IGNORED;
  if (name == "lease-checkpoint-short") return LeaseRuleBreaker::CHECKPOINT_SHORT;
  return LeaseRuleBreaker::NONE;
}

std::string ballotText(const Ballot& b) {
  return "(" + std::to_string(b.round) + "," + std::to_string(b.member) + ")";
}

// ---------------------------------------------------------------------------------------------

class Simulator {
 public:
  Simulator(const RunOptions& options, std::ostream& out)
      : options_(options),
        out_(out),
        prng_(options.seed),
        handoffPrng_(options.seed ^ 0x68616e646f6666ULL),
        catchUpPrng_(options.seed ^ 0x636174636875ULL),
        leasePrng_(options.seed ^ 0x6c65617365ULL) {
    if (options.nodes < 1 || options.nodes > 7) {
      throw std::invalid_argument("--nodes must be between 1 and 7");
    }
    if (!options.breaker.empty() && options.breaker != "crash-drops-synced-promise" &&
        coreBreaker(options.breaker) == RuleBreaker::NONE &&
        leaseBreaker(options.breaker) == LeaseRuleBreaker::NONE) {
      throw std::invalid_argument("unknown rule breaker '" + options.breaker + "'");
    }
    if (leaseBreaker(options.breaker) != LeaseRuleBreaker::NONE && !options.leases) {
      throw std::invalid_argument("rule breaker '" + options.breaker +
                                  "' needs the lease workload");
    }
    dropsSyncedPromise_ = options.breaker == "crash-drops-synced-promise";
    leaseBreaker_ = leaseBreaker(options.breaker);
    chooseParams();
    leaseChecker_ = std::make_unique<LeaseChecker>(LeaseBoundOptions{
        params_.drift, params_.leaseClock.checkpointIntervalNs, params_.leaseSlack});
    trace_.resize(std::max<uint32_t>(1, options.traceSteps));
  }

  RunResult run();

 private:
  // Setup.
  void chooseParams();
  election::Options coreOptions(uint32_t node) const;
  void startNode(uint32_t index, bool fresh);

  // Events.
  void schedule(Nanos at, EventKind kind, uint32_t node = 0, uint64_t tag = 0, uint32_t from = 0,
                uint32_t payload = 0);
  void handle(const Event& event);
  void deliver(const Event& event);
  void persisted(uint32_t index);
  void crash(uint32_t index);
  void wipe(uint32_t index);
  void wipeAndDepose();
  void restart(uint32_t index);
  void snapshotArrived(const Event& event);
  void fault();
  void handoff();
  void startPartition();
  void recomputeCuts();
  void calmStart();
  void calmCheck();
  void checkStatesAgree();

  // Shell.
  void drive(uint32_t index);
  void send(uint32_t from, const election::OutgoingMessage& message);
  void applyEntry(uint32_t index, const LogEntry& entry);
  void serveRead(uint32_t index, const election::ReadOutcome& outcome);
  Nanos localNow(const Node& node) const {
    return node.baseLocal +
           static_cast<Nanos>(static_cast<double>(now_ - node.baseTrue) * node.rate);
  }
  void setRate(Node& node, double rate) {
    node.baseLocal = localNow(node);
    node.baseTrue = now_;
    node.rate = rate;
  }
  double randomRate() {
    const double d = params_.drift;
    if (prng_.chance(0.75)) return prng_.chance(0.5) ? 1 + d : 1 - d;
    return 1 - d + 2 * d * prng_.unit();
  }

  // Clients.
  void clientEvent(uint32_t client, uint64_t tag);
  void startOp(uint32_t client);
  void attempt(uint32_t client);
  void retry(uint32_t client, std::optional<uint32_t> node, Nanos delay);
  void completeOp(uint32_t client, uint64_t value);

  // Leases: apps, the members' renewers and expirers (as the daemon runs them), and the checks.
  void startLeases(uint32_t index);
  void stopLeases(uint32_t index);
  void leaseTick(uint32_t index);
  void leaseAppEvent(const Event& event);
  void scheduleApp(uint32_t index, uint32_t app, Nanos delay);
  void grantLease(uint32_t index, uint32_t app);
  void stopKeepingAlive(uint32_t index, uint32_t app);
  void takeRenewals(uint32_t index);
  uint64_t issueLease(uint32_t index, IssuedLeaseCommand issued);
  void submitLease(uint32_t index, uint64_t sequence);
  void forward(uint32_t from, uint32_t to, const std::string& command);
  void forwarded(const Event& event);
  void leaseCommandApplied(uint32_t index, const election::AppliedCommand& applied, bool first);
  void firstLeaseApply(uint32_t index, const election::AppliedCommand& applied);
  void ownLeaseApplied(uint32_t index, const election::AppliedCommand& applied);
  void leaseGivenUp(uint32_t index, PendingLeaseCommand command);
  void checkHolderSafe(uint64_t id);
  void checkLeasesAfterStep();

  // Checks.
  void checkAfterStep();
  void checkHistory();
  void printLeaseChanges();
  void fail(const std::string& invariant, const std::string& detail) {
    throw Violation(invariant, detail);
  }
  void record(EventKind kind, uint32_t node, uint32_t from, std::string what);
  void printTrace(const std::string& invariant, const std::string& detail);
  void printSummary(double wallSeconds);

  uint64_t logicalNow(bool response) const { return 2 * step_ + (response ? 1 : 0); }

  RunOptions options_;
  std::ostream& out_;
  Prng prng_;
  // Hand-off decisions draw from their own stream, so adding them left every other fault of a
  // seed where it was until the first hand-off.
  Prng handoffPrng_;
  // Catch-up choices (short log retention, wiped data dirs) too.
  Prng catchUpPrng_;
  // And the lease workload: its parameters, apps and forwarded commands.
  Prng leasePrng_;
  LeaseRuleBreaker leaseBreaker_ = LeaseRuleBreaker::NONE;
  Params params_{};
  bool dropsSyncedPromise_ = false;

  Nanos now_ = 0;
  uint64_t step_ = 0;
  uint64_t order_ = 0;
  std::priority_queue<Event, std::vector<Event>, Later> events_;
  std::vector<PeerMessage> pool_;
  std::vector<uint32_t> freePool_;

  std::vector<Node> nodes_;
  std::vector<Client> clients_;
  std::vector<OpRecord> history_;
  election::ReadId nextReadId_ = 1;

  // Network.
  double loss_ = 0, duplicate_ = 0, spike_ = 0;
  std::vector<Partition> partitions_;
  std::vector<uint32_t> cut_;
  uint64_t nextPartitionId_ = 1;

  // Phases.
  bool calm_ = false;
  uint64_t phase_ = 0;
  Nanos calmSince_ = 0;
  size_t opsBeforeCalm_ = 0;

  // Checker state.
  std::vector<uint64_t> decidedHash_;                      // by slot; 0 = not decided yet
  std::unordered_map<uint64_t, uint64_t> effectAt_;        // value id -> position (slot << 16 | i)
  std::unordered_map<uint64_t, size_t> writeOpOf_;         // value id -> history index
  std::unordered_map<uint64_t, std::string> issued_;       // value id -> the encoded command
  std::vector<election::AppliedCommand> appliedCommands_;  // scratch
  std::array<std::vector<std::pair<uint64_t, uint64_t>>, MAX_KEYS> acked_;  // (time, max pos)
  std::vector<uint64_t> decidedDigest_;  // by slot: the state digest right after applying it

  // Lease checker state.
  std::map<election::CommandId, IssuedLeaseCommand> leaseIssued_;  // until first applied
  std::unique_ptr<LeaseChecker> leaseChecker_;
  Nanos coveredUntil_ = 0;  // real time until which a member known now is a valid leader
  std::unordered_map<uint64_t, std::string> forwards_;
  uint64_t nextForward_ = 1;

  std::vector<Trace> trace_;
  std::vector<bool> leaseHeld_;  // --verbose
  Stats stats_;
};

// ---------------------------------------------------------------------------------------------
// Setup

void Simulator::chooseParams() {
  Params& p = params_;
  p.heartbeat = static_cast<Nanos>(prng_.uniform(5, 31)) * MS;
  p.lease = p.heartbeat * static_cast<Nanos>(prng_.uniform(2, 13));
  p.electionTimeout = p.heartbeat * static_cast<Nanos>(prng_.uniform(3, 13));
  // Real bounds are far smaller; a large one magnifies what the lease arithmetic must absorb.
  p.drift = prng_.chance(0.2) ? 0.0 : 0.001 + prng_.unit() * (prng_.chance(0.5) ? 0.05 : 0.2);
  p.window = static_cast<uint32_t>(prng_.chance(0.3) ? prng_.uniform(1, 4) : prng_.uniform(4, 33));
  p.batchCommands = static_cast<uint32_t>(prng_.uniform(1, 65));
  p.retainedSlots = prng_.uniform(4000, 16000);
  // Often so short that a member down for a while must catch up by snapshot.
  if (catchUpPrng_.chance(0.6)) p.retainedSlots = catchUpPrng_.uniform(1, 64);
  p.netMin = static_cast<Nanos>(prng_.uniform(50, 1000)) * 1000;
  p.netMax = p.netMin + static_cast<Nanos>(prng_.uniform(100, 5000)) * 1000;
  p.diskMin = static_cast<Nanos>(prng_.uniform(20, 1000)) * 1000;
  p.diskMax = p.diskMin + static_cast<Nanos>(prng_.uniform(100, 5000)) * 1000;
  p.tickMin = p.heartbeat / 4;
  p.tickMax = p.heartbeat / 2;
  p.clients = static_cast<uint32_t>(prng_.uniform(2, 13));
  p.keys = static_cast<uint32_t>(prng_.uniform(1, MAX_KEYS + 1));
  p.thinkMax = static_cast<Nanos>(prng_.uniform(1, 20)) * MS;
  p.readTimeout = 2 * p.electionTimeout;
  p.attemptTimeout = 3 * p.electionTimeout + 20 * MS;
  p.chaosMin = 500 * MS;
  p.chaosMax = 5000 * MS;
  p.faultGapMin = 20 * MS;
  p.faultGapMax = 300 * MS;
  const Nanos restartWindow =
      static_cast<Nanos>(std::ceil(static_cast<double>(p.lease) * (1 + p.drift)));
  // Restart window, then several election rounds (split votes are possible), then a client's
  // retry cycle. Generous, but bounded: a run that needs more is stuck.
  p.livenessBound = restartWindow + 10 * 2 * p.electionTimeout + 2 * p.attemptTimeout + 500 * MS;

  // TTLs from a few election timeouts to tens of them.
  const Nanos e = p.electionTimeout;
  p.leaseApps = static_cast<uint32_t>(leasePrng_.uniform(1, 5));
  p.leaseTtlMinMs = static_cast<uint64_t>(e / MS) * leasePrng_.uniform(3, 9);
  p.leaseTtlMaxMs = p.leaseTtlMinMs * leasePrng_.uniform(2, 6);
  p.leaseCommandRetry = e;
  p.leaseCommandGiveUp = 3 * e;
  p.leaseClock.maxClockDrift = p.drift;
  p.leaseClock.checkpointIntervalNs = e * static_cast<Nanos>(leasePrng_.uniform(2, 21));
  p.leaseClock.retryNs = e * static_cast<Nanos>(leasePrng_.uniform(1, 4));
  p.leaseClock.minBatchIntervalNs = p.heartbeat * static_cast<Nanos>(leasePrng_.uniform(1, 9));
  // The lifetime bound's slack: the leader proposes an expiry at its next tick, again after the
  // retry interval if it was not queued, and the expiry's commit takes up to an election timeout.
  p.leaseSlack = 2 * p.tickMax + p.leaseClock.retryNs + e;
}

election::Options Simulator::coreOptions(uint32_t node) const {
  election::Options o;
  o.self = node;
  o.memberCount = options_.nodes;
  o.heartbeatIntervalNs = params_.heartbeat;
  o.idleHeartbeatIntervalNs = election::derivedIdleHeartbeatInterval(
      params_.heartbeat, params_.electionTimeout, params_.lease);
  o.electionTimeoutNs = params_.electionTimeout;
  o.leaderLeaseNs = params_.lease;
  o.maxClockDrift = params_.drift;
  o.pipelineWindow = params_.window;
  o.maxBatchCommands = params_.batchCommands;
  o.readTimeoutNs = params_.readTimeout;
  o.retainedLogSlots = params_.retainedSlots;
  o.maxFetchSlots = 256;
  o.acceptAheadSlots = 4096;
  o.ruleBreaker = coreBreaker(options_.breaker);
  o.recovering = nodes_[node].store.startState().recovering;
  o.startTimeNs = localNow(nodes_[node]);
  return o;
}

void Simulator::startNode(uint32_t index, bool fresh) {
  Node& node = nodes_[index];
  election::PersistedState state;
  if (!fresh) node.store.restart();
  state.promised = node.store.promised();
  state.appliedSlot = node.store.appliedSlot();
  node.store.forEachLogEntry(1, [&](LogEntry&& e) { state.log.push_back(std::move(e)); });
  if (state.promised < node.maxDurablePromised) {
    fail("promise-monotonic", "member " + std::to_string(index) + " restarted with promise " +
                                  ballotText(state.promised) + " below the durable " +
                                  ballotText(node.maxDurablePromised));
  }
  node.state = std::make_unique<election::StateMachine>();
  node.store.forEachKey([&](std::string_view key, storage::KeyRecord&& record) {
    node.state->restoreKey(std::string(key), std::move(record));
  });
  node.store.forEachSession([&](MemberIndex member, std::string_view encoded) {
    node.state->restoreSession(member, encoded);
  });
  node.store.forEachLease(
      [&](uint64_t, std::string_view encoded) { node.state->restoreLease(encoded); });
  node.store.forEachLock(
      [&](std::string_view, std::string_view encoded) { node.state->restoreLock(encoded); });
  node.state->restoreApplied(node.store.appliedSlot(), node.store.revision());
  node.applied = state.appliedSlot;
  node.core = std::make_unique<Replica>(coreOptions(index), state, *node.prng);
  node.up = true;
  node.persisting = false;
  node.readWaiters.clear();
  if (options_.leases) startLeases(index);
  schedule(now_ + static_cast<Nanos>(prng_.uniform(0, params_.tickMax)), EventKind::TICK, index,
           node.life);
  drive(index);
}

// ---------------------------------------------------------------------------------------------
// Events

void Simulator::schedule(Nanos at, EventKind kind, uint32_t node, uint64_t tag, uint32_t from,
                         uint32_t payload) {
  events_.push(Event{at, order_++, kind, node, from, tag, payload});
}

RunResult Simulator::run() {
  const auto wallStart = std::chrono::steady_clock::now();
  RunResult result;
  nodes_.resize(options_.nodes);
  cut_.assign(options_.nodes, 0);
  for (uint32_t i = 0; i < options_.nodes; ++i) {
    Node& node = nodes_[i];
    node.prng = std::make_unique<Prng>(prng_.next());
    node.rate = randomRate();
    node.baseLocal = static_cast<Nanos>(prng_.uniform(0, 1000000)) * MS;
  }
  clients_.resize(params_.clients);
  try {
    for (uint32_t i = 0; i < options_.nodes; ++i)
      startNode(i, true);
    for (uint32_t c = 0; c < params_.clients; ++c) {
      schedule(static_cast<Nanos>(prng_.uniform(0, 50 * MS)), EventKind::CLIENT, c, 0);
    }
    schedule(0, EventKind::CHAOS_START);
    while (step_ < options_.steps && !events_.empty()) {
      Event event = events_.top();
      events_.pop();
      now_ = event.at;
      leaseChecker_->advance(now_, coveredUntil_);
      ++step_;
      handle(event);
      checkAfterStep();
    }
    checkHistory();
  } catch (const Violation& violation) {
    result.violations = 1;
    result.invariant = violation.invariant;
    printTrace(violation.invariant, violation.what());
  }
  result.steps = step_;
  result.wallSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wallStart).count();
  if (!options_.quiet) printSummary(result.wallSeconds);
  return result;
}

void Simulator::handle(const Event& event) {
  const bool forNode = event.kind == EventKind::DELIVER || event.kind == EventKind::TICK ||
                       event.kind == EventKind::PERSIST_DONE ||
                       event.kind == EventKind::LEASE_APP || event.kind == EventKind::FORWARD;
  if (forNode && nodes_[event.node].pausedUntil > now_) {
    // The process is stopped: the event waits, in order, until it runs again.
    Event later = event;
    later.at = nodes_[event.node].pausedUntil;
    later.order = order_++;
    events_.push(later);
    return;
  }
  switch (event.kind) {
    case EventKind::DELIVER:
      deliver(event);
      break;
    case EventKind::TICK: {
      Node& node = nodes_[event.node];
      if (!node.up || node.life != event.tag) return;
      record(event.kind, event.node, 0, "");
      node.core->tick(localNow(node));
      drive(event.node);
      if (options_.leases) leaseTick(event.node);
      schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.tickMin, params_.tickMax)),
               EventKind::TICK, event.node, node.life);
      break;
    }
    case EventKind::PERSIST_DONE: {
      Node& node = nodes_[event.node];
      if (!node.up || node.life != event.tag) return;
      record(event.kind, event.node, 0, "");
      persisted(event.node);
      break;
    }
    case EventKind::CLIENT:
      clientEvent(event.node, event.tag);
      break;
    case EventKind::FAULT:
      if (calm_ || event.tag != phase_) return;
      fault();
      schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.faultGapMin, params_.faultGapMax)),
               EventKind::FAULT, 0, phase_);
      break;
    case EventKind::RESTART:
      if (nodes_[event.node].up || nodes_[event.node].life != event.tag) return;
      restart(event.node);
      break;
    case EventKind::PARTITION_END:
      std::erase_if(partitions_, [&](const Partition& p) { return p.id == event.tag; });
      record(event.kind, 0, 0, "partition " + std::to_string(event.tag));
      recomputeCuts();
      break;
    case EventKind::FLAP:
      for (Partition& p : partitions_) {
        if (p.id != event.tag) continue;
        p.active = !p.active;
        record(event.kind, 0, 0, "partition " + std::to_string(p.id) + (p.active ? " on" : " off"));
        recomputeCuts();
        schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.heartbeat, 4 * params_.heartbeat)),
                 EventKind::FLAP, 0, p.id);
      }
      break;
    case EventKind::CALM_START:
      if (event.tag == phase_) calmStart();
      break;
    case EventKind::CALM_CHECK:
      if (event.tag == phase_ && calm_) calmCheck();
      break;
    case EventKind::SNAPSHOT_DONE:
      snapshotArrived(event);
      break;
    case EventKind::LEASE_APP:
      leaseAppEvent(event);
      break;
    case EventKind::FORWARD:
      forwarded(event);
      break;
    case EventKind::CHAOS_START:
      if (event.tag != phase_) return;
      calm_ = false;
      ++phase_;
      record(event.kind, 0, 0, "");
      schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.faultGapMin, params_.faultGapMax)),
               EventKind::FAULT, 0, phase_);
      schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.chaosMin, params_.chaosMax)),
               EventKind::CALM_START, 0, phase_);
      break;
  }
}

void Simulator::deliver(const Event& event) {
  PeerMessage message = std::move(pool_[event.payload]);
  freePool_.push_back(event.payload);
  Node& node = nodes_[event.node];
  const bool cut = cut_[event.from] & (1u << event.node);
  record(event.kind, event.node, event.from,
         std::string(election::messageName(message)) + (!node.up ? " (down)"
                                                        : cut    ? " (cut)"
                                                                 : ""));
  if (!node.up || cut) {
    ++stats_.dropped;
    return;
  }
  node.core->step(event.from, message, localNow(node));
  drive(event.node);
}

void Simulator::send(uint32_t from, const election::OutgoingMessage& message) {
  ++stats_.messages;
  if ((cut_[from] & (1u << message.to)) || prng_.chance(loss_)) {
    ++stats_.dropped;
    return;
  }
  const int copies = prng_.chance(duplicate_) ? 2 : 1;
  if (copies == 2) ++stats_.duplicated;
  for (int i = 0; i < copies; ++i) {
    Nanos latency = static_cast<Nanos>(prng_.uniform(params_.netMin, params_.netMax));
    if (prng_.chance(spike_)) latency *= static_cast<Nanos>(prng_.uniform(5, 50));
    uint32_t slot;
    if (freePool_.empty()) {
      slot = static_cast<uint32_t>(pool_.size());
      pool_.push_back(message.message);
    } else {
      slot = freePool_.back();
      freePool_.pop_back();
      pool_[slot] = message.message;
    }
    schedule(now_ + latency, EventKind::DELIVER, message.to, 0, from, slot);
  }
}

// ---------------------------------------------------------------------------------------------
// The shell: what the daemon does with a Ready, with a disk that takes time.

void Simulator::drive(uint32_t index) {
  Node& node = nodes_[index];
  while (node.up && !node.persisting && node.core->hasReady()) {
    Ready ready = node.core->ready();
    for (const auto& m : ready.sendBeforePersist)
      send(index, m);
    for (const LogEntry& entry : ready.apply)
      applyEntry(index, entry);
    for (const auto& outcome : ready.reads)
      serveRead(index, outcome);
    for (const std::string& command : ready.droppedCommands) {
      auto id = election::commandIdOf(command);
      if (id && id->member == NODE_MEMBER_BASE + index && id->incarnation == node.incarnation()) {
        // Never decided: the next lease tick submits it again.
        auto pending = node.pendingLease.find(id->sequence);
        if (pending != node.pendingLease.end()) pending->second.resubmitAt = 0;
        continue;
      }
      if (!id || id->member >= clients_.size()) continue;
      Client& client = clients_[id->member];
      if (client.state == Client::WAITING && client.write && client.node == index &&
          client.sequence == id->sequence) {
        retry(id->member, std::nullopt, 0);
      }
    }
    if (ready.status && ready.status->role == Role::LEADER) ++stats_.leaderships;
    if (ready.status && options_.verbose) {
      out_ << "t=" << now_ / 1000 << "us member " << index << " "
           << election::roleName(ready.status->role) << " " << ballotText(ready.status->ballot)
           << "\n";
    }
    if (ready.snapshotNeeded) {
      ++stats_.snapshotNeeded;
      // The transfer takes a few network round trips; the snapshot is cut when it arrives.
      if (!node.snapshotPending) {
        node.snapshotPending = true;
        schedule(now_ + 3 * static_cast<Nanos>(prng_.uniform(params_.netMin, params_.netMax)),
                 EventKind::SNAPSHOT_DONE, index, node.life, ready.snapshotNeeded->peer);
      }
    }
    if (ready.recovered) {
      ++stats_.recoveries;
      node.store.commit([] {
        storage::WriteBatch done;
        done.recovered = true;
        return done;
      }());
      record(EventKind::FAULT, index, 0,
             std::string("recovered: ") + election::recoveryOutcomeName(*ready.recovered));
    }
    if (ready.needsPersist() || !ready.apply.empty()) {
      node.persisting = true;
      node.inFlight = std::move(ready);
      schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.diskMin, params_.diskMax)),
               EventKind::PERSIST_DONE, index, node.life);
      return;
    }
    for (const auto& m : ready.sendAfterPersist)
      send(index, m);
    node.core->advance(ready);
  }
}

void Simulator::persisted(uint32_t index) {
  Node& node = nodes_[index];
  Ready& ready = node.inFlight;
  storage::WriteBatch batch;
  batch.promised = ready.promised;
  batch.accepted = ready.accepted;
  batch.dropLogThrough = ready.discardLogThrough;
  // No other Ready was handled while this one was on disk: the changes are exactly its apply.
  if (node.state->hasChanges()) {
    election::StateChanges changes = node.state->takeChanges();
    batch.keys = std::move(changes.keys);
    batch.sessions = std::move(changes.sessions);
    batch.leases = std::move(changes.leases);
    batch.locks = std::move(changes.locks);
    batch.applied = std::make_pair(changes.appliedSlot, changes.revision);
  }
  if (batch.promised) {
    if (*batch.promised < node.store.promised()) {
      fail("promise-monotonic", "member " + std::to_string(index) + " persists promise " +
                                    ballotText(*batch.promised) + " below its durable " +
                                    ballotText(node.store.promised()));
    }
    if (*batch.promised != node.store.promised()) {
      node.previousDurablePromised = node.store.promised();
    }
  }
  node.store.commit(batch);
  ++stats_.commits;
  if (batch.promised) node.maxDurablePromised = std::max(node.maxDurablePromised, *batch.promised);
  for (const auto& m : ready.sendAfterPersist)
    send(index, m);
  node.core->advance(ready);
  node.persisting = false;
  node.inFlight = Ready{};
  drive(index);
}

void Simulator::applyEntry(uint32_t index, const LogEntry& entry) {
  Node& node = nodes_[index];
  if (entry.slot != node.applied + 1) {
    fail("applied-prefix", "member " + std::to_string(index) + " applies slot " +
                               std::to_string(entry.slot) + " after " +
                               std::to_string(node.applied));
  }
  node.applied = entry.slot;
  const uint64_t hash = hashValue(entry.value);
  if (decidedHash_.size() <= entry.slot) decidedHash_.resize(entry.slot * 2 + 16, 0);
  uint64_t& decided = decidedHash_[entry.slot];
  const bool first = decided == 0;
  if (first) {
    decided = hash;
    ++stats_.slots;
  } else if (decided != hash) {
    fail("agreement", "member " + std::to_string(index) + " decided a different value for slot " +
                          std::to_string(entry.slot) + " (" +
                          std::to_string(entry.value.commands.size()) + " commands)");
  }
  appliedCommands_.clear();
  node.state->apply(entry.slot, entry.value, appliedCommands_);
  if (appliedCommands_.size() != entry.value.commands.size()) {
    fail("validity", "slot " + std::to_string(entry.slot) + " holds an unreadable command");
  }
  // State agreement, leases and locks included: every member's state right after a slot is the
  // same, however it got to the slot before (applying, a snapshot, a restart from its store).
  if (decidedDigest_.size() <= entry.slot) decidedDigest_.resize(entry.slot * 2 + 16, 0);
  const uint64_t digest = node.state->stateDigest() | 1;
  if (first) {
    decidedDigest_[entry.slot] = digest;
  } else if (decidedDigest_[entry.slot] != digest) {
    fail("state-agreement", "member " + std::to_string(index) + " holds a different state (keys, " +
                                "leases, locks or revision) right after slot " +
                                std::to_string(entry.slot) + " than the first member to apply it");
  }
  if (node.state->leases().digest() != node.state->leases().recomputeDigest()) {
    fail("state-agreement", "member " + std::to_string(index) +
                                "'s lease digest differs from the one recomputed after slot " +
                                std::to_string(entry.slot));
  }
  if (options_.leases) {
    node.expirer->onApplied(node.state->leases(), node.state->takeTouchedLeases(), localNow(node));
  }
  for (size_t i = 0; i < appliedCommands_.size(); ++i) {
    const election::AppliedCommand& applied = appliedCommands_[i];
    const uint32_t c = applied.id.member;
    if (c >= NODE_MEMBER_BASE) {
      leaseCommandApplied(index, applied, first);
      continue;
    }
    const uint64_t value = valueId(c, applied.id.sequence);
    auto issued = issued_.find(value);
    if (c >= clients_.size() || applied.id.incarnation != 1 || issued == issued_.end() ||
        issued->second != entry.value.commands[i]) {
      fail("validity", "slot " + std::to_string(entry.slot) + " holds a command no client issued");
    }
    if (applied.outcome.code != election::StatusCode::OK) {
      fail("validity",
           "a put in slot " + std::to_string(entry.slot) + " failed: " + applied.outcome.message);
    }
    if (!applied.duplicate) {
      const uint64_t position = entry.slot << 16 | i;
      auto [it, inserted] = effectAt_.emplace(value, position);
      if (!inserted && it->second != position) {
        fail("exactly-once", "command of client " + std::to_string(c) + " seq " +
                                 std::to_string(applied.id.sequence) + " took effect in slot " +
                                 std::to_string(it->second >> 16) + " and again in slot " +
                                 std::to_string(entry.slot) + " at member " +
                                 std::to_string(index));
      }
    }
    Client& client = clients_[c];
    if (client.state == Client::WAITING && client.write && client.node == index &&
        client.sequence == applied.id.sequence) {
      completeOp(c, value);
    }
  }
}

void Simulator::serveRead(uint32_t index, const election::ReadOutcome& outcome) {
  Node& node = nodes_[index];
  auto it = node.readWaiters.find(outcome.id);
  if (it == node.readWaiters.end()) return;
  const uint32_t c = it->second;
  node.readWaiters.erase(it);
  Client& client = clients_[c];
  if (client.state != Client::WAITING || client.write || client.readId != outcome.id) return;
  if (!outcome.ok) {
    ++stats_.readsFailed;
    retry(c, outcome.leaderHint, static_cast<Nanos>(prng_.uniform(MS / 10, params_.heartbeat)));
    return;
  }
  if (outcome.readIndex > node.applied) {
    fail("read-linearizable", "member " + std::to_string(index) + " served a read at index " +
                                  std::to_string(outcome.readIndex) + " having applied only " +
                                  std::to_string(node.applied));
  }
  ++stats_.readsOk;
  const election::KeyRecord* record = node.state->get(keyName(client.key));
  completeOp(c, record ? std::stoull(record->value) : 0);
}

// ---------------------------------------------------------------------------------------------
// Faults

void Simulator::crash(uint32_t index) {
  Node& node = nodes_[index];
  record(EventKind::FAULT, index, 0, "crash");
  ++stats_.crashes;
  node.up = false;
  node.pausedUntil = 0;
  ++node.life;
  node.core.reset();
  if (options_.leases) stopLeases(index);
  node.persisting = false;  // the write on its way to disk is lost
  node.inFlight = Ready{};
  if (dropsSyncedPromise_ && node.store.promised() != node.previousDurablePromised) {
    storage::WriteBatch lost;
    lost.promised = node.previousDurablePromised;
    node.store.commit(lost);
  }
  for (uint32_t c = 0; c < clients_.size(); ++c) {
    if (clients_[c].state == Client::WAITING && clients_[c].node == index) {
      retry(c, std::nullopt, static_cast<Nanos>(prng_.uniform(MS, 2 * params_.heartbeat)));
    }
  }
  node.readWaiters.clear();
}

// The data dir is lost with the process: the member restarts empty and must recover before it
// votes. One member at a time: members that lost their state together could forget a value.
void Simulator::wipe(uint32_t index) {
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].store.recovering()) return;
  }
  if (nodes_[index].up) crash(index);
  record(EventKind::FAULT, index, 0, "data dir wiped");
  ++stats_.wipes;
  nodes_[index].store = storage::MemoryStore();
  nodes_[index].maxDurablePromised = Ballot{};
  nodes_[index].previousDurablePromised = Ballot{};
}

// The case recovery exists for: the follower most likely to hold the only other vote for the
// leader's latest slots loses its data dir, and the leader goes down too, so that the member that
// may have missed those slots and the wiped one could form a majority without anyone who knows.
void Simulator::wipeAndDepose() {
  std::optional<uint32_t> leader;
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].up && nodes_[i].core->role() == Role::LEADER) leader = i;
  }
  if (!leader) return;
  std::optional<uint32_t> ahead;
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    if (i == *leader || !nodes_[i].up) continue;
    if (!ahead || nodes_[i].core->decidedSlot() > nodes_[*ahead].core->decidedSlot()) ahead = i;
  }
  if (!ahead) return;
  // Only while another member lags behind it: that one may lack what only the two others hold.
  bool lagging = false;
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    lagging = lagging || (i != *leader && i != *ahead && nodes_[i].up &&
                          nodes_[i].core->decidedSlot() < nodes_[*ahead].core->decidedSlot());
  }
  if (!lagging) return;
  wipe(*ahead);
  if (!nodes_[*ahead].store.recovering()) return;  // another member is still recovering
  const uint64_t e = static_cast<uint64_t>(params_.electionTimeout);
  schedule(now_ + static_cast<Nanos>(catchUpPrng_.uniform(0, e)), EventKind::RESTART, *ahead,
           nodes_[*ahead].life);
  crash(*leader);
  schedule(now_ + static_cast<Nanos>(catchUpPrng_.uniform(2 * e, 6 * e)), EventKind::RESTART,
           *leader, nodes_[*leader].life);
}

void Simulator::snapshotArrived(const Event& event) {
  Node& node = nodes_[event.node];
  if (!node.up || node.life != event.tag) return;
  if (node.persisting || node.pausedUntil > now_) {
    // Installed between Readys only; try again shortly.
    schedule(std::max(now_, node.pausedUntil) + MS / 10, EventKind::SNAPSHOT_DONE, event.node,
             event.tag, event.from);
    return;
  }
  node.snapshotPending = false;
  const Node& source = nodes_[event.from];
  if (!source.up || source.state->appliedSlot() <= node.applied) return;
  election::SnapshotAssembler assembler;
  for (const std::string& chunk : election::encodeSnapshot(*source.state, 4096)) {
    if (auto problem = assembler.add(chunk, storage::MAX_KEY_BYTES)) {
      fail("snapshot", "a snapshot of member " + std::to_string(event.from) +
                           " does not assemble: " + *problem);
    }
  }
  const Slot slot = assembler.slot();
  auto state = std::make_unique<election::StateMachine>(assembler.take());
  storage::WriteBatch batch;
  batch.replaceState = true;
  state->forEachKey([&](std::string_view key, const election::KeyRecord& record) {
    batch.putKey(std::string(key), record);
  });
  state->forEachSession([&](MemberIndex member, std::string_view encoded) {
    batch.sessions[member] = std::string(encoded);
  });
  state->leases().forEachLease(
      [&](const election::Lease& lease) { batch.leases[lease.id] = election::encodeLease(lease); });
  state->leases().forEachLock([&](std::string_view name, const election::Lock& lock) {
    batch.locks[std::string(name)] = election::encodeLock(name, lock);
  });
  batch.applied = std::make_pair(slot, state->revision());
  batch.dropLogThrough = slot;
  node.store.commit(batch);
  record(EventKind::SNAPSHOT_DONE, event.node, event.from, "slot " + std::to_string(slot));
  ++stats_.snapshotsInstalled;
  node.state = std::move(state);
  node.applied = slot;
  node.core->installSnapshot(slot, localNow(node));
  if (options_.leases) {
    node.expirer->onApplied(node.state->leases(), node.state->takeTouchedLeases(), localNow(node));
  }
  drive(event.node);
}

void Simulator::restart(uint32_t index) {
  record(EventKind::RESTART, index, 0, "");
  startNode(index, false);
}

void Simulator::fault() {
  const uint32_t n = options_.nodes;
  const double pick = prng_.unit();
  if (handoffPrng_.chance(0.15)) {
    handoff();
    return;
  }
  if (catchUpPrng_.chance(0.04)) {
    wipeAndDepose();
    return;
  }
  if (pick < 0.04) {
    // The worst case the lease arithmetic must absorb: the leader's clock at the slow end of the
    // drift bound, everyone else's at the fast end, and then the leader stops.
    for (uint32_t i = 0; i < n; ++i) {
      if (!nodes_[i].up || nodes_[i].core->role() != Role::LEADER) continue;
      for (uint32_t j = 0; j < n; ++j)
        setRate(nodes_[j], j == i ? 1 - params_.drift : 1 + params_.drift);
      const uint64_t lease = static_cast<uint64_t>(params_.lease);
      nodes_[i].pausedUntil = now_ + static_cast<Nanos>(prng_.uniform(lease, 3 * lease));
      ++stats_.pauses;
      record(EventKind::FAULT, i, 0, "slow leader clock, fast followers, leader paused");
      return;
    }
  } else if (pick < 0.12) {
    // Stop a process for a while, often the leader: it wakes up believing what it believed.
    uint32_t index = static_cast<uint32_t>(prng_.uniform(0, n));
    const bool pickLeader = prng_.chance(0.7);
    for (uint32_t i = 0; i < n && pickLeader; ++i) {
      if (nodes_[i].up && nodes_[i].core->role() == Role::LEADER) index = i;
    }
    if (!nodes_[index].up || nodes_[index].pausedUntil > now_) return;
    const uint64_t e = static_cast<uint64_t>(params_.electionTimeout);
    nodes_[index].pausedUntil =
        now_ +
        static_cast<Nanos>(prng_.chance(0.5) ? prng_.uniform(e / 4, e) : prng_.uniform(e, 4 * e));
    ++stats_.pauses;
    record(EventKind::FAULT, index, 0,
           "pause for " + std::to_string((nodes_[index].pausedUntil - now_) / MS) + "ms");
  } else if (pick < 0.25) {
    const uint32_t index = static_cast<uint32_t>(prng_.uniform(0, n));
    if (!nodes_[index].up) return;
    crash(index);
    if (catchUpPrng_.chance(0.15)) wipe(index);
    const Nanos downtime = prng_.chance(0.2)
                               ? static_cast<Nanos>(prng_.uniform(0, 5 * MS))
                               : static_cast<Nanos>(prng_.uniform(
                                     0, 3 * static_cast<uint64_t>(params_.electionTimeout)));
    schedule(now_ + downtime, EventKind::RESTART, index, nodes_[index].life);
  } else if (pick < 0.5) {
    startPartition();
  } else if (pick < 0.65) {
    static constexpr double LOSS[] = {0, 0, 0.01, 0.05, 0.2, 0.5};
    static constexpr double DUP[] = {0, 0, 0.02, 0.1};
    static constexpr double SPIKE[] = {0, 0, 0.05, 0.2};
    loss_ = LOSS[prng_.uniform(0, 6)];
    duplicate_ = DUP[prng_.uniform(0, 4)];
    spike_ = SPIKE[prng_.uniform(0, 4)];
    std::ostringstream what;
    what << "network loss=" << loss_ << " dup=" << duplicate_ << " spikes=" << spike_;
    record(EventKind::FAULT, 0, 0, what.str());
  } else if (pick < 0.85) {
    const uint32_t index = static_cast<uint32_t>(prng_.uniform(0, n));
    setRate(nodes_[index], randomRate());
    std::ostringstream what;
    what << "clock rate " << nodes_[index].rate;
    record(EventKind::FAULT, index, 0, what.str());
  } else if (pick < 0.92) {
    partitions_.clear();
    recomputeCuts();
    record(EventKind::FAULT, 0, 0, "heal all partitions");
  } else {
    // Let some crashed member come back early.
    for (uint32_t i = 0; i < n; ++i) {
      if (!nodes_[i].up) {
        restart(i);
        break;
      }
    }
  }
}

// The leader hands leadership to a named member (sometimes itself or a member it has not heard
// from, which it must refuse) or to the peer it picks; whatever it does, every invariant holds.
void Simulator::handoff() {
  const uint32_t n = options_.nodes;
  for (uint32_t i = 0; i < n; ++i) {
    Node& node = nodes_[i];
    if (!node.up || node.pausedUntil > now_ || node.core->role() != Role::LEADER) continue;
    std::optional<election::MemberIndex> target;
    if (handoffPrng_.chance(0.5)) {
      target = static_cast<election::MemberIndex>(handoffPrng_.uniform(0, n));
    }
    const bool moved = node.core->transferLeadership(target, localNow(node));
    ++(moved ? stats_.handoffs : stats_.handoffsRefused);
    record(EventKind::FAULT, i, 0,
           std::string(moved ? "hand-off" : "hand-off refused") +
               (target ? " to " + std::to_string(*target) : std::string(" to any")));
    drive(i);
    return;
  }
}

void Simulator::startPartition() {
  const uint32_t n = options_.nodes;
  if (n == 1) return;
  Partition p;
  p.id = nextPartitionId_++;
  p.cut.assign(n, 0);
  const uint32_t all = (1u << n) - 1;
  const uint32_t x = static_cast<uint32_t>(prng_.uniform(0, n));
  std::string what;
  switch (prng_.uniform(0, 5)) {
    case 0:  // one member cut off both ways
      for (uint32_t i = 0; i < n; ++i)
        p.cut[i] = i == x ? all : (1u << x);
      what = "isolate " + std::to_string(x);
      break;
    case 1:  // one member can send but not receive
      for (uint32_t i = 0; i < n; ++i)
        p.cut[i] = i == x ? 0 : (1u << x);
      what = "deafen " + std::to_string(x);
      break;
    case 2:  // one member can receive but not send
      p.cut[x] = all;
      what = "mute " + std::to_string(x);
      break;
    case 3: {  // one directed link
      uint32_t y = static_cast<uint32_t>(prng_.uniform(0, n));
      if (y == x) y = (y + 1) % n;
      p.cut[x] = 1u << y;
      what = "link " + std::to_string(x) + "->" + std::to_string(y);
      break;
    }
    default: {  // two sides: a minority and a majority
      uint32_t side = 0;
      const uint32_t size = static_cast<uint32_t>(prng_.uniform(1, (n + 1) / 2 + 1));
      while (static_cast<uint32_t>(std::popcount(side)) < std::min(size, n - 1)) {
        side |= 1u << prng_.uniform(0, n);
      }
      for (uint32_t i = 0; i < n; ++i)
        p.cut[i] = (side & (1u << i)) ? (all & ~side) : side;
      what = "split side " + std::to_string(side);
      break;
    }
  }
  p.flapping = prng_.chance(0.25);
  ++stats_.partitions;
  record(EventKind::FAULT, 0, 0,
         "partition " + std::to_string(p.id) + ": " + what + (p.flapping ? " (flapping)" : ""));
  if (p.flapping) {
    schedule(now_ + static_cast<Nanos>(prng_.uniform(params_.heartbeat, 4 * params_.heartbeat)),
             EventKind::FLAP, 0, p.id);
  }
  schedule(now_ + static_cast<Nanos>(prng_.uniform(100 * MS, 3000 * MS)), EventKind::PARTITION_END,
           0, p.id);
  partitions_.push_back(std::move(p));
  recomputeCuts();
}

void Simulator::recomputeCuts() {
  std::fill(cut_.begin(), cut_.end(), 0);
  for (const Partition& p : partitions_) {
    if (!p.active) continue;
    for (uint32_t i = 0; i < cut_.size(); ++i)
      cut_[i] |= p.cut[i];
  }
}

// Faults stop; within the liveness bound a leader must exist and every operation submitted
// before the calm must have completed.
void Simulator::calmStart() {
  calm_ = true;
  calmSince_ = now_;
  ++stats_.calmPeriods;
  record(EventKind::CALM_START, 0, 0, "");
  partitions_.clear();
  recomputeCuts();
  loss_ = duplicate_ = spike_ = 0;
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    nodes_[i].pausedUntil = 0;
    if (!nodes_[i].up) restart(i);
  }
  opsBeforeCalm_ = history_.size();
  schedule(now_ + 50 * MS, EventKind::CALM_CHECK, 0, phase_);
}

void Simulator::calmCheck() {
  std::optional<uint32_t> leader;
  uint32_t leaders = 0;
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].core->role() == Role::LEADER) {
      leader = i;
      ++leaders;
    }
  }
  bool settled = leaders == 1;
  for (uint32_t i = 0; settled && i < nodes_.size(); ++i) {
    settled = nodes_[i].core->knownLeader() == leader;
  }
  size_t pendingOp = history_.size();
  for (const Client& c : clients_) {
    if (c.state != Client::IDLE && c.op < opsBeforeCalm_) pendingOp = std::min(pendingOp, c.op);
  }
  settled = settled && pendingOp == history_.size();
  if (settled) checkStatesAgree();
  if (settled) {
    stats_.worstCalmNs = std::max(stats_.worstCalmNs, now_ - calmSince_);
    schedule(now_ + static_cast<Nanos>(prng_.uniform(0, 500 * MS)), EventKind::CHAOS_START, 0,
             phase_);
    return;
  }
  if (now_ - calmSince_ > params_.livenessBound) {
    std::string detail = "no progress " + std::to_string(params_.livenessBound / MS) +
                         " ms after faults stopped: leaders=" + std::to_string(leaders);
    for (uint32_t i = 0; i < nodes_.size(); ++i) {
      const Replica& core = *nodes_[i].core;
      detail += "; member " + std::to_string(i) + " " + election::roleName(core.role()) + " " +
                ballotText(core.ballot()) + " decided=" + std::to_string(core.decidedSlot());
    }
    if (pendingOp < history_.size()) {
      detail += "; operation " + std::to_string(pendingOp) + " of client " +
                std::to_string(history_[pendingOp].client) + " still pending";
    }
    fail("liveness", detail);
  }
  schedule(now_ + 50 * MS, EventKind::CALM_CHECK, 0, phase_);
}

// ---------------------------------------------------------------------------------------------
// Clients: one operation at a time each, retried (same command id) until it completes.

void Simulator::clientEvent(uint32_t c, uint64_t tag) {
  Client& client = clients_[c];
  if (tag != client.attempt) return;
  switch (client.state) {
    case Client::IDLE:
      startOp(c);
      break;
    case Client::BACKOFF:
      attempt(c);
      break;
    case Client::WAITING:  // the attempt timed out; its outcome is unknown
      record(EventKind::CLIENT, client.node, 0, "client " + std::to_string(c) + " timeout");
      retry(c, std::nullopt, 0);
      break;
  }
}

void Simulator::startOp(uint32_t c) {
  Client& client = clients_[c];
  OpRecord op;
  op.client = c;
  op.key = static_cast<uint8_t>(prng_.uniform(0, params_.keys));
  op.write = prng_.chance(0.5);
  op.invoke = logicalNow(false);
  client.write = op.write;
  client.key = op.key;
  if (op.write) {
    ++client.sequence;
    op.value = valueId(c, client.sequence);
    client.encoded = encodePut(c, client.sequence, op.key, op.value);
    issued_[op.value] = client.encoded;
    writeOpOf_[op.value] = history_.size();
  }
  client.op = history_.size();
  history_.push_back(op);
  client.node = static_cast<uint32_t>(prng_.uniform(0, options_.nodes));
  attempt(c);
}

void Simulator::attempt(uint32_t c) {
  Client& client = clients_[c];
  ++client.attempt;
  Node& node = nodes_[client.node];
  record(EventKind::CLIENT, client.node, 0,
         "client " + std::to_string(c) + (client.write ? " write" : " read"));
  if (!node.up) {
    retry(c, std::nullopt, static_cast<Nanos>(prng_.uniform(MS, 2 * params_.heartbeat)));
    return;
  }
  if (node.pausedUntil > now_) {  // the request sits in the stopped process's socket
    client.state = Client::BACKOFF;
    schedule(node.pausedUntil, EventKind::CLIENT, c, client.attempt);
    return;
  }
  const Nanos local = localNow(node);
  if (client.write) {
    auto result = node.core->propose(client.encoded, local);
    if (result.status != election::ProposeResult::QUEUED) {
      retry(c, result.leaderHint,
            static_cast<Nanos>(prng_.uniform(MS / 10, result.leaderHint ? MS : params_.heartbeat)));
      return;
    }
  } else {
    const bool lease = node.core->role() == Role::LEADER && local < node.core->leaseHeldUntil();
    const election::ReadId id = nextReadId_++;
    auto result = node.core->read(id, local);
    if (result.status != election::ReadStart::PENDING) {
      retry(c, result.leaderHint,
            static_cast<Nanos>(prng_.uniform(MS / 10, result.leaderHint ? MS : params_.heartbeat)));
      return;
    }
    ++(node.core->role() != Role::LEADER ? stats_.followerReads
       : lease                           ? stats_.leaseReads
                                         : stats_.indexReads);
    client.readId = id;
    node.readWaiters[id] = c;
  }
  client.state = Client::WAITING;
  schedule(now_ + params_.attemptTimeout, EventKind::CLIENT, c, client.attempt);
  drive(client.node);
}

void Simulator::retry(uint32_t c, std::optional<uint32_t> node, Nanos delay) {
  Client& client = clients_[c];
  client.state = Client::BACKOFF;
  client.node = node ? *node : static_cast<uint32_t>(prng_.uniform(0, options_.nodes));
  ++client.attempt;
  schedule(now_ + delay, EventKind::CLIENT, c, client.attempt);
}

void Simulator::completeOp(uint32_t c, uint64_t value) {
  Client& client = clients_[c];
  OpRecord& op = history_[client.op];
  op.response = logicalNow(true);
  if (op.write) {
    ++stats_.writesAcked;
    auto& acked = acked_[op.key];
    const uint64_t position = effectAt_.at(op.value);
    const uint64_t best = acked.empty() ? position : std::max(acked.back().second, position);
    acked.emplace_back(op.response, best);
  } else {
    op.value = value;
    // Cheap per-step check: the read saw every write acknowledged before it began.
    const uint64_t seen = value == 0 ? 0 : effectAt_.at(value);
    const auto& acked = acked_[op.key];
    auto it = std::lower_bound(acked.begin(), acked.end(), std::make_pair(op.invoke, uint64_t{0}));
    if (it != acked.begin() && std::prev(it)->second > seen) {
      const uint64_t missed = std::prev(it)->second;
      fail("read-linearizable",
           "client " + std::to_string(c) + " read key " + std::to_string(op.key) + " at member " +
               std::to_string(client.node) + " and saw the write of slot " +
               std::to_string(seen >> 16) + ", but the write of slot " +
               std::to_string(missed >> 16) + " was acknowledged before the read began");
    }
    if (value != 0 && history_[writeOpOf_.at(value)].invoke > op.response) {
      fail("read-linearizable", "a read returned a write that began after it");
    }
  }
  client.state = Client::IDLE;
  ++client.attempt;
  schedule(now_ + static_cast<Nanos>(prng_.uniform(0, params_.thinkMax)), EventKind::CLIENT, c,
           client.attempt);
}

// ---------------------------------------------------------------------------------------------
// Leases: each member runs a LeaseRenewer for its apps' leases and a LeaseExpirer, as the daemon
// does; its grants, renewal batches and revokes go to the leader (forwarded when it is not the
// leader), its expiries and checkpoints are proposed only while it leads with a valid lease.

void Simulator::startLeases(uint32_t index) {
  Node& node = nodes_[index];
  node.renewer = std::make_unique<election::LeaseRenewer>(params_.leaseClock);
  node.expirer = std::make_unique<election::LeaseExpirer>(params_.leaseClock, leaseBreaker_);
  node.state->takeTouchedLeases();  // the restore: the expirer counts from its first takeover
  node.pendingLease.clear();
  node.nextSequence = 1;
  node.nextLeaseCounter = node.state->leaseCounter(index) + 1;
  node.apps.assign(params_.leaseApps, LeaseApp{});
  for (uint32_t a = 0; a < node.apps.size(); ++a) {
    scheduleApp(index, a, static_cast<Nanos>(leasePrng_.uniform(0, params_.leaseTtlMinMs)) * MS);
  }
}

// The process is gone, and its apps' connections with it: nobody keeps its leases alive.
void Simulator::stopLeases(uint32_t index) {
  Node& node = nodes_[index];
  node.renewer.reset();
  node.expirer.reset();
  node.apps.clear();
  node.pendingLease.clear();
  node.state->leases().forEachLease([&](const election::Lease& lease) {
    if (election::leaseIdMember(lease.id) == index) leaseChecker_->stopped(lease.id);
  });
  // Leases of this member that some other member applied first and this one did not yet.
  for (const auto& [id, issued] : leaseIssued_) {
    if (id.member == NODE_MEMBER_BASE + index && issued.kind == LeaseCommandKind::GRANT) {
      leaseChecker_->stopped(issued.lease);
    }
  }
}

void Simulator::scheduleApp(uint32_t index, uint32_t app, Nanos delay) {
  Node& node = nodes_[index];
  LeaseApp& a = node.apps[app];
  ++a.attempt;
  schedule(now_ + delay, EventKind::LEASE_APP, index, node.life, a.attempt, app);
}

void Simulator::leaseAppEvent(const Event& event) {
  Node& node = nodes_[event.node];
  if (!node.up || node.life != event.tag || event.payload >= node.apps.size()) return;
  LeaseApp& app = node.apps[event.payload];
  if (app.attempt != event.from) return;
  if (app.state == LeaseApp::IDLE) {
    grantLease(event.node, event.payload);
  } else if (app.state == LeaseApp::HOLDING) {
    if (now_ >= app.keepAliveUntil) {
      stopKeepingAlive(event.node, event.payload);
      return;
    }
    if (!node.renewer->keepAlive(app.lease, localNow(node))) {
      // The lease ended; the member told the app when it applied the end.
      app.state = LeaseApp::IDLE;
      scheduleApp(event.node, event.payload, 0);
      return;
    }
    takeRenewals(event.node);
    const uint64_t ttl = app.ttlMs * static_cast<uint64_t>(MS);
    scheduleApp(event.node, event.payload,
                static_cast<Nanos>(leasePrng_.uniform(ttl / 10, ttl / 4)));
  }
  drive(event.node);
}

void Simulator::grantLease(uint32_t index, uint32_t app) {
  Node& node = nodes_[index];
  LeaseApp& a = node.apps[app];
  a.state = LeaseApp::GRANTING;
  a.ttlMs = leasePrng_.uniform(params_.leaseTtlMinMs, params_.leaseTtlMaxMs + 1);
  a.lease = election::makeLeaseId(index, node.nextLeaseCounter++);
  const uint64_t sequence = node.nextSequence;
  std::string encoded = encodeMemberCommand(index, node.incarnation(), sequence,
                                            [&](records::Command::Builder command) {
                                              auto grant = command.initLeaseGrant();
                                              grant.setId(a.lease);
                                              grant.setTtlMs(a.ttlMs);
                                              auto holder = grant.initHolder();
                                              holder.setMember(index);
                                              holder.setPid(static_cast<int32_t>(1000 + app));
                                              holder.setUid(1000);
                                            });
  IssuedLeaseCommand issued;
  issued.kind = LeaseCommandKind::GRANT;
  issued.lease = a.lease;
  issued.ttlMs = a.ttlMs;
  issueLease(index, std::move(issued));
  PendingLeaseCommand pending;
  pending.encoded = std::move(encoded);
  pending.kind = LeaseCommandKind::GRANT;
  pending.app = app;
  pending.sentLocal = localNow(node);
  pending.giveUpAt = pending.sentLocal + params_.leaseCommandGiveUp;
  node.pendingLease.emplace(sequence, std::move(pending));
  submitLease(index, sequence);
}

// The app revokes its lease, or stops (crashes) and leaves it to expire.
void Simulator::stopKeepingAlive(uint32_t index, uint32_t app) {
  Node& node = nodes_[index];
  LeaseApp& a = node.apps[app];
  leaseChecker_->stopped(a.lease);
  if (!a.revokes) {
    a.state = LeaseApp::IDLE;
    scheduleApp(index, app, static_cast<Nanos>(leasePrng_.uniform(0, a.ttlMs)) * MS);
    return;
  }
  node.renewer->forget(a.lease);
  a.state = LeaseApp::REVOKING;
  const uint64_t sequence = node.nextSequence;
  std::string encoded = encodeMemberCommand(
      index, node.incarnation(), sequence,
      [&](records::Command::Builder command) { command.initLeaseRevoke().setId(a.lease); });
  IssuedLeaseCommand issued;
  issued.kind = LeaseCommandKind::REVOKE;
  issued.lease = a.lease;
  issueLease(index, std::move(issued));
  PendingLeaseCommand pending;
  pending.encoded = std::move(encoded);
  pending.kind = LeaseCommandKind::REVOKE;
  pending.app = app;
  pending.sentLocal = localNow(node);
  pending.giveUpAt = pending.sentLocal + params_.leaseCommandGiveUp;
  node.pendingLease.emplace(sequence, std::move(pending));
  submitLease(index, sequence);
}

void Simulator::takeRenewals(uint32_t index) {
  Node& node = nodes_[index];
  auto batch = node.renewer->takeBatch(node.state->leases(), localNow(node));
  if (!batch) return;
  ++stats_.renewBatches;
  const uint64_t sequence = node.nextSequence;
  std::string encoded = encodeMemberCommand(
      index, node.incarnation(), sequence, [&](records::Command::Builder command) {
        auto list =
            command.initLeaseRenew().initRenewals(static_cast<unsigned>(batch->renewals.size()));
        for (size_t i = 0; i < batch->renewals.size(); ++i) {
          list[i].setId(batch->renewals[i].first);
          list[i].setEpoch(batch->renewals[i].second);
        }
      });
  IssuedLeaseCommand issued;
  issued.kind = LeaseCommandKind::RENEW;
  for (const auto& renewal : batch->renewals)
    issued.ids.push_back(renewal.first);
  issueLease(index, std::move(issued));
  PendingLeaseCommand pending;
  pending.encoded = std::move(encoded);
  pending.kind = LeaseCommandKind::RENEW;
  pending.batch = batch->number;
  pending.sentLocal = batch->sentAt;
  pending.giveUpAt = batch->sentAt + params_.leaseCommandGiveUp;
  node.pendingLease.emplace(sequence, std::move(pending));
  submitLease(index, sequence);
}

// Takes the member's next sequence (the one its command was just encoded with) and remembers
// what the command is, sent now.
uint64_t Simulator::issueLease(uint32_t index, IssuedLeaseCommand issued) {
  Node& node = nodes_[index];
  issued.sentAt = now_;
  issued.noLeaderAtSend = leaseChecker_->noLeaderTotal();
  const uint64_t sequence = node.nextSequence++;
  leaseIssued_[election::CommandId{NODE_MEMBER_BASE + index, node.incarnation(), sequence}] =
      std::move(issued);
  return sequence;
}

void Simulator::submitLease(uint32_t index, uint64_t sequence) {
  Node& node = nodes_[index];
  PendingLeaseCommand& command = node.pendingLease.at(sequence);
  const Nanos local = localNow(node);
  command.resubmitAt = local + params_.leaseCommandRetry;
  if (node.core->role() == Role::LEADER) {
    auto result = node.core->propose(command.encoded, local);
    if (result.status != election::ProposeResult::NOT_LEADER) return;  // BUSY: resubmitted later
  }
  auto leader = node.core->knownLeader();
  if (leader && *leader != index) forward(index, *leader, command.encoded);
}

void Simulator::forward(uint32_t from, uint32_t to, const std::string& command) {
  if ((cut_[from] & (1u << to)) || leasePrng_.chance(loss_)) return;
  const uint64_t id = nextForward_++;
  forwards_.emplace(id, command);
  schedule(now_ + static_cast<Nanos>(leasePrng_.uniform(params_.netMin, params_.netMax)),
           EventKind::FORWARD, to, id, from);
}

void Simulator::forwarded(const Event& event) {
  auto it = forwards_.find(event.tag);
  if (it == forwards_.end()) return;
  const std::string command = std::move(it->second);
  forwards_.erase(it);
  Node& node = nodes_[event.node];
  const bool cut = cut_[event.from] & (1u << event.node);
  record(event.kind, event.node, event.from, cut ? "(cut)" : !node.up ? "(down)" : "");
  if (!node.up || cut || node.core->role() != Role::LEADER) return;  // the sender resubmits
  node.core->propose(command, localNow(node));
  drive(event.node);
}

void Simulator::leaseTick(uint32_t index) {
  Node& node = nodes_[index];
  if (!node.up) return;
  const Nanos local = localNow(node);
  const bool leading = node.core->role() == Role::LEADER && local < node.core->leaseHeldUntil();
  auto due = node.expirer->tick(node.state->leases(), leading, node.core->ballot(), local);
  for (const election::LeaseExpiry& expiry : due.expire) {
    IssuedLeaseCommand issued;
    issued.kind = LeaseCommandKind::EXPIRE;
    issued.lease = expiry.id;
    const std::string encoded = encodeMemberCommand(index, node.incarnation(), node.nextSequence,
                                                    [&](records::Command::Builder command) {
                                                      auto op = command.initLeaseExpire();
                                                      op.setId(expiry.id);
                                                      op.setEpoch(expiry.epoch);
                                                    });
    issueLease(index, std::move(issued));
    node.core->propose(encoded, local);  // not queued: the expirer proposes it again
  }
  if (!due.checkpoint.empty()) {
    IssuedLeaseCommand issued;
    issued.kind = LeaseCommandKind::CHECKPOINT;
    issued.entries = due.checkpoint.size();
    const std::string encoded = encodeMemberCommand(
        index, node.incarnation(), node.nextSequence, [&](records::Command::Builder command) {
          auto list = command.initLeaseCheckpoint().initCheckpoints(
              static_cast<unsigned>(due.checkpoint.size()));
          for (size_t i = 0; i < due.checkpoint.size(); ++i) {
            list[i].setId(due.checkpoint[i].id);
            list[i].setEpoch(due.checkpoint[i].epoch);
            list[i].setRemainingMs(due.checkpoint[i].remainingMs);
          }
        });
    issueLease(index, std::move(issued));
    node.core->propose(encoded, local);
  }
  // The member's own commands: submitted again until applied, or given up (outcome unknown).
  for (auto it = node.pendingLease.begin(); it != node.pendingLease.end();) {
    if (local >= it->second.giveUpAt) {
      PendingLeaseCommand command = std::move(it->second);
      it = node.pendingLease.erase(it);
      leaseGivenUp(index, std::move(command));
      continue;
    }
    if (local >= it->second.resubmitAt) submitLease(index, it->first);
    ++it;
  }
  takeRenewals(index);
  drive(index);
}

void Simulator::leaseGivenUp(uint32_t index, PendingLeaseCommand command) {
  Node& node = nodes_[index];
  switch (command.kind) {
    case LeaseCommandKind::RENEW:
      node.renewer->batchFailed(command.batch);
      break;
    case LeaseCommandKind::GRANT:
    case LeaseCommandKind::REVOKE: {
      // The app is told it failed and tries a new lease; the old one, if it exists or comes to,
      // is kept alive by nobody.
      LeaseApp& app = node.apps[command.app];
      leaseChecker_->stopped(app.lease);
      node.renewer->forget(app.lease);
      app.state = LeaseApp::IDLE;
      scheduleApp(index, command.app, static_cast<Nanos>(leasePrng_.uniform(0, params_.heartbeat)));
      break;
    }
    case LeaseCommandKind::EXPIRE:
    case LeaseCommandKind::CHECKPOINT:
      break;
  }
}

void Simulator::leaseCommandApplied(uint32_t index, const election::AppliedCommand& applied,
                                    bool first) {
  if (first) firstLeaseApply(index, applied);
  Node& node = nodes_[index];
  // Every member tells its own apps when their leases end.
  for (const election::LeaseEvent& event : applied.events) {
    if (event.kind != election::LeaseEvent::Kind::LEASE_ENDED ||
        election::leaseIdMember(event.lease) != index) {
      continue;
    }
    node.renewer->forget(event.lease);
    for (uint32_t a = 0; a < node.apps.size(); ++a) {
      LeaseApp& app = node.apps[a];
      if (app.lease != event.lease || app.state != LeaseApp::HOLDING) continue;
      app.state = LeaseApp::IDLE;
      scheduleApp(index, a, static_cast<Nanos>(leasePrng_.uniform(0, params_.heartbeat)));
    }
  }
  if (applied.id.member == NODE_MEMBER_BASE + index &&
      applied.id.incarnation == node.incarnation()) {
    ownLeaseApplied(index, applied);
  }
}

// The checks, at the first apply anywhere of a member's lease command (the same on every member:
// state agreement).
void Simulator::firstLeaseApply(uint32_t index, const election::AppliedCommand& applied) {
  auto it = leaseIssued_.find(applied.id);
  if (applied.duplicate) return;
  if (it == leaseIssued_.end()) {
    fail("validity", "member " + std::to_string(index) +
                         " applied a lease command no member issued (member " +
                         std::to_string(applied.id.member) + " incarnation " +
                         std::to_string(applied.id.incarnation) + " sequence " +
                         std::to_string(applied.id.sequence) + ")");
  }
  const IssuedLeaseCommand issued = std::move(it->second);
  leaseIssued_.erase(it);
  const election::CommandOutcome& outcome = applied.outcome;
  const auto code = outcome.code;
  const bool refusalAllowed =
      (issued.kind == LeaseCommandKind::GRANT && code == election::StatusCode::INVALID_ARGUMENT) ||
      ((issued.kind == LeaseCommandKind::REVOKE || issued.kind == LeaseCommandKind::EXPIRE) &&
       code == election::StatusCode::NOT_FOUND);
  if (code != election::StatusCode::OK && !refusalAllowed) {
    fail("validity", "a lease command of member " +
                         std::to_string(applied.id.member - NODE_MEMBER_BASE) +
                         " was refused: " + outcome.message);
  }
  const uint32_t proposer = applied.id.member - NODE_MEMBER_BASE;
  switch (issued.kind) {
    case LeaseCommandKind::GRANT:
      if (code == election::StatusCode::OK) {
        ++stats_.leaseGrants;
        leaseChecker_->granted(issued.lease, issued.ttlMs, issued.sentAt, issued.noLeaderAtSend,
                               now_);
        const Node& owner = nodes_[proposer];
        const bool wanted = owner.up && owner.incarnation() == applied.id.incarnation &&
                            owner.pendingLease.count(applied.id.sequence) != 0;
        if (!wanted) leaseChecker_->stopped(issued.lease);
      }
      break;
    case LeaseCommandKind::RENEW: {
      for (uint64_t id : issued.ids) {
        if (std::find(outcome.missing.begin(), outcome.missing.end(), id) !=
            outcome.missing.end()) {
          continue;
        }
        ++stats_.leaseRenewals;
        leaseChecker_->renewed(id, issued.sentAt, issued.noLeaderAtSend, now_);
      }
      break;
    }
    case LeaseCommandKind::REVOKE:
      break;
    case LeaseCommandKind::EXPIRE:
      if (code == election::StatusCode::OK && !outcome.succeeded) ++stats_.expiriesIgnored;
      break;
    case LeaseCommandKind::CHECKPOINT:
      ++stats_.checkpointCommands;
      stats_.checkpoints += issued.entries - outcome.missing.size();
      break;
  }
  for (const election::LeaseEvent& event : applied.events) {
    if (event.kind != election::LeaseEvent::Kind::LEASE_ENDED) continue;
    ++(event.expired ? stats_.leaseExpiries : stats_.leaseRevokes);
    if (event.expired) checkHolderSafe(event.lease);
    if (auto violation = leaseChecker_->ended(event.lease, event.expired, now_)) {
      fail(violation->invariant, violation->detail);
    }
  }
}

void Simulator::ownLeaseApplied(uint32_t index, const election::AppliedCommand& applied) {
  Node& node = nodes_[index];
  auto it = node.pendingLease.find(applied.id.sequence);
  if (it == node.pendingLease.end()) return;
  PendingLeaseCommand command = std::move(it->second);
  node.pendingLease.erase(it);
  if (applied.duplicate) {
    // Its first application went by unseen (in a snapshot): the outcome may be gone.
    leaseGivenUp(index, std::move(command));
    return;
  }
  switch (command.kind) {
    case LeaseCommandKind::RENEW:
      node.renewer->batchApplied(command.batch, applied.outcome.missing);
      break;
    case LeaseCommandKind::GRANT: {
      LeaseApp& app = node.apps[command.app];
      if (applied.outcome.code != election::StatusCode::OK) {
        node.nextLeaseCounter =
            std::max(node.nextLeaseCounter, node.state->leaseCounter(index) + 1);
        app.state = LeaseApp::IDLE;
        scheduleApp(index, command.app, 0);
        break;
      }
      node.renewer->track(app.lease, app.ttlMs, command.sentLocal);
      app.state = LeaseApp::HOLDING;
      const uint64_t ttl = app.ttlMs * static_cast<uint64_t>(MS);
      app.keepAliveUntil = now_ + static_cast<Nanos>(leasePrng_.uniform(0, 4 * ttl));
      app.revokes = leasePrng_.chance(0.5);
      scheduleApp(index, command.app, static_cast<Nanos>(leasePrng_.uniform(ttl / 10, ttl / 4)));
      break;
    }
    case LeaseCommandKind::REVOKE: {
      LeaseApp& app = node.apps[command.app];
      app.state = LeaseApp::IDLE;
      scheduleApp(index, command.app, static_cast<Nanos>(leasePrng_.uniform(0, app.ttlMs)) * MS);
      break;
    }
    case LeaseCommandKind::EXPIRE:
    case LeaseCommandKind::CHECKPOINT:
      break;
  }
}

// holder-safety: the member holding a lease never believes it safe at a moment it has ended: at
// the expiry's first apply anywhere, its renewer's safeUntil (its own clock) has passed.
void Simulator::checkHolderSafe(uint64_t id) {
  const uint32_t h = election::leaseIdMember(id);
  if (h >= nodes_.size()) return;
  const Node& holder = nodes_[h];
  if (!holder.up || !holder.renewer) return;
  auto safe = holder.renewer->safeUntil(id);
  if (!safe) return;
  ++stats_.holderChecks;
  const Nanos local = localNow(holder);
  if (*safe > local) {
    std::ostringstream detail;
    detail << "lease " << h << ":" << (id & election::LEASE_ID_COUNTER_MASK)
           << " expired while member " << h << " tells its app it is safe for another "
           << (*safe - local) / 1000 << "us of its clock (rate " << holder.rate << ")";
    fail("lease-holder-safety", detail.str());
  }
}

// Tracks when some member is a valid leader (for the lifetime bound), and sweeps for leases
// nobody keeps alive that outlived their bound.
void Simulator::checkLeasesAfterStep() {
  Nanos covered = now_;
  for (const Node& node : nodes_) {
    if (!node.up || node.pausedUntil > now_ || node.core->role() != Role::LEADER) continue;
    const Nanos local = localNow(node);
    if (local >= node.core->leaseHeldUntil()) continue;
    const double left = static_cast<double>(node.core->leaseHeldUntil() - local) / node.rate;
    covered = std::max(covered, now_ + static_cast<Nanos>(left));
  }
  coveredUntil_ = covered;
  if (step_ % 64 == 0) {
    if (auto violation = leaseChecker_->sweep(now_)) fail(violation->invariant, violation->detail);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks

void Simulator::checkAfterStep() {
  if (options_.verbose) printLeaseChanges();
  if (options_.leases) checkLeasesAfterStep();
  // At most one member believes it holds the leader lease at this (true) instant.
  int holders = 0;
  for (const Node& node : nodes_) {
    if (node.up && localNow(node) < node.core->leaseHeldUntil()) ++holders;
  }
  if (holders > 1) {
    std::string detail = std::to_string(holders) + " members believe they hold the leader lease:";
    for (uint32_t i = 0; i < nodes_.size(); ++i) {
      const Node& node = nodes_[i];
      if (node.up && localNow(node) < node.core->leaseHeldUntil()) {
        std::ostringstream line;
        line << " member " << i << " ballot " << ballotText(node.core->ballot()) << " until "
             << (node.core->leaseHeldUntil() - localNow(node)) / 1000 << "us (clock rate "
             << node.rate << ")";
        detail += line.str();
      }
    }
    fail("single-lease", detail);
  }
}

// Members that applied the same slot hold the same state, however they got there (applying slots,
// installing a snapshot, restarting from the store).
void Simulator::checkStatesAgree() {
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    for (uint32_t j = i + 1; j < nodes_.size(); ++j) {
      const Node& a = nodes_[i];
      const Node& b = nodes_[j];
      if (!a.up || !b.up || a.state->appliedSlot() != b.state->appliedSlot()) continue;
      std::vector<std::pair<std::string, election::KeyRecord>> left, right;
      a.state->forEachKey(
          [&](std::string_view k, const election::KeyRecord& r) { left.emplace_back(k, r); });
      b.state->forEachKey(
          [&](std::string_view k, const election::KeyRecord& r) { right.emplace_back(k, r); });
      if (left != right || a.state->revision() != b.state->revision() ||
          a.state->stateDigest() != b.state->stateDigest()) {
        fail("state-agreement", "members " + std::to_string(i) + " and " + std::to_string(j) +
                                    " applied slot " + std::to_string(a.state->appliedSlot()) +
                                    " but hold different states");
      }
    }
  }
}

void Simulator::printLeaseChanges() {
  leaseHeld_.resize(nodes_.size(), false);
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    const bool held = nodes_[i].up && localNow(nodes_[i]) < nodes_[i].core->leaseHeldUntil();
    if (held != leaseHeld_[i]) {
      out_ << "t=" << now_ / 1000 << "us member " << i << (held ? " gains" : " loses")
           << " the lease (clock rate " << nodes_[i].rate << ")";
      if (held)
        out_ << " for " << (nodes_[i].core->leaseHeldUntil() - localNow(nodes_[i])) / 1000 << "us";
      out_ << "\n";
    }
    leaseHeld_[i] = held;
  }
}

void Simulator::checkHistory() {
  for (uint32_t key = 0; key < params_.keys; ++key) {
    std::vector<RegisterOp> ops;
    for (const OpRecord& op : history_) {
      if (op.key != key) continue;
      RegisterOp checked{op.invoke, op.response, op.write, op.value};
      if (op.write) {
        auto effect = effectAt_.find(op.value);
        if (effect != effectAt_.end()) checked.orderHint = effect->second + 1;
      }
      ops.push_back(checked);
    }
    const size_t count = ops.size();
    auto result = checkRegister(std::move(ops), 0);
    if (result.verdict == LinearizabilityResult::NOT_LINEARIZABLE) {
      fail("linearizability", "key " + std::to_string(key) + ": " + result.detail);
    }
    if (result.verdict == LinearizabilityResult::INCONCLUSIVE && !options_.quiet) {
      out_ << "warning: linearizability of key " << key << " (" << count
           << " operations) inconclusive: " << result.detail << "\n";
    }
  }
}

void Simulator::record(EventKind kind, uint32_t node, uint32_t from, std::string what) {
  Trace& t = trace_[step_ % trace_.size()];
  t.step = step_;
  t.at = now_;
  t.kind = kind;
  t.node = node;
  t.from = from;
  t.what = std::move(what);
}

void Simulator::printTrace(const std::string& invariant, const std::string& detail) {
  out_ << "VIOLATION seed=" << options_.seed << " nodes=" << options_.nodes << " step=" << step_
       << " time=" << std::fixed << std::setprecision(6) << static_cast<double>(now_) / 1e9
       << "s invariant=" << invariant << "\n  " << detail << "\nlast steps:\n";
  const size_t n = trace_.size();
  for (size_t i = 0; i < n; ++i) {
    const Trace& t = trace_[(step_ + 1 + i) % n];
    if (t.step == 0 || t.step + n <= step_) continue;
    out_ << "  #" << t.step << " t=" << std::setprecision(6) << static_cast<double>(t.at) / 1e9
         << " " << eventName(t.kind) << " member " << t.node;
    if (t.kind == EventKind::DELIVER) out_ << " from " << t.from;
    if (!t.what.empty()) out_ << ": " << t.what;
    out_ << "\n";
  }
}

void Simulator::printSummary(double wallSeconds) {
  const Params& p = params_;
  out_ << std::setprecision(3) << std::fixed;
  out_ << "params: heartbeat=" << p.heartbeat / MS << "ms election=" << p.electionTimeout / MS
       << "ms lease=" << p.lease / MS << "ms drift=" << p.drift << " window=" << p.window
       << " batch=" << p.batchCommands << " net=" << p.netMin / 1000 << "-" << p.netMax / 1000
       << "us disk=" << p.diskMin / 1000 << "-" << p.diskMax / 1000 << "us clients=" << p.clients
       << " keys=" << p.keys << "\n";
  out_ << "stats: sim_time=" << static_cast<double>(now_) / 1e9
       << "s leaderships=" << stats_.leaderships << " slots=" << stats_.slots
       << " writes_acked=" << stats_.writesAcked << " reads_ok=" << stats_.readsOk << " (lease "
       << stats_.leaseReads << ", leader index " << stats_.indexReads << ", follower "
       << stats_.followerReads << ") reads_failed=" << stats_.readsFailed
       << " crashes=" << stats_.crashes << " partitions=" << stats_.partitions
       << " pauses=" << stats_.pauses << " handoffs=" << stats_.handoffs << " (refused "
       << stats_.handoffsRefused << ") messages=" << stats_.messages
       << " dropped=" << stats_.dropped << " duplicated=" << stats_.duplicated
       << " calm_periods=" << stats_.calmPeriods
       << " worst_recovery=" << static_cast<double>(stats_.worstCalmNs) / 1e9
       << "s snapshot_needed=" << stats_.snapshotNeeded
       << " snapshots=" << stats_.snapshotsInstalled << " wipes=" << stats_.wipes
       << " recoveries=" << stats_.recoveries << "\n";
  if (options_.leases) {
    const election::LeaseClockOptions& c = p.leaseClock;
    out_ << "leases: apps=" << p.leaseApps << "/member ttl=" << p.leaseTtlMinMs << "-"
         << p.leaseTtlMaxMs << "ms checkpoint_interval=" << c.checkpointIntervalNs / MS
         << "ms retry=" << c.retryNs / MS << "ms batch_interval=" << c.minBatchIntervalNs / MS
         << "ms slack=" << p.leaseSlack / MS << "ms grants=" << stats_.leaseGrants
         << " renewals=" << stats_.leaseRenewals << " (batches " << stats_.renewBatches
         << ") expiries=" << stats_.leaseExpiries << " (ignored " << stats_.expiriesIgnored
         << ") revokes=" << stats_.leaseRevokes << " checkpoints=" << stats_.checkpoints
         << " (commands " << stats_.checkpointCommands << ") holder_checks=" << stats_.holderChecks
         << " live=" << leaseChecker_->live()
         << " no_leader=" << static_cast<double>(leaseChecker_->noLeaderTotal()) / 1e9 << "s";
    if (stats_.leaseExpiries > 0) {
      out_ << " closest_to_bound=" << static_cast<double>(leaseChecker_->worstExcessNs()) / 1e6
           << "ms";
    }
    out_ << "\n";
  }
  out_ << "seed=" << options_.seed << " nodes=" << options_.nodes
       << (options_.breaker.empty() ? "" : " break=" + options_.breaker) << " wall=" << wallSeconds
       << "s steps_per_sec="
       << static_cast<uint64_t>(static_cast<double>(step_) / std::max(wallSeconds, 1e-9)) << "\n";
  out_.unsetf(std::ios::floatfield);
}

}  // namespace

std::vector<std::string> breakerNames() {
  return {"acceptor-ignores-promise",
          "leader-picks-any-value",
          "crash-drops-synced-promise",
          "lease-not-shortened",
          "lease-read-ignores-promised-slots",
          "heartbeat-decides-other-ballot",
          "handoff-keeps-lease",
          "lease-no-drift-margin",
          "lease-renewal-ignored",
          "lease-checkpoint-short"};
}

RunResult runSimulation(const RunOptions& options, std::ostream& out) {
  Simulator simulator(options, out);
  return simulator.run();
}

}  // namespace synod::sim
