#!/usr/bin/env bash
# synod's one entry point for people and CI.
#   ./synod.sh up     install what is missing, build, run a local group in the foreground
#   ./synod.sh test   install what is missing, build, run every test (plain and ASan/UBSan builds)
#   ./synod.sh build  install what is missing and build
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the tests need.
PACKAGES=(g++ meson ninja-build pkgconf python3 capnproto libcapnp-dev libuv1-dev liblmdb-dev
          libyaml-cpp-dev doctest-dev libsystemd-dev systemd jq)

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

# build DIR [meson options...]: configure once, then build incrementally.
build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    say "configuring $dir"
    meson setup "$dir" "$@" >/dev/null
  fi
  say "building $dir"
  ninja -C "$dir" >/dev/null || ninja -C "$dir"
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

cmd_up() {
  install_missing
  build build
  mkdir -p var
  cat >&2 <<TXT
==> starting member n1 (a group of one) — Ctrl-C stops it
    data:   var/n1/data
    socket: var/n1/synod.sock
    try, from another shell:
      build/clients/synodctl --socket var/n1/synod.sock put a 1
      build/clients/synodctl --socket var/n1/synod.sock get a
      build/clients/synodctl --socket var/n1/synod.sock --json status
TXT
  exec build/daemon/synod --dev
}

case "${1:-}" in
  up) cmd_up ;;
  test) cmd_test ;;
  build) install_missing; build build ;;
  *) echo "usage: $0 up|test|build" >&2; exit 2 ;;
esac
