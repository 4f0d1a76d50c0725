#!/usr/bin/env bash
# synod's one entry point for people and CI.
#   ./synod.sh up [N] install what is missing, build, run a local group of N (3) in the foreground
#   ./synod.sh test   install what is missing, build, run every test (plain and ASan/UBSan builds)
#   ./synod.sh build  install what is missing and build
#   ./synod.sh bench [--quick] [--seconds S] [--clients LIST] [--processes P] [--failover N] [--no-etcd]
#                     synod (3 members) and etcd (3 members) on loopback, the same load, side by side
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the tests need.
PACKAGES=(g++ meson ninja-build pkgconf python3 capnproto libcapnp-dev libuv1-dev liblmdb-dev
          libyaml-cpp-dev doctest-dev libsystemd-dev systemd jq groff-base)

# Only `bench` needs these: etcd 3.4 to compare with, and gnuplot for the plot.
BENCH_PACKAGES=(etcd-server etcd-client gnuplot-nox)

say() { printf '==> %s\n' "$*" >&2; }

# install_missing [PACKAGE...]: the build's packages and the ones named.
install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# build DIR [meson options...]: configure once, then build incrementally. $TARGETS (if set)
# limits what is built.
build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    say "configuring $dir"
    meson setup "$dir" "$@" >/dev/null
  fi
  say "building $dir"
  # shellcheck disable=SC2086
  ninja -C "$dir" ${TARGETS:-} >/dev/null || ninja -C "$dir" ${TARGETS:-}
}

# Prints the closing "N passed, N failed" line from a meson test log.
summarize() {
  python3 - "$@" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            r = json.loads(line).get("result")
            if r in ("OK", "EXPECTEDFAIL"): passed += 1
            elif r == "SKIP": skipped += 1
            else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
}

cmd_test() {
  install_missing
  build build
  local status=0
  say "running the test suite"
  meson test -C build --print-errorlogs --num-processes 2 || status=1
  # In-process tests only: the process and simulator suites are long and gain little from it.
  say "running the in-process tests under ASan/UBSan"
  build build-asan -Db_sanitize=address,undefined -Dbuildtype=debug
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --no-suite process --no-suite sim --print-errorlogs --num-processes 2 || status=1
  summarize build/meson-logs/testlog.json build-asan/meson-logs/testlog.json
  return $status
}

# write_config K N: var/nK/synod.yaml for member nK of a group n1..nN on 127.0.0.1.
write_config() {
  local k=$1 n=$2 dir=$PWD/var/n$1
  mkdir -p "$dir"
  {
    echo "# member n$k of the local group started by ./synod.sh up"
    echo "cluster_id: synod-local"
    echo "node: n$k"
    echo "peers:"
    for i in $(seq 1 "$n"); do echo "  n$i: 127.0.0.1:$((7100 + i))"; done
    echo "data_dir: $dir/data"
    echo "socket: $dir/synod.sock"
    echo "metrics_listen: 127.0.0.1:$((9100 + k))"
  } > "$dir/synod.yaml"
}

# The members `up` started; up_stop asks each to stop (SIGTERM: a clean stop, a leader hands off).
UP_PIDS=()
up_stop() {
  trap - INT TERM
  say "stopping"
  for pid in "${UP_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}

# up [N]: members n1..nN (default 3) in the foreground; Ctrl-C stops them all cleanly.
cmd_up() {
  local n=${1:-3}
  install_missing
  TARGETS="daemon/synod clients/synodctl clients/synod-bench" build build
  # The handler only signals; the waits below see the members out (no exit inside a trap).
  trap up_stop INT TERM
  for k in $(seq 1 "$n"); do
    write_config "$k" "$n"
    # Each member's log lines carry its name.
    build/daemon/synod --config "var/n$k/synod.yaml" > >(sed -u "s/^/[n$k] /" >&2) 2>&1 &
    UP_PIDS+=("$!")
  done
  cat >&2 <<TXT
==> members n1..n$n are running on 127.0.0.1 (peer ports 7101..$((7100 + n))) — Ctrl-C stops them
    member nK: data var/nK/data, socket var/nK/synod.sock, config var/nK/synod.yaml
    metrics: $(for k in $(seq 1 "$n"); do printf 'http://127.0.0.1:%s/metrics ' $((9100 + k)); done)
    try, from another shell:
      build/clients/synodctl --socket var/n1/synod.sock put a 1
      build/clients/synodctl --socket var/n$n/synod.sock get a
      build/clients/synodctl --socket var/n1/synod.sock status
TXT
  wait || true  # returns early when Ctrl-C runs up_stop
  wait || true  # until every member has stopped
  say "stopped"
}

# free_ports N: N loopback TCP ports that are free now.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# The etcd members `bench` started; stopped when it ends, however it ends.
BENCH_PIDS=()
BENCH_TMP=""
bench_stop_etcd() {
  for pid in "${BENCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  BENCH_PIDS=()
}
bench_cleanup() {
  bench_stop_etcd
  if [ -n "$BENCH_TMP" ]; then rm -rf "$BENCH_TMP"; fi
}

# bench_synod OUT BENCH_ARGS...: a group of 3 in a temp dir, run by synod-bench itself (it knows
# the members' pids); the workloads, idle, floor, then the failover rounds.
bench_synod() {
  local out=$1 rounds=$2; shift 2
  local dir=$BENCH_TMP/synod configs=() ports
  read -ra ports <<< "$(free_ports 3)"
  for k in 1 2 3; do
    mkdir -p "$dir/n$k"
    {
      echo "cluster_id: synod-bench"
      echo "node: n$k"
      echo "peers:"
      for i in 1 2 3; do echo "  n$i: 127.0.0.1:${ports[$((i - 1))]}"; done
      echo "data_dir: $dir/n$k/data"
      echo "socket: $dir/n$k/synod.sock"
    } > "$dir/n$k/synod.yaml"
    configs+=(--config "$dir/n$k/synod.yaml")
  done
  say "synod: workloads (member logs in $dir/nK/synod.yaml.log)"
  build/clients/synod-bench --synod build/daemon/synod "${configs[@]}" --floor "$BENCH_TMP" \
    --json-file "$out/synod.jsonl" "$@" > "$out/synod.md"
  if [ "$rounds" -gt 0 ]; then
    say "synod: failover, $rounds rounds each of SIGKILL and SIGTERM"
    build/clients/synod-bench --failover "$rounds" --signal KILL,TERM --synod build/daemon/synod \
      "${configs[@]}" --json-file "$out/synod.jsonl" >> "$out/synod.md"
  fi
}

# bench_etcd OUT QUICK BENCH_ARGS...: three etcd members on loopback with default durability, the
# same load through their HTTP/JSON gateway, then `etcdctl check perf` (skipped when QUICK: it
# always runs 60 s).
bench_etcd() {
  local out=$1 quick=$2; shift 2
  local dir=$BENCH_TMP/etcd ports cluster="" endpoints="" urls="" pids=""
  read -ra ports <<< "$(free_ports 6)"
  for k in 1 2 3; do
    cluster+="${cluster:+,}e$k=http://127.0.0.1:${ports[$((k + 2))]}"
    endpoints+="${endpoints:+,}127.0.0.1:${ports[$((k - 1))]}"
    urls+="${urls:+,}http://127.0.0.1:${ports[$((k - 1))]}"
  done
  mkdir -p "$dir"
  for k in 1 2 3; do
    local client=http://127.0.0.1:${ports[$((k - 1))]} peer=http://127.0.0.1:${ports[$((k + 2))]}
    etcd --name "e$k" --data-dir "$dir/e$k" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token synod-bench > "$dir/e$k.log" 2>&1 &
    BENCH_PIDS+=("$!")
    pids+="${pids:+,}$!"
  done
  say "etcd $(etcd --version | sed -n 's/^etcd Version: //p'): workloads (logs in $dir/eK.log)"
  build/clients/synod-bench --etcd "$endpoints" --pid "$pids" --json-file "$out/etcd.jsonl" "$@" \
    > "$out/etcd.md"
  if [ "$quick" = 0 ]; then
    say "etcd: etcdctl check perf (60 s)"
    ETCDCTL_API=3 etcdctl --endpoints="$urls" check perf --load=s > "$out/etcd-check-perf.txt" 2>&1 || true
    python3 - "$out/etcd-check-perf.txt" >> "$out/etcd.jsonl" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def grab(pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None
print(json.dumps({"system": "etcd", "kind": "checkPerf", "load": "s",
                  "writesPerSecond": grab(r"Throughput is ([0-9.]+)"),
                  "slowestSeconds": grab(r"Slowest request took ([0-9.]+)"),
                  "stddevSeconds": grab(r"Stddev is ([0-9.]+)"),
                  "passed": text.rstrip().endswith("PASS")}))
PY
  fi
  bench_stop_etcd
}

# bench_compare OUT: the side-by-side table with ratios and the targets, in OUT/results.md and on
# stdout; the latency-against-throughput plot in OUT/latency-throughput.png.
bench_compare() {
  local out=$1
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for name in ("synod.jsonl", "etcd.jsonl"):
    path = os.path.join(out, name)
    if os.path.exists(path):
        rows += [json.loads(l) for l in open(path) if l.strip()]
work = {(r["system"], r["workload"], r["clients"]): r for r in rows if r.get("kind") == "workload"}
one = {(r["system"], r["kind"] + r.get("signal", "")): r for r in rows if r.get("kind") != "workload"}

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"
def num(v, fmt="{:.0f}"):
    return fmt.format(v) if v is not None else "–"

lines = ["| workload | clients | synod ops/s | etcd ops/s | ratio | synod p50 µs | etcd p50 µs | ratio "
         "| synod p99 µs | etcd p99 µs | synod CPU s/1k | etcd CPU s/1k |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
order = ["put", "get-leader", "get-follower", "get", "sget", "txn", "lease", "lock", "watch"]
keys = sorted({(w, c) for (_, w, c) in work},
              key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1]))
for w, c in keys:
    s, e = work.get(("synod", w, c), {}), work.get(("etcd", w, c), {})
    lines.append(f"| {w} | {c} | {num(s.get('opsPerSecond'))} | {num(e.get('opsPerSecond'))} | "
                 f"{ratio(s.get('opsPerSecond'), e.get('opsPerSecond'))} | {num(s.get('p50Us'))} | "
                 f"{num(e.get('p50Us'))} | {ratio(s.get('p50Us'), e.get('p50Us'))} | "
                 f"{num(s.get('p99Us'))} | {num(e.get('p99Us'))} | "
                 f"{num(s.get('cpuSecondsPer1000'), '{:.3f}')} | {num(e.get('cpuSecondsPer1000'), '{:.3f}')} |")
lines.append("")
procs = sorted({r.get("processes", 1) for r in work.values()})
if procs != [1]:
    lines.append(f"- load generator processes per run: up to {max(procs)} "
                 "(clients split between them, raw latency histograms merged)")
for (sy, w, c), r in sorted(work.items()):
    if w == "watch":
        lines.append(f"- {sy} watch, {c} watchers: {r['putsPerSecond']:.0f} puts/s, "
                     f"{r['opsPerSecond']:.0f} events/s delivered, put acknowledged → event "
                     f"p50 {r['p50Us']:.0f} µs, p99 {r['p99Us']:.0f} µs (etcd: not driven)")
for system in ("synod", "etcd"):
    idle = one.get((system, "idle"))
    if idle:
        lines.append(f"- {system} idle member over {idle['seconds']:.0f} s: CPU up to "
                     f"{idle['maxCpuPercent']:.2f} %, RSS up to {idle['maxRssKb'] / 1024:.1f} MB")
floor = one.get(("synod", "floor"))
if floor:
    lines.append(f"- floor: LMDB commit {floor['lmdbCommitUs']:.0f} µs + loopback TCP round trip "
                 f"{floor['tcpRoundTripUs']:.0f} µs + Unix-socket RPC {floor['rpcRoundTripUs']:.0f} µs "
                 f"= {floor['floorUs']:.0f} µs; synod single-client put p50 = "
                 f"{floor['putOverFloor']:.2f} × floor; with the leader's own group commits "
                 f"(p50 {floor.get('memberCommitUs', floor.get('memberCommitP50Us', 0)):.0f} µs) as the commit term: "
                 f"{floor.get('putOverMemberFloor', 0):.2f} × floor")
for sig in ("KILL", "TERM"):
    f = one.get(("synod", "failover" + sig))
    if f:
        lines.append(f"- synod failover after SIG{sig}, {f['failoverRounds']} rounds: "
                     f"median {f['medianMs']:.0f} ms, worst {f['worstMs']:.0f} ms")
perf = one.get(("etcd", "checkPerf"))
if perf:
    lines.append(f"- etcdctl check perf --load=s (etcd's own gRPC client, 60 s): "
                 f"{num(perf['writesPerSecond'])} writes/s, slowest "
                 f"{num(perf['slowestSeconds'], '{:.3f}')} s, stddev {num(perf['stddevSeconds'], '{:.4f}')} s")

def get(system, w, c, field):
    return work.get((system, w, c), {}).get(field)
def target(name, value, limit, ok):
    if value is None or limit is None:
        return f"| {name} | not measured | |"
    return f"| {name} | {value} | {'holds' if ok else 'missed'} |"
t = ["", "| target | measured | |", "|---|---|---|"]
put1 = get("synod", "put", 1, "p50Us")
if floor:
    t.append(target("single-client put p50 ≤ 1.5 × floor", f"{floor['putOverFloor']:.2f} × floor "
                    f"({floor.get('putOverMemberFloor', 0):.2f} × with the member's own commits)",
                    1.5, floor["putOverFloor"] <= 1.5))
else:
    t.append(target("single-client put p50 ≤ 1.5 × floor", None, None, False))
e = get("etcd", "put", 1, "p50Us")
t.append(target("single-client put p50 ≤ 0.4 × etcd's", e and put1 and f"{put1 / e:.2f} × etcd",
                e, bool(e and put1 and put1 <= 0.4 * e)))
s, e = get("synod", "put", 64, "opsPerSecond"), get("etcd", "put", 64, "opsPerSecond")
t.append(target("64-client put throughput ≥ 3 × etcd's", s and e and f"{s / e:.2f} × etcd", e,
                bool(s and e and s >= 3 * e)))
g = get("synod", "get-leader", 1, "p50Us")
t.append(target("get at the leader's member, 1 client, p50 ≤ 60 µs", g and f"{g:.0f} µs", 60,
                bool(g and g <= 60)))
s, e = get("synod", "get-leader", 64, "opsPerSecond"), get("etcd", "get-leader", 64, "opsPerSecond")
t.append(target("get at the leader's member, 64 clients, ≥ 5 × etcd's", s and e and f"{s / e:.2f} × etcd",
                e, bool(s and e and s >= 5 * e)))
idle = one.get(("synod", "idle"))
t.append(target("idle member CPU < 0.2 % and RSS < 15 MB",
                idle and f"{idle['maxCpuPercent']:.2f} %, {idle['maxRssKb'] / 1024:.1f} MB", idle,
                bool(idle and idle["maxCpuPercent"] < 0.2 and idle["maxRssKb"] < 15 * 1024)))
for sig, limit in (("KILL", 1000), ("TERM", 100)):
    f = one.get(("synod", "failover" + sig))
    t.append(target(f"failover after SIG{sig}, worst ≤ {limit} ms", f and f"{f['worstMs']:.0f} ms",
                    f, bool(f and f["worstMs"] <= limit)))
text = "\n".join(lines + t) + "\n"
open(os.path.join(out, "results.md"), "w").write(text)
print(text)

# Data for the plot: one file per system and workload, throughput against p50 by concurrency.
for system in ("synod", "etcd"):
    for w in ("put", "get-leader"):
        pts = sorted((r["clients"], r["opsPerSecond"], r["p50Us"], r["p99Us"])
                     for (sy, wl, _), r in work.items() if sy == system and wl == w)
        with open(os.path.join(out, f"{system}-{w}.dat"), "w") as f:
            for c, ops, p50, p99 in pts:
                f.write(f"{ops} {p50} {p99} {c}\n")
PY
  local plots=() system workload
  for system in synod etcd; do
    for workload in put get-leader; do
      [ -s "$out/$system-$workload.dat" ] &&
        plots+=("'$out/$system-$workload.dat' using 1:2 with linespoints title '$system $workload p50', '' using 1:2:4 with labels offset 0,1 notitle")
    done
  done
  if [ ${#plots[@]} -gt 0 ]; then
    local joined
    joined=$(IFS=,; echo "${plots[*]}")
    gnuplot <<GP
set terminal pngcairo size 1000,650
set output '$out/latency-throughput.png'
set title 'Latency against throughput: 3 members on loopback, 100-byte values (labels: clients)'
set xlabel 'operations per second'
set ylabel 'p50 latency (µs)'
set logscale xy
set grid
set key top left
plot $joined
GP
    say "plot: $out/latency-throughput.png"
  fi
}

# bench [--quick] [--seconds S] [--clients LIST] [--processes P] [--failover N] [--no-etcd]:
# synod, then etcd, then the side-by-side table; results in var/bench/.
cmd_bench() {
  local seconds=5 clients=1,8,64,256 rounds=20 idle=5 quick=0 etcd=1 commits=200 processes=2
  while [ $# -gt 0 ]; do
    case "$1" in
      --quick) quick=1; seconds=1; clients=1,64; rounds=3; idle=2; commits=50 ;;
      --seconds) seconds=$2; shift ;;
      --clients) clients=$2; shift ;;
      --processes) processes=$2; shift ;;
      --failover) rounds=$2; shift ;;
      --no-etcd) etcd=0 ;;
      *) echo "usage: $0 bench [--quick] [--seconds S] [--clients LIST] [--processes P] [--failover N] [--no-etcd]" >&2
         exit 2 ;;
    esac
    shift
  done
  if [ "$etcd" = 1 ]; then install_missing "${BENCH_PACKAGES[@]}"; else install_missing gnuplot-nox; fi
  TARGETS="daemon/synod clients/synod-bench" build build
  local out=$PWD/var/bench
  mkdir -p "$out"
  rm -f "$out"/*.jsonl "$out"/*.dat "$out"/*.md "$out"/*.png
  BENCH_TMP=$(mktemp -d /tmp/synod-bench.XXXXXX)
  trap bench_cleanup EXIT
  local args=(--workload put,get-leader,get-follower,sget,txn,lease,lock,watch
              --clients "$clients" --processes "$processes"
              --seconds "$seconds" --value-bytes 100 --idle-seconds "$idle")
  bench_synod "$out" "$rounds" "${args[@]}" --floor-commits "$commits"
  [ "$etcd" = 1 ] && bench_etcd "$out" "$quick" "${args[@]}"
  bench_compare "$out"
  say "results: $out/results.md (tables per system: $out/synod.md, $out/etcd.md; JSON lines: $out/*.jsonl)"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  test) cmd_test ;;
  build) install_missing; build build ;;
  bench) shift; cmd_bench "$@" ;;
  *) echo "usage: $0 up|test|build|bench" >&2; exit 2 ;;
esac
