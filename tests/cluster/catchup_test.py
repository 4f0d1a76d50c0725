#!/usr/bin/env python3
"""Members that come back: a follower that missed more than the others' logs hold catches up by
snapshot; wiped data dirs recover before they vote, one member after another; the data file stays
bounded under a long stream of rewrites; a flipped byte in a record stops the member, naming it.

usage: catchup_test.py SYNOD SYNODCTL [TEST-NAME|''] SYNOD_BENCH

Size parameters (environment; CI uses the defaults, a nightly-style run raises them):
  SYNOD_CATCHUP_WRITES  writes the follower misses (default 10000)
  SYNOD_FILE_WRITES     writes over 1,000 keys in the file-size test (default 30000)
  SYNOD_LOG_RETENTION   log_retention_slots of the members (default 200)
"""
import json
import os
import shutil
import subprocess
import sys
import time

import harness
from harness import check, main, wait_until

BENCH = sys.argv[4] if len(sys.argv) > 4 else None
PORT_BASE = 23000 + (os.getpid() % 400) * 10
# log_retention_slots: small by default, so a short absence already needs a snapshot.
RETENTION = int(os.environ.get("SYNOD_LOG_RETENTION", "200"))
CATCHUP_WRITES = int(os.environ.get("SYNOD_CATCHUP_WRITES", "10000"))
FILE_WRITES = int(os.environ.get("SYNOD_FILE_WRITES", "30000"))


class Group(harness.Group):
    """A group of 3 with a short log retention, and synod-bench to write a lot."""

    def __init__(self, synod, synodctl, workdir, n=3):
        super().__init__(synod, synodctl, workdir, n, cluster_id="catchup",
                         extra=f"log_retention_slots: {RETENTION}\n", port_base=PORT_BASE)

    def wait_leader(self, among):
        return self.leader(among, timeout_s=30, within=True)

    def bench(self, members, seconds, keys=1000, clients=16):
        sockets = []
        for name in members:
            sockets += ["--socket", self.daemons[name].socket]
        p = subprocess.run([BENCH] + sockets + ["--workload", "put", "--clients", str(clients),
                                                "--seconds", str(seconds), "--keys", str(keys),
                                                "--json"],
                           capture_output=True, text=True, timeout=seconds + 120)
        check(p.returncode == 0, f"synod-bench failed: {p.stdout} {p.stderr}")
        runs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        check(runs and all(r["failed"] == 0 for r in runs), f"synod-bench writes failed: {runs}")
        return sum(r["ok"] for r in runs)


def wipe(group, name):
    shutil.rmtree(group.data_dir(name))


def recovered(group, name, since):
    """Whether `name` finished recovering after log offset `since` (its log before the restart)."""
    return "recovery finished" in group.daemons[name].read_log()[since:]


def test_snapshot_catch_up(synod, synodctl, workdir):
    g = Group(synod, synodctl, workdir)
    g.start()
    leader = g.wait_leader(g.names)
    g.put(leader, "before", "the absence")
    follower = next(n for n in g.names if n != leader)
    others = [n for n in g.names if n != follower]
    g.daemons[follower].kill()
    g.daemons[follower].wait()
    missed_from = g.status(leader)["decidedSlot"]

    writes = 0
    while writes < CATCHUP_WRITES:
        writes += g.bench(others, 3)
    g.put(leader, "after", "the absence")
    decided = g.status(leader)["decidedSlot"]
    print(f"  {writes} writes in slots {missed_from}..{decided} while {follower} was down")
    # Compaction runs in steps of RETENTION / 8 slots: past this, the slot after the follower's
    # is gone from every log.
    check(decided - missed_from > RETENTION + RETENTION // 4,
          f"the log did not move far enough for a snapshot ({decided - missed_from} slots)")

    started = time.monotonic()
    g.start(follower)
    slot, digest = g.wait_agree()
    print(f"  {follower} caught up in {time.monotonic() - started:.2f}s: slot {slot}, "
          f"digest {digest}")
    log = g.daemons[follower].read_log()
    check("installed a snapshot" in log, f"{follower} caught up without a snapshot:\n{log}")
    check(g.get(follower, "before", serializable=True) == "the absence", "old key on the follower")
    check(g.get(follower, "after", serializable=True) == "the absence", "new key on the follower")
    # It votes: with one of the others down, writes still need it.
    g.daemons[others[0]].kill()
    g.daemons[others[0]].wait()
    rest = [follower, others[1]]
    new_leader = g.wait_leader(rest)
    g.put(new_leader, "quorum", "with the caught-up member")
    check(g.get(follower, "quorum") == "with the caught-up member", "write after catch-up")
    g.stop_all()


def test_wiped_follower(synod, synodctl, workdir):
    g = Group(synod, synodctl, workdir)
    g.start()
    leader = g.wait_leader(g.names)
    for i in range(50):
        g.put(leader, f"k{i}", f"v{i}")
    follower = next(n for n in g.names if n != leader)
    g.daemons[follower].stop()
    wipe(g, follower)
    g.bench([n for n in g.names if n != follower], 1)
    since = len(g.daemons[follower].read_log())
    g.start(follower)
    wait_until(lambda: recovered(g, follower, since), 60, f"{follower} to finish recovering")
    log = g.daemons[follower].read_log()[since:]
    check("recovery finished (caught up)" in log, f"{follower} did not say how it recovered:\n{log}")
    g.wait_agree()
    check(g.get(follower, "k7", serializable=True) == "v7", "data on the wiped member")
    # It votes again: the two others alone cannot be a majority without it.
    third = next(n for n in g.names if n not in (leader, follower))
    g.daemons[third].kill()
    g.daemons[third].wait()
    new_leader = g.wait_leader([leader, follower])
    g.put(new_leader, "after-wipe", "yes")
    check(g.get(follower, "after-wipe") == "yes", "write with the recovered member in the quorum")
    g.stop_all()


def test_wipe_minority_one_after_another(synod, synodctl, workdir):
    g = Group(synod, synodctl, workdir)
    g.start()
    leader = g.wait_leader(g.names)
    g.put(leader, "first", "survives every wipe")
    for round_, victim in enumerate(g.names):
        g.daemons[victim].stop()
        wipe(g, victim)
        rest = [n for n in g.names if n != victim]
        leader = g.wait_leader(rest)
        g.put(leader, f"round{round_}", victim)
        since = len(g.daemons[victim].read_log())
        g.start(victim)
        wait_until(lambda: recovered(g, victim, since), 60, f"{victim} to finish recovering")
        slot, digest = g.wait_agree()
        print(f"  {victim} wiped and recovered: slot {slot}, digest {digest}")
    for name in g.names:
        check(g.get(name, "first", serializable=True) == "survives every wipe", f"first on {name}")
        for round_, victim in enumerate(g.names):
            check(g.get(name, f"round{round_}", serializable=True) == victim,
                  f"round{round_} on {name}")
    g.stop_all()


def test_file_size_levels_off(synod, synodctl, workdir):
    g = Group(synod, synodctl, workdir)
    g.start()
    g.wait_leader(g.names)
    data_file = os.path.join(g.data_dir("n1"), "data.mdb")
    sizes = []
    writes = 0
    while writes < FILE_WRITES:
        writes += g.bench(g.names, 2, keys=1000)
        sizes.append((writes, os.path.getsize(data_file)))
    print("  writes -> data.mdb bytes: " + ", ".join(f"{w}->{s}" for w, s in sizes))
    # Rewrites of 1,000 keys with a log of 200 slots: the file stops growing once its free pages
    # are reused. The second half of the run may need only a little more room than the first.
    middle, last = sizes[len(sizes) // 2][1], sizes[-1][1]
    check(len(sizes) >= 3, f"too few samples: {sizes}")
    check(last <= middle * 1.5 + (1 << 20),
          f"data.mdb kept growing: {middle} bytes at the middle, {last} at the end")
    g.stop_all()


def test_flipped_byte_stops_the_member(synod, synodctl, workdir):
    g = Group(synod, synodctl, workdir)
    g.start()
    leader = g.wait_leader(g.names)
    marker = "flip-me-0123456789abcdef"
    g.put(leader, "victim-key", marker)
    g.wait_agree()
    name = next(n for n in g.names if n != leader)
    g.daemons[name].stop()
    data_file = os.path.join(g.data_dir(name), "data.mdb")
    with open(data_file, "r+b") as f:
        data = bytearray(f.read())
        at = data.find(marker.encode())
        check(at >= 0, "the marker value is not in the data file")
        while at >= 0:  # every copy, current page and old ones alike
            data[at + 5] ^= 0x01
            at = data.find(marker.encode(), at + 1)
        f.seek(0)
        f.write(data)
    g.daemons[name].start(wait=False)
    code = g.daemons[name].wait(timeout_s=30)
    log = g.daemons[name].read_log()
    check(code != 0, f"a member with a corrupt record exited {code}")
    check("kv" in log and "victim-key" in log, f"the log does not name table and key:\n{log[-2000:]}")
    print("  " + next(line for line in log.splitlines() if "victim-key" in line).strip())
    g.stop_all()


if __name__ == "__main__":
    main([
        ("snapshot catch-up", test_snapshot_catch_up),
        ("wiped follower", test_wiped_follower),
        ("wipe minority one after another", test_wipe_minority_one_after_another),
        ("file size levels off", test_file_size_levels_off),
        ("flipped byte stops the member", test_flipped_byte_stops_the_member),
    ])
