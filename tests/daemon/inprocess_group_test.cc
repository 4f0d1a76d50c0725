// Three Nodes in one process, their peer messages routed through the KJ event loop: what a group
// commit carries on the leader and the followers, when applied state reaches the store, and how
// often a member with nothing to do wakes up.
#include <doctest/doctest.h>
#include <kj/async-io.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/app_leases.h"
#include "daemon/commit_runner.h"
#include "daemon/config.h"
#include "daemon/node.h"
#include "records.capnp.h"
#include "storage/memory_store.h"

namespace synod::daemon {
namespace {

// Group timing: heartbeat_ms, election_timeout_ms, leader_lease_ms.
struct Timing {
  uint32_t heartbeatMs = 10;
  uint32_t electionTimeoutMs = 60;
  uint32_t leaderLeaseMs = 40;
};

Config memberConfig(const std::string& name, Timing t) {
  return parseConfig("cluster_id: test\nnode: " + name +
                         "\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7102\n"
                         "  n3: 127.0.0.1:7103\ndata_dir: /tmp/unused\n"
                         "socket: /tmp/unused.sock\nheartbeat_ms: " +
                         std::to_string(t.heartbeatMs) +
                         "\nelection_timeout_ms: " + std::to_string(t.electionTimeoutMs) +
                         "\nleader_lease_ms: " + std::to_string(t.leaderLeaseMs) + "\n",
                     name + ".yaml");
}

struct Group;

// Delivers one member's peer messages to the other Nodes on a later turn of the same loop.
class RoutingOutbox final : public PeerOutbox {
 public:
  RoutingOutbox(Group& group, MemberIndex self) : group_(group), self_(self) {}
  void sendCore(MemberIndex to, election::PeerMessage message) override;
  void sendForward(MemberIndex to, std::vector<std::string> commands) override;
  void sendForwardRefused(MemberIndex, std::vector<std::string>,
                          std::optional<MemberIndex>) override {}
  void sendReport(MemberIndex, const MemberReport&) override {}
  void sendSnapshotRequest(MemberIndex, SnapshotRequest) override {}
  void sendSnapshotChunk(MemberIndex, SnapshotChunk) override {}
  bool connected(MemberIndex) const override { return true; }

 private:
  Group& group_;
  MemberIndex self_;
};

// Finishes each commit a millisecond later, as the daemon's thread pool does: the loop goes on
// (and runs everything queued) while a commit is in flight.
class DeferredCommitRunner final : public CommitRunner {
 public:
  DeferredCommitRunner(kj::TaskSet& tasks, kj::Timer& timer) : tasks_(tasks), timer_(timer) {}
  void run(Work work, Done done) override {
    REQUIRE_FALSE(inFlight_);  // at most one at a time (the Node's contract)
    inFlight_ = true;
    pending_ = [this, work = std::move(work), done = std::move(done)]() {
      inFlight_ = false;
      work();
      done(nullptr);
    };
    tasks_.add(timer_.afterDelay(1 * kj::MILLISECONDS).then([this]() { runPending(); }));
  }
  void finish() override { runPending(); }

 private:
  void runPending() {
    if (auto fn = std::exchange(pending_, nullptr)) fn();
  }
  kj::TaskSet& tasks_;
  kj::Timer& timer_;
  bool inFlight_ = false;
  std::function<void()> pending_;
};

struct Group : private kj::TaskSet::ErrorHandler {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::TaskSet deliveries{*this};
  std::array<Config, 3> configs;
  std::array<storage::MemoryStore, 3> stores;
  std::vector<std::unique_ptr<RoutingOutbox>> outboxes;
  std::vector<std::unique_ptr<DeferredCommitRunner>> runners;
  std::vector<std::unique_ptr<Node>> nodes;

  explicit Group(Timing timing = {})
      : configs{memberConfig("n1", timing), memberConfig("n2", timing),
                memberConfig("n3", timing)} {
    for (MemberIndex i = 0; i < 3; ++i)
      outboxes.push_back(std::make_unique<RoutingOutbox>(*this, i));
    for (MemberIndex i = 0; i < 3; ++i)
      runners.push_back(
          std::make_unique<DeferredCommitRunner>(deliveries, io.provider->getTimer()));
    for (MemberIndex i = 0; i < 3; ++i) {
      nodes.push_back(std::make_unique<Node>(configs[i], stores[i], io.provider->getTimer(),
                                             outboxes[i].get(), 7 + i, runners[i].get()));
    }
  }
  ~Group() {
    for (auto& node : nodes)
      node->drain();
  }

  void taskFailed(kj::Exception&& exception) override {
    FAIL("delivery failed: " << exception.getDescription().cStr());
  }
  void sleep(uint32_t ms) {
    io.provider->getTimer().afterDelay(ms * kj::MILLISECONDS).wait(io.waitScope);
  }
  // The member that leads, once one does (within 5 s).
  Node& leader() {
    for (int i = 0; i < 500; ++i) {
      for (auto& node : nodes) {
        if (node->isLeader() && node->holdsLeaderLease(bootTimeNow())) return *node;
      }
      sleep(10);
    }
    FAIL("no leader within 5 s");
    return *nodes[0];
  }
  StatusCode put(Node& node, const std::string& key, const std::string& value) {
    capnp::MallocMessageBuilder message;
    auto put = message.initRoot<records::Command>().initPut();
    put.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
    put.setValue(
        capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
    return node.write(message, 0).wait(io.waitScope).code;
  }
};

void RoutingOutbox::sendCore(MemberIndex to, election::PeerMessage message) {
  group_.deliveries.add(kj::evalLater([this, to, message = std::move(message)]() {
    group_.nodes[to]->onPeerMessage(self_, message);
  }));
}

void RoutingOutbox::sendForward(MemberIndex to, std::vector<std::string> commands) {
  group_.deliveries.add(kj::evalLater([this, to, commands = std::move(commands)]() mutable {
    group_.nodes[to]->onForward(self_, std::move(commands));
  }));
}

TEST_CASE("each write costs every member one group commit; applied state follows when idle") {
  Group g;
  Node& leader = g.leader();
  // Let the election's own commits settle.
  g.sleep(300);
  std::array<uint64_t, 3> before{};
  for (size_t i = 0; i < 3; ++i)
    before[i] = g.nodes[i]->counters().commits;
  constexpr int WRITES = 40;
  for (int i = 0; i < WRITES; ++i)
    REQUIRE(g.put(leader, "k" + std::to_string(i), "v") == StatusCode::OK);
  // One commit per write on every member, the vote's, plus at most one for the applied state
  // every MATERIALIZE_DELAY_MS. A commit of the applied state after each write would double this
  // (and make each write wait behind the previous one's).
  for (size_t i = 0; i < 3; ++i) {
    const uint64_t commits = g.nodes[i]->counters().commits - before[i];
    INFO("member n" << i + 1 << ": " << commits << " commits for " << WRITES << " writes");
    CHECK(commits >= WRITES - 1);  // a follower may take two accepts in one commit
    CHECK(commits <= WRITES + 4);
  }
  // The votes' commits do not carry the applied state: the stores lag behind the replicas ...
  const Slot applied = leader.state().appliedSlot();
  CHECK(g.stores[leader.self()].appliedSlot() < applied);
  // ... and reach them on their own once the group is idle, in one commit per member.
  g.sleep(Node::MATERIALIZE_DELAY_MS + 200);
  for (size_t i = 0; i < 3; ++i) {
    INFO("member n" << i + 1);
    CHECK(g.nodes[i]->state().appliedSlot() == applied);
    CHECK(g.stores[i].appliedSlot() == applied);
    CHECK(g.stores[i].keys().size() == WRITES);
  }
  // Idle from here on: no more commits (heartbeats never commit).
  std::array<uint64_t, 3> idle{};
  for (size_t i = 0; i < 3; ++i)
    idle[i] = g.nodes[i]->counters().commits;
  g.sleep(300);
  for (size_t i = 0; i < 3; ++i)
    CHECK(g.nodes[i]->counters().commits == idle[i]);
}

TEST_CASE("a follower whose app keeps a lease alive wakes for renewals, not at the tick cadence") {
  // The daemon's own pace (heartbeat 50 ms), a long election timeout: a follower's own deadlines
  // are a second or more apart, so only the renewals' deadline keeps a 1 s lease alive.
  Group g(Timing{50, 800, 600});
  Node& leader = g.leader();
  Node& follower = *g.nodes[(leader.self() + 1) % 3];
  g.sleep(200);
  // A lease held through the follower (TTL 1 s: renewed a third of the TTL after each renewal).
  auto granted = follower.appLeases()
                     .grant(1000, /*detached=*/true, 0, PeerCredentials{4242, 7, 8}, 0)
                     .wait(g.io.waitScope);
  REQUIRE(granted.code == StatusCode::OK);
  const uint64_t id = granted.lease;
  const Nanos grantedAt = bootTimeNow();
  // Not kept alive yet: the follower has no renewal to wake up for.
  g.sleep(100);
  CHECK_FALSE(follower.appLeases().nextDue(bootTimeNow()).has_value());
  // The first keepalive makes it due a third of the TTL after the grant was sent; the follower's
  // next tick is planned for then (its own deadlines are further away).
  REQUIRE(follower.appLeases().keepAlive(id, bootTimeNow()).has_value());
  auto due = follower.appLeases().nextDue(bootTimeNow());
  REQUIRE(due.has_value());
  CHECK(*due <= grantedAt + 340 * election::NANOS_PER_MS);
  const uint64_t ticksBefore = follower.counters().ticks;
  const uint64_t batchesBefore = follower.appLeases().counters().renewBatches;
  // The app keeps it alive every 100 ms for 3 s, three TTLs.
  for (int i = 0; i < 30; ++i) {
    g.sleep(100);
    auto safe = follower.appLeases().keepAlive(id, bootTimeNow());
    INFO("keepalive " << i);
    REQUIRE(safe.has_value());
    CHECK(*safe > 0);
  }
  CHECK(follower.state().lease(id) != nullptr);
  const uint64_t batches = follower.appLeases().counters().renewBatches - batchesBefore;
  CHECK(batches >= 6);  // about one per third of the TTL
  // At the tick cadence (heartbeat_ms / 2 = 25 ms) 3 s are 120 ticks. Without it: the renewals,
  // the reports and the election deadline.
  const uint64_t ticks = follower.counters().ticks - ticksBefore;
  INFO(ticks << " ticks in 3 s, " << batches << " renewal batches");
  CHECK(ticks < 80);
}

TEST_CASE("writes in flight through the next leader survive hand-offs while commits lag") {
  // Commits finish a millisecond after they start and the applied state is due at every flush:
  // the new leader takes over, resubmits the writes it holds and materializes, all while its
  // earlier commits are still in flight.
  Group g;
  for (auto& node : g.nodes)
    node->setMaterializeDelay(0);
  g.leader();
  int transfers = 0;
  for (int round = 0; round < 12; ++round) {
    Node& leader = g.leader();
    Node& next = *g.nodes[(leader.self() + 1) % 3];
    // Writes through the next leader, in flight while leadership moves to it.
    std::vector<kj::Promise<CommandOutcome>> writes;
    std::vector<std::unique_ptr<capnp::MallocMessageBuilder>> messages;
    for (int i = 0; i < 8; ++i) {
      messages.push_back(std::make_unique<capnp::MallocMessageBuilder>());
      auto put = messages.back()->initRoot<records::Command>().initPut();
      const std::string key = "r" + std::to_string(round) + "-" + std::to_string(i);
      put.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
      writes.push_back(next.write(*messages.back(), 0));
    }
    if (leader.transferLeadership(next.self())) ++transfers;
    for (auto& write : writes)
      CHECK(write.wait(g.io.waitScope).code == StatusCode::OK);
  }
  CHECK(transfers >= 6);
  g.sleep(300);  // the followers learn the last decisions
  for (auto& node : g.nodes)
    CHECK(node->state().revision() == g.nodes[0]->state().revision());
}

}  // namespace
}  // namespace synod::daemon
