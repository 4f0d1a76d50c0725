// Scripted message sequences for each protocol rule of the Multi-Paxos core.
#include "election/replica.h"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace synod::election {
namespace {

constexpr Nanos MS = NANOS_PER_MS;

Options testOptions(MemberIndex self, uint32_t members) {
  Options o;
  o.self = self;
  o.memberCount = members;
  o.heartbeatIntervalNs = 10 * MS;
  o.electionTimeoutNs = 50 * MS;
  o.leaderLeaseNs = 40 * MS;
  o.maxClockDrift = 0.05;
  o.pipelineWindow = 8;
  o.readTimeoutNs = 500 * MS;
  return o;
}

Value values(std::initializer_list<const char*> commands) {
  Value v;
  for (const char* c : commands)
    v.commands.emplace_back(c);
  return v;
}

// Every message of type T in a Ready, with its destination.
template <typename T>
std::vector<std::pair<MemberIndex, T>> messagesOf(const std::vector<OutgoingMessage>& list) {
  std::vector<std::pair<MemberIndex, T>> out;
  for (const OutgoingMessage& m : list) {
    if (auto* typed = std::get_if<T>(&m.message)) out.emplace_back(m.to, *typed);
  }
  return out;
}

// One replica under test with its own PRNG.
struct Single {
  Prng prng{42};
  std::unique_ptr<Replica> replica;

  explicit Single(const Options& options, const PersistedState& state = {}) {
    replica = std::make_unique<Replica>(options, state, prng);
  }
};

// Takes the outstanding Ready without advancing it.
Ready take(Replica& r) {
  REQUIRE(r.hasReady());
  return r.ready();
}

// take + advance; returns the Ready.
Ready cycle(Replica& r) {
  if (!r.hasReady()) return Ready{};
  Ready ready = r.ready();
  r.advance(ready);
  return ready;
}

// Drains every Ready (advancing each) and collects them.
std::vector<Ready> drain(Replica& r) {
  std::vector<Ready> all;
  while (r.hasReady())
    all.push_back(cycle(r));
  return all;
}

template <typename T>
std::vector<std::pair<MemberIndex, T>> sentIn(const std::vector<Ready>& readies) {
  std::vector<std::pair<MemberIndex, T>> out;
  for (const Ready& r : readies) {
    for (auto& m : messagesOf<T>(r.sendBeforePersist))
      out.push_back(m);
    for (auto& m : messagesOf<T>(r.sendAfterPersist))
      out.push_back(m);
  }
  return out;
}

std::vector<LogEntry> appliedIn(const std::vector<Ready>& readies) {
  std::vector<LogEntry> out;
  for (const Ready& r : readies)
    out.insert(out.end(), r.apply.begin(), r.apply.end());
  return out;
}

std::vector<ReadOutcome> readsIn(const std::vector<Ready>& readies) {
  std::vector<ReadOutcome> out;
  for (const Ready& r : readies)
    out.insert(out.end(), r.reads.begin(), r.reads.end());
  return out;
}

// A group whose messages are delivered by hand. Persistence is immediate (ready + advance).
struct Group {
  std::vector<Prng> prngs;
  std::vector<std::unique_ptr<Replica>> replicas;
  std::vector<std::pair<MemberIndex, OutgoingMessage>> network;  // (from, message)
  std::vector<std::vector<LogEntry>> applied;
  std::vector<std::vector<ReadOutcome>> reads;
  Nanos now = 0;

  explicit Group(uint32_t n, const std::function<void(Options&)>& tweak = {}) {
    applied.resize(n);
    reads.resize(n);
    for (uint32_t i = 0; i < n; ++i)
      prngs.emplace_back(1000 + i);
    for (uint32_t i = 0; i < n; ++i) {
      Options o = testOptions(i, n);
      if (tweak) tweak(o);
      replicas.push_back(std::make_unique<Replica>(o, PersistedState{}, prngs[i]));
    }
  }
  Replica& operator[](size_t i) { return *replicas[i]; }
  // Whether every member has applied at least `count` commands.
  bool everyMemberApplied(size_t count) const {
    for (const auto& entries : applied) {
      size_t commands = 0;
      for (const auto& e : entries)
        commands += e.value.commands.size();
      if (commands < count) return false;
    }
    return true;
  }

  void pump(MemberIndex i) {
    while (replicas[i]->hasReady()) {
      Ready r = replicas[i]->ready();
      for (auto& m : r.sendBeforePersist)
        network.emplace_back(i, m);
      for (auto& e : r.apply)
        applied[i].push_back(e);
      for (auto& o : r.reads)
        reads[i].push_back(o);
      for (auto& m : r.sendAfterPersist)
        network.emplace_back(i, m);
      replicas[i]->advance(r);
    }
  }
  void pumpAll() {
    for (MemberIndex i = 0; i < replicas.size(); ++i)
      pump(i);
  }
  // Delivers everything in flight (and what it causes) unless `drop` says otherwise.
  void deliverAll(const std::function<bool(MemberIndex, const OutgoingMessage&)>& drop = {}) {
    pumpAll();
    for (int rounds = 0; rounds < 1000 && !network.empty(); ++rounds) {
      auto batch = std::move(network);
      network.clear();
      for (auto& [from, m] : batch) {
        if (drop && drop(from, m)) continue;
        replicas[m.to]->step(from, m.message, now);
        pump(m.to);
      }
    }
  }
  void tickAll() {
    for (auto& r : replicas)
      r->tick(now);
    pumpAll();
  }
  // Advances time in heartbeat-sized steps, delivering everything, until `done` or the deadline.
  bool runUntil(const std::function<bool()>& done, Nanos limit = 5000 * MS,
                const std::function<bool(MemberIndex, const OutgoingMessage&)>& drop = {}) {
    const Nanos end = now + limit;
    while (now < end) {
      if (done()) return true;
      now += 2 * MS;
      tickAll();
      deliverAll(drop);
    }
    return done();
  }
  // As runUntil, but a member is ticked only once `now` reached its nextTickAt(), as a shell that
  // sleeps until then would. Counts the ticks in `ticks` if given.
  bool runLazilyUntil(const std::function<bool()>& done, Nanos limit = 5000 * MS,
                      const std::function<bool(MemberIndex, const OutgoingMessage&)>& drop = {},
                      uint64_t* ticks = nullptr) {
    const Nanos end = now + limit;
    while (now < end) {
      if (done()) return true;
      now += 1 * MS;
      for (auto& r : replicas) {
        if (r->nextTickAt() > now) continue;
        r->tick(now);
        if (ticks) ++*ticks;
      }
      deliverAll(drop);
    }
    return done();
  }
  std::optional<MemberIndex> leader() {
    for (MemberIndex i = 0; i < replicas.size(); ++i) {
      if (replicas[i]->role() == Role::LEADER) return i;
    }
    return std::nullopt;
  }
};

// Brings replica `r` (of `members`) to leadership by scripting its peers' answers directly.
// Returns the ballot it leads with.
Ballot electByScript(Replica& r, uint32_t members, Nanos& now,
                     const std::vector<Promise>& promises = {}) {
  now += 500 * MS;  // past the restart window and any election timeout
  r.tick(now);
  auto readies = drain(r);
  auto preVotes = sentIn<PreVoteRequest>(readies);
  REQUIRE(preVotes.size() == members - 1);
  for (auto& [peer, m] : preVotes)
    r.step(peer, PreVoteReply{m.round, true, 0}, now);
  readies = drain(r);
  auto prepares = sentIn<Prepare>(readies);
  REQUIRE(prepares.size() == members - 1);
  REQUIRE(r.role() == Role::CANDIDATE);
  const Ballot ballot = prepares[0].second.ballot;
  size_t next = 0;
  for (auto& [peer, m] : prepares) {
    Promise p;
    if (next < promises.size()) {
      p = promises[next++];
    }
    p.ballot = m.ballot;
    p.fromSlot = m.fromSlot;
    r.step(peer, p, now);
  }
  REQUIRE(r.role() == Role::LEADER);
  return ballot;
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("options are validated with a message naming the problem") {
  Options o = testOptions(0, 3);
  CHECK(!validateOptions(o));
  o.self = 3;
  CHECK(validateOptions(o)->find("self") != std::string::npos);
  o = testOptions(0, 3);
  o.electionTimeoutNs = o.heartbeatIntervalNs;
  CHECK(validateOptions(o)->find("electionTimeoutNs") != std::string::npos);
  Prng prng(1);
  CHECK_THROWS_AS(Replica(o, {}, prng), std::invalid_argument);
  PersistedState bad;
  bad.log = {LogEntry{2, {1, 0}, {}}, LogEntry{1, {1, 0}, {}}};
  CHECK_THROWS_AS(Replica(testOptions(0, 3), bad, prng), std::invalid_argument);
}

TEST_CASE("a group of one elects itself and decides a slot once its own accept is durable") {
  Options o = testOptions(0, 1);
  Prng prng(7);
  Replica r(o, {}, prng);
  r.tick(0);
  REQUIRE(r.role() == Role::CANDIDATE);
  Ready first = take(r);
  REQUIRE(first.promised);
  CHECK(first.promised->member == 0);
  CHECK(first.promised->round == 1);
  CHECK(r.role() == Role::CANDIDATE);  // its own promise is not durable yet
  r.advance(first);
  CHECK(r.role() == Role::LEADER);
  drain(r);

  REQUIRE(r.propose("a", 1).status == ProposeResult::QUEUED);
  REQUIRE(r.propose("b", 1).status == ProposeResult::QUEUED);
  Ready accept = take(r);
  REQUIRE(accept.accepted.size() == 1);
  CHECK(accept.accepted[0].value == values({"a", "b"}));
  CHECK(accept.apply.empty());
  CHECK(r.decidedSlot() == 0);  // not before the accept is durable
  r.advance(accept);
  CHECK(r.decidedSlot() == 1);
  Ready apply = take(r);
  REQUIRE(apply.apply.size() == 1);
  CHECK(apply.apply[0].slot == 1);
  r.advance(apply);
  CHECK(r.appliedSlot() == 1);

  // Reads at a group of one are ready at once.
  REQUIRE(r.read(5, 2).status == ReadStart::PENDING);
  auto reads = readsIn(drain(r));
  REQUIRE(reads.size() == 1);
  CHECK(reads[0].ok);
  CHECK(reads[0].readIndex == 1);
}

TEST_CASE("a restarted group of one re-decides its accepted slots in a higher ballot") {
  PersistedState state;
  state.promised = {4, 0};
  state.appliedSlot = 1;
  state.log = {LogEntry{1, {4, 0}, values({"x"})}, LogEntry{2, {4, 0}, values({"y"})},
               LogEntry{3, {4, 0}, values({"z"})}};
  Prng prng(7);
  Replica r(testOptions(0, 1), state, prng);
  r.tick(0);
  auto readies = drain(r);
  REQUIRE(r.role() == Role::LEADER);
  CHECK(r.ballot() == Ballot{5, 0});
  auto applied = appliedIn(readies);
  REQUIRE(applied.size() == 2);
  CHECK(applied[0].value == values({"y"}));
  CHECK(applied[1].value == values({"z"}));
  CHECK(r.logStart() == 1);  // slot 1 kept as a decided value for catch-up
}

TEST_CASE("a promise refuses lower ballots") {
  Single s(testOptions(1, 3));
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(2, Prepare{{5, 2}, 1}, now);
  auto readies = drain(r);
  REQUIRE(readies.size() >= 1);
  CHECK(readies[0].promised == Ballot{5, 2});
  REQUIRE(sentIn<Promise>(readies).size() == 1);
  CHECK(sentIn<Promise>(readies)[0].second.ballot == Ballot{5, 2});
  // The Promise leaves only after the promise is durable.
  CHECK(messagesOf<Promise>(readies[0].sendBeforePersist).empty());

  r.step(0, Prepare{{3, 0}, 1}, now + 1);
  readies = drain(r);
  CHECK(sentIn<Promise>(readies).empty());
  auto rejected = sentIn<Rejected>(readies);
  REQUIRE(rejected.size() == 1);
  CHECK(rejected[0].first == 0);
  CHECK(rejected[0].second.promised == Ballot{5, 2});
  for (const Ready& ready : readies)
    CHECK(!ready.promised);
  CHECK(r.promisedBallot() == Ballot{5, 2});
}

TEST_CASE("an accept below the promise is refused and changes nothing") {
  Single s(testOptions(1, 3));
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(2, Prepare{{5, 2}, 1}, now);
  drain(r);
  r.step(0, Accept{{4, 0}, 1, values({"a"}), 0}, now);
  auto readies = drain(r);
  CHECK(sentIn<Accepted>(readies).empty());
  REQUIRE(sentIn<Rejected>(readies).size() == 1);
  for (const Ready& ready : readies)
    CHECK(ready.accepted.empty());

  // At the promised ballot it is accepted; the Accepted leaves only after the persist.
  r.step(2, Accept{{5, 2}, 1, values({"b"}), 0}, now);
  Ready ready = take(r);
  REQUIRE(ready.accepted.size() == 1);
  CHECK(ready.accepted[0].ballot == Ballot{5, 2});
  CHECK(messagesOf<Accepted>(ready.sendBeforePersist).empty());
  CHECK(messagesOf<Accepted>(ready.sendAfterPersist).size() == 1);
  r.advance(ready);
}

TEST_CASE("rule breaker ACCEPTOR_IGNORES_PROMISE accepts below the promise") {
  Options o = testOptions(1, 3);
  o.ruleBreaker = RuleBreaker::ACCEPTOR_IGNORES_PROMISE;
  Single s(o);
  Replica& r = *s.replica;
  r.step(2, Prepare{{5, 2}, 1}, 500 * MS);
  drain(r);
  r.step(0, Accept{{4, 0}, 1, values({"a"}), 0}, 500 * MS);
  CHECK(sentIn<Accepted>(drain(r)).size() == 1);
}

TEST_CASE("a new leader re-proposes the highest-ballot value and fills holes with no-ops") {
  for (bool broken : {false, true}) {
    Options o = testOptions(0, 5);
    if (broken) o.ruleBreaker = RuleBreaker::LEADER_PICKS_ANY_VALUE;
    Single s(o);
    Replica& r = *s.replica;
    Nanos now = 0;
    Promise a;
    a.accepted = {LogEntry{1, {2, 1}, values({"old"})}, LogEntry{3, {2, 1}, values({"three"})}};
    Promise b;
    b.accepted = {LogEntry{1, {3, 2}, values({"new"})}};
    electByScript(r, 5, now, {a, b});
    auto accepts = sentIn<Accept>(drain(r));
    std::map<Slot, Value> proposed;
    for (auto& [to, m] : accepts)
      proposed[m.slot] = m.value;
    REQUIRE(proposed.size() == 3);
    CHECK(proposed[1] == (broken ? values({"old"}) : values({"new"})));
    CHECK(proposed[2].isNoop());
    CHECK(proposed[3] == values({"three"}));
  }
}

TEST_CASE("the leader's own vote counts only after its accept is durable") {
  Single s(testOptions(0, 3));
  Replica& r = *s.replica;
  Nanos now = 0;
  const Ballot ballot = electByScript(r, 3, now);
  drain(r);
  REQUIRE(r.propose("cmd", now).status == ProposeResult::QUEUED);
  Ready ready = take(r);
  auto accepts = messagesOf<Accept>(ready.sendBeforePersist);
  REQUIRE(accepts.size() == 2);  // the Accepts leave before the leader's own persist
  REQUIRE(ready.accepted.size() == 1);
  // One follower's vote alone is not a majority of three without the leader's durable vote.
  r.step(1, Accepted{ballot, accepts[0].second.slot}, now);
  CHECK(r.decidedSlot() == 0);
  r.advance(ready);
  CHECK(r.decidedSlot() == 1);
}

TEST_CASE("a follower marks slots decided from a heartbeat only for votes in that ballot") {
  for (bool broken : {false, true}) {
    Options o = testOptions(1, 3);
    if (broken) o.ruleBreaker = RuleBreaker::HEARTBEAT_DECIDES_OTHER_BALLOT;
    Single s(o);
    Replica& r = *s.replica;
    Nanos now = 500 * MS;
    r.step(0, Accept{{1, 0}, 1, values({"a"}), 0}, now);
    r.step(0, Accept{{1, 0}, 2, values({"b"}), 0}, now);
    drain(r);
    // A leader of another ballot says slot 1 and 2 are decided: not proof of these votes.
    r.step(2, Heartbeat{{2, 2}, 1, 2}, now);
    auto readies = drain(r);
    if (broken) {
      CHECK(r.decidedSlot() == 2);
      continue;
    }
    CHECK(r.decidedSlot() == 0);
    auto fetches = sentIn<FetchRequest>(readies);
    REQUIRE(fetches.size() == 1);
    CHECK(fetches[0].first == 2);
    CHECK(fetches[0].second.fromSlot == 1);
    // The fetched decided values replace the votes (durably) and are applied.
    FetchReply reply;
    reply.fromSlot = 1;
    reply.decidedSlot = 2;
    reply.entries = {LogEntry{1, {2, 2}, values({"A"})}, LogEntry{2, {2, 2}, values({"B"})}};
    r.step(2, reply, now);
    readies = drain(r);
    CHECK(r.decidedSlot() == 2);
    auto applied = appliedIn(readies);
    REQUIRE(applied.size() == 2);
    CHECK(applied[0].value == values({"A"}));
    REQUIRE(readies[0].accepted.size() == 2);
    CHECK(readies[0].accepted[0].value == values({"A"}));
  }
}

TEST_CASE("a follower marks slots decided from a heartbeat of the ballot it accepted in") {
  Single s(testOptions(1, 3));
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Accept{{1, 0}, 1, values({"a"}), 0}, now);
  drain(r);
  r.step(0, Heartbeat{{1, 0}, 1, 1}, now);
  auto readies = drain(r);
  CHECK(r.decidedSlot() == 1);
  CHECK(sentIn<FetchRequest>(readies).empty());
  REQUIRE(appliedIn(readies).size() == 1);
  auto acks = sentIn<HeartbeatAck>(readies);
  REQUIRE(acks.size() == 1);
  CHECK(acks[0].second.sequence == 1);
}

TEST_CASE("pre-vote: a member that still hears the leader refuses, so no Phase 1 starts") {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  const Ballot before = g[leader].ballot();
  const MemberIndex cutOff = (leader + 1) % 3;
  const MemberIndex other = (leader + 2) % 3;
  // cutOff hears nothing; the other follower and the leader still talk.
  auto drop = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == cutOff || m.to == cutOff;
  };
  g.runUntil([] { return false; }, 300 * MS, drop);
  // The cut-off member keeps asking; nobody grants, so nobody's promise moves.
  g.now += 1;
  g[cutOff].tick(g.now);
  REQUIRE(g[cutOff].role() == Role::FOLLOWER);
  auto readies = drain(g[cutOff]);
  auto requests = sentIn<PreVoteRequest>(readies);
  g[other].step(cutOff, PreVoteRequest{99, 0}, g.now);
  auto replies = sentIn<PreVoteReply>(drain(g[other]));
  REQUIRE(replies.size() == 1);
  CHECK(!replies[0].second.granted);
  // Healing: the leader is still the same, in the same ballot.
  g.runUntil([] { return false; }, 200 * MS);
  CHECK(g.leader() == leader);
  CHECK(g[leader].ballot() == before);
  CHECK(g[other].promisedBallot() == before);
}

TEST_CASE("pre-vote is refused while the leader was heard within the election timeout") {
  Options o = testOptions(1, 3);
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Heartbeat{{1, 0}, 1, 0}, now);
  drain(r);
  // Past the lease this member granted, but within the election timeout: still refused.
  now += o.leaderLeaseNs + 1;
  REQUIRE(now - 500 * MS < o.electionTimeoutNs);
  r.step(2, PreVoteRequest{2, 0}, now);
  auto replies = sentIn<PreVoteReply>(drain(r));
  REQUIRE(replies.size() == 1);
  CHECK(!replies[0].second.granted);
  CHECK(r.promisedBallot() == Ballot{1, 0});  // a pre-vote changes nothing
  now = 500 * MS + o.electionTimeoutNs;
  r.step(2, PreVoteRequest{2, 0}, now);
  replies = sentIn<PreVoteReply>(drain(r));
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].second.granted);
  CHECK(r.promisedBallot() == Ballot{1, 0});
}

TEST_CASE("a leader's lease runs from the heartbeat's send time, shortened by the drift bound") {
  for (bool broken : {false, true}) {
    Options o = testOptions(0, 3);
    if (broken) o.ruleBreaker = RuleBreaker::LEASE_NOT_SHORTENED;
    Single s(o);
    Replica& r = *s.replica;
    Nanos now = 0;
    const Ballot ballot = electByScript(r, 3, now);
    const Nanos sentAt = now;
    auto heartbeats = sentIn<Heartbeat>(drain(r));
    REQUIRE(heartbeats.size() == 2);
    CHECK(r.leaseHeldUntil() == 0);
    // The ack arrives much later; the lease still counts from the send time.
    r.step(1, HeartbeatAck{ballot, heartbeats[0].second.sequence, 0}, now + 7 * MS);
    const double drift = o.maxClockDrift;
    const Nanos expected =
        broken ? sentAt + o.leaderLeaseNs
               : sentAt + static_cast<Nanos>(std::floor(static_cast<double>(o.leaderLeaseNs) *
                                                        (1 - drift) / (1 + drift)));
    CHECK(r.leaseHeldUntil() == expected);
    if (!broken) CHECK(r.leaseHeldUntil() < sentAt + o.leaderLeaseNs);
  }
}

TEST_CASE("an acceptor that acked a heartbeat refuses other proposers' Phase 1 for one lease") {
  Options o = testOptions(1, 3);
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Heartbeat{{1, 0}, 1, 0}, now);
  drain(r);
  r.step(2, Prepare{{2, 2}, 1}, now + o.leaderLeaseNs - 1);
  auto readies = drain(r);
  CHECK(sentIn<Promise>(readies).empty());
  CHECK(r.promisedBallot() == Ballot{1, 0});
  // The lease holder itself may move to a higher ballot.
  r.step(0, Prepare{{3, 0}, 1}, now + 1);
  CHECK(sentIn<Promise>(drain(r)).size() == 1);
  // Others only once the lease is over.
  r.step(2, Prepare{{4, 2}, 1}, now + o.leaderLeaseNs);
  CHECK(sentIn<Promise>(drain(r)).size() == 1);
}

TEST_CASE("a restarted acceptor refuses Phase 1 for lease plus drift") {
  Options o = testOptions(1, 3);
  o.startTimeNs = 1000 * MS;
  PersistedState state;
  state.promised = {3, 0};
  Single s(o, state);
  Replica& r = *s.replica;
  const Nanos window =
      static_cast<Nanos>(std::ceil(static_cast<double>(o.leaderLeaseNs) * (1 + o.maxClockDrift)));
  r.step(2, Prepare{{4, 2}, 1}, o.startTimeNs + window - 1);
  CHECK(sentIn<Promise>(drain(r)).empty());
  CHECK(r.promisedBallot() == Ballot{3, 0});
  // Its own campaign waits as well.
  r.tick(o.startTimeNs + window - 1);
  drain(r);
  CHECK(r.role() != Role::CANDIDATE);
  r.step(2, Prepare{{4, 2}, 1}, o.startTimeNs + window);
  CHECK(sentIn<Promise>(drain(r)).size() == 1);
}

TEST_CASE("lease reads wait until the slots reported in Phase 1 are decided") {
  for (bool broken : {false, true}) {
    Options o = testOptions(0, 3);
    if (broken) o.ruleBreaker = RuleBreaker::LEASE_READ_IGNORES_PROMISED_SLOTS;
    Single s(o);
    Replica& r = *s.replica;
    Nanos now = 0;
    Promise p;
    p.accepted = {LogEntry{1, {1, 1}, values({"w"})}};
    const Ballot ballot = electByScript(r, 3, now, {p});
    auto readies = drain(r);
    auto heartbeats = sentIn<Heartbeat>(readies);
    REQUIRE(!heartbeats.empty());
    r.step(1, HeartbeatAck{ballot, heartbeats[0].second.sequence, 0}, now);
    REQUIRE(r.leaseHeldUntil() > now);
    REQUIRE(r.decidedSlot() == 0);
    REQUIRE(r.read(1, now).status == ReadStart::PENDING);
    readies = drain(r);
    auto reads = readsIn(readies);
    if (broken) {
      REQUIRE(reads.size() == 1);
      CHECK(reads[0].readIndex == 0);  // stale: slot 1 may hold an acknowledged write
      continue;
    }
    CHECK(reads.empty());
    // A leadership confirmation round went out for the read (read-index); ack it.
    auto confirm = sentIn<Heartbeat>(readies);
    REQUIRE(!confirm.empty());
    for (auto& [to, hb] : confirm)
      r.step(to, HeartbeatAck{ballot, hb.sequence, 0}, now);
    CHECK(readsIn(drain(r)).empty());  // still waits for slot 1
    // Slot 1: decided by a follower's vote plus the leader's durable one.
    r.step(1, Accepted{ballot, 1}, now);
    readies = drain(r);
    CHECK(r.decidedSlot() == 1);
    reads = readsIn(readies);
    REQUIRE(reads.size() == 1);
    CHECK(reads[0].ok);
    CHECK(reads[0].readIndex == 1);
  }
}

TEST_CASE(
    "read-index: without a lease the leader confirms leadership with a round sent after "
    "the read") {
  Single s(testOptions(0, 3));
  Replica& r = *s.replica;
  Nanos now = 0;
  const Ballot ballot = electByScript(r, 3, now);
  auto first = sentIn<Heartbeat>(drain(r));
  REQUIRE(r.leaseHeldUntil() == 0);
  REQUIRE(r.read(9, now).status == ReadStart::PENDING);
  // An ack of the round sent before the read does not confirm it.
  r.step(1, HeartbeatAck{ballot, first[0].second.sequence, 0}, now);
  auto readies = drain(r);
  CHECK(readsIn(readies).empty());
  auto confirm = sentIn<Heartbeat>(readies);
  REQUIRE(!confirm.empty());
  CHECK(confirm[0].second.sequence > first[0].second.sequence);
  r.step(2, HeartbeatAck{ballot, confirm[0].second.sequence, 0}, now);
  auto reads = readsIn(drain(r));
  REQUIRE(reads.size() == 1);
  CHECK(reads[0].id == 9);
  CHECK(reads[0].ok);
}

TEST_CASE("a follower's read asks the leader for a read index and waits until it applied it") {
  Single s(testOptions(1, 3));
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Heartbeat{{1, 0}, 1, 0}, now);
  drain(r);
  REQUIRE(r.read(3, now).status == ReadStart::PENDING);
  auto requests = sentIn<ReadIndexRequest>(drain(r));
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].first == 0);
  r.step(0, ReadIndexReply{requests[0].second.requestId, true, 1}, now);
  CHECK(readsIn(drain(r)).empty());  // slot 1 not applied yet
  r.step(0, Accept{{1, 0}, 1, values({"a"}), 1}, now);
  auto readies = drain(r);
  auto reads = readsIn(readies);
  REQUIRE(reads.size() == 1);
  CHECK(reads[0].ok);
  CHECK(reads[0].readIndex == 1);
  CHECK(appliedIn(readies).size() == 1);
  // Without a leader it fails at once with NOT_LEADER.
  Single lonely(testOptions(2, 3));
  CHECK(lonely.replica->read(4, now).status == ReadStart::NOT_LEADER);
}

TEST_CASE("a leader steps down on a higher ballot and drops the commands still queued") {
  Options o = testOptions(0, 3);
  o.pipelineWindow = 1;
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 0;
  electByScript(r, 3, now);
  drain(r);
  REQUIRE(r.propose("in-slot", now).status == ProposeResult::QUEUED);
  drain(r);
  REQUIRE(r.propose("queued", now).status == ProposeResult::QUEUED);
  REQUIRE(r.read(1, now).status == ReadStart::PENDING);
  r.step(2, Rejected{{9, 2}}, now);
  CHECK(r.role() == Role::FOLLOWER);
  auto readies = drain(r);
  std::vector<std::string> dropped;
  for (auto& ready : readies) {
    dropped.insert(dropped.end(), ready.droppedCommands.begin(), ready.droppedCommands.end());
  }
  CHECK(dropped == std::vector<std::string>{"queued"});
  auto reads = readsIn(readies);
  REQUIRE(reads.size() == 1);
  CHECK(reads[0].failure == ReadFailure::NOT_LEADER);
  CHECK(r.propose("late", now).status == ProposeResult::NOT_LEADER);

  // A heartbeat of a higher ballot makes it follow that leader.
  Single t(testOptions(0, 3));
  Nanos later = 0;
  electByScript(*t.replica, 3, later);
  drain(*t.replica);
  t.replica->step(1, Heartbeat{{20, 1}, 1, 0}, later);
  CHECK(t.replica->role() == Role::FOLLOWER);
  CHECK(t.replica->knownLeader() == MemberIndex{1});
  CHECK(t.replica->propose("x", later).leaderHint == MemberIndex{1});
}

TEST_CASE("the pipeline window bounds the slots in flight") {
  Options o = testOptions(0, 3);
  o.pipelineWindow = 2;
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 0;
  const Ballot ballot = electByScript(r, 3, now);
  drain(r);
  std::vector<Slot> started;
  for (const char* c : {"a", "b", "c"}) {
    REQUIRE(r.propose(c, now).status == ProposeResult::QUEUED);
    for (auto& [to, m] : sentIn<Accept>(drain(r))) {
      if (to == 1) started.push_back(m.slot);
    }
  }
  CHECK(started == std::vector<Slot>{1, 2});
  CHECK(r.queuedCommands() == 1);
  r.step(1, Accepted{ballot, 1}, now);
  auto more = sentIn<Accept>(drain(r));
  REQUIRE(more.size() == 2);
  CHECK(more[0].second.slot == 3);
  CHECK(more[0].second.value == values({"c"}));
}

TEST_CASE("queued commands are batched into one slot, within the batch limits") {
  Options o = testOptions(0, 3);
  o.maxBatchCommands = 4;
  o.maxBatchBytes = 64;
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 0;
  electByScript(r, 3, now);
  drain(r);
  for (int i = 0; i < 10; ++i)
    REQUIRE(r.propose("c" + std::to_string(i), now).status == 0);
  std::map<Slot, Value> slots;
  for (auto& [to, m] : sentIn<Accept>(drain(r)))
    slots[m.slot] = m.value;
  REQUIRE(slots.size() == 3);
  CHECK(slots[1].commands.size() == 4);
  CHECK(slots[2].commands.size() == 4);
  CHECK(slots[3].commands.size() == 2);
  CHECK(r.propose(std::string(65, 'x'), now).status == ProposeResult::TOO_LARGE);
  // Byte limit: two 40-byte commands do not share a 64-byte slot.
  REQUIRE(r.propose(std::string(40, 'y'), now).status == ProposeResult::QUEUED);
  REQUIRE(r.propose(std::string(40, 'z'), now).status == ProposeResult::QUEUED);
  slots.clear();
  for (auto& [to, m] : sentIn<Accept>(drain(r)))
    slots[m.slot] = m.value;
  CHECK(slots.size() == 2);
}

TEST_CASE("a follower too far behind fetches decided slots from the leader") {
  Options o = testOptions(1, 3);
  o.maxFetchSlots = 2;
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Heartbeat{{1, 0}, 1, 3}, now);
  auto fetch = sentIn<FetchRequest>(drain(r));
  REQUIRE(fetch.size() == 1);
  // Answer by hand, two slots at a time as a maxFetchSlots=2 peer would.
  FetchReply reply;
  reply.fromSlot = 1;
  reply.decidedSlot = 3;
  reply.entries = {LogEntry{1, {1, 0}, values({"a"})}, LogEntry{2, {1, 0}, values({"b"})}};
  r.step(0, reply, now);
  auto readies = drain(r);
  CHECK(r.decidedSlot() == 2);
  auto again = sentIn<FetchRequest>(readies);
  REQUIRE(again.size() == 1);
  CHECK(again[0].second.fromSlot == 3);
  // A peer that discarded the slots answers "beyond my log": the snapshot hook fires.
  FetchReply beyond;
  beyond.fromSlot = 3;
  beyond.logStart = 10;
  beyond.decidedSlot = 20;
  r.step(2, beyond, now);
  readies = drain(r);
  bool hook = false;
  for (auto& ready : readies)
    hook |= ready.snapshotNeeded.has_value();
  CHECK(hook);
}

TEST_CASE("a fetch request is answered with decided slots only") {
  Options three = testOptions(1, 3);
  Single f(three);
  Replica& follower = *f.replica;
  Nanos now = 500 * MS;
  follower.step(0, Accept{{1, 0}, 1, values({"a"}), 0}, now);
  follower.step(0, Accept{{1, 0}, 2, values({"b"}), 1}, now);  // decides slot 1 only
  drain(follower);
  REQUIRE(follower.decidedSlot() == 1);
  follower.step(2, FetchRequest{1}, now);
  auto replies = sentIn<FetchReply>(drain(follower));
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].second.decidedSlot == 1);
  REQUIRE(replies[0].second.entries.size() == 1);
  CHECK(replies[0].second.entries[0].value == values({"a"}));
}

TEST_CASE("bad peer input is ignored and counted") {
  Single s(testOptions(1, 3));
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(7, Heartbeat{{1, 0}, 1, 0}, now);              // no such member
  r.step(1, Heartbeat{{1, 1}, 1, 0}, now);              // from itself
  r.step(0, Heartbeat{{1, 2}, 1, 0}, now);              // ballot of another member
  r.step(0, Accept{{1, 0}, 0, values({"a"}), 0}, now);  // slot 0
  r.step(0, Prepare{{0, 0}, 1}, now);                   // round 0
  CHECK(r.ignoredMessages() == 5);
  CHECK(r.promisedBallot() == Ballot{});
  CHECK(r.knownLeader() == std::nullopt);
  // Promise entries out of order are refused as a whole.
  Single c(testOptions(0, 3));
  Nanos t = 0;
  c.replica->tick(t += 500 * MS);
  auto pre = sentIn<PreVoteRequest>(drain(*c.replica));
  for (auto& [peer, m] : pre)
    c.replica->step(peer, PreVoteReply{m.round, true, 0}, t);
  auto prepares = sentIn<Prepare>(drain(*c.replica));
  REQUIRE(!prepares.empty());
  Promise bad;
  bad.ballot = prepares[0].second.ballot;
  bad.accepted = {LogEntry{2, {1, 1}, {}}, LogEntry{1, {1, 1}, {}}};
  c.replica->step(1, bad, t);
  CHECK(c.replica->role() == Role::CANDIDATE);
  CHECK(c.replica->ignoredMessages() == 1);
}

TEST_CASE("a three-member group elects one leader and every member applies the same slots") {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  for (int i = 0; i < 20; ++i) {
    REQUIRE(g[leader].propose("c" + std::to_string(i), g.now).status == ProposeResult::QUEUED);
    if (i % 3 == 0) g.deliverAll();
  }
  REQUIRE(g.runUntil([&] { return g.everyMemberApplied(20); }));
  CHECK(g.applied[0] == g.applied[1]);
  CHECK(g.applied[1] == g.applied[2]);
  // A follower's read goes through the leader.
  const MemberIndex follower = (leader + 1) % 3;
  REQUIRE(g[follower].read(77, g.now).status == ReadStart::PENDING);
  REQUIRE(g.runUntil([&] { return !g.reads[follower].empty(); }));
  CHECK(g.reads[follower][0].ok);
  CHECK(g.reads[follower][0].readIndex == g[leader].decidedSlot());

  // The leader crashes (stops); the others elect a new one with a higher ballot.
  const Ballot old = g[leader].ballot();
  auto dead = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == leader || m.to == leader;
  };
  REQUIRE(g.runUntil(
      [&] {
        for (MemberIndex i = 0; i < 3; ++i) {
          if (i != leader && g[i].role() == Role::LEADER) return true;
        }
        return false;
      },
      5000 * MS, dead));
  for (MemberIndex i = 0; i < 3; ++i) {
    if (i != leader && g[i].role() == Role::LEADER) CHECK(g[i].ballot() > old);
  }
}

}  // namespace
}  // namespace synod::election

namespace synod::election {
namespace {

TEST_CASE("applied slots beyond the retention are discarded, and fetches for them say so") {
  Options o = testOptions(0, 1);
  o.retainedLogSlots = 2;
  Single s(o);
  Replica& r = *s.replica;
  r.tick(0);
  drain(r);
  std::optional<Slot> discarded;
  for (int i = 0; i < 6; ++i) {
    r.propose("c" + std::to_string(i), 0);
    for (const Ready& ready : drain(r)) {
      if (ready.discardLogThrough) discarded = ready.discardLogThrough;
    }
  }
  REQUIRE(r.appliedSlot() == 6);
  REQUIRE(discarded);
  CHECK(*discarded <= r.appliedSlot() - o.retainedLogSlots);
  CHECK(r.logStart() == *discarded + 1);
}

TEST_CASE("a candidate behind an acceptor's discarded log gives up and fetches") {
  Single s(testOptions(0, 3));
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.tick(now);
  auto pre = sentIn<PreVoteRequest>(drain(r));
  for (auto& [peer, m] : pre)
    r.step(peer, PreVoteReply{m.round, true, 0}, now);
  auto prepares = sentIn<Prepare>(drain(r));
  REQUIRE(r.role() == Role::CANDIDATE);
  Promise behind;
  behind.ballot = prepares[0].second.ballot;
  behind.fromSlot = prepares[0].second.fromSlot;
  behind.logStart = 50;  // slots 1..49 were decided, applied and discarded there
  behind.decidedSlot = 60;
  r.step(1, behind, now);
  // It cannot know what slots 1..49 hold, so it must not lead (it would fill them with no-ops).
  CHECK(r.role() == Role::FOLLOWER);
  auto fetches = sentIn<FetchRequest>(drain(r));
  REQUIRE(fetches.size() == 1);
  CHECK(fetches[0].first == 1);
  CHECK(fetches[0].second.fromSlot == 1);
}

}  // namespace
}  // namespace synod::election

namespace synod::election {
namespace {

TEST_CASE("a hand-off elects the target well within an election timeout") {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader() && g[*g.leader()].leaseHeldUntil() > g.now; }));
  const MemberIndex old = *g.leader();
  const Ballot oldBallot = g[old].ballot();
  // Every member has heard the leader recently: only a hand-off can elect someone this soon.
  g.now += 4 * MS;
  g.tickAll();
  g.deliverAll();
  const MemberIndex target = (old + 2) % 3;
  const Nanos start = g.now;
  REQUIRE(g[old].transferLeadership(target, g.now));
  CHECK(g[old].role() == Role::FOLLOWER);
  CHECK(g[old].leaseHeldUntil() == 0);
  CHECK(!g[old].knownLeader());
  REQUIRE(g.runUntil([&] { return g[target].role() == Role::LEADER; }, 1000 * MS));
  const Nanos took = g.now - start;
  MESSAGE("hand-off took ", took / MS, " ms of simulated time");
  CHECK(took < testOptions(0, 3).electionTimeoutNs / 2);
  CHECK(g[target].ballot() > oldBallot);
  REQUIRE(g.runUntil([&] { return g[target].leaseHeldUntil() > g.now; }, 1000 * MS));
  for (MemberIndex i = 0; i < 3; ++i) {
    CHECK(g[i].knownLeader() == target);
    if (i != target) CHECK(g[i].leaseHeldUntil() == 0);
  }
  REQUIRE(g[target].propose("after", g.now).status == ProposeResult::QUEUED);
  REQUIRE(g.runUntil([&] {
    return !g.applied[old].empty() &&
           g.applied[old].back().value.commands == std::vector<std::string>{"after"};
  }));
}

TEST_CASE("after a hand-off the old leader serves no lease read and drops its queued commands") {
  for (bool broken : {false, true}) {
    Options o = testOptions(0, 3);
    if (broken) o.ruleBreaker = RuleBreaker::HANDOFF_KEEPS_LEASE;
    Single s(o);
    Replica& r = *s.replica;
    Nanos now = 0;
    const Ballot ballot = electByScript(r, 3, now);
    auto heartbeats = sentIn<Heartbeat>(drain(r));
    REQUIRE(heartbeats.size() == 2);
    r.step(1, HeartbeatAck{ballot, heartbeats[0].second.sequence, 0}, now + 1);
    r.step(2, HeartbeatAck{ballot, heartbeats[0].second.sequence, 0}, now + 2);
    REQUIRE(r.leaseHeldUntil() > now + 2);
    // Window full of nothing: the command waits in the queue until the next ready().
    REQUIRE(r.propose("queued", now + 3).status == ProposeResult::QUEUED);
    REQUIRE(r.read(5, now + 3).status == ReadStart::PENDING);
    // No target named: the most up-to-date peer, the most recently heard among equals.
    REQUIRE(r.transferLeadership(std::nullopt, now + 3));
    auto readies = drain(r);
    auto handoffs = sentIn<Handoff>(readies);
    REQUIRE(handoffs.size() == 2);
    for (auto& [to, m] : handoffs) {
      CHECK(m.ballot == ballot);
      CHECK(m.target == 2);
    }
    if (broken) {
      CHECK(r.leaseHeldUntil() > now + 3);
      continue;
    }
    CHECK(r.leaseHeldUntil() == 0);
    CHECK(r.role() == Role::FOLLOWER);
    std::vector<std::string> dropped;
    for (const Ready& ready : readies)
      dropped.insert(dropped.end(), ready.droppedCommands.begin(), ready.droppedCommands.end());
    CHECK(dropped == std::vector<std::string>{"queued"});
    auto reads = readsIn(readies);
    REQUIRE(reads.size() == 1);
    CHECK(!reads[0].ok);
    CHECK(reads[0].failure == ReadFailure::NOT_LEADER);
    CHECK(r.read(6, now + 4).status == ReadStart::NOT_LEADER);
    // It counts the hand-off as leader contact: no pre-vote of its own before an election timeout.
    r.tick(now + 3 + o.electionTimeoutNs - 1);
    CHECK(sentIn<PreVoteRequest>(drain(r)).empty());
    // It released its own grant: the target's Prepare gets its promise at once.
    r.step(2, Prepare{{ballot.round + 1, 2}, 1}, now + 4);
    CHECK(sentIn<Promise>(drain(r)).size() == 1);
  }
}

TEST_CASE("a transfer is refused, changing nothing, unless a leader names a reachable peer") {
  Options o = testOptions(1, 3);
  Single follower(o);
  CHECK(!follower.replica->transferLeadership(std::nullopt, 500 * MS));
  CHECK(!follower.replica->transferLeadership(MemberIndex{0}, 500 * MS));

  Single s(testOptions(0, 3));
  Replica& r = *s.replica;
  Nanos now = 0;
  const Ballot ballot = electByScript(r, 3, now);
  drain(r);
  CHECK(!r.transferLeadership(MemberIndex{0}, now));  // itself
  CHECK(!r.transferLeadership(MemberIndex{3}, now));  // no such member
  // Nobody heard from within an election timeout.
  CHECK(!r.transferLeadership(MemberIndex{1}, now + testOptions(0, 3).electionTimeoutNs));
  CHECK(!r.transferLeadership(std::nullopt, now + testOptions(0, 3).electionTimeoutNs));
  CHECK(r.role() == Role::LEADER);
  CHECK(r.ballot() == ballot);
  CHECK(sentIn<Handoff>(drain(r)).empty());
}

TEST_CASE("a Handoff releases only the grant made to that leadership") {
  Options o = testOptions(1, 3);
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Heartbeat{{1, 0}, 1, 0}, now);
  r.step(0, Prepare{{3, 0}, 1}, now);
  r.step(0, Heartbeat{{3, 0}, 1, 0}, now);
  drain(r);
  // A Handoff from member 0's older leadership, delayed: the newer grant stands, no campaign.
  r.step(0, Handoff{{1, 0}, 1}, now + 1);
  CHECK(sentIn<Prepare>(drain(r)).empty());
  CHECK(r.role() == Role::FOLLOWER);
  r.step(2, Prepare{{4, 2}, 1}, now + 2);
  CHECK(sentIn<Promise>(drain(r)).empty());
  // From someone who holds no grant here: nothing changes either.
  r.step(2, Handoff{{3, 2}, 1}, now + 3);
  CHECK(sentIn<Prepare>(drain(r)).empty());
  r.step(2, Prepare{{4, 2}, 1}, now + 4);
  CHECK(sentIn<Promise>(drain(r)).empty());
  CHECK(r.knownLeader() == MemberIndex{0});
  // Malformed: the ballot is not the sender's, or the target is no member.
  const uint64_t ignored = r.ignoredMessages();
  r.step(2, Handoff{{3, 0}, 1}, now + 5);
  r.step(0, Handoff{{3, 0}, 7}, now + 5);
  CHECK(r.ignoredMessages() == ignored + 2);
  r.step(2, Prepare{{4, 2}, 1}, now + 5);
  CHECK(sentIn<Promise>(drain(r)).empty());
  // The Handoff that ends the current leadership, naming another member: the grant is released
  // (that member's Prepare is promised at once) but this member does not campaign.
  r.step(0, Handoff{{3, 0}, 2}, now + 6);
  CHECK(sentIn<Prepare>(drain(r)).empty());
  CHECK(!r.knownLeader());
  r.step(2, Prepare{{4, 2}, 1}, now + 7);
  CHECK(sentIn<Promise>(drain(r)).size() == 1);
}

TEST_CASE("the target of a Handoff campaigns at once, without pre-vote") {
  Options o = testOptions(1, 3);
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 500 * MS;
  r.step(0, Heartbeat{{2, 0}, 1, 0}, now);
  drain(r);
  r.step(0, Handoff{{2, 0}, 1}, now + 1);
  auto readies = drain(r);
  CHECK(sentIn<PreVoteRequest>(readies).empty());
  auto prepares = sentIn<Prepare>(readies);
  CHECK(prepares.size() == 2);
  CHECK(r.role() == Role::CANDIDATE);
  for (auto& [to, m] : prepares)
    CHECK(m.ballot == Ballot{3, 1});
}

TEST_CASE("a Handoff target in its restart window campaigns as soon as the window ends") {
  Options o = testOptions(1, 3);
  o.startTimeNs = 1000 * MS;
  Single s(o);
  Replica& r = *s.replica;
  const Nanos start = o.startTimeNs;
  const Nanos window =
      static_cast<Nanos>(std::ceil(static_cast<double>(o.leaderLeaseNs) * (1 + o.maxClockDrift)));
  r.step(0, Heartbeat{{2, 0}, 1, 0}, start + 5 * MS);
  drain(r);
  r.step(0, Handoff{{2, 0}, 1}, start + 6 * MS);
  CHECK(sentIn<Prepare>(drain(r)).empty());
  r.tick(start + window - 1);
  CHECK(sentIn<Prepare>(drain(r)).empty());
  r.tick(start + window);
  auto readies = drain(r);
  CHECK(sentIn<PreVoteRequest>(readies).empty());
  CHECK(sentIn<Prepare>(readies).size() == 2);
  CHECK(r.role() == Role::CANDIDATE);
}

TEST_CASE("a deferred hand-off campaign is dropped once another leadership shows up") {
  Options o = testOptions(1, 3);
  o.startTimeNs = 1000 * MS;
  Single s(o);
  Replica& r = *s.replica;
  const Nanos start = o.startTimeNs;
  r.step(0, Heartbeat{{2, 0}, 1, 0}, start + 5 * MS);
  r.step(0, Handoff{{2, 0}, 1}, start + 6 * MS);
  drain(r);
  r.step(2, Heartbeat{{3, 2}, 1, 0}, start + 7 * MS);  // member 2 leads now
  drain(r);
  // Past the restart window, within the election timeout of member 2's heartbeat.
  r.tick(start + 45 * MS);
  CHECK(sentIn<Prepare>(drain(r)).empty());
  CHECK(r.role() == Role::FOLLOWER);
  CHECK(r.knownLeader() == MemberIndex{2});
}

}  // namespace
}  // namespace synod::election

// ---------------------------------------------------------------------------------------------
// Recovery from an empty data dir, snapshots, log holds

namespace synod::election {
namespace {

// Replaces member `i` of `g` by a replica that lost its state (a wiped data dir), starting now.
void wipe(Group& g, MemberIndex i) {
  Options o = testOptions(i, static_cast<uint32_t>(g.replicas.size()));
  o.recovering = true;
  o.startTimeNs = g.now;
  g.replicas[i] = std::make_unique<Replica>(o, PersistedState{}, g.prngs[i]);
  g.applied[i].clear();
}

TEST_CASE(
    "a recovering member neither promises, votes, acks heartbeats, grants pre-votes nor "
    "campaigns") {
  Options o = testOptions(2, 3);
  o.recovering = true;
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 0;
  for (int i = 0; i < 100; ++i) {
    now += 10 * MS;
    r.tick(now);
  }
  auto readies = drain(r);
  CHECK(sentIn<PreVoteRequest>(readies).empty());
  CHECK(sentIn<Prepare>(readies).empty());
  CHECK(sentIn<RecoveryQuery>(readies).size() >= 2);  // asks both others, again and again
  CHECK(r.role() == Role::FOLLOWER);

  r.step(0, PreVoteRequest{5, 0}, now);
  r.step(0, Prepare{Ballot{5, 0}, 1}, now);
  r.step(0, Accept{Ballot{5, 0}, 1, values({"x"}), 0}, now);
  r.step(1, Heartbeat{Ballot{6, 1}, 7, 0}, now);
  readies = drain(r);
  CHECK(sentIn<Promise>(readies).empty());
  CHECK(sentIn<Accepted>(readies).empty());
  // A heartbeat ack is a lease vote: a member that may have forgotten a newer promise gives none.
  CHECK(sentIn<HeartbeatAck>(readies).empty());
  CHECK(r.knownLeader() == std::optional<MemberIndex>(1));
  auto preVotes = sentIn<PreVoteReply>(readies);
  REQUIRE(preVotes.size() == 1);
  CHECK_FALSE(preVotes[0].second.granted);
  for (const Ready& ready : readies)
    CHECK(ready.accepted.empty());  // no vote stored either
  CHECK(r.recovering());
}

TEST_CASE("a brand-new group of empty members starts by itself") {
  Group g(3, [](Options& o) { o.recovering = true; });
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  for (MemberIndex i = 0; i < 3; ++i)
    CHECK_FALSE(g[i].recovering());
  const MemberIndex leader = *g.leader();
  g[leader].propose("a", g.now);
  REQUIRE(g.runUntil([&] {
    return g.applied[0].size() == 1 && g.applied[1].size() == 1 && g.applied[2].size() == 1;
  }));
}

TEST_CASE("recovery waits for answers from a majority of the other members") {
  Group g(3, [](Options& o) { o.recovering = true; });
  // Member 2 is down: member 0 hears only member 1, one answer of the two it needs.
  auto down = [](MemberIndex from, const OutgoingMessage& m) { return from == 2 || m.to == 2; };
  g.runUntil([] { return false; }, 2000 * MS, down);
  CHECK(g[0].recovering());
  CHECK(g[1].recovering());
  CHECK_FALSE(g.leader().has_value());
  CHECK(g[0].recoveryProgress().answers == 1);
  CHECK(g[0].recoveryProgress().answersNeeded == 2);
  // Member 2 comes up: everybody is new.
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
}

TEST_CASE("a wiped member catches up, takes the highest promise and waits before it votes") {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  for (size_t i = 1; i <= 5; ++i) {
    g[leader].propose("w" + std::to_string(i), g.now);
    REQUIRE(g.runUntil([&] {
      return g.applied[0].size() == i && g.applied[1].size() == i && g.applied[2].size() == i;
    }));
  }
  const MemberIndex wiped = leader == 2 ? 1 : 2;
  const Ballot leaderBallot = g[leader].ballot();
  const Nanos wipedAt = g.now;
  wipe(g, wiped);
  Replica& w = g[wiped];
  CHECK(w.recovering());

  // It learns the others' state first; it may not vote during the window for lost promises.
  bool recoveredEarly = false;
  RecoveryOutcome outcome = RecoveryOutcome::NEW_GROUP;
  bool recovered = false;
  const Nanos window = static_cast<Nanos>(std::ceil(2.0 * 50 * MS * 1.05 / 0.95));
  for (int step = 0; step < 2000 && !recovered; ++step) {
    g.now += 2 * MS;
    for (MemberIndex i = 0; i < 3; ++i) {
      g[i].tick(g.now);
      while (g[i].hasReady()) {
        Ready r = g[i].ready();
        for (auto& m : r.sendBeforePersist)
          g.network.emplace_back(i, m);
        for (auto& e : r.apply)
          g.applied[i].push_back(e);
        for (auto& m : r.sendAfterPersist)
          g.network.emplace_back(i, m);
        if (i == wiped && r.recovered) {
          recovered = true;
          outcome = *r.recovered;
          recoveredEarly = g.now < wipedAt + window;
        }
        g[i].advance(r);
      }
    }
    g.deliverAll();
    // deliverAll pumps too, and may take the Ready that reports it.
    if (!recovered && !w.recovering()) {
      recovered = true;
      outcome = RecoveryOutcome::CAUGHT_UP;
      recoveredEarly = g.now < wipedAt + window;
    }
  }
  REQUIRE(recovered);
  CHECK_FALSE(recoveredEarly);
  CHECK(outcome == RecoveryOutcome::CAUGHT_UP);
  CHECK(w.promisedBallot() >= leaderBallot);
  CHECK(w.decidedSlot() >= 5);
  CHECK(g.applied[wiped].size() >= 5);

  // Now it votes again: with the old leader's partner cut off, it completes a quorum.
  const MemberIndex other = 3 - leader - wiped;
  g[leader].propose("after", g.now);
  auto cutOther = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == other || m.to == other;
  };
  REQUIRE(g.runUntil([&] { return g[leader].decidedSlot() >= 6 && g.applied[wiped].size() >= 6; },
                     2000 * MS, cutOther));
}

// The reason recovery exists. Slot s is chosen by the leader and one follower; the third member
// missed it. The follower loses its data dir and the leader goes down: the member that missed s and
// the wiped one are a majority, and without recovery they would fill s with a no-op.
void chosenValueSurvivesWipe(bool recoveryOn) {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  const MemberIndex keeper = (leader + 1) % 3;  // votes for s, then is wiped
  const MemberIndex lagger = (leader + 2) % 3;  // never hears of s
  g[leader].propose("v", g.now);
  auto toLagger = [&](MemberIndex, const OutgoingMessage& m) { return m.to == lagger; };
  REQUIRE(g.runUntil([&] { return g.applied[leader].size() == 1; }, 1000 * MS, toLagger));
  const LogEntry chosen = g.applied[leader].back();

  Options o = testOptions(keeper, 3);
  o.recovering = recoveryOn;
  o.startTimeNs = g.now;
  g.replicas[keeper] = std::make_unique<Replica>(o, PersistedState{}, g.prngs[keeper]);
  g.applied[keeper].clear();
  auto leaderDown = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == leader || m.to == leader;
  };
  // Without the old leader, a write goes to whoever leads now, if anyone can.
  auto newLeader = [&]() -> std::optional<MemberIndex> {
    for (MemberIndex i : {keeper, lagger}) {
      if (g[i].role() == Role::LEADER) return i;
    }
    return std::nullopt;
  };
  if (g.runUntil([&] { return newLeader().has_value(); }, 3000 * MS, leaderDown)) {
    g[*newLeader()].propose("w", g.now);
    g.runUntil([] { return false; }, 500 * MS, leaderDown);
  }
  // The old leader comes back; everybody settles.
  REQUIRE(g.runUntil([&] {
    for (MemberIndex i = 0; i < 3; ++i) {
      if (g[i].appliedSlot() < chosen.slot) return false;
    }
    return true;
  }));
  for (MemberIndex i = 0; i < 3; ++i) {
    for (const LogEntry& entry : g.applied[i]) {
      if (entry.slot == chosen.slot) CHECK_MESSAGE(entry.value == chosen.value, "member ", i);
    }
  }
}

TEST_CASE("a wiped member cannot help a lagging one overwrite a chosen value") {
  chosenValueSurvivesWipe(true);
}

TEST_CASE("recovery adopts the highest promise a majority of the others reports") {
  Options o = testOptions(2, 3);
  o.recovering = true;
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 0;
  r.tick(now);
  auto queries = sentIn<RecoveryQuery>(drain(r));
  REQUIRE(queries.size() == 2);
  const uint64_t nonce = queries[0].second.nonce;
  // A reply to another round (an earlier life's query) does not count.
  r.step(0, RecoveryReply{nonce + 2, false, false, Ballot{50, 0}, 0, 0}, now);
  CHECK(r.recoveryProgress().answers == 0);
  r.step(0, RecoveryReply{nonce, false, false, Ballot{3, 0}, 4, 4}, now);
  r.step(1, RecoveryReply{nonce, false, false, Ballot{9, 1}, 2, 6}, now);
  // Member 1 promised ballot 9.1 (perhaps to a candidate that used this member's lost promise):
  // nothing below it may be accepted here again.
  CHECK(r.promisedBallot() == Ballot{9, 1});
  auto readies = drain(r);
  bool persisted = false;
  for (const Ready& ready : readies)
    persisted = persisted || ready.promised == Ballot{9, 1};
  CHECK(persisted);
  CHECK(r.recoveryProgress().targetKnown);
  CHECK(r.recoveryProgress().targetSlot == 6);  // the highest slot anyone holds
  CHECK(r.recovering());
  // Ballot 3.0 leads in its own mind: its Accepts are refused.
  r.step(0, Accept{Ballot{3, 0}, 5, values({"x"}), 4}, now);
  auto refused = sentIn<Rejected>(drain(r));
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].second.promised == Ballot{9, 1});
}

TEST_CASE("a leader fills the slots a recovering member waits for with no-ops") {
  Single s(testOptions(0, 3));
  Replica& r = *s.replica;
  Nanos now = 0;
  electByScript(r, 3, now);
  drain(r);
  const Slot before = r.decidedSlot();
  r.step(2, RecoveryQuery{77, before + 3}, now);
  auto readies = drain(r);
  auto replies = sentIn<RecoveryReply>(readies);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].second.nonce == 77);
  CHECK_FALSE(replies[0].second.recovering);
  auto accepts = sentIn<Accept>(readies);
  std::set<Slot> slots;
  for (auto& [to, m] : accepts) {
    CHECK(m.value.commands.empty());
    slots.insert(m.slot);
  }
  CHECK(slots.size() == 3);
  CHECK(*slots.rbegin() == before + 3);
}

TEST_CASE("an installed snapshot moves the applied slot, drops the log below and fetches on") {
  Single s(testOptions(1, 3));
  Replica& r = *s.replica;
  Nanos now = 100 * MS;
  // Votes for slots 3 and 120 held before the snapshot at slot 100 arrives.
  r.step(0, Accept{Ballot{1, 0}, 3, values({"old"}), 0}, now);
  r.step(0, Accept{Ballot{1, 0}, 120, values({"new"}), 0}, now);
  r.step(0, Heartbeat{Ballot{1, 0}, 1, 150}, now);
  drain(r);
  r.installSnapshot(100, now);
  CHECK(r.appliedSlot() == 100);
  CHECK(r.decidedSlot() == 100);
  CHECK(r.logStart() == 101);
  auto readies = drain(r);
  auto fetches = sentIn<FetchRequest>(readies);
  REQUIRE(fetches.size() >= 1);
  CHECK(fetches.back().second.fromSlot == 101);
  // Its vote above the snapshot is still reported to a candidate.
  r.step(2, Prepare{Ballot{9, 2}, 101}, now + 1000 * MS);
  auto promises = sentIn<Promise>(drain(r));
  REQUIRE(promises.size() == 1);
  REQUIRE(promises[0].second.accepted.size() == 1);
  CHECK(promises[0].second.accepted[0].slot == 120);
  CHECK(promises[0].second.logStart == 101);
}

TEST_CASE("a log hold keeps slots a snapshot receiver will fetch") {
  Options o = testOptions(0, 1);
  o.retainedLogSlots = 2;
  Single s(o);
  Replica& r = *s.replica;
  r.tick(0);
  drain(r);
  r.holdLogFrom(3);
  for (int i = 0; i < 40; ++i) {
    r.propose("c" + std::to_string(i), 0);
    drain(r);
  }
  CHECK(r.appliedSlot() == 40);
  CHECK(r.logStart() <= 3);
  r.holdLogFrom(std::nullopt);
  for (int i = 0; i < 3; ++i) {
    r.propose("d" + std::to_string(i), 0);
    drain(r);
  }
  CHECK(r.logStart() > 30);
}

}  // namespace
}  // namespace synod::election

namespace synod::election {
namespace {

TEST_CASE("a follower that missed more than the leader's retained log is told to get a snapshot") {
  Group g(3, [](Options& o) { o.retainedLogSlots = 10; });
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  const MemberIndex away = (leader + 1) % 3;
  auto cut = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == away || m.to == away;
  };
  for (int i = 0; i < 60; ++i) {
    g[leader].propose("c" + std::to_string(i), g.now);
    g.runUntil([&] { return !g[leader].hasReady(); }, 20 * MS, cut);
  }
  REQUIRE(g[leader].appliedSlot() >= 40);
  CHECK(g[leader].logStart() > 20);
  // Back: its fetch finds the slots gone; the Ready says where to get a snapshot.
  std::optional<SnapshotNeeded> needed;
  for (int step = 0; step < 200 && !needed; ++step) {
    g.now += 2 * MS;
    g.tickAll();
    for (auto& [from, m] : std::exchange(g.network, {})) {
      g.replicas[m.to]->step(from, m.message, g.now);
    }
    while (g[away].hasReady()) {
      Ready r = g[away].ready();
      if (r.snapshotNeeded) needed = r.snapshotNeeded;
      for (auto& m : r.sendBeforePersist)
        g.network.emplace_back(away, m);
      for (auto& m : r.sendAfterPersist)
        g.network.emplace_back(away, m);
      g[away].advance(r);
    }
    g.pumpAll();
  }
  REQUIRE(needed);
  CHECK(needed->peerLogStart == g[leader].logStart());
}

}  // namespace
}  // namespace synod::election

namespace synod::election {
namespace {

TEST_CASE("a quiet follower needs no tick before its election deadline") {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  const MemberIndex follower = (leader + 1) % 3;
  g.runUntil([] { return false; }, 20 * MS);  // a few heartbeats
  const Nanos next = g[follower].nextTickAt();
  // Well past the heartbeat cadence: the election timeout is drawn from [50, 100) ms.
  CHECK(next >= g.now + 30 * MS);
  // Ticks before it change nothing.
  for (Nanos t = g.now; t < next; t += 1 * MS) {
    g[follower].tick(t);
    REQUIRE_FALSE(g[follower].hasReady());
    REQUIRE(g[follower].nextTickAt() == next);
  }
  // At it, with the leader silent, the follower starts a pre-vote.
  g[follower].tick(next);
  auto readies = drain(g[follower]);
  CHECK(sentIn<PreVoteRequest>(readies).size() == 2);
}

TEST_CASE("a quiet leader needs its next tick at its next heartbeat") {
  Group g(3);
  REQUIRE(g.runUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  g.runUntil([] { return false; }, 20 * MS);
  g.deliverAll();
  const Nanos next = g[leader].nextTickAt();
  CHECK(next > g.now);
  CHECK(next <= g.now + 10 * MS);  // one heartbeat interval
  for (Nanos t = g.now; t < next; t += 1 * MS) {
    g[leader].tick(t);
    REQUIRE_FALSE(g[leader].hasReady());
  }
  g[leader].tick(next);
  auto readies = drain(g[leader]);
  CHECK(sentIn<Heartbeat>(readies).size() == 2);
}

// Ticks a scripted leader of 3 every millisecond through `until`, acking every heartbeat from
// both peers at once; returns when each heartbeat round was sent.
std::vector<Nanos> heartbeatRounds(Replica& r, Ballot ballot, Nanos& now, Nanos until) {
  std::vector<Nanos> rounds;
  for (; now <= until; now += 1 * MS) {
    r.tick(now);
    auto heartbeats = sentIn<Heartbeat>(drain(r));
    if (heartbeats.empty()) continue;
    rounds.push_back(now);
    for (auto& [peer, m] : heartbeats)
      r.step(peer, HeartbeatAck{ballot, m.sequence, 0}, now);
    drain(r);
  }
  return rounds;
}

TEST_CASE("an idle leader heartbeats at the idle interval; a proposal or read restores the pace") {
  Options o = testOptions(0, 3);  // heartbeat 10 ms, election timeout 50 ms, lease 40 ms
  o.idleHeartbeatIntervalNs = 20 * MS;
  REQUIRE(!validateOptions(o));
  Single s(o);
  Replica& r = *s.replica;
  Nanos now = 0;
  const Ballot ballot = electByScript(r, 3, now);
  const Nanos elected = now;
  drain(r);
  auto gapsIn = [](const std::vector<Nanos>& rounds, Nanos from, Nanos to) {
    std::set<Nanos> gaps;
    for (size_t i = 1; i < rounds.size(); ++i) {
      if (rounds[i - 1] >= from && rounds[i] <= to) gaps.insert(rounds[i] - rounds[i - 1]);
    }
    return gaps;
  };
  // Busy for one election timeout after taking over, then idle.
  auto rounds = heartbeatRounds(r, ballot, now, elected + 200 * MS);
  CHECK(gapsIn(rounds, elected, elected + 50 * MS) == std::set<Nanos>{10 * MS});
  CHECK(gapsIn(rounds, elected + 70 * MS, now) == std::set<Nanos>{20 * MS});
  CHECK(r.role() == Role::LEADER);
  CHECK(r.leaseHeldUntil() > now);  // idle heartbeats keep the lease
  // The idle leader's next tick is its next idle heartbeat.
  CHECK(r.nextTickAt() == rounds.back() + 20 * MS);

  // A read makes it busy again for an election timeout.
  const Nanos readAt = now;
  REQUIRE(r.read(1, now).status == ReadStart::PENDING);
  drain(r);
  rounds = heartbeatRounds(r, ballot, now, readAt + 150 * MS);
  CHECK(gapsIn(rounds, readAt + 10 * MS, readAt + 50 * MS) == std::set<Nanos>{10 * MS});
  CHECK(gapsIn(rounds, readAt + 80 * MS, now) == std::set<Nanos>{20 * MS});

  // So does a proposal.
  const Nanos proposedAt = now;
  REQUIRE(r.propose("a", now).status == ProposeResult::QUEUED);
  for (auto& [peer, m] : sentIn<Accept>(drain(r)))
    r.step(peer, Accepted{ballot, m.slot}, now);
  drain(r);
  rounds = heartbeatRounds(r, ballot, now, proposedAt + 150 * MS);
  CHECK(gapsIn(rounds, proposedAt + 10 * MS, proposedAt + 50 * MS) == std::set<Nanos>{10 * MS});
  CHECK(gapsIn(rounds, proposedAt + 80 * MS, now) == std::set<Nanos>{20 * MS});

  // Without an idle interval the pace never changes.
  Options off = testOptions(0, 3);
  Single plain(off);
  Nanos t = 0;
  const Ballot b = electByScript(*plain.replica, 3, t);
  const Nanos start = t;
  drain(*plain.replica);
  rounds = heartbeatRounds(*plain.replica, b, t, start + 200 * MS);
  CHECK(gapsIn(rounds, start, t) == std::set<Nanos>{10 * MS});
}

TEST_CASE("the idle heartbeat interval is bounded by the election timeout and the lease") {
  // The daemon's defaults: heartbeat 50 ms, election timeout 500 ms, leader lease 400 ms.
  CHECK(derivedIdleHeartbeatInterval(50 * MS, 500 * MS, 400 * MS) == 200 * MS);
  CHECK(derivedIdleHeartbeatInterval(50 * MS, 300 * MS, 400 * MS) == 120 * MS);
  CHECK(derivedIdleHeartbeatInterval(50 * MS, 500 * MS, 160 * MS) == 80 * MS);
  CHECK(derivedIdleHeartbeatInterval(10 * MS, 20 * MS, 10 * MS) == 0);  // no room: off
  Options o = testOptions(0, 3);
  o.idleHeartbeatIntervalNs = 5 * MS;
  CHECK(validateOptions(o)->find("idleHeartbeatIntervalNs") != std::string::npos);
  o.idleHeartbeatIntervalNs = 30 * MS;  // more than half the election timeout
  CHECK(validateOptions(o)->find("electionTimeoutNs") != std::string::npos);
  o.idleHeartbeatIntervalNs = 21 * MS;  // more than half the 40 ms lease
  CHECK(validateOptions(o)->find("leaderLeaseNs") != std::string::npos);
  o.idleHeartbeatIntervalNs = 20 * MS;
  CHECK(!validateOptions(o));
}

TEST_CASE("a leader ticked only at nextTickAt steps down once it lost its majority") {
  Group g(3);
  REQUIRE(g.runLazilyUntil([&] { return g.leader().has_value(); }));
  const MemberIndex leader = *g.leader();
  g.runLazilyUntil([] { return false; }, 200 * MS);
  // Cut off from here: it last heard from its peers now at the latest.
  const Nanos cutAt = g.now;
  auto cut = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == leader || m.to == leader;
  };
  REQUIRE(g.runLazilyUntil([&] { return g[leader].role() != Role::LEADER; }, 5000 * MS, cut));
  // Its peers went silent an election timeout ago; it notices with its next heartbeat.
  CHECK(g.now <= cutAt + 50 * MS + 10 * MS + 1 * MS);
}

TEST_CASE("a leader ticked only at nextTickAt steps down the moment its majority is silent") {
  Nanos now = 0;
  Single s(testOptions(0, 3));
  Replica& r = *s.replica;
  electByScript(r, 3, now);
  drain(r);
  // Both peers ack 3 ms after the first heartbeat, off the heartbeat grid, then fall silent.
  now += 3 * MS;
  const Nanos heardAt = now;
  for (MemberIndex peer : {1, 2})
    r.step(peer, HeartbeatAck{r.ballot(), 1, 0}, now);
  drain(r);
  for (int i = 0; i < 1000 && r.role() == Role::LEADER; ++i) {
    now = std::max(now, r.nextTickAt());
    r.tick(now);
    drain(r);
  }
  CHECK(r.role() == Role::FOLLOWER);
  CHECK(now == heardAt + 50 * MS);  // an election timeout after it last heard from a majority
}

TEST_CASE("members ticked only at nextTickAt elect, decide, read, fail over and step down") {
  Group g(3);
  uint64_t ticks = 0;
  REQUIRE(g.runLazilyUntil([&] { return g.leader().has_value(); }, 5000 * MS, {}, &ticks));
  const MemberIndex leader = *g.leader();
  for (int i = 0; i < 5; ++i)
    REQUIRE(g[leader].propose("c" + std::to_string(i), g.now).status == ProposeResult::QUEUED);
  REQUIRE(g.runLazilyUntil([&] { return g.everyMemberApplied(5); }));
  const MemberIndex follower = (leader + 1) % 3;
  REQUIRE(g[follower].read(5, g.now).status == ReadStart::PENDING);
  REQUIRE(g.runLazilyUntil([&] { return !g.reads[follower].empty(); }));
  CHECK(g.reads[follower][0].ok);

  // Idle for a second: far fewer ticks than one per half heartbeat interval (200 per member).
  ticks = 0;
  g.runLazilyUntil([] { return false; }, 1000 * MS, {}, &ticks);
  CHECK(g.leader() == leader);
  CHECK(ticks < 3 * 200 / 2);

  // The leader is cut off: the others elect a new one, and the old one steps down.
  auto cut = [&](MemberIndex from, const OutgoingMessage& m) {
    return from == leader || m.to == leader;
  };
  REQUIRE(g.runLazilyUntil(
      [&] {
        if (g[leader].role() == Role::LEADER) return false;
        for (MemberIndex i = 0; i < 3; ++i) {
          if (i != leader && g[i].role() == Role::LEADER) return true;
        }
        return false;
      },
      5000 * MS, cut));
}

}  // namespace
}  // namespace synod::election
