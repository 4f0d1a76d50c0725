// Linearizability of one register's history (Wing & Gong search with memoization, as Porcupine
// does it). The simulator checks each key separately: linearizability is compositional per object.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace synod::sim {

// One client operation on a register whose writes store unique values.
struct RegisterOp {
  static constexpr uint64_t UNKNOWN = std::numeric_limits<uint64_t>::max();

  uint64_t invoke = 0;
  // When the client learned the outcome; UNKNOWN if it never did (the write may or may not have
  // happened; a read without a response constrains nothing).
  uint64_t response = UNKNOWN;
  bool write = false;
  uint64_t value = 0;  // written, or returned by the read
  // Writes only: where the write took effect as far as the system under test says (the
  // simulator: its position in the decided log). Only orders the search, so a correct history is
  // linearized without backtracking; the verdict never depends on it. 0 = none.
  uint64_t orderHint = 0;
};

struct LinearizabilityResult {
  enum Verdict { LINEARIZABLE, NOT_LINEARIZABLE, INCONCLUSIVE };
  Verdict verdict = LINEARIZABLE;
  std::string detail;  // why not / why inconclusive
  uint64_t statesExplored = 0;
};

// `initial` is the register's value before the history. Invoke and response times must be
// distinct logical instants (the simulator uses 2 * step and 2 * step + 1). The search gives up
// with INCONCLUSIVE after `maxStates` distinct search states.
LinearizabilityResult checkRegister(std::vector<RegisterOp> ops, uint64_t initial,
                                    uint64_t maxStates = 20'000'000);

}  // namespace synod::sim
