// Where a Node's group commits run. The Node hands over `work` (the store commit and nothing that
// the loop thread also touches) and gets `done` back on the loop thread, with the exception `work`
// threw, if any. At most one commit is in flight at a time (the Node's contract).
//
// With the commit on a worker thread the loop keeps receiving requests and peer messages while the
// disk syncs; what they change gathers in the core and goes into the next commit.
#pragma once

#include <uv.h>

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>

namespace synod::daemon {

class CommitRunner {
 public:
  using Work = std::function<void()>;
  using Done = std::function<void(std::exception_ptr error)>;

  virtual ~CommitRunner() = default;
  virtual void run(Work work, Done done) = 0;
  // Blocks until the commit in flight, if any, has finished and runs its `done` on the caller's
  // (the loop's) thread before returning. For shutdown, when the loop may not run again.
  virtual void finish() = 0;
};

// Runs work and done at once on the caller's thread (tests, and a Node without a loop).
class InlineCommitRunner final : public CommitRunner {
 public:
  void run(Work work, Done done) override;
  void finish() override {}
};

// work on libuv's thread pool (uv_queue_work: the LMDB write transaction begins and ends on that
// thread), done in the loop's after-work callback. The loop must outlive the runner's last job.
class UvCommitRunner final : public CommitRunner {
 public:
  explicit UvCommitRunner(uv_loop_t* loop) : loop_(loop) {}
  ~UvCommitRunner() override;
  UvCommitRunner(const UvCommitRunner&) = delete;
  UvCommitRunner& operator=(const UvCommitRunner&) = delete;

  void run(Work work, Done done) override;
  void finish() override;

 private:
  // Owned by libuv's request until its after-work callback has run; `done` runs exactly once,
  // from that callback or from finish(), whichever comes first.
  struct Job {
    uv_work_t request{};
    Work work;
    Done done;
    std::exception_ptr error;
    std::mutex mutex;
    std::condition_variable finished;
    bool worked = false;   // under mutex
    bool doneRun = false;  // loop thread only
    UvCommitRunner* owner = nullptr;
  };
  static void runDone(Job& job);

  uv_loop_t* loop_;
  Job* current_ = nullptr;  // the job in flight whose done has not run
};

}  // namespace synod::daemon
