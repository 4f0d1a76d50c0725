// libsynod's lease, lock and election calls and RAII objects against the in-process fake daemon.
#include <unistd.h>

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <vector>

#include "clients/leases.h"
#include "clients/synod_client.h"
#include "tests/clients/fake_daemon.h"

using namespace synod::clients;
using synod::clients::testing::FakeDaemon;

namespace {

struct Fixture {
  std::string dir = [] {
    char pattern[] = "/tmp/synod-leases-test.XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    return std::string(pattern);
  }();
  kj::AsyncIoContext io = kj::setupAsyncIo();
  FakeDaemon daemon{io, dir + "/synod.sock"};
  Client client{io, ClientOptions{daemon.socketPath(), 2000, 1000}};

  ~Fixture() { ::rmdir(dir.c_str()); }

  AsyncClient& async() { return client.async(); }
  kj::WaitScope& scope() { return io.waitScope; }

  /// Runs the loop until `done` holds; false after a generous 10 s.
  bool pollUntil(const std::function<bool()>& done) {
    auto start = std::chrono::steady_clock::now();
    while (!done()) {
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(10)) return false;
      client.runFor(5);
    }
    return true;
  }

  kj::Own<Lease> grant(LeaseSettings settings, Lease::Listener listener = {}) {
    auto granted = Lease::grant(async(), settings, std::move(listener)).wait(scope());
    REQUIRE_MESSAGE(granted.ok(), granted.status.message);
    return kj::mv(granted.reply);
  }
};

LeaseSettings settingsFor(uint64_t ttlMs, bool detached = false) {
  LeaseSettings settings;
  settings.ttlMs = ttlMs;
  settings.options.detached = detached;
  return settings;
}

}  // namespace

TEST_CASE("lease calls: grant, info, list, keepAlive, revoke, TTL out of range") {
  Fixture f;
  auto bad = f.client.grantLease(10);
  CHECK(bad.status.code == Code::INVALID_ARGUMENT);
  CHECK(bad.status.message.find("ttlMs 10") != std::string::npos);
  CHECK(f.daemon.state.leases.empty());

  auto granted = f.client.grantLease(3000, LeaseOptions{true, 250});
  REQUIRE_MESSAGE(granted.ok(), granted.status.message);
  uint64_t id = granted->info.id;
  CHECK(granted->info.ttlMs == 3000);
  CHECK(granted->info.remainingMs == 3000);
  CHECK(granted->info.fence == granted.header.revision);
  CHECK(granted->info.detached);
  CHECK(f.daemon.state.leases.at(id).lockDelayMs == 250);
  CHECK(granted->info.holder.pid == ::getpid());

  auto kept = f.client.keepAlive(KJ_ASSERT_NONNULL(granted->lease));
  REQUIRE(kept.ok());
  CHECK(kept->remainingMs == 3000);
  CHECK(f.daemon.state.keepAlives == 1);

  REQUIRE(f.client.put("svc/a", "1", id).ok());
  CHECK(f.client.get("svc/a")->lease == id);
  auto info = f.client.leaseInfo(id, ReadOptions{true, 0});
  REQUIRE(info.ok());
  CHECK(info->epoch == 2);
  CHECK(info->keys == 1);
  CHECK(f.daemon.state.lastSerializable);
  auto list = f.client.listLeases();
  REQUIRE(list.ok());
  REQUIRE(list->leases.size() == 1);
  CHECK(list->leases[0].id == id);

  CHECK(f.client.revokeLease(id).ok());
  CHECK(f.client.get("svc/a").status.code == Code::NOT_FOUND);  // its key went with it
  CHECK(f.client.revokeLease(id).status.code == Code::NOT_FOUND);
  CHECK(f.client.leaseInfo(id).status.code == Code::NOT_FOUND);
  CHECK(f.client.put("k", "v", id).status.code == Code::NOT_FOUND);
}

TEST_CASE("lock calls: FIFO, fences, tryLock busy, checkFence, leader, unlock") {
  Fixture f;
  uint64_t a = f.client.grantLease(5000, LeaseOptions{true, -1})->info.id;
  uint64_t b = f.client.grantLease(5000, LeaseOptions{true, -1})->info.id;
  auto first = f.client.lock("job", a, false);
  REQUIRE(first.ok());
  CHECK(f.client.lock("job", a, false)->fence == first->fence);  // the holder's current fence
  CHECK(f.client.lock("job", b, false).status.code == Code::COMPARE_FAILED);
  CHECK(f.client.lock("", a, false).status.code == Code::INVALID_ARGUMENT);

  auto waiting = f.async().lock("job", b, true);  // no deadline: waits for a's unlock
  CHECK(f.client.checkFence("job", first->fence)->current);
  auto leader = f.client.leader("job");
  REQUIRE(leader.ok());
  CHECK(leader->lease == a);
  CHECK(leader->fence == first->fence);
  REQUIRE(f.client.unlock("job", a).ok());
  auto second = waiting.wait(f.scope());
  REQUIRE(second.ok());
  CHECK(second->fence > first->fence);
  auto stale = f.client.checkFence("job", first->fence);
  CHECK_FALSE(stale->current);
  CHECK(stale->hasHolder);
  CHECK(stale->holder.lease == b);
  CHECK(f.client.unlock("job", a).status.code == Code::NOT_FOUND);

  // A wait ends at once when its lease does.
  uint64_t c = f.client.grantLease(5000, LeaseOptions{true, -1})->info.id;
  auto doomed = f.async().lock("job", c, true, 0);
  f.daemon.revokeLease(c);
  CHECK(doomed.wait(f.scope()).status.code == Code::NOT_FOUND);
  CHECK(f.client.lock("job", a, true, 50).status.code == Code::TIMEOUT);
}

TEST_CASE("Lease keeps itself alive every TTL/6 and its deadline follows the replies") {
  Fixture f;
  std::vector<LeaseEvent> events;
  auto lease = f.grant(settingsFor(600), [&](LeaseEvent e) { events.push_back(e); });
  CHECK(events == std::vector<LeaseEvent>{LeaseEvent::GRANTED});
  CHECK(lease->ttlMs() == 600);
  CHECK(lease->remainingMs() <= 600);
  auto start = std::chrono::steady_clock::now();
  REQUIRE(f.pollUntil([&] { return lease->keepAlivesAnswered() >= 6; }));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("6 keepAlives of a 600 ms lease took " << seconds << " s");
  CHECK(f.daemon.state.keepAlives >= 6);
  CHECK(events == std::vector<LeaseEvent>{LeaseEvent::GRANTED});  // never in jeopardy
  CHECK(lease->remainingMs() > 200);
}

TEST_CASE("Lease: Granted -> Jeopardy -> Expired when keepAlives go unanswered") {
  Fixture f;
  std::vector<LeaseEvent> events;
  auto lease = f.grant(settingsFor(300), [&](LeaseEvent e) { events.push_back(e); });
  f.daemon.state.hangKeepAlive = true;
  REQUIRE(f.pollUntil([&] { return lease->expired(); }));
  CHECK(events ==
        std::vector<LeaseEvent>{LeaseEvent::GRANTED, LeaseEvent::JEOPARDY, LeaseEvent::EXPIRED});
  CHECK(lease->reason().find("local deadline") != std::string::npos);
  CHECK(lease->remainingMs() == 0);
}

TEST_CASE("Lease: Expired at once when the daemon says the lease ended") {
  Fixture f;
  std::vector<LeaseEvent> events;
  auto lease = f.grant(settingsFor(3000), [&](LeaseEvent e) { events.push_back(e); });
  f.daemon.revokeLease(lease->id());
  REQUIRE(f.pollUntil([&] { return lease->expired(); }));
  CHECK(events == std::vector<LeaseEvent>{LeaseEvent::GRANTED, LeaseEvent::EXPIRED});
  CHECK(lease->reason().find("has ended") != std::string::npos);
}

TEST_CASE("Lease: Jeopardy when little time is left, Safe when renewed again") {
  Fixture f;
  std::vector<LeaseEvent> events;
  auto lease = f.grant(settingsFor(1200), [&](LeaseEvent e) { events.push_back(e); });
  f.daemon.state.keepAliveCode = synod::rpc::Status::Code::UNAVAILABLE;
  REQUIRE(f.pollUntil([&] { return lease->state() == LeaseEvent::JEOPARDY; }));
  CHECK(lease->reason().find("keepAlive failed") != std::string::npos);
  f.daemon.state.keepAliveCode = nullptr;
  REQUIRE(f.pollUntil([&] { return lease->state() == LeaseEvent::SAFE; }));
  CHECK(events ==
        std::vector<LeaseEvent>{LeaseEvent::GRANTED, LeaseEvent::JEOPARDY, LeaseEvent::SAFE});
  CHECK_FALSE(lease->expired());
}

TEST_CASE("Lease destructor revokes; release does not; a dropped connection revokes") {
  Fixture f;
  auto lease = f.grant(settingsFor(5000, true));
  uint64_t id = lease->id();
  lease = nullptr;
  REQUIRE(f.pollUntil([&] { return f.daemon.state.leases.count(id) == 0; }));

  auto kept = f.grant(settingsFor(5000, true));
  uint64_t keptId = kept->id();
  kept->release();
  kept = nullptr;
  f.client.runFor(50);
  CHECK(f.daemon.state.leases.count(keptId) == 1);  // detached: lives on

  auto bound = f.grant(settingsFor(5000));
  uint64_t boundId = bound->id();
  f.daemon.dropConnections();
  REQUIRE(f.pollUntil([&] { return f.daemon.state.leases.count(boundId) == 0; }));
  REQUIRE(f.pollUntil([&] { return bound->state() == LeaseEvent::JEOPARDY; }));
}

TEST_CASE("Lock: fence, held while the lease lives, lost when it ends, unlocked by destructor") {
  Fixture f;
  auto leaseA = f.grant(settingsFor(5000));
  auto leaseB = f.grant(settingsFor(5000));
  auto lock = Lock::acquire(*leaseA, "db").wait(f.scope());
  REQUIRE_MESSAGE(lock.ok(), lock.status.message);
  CHECK(lock.reply->fence() == f.daemon.state.locks.at("db").fence);
  CHECK(lock.reply->held());
  CHECK(Lock::acquire(*leaseB, "db", false).wait(f.scope()).status.code == Code::COMPARE_FAILED);
  CHECK(Lock::acquire(*leaseB, std::string(512, 'x')).wait(f.scope()).status.code ==
        Code::INVALID_ARGUMENT);

  auto waiting = Lock::acquire(*leaseB, "db");
  uint64_t firstFence = lock.reply->fence();
  lock.reply = nullptr;  // unlocks
  auto second = waiting.wait(f.scope());
  REQUIRE(second.ok());
  CHECK(second.reply->fence() > firstFence);

  std::string lostWhy;
  second.reply->onLost([&](const std::string& why) { lostWhy = why; });
  f.daemon.revokeLease(leaseB->id());
  REQUIRE(f.pollUntil([&] { return !second.reply->held(); }));
  CHECK_FALSE(lostWhy.empty());
}

TEST_CASE("Election: campaign, leader value, proclaim, observe, resign passes it on") {
  Fixture f;
  auto leaseA = f.grant(settingsFor(5000));
  auto leaseB = f.grant(settingsFor(5000));
  std::vector<LockChange> changes;
  auto watching = f.async()
                      .observe("web", [&](const LockChange& change) { changes.push_back(change); })
                      .wait(f.scope());
  REQUIRE(watching.ok());
  auto a = Election::campaign(*leaseA, "web", "n1:8080").wait(f.scope());
  REQUIRE(a.ok());
  auto b = Election::campaign(*leaseB, "web", "n2:8080");
  CHECK(f.client.leader("web")->value == "n1:8080");
  REQUIRE(a.reply->proclaim("n1:9090").wait(f.scope()).ok());
  CHECK(f.client.leader("web")->value == "n1:9090");
  CHECK(f.client.leader("web")->fence == a.reply->fence());
  REQUIRE(a.reply->resign().wait(f.scope()).ok());
  CHECK_FALSE(a.reply->held());
  auto bWon = b.wait(f.scope());
  REQUIRE(bWon.ok());
  CHECK(bWon.reply->fence() > a.reply->fence());
  REQUIRE(f.pollUntil([&] { return changes.size() >= 4; }));
  CHECK_FALSE(changes[0].hasHolder);  // the state at observe: free
  CHECK(changes[1].holder.value == "n1:8080");
  CHECK(changes[2].holder.value == "n1:9090");
  CHECK(changes.back().holder.value == "n2:8080");
  CHECK(changes.back().holder.fence == bWon.reply->fence());
  watching.reply = Observation();
  REQUIRE(f.pollUntil([&] { return f.daemon.state.observers == 1; }));  // b's own watch
}
