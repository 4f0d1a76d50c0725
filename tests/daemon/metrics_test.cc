// The Prometheus text exposition (daemon/metrics.h) and what a member exports
// (daemon/metrics_server.h, renderMemberMetrics).
#include "daemon/metrics.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/metrics_server.h"

using synod::daemon::escapeHelp;
using synod::daemon::escapeLabelValue;
using synod::daemon::formatMetricValue;
using synod::daemon::Histogram;
using synod::daemon::MemberInfo;
using synod::daemon::MemberMetrics;
using synod::daemon::MemberReport;
using synod::daemon::MetricsText;
using synod::daemon::PeerTransport;

namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

// A strict reading of the text format: every line is "# HELP name text", "# TYPE name type" or
// "name{label="value",...} value"; each family has one HELP and one TYPE line, both before its
// first sample, and its samples are contiguous. Returns sample -> value ("name{labels}" as key).
std::map<std::string, std::string> parseStrictly(const std::string& text) {
  static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter|histogram))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*\})? (\S+))");
  std::map<std::string, std::string> samples;
  std::map<std::string, std::string> types;
  std::set<std::string> helped, finished;
  std::string current;
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  for (const auto& line : lines(text)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      INFO(line);
      CHECK(helped.insert(m[1]).second);
      CHECK(types.count(m[1]) == 0);
    } else if (std::regex_match(line, m, type)) {
      INFO(line);
      CHECK(helped.count(m[1]) == 1);
      CHECK(types.emplace(m[1], m[2]).second);
      if (!current.empty()) finished.insert(current);
      current = m[1];
    } else {
      INFO(line);
      REQUIRE(std::regex_match(line, m, sample));
      std::string name = m[1];
      std::string family = name;
      if (types.count(family) == 0) {
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          std::string s(suffix);
          if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
              types.count(name.substr(0, name.size() - s.size())) == 1)
            family = name.substr(0, name.size() - s.size());
        }
      }
      REQUIRE(types.count(family) == 1);
      CHECK(family == current);
      CHECK(finished.count(family) == 0);
      CHECK(samples.emplace(name + std::string(m[2]), m[7]).second);
    }
  }
  return samples;
}

MemberMetrics sampleMember(bool leading) {
  MemberMetrics m;
  m.status.member = "n2";
  m.leading = leading;
  m.status.role = leading ? "leader" : "follower";
  m.status.ballot = {7, 1};
  m.status.leader = leading ? "n2" : "n1";
  m.status.decidedSlot = 40;
  m.status.appliedSlot = 39;
  m.status.revision = 12;
  m.status.incarnation = 3;
  m.status.uptimeMs = 1500;
  m.leases = 12;
  m.localLeases = 5;
  m.locks = 3;
  m.leaseCounters.renewBatches = 9;
  m.leaseCounters.renewals = 40;
  m.leaseCounters.expiries = 2;
  m.leaseCounters.checkpoints = 1;
  m.status.dbSizeBytes = 4096;
  for (const char* name : {"n1", "n2", "n3"}) {
    MemberInfo info;
    info.name = name;
    info.reachable = std::string(name) != "n3";
    info.lagSlots = std::string(name) == "n1" ? 5 : 0;
    m.status.members.push_back(info);
  }
  m.status.members[0].report = MemberReport{};
  m.status.members[0].reportAgeMs = 250;
  m.peerStats = {PeerTransport::PeerStats{}, std::nullopt, PeerTransport::PeerStats{}};
  m.peerStats[0]->sent = 100;
  m.peerStats[2]->dialFailures = 4;
  m.counters.groupCommitSeconds.observe(0.0003);
  m.counters.commits = 1;
  m.counters.slotCommands.observe(3);
  m.storeLimitBytes = 1 << 20;
  m.catchUp.snapshotsInstalled = 2;
  return m;
}

}  // namespace

TEST_CASE("histogram buckets are cumulative, bounds inclusive, +Inf equals the count") {
  Histogram h({0.1, 0.5, 1});
  for (double v : {0.05, 0.1, 0.3, 0.5, 0.7, 2.0, 3.0})
    h.observe(v);
  h.observe(std::nan(""));  // ignored
  CHECK(h.count() == 7);
  CHECK(h.sum() == doctest::Approx(6.65));
  MetricsText text;
  text.histogram("x_seconds", "X.", {{"member", "n1"}}, h);
  auto samples = parseStrictly(text.render());
  CHECK(samples.at("x_seconds_bucket{member=\"n1\",le=\"0.1\"}") == "2");
  CHECK(samples.at("x_seconds_bucket{member=\"n1\",le=\"0.5\"}") == "4");
  CHECK(samples.at("x_seconds_bucket{member=\"n1\",le=\"1\"}") == "5");
  CHECK(samples.at("x_seconds_bucket{member=\"n1\",le=\"+Inf\"}") == "7");
  CHECK(samples.at("x_seconds_count{member=\"n1\"}") == "7");
  CHECK(std::stod(samples.at("x_seconds_sum{member=\"n1\"}")) == doctest::Approx(6.65));
  // _sum and _count follow the buckets.
  auto all = lines(text.render());
  CHECK(all.back() == "x_seconds_count{member=\"n1\"} 7");
}

TEST_CASE("an empty histogram renders every bucket at zero") {
  MetricsText text;
  text.histogram("empty", "Nothing yet.", {}, Histogram({1, 2}));
  CHECK(text.render() ==
        "# HELP empty Nothing yet.\n# TYPE empty histogram\nempty_bucket{le=\"1\"} 0\n"
        "empty_bucket{le=\"2\"} 0\nempty_bucket{le=\"+Inf\"} 0\nempty_sum 0\nempty_count 0\n");
}

TEST_CASE(
    "label values escape backslash, double quote and newline; HELP escapes backslash and "
    "newline") {
  CHECK(escapeLabelValue("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
  CHECK(escapeLabelValue("plain {},=") == "plain {},=");
  CHECK(escapeHelp("one\\two\nthree \"quoted\"") == "one\\\\two\\nthree \"quoted\"");
  MetricsText text;
  text.gauge("g", "Line one\nline two \\ end", {{"peer", "we\"ird\\\nname"}}, 1);
  CHECK(text.render() ==
        "# HELP g Line one\\nline two \\\\ end\n# TYPE g gauge\n"
        "g{peer=\"we\\\"ird\\\\\\nname\"} 1\n");
  parseStrictly(text.render());
}

TEST_CASE("HELP and TYPE come once per family, samples of a family together") {
  MetricsText text;
  for (const char* peer : {"n1", "n2", "n3"}) {
    text.gauge("a_reachable", "A.", {{"peer", peer}}, 1);
    text.counter("a_sent_total", "B.", {{"peer", peer}}, 10);
  }
  text.gauge("a_reachable", "Another help is ignored.", {{"peer", "n4"}}, 0);
  std::string out = text.render();
  auto samples = parseStrictly(out);
  CHECK(samples.size() == 7);
  CHECK(out.find("# TYPE a_reachable gauge") < out.find("# TYPE a_sent_total counter"));
  CHECK(out.find("Another help") == std::string::npos);
  CHECK(samples.at("a_reachable{peer=\"n4\"}") == "0");
}

TEST_CASE("values: shortest round trip, integers without a point, infinities and NaN") {
  CHECK(formatMetricValue(0) == "0");
  CHECK(formatMetricValue(42) == "42");
  CHECK(formatMetricValue(0.005) == "0.005");
  CHECK(formatMetricValue(0.0005) == "0.0005");
  CHECK(formatMetricValue(0.00005) == "0.00005");
  CHECK(formatMetricValue(2.5e-300) == "2.5e-300");
  CHECK(formatMetricValue(1.5) == "1.5");
  CHECK(formatMetricValue(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(formatMetricValue(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(formatMetricValue(std::nan("")) == "NaN");
  CHECK(std::stod(formatMetricValue(1795760167243358.0)) == 1795760167243358.0);
}

TEST_CASE("a follower's metrics: role, ballot, peers without lag, transport counters") {
  auto samples = parseStrictly(renderMemberMetrics(sampleMember(false)));
  CHECK(samples.at("synod_role{member=\"n2\",role=\"follower\"}") == "1");
  CHECK(samples.at("synod_role{member=\"n2\",role=\"leader\"}") == "0");
  CHECK(samples.at("synod_role{member=\"n2\",role=\"candidate\"}") == "0");
  CHECK(samples.at("synod_ballot_round{member=\"n2\"}") == "7");
  CHECK(samples.at("synod_ballot_member{member=\"n2\"}") == "1");
  CHECK(samples.at("synod_leader_known{member=\"n2\"}") == "1");
  CHECK(samples.at("synod_decided_slot{member=\"n2\"}") == "40");
  CHECK(samples.at("synod_applied_slot{member=\"n2\"}") == "39");
  CHECK(samples.at("synod_uptime_seconds{member=\"n2\"}") == "1.5");
  CHECK(samples.at("synod_peer_reachable{member=\"n2\",peer=\"n1\"}") == "1");
  CHECK(samples.at("synod_peer_reachable{member=\"n2\",peer=\"n3\"}") == "0");
  CHECK(samples.count("synod_peer_reachable{member=\"n2\",peer=\"n2\"}") == 0);
  // Only the leader knows lags; a peer without a report has no age.
  for (const auto& [name, value] : samples)
    CHECK(name.find("synod_peer_lag_slots") == std::string::npos);
  CHECK(samples.at("synod_peer_report_age_seconds{member=\"n2\",peer=\"n1\"}") == "0.25");
  CHECK(samples.count("synod_peer_report_age_seconds{member=\"n2\",peer=\"n3\"}") == 0);
  CHECK(samples.at("synod_peer_messages_sent_total{member=\"n2\",peer=\"n1\"}") == "100");
  CHECK(samples.at("synod_peer_dial_failures_total{member=\"n2\",peer=\"n3\"}") == "4");
  CHECK(samples.at("synod_group_commit_duration_seconds_bucket{member=\"n2\",le=\"0.00025\"}") ==
        "0");
  CHECK(samples.at("synod_group_commit_duration_seconds_bucket{member=\"n2\",le=\"0.0005\"}") ==
        "1");
  CHECK(samples.at("synod_fsync_duration_seconds_count{member=\"n2\"}") == "0");
  CHECK(samples.at("synod_commits_total{member=\"n2\"}") == "1");
  CHECK(samples.at("synod_slot_commands_bucket{member=\"n2\",le=\"4\"}") == "1");
  CHECK(samples.at("synod_store_used_bytes{member=\"n2\"}") == "4096");
  CHECK(samples.at("synod_store_limit_bytes{member=\"n2\"}") == "1048576");
  CHECK(samples.at("synod_snapshots_installed_total{member=\"n2\"}") == "2");
  CHECK(samples.at("synod_recovering{member=\"n2\"}") == "0");
  CHECK(samples.at("synod_leases{member=\"n2\"}") == "12");
  CHECK(samples.at("synod_leases_local{member=\"n2\"}") == "5");
  CHECK(samples.at("synod_locks{member=\"n2\"}") == "3");
  CHECK(samples.at("synod_lease_renew_batches_total{member=\"n2\"}") == "9");
  CHECK(samples.at("synod_lease_renewals_total{member=\"n2\"}") == "40");
  CHECK(samples.at("synod_lease_expiries_total{member=\"n2\"}") == "2");
  CHECK(samples.at("synod_lease_checkpoints_total{member=\"n2\"}") == "1");
}

TEST_CASE("the leader's metrics carry each peer's lag") {
  auto samples = parseStrictly(renderMemberMetrics(sampleMember(true)));
  CHECK(samples.at("synod_role{member=\"n2\",role=\"leader\"}") == "1");
  CHECK(samples.at("synod_peer_lag_slots{member=\"n2\",peer=\"n1\"}") == "5");
  CHECK(samples.at("synod_peer_lag_slots{member=\"n2\",peer=\"n3\"}") == "0");
}

TEST_CASE("a member without a transport (group of one) exports no peer counters") {
  MemberMetrics m = sampleMember(true);
  m.peerStats.assign(3, std::nullopt);
  auto samples = parseStrictly(renderMemberMetrics(m));
  for (const auto& [name, value] : samples)
    CHECK(name.find("synod_peer_messages") == std::string::npos);
}
