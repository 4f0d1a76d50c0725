#!/usr/bin/env python3
"""Keeps synod-bench working: short runs against one member and against a group of 3 it runs
itself, every workload, the idle and floor reports, failover under SIGKILL and SIGTERM, JSON output.
Timing is never asserted here; only that operations succeeded and the reports are complete."""
import json
import os
import subprocess
import sys

from harness import Daemon, check, main, single_member_config

FIELDS = ["system", "kind", "workload", "clients", "valueBytes", "seconds", "ok", "failed",
          "opsPerSecond", "p50Us", "p90Us", "p99Us", "p999Us", "cpuSecondsPer1000", "peakRssKb",
          "benchCpuSeconds", "processes", "members"]


def bench_path():
    bench = sys.argv[4] if len(sys.argv) > 4 else None
    check(bench, "usage: bench_smoke_test.py SYNOD SYNODCTL '' SYNOD_BENCH")
    return bench


def run_json(args, timeout=120):
    p = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=timeout)
    check(p.returncode == 0, f"synod-bench failed: {p.stdout} {p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def check_workloads(rows, expected, sampled):
    runs = [r for r in rows if r["kind"] == "workload"]
    check(len(runs) == expected, f"expected {expected} results, got {len(runs)}: {rows}")
    for row in runs:
        check(all(f in row for f in FIELDS), f"missing fields in {row}")
        check(row["system"] == "synod", f"wrong system in {row}")
        check(row["ok"] > 0 and row["failed"] == 0, f"operations failed: {row}")
        check(len(row["members"]) == sampled, f"expected {sampled} sampled members: {row}")
        if sampled:
            check(row["peakRssKb"] > 0 and row["cpuSecondsPer1000"] > 0,
                  f"member CPU and RSS not sampled: {row}")
        print(f"  {row['workload']:12} x{row['clients']}: {row['opsPerSecond']:.0f} ops/s, "
              f"p50 {row['p50Us']:.0f} us")


def test_bench_smoke(synod, synodctl, workdir):
    bench = bench_path()
    sock = workdir.file("n1", "synod.sock")
    daemon = Daemon(synod, single_member_config(workdir), sock).start()
    rows = run_json([bench, "--socket", sock, "--seconds", "0.3", "--clients", "1,4",
                     "--workload", "put,get,get-leader,sget,txn", "--keys", "50",
                     "--pid", str(daemon.proc.pid), "--idle-seconds", "0.3",
                     "--floor", workdir.file("n1"), "--floor-commits", "5"])
    check_workloads(rows, 10, 1)
    idle = [r for r in rows if r["kind"] == "idle"]
    check(len(idle) == 1 and idle[0]["maxRssKb"] > 0, f"no idle report: {rows}")
    floor = [r for r in rows if r["kind"] == "floor"]
    check(len(floor) == 1 and floor[0]["lmdbCommitUs"] > 0 and floor[0]["tcpRoundTripUs"] > 0
          and floor[0]["rpcRoundTripUs"] > 0 and floor[0]["putOverFloor"] > 0,
          f"incomplete floor report: {floor}")
    print(f"  floor {floor[0]['floorUs']:.0f} us, put p50 = {floor[0]['putOverFloor']:.2f} x floor")
    # The markdown table (no --json) has a row per run.
    p = subprocess.run([bench, "--socket", sock, "--ops", "20", "--clients", "2",
                        "--workload", "put,sget"], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"synod-bench --ops failed: {p.stderr}")
    table = [l for l in p.stdout.splitlines() if l.startswith("| put |") or l.startswith("| sget |")]
    check(len(table) == 2, f"expected 2 table rows: {p.stdout}")
    # A single member has no follower's member to read at: a clear error, not a crash.
    p = subprocess.run([bench, "--socket", sock, "--ops", "5", "--workload", "get-follower"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and "more than one member" in p.stderr, f"get-follower: {p.stderr}")
    for bad in (["--clients", "0"], ["--processes", "0"], ["--locks", "0"], ["--rate", "-1"],
                ["--workload", "nope"],
                ["--seconds", "x"], ["--etcd", "127.0.0.1:1", "--floor", "/tmp"],
                ["--socket", sock, "--etcd", "127.0.0.1:1"]):
        p = subprocess.run([bench] + bad, capture_output=True, text=True)
        check(p.returncode == 2 and "synod-bench:" in p.stderr, f"{bad} is a usage error")
    check(daemon.stop() == 0, "daemon did not stop cleanly")


def group_configs(workdir, base):
    configs = []
    for k in (1, 2, 3):
        path = workdir.file(f"n{k}.yaml")
        with open(path, "w") as f:
            f.write(f"cluster_id: benchsmoke\nnode: n{k}\npeers:\n")
            for j in (1, 2, 3):
                f.write(f"  n{j}: 127.0.0.1:{base + j}\n")
            f.write(f"data_dir: {workdir.file(f'n{k}', 'data')}\n")
            f.write(f"socket: {workdir.file(f'n{k}', 'synod.sock')}\n")
        configs += ["--config", path]
    return configs


def test_group_smoke(synod, synodctl, workdir):
    bench = bench_path()
    configs = group_configs(workdir, 23000 + (os.getpid() % 400) * 10)
    rows = run_json([bench, "--synod", synod] + configs +
                    ["--seconds", "0.3", "--clients", "1,4", "--keys", "50",
                     "--workload", "put,get-leader,get-follower,txn", "--idle-seconds", "0.3"])
    check_workloads(rows, 8, 3)
    idle = [r for r in rows if r["kind"] == "idle"]
    check(len(idle) == 1 and len(idle[0]["members"]) == 3, f"no idle report: {rows}")
    # Leases, locks and watch fan-out for a second each, then reads and locks from two load
    # generator processes, against the same group started again.
    rows = run_json([bench, "--synod", synod] + configs +
                     ["--seconds", "1", "--clients", "4", "--keys", "50", "--locks", "2",
                      "--workload", "lease,lock,watch"])
    check_workloads(rows, 3, 3)
    watch = [r for r in rows if r["workload"] == "watch"][0]
    check(watch["watchers"] == 4 and watch["puts"] > 0 and watch["ok"] == 4 * watch["puts"],
          f"every watcher gets every put: {watch}")
    rows = run_json([bench, "--synod", synod] + configs +
                    ["--seconds", "0.5", "--clients", "1,4", "--keys", "50", "--processes", "2",
                     "--workload", "get-leader,lock"])
    check_workloads(rows, 4, 3)
    check([r["processes"] for r in rows if r["kind"] == "workload"] == [1, 2, 1, 2],
          f"clients split over up to 2 processes: {rows}")


def test_failover_smoke(synod, synodctl, workdir):
    bench = bench_path()
    configs = group_configs(workdir, 23000 + (os.getpid() % 400) * 10 + 5)
    rows = run_json([bench, "--failover", "2", "--synod", synod] + configs)
    check([r["signal"] for r in rows] == ["KILL", "TERM"], f"expected KILL and TERM: {rows}")
    for result in rows:
        check(result["kind"] == "failover" and result["failoverRounds"] == 2
              and result["worstMs"] > 0, f"bad report: {result}")
        print(f"  failover SIG{result['signal']}: median {result['medianMs']:.0f} ms, "
              f"worst {result['worstMs']:.0f} ms")


if __name__ == "__main__":
    main([("synod-bench smoke", test_bench_smoke),
          ("synod-bench group smoke", test_group_smoke),
          ("synod-bench failover smoke", test_failover_smoke)])
