#!/usr/bin/env python3
"""Socket activation through systemd-socket-activate, a real systemd tool: the socket exists before
the daemon; the first app's connection starts it and is served; the daemon leaves the socket it
did not bind in place when it stops."""
import os
import shutil
import signal
import subprocess
import time

from harness import Ctl, check, main, single_member_config, wait_until


def test_socket_activation(synod, synodctl, workdir):
    activate = shutil.which("systemd-socket-activate")
    check(activate, "systemd-socket-activate is missing (Debian package systemd)")
    config = single_member_config(workdir)
    sock = workdir.file("n1", "synod.sock")
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    log = open(workdir.file("activate.log"), "wb")
    proc = subprocess.Popen([activate, "-l", sock, synod, "--config", config],
                            stdout=log, stderr=log)
    try:
        wait_until(lambda: os.path.exists(sock), 10, "systemd-socket-activate to bind")
        # The daemon is not running yet: this connection starts it, and waits to be served.
        started = time.monotonic()
        rc, reply = Ctl(synodctl, sock).run("put", "activated", "yes")
        check(rc == 0 and reply["ok"], f"put through an activated socket: {rc} {reply}")
        print(f"  first call served {time.monotonic() - started:.2f}s after connecting")
        rc, reply = Ctl(synodctl, sock).run("get", "activated")
        check(rc == 0 and reply["value"] == "yes", f"get: {reply}")
        with open(workdir.file("activate.log"), "rb") as f:
            check(b"handed over by systemd" in f.read(), "the daemon bound its own socket")
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(timeout=20) == 0, "the daemon did not stop cleanly")
        check(os.path.exists(sock), "the daemon removed a socket it did not bind")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main([("socket activation", test_socket_activation)])
