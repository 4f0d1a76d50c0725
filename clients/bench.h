// synod-bench's parts shared between the systems it drives (synod, etcd), the process sampler and
// the floor measurements. One KJ event loop, one thread: nothing here is thread-safe.
#pragma once

#include <kj/async-io.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "clients/synod_client.h"

namespace synod::clients::bench {

using Clock = std::chrono::steady_clock;

/// One closed-loop client's connection to one member of the system under test. The promises never
/// reject: failures are a Status (for writes, as in synod_client.h, a failure may mean "unknown").
class KvConnection {
 public:
  virtual ~KvConnection() noexcept(false) = default;
  virtual kj::Promise<Status> put(const std::string& key, const std::string& value) = 0;
  /// Linearizable unless `serializable`; a missing key is NOT_FOUND.
  virtual kj::Promise<Status> get(const std::string& key, bool serializable) = 0;
  /// One transaction: if the value at `key` equals `expected`, put `value` there; COMPARE_FAILED
  /// otherwise.
  virtual kj::Promise<Status> txn(const std::string& key, const std::string& expected,
                                  const std::string& value) = 0;
  /// Grants a lease (TTL 10 s) and revokes it: one operation.
  virtual kj::Promise<Status> leaseCycle() = 0;
  /// Takes lock `name`, waiting in line, with this connection's own lease (granted on first use,
  /// lives as long as the connection), then releases it: one operation.
  virtual kj::Promise<Status> lockCycle(const std::string& name) = 0;
};

/// The members of a running group, as the load generator reaches them.
class System {
 public:
  virtual ~System() noexcept(false) = default;
  virtual const char* name() const = 0;  // "synod" / "etcd"
  virtual size_t members() const = 0;
  virtual std::string memberName(size_t member) const = 0;
  /// A new connection to `member`, used by one client at a time. Connects lazily.
  virtual kj::Own<KvConnection> connect(size_t member) = 0;
  /// The index of the member that says it leads; -1 when none does (asks each member, blocking).
  virtual int leader(kj::WaitScope& waitScope) = 0;
};

/// etcd members by their client URLs' "host:port", driven through etcd's HTTP/JSON gateway
/// (/v3/kv/put, /v3/kv/range, /v3/kv/txn, /v3/lease/grant, /v3/lease/revoke, /v3/lock/lock,
/// /v3/lock/unlock; /v3/maintenance/status for the leader). One keep-alive connection per
/// KvConnection. A lock connection's lease has a TTL of 3600 s and is not renewed: runs are
/// at most that long. `io` must outlive the result.
kj::Own<System> newEtcdSystem(kj::AsyncIoContext& io, std::vector<std::string> endpoints);

// --- processes ------------------------------------------------------------------------------

struct ProcessSample {
  bool ok = false;           // false: the process is gone or /proc unreadable
  double cpuSeconds = 0;     // on-CPU time of its live threads (schedstat, ns), else user + system
  double userSeconds = 0;    // from /proc/PID/stat, in clock ticks (10 ms)
  double systemSeconds = 0;  // the kernel's time on its behalf: fsync's journaling shows up here
  uint64_t rssKb = 0;        // VmRSS
  uint64_t peakRssKb = 0;    // VmHWM: the peak since start or since resetPeakRss
};

ProcessSample sampleProcess(pid_t pid);
/// Restarts VmHWM from the current RSS (writes 5 to /proc/PID/clear_refs); best effort: needs the
/// same user as the process, silently does nothing otherwise.
void resetPeakRss(pid_t pid);
/// This process's own CPU time (user + system), seconds.
double selfCpuSeconds();

// --- the floor --------------------------------------------------------------------------------

/// Median latency of `commits` LMDB write transactions each putting one record of `valueBytes`
/// with the default durability (fsync at commit, as the daemon opens its environment), in a
/// fresh environment made under `dir` and removed afterwards. Throws kj::Exception on an error.
double lmdbCommitMedianUs(const std::string& dir, uint32_t commits, size_t valueBytes);

/// Median round trip of a 64-byte message to an echo thread over loopback TCP (TCP_NODELAY).
/// Throws kj::Exception on an error.
double tcpRoundTripMedianUs(uint32_t rounds);

/// The median of `values` (sorts them); 0 when empty.
double median(std::vector<double>& values);

}  // namespace synod::clients::bench
