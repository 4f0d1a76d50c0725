// The local API over an in-process pipe: a real Node on a MemoryStore, a real Cap'n Proto RPC
// connection, KJ's own event loop (no sockets, no libuv).
#include <capnp/rpc-twoparty.h>
#include <doctest/doctest.h>
#include <kj/async-io.h>

#include <memory>
#include <optional>
#include <string>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/service.h"
#include "storage/memory_store.h"
#include "tests/daemon/local_connection.h"

namespace synod::daemon {
namespace {

using rpc::Status;

capnp::Data::Reader bytes(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}
std::string text(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

Config testConfig(uint64_t storeLimitBytes = 1ull << 30) {
  return parseConfig(
      "cluster_id: test\n"
      "node: n1\n"
      "peers:\n"
      "  n1: 127.0.0.1:7101\n"
      "data_dir: /tmp/unused\n"
      "socket: /tmp/unused.sock\n"
      "max_key_bytes: 16\n"
      "max_value_bytes: 1048576\n"
      "store_limit_bytes: " +
          std::to_string(storeLimitBytes) + "\n",
      "test.yaml");
}

// One member and one client connection to it over a pipe.
struct Fixture {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  Config config;
  storage::MemoryStore& store;
  std::unique_ptr<Node> node;
  std::optional<testing::LocalConnection> connection;
  rpc::Kv::Client kv = nullptr;
  rpc::Admin::Client admin = nullptr;

  Fixture(storage::MemoryStore& storeParam, Config configParam = testConfig(),
          PeerOutbox* outbox = nullptr)
      : config(std::move(configParam)), store(storeParam) {
    node = std::make_unique<Node>(config, store, io.provider->getTimer(), outbox, 1);
    connection.emplace(io, *node, PeerCredentials{4242, 7, 8});
    auto& synod = connection->synod;
    kv = synod.kvRequest().send().getKv();
    admin = synod.adminRequest().send().getAdmin();
  }

  ~Fixture() {
    kv = nullptr;
    admin = nullptr;
    connection.reset();
  }

  kj::WaitScope& ws() { return io.waitScope; }

  capnp::Response<rpc::Kv::PutResults> put(const std::string& key, const std::string& value) {
    auto request = kv.putRequest();
    request.getOp().setKey(bytes(key));
    request.getOp().setValue(bytes(value));
    return request.send().wait(ws());
  }
  capnp::Response<rpc::Kv::GetResults> get(const std::string& key, bool serializable = false) {
    auto request = kv.getRequest();
    request.setKey(bytes(key));
    request.setSerializable(serializable);
    return request.send().wait(ws());
  }
  capnp::Response<rpc::Kv::DeleteResults> del(const std::string& key, const std::string& end = "") {
    auto request = kv.deleteRequest();
    request.getOp().setKey(bytes(key));
    request.getOp().setRangeEnd(bytes(end));
    return request.send().wait(ws());
  }
  capnp::Response<rpc::Kv::ListResults> list(const std::string& prefix, uint32_t limit,
                                             const std::string& startAfter = "") {
    auto request = kv.listRequest();
    request.setPrefix(bytes(prefix));
    request.setLimit(limit);
    request.setStartAfter(bytes(startAfter));
    return request.send().wait(ws());
  }
  // Lets every queued event run (group commits scheduled with evalLast included).
  void settle() {
    kj::evalLast([] {}).wait(ws());
  }
};

TEST_CASE("put, get, delete and list through the RPC API") {
  storage::MemoryStore store;
  Fixture f(store);

  auto put = f.put("a", "1");
  CHECK(put.getStatus().getCode() == Status::Code::OK);
  CHECK(put.getHeader().getRevision() == 1);
  CHECK(put.getHeader().getMember() == "n1");

  auto got = f.get("a");
  REQUIRE(got.getStatus().getCode() == Status::Code::OK);
  CHECK(text(got.getKv().getValue()) == "1");
  CHECK(got.getKv().getVersion() == 1);
  CHECK(got.getKv().getCreateRevision() == 1);
  CHECK(got.getHeader().getRevision() == 1);
  CHECK(f.get("a", true).getStatus().getCode() == Status::Code::OK);

  auto missing = f.get("nope");
  CHECK(missing.getStatus().getCode() == Status::Code::NOT_FOUND);
  CHECK(missing.getHeader().getMember() == "n1");

  for (auto key : {"app/1", "app/2", "app/3", "b"})
    f.put(key, key);
  auto page = f.list("app/", 2);
  REQUIRE(page.getKvs().size() == 2);
  CHECK(text(page.getKvs()[0].getKey()) == "app/1");
  CHECK(page.getMore());
  auto rest = f.list("app/", 2, "app/2");
  REQUIRE(rest.getKvs().size() == 1);
  CHECK_FALSE(rest.getMore());

  auto deleted = f.del("app/", "app0");
  CHECK(deleted.getDeleted() == 3);
  CHECK(f.list("app/", 0).getKvs().size() == 0);
  CHECK(f.del("zzz").getDeleted() == 0);
}

TEST_CASE("txn through the RPC API: compare, then/else, one revision") {
  storage::MemoryStore store;
  Fixture f(store);
  auto lock = [&](const std::string& owner) {
    auto request = f.kv.txnRequest();
    auto txn = request.initTxn();
    auto compare = txn.initCompares(1)[0];
    compare.setKey(bytes("lock"));
    compare.setOp(rpc::Compare::Op::EQUAL);
    compare.getTarget().setVersion(0);
    auto ops = txn.initSuccess(2);
    ops[0].initPut().setKey(bytes("lock"));
    ops[0].getPut().setValue(bytes(owner));
    ops[1].initPut().setKey(bytes("owner"));
    ops[1].getPut().setValue(bytes(owner));
    return request.send().wait(f.ws());
  };
  auto first = lock("me");
  CHECK(first.getStatus().getCode() == Status::Code::OK);
  CHECK(first.getSucceeded());
  CHECK(first.getHeader().getRevision() == 1);
  auto second = lock("you");
  CHECK_FALSE(second.getSucceeded());
  CHECK(text(f.get("owner").getKv().getValue()) == "me");
  CHECK(f.get("owner").getKv().getModRevision() == 1);
}

TEST_CASE("bad arguments are refused with INVALID_ARGUMENT and change nothing") {
  storage::MemoryStore store;
  Fixture f(store);
  f.put("a", "1");
  auto tooLong = f.put(std::string(17, 'k'), "v");
  CHECK(tooLong.getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  CHECK(std::string(tooLong.getStatus().getMessage()).find("max_key_bytes") != std::string::npos);
  CHECK(f.put("", "v").getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  CHECK(f.put("big", std::string((1 << 20) + 1, 'x')).getStatus().getCode() ==
        Status::Code::INVALID_ARGUMENT);
  CHECK(f.get("").getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  CHECK(f.get(std::string(17, 'k')).getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  CHECK(f.list("", 10001).getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  auto slow = f.kv.getRequest();
  slow.setKey(bytes("a"));
  slow.setTimeoutMs(Node::MAX_TIMEOUT_MS + 1);
  CHECK(slow.send().wait(f.ws()).getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  auto backwards = f.del("b", "a");
  CHECK(backwards.getStatus().getCode() == Status::Code::INVALID_ARGUMENT);
  CHECK(f.node->state().revision() == 1);
  CHECK(f.node->state().keyCount() == 1);
}

TEST_CASE("NO_SPACE before the store limit; deletes still free space") {
  storage::MemoryStore store;
  Fixture f(store, testConfig(16 << 20));
  std::string value(1 << 20, 'v');
  int accepted = 0;
  Status::Code last = Status::Code::OK;
  for (int i = 0; i < 40 && last == Status::Code::OK; ++i) {
    last = f.put("k" + std::to_string(i), value).getStatus().getCode();
    if (last == Status::Code::OK) ++accepted;
    f.settle();
  }
  CHECK(last == Status::Code::NO_SPACE);
  CHECK(accepted > 5);
  CHECK(store.usedBytes() < (16u << 20));
  uint64_t revision = f.node->state().revision();
  CHECK(f.del("k0").getStatus().getCode() == Status::Code::OK);
  CHECK(f.node->state().revision() == revision + 1);
}

TEST_CASE("status names the member, its role and the caller's credentials") {
  storage::MemoryStore store;
  Fixture f(store);
  f.put("a", "1");
  auto reply = f.admin.statusRequest().send().wait(f.ws());
  CHECK(reply.getStatus().getCode() == Status::Code::OK);
  auto info = reply.getInfo();
  CHECK(info.getMember() == "n1");
  CHECK(info.getRole() == "leader");
  CHECK(info.getLeader() == "n1");
  CHECK(info.getAppliedSlot() >= 1);
  CHECK(info.getDecidedSlot() >= info.getAppliedSlot());
  CHECK(info.getRevision() == 1);
  CHECK(info.getClusterId() == "test");
  CHECK(info.getCallerPid() == 4242);
  REQUIRE(info.getMembers().size() == 1);
  CHECK(info.getMembers()[0].getReachable());
  // Its own row carries its own current report.
  auto self = info.getMembers()[0];
  CHECK(self.getReported());
  CHECK_FALSE(self.getStale());
  CHECK(self.getReportAgeMs() == 0);
  CHECK(info.getStateDigest() != 0);
  CHECK(self.getStateDigest() == info.getStateDigest());
  CHECK(self.getAppliedSlot() == info.getAppliedSlot());
  CHECK(self.getLeader() == "n1");
  CHECK(self.getStoreLimitBytes() == info.getStoreLimitBytes());
  CHECK(info.getLeaseLeftMs() > 0);
  CHECK(info.getCommitP99Us() >= info.getCommitP50Us());
  // The digest follows the state: another write changes it.
  f.put("b", "2");
  auto afterReply = f.admin.statusRequest().send().wait(f.ws());
  auto after = afterReply.getInfo();
  CHECK(after.getStateDigest() != info.getStateDigest());
}

// Records what a Node sends to its peers; `up` says which peers count as connected.
class FakeOutbox final : public PeerOutbox {
 public:
  std::vector<bool> up;
  std::vector<std::pair<MemberIndex, MemberReport>> reports;

  void sendCore(MemberIndex, election::PeerMessage) override {}
  void sendForward(MemberIndex, std::vector<std::string>) override {}
  void sendForwardRefused(MemberIndex, std::vector<std::string>,
                          std::optional<MemberIndex>) override {}
  void sendReport(MemberIndex to, const MemberReport& report) override {
    reports.emplace_back(to, report);
  }
  void sendSnapshotRequest(MemberIndex, SnapshotRequest) override {}
  void sendSnapshotChunk(MemberIndex, SnapshotChunk) override {}
  bool connected(MemberIndex peer) const override { return peer < up.size() && up[peer]; }
};

TEST_CASE("reports: sent to connected peers only; status shows each member's latest report") {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  Config config = parseConfig(
      "cluster_id: test\nnode: n1\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7102\n"
      "  n3: 127.0.0.1:7103\ndata_dir: /tmp/unused\nsocket: /tmp/unused.sock\n"
      "store_limit_bytes: 1000000000\n",
      "test.yaml");
  storage::MemoryStore store;
  FakeOutbox outbox;
  outbox.up = {false, true, false};
  Node node(config, store, io.provider->getTimer(), &outbox, 1);
  // The first report leaves at start, to n2 only (n3 is not connected).
  REQUIRE(outbox.reports.size() == 1);
  CHECK(outbox.reports[0].first == 1);
  const MemberReport& sent = outbox.reports[0].second;
  CHECK(sent.role == "follower");
  CHECK(sent.storeLimitBytes == 1000000000);
  CHECK(sent.stateDigest == node.state().stateDigest());
  CHECK(sent.incarnation == store.startState().incarnation);
  // A fresh store: the report says this member is recovering, and why it waits.
  CHECK(sent.recovering);
  CHECK(sent.recoveryStage.find("waiting for answers from 2 other members") == 0);
  CHECK_FALSE(sent.snapshotFrom);

  MemberReport fromN2{"candidate",
                      election::Ballot{5, 1},
                      MemberIndex{2},
                      40,
                      39,
                      12,
                      0,
                      8192,
                      1 << 20,
                      300,
                      900,
                      4,
                      123456,
                      0xabcdef,
                      false,
                      "",
                      std::nullopt,
                      0,
                      0};
  node.onMemberReport(1, fromN2);
  node.onMemberReport(0, fromN2);  // claims to come from this member itself: ignored
  NodeStatus status = node.status();
  REQUIRE(status.members.size() == 3);
  const MemberInfo& self = status.members[0];
  REQUIRE(self.report);
  CHECK(self.report->role == "follower");
  CHECK_FALSE(self.stale);
  const MemberInfo& n2 = status.members[1];
  REQUIRE(n2.report);
  CHECK(*n2.report == fromN2);
  CHECK(n2.role == "candidate");  // its own word, while current
  CHECK_FALSE(n2.stale);
  CHECK(n2.reportAgeMs < 60000);
  const MemberInfo& n3 = status.members[2];
  CHECK_FALSE(n3.report);
  CHECK(n3.stale);
  CHECK(n3.role == "unknown");
  // A peer that is no longer reachable keeps its last report, marked stale.
  outbox.up[1] = false;
  status = node.status();
  CHECK(status.members[1].report);
  CHECK(status.members[1].stale);
  CHECK(status.members[1].role == "unknown");
}

TEST_CASE("a stopping leader prefers a hand-off target past its restart window") {
  using Peer = Node::HandoffPeer;
  const uint64_t window = 404;
  // n2 restarted 100 ms ago and is the most up to date; n3 has been up for minutes.
  CHECK(Node::preferredHandoffTarget({Peer{1, true, 100, 50}, Peer{2, true, 600000, 49}}, window) ==
        MemberIndex{2});
  // Among peers past the window, the most up to date.
  CHECK(Node::preferredHandoffTarget(
            {Peer{1, true, 10, 50}, Peer{2, true, 5000, 40}, Peer{3, true, 5000, 45}}, window) ==
        MemberIndex{3});
  // Every peer past it, or none known to be: no preference (the core picks).
  CHECK_FALSE(
      Node::preferredHandoffTarget({Peer{1, true, 5000, 50}, Peer{2, true, 600000, 49}}, window));
  CHECK_FALSE(
      Node::preferredHandoffTarget({Peer{1, true, 100, 50}, Peer{2, true, 404, 49}}, window));
  // A peer without a current report is not known to be past it.
  CHECK_FALSE(
      Node::preferredHandoffTarget({Peer{1, true, 100, 50}, Peer{2, false, 600000, 49}}, window));
  CHECK(Node::preferredHandoffTarget({Peer{1, false, 0, 0}, Peer{2, true, 600000, 49}}, window) ==
        MemberIndex{2});
}

Config threeMemberConfig() {
  return parseConfig(
      "cluster_id: test\nnode: n1\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7102\n"
      "  n3: 127.0.0.1:7103\ndata_dir: /tmp/unused\nsocket: /tmp/unused.sock\n",
      "test.yaml");
}

TEST_CASE("status: a member on a fresh store shows itself recovering in its own row") {
  storage::MemoryStore store;
  FakeOutbox outbox;
  Fixture f(store, threeMemberConfig(), &outbox);
  auto reply = f.admin.statusRequest().send().wait(f.ws());
  auto info = reply.getInfo();
  REQUIRE(info.getMembers().size() == 3);
  auto self = info.getMembers()[0];
  CHECK(self.getName() == "n1");
  CHECK(self.getRecovering());
  CHECK(std::string(self.getRecoveryStage().cStr()).find("waiting for answers") == 0);
  CHECK(self.getSnapshotFrom() == "");
  CHECK(self.getSnapshotBytesReceived() == 0);
  CHECK(self.getSnapshotBytesTotal() == 0);
  CHECK(self.getSlotsBehind() == 0);
  // Never reported: nothing known, nothing behind.
  CHECK_FALSE(info.getMembers()[2].getReported());
  CHECK_FALSE(info.getMembers()[2].getRecovering());
  CHECK(info.getMembers()[2].getSlotsBehind() == 0);
}

TEST_CASE("status: recovery committed, not recovering; slotsBehind from the highest report") {
  storage::MemoryStore store;
  storage::WriteBatch batch;
  batch.recovered = true;
  store.commit(batch);
  store.restart();
  FakeOutbox outbox;
  Fixture f(store, threeMemberConfig(), &outbox);
  MemberReport fromN2;
  fromN2.role = "follower";
  fromN2.decidedSlot = 40;
  fromN2.appliedSlot = 37;
  fromN2.recovering = true;
  fromN2.recoveryStage = "catching up to slot 40 before voting";
  fromN2.snapshotFrom = MemberIndex{2};
  fromN2.snapshotBytesReceived = 3250586;
  fromN2.snapshotBytesTotal = 10485760;
  f.node->onMemberReport(1, fromN2);
  auto reply = f.admin.statusRequest().send().wait(f.ws());
  auto info = reply.getInfo();
  REQUIRE(info.getMembers().size() == 3);
  auto self = info.getMembers()[0];
  CHECK_FALSE(self.getRecovering());
  CHECK(self.getRecoveryStage() == "");
  CHECK(self.getSnapshotFrom() == "");
  CHECK(self.getSlotsBehind() == 40 - self.getAppliedSlot());
  auto n2 = info.getMembers()[1];
  CHECK(n2.getRecovering());
  CHECK(n2.getRecoveryStage() == "catching up to slot 40 before voting");
  CHECK(n2.getSnapshotFrom() == "n3");
  CHECK(n2.getSnapshotBytesReceived() == 3250586);
  CHECK(n2.getSnapshotBytesTotal() == 10485760);
  CHECK(n2.getSlotsBehind() == 3);
  // Once no report is ahead of it, this member is not behind.
  fromN2.decidedSlot = 0;
  fromN2.appliedSlot = 0;
  f.node->onMemberReport(1, fromN2);
  auto aheadReply = f.admin.statusRequest().send().wait(f.ws());
  auto ahead = aheadReply.getInfo();
  CHECK(ahead.getMembers()[0].getSlotsBehind() == 0);
  CHECK(ahead.getMembers()[1].getSlotsBehind() == ahead.getMembers()[0].getDecidedSlot());
  // A peer's report is not checked for consistency: applied above every decided slot is 0
  // behind, not a wrapped-around count.
  fromN2.appliedSlot = 50;
  f.node->onMemberReport(1, fromN2);
  auto inconsistentReply = f.admin.statusRequest().send().wait(f.ws());
  CHECK(inconsistentReply.getInfo().getMembers()[1].getSlotsBehind() == 0);
}

// A disk that remembers a copy of itself after every commit: each copy is what a crash right
// after that commit would leave.
class RecordingStore final : public storage::Store {
 public:
  storage::MemoryStore disk;
  std::vector<std::unique_ptr<storage::MemoryStore>> afterCommit;

  const storage::StartState& startState() const override { return disk.startState(); }
  void commit(const storage::WriteBatch& batch) override {
    disk.commit(batch);
    afterCommit.push_back(disk.clone());
  }
  void forEachKey(const std::function<void(std::string_view, election::KeyRecord&&)>& fn) override {
    disk.forEachKey(fn);
  }
  void forEachSession(
      const std::function<void(election::MemberIndex, std::string_view)>& fn) override {
    disk.forEachSession(fn);
  }
  void forEachLease(const std::function<void(uint64_t, std::string_view)>& fn) override {
    disk.forEachLease(fn);
  }
  void forEachLock(const std::function<void(std::string_view, std::string_view)>& fn) override {
    disk.forEachLock(fn);
  }
  void forEachLogEntry(Slot from, const std::function<void(LogEntry&&)>& fn) override {
    disk.forEachLogEntry(from, fn);
  }
  void forEachHistory(const std::function<void(election::RevisionChanges&&)>& fn) override {
    disk.forEachHistory(fn);
  }
  uint64_t usedBytes() const override { return disk.usedBytes(); }
};

TEST_CASE("acknowledged writes survive a crash at any commit, materialized or not") {
  RecordingStore store;
  Slot deleteSlot = 0;
  {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    Config config = testConfig();
    Node node(config, store, io.provider->getTimer(), nullptr, 1);
    auto write = [&](auto fill) {
      capnp::MallocMessageBuilder message;
      fill(message.initRoot<records::Command>());
      return node.write(message, 0).wait(io.waitScope);
    };
    auto put = [&](const std::string& key, const std::string& value) {
      return write([&](records::Command::Builder c) {
        c.initPut().setKey(bytes(key));
        c.getPut().setValue(bytes(value));
      });
    };
    CHECK(put("a", "1").code == StatusCode::OK);
    CHECK(put("b", "2").code == StatusCode::OK);
    auto deleted = write([&](records::Command::Builder c) { c.initDelete().setKey(bytes("a")); });
    CHECK(deleted.code == StatusCode::OK);
    CHECK(deleted.deleted == 1);
    deleteSlot = node.state().appliedSlot();
    kj::evalLast([] {}).wait(io.waitScope);
  }
  // The disk right after the commit that made the delete's vote durable: the delete was
  // acknowledged from then on, and its applied state was not yet written.
  storage::MemoryStore* crashPoint = nullptr;
  for (auto& disk : store.afterCommit) {
    if (disk->log().count(deleteSlot)) {
      crashPoint = disk.get();
      break;
    }
  }
  REQUIRE(crashPoint != nullptr);
  CHECK(crashPoint->appliedSlot() < deleteSlot);
  auto disk = crashPoint->clone();
  disk->restart();
  Fixture again(*disk);
  CHECK(again.get("a").getStatus().getCode() == Status::Code::NOT_FOUND);
  auto b = again.get("b");
  REQUIRE(b.getStatus().getCode() == Status::Code::OK);
  CHECK(text(b.getKv().getValue()) == "2");
  CHECK(again.node->state().revision() == 3);
  // New writes continue the revision sequence.
  CHECK(again.put("c", "3").getHeader().getRevision() == 4);
}

TEST_CASE("leases and locks are committed by the group commit and restored at start") {
  storage::MemoryStore store;
  const uint64_t leaseId = election::makeLeaseId(0, 1);
  {
    Fixture f(store);
    auto write = [&](auto fill) {
      capnp::MallocMessageBuilder message;
      fill(message.initRoot<records::Command>());
      return f.node->write(message, 0).wait(f.io.waitScope);
    };
    auto granted = write([&](records::Command::Builder c) {
      auto op = c.initLeaseGrant();
      op.setId(leaseId);
      op.setTtlMs(5000);
      op.setDetached(true);
    });
    REQUIRE(granted.code == StatusCode::OK);
    auto locked = write([&](records::Command::Builder c) {
      auto op = c.initLock();
      op.setName(bytes("web"));
      op.setLease(leaseId);
      op.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("n1"), 2));
    });
    REQUIRE(locked.code == StatusCode::OK);
    CHECK(locked.succeeded);
    CHECK(f.node->state().holder("web").has_value());
    // The applied state, leases and locks included, reaches the store once due.
    f.io.provider->getTimer()
        .afterDelay((Node::MATERIALIZE_DELAY_MS + 100) * kj::MILLISECONDS)
        .wait(f.ws());
  }
  store.restart();
  int storedLocks = 0;
  store.forEachLock([&](std::string_view, std::string_view) { ++storedLocks; });
  CHECK(storedLocks == 1);
  Fixture again(store);
  REQUIRE(again.node->state().lease(leaseId) != nullptr);
  auto holder = again.node->state().holder("web");
  REQUIRE(holder.has_value());
  CHECK(holder->lease == leaseId);
  CHECK(again.node->state().checkFence("web", holder->fence));
}

TEST_CASE("state is materialized and the log compacted once writes stop") {
  storage::MemoryStore store;
  Fixture f(store);
  f.settle();
  const uint64_t commitsBefore = f.node->counters().commits;
  for (int i = 0; i < 20; ++i)
    f.put("k" + std::to_string(i % 5), std::to_string(i));
  f.settle();
  // One commit per write (its vote), plus one for the applied state per MATERIALIZE_DELAY_MS; the
  // log below the applied state goes with the next commit after it.
  CHECK(f.node->counters().commits - commitsBefore <= 20 + 3);
  f.io.provider->getTimer()
      .afterDelay((Node::MATERIALIZE_DELAY_MS + 100) * kj::MILLISECONDS)
      .wait(f.ws());
  CHECK(store.appliedSlot() == f.node->state().appliedSlot());
  CHECK(store.revision() == 20);
  CHECK(store.keys().size() == 5);
  CHECK(store.log().empty());
  CHECK(store.keys().at("k4").value == "19");
}

}  // namespace
}  // namespace synod::daemon
