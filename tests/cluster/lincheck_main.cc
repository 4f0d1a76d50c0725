// synod-lincheck: checks a history recorded by the real-process tests for per-key
// linearizability, with the simulator's checker (Wing & Gong search, Porcupine-style).
//
// Input, one operation per line:   KEY INVOKE RESPONSE OP VALUE
//   KEY       a word; registers are checked one key at a time (linearizability is compositional)
//   INVOKE    when the client sent the request (any clock shared by all clients, e.g. ns)
//   RESPONSE  when it learned the outcome, or '-' if it never did (a write that may or may not
//             have happened; a read without an answer constrains nothing)
//   OP        w (write) or r (read)
//   VALUE     the value written (unique per key, never 0) or read (0 = the key was absent)
// Every key starts absent (value 0).
//
// Exit status: 0 linearizable, 1 not linearizable (the key and why are printed), 2 bad input or
// the search gave up.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/sim/linearizability.h"

namespace {

struct Line {
  std::string key;
  uint64_t invoke = 0;
  bool answered = false;
  uint64_t response = 0;
  bool write = false;
  uint64_t value = 0;
};

int fail(const std::string& why) {
  std::fprintf(stderr, "synod-lincheck: %s\n", why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return fail("usage: synod-lincheck HISTORY-FILE");
  std::ifstream in(argv[1]);
  if (!in) return fail(std::string("cannot read ") + argv[1]);
  std::vector<Line> lines;
  std::string text;
  for (size_t number = 1; std::getline(in, text); ++number) {
    if (text.empty() || text[0] == '#') continue;
    std::istringstream fields(text);
    Line line;
    std::string response, op;
    if (!(fields >> line.key >> line.invoke >> response >> op >> line.value) ||
        (op != "w" && op != "r")) {
      return fail(std::string(argv[1]) + ":" + std::to_string(number) + ": bad line: " + text);
    }
    line.write = op == "w";
    line.answered = response != "-";
    if (line.answered) {
      try {
        line.response = std::stoull(response);
      } catch (const std::exception&) {
        return fail(std::string(argv[1]) + ":" + std::to_string(number) + ": bad response time");
      }
      if (line.response < line.invoke) {
        return fail(std::string(argv[1]) + ":" + std::to_string(number) +
                    ": response before invoke");
      }
    }
    lines.push_back(line);
  }

  // The checker wants distinct logical instants: rank every time stamp, invokes before responses
  // at equal times (which only makes operations more concurrent, never less).
  std::vector<std::pair<uint64_t, int>> stamps;  // (time, 0 = invoke / 1 = response)
  for (const auto& line : lines) {
    stamps.emplace_back(line.invoke, 0);
    if (line.answered) stamps.emplace_back(line.response, 1);
  }
  std::sort(stamps.begin(), stamps.end());
  auto rank = [&](uint64_t time, int kind) {
    return static_cast<uint64_t>(
        std::lower_bound(stamps.begin(), stamps.end(), std::make_pair(time, kind)) -
        stamps.begin() + 1);
  };

  std::map<std::string, std::vector<synod::sim::RegisterOp>> byKey;
  for (const auto& line : lines) {
    synod::sim::RegisterOp op;
    op.invoke = rank(line.invoke, 0) * 2;
    op.response = line.answered ? rank(line.response, 1) * 2 + 1 : synod::sim::RegisterOp::UNKNOWN;
    op.write = line.write;
    op.value = line.value;
    byKey[line.key].push_back(op);
  }
  size_t operations = 0;
  for (auto& [key, ops] : byKey) {
    operations += ops.size();
    auto result = synod::sim::checkRegister(ops, 0);
    if (result.verdict == synod::sim::LinearizabilityResult::NOT_LINEARIZABLE) {
      std::printf("key %s: NOT linearizable: %s\n", key.c_str(), result.detail.c_str());
      return 1;
    }
    if (result.verdict == synod::sim::LinearizabilityResult::INCONCLUSIVE) {
      return fail("key " + key + ": search gave up: " + result.detail);
    }
  }
  std::printf("linearizable: %zu operations on %zu keys\n", operations, byKey.size());
  return 0;
}
