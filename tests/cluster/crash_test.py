#!/usr/bin/env python3
"""SIGKILL a single-member daemon in the middle of a stream of acknowledged puts, restart it, and
find every acknowledged put. Several rounds on the same data dir."""
import threading

from harness import Ctl, Daemon, Shell, check, main, single_member_config, wait_until

ROUNDS = 4
PUTS_BEFORE_KILL = 300


def test_kill_during_puts(synod, synodctl, workdir):
    config = single_member_config(workdir)
    sock = workdir.file("n1", "synod.sock")
    acknowledged = {}  # key -> value of every put that was answered ok
    sequence = 0
    for round_ in range(ROUNDS):
        daemon = Daemon(synod, config, sock).start()
        shell = Shell(synodctl, sock)
        acked_this_round = 0
        killer = None
        while True:
            sequence += 1
            key, value = f"k{sequence % 1000}", f"r{round_}-s{sequence}"
            reply = shell.call(f"put {key} {value}")
            if reply is None or not reply.get("ok"):
                break  # the daemon is gone: this put's outcome is unknown
            acknowledged[key] = value
            acked_this_round += 1
            if acked_this_round == PUTS_BEFORE_KILL:
                # Kill from another thread while puts keep flowing.
                killer = threading.Timer(0.05, daemon.kill)
                killer.start()
            check(acked_this_round < 100000, "the daemon was never killed")
        shell.close()
        daemon.wait()
        check(acked_this_round >= PUTS_BEFORE_KILL, f"only {acked_this_round} puts were answered")
        print(f"  round {round_}: {acked_this_round} puts acknowledged before SIGKILL")

    daemon = Daemon(synod, config, sock).start()
    shell = Shell(synodctl, sock)
    for key, value in acknowledged.items():
        reply = shell.call(f"get {key}")
        check(reply is not None and reply.get("ok"), f"acknowledged key {key} is missing: {reply}")
        # A later unacknowledged put to the same key may have been applied too; it carries a
        # later sequence number.
        got = reply["value"]
        if got != value:
            got_seq = int(got.split("-s")[1])
            want_seq = int(value.split("-s")[1])
            check(got_seq > want_seq,
                  f"key {key}: acknowledged {value} but found older {got}")
    shell.close()
    print(f"  all {len(acknowledged)} acknowledged keys found after {ROUNDS} SIGKILLs")
    check(daemon.stop() == 0, "daemon did not exit 0 on SIGTERM")


if __name__ == "__main__":
    main([("kill -9 during acknowledged puts", test_kill_during_puts)])
