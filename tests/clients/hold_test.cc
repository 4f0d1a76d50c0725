// synodctl's lease, lock and election commands against the in-process fake daemon: parsing,
// rendering, exit codes, and `lock/elect -- CMD` running real child processes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>

#include "clients/cli.h"
#include "tests/clients/fake_daemon.h"

using namespace synod::clients;
using synod::clients::testing::FakeDaemon;

namespace {

struct Fixture {
  std::string dir = [] {
    char pattern[] = "/tmp/synod-hold-test.XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    return std::string(pattern);
  }();
  kj::AsyncIoContext io = kj::setupAsyncIo();
  FakeDaemon daemon{io, dir + "/synod.sock"};
  Client client{io, ClientOptions{daemon.socketPath(), 2000, 1000}};

  ~Fixture() {
    for (const char* name : {"/out", "/pid"})
      ::unlink((dir + name).c_str());
    ::rmdir(dir.c_str());
  }

  Rendered run(std::vector<std::string> args) {
    auto parsed = parseInvocation(args, ParseMode::COMMAND_LINE);
    REQUIRE_MESSAGE(parsed.ok(), parsed.error);
    return execute(client, *parsed.value, false);
  }

  HoldCommand hold(std::vector<std::string> args) {
    auto parsed = parseInvocation(args, ParseMode::COMMAND_LINE);
    REQUIRE_MESSAGE(parsed.ok(), parsed.error);
    REQUIRE(std::holds_alternative<HoldCommand>(parsed.value->command));
    return std::get<HoldCommand>(parsed.value->command);
  }

  bool pollUntil(const std::function<bool()>& done) {
    auto start = std::chrono::steady_clock::now();
    while (!done()) {
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(10)) return false;
      client.runFor(5);
    }
    return true;
  }
};

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Polls the file for a pid on the fixture's loop, then runs `then` with it.
kj::Promise<void> whenPidFile(Fixture& f, std::function<void(pid_t)> then) {
  return f.io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).then([&f, then]() {
    std::string text = readFile(f.dir + "/pid");
    if (!text.empty() && text.back() == '\n') {
      then(static_cast<pid_t>(std::stol(text)));
      return kj::Promise<void>(kj::READY_NOW);
    }
    return whenPidFile(f, then);
  });
}

bool processGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && stat.substr(close + 2, 1) == "Z";
}

}  // namespace

TEST_CASE("lease, leader, check-fence, lock, elect, observe: parsing and usage errors") {
  auto parse = [](std::vector<std::string> args) {
    return parseInvocation(args, ParseMode::COMMAND_LINE);
  };
  auto grant = parse({"lease", "grant", "5000", "--lock-delay", "100"});
  REQUIRE(grant.ok());
  CHECK(std::get<LeaseCommand>(grant.value->command).ttlMs == 5000);
  CHECK(std::get<LeaseCommand>(grant.value->command).lockDelayMs == 100);
  CHECK(contains(parse({"lease", "grant", "x"}).error, "TTL_MS must be a number"));
  CHECK(contains(parse({"lease", "frob"}).error, "unknown action 'frob'"));
  CHECK(contains(parse({"lease", "info"}).error, "expected ID"));
  CHECK(contains(parse({"lease", "revoke", "0"}).error, "ID must be a lease id"));
  CHECK(contains(parse({"lease", "list", "--lock-delay", "5"}).error, "for grant only"));
  CHECK(std::get<PutCommand>(parse({"put", "k", "v", "--lease", "42"}).value->command).lease == 42);
  CHECK(contains(parse({"put", "k", "v", "--lease", "x"}).error, "--lease needs a lease ID"));
  CHECK(contains(parse({"leader", ""}).error, "NAME must be 1 to 511 bytes"));
  CHECK(contains(parse({"leader", std::string(512, 'a')}).error, "got 512"));
  CHECK(contains(parse({"check-fence", "a", "x"}).error, "FENCE must be a number"));

  auto lock = parse({"lock", "db", "--ttl", "3000", "--kill-after", "500", "--", "cmd", "--x"});
  REQUIRE_MESSAGE(lock.ok(), lock.error);
  auto hold = std::get<HoldCommand>(lock.value->command);
  CHECK_FALSE(hold.election);
  CHECK(hold.name == "db");
  CHECK(hold.ttlMs == 3000);
  CHECK(hold.argv == std::vector<std::string>{"cmd", "--x"});
  auto elect = parse({"elect", "web", "--value", "n1", "--", "sleep", "1"});
  REQUIRE(elect.ok());
  CHECK(std::get<HoldCommand>(elect.value->command).election);
  CHECK(std::get<HoldCommand>(elect.value->command).value == "n1");
  CHECK(std::get<HoldCommand>(elect.value->command).ttlMs == DEFAULT_HOLD_TTL_MS);
  CHECK(contains(parse({"lock", "db", "sleep"}).error, "expected NAME -- CMD"));
  CHECK(contains(parse({"lock", "db", "--"}).error, "expected"));
  CHECK(contains(parse({"lock", "db", "--ttl", "1000", "--", "x"}).error, "too long"));
  CHECK(contains(parse({"lock", std::string("a\0b", 3), "--", "x"}).error, "NUL"));
  for (auto words :
       std::vector<std::vector<std::string>>{{"lock", "x", "--", "y"}, {"elect", "x", "--", "y"}}) {
    auto line = parseInvocation(words, ParseMode::SHELL_LINE);
    CHECK(contains(line.error, "cannot run inside a shell session"));
  }
  CHECK(parseInvocation({"observe", "x"}, ParseMode::SHELL_LINE).ok());  // a shell stream
  for (std::string_view word : {"lease grant TTL_MS", "check-fence NAME FENCE", "SYNOD_FENCE",
                                "PR_SET_PDEATHSIG", "--kill-after", "5  lock/elect"}) {
    CAPTURE(word);
    CHECK(contains(helpText(), word));
  }
}

TEST_CASE("lease commands: JSON fields, tables and exit codes") {
  Fixture f;
  auto bad = f.run({"--json", "lease", "grant", "10"});
  CHECK(bad.exitCode == EXIT_USAGE);
  CHECK(contains(bad.out, "\"code\":\"INVALID_ARGUMENT\""));

  auto granted = f.run({"--json", "lease", "grant", "4000", "--lock-delay", "0"});
  REQUIRE(granted.exitCode == EXIT_OK);
  uint64_t id = f.daemon.state.leases.begin()->first;
  CHECK(f.daemon.state.leases.begin()->second.detached);  // outlives synodctl
  CHECK(f.daemon.state.leases.begin()->second.lockDelayMs == 0);
  CHECK(contains(granted.out, "\"id\":" + std::to_string(id)));
  CHECK(contains(granted.out, "\"ttlMs\":4000,\"remainingMs\":4000,\"fence\":"));
  CHECK(f.run({"lease", "grant", "4000"}).out == std::to_string(id + 1) + "\n");

  CHECK(f.run({"put", "svc/a", "x", "--lease", std::to_string(id)}).exitCode == EXIT_OK);
  CHECK(f.run({"put", "svc/b", "x", "--lease", "999"}).exitCode == EXIT_REFUSED);
  auto info = f.run({"--json", "lease", "info", std::to_string(id)});
  CHECK(info.exitCode == EXIT_OK);
  for (std::string_view field :
       {"\"holder\":{\"member\":\"fake1\",\"pid\":", "\"detached\":true", "\"local\":true",
        "\"attached\":false", "\"epoch\":1", "\"keys\":1", "\"locks\":[]"}) {
    CAPTURE(field);
    CHECK(contains(info.out, field));
  }
  auto table = f.run({"lease", "list"});
  CHECK(contains(table.out, "ID    TTL_MS  REMAINING_MS  FENCE  HOLDER"));
  CHECK(contains(f.run({"--json", "lease", "list"}).out, "\"leases\":[{\"id\":"));

  auto kept = f.run({"--json", "lease", "keepalive", std::to_string(id)});
  CHECK(kept.exitCode == EXIT_OK);
  CHECK(contains(kept.out, "\"remainingMs\":4000,\"ttlMs\":4000"));
  CHECK(f.daemon.state.keepAlives == 1);

  CHECK(f.run({"lease", "revoke", std::to_string(id)}).out ==
        "revoked lease " + std::to_string(id) + "\n");
  CHECK(f.daemon.state.kvs.count("svc/a") == 0);
  auto gone = f.run({"lease", "info", std::to_string(id)});
  CHECK(gone.exitCode == EXIT_REFUSED);
  CHECK(contains(gone.err, "not found (NOT_FOUND)"));
  CHECK(f.run({"lease", "revoke", std::to_string(id)}).exitCode == EXIT_REFUSED);
  CHECK(f.run({"lease", "keepalive", std::to_string(id)}).exitCode == EXIT_REFUSED);
}

TEST_CASE("leader and check-fence: JSON fields, table, exit codes") {
  Fixture f;
  auto free = f.run({"--json", "leader", "web"});
  CHECK(free.exitCode == EXIT_REFUSED);
  CHECK(contains(free.out, "has no holder"));
  auto freeFence = f.run({"--json", "check-fence", "web", "5"});
  CHECK(freeFence.exitCode == EXIT_REFUSED);
  CHECK(contains(freeFence.out, "\"current\":false,\"hasHolder\":false,\"holder\":null"));

  uint64_t lease = f.client.grantLease(5000, LeaseOptions{true, -1})->info.id;
  uint64_t fence = f.client.campaign("web", "n1:80", lease)->fence;
  auto leader = f.run({"--json", "leader", "web"});
  CHECK(leader.exitCode == EXIT_OK);
  CHECK(contains(leader.out, "\"name\":\"web\",\"lease\":" + std::to_string(lease) +
                                 ",\"fence\":" + std::to_string(fence) +
                                 ",\"value\":\"n1:80\",\"holder\":{\"member\":\"fake1\""));
  auto table = f.run({"leader", "web"});
  CHECK(contains(table.out, "NAME  LEASE  FENCE  MEMBER  PID"));
  CHECK(contains(table.out, "n1:80"));
  CHECK(f.run({"check-fence", "web", std::to_string(fence)}).exitCode == EXIT_OK);
  auto stale = f.run({"check-fence", "web", std::to_string(fence - 1)});
  CHECK(stale.exitCode == EXIT_REFUSED);
  CHECK(contains(stale.out, "is not current: the holder's fence is " + std::to_string(fence)));
}

TEST_CASE("observe: one line per change, from the current holder on") {
  Fixture f;
  uint64_t lease = f.client.grantLease(5000, LeaseOptions{true, -1})->info.id;
  f.client.lock("db", lease, false);
  std::ostringstream out, err;
  // The unlock happens on the loop while observe waits for its second line.
  auto unlocking = f.io.provider->getTimer()
                       .afterDelay(50 * kj::MILLISECONDS)
                       .then([&] { return f.client.async().unlock("db", lease).ignoreResult(); })
                       .eagerlyEvaluate(nullptr);
  int code = runObserve(f.client, ObserveCommand{"db", 2}, true, out, err);
  CHECK(code == EXIT_OK);
  std::string lines = out.str();
  CHECK(contains(lines, "{\"name\":\"db\",\"revision\":"));
  CHECK(contains(lines, "\"hasHolder\":true,\"holder\":{\"lease\":" + std::to_string(lease)));
  CHECK(contains(lines, "\"hasHolder\":false,\"holder\":null}\n"));
  CHECK(std::count(lines.begin(), lines.end(), '\n') == 2);
}

TEST_CASE(
    "lock -- CMD: CMD sees SYNOD_FENCE/SYNOD_LEASE/SYNOD_LOCK; its status is the exit status") {
  Fixture f;
  std::ostringstream err;
  auto command = f.hold({"lock", "db", "--", "sh", "-c",
                         "echo \"$SYNOD_FENCE $SYNOD_LEASE $SYNOD_LOCK\" > " + f.dir +
                             "/out; "
                             "exit 7"});
  CHECK(runHold(f.client, command, err) == 7);
  CHECK(err.str().empty());
  std::istringstream seen(readFile(f.dir + "/out"));
  uint64_t fence = 0, lease = 0;
  std::string name;
  seen >> fence >> lease >> name;
  CHECK(fence > 0);
  CHECK(lease > 7000);
  CHECK(name == "db");
  REQUIRE(f.pollUntil([&] { return f.daemon.state.leases.empty(); }));  // lease revoked
  CHECK(f.daemon.state.locks.empty());

  auto signalled = f.hold({"elect", "web", "--value", "v", "--", "sh", "-c", "kill -TERM $$"});
  CHECK(runHold(f.client, signalled, err) == 128 + SIGTERM);
  auto missing = f.hold({"lock", "db", "--", "/nonexistent/command"});
  CHECK(runHold(f.client, missing, err) == 127);
}

TEST_CASE("lock -- CMD: busy lock with --timeout-ms is refused; CMD never runs") {
  Fixture f;
  uint64_t other = f.client.grantLease(5000, LeaseOptions{true, -1})->info.id;
  f.client.lock("db", other, false);
  std::ostringstream err;
  auto command =
      f.hold({"lock", "db", "--timeout-ms", "100", "--", "sh", "-c", "touch " + f.dir + "/out"});
  CHECK(runHold(f.client, command, err) == EXIT_REFUSED);
  CHECK(contains(err.str(), "waiting for lock \"db\""));
  CHECK(readFile(f.dir + "/out").empty());
}

TEST_CASE("lock -- CMD: the daemon revokes the lease: SIGTERM to CMD, exit 5") {
  Fixture f;
  std::ostringstream err;
  auto command = f.hold({"lock", "db", "--ttl", "30000", "--kill-after", "5000", "--", "sh", "-c",
                         "echo $$ > " + f.dir + "/pid; exec sleep 100"});
  pid_t child = 0;
  auto revoking = whenPidFile(f, [&](pid_t pid) {
                    child = pid;
                    f.daemon.revokeLease(f.daemon.state.leases.begin()->first);
                  }).eagerlyEvaluate(nullptr);
  auto start = std::chrono::steady_clock::now();
  CHECK(runHold(f.client, command, err) == EXIT_LOST);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("revoke to exit 5: " << seconds << " s");
  CHECK(seconds < 4);  // SIGTERM ended it, not the SIGKILL 5 s later
  CHECK(child > 0);
  CHECK(processGone(child));
  CHECK(contains(err.str(), "lock \"db\" lost"));
}

TEST_CASE("lock -- CMD: keepAlives unanswered: CMD is killed before the lease could end") {
  Fixture f;
  std::ostringstream err;
  // sh ignores SIGTERM here: only the SIGKILL --kill-after later ends it.
  auto command =
      f.hold({"lock", "db", "--ttl", "1500", "--kill-after", "200", "--", "sh", "-c",
              "trap '' TERM; echo $$ > " + f.dir + "/pid; while :; do sleep 0.05; done"});
  auto hanging =
      whenPidFile(f, [&](pid_t) { f.daemon.state.hangKeepAlive = true; }).eagerlyEvaluate(nullptr);
  CHECK(runHold(f.client, command, err) == EXIT_LOST);
  CHECK(contains(err.str(), "could end in"));
}

TEST_CASE("lock -- CMD: CMD dies with a SIGKILLed synodctl (PR_SET_PDEATHSIG)") {
  const char* synodctl = std::getenv("SYNODCTL");
  if (synodctl == nullptr) {
    MESSAGE("SYNODCTL not set: skipped");
    return;
  }
  Fixture f;
  std::string script = "echo $$ > " + f.dir + "/pid; exec sleep 100";
  pid_t ctl = ::fork();
  REQUIRE(ctl >= 0);
  if (ctl == 0) {
    ::execl(synodctl, synodctl, "--socket", f.daemon.socketPath().c_str(), "lock", "db", "--", "sh",
            "-c", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  pid_t child = 0;
  REQUIRE(f.pollUntil([&] {
    std::string text = readFile(f.dir + "/pid");
    if (text.empty() || text.back() != '\n') return false;
    child = static_cast<pid_t>(std::stol(text));
    return true;
  }));
  CHECK(f.daemon.state.locks.count("db") == 1);
  ::kill(ctl, SIGKILL);
  int status = 0;
  ::waitpid(ctl, &status, 0);
  REQUIRE(f.pollUntil([&] { return processGone(child); }));
  // Its connection closed: the daemon revoked the connection-bound lease and the lock is free.
  REQUIRE(f.pollUntil([&] { return f.daemon.state.locks.empty(); }));
}
