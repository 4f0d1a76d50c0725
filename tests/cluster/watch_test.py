#!/usr/bin/env python3
"""Watches on a 3-member group of real daemons: a `synodctl --json watch` on every member while
random writes go through all members, across a leader kill and a member restart. Every watcher's
stream must be the group's sequence of changes of its range: the same on every member, each
change consistent with the one before it (versions, previous values), replaying to what `list`
shows at the end; a watcher resumed from its last revision + 1 after its member restarted misses
nothing. Also measures how long a put through one member takes to reach a watcher on another.

usage: watch_test.py SYNOD SYNODCTL [TEST-NAME|'']
"""
import json
import random
import signal
import statistics
import subprocess
import threading
import time

from harness import Failure, Group, Shell, _started, check, main, wait_until

PREFIX = "w/"


class Watcher:
    """`synodctl --json watch PREFIX --from N --prev` on one member; lines read by a thread."""

    def __init__(self, group, name, from_revision):
        self.name = name
        self.from_revision = from_revision
        self.proc = subprocess.Popen(
            [group.synodctl, "--socket", group.socket(name), "--json", "watch", PREFIX, "--prev"]
            + (["--from", str(from_revision)] if from_revision else []),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        _started.append(self.proc)
        self.lines = []  # (arrival time, parsed line)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append((time.monotonic(), json.loads(line)))

    def snapshot(self):
        with self.lock:
            return [parsed for _, parsed in self.lines]

    def events(self):
        return [l for l in self.snapshot() if l.get("type") in ("put", "delete")]

    def current_through(self):
        """The revision every change up to which was delivered (0 before anything)."""
        through = 0
        for line in self.snapshot():
            if line.get("type") in ("put", "delete", "progress", "snapshotEnd"):
                through = max(through, line["revision"])
        return through

    def started(self):
        lines = self.snapshot()
        return bool(lines) and lines[0].get("ok") is True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)


def check_stream(events, final_kvs):
    """Raises Failure unless `events` is a gap-free, duplicate-free change stream from revision 1
    that replays to `final_kvs` (key -> (value, version, createRevision, modRevision))."""
    state = {}
    last_revision = 0
    seen_in_revision = set()
    for i, e in enumerate(events):
        where = f"event {i} {e}"
        revision = e["revision"]
        check(revision >= last_revision, f"out of order: {where} after revision {last_revision}")
        if revision != last_revision:
            seen_in_revision = set()
        check(e["key"] not in seen_in_revision, f"key twice in one revision: {where}")
        seen_in_revision.add(e["key"])
        last_revision = revision
        before = state.get(e["key"])
        if e["type"] == "put":
            if before is None:
                check(e["version"] == 1 and e["createRevision"] == revision,
                      f"a put of a missing key must create it: {where}")
                check("prevValue" not in e, f"prev of a missing key: {where}")
            else:
                check(e["version"] == before[1] + 1, f"version gap (lost change?): {where}, "
                      f"before {before}")
                check(e["createRevision"] == before[2], f"create revision changed: {where}")
                check(e.get("prevValue") == before[0], f"previous value: {where}, before {before}")
            check(e["modRevision"] == revision, f"modRevision: {where}")
            state[e["key"]] = (e["value"], e["version"], e["createRevision"], revision)
        else:
            check(before is not None, f"delete of a key that was not there (lost put?): {where}")
            check(e.get("prevValue") == before[0], f"previous value of a delete: {where}")
            del state[e["key"]]
    check(state == final_kvs, f"replayed stream differs from list: {state} vs {final_kvs}")


class Writer:
    """Random writes through a Shell per member; failures (a member down, an unknown outcome)
    are fine: the watchers must match whatever was applied."""

    def __init__(self, group, seed):
        self.group = group
        self.random = random.Random(seed)
        self.shells = {}

    def shell(self, name):
        if name not in self.shells:
            self.shells[name] = Shell(self.group.synodctl, self.group.socket(name))
        return self.shells[name]

    def drop(self, name):
        shell = self.shells.pop(name, None)
        if shell:
            shell.proc.kill()
            shell.proc.wait()

    def write(self, live, count):
        r = self.random
        done = 0
        for i in range(count):
            via = r.choice(live)
            k = lambda: f"{PREFIX}{r.randrange(12)}"  # noqa: E731
            op = r.randrange(10)
            if op < 5:
                line = f"put {k()} v{i}-{r.randrange(1000)}"
            elif op < 6:
                line = f"put other/{r.randrange(3)} x"  # outside the range
            elif op < 8:
                line = f"del {k()}"
            elif op < 9:
                a, b = k(), k()
                line = f"txn --then 'put {a} t{i}'" + (f" --then 'del {b}'" if b != a else "")
            else:
                line = f"del {PREFIX}{r.randrange(3)} --prefix"
            try:
                reply = self.shell(via).call("--timeout 3000 " + line)
            except (OSError, ValueError):
                reply = None
            if reply is None:
                self.drop(via)
            elif reply.get("ok") or reply.get("code") in ("NOT_FOUND", "COMPARE_FAILED"):
                done += 1
        return done

    def close(self):
        for name in list(self.shells):
            self.shells.pop(name).close()


def final_state(group, via):
    rc, reply = group.ctl(via).run("list", PREFIX, "--all")
    check(rc == 0, f"list: {rc} {reply}")
    kvs = {kv["key"]: (kv["value"], kv["version"], kv["createRevision"], kv["modRevision"])
           for kv in reply["kvs"]}
    return reply["revision"], kvs


def test_watchers_across_leader_kill_and_restart(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    watchers = {name: [Watcher(group, name, 1)] for name in group.names}
    wait_until(lambda: all(w[0].started() for w in watchers.values()), 20, "watches started")
    writer = Writer(group, seed=7)
    check(writer.write(group.names, 80) > 40, "most writes of phase 1 succeeded")

    # The leader dies; writes go on through the others; it comes back and its watch resumes.
    group.daemons[leader].kill()
    writer.drop(leader)
    others = [n for n in group.names if n != leader]
    wait_until(lambda: watchers[leader][-1].proc.poll() is not None, 20,
               f"the watch on the killed {leader} to notice")
    group.leader(among=others)
    writer.write(others, 60)
    group.daemons[leader].start()
    watchers[leader].append(Watcher(group, leader, watchers[leader][-1].current_through() + 1))

    # A follower restarts cleanly (SIGTERM) while writes continue through the others.
    follower = next(n for n in group.names if n != group.leader())
    group.daemons[follower].stop()
    writer.drop(follower)
    wait_until(lambda: watchers[follower][-1].proc.poll() is not None, 20,
               f"the watch on the stopped {follower} to end")
    writer.write([n for n in group.names if n != follower], 40)
    group.daemons[follower].start()
    # Resume well before where it stopped: those revisions come from the history the member
    # stored, not from log entries it replays at start.
    watchers[follower].append(
        Watcher(group, follower, max(1, watchers[follower][-1].current_through() - 60)))
    writer.write(group.names, 60)
    writer.close()

    group.wait_agree()
    revision, kvs = final_state(group, group.names[0])
    for name in group.names:
        wait_until(lambda: watchers[name][-1].current_through() >= revision, 30,
                   f"the watch on {name} to reach revision {revision}")
    streams = {}
    for name, runs in watchers.items():
        joined = []
        for run in runs:
            # A run resumed at revision F replaces what earlier runs delivered from F on.
            joined = [e for e in joined if e["revision"] < run.from_revision] + run.events()
        check_stream(joined, kvs)
        streams[name] = joined
        print(f"  {name}: {len(joined)} events in {len(runs)} watch(es), through {revision}")
    check(streams[group.names[0]] == streams[group.names[1]] == streams[group.names[2]],
          "every member's stream is the same")
    check(len(streams[group.names[0]]) > 100, "the workload produced events")

    # The checker can fail: a dropped event, a duplicate and a swap are all caught.
    stream = streams[group.names[0]]
    victims = [i for i, e in enumerate(stream) if e["type"] == "put" and e["version"] > 1]
    for broken in (stream[:victims[0]] + stream[victims[0] + 1:],
                   stream[:victims[1]] + [stream[victims[1]]] + stream[victims[1]:],
                   stream[:5] + [stream[6], stream[5]] + stream[7:]):
        try:
            check_stream(broken, kvs)
        except Failure:
            continue
        raise Failure("check_stream accepted a broken stream")

    for runs in watchers.values():
        runs[-1].stop()
    group.stop_all()


def test_watch_latency_through_another_member(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3).start()
    leader = group.leader()
    writer_member = next(n for n in group.names if n != leader)
    watch_member = next(n for n in group.names if n not in (leader, writer_member))
    watcher = Watcher(group, watch_member, 0)
    wait_until(watcher.started, 20, "the watch started")
    shell = Shell(synodctl, group.socket(writer_member))
    latencies = []
    for i in range(30):
        key = f"{PREFIX}lat{i}"
        sent = time.monotonic()
        check(shell.call(f"put {key} x").get("ok"), f"put {key}")

        def arrived():
            with watcher.lock:
                for at, line in watcher.lines:
                    if line.get("key") == key:
                        return at
            return None
        at = wait_until(arrived, 10, f"{key} at the watcher")
        latencies.append((at - sent) * 1000)
    shell.close()
    print(f"  put via {writer_member} (follower) -> watcher on {watch_member}: "
          f"median {statistics.median(latencies):.2f} ms, max {max(latencies):.2f} ms "
          f"(includes the synodctl shell round trip)")
    watcher.stop()
    group.stop_all()


if __name__ == "__main__":
    main([
        ("watchers across leader kill and restart", test_watchers_across_leader_kill_and_restart),
        ("watch latency through another member", test_watch_latency_through_another_member),
    ])
