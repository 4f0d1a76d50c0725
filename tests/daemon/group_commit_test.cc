// Three Nodes in one process, their peer messages routed through the KJ event loop: what a group
// commit carries on the leader and the followers, and when applied state reaches the store.
#include <doctest/doctest.h>
#include <kj/async-io.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/node.h"
#include "records.capnp.h"
#include "storage/memory_store.h"

namespace synod::daemon {
namespace {

Config memberConfig(const std::string& name) {
  return parseConfig("cluster_id: test\nnode: " + name +
                         "\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7102\n"
                         "  n3: 127.0.0.1:7103\ndata_dir: /tmp/unused\n"
                         "socket: /tmp/unused.sock\n"
                         "heartbeat_ms: 10\nelection_timeout_ms: 60\nleader_lease_ms: 40\n",
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

struct Group : private kj::TaskSet::ErrorHandler {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::TaskSet deliveries{*this};
  std::array<Config, 3> configs{memberConfig("n1"), memberConfig("n2"), memberConfig("n3")};
  std::array<storage::MemoryStore, 3> stores;
  std::vector<std::unique_ptr<RoutingOutbox>> outboxes;
  std::vector<std::unique_ptr<Node>> nodes;

  Group() {
    for (MemberIndex i = 0; i < 3; ++i)
      outboxes.push_back(std::make_unique<RoutingOutbox>(*this, i));
    for (MemberIndex i = 0; i < 3; ++i) {
      nodes.push_back(std::make_unique<Node>(configs[i], stores[i], io.provider->getTimer(),
                                             outboxes[i].get(), 7 + i));
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
  // One commit per write on every member: the accept's, which also carries the applied changes
  // of the writes before it. A materialization commit of its own after each write would double
  // this (and make each write wait for the previous one's).
  for (size_t i = 0; i < 3; ++i) {
    const uint64_t commits = g.nodes[i]->counters().commits - before[i];
    INFO("member n" << i + 1 << ": " << commits << " commits for " << WRITES << " writes");
    CHECK(commits >= WRITES - 1);  // a follower may take two accepts in one commit
    CHECK(commits <= WRITES + 2);
  }
  // The last writes' applied changes are not in the store yet ...
  const Slot applied = leader.state().appliedSlot();
  const size_t leaderIndex = leader.self();
  CHECK(g.stores[leaderIndex].appliedSlot() < applied);
  // ... and reach it on their own once the group is idle, in one commit per member.
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

}  // namespace
}  // namespace synod::daemon
