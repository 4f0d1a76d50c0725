// KJ and Cap'n Proto RPC as a guest on a libuv loop, over real sockets. Everything is driven by
// uv_run(); KJ's own wait() is used only where the test is about wait() itself.

#include "daemon/uv_loop.h"
#include "tests/daemon/uv_run_until.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <doctest/doctest.h>
#include <kj/debug.h>
#include <kj/io.h>
#include <kj/thread.h>
#include <kj/vector.h>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "test_echo.capnp.h"

namespace synod::daemon {
namespace {

using test::TestEcho;
using Clock = std::chrono::steady_clock;

constexpr uint NEW_FD_FLAGS = kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                              kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                              kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK;

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// User + system CPU time of the whole process.
double cpuMs() {
  struct rusage usage = {};
  getrusage(RUSAGE_SELF, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
}

int countOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  REQUIRE(dir != nullptr);
  int count = 0;
  while (readdir(dir) != nullptr)
    ++count;
  closedir(dir);
  return count;
}

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/synod-uv-loop-XXXXXX";
    REQUIRE(mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    if (DIR* dir = opendir(path.c_str())) {
      while (struct dirent* entry = readdir(dir)) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
          unlink((path + "/" + entry->d_name).c_str());
        }
      }
      closedir(dir);
    }
    rmdir(path.c_str());
  }
  std::string file(const char* name) const { return path + "/" + name; }

  std::string path;
};

// Runs the loop until `done()` holds or `guardMs` pass (see runLoopUntil).
bool runUntil(uv_loop_t* loop, std::function<bool()> done, int guardMs = 20000,
              bool keepAlive = false) {
  return testing::runLoopUntil(loop, std::move(done), guardMs, keepAlive);
}

// Runs uv_run(UV_RUN_DEFAULT) and reports whether it returned by itself, i.e. no referenced
// handle was left, before `guardMs`.
bool runToCompletion(uv_loop_t* loop, int guardMs = 10000) {
  bool returned = false;
  runUntil(
      loop, [] { return false; }, guardMs);
  // runUntil() returns when the loop is out of work or the guard stopped it; tell them apart.
  returned = uv_loop_alive(loop) == 0;
  return returned;
}

// Drives `promise` with uv_run until it settles; returns its exception, if any.
kj::Maybe<kj::Exception> settle(UvKjLoop& kj, kj::Promise<void> promise, int guardMs = 20000) {
  struct Outcome {
    bool settled = false;
    kj::Maybe<kj::Exception> error;
  };
  auto outcome = kj::heap<Outcome>();
  auto task = promise
                  .then([o = outcome.get()] { o->settled = true; },
                        [o = outcome.get()](kj::Exception&& e) {
                          o->error = kj::mv(e);
                          o->settled = true;
                        })
                  .eagerlyEvaluate(nullptr);
  bool done = runUntil(
      kj.uvLoop(), [&] { return outcome->settled; }, guardMs);
  REQUIRE_MESSAGE(done, "the promise did not settle: the loop ran out of work or timed out");
  return kj::mv(outcome->error);
}

void runOk(UvKjLoop& kj, kj::Promise<void> promise, int guardMs = 20000) {
  KJ_IF_MAYBE (e, settle(kj, kj::mv(promise), guardMs)) {
    FAIL(kj::str(*e).cStr());
  }
}

template <typename T>
T runValue(UvKjLoop& kj, kj::Promise<T> promise, int guardMs = 20000) {
  auto value = kj::heap<kj::Maybe<T>>();
  runOk(kj, promise.then([v = value.get()](T&& result) { *v = kj::mv(result); }), guardMs);
  return kj::mv(KJ_ASSERT_NONNULL(*value));
}

kj::Exception::Type failureType(UvKjLoop& kj, kj::Promise<void> promise, int guardMs = 20000) {
  KJ_IF_MAYBE (e, settle(kj, kj::mv(promise), guardMs)) {
    MESSAGE("rejected as expected: ", std::string(kj::str(*e).cStr()));
    return e->getType();
  }
  FAIL("the promise resolved, expected a rejection");
  return kj::Exception::Type::FAILED;
}

// A libuv loop for one test. At its end every handle must be closed: the loop runs out of work
// and uv_loop_close() succeeds.
struct UvLoop {
  UvLoop() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~UvLoop() {
    CHECK_MESSAGE(runToCompletion(&loop), "a referenced libuv handle was left open");
    CHECK(uv_loop_close(&loop) == 0);
  }
  uv_loop_t loop;
};

// ---------------------------------------------------------------------------------------------
// RPC server and client

class EchoServer final : public TestEcho::Server {
 public:
  static constexpr capnp::MessageSize RESULT_SIZE = {4, 0};

  EchoServer(pid_t peer, int& pendingHangs) : peer(peer), pendingHangs(pendingHangs) {}

 protected:
  kj::Promise<void> echo(EchoContext context) override {
    // An explicit size hint: an empty kj::Maybe here trips g++ 12's -Wmaybe-uninitialized.
    context.getResults(RESULT_SIZE).setValue(context.getParams().getValue());
    return kj::READY_NOW;
  }
  kj::Promise<void> peerPid(PeerPidContext context) override {
    context.getResults(RESULT_SIZE).setPid(peer);
    return kj::READY_NOW;
  }
  kj::Promise<void> hang(HangContext context) override {
    context.allowCancellation();  // canceled when the caller goes away
    ++pendingHangs;
    return kj::Promise<void>(kj::NEVER_DONE).attach(kj::defer([this] { --pendingHangs; }));
  }

 private:
  const pid_t peer;
  int& pendingHangs;
};

// Accepts connections itself and gives each its own TwoPartyVatNetwork, RpcSystem and bootstrap
// object, which knows the connecting process from SO_PEERCRED (`unixPeers`) — what the daemon's
// local API does, and TwoPartyServer cannot.
class TestServer final : public kj::TaskSet::ErrorHandler {
 public:
  TestServer(kj::Own<kj::ConnectionReceiver> receiver, bool unixPeers)
      : listener(kj::mv(receiver)),
        unixPeers(unixPeers),
        connections(kj::heap<kj::TaskSet>(*this)),
        acceptTask(acceptLoop().eagerlyEvaluate(
            [](kj::Exception&& e) { FAIL_CHECK("accept failed: ", kj::str(e).cStr()); })) {}

  // Closes every connection from the server side.
  void dropConnections() { connections = kj::heap<kj::TaskSet>(*this); }

  int openConnections = 0;
  int pendingHangs = 0;
  std::vector<pid_t> acceptedPeerPids;

 private:
  struct Connection {
    Connection(TestServer& server, kj::Own<kj::AsyncIoStream> connection, pid_t peerPid)
        : server(server),
          stream(kj::mv(connection)),
          network(*stream, capnp::rpc::twoparty::Side::SERVER),
          rpc(capnp::makeRpcServer(network, kj::heap<EchoServer>(peerPid, server.pendingHangs))) {
      ++server.openConnections;
    }
    ~Connection() { --server.openConnections; }

    TestServer& server;
    kj::Own<kj::AsyncIoStream> stream;
    capnp::TwoPartyVatNetwork network;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  };

  kj::Promise<void> acceptLoop() {
    return listener->accept().then([this](kj::Own<kj::AsyncIoStream> stream) {
      pid_t pid = unixPeers ? peerCredentials(*stream).pid : 0;
      acceptedPeerPids.push_back(pid);
      auto connection = kj::heap<Connection>(*this, kj::mv(stream), pid);
      auto disconnected = connection->network.onDisconnect();
      connections->add(disconnected.attach(kj::mv(connection)));
      return acceptLoop();
    });
  }

  void taskFailed(kj::Exception&& e) override {
    FAIL_CHECK("server connection task failed: ", kj::str(e).cStr());
  }

  kj::Own<kj::ConnectionReceiver> listener;
  const bool unixPeers;
  kj::Own<kj::TaskSet> connections;
  kj::Promise<void> acceptTask;  // last: canceled before the connections and listener go
};

struct TestClient {
  explicit TestClient(kj::Own<kj::AsyncIoStream> connection)
      : stream(kj::mv(connection)), rpc(*stream), echo(rpc.bootstrap().castAs<TestEcho>()) {}

  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpc;
  TestEcho::Client echo;
};

struct sockaddr_un unixAddress(const std::string& path) {
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof(addr.sun_path));
  memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

kj::Own<kj::ConnectionReceiver> listenUnix(UvKjLoop& kj, const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  kj::AutoCloseFd owned(fd);
  auto addr = unixAddress(path);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(fd, 128) == 0);
  return kj.lowLevel().wrapListenSocketFd(owned.release(), NEW_FD_FLAGS);
}

kj::Promise<kj::Own<kj::AsyncIoStream>> connectUnix(UvKjLoop& kj, const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  auto addr = unixAddress(path);
  return kj.lowLevel().wrapConnectingSocketFd(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr),
                                              NEW_FD_FLAGS);
}

// A Unix-socket RPC server in a temporary directory on a fresh loop.
struct RpcFixture {
  RpcFixture() : kj(&uv.loop), server(kj::heap<TestServer>(listenUnix(kj, socketPath), true)) {}

  kj::Own<TestClient> connect() {
    return kj::heap<TestClient>(runValue(kj, connectUnix(kj, socketPath)));
  }

  TempDir dir;
  std::string socketPath = dir.file("rpc.sock");
  UvLoop uv;
  UvKjLoop kj;
  kj::Own<TestServer> server;
};

kj::Promise<void> callSequential(TestEcho::Client client, uint64_t next, uint64_t end) {
  if (next == end) return kj::READY_NOW;
  auto request = client.echoRequest();
  request.setValue(next);
  return request.send().then([client, next, end](auto&& response) mutable {
    KJ_ASSERT(response.getValue() == next);
    return callSequential(kj::mv(client), next + 1, end);
  });
}

kj::Promise<void> callConcurrent(TestEcho::Client& client, uint64_t count) {
  auto calls = kj::heapArrayBuilder<kj::Promise<void>>(count);
  for (uint64_t i = 0; i < count; i++) {
    auto request = client.echoRequest();
    request.setValue(i * 7);
    calls.add(
        request.send().then([i](auto&& response) { KJ_ASSERT(response.getValue() == i * 7, i); }));
  }
  return kj::joinPromises(calls.finish());
}

kj::Promise<pid_t> askPeerPid(TestClient& client) {
  return client.echo.peerPidRequest().send().then(
      [](auto&& response) -> pid_t { return response.getPid(); });
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("RPC over a Unix socket, driven by uv_run: peer pid, sequential and concurrent calls") {
  RpcFixture f;
  auto client = f.connect();

  CHECK(runValue(f.kj, askPeerPid(*client)) == getpid());
  REQUIRE(f.server->acceptedPeerPids.size() == 1);
  CHECK(f.server->acceptedPeerPids[0] == getpid());
  CHECK(peerCredentials(*client->stream).uid == getuid());
  CHECK(peerCredentials(*client->stream).gid == getgid());

  SUBCASE("sequential calls keep poll interest armed") {
    uint64_t interestChangesBefore = f.kj.pollInterestChanges();
    runOk(f.kj, callSequential(client->echo, 0, 2000));
    uint64_t changes = f.kj.pollInterestChanges() - interestChangesBefore;
    MESSAGE("poll interest changes over 2000 sequential calls: ", changes);
    CHECK(changes < 20);
  }

  SUBCASE("concurrent calls on one connection and across connections") {
    runOk(f.kj, callConcurrent(client->echo, 2000));

    std::vector<kj::Own<TestClient>> more;
    for (int i = 0; i < 8; i++)
      more.push_back(f.connect());
    auto work = kj::heapArrayBuilder<kj::Promise<void>>(more.size() * 2);
    for (auto& c : more) {
      work.add(callConcurrent(c->echo, 300));
      work.add(callSequential(c->echo, 0, 300));
    }
    runOk(f.kj, kj::joinPromises(work.finish()));
    CHECK(f.server->openConnections == 9);
    for (auto& c : more)
      CHECK(runValue(f.kj, askPeerPid(*c)) == getpid());
  }

  // With every connection and the listener gone, nothing is left for uv_run to wait for.
  client = nullptr;
  f.server = nullptr;
  CHECK(runToCompletion(&f.uv.loop));
}

TEST_CASE("RPC latency over a Unix socket (reported, not asserted)") {
  RpcFixture f;
  auto client = f.connect();
  runOk(f.kj, callSequential(client->echo, 0, 100));  // warm-up

  constexpr int CALLS = 10000;
  auto start = Clock::now();
  runOk(f.kj, callSequential(client->echo, 0, CALLS), 120000);
  double totalMs = msSince(start);
  MESSAGE("average RPC round trip over ", CALLS, " sequential calls: ", totalMs * 1000 / CALLS,
          " us");
}

TEST_CASE("KJ timers fire on time from uv_run, which returns after the last one") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  auto start = Clock::now();
  std::vector<std::pair<int, double>> fired;
  kj::Vector<kj::Promise<void>> timers;
  for (int delayMs : {60, 10, 120}) {
    timers.add(kj.timer()
                   .afterDelay(delayMs * kj::MILLISECONDS)
                   .then([&fired, delayMs, start] {
                     fired.push_back({delayMs, msSince(start)});
                   })
                   .eagerlyEvaluate(nullptr));
  }

  // The pending timers alone keep the loop running; after the last one it returns by itself.
  REQUIRE(runToCompletion(&uv.loop));
  REQUIRE(fired.size() == 3);
  CHECK(fired[0].first == 10);
  CHECK(fired[1].first == 60);
  CHECK(fired[2].first == 120);
  for (auto [delayMs, atMs] : fired) {
    MESSAGE(delayMs, " ms timer fired after ", atMs, " ms");
    CHECK(atMs >= delayMs);
    CHECK(atMs < delayMs + 2000);
  }
}

TEST_CASE("a KJ timer created in a plain libuv callback fires, counted from its creation") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  struct State {
    UvKjLoop* kj;
    kj::Maybe<kj::Promise<void>> task;
    Clock::time_point createdAt;
    double firedAfterMs = -1;
  } state{&kj, nullptr, {}, -1};

  // The loop first sleeps 200 ms in a plain libuv timer: a deadline counted from KJ's last look
  // at the clock would already have passed when the KJ timer is created.
  uv_timer_t plain;
  uv_timer_init(&uv.loop, &plain);
  plain.data = &state;
  uv_timer_start(
      &plain,
      [](uv_timer_t* handle) {
        auto& s = *static_cast<State*>(handle->data);
        s.createdAt = Clock::now();
        s.task = s.kj->timer()
                     .afterDelay(100 * kj::MILLISECONDS)
                     .then([&s] { s.firedAfterMs = msSince(s.createdAt); })
                     .eagerlyEvaluate(nullptr);
        uv_close(reinterpret_cast<uv_handle_t*>(handle), nullptr);
      },
      200, 0);

  REQUIRE(runToCompletion(&uv.loop));
  MESSAGE("timer created in a libuv callback fired after ", state.firedAfterMs, " ms");
  CHECK(state.firedAfterMs >= 100);
  CHECK(state.firedAfterMs < 2000);
}

TEST_CASE("idle: a pending KJ timer and an idle RPC connection use no CPU") {
  RpcFixture f;
  auto client = f.connect();
  CHECK(runValue(f.kj, askPeerPid(*client)) == getpid());

  double cpuBefore = cpuMs();
  auto start = Clock::now();
  runOk(f.kj, f.kj.timer().afterDelay(300 * kj::MILLISECONDS));
  double elapsedMs = msSince(start);
  double cpuUsedMs = cpuMs() - cpuBefore;
  MESSAGE("300 ms idle in uv_run: ", elapsedMs, " ms elapsed, ", cpuUsedMs, " ms CPU");
  CHECK(elapsedMs >= 300);
  CHECK(cpuUsedMs < 50);
}

TEST_CASE("promise.wait() blocks in uv_run(ONCE) without spinning") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);

  SUBCASE("on a timer, with KJ runnable when the wait starts") {
    double cpuBefore = cpuMs();
    auto start = Clock::now();
    kj::evalLater([&kj] {
      return kj.timer().afterDelay(200 * kj::MILLISECONDS);
    }).wait(kj.waitScope());
    double cpuUsedMs = cpuMs() - cpuBefore;
    MESSAGE("wait() on a 200 ms timer: ", msSince(start), " ms elapsed, ", cpuUsedMs, " ms CPU");
    CHECK(msSince(start) >= 200);
    CHECK(cpuUsedMs < 50);
  }

  SUBCASE("poll() runs what is ready, including I/O, without blocking") {
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    auto a = kj.lowLevel().wrapSocketFd(fds[0], NEW_FD_FLAGS);
    auto b = kj.lowLevel().wrapSocketFd(fds[1], NEW_FD_FLAGS);
    kj::byte byte = 0;
    auto read = b->read(&byte, 1);
    CHECK_FALSE(read.poll(kj.waitScope()));
    REQUIRE(::write(fds[0], "y", 1) == 1);
    CHECK(read.poll(kj.waitScope()));  // the byte is already in the socket: no waiting needed
    read.wait(kj.waitScope());
    CHECK(byte == 'y');
  }

  SUBCASE("on a cross-thread fulfiller") {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<int>();
    double cpuBefore = cpuMs();
    kj::Thread thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the wait block first
      paf.fulfiller->fulfill(42);
    });
    CHECK(paf.promise.wait(kj.waitScope()) == 42);
    double cpuUsedMs = cpuMs() - cpuBefore;
    MESSAGE("wait() for another thread: ", cpuUsedMs, " ms CPU");
    CHECK(cpuUsedMs < 50);
  }
}

TEST_CASE("cross-thread work via kj::Executor runs from uv_run") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  const kj::Executor& executor = kj::getCurrentThreadExecutor();
  auto loopThread = std::this_thread::get_id();

  constexpr int CALLS = 200;
  int ranOnLoopThread = 0;
  std::atomic<int> results{0};
  kj::Thread thread([&] {
    for (int i = 0; i < CALLS; i++) {
      int value = executor.executeSync([&, i] {
        if (std::this_thread::get_id() == loopThread) ++ranOnLoopThread;
        return i * 2;
      });
      if (value == i * 2) ++results;
    }
  });
  // Nothing of KJ's keeps the loop alive for another thread; the referenced guard does.
  CHECK(runUntil(
      &uv.loop, [&] { return ranOnLoopThread == CALLS; }, 20000, true));
  CHECK(ranOnLoopThread == CALLS);
  // executeSync() returns in the other thread after the loop thread delivered the result.
  CHECK(runUntil(
      &uv.loop, [&] { return results == CALLS; }, 20000, true));
}

TEST_CASE("peer disconnect is seen by the other side; closing everything leaves no fd open") {
  int fdsAtStart = countOpenFds();
  {
    RpcFixture f;
    int fdsWithServer = countOpenFds();

    SUBCASE("the server drops the connection: the client's pending call rejects") {
      auto client = f.connect();
      auto hang = client->echo.hangRequest().send().ignoreResult();
      REQUIRE(runUntil(&f.uv.loop, [&] { return f.server->pendingHangs == 1; }));
      f.server->dropConnections();
      CHECK(failureType(f.kj, kj::mv(hang)) == kj::Exception::Type::DISCONNECTED);
      CHECK(failureType(f.kj, askPeerPid(*client).ignoreResult()) ==
            kj::Exception::Type::DISCONNECTED);
    }

    SUBCASE("the client goes away: the server cancels its pending call and drops the connection") {
      auto client = f.connect();
      kj::Maybe<kj::Promise<void>> hang =
          client->echo.hangRequest().send().ignoreResult().eagerlyEvaluate(nullptr);
      REQUIRE(runUntil(&f.uv.loop, [&] { return f.server->pendingHangs == 1; }));
      CHECK(f.server->openConnections == 1);
      hang = nullptr;
      client = nullptr;
      CHECK(runUntil(&f.uv.loop, [&] {
        return f.server->openConnections == 0 && f.server->pendingHangs == 0;
      }));
    }

    CHECK(runUntil(&f.uv.loop, [&] { return f.server->openConnections == 0; }));
    CHECK(countOpenFds() == fdsWithServer);
  }
  CHECK(countOpenFds() == fdsAtStart);
}

TEST_CASE("TCP on loopback through kj::Network: listen, connect, RPC") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  auto& network = kj.provider().getNetwork();
  auto receiver = runValue(kj, network.parseAddress("127.0.0.1", 0))->listen();
  uint port = receiver->getPort();
  CHECK(port != 0);
  TestServer server(kj::mv(receiver), false);

  auto stream = runValue(kj, runValue(kj, network.parseAddress("127.0.0.1", port))->connect());
  TestClient client(kj::mv(stream));
  runOk(kj, callSequential(client.echo, 0, 200));
  runOk(kj, callConcurrent(client.echo, 200));
  CHECK(runValue(kj, askPeerPid(client)) == 0);  // no SO_PEERCRED over TCP
  CHECK_THROWS(peerCredentials(*client.stream));
}

// Connected TCP pair on loopback through the low-level provider (non-blocking connect).
struct TcpPair {
  kj::Own<kj::AsyncIoStream> client;
  kj::Own<kj::AsyncIoStream> server;
};

TcpPair connectTcpPair(UvKjLoop& kj) {
  int listenFd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(listenFd >= 0);
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(listenFd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(listenFd, 8) == 0);
  auto receiver = kj.lowLevel().wrapListenSocketFd(listenFd, NEW_FD_FLAGS);
  addr.sin_port = htons(receiver->getPort());

  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  auto connecting = kj.lowLevel().wrapConnectingSocketFd(fd, reinterpret_cast<sockaddr*>(&addr),
                                                         sizeof(addr), NEW_FD_FLAGS);
  auto accepted = receiver->accept();
  TcpPair pair;
  pair.client = runValue(kj, kj::mv(connecting));
  pair.server = runValue(kj, kj::mv(accepted));
  return pair;
}

TEST_CASE("POLLERR: pending operations fail with DISCONNECTED when the peer resets") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  auto pair = connectTcpPair(kj);
  int small = 16 * 1024;
  pair.client->setsockopt(SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  pair.server->setsockopt(SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));

  auto data = kj::heapArray<kj::byte>(32 << 20);
  memset(data.begin(), 'x', data.size());
  kj::byte readBuffer[16];
  // Both wait: the write on a full socket buffer, the read for data that never comes.
  auto write = pair.client->write(data.begin(), data.size()).eagerlyEvaluate(nullptr);
  auto read = pair.client->read(readBuffer, sizeof(readBuffer)).eagerlyEvaluate(nullptr);
  CHECK(runUntil(
            &uv.loop, [] { return false; }, 100) == false);  // both still pending

  // Closing with unread data (and zero linger) makes the kernel send a reset.
  struct linger reset = {1, 0};
  pair.server->setsockopt(SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  pair.server = nullptr;

  CHECK(failureType(kj, kj::mv(write), 5000) == kj::Exception::Type::DISCONNECTED);
  CHECK(failureType(kj, kj::mv(read), 5000) == kj::Exception::Type::DISCONNECTED);
}

kj::Promise<void> readAll(kj::AsyncInputStream& in, kj::ArrayPtr<kj::byte> buffer, size_t offset) {
  if (offset == buffer.size()) return kj::READY_NOW;
  size_t chunk = kj::min(buffer.size() - offset, size_t(64 * 1024));
  return in.tryRead(buffer.begin() + offset, 1, chunk).then([&in, buffer, offset](size_t n) {
    KJ_ASSERT(n > 0, "premature end of stream", offset);
    return readAll(in, buffer, offset + n);
  });
}

TEST_CASE("large transfers wait on EAGAIN at both ends; end of stream reads as 0") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  auto source = kj::heapArray<kj::byte>(8 << 20);
  for (size_t i = 0; i < source.size(); i++)
    source[i] = kj::byte(i * 131 + (i >> 16));
  auto sink = kj::heapArray<kj::byte>(source.size());

  SUBCASE("socketpair, writev of several pieces") {
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    auto a = kj.lowLevel().wrapSocketFd(fds[0], NEW_FD_FLAGS);
    auto b = kj.lowLevel().wrapSocketFd(fds[1], NEW_FD_FLAGS);
    size_t third = source.size() / 3;
    kj::ArrayPtr<const kj::byte> pieces[] = {source.slice(0, third), source.slice(third, third),
                                             source.slice(third, source.size())};
    auto written = a->write(pieces).then([&] { a->shutdownWrite(); });
    runOk(kj, kj::joinPromises(kj::arr(kj::mv(written), readAll(*b, sink, 0))));
    CHECK(memcmp(source.begin(), sink.begin(), source.size()) == 0);
    kj::byte extra;
    CHECK(runValue(kj, b->tryRead(&extra, 1, 1)) == 0);
    CHECK(peerCredentials(*a).pid == getpid());
    // Both fds stay open with interest bits armed, but nobody waits: nothing keeps uv_run going.
    CHECK(runToCompletion(&uv.loop));
  }

  SUBCASE("pipe through wrapInputFd / wrapOutputFd") {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    auto in = kj.lowLevel().wrapInputFd(kj::AutoCloseFd(fds[0]));
    auto out = kj.lowLevel().wrapOutputFd(kj::AutoCloseFd(fds[1]));
    auto written = out->write(source.begin(), source.size()).then([&] { out = nullptr; });
    runOk(kj, kj::joinPromises(kj::arr(kj::mv(written), readAll(*in, sink, 0))));
    CHECK(memcmp(source.begin(), sink.begin(), source.size()) == 0);
    kj::byte extra;
    CHECK(runValue(kj, in->tryRead(&extra, 1, 1)) == 0);
  }
}

// Reads `sizes[i % sizes.size()]` bytes at a time (exactly, or at least one when `atLeastOne`).
kj::Promise<void> readInSizes(kj::AsyncInputStream& in, kj::ArrayPtr<kj::byte> buffer,
                              size_t offset, const std::vector<size_t>& sizes, size_t i,
                              bool atLeastOne) {
  if (offset == buffer.size()) return kj::READY_NOW;
  const size_t want = kj::min(buffer.size() - offset, sizes[i % sizes.size()]);
  return in.tryRead(buffer.begin() + offset, atLeastOne ? 1 : want, want)
      .then([&in, buffer, offset, &sizes, i, atLeastOne, want](size_t n) {
        KJ_ASSERT(n > 0 && n <= want, "short or long read", offset, n, want);
        KJ_ASSERT(atLeastOne || n == want, "exact read came back short", offset, n, want);
        return readInSizes(in, buffer, offset + n, sizes, i + 1, atLeastOne);
      });
}

TEST_CASE("small and large reads mixed through the read buffer keep the stream's bytes in order") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  auto source = kj::heapArray<kj::byte>(3 << 20);
  for (size_t i = 0; i < source.size(); i++)
    source[i] = kj::byte(i * 7 + (i >> 12));
  // Sizes around the 4 KiB buffer: tiny reads served from it, reads past it served partly from
  // what is buffered and then straight from the socket.
  const std::vector<size_t> sizes = {8, 1, 100, 4095, 4096, 4097, 3, 70000, 8, 5000, 12, 4000};
  for (bool atLeastOne : {false, true}) {
    CAPTURE(atLeastOne);
    auto sink = kj::heapArray<kj::byte>(source.size());
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    auto a = kj.lowLevel().wrapSocketFd(fds[0], NEW_FD_FLAGS);
    auto b = kj.lowLevel().wrapSocketFd(fds[1], NEW_FD_FLAGS);
    auto written = a->write(source.begin(), source.size()).then([&] { a->shutdownWrite(); });
    runOk(kj, kj::joinPromises(
                  kj::arr(kj::mv(written), readInSizes(*b, sink, 0, sizes, 0, atLeastOne))));
    CHECK(memcmp(source.begin(), sink.begin(), source.size()) == 0);
    // End of stream after the last buffered byte.
    kj::byte extra[16];
    CHECK(runValue(kj, b->tryRead(extra, 1, sizeof(extra))) == 0);
  }
}

TEST_CASE("an fd with interest still armed but nobody waiting does not keep uv_run going") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  auto a = kj.lowLevel().wrapSocketFd(fds[0], NEW_FD_FLAGS);
  auto b = kj.lowLevel().wrapSocketFd(fds[1], NEW_FD_FLAGS);
  kj::byte byte = 0;

  SUBCASE("after a read that waited completed") {
    auto read = b->read(&byte, 1);  // nothing sent yet: waits for readability
    runOk(kj, a->write("x", 1));
    runOk(kj, kj::mv(read));
    CHECK(byte == 'x');
  }
  SUBCASE("after a waiting read was canceled") {
    auto read = b->read(&byte, 1).eagerlyEvaluate(nullptr);
    CHECK_FALSE(runUntil(
        &uv.loop, [] { return false; }, 50));  // the read keeps the loop alive
  }
  // b's read interest stays armed (re-arming costs epoll_ctl calls), but nobody waits on it.
  uint64_t changes = kj.pollInterestChanges();
  CHECK(runToCompletion(&uv.loop));
  CHECK(kj.pollInterestChanges() == changes);
}

TEST_CASE("SIGPIPE is ignored: writing to a closed peer fails with DISCONNECTED") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  auto a = kj.lowLevel().wrapSocketFd(fds[0], NEW_FD_FLAGS);
  close(fds[1]);
  CHECK(failureType(kj, a->write("x", 1)) == kj::Exception::Type::DISCONNECTED);
}

TEST_CASE("whenWriteDisconnected: not on a half-close, yes once the peer is gone") {
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  auto a = kj.lowLevel().wrapSocketFd(fds[0], NEW_FD_FLAGS);
  auto b = kj.lowLevel().wrapSocketFd(fds[1], NEW_FD_FLAGS);
  bool disconnected = false;
  auto watch =
      a->whenWriteDisconnected().then([&] { disconnected = true; }).eagerlyEvaluate(nullptr);

  b->shutdownWrite();  // b still reads: a can still write
  CHECK_FALSE(runUntil(
      &uv.loop, [&] { return disconnected; }, 100));
  runOk(kj, a->write("ok", 2));

  b = nullptr;
  CHECK(runUntil(&uv.loop, [&] { return disconnected; }));
}

TEST_CASE("regular files are always ready") {
  TempDir dir;
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  std::string path = dir.file("data");
  {
    kj::AutoCloseFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(fd.get() >= 0);
    REQUIRE(::write(fd, "hello", 5) == 5);
  }
  auto in = kj.lowLevel().wrapInputFd(kj::AutoCloseFd(open(path.c_str(), O_RDONLY | O_CLOEXEC)));
  char buffer[16] = {};
  CHECK(runValue(kj, in->tryRead(buffer, 1, sizeof(buffer))) == 5);
  CHECK(std::string(buffer) == "hello");
}

TEST_CASE("connecting to a Unix path nobody listens on fails with a clear error") {
  TempDir dir;
  UvLoop uv;
  UvKjLoop kj(&uv.loop);
  auto error = settle(kj, connectUnix(kj, dir.file("nobody.sock")).ignoreResult());
  REQUIRE(error != nullptr);
  auto text = kj::str(KJ_ASSERT_NONNULL(error));
  MESSAGE(std::string(text.cStr()));
  CHECK(std::string(text.cStr()).find("nobody.sock") != std::string::npos);
}

}  // namespace
}  // namespace synod::daemon
