// The text that explains why a member is not ready (STATUS= and `synodctl health`).
#include "daemon/readiness.h"

#include <doctest/doctest.h>

using synod::daemon::MemberInfo;
using synod::daemon::NodeStatus;
using synod::daemon::waitingFor;

namespace {

NodeStatus groupOf(size_t members, size_t reachable) {
  NodeStatus status;
  status.member = "n1";
  for (size_t i = 0; i < members; ++i) {
    MemberInfo member;
    member.name = "n" + std::to_string(i + 1);
    member.reachable = i < reachable;
    status.members.push_back(member);
  }
  return status;
}

}  // namespace

TEST_CASE("fewer than a majority reachable: waiting for a quorum, counted") {
  CHECK(waitingFor(groupOf(3, 1)) == "waiting for a quorum: 1 of 3 members reachable");
  CHECK(waitingFor(groupOf(5, 2)) == "waiting for a quorum: 2 of 5 members reachable");
}

TEST_CASE("a majority reachable but no leader known: waiting for a leader") {
  CHECK(waitingFor(groupOf(3, 2)) == "waiting for a leader: 2 of 3 members reachable");
  CHECK(waitingFor(groupOf(5, 3)) == "waiting for a leader: 3 of 5 members reachable");
}

TEST_CASE("a member recovering an empty data dir says so, once a quorum is reachable") {
  NodeStatus status = groupOf(3, 2);
  status.recoveryStage = "waiting for answers from 2 other members (1 so far)";
  CHECK(waitingFor(status) ==
        "recovering an empty data dir, not voting yet: waiting for answers from 2 other members "
        "(1 so far)");
  status.members[1].reachable = false;
  CHECK(waitingFor(status) == "waiting for a quorum: 1 of 3 members reachable");
}

TEST_CASE("a leader known and slots decided but not applied: catching up") {
  NodeStatus status = groupOf(3, 3);
  status.leader = "n2";
  status.decidedSlot = 120;
  status.appliedSlot = 5;
  CHECK(waitingFor(status) == "catching up: applied slot 5 of 120");
}

TEST_CASE("up to date with a leader: waiting for the confirmation round") {
  NodeStatus status = groupOf(3, 2);
  status.leader = "n2";
  status.decidedSlot = status.appliedSlot = 7;
  CHECK(waitingFor(status) == "confirming the leadership of n2 with a quorum");
}

TEST_CASE("a group of one is its own quorum") {
  NodeStatus status = groupOf(1, 1);
  CHECK(waitingFor(status) == "waiting for a leader: 1 of 1 members reachable");
}
