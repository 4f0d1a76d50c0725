#!/usr/bin/env bash
# synod's one entry point for people and CI.
#   ./synod.sh up [N] install what is missing, build, run a local group of N (3) in the foreground
#   ./synod.sh test   install what is missing, build, run every test (plain and ASan/UBSan builds)
#   ./synod.sh build  install what is missing and build
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the tests need.
PACKAGES=(g++ meson ninja-build pkgconf python3 capnproto libcapnp-dev libuv1-dev liblmdb-dev
          libyaml-cpp-dev doctest-dev libsystemd-dev systemd jq groff-base)

say() { printf '==> %s\n' "$*" >&2; }

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
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

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  test) cmd_test ;;
  build) install_missing; build build ;;
  *) echo "usage: $0 up|test|build" >&2; exit 2 ;;
esac
