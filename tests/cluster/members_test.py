#!/usr/bin/env python3
"""Per-member status from any member: a 3-member group on loopback, `synodctl status --json` and
`synodctl members --json` asked at a follower show every member's report (role, db size, report
age, state digest); a killed follower becomes unreachable and stale in the others' view.

usage: members_test.py SYNOD SYNODCTL [TEST-NAME|'']
"""
import json
import signal
import subprocess
import time

from harness import Group, Shell, check, main, wait_until

# Far above the 1 s report interval: only catches reports that stopped flowing.
REPORT_AGE_BOUND_MS = 10000


def ctl_json(group, name, *args):
    p = subprocess.run([group.synodctl, "--socket", group.socket(name), "--json",
                        "--timeout", "2000", *args], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)


def by_name(members):
    return {m["name"]: m for m in members}


def test_every_member_from_a_follower(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    follower = next(n for n in group.names if n != leader)
    shell = Shell(synodctl, group.socket(leader))
    for i in range(40):
        check(shell.call(f"put members/{i} value{i}").get("ok"), f"put members/{i} failed")
    shell.close()

    def converged():
        status = ctl_json(group, follower, "status")
        if not status:
            return None
        members = by_name(status["members"])
        if len(members) != 3 or not all(m["reported"] for m in members.values()):
            return None
        if len({m["appliedSlot"] for m in members.values()}) != 1:
            return None
        return status
    started = time.monotonic()
    status = wait_until(converged, 20, "every member reported at the same applied slot")
    print(f"  converged after {time.monotonic() - started:.2f}s")
    members = by_name(status["members"])
    check(set(members) == set(group.names), f"members: {sorted(members)}")
    leaders = [m["name"] for m in members.values() if m["role"] == "leader"]
    check(leaders == [leader], f"one leader, {leader}: {leaders}")
    for name, m in members.items():
        check(m["reachable"] and not m["stale"], f"{name} reachable and current: {m}")
        check(m["dbSizeBytes"] > 0, f"{name} reports its db size: {m}")
        check(m["reportAgeMs"] < REPORT_AGE_BOUND_MS, f"{name} report age: {m['reportAgeMs']}")
        check(m["leader"] == leader, f"{name} knows the leader: {m}")
        check(m["revision"] >= 40, f"{name} revision: {m}")
    digests = {name: m["stateDigest"] for name, m in members.items()}
    check(len(set(digests.values())) == 1, f"equal applied slots, different digests: {digests}")
    check(members[follower]["reportAgeMs"] == 0, "the member asked reports itself as current")
    check(members[follower]["stateDigest"] == status["stateDigest"], "own digest in both places")
    check(members[leader]["leaseLeftMs"] > 0, f"the leader holds its lease: {members[leader]}")
    check(members[leader]["commitP99Us"] >= members[leader]["commitP50Us"] > 0,
          f"the leader measured its commits: {members[leader]}")
    print("  digests " + ", ".join(f"{n}={d}" for n, d in sorted(digests.items())) +
          f"; leader commit p50/p99 {members[leader]['commitP50Us']}/"
          f"{members[leader]['commitP99Us']} us")

    # `members` gives the same rows.
    listed = ctl_json(group, follower, "members")
    check(listed and listed["ok"] and set(by_name(listed["members"])) == set(group.names),
          f"members --json: {listed}")

    # Another write moves every digest, and they agree again once applied everywhere.
    shell = Shell(synodctl, group.socket(follower))
    check(shell.call("put members/extra x").get("ok"), "put through the follower failed")
    shell.close()
    old = digests[leader]

    def moved():
        s = converged()
        if not s:
            return None
        d = {m["stateDigest"] for m in s["members"]}
        return len(d) == 1 and old not in d
    wait_until(moved, 20, "the digests to move together after a write")

    # A killed follower: unreachable and stale for the others; its report only ages.
    victim = next(n for n in group.names if n not in (leader, follower))
    group.daemons[victim].kill(signal.SIGKILL)
    group.daemons[victim].wait()
    started = time.monotonic()
    for asked in (leader, follower):
        def row_of_victim():
            s = ctl_json(group, asked, "members")
            return by_name(s["members"])[victim] if s else None

        def gone():
            m = row_of_victim()
            return m if m and not m["reachable"] and m["stale"] and m["role"] == "unknown" else None
        row = wait_until(gone, 20, f"{asked} to see {victim} unreachable")
        check(row["reported"], f"{asked} keeps the last report of {victim}: {row}")
        first_age = row["reportAgeMs"]

        def aged():
            m = row_of_victim()
            return m if m and m["reportAgeMs"] > first_age else None
        later = wait_until(aged, 10, f"the report of {victim} to age at {asked}")
        print(f"  {asked} sees {victim} unreachable after {time.monotonic() - started:.2f}s; "
              f"report age {first_age} -> {later['reportAgeMs']} ms")
    group.stop_all()


if __name__ == "__main__":
    main([
        ("every member from a follower", test_every_member_from_a_follower),
    ])
