#!/usr/bin/env bash
# synodctl end to end against a real single-member synod: every command in human, --json and
# shell form, and every exit status synodctl can produce against one member (0-4).
#
# usage: synodctl_e2e_test.sh SYNOD SYNODCTL
# Exit 0 = pass, 1 = fail. jq is installed by ./synod.sh; without it the test fails.
set -u

SYNOD=$1
SYNODCTL=$2

command -v jq >/dev/null || { echo "FAIL: jq is not installed (Debian package jq)"; exit 1; }

work=$(mktemp -d /tmp/synodctl-e2e.XXXXXX)
sock=$work/synod.sock
daemon_pid=

# running PID: the process exists and is not a zombie (kill -0 succeeds on an unreaped child).
running() {
  local state
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# stop_daemon: SIGTERM, up to 10 s to exit, then SIGKILL. Sets $daemon_status (137 if killed)
# and $daemon_stopped_cleanly.
stop_daemon() {
  daemon_stopped_cleanly=
  kill -CONT "$daemon_pid" 2>/dev/null
  kill -TERM "$daemon_pid" 2>/dev/null
  for _ in $(seq 1 200); do
    running "$daemon_pid" || break
    sleep 0.05
  done
  if running "$daemon_pid"; then
    kill -KILL "$daemon_pid" 2>/dev/null
  else
    daemon_stopped_cleanly=1
  fi
  wait "$daemon_pid" 2>/dev/null
  daemon_status=$?
  daemon_pid=
}

cleanup() {
  [[ -n ${shell_pid:-} ]] && kill "$shell_pid" 2>/dev/null
  [[ -n $daemon_pid ]] && stop_daemon
  rm -rf "$work"
}
trap cleanup EXIT

failures=0
checks=0
pass() { checks=$((checks + 1)); }
fail() {
  checks=$((checks + 1))
  failures=$((failures + 1))
  echo "FAIL: $*"
  echo "  command: ${last_command:-}"
  echo "  exit: ${rc:-} stdout: $(head -c 600 "$work/out" 2>/dev/null)"
  echo "  stderr: $(head -c 600 "$work/err" 2>/dev/null)"
}

# ctl ARGS...: runs synodctl against the daemon; stdout in $work/out (exact bytes), stderr in
# $work/err, exit status in $rc, stdout without trailing newlines in $out.
ctl() {
  last_command="synodctl $*"
  "$SYNODCTL" --socket "$sock" "$@" >"$work/out" 2>"$work/err"
  rc=$?
  out=$(cat "$work/out")
}

# expect_rc N WHAT
expect_rc() {
  if [[ $rc == "$1" ]]; then pass; else fail "$2: exit status $rc, expected $1"; fi
}

# expect_json JQ_FILTER WHAT: the filter, applied to stdout, must print true.
expect_json() {
  local lines
  lines=$(wc -l <"$work/out")
  if [[ $lines != 1 ]]; then
    fail "$2: expected exactly one JSON line, got $lines"
  elif [[ $(jq -c "$1" <"$work/out" 2>&1) == true ]]; then
    pass
  else
    fail "$2: $1 does not hold"
  fi
}

# expect_out TEXT WHAT / expect_err_has TEXT WHAT
expect_out() {
  if [[ $out == "$1" ]]; then pass; else fail "$2: stdout is not '$1'"; fi
}
expect_err_has() {
  if grep -qF -- "$1" "$work/err"; then pass; else fail "$2: stderr lacks '$1'"; fi
}

# --------------------------------------------------------------------------------------------
echo "# daemon unreachable: exit 3"
"$SYNODCTL" --socket "$work/absent.sock" get k >"$work/out" 2>"$work/err"
rc=$?
last_command="synodctl --socket $work/absent.sock get k"
expect_rc 3 "missing socket"
expect_err_has "daemon unreachable at $work/absent.sock" "missing socket message"
"$SYNODCTL" --json --socket "$work/absent.sock" put k v >"$work/out" 2>"$work/err"
rc=$?
expect_rc 3 "missing socket, --json"
expect_json '.ok == false and .code == "UNAVAILABLE" and (.error | contains("absent.sock"))' \
  "missing socket JSON"
SYNOD_SOCKET=$work/env.sock "$SYNODCTL" status >"$work/out" 2>"$work/err"
rc=$?
expect_rc 3 "SYNOD_SOCKET pointing nowhere"
expect_err_has "$work/env.sock" "SYNOD_SOCKET is the default socket"

echo "# usage errors: exit 2, no connection needed"
ctl
expect_rc 2 "no command"
ctl frobnicate
expect_rc 2 "unknown command"
expect_err_has "unknown command 'frobnicate'" "unknown command message"
ctl get
expect_rc 2 "get without KEY"
expect_err_has "usage: synodctl get KEY" "get usage hint"
ctl --timeout 0 status
expect_rc 2 "--timeout 0"
ctl --json txn --if 'size(a) = 1'
expect_rc 2 "bad txn compare"
expect_json '.ok == false and .code == "INVALID_ARGUMENT" and (.error | contains("unknown target"))' \
  "bad txn compare JSON"
ctl --help
expect_rc 0 "--help"
grep -q "txn \[--if COMPARE\]" "$work/out" && pass || fail "--help documents txn"
ctl --version
expect_rc 0 "--version"
[[ $out == synodctl\ * ]] && pass || fail "--version prints synodctl VERSION"

# --------------------------------------------------------------------------------------------
echo "# starting $SYNOD"
port=$((20000 + RANDOM % 20000))
cat >"$work/synod.yaml" <<EOF
cluster_id: e2e
node: n1
peers:
  n1: 127.0.0.1:$port
data_dir: $work/data
socket: $sock
EOF
"$SYNOD" --config "$work/synod.yaml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!

ready=
for _ in $(seq 1 400); do  # polls for up to ~20 s
  if ! running "$daemon_pid"; then
    wait "$daemon_pid"
    echo "daemon exited with status $? before serving; its log:"
    cat "$work/daemon.log"
    daemon_pid=
    exit 1
  fi
  if [[ -S $sock ]]; then
    ctl --json --timeout 500 status
    if [[ $rc == 0 ]]; then
      ready=1
      break
    fi
  fi
  sleep 0.05
done
if [[ -z $ready ]]; then
  echo "daemon did not answer status within 20 s; last answer: $out; log:"
  cat "$work/daemon.log"
  exit 1
fi

# --------------------------------------------------------------------------------------------
echo "# status"
ctl status
expect_rc 0 "status"
grep -Eq '^role +leader$' "$work/out" && pass || fail "status shows role leader"
grep -Eq '^member +n1$' "$work/out" && pass || fail "status shows member n1"
grep -Eq '^NAME +ROLE +BALLOT +DECIDED +APPLIED +LAG +LEASE_MS +DB_SIZE +COMMIT_P50/P99_US +DIGEST +REPORT_AGE_MS +REACHABLE +CATCH_UP$' "$work/out" &&
  pass || fail "status has a members table"
grep -Eq "^n1 +leader +[0-9]+\.0 +[0-9]+ +[0-9]+ +0 +[0-9]+ +[0-9.]+ [KMG]?i?B +[0-9]+/[0-9]+ +[0-9a-f]{16} +0 +yes +-$" "$work/out" &&
  pass || fail "status lists n1"
ctl --json status
expect_rc 0 "status --json"
expect_json '.ok and .member == "n1" and .role == "leader" and .leader == "n1"
  and (.ballot | type) == "object" and (.decidedSlot | type) == "number"
  and (.appliedSlot | type) == "number" and (.revision | type) == "number"
  and (.members | length) == 1 and .members[0].name == "n1"
  and .members[0].address == "127.0.0.1:'"$port"'" and .members[0].reachable == true
  and (.members[0].lagSlots | type) == "number" and .members[0].role == "leader"
  and .members[0].reported == true and .members[0].stale == false
  and .members[0].reportAgeMs == 0 and .members[0].leader == "n1"
  and .members[0].dbSizeBytes > 0 and .members[0].appliedSlot == .appliedSlot
  and (.members[0].stateDigest | test("^[0-9a-f]{16}$"))
  and .members[0].recovering == false and .members[0].recoveryStage == null
  and .members[0].snapshotFrom == null and .members[0].snapshotBytesTotal == 0
  and .members[0].slotsBehind == 0
  and .members[0].stateDigest == .stateDigest and .leaseLeftMs > 0
  and (.commitP50Us | type) == "number" and .commitP99Us >= .commitP50Us' \
  "status JSON fields"
ctl --json members
expect_rc 0 "members --json"
expect_json '.ok and (.members | length) == 1 and .members[0].name == "n1"
  and .members[0].role == "leader" and (.members[0].ballot.round | type) == "number"' \
  "members JSON fields"
ctl members
expect_rc 0 "members"
grep -Eq '^NAME +ROLE +BALLOT' "$work/out" && pass || fail "members prints the member table"
printf 'members\n' | "$SYNODCTL" --socket "$sock" shell >"$work/out" 2>"$work/err"
expect_json '.ok and .members[0].name == "n1" and .members[0].reported' "members in the shell"

echo "# put / get"
ctl put greeting 'hello world'
expect_rc 0 "put"
[[ $out == "OK (revision "*")" ]] && pass || fail "put prints OK (revision N)"
ctl get greeting
expect_rc 0 "get"
printf 'hello world' | cmp -s - "$work/out" && pass ||
  fail "get prints the raw value and nothing else when stdout is not a terminal"
ctl get greeting --serializable
expect_rc 0 "get --serializable"
expect_out "hello world" "get --serializable value"
ctl --json put greeting 'hello again'
expect_rc 0 "put --json"
expect_json '.ok and (.revision | type) == "number" and .member == "n1"' "put JSON"
put_revision=$(jq .revision <"$work/out")
ctl --json get greeting
expect_json '.ok and .key == "greeting" and .value == "hello again" and .version == 2
  and .modRevision == '"$put_revision"' and .createRevision < .modRevision
  and .revision >= '"$put_revision"' and .member == "n1"' "get JSON fields"
ctl put 'ünïcode key' "$(printf 'line1\nline2\t"quoted"\\')"
ctl --json get 'ünïcode key'
expect_json '.key == "ünïcode key" and .value == "line1\nline2\t\"quoted\"\\"' \
  "JSON escaping of UTF-8 keys and control characters"
ctl put binary "$(printf 'a\xffb\xfe')"
ctl --json get binary
expect_json '.value_b64 == "Yf9i/g==" and (has("value") | not) and .key == "binary"' \
  "binary value as value_b64"
ctl get binary
printf 'a\xffb\xfe' | cmp -s - "$work/out" && pass || fail "get prints binary bytes as they are"
ctl put -- --dashes -5
expect_rc 0 "put with -- and a negative-looking value"
ctl get -- --dashes
expect_out "-5" "values that look like options"

echo "# refused and rejected: exit 1 and 2"
ctl get absent
expect_rc 1 "get of a missing key"
expect_err_has 'synodctl: key "absent" not found (NOT_FOUND)' "missing key human message"
[[ -z $out ]] && pass || fail "nothing on stdout for a missing key"
ctl --json get absent
expect_rc 1 "get --json of a missing key"
expect_json '.ok == false and .code == "NOT_FOUND" and (.error | length) > 0 and .key == "absent"
  and (.revision | type) == "number" and .member == "n1"' "NOT_FOUND JSON"
ctl --json put '' value
expect_rc 2 "empty key refused by the daemon"
expect_json '.ok == false and .code == "INVALID_ARGUMENT"' "INVALID_ARGUMENT JSON"

echo "# list"
for i in 1 2 3 4; do ctl put "app/$i" "v$i"; done
ctl put apq other
ctl list app/
expect_rc 0 "list"
[[ $(wc -l <"$work/out") == 5 ]] && pass || fail "list prints a header and 4 rows"
grep -Eq '^KEY +VERSION +CREATE_REV +MOD_REV +VALUE$' "$work/out" && pass || fail "list header"
grep -Eq '^app/3 +1 +[0-9]+ +[0-9]+ +v3$' "$work/out" && pass || fail "list row of app/3"
ctl list app/ --limit 2
expect_rc 0 "list --limit"
[[ $(wc -l <"$work/out") == 3 ]] && pass || fail "list --limit 2 prints 2 rows"
expect_err_has "more keys remain: continue with --start-after app/2" "list says more"
ctl --json list app/ --limit 2
expect_json '.ok and .more == true and (.kvs | map(.key)) == ["app/1","app/2"]
  and .kvs[0].value == "v1" and (.kvs[0].createRevision | type) == "number"
  and (.kvs[0].modRevision | type) == "number" and .kvs[0].version == 1' "list JSON page"
ctl --json list app/ --limit 2 --start-after app/2
expect_json '(.kvs | map(.key)) == ["app/3","app/4"]' "list --start-after"
ctl --json list app/ --limit 1 --all
expect_json '.more == false and (.kvs | map(.key)) == ["app/1","app/2","app/3","app/4"]' \
  "list --all follows every page"
ctl --json list app/ --serializable
expect_json '(.kvs | length) == 4' "list --serializable"
ctl --json list nothing/
expect_json '.ok and .kvs == [] and .more == false' "empty list"

echo "# txn"
ctl txn --if 'version(lock) = 0' --then 'put lock holder-1' --else 'put lock.lost 1'
expect_rc 0 "txn whose compare holds"
[[ $out == "SUCCEEDED (revision "*")" ]] && pass || fail "txn prints SUCCEEDED"
ctl --json txn --if 'version(lock) = 0' --then 'put lock holder-2' --else 'put lock.lost 1'
expect_rc 1 "txn whose compare fails"
expect_json '.ok == false and .code == "COMPARE_FAILED" and .succeeded == false
  and (.revision | type) == "number"' "COMPARE_FAILED JSON"
ctl get lock
expect_out "holder-1" "the failed txn did not run its --then branch"
ctl get lock.lost
expect_out "1" "the failed txn ran its --else branch"
ctl txn --if 'value(lock) = holder-1' --then 'put lock holder-2'
expect_rc 0 "compare-and-swap on value"
ctl txn --if 'value(lock) != holder-2' --then 'del lock'
expect_rc 1 "value != compare failing"
lock_mod=$("$SYNODCTL" --socket "$sock" --json get lock | jq .modRevision)
lock_create=$("$SYNODCTL" --socket "$sock" --json get lock | jq .createRevision)
ctl --json txn --if "modRevision(lock) = $lock_mod" --if "createRevision(lock) = $lock_create" \
  --if 'version(lock) > 1' --if 'version(absent) < 1' --then 'del lock' --then 'put "a b" "c d"'
expect_rc 0 "txn with every compare target"
expect_json '.ok and .succeeded == true' "txn success JSON"
ctl get 'a b'
expect_out "c d" "txn ops with quoted words"
ctl get lock
expect_rc 1 "txn del removed the key"
ctl txn --if 'modRevision(app/1) > 999999999' --else 'del app/ --prefix'
expect_rc 1 "txn with only an --else branch reports COMPARE_FAILED"
ctl --json list app/
expect_json '.kvs == []' "txn --else del --prefix"

echo "# del"
for k in d/1 d/2 d/3 e/1 e/2 f; do ctl put "$k" x; done
ctl del d/1
expect_rc 0 "del"
[[ $out =~ ^deleted\ 1\ \(revision\ [0-9]+\)$ ]] && pass || fail "del prints the count and revision"
ctl --json del d/1
expect_json '.ok and .deleted == 0' "del of a missing key deletes 0 (and succeeds)"
ctl --json del d/ --prefix
expect_json '.ok and .deleted == 2 and (.revision | type) == "number" and .member == "n1"' \
  "del --prefix"
ctl --json del e/1 --range-end e/2
expect_json '.deleted == 1' "del --range-end is exclusive"
ctl --json del e/ --from-key
expect_json '.deleted >= 2' "del --from-key"
ctl get f
expect_rc 1 "del --from-key removed later keys"
ctl get 'a b'
expect_out "c d" "del --from-key kept earlier keys"

echo "# shell"
cat >"$work/shell.in" <<'EOF'
put 'shell key' "a \"quoted\" value"
# a comment line

get 'shell key'
get 'unterminated
get missing-key
--timeout 2000 list shell --limit 1
txn --if 'value("shell key") = "a \"quoted\" value"' --then 'put shell/ok yes'
del 'shell key'
status
frobnicate
--socket /elsewhere get x
EOF
"$SYNODCTL" --socket "$sock" shell <"$work/shell.in" >"$work/shell.out" 2>"$work/err"
rc=$?
last_command="synodctl shell < shell.in"
expect_rc 0 "shell ends with 0 at end of input"
[[ $(wc -l <"$work/shell.out") == 10 ]] && pass ||
  fail "shell answers 10 commands with 10 lines: $(cat "$work/shell.out")"
mapfile -t answers <"$work/shell.out"
shell_check() {
  if [[ $(jq -c "$2" <<<"${answers[$1]}" 2>&1) == true ]]; then
    pass
  else
    fail "shell answer $1 (${answers[$1]}): $2 does not hold"
  fi
}
shell_check 0 '.ok and (.revision | type) == "number" and .member == "n1"'
shell_check 1 '.ok and .key == "shell key" and .value == "a \"quoted\" value" and .version == 1'
shell_check 2 '.ok == false and .code == "INVALID_ARGUMENT" and (.error | contains("unterminated"))'
shell_check 3 '.ok == false and .code == "NOT_FOUND"'
shell_check 4 '.ok and (.kvs | length) == 1 and .more == false'
shell_check 5 '.ok and .succeeded == true'
shell_check 6 '.ok and .deleted == 1'
shell_check 7 '.ok and .role == "leader" and (.members | length) == 1'
shell_check 8 '.ok == false and .code == "INVALID_ARGUMENT"'
shell_check 9 '.ok == false and (.error | contains("--socket"))'
ctl get shell/ok
expect_out "yes" "shell txn applied"

echo "# a daemon that stops answering: exit 4"
kill -STOP "$daemon_pid"
start=$(date +%s%N)
ctl --json --timeout 200 get 'a b'
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
kill -CONT "$daemon_pid"
expect_rc 4 "stopped daemon"
expect_json '.ok == false and .code == "TIMEOUT"' "TIMEOUT JSON"
echo "  synodctl gave up after $elapsed_ms ms (timeout 200 ms + 1000 ms margin)"
((elapsed_ms < 20000)) && pass || fail "synodctl gave up within 20 s"
ctl get 'a b'
expect_rc 0 "the daemon answers again after SIGCONT"

echo "# shell streams: watch and observe in one session with other commands"
# The session reads a FIFO, so lines arrive one by one while streams are open.
mkfifo "$work/stream.in"
"$SYNODCTL" --socket "$sock" shell <"$work/stream.in" >"$work/stream.out" 2>"$work/stream.err" &
shell_pid=$!
exec 3>"$work/stream.in"
# send LINE: one line to the session.
send() { printf '%s\n' "$1" >&3; }
# wait_line JQ WHAT: polls the session's output (up to 20 s) for a line satisfying JQ.
wait_line() {
  last_command="synodctl shell: waiting for $2"
  for _ in $(seq 1 400); do
    if jq -c "select($1)" "$work/stream.out" 2>/dev/null | grep -q .; then
      pass
      return 0
    fi
    sleep 0.05
  done
  fail "$2: no line with $1 in $(cat "$work/stream.out")"
  return 1
}
send 'watch st/ --prev'
wait_line '.ok and .stream == 1 and (.startRevision | type) == "number"' "watch answered as stream 1"
send 'put st/a 1'
wait_line '.stream == 1 and .event.type == "put" and .event.key == "st/a" and .event.value == "1"' \
  "the session's own put arrives on stream 1"
send 'watch st/b --key'
wait_line '.ok and .stream == 2' "a second watch is stream 2"
send 'put st/b 2'
send 'put st/a 3'
wait_line '.stream == 2 and .event.key == "st/b" and .event.value == "2"' "stream 2 sees st/b"
wait_line '.stream == 1 and .event.key == "st/a" and .event.prevValue == "1"' "stream 1 has --prev"
send 'observe st-lock'
wait_line '.ok and .stream == 3' "observe is stream 3"
wait_line '.stream == 3 and .event.name == "st-lock" and .event.hasHolder == false' \
  "observe's first event: free"
send 'cancel 1'
send 'cancel 1'
# From another process, while the session waits for input: only stream 2 still watches st/b.
ctl put st/b 4
wait_line '.stream == 2 and .event.value == "4"' "stream 2 delivers while the session is idle"
send 'get st/b'
wait_line '.ok and .key == "st/b" and .value == "4"' "get answered after the cancel"
if jq -c 'select(.stream == 1 and .event.value == "4")' "$work/stream.out" | grep -q .; then
  fail "a cancelled stream delivered: $(cat "$work/stream.out")"
else
  pass
fi
# The answers, in request order, with no stream line among them.
if jq -s -e '[.[] | select(has("stream") and (has("event") or has("end")) | not)] |
    length == 9 and .[0].stream == 1 and .[1].ok and .[2].stream == 2 and .[3].ok and .[4].ok
    and .[5].stream == 3 and .[6] == {"ok":true} and .[7].ok == false
    and .[7].code == "INVALID_ARGUMENT" and .[8].value == "4"' "$work/stream.out" >/dev/null; then
  pass
else
  fail "shell stream answers in order: $(cat "$work/stream.out")"
fi

echo "# shell streams: end of input stops them and exits 0"
last_command="printf 'watch x/\nput x/a 1\n' | synodctl shell"
printf 'watch x/\nput x/a 1\n' | timeout 20 "$SYNODCTL" --socket "$sock" shell >"$work/out" 2>"$work/err"
rc=$?
expect_rc 0 "shell with an open watch exits 0 at end of input"
if jq -s -e '[.[] | select(has("event") | not)] | length == 2 and .[0].stream == 1 and .[1].ok
    and (map(select(has("end"))) | length) == 0' "$work/out" >/dev/null; then
  pass
else
  fail "two answers, no end line"
fi

echo "# the daemon gone: exit 3"
stop_daemon
wait_line '.stream == 2 and .end.ok == false and .end.code == "UNAVAILABLE"' \
  "an open watch ends with an end line when the daemon goes"
wait_line '.stream == 3 and .end.ok == false and .end.code == "UNAVAILABLE"' \
  "an open observe ends with an end line when the daemon goes"
exec 3>&-
wait "$shell_pid"
rc=$?
shell_pid=
expect_rc 0 "the streaming session exits 0 at end of input"
if [[ -z $daemon_stopped_cleanly ]]; then
  fail "daemon still running 10 s after SIGTERM (killed it)"
elif [[ $daemon_status != 0 ]]; then
  fail "daemon exited with status $daemon_status on SIGTERM"
else
  pass
fi
ctl get 'a b'
expect_rc 3 "stopped daemon: unreachable"

echo "$checks checks, $failures failed"
if ((failures > 0)); then
  echo "daemon log:"
  cat "$work/daemon.log"
  exit 1
fi
exit 0
