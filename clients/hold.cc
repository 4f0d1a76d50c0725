// synodctl lock/elect -- CMD: run a command only while a lock or leadership is held.
//
// Safety rests on the lease's conservative local deadline (clients/leases.h): CMD is sent SIGTERM
// at least stopMarginMs() before it, and SIGKILL --kill-after later, so CMD is gone before the
// lease can have ended at the daemon and the lock passed on. PR_SET_PDEATHSIG covers synodctl
// itself dying: its connection closes, the daemon revokes the lease, and the kernel kills CMD.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>

#include "clients/cli.h"
#include "clients/leases.h"

extern char** environ;

namespace synod::clients {

namespace {

constexpr int FORWARDED_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP};
volatile sig_atomic_t pendingSignals[NSIG];

void recordSignal(int signal) {
  pendingSignals[signal] = 1;
}

/// Catches the signals passed on to CMD while it runs; restores the old handlers when it goes.
class ForwardedSignals {
 public:
  ForwardedSignals() {
    struct sigaction action {};
    action.sa_handler = recordSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(FORWARDED_SIGNALS); ++i) {
      pendingSignals[FORWARDED_SIGNALS[i]] = 0;
      sigaction(FORWARDED_SIGNALS[i], &action, &saved[i]);
    }
  }
  ~ForwardedSignals() {
    for (size_t i = 0; i < std::size(FORWARDED_SIGNALS); ++i)
      sigaction(FORWARDED_SIGNALS[i], &saved[i], nullptr);
  }

  /// Sends every signal that arrived since the last call to `pid`.
  void forwardTo(pid_t pid) {
    for (int signal : FORWARDED_SIGNALS) {
      if (pendingSignals[signal]) {
        pendingSignals[signal] = 0;
        ::kill(pid, signal);
      }
    }
  }

 private:
  struct sigaction saved[std::size(FORWARDED_SIGNALS)];
};

bool startsWith(const char* text, std::string_view prefix) {
  return std::strncmp(text, prefix.data(), prefix.size()) == 0;
}

/// synodctl's environment with the SYNOD_ variables for CMD in place of any it had.
std::vector<std::string> childEnvironment(const HoldCommand& command, const Lock& lock,
                                          const std::string& socketPath) {
  const char* nameVariable = command.election ? "SYNOD_ELECTION=" : "SYNOD_LOCK=";
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    if (startsWith(*entry, "SYNOD_FENCE=") || startsWith(*entry, "SYNOD_LEASE=") ||
        startsWith(*entry, "SYNOD_LOCK=") || startsWith(*entry, "SYNOD_ELECTION=") ||
        startsWith(*entry, "SYNOD_SOCKET=")) {
      continue;
    }
    env.emplace_back(*entry);
  }
  env.push_back("SYNOD_FENCE=" + std::to_string(lock.fence()));
  env.push_back("SYNOD_LEASE=" + std::to_string(lock.lease().id()));
  env.push_back(nameVariable + command.name);
  env.push_back("SYNOD_SOCKET=" + socketPath);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& words) {
  std::vector<char*> result;
  for (auto& word : words)
    result.push_back(word.data());
  result.push_back(nullptr);
  return result;
}

/// Forks and execs CMD; -1 (with `error` set) when fork failed. In the child nothing allocates
/// after fork.
pid_t startChild(const HoldCommand& command, std::vector<std::string> env, std::string& error) {
  std::vector<std::string> argv = command.argv;
  auto argvPointers = pointers(argv);
  auto envPointers = pointers(env);
  std::string execFailed = "synodctl: cannot run " + command.argv[0] + ": ";
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    error = std::string("fork failed: ") + std::strerror(errno);
    return -1;
  }
  if (pid > 0) return pid;
  // CMD must not outlive synodctl: once synodctl is gone nobody stops it on loss.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(EXIT_LOST);  // synodctl died before prctl took hold
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  ::execvpe(argvPointers[0], argvPointers.data(), envPointers.data());
  int code = errno == ENOENT ? 127 : 126;
  const char* reason = std::strerror(errno);
  ssize_t ignored = ::write(STDERR_FILENO, execFailed.data(), execFailed.size());
  ignored = ::write(STDERR_FILENO, reason, std::strlen(reason));
  ignored = ::write(STDERR_FILENO, "\n", 1);
  (void)ignored;
  ::_exit(code);
}

int exitStatusOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return EXIT_UNKNOWN;
}

/// Resolves when the lease expired (checked every 20 ms of the loop).
kj::Promise<void> untilExpired(Lease& lease) {
  return lease.client().timer().afterDelay(20 * kj::MILLISECONDS).then([&lease]() {
    if (lease.expired()) return kj::Promise<void>(kj::READY_NOW);
    return untilExpired(lease);
  });
}

template <typename T>
Result<kj::Own<Lock>> asLock(Result<kj::Own<T>>&& result) {
  Result<kj::Own<Lock>> lock;
  lock.status = result.status;
  lock.header = result.header;
  lock.answered = result.answered;
  lock.reply = kj::mv(result.reply);
  return lock;
}

/// Waits for the lock or leadership while the lease lives.
Result<kj::Own<Lock>> acquire(Client& client, Lease& lease, const HoldCommand& command) {
  kj::Promise<Result<kj::Own<Lock>>> waiting =
      command.election
          ? Election::campaign(lease, command.name, command.value, command.waitTimeoutMs)
                .then([](Result<kj::Own<Election>>&& r) { return asLock(kj::mv(r)); })
          : Lock::acquire(lease, command.name, true, command.waitTimeoutMs);
  auto expired = untilExpired(lease).then([&lease]() {
    Result<kj::Own<Lock>> result;
    result.status = Status{Code::NOT_FOUND, "the lease expired while waiting: " + lease.reason()};
    return result;
  });
  return waiting.exclusiveJoin(kj::mv(expired)).wait(client.waitScope());
}

}  // namespace

int runHold(Client& client, const HoldCommand& command, std::ostream& err) {
  const std::string what = std::string(command.election ? "election " : "lock ") + "\"" +
                           displayText(command.name) + "\"";
  LeaseSettings settings;
  settings.ttlMs = command.ttlMs;
  auto granted = Lease::grant(client.async(), settings).wait(client.waitScope());
  if (!granted.ok()) {
    err << "synodctl: cannot grant a lease of " << command.ttlMs
        << " ms: " << displayText(granted.status.message) << " (" << codeName(granted.status.code)
        << ")\n";
    return exitCodeFor(granted.status.code);
  }
  Lease& lease = *granted.reply;

  auto acquired = acquire(client, lease, command);
  if (!acquired.ok()) {
    err << "synodctl: waiting for " << what << ": " << displayText(acquired.status.message) << " ("
        << codeName(acquired.status.code) << ")\n";
    // The daemon's TIMEOUT of a wait means the lock stayed busy for --timeout-ms: refused.
    if (acquired.answered && acquired.status.code == Code::TIMEOUT) return EXIT_REFUSED;
    return exitCodeFor(acquired.status.code);
  }
  Lock& lock = *acquired.reply;

  ForwardedSignals signals;
  std::string error;
  pid_t pid = startChild(command, childEnvironment(command, lock, client.socketPath()), error);
  if (pid < 0) {
    err << "synodctl: " << error << "\n";
    return EXIT_UNKNOWN;
  }

  kj::Timer& timer = client.async().timer();
  const kj::Duration stopMargin = command.stopMarginMs() * kj::MILLISECONDS;
  bool lost = false;
  kj::Maybe<kj::TimePoint> killAt;
  int status = 0;
  for (;;) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid || (done < 0 && errno == ECHILD)) break;
    signals.forwardTo(pid);
    kj::TimePoint now = timer.now();
    if (!lost) {
      std::string why;
      if (!lock.held()) {
        why = lock.lostReason();
      } else if (now + stopMargin >= lease.deadline()) {
        why = "lease " + std::to_string(lease.id()) + " could end in " +
              std::to_string(lease.remainingMs()) + " ms (" + lease.reason() + ")";
      }
      if (!why.empty()) {
        lost = true;
        err << "synodctl: " << what << " lost: " << displayText(why) << "; stopping "
            << displayText(command.argv[0]) << "\n";
        ::kill(pid, SIGTERM);
        killAt = now + command.killAfterMs * kj::MILLISECONDS;
      }
    } else KJ_IF_MAYBE (at, killAt) {
      if (now >= *at) {
        ::kill(pid, SIGKILL);
        killAt = nullptr;
      }
    }
    client.runFor(10);
  }

  if (!lost) {
    auto given = lock.unlock().wait(client.waitScope());
    if (!given.ok() && given.status.code != Code::NOT_FOUND) {
      err << "synodctl: giving up " << what << ": " << displayText(given.status.message) << " ("
          << codeName(given.status.code) << "); it passes on when the lease ends\n";
    }
  } else {
    lock.release();
  }
  if (!lease.expired()) lease.revoke().wait(client.waitScope());
  return lost ? EXIT_LOST : exitStatusOf(status);
}

}  // namespace synod::clients
