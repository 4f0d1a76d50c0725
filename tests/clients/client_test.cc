// libsynod and synodctl's executor against the in-process fake daemon over a real Unix socket, and
// against sockets that are missing or never answer.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <sstream>

#include "clients/cli.h"
#include "clients/synod_client.h"
#include "tests/clients/fake_daemon.h"

using namespace synod::clients;
using synod::clients::testing::FakeDaemon;

namespace {

/// A private directory under /tmp, removed with what is in it.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/synod-clients-test.XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    for (const auto& file : files)
      ::unlink(file.c_str());
    ::rmdir(path.c_str());
  }
  std::string file(const std::string& name) {
    files.push_back(path + "/" + name);
    return files.back();
  }

  std::string path;

 private:
  std::vector<std::string> files;
};

/// One event loop, a fake daemon on it, and a client borrowing the loop.
struct Fixture {
  TempDir dir;
  kj::AsyncIoContext io = kj::setupAsyncIo();
  FakeDaemon daemon{io, dir.file("synod.sock")};
  Client client{io, ClientOptions{daemon.socketPath(), 2000, 1000}};
};

Invocation parseLine(std::vector<std::string> args) {
  auto parsed = parseInvocation(args, ParseMode::COMMAND_LINE);
  REQUIRE_MESSAGE(parsed.ok(), parsed.error);
  return *parsed.value;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("defaultSocketPath: $SYNOD_SOCKET, else /run/synod/synod.sock") {
  const char* saved = std::getenv("SYNOD_SOCKET");
  std::string savedValue = saved ? saved : "";
  ::setenv("SYNOD_SOCKET", "/tmp/elsewhere.sock", 1);
  CHECK(defaultSocketPath() == "/tmp/elsewhere.sock");
  ::setenv("SYNOD_SOCKET", "", 1);
  CHECK(defaultSocketPath() == "/run/synod/synod.sock");
  ::unsetenv("SYNOD_SOCKET");
  CHECK(defaultSocketPath() == "/run/synod/synod.sock");
  if (saved) ::setenv("SYNOD_SOCKET", savedValue.c_str(), 1);
}

TEST_CASE("put, get, del round trip with status and header") {
  Fixture f;
  auto missing = f.client.get("k");
  CHECK(missing.answered);
  CHECK(missing.status.code == Code::NOT_FOUND);
  CHECK(missing.header.member == "fake1");

  auto put = f.client.put("k", std::string("v\0\xff", 3));
  REQUIRE_MESSAGE(put.ok(), put.status.message);
  CHECK(put.header.revision == 2);
  CHECK(put.header.ballotRound == 7);

  auto got = f.client.get("k");
  REQUIRE(got.ok());
  CHECK(got->key == "k");
  CHECK(got->value == std::string("v\0\xff", 3));
  CHECK(got->version == 1);
  CHECK(got->createRevision == 2);
  CHECK(got->modRevision == 2);

  auto deleted = f.client.del("k");
  REQUIRE(deleted.ok());
  CHECK(deleted->deleted == 1);
  CHECK(f.client.get("k").status.code == Code::NOT_FOUND);
}

TEST_CASE("every call sends its timeout and read mode") {
  Fixture f;
  f.client.get("k");
  CHECK(f.daemon.state.lastTimeoutMs == 2000);  // the client's default
  CHECK_FALSE(f.daemon.state.lastSerializable);
  f.client.get("k", ReadOptions{true, 150});
  CHECK(f.daemon.state.lastTimeoutMs == 150);
  CHECK(f.daemon.state.lastSerializable);
  f.client.put("k", "v", WriteOptions{321});
  CHECK(f.daemon.state.lastTimeoutMs == 321);
  f.client.list("", ListOptions{0, {}, true, 77});
  CHECK(f.daemon.state.lastTimeoutMs == 77);
  CHECK(f.daemon.state.lastSerializable);
  f.client.status(55);
  CHECK(f.daemon.state.lastTimeoutMs == 55);
}

TEST_CASE("range deletes") {
  Fixture f;
  for (std::string key : {"a", "app/1", "app/2", "apq", "b"})
    REQUIRE(f.client.put(key, "x").ok());
  CHECK(f.client.del("app/", prefixRangeEnd("app/"))->deleted == 2);
  CHECK(f.client.del("apq", "b")->deleted == 1);
  CHECK(f.client.del("a", fromKeyRangeEnd())->deleted == 2);
  CHECK(f.daemon.state.kvs.empty());
}

TEST_CASE("list pages with limit and startAfter") {
  Fixture f;
  for (int i = 0; i < 5; ++i)
    REQUIRE(f.client.put("p/" + std::to_string(i), "v").ok());
  REQUIRE(f.client.put("q", "v").ok());
  auto first = f.client.list("p/", ListOptions{2, {}, false, 0});
  REQUIRE(first.ok());
  REQUIRE(first->kvs.size() == 2);
  CHECK(first->kvs[0].key == "p/0");
  CHECK(first->more);
  auto rest = f.client.list("p/", ListOptions{0, "p/1", false, 0});
  REQUIRE(rest->kvs.size() == 3);
  CHECK(rest->kvs[0].key == "p/2");
  CHECK_FALSE(rest->more);
}

TEST_CASE("txn: success, failure branch, compare targets") {
  Fixture f;
  Txn create;
  create.compares.push_back(Compare{"lock", Compare::Target::VERSION, Compare::Op::EQUAL, {}, 0});
  create.success.push_back(TxnOp::put("lock", "me"));
  create.failure.push_back(TxnOp::put("lost", "1"));
  auto first = f.client.txn(create);
  CHECK(first.ok());
  CHECK(first->succeeded);
  auto second = f.client.txn(create);
  CHECK(second.status.code == Code::COMPARE_FAILED);
  CHECK_FALSE(second->succeeded);
  CHECK(second.answered);
  CHECK(f.daemon.state.kvs.count("lost") == 1);

  Txn swap;
  swap.compares.push_back(Compare{"lock", Compare::Target::VALUE, Compare::Op::EQUAL, "me", 0});
  swap.compares.push_back(
      Compare{"lock", Compare::Target::MOD_REVISION, Compare::Op::GREATER, {}, 0});
  swap.success.push_back(TxnOp::del("lost"));
  CHECK(f.client.txn(swap).ok());
  CHECK(f.daemon.state.kvs.count("lost") == 0);
}

TEST_CASE("status info is converted field by field") {
  Fixture f;
  auto status = f.client.status();
  REQUIRE(status.ok());
  CHECK(status->member == "fake1");
  CHECK(status->role == "leader");
  CHECK(status->decidedSlot == 41);
  CHECK(status->appliedSlot == 40);
  CHECK(status->clusterId == "test");
  REQUIRE(status->members.size() == 2);
  CHECK(status->members[1].name == "n2");
  CHECK_FALSE(status->members[1].reachable);
  CHECK(status->members[1].lagSlots == 12);
  CHECK(status->leaseLeftMs == 1999);
  CHECK(status->commitP50Us == 700);
  CHECK(status->commitP99Us == 3100);
  CHECK(status->stateDigest == 0xfedcba9876543210ull);
  const MemberStatus& self = status->members[0];
  CHECK(self.reported);
  CHECK_FALSE(self.stale);
  CHECK(self.ballotRound == 7);
  CHECK(self.leader == "fake1");
  CHECK(self.decidedSlot == 41);
  CHECK(self.appliedSlot == 40);
  CHECK(self.leaseLeftMs == 1999);
  CHECK(self.dbSizeBytes == 4096);
  CHECK(self.storeLimitBytes == 1 << 20);
  CHECK(self.commitP50Us == 700);
  CHECK(self.commitP99Us == 3100);
  CHECK(self.incarnation == 3);
  CHECK(self.uptimeMs == 1500);
  CHECK(self.stateDigest == 0xfedcba9876543210ull);
  CHECK(status->members[1].stale);
  CHECK(status->members[1].reportAgeMs == 4321);
  CHECK_FALSE(self.recovering);
  CHECK(self.snapshotFrom.empty());
  CHECK(self.slotsBehind == 0);
  const MemberStatus& n2 = status->members[1];
  CHECK(n2.recovering);
  CHECK(n2.recoveryStage == "catching up to slot 41 before voting");
  CHECK(n2.snapshotFrom == "fake1");
  CHECK(n2.snapshotBytesReceived == 3250586);
  CHECK(n2.snapshotBytesTotal == 10485760);
  CHECK(n2.slotsBehind == 41);
}

TEST_CASE("health: ready exits 0, live but not ready 1, unreachable or hung 3") {
  Fixture f;
  auto health = f.client.health(700);
  REQUIRE(health.ok());
  CHECK(health->live);
  CHECK(health->ready);
  CHECK(f.daemon.state.lastTimeoutMs == 700);
  Rendered ready = execute(f.client, parseLine({"--json", "health"}), false);
  CHECK(ready.exitCode == 0);
  CHECK(ready.out.find(R"("live":true,"ready":true)") != std::string::npos);

  f.daemon.state.ready = false;
  Rendered notReady = execute(f.client, parseLine({"health"}), false);
  CHECK(notReady.exitCode == 1);
  CHECK(notReady.out ==
        "live: yes\nready: no\nreason: waiting for a quorum: 1 of 3 members reachable\n");
  Rendered notReadyJson = execute(f.client, parseLine({"--json", "health"}), false);
  CHECK(notReadyJson.exitCode == 1);
  CHECK(notReadyJson.out.find(R"("ready":false,"reason":"waiting for a quorum)") !=
        std::string::npos);

  f.daemon.state.hang = true;
  Rendered hung = execute(f.client, parseLine({"--json", "--timeout", "100", "health"}), false);
  CHECK(hung.exitCode == 3);
  CHECK(hung.out.find(R"("live":false)") != std::string::npos);
  f.daemon.state.hang = false;
}

TEST_CASE("health of a daemon that is not there exits 3") {
  TempDir dir;
  std::istringstream in;
  std::ostringstream out, err;
  CHECK(runSynodctl({"--socket", dir.path + "/none.sock", "health"}, in, out, err, false) == 3);
}

TEST_CASE("daemon statuses pass through; RPC exceptions become INTERNAL") {
  Fixture f;
  f.daemon.state.forcedCode = synod::rpc::Status::Code::NO_QUORUM;
  auto put = f.client.put("k", "v");
  CHECK(put.status.code == Code::NO_QUORUM);
  CHECK(put.status.message == "forced by the test");
  CHECK(put.answered);
  f.daemon.state.forcedCode = nullptr;
  f.daemon.state.unimplemented = true;
  auto get = f.client.get("k");
  CHECK(get.status.code == Code::INTERNAL);
  CHECK(get.status.message.find("does not implement") != std::string::npos);
  CHECK_FALSE(get.answered);
}

TEST_CASE("a missing socket is UNAVAILABLE naming the path") {
  TempDir dir;
  std::string path = dir.path + "/absent.sock";
  Client client(ClientOptions{path, 1000, 1000});
  auto result = client.get("k");
  CHECK(result.status.code == Code::UNAVAILABLE);
  CHECK_FALSE(result.answered);
  CHECK(result.status.message.find("daemon unreachable at " + path) == 0);
  // The next call tries again rather than remembering the failure.
  CHECK(client.status().status.code == Code::UNAVAILABLE);
}

TEST_CASE("a daemon that never answers is TIMEOUT past the client's own deadline") {
  Fixture f;
  f.daemon.state.hang = true;
  auto start = std::chrono::steady_clock::now();
  auto result = f.client.get("k", ReadOptions{false, 100});
  double seconds = secondsSince(start);
  MESSAGE("gave up after " << seconds << " s (timeout 100 ms + margin 1000 ms)");
  CHECK(result.status.code == Code::TIMEOUT);
  CHECK(result.status.message.find("within 1100 ms") != std::string::npos);
  CHECK(seconds >= 1.0);
  CHECK(seconds < 20.0);
  // The connection stays usable once the daemon answers again.
  f.daemon.state.hang = false;
  CHECK(f.client.put("k", "v").ok());
}

TEST_CASE("a socket nobody accepts on is TIMEOUT, not a hang") {
  TempDir dir;
  std::string path = dir.file("deaf.sock");
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  Client client(ClientOptions{path, 50, 200});
  auto start = std::chrono::steady_clock::now();
  auto result = client.status();
  MESSAGE("gave up after " << secondsSince(start) << " s");
  CHECK(result.status.code == Code::TIMEOUT);
  CHECK(secondsSince(start) < 20.0);
  ::close(fd);
}

TEST_CASE("the client reconnects after the daemon dropped the connection") {
  Fixture f;
  REQUIRE(f.client.put("k", "v").ok());
  CHECK(f.daemon.acceptedConnections() == 1);
  f.daemon.dropConnections();
  // The first call may see the broken connection (UNAVAILABLE); a later one reconnects.
  bool recovered = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!recovered && std::chrono::steady_clock::now() < deadline) {
    auto result = f.client.get("k");
    if (result.ok()) {
      recovered = true;
    } else {
      CHECK(result.status.code == Code::UNAVAILABLE);
    }
  }
  CHECK(recovered);
  CHECK(f.daemon.acceptedConnections() == 2);
}

TEST_CASE("concurrent async calls share one connection") {
  Fixture f;
  auto& async = f.client.async();
  auto a = async.put("a", "1");
  auto b = async.put("b", "2");
  auto c = async.get("a");
  CHECK(a.wait(f.client.waitScope()).ok());
  CHECK(b.wait(f.client.waitScope()).ok());
  auto got = c.wait(f.client.waitScope());
  CHECK(got.ok());
  CHECK(got->value == "1");
  CHECK(f.daemon.acceptedConnections() == 1);
  auto bootstrap = async.bootstrap().wait(f.client.waitScope());
  auto kv = bootstrap.kvRequest().send().wait(f.client.waitScope()).getKv();
  auto request = kv.getRequest();
  request.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("b"), 1));
  auto response = request.send().wait(f.client.waitScope());
  CHECK(response.getStatus().getCode() == synod::rpc::Status::Code::OK);
}

// ---------------------------------------------------------------------------------------------
// synodctl's executor and shell mode against the fake

TEST_CASE("execute: every command, human and JSON") {
  Fixture f;
  Rendered put = execute(f.client, parseLine({"put", "greeting", "hello world"}), false);
  CHECK(put.exitCode == 0);
  CHECK(put.out == "OK (revision 2)\n");

  CHECK(execute(f.client, parseLine({"get", "greeting"}), false).out == "hello world");
  CHECK(execute(f.client, parseLine({"get", "greeting"}), true).out == "hello world\n");
  CHECK(execute(f.client, parseLine({"--json", "get", "greeting", "--serializable"}), false).out ==
        R"({"ok":true,"key":"greeting","value":"hello world","createRevision":2,)"
        R"("modRevision":2,"version":1,"revision":2,"member":"fake1"})"
        "\n");
  CHECK(f.daemon.state.lastSerializable);

  Rendered missing = execute(f.client, parseLine({"get", "nope"}), false);
  CHECK(missing.exitCode == 1);
  CHECK(missing.err == "synodctl: key \"nope\" not found (NOT_FOUND)\n");

  for (int i = 0; i < 3; ++i) {
    execute(f.client, parseLine({"put", "p/" + std::to_string(i), "v"}), false);
  }
  Rendered page = execute(f.client, parseLine({"list", "p/", "--limit", "2"}), false);
  CHECK(page.out ==
        "KEY  VERSION  CREATE_REV  MOD_REV  VALUE\n"
        "p/0  1        3           3        v\n"
        "p/1  1        4           4        v\n");
  CHECK(page.err == "more keys remain: continue with --start-after p/1, or use --all\n");
  Rendered all =
      execute(f.client, parseLine({"--json", "list", "p/", "--limit", "1", "--all"}), false);
  CHECK(all.out.find(R"("key":"p/2")") != std::string::npos);
  CHECK(all.out.find(R"("more":false)") != std::string::npos);

  Rendered txn = execute(f.client,
                         parseLine({"--json", "txn", "--if", "value(greeting) = 'hello world'",
                                    "--then", "put greeting bye", "--else", "del greeting"}),
                         false);
  CHECK(txn.out == R"({"ok":true,"succeeded":true,"revision":6,"member":"fake1"})"
                   "\n");
  Rendered refused = execute(
      f.client, parseLine({"txn", "--if", "version(greeting) = 0", "--then", "put x 1"}), false);
  CHECK(refused.exitCode == 1);
  CHECK(refused.err.find("COMPARE_FAILED") != std::string::npos);

  Rendered del = execute(f.client, parseLine({"--json", "del", "p/", "--prefix"}), false);
  CHECK(del.out == R"({"ok":true,"deleted":3,"revision":7,"member":"fake1"})"
                   "\n");

  Rendered status = execute(f.client, parseLine({"status"}), false);
  CHECK(status.exitCode == 0);
  CHECK(status.out.find("role          leader") != std::string::npos);

  Rendered members = execute(f.client, parseLine({"--json", "members"}), false);
  CHECK(members.exitCode == 0);
  CHECK(members.out.find(R"({"ok":true,"members":[{"name":"fake1")") == 0);
  CHECK(members.out.find(R"("stateDigest":"fedcba9876543210")") != std::string::npos);
  CHECK(members.out.find(R"("reportAgeMs":4321)") != std::string::npos);
  Rendered table = execute(f.client, parseLine({"members"}), false);
  CHECK(table.out.find("fedcba9876543210") != std::string::npos);
  CHECK(table.out.find("4321 (stale)") != std::string::npos);
  CHECK(table.out.find("no         recovering: snapshot 3.1/10.0 MiB from fake1\n") !=
        std::string::npos);
}

TEST_CASE("shell: one JSON line per command, comments and errors, one connection") {
  Fixture f;
  std::istringstream in(
      "put 'a key' \"a \\\"value\\\"\"\n"
      "\n"
      "   # a comment\n"
      "get 'a key'\n"
      "get 'unterminated\n"
      "get missing\n"
      "frobnicate\n"
      "--socket /elsewhere get x\n"
      "txn --if 'value(\"a key\") = \"a \\\"value\\\"\"' --then 'put b 1'\r\n"
      "get b\n"
      "--timeout 250 get 'a key' # trailing comment");  // no final newline
  std::ostringstream out;
  CHECK(runShell(f.client, in, out, GlobalOptions{}) == 0);
  std::vector<std::string> lines;
  std::istringstream split(out.str());
  for (std::string line; std::getline(split, line);)
    lines.push_back(line);
  REQUIRE(lines.size() == 9);
  CHECK(lines[0] == R"({"ok":true,"revision":2,"member":"fake1"})");
  CHECK(lines[1] ==
        R"({"ok":true,"key":"a key","value":"a \"value\"","createRevision":2,"modRevision":2,)"
        R"("version":1,"revision":2,"member":"fake1"})");
  CHECK(lines[2].find(R"("code":"INVALID_ARGUMENT","error":"unterminated single quote)") !=
        std::string::npos);
  CHECK(lines[3].find(R"("code":"NOT_FOUND")") != std::string::npos);
  CHECK(lines[4].find("unknown command 'frobnicate'") != std::string::npos);
  CHECK(lines[5].find("--socket cannot change") != std::string::npos);
  CHECK(lines[6] == R"({"ok":true,"succeeded":true,"revision":3,"member":"fake1"})");
  CHECK(lines[7].find(R"("key":"b","value":"1")") != std::string::npos);
  CHECK(lines[8].find(R"("ok":true,"key":"a key")") != std::string::npos);
  CHECK(f.daemon.state.lastTimeoutMs == 250);
  CHECK(f.daemon.acceptedConnections() == 1);
}

TEST_CASE("shell: an over-long line is answered with an error and skipped") {
  Fixture f;
  std::string input = "put k " + std::string(MAX_SHELL_LINE_BYTES, 'x') + "\nget k\n";
  std::istringstream in(input);
  std::ostringstream out;
  CHECK(runShell(f.client, in, out, GlobalOptions{}) == 0);
  std::string text = out.str();
  CHECK(text.find("line longer than") != std::string::npos);
  CHECK(text.find(R"("code":"NOT_FOUND")") != std::string::npos);
  CHECK(f.daemon.state.kvs.empty());
}

TEST_CASE("shell: stops running commands once its output is gone") {
  Fixture f;
  std::istringstream in("put a 1\nput b 2\n");
  std::ostringstream out;
  out.setstate(std::ios::badbit);
  CHECK(runShell(f.client, in, out, GlobalOptions{}) == 1);
  CHECK(f.daemon.state.kvs.size() == 1);
}

TEST_CASE("runSynodctl: usage errors exit 2 without connecting; unreachable exits 3") {
  std::istringstream in;
  std::ostringstream out, err;
  CHECK(runSynodctl({"get"}, in, out, err, false) == 2);
  CHECK(err.str().find("usage: synodctl get KEY") != std::string::npos);
  CHECK(out.str().empty());

  std::ostringstream jsonOut, jsonErr;
  CHECK(runSynodctl({"--json", "put", "k"}, in, jsonOut, jsonErr, false) == 2);
  CHECK(jsonOut.str().find(R"("code":"INVALID_ARGUMENT")") != std::string::npos);

  std::ostringstream helpOut, helpErr;
  CHECK(runSynodctl({"--help"}, in, helpOut, helpErr, false) == 0);
  CHECK(helpOut.str() == helpText());

  TempDir dir;
  std::ostringstream downOut, downErr;
  CHECK(runSynodctl({"--socket", dir.path + "/none.sock", "get", "k"}, in, downOut, downErr,
                    false) == 3);
  CHECK(downErr.str().find("daemon unreachable at " + dir.path + "/none.sock") !=
        std::string::npos);
}
