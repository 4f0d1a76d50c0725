#include "daemon/config.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace synod::daemon {
namespace {

namespace fs = std::filesystem;

const std::string FILE_NAME = "/etc/synod/synod.yaml";
const std::string FIXTURES = SYNOD_CONFIG_FIXTURES;

// A valid three-member configuration of five lines; tests append the line under test as line 6.
const std::string BASE =
    "node: n1\n"
    "peers:\n"
    "  n1: 127.0.0.1:7101\n"
    "  n2: 127.0.0.1:7102\n"
    "  n3: 127.0.0.1:7103\n";

ConfigError errorOf(const std::string& yaml) {
  try {
    parseConfig(yaml, FILE_NAME);
  } catch (const ConfigError& e) {
    return e;
  }
  FAIL("accepted:\n" << yaml);
  return ConfigError("", 0, "", "");
}

// The error names the file, the line and the key, and says `fragment`.
void expectError(const std::string& yaml, int line, const std::string& key,
                 const std::string& fragment) {
  ConfigError e = errorOf(yaml);
  std::string what = e.what();
  INFO("yaml:\n" << yaml << "error: " << what);
  CHECK(e.file() == FILE_NAME);
  CHECK(e.line() == line);
  CHECK(e.key() == key);
  std::string prefix = FILE_NAME + (line > 0 ? ":" + std::to_string(line) : "") + ": " +
                       (key.empty() ? "" : key + ": ");
  CHECK(what.rfind(prefix, 0) == 0);
  CHECK(what.find(fragment) != std::string::npos);
}

// A fresh directory under the build tree's temporary area, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "synod-config-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path, ignored);
  }
};

TEST_CASE("minimal file: defaults for every optional key") {
  Config c = loadConfigFile(FIXTURES + "/minimal.yaml");
  CHECK(c.sourcePath == FIXTURES + "/minimal.yaml");
  CHECK(c.clusterId == "synod");
  CHECK(c.node == "n1");
  CHECK(c.peers.size() == 1);
  CHECK(c.listen == PeerAddress{"127.0.0.1", 7101});
  CHECK(c.dataDir == "/var/lib/synod");
  CHECK(c.socket == "/run/synod/synod.sock");
  CHECK(c.socketMode == 0660);
  CHECK(c.socketGroup.empty());
  CHECK(c.heartbeatMs == 50);
  CHECK(c.electionTimeoutMs == 500);
  CHECK(c.leaderLeaseMs == 400);
  CHECK(c.maxClockDrift == 0.01);
  CHECK(c.leaseTtlMinMs == 1000);
  CHECK(c.leaseTtlMaxMs == 3600000);
  CHECK(c.lockDelayMs == 0);
  CHECK(c.maxKeyBytes == 511);
  CHECK(c.maxValueBytes == 1048576);
  CHECK(c.storeLimitBytes == 2147483648ull);
  CHECK(!c.metricsListen);
  CHECK(c.historyRevisions == 10000);
  CHECK(c.nodeIndex() == 0);
}

TEST_CASE("full file: every key read") {
  Config c = loadConfigFile(FIXTURES + "/full.yaml");
  CHECK(c.clusterId == "prod-eu.1");
  CHECK(c.node == "beta");
  CHECK(c.listen == PeerAddress{"0.0.0.0", 7202});
  CHECK(c.peerNames() == std::vector<std::string>{"alpha", "beta", "delta", "epsilon", "gamma"});
  CHECK(c.nodeIndex() == 1);
  CHECK(c.peers.at("gamma") == PeerAddress{"fd00::3", 7203});
  CHECK(c.peers.at("gamma").toString() == "[fd00::3]:7203");
  CHECK(c.peers.at("delta") == PeerAddress{"db-4.example.net", 7204});
  CHECK(c.dataDir == "/srv/synod/data");
  CHECK(c.socket == "/run/synod-prod/api.sock");
  CHECK(c.socketMode == 0640);
  CHECK(c.socketGroup == "synod-clients");
  CHECK(c.heartbeatMs == 100);
  CHECK(c.electionTimeoutMs == 1500);
  CHECK(c.leaderLeaseMs == 1000);
  CHECK(c.maxClockDrift == 0.02);
  CHECK(c.leaseTtlMinMs == 2000);
  CHECK(c.leaseTtlMaxMs == 86400000);
  CHECK(c.lockDelayMs == 5000);
  CHECK(c.maxKeyBytes == 500);
  CHECK(c.maxValueBytes == 65536);
  CHECK(c.storeLimitBytes == 1073741824);
  REQUIRE(c.metricsListen);
  CHECK(*c.metricsListen == PeerAddress{"127.0.0.1", 9102});
  CHECK(c.historyRevisions == 50000);
  CHECK(c.keyLines.find("heartbeat_ms") == 15);
}

TEST_CASE("file that cannot be read") {
  SUBCASE("missing") {
    try {
      loadConfigFile("/nonexistent/synod.yaml");
      FAIL("accepted a missing file");
    } catch (const ConfigError& e) {
      CHECK(std::string(e.what()) ==
            "/nonexistent/synod.yaml: cannot read: No such file or directory");
    }
  }
  SUBCASE("a directory") {
    CHECK_THROWS_WITH_AS(loadConfigFile(FIXTURES),
                         (FIXTURES + ": cannot read: not a regular file").c_str(), ConfigError);
  }
}

TEST_CASE("YAML syntax errors name the line") {
  expectError(BASE + "heartbeat_ms: [1, 2\n", 7, "", "invalid YAML (after key heartbeat_ms");
  expectError("node: n1\n  peers: x\n", 2, "", "invalid YAML");
  expectError("node: n1\n- n2\n", 2, "", "invalid YAML");
}

TEST_CASE("the top level must be one map") {
  expectError("", 0, "", "expected a map of settings");
  expectError("# nothing but a comment\n", 0, "", "expected a map of settings");
  expectError("- node: n1\n", 1, "", "got a list");
  expectError("n1\n", 1, "", "got \"n1\"");
  expectError(BASE + "---\nnode: n2\n", 7, "", "more than one YAML document");
}

TEST_CASE("unknown keys, with a suggestion when one is close") {
  expectError(BASE + "heartbeat: 50\n", 6, "heartbeat", "unknown key; did you mean heartbeat_ms?");
  expectError(BASE + "heartbeatMs: 50\n", 6, "heartbeatMs", "did you mean heartbeat_ms?");
  expectError(BASE + "peer: x\n", 6, "peer", "did you mean peers?");
  ConfigError e = errorOf(BASE + "colour: blue\n");
  CHECK(std::string(e.what()) == FILE_NAME + ":6: colour: unknown key");
}

TEST_CASE("duplicate keys at any level") {
  expectError(BASE + "heartbeat_ms: 50\nheartbeat_ms: 60\n", 7, "heartbeat_ms",
              "duplicate key (first set on line 6)");
  expectError(BASE + "node: n2\n", 6, "node", "duplicate key (first set on line 1)");
  expectError(BASE + "  n2: 127.0.0.1:7104\n", 6, "peers.n2",
              "duplicate key (first set on line 4)");
  expectError("node: n1\npeers: {n1: \"127.0.0.1:7101\", n1: \"127.0.0.1:7102\"}\n", 2, "peers.n1",
              "duplicate key");
}

TEST_CASE("wrong types") {
  expectError(BASE + "heartbeat_ms: fast\n", 6, "heartbeat_ms",
              "expected a whole number of milliseconds, got \"fast\"");
  CHECK(std::string(errorOf(BASE + "heartbeat_ms: fast\n").what()) ==
        FILE_NAME + ":6: heartbeat_ms: expected a whole number of milliseconds, got \"fast\"");
  expectError(BASE + "heartbeat_ms: \"50\"\n", 6, "heartbeat_ms",
              "got the quoted string \"50\"; write the number without quotes");
  expectError(BASE + "heartbeat_ms: -5\n", 6, "heartbeat_ms", "must not be negative, got -5");
  expectError(BASE + "heartbeat_ms: 1.5\n", 6, "heartbeat_ms", "whole number of milliseconds");
  expectError(BASE + "heartbeat_ms: 050\n", 6, "heartbeat_ms", "leading zeros");
  expectError(BASE + "heartbeat_ms: 0\n", 6, "heartbeat_ms", "must be at least 1");
  expectError(BASE + "heartbeat_ms: 99999999999\n", 6, "heartbeat_ms", "out of range");
  expectError(BASE + "store_limit_bytes: 99999999999999999999999\n", 6, "store_limit_bytes",
              "out of range");
  expectError(BASE + "heartbeat_ms:\n", 6, "heartbeat_ms", "got nothing");
  expectError(BASE + "heartbeat_ms: [50]\n", 6, "heartbeat_ms", "got a list");
  expectError(BASE + "history_revisions: lots\n", 6, "history_revisions",
              "expected a whole number, got \"lots\"");
  expectError(BASE + "max_value_bytes: 1MiB\n", 6, "max_value_bytes", "whole number of bytes");
  expectError(BASE + "cluster_id: true\n", 6, "cluster_id", "got the boolean true");
  expectError(BASE + "cluster_id: {a: b}\n", 6, "cluster_id", "got a map");
  expectError(BASE + "data_dir: yes\n", 6, "data_dir", "got the boolean yes");
  expectError(BASE + "max_clock_drift: low\n", 6, "max_clock_drift", "expected a number");
  expectError(BASE + "max_clock_drift: nan\n", 6, "max_clock_drift", "expected a number");
  expectError(BASE + "max_clock_drift: \"0.01\"\n", 6, "max_clock_drift", "expected a number");
  expectError(BASE + "socket_group: false\n", 6, "socket_group", "got the boolean false");
  expectError(BASE + "listen: 7101\n", 6, "listen", "the :port is missing");
  expectError(BASE + "cluster_id: &name n1\nsocket_group: *name\n", 7, "", "aliases");
  expectError(BASE + "heartbeat_ms: !custom 50\n", 6, "", "unsupported YAML tag");
  // A value on the line after its key is reported where it is.
  expectError(BASE + "heartbeat_ms:\n  fast\n", 7, "heartbeat_ms", "got \"fast\"");
  // Quoting makes a boolean-looking word a name.
  CHECK(parseConfig(BASE + "cluster_id: \"yes\"\n", FILE_NAME).clusterId == "yes");
}

TEST_CASE("required keys") {
  expectError("peers:\n  n1: 127.0.0.1:7101\n", 0, "node", "required key is missing");
  expectError("node: n1\n", 0, "peers", "required key is missing");
  expectError("node: n1\npeers:\n", 2, "peers", "expected a map of member name to host:port");
  expectError("node: n1\npeers: {}\n", 2, "peers", "needs 1 to 7 members, got 0");
  expectError("node: n1\npeers: [127.0.0.1:7101]\n", 2, "peers", "got a list");
}

TEST_CASE("names: cluster_id, node and peer names") {
  expectError(BASE + "cluster_id: \"\"\n", 6, "cluster_id", "must not be empty");
  expectError(BASE + "cluster_id: a b\n", 6, "cluster_id", "only letters, digits");
  expectError(BASE + "cluster_id: " + std::string(64, 'x') + "\n", 6, "cluster_id",
              "is 64 characters long; at most 63");
  CHECK(parseConfig(BASE + "cluster_id: " + std::string(63, 'x') + "\n", FILE_NAME)
            .clusterId.size() == 63);
  expectError("node: n/1\npeers:\n  n1: 127.0.0.1:7101\n", 1, "node", "only letters");
  expectError("node: n1\npeers:\n  n1: 127.0.0.1:7101\n  n 2: 127.0.0.1:7102\n", 4, "peers.n 2",
              "only letters");
}

TEST_CASE("host:port syntax") {
  auto bad = [](const std::string& address, const std::string& fragment) {
    expectError(BASE + "listen: \"" + address + "\"\n", 6, "listen", fragment);
  };
  bad("127.0.0.1", "the :port is missing");
  bad("127.0.0.1:0", "a number from 1 to 65535");
  bad("127.0.0.1:65536", "a number from 1 to 65535");
  bad("127.0.0.1:http", "a number from 1 to 65535");
  bad("127.0.0.1:", "a number from 1 to 65535");
  bad(":7101", "the host is empty");
  bad("::1:7101", "an IPv6 address goes in brackets");
  bad("[::1:7101", "the ] closing the IPv6 address is missing");
  bad("[::1]", "the :port is missing");
  bad("[nope]:7101", "not a valid IPv6 address");
  bad("127.0.0.256:7101", "not a valid IPv4 address");
  bad("bad..host:7101", "not a valid host name");
  bad("ho st:7101", "not a valid host name");

  std::string whyNot;
  auto v6 = parseHostPort("[0:0:0:0:0:0:0:1]:7101", whyNot);
  REQUIRE(v6);
  CHECK(v6->host == "::1");  // canonical form, so equal addresses compare equal
  CHECK(v6->toString() == "[::1]:7101");
  auto name = parseHostPort("Node-1.Example.NET:65535", whyNot);
  REQUIRE(name);
  CHECK(name->host == "node-1.example.net");
  CHECK(name->port == 65535);
}

TEST_CASE("membership") {
  expectError("node: n4\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7102\n", 1, "node",
              "n4 is not among peers (n1, n2)");
  expectError(BASE + "  n4: 127.0.0.1:7102\n", 6, "peers.n4",
              "127.0.0.1:7102 is also the address of n2 (line 4)");
  expectError(BASE + "  n4: \"[::1]:7101\"\n  n5: \"[0::1]:7101\"\n", 7, "peers.n5",
              "also the address of n4");
  expectError("node: n1\npeers:\n  n1: 0.0.0.0:7101\n", 3, "peers.n1",
              "not an address other members can connect to");
  std::string eight = "node: n1\npeers:\n";
  for (int i = 1; i <= 8; ++i) {
    eight += "  n" + std::to_string(i) + ": 127.0.0.1:" + std::to_string(7100 + i) + "\n";
  }
  expectError(eight, 2, "peers", "needs 1 to 7 members, got 8");

  // Even counts are allowed (not recommended).
  CHECK(parseConfig("node: b\npeers:\n  a: h1:1\n  b: h2:1\n", FILE_NAME).nodeIndex() == 1);

  // listen may differ from the advertised address, but not be another member's.
  Config c = parseConfig(BASE + "listen: 0.0.0.0:8101\n", FILE_NAME);
  CHECK(c.listen == PeerAddress{"0.0.0.0", 8101});
  CHECK(c.peers.at("n1") == PeerAddress{"127.0.0.1", 7101});
  expectError(BASE + "listen: 127.0.0.1:7102\n", 6, "listen", "is the address of peer n2");
}

TEST_CASE("inconsistent timing") {
  expectError(
      BASE + "heartbeat_ms: 200\n", 6, "heartbeat_ms",
      "heartbeat_ms (200 ms) must be less than half of leader_lease_ms (400 ms, the default)");
  // The key that was set is the one named.
  expectError(BASE + "leader_lease_ms: 100\n", 6, "leader_lease_ms",
              "must be less than half of leader_lease_ms");
  expectError(BASE + "leader_lease_ms: 500\n", 6, "leader_lease_ms",
              "must be less than election_timeout_ms (500 ms, the default)");
  expectError(BASE + "election_timeout_ms: 300\n", 6, "election_timeout_ms",
              "leader_lease_ms (400 ms, the default) must be less than election_timeout_ms");
  expectError(BASE + "max_clock_drift: 0.5\n", 6, "max_clock_drift",
              "at least 0 and less than 0.5");
  expectError(BASE + "max_clock_drift: -0.1\n", 6, "max_clock_drift", "less than 0.5");
  expectError(BASE + "lease_ttl_min_ms: 5000\nlease_ttl_max_ms: 4000\n", 6, "lease_ttl_min_ms",
              "must not exceed lease_ttl_max_ms (4000 ms)");
  expectError(BASE + "lease_ttl_min_ms: 500\n", 6, "lease_ttl_min_ms",
              "must be greater than election_timeout_ms (500 ms, the default): no keepalive "
              "can be committed while the group elects a new leader");
  expectError(BASE + "election_timeout_ms: 2000\nleader_lease_ms: 1000\n", 6, "election_timeout_ms",
              "lease_ttl_min_ms (1000 ms, the default) must be greater");
  expectError(BASE + "lock_delay_ms: 20000\nlease_ttl_max_ms: 10000\n", 6, "lock_delay_ms",
              "must not exceed lease_ttl_max_ms");
  expectError(BASE + "election_timeout_ms: 60001\n", 6, "election_timeout_ms",
              "out of range: at most 60000");

  Config c = parseConfig(BASE + "max_clock_drift: 0\nlock_delay_ms: 0\n", FILE_NAME);
  CHECK(c.maxClockDrift == 0);
  CHECK(parseConfig(BASE + "max_clock_drift: 1e-3\n", FILE_NAME).maxClockDrift == 0.001);
}

TEST_CASE("sizes") {
  expectError(BASE + "max_key_bytes: 0\n", 6, "max_key_bytes", "must be at least 1");
  expectError(BASE + "max_key_bytes: 512\n", 6, "max_key_bytes", "at most 511");
  CHECK(parseConfig(BASE + "max_key_bytes: 511\n", FILE_NAME).maxKeyBytes == 511);
  expectError(BASE + "max_value_bytes: 0\n", 6, "max_value_bytes", "must be at least 1");
  expectError(BASE + "store_limit_bytes: 16777215\n", 6, "store_limit_bytes",
              "must be at least 16777216");
  expectError(BASE + "store_limit_bytes: 16777216\nmax_value_bytes: 16777216\n", 6,
              "store_limit_bytes", "greater than max_key_bytes + max_value_bytes");
  expectError(BASE + "history_revisions: 0\n", 6, "history_revisions", "at least 1");
}

TEST_CASE("socket settings and paths") {
  CHECK(parseConfig(BASE + "socket_mode: \"0600\"\n", FILE_NAME).socketMode == 0600);
  CHECK(parseConfig(BASE + "socket_mode: 0640\n", FILE_NAME).socketMode == 0640);
  CHECK(parseConfig(BASE + "socket_mode: 660\n", FILE_NAME).socketMode == 0660);
  CHECK(parseConfig(BASE + "socket_mode: 0o777\n", FILE_NAME).socketMode == 0777);
  expectError(BASE + "socket_mode: \"0690\"\n", 6, "socket_mode", "expected an octal");
  expectError(BASE + "socket_mode: 01000\n", 6, "socket_mode", "at most 0777");
  expectError(BASE + "socket_mode: rw\n", 6, "socket_mode", "expected an octal");
  expectError(BASE + "socket: synod.sock\n", 6, "socket", "expected an absolute path");
  expectError(BASE + "data_dir: var/data\n", 6, "data_dir", "expected an absolute path");
  expectError(BASE + "socket: /" + std::string(107, 's') + "\n", 6, "socket",
              "108 bytes long; a Unix socket path may have at most 107");
  CHECK(parseConfig(BASE + "socket: /" + std::string(106, 's') + "\n", FILE_NAME).socket.size() ==
        107);
  expectError(BASE + "socket_group: \"-x\"\n", 6, "socket_group", "expected a group name");
  CHECK(parseConfig(BASE + "socket_group: \"\"\n", FILE_NAME).socketGroup.empty());
  CHECK(parseConfig(BASE + "socket_group: 1001\n", FILE_NAME).socketGroup == "1001");
}

TEST_CASE("metrics_listen") {
  CHECK(!parseConfig(BASE + "metrics_listen:\n", FILE_NAME).metricsListen);
  CHECK(!parseConfig(BASE + "metrics_listen: \"\"\n", FILE_NAME).metricsListen);
  auto on = parseConfig(BASE + "metrics_listen: 127.0.0.1:9101\n", FILE_NAME).metricsListen;
  REQUIRE(on);
  CHECK(*on == PeerAddress{"127.0.0.1", 9101});
  expectError(BASE + "metrics_listen: 0.0.0.0:7101\n", 6, "metrics_listen",
              "would share its port with listen (127.0.0.1:7101)");
  expectError(BASE + "metrics_listen: 9101\n", 6, "metrics_listen", "the :port is missing");
}

TEST_CASE("renderConfig re-parses to an equal Config, with every key") {
  std::vector<Config> configs = {loadConfigFile(FIXTURES + "/full.yaml"),
                                 loadConfigFile(FIXTURES + "/minimal.yaml"),
                                 devConfig("/tmp/synod dev \"quoted\"")};
  configs.push_back(parseConfig(
      BASE + "data_dir: \"/srv/odd \\\"dir\\\" \\\\ \\t tab\"\nmax_clock_drift: 0.000123\n",
      FILE_NAME));
  for (const Config& c : configs) {
    std::string text = renderConfig(c);
    INFO(text);
    Config again = parseConfig(text, c.sourcePath);
    CHECK(again == c);
    CHECK(renderConfig(again) == text);
    for (const char* key : {"cluster_id",       "node",
                            "listen",           "peers",
                            "data_dir",         "socket",
                            "socket_mode",      "socket_group",
                            "heartbeat_ms",     "election_timeout_ms",
                            "leader_lease_ms",  "max_clock_drift",
                            "lease_ttl_min_ms", "lease_ttl_max_ms",
                            "lock_delay_ms",    "max_key_bytes",
                            "max_value_bytes",  "store_limit_bytes",
                            "metrics_listen",   "history_revisions"}) {
      CHECK(again.keyLines.find(key) > 0);
    }
  }
  CHECK(configs[3].dataDir == "/srv/odd \"dir\" \\ \t tab");
  std::string minimal = renderConfig(configs[1]);
  CHECK(minimal.find("socket_mode: \"0660\"\n") != std::string::npos);
  CHECK(minimal.find("metrics_listen: \"\"\n") != std::string::npos);
  CHECK(minimal.find("max_clock_drift: 0.01\n") != std::string::npos);
}

TEST_CASE("devConfig: the single-member layout of ./synod.sh up") {
  Config c = devConfig("/tmp/synod-dev");
  CHECK(c.sourcePath == "<dev>");
  CHECK(c.clusterId == "synod");
  CHECK(c.node == "n1");
  CHECK(c.peerNames() == std::vector<std::string>{"n1"});
  CHECK(c.listen == PeerAddress{"127.0.0.1", 7101});
  CHECK(c.dataDir == "/tmp/synod-dev/n1/data");
  CHECK(c.socket == "/tmp/synod-dev/n1/synod.sock");
  CHECK(c.heartbeatMs == 50);

  // A relative base is made absolute: the daemon may change directory.
  Config relative = devConfig("var");
  CHECK(relative.dataDir == (fs::current_path() / "var/n1/data").string());

  CHECK_THROWS_AS(devConfig("/" + std::string(120, 'd')), ConfigError);
}

TEST_CASE("checkDataDir") {
  TempDir tmp;
  auto withDataDir = [](const fs::path& dir) {
    Config c = parseConfig(BASE + "data_dir: \"" + dir.string() + "\"\n", FILE_NAME);
    return c;
  };
  CHECK_NOTHROW(checkDataDir(withDataDir(tmp.path)));
  CHECK_NOTHROW(checkDataDir(withDataDir(tmp.path / "not" / "yet")));
  CHECK(!fs::exists(tmp.path / "not"));  // creates nothing

  std::ofstream(tmp.path / "file") << "x";
  auto expectRefused = [&](const fs::path& dir, const std::string& fragment) {
    try {
      checkDataDir(withDataDir(dir));
      FAIL("accepted " << dir);
    } catch (const ConfigError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).rfind(FILE_NAME + ":6: data_dir: ", 0) == 0);
      CHECK(std::string(e.what()).find(fragment) != std::string::npos);
    }
  };
  expectRefused(tmp.path / "file", "it is not a directory");
  expectRefused(tmp.path / "file" / "data", (tmp.path / "file").string() + " is not a directory");

  // Root may write anywhere that is not read-only; /proc/1 refuses even root.
  fs::path locked = geteuid() == 0 ? fs::path("/proc/1") : tmp.path / "locked";
  if (geteuid() != 0) {
    fs::create_directory(locked);
    fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  }
  expectRefused(locked / "data", locked.string() + " is not writable");
  if (geteuid() != 0) expectRefused(locked, "it is not writable");
}

TEST_CASE("settingsHash: what members must agree on") {
  Config n1 = parseConfig(BASE, FILE_NAME);
  Config n2 = parseConfig(
      "node: n2\nlisten: 0.0.0.0:7102\ndata_dir: /srv/n2\nsocket: /run/n2.sock\n"
      "max_value_bytes: 4096\nmetrics_listen: 127.0.0.1:9102\n"
      "peers:\n  n3: 127.0.0.1:7103\n  n2: 127.0.0.1:7102\n  n1: 127.0.0.1:7101\n",
      "/other/synod.yaml");
  CHECK(settingsHash(n1) == settingsHash(n2));
  CHECK(settingsHash(n1) == settingsHash(parseConfig(renderConfig(n1), "x")));

  auto differs = [&](const std::string& line) {
    CHECK_MESSAGE(settingsHash(parseConfig(BASE + line, FILE_NAME)) != settingsHash(n1), line);
  };
  differs("heartbeat_ms: 40\n");
  differs("election_timeout_ms: 600\n");
  differs("leader_lease_ms: 300\n");
  differs("max_clock_drift: 0.02\n");
  differs("cluster_id: other\n");
  differs("  n4: 127.0.0.1:7104\n");
  CHECK(settingsHash(parseConfig("node: n1\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7109\n"
                                 "  n3: 127.0.0.1:7103\n",
                                 FILE_NAME)) != settingsHash(n1));
}

TEST_CASE("diffConfigs: nothing for equal settings, whatever the file and its layout") {
  Config a = parseConfig(BASE, FILE_NAME);
  Config b = parseConfig(
      "# reordered\npeers:\n  n3: 127.0.0.1:7103\n  n1: 127.0.0.1:7101\n"
      "  n2: 127.0.0.1:7102\nnode: n1\nmax_value_bytes: 1048576\n",
      "/elsewhere.yaml");
  CHECK(diffConfigs(a, b).empty());
}

TEST_CASE("diffConfigs: each changed key with both values, marked live or restart-only") {
  Config a = parseConfig(BASE, FILE_NAME);
  Config b = parseConfig(BASE + "max_value_bytes: 2097152\nheartbeat_ms: 40\n", FILE_NAME);
  auto changes = diffConfigs(a, b);
  REQUIRE(changes.size() == 2);
  CHECK(changes[0] == ConfigChange{"heartbeat_ms", "50", "40", false});
  CHECK(changes[1] == ConfigChange{"max_value_bytes", "1048576", "2097152", true});

  Config moved = parseConfig(
      "node: n1\npeers:\n  n1: 127.0.0.1:7101\n  n2: 127.0.0.1:7102\n  n4: 127.0.0.1:7104\n",
      FILE_NAME);
  changes = diffConfigs(a, moved);
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].key == "peers");
  CHECK_FALSE(changes[0].live);
  CHECK(changes[0].before == "n1=127.0.0.1:7101, n2=127.0.0.1:7102, n3=127.0.0.1:7103");
  CHECK(changes[0].after == "n1=127.0.0.1:7101, n2=127.0.0.1:7102, n4=127.0.0.1:7104");

  Config paths =
      parseConfig(BASE + "socket: /run/other.sock\nmetrics_listen: 127.0.0.1:9100\n", FILE_NAME);
  changes = diffConfigs(a, paths);
  REQUIRE(changes.size() == 2);
  CHECK(changes[0] ==
        ConfigChange{"socket", R"("/run/synod/synod.sock")", R"("/run/other.sock")", false});
  CHECK(changes[1].key == "metrics_listen");
  CHECK(changes[1].before == R"("")");
  CHECK(changes[1].after == "127.0.0.1:9100");
}

TEST_CASE("the live keys are the per-request limits; applyLiveKeys copies exactly those") {
  for (const char* key : {"lease_ttl_min_ms", "lease_ttl_max_ms", "lock_delay_ms", "max_key_bytes",
                          "max_value_bytes", "store_limit_bytes"}) {
    CHECK_MESSAGE(isLiveKey(key), key);
  }
  for (const char* key :
       {"cluster_id", "node", "listen", "peers", "data_dir", "socket", "socket_mode",
        "socket_group", "heartbeat_ms", "election_timeout_ms", "leader_lease_ms", "max_clock_drift",
        "metrics_listen", "history_revisions", "no_such_key"}) {
    CHECK_MESSAGE(!isLiveKey(key), key);
  }
  // Every key different: after applying, exactly the restart-only keys still differ.
  Config running = parseConfig(BASE, FILE_NAME);
  Config loaded = parseConfig(
      "cluster_id: other\nnode: n2\nlisten: 0.0.0.0:7202\ndata_dir: /srv/n2\n"
      "socket: /run/n2.sock\nsocket_mode: 0600\nsocket_group: wheel\nheartbeat_ms: 40\n"
      "election_timeout_ms: 700\nleader_lease_ms: 300\nmax_clock_drift: 0.02\n"
      "lease_ttl_min_ms: 2000\nlease_ttl_max_ms: 7200000\nlock_delay_ms: 10\n"
      "max_key_bytes: 100\nmax_value_bytes: 4096\nstore_limit_bytes: 33554432\n"
      "metrics_listen: 127.0.0.1:9102\nhistory_revisions: 50\n"
      "peers:\n  n2: 127.0.0.1:7202\n  n5: 127.0.0.1:7205\n  n6: 127.0.0.1:7206\n",
      "/other.yaml");
  REQUIRE(diffConfigs(running, loaded).size() == 20);
  applyLiveKeys(running, loaded);
  auto left = diffConfigs(running, loaded);
  CHECK(left.size() == 14);
  for (const auto& change : left)
    CHECK_MESSAGE(!change.live, change.key);
}

TEST_CASE("withLiveKeys refuses live values that do not fit the running restart-only ones") {
  Config running =
      parseConfig(BASE + "election_timeout_ms: 2000\nlease_ttl_min_ms: 3000\n", FILE_NAME);
  // Valid on its own (election timeout 500 ms), but the running election timeout is 2000 ms.
  Config loaded = parseConfig(BASE + "lease_ttl_min_ms: 1500\n", "/new.yaml");
  try {
    withLiveKeys(running, loaded);
    FAIL("accepted lease_ttl_min_ms below the running election timeout");
  } catch (const ConfigError& e) {
    CHECK(e.file() == "/new.yaml");
    CHECK(e.line() == 6);
    CHECK(e.key() == "lease_ttl_min_ms");
    CHECK(std::string(e.what()).find("election_timeout_ms (2000 ms") != std::string::npos);
  }
  Config fine = parseConfig(BASE + "lease_ttl_min_ms: 2500\nmax_value_bytes: 4096\n", "/new.yaml");
  Config merged = withLiveKeys(running, fine);
  CHECK(merged.leaseTtlMinMs == 2500);
  CHECK(merged.maxValueBytes == 4096);
  CHECK(merged.electionTimeoutMs == 2000);
}

}  // namespace
}  // namespace synod::daemon
