// synod-sim: runs the deterministic simulator. One seed replays a run exactly.
//
//   synod-sim --seed S --steps N --nodes K [--break RULE [--expect-violation]]
//   synod-sim --seeds 1,2,3 ...         several seeds in turn
//   synod-sim --random-seed ...         a seed from the clock, printed first
//   synod-sim --leases ...              with the lease workload and its invariants
//   --expect-invariant A,B              with --expect-violation: only a violation of A or B counts
//
// The last line is always "steps=N violations=V". Exit status: 0 when no invariant was violated
// (with --expect-violation: when one was), 1 otherwise, 2 for a usage error.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/sim/simulator.h"

namespace {

const char* USAGE =
    "usage: synod-sim [--seed S | --seeds S1,S2,... | --random-seed] [--steps N] [--nodes K]\n"
    "                 [--break RULE [--expect-violation]] [--trace N] [--quiet] [--verbose]\n"
    "                 [--leases] [--expect-invariant NAME,...]\n"
    "rules: ";

uint64_t parseNumber(const std::string& flag, const std::string& text) {
  size_t used = 0;
  uint64_t value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) {
    throw std::invalid_argument(flag + " needs a non-negative integer, got '" + text + "'");
  }
  return value;
}

int usage(const std::string& problem) {
  std::cerr << "synod-sim: " << problem << "\n" << USAGE;
  for (const std::string& name : synod::sim::breakerNames())
    std::cerr << name << " ";
  std::cerr << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  synod::sim::RunOptions options;
  std::vector<uint64_t> seeds;
  bool expectViolation = false;
  std::vector<std::string> expectedInvariants;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
        return argv[++i];
      };
      if (flag == "--seed") {
        seeds = {parseNumber(flag, value())};
      } else if (flag == "--seeds") {
        seeds.clear();
        std::stringstream list(value());
        std::string item;
        while (std::getline(list, item, ','))
          seeds.push_back(parseNumber(flag, item));
        if (seeds.empty()) throw std::invalid_argument("--seeds needs at least one seed");
      } else if (flag == "--random-seed") {
        seeds = {static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count() %
                                       1000000000)};
        std::cout << "random seed: " << seeds[0] << std::endl;
      } else if (flag == "--steps") {
        options.steps = parseNumber(flag, value());
      } else if (flag == "--nodes") {
        options.nodes = static_cast<uint32_t>(parseNumber(flag, value()));
      } else if (flag == "--break") {
        options.breaker = value();
      } else if (flag == "--expect-violation") {
        expectViolation = true;
      } else if (flag == "--trace") {
        options.traceSteps = static_cast<uint32_t>(parseNumber(flag, value()));
      } else if (flag == "--expect-invariant") {
        std::stringstream list(value());
        std::string item;
        while (std::getline(list, item, ','))
          expectedInvariants.push_back(item);
      } else if (flag == "--leases") {
        options.leases = true;
      } else if (flag == "--quiet") {
        options.quiet = true;
      } else if (flag == "--verbose") {
        options.verbose = true;
      } else if (flag == "--help" || flag == "-h") {
        usage("help");
        return 0;
      } else {
        throw std::invalid_argument("unknown argument '" + flag + "'");
      }
    }
    if (seeds.empty()) seeds = {options.seed};
    if (!expectedInvariants.empty() && !expectViolation) {
      throw std::invalid_argument("--expect-invariant needs --expect-violation");
    }
  } catch (const std::invalid_argument& e) {
    return usage(e.what());
  }

  uint64_t steps = 0, violations = 0;
  for (uint64_t seed : seeds) {
    options.seed = seed;
    synod::sim::RunResult result;
    try {
      result = synod::sim::runSimulation(options, std::cout);
    } catch (const std::invalid_argument& e) {
      return usage(e.what());
    }
    steps += result.steps;
    violations += result.violations;
    if (result.violations > 0 && !expectedInvariants.empty() &&
        std::find(expectedInvariants.begin(), expectedInvariants.end(), result.invariant) ==
            expectedInvariants.end()) {
      std::cout << "rule breaker " << options.breaker << " violated " << result.invariant
                << " with seed " << seed << ", not an expected invariant; next seed\n";
      violations -= result.violations;
      continue;
    }
    if (result.violations > 0 && expectViolation) {
      std::cout << "caught: rule breaker " << options.breaker << " violated " << result.invariant
                << " with seed " << seed << " after " << result.steps << " steps\n";
      break;
    }
  }
  std::cout << "steps=" << steps << " violations=" << violations << std::endl;
  if (expectViolation) return violations > 0 ? 0 : 1;
  return violations == 0 ? 0 : 1;
}
