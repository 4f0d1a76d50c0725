#include "daemon/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <sstream>

namespace synod::daemon {

namespace {

// A config is a few dozen lines; anything this large is not one.
constexpr size_t MAX_FILE_BYTES = 1 << 20;
constexpr size_t MAX_PEERS = 7;
constexpr size_t MAX_NAME_CHARS = 63;
constexpr uint64_t MAX_GROUP_TIMING_MS = 60000;
constexpr uint64_t MAX_LEASE_TTL_MS = 604800000;  // 7 days
// LMDB (as Debian builds it) refuses keys over 511 bytes; a longer key could be decided and then
// fail to apply on every member.
constexpr uint64_t MAX_KEY_BYTES_LIMIT = 511;
// A value travels in one Cap'n Proto message (default traversal limit 64 MiB) with its key and
// framing, and is applied in one LMDB write.
constexpr uint64_t MAX_VALUE_BYTES_LIMIT = 32 << 20;
constexpr uint64_t MIN_STORE_LIMIT_BYTES = 16 << 20;
constexpr uint64_t MAX_HISTORY_REVISIONS = 100000000;
// sun_path holds 108 bytes including the terminating NUL.
constexpr size_t MAX_SOCKET_PATH_BYTES = sizeof(sockaddr_un{}.sun_path) - 1;

// ---------------------------------------------------------------------------------------------
// A YAML document as a small tree that keeps what yaml-cpp's Node drops: the line of every
// node, whether a scalar was quoted, and every map entry in file order (duplicates are caught
// while building).

struct Yaml {
  enum class Kind { NUL, SCALAR, MAP, SEQUENCE };
  Kind kind = Kind::NUL;
  int line = 0;                    // 1-based
  std::string text;                // SCALAR only
  bool plain = false;              // SCALAR written without quotes or a string tag
  std::vector<Yaml> keys, values;  // MAP, parallel
  std::vector<Yaml> items;         // SEQUENCE
};

struct PendingError {
  int line;
  std::string key;
  std::string problem;
};

// Builds a Yaml tree from yaml-cpp's events. Records the first problem instead of throwing
// through yaml-cpp's parser.
class TreeBuilder : public YAML::EventHandler {
 public:
  std::optional<Yaml> root;
  std::optional<PendingError> error;
  std::string lastKeyPath;  // for locating syntax errors

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override {
    Yaml node;
    node.line = lineOf(mark);
    attach(std::move(node));
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    fail(lineOf(mark), "", "YAML aliases (*name) are not supported; write the value out");
    attach(Yaml{});
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t,
                const std::string& value) override {
    Yaml node;
    node.kind = Yaml::Kind::SCALAR;
    node.line = lineOf(mark);
    node.text = value;
    if (tag == "?" || tag == "tag:yaml.org,2002:int" || tag == "tag:yaml.org,2002:float" ||
        tag == "tag:yaml.org,2002:bool" || tag == "tag:yaml.org,2002:null") {
      node.plain = true;
    } else if (tag != "!" && tag != "tag:yaml.org,2002:str") {
      fail(node.line, "", "unsupported YAML tag " + tag);
    }
    attach(std::move(node));
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    open(Yaml::Kind::SEQUENCE, mark);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    open(Yaml::Kind::MAP, mark);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Frame {
    Yaml node;
    std::string path;  // dotted key path of this collection, "" at top level
  };
  std::vector<Frame> stack_;

  static int lineOf(const YAML::Mark& mark) { return mark.is_null() ? 0 : mark.line + 1; }

  void fail(int line, std::string key, std::string problem) {
    if (!error) error = PendingError{line, std::move(key), std::move(problem)};
  }

  // The path a value attached now would have.
  std::string childPath() const {
    if (stack_.empty()) return "";
    const Frame& top = stack_.back();
    if (top.node.kind == Yaml::Kind::MAP && top.node.keys.size() > top.node.values.size()) {
      const std::string& key = top.node.keys.back().text;
      return top.path.empty() ? key : top.path + "." + key;
    }
    return top.path;
  }

  void open(Yaml::Kind kind, const YAML::Mark& mark) {
    Frame frame{Yaml{}, childPath()};
    frame.node.kind = kind;
    frame.node.line = lineOf(mark);
    stack_.push_back(std::move(frame));
  }

  void close() {
    Yaml node = std::move(stack_.back().node);
    stack_.pop_back();
    attach(std::move(node));
  }

  void attach(Yaml node) {
    if (stack_.empty()) {
      root = std::move(node);
      return;
    }
    Yaml& parent = stack_.back().node;
    if (parent.kind == Yaml::Kind::SEQUENCE) {
      parent.items.push_back(std::move(node));
    } else if (parent.keys.size() > parent.values.size()) {
      parent.values.push_back(std::move(node));
    } else {
      addKey(parent, std::move(node));
    }
  }

  void addKey(Yaml& map, Yaml key) {
    const std::string& path = stack_.back().path;
    if (key.kind != Yaml::Kind::SCALAR) {
      fail(key.line, path, "a map key must be a plain name, not a map, list or empty value");
      key.text = "?";
    }
    std::string keyPath = path.empty() ? key.text : path + "." + key.text;
    for (const Yaml& earlier : map.keys) {
      if (earlier.text == key.text) {
        fail(key.line, keyPath,
             "duplicate key (first set on line " + std::to_string(earlier.line) + ")");
      }
    }
    lastKeyPath = keyPath;
    map.keys.push_back(std::move(key));
  }
};

// ---------------------------------------------------------------------------------------------
// Reading values. A Field is the place a value came from, for error messages.

struct Field {
  const std::string& file;
  std::string key;
  int line;

  [[noreturn]] void fail(const std::string& problem) const {
    throw ConfigError(file, line, key, problem);
  }
};

// Appends `text` with quotes, backslashes and control bytes escaped (\x..).
void appendEscaped(std::string& out, std::string_view text) {
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buffer[8];
      snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
}

std::string shown(std::string_view text) {
  constexpr size_t MAX_SHOWN = 60;
  std::string out = "\"";
  appendEscaped(out, text.substr(0, MAX_SHOWN));
  if (text.size() > MAX_SHOWN) out += "...";
  return out + "\"";
}

// What the value is, for "expected X, got Y".
std::string describe(const Yaml& node) {
  switch (node.kind) {
    case Yaml::Kind::NUL:
      return "nothing";
    case Yaml::Kind::MAP:
      return "a map";
    case Yaml::Kind::SEQUENCE:
      return "a list";
    case Yaml::Kind::SCALAR:
      break;
  }
  if (node.plain) return shown(node.text);
  return "the quoted string " + shown(node.text);
}

// YAML 1.1 booleans, which other YAML tools would read as true/false rather than as text.
bool isYamlBoolean(std::string_view text) {
  static const char* const WORDS[] = {"y", "yes", "n", "no", "true", "false", "on", "off"};
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return std::find(std::begin(WORDS), std::end(WORDS), lower) != std::end(WORDS);
}

// A scalar meant as text: refuses maps, lists, nothing, and unquoted booleans.
const std::string& readText(const Field& field, const Yaml& node, const std::string& expected) {
  if (node.kind != Yaml::Kind::SCALAR)
    field.fail("expected " + expected + ", got " + describe(node));
  if (node.plain && isYamlBoolean(node.text)) {
    field.fail("expected " + expected + ", got the boolean " + node.text +
               "; put it in quotes if you mean the text");
  }
  return node.text;
}

bool isNameChar(unsigned char c) {
  return std::isalnum(c) || c == '.' || c == '_' || c == '-';
}

std::optional<std::string> nameProblem(std::string_view name) {
  if (name.empty()) return "must not be empty";
  if (name.size() > MAX_NAME_CHARS) {
    return "is " + std::to_string(name.size()) + " characters long; at most " +
           std::to_string(MAX_NAME_CHARS) + " are allowed";
  }
  if (!std::all_of(name.begin(), name.end(), isNameChar)) {
    return shown(name) + " may contain only letters, digits, '.', '_' and '-'";
  }
  return std::nullopt;
}

std::string readName(const Field& field, const Yaml& node) {
  const std::string& name = readText(field, node, "a name");
  if (auto problem = nameProblem(name)) field.fail("name " + *problem);
  return name;
}

std::string readPath(const Field& field, const Yaml& node) {
  const std::string& path = readText(field, node, "an absolute path");
  if (path.empty() || path[0] != '/') {
    field.fail("expected an absolute path (starting with /), got " + shown(path));
  }
  if (path.find('\0') != std::string::npos) field.fail("path contains a NUL byte");
  if (path.size() >= PATH_MAX) field.fail("path is longer than " + std::to_string(PATH_MAX - 1));
  return path;
}

bool allDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

// "expected a whole number of milliseconds", "... of bytes", or plain "a whole number".
uint64_t readWhole(const Field& field, const Yaml& node, const std::string& unit, uint64_t min,
                   uint64_t max) {
  std::string expected = "expected a whole number" + (unit.empty() ? "" : " of " + unit);
  if (node.kind != Yaml::Kind::SCALAR) field.fail(expected + ", got " + describe(node));
  const std::string& text = node.text;
  if (!node.plain) {
    field.fail(expected + ", got " + describe(node) +
               (allDigits(text) ? "; write the number without quotes" : ""));
  }
  if (text.size() > 1 && text[0] == '-' && allDigits(text.substr(1))) {
    field.fail("must not be negative, got " + text);
  }
  if (!allDigits(text)) field.fail(expected + ", got " + describe(node));
  if (text.size() > 1 && text[0] == '0') {
    field.fail("leading zeros are ambiguous (octal in YAML 1.1), got " + text);
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > max) {
    field.fail("out of range: at most " + std::to_string(max) + ", got " + text);
  }
  if (value < min) field.fail("must be at least " + std::to_string(min) + ", got " + text);
  return value;
}

uint32_t readMs(const Field& field, const Yaml& node, uint64_t min, uint64_t max) {
  return static_cast<uint32_t>(readWhole(field, node, "milliseconds", min, max));
}

double readDrift(const Field& field, const Yaml& node) {
  std::string expected = "expected a number such as 0.01";
  if (node.kind != Yaml::Kind::SCALAR || !node.plain) {
    field.fail(expected + ", got " + describe(node));
  }
  const std::string& text = node.text;
  bool numeric = !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isdigit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
  });
  double value = 0;
  auto [end, ec] = numeric ? std::from_chars(text.data(), text.data() + text.size(), value)
                           : std::from_chars_result{text.data(), std::errc::invalid_argument};
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    field.fail(expected + ", got " + describe(node));
  }
  if (!(value >= 0 && value < 0.5)) {
    field.fail("must be at least 0 and less than 0.5 (a drift rate, e.g. 0.01 for 1%), got " +
               text);
  }
  return value;
}

uint32_t readMode(const Field& field, const Yaml& node) {
  std::string expected = "expected an octal permission mode such as \"0660\"";
  if (node.kind != Yaml::Kind::SCALAR) field.fail(expected + ", got " + describe(node));
  std::string_view digits = node.text;
  if (digits.substr(0, 2) == "0o" || digits.substr(0, 2) == "0O") digits.remove_prefix(2);
  bool octal = !digits.empty() && std::all_of(digits.begin(), digits.end(),
                                              [](char c) { return c >= '0' && c <= '7'; });
  if (!octal) field.fail(expected + ", got " + describe(node));
  uint64_t mode = 0;
  for (char c : digits) {
    mode = mode * 8 + static_cast<uint64_t>(c - '0');
    if (mode > 0777) field.fail("must be at most 0777, got " + node.text);
  }
  return static_cast<uint32_t>(mode);
}

std::string readGroup(const Field& field, const Yaml& node) {
  if (node.kind == Yaml::Kind::NUL) return "";
  const std::string& group = readText(field, node, "a group name or number");
  if (group.empty()) return "";
  if (group.size() > 32 || group[0] == '-' ||
      !std::all_of(group.begin(), group.end(), isNameChar)) {
    field.fail("expected a group name of up to 32 letters, digits, '.', '_' or '-', got " +
               shown(group));
  }
  return group;
}

bool isUnspecifiedHost(const std::string& host) {
  return host == "0.0.0.0" || host == "::";
}

bool conflicts(const PeerAddress& a, const PeerAddress& b) {
  return a.port == b.port &&
         (a.host == b.host || isUnspecifiedHost(a.host) || isUnspecifiedHost(b.host));
}

PeerAddress readAddress(const Field& field, const Yaml& node) {
  const std::string& text = readText(field, node, "host:port");
  std::string whyNot;
  auto address = parseHostPort(text, whyNot);
  if (!address) field.fail("expected host:port, got " + shown(text) + ": " + whyNot);
  return *address;
}

std::optional<PeerAddress> readOptionalAddress(const Field& field, const Yaml& node) {
  if (node.kind == Yaml::Kind::NUL) return std::nullopt;
  if (node.kind == Yaml::Kind::SCALAR && node.text.empty()) return std::nullopt;
  return readAddress(field, node);
}

std::map<std::string, PeerAddress> readPeers(const Field& field, const Yaml& node) {
  if (node.kind != Yaml::Kind::MAP) {
    field.fail("expected a map of member name to host:port, got " + describe(node));
  }
  std::map<std::string, PeerAddress> peers;
  std::map<std::string, int> lines;
  for (size_t i = 0; i < node.keys.size(); ++i) {
    const Yaml& key = node.keys[i];
    Field entry{field.file, "peers." + key.text, key.line};
    std::string name = readName(entry, key);
    Field value{field.file, entry.key,
                node.values[i].kind == Yaml::Kind::NUL ? key.line : node.values[i].line};
    PeerAddress address = readAddress(value, node.values[i]);
    if (isUnspecifiedHost(address.host)) {
      value.fail(address.toString() +
                 " is not an address other members can connect to; give this member's own "
                 "address (listen may be 0.0.0.0:port)");
    }
    for (const auto& [otherName, other] : peers) {
      if (other == address) {
        value.fail(address.toString() + " is also the address of " + otherName + " (line " +
                   std::to_string(lines[otherName]) + ")");
      }
    }
    peers.emplace(name, address);
    lines[name] = key.line;
  }
  if (peers.empty() || peers.size() > MAX_PEERS) {
    field.fail("needs 1 to " + std::to_string(MAX_PEERS) + " members, got " +
               std::to_string(peers.size()));
  }
  return peers;
}

// ---------------------------------------------------------------------------------------------
// The key table.

using Apply = std::function<void(const Field&, const Yaml&, Config&)>;

struct KeySpec {
  const char* name;
  Apply apply;
};

const std::vector<KeySpec>& keySpecs() {
  static const std::vector<KeySpec> SPECS = {
      {"cluster_id", [](auto& f, auto& v, Config& c) { c.clusterId = readName(f, v); }},
      {"node", [](auto& f, auto& v, Config& c) { c.node = readName(f, v); }},
      {"listen", [](auto& f, auto& v, Config& c) { c.listen = readAddress(f, v); }},
      {"peers", [](auto& f, auto& v, Config& c) { c.peers = readPeers(f, v); }},
      {"data_dir", [](auto& f, auto& v, Config& c) { c.dataDir = readPath(f, v); }},
      {"socket",
       [](auto& f, auto& v, Config& c) {
         c.socket = readPath(f, v);
         if (c.socket.size() > MAX_SOCKET_PATH_BYTES) {
           f.fail("path is " + std::to_string(c.socket.size()) +
                  " bytes long; a Unix socket path may have at most " +
                  std::to_string(MAX_SOCKET_PATH_BYTES));
         }
       }},
      {"socket_mode", [](auto& f, auto& v, Config& c) { c.socketMode = readMode(f, v); }},
      {"socket_group", [](auto& f, auto& v, Config& c) { c.socketGroup = readGroup(f, v); }},
      {"heartbeat_ms",
       [](auto& f, auto& v, Config& c) { c.heartbeatMs = readMs(f, v, 1, MAX_GROUP_TIMING_MS); }},
      {"election_timeout_ms",
       [](auto& f, auto& v, Config& c) {
         c.electionTimeoutMs = readMs(f, v, 1, MAX_GROUP_TIMING_MS);
       }},
      {"leader_lease_ms",
       [](auto& f, auto& v, Config& c) { c.leaderLeaseMs = readMs(f, v, 1, MAX_GROUP_TIMING_MS); }},
      {"max_clock_drift", [](auto& f, auto& v, Config& c) { c.maxClockDrift = readDrift(f, v); }},
      {"lease_ttl_min_ms",
       [](auto& f, auto& v, Config& c) { c.leaseTtlMinMs = readMs(f, v, 1, MAX_LEASE_TTL_MS); }},
      {"lease_ttl_max_ms",
       [](auto& f, auto& v, Config& c) { c.leaseTtlMaxMs = readMs(f, v, 1, MAX_LEASE_TTL_MS); }},
      {"lock_delay_ms",
       [](auto& f, auto& v, Config& c) { c.lockDelayMs = readMs(f, v, 0, MAX_LEASE_TTL_MS); }},
      {"max_key_bytes",
       [](auto& f, auto& v, Config& c) {
         c.maxKeyBytes = readWhole(f, v, "bytes", 1, MAX_KEY_BYTES_LIMIT);
       }},
      {"max_value_bytes",
       [](auto& f, auto& v, Config& c) {
         c.maxValueBytes = readWhole(f, v, "bytes", 1, MAX_VALUE_BYTES_LIMIT);
       }},
      {"store_limit_bytes",
       [](auto& f, auto& v, Config& c) {
         c.storeLimitBytes =
             readWhole(f, v, "bytes", MIN_STORE_LIMIT_BYTES, std::numeric_limits<uint64_t>::max());
       }},
      {"metrics_listen",
       [](auto& f, auto& v, Config& c) { c.metricsListen = readOptionalAddress(f, v); }},
      {"history_revisions",
       [](auto& f, auto& v, Config& c) {
         c.historyRevisions = readWhole(f, v, "", 1, MAX_HISTORY_REVISIONS);
       }},
      {"log_retention_slots",
       [](auto& f, auto& v, Config& c) {
         c.logRetentionSlots = readWhole(f, v, "", 1, MAX_HISTORY_REVISIONS);
       }},
  };
  return SPECS;
}

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Lowercase without separators: "heartbeatMs", "heartbeat-ms" and "heartbeat_ms" all match.
std::string squashed(std::string_view key) {
  std::string out;
  for (unsigned char c : key) {
    if (c != '_' && c != '-') out += static_cast<char>(std::tolower(c));
  }
  return out;
}

std::string suggestionFor(const std::string& unknown) {
  const char* best = nullptr;
  size_t bestDistance = std::numeric_limits<size_t>::max();
  for (const KeySpec& spec : keySpecs()) {
    std::string_view known = spec.name;
    size_t distance = squashed(unknown) == squashed(known) ? 0 : editDistance(unknown, known);
    if (distance < bestDistance && distance <= 3 && distance < known.size() / 2) {
      best = spec.name;
      bestDistance = distance;
    }
  }
  return best ? std::string("; did you mean ") + best + "?" : "";
}

// ---------------------------------------------------------------------------------------------
// Consistency between keys, checked once every key is read.

// Names `preferred` if it was set in the file, else `other` (the value that was set is the
// one to look at), else `preferred` without a line.
Field fieldFor(const Config& config, const char* preferred, const char* other) {
  int line = config.keyLines.find(preferred);
  if (line == 0 && config.keyLines.find(other) != 0) {
    return Field{config.sourcePath, other, config.keyLines.find(other)};
  }
  return Field{config.sourcePath, preferred, line};
}

std::string setOrDefault(const Config& config, const char* key) {
  return config.keyLines.find(key) ? "" : ", the default";
}

void checkMembership(Config& config) {
  const std::string& file = config.sourcePath;
  if (config.keyLines.find("node") == 0) {
    throw ConfigError(file, 0, "node", "required key is missing: the name of this member");
  }
  if (config.keyLines.find("peers") == 0) {
    throw ConfigError(file, 0, "peers",
                      "required key is missing: a map of member name to host:port");
  }
  auto self = config.peers.find(config.node);
  if (self == config.peers.end()) {
    std::string names;
    for (const auto& name : config.peerNames())
      names += (names.empty() ? "" : ", ") + name;
    Field{file, "node", config.keyLines.find("node")}.fail(config.node + " is not among peers (" +
                                                           names +
                                                           "); peers must list every member, "
                                                           "this one included");
  }
  if (config.keyLines.find("listen") == 0) {
    config.listen = self->second;
    return;
  }
  for (const auto& [name, address] : config.peers) {
    if (name != config.node && address == config.listen) {
      Field{file, "listen", config.keyLines.find("listen")}.fail(
          config.listen.toString() + " is the address of peer " + name + ", not of " + config.node);
    }
  }
}

void checkTiming(const Config& c) {
  auto ms = [](uint32_t value) { return std::to_string(value) + " ms"; };
  if (uint64_t{c.heartbeatMs} * 2 >= c.leaderLeaseMs) {
    fieldFor(c, "heartbeat_ms", "leader_lease_ms")
        .fail("heartbeat_ms (" + ms(c.heartbeatMs) + setOrDefault(c, "heartbeat_ms") +
              ") must be less than half of leader_lease_ms (" + ms(c.leaderLeaseMs) +
              setOrDefault(c, "leader_lease_ms") +
              "), so a lost heartbeat does not end the leader's lease");
  }
  if (c.leaderLeaseMs >= c.electionTimeoutMs) {
    fieldFor(c, "leader_lease_ms", "election_timeout_ms")
        .fail("leader_lease_ms (" + ms(c.leaderLeaseMs) + setOrDefault(c, "leader_lease_ms") +
              ") must be less than election_timeout_ms (" + ms(c.electionTimeoutMs) +
              setOrDefault(c, "election_timeout_ms") +
              "), so the old lease has ended when a follower starts an election");
  }
  if (c.leaseTtlMinMs > c.leaseTtlMaxMs) {
    fieldFor(c, "lease_ttl_min_ms", "lease_ttl_max_ms")
        .fail("lease_ttl_min_ms (" + ms(c.leaseTtlMinMs) + setOrDefault(c, "lease_ttl_min_ms") +
              ") must not exceed lease_ttl_max_ms (" + ms(c.leaseTtlMaxMs) +
              setOrDefault(c, "lease_ttl_max_ms") + ")");
  }
  if (c.leaseTtlMinMs <= c.electionTimeoutMs) {
    fieldFor(c, "lease_ttl_min_ms", "election_timeout_ms")
        .fail("lease_ttl_min_ms (" + ms(c.leaseTtlMinMs) + setOrDefault(c, "lease_ttl_min_ms") +
              ") must be greater than election_timeout_ms (" + ms(c.electionTimeoutMs) +
              setOrDefault(c, "election_timeout_ms") +
              "): no keepalive can be committed while the group elects a new leader, so a "
              "shorter lease would expire in every leader change");
  }
  if (c.lockDelayMs > c.leaseTtlMaxMs) {
    fieldFor(c, "lock_delay_ms", "lease_ttl_max_ms")
        .fail("lock_delay_ms (" + ms(c.lockDelayMs) + ") must not exceed lease_ttl_max_ms (" +
              ms(c.leaseTtlMaxMs) + setOrDefault(c, "lease_ttl_max_ms") + ")");
  }
}

void checkSizes(const Config& c) {
  if (c.maxKeyBytes + c.maxValueBytes >= c.storeLimitBytes) {
    fieldFor(c, "store_limit_bytes", "max_value_bytes")
        .fail("store_limit_bytes (" + std::to_string(c.storeLimitBytes) +
              ") must be greater than max_key_bytes + max_value_bytes (" +
              std::to_string(c.maxKeyBytes + c.maxValueBytes) + ")");
  }
}

void checkMetrics(const Config& c) {
  if (c.metricsListen && conflicts(*c.metricsListen, c.listen)) {
    fieldFor(c, "metrics_listen", "listen")
        .fail(c.metricsListen->toString() + " would share its port with listen (" +
              c.listen.toString() + ")");
  }
}

void validate(Config& config) {
  checkMembership(config);
  checkTiming(config);
  checkSizes(config);
  checkMetrics(config);
}

Yaml parseYaml(std::string_view text, const std::string& sourceName) {
  if (text.size() > MAX_FILE_BYTES) {
    throw ConfigError(sourceName, 0, "",
                      "file is " + std::to_string(text.size()) +
                          " bytes; a configuration "
                          "may have at most " +
                          std::to_string(MAX_FILE_BYTES));
  }
  std::istringstream stream{std::string(text)};
  TreeBuilder builder;
  try {
    YAML::Parser parser(stream);
    if (parser.HandleNextDocument(builder) && !builder.error && builder.root) {
      Yaml first = std::move(*builder.root);
      if (parser.HandleNextDocument(builder)) {
        throw ConfigError(sourceName, builder.root ? builder.root->line : 0, "",
                          "more than one YAML document; a configuration is a single map");
      }
      builder.root = std::move(first);
    }
  } catch (const YAML::Exception& e) {
    std::string where =
        builder.lastKeyPath.empty() ? "" : " (after key " + builder.lastKeyPath + ")";
    throw ConfigError(sourceName, e.mark.is_null() ? 0 : e.mark.line + 1, "",
                      "invalid YAML" + where + ": " + e.msg);
  }
  if (builder.error) {
    throw ConfigError(sourceName, builder.error->line, builder.error->key, builder.error->problem);
  }
  if (!builder.root || builder.root->kind != Yaml::Kind::MAP) {
    throw ConfigError(sourceName, builder.root ? builder.root->line : 0, "",
                      "expected a map of settings (key: value lines), got " +
                          (builder.root ? describe(*builder.root) : std::string("nothing")));
  }
  return std::move(*builder.root);
}

void appendQuoted(std::string& out, std::string_view text) {
  out += '"';
  appendEscaped(out, text);
  out += '"';
}

// Shortest text that reads back as the same double.
std::string formatDouble(double value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, ec == std::errc() ? end : buffer);
}

bool isHostnameChar(unsigned char c) {
  return std::isalnum(c) || c == '-' || c == '_' || c == '.';
}

std::optional<std::string> hostProblem(std::string& host, bool bracketed) {
  if (host.empty()) return std::string("the host is empty");
  if (bracketed) {
    in6_addr address;
    if (inet_pton(AF_INET6, host.c_str(), &address) != 1) {
      return std::string("[" + host + "] is not a valid IPv6 address");
    }
    char canonical[INET6_ADDRSTRLEN];
    host = inet_ntop(AF_INET6, &address, canonical, sizeof canonical);
    return std::nullopt;
  }
  if (host.find(':') != std::string::npos) {
    return std::string("an IPv6 address goes in brackets, e.g. [::1]:7101");
  }
  if (std::all_of(host.begin(), host.end(),
                  [](unsigned char c) { return std::isdigit(c) || c == '.'; })) {
    in_addr address;
    if (inet_pton(AF_INET, host.c_str(), &address) != 1) {
      return host + " is not a valid IPv4 address";
    }
    return std::nullopt;
  }
  if (host.size() > 253 || !std::all_of(host.begin(), host.end(), isHostnameChar) ||
      host.front() == '.' || host.back() == '.' || host.find("..") != std::string::npos ||
      host.front() == '-') {
    return shown(host) + " is not a valid host name";
  }
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string PeerAddress::toString() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::optional<PeerAddress> parseHostPort(std::string_view text, std::string& whyNot) {
  std::string host;
  std::string_view rest;
  bool bracketed = !text.empty() && text[0] == '[';
  if (bracketed) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      whyNot = "the ] closing the IPv6 address is missing";
      return std::nullopt;
    }
    host = std::string(text.substr(1, close - 1));
    rest = text.substr(close + 1);
    if (rest.empty() || rest[0] != ':') {
      whyNot = "the :port is missing";
      return std::nullopt;
    }
    rest.remove_prefix(1);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      whyNot = "the :port is missing";
      return std::nullopt;
    }
    host = std::string(text.substr(0, colon));
    rest = text.substr(colon + 1);
  }
  if (auto problem = hostProblem(host, bracketed)) {
    whyNot = *problem;
    return std::nullopt;
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), port);
  if (!allDigits(rest) || ec != std::errc() || end != rest.data() + rest.size() || port < 1 ||
      port > 65535) {
    whyNot = "the port must be a number from 1 to 65535";
    return std::nullopt;
  }
  return PeerAddress{host, static_cast<uint16_t>(port)};
}

int Config::KeyLines::find(const std::string& key) const {
  auto it = lineOf.find(key);
  return it == lineOf.end() ? 0 : it->second;
}

size_t Config::nodeIndex() const {
  auto it = peers.find(node);
  if (it == peers.end()) throw std::logic_error("node " + node + " is not among peers");
  return static_cast<size_t>(std::distance(peers.begin(), it));
}

std::vector<std::string> Config::peerNames() const {
  std::vector<std::string> names;
  for (const auto& entry : peers)
    names.push_back(entry.first);
  return names;
}

ConfigError::ConfigError(std::string file, int line, std::string key, std::string problem)
    : std::runtime_error(file + (line > 0 ? ":" + std::to_string(line) : "") + ": " +
                         (key.empty() ? "" : key + ": ") + problem),
      file_(std::move(file)),
      line_(line),
      key_(std::move(key)),
      problem_(std::move(problem)) {}

Config parseConfig(std::string_view yamlText, const std::string& sourceName) {
  Yaml root = parseYaml(yamlText, sourceName);
  Config config;
  config.sourcePath = sourceName;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const Yaml& key = root.keys[i];
    const Yaml& value = root.values[i];
    const auto& specs = keySpecs();
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&](const KeySpec& s) { return key.text == s.name; });
    if (spec == specs.end()) {
      throw ConfigError(sourceName, key.line, key.text, "unknown key" + suggestionFor(key.text));
    }
    // A scalar may sit on the line after its key. An empty value is marked at the next token,
    // and a block map at its first entry: for those, the key's line is where to look.
    int line = value.kind == Yaml::Kind::SCALAR ? value.line : key.line;
    spec->apply(Field{sourceName, key.text, line}, value, config);
    config.keyLines.lineOf[key.text] = key.line;
  }
  validate(config);
  return config;
}

Config loadConfigFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ConfigError(path, 0, "", std::string("cannot read: ") + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ConfigError(path, 0, "", "cannot read: not a regular file");
  }
  std::string text;
  char buffer[65536];
  while (text.size() <= MAX_FILE_BYTES) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      throw ConfigError(path, 0, "", std::string("cannot read: ") + strerror(error));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return parseConfig(text, path);
}

Config devConfig(const std::string& baseDir) {
  std::filesystem::path base = std::filesystem::absolute(baseDir).lexically_normal();
  std::filesystem::path member = base / "n1";
  std::string text = "node: n1\npeers:\n  n1: 127.0.0.1:7101\n";
  text += "data_dir: ";
  appendQuoted(text, (member / "data").string());
  text += "\nsocket: ";
  appendQuoted(text, (member / "synod.sock").string());
  text += "\n";
  try {
    return parseConfig(text, "<dev>");
  } catch (const ConfigError& e) {
    // Lines of the generated text mean nothing to the user.
    throw ConfigError(e.file(), 0, e.key(),
                      e.problem() + " (in --dev under " + base.string() + ")");
  }
}

std::string renderConfig(const Config& c) {
  std::string source;
  for (char ch : c.sourcePath)
    source += (static_cast<unsigned char>(ch) < 0x20 ? '?' : ch);
  std::string out = "# effective synod configuration, from " + source + "\n";
  auto text = [&](const char* key, std::string_view value) {
    out += key;
    out += ": ";
    appendQuoted(out, value);
    out += '\n';
  };
  auto number = [&](const char* key, auto value) {
    out += std::string(key) + ": " + std::to_string(value) + "\n";
  };
  text("cluster_id", c.clusterId);
  text("node", c.node);
  text("listen", c.listen.toString());
  out += "peers:\n";
  for (const auto& [name, address] : c.peers) {
    out += "  ";
    appendQuoted(out, name);
    out += ": ";
    appendQuoted(out, address.toString());
    out += '\n';
  }
  text("data_dir", c.dataDir);
  text("socket", c.socket);
  char mode[16];
  snprintf(mode, sizeof mode, "%04o", c.socketMode);
  text("socket_mode", mode);
  text("socket_group", c.socketGroup);
  number("heartbeat_ms", c.heartbeatMs);
  number("election_timeout_ms", c.electionTimeoutMs);
  number("leader_lease_ms", c.leaderLeaseMs);
  out += "max_clock_drift: " + formatDouble(c.maxClockDrift) + "\n";
  number("lease_ttl_min_ms", c.leaseTtlMinMs);
  number("lease_ttl_max_ms", c.leaseTtlMaxMs);
  number("lock_delay_ms", c.lockDelayMs);
  number("max_key_bytes", c.maxKeyBytes);
  number("max_value_bytes", c.maxValueBytes);
  number("store_limit_bytes", c.storeLimitBytes);
  text("metrics_listen", c.metricsListen ? c.metricsListen->toString() : "");
  number("history_revisions", c.historyRevisions);
  number("log_retention_slots", c.logRetentionSlots);
  return out;
}

void checkDataDir(const Config& config) {
  Field field{config.sourcePath, "data_dir", config.keyLines.find("data_dir")};
  namespace fs = std::filesystem;
  fs::path target = fs::path(config.dataDir).lexically_normal();
  auto writable = [](const fs::path& dir) {
    return faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) == 0;
  };
  struct stat st;
  fs::path existing = target;
  // ENOTDIR: a component is a file; the walk up finds it and reports it.
  while (::stat(existing.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      std::string reason = strerror(errno);
      field.fail("cannot use " + config.dataDir + ": " + existing.string() + ": " + reason);
    }
    fs::path parent = existing.parent_path();
    if (parent == existing) field.fail("cannot use " + config.dataDir + ": no ancestor exists");
    existing = parent;
  }
  bool exists = existing == target;
  std::string verb = exists ? "cannot use " : "cannot create ";
  std::string what = exists ? "it" : existing.string();
  if (!S_ISDIR(st.st_mode)) {
    field.fail(verb + config.dataDir + ": " + what + " is not a directory");
  }
  if (!writable(existing)) {
    std::string reason = strerror(errno);
    field.fail(verb + config.dataDir + ": " + what + " is not writable by this user (" + reason +
               ")");
  }
}

uint64_t settingsHash(const Config& c) {
  // Changing this text changes every hash: members running old and new versions would refuse
  // each other. Bump the version tag with any change.
  std::string canonical = "synod-settings-v1\ncluster_id=" + c.clusterId + "\n";
  for (const auto& [name, address] : c.peers) {
    canonical += "peer=" + name + " " + address.toString() + "\n";
  }
  canonical += "heartbeat_ms=" + std::to_string(c.heartbeatMs) + "\n";
  canonical += "election_timeout_ms=" + std::to_string(c.electionTimeoutMs) + "\n";
  canonical += "leader_lease_ms=" + std::to_string(c.leaderLeaseMs) + "\n";
  canonical += "max_clock_drift=" + formatDouble(c.maxClockDrift) + "\n";
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char byte : canonical) {
    hash ^= byte;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

namespace {

struct KeyView {
  const char* key;
  bool live;
  std::function<std::string(const Config&)> render;
};

template <typename Member>
KeyView numberKey(const char* key, bool live, Member member) {
  return {key, live, [member](const Config& c) { return std::to_string(c.*member); }};
}

std::string quotedText(std::string_view value) {
  std::string out;
  appendQuoted(out, value);
  return out;
}

// Every setting in renderConfig's order; SIGHUP's view of the configuration.
const std::vector<KeyView>& keyViews() {
  static const std::vector<KeyView> views = {
      {"cluster_id", false, [](const Config& c) { return quotedText(c.clusterId); }},
      {"node", false, [](const Config& c) { return quotedText(c.node); }},
      {"listen", false, [](const Config& c) { return c.listen.toString(); }},
      {"peers", false,
       [](const Config& c) {
         std::string out;
         for (const auto& [name, address] : c.peers)
           out += (out.empty() ? "" : ", ") + name + "=" + address.toString();
         return out;
       }},
      {"data_dir", false, [](const Config& c) { return quotedText(c.dataDir); }},
      {"socket", false, [](const Config& c) { return quotedText(c.socket); }},
      {"socket_mode", false,
       [](const Config& c) {
         char mode[16];
         snprintf(mode, sizeof mode, "%04o", c.socketMode);
         return std::string(mode);
       }},
      {"socket_group", false, [](const Config& c) { return quotedText(c.socketGroup); }},
      numberKey("heartbeat_ms", false, &Config::heartbeatMs),
      numberKey("election_timeout_ms", false, &Config::electionTimeoutMs),
      numberKey("leader_lease_ms", false, &Config::leaderLeaseMs),
      {"max_clock_drift", false, [](const Config& c) { return formatDouble(c.maxClockDrift); }},
      numberKey("lease_ttl_min_ms", true, &Config::leaseTtlMinMs),
      numberKey("lease_ttl_max_ms", true, &Config::leaseTtlMaxMs),
      numberKey("lock_delay_ms", true, &Config::lockDelayMs),
      numberKey("max_key_bytes", true, &Config::maxKeyBytes),
      numberKey("max_value_bytes", true, &Config::maxValueBytes),
      numberKey("store_limit_bytes", true, &Config::storeLimitBytes),
      {"metrics_listen", false,
       [](const Config& c) {
         return c.metricsListen ? c.metricsListen->toString() : std::string("\"\"");
       }},
      numberKey("history_revisions", false, &Config::historyRevisions),
      numberKey("log_retention_slots", false, &Config::logRetentionSlots),
  };
  return views;
}

}  // namespace

bool isLiveKey(std::string_view key) {
  for (const KeyView& view : keyViews()) {
    if (key == view.key) return view.live;
  }
  return false;
}

std::vector<ConfigChange> diffConfigs(const Config& before, const Config& after) {
  std::vector<ConfigChange> changes;
  for (const KeyView& view : keyViews()) {
    std::string old = view.render(before);
    std::string now = view.render(after);
    if (old != now) changes.push_back(ConfigChange{view.key, old, now, view.live});
  }
  return changes;
}

void applyLiveKeys(Config& into, const Config& from) {
  into.leaseTtlMinMs = from.leaseTtlMinMs;
  into.leaseTtlMaxMs = from.leaseTtlMaxMs;
  into.lockDelayMs = from.lockDelayMs;
  into.maxKeyBytes = from.maxKeyBytes;
  into.maxValueBytes = from.maxValueBytes;
  into.storeLimitBytes = from.storeLimitBytes;
}

Config withLiveKeys(const Config& running, const Config& loaded) {
  Config merged = running;
  applyLiveKeys(merged, loaded);
  merged.sourcePath = loaded.sourcePath;
  merged.keyLines = loaded.keyLines;
  // Only the checks that relate live keys to each other and to restart-only ones: the rest of
  // `running` was validated when it started.
  checkTiming(merged);
  checkSizes(merged);
  return merged;
}

}  // namespace synod::daemon
