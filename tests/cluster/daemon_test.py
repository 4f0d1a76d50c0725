#!/usr/bin/env python3
"""The daemon as a process: start, stop, socket ownership, data dir lock, readiness, bad configs."""
import os
import signal
import socket
import stat
import subprocess

from harness import Ctl, Daemon, check, main, single_member_config, wait_until


def test_sigterm_stops_cleanly_and_data_persists(synod, synodctl, workdir):
    config = single_member_config(workdir)
    sock = workdir.file("n1", "synod.sock")
    daemon = Daemon(synod, config, sock).start()
    ctl = Ctl(synodctl, sock)
    rc, reply = ctl.run("put", "greeting", "hello")
    check(rc == 0 and reply["ok"], f"put failed: {reply}")
    mode = stat.S_IMODE(os.stat(sock).st_mode)
    check(mode == 0o660, f"socket mode is {oct(mode)}, expected 0660")
    check(daemon.stop() == 0, "SIGTERM did not give exit 0")
    check(not os.path.exists(sock), "the daemon left its own socket behind")
    daemon.start()
    rc, reply = ctl.run("get", "greeting")
    check(rc == 0 and reply["value"] == "hello", f"value lost across restart: {reply}")
    check(daemon.stop() == 0, "second stop failed")


def test_socket_mode_and_group(synod, synodctl, workdir):
    import grp
    group = grp.getgrnam("daemon")
    config = single_member_config(workdir, extra='socket_mode: "0600"\nsocket_group: daemon\n')
    sock = workdir.file("n1", "synod.sock")
    daemon = Daemon(synod, config, sock).start()
    st = os.stat(sock)
    check(stat.S_IMODE(st.st_mode) == 0o600, f"socket mode {oct(stat.S_IMODE(st.st_mode))}")
    check(st.st_gid == group.gr_gid, f"socket group {st.st_gid}, expected {group.gr_gid}")
    daemon.stop()
    bad = single_member_config(workdir, extra="socket_group: no-such-group-here\n")
    refused = Daemon(synod, bad, sock)
    refused.start(wait=False)
    check(refused.wait() == 1, "an unknown socket_group was not refused")
    check("no-such-group-here" in refused.read_log(), refused.read_log())


def test_stale_socket_is_replaced(synod, synodctl, workdir):
    config = single_member_config(workdir)
    sock = workdir.file("n1", "synod.sock")
    daemon = Daemon(synod, config, sock).start()
    daemon.kill(signal.SIGKILL)
    daemon.wait()
    check(os.path.exists(sock), "a SIGKILLed daemon cannot remove its socket")
    daemon.start()
    # Serving comes before the election of a member of one finishes: poll for it.
    def leads():
        rc, reply = Ctl(synodctl, sock).run("status")
        return rc == 0 and reply["role"] == "leader"
    wait_until(leads, 20, "the restarted member to lead")
    check("stale socket" in daemon.read_log(), "replacing the stale socket was not logged")
    daemon.stop()


def test_live_socket_is_never_stolen(synod, synodctl, workdir):
    first = Daemon(synod, single_member_config(workdir), workdir.file("n1", "synod.sock")).start()
    # A second member with its own data dir but the same socket path.
    other = single_member_config(workdir, name="n2", port=7192,
                                 extra="")
    with open(other) as f:
        text = f.read().replace(workdir.file("n2", "synod.sock"), workdir.file("n1", "synod.sock"))
    with open(other, "w") as f:
        f.write(text)
    second = Daemon(synod, other, workdir.file("n1", "synod.sock"))
    second.start(wait=False)
    check(second.wait() == 1, "a second daemon on a live socket did not exit 1")
    check("another daemon is serving" in second.read_log(), second.read_log())
    check(first.serving(), "the first daemon lost its socket")
    check(first.stop() == 0, "first daemon did not stop cleanly")


def test_non_socket_file_is_not_replaced(synod, synodctl, workdir):
    config = single_member_config(workdir)
    sock = workdir.file("n1", "synod.sock")
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    with open(sock, "w") as f:
        f.write("precious")
    daemon = Daemon(synod, config, sock)
    daemon.start(wait=False)
    check(daemon.wait() == 1, "daemon did not refuse a regular file at its socket path")
    check("is not a socket" in daemon.read_log(), daemon.read_log())
    with open(sock) as f:
        check(f.read() == "precious", "the file was touched")


def test_data_dir_is_locked(synod, synodctl, workdir):
    config = single_member_config(workdir)
    first = Daemon(synod, config, workdir.file("n1", "synod.sock")).start()
    # Same data dir, another socket.
    other = workdir.file("second.yaml")
    with open(config) as f:
        text = f.read().replace("synod.sock", "second.sock")
    with open(other, "w") as f:
        f.write(text)
    second = Daemon(synod, other, workdir.file("n1", "second.sock"))
    second.start(wait=False)
    check(second.wait() == 1, "a second daemon on the same data dir did not exit 1")
    check("in use" in second.read_log(), second.read_log())
    first.stop()


def test_ready_notification(synod, synodctl, workdir):
    notify_path = workdir.file("notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000")
    env.pop("WATCHDOG_PID", None)
    config = single_member_config(workdir)
    daemon = Daemon(synod, config, workdir.file("n1", "synod.sock"), env=env)
    daemon.start(wait=False)
    messages = []
    while not any("READY=1" in m for m in messages):
        messages.append(listener.recv(4096).decode())
    check(daemon.serving(), "READY=1 was sent before the socket accepted")
    while not any("WATCHDOG=1" in m for m in messages):
        messages.append(listener.recv(4096).decode())
    daemon.stop()
    listener.close()


def test_check_config(synod, synodctl, workdir):
    good = single_member_config(workdir)
    p = subprocess.run([synod, "--check-config", good], capture_output=True, text=True)
    check(p.returncode == 0, f"good config refused: {p.stderr}")
    check('node: "n1"' in p.stdout, f"effective config not printed: {p.stdout}")
    cases = {
        "unknown key": ("heartbeat: 5\n", "heartbeat"),
        "duplicate key": ("node: n2\n", "node"),
        "wrong type": ("heartbeat_ms: fast\n", "heartbeat_ms"),
    }
    for what, (extra, key) in cases.items():
        path = workdir.file(what.replace(" ", "_") + ".yaml")
        with open(good) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text + extra)
        line = text.count("\n") + 1
        p = subprocess.run([synod, "--check-config", path], capture_output=True, text=True)
        check(p.returncode == 1, f"{what}: exit {p.returncode}")
        check(f"{path}:{line}: {key}" in p.stderr, f"{what}: message lacks file:line: key: "
                                                   f"{p.stderr!r}")
    missing = workdir.file("missing.yaml")
    p = subprocess.run([synod, "--check-config", missing], capture_output=True, text=True)
    check(p.returncode == 1 and missing in p.stderr, f"missing file: {p.stderr}")
    p = subprocess.run([synod, "--bogus"], capture_output=True, text=True)
    check(p.returncode == 2, "an unknown option is a usage error")


if __name__ == "__main__":
    main([
        ("sigterm stops cleanly, data persists", test_sigterm_stops_cleanly_and_data_persists),
        ("socket mode and group", test_socket_mode_and_group),
        ("stale socket is replaced", test_stale_socket_is_replaced),
        ("live socket is never stolen", test_live_socket_is_never_stolen),
        ("non-socket file is not replaced", test_non_socket_file_is_not_replaced),
        ("data dir is locked", test_data_dir_is_locked),
        ("ready and watchdog notifications", test_ready_notification),
        ("check-config", test_check_config),
    ])
