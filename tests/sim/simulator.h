// The deterministic simulator: K Multi-Paxos cores (election/replica.h) with in-memory stores
// (storage/memory_store.h), a simulated network, clocks and disks, clients with retries, and fault
// injection, all on one thread and driven by one seed, so a failing seed replays exactly.
//
// A step is one event: a message delivered or dropped at arrival, a timer tick, a disk write
// completing, a client request or retry, or a fault. Invariants are checked after every step;
// read linearizability per key is checked once more at the end with a Wing & Gong search.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace synod::sim {

struct RunOptions {
  uint64_t seed = 1;
  uint64_t steps = 100000;
  uint32_t nodes = 3;
  // Empty, or a rule breaker: acceptor-ignores-promise, leader-picks-any-value,
  // crash-drops-synced-promise, lease-not-shortened, lease-read-ignores-promised-slots,
  // heartbeat-decides-other-ballot, handoff-keeps-lease, lease-no-drift-margin,
  // lease-renewal-ignored, lease-checkpoint-short.
  std::string breaker;
  // Apps on every member grant, keep alive, revoke and abandon leases; the members renew and
  // expire them (election/lease_clock.h) and the lease invariants are checked.
  bool leases = false;
  uint32_t traceSteps = 40;  // steps printed on a violation
  bool quiet = false;        // no parameter and statistics lines
  bool verbose = false;      // also print role and lease changes as they happen
};

struct RunResult {
  uint64_t steps = 0;
  uint64_t violations = 0;  // 0 or 1: the run stops at the first
  std::string invariant;    // the violated invariant's name
  double wallSeconds = 0;
};

// Names accepted in RunOptions::breaker.
std::vector<std::string> breakerNames();

// Runs one simulation, writing its report to `out`. Throws std::invalid_argument for bad options.
RunResult runSimulation(const RunOptions& options, std::ostream& out);

}  // namespace synod::sim
