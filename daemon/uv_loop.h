#pragma once

// Cap'n Proto's KJ event loop running as a guest on a libuv loop: one thread, one loop.
//
// libuv owns the thread (`uv_run(loop, UV_RUN_DEFAULT)`); KJ promises, timers, sockets and RPC run
// from libuv callbacks. See "One thread, one loop" in ARCHITECTURE.md for the design and its traps.

#include <sys/types.h>
#include <uv.h>

#include <kj/async-io.h>
#include <kj/memory.h>
#include <kj/timer.h>
#include <cstdint>

namespace synod::daemon {

// Owns a KJ event loop and an fd-based I/O provider that run on an existing libuv loop.
//
// Contracts:
// - Construct, use and destroy on the thread that runs `loop`. One per thread (KJ allows one
//   current EventLoop per thread). Constructing it ignores SIGPIPE for the process (libuv does
//   not; a write to a closed socket must fail with EPIPE, not kill the daemon).
// - Everything made through it (streams, receivers, RPC systems, promises) must be destroyed
//   before it.
// - KJ work runs from libuv callbacks. While KJ has nothing to do, it holds no active handle
//   except its pending timers and the fds with a pending read/write/accept, so
//   `uv_run(UV_RUN_DEFAULT)` returns once nothing is left to wait for.
// - Never call `promise.wait()` or `waitScope().poll()` from a libuv callback: libuv's loop is not
//   reentrant. They are for start-up, shutdown and tests, outside `uv_run`.
// - Destruction closes every libuv handle it created; their memory is freed by close callbacks,
//   so the caller must run the loop once more (`uv_run(loop, UV_RUN_DEFAULT)`) before
//   `uv_loop_close(loop)`, as for any libuv handle.
class UvKjLoop {
 public:
  // `loop` is not owned and must outlive this object.
  explicit UvKjLoop(uv_loop_t* loop);
  ~UvKjLoop() noexcept(false);
  KJ_DISALLOW_COPY(UvKjLoop);

  // For promise.wait() at start-up, shutdown and in tests only (see the class contract). A wait
  // runs `uv_run(UV_RUN_ONCE)` until the promise resolves, so other libuv handles keep working.
  kj::WaitScope& waitScope();

  // Real-time KJ timer driven by a uv_timer_t. Unlike KJ's own loop, now() reads the monotonic
  // clock on every call, so a deadline computed in a plain libuv callback is never stale.
  kj::Timer& timer();

  // wrapSocketFd, wrapListenSocketFd, wrapConnectingSocketFd, wrapInputFd, wrapOutputFd for
  // Unix-domain and TCP sockets, pipes and ttys (regular files count as always ready). Streams
  // implement getsockopt/setsockopt/getsockname/getpeername, so SO_PEERCRED can be read (see
  // peerCredentials()). Not supported: fd passing (wrapUnixSocketFd), datagram sockets.
  // A wrapped fd must not be closed or wrapped twice behind this provider's back.
  kj::LowLevelAsyncIoProvider& lowLevel();

  // kj::newAsyncIoProvider(lowLevel()): pipes and kj::Network on top of the same loop.
  kj::AsyncIoProvider& provider();

  uv_loop_t* uvLoop();

  // How many times a wrapped fd's poll interest set changed. Each change costs two epoll_ctl
  // calls; in steady RPC traffic it stays flat (interest bits are kept armed). For metrics.
  uint64_t pollInterestChanges() const;

 private:
  struct Impl;
  kj::Own<Impl> impl;
};

// The peer process of a connected Unix-domain socket, from SO_PEERCRED: what it was when it
// called connect().
struct PeerCredentials {
  pid_t pid;
  uid_t uid;
  gid_t gid;
};

// Throws a KJ exception naming the cause if `fd` is not a connected Unix-domain socket.
PeerCredentials peerCredentials(int fd);

// Same, through AsyncIoStream::getsockopt (works for streams from UvKjLoop::lowLevel() and from
// KJ's own providers). Throws if the stream is not a connected Unix-domain socket.
PeerCredentials peerCredentials(kj::AsyncIoStream& stream);

// Sets SIGPIPE to SIG_IGN for the process. UvKjLoop's constructor calls it; idempotent.
void ignoreSigpipe();

}  // namespace synod::daemon
