#include "clients/cli.h"

#include <algorithm>
#include <cstdio>
#include <istream>
#include <iterator>
#include <ostream>
#include <utility>

#include "clients/watch_cli.h"

namespace synod::clients {

namespace {

// ---------------------------------------------------------------------------------------------
// Parsing

struct OptionSpec {
  std::string_view name;
  bool takesValue;
  bool repeatable;
};

struct CommandSpec {
  std::string_view name;
  std::string_view usage;
  std::vector<OptionSpec> options;
  size_t minArgs;
  size_t maxArgs;
};

const std::vector<CommandSpec>& commandSpecs() {
  static const std::vector<CommandSpec> specs = {
      {"get",
       "get KEY [--serializable] [--rev REV]",
       {{"--serializable", false, false}, {"--rev", true, false}},
       1,
       1},
      {"put", "put KEY VALUE [--lease ID]", {{"--lease", true, false}}, 2, 2},
      {"del",
       "del KEY [--prefix | --range-end END | --from-key]",
       {{"--prefix", false, false}, {"--range-end", true, false}, {"--from-key", false, false}},
       1,
       1},
      {"list",
       "list [PREFIX] [--limit N] [--start-after KEY] [--serializable] [--all] [--rev REV]",
       {{"--limit", true, false},
        {"--start-after", true, false},
        {"--serializable", false, false},
        {"--all", false, false},
        {"--rev", true, false}},
       0,
       1},
      {"txn",
       "txn [--if COMPARE]... [--then OP]... [--else OP]...",
       {{"--if", true, true}, {"--then", true, true}, {"--else", true, true}},
       0,
       0},
      {"status", "status", {}, 0, 0},
      {"members", "members", {}, 0, 0},
      {"transfer-leader", "transfer-leader [NAME]", {}, 0, 1},
      {"health", "health", {}, 0, 0},
      {"lease",
       "lease grant TTL_MS [--lock-delay MS] | lease list | lease info ID | lease revoke ID | "
       "lease keepalive ID",
       {{"--lock-delay", true, false}, {"--serializable", false, false}},
       1,
       2},
      {"leader", "leader NAME [--serializable]", {{"--serializable", false, false}}, 1, 1},
      {"check-fence",
       "check-fence NAME FENCE [--serializable]",
       {{"--serializable", false, false}},
       2,
       2},
      {"observe", "observe NAME [--count N]", {{"--count", true, false}}, 1, 1},
      {"lock",
       "lock NAME [--ttl MS] [--timeout-ms MS] [--kill-after MS] -- CMD [ARGS...]",
       {{"--ttl", true, false}, {"--timeout-ms", true, false}, {"--kill-after", true, false}},
       2,
       SIZE_MAX},
      {"elect",
       "elect NAME [--value V] [--ttl MS] [--timeout-ms MS] [--kill-after MS] -- CMD [ARGS...]",
       {{"--value", true, false},
        {"--ttl", true, false},
        {"--timeout-ms", true, false},
        {"--kill-after", true, false}},
       2,
       SIZE_MAX},
      {"shell", "shell", {}, 0, 0},
      {"watch",
       "watch PREFIX [--key] [--from REV] [--prev]",
       {{"--key", false, false}, {"--from", true, false}, {"--prev", false, false}},
       1,
       1},
      {"compact", "compact REV", {}, 1, 1},
      {"help", "help", {}, 0, 1},
      {"version", "version", {}, 0, 0},
  };
  return specs;
}

const CommandSpec* findCommand(std::string_view name) {
  for (const auto& spec : commandSpecs()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const OptionSpec* findOption(const CommandSpec& spec, std::string_view name) {
  for (const auto& option : spec.options) {
    if (option.name == name) return &option;
  }
  return nullptr;
}

std::string usageOf(const CommandSpec& spec) {
  return "usage: synodctl " + std::string(spec.usage);
}

const char GENERAL_USAGE[] =
    "usage: synodctl [--socket PATH] [--json] [--timeout MS] COMMAND ARGS...\n"
    "commands: get put del list txn status members transfer-leader health lease leader\n"
    "          check-fence observe lock elect watch compact shell help version";

constexpr uint64_t MAX_TIMEOUT_MS = 24 * 3600 * 1000;

/// Strict decimal: digits only, no sign or spaces, no overflow past `max`.
std::optional<uint64_t> parseNumber(std::string_view text, uint64_t max) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (max - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

bool startsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

/// The words of one command after the generic pass: positional arguments and options in order.
struct SortedWords {
  std::vector<std::string> positional;
  std::optional<size_t> dashes;  // how many positional words came before "--"
  std::vector<std::pair<std::string, std::string>> options;  // name, value ("" for flags)

  bool has(std::string_view name) const {
    for (const auto& option : options) {
      if (option.first == name) return true;
    }
    return false;
  }
  std::string valueOf(std::string_view name) const {
    for (const auto& option : options) {
      if (option.first == name) return option.second;
    }
    return {};
  }
};

using ParsedInvocation = Parsed<Invocation>;

ParsedInvocation fail(std::string error, const CommandSpec* spec) {
  return ParsedInvocation::failure(std::move(error), spec ? usageOf(*spec) : GENERAL_USAGE);
}

bool validLockName(const std::string& name) {
  return !name.empty() && name.size() <= MAX_LOCK_NAME_BYTES;
}

std::string lockNameError(std::string_view command, const std::string& name) {
  return std::string(command) + ": NAME must be 1 to " + std::to_string(MAX_LOCK_NAME_BYTES) +
         " bytes, got " + std::to_string(name.size());
}

/// A positive number of milliseconds for `option`, at most `max`.
std::optional<uint64_t> millisOption(const SortedWords& words, std::string_view option,
                                     uint64_t max, bool zeroOk, std::string& error) {
  if (!words.has(option)) return std::nullopt;
  auto value = parseNumber(words.valueOf(option), max);
  if (!value || (!zeroOk && *value == 0)) {
    error = std::string(option) + " needs milliseconds from " + (zeroOk ? "0" : "1") + " to " +
            std::to_string(max) + ", got '" + displayText(words.valueOf(option)) + "'";
  }
  return value;
}

ParsedInvocation buildLease(const CommandSpec& spec, const SortedWords& words,
                            Invocation invocation) {
  const auto& args = words.positional;
  LeaseCommand command;
  const std::string& action = args[0];
  auto needArgs = [&](size_t count, const char* form) -> std::optional<ParsedInvocation> {
    if (args.size() != count) return fail("lease " + action + ": expected " + form, &spec);
    return std::nullopt;
  };
  if (action == "grant") {
    if (auto error = needArgs(2, "TTL_MS")) return *error;
    auto ttl = parseNumber(args[1], UINT64_MAX);
    if (!ttl || *ttl == 0) {
      return fail("lease grant: TTL_MS must be a number of milliseconds above 0, got '" +
                      displayText(args[1]) + "'",
                  &spec);
    }
    command.action = LeaseCommand::Action::GRANT;
    command.ttlMs = *ttl;
    std::string error;
    if (auto delay = millisOption(words, "--lock-delay", INT32_MAX, true, error)) {
      if (!error.empty()) return fail("lease grant: " + error, &spec);
      command.lockDelayMs = static_cast<int32_t>(*delay);
    }
  } else if (action == "list") {
    if (auto error = needArgs(1, "no ID")) return *error;
    command.action = LeaseCommand::Action::LIST;
  } else if (action == "info" || action == "revoke" || action == "keepalive") {
    if (auto error = needArgs(2, "ID")) return *error;
    auto id = parseNumber(args[1], UINT64_MAX);
    if (!id || *id == 0) {
      return fail("lease " + action + ": ID must be a lease id (a number above 0), got '" +
                      displayText(args[1]) + "'",
                  &spec);
    }
    command.id = *id;
    command.action = action == "info"     ? LeaseCommand::Action::INFO
                     : action == "revoke" ? LeaseCommand::Action::REVOKE
                                          : LeaseCommand::Action::KEEPALIVE;
  } else {
    return fail("lease: unknown action '" + displayText(action) +
                    "': use grant, list, info, revoke or keepalive",
                &spec);
  }
  if (words.has("--lock-delay") && command.action != LeaseCommand::Action::GRANT)
    return fail("lease " + action + ": --lock-delay is for grant only", &spec);
  command.serializable = words.has("--serializable");
  if (command.serializable && command.action != LeaseCommand::Action::LIST &&
      command.action != LeaseCommand::Action::INFO) {
    return fail("lease " + action + ": --serializable is for list and info only", &spec);
  }
  invocation.command = command;
  ParsedInvocation parsed;
  parsed.value = std::move(invocation);
  return parsed;
}

ParsedInvocation buildHold(const CommandSpec& spec, const SortedWords& words,
                           Invocation invocation) {
  std::string command(spec.name);
  if (!words.dashes || *words.dashes != 1 || words.positional.size() < 2) {
    return fail(command + ": expected NAME -- CMD [ARGS...]", &spec);
  }
  HoldCommand hold;
  hold.election = spec.name == "elect";
  hold.name = words.positional[0];
  if (!validLockName(hold.name)) return fail(lockNameError(command, hold.name), &spec);
  if (hold.name.find('\0') != std::string::npos) {
    return fail(command + ": NAME contains a NUL byte, which cannot be passed to CMD in " +
                    (hold.election ? "SYNOD_ELECTION" : "SYNOD_LOCK"),
                &spec);
  }
  hold.argv.assign(words.positional.begin() + 1, words.positional.end());
  hold.value = words.valueOf("--value");
  std::string error;
  if (auto ttl = millisOption(words, "--ttl", MAX_TIMEOUT_MS, false, error)) hold.ttlMs = *ttl;
  if (auto wait = millisOption(words, "--timeout-ms", MAX_TIMEOUT_MS, true, error))
    hold.waitTimeoutMs = static_cast<uint32_t>(*wait);
  if (auto kill = millisOption(words, "--kill-after", MAX_TIMEOUT_MS, true, error))
    hold.killAfterMs = static_cast<uint32_t>(*kill);
  if (!error.empty()) return fail(command + ": " + error, &spec);
  if (hold.stopMarginMs() * 2 >= hold.ttlMs) {
    return fail(command + ": --kill-after " + std::to_string(hold.killAfterMs) +
                    " ms is too long for a lease of " + std::to_string(hold.ttlMs) +
                    " ms: CMD is stopped --kill-after + TTL/10 before the lease could end, "
                    "which must be less than half the TTL (raise --ttl or lower --kill-after)",
                &spec);
  }
  invocation.command = std::move(hold);
  ParsedInvocation parsed;
  parsed.value = std::move(invocation);
  return parsed;
}

/// Builds the command of `spec` from its sorted words; `invocation.global` is already set.
ParsedInvocation buildCommand(const CommandSpec& spec, const SortedWords& words,
                              Invocation invocation) {
  const auto& args = words.positional;
  std::string_view name = spec.name;
  // --rev / --from / compact: a revision, 1 or more.
  std::optional<uint64_t> revision;
  for (const char* option : {"--rev", "--from"}) {
    if (!words.has(option)) continue;
    revision = parseNumber(words.valueOf(option), UINT64_MAX);
    if (!revision || *revision == 0) {
      return fail(std::string(name) + ": " + option + " needs a revision of 1 or more, got '" +
                      displayText(words.valueOf(option)) + "'",
                  &spec);
    }
  }
  if (name == "get") {
    invocation.command = GetCommand{args[0], words.has("--serializable"), revision.value_or(0)};
  } else if (name == "put") {
    PutCommand command{args[0], args[1], 0};
    if (words.has("--lease")) {
      auto lease = parseNumber(words.valueOf("--lease"), UINT64_MAX);
      if (!lease || *lease == 0) {
        return fail("put: --lease needs a lease ID (a number above 0), got '" +
                        displayText(words.valueOf("--lease")) + "'",
                    &spec);
      }
      command.lease = *lease;
    }
    invocation.command = std::move(command);
  } else if (name == "lease") {
    return buildLease(spec, words, std::move(invocation));
  } else if (name == "leader") {
    if (!validLockName(args[0])) return fail(lockNameError("leader", args[0]), &spec);
    invocation.command = LeaderCommand{args[0], words.has("--serializable")};
  } else if (name == "check-fence") {
    if (!validLockName(args[0])) return fail(lockNameError("check-fence", args[0]), &spec);
    auto fence = parseNumber(args[1], UINT64_MAX);
    if (!fence) {
      return fail("check-fence: FENCE must be a number, got '" + displayText(args[1]) + "'", &spec);
    }
    invocation.command = CheckFenceCommand{args[0], *fence, words.has("--serializable")};
  } else if (name == "observe") {
    if (!validLockName(args[0])) return fail(lockNameError("observe", args[0]), &spec);
    ObserveCommand command{args[0], 0};
    if (words.has("--count")) {
      auto count = parseNumber(words.valueOf("--count"), UINT64_MAX);
      if (!count) {
        return fail(
            "observe: --count needs a number, got '" + displayText(words.valueOf("--count")) + "'",
            &spec);
      }
      command.count = *count;
    }
    invocation.command = std::move(command);
  } else if (name == "lock" || name == "elect") {
    return buildHold(spec, words, std::move(invocation));
  } else if (name == "del") {
    int modes = words.has("--prefix") + words.has("--range-end") + words.has("--from-key");
    if (modes > 1) return fail("del: choose one of --prefix, --range-end, --from-key", &spec);
    DelCommand command{args[0], {}};
    if (words.has("--prefix")) command.rangeEnd = prefixRangeEnd(args[0]);
    if (words.has("--from-key")) command.rangeEnd = fromKeyRangeEnd();
    if (words.has("--range-end")) {
      command.rangeEnd = words.valueOf("--range-end");
      if (command.rangeEnd.empty()) {
        return fail("del: --range-end needs a non-empty END (--from-key selects every key >= KEY)",
                    &spec);
      }
    }
    invocation.command = std::move(command);
  } else if (name == "list") {
    ListCommand command;
    if (!args.empty()) command.prefix = args[0];
    if (words.has("--limit")) {
      auto limit = parseNumber(words.valueOf("--limit"), UINT32_MAX);
      if (!limit) {
        return fail("list: --limit needs a number from 0 to 4294967295, got '" +
                        displayText(words.valueOf("--limit")) + "'",
                    &spec);
      }
      command.limit = static_cast<uint32_t>(*limit);
    }
    command.startAfter = words.valueOf("--start-after");
    command.serializable = words.has("--serializable");
    command.all = words.has("--all");
    command.revision = revision.value_or(0);
    invocation.command = std::move(command);
  } else if (name == "txn") {
    TxnCommand command;
    for (const auto& [option, text] : words.options) {
      if (option == "--if") {
        auto compare = parseCompare(text);
        if (!compare.ok())
          return fail("txn: --if '" + displayText(text) + "': " + compare.error, &spec);
        command.txn.compares.push_back(std::move(*compare.value));
      } else {
        auto op = parseTxnOp(text);
        if (!op.ok())
          return fail("txn: " + option + " '" + displayText(text) + "': " + op.error, &spec);
        (option == "--then" ? command.txn.success : command.txn.failure)
            .push_back(std::move(*op.value));
      }
    }
    if (words.options.empty()) return fail("txn: give at least one --if, --then or --else", &spec);
    invocation.command = std::move(command);
  } else if (name == "status") {
    invocation.command = StatusCommand{};
  } else if (name == "members") {
    invocation.command = MembersCommand{};
  } else if (name == "transfer-leader") {
    TransferLeaderCommand command;
    if (!args.empty()) {
      if (args[0].empty()) return fail("transfer-leader: empty member name", &spec);
      command.target = args[0];
    }
    invocation.command = std::move(command);
  } else if (name == "health") {
    invocation.command = HealthCommand{};
  } else if (name == "shell") {
    invocation.command = ShellCommand{};
  } else if (name == "watch") {
    if (args[0].empty() && words.has("--key")) return fail("watch: --key needs a KEY", &spec);
    invocation.command =
        WatchCommand{args[0], !words.has("--key"), revision.value_or(0), words.has("--prev")};
  } else if (name == "compact") {
    auto compactTo = parseNumber(args[0], UINT64_MAX);
    if (!compactTo || *compactTo == 0) {
      return fail(
          "compact: REV must be a revision of 1 or more, got '" + displayText(args[0]) + "'",
          &spec);
    }
    invocation.command = CompactCommand{*compactTo};
  } else if (name == "help") {
    invocation.command = HelpCommand{};
  } else {
    invocation.command = VersionCommand{};
  }
  ParsedInvocation parsed;
  parsed.value = std::move(invocation);
  return parsed;
}

}  // namespace

int exitCodeFor(Code code) {
  switch (code) {
    case Code::OK:
      return EXIT_OK;
    case Code::NOT_FOUND:
    case Code::COMPARE_FAILED:
    case Code::NO_SPACE:
      return EXIT_REFUSED;
    case Code::INVALID_ARGUMENT:
      return EXIT_USAGE;
    case Code::UNAVAILABLE:
      return EXIT_UNAVAILABLE;
    case Code::NO_QUORUM:
    case Code::TIMEOUT:
    case Code::INTERNAL:
      return EXIT_UNKNOWN;
  }
  return EXIT_UNKNOWN;
}

Parsed<Invocation> parseInvocation(const std::vector<std::string>& args, ParseMode mode,
                                   const GlobalOptions& defaults) {
  Invocation invocation;
  invocation.global = defaults;
  const CommandSpec* spec = nullptr;
  SortedWords words;
  bool help = false, version = false, optionsEnded = false;

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (optionsEnded) {
      words.positional.push_back(word);
      continue;
    }
    if (word == "--") {
      if (spec == nullptr) return fail("'--' must come after the command", nullptr);
      optionsEnded = true;
      words.dashes = words.positional.size();
      continue;
    }
    if (spec == nullptr && word == "-h") {
      help = true;
      continue;
    }
    bool isOption = startsWith(word, "--") || (spec == nullptr && startsWith(word, "-"));
    if (!isOption) {
      if (spec != nullptr) {
        words.positional.push_back(word);
        continue;
      }
      spec = findCommand(word);
      if (spec == nullptr) return fail("unknown command '" + displayText(word) + "'", nullptr);
      continue;
    }

    size_t equals = word.find('=');
    std::string name = word.substr(0, equals);
    std::optional<std::string> inlineValue;
    if (equals != std::string::npos) inlineValue = word.substr(equals + 1);
    auto takeValue = [&]() -> std::optional<std::string> {
      if (inlineValue) return inlineValue;
      if (i + 1 < args.size()) return args[++i];
      return std::nullopt;
    };
    auto flagOnly = [&]() { return !inlineValue.has_value(); };

    if (name == "--help" || name == "--version") {
      if (!flagOnly()) return fail(name + " takes no value", spec);
      (name == "--help" ? help : version) = true;
    } else if (name == "--json") {
      if (!flagOnly()) return fail("--json takes no value", spec);
      invocation.global.json = true;
    } else if (name == "--socket") {
      if (mode == ParseMode::SHELL_LINE) {
        return fail("--socket cannot change within a shell session", spec);
      }
      auto path = takeValue();
      if (!path || path->empty()) return fail("--socket needs a PATH", spec);
      invocation.global.socketPath = *path;
    } else if (name == "--timeout") {
      auto text = takeValue();
      if (!text) return fail("--timeout needs a number of milliseconds", spec);
      auto timeout = parseNumber(*text, MAX_TIMEOUT_MS);
      if (!timeout || *timeout == 0) {
        return fail("--timeout needs milliseconds from 1 to " + std::to_string(MAX_TIMEOUT_MS) +
                        ", got '" + displayText(*text) + "'",
                    spec);
      }
      invocation.global.timeoutMs = static_cast<uint32_t>(*timeout);
    } else if (const OptionSpec* option = spec ? findOption(*spec, name) : nullptr) {
      if (!option->repeatable && words.has(name)) return fail(name + " given twice", spec);
      if (option->takesValue) {
        auto value = takeValue();
        if (!value) return fail(name + " needs a value", spec);
        words.options.emplace_back(name, *value);
      } else {
        if (!flagOnly()) return fail(name + " takes no value", spec);
        words.options.emplace_back(name, "");
      }
    } else if (spec != nullptr) {
      return fail("unknown option " + displayText(name) + " for '" + std::string(spec->name) +
                      "' (put -- before an argument that starts with --)",
                  spec);
    } else {
      return fail("unknown option " + displayText(name), nullptr);
    }
  }

  if (help || (spec != nullptr && spec->name == "help")) {
    invocation.command = HelpCommand{};
  } else if (version || (spec != nullptr && spec->name == "version")) {
    invocation.command = VersionCommand{};
  } else if (spec == nullptr) {
    return fail("missing command", nullptr);
  } else if (words.positional.size() < spec->minArgs || words.positional.size() > spec->maxArgs) {
    std::string expected = spec->minArgs == spec->maxArgs ? std::to_string(spec->minArgs)
                                                          : std::to_string(spec->minArgs) + " or " +
                                                                std::to_string(spec->maxArgs);
    return fail(std::string(spec->name) + ": expected " + expected + " argument" +
                    (spec->minArgs == 1 && spec->maxArgs == 1 ? "" : "s") + ", got " +
                    std::to_string(words.positional.size()),
                spec);
  } else if (mode == ParseMode::SHELL_LINE && spec->name == "shell") {
    return fail("'shell' cannot run inside a shell session", spec);
  } else if (mode == ParseMode::SHELL_LINE && (spec->name == "lock" || spec->name == "elect")) {
    return fail("'" + std::string(spec->name) + "' cannot run inside a shell session", spec);
  } else {
    return buildCommand(*spec, words, std::move(invocation));
  }
  ParsedInvocation parsed;
  parsed.value = std::move(invocation);
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// The txn grammar

namespace {

void skipBlanks(std::string_view text, size_t& pos) {
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t'))
    ++pos;
}

std::optional<Compare::Target> targetNamed(std::string_view name) {
  std::string folded;
  for (char c : name) {
    if (c == '_') continue;
    folded += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  if (folded == "value") return Compare::Target::VALUE;
  if (folded == "version") return Compare::Target::VERSION;
  if (folded == "createrevision") return Compare::Target::CREATE_REVISION;
  if (folded == "modrevision") return Compare::Target::MOD_REVISION;
  return std::nullopt;
}

}  // namespace

Parsed<Compare> parseCompare(std::string_view text) {
  using P = Parsed<Compare>;
  const char* form = "expected TARGET(KEY) OP OPERAND, e.g. value(k) = v";
  Compare compare;
  size_t pos = 0;
  skipBlanks(text, pos);
  size_t nameStart = pos;
  while (pos < text.size() && ((text[pos] >= 'a' && text[pos] <= 'z') ||
                               (text[pos] >= 'A' && text[pos] <= 'Z') || text[pos] == '_')) {
    ++pos;
  }
  std::string_view name = text.substr(nameStart, pos - nameStart);
  if (name.empty()) return P::failure(form);
  auto target = targetNamed(name);
  if (!target) {
    return P::failure("unknown target '" + std::string(name) +
                      "': use value, version, createRevision or modRevision");
  }
  compare.target = *target;

  skipBlanks(text, pos);
  if (pos >= text.size() || text[pos] != '(')
    return P::failure("expected '(' after " + std::string(name));
  ++pos;
  skipBlanks(text, pos);
  std::string error;
  if (!readShellWord(text, pos, ")", compare.key, error)) {
    return P::failure(error.empty() ? "missing KEY in " + std::string(name) + "(KEY)" : error);
  }
  skipBlanks(text, pos);
  if (pos >= text.size() || text[pos] != ')') {
    return P::failure("expected ')' after the key (quote a key containing spaces or parentheses)");
  }
  ++pos;

  skipBlanks(text, pos);
  std::string_view rest = text.substr(pos);
  if (startsWith(rest, "==")) {
    compare.op = Compare::Op::EQUAL;
    pos += 2;
  } else if (startsWith(rest, "!=")) {
    compare.op = Compare::Op::NOT_EQUAL;
    pos += 2;
  } else if (startsWith(rest, "<=") || startsWith(rest, ">=")) {
    return P::failure("operator " + std::string(rest.substr(0, 2)) +
                      " is not supported: use =, !=, < or >");
  } else if (startsWith(rest, "=")) {
    compare.op = Compare::Op::EQUAL;
    ++pos;
  } else if (startsWith(rest, "<")) {
    compare.op = Compare::Op::LESS;
    ++pos;
  } else if (startsWith(rest, ">")) {
    compare.op = Compare::Op::GREATER;
    ++pos;
  } else {
    return P::failure("expected an operator (=, !=, < or >) after " + std::string(name) + "(" +
                      displayText(compare.key) + ")");
  }

  skipBlanks(text, pos);
  std::string operand;
  if (!readShellWord(text, pos, {}, operand, error)) {
    return P::failure(error.empty() ? std::string("missing OPERAND after the operator") : error);
  }
  skipBlanks(text, pos);
  if (pos < text.size()) {
    return P::failure("unexpected text after the operand: '" + displayText(text.substr(pos)) +
                      "' (quote an operand containing spaces)");
  }
  if (compare.target == Compare::Target::VALUE) {
    compare.value = std::move(operand);
  } else {
    auto number = parseNumber(operand, UINT64_MAX);
    if (!number) {
      return P::failure(std::string(name) + " compares with a number, got '" +
                        displayText(operand) + "'");
    }
    compare.number = *number;
  }
  P parsed;
  parsed.value = std::move(compare);
  return parsed;
}

Parsed<TxnOp> parseTxnOp(std::string_view text) {
  using P = Parsed<TxnOp>;
  auto split = splitShellWords(text);
  if (!split.ok()) return P::failure(split.error);
  const auto& words = *split.value;
  if (words.empty()) return P::failure("empty operation: use 'put KEY VALUE' or 'del KEY'");
  P parsed;
  if (words[0] == "put") {
    if (words.size() != 3) return P::failure("put takes KEY VALUE");
    parsed.value = TxnOp::put(words[1], words[2]);
    return parsed;
  }
  if (words[0] != "del" && words[0] != "delete") {
    return P::failure("unknown operation '" + displayText(words[0]) + "': use put or del");
  }
  const char* delUsage = "del takes KEY [--prefix | --range-end END | --from-key]";
  if (words.size() < 2 || startsWith(words[1], "--")) return P::failure(delUsage);
  TxnOp op = TxnOp::del(words[1]);
  if (words.size() == 3 && words[2] == "--prefix") {
    op.rangeEnd = prefixRangeEnd(words[1]);
  } else if (words.size() == 3 && words[2] == "--from-key") {
    op.rangeEnd = fromKeyRangeEnd();
  } else if (words.size() == 3 && startsWith(words[2], "--range-end=")) {
    op.rangeEnd = words[2].substr(std::string_view("--range-end=").size());
  } else if (words.size() == 4 && words[2] == "--range-end") {
    op.rangeEnd = words[3];
  } else if (words.size() != 2) {
    return P::failure(delUsage);
  }
  if (words.size() > 2 && op.rangeEnd.empty())
    return P::failure("--range-end needs a non-empty END");
  parsed.value = std::move(op);
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// Help

const std::string& helpText() {
  static const std::string text = R"(synodctl - inspect and drive the local synod daemon

usage: synodctl [--socket PATH] [--json] [--timeout MS] COMMAND ARGS...

Global options (also accepted after the command):
  --socket PATH  the daemon's Unix socket (default: $SYNOD_SOCKET, else /run/synod/synod.sock)
  --json         print exactly one JSON object per command
  --timeout MS   deadline the daemon gets for each request (default 5000); synodctl itself
                 gives up 1000 ms later
  --help, -h     this text
  --version      synodctl's version
After the command only words starting with -- are options (a value like -5 is taken as is);
"--" ends the options: synodctl put k -- --json

Commands:
  get KEY [--serializable]
      Print the value of KEY: its raw bytes, followed by a newline only when stdout is a
      terminal. Linearizable unless --serializable: then the local member answers at once
      from its own replica.
  put KEY VALUE
      Set KEY to VALUE.
  del KEY [--prefix | --range-end END | --from-key]
      Delete KEY; with --prefix every key starting with KEY; with --range-end every key k with
      KEY <= k < END; with --from-key every key >= KEY. Prints how many were deleted.
  list [PREFIX] [--limit N] [--start-after KEY] [--serializable] [--all]
      Table of the keys starting with PREFIX in byte order, at most N of them (default: the
      daemon's maximum, 10000), after KEY. When keys remain a note on stderr says so ("more"
      in JSON). --all fetches page after page until the end; each page is a separate read.
  txn [--if COMPARE]... [--then OP]... [--else OP]...
      Atomically: if every COMPARE holds run the --then OPs, else the --else OPs.
        COMPARE   TARGET(KEY) OPERATOR OPERAND
          TARGET    value | version | createRevision | modRevision
          OPERATOR  =  !=  <  >     (== means =)
          A missing key has version, createRevision and modRevision 0.
        OP        put KEY VALUE | del KEY [--prefix | --range-end END | --from-key]
      Each COMPARE and OP is one argument; inside it KEY, VALUE and OPERAND are shell-quoted
      words: --if 'value("my key") = "two words"'.
      Exit status 0 when the compares held; 1 (COMPARE_FAILED) when the --else branch ran.
      Example, create-if-absent:
        synodctl txn --if 'version(leader) = 0' --then 'put leader n1'
      Example, compare-and-swap:
        synodctl txn --if 'value(cfg) = old' --then 'put cfg new' --else 'put cfg.conflict 1'
  status
      This member's view of the group: role, ballot, leader, decided and applied slot,
      revision, lease, commit latency, state digest, and the member table (see members).
  members
      One row per member, from the reports members send each other every second, so any
      member can be asked: name, role, ballot (round.member), decided and applied slot, lag
      (known at the leader), leader lease left, db size, group commit (fsync) latency p50/p99
      in microseconds, state digest, age of the report and whether the member is reachable.
      Members with the same applied slot have the same digest; a different one means their
      states differ. A report more than 3 s old, or from an unreachable member, is marked
      stale. CATCH_UP shows a member coming back: "recovering: STAGE" (empty data dir, not
      voting yet), "snapshot 3.1/10.0 MiB from n2" (a snapshot arriving), or "N slots behind"
      (the highest decided slot reported minus its applied slot); "-" otherwise.
  transfer-leader [NAME]
      Ask the member at --socket, which must lead, to hand leadership to NAME (default: the
      most up-to-date reachable follower) and wait until another member leads (up to
      --timeout). Prints the new leader. Exit status 3 (UNAVAILABLE) when that member does not
      lead (the error and the JSON "leader" name the leader it knows) or cannot reach NAME;
      2 for an unknown NAME; 4 (TIMEOUT) when no other member was seen leading in time.
  health
      Whether the member at --socket is live (its loop answers) and ready (it can serve
      linearizable requests: a leader confirmed its leadership with a quorum and this member
      has applied everything decided before; the same condition as systemd's READY=1), and
      what it waits for when not ready. Exit status 0 ready, 1 live but not ready, 3
      unreachable or no answer within --timeout. For probes: it answers at once when no
      quorum is reachable.
  put KEY VALUE --lease ID
      Set KEY attached to lease ID: the key is deleted when the lease ends.
  lease grant TTL_MS [--lock-delay MS]
      Grant a detached lease (it outlives synodctl; it ends by TTL or revoke) and print its id.
      TTL_MS must be within the daemon's lease_ttl_min_ms..lease_ttl_max_ms. --lock-delay:
      delay between losing a connection and the revoke (for a detached lease: after attach).
  lease list [--serializable] | lease info ID [--serializable]
      Every lease of the group as a table / one lease: id, TTL, time left (conservative,
      counted on the member that answered), fence, holder (member, pid, uid), keys and locks.
  lease revoke ID
      End lease ID at once: its keys are deleted and its locks pass on.
  lease keepalive ID
      Attach lease ID (it must be held through this member) and renew it once; prints the
      time left.
  leader NAME [--serializable]
      The holder of lock or election NAME: lease, fence, member, pid, uid, value. Exit status
      1 (NOT_FOUND) when nobody holds it.
  check-fence NAME FENCE [--serializable]
      Whether FENCE is the current fence of NAME's holder: exit status 0 current, 1 not.
  observe NAME [--count N]
      One line per change of NAME's holder, in order, starting with the current one, until
      interrupted, N lines, or the daemon goes away (exit 3).
  lock NAME [--ttl MS] [--timeout-ms MS] [--kill-after MS] -- CMD [ARGS...]
  elect NAME [--value V] [--ttl MS] [--timeout-ms MS] [--kill-after MS] -- CMD [ARGS...]
      Run CMD only while holding lock NAME / leadership of election NAME (with value V, shown
      by leader). synodctl grants a lease bound to its connection (--ttl, default 10000 ms)
      and keeps it alive, waits in FIFO order (at most --timeout-ms, default for ever), then
      runs CMD with SYNOD_FENCE, SYNOD_LEASE and SYNOD_LOCK or SYNOD_ELECTION in its
      environment. CMD dies with synodctl (PR_SET_PDEATHSIG). SIGINT, SIGTERM and SIGHUP sent
      to synodctl are passed on to CMD. When the lock or leadership is lost, or the lease could
      end within --kill-after + TTL/10 (the daemon stopped renewing it), CMD gets SIGTERM, then
      SIGKILL --kill-after ms later (default 2000), and synodctl exits 5. When CMD exits
      synodctl gives the lock up and exits with CMD's status (128+N if signal N ended it).
  watch PREFIX [--key] [--from REV] [--prev]
      Print every change of the keys starting with PREFIX (with --key: of the key PREFIX
      alone) as it happens, one line each, served by the member at --socket from its own
      replica: "REV PUT KEY VALUE" or "REV DELETE KEY"; --prev appends (was OLD). All
      changes of one transaction have the same REV and arrive together. --from REV starts at
      revision REV (resume with the last REV seen + 1); when REV is older than the member
      keeps, it prints "REV COMPACTED oldest N", the keys as of REV as lines
      "REV SNAPSHOT KEY VALUE" ending with "REV SNAPSHOT-END", then the changes after it. Runs until interrupted;
      exit status 1 when the daemon cancels the watch (a watcher too slow to keep up; stderr
      says the revision to resume from), 3 when the connection is lost. With --json one
      object per line: {"type":"put"|"delete"|"progress"|"compacted"|"snapshot"|
      "snapshotEnd"|"cancelled","revision":REV,...}; progress lines (every second when idle)
      say the revision the watch is current to. Inside shell it is a stream (see shell).
  compact REV
      Forget the history below revision REV on every member: watches from there get a
      snapshot, and reads at those revisions are refused. History is also kept only for the
      last history_revisions revisions.
  get KEY --rev REV, list [PREFIX] --rev REV
      Read as of revision REV, from the member's history; the same answer on every member.
  shell
      Read commands from stdin, one per line, split into words by POSIX shell quoting rules
      ('...' literal; "..." with \" \\ \$ \` escapes; \ quotes the next character outside
      quotes; no expansion of any kind). Answer each with one JSON object on one line,
      flushed. Blank lines and # comments are skipped; a line with an unterminated quote is
      answered with an error. One connection serves every line; a line may give --timeout but
      not --socket. End of input ends the session with exit status 0.
      watch and observe open a stream: the answer is {"ok":true,...,"stream":N} (N = 1, 2, ...
      in the session), then each line watch --json / observe --json would print comes as
      {"stream":N,"event":{...}}, between the answers to later lines, as it happens. A stream
      that ends by itself writes a last {"stream":N,"end":{"ok":...}}: ok=true after
      observe --count N lines; ok=false with code and error when the connection is lost
      (UNAVAILABLE) or the daemon cancels the watch (UNAVAILABLE, resumeFrom = the revision
      to watch --from). cancel N stops stream N and answers {"ok":true}; no line of stream N
      follows. End of input stops every stream. lock and elect cannot run inside shell.
  help, version
      Same as --help, --version.

JSON fields (--json and shell):
  every reply  ok, revision, member (who served it); failures: ok=false, error, code
  get          key, value, createRevision, modRevision, version
  put          revision
  del          deleted
  list         kvs (array of get objects), more
  txn          succeeded
  status       member, role, ballot {round, member}, leader (null when unknown), decidedSlot,
               appliedSlot, members (as below), clusterId, incarnation, dbSizeBytes,
               storeLimitBytes, version, uptimeMs, leaseLeftMs, commitP50Us, commitP99Us,
               stateDigest (16 hex digits)
  members      members [{name, address, role, reachable, lagSlots, reported, stale,
               reportAgeMs, ballot {round, member}, leader, decidedSlot, appliedSlot, revision,
               leaseLeftMs, dbSizeBytes, storeLimitBytes, commitP50Us, commitP99Us,
               incarnation, uptimeMs, stateDigest, recovering, recoveryStage (null unless
               recovering), snapshotFrom (null unless a snapshot is arriving),
               snapshotBytesReceived, snapshotBytesTotal, slotsBehind}]; the fields after stale
               are null when reported is false (no report received yet)
  transfer-leader  leader (the new leader; on failure the leader known, or null)
  health       live, ready, reason
  lease grant  id, ttlMs, remainingMs, fence
  lease info   id, ttlMs, remainingMs, fence, holder {member, pid, uid}, detached, local,
               attached, epoch, keys, locks (names; locks_b64 when one is not UTF-8)
  lease list   leases (array of lease info objects)
  lease keepalive  id, remainingMs, ttlMs
  leader       name, lease, fence, value (value_b64), holder {member, pid, uid}
  check-fence  name, fence, current, hasHolder, holder (as leader, null when free)
  observe      one object per line: name, revision, hasHolder, holder (as leader, or null)
  Keys and values that are not valid UTF-8 are given in base64 as key_b64 / value_b64.
  Codes: NOT_FOUND COMPARE_FAILED NO_QUORUM TIMEOUT INVALID_ARGUMENT NO_SPACE UNAVAILABLE
         INTERNAL

Exit status:
  0  success
  1  refused: NOT_FOUND, COMPARE_FAILED, NO_SPACE
  2  usage error, or INVALID_ARGUMENT from the daemon
  3  daemon unreachable, or the connection broke (UNAVAILABLE)
  4  TIMEOUT, NO_QUORUM or INTERNAL: for a write the outcome is unknown
  5  lock/elect -- CMD: synodctl stopped CMD because the lock or leadership was lost
  health: 0 ready, 1 live but not ready, 3 unreachable or no answer
  check-fence: 0 current, 1 not current
  lock/elect -- CMD: CMD's exit status, 128+N if signal N ended it, 5 as above
)";
  return text;
}

// ---------------------------------------------------------------------------------------------
// Rendering

namespace {

std::string quoted(std::string_view bytes) {
  return "\"" + displayText(bytes) + "\"";
}

template <typename T>
void headerFields(JsonWriter& json, const Result<T>& result) {
  if (!result.answered) return;
  json.field("revision", result.header.revision);
  json.field("member", result.header.member);
}

std::string jsonLine(const JsonWriter& json) {
  return json.str() + "\n";
}

/// A failed reply. `fallback` replaces a message that says no more than the code.
template <typename T, typename Extra>
Rendered renderFailure(const Result<T>& result, const RenderOptions& options,
                       const std::string& fallback, Extra&& extraFields) {
  std::string message = result.status.message;
  if ((message.empty() || message == codeName(result.status.code)) && !fallback.empty()) {
    message = fallback;
  }
  Rendered rendered;
  rendered.exitCode = exitCodeFor(result.status.code);
  if (options.json) {
    JsonWriter json;
    json.beginObject().field("ok", false).field("code", codeName(result.status.code));
    json.field("error", message);
    extraFields(json);
    headerFields(json, result);
    json.endObject();
    rendered.out = jsonLine(json);
  } else {
    rendered.err =
        "synodctl: " + displayText(message) + " (" + codeName(result.status.code) + ")\n";
  }
  return rendered;
}

template <typename T>
Rendered renderFailure(const Result<T>& result, const RenderOptions& options,
                       const std::string& fallback = {}) {
  return renderFailure(result, options, fallback, [](JsonWriter&) {});
}

void keyValueFields(JsonWriter& json, const KeyValue& kv) {
  json.bytesField("key", kv.key).bytesField("value", kv.value);
  json.field("createRevision", kv.createRevision)
      .field("modRevision", kv.modRevision)
      .field("version", kv.version);
  if (kv.lease != 0) json.field("lease", kv.lease);
}

template <typename T, typename Fields>
Rendered renderSuccessJson(const Result<T>& result, Fields&& fields) {
  JsonWriter json;
  json.beginObject().field("ok", true);
  fields(json);
  headerFields(json, result);
  json.endObject();
  return Rendered{jsonLine(json), {}, EXIT_OK};
}

std::string yesNo(bool value) {
  return value ? "yes" : "no";
}

void nullableName(JsonWriter& json, const char* field, const std::string& name) {
  json.key(field);
  if (name.empty()) {
    json.null();
  } else {
    json.string(name);
  }
}

void memberFields(JsonWriter& json, const MemberStatus& member) {
  json.field("name", member.name)
      .field("address", member.address)
      .field("role", member.role)
      .field("reachable", member.reachable)
      .field("lagSlots", member.lagSlots)
      .field("reported", member.reported)
      .field("stale", member.stale);
  if (!member.reported) {
    for (const char* field :
         {"reportAgeMs", "ballot", "leader", "decidedSlot", "appliedSlot", "revision",
          "leaseLeftMs", "dbSizeBytes", "storeLimitBytes", "commitP50Us", "commitP99Us",
          "incarnation", "uptimeMs", "stateDigest"}) {
      json.key(field).null();
    }
    for (const char* field : {"recovering", "recoveryStage", "snapshotFrom",
                              "snapshotBytesReceived", "snapshotBytesTotal", "slotsBehind"}) {
      json.key(field).null();
    }
    return;
  }
  json.field("reportAgeMs", member.reportAgeMs);
  json.key("ballot")
      .beginObject()
      .field("round", member.ballotRound)
      .field("member", uint64_t{member.ballotMember})
      .endObject();
  nullableName(json, "leader", member.leader);
  json.field("decidedSlot", member.decidedSlot)
      .field("appliedSlot", member.appliedSlot)
      .field("revision", member.revision)
      .field("leaseLeftMs", member.leaseLeftMs)
      .field("dbSizeBytes", member.dbSizeBytes)
      .field("storeLimitBytes", member.storeLimitBytes)
      .field("commitP50Us", member.commitP50Us)
      .field("commitP99Us", member.commitP99Us)
      .field("incarnation", member.incarnation)
      .field("uptimeMs", member.uptimeMs)
      .field("stateDigest", digestHex(member.stateDigest))
      .field("recovering", member.recovering);
  nullableName(json, "recoveryStage", member.recoveryStage);
  nullableName(json, "snapshotFrom", member.snapshotFrom);
  json.field("snapshotBytesReceived", member.snapshotBytesReceived)
      .field("snapshotBytesTotal", member.snapshotBytesTotal)
      .field("slotsBehind", member.slotsBehind);
}

void membersArray(JsonWriter& json, const std::vector<MemberStatus>& members) {
  json.key("members").beginArray();
  for (const auto& member : members) {
    json.beginObject();
    memberFields(json, member);
    json.endObject();
  }
  json.endArray();
}

/// 1536 -> "1.5 KiB"; below 1 KiB in bytes.
std::string humanBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  return text;
}

/// "3.1/10.0 MiB": both in the unit that suits the larger.
std::string bytesOf(uint64_t part, uint64_t whole) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  size_t unit = 0;
  double scale = 1;
  for (uint64_t larger = std::max(part, whole) / 1024; larger > 0 && unit + 1 < std::size(units);
       larger /= 1024) {
    scale *= 1024;
    ++unit;
  }
  char text[64];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%llu/%llu B", static_cast<unsigned long long>(part),
                  static_cast<unsigned long long>(whole));
  } else {
    std::snprintf(text, sizeof text, "%.1f/%.1f %s", static_cast<double>(part) / scale,
                  static_cast<double>(whole) / scale, units[unit]);
  }
  return text;
}

std::string memberTable(const std::vector<MemberStatus>& members) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ROLE", "BALLOT", "DECIDED", "APPLIED", "LAG", "LEASE_MS", "DB_SIZE",
       "COMMIT_P50/P99_US", "DIGEST", "REPORT_AGE_MS", "REACHABLE", "CATCH_UP"}};
  for (const auto& member : members) {
    std::vector<std::string> row = {displayText(member.name), displayText(member.role)};
    if (member.reported) {
      row.insert(row.end(),
                 {std::to_string(member.ballotRound) + "." + std::to_string(member.ballotMember),
                  std::to_string(member.decidedSlot), std::to_string(member.appliedSlot),
                  std::to_string(member.lagSlots),
                  member.leaseLeftMs == 0 ? "-" : std::to_string(member.leaseLeftMs),
                  humanBytes(member.dbSizeBytes),
                  std::to_string(member.commitP50Us) + "/" + std::to_string(member.commitP99Us),
                  digestHex(member.stateDigest),
                  std::to_string(member.reportAgeMs) + (member.stale ? " (stale)" : "")});
    } else {
      row.insert(row.end(),
                 {"-", "-", "-", std::to_string(member.lagSlots), "-", "-", "-", "-", "none"});
    }
    row.push_back(yesNo(member.reachable));
    row.push_back(catchUpCell(member));
    rows.push_back(std::move(row));
  }
  return formatTable(rows);
}

}  // namespace

Rendered renderUsageError(const std::string& error, const std::string& hint,
                          const RenderOptions& options) {
  Rendered rendered;
  rendered.exitCode = EXIT_USAGE;
  rendered.err = "synodctl: " + error + "\n";
  if (!hint.empty()) rendered.err += hint + "\n";
  rendered.err += "Try 'synodctl --help'.\n";
  if (options.json) {
    JsonWriter json;
    json.beginObject()
        .field("ok", false)
        .field("code", codeName(Code::INVALID_ARGUMENT))
        .field("error", error);
    if (!hint.empty()) json.field("usage", hint);
    json.endObject();
    rendered.out = jsonLine(json);
  }
  return rendered;
}

Rendered renderGet(const GetCommand& command, const Result<KeyValue>& result,
                   const RenderOptions& options) {
  if (!result.ok()) {
    std::string notFound = "key " + quoted(command.key) + " not found";
    auto addKey = [&](JsonWriter& json) { json.bytesField("key", command.key); };
    if (result.status.code != Code::NOT_FOUND) return renderFailure(result, options, {}, addKey);
    // The daemon's text cannot say more than this, and this names the key.
    Result<KeyValue> named = result;
    named.status.message = notFound;
    return renderFailure(named, options, {}, addKey);
  }
  if (options.json) {
    return renderSuccessJson(result, [&](JsonWriter& json) { keyValueFields(json, *result); });
  }
  return Rendered{result->value + (options.tty ? "\n" : ""), {}, EXIT_OK};
}

Rendered renderPut(const PutCommand&, const Result<Empty>& result, const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  if (options.json) return renderSuccessJson(result, [](JsonWriter&) {});
  return Rendered{"OK (revision " + std::to_string(result.header.revision) + ")\n", {}, EXIT_OK};
}

Rendered renderDel(const DelCommand&, const Result<DeleteReply>& result,
                   const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  if (options.json) {
    return renderSuccessJson(result,
                             [&](JsonWriter& json) { json.field("deleted", result->deleted); });
  }
  return Rendered{"deleted " + std::to_string(result->deleted) + " (revision " +
                      std::to_string(result.header.revision) + ")\n",
                  {},
                  EXIT_OK};
}

Rendered renderList(const ListCommand&, const Result<ListReply>& result,
                    const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  if (options.json) {
    return renderSuccessJson(result, [&](JsonWriter& json) {
      json.key("kvs").beginArray();
      for (const auto& kv : result->kvs) {
        json.beginObject();
        keyValueFields(json, kv);
        json.endObject();
      }
      json.endArray().field("more", result->more);
    });
  }
  Rendered rendered;
  if (!result->kvs.empty()) {
    std::vector<std::vector<std::string>> rows = {
        {"KEY", "VERSION", "CREATE_REV", "MOD_REV", "VALUE"}};
    for (const auto& kv : result->kvs) {
      rows.push_back({displayText(kv.key), std::to_string(kv.version),
                      std::to_string(kv.createRevision), std::to_string(kv.modRevision),
                      displayText(kv.value)});
    }
    rendered.out = formatTable(rows);
  }
  if (result->more) {
    rendered.err = "more keys remain: continue with --start-after " +
                   shellQuote(result->kvs.empty() ? std::string() : result->kvs.back().key) +
                   ", or use --all\n";
  }
  return rendered;
}

Rendered renderTxn(const TxnCommand&, const Result<TxnReply>& result,
                   const RenderOptions& options) {
  if (!result.ok()) {
    return renderFailure(result, options, {}, [&](JsonWriter& json) {
      if (result.status.code == Code::COMPARE_FAILED) json.field("succeeded", false);
    });
  }
  if (options.json) {
    return renderSuccessJson(result, [](JsonWriter& json) { json.field("succeeded", true); });
  }
  return Rendered{
      "SUCCEEDED (revision " + std::to_string(result.header.revision) + ")\n", {}, EXIT_OK};
}

Rendered renderTransferLeader(const TransferLeaderCommand& command,
                              const Result<TransferReply>& result, const RenderOptions& options) {
  auto leaderField = [&](JsonWriter& json) {
    json.key("leader");
    if (result->leader.empty()) {
      json.null();
    } else {
      json.string(result->leader);
    }
  };
  if (!result.ok()) return renderFailure(result, options, {}, leaderField);
  if (options.json) return renderSuccessJson(result, leaderField);
  std::string line = "leader: " + displayText(result->leader) + "\n";
  if (!command.target.empty() && command.target != result->leader) {
    line += "(asked for " + displayText(command.target) + ")\n";
  }
  return Rendered{line, {}, EXIT_OK};
}

Rendered renderHealth(const Result<HealthReply>& result, const RenderOptions& options) {
  if (!result.ok()) {
    // Whatever kept the answer from arriving, the daemon's loop did not answer: not live.
    Rendered rendered = renderFailure(result, options, {}, [](JsonWriter& json) {
      json.field("live", false).field("ready", false);
    });
    if (rendered.exitCode != EXIT_USAGE) rendered.exitCode = EXIT_UNAVAILABLE;
    return rendered;
  }
  const HealthReply& health = *result;
  const int exitCode = health.ready ? EXIT_OK : EXIT_NOT_READY;
  if (options.json) {
    Rendered rendered = renderSuccessJson(result, [&](JsonWriter& json) {
      json.field("live", health.live).field("ready", health.ready).field("reason", health.reason);
    });
    rendered.exitCode = exitCode;
    return rendered;
  }
  return Rendered{"live: " + yesNo(health.live) + "\nready: " + yesNo(health.ready) +
                      "\nreason: " + displayText(health.reason) + "\n",
                  {},
                  exitCode};
}

// ---------------------------------------------------------------------------------------------
// Leases and locks

namespace {

void holderObject(JsonWriter& json, const LeaseHolderInfo& holder) {
  json.key("holder")
      .beginObject()
      .field("member", holder.member)
      .key("pid")
      .signedNumber(holder.pid)
      .field("uid", uint64_t{holder.uid})
      .endObject();
}

void leaseFields(JsonWriter& json, const LeaseInfo& info) {
  json.field("id", info.id)
      .field("ttlMs", info.ttlMs)
      .field("remainingMs", info.remainingMs)
      .field("fence", info.fence);
  holderObject(json, info.holder);
  json.field("detached", info.detached)
      .field("local", info.local)
      .field("attached", info.attached)
      .field("epoch", info.epoch)
      .field("keys", info.keys);
  bool utf8 = std::all_of(info.locks.begin(), info.locks.end(),
                          [](const std::string& name) { return isValidUtf8(name); });
  json.key(utf8 ? "locks" : "locks_b64").beginArray();
  for (const auto& name : info.locks)
    json.string(utf8 ? name : base64Encode(name));
  json.endArray();
}

void lockHolderFields(JsonWriter& json, const LockHolder& holder) {
  json.field("lease", holder.lease).field("fence", holder.fence);
  json.bytesField("value", holder.value);
  holderObject(json, holder.holder);
}

std::string holderCell(const LeaseHolderInfo& holder) {
  return displayText(holder.member) + "/" + std::to_string(holder.pid);
}

std::string joinedNames(const std::vector<std::string>& names) {
  if (names.empty()) return "-";
  std::string joined;
  for (const auto& name : names)
    joined += (joined.empty() ? "" : ",") + displayText(name);
  return joined;
}

}  // namespace

Rendered renderLease(const LeaseCommand& command, const Result<LeaseInfo>& result,
                     const RenderOptions& options) {
  if (!result.ok()) {
    std::string fallback;
    if (result.status.code == Code::NOT_FOUND)
      fallback = "lease " + std::to_string(command.id) + " not found";
    return renderFailure(result, options, fallback);
  }
  const LeaseInfo& info = *result;
  if (command.action == LeaseCommand::Action::REVOKE) {
    if (options.json) return renderSuccessJson(result, [](JsonWriter&) {});
    return Rendered{"revoked lease " + std::to_string(command.id) + "\n", {}, EXIT_OK};
  }
  if (command.action == LeaseCommand::Action::GRANT) {
    if (options.json) {
      return renderSuccessJson(result, [&](JsonWriter& json) {
        json.field("id", info.id)
            .field("ttlMs", info.ttlMs)
            .field("remainingMs", info.remainingMs)
            .field("fence", info.fence);
      });
    }
    return Rendered{std::to_string(info.id) + "\n", {}, EXIT_OK};
  }
  if (options.json)
    return renderSuccessJson(result, [&](JsonWriter& json) { leaseFields(json, info); });
  std::vector<std::vector<std::string>> rows = {
      {"id", std::to_string(info.id)},
      {"ttl", std::to_string(info.ttlMs) + " ms"},
      {"remaining", std::to_string(info.remainingMs) + " ms" + (info.local ? "" : " (estimate)")},
      {"fence", std::to_string(info.fence)},
      {"holder", displayText(info.holder.member) + ", pid " + std::to_string(info.holder.pid) +
                     ", uid " + std::to_string(info.holder.uid)},
      {"detached", yesNo(info.detached)},
      {"local", yesNo(info.local)},
      {"attached", yesNo(info.attached)},
      {"epoch", std::to_string(info.epoch)},
      {"keys", std::to_string(info.keys)},
      {"locks", joinedNames(info.locks)},
  };
  return Rendered{formatTable(rows), {}, EXIT_OK};
}

Rendered renderLeaseList(const Result<LeaseListReply>& result, const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  if (options.json) {
    return renderSuccessJson(result, [&](JsonWriter& json) {
      json.key("leases").beginArray();
      for (const auto& info : result->leases) {
        json.beginObject();
        leaseFields(json, info);
        json.endObject();
      }
      json.endArray();
    });
  }
  if (result->leases.empty()) return Rendered{};
  std::vector<std::vector<std::string>> rows = {
      {"ID", "TTL_MS", "REMAINING_MS", "FENCE", "HOLDER", "DETACHED", "KEYS", "LOCKS"}};
  for (const auto& info : result->leases) {
    rows.push_back({std::to_string(info.id), std::to_string(info.ttlMs),
                    std::to_string(info.remainingMs) + (info.local ? "" : "~"),
                    std::to_string(info.fence), holderCell(info.holder), yesNo(info.detached),
                    std::to_string(info.keys), joinedNames(info.locks)});
  }
  return Rendered{formatTable(rows), {}, EXIT_OK};
}

Rendered renderKeepAlive(const LeaseCommand& command, const Result<KeepAliveReply>& result,
                         const RenderOptions& options) {
  if (!result.ok()) {
    std::string fallback;
    if (result.status.code == Code::NOT_FOUND)
      fallback = "lease " + std::to_string(command.id) + " not found";
    return renderFailure(result, options, fallback);
  }
  if (options.json) {
    return renderSuccessJson(result, [&](JsonWriter& json) {
      json.field("id", command.id)
          .field("remainingMs", result->remainingMs)
          .field("ttlMs", result->ttlMs);
    });
  }
  return Rendered{"lease " + std::to_string(command.id) + ": " +
                      std::to_string(result->remainingMs) + " ms left of " +
                      std::to_string(result->ttlMs) + "\n",
                  {},
                  EXIT_OK};
}

Rendered renderLeader(const LeaderCommand& command, const Result<LockHolder>& result,
                      const RenderOptions& options) {
  auto nameField = [&](JsonWriter& json) { json.bytesField("name", command.name); };
  if (!result.ok()) {
    Result<LockHolder> named = result;
    if (result.status.code == Code::NOT_FOUND)
      named.status.message = quoted(command.name) + " has no holder";
    return renderFailure(named, options, {}, nameField);
  }
  if (options.json) {
    return renderSuccessJson(result, [&](JsonWriter& json) {
      nameField(json);
      lockHolderFields(json, *result);
    });
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "LEASE", "FENCE", "MEMBER", "PID", "UID", "VALUE"},
      {displayText(command.name), std::to_string(result->lease), std::to_string(result->fence),
       displayText(result->holder.member), std::to_string(result->holder.pid),
       std::to_string(result->holder.uid), displayText(result->value)}};
  return Rendered{formatTable(rows), {}, EXIT_OK};
}

Rendered renderCheckFence(const CheckFenceCommand& command, const Result<CheckFenceReply>& result,
                          const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  const CheckFenceReply& reply = *result;
  int exitCode = reply.current ? EXIT_OK : EXIT_REFUSED;
  if (options.json) {
    Rendered rendered = renderSuccessJson(result, [&](JsonWriter& json) {
      json.bytesField("name", command.name)
          .field("fence", command.fence)
          .field("current", reply.current)
          .field("hasHolder", reply.hasHolder)
          .key("holder");
      if (reply.hasHolder) {
        json.beginObject();
        lockHolderFields(json, reply.holder);
        json.endObject();
      } else {
        json.null();
      }
    });
    rendered.exitCode = exitCode;
    return rendered;
  }
  std::string line = "fence " + std::to_string(command.fence) + " of " + quoted(command.name);
  if (reply.current) {
    line += " is current\n";
  } else if (reply.hasHolder) {
    line += " is not current: the holder's fence is " + std::to_string(reply.holder.fence) + "\n";
  } else {
    line += " is not current: nobody holds it\n";
  }
  return Rendered{line, {}, exitCode};
}

std::string renderChange(const std::string& name, const LockChange& change, bool json) {
  if (json) {
    JsonWriter writer;
    writer.beginObject().bytesField("name", name).field("revision", change.revision);
    writer.field("hasHolder", change.hasHolder).key("holder");
    if (change.hasHolder) {
      writer.beginObject();
      lockHolderFields(writer, change.holder);
      writer.endObject();
    } else {
      writer.null();
    }
    writer.endObject();
    return jsonLine(writer);
  }
  std::string line = "revision " + std::to_string(change.revision) + ": ";
  if (!change.hasHolder) return line + "free\n";
  return line + "lease " + std::to_string(change.holder.lease) + " fence " +
         std::to_string(change.holder.fence) + " member " +
         displayText(change.holder.holder.member) + " pid " +
         std::to_string(change.holder.holder.pid) + " value " + quoted(change.holder.value) + "\n";
}

Rendered renderStatus(const Result<StatusInfo>& result, const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  const StatusInfo& info = *result;
  if (options.json) {
    JsonWriter json;
    json.beginObject().field("ok", true);
    json.field("revision", result.answered ? result.header.revision : info.revision);
    json.field("member", info.member.empty() ? result.header.member : info.member);
    json.field("clusterId", info.clusterId).field("role", info.role);
    json.key("ballot")
        .beginObject()
        .field("round", info.ballotRound)
        .field("member", uint64_t{info.ballotMember})
        .endObject();
    json.key("leader");
    if (info.leader.empty()) {
      json.null();
    } else {
      json.string(info.leader);
    }
    json.field("decidedSlot", info.decidedSlot).field("appliedSlot", info.appliedSlot);
    membersArray(json, info.members);
    json.field("incarnation", info.incarnation)
        .field("dbSizeBytes", info.dbSizeBytes)
        .field("storeLimitBytes", info.storeLimitBytes)
        .field("version", info.version)
        .field("uptimeMs", info.uptimeMs)
        .field("leaseLeftMs", info.leaseLeftMs)
        .field("commitP50Us", info.commitP50Us)
        .field("commitP99Us", info.commitP99Us)
        .field("stateDigest", digestHex(info.stateDigest));
    json.endObject();
    return Rendered{jsonLine(json), {}, EXIT_OK};
  }
  std::vector<std::vector<std::string>> summary = {
      {"member", displayText(info.member)},
      {"cluster", displayText(info.clusterId)},
      {"role", displayText(info.role)},
      {"ballot", "round " + std::to_string(info.ballotRound) + ", member " +
                     std::to_string(info.ballotMember)},
      {"leader", info.leader.empty() ? "(unknown)" : displayText(info.leader)},
      {"decided slot", std::to_string(info.decidedSlot)},
      {"applied slot", std::to_string(info.appliedSlot)},
      {"revision", std::to_string(info.revision)},
      {"incarnation", std::to_string(info.incarnation)},
      {"db size",
       std::to_string(info.dbSizeBytes) + " bytes of " + std::to_string(info.storeLimitBytes)},
      {"version", displayText(info.version)},
      {"uptime", std::to_string(info.uptimeMs / 1000) + " s"},
      {"lease left", info.leaseLeftMs == 0 ? "-" : std::to_string(info.leaseLeftMs) + " ms"},
      {"fsync p50/99",
       std::to_string(info.commitP50Us) + " / " + std::to_string(info.commitP99Us) + " us"},
      {"state digest", digestHex(info.stateDigest)},
  };
  return Rendered{formatTable(summary) + "\n" + memberTable(info.members), {}, EXIT_OK};
}

Rendered renderMembers(const Result<StatusInfo>& result, const RenderOptions& options) {
  if (!result.ok()) return renderFailure(result, options);
  if (options.json) {
    return renderSuccessJson(result,
                             [&](JsonWriter& json) { membersArray(json, result->members); });
  }
  return Rendered{memberTable(result->members), {}, EXIT_OK};
}

std::string digestHex(uint64_t digest) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(digest));
  return text;
}

std::string catchUpCell(const MemberStatus& member) {
  if (!member.reported) return "-";
  std::string snapshot;
  if (!member.snapshotFrom.empty()) {
    snapshot = "snapshot " +
               (member.snapshotBytesTotal == 0
                    ? humanBytes(member.snapshotBytesReceived)
                    : bytesOf(member.snapshotBytesReceived, member.snapshotBytesTotal)) +
               " from " + displayText(member.snapshotFrom);
  }
  if (member.recovering) {
    if (!snapshot.empty()) return "recovering: " + snapshot;
    if (member.recoveryStage.empty()) return "recovering";
    return "recovering: " + displayText(member.recoveryStage);
  }
  if (!snapshot.empty()) return snapshot;
  if (member.slotsBehind > 0) {
    return std::to_string(member.slotsBehind) +
           (member.slotsBehind == 1 ? " slot behind" : " slots behind");
  }
  return "-";
}

// ---------------------------------------------------------------------------------------------
// Running

namespace {

Result<ListReply> listAllPages(Client& client, const ListCommand& command, uint32_t timeoutMs) {
  ListOptions options{command.limit, command.startAfter, command.serializable, timeoutMs};
  Result<ListReply> total = client.list(command.prefix, options);
  while (command.all && total.ok() && total->more) {
    if (total->kvs.empty()) {
      total.status = Status{Code::INTERNAL, "daemon said more keys remain but sent none"};
      break;
    }
    options.startAfter = total->kvs.back().key;
    Result<ListReply> page = client.list(command.prefix, options);
    if (!page.ok()) return page;
    for (auto& kv : page->kvs)
      total->kvs.push_back(std::move(kv));
    total->more = page->more;
    total.header = page.header;
  }
  return total;
}

Rendered renderHelp(const RenderOptions& options) {
  if (!options.json) return Rendered{helpText(), {}, EXIT_OK};
  JsonWriter json;
  json.beginObject().field("ok", true).field("help", helpText()).endObject();
  return Rendered{jsonLine(json), {}, EXIT_OK};
}

Rendered renderVersion(const RenderOptions& options) {
  if (!options.json) return Rendered{std::string("synodctl ") + SYNOD_VERSION + "\n", {}, EXIT_OK};
  JsonWriter json;
  json.beginObject().field("ok", true).field("version", SYNOD_VERSION).endObject();
  return Rendered{jsonLine(json), {}, EXIT_OK};
}

}  // namespace

static Rendered executeLease(Client& client, const LeaseCommand& command, uint32_t timeoutMs,
                             const RenderOptions& options) {
  using Action = LeaseCommand::Action;
  auto infoOf = [](Result<LeaseGrant>&& granted) {
    Result<LeaseInfo> result;
    result.status = granted.status;
    result.header = granted.header;
    result.answered = granted.answered;
    result.reply = granted.reply.info;
    return result;
  };
  switch (command.action) {
    case Action::GRANT:
      // Detached: a lease bound to synodctl's connection would end as synodctl exits.
      return renderLease(command,
                         infoOf(client.grantLease(
                             command.ttlMs, LeaseOptions{true, command.lockDelayMs}, timeoutMs)),
                         options);
    case Action::LIST:
      return renderLeaseList(client.listLeases(ReadOptions{command.serializable, timeoutMs}),
                             options);
    case Action::INFO:
      return renderLease(command,
                         client.leaseInfo(command.id, ReadOptions{command.serializable, timeoutMs}),
                         options);
    case Action::REVOKE: {
      auto revoked = client.revokeLease(command.id, WriteOptions{timeoutMs});
      Result<LeaseInfo> result;
      result.status = revoked.status;
      result.header = revoked.header;
      result.answered = revoked.answered;
      return renderLease(command, result, options);
    }
    case Action::KEEPALIVE: {
      auto attached = client.attachLease(command.id, timeoutMs);
      Result<KeepAliveReply> kept;
      KJ_IF_MAYBE (lease, attached.reply.lease) {
        kept = client.keepAlive(*lease, timeoutMs);
      } else {
        kept.status = attached.status;
        kept.header = attached.header;
        kept.answered = attached.answered;
      }
      return renderKeepAlive(command, kept, options);
    }
  }
  return renderUsageError("unknown lease action", {}, options);
}

int runObserve(Client& client, const ObserveCommand& command, bool json, std::ostream& out,
               std::ostream& err) {
  uint64_t seen = 0;
  auto observing = client.async()
                       .observe(command.name,
                                [&](const LockChange& change) {
                                  if (command.count != 0 && seen >= command.count) return;
                                  ++seen;
                                  out << renderChange(command.name, change, json);
                                  out.flush();
                                })
                       .wait(client.waitScope());
  if (!observing.ok()) {
    Rendered rendered = renderFailure(observing, RenderOptions{json, false});
    out << rendered.out;
    err << rendered.err;
    return rendered.exitCode;
  }
  // The observation ends only with the connection: poll for that, or for enough lines.
  while (command.count == 0 || seen < command.count) {
    client.runFor(100);
    if (!client.async().connectionAlive()) {
      err << "synodctl: connection to daemon at " << client.socketPath() << " lost\n";
      return EXIT_UNAVAILABLE;
    }
  }
  return EXIT_OK;
}

Rendered execute(Client& client, const Invocation& invocation, bool tty) {
  RenderOptions options{invocation.global.json, tty};
  uint32_t timeoutMs = invocation.global.timeoutMs;
  const Command& command = invocation.command;
  if (auto* get = std::get_if<GetCommand>(&command)) {
    if (get->revision != 0) return renderGet(*get, getAtRevision(client, *get, timeoutMs), options);
    return renderGet(*get, client.get(get->key, ReadOptions{get->serializable, timeoutMs}),
                     options);
  }
  if (auto* put = std::get_if<PutCommand>(&command)) {
    if (put->lease != 0) {
      return renderPut(*put, client.put(put->key, put->value, put->lease, WriteOptions{timeoutMs}),
                       options);
    }
    return renderPut(*put, client.put(put->key, put->value, WriteOptions{timeoutMs}), options);
  }
  if (auto* lease = std::get_if<LeaseCommand>(&command)) {
    return executeLease(client, *lease, timeoutMs, options);
  }
  if (auto* leader = std::get_if<LeaderCommand>(&command)) {
    return renderLeader(*leader,
                        client.leader(leader->name, ReadOptions{leader->serializable, timeoutMs}),
                        options);
  }
  if (auto* check = std::get_if<CheckFenceCommand>(&command)) {
    return renderCheckFence(
        *check,
        client.checkFence(check->name, check->fence, ReadOptions{check->serializable, timeoutMs}),
        options);
  }
  if (std::holds_alternative<ObserveCommand>(command) ||
      std::holds_alternative<HoldCommand>(command)) {
    return renderUsageError("this command cannot run here", {}, options);
  }
  if (auto* del = std::get_if<DelCommand>(&command)) {
    return renderDel(*del, client.del(del->key, del->rangeEnd, WriteOptions{timeoutMs}), options);
  }
  if (auto* list = std::get_if<ListCommand>(&command)) {
    if (list->revision != 0) {
      return renderList(*list, listAtRevision(client, *list, timeoutMs), options);
    }
    return renderList(*list, listAllPages(client, *list, timeoutMs), options);
  }
  if (auto* compact = std::get_if<CompactCommand>(&command)) {
    return renderCompact(
        clients::compact(client.async(), compact->revision, timeoutMs).wait(client.waitScope()),
        options);
  }
  if (std::holds_alternative<WatchCommand>(command)) {
    return renderUsageError("'watch' streams: run it on its own, not inside 'shell'", {}, options);
  }
  if (auto* txn = std::get_if<TxnCommand>(&command)) {
    return renderTxn(*txn, client.txn(txn->txn, WriteOptions{timeoutMs}), options);
  }
  if (std::holds_alternative<StatusCommand>(command)) {
    return renderStatus(client.status(timeoutMs), options);
  }
  if (std::holds_alternative<MembersCommand>(command)) {
    return renderMembers(client.status(timeoutMs), options);
  }
  if (auto* transfer = std::get_if<TransferLeaderCommand>(&command)) {
    return renderTransferLeader(*transfer, client.transferLeader(transfer->target, timeoutMs),
                                options);
  }
  if (std::holds_alternative<HealthCommand>(command)) {
    return renderHealth(client.health(timeoutMs), options);
  }
  if (std::holds_alternative<HelpCommand>(command)) return renderHelp(options);
  if (std::holds_alternative<VersionCommand>(command)) return renderVersion(options);
  return renderUsageError("'shell' cannot run here", {}, options);
}

int runSynodctl(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
                std::ostream& err, bool stdoutIsTty, int inputFd) {
  auto parsed = parseInvocation(args, ParseMode::COMMAND_LINE);
  if (!parsed.ok()) {
    bool json = false;
    for (const auto& word : args) {
      if (word == "--") break;
      if (word == "--json") json = true;
    }
    Rendered rendered = renderUsageError(parsed.error, parsed.hint, RenderOptions{json, false});
    out << rendered.out;
    err << rendered.err;
    return rendered.exitCode;
  }
  const Invocation& invocation = *parsed.value;
  RenderOptions options{invocation.global.json, stdoutIsTty};
  if (std::holds_alternative<HelpCommand>(invocation.command)) {
    out << renderHelp(options).out;
    return EXIT_OK;
  }
  if (std::holds_alternative<VersionCommand>(invocation.command)) {
    out << renderVersion(options).out;
    return EXIT_OK;
  }
  if (auto* watch = std::get_if<WatchCommand>(&invocation.command)) {
    return runWatchCommand(*watch, invocation.global, out, err);
  }
  if (std::holds_alternative<ShellCommand>(invocation.command)) {
    return runShellCommand(invocation.global, in, inputFd, out);
  }
  Client client(ClientOptions{invocation.global.socketPath, invocation.global.timeoutMs,
                              DEFAULT_DEADLINE_MARGIN_MS});
  if (auto* observe = std::get_if<ObserveCommand>(&invocation.command)) {
    return runObserve(client, *observe, invocation.global.json, out, err);
  }
  if (auto* hold = std::get_if<HoldCommand>(&invocation.command)) {
    out.flush();
    return runHold(client, *hold, err);
  }
  Rendered rendered = execute(client, invocation, stdoutIsTty);
  out << rendered.out;
  err << rendered.err;
  return rendered.exitCode;
}

}  // namespace synod::clients
