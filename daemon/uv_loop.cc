#include "daemon/uv_loop.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <kj/debug.h>
#include <kj/io.h>
#include <kj/list.h>
#include <kj/time.h>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <utility>

namespace synod::daemon {
namespace {

using Flags = kj::LowLevelAsyncIoProvider::Flags;

// A C++ exception must never unwind through libuv's C frames. KJ turns exceptions thrown by
// callbacks into rejected promises, so one escaping the KJ loop is a bug: crash loudly.
template <typename Func>
void runCallback(const char* where, Func&& func) noexcept {
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions(kj::fwd<Func>(func))) {
    KJ_LOG(FATAL, "exception escaped a libuv callback", where, *exception);
    std::abort();
  }
}

// ---------------------------------------------------------------------------------------------
// Timer

// kj::Timer on CLOCK_MONOTONIC. TimerImpl fires promises only when advanced; UvEventPort advances
// it when its uv_timer_t fires. now() reads the clock instead of TimerImpl's cached time, so a
// deadline computed in a plain libuv callback (after the loop slept) is never in the past.
class UvTimer final : public kj::Timer {
 public:
  // `scheduled` runs after every new timer: the uv timer must be armed before uv_run() next
  // checks whether anything keeps the loop alive.
  explicit UvTimer(kj::Function<void()> scheduled)
      : clock(kj::systemPreciseMonotonicClock()), impl(clock.now()), scheduled(kj::mv(scheduled)) {}

  kj::TimePoint now() const override { return clock.now(); }
  kj::Promise<void> atTime(kj::TimePoint time) override {
    auto promise = impl.atTime(time);
    scheduled();
    return promise;
  }
  kj::Promise<void> afterDelay(kj::Duration delay) override { return atTime(clock.now() + delay); }

  // Fires every timer whose deadline has passed.
  void advance() { impl.advanceTo(clock.now()); }
  kj::Maybe<kj::TimePoint> nextEvent() { return impl.nextEvent(); }

 private:
  const kj::MonotonicClock& clock;
  kj::TimerImpl impl;
  kj::Function<void()> scheduled;
};

// ---------------------------------------------------------------------------------------------
// Event port

// Runs KJ's event queue from libuv callbacks:
// - idle handle: active while KJ has queued events; its callback runs them. Stopped inside
//   wait()/poll(), else uv_run(UV_RUN_ONCE) would never block (KJ does not report the queue
//   emptying in the middle of a wait).
// - timer handle: armed to KJ's next timer deadline; referenced, since a pending KJ timer is
//   work that must keep uv_run(UV_RUN_DEFAULT) going.
// - prepare handle (unreferenced): re-arms the timer before every poll, so it follows canceled
//   KJ timers (new ones arm it at once).
// - async handle (unreferenced, except inside wait()): wake() from other threads. Cross-thread
//   kj::Executor work is drained only from KJ's wait/poll path, so the callback polls the wait
//   scope.
class UvEventPort final : public kj::EventPort {
 public:
  explicit UvEventPort(uv_loop_t* loop);
  ~UvEventPort() noexcept(false);
  KJ_DISALLOW_COPY(UvEventPort);

  // Called once, as soon as the EventLoop and WaitScope on this port exist.
  void attach(kj::EventLoop& eventLoop, kj::WaitScope& waitScope);

  bool wait() override;
  bool poll() override;
  void setRunnable(bool runnable) override;
  void wake() const override;

  UvTimer& timer() { return kjTimer; }

 private:
  // On the heap: libuv uses the memory until each close callback has run, which can be after
  // this port is gone. The last close callback frees it.
  struct Handles {
    uv_idle_t idle;
    uv_timer_t timer;
    uv_prepare_t prepare;
    uv_async_t async;
    int open = 0;
  };

  uv_loop_t* const loop;
  Handles* const handles;
  UvTimer kjTimer;
  kj::EventLoop* kjLoop = nullptr;
  kj::WaitScope* scope = nullptr;
  bool runnable = false;         // what KJ last passed to setRunnable()
  bool insideWait = false;       // wait()/poll() is in uv_run: callbacks must not run KJ
  bool insideAsyncPoll = false;  // the async callback is polling the wait scope
  bool woken = false;            // wake() arrived; no wait()/poll() has returned true since
  kj::Maybe<kj::TimePoint> armedDeadline;  // what the uv timer is armed for

  bool runUv(uv_run_mode mode);
  void syncIdle();
  void rearmTimer();

  static UvEventPort& from(void* handle) {
    return *static_cast<UvEventPort*>(static_cast<uv_handle_t*>(handle)->data);
  }
  static void onIdle(uv_idle_t* handle);
  static void onTimer(uv_timer_t* handle);
  static void onPrepare(uv_prepare_t* handle);
  static void onAsync(uv_async_t* handle);
};

UvEventPort::UvEventPort(uv_loop_t* loop)
    : loop(loop), handles(new Handles), kjTimer([this] { rearmTimer(); }) {
  // The async handle is the only one whose init can fail (it may need an eventfd); it fails
  // before touching the handle, so nothing needs closing.
  int error = uv_async_init(loop, &handles->async, onAsync);
  if (error != 0) {
    delete handles;
    KJ_FAIL_REQUIRE("uv_async_init failed", uv_strerror(error));
  }
  KJ_ASSERT(uv_idle_init(loop, &handles->idle) == 0);
  KJ_ASSERT(uv_timer_init(loop, &handles->timer) == 0);
  KJ_ASSERT(uv_prepare_init(loop, &handles->prepare) == 0);
  handles->open = 4;
  handles->idle.data = this;
  handles->timer.data = this;
  handles->prepare.data = this;
  handles->async.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&handles->async));
  uv_unref(reinterpret_cast<uv_handle_t*>(&handles->prepare));
  KJ_ASSERT(uv_prepare_start(&handles->prepare, onPrepare) == 0);
}

UvEventPort::~UvEventPort() noexcept(false) {
  auto onClose = [](uv_handle_t* handle) {
    auto* owner = static_cast<Handles*>(handle->data);
    if (--owner->open == 0) delete owner;
  };
  for (auto* handle : {reinterpret_cast<uv_handle_t*>(&handles->idle),
                       reinterpret_cast<uv_handle_t*>(&handles->timer),
                       reinterpret_cast<uv_handle_t*>(&handles->prepare),
                       reinterpret_cast<uv_handle_t*>(&handles->async)}) {
    handle->data = handles;
    uv_close(handle, onClose);
  }
}

void UvEventPort::attach(kj::EventLoop& eventLoop, kj::WaitScope& waitScope) {
  kjLoop = &eventLoop;
  scope = &waitScope;
}

bool UvEventPort::wait() {
  return runUv(UV_RUN_ONCE);
}

bool UvEventPort::poll() {
  // Called back from onAsync's WaitScope::poll(): already inside uv_run, which is not reentrant.
  if (insideAsyncPoll) return std::exchange(woken, false);
  return runUv(UV_RUN_NOWAIT);
}

bool UvEventPort::runUv(uv_run_mode mode) {
  KJ_REQUIRE(!insideWait, "KJ wait()/poll() re-entered from inside a libuv callback");
  insideWait = true;
  syncIdle();
  // A wake() from another thread is something KJ may be waiting for: keep the async handle
  // referenced so uv_run(ONCE) blocks instead of returning at once when nothing else is alive.
  auto* async = reinterpret_cast<uv_handle_t*>(&handles->async);
  uv_ref(async);
  uv_run(loop, mode);
  uv_unref(async);
  insideWait = false;
  syncIdle();
  return std::exchange(woken, false);
}

void UvEventPort::setRunnable(bool value) {
  runnable = value;
  syncIdle();
}

void UvEventPort::wake() const {
  uv_async_send(&handles->async);
}

void UvEventPort::syncIdle() {
  // Both calls are no-ops when the handle is already in the wanted state.
  if (runnable && !insideWait) {
    uv_idle_start(&handles->idle, onIdle);
  } else {
    uv_idle_stop(&handles->idle);
  }
}

void UvEventPort::rearmTimer() {
  KJ_IF_MAYBE (next, kjTimer.nextEvent()) {
    KJ_IF_MAYBE (armed, armedDeadline) {
      if (*armed == *next) return;
    }
    // libuv counts the delay from its cached time, which may be stale by a whole callback.
    uv_update_time(loop);
    kj::TimePoint now = kjTimer.now();
    uint64_t delayMs = 0;
    if (*next > now) {
      // Rounded up; the uv timer may still fire a hair early (its clock is in whole ms), and
      // then the next prepare re-arms it.
      delayMs = (static_cast<uint64_t>((*next - now) / kj::NANOSECONDS) + 999'999) / 1'000'000;
    }
    KJ_ASSERT(uv_timer_start(&handles->timer, onTimer, delayMs, 0) == 0);
    armedDeadline = *next;
  } else if (armedDeadline != nullptr) {
    uv_timer_stop(&handles->timer);
    armedDeadline = nullptr;
  }
}

void UvEventPort::onIdle(uv_idle_t* handle) {
  auto& self = from(handle);
  if (self.insideWait) return;
  runCallback("KJ event queue", [&] { self.kjLoop->run(); });
}

void UvEventPort::onTimer(uv_timer_t* handle) {
  auto& self = from(handle);
  self.armedDeadline = nullptr;
  // Fulfilled timers queue KJ events; setRunnable() starts the idle handle, which runs them in
  // this same loop iteration.
  runCallback("KJ timer", [&] { self.kjTimer.advance(); });
}

void UvEventPort::onPrepare(uv_prepare_t* handle) {
  auto& self = from(handle);
  runCallback("KJ timer re-arm", [&] { self.rearmTimer(); });
}

void UvEventPort::onAsync(uv_async_t* handle) {
  auto& self = from(handle);
  self.woken = true;
  if (self.insideWait) return;  // wait()/poll() returns true, then KJ drains the executor
  self.insideAsyncPoll = true;
  KJ_DEFER(self.insideAsyncPoll = false);
  runCallback("KJ cross-thread events", [&] {
    self.scope->poll();
    // WaitScope::poll() does not report the queue it emptied; run(0) does, stopping the idle.
    self.kjLoop->run(0);
  });
}

// ---------------------------------------------------------------------------------------------
// Fd watcher

struct PollCounters {
  uint64_t interestChanges = 0;
};

// The single uv_poll_t of one wrapped fd. Waiters register for READABLE, WRITABLE or HANGUP; an
// event wakes every waiter of its kind, which then retries its non-blocking syscall (wake-ups may
// be spurious).
//
// An interest bit stays armed after the waiters it served are gone, because every
// uv_poll_start() costs two epoll_ctl calls; it is dropped only when it fires with nobody
// waiting (libuv polls level-triggered: keeping it would spin). The handle is referenced only
// while someone waits, so an armed but unwanted bit never keeps uv_run(UV_RUN_DEFAULT) alive.
class FdWatcher {
 public:
  FdWatcher(uv_loop_t* loop, int fd, PollCounters& counters);
  // Rejects remaining waiters, then uv_close()s the handle, which takes the fd out of epoll at
  // once: the owner may close() the fd right after.
  ~FdWatcher() noexcept(false);
  KJ_DISALLOW_COPY(FdWatcher);

  // The kinds of waiters, named by the uv_poll interest bit that serves them.
  static constexpr int READABLE = UV_READABLE;
  static constexpr int WRITABLE = UV_WRITABLE;
  // The peer hung up entirely (POLLHUP) or the socket has an error; a half-close is not one.
  // Served by POLLPRI, which never fires on a half-close (POLLRDHUP would, level-triggered,
  // with the fd still writable), while epoll reports POLLHUP and POLLERR for any interest set.
  static constexpr int HANGUP = UV_PRIORITIZED;

  // Resolves when `event` may have happened.
  kj::Promise<void> when(int event);

 private:
  class Waiter {
   public:
    Waiter(kj::PromiseFulfiller<void>& fulfiller, FdWatcher& watcher, int event)
        : fulfiller(fulfiller), watcher(watcher), event(event) {
      watcher.add(*this);
    }
    ~Waiter() noexcept(false) {
      KJ_IF_MAYBE (w, watcher) {
        w->remove(*this);
      }
    }
    KJ_DISALLOW_COPY(Waiter);

    kj::PromiseFulfiller<void>& fulfiller;
    kj::Maybe<FdWatcher&> watcher;  // null once woken, or once the watcher is gone
    const int event;
    kj::ListLink<Waiter> link;
  };

  void add(Waiter& waiter);
  void remove(Waiter& waiter);
  bool wake(int events);
  bool hasWaiters(int event);
  bool hungUp() const;
  void setInterest(int events);
  void updateRef();
  void onPoll(int status, int events);

  const int fd;
  PollCounters& counters;
  uv_poll_t* handle = nullptr;  // null: epoll refuses the fd (regular file), it never blocks
  int interest = 0;
  bool referenced = false;
  kj::List<Waiter, &Waiter::link> waiters;
};

FdWatcher::FdWatcher(uv_loop_t* loop, int fd, PollCounters& counters) : fd(fd), counters(counters) {
  auto* poll = new uv_poll_t;
  int error = uv_poll_init(loop, poll, fd);
  if (error != 0) {
    delete poll;
    if (error == UV_EPERM) return;
    KJ_FAIL_REQUIRE("cannot watch fd", fd, uv_strerror(error));
  }
  handle = poll;
  handle->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(handle));
}

FdWatcher::~FdWatcher() noexcept(false) {
  for (auto& waiter : waiters) {
    waiters.remove(waiter);
    waiter.watcher = nullptr;
    waiter.fulfiller.reject(
        KJ_EXCEPTION(DISCONNECTED, "stream destroyed while an operation waited on it", fd));
  }
  if (handle != nullptr) {
    handle->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle),
             [](uv_handle_t* closed) { delete reinterpret_cast<uv_poll_t*>(closed); });
  }
}

kj::Promise<void> FdWatcher::when(int event) {
  if (handle == nullptr) {
    if (event == HANGUP) return kj::Promise<void>(kj::NEVER_DONE);
    return kj::READY_NOW;
  }
  return kj::newAdaptedPromise<void, Waiter>(*this, event);
}

void FdWatcher::add(Waiter& waiter) {
  if ((interest & waiter.event) == 0) setInterest(interest | waiter.event);
  waiters.add(waiter);
  updateRef();
}

void FdWatcher::remove(Waiter& waiter) {
  waiters.remove(waiter);
  waiter.watcher = nullptr;
  updateRef();
}

bool FdWatcher::wake(int events) {
  bool any = false;
  for (auto& waiter : waiters) {
    if ((waiter.event & events) != 0) {
      waiters.remove(waiter);
      waiter.watcher = nullptr;
      waiter.fulfiller.fulfill();
      any = true;
    }
  }
  return any;
}

bool FdWatcher::hasWaiters(int event) {
  for (auto& waiter : waiters) {
    if (waiter.event == event) return true;
  }
  return false;
}

bool FdWatcher::hungUp() const {
  struct pollfd entry = {fd, POLLOUT, 0};
  return ::poll(&entry, 1, 0) > 0 && (entry.revents & (POLLHUP | POLLERR)) != 0;
}

void FdWatcher::setInterest(int events) {
  if (events == interest) return;
  interest = events;
  ++counters.interestChanges;
  int error = events != 0 ? uv_poll_start(handle, events,
                                          [](uv_poll_t* poll, int status, int fired) {
                                            auto& self = *static_cast<FdWatcher*>(poll->data);
                                            runCallback("fd readiness",
                                                        [&] { self.onPoll(status, fired); });
                                          })
                          : uv_poll_stop(handle);
  KJ_ASSERT(error == 0, "uv_poll_start/stop failed", fd, uv_strerror(error));
}

void FdWatcher::updateRef() {
  bool wanted = !waiters.empty();
  if (wanted == referenced) return;
  referenced = wanted;
  auto* h = reinterpret_cast<uv_handle_t*>(handle);
  if (wanted) {
    uv_ref(h);
  } else {
    uv_unref(h);
  }
}

void FdWatcher::onPoll(int status, int events) {
  if (status < 0) {
    // POLLERR: libuv stopped the handle and reports UV_EBADF. Wake everybody: each retried
    // syscall reports the socket's real error (or blocks again and re-arms).
    interest = 0;
    wake(READABLE | WRITABLE | HANGUP);
    updateRef();
    return;
  }
  int unwanted = 0;
  for (int bit : {READABLE, WRITABLE}) {
    if ((events & bit) != 0 && !wake(bit)) unwanted |= bit;
  }
  // A hang-up reaches libuv as whichever bits are armed (as UV_PRIORITIZED only when nothing
  // else is), so check for it on every event while someone waits for one. A POLLPRI that is no
  // hang-up is urgent data nobody reads: drop the bit, it is level-triggered.
  bool hungUpNow = hasWaiters(HANGUP) && hungUp();
  if (hungUpNow) wake(HANGUP);
  if ((events & HANGUP) != 0 && !hungUpNow) unwanted |= HANGUP;
  if (unwanted != 0) setInterest(interest & ~unwanted);
  updateRef();
}

// ---------------------------------------------------------------------------------------------
// Streams and listeners

void prepareFd(int fd, uint flags) {
  if ((flags & Flags::TAKE_OWNERSHIP) != 0 && (flags & Flags::ALREADY_CLOEXEC) == 0) {
    KJ_SYSCALL(fcntl(fd, F_SETFD, FD_CLOEXEC), fd);
  }
  if ((flags & Flags::ALREADY_NONBLOCK) == 0) {
    int current;
    KJ_SYSCALL(current = fcntl(fd, F_GETFL), fd);
    if ((current & O_NONBLOCK) == 0) {
      KJ_SYSCALL(fcntl(fd, F_SETFL, current | O_NONBLOCK), fd);
    }
  }
}

kj::String describeAddress(const struct sockaddr* addr, uint length) {
  char text[INET6_ADDRSTRLEN] = {};
  switch (addr->sa_family) {
    case AF_UNIX: {
      auto* un = reinterpret_cast<const struct sockaddr_un*>(addr);
      size_t pathBytes = length > offsetof(sockaddr_un, sun_path)
                             ? strnlen(un->sun_path, length - offsetof(sockaddr_un, sun_path))
                             : 0;
      return kj::str("unix:", kj::heapString(un->sun_path, pathBytes));
    }
    case AF_INET: {
      auto* in = reinterpret_cast<const struct sockaddr_in*>(addr);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      return kj::str(text, ':', ntohs(in->sin_port));
    }
    case AF_INET6: {
      auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      return kj::str('[', text, "]:", ntohs(in6->sin6_port));
    }
    default:
      return kj::str("(address family ", addr->sa_family, ')');
  }
}

// The syscall helpers shared by streams and listeners. Throw KJ exceptions typed from errno
// (DISCONNECTED for EPIPE/ECONNRESET...).
void fdGetsockopt(int fd, int level, int option, void* value, uint* length) {
  socklen_t socklen = *length;
  KJ_SYSCALL(::getsockopt(fd, level, option, value, &socklen), level, option);
  *length = socklen;
}
void fdSetsockopt(int fd, int level, int option, const void* value, uint length) {
  KJ_SYSCALL(::setsockopt(fd, level, option, value, length), level, option);
}
void fdGetsockname(int fd, struct sockaddr* addr, uint* length) {
  socklen_t socklen = *length;
  KJ_SYSCALL(::getsockname(fd, addr, &socklen));
  *length = socklen;
}

// A stream over one non-blocking fd: a socket (Unix-domain or TCP), pipe or tty. Syscalls are
// tried at once; only EAGAIN waits for readiness.
class UvStream final : public kj::AsyncIoStream {
 public:
  UvStream(uv_loop_t* loop, int fd, uint flags, PollCounters& counters)
      : ownedFd((flags & Flags::TAKE_OWNERSHIP) != 0 ? fd : -1),
        fd(fd),
        watcher(loop, (prepareFd(fd, flags), fd), counters) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    return kj::evalNow([&]() -> kj::Promise<size_t> {
      auto* out = static_cast<kj::byte*>(buffer);
      const size_t copied = takeBuffered(out, maxBytes);
      if (copied >= minBytes || copied == maxBytes) return copied;
      return readSome(out + copied, minBytes - copied, maxBytes - copied, copied);
    });
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    return kj::evalNow([&] { return writeBuffer(static_cast<const kj::byte*>(buffer), size); });
  }

  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return kj::evalNow([&] { return writePieces(pieces, 0); });
  }

  kj::Promise<void> whenWriteDisconnected() override {
    KJ_IF_MAYBE (fork, writeDisconnected) {
      return fork->addBranch();
    }
    auto fork = watcher.when(FdWatcher::HANGUP).fork();
    auto branch = fork.addBranch();
    writeDisconnected = kj::mv(fork);
    return branch;
  }

  void shutdownWrite() override { KJ_SYSCALL(::shutdown(fd, SHUT_WR)); }
  void abortRead() override { KJ_SYSCALL(::shutdown(fd, SHUT_RD)); }

  void getsockopt(int level, int option, void* value, uint* length) override {
    fdGetsockopt(fd, level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    fdSetsockopt(fd, level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    fdGetsockname(fd, addr, length);
  }
  void getpeername(struct sockaddr* addr, uint* length) override {
    socklen_t socklen = *length;
    KJ_SYSCALL(::getpeername(fd, addr, &socklen));
    *length = socklen;
  }
  kj::Maybe<int> getFd() const override { return fd; }

  // For wrapConnectingSocketFd: resolves when a non-blocking connect() has finished.
  kj::Promise<void> whenConnected() { return watcher.when(FdWatcher::WRITABLE); }

 private:
  // Declared in this order so the watcher is destroyed first: uv_close() before close(fd).
  kj::AutoCloseFd ownedFd;
  const int fd;
  FdWatcher watcher;
  kj::Maybe<kj::ForkedPromise<void>> writeDisconnected;
  // Small reads go through this buffer: Cap'n Proto reads a message as its first word, the rest
  // of its segment table and its segments, which would each be a syscall. Reads of at least
  // READ_BUFFER_BYTES go straight to the caller's buffer.
  static constexpr size_t READ_BUFFER_BYTES = 4096;
  kj::Array<kj::byte> readBuffer;
  size_t readStart = 0;
  size_t readEnd = 0;
  // The last read() returned less than it asked for: the kernel had nothing more, so the next
  // read waits for readiness first instead of paying for an EAGAIN.
  bool drained = false;

  size_t takeBuffered(kj::byte* out, size_t maxBytes) {
    const size_t n = kj::min(readEnd - readStart, maxBytes);
    if (n > 0) {
      memcpy(out, readBuffer.begin() + readStart, n);
      readStart += n;
    }
    return n;
  }

  kj::Promise<size_t> readSome(kj::byte* buffer, size_t minBytes, size_t maxBytes,
                               size_t alreadyRead) {
    if (maxBytes == 0) return alreadyRead;
    if (drained) {
      if (minBytes == 0) return alreadyRead;
      return watcher.when(FdWatcher::READABLE)
          .then([this, buffer, minBytes, maxBytes, alreadyRead] {
            drained = false;
            return readSome(buffer, minBytes, maxBytes, alreadyRead);
          });
    }
    const bool direct = maxBytes >= READ_BUFFER_BYTES;
    if (!direct && readBuffer.size() == 0) readBuffer = kj::heapArray<kj::byte>(READ_BUFFER_BYTES);
    kj::byte* target = direct ? buffer : readBuffer.begin();
    const size_t asked = direct ? maxBytes : READ_BUFFER_BYTES;
    ssize_t n;
    KJ_NONBLOCKING_SYSCALL(n = ::read(fd, target, asked)) {
      return alreadyRead;
    }
    if (n == 0) return alreadyRead;  // end of stream
    if (n < 0) {                     // EAGAIN
      drained = true;
      return readSome(buffer, minBytes, maxBytes, alreadyRead);
    }
    drained = static_cast<size_t>(n) < asked;
    size_t got = static_cast<size_t>(n);
    if (!direct) {
      readStart = 0;
      readEnd = got;
      got = takeBuffered(buffer, maxBytes);
    }
    alreadyRead += got;
    if (got >= minBytes) return alreadyRead;
    return readSome(buffer + got, minBytes - got, maxBytes - got, alreadyRead);
  }

  kj::Promise<void> writeBuffer(const kj::byte* data, size_t size) {
    while (size > 0) {
      ssize_t n;
      KJ_NONBLOCKING_SYSCALL(n = ::write(fd, data, size)) {
        return kj::READY_NOW;
      }
      if (n < 0) {
        return watcher.when(FdWatcher::WRITABLE).then([this, data, size] {
          return writeBuffer(data, size);
        });
      }
      data += n;
      size -= n;
    }
    return kj::READY_NOW;
  }

  // `skip`: bytes of `pieces` already written.
  kj::Promise<void> writePieces(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces,
                                size_t skip) {
    for (;;) {
      while (pieces.size() > 0 && skip >= pieces[0].size()) {
        skip -= pieces[0].size();
        pieces = pieces.slice(1, pieces.size());
      }
      if (pieces.size() == 0) return kj::READY_NOW;

      size_t count = kj::min(pieces.size(), size_t(IOV_MAX));
      KJ_STACK_ARRAY(struct iovec, iov, count, 16, 128);
      for (size_t i = 0; i < count; i++) {
        iov[i].iov_base = const_cast<kj::byte*>(pieces[i].begin());
        iov[i].iov_len = pieces[i].size();
      }
      iov[0].iov_base = static_cast<kj::byte*>(iov[0].iov_base) + skip;
      iov[0].iov_len -= skip;

      ssize_t n;
      KJ_NONBLOCKING_SYSCALL(n = ::writev(fd, iov.begin(), count)) {
        return kj::READY_NOW;
      }
      if (n < 0) {
        return watcher.when(FdWatcher::WRITABLE).then([this, pieces, skip] {
          return writePieces(pieces, skip);
        });
      }
      skip += n;
    }
  }
};

class UvConnectionReceiver final : public kj::ConnectionReceiver {
 public:
  UvConnectionReceiver(uv_loop_t* loop, int fd, kj::LowLevelAsyncIoProvider::NetworkFilter& filter,
                       uint flags, kj::Timer& timer, PollCounters& counters)
      : loop(loop),
        ownedFd((flags & Flags::TAKE_OWNERSHIP) != 0 ? fd : -1),
        fd(fd),
        watcher(loop, (prepareFd(fd, flags), fd), counters),
        filter(filter),
        timer(timer),
        counters(counters) {}

  kj::Promise<kj::Own<kj::AsyncIoStream>> accept() override {
    return kj::evalNow([this] { return acceptNext(); });
  }

  uint getPort() override {
    struct sockaddr_storage addr = {};
    uint length = sizeof(addr);
    fdGetsockname(fd, reinterpret_cast<struct sockaddr*>(&addr), &length);
    switch (addr.ss_family) {
      case AF_INET:
        return ntohs(reinterpret_cast<struct sockaddr_in*>(&addr)->sin_port);
      case AF_INET6:
        return ntohs(reinterpret_cast<struct sockaddr_in6*>(&addr)->sin6_port);
      default:
        return 0;
    }
  }

  void getsockopt(int level, int option, void* value, uint* length) override {
    fdGetsockopt(fd, level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    fdSetsockopt(fd, level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    fdGetsockname(fd, addr, length);
  }

 private:
  uv_loop_t* const loop;
  kj::AutoCloseFd ownedFd;  // before the watcher: uv_close() first, then close(fd)
  const int fd;
  FdWatcher watcher;
  kj::LowLevelAsyncIoProvider::NetworkFilter& filter;
  kj::Timer& timer;
  PollCounters& counters;
  bool exhaustionLogged = false;

  kj::Promise<kj::Own<kj::AsyncIoStream>> acceptNext() {
    for (;;) {
      struct sockaddr_storage addr = {};
      socklen_t length = sizeof(addr);
      int newFd =
          ::accept4(fd, reinterpret_cast<sockaddr*>(&addr), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (newFd >= 0) {
        kj::AutoCloseFd owned(newFd);
        if (!filter.shouldAllow(reinterpret_cast<sockaddr*>(&addr), length)) continue;
        exhaustionLogged = false;
        return kj::Own<kj::AsyncIoStream>(kj::heap<UvStream>(
            loop, owned.release(),
            Flags::TAKE_OWNERSHIP | Flags::ALREADY_CLOEXEC | Flags::ALREADY_NONBLOCK, counters));
      }
      int error = errno;
      switch (error) {
        case EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case EWOULDBLOCK:
#endif
          return watcher.when(FdWatcher::READABLE).then([this] { return acceptNext(); });
        case EINTR:
        case ECONNABORTED:
        // Linux hands network errors already pending on the new connection to accept(); the
        // man page says to retry as for EAGAIN.
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
          continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          // The connection stays queued and the socket stays readable: waiting for readability
          // would spin, so pause before retrying.
          if (!exhaustionLogged) {
            KJ_LOG(WARNING, "accept() out of resources; retrying every 100 ms", strerror(error));
            exhaustionLogged = true;
          }
          return timer.afterDelay(100 * kj::MILLISECONDS).then([this] { return acceptNext(); });
        default:
          KJ_FAIL_SYSCALL("accept4()", error);
      }
    }
  }
};

class UvLowLevelAsyncIoProvider final : public kj::LowLevelAsyncIoProvider {
 public:
  UvLowLevelAsyncIoProvider(uv_loop_t* loop, kj::Timer& timer) : loop(loop), timer(timer) {}

  // Overriding one overload hides the others (the OwnFd and filter-less forms).
  using kj::LowLevelAsyncIoProvider::wrapConnectingSocketFd;
  using kj::LowLevelAsyncIoProvider::wrapInputFd;
  using kj::LowLevelAsyncIoProvider::wrapListenSocketFd;
  using kj::LowLevelAsyncIoProvider::wrapOutputFd;
  using kj::LowLevelAsyncIoProvider::wrapSocketFd;

  kj::Own<kj::AsyncInputStream> wrapInputFd(int fd, uint flags = 0) override {
    return kj::heap<UvStream>(loop, fd, flags, counters);
  }
  kj::Own<kj::AsyncOutputStream> wrapOutputFd(int fd, uint flags = 0) override {
    return kj::heap<UvStream>(loop, fd, flags, counters);
  }
  kj::Own<kj::AsyncIoStream> wrapSocketFd(int fd, uint flags = 0) override {
    return kj::heap<UvStream>(loop, fd, flags, counters);
  }

  kj::Promise<kj::Own<kj::AsyncIoStream>> wrapConnectingSocketFd(int fd,
                                                                 const struct sockaddr* addr,
                                                                 uint addrlen,
                                                                 uint flags = 0) override {
    return kj::evalNow([&]() -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
      // The stream first, so `flags` (ownership above all) hold on every path below.
      auto stream = kj::heap<UvStream>(loop, fd, flags, counters);
      if (::connect(fd, addr, addrlen) == 0) return kj::Own<kj::AsyncIoStream>(kj::mv(stream));
      int error = errno;
      if (error != EINPROGRESS && error != EINTR) {
        KJ_FAIL_SYSCALL("connect()", error, describeAddress(addr, addrlen));
      }
      auto connected = stream->whenConnected();
      return connected.then(
          [stream = kj::mv(stream),
           address = describeAddress(addr, addrlen)]() mutable -> kj::Own<kj::AsyncIoStream> {
            int error = 0;
            uint length = sizeof(error);
            stream->getsockopt(SOL_SOCKET, SO_ERROR, &error, &length);
            if (error != 0) KJ_FAIL_SYSCALL("connect()", error, address);
            return kj::mv(stream);
          });
    });
  }

  kj::Own<kj::ConnectionReceiver> wrapListenSocketFd(int fd, NetworkFilter& filter,
                                                     uint flags = 0) override {
    return kj::heap<UvConnectionReceiver>(loop, fd, filter, flags, timer, counters);
  }

  kj::Timer& getTimer() override { return timer; }

  PollCounters counters;

 private:
  uv_loop_t* const loop;
  kj::Timer& timer;
};

// Reads SO_PEERCRED through `getopt(level, option, value, length)`.
template <typename GetOpt>
PeerCredentials readPeerCredentials(GetOpt&& getopt) {
  int domain = 0;
  uint length = sizeof(domain);
  getopt(SOL_SOCKET, SO_DOMAIN, &domain, &length);
  KJ_REQUIRE(domain == AF_UNIX, "peer credentials need a Unix-domain socket", domain);
  struct ucred cred = {};
  length = sizeof(cred);
  getopt(SOL_SOCKET, SO_PEERCRED, &cred, &length);
  KJ_REQUIRE(length == sizeof(cred) && cred.pid != 0,
             "no peer credentials: the Unix socket is not connected");
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct UvKjLoop::Impl {
  explicit Impl(uv_loop_t* loop)
      : loop(loop),
        port(loop),
        eventLoop(port),
        scope(eventLoop),
        lowLevel(loop, port.timer()),
        provider(kj::newAsyncIoProvider(lowLevel)) {
    port.attach(eventLoop, scope);
  }

  uv_loop_t* const loop;
  UvEventPort port;
  kj::EventLoop eventLoop;
  kj::WaitScope scope;
  UvLowLevelAsyncIoProvider lowLevel;
  kj::Own<kj::AsyncIoProvider> provider;
};

UvKjLoop::UvKjLoop(uv_loop_t* loop) : impl(kj::heap<Impl>(loop)) {
  ignoreSigpipe();
}

UvKjLoop::~UvKjLoop() noexcept(false) {}

kj::WaitScope& UvKjLoop::waitScope() {
  return impl->scope;
}
kj::Timer& UvKjLoop::timer() {
  return impl->port.timer();
}
kj::LowLevelAsyncIoProvider& UvKjLoop::lowLevel() {
  return impl->lowLevel;
}
kj::AsyncIoProvider& UvKjLoop::provider() {
  return *impl->provider;
}
uv_loop_t* UvKjLoop::uvLoop() {
  return impl->loop;
}
uint64_t UvKjLoop::pollInterestChanges() const {
  return impl->lowLevel.counters.interestChanges;
}

PeerCredentials peerCredentials(int fd) {
  return readPeerCredentials([fd](int level, int option, void* value, uint* length) {
    fdGetsockopt(fd, level, option, value, length);
  });
}

PeerCredentials peerCredentials(kj::AsyncIoStream& stream) {
  return readPeerCredentials([&stream](int level, int option, void* value, uint* length) {
    stream.getsockopt(level, option, value, length);
  });
}

void ignoreSigpipe() {
  struct sigaction action = {};
  action.sa_handler = SIG_IGN;
  KJ_SYSCALL(sigaction(SIGPIPE, &action, nullptr));
}

}  // namespace synod::daemon
