#include "tests/sim/linearizability.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace synod::sim {

namespace {

std::string describe(const RegisterOp& op) {
  std::string text = op.write ? "write(" : "read()=";
  text += std::to_string(op.value);
  if (op.write) text += ")";
  text += " [" + std::to_string(op.invoke) + ", ";
  text += op.response == RegisterOp::UNKNOWN ? "?" : std::to_string(op.response);
  return text + "]";
}

// A search state: every op at or above `next` is not linearized yet; below it, all are except
// the few in `skipped` (sorted). Long-running operations stay in `skipped` while the many short
// ones around them are linearized, which keeps states small.
struct State {
  uint32_t next = 0;
  std::vector<uint32_t> skipped;
  uint64_t value = 0;

  // Search states are remembered by a 64-bit hash: a collision could only prune a path and
  // report a false NOT_LINEARIZABLE (never hide a real one); at a few million states the odds are
  // below one in a million.
  uint64_t hash() const {
    uint64_t h = mix(next) ^ mix(value + 0x9e3779b97f4a7c15ULL);
    for (uint32_t e : skipped)
      h = mix(h ^ e);
    return h;
  }
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

struct Frame {
  State state;
  std::vector<uint32_t> candidates;
  size_t tried = 0;
};

class Search {
 public:
  Search(const std::vector<RegisterOp>& ops, uint64_t maxStates) : ops_(ops), max_(maxStates) {}

  LinearizabilityResult run(uint64_t initial) {
    LinearizabilityResult result;
    State start;
    start.value = initial;
    std::vector<Frame> stack;
    push(stack, std::move(start));
    uint32_t deepest = 0;
    while (!stack.empty()) {
      Frame& top = stack.back();
      if (top.state.next == ops_.size() && top.state.skipped.empty()) {
        result.statesExplored = seen_.size();
        return result;
      }
      deepest =
          std::max(deepest, top.state.skipped.empty() ? top.state.next : top.state.skipped.front());
      if (top.tried == top.candidates.size()) {
        stack.pop_back();
        continue;
      }
      const uint32_t index = top.candidates[top.tried++];
      const RegisterOp& op = ops_[index];
      if (!op.write && op.value != top.state.value) continue;
      State next = advance(top.state, index);
      if (!seen_.insert(next.hash()).second) continue;
      if (seen_.size() > max_) {
        result.verdict = LinearizabilityResult::INCONCLUSIVE;
        result.detail = "gave up after " + std::to_string(max_) + " search states";
        result.statesExplored = seen_.size();
        return result;
      }
      push(stack, std::move(next));
    }
    result.verdict = LinearizabilityResult::NOT_LINEARIZABLE;
    result.detail = "no linearization gets past " + describe(ops_[deepest]) + " (operation " +
                    std::to_string(deepest) + " of " + std::to_string(ops_.size()) +
                    " by invocation)";
    result.statesExplored = seen_.size();
    return result;
  }

 private:
  // Ops that may be linearized next: not yet linearized, and invoked before every unlinearized
  // op's response (an op that returned must precede every op invoked after that return).
  void push(std::vector<Frame>& stack, State state) {
    Frame frame;
    uint64_t minResponse = RegisterOp::UNKNOWN;
    for (uint32_t i : state.skipped)
      minResponse = std::min(minResponse, ops_[i].response);
    for (uint32_t i : state.skipped) {
      if (ops_[i].invoke < minResponse) frame.candidates.push_back(i);
    }
    for (uint32_t i = state.next; i < ops_.size(); ++i) {
      if (ops_[i].invoke > minResponse) break;
      frame.candidates.push_back(i);
      minResponse = std::min(minResponse, ops_[i].response);
    }
    // Reads that fit the current value first (they never make things worse), then writes by
    // their order hint, then the op that must take effect soonest.
    std::sort(frame.candidates.begin(), frame.candidates.end(), [&](uint32_t a, uint32_t b) {
      const bool fitsA = !ops_[a].write && ops_[a].value == state.value;
      const bool fitsB = !ops_[b].write && ops_[b].value == state.value;
      if (fitsA != fitsB) return fitsA;
      if (ops_[a].write && ops_[b].write && ops_[a].orderHint != ops_[b].orderHint) {
        return ops_[a].orderHint - 1 < ops_[b].orderHint - 1;  // 0 (no hint) sorts last
      }
      return ops_[a].response < ops_[b].response;
    });
    frame.state = std::move(state);
    stack.push_back(std::move(frame));
  }

  State advance(const State& from, uint32_t index) const {
    State next;
    next.value = ops_[index].write ? ops_[index].value : from.value;
    next.skipped = from.skipped;
    next.next = from.next;
    if (index < from.next) {
      next.skipped.erase(std::lower_bound(next.skipped.begin(), next.skipped.end(), index));
    } else {
      for (uint32_t i = from.next; i < index; ++i)
        next.skipped.push_back(i);
      next.next = index + 1;
    }
    return next;
  }

  const std::vector<RegisterOp>& ops_;
  uint64_t max_;
  std::unordered_set<uint64_t> seen_;
};

}  // namespace

LinearizabilityResult checkRegister(std::vector<RegisterOp> ops, uint64_t initial,
                                    uint64_t maxStates) {
  // A read that never returned constrains nothing.
  std::erase_if(
      ops, [](const RegisterOp& op) { return !op.write && op.response == RegisterOp::UNKNOWN; });
  std::unordered_map<uint64_t, uint64_t> firstObserved;  // value -> earliest read response
  for (const RegisterOp& op : ops) {
    if (op.write) continue;
    auto [it, inserted] = firstObserved.emplace(op.value, op.response);
    if (!inserted) it->second = std::min(it->second, op.response);
  }
  std::unordered_set<uint64_t> written;
  for (RegisterOp& op : ops) {
    if (!op.write) continue;
    written.insert(op.value);
    if (op.response != RegisterOp::UNKNOWN) continue;
    // A write with an unknown outcome that some read saw must be linearized before that read
    // returned; one that nobody saw may be taken as never having happened.
    auto it = firstObserved.find(op.value);
    if (it != firstObserved.end()) op.response = it->second;
  }
  std::erase_if(ops, [](const RegisterOp& op) { return op.response == RegisterOp::UNKNOWN; });
  for (const RegisterOp& op : ops) {
    if (!op.write && op.value != initial && !written.count(op.value)) {
      LinearizabilityResult result;
      result.verdict = LinearizabilityResult::NOT_LINEARIZABLE;
      result.detail = describe(op) + " returned a value no write wrote";
      return result;
    }
  }
  std::sort(ops.begin(), ops.end(),
            [](const RegisterOp& a, const RegisterOp& b) { return a.invoke < b.invoke; });
  return Search(ops, maxStates).run(initial);
}

}  // namespace synod::sim
