#!/usr/bin/env bash
# systemd-analyze verify on every unit in systemd/, with ExecStart pointed at the built daemon.
# Any complaint fails the test: verify exits 0 on many problems and only prints them.
set -euo pipefail
units_dir=$1 daemon_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for unit in "$units_dir"/*.service "$units_dir"/*.socket; do
  [ -e "$unit" ] || continue
  name=$(basename "$unit")
  sed "s|@SBINDIR@|$daemon_dir|g" "$unit" > "$work/$name"
  # man pages are checked by the install test, not here.
  out=$(systemd-analyze verify --man=no "$work/$name" 2>&1) || status=1
  if [ -n "$out" ]; then
    echo "$name: $out"
    status=1
  else
    echo "$name: ok"
  fi
done
exit $status
