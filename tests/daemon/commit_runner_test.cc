// Group commits off the loop thread: work on libuv's pool, done back on the loop thread, exactly
// once, with the error work threw; finish() completes a commit in flight synchronously.
#include "daemon/commit_runner.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace synod::daemon {
namespace {

struct Loop {
  uv_loop_t loop{};
  Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
};

TEST_CASE("work runs on another thread, done on the loop thread once the loop runs") {
  Loop l;
  UvCommitRunner runner(&l.loop);
  const auto loopThread = std::this_thread::get_id();
  std::thread::id workThread, doneThread;
  int dones = 0;
  runner.run([&] { workThread = std::this_thread::get_id(); },
             [&](std::exception_ptr error) {
               CHECK_FALSE(error);
               doneThread = std::this_thread::get_id();
               ++dones;
             });
  CHECK(dones == 0);  // not before the loop runs
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(dones == 1);
  CHECK(workThread != loopThread);
  CHECK(doneThread == loopThread);
  // The next commit may start once the previous one is done.
  runner.run([] {}, [&](std::exception_ptr) { ++dones; });
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(dones == 2);
}

TEST_CASE("an exception in work reaches done") {
  Loop l;
  UvCommitRunner runner(&l.loop);
  std::string message;
  runner.run([] { throw std::runtime_error("disk on fire"); },
             [&](std::exception_ptr error) {
               REQUIRE(error);
               try {
                 std::rethrow_exception(error);
               } catch (const std::exception& e) {
                 message = e.what();
               }
             });
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(message == "disk on fire");
}

TEST_CASE("finish waits for the work and runs done here, once") {
  Loop l;
  std::atomic<bool> release{false};
  int dones = 0;
  {
    UvCommitRunner runner(&l.loop);
    runner.run(
        [&] {
          while (!release.load())
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        },
        [&](std::exception_ptr) { ++dones; });
    std::thread releaser([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      release = true;
    });
    runner.finish();  // blocks until the work ends
    releaser.join();
    CHECK(dones == 1);
    runner.finish();  // nothing in flight: returns at once
  }
  uv_run(&l.loop, UV_RUN_DEFAULT);  // the after-work callback only frees the job
  CHECK(dones == 1);
}

TEST_CASE("the inline runner runs both at once") {
  InlineCommitRunner runner;
  int step = 0;
  runner.run([&] { CHECK(step++ == 0); },
             [&](std::exception_ptr error) {
               CHECK_FALSE(error);
               CHECK(step++ == 1);
             });
  CHECK(step == 2);
}

}  // namespace
}  // namespace synod::daemon
