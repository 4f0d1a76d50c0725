// Test helper: drive a libuv loop until a condition holds.
#pragma once

#include <uv.h>

#include <functional>

namespace synod::daemon::testing {

// Runs the loop until `done()` holds (checked before every poll, i.e. after KJ ran), the loop runs
// out of work, or `guardMs` pass. Returns done(). The guard timer is referenced only with
// `keepAlive`: then the loop waits for work that arrives later (other threads, peers).
inline bool runLoopUntil(uv_loop_t* loop, std::function<bool()> done, int guardMs, bool keepAlive) {
  if (done()) return true;
  uv_prepare_t check;
  uv_prepare_init(loop, &check);
  check.data = &done;
  uv_prepare_start(&check, [](uv_prepare_t* handle) {
    if ((*static_cast<std::function<bool()>*>(handle->data))()) uv_stop(handle->loop);
  });
  uv_unref(reinterpret_cast<uv_handle_t*>(&check));
  uv_timer_t guard;
  uv_timer_init(loop, &guard);
  uv_timer_start(
      &guard, [](uv_timer_t* handle) { uv_stop(handle->loop); }, guardMs, 0);
  if (!keepAlive) uv_unref(reinterpret_cast<uv_handle_t*>(&guard));
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&check), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);  // runs the close callbacks: the handles live on this stack
  return done();
}

}  // namespace synod::daemon::testing
