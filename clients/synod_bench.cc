// synod-bench: a load generator for synod, and for etcd on the same machine with the same clients.
// Closed-loop clients (each waits for its answer before sending the next request), each on its own
// connection, all on one KJ event loop, spread over the members. Reports throughput, latency
// percentiles, the members' CPU per operation and peak RSS, idle CPU and RSS, and the floor (one
// LMDB commit + one loopback round trip + one local RPC), as a markdown table on stdout or JSON
// lines (--json). Progress goes to stderr. `synod-bench --help` has the command line.
#include <kj/async-io.h>
#include <kj/debug.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <errno.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clients/bench.h"
#include "clients/leases.h"
#include "clients/synod_client.h"
#include "clients/watch_client.h"

namespace synod::clients::bench {
namespace {

const std::vector<std::string> WORKLOADS = {"put", "get",   "get-leader", "get-follower", "sget",
                                            "txn", "lease", "lock",       "watch"};

struct Options {
  std::vector<std::string> sockets;
  std::vector<std::string> etcd;  // host:port of each etcd member: drive etcd instead of synod
  std::vector<std::string> workloads{"put", "get-leader", "get-follower", "sget", "txn"};
  std::vector<uint32_t> clients{1, 8, 64, 256};
  double seconds = 5;
  uint64_t ops = 0;  // > 0: each run ends after this many operations instead of after `seconds`
  size_t valueBytes = 100;
  uint32_t keys = 1000;
  bool json = false;
  std::string jsonFile;     // also append the JSON lines here
  std::vector<pid_t> pids;  // member processes to sample (the tool knows them when it runs them)
  double idleSeconds = 0;
  std::string floorDir;  // measure the floor with an LMDB environment made here
  uint32_t floorCommits = 200;
  // Running the group itself: one daemon per --config.
  std::string synod;
  std::vector<std::string> configs;
  // Failover mode: this many rounds of stopping the leader, per signal.
  uint32_t failoverRounds = 0;
  std::vector<int> signals{SIGKILL, SIGTERM};
  uint32_t locks = 16;     // the lock workload's names
  double watchRate = 0;    // the watch workload's puts per second; 0 = closed loop
  uint32_t processes = 1;  // load generator processes, each with its share of the clients
  // A load generator process of a --processes run: its first client's index, the members its
  // clients go to in turn, and when to start (steady_clock nanoseconds, shared by the machine).
  bool child = false;
  uint32_t childFirst = 0;
  std::vector<size_t> childOrder;
  int64_t childStartNs = 0;
};

[[noreturn]] void usage(const char* problem);

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p / 100.0 * sorted.size()));
  return sorted[index];
}

// --- synod through libsynod -------------------------------------------------------------------

class SynodConnection final : public KvConnection {
 public:
  SynodConnection(kj::AsyncIoProvider& io, std::string socket)
      : client_(io, ClientOptions{std::move(socket), 5000, 1000}) {}

  kj::Promise<Status> put(const std::string& key, const std::string& value) override {
    return client_.put(key, value).then([](Result<Empty> r) { return r.status; });
  }
  kj::Promise<Status> get(const std::string& key, bool serializable) override {
    ReadOptions read;
    read.serializable = serializable;
    return client_.get(key, read).then([](Result<KeyValue> r) { return r.status; });
  }
  kj::Promise<Status> txn(const std::string& key, const std::string& expected,
                          const std::string& value) override {
    Txn txn;
    Compare compare;
    compare.key = key;
    compare.value = expected;
    txn.compares.push_back(std::move(compare));
    txn.success.push_back(TxnOp::put(key, value));
    return client_.txn(std::move(txn)).then([](Result<TxnReply> r) { return r.status; });
  }

  kj::Promise<Status> leaseCycle() override {
    return client_.grantLease(10000).then([this](Result<LeaseGrant> r) -> kj::Promise<Status> {
      if (!r.ok()) return r.status;
      KJ_IF_MAYBE (cap, r->lease) {
        return client_.revokeLease(*cap).then([](Result<Empty> r) { return r.status; });
      }
      return Status{Code::INTERNAL, "a granted lease without its capability"};
    });
  }

  kj::Promise<Status> lockCycle(const std::string& name) override {
    if (lease_.get() == nullptr) {
      LeaseSettings settings;
      settings.ttlMs = 10000;
      return Lease::grant(client_, settings)
          .then([this, name](Result<kj::Own<Lease>> r) -> kj::Promise<Status> {
            if (!r.ok()) return r.status;
            lease_ = kj::mv(r.reply);
            return lockCycle(name);
          });
    }
    if (lease_->expired()) return Status{Code::UNAVAILABLE, "the lock lease expired"};
    uint64_t id = lease_->id();
    return client_.lock(name, id, true, 10000)
        .then([this, name, id](Result<FenceReply> r) -> kj::Promise<Status> {
          if (!r.ok()) return r.status;
          return client_.unlock(name, id).then([](Result<Empty> r) { return r.status; });
        });
  }

  AsyncClient& client() { return client_; }

 private:
  AsyncClient client_;
  kj::Own<Lease> lease_;  // the lock workload's; goes before the client
};

class SynodSystem final : public System {
 public:
  SynodSystem(kj::AsyncIoContext& io, std::vector<std::string> sockets)
      : io_(io), sockets_(std::move(sockets)) {}

  const char* name() const override { return "synod"; }
  size_t members() const override { return sockets_.size(); }
  std::string memberName(size_t member) const override { return sockets_[member]; }
  kj::Own<KvConnection> connect(size_t member) override {
    return kj::heap<SynodConnection>(*io_.provider, sockets_[member]);
  }
  int leader(kj::WaitScope& waitScope) override {
    for (size_t i = 0; i < sockets_.size(); ++i) {
      AsyncClient admin(*io_.provider, ClientOptions{sockets_[i], 500, 500});
      auto status = admin.status().wait(waitScope);
      if (status.ok() && status->role == "leader") return static_cast<int>(i);
    }
    return -1;
  }

 private:
  kj::AsyncIoContext& io_;
  std::vector<std::string> sockets_;
};

// --- the closed loop --------------------------------------------------------------------------

struct Outcome {
  std::string workload;
  uint32_t clients = 0;
  double seconds = 0;
  uint64_t started = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  std::vector<double> latenciesUs;  // of successful operations
  std::string firstError;
  Clock::time_point latestSuccessStart;  // when the latest-started successful operation began
  double benchCpuSeconds = 0;
  struct Member {
    std::string name;
    pid_t pid = 0;
    double cpuSeconds = 0;
    double userSeconds = 0;
    double systemSeconds = 0;
    uint64_t peakRssKb = 0;
  };
  std::vector<Member> members;  // the sampled processes
  uint64_t puts = 0;            // watch: the acknowledged puts
};

// One closed-loop client: runs operations back to back until `end` or until `maxOps` operations
// have started over all clients of the run.
class Worker {
 public:
  Worker(kj::Own<KvConnection> connection, const Options& options, std::string workload,
         uint32_t index, Outcome& outcome, Clock::time_point end, uint64_t maxOps)
      : connection_(kj::mv(connection)),
        options_(options),
        workload_(std::move(workload)),
        index_(index),
        outcome_(outcome),
        end_(end),
        maxOps_(maxOps),
        value_(options.valueBytes, 'v') {}

  kj::Promise<void> run() {
    if (Clock::now() >= end_ || (maxOps_ > 0 && outcome_.started >= maxOps_)) {
      return kj::READY_NOW;
    }
    ++outcome_.started;
    std::string key = "bench/" + std::to_string((index_ * 7919 + counter_++) % options_.keys);
    auto started = Clock::now();
    return operation(key).then([this, started](Status status) {
      bool read =
          workload_ != "put" && workload_ != "txn" && workload_ != "lease" && workload_ != "lock";
      if (status.ok() || (read && status.code == Code::NOT_FOUND)) {
        ++outcome_.ok;
        outcome_.latestSuccessStart = std::max(outcome_.latestSuccessStart, started);
        outcome_.latenciesUs.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - started).count());
      } else {
        ++outcome_.failed;
        if (outcome_.firstError.empty()) {
          outcome_.firstError = std::string(codeName(status.code)) + ": " + status.message;
        }
        // A member that is gone fails every call at once: without a pause the retries would
        // keep the loop busy and starve its timers (the failover's own deadlines included).
        if (retryTimer_ != nullptr) {
          return retryTimer_->afterDelay(10 * kj::MILLISECONDS).then([this] { return run(); });
        }
      }
      return run();
    });
  }

  // Failed operations are retried after 10 ms on `timer` instead of at once (failover runs).
  void setRetryTimer(kj::Timer& timer) { retryTimer_ = &timer; }

  // Writes keys from, from + stride, … below `to`, so that reads and txns find their value.
  kj::Promise<void> preload(uint32_t from, uint32_t to, uint32_t stride) {
    if (from >= to) return kj::READY_NOW;
    return connection_->put("bench/" + std::to_string(from), value_)
        .then([this, from, to, stride](Status status) -> kj::Promise<void> {
          if (!status.ok()) {
            KJ_FAIL_REQUIRE("preload failed", codeName(status.code), status.message);
          }
          return preload(from + stride, to, stride);
        });
  }

 private:
  kj::Promise<Status> operation(const std::string& key) {
    if (workload_ == "put") return connection_->put(key, value_);
    if (workload_ == "txn") return connection_->txn(key, value_, value_);
    if (workload_ == "lease") return connection_->leaseCycle();
    if (workload_ == "lock") {
      return connection_->lockCycle("bench/lock/" +
                                    std::to_string((index_ * 7919 + counter_) % options_.locks));
    }
    return connection_->get(key, workload_ == "sget");
  }

  kj::Own<KvConnection> connection_;
  const Options& options_;
  std::string workload_;
  uint32_t index_;
  Outcome& outcome_;
  Clock::time_point end_;
  uint64_t maxOps_;
  kj::Timer* retryTimer_ = nullptr;
  std::string value_;
  uint64_t counter_ = 0;
};

// The members a workload's clients go to, in turn: the leader's member alone for get-leader, the
// followers' for get-follower, and every member, the leader's first, for the rest (so a single
// client talks to the leader's member).
std::vector<size_t> placement(const std::string& workload, size_t members, int leader) {
  std::vector<size_t> order;
  if (leader < 0) {
    KJ_REQUIRE(workload != "get-leader" && workload != "get-follower",
               "no member says it leads, so there is no leader's or follower's member",
               workload.c_str());
    for (size_t i = 0; i < members; ++i)
      order.push_back(i);
    return order;
  }
  size_t lead = static_cast<size_t>(leader);
  if (workload != "get-follower") order.push_back(lead);
  if (workload == "get-leader") return order;
  for (size_t i = 0; i < members; ++i) {
    if (i != lead) order.push_back(i);
  }
  KJ_REQUIRE(!order.empty(), "get-follower needs a group of more than one member");
  return order;
}

struct MemberProcess {
  std::string name;
  pid_t pid;
};

// Runs `clients` closed-loop clients until options.seconds pass or `maxOps` operations started;
// client i is client number first + i of the run and goes to member order[(first + i) % size].
void runClients(kj::AsyncIoContext& io, System& system, const Options& options,
                const std::vector<size_t>& order, uint32_t first, const std::string& workload,
                uint32_t clients, uint64_t maxOps, Outcome& outcome) {
  double benchCpu = selfCpuSeconds();
  auto started = Clock::now();
  auto end = maxOps > 0 ? Clock::time_point::max()
                        : started + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(options.seconds));
  std::vector<std::unique_ptr<Worker>> workers;
  kj::Vector<kj::Promise<void>> running;
  for (uint32_t i = first; i < first + clients; ++i) {
    workers.push_back(std::make_unique<Worker>(system.connect(order[i % order.size()]), options,
                                               workload, i, outcome, end, maxOps));
    running.add(workers.back()->run());
  }
  kj::joinPromises(running.releaseAsArray()).wait(io.waitScope);
  outcome.seconds = since(started);
  outcome.benchCpuSeconds = selfCpuSeconds() - benchCpu;
}

// --- several load generator processes -----------------------------------------------------------

// Latency histogram buckets: whole microseconds below 1 ms, three significant digits above (at
// most 1 % off), so that the processes' raw histograms merge exactly.
uint64_t latencyBucket(double us) {
  uint64_t v = static_cast<uint64_t>(us < 0 ? 0 : us);
  uint64_t shift = 0;
  while (v >= 1000) {
    v /= 10;
    ++shift;
  }
  return shift * 1000 + v;
}

double bucketUs(uint64_t bucket) {
  double v = static_cast<double>(bucket % 1000);
  for (uint64_t i = 0; i < bucket / 1000; ++i)
    v *= 10;
  return v;
}

// A load generator process's result on its stdout: counts, then the histogram as BUCKET:COUNT
// pairs, then the first error (the rest of the output).
void printChildOutcome(const Outcome& o) {
  std::map<uint64_t, uint64_t> histogram;
  for (double us : o.latenciesUs)
    ++histogram[latencyBucket(us)];
  std::printf("%llu %llu %llu %.6f %.6f\n", static_cast<unsigned long long>(o.ok),
              static_cast<unsigned long long>(o.failed), static_cast<unsigned long long>(o.started),
              o.seconds, o.benchCpuSeconds);
  for (const auto& [bucket, count] : histogram) {
    std::printf("%llu:%llu ", static_cast<unsigned long long>(bucket),
                static_cast<unsigned long long>(count));
  }
  std::printf("\n%s", o.firstError.c_str());
  std::fflush(stdout);
}

// Reads a load generator process's result into `outcome`, adding to what is there.
bool mergeChildOutcome(const std::string& text, Outcome& outcome) {
  size_t line1 = text.find('\n');
  size_t line2 = line1 == std::string::npos ? std::string::npos : text.find('\n', line1 + 1);
  if (line2 == std::string::npos) return false;
  unsigned long long ok = 0, failed = 0, started = 0;
  double seconds = 0, cpu = 0;
  if (std::sscanf(text.c_str(), "%llu %llu %llu %lf %lf", &ok, &failed, &started, &seconds, &cpu) !=
      5) {
    return false;
  }
  outcome.ok += ok;
  outcome.failed += failed;
  outcome.started += started;
  outcome.seconds = std::max(outcome.seconds, seconds);
  outcome.benchCpuSeconds += cpu;
  const char* p = text.c_str() + line1 + 1;
  const char* stop = text.c_str() + line2;
  while (p < stop) {
    char* next = nullptr;
    unsigned long long bucket = std::strtoull(p, &next, 10);
    if (next == p || *next != ':') break;
    unsigned long long count = std::strtoull(next + 1, &next, 10);
    outcome.latenciesUs.insert(outcome.latenciesUs.end(), count, bucketUs(bucket));
    p = next;
    while (p < stop && *p == ' ')
      ++p;
  }
  if (outcome.firstError.empty()) outcome.firstError = text.substr(line2 + 1);
  return true;
}

// Runs the clients in options.processes processes (this program again), each with its share, all
// starting at once, and merges their counts and raw histograms.
void runProcesses(System& system, const Options& options, const std::vector<size_t>& order,
                  const std::string& workload, uint32_t clients, Outcome& outcome) {
  uint32_t processes = std::min(options.processes, clients);
  auto startAt = Clock::now() + std::chrono::milliseconds(300);  // past every process's setup
  std::vector<std::pair<pid_t, int>> children;
  uint32_t first = 0;
  for (uint32_t p = 0; p < processes; ++p) {
    uint32_t share = clients / processes + (p < clients % processes ? 1 : 0);
    std::vector<std::string> args = {"synod-bench", "--child", std::to_string(first)};
    std::string members, orderText;
    for (size_t i = 0; i < system.members(); ++i)
      members += (i ? "," : "") + system.memberName(i);
    for (size_t m : order)
      orderText += (orderText.empty() ? "" : ",") + std::to_string(m);
    if (std::string(system.name()) == "etcd") {
      args.insert(args.end(), {"--etcd", members});
    } else {
      for (size_t i = 0; i < system.members(); ++i)
        args.insert(args.end(), {"--socket", system.memberName(i)});
    }
    args.insert(
        args.end(),
        {"--child-order", orderText, "--child-start",
         std::to_string(startAt.time_since_epoch().count()), "--workload", workload, "--clients",
         std::to_string(share), "--value-bytes", std::to_string(options.valueBytes), "--keys",
         std::to_string(options.keys), "--locks", std::to_string(options.locks)});
    if (options.ops > 0) {
      uint64_t ops = options.ops / processes + (p < options.ops % processes ? 1 : 0);
      args.insert(args.end(), {"--ops", std::to_string(std::max<uint64_t>(ops, 1))});
    } else {
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%.6f", options.seconds);
      args.insert(args.end(), {"--seconds", seconds});
    }
    int fds[2];
    KJ_SYSCALL(pipe(fds));
    pid_t pid = fork();
    KJ_SYSCALL(pid);
    if (pid == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(fds[1]);
    children.emplace_back(pid, fds[0]);
    first += share;
  }
  for (auto [pid, fd] : children) {
    std::string text;
    char buffer[65536];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) != 0) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      text.append(buffer, static_cast<size_t>(n));
    }
    close(fd);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!mergeChildOutcome(text, outcome) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++outcome.failed;
      if (outcome.firstError.empty()) {
        outcome.firstError = "a load generator process failed (exit status " +
                             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")";
      }
    }
  }
}

// A load generator process of a --processes run: its clients, from the start time on; the result
// on stdout for the parent.
int runChild(kj::AsyncIoContext& io, const Options& options) {
  kj::Own<System> system;
  if (!options.etcd.empty()) {
    system = newEtcdSystem(io, options.etcd);
  } else {
    system = kj::heap<SynodSystem>(io, options.sockets);
  }
  for (size_t m : options.childOrder) {
    if (m >= system->members()) usage("--child-order names a member that is not given");
  }
  auto startAt = Clock::time_point(Clock::duration(options.childStartNs));
  auto now = Clock::now();
  if (startAt > now) {
    auto wait = std::chrono::duration_cast<std::chrono::microseconds>(startAt - now).count();
    io.provider->getTimer().afterDelay(wait * kj::MICROSECONDS).wait(io.waitScope);
  }
  Outcome outcome;
  runClients(io, *system, options, options.childOrder, options.childFirst, options.workloads[0],
             options.clients[0], options.ops, outcome);
  printChildOutcome(outcome);
  return 0;
}

// --- watch fan-out ------------------------------------------------------------------------------

// `watchers` watchers on one prefix, spread over the members in `order`, and one writer at the
// first member (the leader's) putting under that prefix, closed-loop or at options.watchRate.
// ok = events delivered to all watchers; latency = from the put's acknowledgement to each
// watcher's event (0 when the event came first); failed = failed puts + events never delivered.
void runWatchFanout(kj::AsyncIoContext& io, const std::vector<std::string>& sockets,
                    const Options& options, const std::vector<size_t>& order, uint32_t watchers,
                    Outcome& outcome) {
  static uint32_t runs = 0;
  std::string prefix =
      "bench/watch/" + std::to_string(getpid()) + "." + std::to_string(++runs) + "/";
  auto& timer = io.provider->getTimer();
  std::vector<std::unique_ptr<AsyncClient>> clients;
  kj::Vector<kj::Promise<void>> watches;
  uint32_t started = 0;
  std::vector<std::pair<uint64_t, Clock::time_point>> events;  // revision, arrival
  for (uint32_t i = 0; i < watchers; ++i) {
    clients.push_back(std::make_unique<AsyncClient>(
        *io.provider, ClientOptions{sockets[order[i % order.size()]], 5000, 1000}));
    WatchRequest request;
    request.key = prefix;
    watches.add(runWatch(
                    *clients.back(), timer, request,
                    [&](const Result<WatchStarted>& r) {
                      if (r.ok()) {
                        ++started;
                      } else if (outcome.firstError.empty()) {
                        outcome.firstError = "watch: " + r.status.message;
                      }
                    },
                    [&](WatchUpdate&& update) {
                      auto now = Clock::now();
                      for (const auto& e : update.events)
                        events.emplace_back(e.kv.modRevision, now);
                      return true;
                    })
                    .then([&](Result<WatchStarted> r) {
                      if (!r.ok() && outcome.firstError.empty()) {
                        outcome.firstError = "watch ended: " + r.status.message;
                      }
                    }));
  }
  auto ready = Clock::now() + std::chrono::seconds(10);
  while (started < watchers && Clock::now() < ready) {
    timer.afterDelay(5 * kj::MILLISECONDS).wait(io.waitScope);
  }
  if (started < watchers) {
    outcome.failed += watchers - started;
    if (outcome.firstError.empty()) outcome.firstError = "not every watch started within 10 s";
    return;
  }
  AsyncClient writer(*io.provider, ClientOptions{sockets[order[0]], 5000, 1000});
  std::map<uint64_t, Clock::time_point> acks;  // revision of each successful put
  uint64_t puts = 0, failedPuts = 0;
  std::string value(options.valueBytes, 'v');
  double benchCpu = selfCpuSeconds();
  auto begin = Clock::now();
  auto end = begin + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(options.seconds));
  while (options.ops > 0 ? puts < options.ops : Clock::now() < end) {
    if (options.watchRate > 0) {
      auto due = begin + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(puts / options.watchRate));
      auto now = Clock::now();
      if (due > now) {
        auto wait = std::chrono::duration_cast<std::chrono::microseconds>(due - now).count();
        timer.afterDelay(wait * kj::MICROSECONDS).wait(io.waitScope);
      }
    }
    ++puts;
    auto r = writer.put(prefix + std::to_string(puts % options.keys), value).wait(io.waitScope);
    if (r.ok()) {
      acks.emplace(r.header.revision, Clock::now());
    } else {
      ++failedPuts;
      if (outcome.firstError.empty()) outcome.firstError = "put: " + r.status.message;
    }
  }
  // Every watcher has had every acknowledged put, or 10 s passed.
  uint64_t expected = acks.size() * watchers;
  auto drained = Clock::now() + std::chrono::seconds(10);
  while (events.size() < expected && Clock::now() < drained) {
    timer.afterDelay(5 * kj::MILLISECONDS).wait(io.waitScope);
  }
  outcome.seconds = since(begin);
  outcome.benchCpuSeconds = selfCpuSeconds() - benchCpu;
  watches = kj::Vector<kj::Promise<void>>();  // cancels the watches
  uint64_t delivered = 0;
  for (const auto& [revision, at] : events) {
    auto ack = acks.find(revision);
    if (ack == acks.end()) continue;
    ++delivered;
    outcome.latenciesUs.push_back(
        std::max(0.0, std::chrono::duration<double, std::micro>(at - ack->second).count()));
  }
  outcome.ok = delivered;
  outcome.started = puts;
  outcome.puts = puts - failedPuts;
  outcome.failed = failedPuts + (expected > delivered ? expected - delivered : 0);
  if (expected > delivered && outcome.firstError.empty()) {
    outcome.firstError = std::to_string(expected - delivered) + " events not delivered in 10 s";
  }
}

Outcome runOne(kj::AsyncIoContext& io, System& system, const Options& options,
               const std::vector<MemberProcess>& processes, const std::string& workload,
               uint32_t clients) {
  Outcome outcome;
  outcome.workload = workload;
  outcome.clients = clients;
  // A loaded machine can leave the group briefly without a leader between runs: wait up to 10 s.
  int leader = system.leader(io.waitScope);
  for (int i = 0; i < 100 && leader < 0; ++i) {
    io.provider->getTimer().afterDelay(100 * kj::MILLISECONDS).wait(io.waitScope);
    leader = system.leader(io.waitScope);
  }
  auto order = placement(workload, system.members(), leader);
  std::vector<ProcessSample> before;
  for (const auto& p : processes) {
    resetPeakRss(p.pid);
    before.push_back(sampleProcess(p.pid));
  }
  if (workload == "watch") {
    std::vector<std::string> sockets;
    for (size_t i = 0; i < system.members(); ++i)
      sockets.push_back(system.memberName(i));
    runWatchFanout(io, sockets, options, order, clients, outcome);
  } else if (options.processes > 1) {
    runProcesses(system, options, order, workload, clients, outcome);
  } else {
    runClients(io, system, options, order, 0, workload, clients, options.ops, outcome);
  }
  for (size_t i = 0; i < processes.size(); ++i) {
    auto after = sampleProcess(processes[i].pid);
    Outcome::Member member{processes[i].name, processes[i].pid, 0, 0, 0, after.peakRssKb};
    if (after.ok && before[i].ok) {
      member.cpuSeconds = after.cpuSeconds - before[i].cpuSeconds;
      member.userSeconds = after.userSeconds - before[i].userSeconds;
      member.systemSeconds = after.systemSeconds - before[i].systemSeconds;
    }
    outcome.members.push_back(member);
  }
  std::sort(outcome.latenciesUs.begin(), outcome.latenciesUs.end());
  return outcome;
}

void preload(kj::AsyncIoContext& io, System& system, const Options& options) {
  int leader = system.leader(io.waitScope);
  size_t member = leader >= 0 ? static_cast<size_t>(leader) : 0;
  constexpr uint32_t WRITERS = 16;
  Outcome ignored;
  std::vector<std::unique_ptr<Worker>> workers;
  kj::Vector<kj::Promise<void>> running;
  for (uint32_t i = 0; i < std::min(WRITERS, options.keys); ++i) {
    workers.push_back(std::make_unique<Worker>(system.connect(member), options, "put", 0, ignored,
                                               Clock::now(), 0));
    running.add(workers.back()->preload(i, options.keys, WRITERS));
  }
  kj::joinPromises(running.releaseAsArray()).wait(io.waitScope);
}

// --- reports ----------------------------------------------------------------------------------

// JSON lines on stdout (--json) and in --json-file; the markdown table is printed at the end.
class Report {
 public:
  Report(const Options& options, std::string system) : options_(options), system_(system) {
    if (!options.jsonFile.empty()) {
      file_ = std::fopen(options.jsonFile.c_str(), "a");
      if (file_ == nullptr) {
        std::fprintf(stderr, "synod-bench: cannot write %s\n", options.jsonFile.c_str());
        std::exit(2);
      }
    }
  }
  ~Report() {
    if (file_ != nullptr) std::fclose(file_);
  }
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;

  void json(const std::string& line) {
    std::string full = "{\"system\":\"" + system_ + "\"," + line.substr(1) + "\n";
    if (options_.json) {
      std::fputs(full.c_str(), stdout);
      std::fflush(stdout);
    }
    if (file_ != nullptr) {
      std::fputs(full.c_str(), file_);
      std::fflush(file_);
    }
  }

  void markdown(const std::string& text) {
    if (!options_.json) markdown_ += text;
  }

  void finish() {
    if (!options_.json) std::fputs(markdown_.c_str(), stdout);
    std::fflush(stdout);
  }

 private:
  const Options& options_;
  std::string system_;
  std::FILE* file_ = nullptr;
  std::string markdown_;
};

std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* pattern, ...) {
  char buffer[2048];
  va_list args;
  va_start(args, pattern);
  std::vsnprintf(buffer, sizeof(buffer), pattern, args);
  va_end(args);
  return buffer;
}

void reportOutcome(Report& report, const Options& options, const Outcome& o) {
  const auto& l = o.latenciesUs;
  double throughput = o.seconds > 0 ? o.ok / o.seconds : 0;
  double memberCpu = 0;
  uint64_t peakRssKb = 0;
  std::string members;
  for (const auto& m : o.members) {
    memberCpu += m.cpuSeconds;
    peakRssKb = std::max(peakRssKb, m.peakRssKb);
    members += format(
        "%s{\"name\":\"%s\",\"pid\":%d,\"cpuSeconds\":%.3f,\"userSeconds\":%.2f,"
        "\"systemSeconds\":%.2f,\"peakRssKb\":%llu}",
        members.empty() ? "" : ",", m.name.c_str(), static_cast<int>(m.pid), m.cpuSeconds,
        m.userSeconds, m.systemSeconds, static_cast<unsigned long long>(m.peakRssKb));
  }
  double cpuPer1000 = o.ok > 0 && !o.members.empty() ? memberCpu / o.ok * 1000 : 0;
  report.json(format(
      "{\"kind\":\"workload\",\"workload\":\"%s\",\"clients\":%u,\"valueBytes\":%zu,"
      "\"seconds\":%.3f,\"ok\":%llu,\"failed\":%llu,\"opsPerSecond\":%.1f,\"p50Us\":%.1f,"
      "\"p90Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f,\"cpuSecondsPer1000\":%.4f,"
      "\"peakRssKb\":%llu,\"benchCpuSeconds\":%.3f,\"processes\":%u%s,\"members\":[%s]}",
      o.workload.c_str(), o.clients, options.valueBytes, o.seconds,
      static_cast<unsigned long long>(o.ok), static_cast<unsigned long long>(o.failed), throughput,
      percentile(l, 50), percentile(l, 90), percentile(l, 99), percentile(l, 99.9), cpuPer1000,
      static_cast<unsigned long long>(peakRssKb), o.benchCpuSeconds,
      o.workload == "watch" ? 1 : std::min(options.processes, o.clients),
      o.workload == "watch"
          ? format(",\"watchers\":%u,\"puts\":%llu,\"putsPerSecond\":%.1f", o.clients,
                   static_cast<unsigned long long>(o.puts), o.seconds > 0 ? o.puts / o.seconds : 0)
                .c_str()
          : "",
      members.c_str()));
  report.markdown(format("| %s | %u | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %s | %llu |\n",
                         o.workload.c_str(), o.clients, throughput, percentile(l, 50),
                         percentile(l, 90), percentile(l, 99), percentile(l, 99.9),
                         o.members.empty() ? "–" : format("%.3f", cpuPer1000).c_str(),
                         o.members.empty() ? "–" : format("%.1f", peakRssKb / 1024.0).c_str(),
                         static_cast<unsigned long long>(o.failed)));
  std::fprintf(stderr, "synod-bench: %s x%u: %.0f ops/s, p50 %.0f us, p99 %.0f us%s\n",
               o.workload.c_str(), o.clients, throughput, percentile(l, 50), percentile(l, 99),
               o.failed > 0
                   ? format(", %llu failed", static_cast<unsigned long long>(o.failed)).c_str()
                   : "");
  if (!o.firstError.empty()) std::fprintf(stderr, "  first error: %s\n", o.firstError.c_str());
}

constexpr double IDLE_SETTLE_SECONDS = 1.0;

// CPU % and RSS of each member over `seconds` without load, after IDLE_SETTLE_SECONDS.
void measureIdle(kj::AsyncIoContext& io, Report& report, const Options& options,
                 const std::vector<MemberProcess>& processes) {
  // The settle second lets the preload's tail finish (the applied state's last commit, the
  // leader's return to its idle heartbeat pace) so that the window sees only idleness.
  std::fprintf(stderr, "synod-bench: settling %.1f s, then idle for %.1f s\n", IDLE_SETTLE_SECONDS,
               options.idleSeconds);
  io.provider->getTimer()
      .afterDelay(static_cast<int64_t>(IDLE_SETTLE_SECONDS * 1000) * kj::MILLISECONDS)
      .wait(io.waitScope);
  std::vector<ProcessSample> before;
  for (const auto& p : processes)
    before.push_back(sampleProcess(p.pid));
  auto started = Clock::now();
  io.provider->getTimer()
      .afterDelay(static_cast<int64_t>(options.idleSeconds * 1000) * kj::MILLISECONDS)
      .wait(io.waitScope);
  double wall = since(started);
  std::string members, text;
  double maxCpu = 0;
  uint64_t maxRss = 0;
  for (size_t i = 0; i < processes.size(); ++i) {
    auto after = sampleProcess(processes[i].pid);
    double cpuPercent = (after.cpuSeconds - before[i].cpuSeconds) / wall * 100;
    maxCpu = std::max(maxCpu, cpuPercent);
    maxRss = std::max(maxRss, after.rssKb);
    members += format("%s{\"name\":\"%s\",\"pid\":%d,\"cpuPercent\":%.3f,\"rssKb\":%llu}",
                      members.empty() ? "" : ",", processes[i].name.c_str(),
                      static_cast<int>(processes[i].pid), cpuPercent,
                      static_cast<unsigned long long>(after.rssKb));
    text += format("%s%s %.2f %% / %.1f MB", text.empty() ? "" : ", ", processes[i].name.c_str(),
                   cpuPercent, after.rssKb / 1024.0);
  }
  report.json(
      format("{\"kind\":\"idle\",\"seconds\":%.2f,\"maxCpuPercent\":%.3f,\"maxRssKb\":%llu,"
             "\"members\":[%s]}",
             wall, maxCpu, static_cast<unsigned long long>(maxRss), members.c_str()));
  report.markdown(format("\nIdle over %.0f s (CPU %% / RSS): %s\n", wall, text.c_str()));
}

struct Floor {
  double lmdbCommitUs = 0;
  double tcpRoundTripUs = 0;
  double rpcRoundTripUs = 0;
  double memberCommitP50Us = 0;  // the leader's own report of its recent group commits
  double total() const { return lmdbCommitUs + tcpRoundTripUs + rpcRoundTripUs; }
};

// The floor of a durable replicated write from a local app: one Unix-socket RPC to the member (its
// health call, which does no work), one LMDB commit with fsync, one loopback TCP round trip.
Floor measureFloor(kj::AsyncIoContext& io, const Options& options, const std::string& socket) {
  std::fprintf(stderr, "synod-bench: measuring the floor (%u LMDB commits under %s)\n",
               options.floorCommits, options.floorDir.c_str());
  Floor floor;
  floor.lmdbCommitUs =
      lmdbCommitMedianUs(options.floorDir, options.floorCommits, options.valueBytes);
  floor.tcpRoundTripUs = tcpRoundTripMedianUs(2000);
  AsyncClient client(*io.provider, ClientOptions{socket, 5000, 1000});
  std::vector<double> latencies;
  for (int i = 0; i < 2000; ++i) {
    auto started = Clock::now();
    auto health = client.health().wait(io.waitScope);
    KJ_REQUIRE(health.ok(), "health call for the RPC floor failed", health.status.message);
    if (i >= 100) {  // the first calls connect and warm up
      latencies.push_back(
          std::chrono::duration<double, std::micro>(Clock::now() - started).count());
    }
  }
  floor.rpcRoundTripUs = median(latencies);
  auto status = client.status().wait(io.waitScope);
  if (status.ok()) floor.memberCommitP50Us = static_cast<double>(status->commitP50Us);
  return floor;
}

void reportFloor(Report& report, const Options& options, const Floor& floor,
                 const std::vector<Outcome>& outcomes) {
  double putUs = 0;
  for (const auto& o : outcomes) {
    if (o.workload == "put" && o.clients == 1) putUs = percentile(o.latenciesUs, 50);
  }
  double multiple = putUs > 0 ? putUs / floor.total() : 0;
  // The same with the leader's own recent commit latency as the commit term: a cross-check when
  // the scratch environment's commits and the daemon's differ on the same filesystem.
  double memberFloor = floor.memberCommitP50Us + floor.tcpRoundTripUs + floor.rpcRoundTripUs;
  double memberMultiple = putUs > 0 && floor.memberCommitP50Us > 0 ? putUs / memberFloor : 0;
  report.json(format(
      "{\"kind\":\"floor\",\"dir\":\"%s\",\"lmdbCommitUs\":%.1f,"
      "\"tcpRoundTripUs\":%.1f,\"rpcRoundTripUs\":%.1f,\"floorUs\":%.1f,"
      "\"putP50Us\":%.1f,\"putOverFloor\":%.2f,\"memberCommitP50Us\":%.0f,"
      "\"putOverMemberFloor\":%.2f}",
      options.floorDir.c_str(), floor.lmdbCommitUs, floor.tcpRoundTripUs, floor.rpcRoundTripUs,
      floor.total(), putUs, multiple, floor.memberCommitP50Us, memberMultiple));
  report.markdown(format(
      "\nFloor: LMDB commit %.0f µs + loopback TCP round trip %.0f µs + Unix-socket RPC %.0f µs "
      "= %.0f µs; single-client put p50 %.0f µs = %.2f × floor (with the leader's own group "
      "commits, p50 %.0f µs, as the commit term: %.2f × floor)\n",
      floor.lmdbCommitUs, floor.tcpRoundTripUs, floor.rpcRoundTripUs, floor.total(), putUs,
      multiple, floor.memberCommitP50Us, memberMultiple));
}

// --- running the group ------------------------------------------------------------------------

// The value of a top-level `name:` line of a member's YAML config.
std::string configValue(const std::string& config, const std::string& name) {
  std::ifstream in(config);
  if (!in) usage(("cannot read " + config).c_str());
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) != 0) continue;
    std::string value = line.substr(name.size() + 1);
    value.erase(0, value.find_first_not_of(" \t\""));
    value.erase(value.find_last_not_of(" \t\"") + 1);
    return value;
  }
  usage(("no " + name + ": line in " + config).c_str());
}

pid_t startDaemon(const std::string& synod, const std::string& config) {
  pid_t pid = fork();
  KJ_SYSCALL(pid);
  if (pid == 0) {
    std::string log = config + ".log";
    FILE* out = std::freopen(log.c_str(), "a", stderr);
    if (out == nullptr) _exit(127);
    dup2(STDERR_FILENO, STDOUT_FILENO);
    execl(synod.c_str(), synod.c_str(), "--config", config.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

// Waits for `predicate` with the loop running, polling every 10 ms, for at most `seconds`.
template <typename Predicate>
bool waitFor(kj::AsyncIoContext& io, double seconds, Predicate&& predicate) {
  auto end = Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < end) {
    if (predicate()) return true;
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  return false;
}

// The daemons of a group this tool runs: started from their configs, stopped (SIGTERM) and reaped
// when this goes.
class Group {
 public:
  Group(const Options& options) : options_(options) {
    for (const auto& config : options.configs) {
      sockets.push_back(configValue(config, "socket"));
      names.push_back(configValue(config, "node"));
      pids.push_back(startDaemon(options.synod, config));
    }
  }
  ~Group() {
    for (pid_t pid : pids)
      kill(pid, SIGTERM);
    for (pid_t pid : pids)
      waitpid(pid, nullptr, 0);
  }
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  void restart(size_t member) {
    waitpid(pids[member], nullptr, 0);
    pids[member] = startDaemon(options_.synod, options_.configs[member]);
  }

  std::vector<std::string> sockets;
  std::vector<std::string> names;
  std::vector<pid_t> pids;

 private:
  const Options& options_;
};

// --- failover ---------------------------------------------------------------------------------

// Rounds of: steady writes through the followers' members, stop the leader with `signal`, time
// until a write that started after the signal succeeds, restart the stopped member.
bool failoverRounds(kj::AsyncIoContext& io, const Options& options, Group& group, int signal,
                    std::vector<double>& stallsMs) {
  SynodSystem system(io, group.sockets);
  Options load = options;
  load.keys = 100;
  Clock::time_point far = Clock::now() + std::chrono::hours(24);
  const char* name = signal == SIGKILL ? "SIGKILL" : "SIGTERM";
  for (uint32_t round = 0; round < options.failoverRounds; ++round) {
    int leader = -1;
    if (!waitFor(io, 30, [&] { return (leader = system.leader(io.waitScope)) >= 0; })) {
      std::fprintf(stderr, "synod-bench: no leader before %s round %u\n", name, round + 1);
      return false;
    }
    // A fresh writer per member per round, so a writer stuck on the stopped member does not count.
    Outcome sink;
    std::vector<std::unique_ptr<Worker>> writers;
    kj::Vector<kj::Promise<void>> running;
    for (size_t i = 0; i < group.sockets.size(); ++i) {
      if (static_cast<int>(i) == leader) continue;
      writers.push_back(std::make_unique<Worker>(system.connect(i), load, "put", i, sink, far, 0));
      writers.back()->setRetryTimer(io.provider->getTimer());
      running.add(writers.back()->run().exclusiveJoin(
          io.provider->getTimer().afterDelay(60 * kj::SECONDS)));
    }
    waitFor(io, 0.3, [&] { return false; });  // steady state
    if (sink.ok == 0) std::fprintf(stderr, "synod-bench: no writes succeeded before the signal\n");
    auto signalledAt = Clock::now();
    kill(group.pids[leader], signal);
    // Writes are back when a write that started after the signal has succeeded.
    bool back = waitFor(io, 30, [&] { return sink.latestSuccessStart > signalledAt; });
    double stallMs = std::chrono::duration<double, std::milli>(Clock::now() - signalledAt).count();
    stallsMs.push_back(stallMs);
    std::fprintf(stderr, "synod-bench: %s round %u: leader %s, writes back after %.0f ms\n", name,
                 round + 1, group.names[leader].c_str(), stallMs);
    running = kj::Vector<kj::Promise<void>>();
    writers.clear();
    if (!back) {
      std::fprintf(stderr, "synod-bench: writes did not resume within 30 s\n");
      return false;
    }
    group.restart(leader);
    AsyncClient admin(*io.provider, ClientOptions{group.sockets[leader], 500, 500});
    waitFor(io, 10, [&] { return admin.status().wait(io.waitScope).ok(); });
  }
  return true;
}

int runFailover(kj::AsyncIoContext& io, const Options& options) {
  Group group(options);
  Report report(options, "synod");
  SynodSystem system(io, group.sockets);
  if (!waitFor(io, 30, [&] { return system.leader(io.waitScope) >= 0; })) {
    std::fprintf(stderr, "synod-bench: the group elected no leader within 30 s\n");
    return 1;
  }
  int status = 0;
  for (int signal : options.signals) {
    std::vector<double> stallsMs;
    if (!failoverRounds(io, options, group, signal, stallsMs)) status = 1;
    if (stallsMs.empty()) continue;
    double middle = median(stallsMs);
    const char* name = signal == SIGKILL ? "KILL" : "TERM";
    report.json(
        format("{\"kind\":\"failover\",\"failoverRounds\":%zu,\"signal\":\"%s\","
               "\"medianMs\":%.1f,\"worstMs\":%.1f}",
               stallsMs.size(), name, middle, stallsMs.back()));
    report.markdown(format("Failover after SIG%s, %zu rounds: median %.0f ms, worst %.0f ms\n",
                           name, stallsMs.size(), middle, stallsMs.back()));
  }
  report.finish();
  return status;
}

// --- the command line -------------------------------------------------------------------------

void usage(const char* problem) {
  if (problem) std::fprintf(stderr, "synod-bench: %s\n", problem);
  std::fprintf(
      stderr,
      "usage: synod-bench [TARGET] [--workload put,get-leader,get-follower,sget,txn,...]\n"
      "                   [--clients 1,8,64,256] [--seconds 5 | --ops N] [--value-bytes 100]\n"
      "                   [--keys 1000] [--locks 16] [--rate PUTS_PER_S] [--processes P]\n"
      "                   [--pid PID,...] [--idle-seconds S] [--floor DIR]\n"
      "                   [--floor-commits 200] [--json] [--json-file PATH]\n"
      "       synod-bench --failover ROUNDS --synod PATH --config FILE... [--signal KILL,TERM]\n"
      "TARGET is one of:\n"
      "  --socket PATH...           synod members already running (default $SYNOD_SOCKET)\n"
      "  --synod PATH --config FILE...  run a synod group here, one daemon per config, and\n"
      "                             sample the daemons' CPU and RSS\n"
      "  --etcd HOST:PORT,...       etcd members' client URLs, through the HTTP/JSON gateway\n"
      "Workloads: put; get-leader, get-follower (linearizable get at the leader's member, at the\n"
      "followers'); get (linearizable, spread); sget (serializable get); txn (compare value,\n"
      "put); lease (grant + revoke); lock (lock + unlock one of --locks names with the\n"
      "client's own lease); watch (synod only: CLIENTS watchers on one prefix over the members,\n"
      "one writer at the leader's member, closed-loop or --rate puts/s; ops/s = events\n"
      "delivered to all watchers, latency = put acknowledged to event). Clients are spread over\n"
      "the members, the leader's first. --processes P runs the clients in P processes (not\n"
      "watch) and merges their histograms. --pid names member processes to sample (CPU s per\n"
      "1,000 ops, peak RSS); --idle-seconds samples them idle first (after a 1 s settle). --floor "
      "DIR measures one\n"
      "LMDB commit in DIR, a loopback TCP round trip and a socket RPC (synod only).\n"
      "Failover: runs the group itself, writes steadily through the followers' members, stops\n"
      "the leader ROUNDS times per signal and reports how long writes stalled.\n"
      "Output: a markdown table on stdout, or JSON lines with --json; progress on stderr.\n");
  std::exit(2);
}

uint64_t parseNumber(const std::string& text, const char* what) {
  char* end = nullptr;
  unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') usage((std::string(what) + ": not a number: " + text).c_str());
  return value;
}

double parseSeconds(const std::string& text, const char* what, double min) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(value >= min && value <= 3600)) {
    usage((std::string(what) + " must be a number of seconds up to 3600: " + text).c_str());
  }
  return value;
}

std::vector<std::string> splitCommas(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) parts.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

void parseArgument(Options& options, const std::string& arg,
                   const std::function<std::string()>& next) {
  if (arg == "--socket") {
    options.sockets.push_back(next());
  } else if (arg == "--etcd") {
    for (const auto& e : splitCommas(next()))
      options.etcd.push_back(e);
  } else if (arg == "--workload") {
    options.workloads = splitCommas(next());
    for (const auto& w : options.workloads) {
      if (!contains(WORKLOADS, w)) usage(("unknown workload " + w).c_str());
    }
    if (options.workloads.empty()) usage("--workload needs at least one workload");
  } else if (arg == "--clients") {
    options.clients.clear();
    for (const auto& n : splitCommas(next())) {
      uint64_t count = parseNumber(n, "--clients");
      if (count < 1 || count > 4096) usage("--clients must be 1..4096");
      options.clients.push_back(static_cast<uint32_t>(count));
    }
    if (options.clients.empty()) usage("--clients needs at least one number");
  } else if (arg == "--seconds") {
    options.seconds = parseSeconds(next(), "--seconds", 0.001);
  } else if (arg == "--ops") {
    options.ops = parseNumber(next(), "--ops");
    if (options.ops < 1) usage("--ops must be at least 1");
  } else if (arg == "--value-bytes") {
    options.valueBytes = parseNumber(next(), "--value-bytes");
    if (options.valueBytes > (1 << 20)) usage("--value-bytes must be at most 1048576");
  } else if (arg == "--keys") {
    options.keys = static_cast<uint32_t>(parseNumber(next(), "--keys"));
    if (options.keys < 1) usage("--keys must be at least 1");
  } else if (arg == "--json") {
    options.json = true;
  } else if (arg == "--json-file") {
    options.jsonFile = next();
  } else if (arg == "--pid") {
    for (const auto& p : splitCommas(next())) {
      uint64_t pid = parseNumber(p, "--pid");
      if (pid < 1 || pid > 0x3fffffff) usage(("--pid: no such process id " + p).c_str());
      options.pids.push_back(static_cast<pid_t>(pid));
    }
  } else if (arg == "--idle-seconds") {
    options.idleSeconds = parseSeconds(next(), "--idle-seconds", 0);
  } else if (arg == "--floor") {
    options.floorDir = next();
  } else if (arg == "--floor-commits") {
    options.floorCommits = static_cast<uint32_t>(parseNumber(next(), "--floor-commits"));
    if (options.floorCommits < 1) usage("--floor-commits must be at least 1");
  } else if (arg == "--failover") {
    options.failoverRounds = static_cast<uint32_t>(parseNumber(next(), "--failover"));
  } else if (arg == "--synod") {
    options.synod = next();
  } else if (arg == "--config") {
    options.configs.push_back(next());
  } else if (arg == "--signal") {
    options.signals.clear();
    for (const auto& name : splitCommas(next())) {
      if (name == "KILL") {
        options.signals.push_back(SIGKILL);
      } else if (name == "TERM") {
        options.signals.push_back(SIGTERM);
      } else {
        usage("--signal must be KILL, TERM or KILL,TERM");
      }
    }
    if (options.signals.empty()) usage("--signal must be KILL, TERM or KILL,TERM");
  } else if (arg == "--locks") {
    options.locks = static_cast<uint32_t>(parseNumber(next(), "--locks"));
    if (options.locks < 1 || options.locks > 100000) usage("--locks must be 1..100000");
  } else if (arg == "--rate") {
    std::string text = next();
    char* end = nullptr;
    options.watchRate = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(options.watchRate >= 0 && options.watchRate <= 1e6)) {
      usage(("--rate must be a number of puts per second up to 1000000: " + text).c_str());
    }
  } else if (arg == "--processes") {
    uint64_t count = parseNumber(next(), "--processes");
    if (count < 1 || count > 64) usage("--processes must be 1..64");
    options.processes = static_cast<uint32_t>(count);
  } else if (arg == "--child") {
    options.child = true;
    options.childFirst = static_cast<uint32_t>(parseNumber(next(), "--child"));
  } else if (arg == "--child-order") {
    for (const auto& m : splitCommas(next()))
      options.childOrder.push_back(parseNumber(m, "--child-order"));
  } else if (arg == "--child-start") {
    options.childStartNs = static_cast<int64_t>(parseNumber(next(), "--child-start"));
  } else if (arg == "--help" || arg == "-h") {
    usage(nullptr);
  } else {
    usage(("unknown argument " + arg).c_str());
  }
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    parseArgument(options, arg, [&]() -> std::string {
      if (i + 1 >= argc) usage((arg + " needs a value").c_str());
      return argv[++i];
    });
  }
  if (options.child) {
    if (options.childOrder.empty() || options.workloads.size() != 1 ||
        options.clients.size() != 1 || options.workloads[0] == "watch") {
      usage("--child needs --child-order, one --workload other than watch and one --clients");
    }
    if (options.sockets.empty() == options.etcd.empty()) usage("--child needs --socket or --etcd");
    return options;
  }
  bool runGroup = !options.configs.empty() || !options.synod.empty();
  if (runGroup && (options.synod.empty() || options.configs.empty())) {
    usage("running a group needs --synod PATH and a --config FILE for each member");
  }
  if (options.failoverRounds > 0) {
    if (!runGroup || options.configs.size() < 3) {
      usage("--failover needs --synod PATH and --config FILE for each of at least 3 members");
    }
    return options;
  }
  int targets =
      (runGroup ? 1 : 0) + (options.sockets.empty() ? 0 : 1) + (options.etcd.empty() ? 0 : 1);
  if (targets > 1) usage("give one of --socket, --synod/--config and --etcd");
  if (!options.floorDir.empty() && !options.etcd.empty()) {
    usage("--floor measures synod's floor: not with --etcd");
  }
  if (targets == 0) options.sockets.push_back(defaultSocketPath());
  return options;
}

int runWorkloads(kj::AsyncIoContext& io, const Options& options) {
  std::optional<Group> group;
  std::vector<MemberProcess> processes;
  kj::Own<System> system;
  if (!options.etcd.empty()) {
    system = newEtcdSystem(io, options.etcd);
  } else if (!options.configs.empty()) {
    group.emplace(options);
    for (size_t i = 0; i < group->pids.size(); ++i)
      processes.push_back({group->names[i], group->pids[i]});
    system = kj::heap<SynodSystem>(io, group->sockets);
  } else {
    system = kj::heap<SynodSystem>(io, options.sockets);
  }
  for (pid_t pid : options.pids)
    processes.push_back({"pid " + std::to_string(pid), pid});
  Report report(options, system->name());
  // A group this tool started, or etcd, must elect a leader first; sockets given may be a subset
  // of a group without its leader, which is fine for every workload but get-leader/get-follower.
  if ((group || !options.etcd.empty()) &&
      !waitFor(io, 30, [&] { return system->leader(io.waitScope) >= 0; })) {
    std::fprintf(stderr, "synod-bench: no %s member says it leads after 30 s\n", system->name());
    return 1;
  }
  std::fprintf(stderr, "synod-bench: %s, %zu members; preloading %u keys\n", system->name(),
               system->members(), options.keys);
  preload(io, *system, options);
  if (options.idleSeconds > 0 && !processes.empty()) {
    measureIdle(io, report, options, processes);
  }
  // The floor first, next to the single-client put that runs first and under the same load.
  std::optional<Floor> floor;
  if (!options.floorDir.empty()) {
    int leader = system->leader(io.waitScope);
    const auto& sockets = group ? group->sockets : options.sockets;
    floor = measureFloor(io, options, sockets[leader < 0 ? 0 : leader]);
  }
  std::string limit = options.ops > 0
                          ? format("%llu operations", static_cast<unsigned long long>(options.ops))
                          : format("%.1f s", options.seconds);
  report.markdown(format("\n### %s: %zu members, %zu-byte values, %s per run\n\n", system->name(),
                         system->members(), options.valueBytes, limit.c_str()));
  report.markdown(
      "| workload | clients | ops/s | p50 µs | p90 µs | p99 µs | p99.9 µs | member CPU s / 1k ops "
      "| peak RSS MB | failed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<Outcome> outcomes;
  for (const auto& workload : options.workloads) {
    if (workload == "watch" && !options.etcd.empty()) {
      std::fprintf(stderr, "synod-bench: etcd: watch is synod-only here, skipped\n");
      continue;
    }
    for (uint32_t clients : options.clients) {
      std::fprintf(stderr, "synod-bench: %s %s with %u clients for %s\n", system->name(),
                   workload.c_str(), clients, limit.c_str());
      outcomes.push_back(runOne(io, *system, options, processes, workload, clients));
      reportOutcome(report, options, outcomes.back());
    }
  }
  if (floor) reportFloor(report, options, *floor, outcomes);
  report.finish();
  return 0;
}

int main(int argc, char** argv) {
  Options options = parse(argc, argv);
  auto io = kj::setupAsyncIo();
  int status = 1;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 status = options.child                ? runChild(io, options)
                          : options.failoverRounds > 0 ? runFailover(io, options)
                                                       : runWorkloads(io, options);
               })) {
    std::fprintf(stderr, "synod-bench: %s\n", e->getDescription().cStr());
    return 1;
  }
  return status;
}

}  // namespace
}  // namespace synod::clients::bench

int main(int argc, char** argv) {
  return synod::clients::bench::main(argc, argv);
}
