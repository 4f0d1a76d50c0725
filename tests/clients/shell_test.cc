// synodctl shell with streams open, against the in-process fake daemon: the input is a script that
// runs on the shell's event loop, so it can act on the fake and wait for output between lines.
#include <unistd.h>

#include <doctest/doctest.h>

#include <chrono>
#include <deque>
#include <functional>
#include <sstream>

#include "clients/shell.h"
#include "tests/clients/fake_daemon.h"

using namespace synod::clients;
using synod::clients::testing::FakeDaemon;

namespace {

std::string makeTempDir() {
  char pattern[] = "/tmp/synod-shell-test.XXXXXX";
  REQUIRE(::mkdtemp(pattern) != nullptr);
  return pattern;
}

struct Fixture {
  ~Fixture() {
    ::unlink((dir + "/synod.sock").c_str());
    ::rmdir(dir.c_str());
  }
  std::string dir = makeTempDir();
  kj::AsyncIoContext io = kj::setupAsyncIo();
  FakeDaemon daemon{io, dir + "/synod.sock"};
  Client client{io, ClientOptions{daemon.socketPath(), 2000, 1000}};
  std::ostringstream out;
};

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream split(text);
  for (std::string line; std::getline(split, line);)
    lines.push_back(line);
  return lines;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// Input lines, with actions and waits between them. A wait polls the loop until its condition
/// holds, and ends the input (failing the test) after a generous 10 s.
class ScriptedInput final : public ShellInput {
 public:
  explicit ScriptedInput(kj::Timer& timer) : timer(timer) {}

  ScriptedInput& line(std::string text) {
    steps.push_back(Step{std::move(text), {}, {}});
    return *this;
  }
  ScriptedInput& then(std::function<void()> action) {
    steps.push_back(Step{{}, std::move(action), {}});
    return *this;
  }
  ScriptedInput& until(std::function<bool()> condition) {
    steps.push_back(Step{{}, {}, std::move(condition)});
    return *this;
  }

  kj::Promise<kj::Maybe<ShellLine>> readLine() override {
    while (!steps.empty()) {
      Step& step = steps.front();
      if (step.condition) {
        if (!step.condition()) {
          if (std::chrono::steady_clock::now() - waitStart() > std::chrono::seconds(10)) {
            FAIL_CHECK("a scripted wait did not end within 10 s");
            steps.clear();
            break;
          }
          return timer.afterDelay(2 * kj::MILLISECONDS).then([this]() { return readLine(); });
        }
        waiting = false;
        steps.pop_front();
      } else if (step.action) {
        auto action = std::move(step.action);
        steps.pop_front();
        action();
      } else {
        ShellLine line{false, std::move(step.text)};
        steps.pop_front();
        return kj::Maybe<ShellLine>(kj::mv(line));
      }
    }
    return kj::Maybe<ShellLine>(nullptr);
  }

  kj::TaskSet tasks{ignore};  // what actions start

 private:
  struct Step {
    std::string text;
    std::function<void()> action;
    std::function<bool()> condition;
  };
  struct Ignore : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  std::chrono::steady_clock::time_point waitStart() {
    if (!waiting) {
      waiting = true;
      started = std::chrono::steady_clock::now();
    }
    return started;
  }

  kj::Timer& timer;
  std::deque<Step> steps;
  bool waiting = false;
  std::chrono::steady_clock::time_point started;
  Ignore ignore;
};

/// The lines that answer requests, in order (stream events and ends left out).
std::vector<std::string> answers(const std::string& text) {
  std::vector<std::string> result;
  for (auto& line : linesOf(text)) {
    if (line.rfind("{\"stream\":", 0) != 0) result.push_back(line);
  }
  return result;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1))
    ++n;
  return n;
}

}  // namespace

TEST_CASE("shell streams: observe delivers while the shell waits and runs commands; cancel") {
  Fixture f;
  ScriptedInput in(f.io.provider->getTimer());
  auto output = [&] { return f.out.str(); };
  uint64_t lease = 0;
  auto leaseOf = [&] {
    std::string text = output();
    return std::stoull(text.substr(text.find(R"("id":)") + 5));
  };
  in.line("lease grant 60000")
      .line("observe job")
      .until([&] {
        return contains(output(), R"({"stream":1,"event":{"name":"job",)") &&
               contains(output(), R"("hasHolder":false)");
      })
      // The lock is taken while the shell is waiting for input: the event arrives anyway.
      .then([&] {
        lease = leaseOf();
        in.tasks.add(f.client.async().lock("job", lease, false).ignoreResult());
      })
      .until([&] { return count(output(), R"({"stream":1,"event":)") == 2; })
      .line("put a 1")
      .line("observe other --count 1")
      .line("cancel 1")
      .line("cancel 1")
      .line("cancel x")
      .then([&] { in.tasks.add(f.client.async().unlock("job", lease).ignoreResult()); })
      .line("get a")
      .line("observe job")
      .until([&] { return contains(output(), R"({"stream":3,"event":)"); })
      .then([&] { f.daemon.dropConnections(); })
      .until([&] { return contains(output(), R"({"stream":3,"end":)"); });
  CHECK(runShell(f.client, in, f.out, GlobalOptions{}) == 0);
  std::string text = output();
  INFO(text);

  auto replies = answers(text);
  REQUIRE(replies.size() == 9);
  CHECK(contains(replies[0], R"("id":)" + std::to_string(lease)));
  CHECK(contains(replies[1], R"({"ok":true,"revision":)"));
  CHECK(contains(replies[1], R"(,"stream":1})"));
  CHECK(contains(replies[2], R"({"ok":true,"revision":)"));
  CHECK(contains(replies[3], R"(,"stream":2})"));
  CHECK(replies[4] == R"({"ok":true})");
  CHECK(contains(replies[5], R"("code":"INVALID_ARGUMENT","error":"cancel: no open stream 1")"));
  CHECK(contains(replies[6], "cancel: expected the number of an open stream"));
  CHECK(contains(replies[7], R"("key":"a","value":"1")"));
  CHECK(contains(replies[8], R"(,"stream":3})"));

  // Each stream's lines come after its answer; the event objects are those of `observe --json`.
  auto lines = linesOf(text);
  auto position = [&](const std::string& part) {
    for (size_t i = 0; i < lines.size(); ++i)
      if (contains(lines[i], part)) return i;
    FAIL_CHECK("no line with " << part);
    return lines.size();
  };
  CHECK(position(R"(,"stream":1})") < position(R"({"stream":1,"event":)"));
  CHECK(contains(text, R"({"stream":1,"event":{"name":"job","revision":)"));
  CHECK(contains(text, R"("hasHolder":true,"holder":{"lease":)" + std::to_string(lease)));
  // --count 1: one event, then the end.
  CHECK(count(text, R"({"stream":2,"event":{"name":"other",)") == 1);
  CHECK(contains(text, R"({"stream":2,"end":{"ok":true}})"));
  CHECK(position(R"({"stream":2,"end":)") > position(R"({"stream":2,"event":)"));
  CHECK(position(R"({"stream":2,"event":)") > position(R"(,"stream":2})"));
  // Cancelled: the unlock after `cancel 1` reached stream 3's start (free) but not stream 1.
  CHECK(count(text, R"({"stream":1,"event":)") == 2);
  CHECK(count(text, R"({"stream":1,"end")") == 0);
  CHECK(contains(
      text,
      R"({"stream":3,"end":{"ok":false,"code":"UNAVAILABLE","error":"connection to daemon at )"));
  CHECK(f.daemon.state.observers == 0);
}

TEST_CASE("shell streams: a refused watch is one error answer and the shell goes on") {
  Fixture f;
  ScriptedInput in(f.io.provider->getTimer());
  in.line("watch app/").line("put a 1");
  CHECK(runShell(f.client, in, f.out, GlobalOptions{}) == 0);
  auto lines = linesOf(f.out.str());
  REQUIRE(lines.size() == 2);
  CHECK(contains(lines[0], R"({"ok":false,"code":)"));
  CHECK(contains(lines[1], R"({"ok":true,"revision":2,"member":"fake1"})"));
}

TEST_CASE("shell streams: end of input stops every stream and returns 0") {
  Fixture f;
  ScriptedInput in(f.io.provider->getTimer());
  in.line("observe a").line("observe b").until([&] { return f.daemon.state.observers == 2; });
  CHECK(runShell(f.client, in, f.out, GlobalOptions{}) == 0);
  CHECK(answers(f.out.str()).size() == 2);
  CHECK_FALSE(contains(f.out.str(), "\"end\""));
  REQUIRE(f.client.async().connectionAlive());
  // The observations were dropped: the daemon hears of it on the next turns of the loop.
  for (int i = 0; i < 1000 && f.daemon.state.observers != 0; ++i)
    f.client.runFor(5);
  CHECK(f.daemon.state.observers == 0);
}

TEST_CASE(
    "shell input from the event loop: lines split across reads, CRLF, over-long, no final "
    "newline") {
  Fixture f;
  auto pipe = f.io.provider->newOneWayPipe();
  auto input = shellInputFrom(*pipe.in);
  std::string longLine = "put k " + std::string(MAX_SHELL_LINE_BYTES, 'x') + "\n";
  auto writing = pipe.out->write("put a", 5)
                     .then([&]() { return pipe.out->write(" 1\r\nget a\n", 10); })
                     .then([&]() { return pipe.out->write(longLine.data(), longLine.size()); })
                     .then([&]() { return pipe.out->write("get", 3); })
                     .then([&]() { return pipe.out->write(" a", 2); })
                     .then([&]() { pipe.out = nullptr; })
                     .eagerlyEvaluate(nullptr);
  CHECK(runShell(f.client, *input, f.out, GlobalOptions{}) == 0);
  auto lines = linesOf(f.out.str());
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == R"({"ok":true,"revision":2,"member":"fake1"})");
  CHECK(contains(lines[1], R"("key":"a","value":"1")"));
  CHECK(contains(lines[2], "line longer than"));
  CHECK(lines[3] == lines[1]);
  CHECK(f.daemon.state.kvs.size() == 1);
}
