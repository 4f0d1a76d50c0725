// synod's configuration: the YAML file (/etc/synod/synod.yaml), its validation, the embedded
// `--dev` default, and the rendering printed by `synod --check-config`.
//
// Keys, defaults and limits (durations end in _ms, sizes in _bytes):
//
//   cluster_id           synod                   name: 1..63 of [A-Za-z0-9._-]
//   node                 required                name, and a key of `peers`
//   listen               peers[node]             host:port (may be 0.0.0.0:port or [::]:port)
//   peers                required                map name -> host:port, 1..7 members (odd
//                                                counts recommended: 4 tolerate no more
//                                                failures than 3)
//   data_dir             /var/lib/synod          absolute path
//   socket               /run/synod/synod.sock   absolute path, at most 107 bytes (sun_path)
//   socket_mode          0660                    octal as for chmod: "0660", 0660 or 660; <= 0777
//   socket_group         none                    group name or number; empty = none
//   heartbeat_ms         50                      1..60000, < leader_lease_ms / 2
//   election_timeout_ms  500                     1..60000, > leader_lease_ms
//   leader_lease_ms      400                     1..60000
//   max_clock_drift      0.01                    0 <= drift < 0.5
//   lease_ttl_min_ms     1000                    > election_timeout_ms, <= lease_ttl_max_ms
//   lease_ttl_max_ms     3600000 (1 h)           <= 604800000 (7 days)
//   lock_delay_ms        0                       <= lease_ttl_max_ms
//   max_key_bytes        511                     1..511 (LMDB's key size limit)
//   max_value_bytes      1048576 (1 MiB)         1..33554432 (32 MiB)
//   store_limit_bytes    2147483648 (2 GiB)      >= 16777216 (16 MiB), > max_key + max_value
//   metrics_listen       off                     host:port; empty = off
//   history_revisions    10000                   1..100000000
//   log_retention_slots  10000                   1..100000000; decided slots kept for peers
//
// Strictness: unknown keys, duplicate keys (at any level), wrong types (a quoted "50" where a
// number is expected, a boolean where a name is expected, 050 with its ambiguous leading zero)
// and inconsistent values are all refused with a ConfigError naming file, line and key.

#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace synod::daemon {

/// A host and a TCP port. `host` is a hostname, an IPv4 address or an IPv6 address without
/// brackets (brackets belong to the host:port text form only).
struct PeerAddress {
  std::string host;
  uint16_t port = 0;

  /// "host:port", with the host in brackets when it is an IPv6 address.
  std::string toString() const;
  bool operator==(const PeerAddress&) const = default;
};

/// Parses "host:port" ("[v6]:port" for IPv6). On failure returns nullopt and sets `whyNot` to a
/// short human explanation.
std::optional<PeerAddress> parseHostPort(std::string_view text, std::string& whyNot);

struct Config {
  std::string clusterId = "synod";
  std::string node;
  PeerAddress listen;
  /// Every voting member, this one included, sorted by name; a member's position in this order
  /// is its index in ballots.
  std::map<std::string, PeerAddress> peers;
  std::string dataDir = "/var/lib/synod";
  std::string socket = "/run/synod/synod.sock";
  uint32_t socketMode = 0660;
  std::string socketGroup;  // empty = leave the group alone
  uint32_t heartbeatMs = 50;
  uint32_t electionTimeoutMs = 500;
  uint32_t leaderLeaseMs = 400;
  double maxClockDrift = 0.01;
  uint32_t leaseTtlMinMs = 1000;
  uint32_t leaseTtlMaxMs = 3600000;
  uint32_t lockDelayMs = 0;
  uint64_t maxKeyBytes = 511;
  uint64_t maxValueBytes = 1048576;
  uint64_t storeLimitBytes = 2147483648;
  std::optional<PeerAddress> metricsListen;  // nullopt = no metrics endpoint
  uint64_t historyRevisions = 10000;
  // Decided and applied slots kept for peers that fall behind; a peer further behind catches up
  // by snapshot. Fewer keep the log file small; more spare short absences a snapshot.
  uint64_t logRetentionSlots = 10000;
  /// The file this came from, "<dev>" for devConfig().
  std::string sourcePath;

  /// The 1-based line each top-level key was set on, for errors found after parsing (e.g.
  /// checkDataDir). Provenance, not a setting: always compares equal.
  struct KeyLines {
    std::map<std::string, int> lineOf;
    int find(const std::string& key) const;  // 0 when the key was not in the file
    bool operator==(const KeyLines&) const { return true; }
  };
  KeyLines keyLines;

  /// Position of `node` in the sorted peer names. Precondition: the Config was validated.
  size_t nodeIndex() const;
  /// Peer names in ballot-index order.
  std::vector<std::string> peerNames() const;

  bool operator==(const Config&) const = default;
};

/// A configuration that cannot be used. what() is "FILE:LINE: KEY: problem"; the line is left
/// out when there is none (file unreadable, required key missing) and the key when the problem
/// is not about one (YAML syntax).
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, std::string key, std::string problem);

  const std::string& file() const { return file_; }
  int line() const { return line_; }  // 1-based; 0 = none
  const std::string& key() const { return key_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string file_;
  int line_;
  std::string key_;
  std::string problem_;
};

/// Reads, parses and validates the file at `path`. Throws ConfigError.
Config loadConfigFile(const std::string& path);

/// Parses and validates YAML text; `sourceName` names it in errors and becomes sourcePath.
/// Throws ConfigError.
Config parseConfig(std::string_view yamlText, const std::string& sourceName);

/// The single-member configuration of `synod --dev`: member n1 of cluster "synod" at
/// 127.0.0.1:7101, data in BASE/n1/data, socket BASE/n1/synod.sock, where BASE is `baseDir`
/// made absolute. Throws ConfigError if the result is invalid (e.g. the socket path is too long).
Config devConfig(const std::string& baseDir);

/// The effective configuration as YAML with every key, parseable back into an equal Config.
std::string renderConfig(const Config& config);

/// Throws ConfigError unless data_dir could be used: it is a writable directory, or it does not
/// exist and its nearest existing ancestor is a writable directory. Creates nothing.
void checkDataDir(const Config& config);

/// One top-level key whose value differs between two configurations (SIGHUP).
struct ConfigChange {
  std::string key;
  std::string before;  // rendered as by renderConfig; peers as "n1=host:port, n2=host:port"
  std::string after;
  bool live = false;  // SIGHUP applies it; else it takes effect at the next start

  bool operator==(const ConfigChange&) const = default;
};

/// Whether SIGHUP applies `key` to a running daemon: the limits checked per request
/// (lease_ttl_min_ms, lease_ttl_max_ms, lock_delay_ms, max_key_bytes, max_value_bytes,
/// store_limit_bytes). Membership, group timing, paths, sockets, listen addresses and
/// history_revisions need a restart.
bool isLiveKey(std::string_view key);

/// The keys whose values differ, in renderConfig's order. Provenance (sourcePath, keyLines) is
/// not compared.
std::vector<ConfigChange> diffConfigs(const Config& before, const Config& after);

/// `running` with the live keys of `loaded`: what SIGHUP would run with. Throws ConfigError
/// (naming loaded's file and line) when the live values do not fit the running restart-only
/// ones, e.g. lease_ttl_min_ms not above the running election_timeout_ms.
Config withLiveKeys(const Config& running, const Config& loaded);

/// Copies the live keys of `from` into `into` field by field; nothing else in `into` is touched
/// (references into its maps stay valid). Precondition: withLiveKeys(into, from) did not throw.
void applyLiveKeys(Config& into, const Config& from);

/// FNV-1a 64 over a canonical text of what every member must agree on: cluster_id, peer names
/// and addresses, heartbeat, election timeout, leader lease and max clock drift. Members compare
/// it in the peer handshake. Independent of node, listen, paths and the local limits.
uint64_t settingsHash(const Config& config);

}  // namespace synod::daemon
