#!/usr/bin/env python3
"""Elections and locks with real processes: contenders run `synodctl elect NAME -- HOLDER` against
every member of a 3-member group while members are killed, restarted and paused and contenders are
killed. Each holder records, while it acts, its fence on the host's monotonic clock; the test
checks that fences strictly increase with the order of holding and that no two holding intervals
overlap, and reports how fast leadership moves after an app or a daemon is killed.

usage: election_test.py SYNOD SYNODCTL [TEST-NAME|'']

Size parameter (environment): SYNOD_ELECTION_SECONDS, how long the fault run lasts (default 30).
"""
import glob
import os
import random
import signal
import subprocess
import sys
import time

from harness import Group, check, main, wait_until

SECONDS = float(os.environ.get("SYNOD_ELECTION_SECONDS", "30"))
TTL_MS = 2000

# The holder: acts (appends a line with its fence and the monotonic time) every 10 ms until
# stopped. A line written is a moment at which it held leadership.
HOLDER = r"""
import os, signal, sys, time
path = sys.argv[1]
fence = int(os.environ["SYNOD_FENCE"])
lease = int(os.environ["SYNOD_LEASE"])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
def stop(signum, frame):
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    os.write(fd, f"{fence} {lease} {time.monotonic()}\n".encode())
    time.sleep(0.01)
"""


class Contender:
    """`synodctl elect` through one member, restarted whenever it ends."""

    def __init__(self, synodctl, group, member, name, workdir, election="web"):
        self.synodctl, self.group, self.member, self.name = synodctl, group, member, name
        self.workdir, self.election = workdir, election
        self.proc = None
        self.runs = 0
        self.exits = []

    def start(self):
        self.runs += 1
        log = self.workdir.file(f"acts-{self.name}-{self.runs}")
        holder = self.workdir.file("holder.py")
        self.proc = subprocess.Popen(
            [self.synodctl, "--socket", self.group.socket(self.member), "elect", self.election,
             "--value", self.name, "--ttl", str(TTL_MS), "--kill-after", "300", "--",
             sys.executable, holder, log],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir.file(f"ctl-{self.name}.log"), "ab"))

    def poll(self):
        """Restarts it if it ended; returns its exit code then, else None."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None:
            self.exits.append(rc)
            self.start()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_holder(workdir):
    with open(workdir.file("holder.py"), "w") as f:
        f.write(HOLDER)


def read_acts(workdir):
    """Every act of every holder: (fence, lease, time)."""
    acts = []
    for path in glob.glob(workdir.file("acts-*")):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    acts.append((int(parts[0]), int(parts[1]), float(parts[2])))
    return acts


def holding_intervals(acts):
    """fence -> (first act, last act, lease)."""
    intervals = {}
    for fence, lease, t in acts:
        first, last, _ = intervals.get(fence, (t, t, lease))
        intervals[fence] = (min(first, t), max(last, t), lease)
    return intervals


def check_history(acts):
    """Fences strictly increase in holding order and no two holding intervals overlap."""
    intervals = holding_intervals(acts)
    check(intervals, "no holder ever acted")
    ordered = sorted(intervals.items(), key=lambda item: item[1][0])
    for (f1, (s1, e1, l1)), (f2, (s2, e2, l2)) in zip(ordered, ordered[1:]):
        check(f2 > f1, f"fence {f2} (lease {l2}) held from {s2:.3f} after fence {f1} "
              f"(lease {l1}) from {s1:.3f}: fences must increase")
        check(s2 > e1, f"fence {f2} (lease {l2}) acted at {s2:.3f} while fence {f1} (lease {l1}) "
              f"still acted until {e1:.3f}: two holders at once")
    return ordered


def current_holder(workdir, since):
    """The fence whose holder acted most recently after `since`, with its first act time."""
    acts = [a for a in read_acts(workdir) if a[2] > since]
    if not acts:
        return None
    fence = max(acts, key=lambda a: a[2])[0]
    return fence, min(t for f, _, t in acts if f == fence)


def contender_holding(contenders, workdir):
    """The contender whose holder acted within the last 100 ms."""
    now = time.monotonic()
    for c in contenders:
        path = workdir.file(f"acts-{c.name}-{c.runs}")
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        if lines and now - float(lines[-1].split()[2]) < 0.1:
            return c, int(lines[-1].split()[0])
    return None


def move_time(workdir, old_fence, t0, timeout_s):
    """Seconds from t0 until a holder with a fence other than old_fence acts."""
    def moved():
        acts = [a for a in read_acts(workdir) if a[0] != old_fence and a[2] >= t0]
        return min(a[2] for a in acts) if acts else None
    first = wait_until(moved, timeout_s, "leadership to move")
    return first - t0


def test_elect_two_members_kill_holder(synod, synodctl, workdir):
    """Two contenders through two members: exactly one runs its command; SIGKILL of that synodctl
    moves leadership to the other within a second, with a larger fence."""
    group = Group(synod, synodctl, workdir, 3).start()
    group.leader()
    write_holder(workdir)
    a = Contender(synodctl, group, "n1", "a", workdir)
    b = Contender(synodctl, group, "n2", "b", workdir)
    a.start()
    b.start()
    held = wait_until(lambda: contender_holding([a, b], workdir), 20, "one contender to hold")
    time.sleep(0.5)
    both = [c for c in (a, b) if contender_holding([c], workdir)]
    check(len(both) == 1, f"{len(both)} contenders act at once")
    holder, fence = held
    other = b if holder is a else a
    t0 = time.monotonic()
    holder.kill()
    elapsed = move_time(workdir, fence, t0, 10)
    new = wait_until(lambda: contender_holding([other], workdir), 5, "the other to hold")
    check(new[1] > fence, f"new fence {new[1]} not above {fence}")
    print(f"  killed app's leadership moved in {elapsed * 1000:.0f} ms (fence {fence} -> {new[1]})")
    check(elapsed < 1.0, f"leadership took {elapsed:.3f}s to move after the holder was killed")
    other.stop()
    check_history(read_acts(workdir))
    group.stop_all()


def test_killed_daemon_locks_move(synod, synodctl, workdir):
    """The member a holder is connected to is killed: its lease ends by TTL at the leader and the
    next contender takes over."""
    group = Group(synod, synodctl, workdir, 3).start()
    group.leader()
    write_holder(workdir)
    contenders = [Contender(synodctl, group, m, m, workdir) for m in group.names]
    for c in contenders:
        c.start()
    holder, fence = wait_until(lambda: contender_holding(contenders, workdir), 20, "a holder")
    t0 = time.monotonic()
    group.daemons[holder.member].kill(signal.SIGKILL)
    group.daemons[holder.member].wait()
    elapsed = move_time(workdir, fence, t0, 30)
    print(f"  killed daemon's leadership moved in {elapsed * 1000:.0f} ms (TTL {TTL_MS} ms)")
    check(elapsed < 15, f"leadership took {elapsed:.1f}s to move after the daemon was killed")
    for c in contenders:
        c.stop()
    check_history(read_acts(workdir))
    group.stop_all()


def test_faults(synod, synodctl, workdir):
    """Six contenders, two per member, for SYNOD_ELECTION_SECONDS while members are killed and
    restarted, paused and resumed, and contenders killed; then the history is checked."""
    group = Group(synod, synodctl, workdir, 3).start()
    group.leader()
    write_holder(workdir)
    contenders = [Contender(synodctl, group, m, f"{m}{i}", workdir)
                  for m in group.names for i in (1, 2)]
    for c in contenders:
        c.start()
    rng = random.Random(int(os.environ.get("SYNOD_ELECTION_SEED", "7")))
    end = time.monotonic() + SECONDS
    faults = []
    next_fault = time.monotonic() + 2
    down = {}  # member -> time to bring it back
    paused = {}
    while time.monotonic() < end:
        for c in contenders:
            c.poll()
        now = time.monotonic()
        for m, at in list(down.items()):
            if now >= at:
                group.daemons[m].start(wait=False)
                del down[m]
        for m, at in list(paused.items()):
            if now >= at:
                group.daemons[m].kill(signal.SIGCONT)
                del paused[m]
        if now >= next_fault and not down and not paused:
            kind = rng.choice(["kill-member", "pause-member", "kill-contender", "kill-holder"])
            if kind == "kill-member":
                m = rng.choice(group.names)
                group.daemons[m].kill(signal.SIGKILL)
                group.daemons[m].wait()
                down[m] = now + rng.uniform(0.5, 3)
            elif kind == "pause-member":
                m = rng.choice(group.names)
                group.daemons[m].kill(signal.SIGSTOP)
                paused[m] = now + rng.uniform(0.2, 3)
            elif kind == "kill-contender":
                m = rng.choice(contenders)
                m.kill()
            else:
                held = contender_holding(contenders, workdir)
                m = held[0].name if held else None
                if held:
                    held[0].kill()
            faults.append((kind, m))
            next_fault = now + rng.uniform(1.5, 4)
        time.sleep(0.02)
    for m in paused:
        group.daemons[m].kill(signal.SIGCONT)
    for c in contenders:
        c.stop()
    ordered = check_history(read_acts(workdir))
    exits = sorted({rc for c in contenders for rc in c.exits})
    print(f"  {len(ordered)} holders over {SECONDS:.0f}s, {len(faults)} faults "
          f"({', '.join(k for k, _ in faults)}); synodctl exit codes seen: {exits}")
    check(len(ordered) >= 3, f"only {len(ordered)} holders: leadership hardly moved")
    for m in down:
        group.daemons[m].start(wait=False)
    group.stop_all()


if __name__ == "__main__":
    main([
        ("elect on two members, holder killed", test_elect_two_members_kill_holder),
        ("killed daemon's leadership moves", test_killed_daemon_locks_move),
        ("contenders under member faults", test_faults),
    ])
