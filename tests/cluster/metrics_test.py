#!/usr/bin/env python3
"""The Prometheus endpoint (metrics_listen) of real daemons: a 3-member group scraped at every
member with urllib, each exposition parsed strictly; the leader's ballot as `synodctl status`
shows it; the commit histogram growing with writes; 404/405/400 for other requests; an address
that cannot be bound stops the start with exit 1.

usage: metrics_test.py SYNOD SYNODCTL [TEST-NAME|'']
"""
import re
import socket
import subprocess
import urllib.error
import urllib.request

from harness import Daemon, Group, Shell, check, main, single_member_config, wait_until

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? (\S+)")
HELP = re.compile(rf"# HELP ({NAME}) .*")
TYPE = re.compile(rf"# TYPE ({NAME}) (gauge|counter|histogram)")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text):
    """Strict text format 0.0.4: every line a HELP, TYPE or `name{labels} value` line; every
    sample's family has exactly one HELP and one TYPE, before its samples, which are contiguous.
    Returns {family: type} and a list of (name, {label: value}, float value)."""
    check(text.endswith("\n"), "exposition ends with a newline")
    types, helped, samples, done = {}, set(), [], set()
    current = None
    for line in text.splitlines():
        if m := HELP.fullmatch(line):
            check(m[1] not in helped and m[1] not in types, f"HELP once, before TYPE: {line}")
            helped.add(m[1])
        elif m := TYPE.fullmatch(line):
            check(m[1] in helped and m[1] not in types, f"TYPE once, after HELP: {line}")
            types[m[1]] = m[2]
            if current:
                done.add(current)
            current = m[1]
        else:
            m = SAMPLE.fullmatch(line)
            check(m is not None, f"not a sample line: {line!r}")
            name = m[1]
            family = name
            if types.get(name) is None:
                for suffix in ("_bucket", "_sum", "_count"):
                    if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                        family = name[:-len(suffix)]
            check(family in types, f"sample without TYPE: {line}")
            check(family == current and family not in done, f"samples of {family} together")
            labels = dict(LABEL_PAIR.findall(m[2] or ""))
            samples.append((name, labels, float(m[3])))
    return types, samples


def value(samples, name, **labels):
    found = [v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in
                                                             labels.items())]
    check(len(found) == 1, f"one sample {name} {labels}: {found}")
    return found[0]


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        check(r.status == 200, f"status {r.status}")
        check(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"),
              f"content type: {r.headers['Content-Type']}")
        return r.read().decode()


def http_status(port, path, method="GET", data=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def raw_request(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        return s.recv(4096).decode(errors="replace")


def metrics_group(synod, synodctl, workdir):
    group = Group(synod, synodctl, workdir, 3)
    ports = {}
    for name in group.names:
        ports[name] = free_port()
        with open(group.daemons[name].config, "a") as f:
            f.write(f"metrics_listen: 127.0.0.1:{ports[name]}\n")
    return group.start(), ports


def test_group_scraped(synod, synodctl, workdir):
    group, ports = metrics_group(synod, synodctl, workdir)
    leader = group.leader()

    def roles_settled():
        leaders = []
        for name in group.names:
            _, samples = parse(scrape(ports[name]))
            if value(samples, "synod_role", member=name, role="leader") == 1:
                leaders.append(name)
            for peer in group.names:
                if peer != name and value(samples, "synod_peer_reachable", member=name,
                                          peer=peer) != 1:
                    return None
        return leaders if leaders == [leader] else None
    wait_until(roles_settled, 20, f"{leader} alone reporting role leader, every peer reachable")

    # Every family the README lists is there with its type, at every member.
    expected = {
        "synod_role": "gauge", "synod_ballot_round": "gauge", "synod_ballot_member": "gauge",
        "synod_leader_known": "gauge", "synod_decided_slot": "gauge",
        "synod_applied_slot": "gauge", "synod_revision": "gauge", "synod_incarnation": "gauge",
        "synod_uptime_seconds": "gauge", "synod_peer_reachable": "gauge",
        "synod_peer_report_age_seconds": "gauge",
        "synod_peer_messages_sent_total": "counter",
        "synod_peer_messages_dropped_total": "counter",
        "synod_peer_dial_failures_total": "counter",
        "synod_group_commit_duration_seconds": "histogram",
        "synod_fsync_duration_seconds": "histogram", "synod_commits_total": "counter",
        "synod_slot_commands": "histogram", "synod_store_used_bytes": "gauge",
        "synod_store_limit_bytes": "gauge", "synod_pending_writes": "gauge",
        "synod_pending_reads": "gauge", "synod_snapshots_installed_total": "counter",
        "synod_snapshots_served_total": "counter", "synod_recovering": "gauge",
        "synod_leases": "gauge", "synod_leases_local": "gauge", "synod_locks": "gauge",
        "synod_lease_renew_batches_total": "counter", "synod_lease_renewals_total": "counter",
        "synod_lease_expiries_total": "counter", "synod_lease_checkpoints_total": "counter",
    }
    for name in group.names:
        types, samples = parse(scrape(ports[name]))
        for family, kind in expected.items():
            check(types.get(family) == kind, f"{name}: {family} is a {kind}: {types.get(family)}")
        check(("synod_peer_lag_slots" in types) == (name == leader),
              f"{name}: lag exported by the leader only")
        check(value(samples, "synod_leader_known", member=name) == 1, f"{name} knows the leader")
        check(value(samples, "synod_store_used_bytes", member=name) > 0, f"{name} store size")

    # The leader's ballot as synodctl shows it.
    status = group.status(leader)
    _, samples = parse(scrape(ports[leader]))
    check(value(samples, "synod_ballot_round", member=leader) == status["ballot"]["round"],
          f"ballot round: metrics vs status {status['ballot']}")
    check(value(samples, "synod_ballot_member", member=leader) == status["ballot"]["member"],
          f"ballot member: metrics vs status {status['ballot']}")

    # Writes move the commit histograms and the applied slot, at every member.
    before = {}
    for name in group.names:
        _, samples = parse(scrape(ports[name]))
        before[name] = (value(samples, "synod_group_commit_duration_seconds_count", member=name),
                        value(samples, "synod_applied_slot", member=name))
    shell = Shell(synodctl, group.socket(leader))
    for i in range(20):
        check(shell.call(f"put metrics/{i} v{i}").get("ok"), f"put metrics/{i}")
    shell.close()
    for name in group.names:
        def grown():
            _, samples = parse(scrape(ports[name]))
            count = value(samples, "synod_group_commit_duration_seconds_count", member=name)
            applied = value(samples, "synod_applied_slot", member=name)
            return (count > before[name][0] and applied > before[name][1]) and samples
        samples = wait_until(grown, 20, f"{name}'s commit count and applied slot to grow")
        count = value(samples, "synod_group_commit_duration_seconds_count", member=name)
        inf = value(samples, "synod_group_commit_duration_seconds_bucket", member=name, le="+Inf")
        check(inf == count, f"{name}: +Inf bucket {inf} == count {count}")
        check(value(samples, "synod_fsync_duration_seconds_count", member=name) == count ==
              value(samples, "synod_commits_total", member=name), f"{name}: one fsync per commit")
        buckets = [v for n, ls, v in samples if n == "synod_fsync_duration_seconds_bucket"]
        check(buckets == sorted(buckets), f"{name}: cumulative buckets {buckets}")
    _, samples = parse(scrape(ports[leader]))
    commands = value(samples, "synod_slot_commands_sum", member=leader)
    check(commands >= 20, f"the leader applied the 20 commands: {commands}")
    print(f"  leader {leader}: ballot {status['ballot']}, {int(commands)} commands applied in "
          f"{int(value(samples, 'synod_slot_commands_count', member=leader))} slots, "
          f"{int(value(samples, 'synod_commits_total', member=leader))} group commits, fsync sum "
          f"{value(samples, 'synod_fsync_duration_seconds_sum', member=leader):.4f}s")

    # Anything but GET /metrics, and requests that do not parse.
    port = ports[leader]
    check(http_status(port, "/nope") == 404, "another path: 404")
    check(http_status(port, "/") == 404, "the root: 404")
    check(http_status(port, "/metrics?x=1") == 200, "a query string is ignored")
    check(http_status(port, "/metrics", method="POST", data=b"x") == 405, "POST /metrics: 405")
    answer = raw_request(port, b"GARBAGE\r\n\r\n")
    check(answer.startswith("HTTP/1.1 400 "), f"garbage: 400, got {answer[:60]!r}")
    answer = raw_request(port, b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n")
    check(answer.startswith("HTTP/1.1 400 "), f"a bad header: 400, got {answer[:60]!r}")
    try:
        raw_request(port, b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 300000 + b"\r\n\r\n")
    except OSError:
        pass  # closed with the request unread: a reset is the expected answer
    parse(scrape(port))  # still serving
    check(not group.daemons[leader].exited(), "the leader survived the bad requests")

    # A clean stop closes the endpoint.
    check(group.daemons[leader].stop() == 0, "leader stopped cleanly")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        check(False, "the metrics port still accepts after the daemon stopped")
    except ConnectionRefusedError:
        pass
    group.stop_all()


def test_unbindable_address(synod, synodctl, workdir):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = single_member_config(workdir, port=free_port(),
                                  extra=f"metrics_listen: 127.0.0.1:{port}\n")
    daemon = Daemon(synod, config, workdir.file("n1", "synod.sock")).start(wait=False)
    code = daemon.wait()
    taken.close()
    log = daemon.read_log()
    check(code == 1, f"exit 1, got {code}:\n{log}")
    check(f"cannot listen for metrics on 127.0.0.1:{port}" in log, f"names the address:\n{log}")


def test_off_by_default(synod, synodctl, workdir):
    config = single_member_config(workdir, port=free_port())
    daemon = Daemon(synod, config, workdir.file("n1", "synod.sock")).start()
    check("metrics on" not in daemon.read_log(), "no endpoint without metrics_listen")
    check(daemon.stop() == 0, "stopped cleanly")


if __name__ == "__main__":
    main([
        ("group scraped", test_group_scraped),
        ("unbindable address", test_unbindable_address),
        ("off by default", test_off_by_default),
    ])
