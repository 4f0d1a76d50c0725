#!/usr/bin/env python3
"""synod as a system service: sd_notify readiness and watchdog pings through a NOTIFY_SOCKET this
test listens on, `synodctl health`, and SIGHUP re-reading the configuration.

usage: service_test.py SYNOD SYNODCTL [TEST-NAME|'']
"""
import os
import signal
import socket
import subprocess
import time

from harness import Ctl, _started, check, main, wait_until

# Peer ports: a block per test process so parallel runs of other suites never collide.
PORT_BASE = 23000 + (os.getpid() % 400) * 10
# The daemon's default election timeout; "a few election timeouts" below are counted in it.
ELECTION_TIMEOUT_S = 0.5


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages = []  # (monotonic arrival time, {field: value})

    def drain(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            fields = {}
            for line in data.decode(errors="replace").splitlines():
                key, _, value = line.partition("=")
                fields[key] = value
            self.messages.append((time.monotonic(), fields))

    def values(self, field):
        return [m[field] for _, m in self.drain() if field in m]

    def times(self, field):
        return [t for t, m in self.drain() if field in m]

    def close(self):
        self.sock.close()


def write_group_configs(workdir, n, extra=""):
    names = [f"n{k}" for k in range(1, n + 1)]
    paths = {}
    for name in names:
        paths[name] = workdir.file(f"{name}.yaml")
        write_member_config(workdir, name, names, extra)
    return paths


def write_member_config(workdir, name, names, extra=""):
    with open(workdir.file(f"{name}.yaml"), "w") as f:
        f.write("cluster_id: servicetest\n")
        f.write(f"node: {name}\n")
        f.write("peers:\n")
        for j, other in enumerate(names, start=1):
            f.write(f"  {other}: 127.0.0.1:{PORT_BASE + j}\n")
        f.write(f"data_dir: {workdir.file(name, 'data')}\n")
        f.write(f"socket: {workdir.file(name, 'synod.sock')}\n")
        f.write(extra)


def start_member(synod, workdir, name, notify_path=None, watchdog_usec=None):
    """Starts member `name` through sh, so WATCHDOG_PID can name the daemon's own pid ($$ of the
    shell that execs it)."""
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    env.pop("JOURNAL_STREAM", None)
    if notify_path:
        env["NOTIFY_SOCKET"] = notify_path
    script = 'exec "$0" --config "$1"'
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
        script = 'WATCHDOG_PID=$$; export WATCHDOG_PID; ' + script
    log = open(workdir.file(f"{name}.log"), "ab")
    proc = subprocess.Popen(["sh", "-c", script, synod, workdir.file(f"{name}.yaml")],
                            stdout=log, stderr=log, env=env)
    _started.append(proc)
    return proc


def read_log(workdir, name):
    with open(workdir.file(f"{name}.log"), "rb") as f:
        return f.read().decode(errors="replace")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def bootstrap_group(synod, workdir):
    """A brand-new group starts once every member of its first majority hears that the others are
    empty too: with three members, all three (a member with an empty data dir cannot tell a new
    group from one that lost its data). Brings the three up until each says READY=1, then stops
    them, so later starts are restarts of a group that exists."""
    listeners = [NotifyListener(workdir.file(f"n{i}.boot.notify")) for i in (1, 2, 3)]
    procs = [start_member(synod, workdir, f"n{i}", listeners[i - 1].path) for i in (1, 2)]
    # Two of three empty members: no READY=1; they say they wait for the third.
    wait_until(lambda: any("recovering" in s for s in listeners[0].values("STATUS")), 20,
               "a STATUS= line saying n1 recovers and waits for answers")
    time.sleep(4 * ELECTION_TIMEOUT_S)
    check(not listeners[0].values("READY") and not listeners[1].values("READY"),
          "two empty members of three declared the group new without the third")
    print(f"  two of three empty members: STATUS= {listeners[0].values('STATUS')}")
    procs.append(start_member(synod, workdir, "n3", listeners[2].path))
    for i, listener in enumerate(listeners):
        wait_until(lambda: listener.values("READY") == ["1"], 30, f"READY=1 from n{i + 1}")
    for proc in procs:
        stop(proc)
    for listener in listeners:
        listener.close()


def test_readiness_waits_for_quorum(synod, synodctl, workdir):
    write_group_configs(workdir, 3)
    bootstrap_group(synod, workdir)
    n1_notify = NotifyListener(workdir.file("n1.notify"))
    n2_notify = NotifyListener(workdir.file("n2.notify"))
    watchdog_usec = 2_000_000
    n1 = start_member(synod, workdir, "n1", n1_notify.path, watchdog_usec)
    ctl1 = Ctl(synodctl, workdir.file("n1", "synod.sock"))

    # Alone, n1 serves its socket but never says READY=1: it explains what it waits for.
    wait_until(lambda: any("waiting for a quorum" in s for s in n1_notify.values("STATUS")), 20,
               "a STATUS= line saying n1 waits for a quorum")
    alone_until = time.monotonic() + 4 * ELECTION_TIMEOUT_S
    while time.monotonic() < alone_until:
        check(n1.poll() is None, f"n1 exited while alone:\n{read_log(workdir, 'n1')}")
        check(not n1_notify.values("READY"), "n1 sent READY=1 without a quorum")
        time.sleep(0.05)
    statuses = n1_notify.values("STATUS")
    check("waiting for a quorum: 1 of 3 members reachable" in statuses,
          f"STATUS= lines while alone: {statuses}")
    print(f"  alone: STATUS= lines {statuses}")

    # Apps can connect before READY: a call waits and fails at its deadline.
    rc, reply = ctl1.run("--timeout", "300", "put", "early", "x")
    check(rc == 4 and reply.get("code") == "NO_QUORUM", f"put before quorum: {rc} {reply}")

    # The health probe says live, not ready, and why.
    rc, out = ctl1.run("health", json_out=False)
    check(rc == 1, f"health on a lone member exits {rc}: {out!r}")
    check("live: yes" in out and "ready: no" in out and "waiting for a quorum" in out,
          f"health output: {out!r}")

    started = time.monotonic()
    n2 = start_member(synod, workdir, "n2", n2_notify.path)
    wait_until(lambda: n1_notify.values("READY") == ["1"], 30, "READY=1 from n1 once n2 runs")
    print(f"  n1 READY=1 {time.monotonic() - started:.2f}s after n2 started")
    wait_until(lambda: n2_notify.values("READY") == ["1"], 30, "READY=1 from n2")
    rc, reply = ctl1.run("health")
    check(rc == 0 and reply["ok"] and reply["live"] and reply["ready"],
          f"health after quorum: {rc} {reply}")
    rc, reply = ctl1.run("put", "after", "quorum")
    check(rc == 0, f"put after READY: {rc} {reply}")

    # Watchdog pings come from the loop at about half of WATCHDOG_USEC.
    n1_notify.drain()
    window_start = time.monotonic()
    wait_until(lambda: len([t for t in n1_notify.times("WATCHDOG") if t > window_start]) >= 5,
               30, "five WATCHDOG=1 pings")
    pings = [t for t in n1_notify.times("WATCHDOG") if t > window_start]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    print(f"  watchdog: WATCHDOG_USEC={watchdog_usec}, ping gaps "
          f"{', '.join(f'{g:.2f}s' for g in gaps)}")
    check(all(v == "1" for v in n1_notify.values("WATCHDOG")), "a WATCHDOG= value other than 1")
    # Only a hang-catching bound: a gap longer than WATCHDOG_USEC would get the daemon killed.
    check(max(gaps) < watchdog_usec / 1e6, f"a watchdog gap exceeded WATCHDOG_USEC: {gaps}")
    check(not n2_notify.values("WATCHDOG"), "n2 pinged the watchdog without WATCHDOG_USEC")

    stop(n1)
    stop(n2)
    check(any(m.get("STOPPING") == "1" for _, m in n1_notify.drain()), "no STOPPING=1 from n1")
    n1_notify.close()
    n2_notify.close()

    # Nothing listens on the socket once the daemon is gone: health says unreachable.
    rc, out = ctl1.run("health", json_out=False)
    check(rc == 3, f"health of a stopped member exits {rc}: {out!r}")


def test_sighup_reload(synod, synodctl, workdir):
    write_member_config(workdir, "n1", ["n1"], "max_value_bytes: 1024\n")
    n1 = start_member(synod, workdir, "n1")
    ctl = Ctl(synodctl, workdir.file("n1", "synod.sock"))
    wait_until(lambda: ctl.run("health")[0] == 0, 20, "n1 to be ready")
    big = "x" * 2000
    rc, reply = ctl.run("put", "big", big)
    check(rc == 2 and reply["code"] == "INVALID_ARGUMENT",
          f"2000 bytes under a 1024 limit: {reply}")

    def logged(text):
        return text in read_log(workdir, "n1")

    # A live limit and a restart-only key change together: the limit applies, the other waits.
    write_member_config(workdir, "n1", ["n1"],
                        "max_value_bytes: 4096\nstore_limit_bytes: 33554432\nheartbeat_ms: 40\n")
    n1.send_signal(signal.SIGHUP)
    wait_until(lambda: logged("max_value_bytes: 1024 -> 4096 (applied)"), 20,
               "the applied max_value_bytes change in the log")
    check(logged("store_limit_bytes: 2147483648 -> 33554432 (applied)"), read_log(workdir, "n1"))
    check(logged("heartbeat_ms: 50 -> 40 (needs a restart)"), read_log(workdir, "n1"))
    rc, reply = ctl.run("put", "big", big)
    check(rc == 0, f"2000 bytes after raising the limit to 4096: {rc} {reply}")
    rc, status = ctl.run("status")
    check(status["storeLimitBytes"] == 33554432, f"storeLimitBytes after SIGHUP: {status}")

    # A broken file is named with its line and key and changes nothing.
    with open(workdir.file("n1.yaml"), "a") as f:
        f.write("max_value_bytes: 65536\n")  # line 10: a duplicate key
    n1.send_signal(signal.SIGHUP)
    wait_until(lambda: logged("nothing changed"), 20, "the refused reload in the log")
    log = read_log(workdir, "n1")
    check(f"{workdir.file('n1.yaml')}:10: max_value_bytes:" in log,
          f"error without FILE:LINE: KEY:\n{log}")
    rc, reply = ctl.run("put", "bigger", "x" * 5000)
    check(rc == 2, f"5000 bytes after a refused reload to 65536: {rc} {reply}")

    # Peers changed: logged as needing a restart; the member keeps serving as it was.
    write_member_config(workdir, "n1", ["n1", "n2", "n3"],
                        "max_value_bytes: 4096\nstore_limit_bytes: 33554432\n")
    n1.send_signal(signal.SIGHUP)
    wait_until(lambda: logged("peers changed: needs a restart"), 20, "the peers change in the log")
    rc, reply = ctl.run("put", "still", "serving")
    check(rc == 0, f"put after a peers change: {rc} {reply}")
    rc, status = ctl.run("status")
    check(len(status["members"]) == 1, f"members after a peers change: {status['members']}")
    stop(n1)
    check(n1.returncode == 0, f"n1 exit status {n1.returncode}")


if __name__ == "__main__":
    main([
        ("readiness waits for quorum", test_readiness_waits_for_quorum),
        ("sighup reload", test_sighup_reload),
    ])
