// synod-bench: a load generator for synod. Closed-loop clients (each waits for its answer before
// sending the next request), spread round-robin over the members' sockets, each on its own
// connection, all on one KJ event loop. Reports throughput and latency percentiles as a table on
// stdout and, with --json, one JSON object per workload.
//
//   synod-bench --socket PATH [--socket PATH...] [--workload put|get|sget|all]
//               [--clients N[,N...]] [--seconds S] [--value-bytes B] [--keys K] [--json]
#include <kj/async-io.h>
#include <kj/debug.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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
};

struct Outcome {
  std::string workload;
  uint32_t clients = 0;
  double seconds = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  std::vector<double> latenciesUs;  // of successful operations
  std::string firstError;
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
  std::fprintf(stderr,
               "usage: synod-bench --socket PATH [--socket PATH...] [--workload put,get,sget]\n"
               "                   [--clients 1,64] [--seconds 5] [--value-bytes 100]\n"
               "                   [--keys 1000] [--json]\n"
               "Workloads: put; get (linearizable); sget (serializable get). Clients are spread\n"
               "round-robin over the sockets given (one per member).\n");
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
    } else if (arg == "--help" || arg == "-h") {
      usage(nullptr);
    } else {
      usage(("unknown argument " + arg).c_str());
    }
  }
  if (options.sockets.empty()) options.sockets.push_back(defaultSocketPath());
  return options;
}

int main(int argc, char** argv) {
  Options options = parse(argc, argv);
  auto io = kj::setupAsyncIo();
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
