"""Helpers for tests that run real synod daemons on this host (Unix sockets, loopback ports)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def wait_until(predicate, timeout_s, what):
    """Polls `predicate` until it returns a true value or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


class Workdir:
    """A temporary directory (short path: Unix socket paths are limited to 107 bytes)."""

    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix=f"synod-{name}-", dir="/tmp")

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def single_member_config(workdir, name="n1", port=7191, extra=""):
    path = workdir.file(f"{name}.yaml")
    with open(path, "w") as f:
        f.write(
            f"cluster_id: test\n"
            f"node: {name}\n"
            f"peers:\n"
            f"  {name}: 127.0.0.1:{port}\n"
            f"data_dir: {workdir.file(name, 'data')}\n"
            f"socket: {workdir.file(name, 'synod.sock')}\n"
            + extra
        )
    return path


# Every daemon a test started; main() kills those still running when the test ends, pass or fail.
_started = []


class Daemon:
    """One synod process started with --config."""

    def __init__(self, synod, config, socket_path, env=None, log_path=None):
        self.synod = synod
        self.config = config
        self.socket = socket_path
        self.env = env
        self.log_path = log_path or (config + ".log")
        self.proc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.synod, "--config", self.config],
            stdout=self.log, stderr=self.log, env=self.env)
        _started.append(self.proc)
        if wait:
            wait_until(lambda: self.serving() or self.exited(), 20, "the daemon to serve")
            check(not self.exited(), f"daemon exited at start:\n{self.read_log()}")
        return self

    def exited(self):
        return self.proc.poll() is not None

    def serving(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)

    def wait(self, timeout_s=20):
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise Failure(f"daemon did not exit within {timeout_s}s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.wait()
        return self.proc.returncode if self.proc else None

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class Ctl:
    """synodctl against one socket."""

    def __init__(self, synodctl, socket_path):
        self.synodctl = synodctl
        self.socket = socket_path

    def run(self, *args, json_out=True, timeout_s=30, input_text=None):
        cmd = [self.synodctl, "--socket", self.socket]
        if json_out:
            cmd.append("--json")
        cmd += list(args)
        p = subprocess.run(cmd, capture_output=True, timeout=timeout_s, input=input_text,
                           text=True)
        out = p.stdout
        if json_out and out.strip() and not args[:1] == ("shell",):
            try:
                return p.returncode, json.loads(out)
            except json.JSONDecodeError:
                raise Failure(f"synodctl {' '.join(args)} printed non-JSON: {out!r}")
        return p.returncode, out


class Shell:
    """A long-running `synodctl shell`: one request line in, one JSON line out."""

    def __init__(self, synodctl, socket_path):
        self.proc = subprocess.Popen(
            [synodctl, "--socket", socket_path, "shell"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def call(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            return None
        return json.loads(out)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Group:
    """Members n1..nN of one group on loopback, each with its own data dir and socket.

    `extra` is appended to every member's config (e.g. "log_retention_slots: 200\n"). Peer ports
    come from a block chosen by the test process id, so parallel test processes never collide.
    """

    def __init__(self, synod, synodctl, workdir, n=3, cluster_id="grouptest", extra="",
                 port_base=None):
        self.synod, self.synodctl, self.workdir, self.n = synod, synodctl, workdir, n
        self.port_base = port_base or 21000 + (os.getpid() % 400) * 10
        self.names = [f"n{k}" for k in range(1, n + 1)]
        self.daemons = {}
        for name in self.names:
            config = workdir.file(f"{name}.yaml")
            with open(config, "w") as f:
                f.write(f"cluster_id: {cluster_id}\nnode: {name}\npeers:\n")
                for j, other in enumerate(self.names, start=1):
                    f.write(f"  {other}: 127.0.0.1:{self.port_base + j}\n")
                f.write(f"data_dir: {self.data_dir(name)}\n")
                f.write(f"socket: {workdir.file(name, 'synod.sock')}\n")
                f.write(extra)
            self.daemons[name] = Daemon(synod, config, workdir.file(name, "synod.sock"))

    def data_dir(self, name):
        return self.workdir.file(name, "data")

    def socket(self, name):
        return self.daemons[name].socket

    def ctl(self, name):
        return Ctl(self.synodctl, self.daemons[name].socket)

    def start(self, *names):
        for name in names or self.names:
            self.daemons[name].start()
        return self

    def status(self, name):
        """`synodctl status --json` of one member, or None when it does not answer."""
        try:
            rc, reply = self.ctl(name).run("--timeout", "1000", "status", timeout_s=10)
        except (subprocess.TimeoutExpired, Failure):
            return None
        return reply if rc == 0 else None

    def leader(self, among=None, timeout_s=20, not_=None, within=False):
        """The member every live member in `among` names as leader, once they agree (and it is
        not `not_`; with `within`, it must be one of `among`)."""
        among = among or [n for n in self.names if not self.daemons[n].exited()]

        def agreed():
            seen = set()
            for name in among:
                s = self.status(name)
                if not s or not s.get("leader"):
                    return None
                seen.add(s["leader"])
            if len(seen) != 1 or not_ in seen or (within and not seen <= set(among)):
                return None
            return seen.pop()
        return wait_until(agreed, timeout_s, f"members {among} to agree on a leader")

    def wait_agree(self, names=None, timeout_s=60):
        """Until every member applied the same slot and holds the same state digest."""
        names = names or self.names

        def agreed():
            views = [self.status(name) for name in names]
            if any(v is None for v in views):
                return None
            slots = {v["appliedSlot"] for v in views}
            digests = {v["stateDigest"] for v in views}
            if len(slots) == 1 and len(digests) == 1:
                return (slots.pop(), digests.pop())
            return None
        return wait_until(agreed, timeout_s, f"{names} to apply the same slot with one digest")

    def put(self, via, key, value):
        rc, reply = self.ctl(via).run("put", key, value)
        check(rc == 0, f"put {key} via {via}: {rc} {reply}")

    def get(self, via, key, serializable=False):
        args = ["get", key] + (["--serializable"] if serializable else [])
        rc, reply = self.ctl(via).run(*args)
        check(rc == 0, f"get {key} via {via}: {rc} {reply}")
        return reply["value"]

    def stop_all(self):
        for d in self.daemons.values():
            if d.proc and d.proc.poll() is None:
                d.stop()


def main(tests):
    """Runs each (name, fn) with a fresh Workdir; prints results; exits non-zero on failure."""
    if len(sys.argv) < 3:
        print("usage: TEST SYNOD SYNODCTL [only-test-name]", file=sys.stderr)
        sys.exit(2)
    synod, synodctl = sys.argv[1], sys.argv[2]
    only = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    failed = 0
    for name, fn in tests:
        if only and name != only:
            continue
        workdir = Workdir(name.replace(" ", "-")[:20])
        started = time.monotonic()
        try:
            fn(synod, synodctl, workdir)
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)")
            workdir.cleanup()
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}  (files kept in {workdir.path})")
        finally:
            for proc in _started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            _started.clear()
    sys.exit(1 if failed else 0)
