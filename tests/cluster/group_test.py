#!/usr/bin/env python3
"""Real multi-member groups on loopback: writes through every member, reads everywhere, members
killed, restarted and paused, histories checked for per-key linearizability with synod-lincheck.

usage: group_test.py SYNOD SYNODCTL [TEST-NAME|''] SYNOD_LINCHECK
"""
import random
import signal
import subprocess
import sys
import threading
import time

from harness import Group, Shell, check, main, wait_until

LINCHECK = sys.argv[4] if len(sys.argv) > 4 else None


class History:
    """Operations with invoke/response times on one clock, for synod-lincheck."""

    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()

    def record(self, key, invoke, response, op, value):
        with self.lock:
            self.lines.append(f"{key} {invoke} {response if response is not None else '-'} "
                              f"{op} {value}")

    def check(self, workdir):
        path = workdir.file("history.txt")
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        p = subprocess.run([LINCHECK, path], capture_output=True, text=True)
        check(p.returncode == 0, f"history is not linearizable: {p.stdout} {p.stderr} ({path})")
        print(f"  {p.stdout.strip()}")


class Client(threading.Thread):
    """Writes unique values to a few keys through one member, reading them back in between."""

    counter = 0
    counter_lock = threading.Lock()

    def __init__(self, group, member, keys, history, stop, timeout_ms=3000):
        super().__init__(daemon=True)
        self.group, self.member, self.keys, self.history, self.stop = (
            group, member, keys, history, stop)
        self.timeout_ms = timeout_ms
        self.acked = 0
        self.unknown = 0
        self.errors = []

    def next_value(self):
        with Client.counter_lock:
            Client.counter += 1
            return Client.counter

    def run(self):
        shell = Shell(self.group.synodctl, self.group.socket(self.member))
        rng = random.Random(hash(self.member))
        while not self.stop.is_set():
            key = rng.choice(self.keys)
            if rng.random() < 0.5:
                value = self.next_value()
                invoke = time.monotonic_ns()
                reply = shell.call(f"--timeout {self.timeout_ms} put {key} {value}")
                if reply is not None and reply.get("ok"):
                    self.history.record(key, invoke, time.monotonic_ns(), "w", value)
                    self.acked += 1
                else:
                    self.history.record(key, invoke, None, "w", value)  # may have happened
                    self.unknown += 1
                    if reply is not None and reply.get("code") == "UNAVAILABLE":
                        time.sleep(0.05)  # the member is down: don't spin
                    if reply is None:
                        shell.close()
                        time.sleep(0.05)
                        shell = Shell(self.group.synodctl, self.group.socket(self.member))
            else:
                invoke = time.monotonic_ns()
                reply = shell.call(f"--timeout {self.timeout_ms} get {key}")
                if reply is None:
                    shell.close()
                    time.sleep(0.05)
                    shell = Shell(self.group.synodctl, self.group.socket(self.member))
                elif reply.get("ok"):
                    self.history.record(key, invoke, time.monotonic_ns(), "r", int(reply["value"]))
                elif reply.get("code") == "NOT_FOUND":
                    self.history.record(key, invoke, time.monotonic_ns(), "r", 0)
        shell.close()


def run_clients(group, members, seconds, history, during=None, keys=None):
    keys = keys or [f"k{i}" for i in range(4)]
    stop = threading.Event()
    clients = [Client(group, m, keys, history, stop) for m in members]
    for c in clients:
        c.start()
    if during:
        during()
    time.sleep(seconds)
    stop.set()
    for c in clients:
        c.join(timeout=30)
    acked = sum(c.acked for c in clients)
    unknown = sum(c.unknown for c in clients)
    print(f"  {acked} writes acknowledged, {unknown} with unknown outcome, "
          f"{len(history.lines)} operations recorded")
    check(acked > 20, "too few writes were acknowledged")
    return keys


def final_reads(group, members, keys, history):
    """A linearizable read of every key at every live member, recorded in the history."""
    for member in members:
        shell = Shell(group.synodctl, group.socket(member))
        for key in keys:
            invoke = time.monotonic_ns()
            reply = wait_until(lambda: shell.call(f"get {key}"), 20, f"a reply from {member}")
            if reply.get("ok"):
                history.record(key, invoke, time.monotonic_ns(), "r", int(reply["value"]))
            else:
                check(reply.get("code") == "NOT_FOUND", f"read at {member}: {reply}")
                history.record(key, invoke, time.monotonic_ns(), "r", 0)
        shell.close()


def test_writes_everywhere(synod, synodctl, workdir, n):
    group = Group(synod, synodctl, workdir, n).start()
    leader = group.leader()
    print(f"  {n} members, leader {leader}")
    history = History()
    keys = run_clients(group, group.names, 2.0, history)
    final_reads(group, group.names, keys, history)
    history.check(workdir)
    statuses = [group.status(name) for name in group.names]
    check(all(s and s["leader"] == leader for s in statuses), f"leaders differ: {statuses}")
    check(all(m["reachable"] for m in statuses[0]["members"]), "a member is unreachable")
    group.stop_all()


def test_three_members(synod, synodctl, workdir):
    test_writes_everywhere(synod, synodctl, workdir, 3)


def test_five_members(synod, synodctl, workdir):
    test_writes_everywhere(synod, synodctl, workdir, 5)


def test_kill_leader_during_writes(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    followers = [n for n in group.names if n != leader]
    history = History()

    def kill_leader():
        time.sleep(0.7)
        group.daemons[leader].kill(signal.SIGKILL)
        group.daemons[leader].wait()
        print(f"  killed leader {leader}")

    keys = run_clients(group, group.names, 3.0, history, during=kill_leader)
    new_leader = group.leader(among=followers, not_=leader)
    print(f"  new leader {new_leader}")
    group.daemons[leader].start()  # it comes back as a follower and catches up
    final_reads(group, group.names, keys, history)
    history.check(workdir)
    group.stop_all()


def test_follower_restart(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    follower = next(n for n in group.names if n != leader)
    history = History()

    def restart_follower():
        time.sleep(0.5)
        group.daemons[follower].kill(signal.SIGKILL)
        group.daemons[follower].wait()
        time.sleep(0.5)
        group.daemons[follower].start()
        print(f"  killed and restarted follower {follower}")

    others = [n for n in group.names if n != follower]
    keys = run_clients(group, others, 2.5, history, during=restart_follower)
    final_reads(group, group.names, keys, history)
    history.check(workdir)
    group.stop_all()


def test_paused_leader_steps_down(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    followers = [n for n in group.names if n != leader]
    old = Shell(synodctl, group.socket(leader))
    check(old.call("put paused before").get("ok"), "first put failed")
    group.daemons[leader].kill(signal.SIGSTOP)
    try:
        started = time.monotonic()
        new_leader = group.leader(among=followers, not_=leader)
        print(f"  leader {leader} paused; {new_leader} leads after "
              f"{time.monotonic() - started:.2f}s")
        writer = Shell(synodctl, group.socket(new_leader))
        check(writer.call("put paused after").get("ok"), "put through the new leader failed")
        writer.close()
    finally:
        group.daemons[leader].kill(signal.SIGCONT)
    # The old leader wakes up believing it leads: a linearizable read there must not return the
    # value from before the pause.
    reply = old.call("--timeout 3000 get paused")
    check(reply is not None, "no reply from the old leader")
    if reply.get("ok"):
        check(reply["value"] == "after", f"stale linearizable read at the old leader: {reply}")
    else:
        check(reply.get("code") in ("TIMEOUT", "NO_QUORUM", "UNAVAILABLE"), f"{reply}")
    print(f"  old leader {leader} answered {reply.get('value') or reply.get('code')} after the pause")
    old.close()
    group.stop_all()


def test_lag_of_a_paused_follower(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    follower = next(n for n in group.names if n != leader)
    group.daemons[follower].kill(signal.SIGSTOP)
    try:
        shell = Shell(synodctl, group.socket(leader))
        for i in range(30):
            check(shell.call(f"put lag{i} x").get("ok"), "put failed with one follower paused")
        shell.close()
        time.sleep(0.2)  # a heartbeat round
        lag = {m["name"]: m["lagSlots"] for m in group.status(leader)["members"]}
        print(f"  lag while {follower} is paused: {lag}")
        check(lag[follower] >= 30, f"the leader does not see {follower} behind: {lag}")
    finally:
        group.daemons[follower].kill(signal.SIGCONT)
    wait_until(lambda: {m["name"]: m["lagSlots"]
                        for m in group.status(leader)["members"]}[follower] == 0,
               10, f"{follower} to catch up")
    group.stop_all()


def test_restart_everything(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    group.leader()
    shell = Shell(synodctl, group.socket("n1"))
    for i in range(50):
        check(shell.call(f"put r{i} v{i}").get("ok"), f"put r{i} failed")
    shell.close()
    group.stop_all()
    group.start()
    group.leader()
    for name in group.names:
        shell = Shell(synodctl, group.socket(name))
        for i in range(50):
            reply = shell.call(f"get r{i}")
            check(reply.get("ok") and reply["value"] == f"v{i}", f"{name}: r{i} lost: {reply}")
        shell.close()
    group.stop_all()


def test_no_quorum(synod, synodctl, workdir):
    no_quorum(synod, synodctl, workdir, survivor_leads=False)


def test_no_quorum_at_leader(synod, synodctl, workdir):
    no_quorum(synod, synodctl, workdir, survivor_leads=True)


def no_quorum(synod, synodctl, workdir, survivor_leads):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    survivor = leader if survivor_leads else next(n for n in group.names if n != leader)
    for name in group.names:
        if name != survivor:
            group.daemons[name].kill(signal.SIGKILL)
            group.daemons[name].wait()
    for what in ("put nq 1", "get nq"):
        started = time.monotonic()
        p = subprocess.run([synodctl, "--socket", group.socket(survivor), "--json", "--timeout",
                            "1500"] + what.split(), capture_output=True, text=True, timeout=30)
        elapsed = time.monotonic() - started
        import json
        reply = json.loads(p.stdout)
        check(p.returncode == 4, f"{what}: exit {p.returncode}, want 4: {reply}")
        check(reply.get("code") == "NO_QUORUM", f"{what}: {reply}")
        check(elapsed < 15, f"{what}: took {elapsed:.1f}s for a 1.5 s deadline")
        print(f"  {what}: NO_QUORUM after {elapsed:.2f}s (deadline 1.5 s)")
    group.stop_all()


def test_sigterm_leader_hands_off(synod, synodctl, workdir):
    """SIGTERM at the leader: it hands leadership to a follower before it exits, so writes through
    the followers stall for far less than an election timeout (500 ms)."""
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    followers = [n for n in group.names if n != leader]
    stop = threading.Event()
    done = []  # (invoked, answered) of every acknowledged write, monotonic seconds
    lock = threading.Lock()

    def writer(member):
        shell = Shell(synodctl, group.socket(member))
        i = 0
        while not stop.is_set():
            i += 1
            invoke = time.monotonic()
            reply = shell.call(f"--timeout 3000 put w{member} {i}")
            if reply is not None and reply.get("ok"):
                with lock:
                    done.append((invoke, time.monotonic()))
            time.sleep(0.002)
        shell.close()

    threads = [threading.Thread(target=writer, args=(m,), daemon=True) for m in followers]
    for t in threads:
        t.start()
    wait_until(lambda: len(done) > 20, 10, "steady writes through the followers")
    sigterm = time.monotonic()
    group.daemons[leader].kill(signal.SIGTERM)

    def first_after():
        with lock:
            after = [answered for invoked, answered in done if invoked > sigterm]
        return min(after) if after else None
    answered = wait_until(first_after, 10, "a write invoked after SIGTERM to succeed")
    stall = answered - sigterm
    code = group.daemons[leader].wait()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    print(f"  SIGTERM to {leader}: first write invoked after it succeeded {stall * 1000:.0f} ms "
          f"later (election timeout 500 ms); {leader} exited with {code}")
    check(code == 0, f"{leader} did not stop cleanly: {code}")
    log = group.daemons[leader].read_log()
    check("leadership handed over to" in log, f"{leader} did not hand over:\n{log[-2000:]}")
    check(stall < 2.0, f"writes stalled {stall:.2f}s after SIGTERM at the leader")
    new_leader = group.leader(among=followers, not_=leader)
    print(f"  new leader {new_leader}")
    group.stop_all()


def test_transfer_leader(synod, synodctl, workdir):
    """synodctl transfer-leader NAME moves leadership to NAME; elsewhere it is refused."""
    import json
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    target = next(n for n in group.names if n != leader)
    other = next(n for n in group.names if n not in (leader, target))

    def ctl(member, *args):
        p = subprocess.run([synodctl, "--socket", group.socket(member), "--json", "--timeout",
                            "3000", *args], capture_output=True, text=True, timeout=30)
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None

    code, reply = ctl(other, "transfer-leader", target)
    check(code == 3 and reply["leader"] == leader, f"at a follower: {code} {reply}")
    code, reply = ctl(leader, "transfer-leader", "nobody")
    check(code == 2 and reply["code"] == "INVALID_ARGUMENT", f"unknown name: {code} {reply}")
    started = time.monotonic()
    code, reply = ctl(leader, "transfer-leader", target)
    took = time.monotonic() - started
    check(code == 0 and reply["leader"] == target, f"transfer to {target}: {code} {reply}")
    print(f"  transfer-leader {leader} -> {target} answered in {took * 1000:.0f} ms")
    check(group.leader(not_=leader) == target, "the group does not agree on the new leader")
    shell = Shell(synodctl, group.socket(leader))
    check(shell.call("put moved yes").get("ok"), "a write through the old leader failed")
    shell.close()
    # And back, naming no one: some member other than the current leader takes over.
    code, reply = ctl(target, "transfer-leader")
    check(code == 0 and reply["leader"] != target, f"transfer to any: {code} {reply}")
    group.stop_all()


if __name__ == "__main__":
    if not LINCHECK:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main([
        ("three members", test_three_members),
        ("five members", test_five_members),
        ("kill leader during writes", test_kill_leader_during_writes),
        ("follower restart", test_follower_restart),
        ("paused leader steps down", test_paused_leader_steps_down),
        ("lag of a paused follower", test_lag_of_a_paused_follower),
        ("restart everything", test_restart_everything),
        ("no quorum at a follower", test_no_quorum),
        ("no quorum at the leader", test_no_quorum_at_leader),
        ("sigterm leader hands off", test_sigterm_leader_hands_off),
        ("transfer leader", test_transfer_leader),
    ])
