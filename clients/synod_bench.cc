// synod-bench: a load generator for synod. Closed-loop clients (each waits for its answer before
// sending the next request), spread round-robin over the members' sockets, each on its own
// connection, all on one KJ event loop. Reports throughput and latency percentiles as a table on
// stdout and, with --json, one JSON object per workload.
//
//   synod-bench --socket PATH [--socket PATH...] [--workload put|get|sget|all]
//               [--clients N[,N...]] [--seconds S] [--value-bytes B] [--keys K] [--json]
#include <kj/async-io.h>
#include <kj/debug.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "clients/synod_client.h"

namespace synod::clients {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<std::string> sockets;
  std::vector<std::string> workloads{"put", "get"};
  std::vector<uint32_t> clients{1, 64};
  double seconds = 5;
  size_t valueBytes = 100;
  uint32_t keys = 1000;
  bool json = false;
  // Failover mode: this many rounds of killing the leader of a group this tool runs itself.
  uint32_t failoverRounds = 0;
  std::string synod;                 // the daemon binary
  std::vector<std::string> configs;  // one per member
  int killSignal = SIGKILL;
};

struct Outcome {
  std::string workload;
  uint32_t clients = 0;
  double seconds = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  std::vector<double> latenciesUs;  // of successful operations
  std::string firstError;
  Clock::time_point latestSuccessStart;  // when the latest-started successful operation began
};

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p / 100.0 * sorted.size()));
  return sorted[index];
}

// One closed-loop client: runs operations back to back until `end`.
class Worker {
 public:
  Worker(kj::AsyncIoContext& io, std::string socket, const Options& options, std::string workload,
         uint32_t index, Outcome& outcome, Clock::time_point end)
      : client_(*io.provider, ClientOptions{socket, 5000, 1000}),
        options_(options),
        workload_(std::move(workload)),
        index_(index),
        outcome_(outcome),
        end_(end),
        value_(options.valueBytes, 'v') {}

  kj::Promise<void> run() {
    if (Clock::now() >= end_) return kj::READY_NOW;
    std::string key = "bench/" + std::to_string((index_ * 7919 + counter_++) % options_.keys);
    auto started = Clock::now();
    return operation(key).then([this, started](Status status) {
      if (status.ok() || status.code == Code::NOT_FOUND) {
        ++outcome_.ok;
        outcome_.latestSuccessStart = std::max(outcome_.latestSuccessStart, started);
        outcome_.latenciesUs.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - started).count());
      } else {
        ++outcome_.failed;
        if (outcome_.firstError.empty()) {
          outcome_.firstError = std::string(codeName(status.code)) + ": " + status.message;
        }
      }
      return run();
    });
  }

  // Writes every key once so reads find something.
  kj::Promise<void> preload(uint32_t from, uint32_t to) {
    if (from >= to) return kj::READY_NOW;
    return client_.put("bench/" + std::to_string(from), value_).then([this, from, to](auto) {
      return preload(from + 1, to);
    });
  }

 private:
  kj::Promise<Status> operation(const std::string& key) {
    if (workload_ == "put") {
      return client_.put(key, value_).then([](Result<Empty> r) { return r.status; });
    }
    ReadOptions read;
    read.serializable = workload_ == "sget";
    return client_.get(key, read).then([](Result<KeyValue> r) { return r.status; });
  }

  AsyncClient client_;
  const Options& options_;
  std::string workload_;
  uint32_t index_;
  Outcome& outcome_;
  Clock::time_point end_;
  std::string value_;
  uint64_t counter_ = 0;
};

Outcome runOne(kj::AsyncIoContext& io, const Options& options, const std::string& workload,
               uint32_t clients) {
  Outcome outcome;
  outcome.workload = workload;
  outcome.clients = clients;
  auto started = Clock::now();
  auto end = started + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options.seconds));
  std::vector<std::unique_ptr<Worker>> workers;
  kj::Vector<kj::Promise<void>> running;
  for (uint32_t i = 0; i < clients; ++i) {
    workers.push_back(std::make_unique<Worker>(io, options.sockets[i % options.sockets.size()],
                                               options, workload, i, outcome, end));
    running.add(workers.back()->run());
  }
  kj::joinPromises(running.releaseAsArray()).wait(io.waitScope);
  outcome.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return outcome;
}

void preload(kj::AsyncIoContext& io, const Options& options) {
  Outcome ignored;
  Worker worker(io, options.sockets[0], options, "put", 0, ignored, Clock::now());
  worker.preload(0, options.keys).wait(io.waitScope);
}

void report(const Outcome& o, bool json) {
  std::vector<double> sorted = o.latenciesUs;
  std::sort(sorted.begin(), sorted.end());
  double throughput = o.seconds > 0 ? o.ok / o.seconds : 0;
  if (json) {
    std::printf(
        "{\"workload\":\"%s\",\"clients\":%u,\"seconds\":%.3f,\"ok\":%llu,\"failed\":%llu,"
        "\"opsPerSecond\":%.1f,\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f}\n",
        o.workload.c_str(), o.clients, o.seconds, static_cast<unsigned long long>(o.ok),
        static_cast<unsigned long long>(o.failed), throughput, percentile(sorted, 50),
        percentile(sorted, 90), percentile(sorted, 99), percentile(sorted, 99.9));
  } else {
    std::printf("%-8s %7u %12.0f %10.1f %10.1f %10.1f %10.1f %8llu\n", o.workload.c_str(),
                o.clients, throughput, percentile(sorted, 50), percentile(sorted, 90),
                percentile(sorted, 99), percentile(sorted, 99.9),
                static_cast<unsigned long long>(o.failed));
  }
  if (!o.firstError.empty()) std::fprintf(stderr, "  first error: %s\n", o.firstError.c_str());
  std::fflush(stdout);
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

[[noreturn]] void usage(const char* problem) {
  if (problem) std::fprintf(stderr, "synod-bench: %s\n", problem);
  std::fprintf(
      stderr,
      "usage: synod-bench --socket PATH [--socket PATH...] [--workload put,get,sget]\n"
      "                   [--clients 1,64] [--seconds 5] [--value-bytes 100]\n"
      "                   [--keys 1000] [--json]\n"
      "       synod-bench --failover ROUNDS --synod PATH --config FILE... [--signal KILL|TERM]\n"
      "Workloads: put; get (linearizable); sget (serializable get). Clients are spread\n"
      "round-robin over the sockets given (one per member).\n"
      "Failover: runs the group itself (one daemon per --config), writes steadily through\n"
      "every member, kills the leader ROUNDS times and reports how long writes stalled.\n");
  std::exit(2);
}

uint64_t parseNumber(const std::string& text, const char* what) {
  char* end = nullptr;
  unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') usage((std::string(what) + ": not a number: " + text).c_str());
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage((arg + " needs a value").c_str());
      return argv[++i];
    };
    if (arg == "--socket") {
      options.sockets.push_back(next());
    } else if (arg == "--workload") {
      options.workloads = splitCommas(next());
      for (const auto& w : options.workloads) {
        if (w != "put" && w != "get" && w != "sget") usage(("unknown workload " + w).c_str());
      }
    } else if (arg == "--clients") {
      options.clients.clear();
      for (const auto& n : splitCommas(next())) {
        uint64_t count = parseNumber(n, "--clients");
        if (count < 1 || count > 4096) usage("--clients must be 1..4096");
        options.clients.push_back(static_cast<uint32_t>(count));
      }
    } else if (arg == "--seconds") {
      options.seconds = std::atof(next().c_str());
      if (!(options.seconds > 0 && options.seconds <= 3600))
        usage("--seconds must be in (0, 3600]");
    } else if (arg == "--value-bytes") {
      options.valueBytes = parseNumber(next(), "--value-bytes");
    } else if (arg == "--keys") {
      options.keys = static_cast<uint32_t>(parseNumber(next(), "--keys"));
      if (options.keys < 1) usage("--keys must be at least 1");
    } else if (arg == "--json") {
      options.json = true;
    } else if (arg == "--failover") {
      options.failoverRounds = static_cast<uint32_t>(parseNumber(next(), "--failover"));
    } else if (arg == "--synod") {
      options.synod = next();
    } else if (arg == "--config") {
      options.configs.push_back(next());
    } else if (arg == "--signal") {
      std::string name = next();
      if (name == "KILL") {
        options.killSignal = SIGKILL;
      } else if (name == "TERM") {
        options.killSignal = SIGTERM;
      } else {
        usage("--signal must be KILL or TERM");
      }
    } else if (arg == "--help" || arg == "-h") {
      usage(nullptr);
    } else {
      usage(("unknown argument " + arg).c_str());
    }
  }
  if (options.failoverRounds > 0) {
    if (options.synod.empty() || options.configs.size() < 3) {
      usage("--failover needs --synod PATH and --config FILE for each of at least 3 members");
    }
    return options;
  }
  if (options.sockets.empty()) options.sockets.push_back(defaultSocketPath());
  return options;
}

// --- failover -----------------------------------------------------------------------------

// The `socket:` of a member's YAML config (the tool runs the daemons; it only needs to reach them).
std::string socketOf(const std::string& config) {
  std::ifstream in(config);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("socket:", 0) != 0) continue;
    std::string value = line.substr(7);
    value.erase(0, value.find_first_not_of(" \t\""));
    value.erase(value.find_last_not_of(" \t\"") + 1);
    return value;
  }
  usage(("no socket: line in " + config).c_str());
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

int runFailover(kj::AsyncIoContext& io, const Options& options) {
  std::vector<std::string> sockets;
  std::vector<pid_t> pids;
  for (const auto& config : options.configs) {
    sockets.push_back(socketOf(config));
    pids.push_back(startDaemon(options.synod, config));
  }
  std::vector<std::unique_ptr<AsyncClient>> admins;
  for (const auto& socket : sockets) {
    admins.push_back(std::make_unique<AsyncClient>(*io.provider, ClientOptions{socket, 500, 500}));
  }
  // The member that says it leads.
  auto leaderIndex = [&]() -> int {
    for (size_t i = 0; i < admins.size(); ++i) {
      auto status = admins[i]->status().wait(io.waitScope);
      if (status.ok() && status->role == "leader") return static_cast<int>(i);
    }
    return -1;
  };

  // Steady writes through every member; remember when each success completed.
  Options load = options;
  load.sockets = sockets;
  load.keys = 100;
  Clock::time_point far = Clock::now() + std::chrono::hours(24);
  Outcome sink;
  std::vector<std::unique_ptr<Worker>> writers;
  kj::Vector<kj::Promise<void>> running;
  std::vector<double> stallsMs;
  int status = 0;
  if (!waitFor(io, 30, [&] { return leaderIndex() >= 0; })) {
    std::fprintf(stderr, "synod-bench: the group elected no leader within 30 s\n");
    status = 1;
  }
  for (uint32_t round = 0; status == 0 && round < options.failoverRounds; ++round) {
    int leader = -1;
    if (!waitFor(io, 30, [&] { return (leader = leaderIndex()) >= 0; })) {
      std::fprintf(stderr, "synod-bench: no leader before round %u\n", round + 1);
      status = 1;
      break;
    }
    // A fresh writer per member per round, so a writer stuck on the killed member does not count.
    sink = Outcome{};
    writers.clear();
    running = kj::Vector<kj::Promise<void>>();
    for (size_t i = 0; i < sockets.size(); ++i) {
      if (static_cast<int>(i) == leader) continue;
      writers.push_back(std::make_unique<Worker>(io, sockets[i], load, "put", i, sink, far));
      running.add(writers.back()->run().exclusiveJoin(
          io.provider->getTimer().afterDelay(60 * kj::SECONDS)));
    }
    waitFor(io, 0.3, [&] { return false; });  // steady state
    if (sink.ok == 0) std::fprintf(stderr, "synod-bench: no writes succeeded before the kill\n");
    auto killedAt = Clock::now();
    kill(pids[leader], options.killSignal);
    // Writes are back when a write that started after the kill has succeeded.
    bool back = waitFor(io, 30, [&] { return sink.latestSuccessStart > killedAt; });
    double stallMs = std::chrono::duration<double, std::milli>(Clock::now() - killedAt).count();
    if (!back) {
      std::fprintf(stderr, "synod-bench: writes did not resume within 30 s of round %u\n",
                   round + 1);
      status = 1;
    }
    stallsMs.push_back(stallMs);
    std::fprintf(stderr, "synod-bench: round %u: killed leader %s, writes back after %.0f ms\n",
                 round + 1, options.configs[leader].c_str(), stallMs);
    waitpid(pids[leader], nullptr, 0);
    writers.clear();
    running = kj::Vector<kj::Promise<void>>();
    pids[leader] = startDaemon(options.synod, options.configs[leader]);
    waitFor(io, 10, [&] { return admins[leader]->status().wait(io.waitScope).ok(); });
  }
  for (pid_t pid : pids)
    kill(pid, SIGTERM);
  for (pid_t pid : pids)
    waitpid(pid, nullptr, 0);
  std::sort(stallsMs.begin(), stallsMs.end());
  if (!stallsMs.empty()) {
    double median = stallsMs[stallsMs.size() / 2];
    if (options.json) {
      std::printf("{\"failoverRounds\":%zu,\"signal\":\"%s\",\"medianMs\":%.1f,\"worstMs\":%.1f}\n",
                  stallsMs.size(), options.killSignal == SIGKILL ? "KILL" : "TERM", median,
                  stallsMs.back());
    } else {
      std::printf("failover (%s) over %zu rounds: median %.0f ms, worst %.0f ms\n",
                  options.killSignal == SIGKILL ? "SIGKILL" : "SIGTERM", stallsMs.size(), median,
                  stallsMs.back());
    }
  }
  return status;
}

int main(int argc, char** argv) {
  Options options = parse(argc, argv);
  auto io = kj::setupAsyncIo();
  if (options.failoverRounds > 0) return runFailover(io, options);
  std::fprintf(stderr, "synod-bench: preloading %u keys\n", options.keys);
  preload(io, options);
  if (!options.json) {
    std::printf("%-8s %7s %12s %10s %10s %10s %10s %8s\n", "workload", "clients", "ops/s", "p50_us",
                "p90_us", "p99_us", "p99.9_us", "failed");
  }
  for (const auto& workload : options.workloads) {
    for (uint32_t clients : options.clients) {
      std::fprintf(stderr, "synod-bench: %s with %u clients for %.1f s\n", workload.c_str(),
                   clients, options.seconds);
      report(runOne(io, options, workload, clients), options.json);
    }
  }
  return 0;
}

}  // namespace
}  // namespace synod::clients

int main(int argc, char** argv) {
  return synod::clients::main(argc, argv);
}
