#!/usr/bin/env python3
"""Keeps synod-bench working: a short run against a single member, every workload, JSON output.
Timing is never asserted here; only that operations succeeded and the report is complete."""
import json
import subprocess
import sys

from harness import Daemon, check, main, single_member_config

FIELDS = ["workload", "clients", "seconds", "ok", "failed", "opsPerSecond", "p50Us", "p90Us",
          "p99Us", "p999Us"]


def test_bench_smoke(synod, synodctl, workdir):
    bench = sys.argv[4] if len(sys.argv) > 4 else None
    check(bench, "usage: bench_smoke_test.py SYNOD SYNODCTL '' SYNOD_BENCH")
    sock = workdir.file("n1", "synod.sock")
    daemon = Daemon(synod, single_member_config(workdir), sock).start()
    p = subprocess.run([bench, "--socket", sock, "--seconds", "0.3", "--clients", "1,4",
                        "--workload", "put,get,sget", "--keys", "50", "--json"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"synod-bench failed: {p.stderr}")
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    check(len(rows) == 6, f"expected 6 results, got {len(rows)}: {p.stdout}")
    for row in rows:
        check(all(f in row for f in FIELDS), f"missing fields in {row}")
        check(row["ok"] > 0 and row["failed"] == 0, f"operations failed: {row}")
        print(f"  {row['workload']:5} x{row['clients']}: {row['opsPerSecond']:.0f} ops/s, "
              f"p50 {row['p50Us']:.0f} us")
    p = subprocess.run([bench, "--clients", "0"], capture_output=True, text=True)
    check(p.returncode == 2, "a bad argument is a usage error")
    check(daemon.stop() == 0, "daemon did not stop cleanly")


def test_failover_smoke(synod, synodctl, workdir):
    import os
    bench = sys.argv[4]
    base = 23000 + (os.getpid() % 400) * 10
    configs = []
    for k in (1, 2, 3):
        path = workdir.file(f"n{k}.yaml")
        with open(path, "w") as f:
            f.write(f"cluster_id: failover\nnode: n{k}\npeers:\n")
            for j in (1, 2, 3):
                f.write(f"  n{j}: 127.0.0.1:{base + j}\n")
            f.write(f"data_dir: {workdir.file(f'n{k}', 'data')}\n")
            f.write(f"socket: {workdir.file(f'n{k}', 'synod.sock')}\n")
        configs += ["--config", path]
    p = subprocess.run([bench, "--failover", "2", "--synod", synod, "--json"] + configs,
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"failover run failed: {p.stdout} {p.stderr}")
    result = json.loads(p.stdout.strip().splitlines()[-1])
    check(result["failoverRounds"] == 2 and result["worstMs"] > 0, f"bad report: {result}")
    print(f"  failover: median {result['medianMs']:.0f} ms, worst {result['worstMs']:.0f} ms")


if __name__ == "__main__":
    main([("synod-bench smoke", test_bench_smoke),
          ("synod-bench failover smoke", test_failover_smoke)])
