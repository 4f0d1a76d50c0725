#include "tests/sim/linearizability.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "election/prng.h"

namespace synod::sim {
namespace {

RegisterOp w(uint64_t value, uint64_t invoke, uint64_t response) {
  return RegisterOp{invoke, response, true, value};
}
RegisterOp r(uint64_t value, uint64_t invoke, uint64_t response) {
  return RegisterOp{invoke, response, false, value};
}
constexpr uint64_t UNKNOWN = RegisterOp::UNKNOWN;

LinearizabilityResult::Verdict verdict(std::vector<RegisterOp> ops) {
  return checkRegister(std::move(ops), 0).verdict;
}

TEST_CASE("sequential histories") {
  CHECK(verdict({w(1, 0, 1), r(1, 2, 3), w(2, 4, 5), r(2, 6, 7)}) ==
        LinearizabilityResult::LINEARIZABLE);
  CHECK(verdict({r(0, 0, 1)}) == LinearizabilityResult::LINEARIZABLE);
  // A stale read: 2 was acknowledged before the read began.
  CHECK(verdict({w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)}) == LinearizabilityResult::NOT_LINEARIZABLE);
  // A read of the future: the write began after the read returned.
  CHECK(verdict({r(1, 0, 1), w(1, 2, 3)}) == LinearizabilityResult::NOT_LINEARIZABLE);
  CHECK(verdict({r(9, 0, 1)}) == LinearizabilityResult::NOT_LINEARIZABLE);
}

TEST_CASE("concurrent operations may take effect in either order") {
  CHECK(verdict({w(1, 0, 10), r(1, 1, 2)}) == LinearizabilityResult::LINEARIZABLE);
  CHECK(verdict({w(1, 0, 10), r(0, 1, 2)}) == LinearizabilityResult::LINEARIZABLE);
  CHECK(verdict({w(1, 0, 10), w(2, 1, 11), r(2, 12, 13), r(2, 14, 15)}) ==
        LinearizabilityResult::LINEARIZABLE);
  CHECK(verdict({w(1, 0, 10), w(2, 1, 11), r(1, 12, 13)}) == LinearizabilityResult::LINEARIZABLE);
  // Once a later read saw 1 after 2, 2 cannot come back.
  CHECK(verdict({w(1, 0, 10), w(2, 1, 11), r(1, 12, 13), r(2, 14, 15)}) ==
        LinearizabilityResult::NOT_LINEARIZABLE);
  // Two readers disagreeing on the order in overlapping time is fine, not in sequence.
  CHECK(verdict({w(1, 0, 100), r(1, 10, 20), r(0, 30, 40)}) ==
        LinearizabilityResult::NOT_LINEARIZABLE);
}

TEST_CASE("writes with unknown outcomes may or may not have happened") {
  CHECK(verdict({w(5, 0, UNKNOWN), r(0, 10, 11)}) == LinearizabilityResult::LINEARIZABLE);
  CHECK(verdict({w(5, 0, UNKNOWN), r(5, 10, 11)}) == LinearizabilityResult::LINEARIZABLE);
  // Seen once, it happened: it cannot be undone later.
  CHECK(verdict({w(5, 0, UNKNOWN), r(5, 10, 11), r(0, 12, 13)}) ==
        LinearizabilityResult::NOT_LINEARIZABLE);
  // A read without a response constrains nothing.
  CHECK(verdict({w(1, 0, 1), r(7, 2, UNKNOWN)}) == LinearizabilityResult::LINEARIZABLE);
}

TEST_CASE("order hints only order the search, never change the verdict") {
  auto hinted = [](RegisterOp op, uint64_t hint) {
    op.orderHint = hint;
    return op;
  };
  // Hints claim 1 took effect before 2, but the reads show 2 then 1 overwriting it: still fine.
  CHECK(checkRegister({hinted(w(1, 0, 10), 1), hinted(w(2, 1, 11), 2), r(2, 2, 3), r(1, 12, 13)}, 0)
            .verdict == LinearizabilityResult::LINEARIZABLE);
  // And a stale read stays stale whatever the hints say.
  CHECK(checkRegister({hinted(w(1, 0, 1), 2), hinted(w(2, 2, 3), 1), r(1, 4, 5)}, 0).verdict ==
        LinearizabilityResult::NOT_LINEARIZABLE);
}

TEST_CASE("a long history with several concurrent clients is checked quickly") {
  election::Prng prng(3);
  // Clients that each do one op at a time; a single "server" applies each op at a random point
  // inside its interval, so the history is linearizable by construction.
  struct Pending {
    RegisterOp op;
    uint64_t effectAt;
  };
  std::vector<RegisterOp> ops;
  uint64_t value = 0, nextValue = 1;
  std::vector<Pending> pending;
  uint64_t clock = 0;
  for (int step = 0; step < 40000; ++step) {
    clock += 2;
    // Apply effects that are due, in time order.
    std::sort(pending.begin(), pending.end(),
              [](const Pending& a, const Pending& b) { return a.effectAt < b.effectAt; });
    while (!pending.empty() && pending.front().effectAt <= clock) {
      Pending p = pending.front();
      pending.erase(pending.begin());
      if (p.op.write) {
        value = p.op.value;
      } else {
        p.op.value = value;
      }
      p.op.response = clock + 1;
      ops.push_back(p.op);
    }
    if (pending.size() < 6) {
      RegisterOp op;
      op.invoke = clock;
      op.write = prng.chance(0.5);
      if (op.write) op.value = nextValue++;
      pending.push_back({op, clock + 2 * prng.uniform(1, 20)});
    }
  }
  auto result = checkRegister(ops, 0);
  CHECK(result.verdict == LinearizabilityResult::LINEARIZABLE);
  MESSAGE("states explored: " << result.statesExplored << " for " << ops.size() << " ops");
  // Corrupt one read deep inside: it must be caught.
  for (size_t i = ops.size() / 2; i < ops.size(); ++i) {
    if (!ops[i].write && ops[i].value > 200) {
      ops[i].value -= 100;  // long overwritten
      break;
    }
  }
  CHECK(checkRegister(ops, 0).verdict == LinearizabilityResult::NOT_LINEARIZABLE);
}

}  // namespace
}  // namespace synod::sim
