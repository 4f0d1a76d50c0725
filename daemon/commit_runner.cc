#include "daemon/commit_runner.h"

#include <kj/debug.h>

namespace synod::daemon {

void InlineCommitRunner::run(Work work, Done done) {
  std::exception_ptr error;
  try {
    work();
  } catch (...) {
    error = std::current_exception();
  }
  done(error);
}

UvCommitRunner::~UvCommitRunner() {
  // A job still in flight would call back into whoever gave it: they must have finished it.
  KJ_ASSERT(current_ == nullptr, "UvCommitRunner destroyed with a commit in flight");
}

void UvCommitRunner::run(Work work, Done done) {
  KJ_ASSERT(current_ == nullptr, "a second commit while one is in flight");
  auto* job = new Job;
  job->work = std::move(work);
  job->done = std::move(done);
  job->owner = this;
  job->request.data = job;
  int rc = uv_queue_work(
      loop_, &job->request,
      [](uv_work_t* request) {
        auto* job = static_cast<Job*>(request->data);
        try {
          job->work();
        } catch (...) {
          job->error = std::current_exception();
        }
        std::lock_guard<std::mutex> lock(job->mutex);
        job->worked = true;
        job->finished.notify_all();
      },
      [](uv_work_t* request, int) {
        auto* job = static_cast<Job*>(request->data);
        if (!job->doneRun) runDone(*job);
        delete job;
      });
  KJ_ASSERT(rc == 0, "uv_queue_work failed", uv_strerror(rc));
  current_ = job;
}

void UvCommitRunner::finish() {
  Job* job = current_;
  if (job == nullptr) return;
  {
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished.wait(lock, [job] { return job->worked; });
  }
  runDone(*job);  // the after-work callback, when it runs, only frees the job
}

void UvCommitRunner::runDone(Job& job) {
  job.doneRun = true;
  if (job.owner->current_ == &job) job.owner->current_ = nullptr;
  Done done = std::move(job.done);
  done(job.error);
}

}  // namespace synod::daemon
