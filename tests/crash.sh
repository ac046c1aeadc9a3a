#!/usr/bin/env bash
# Crash consistency of the security log under load: SIGKILL jwtguard while a client keeps
# several keep-alive connections busy, then hold the log against what the client received.
#
#   tests/crash.sh                    # 20 kills (about 20 s)
#   CRASH_RUNS=10 tests/crash.sh      # the CI size (about 10 s)
#
# Environment (defaults in brackets):
#   CRASH_RUNS          server processes started and killed [20]
#   CRASH_CONNECTIONS   the client's keep-alive connections [64: as many as a batch holds]
#   CRASH_MIN_MS, CRASH_MAX_MS
#                       the kill comes at a random time in this range, in ms, after the
#                       client has its first request out on every connection [100, 700]
#   CRASH_SEED          seeds those random times (bash's RANDOM) [this shell's pid]; printed
#   CRASH_PROFILE       release or debug: which jwtguard build [release]
#   CRASH_KEEP          a directory: the files of failed runs are copied there
#                       [target/crash]
#
# Per run: a fresh jwtguard --log-file (pinned to CPU 0, the client to CPU 1, as in the
# benchmarks, when there are 2 CPUs) and examples/crash_client.rs: a thread per connection,
# CRASH_CONNECTIONS keep-alive connections, one request in flight on each, GET /api/protected
# with in turn a valid token, a forged one (another secret's signature) and none. It records
# the X-Request-Id and status of every response it receives whole (head and Content-Length
# body). After the SIGKILL it sees every connection end and writes what it got; python3
# (tests/crash.py) checks it against the log.
#
# Checks, per run (tests/crash.py check):
#   - every received response's X-Request-Id has its line in the log, with the same status,
#     and no id was received twice;
#   - every line but the last is one whole JSON object, the first is `startup`;
#   - the last line is whole, or a prefix of a line (a kill inside the group's write(2)):
#     with digits masked, it must begin some whole line of the log, and its request, if its
#     id is in it, was not answered;
#   - no two lines interleave: the authorize lines' ids run PREFIX-1, PREFIX-2, ... in log
#     order with no gap or repeat (the serving thread gives them out in order and writes
#     each batch in one write(2));
#   - no connection ended before the kill, all ended after it, some responses came back.
# Measured, per run and over the runs: the group-commit window, the authorize lines with no
# received response (decided and written, answer not received when the process died), and
# how far back from the log's end the first of them is; how often the last line was torn.
# Exit status 1 if any run failed a check.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/lib.sh
. bench/lib.sh # port_of
# shellcheck source=tests/server.sh
. tests/server.sh # need, $tmp, $pid: the server, killed on exit
need python3 python3
need taskset util-linux

RUNS=${CRASH_RUNS:-20}
CONNECTIONS=${CRASH_CONNECTIONS:-64}
MIN_MS=${CRASH_MIN_MS:-100}
MAX_MS=${CRASH_MAX_MS:-700}
SEED=${CRASH_SEED:-$$}
PROFILE=${CRASH_PROFILE:-release}
KEEP=${CRASH_KEEP:-target/crash}
if ((RUNS < 1 || CONNECTIONS < 1 || MIN_MS < 0 || MAX_MS < MIN_MS)); then
  echo "crash.sh: need CRASH_RUNS >= 1, CRASH_CONNECTIONS >= 1, 0 <= CRASH_MIN_MS <= CRASH_MAX_MS" >&2
  exit 2
fi
RANDOM=$SEED

client=
# shellcheck disable=SC2317 # invoked by the trap
stop_all() {
  if [ -n "$client" ]; then kill -KILL "$client" 2>/dev/null || true; fi
  cleanup
}
trap stop_all EXIT

case $PROFILE in
release) cargo build --release --quiet --bin jwtguard --example crash_client ;;
debug) cargo build --quiet --bin jwtguard --example crash_client ;;
*) echo "crash.sh: CRASH_PROFILE is release or debug" >&2; exit 2 ;;
esac
bin=target/$PROFILE/jwtguard
load_client=target/$PROFILE/examples/crash_client

export JWTGUARD_SECRET CRASH_VALID CRASH_FORGED
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
CRASH_VALID=$("$bin" token --sub crash --ttl 3600)
other=$(JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') "$bin" token --sub crash --ttl 3600)
CRASH_FORGED="${CRASH_VALID%.*}.${other##*.}"

server_pin=() client_pin=()
if [ "$(nproc)" -ge 2 ]; then server_pin=(taskset -c 0) client_pin=(taskset -c 1); fi
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }

echo "crash.sh: $RUNS runs, $CONNECTIONS connections, kill at ${MIN_MS}-${MAX_MS} ms," \
  "$PROFILE build, CRASH_SEED=$SEED"
results=$tmp/results.jsonl
: >"$results"
failed=0
started=$(now_us)
for ((run = 1; run <= RUNS; run++)); do
  dir=$tmp/run$run
  mkdir "$dir"
  : >"$dir/server.out"
  : >"$dir/client.out"
  # --no-supervisor: the process killed is the one that writes the log (tests/attacks.sh
  # kills a supervised worker).
  # --max-failures 0: the forged requests all come from one address.
  "${server_pin[@]}" "$bin" --no-supervisor --listen 127.0.0.1:0 --log-file "$dir/security.log" \
    --max-failures 0 >"$dir/server.out" 2>"$dir/server.err" &
  pid=$!
  port=""
  for ((i = 0; i < 500; i++)); do
    port=$(port_of "$dir/server.out")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  [ -n "$port" ] || { echo "crash.sh: jwtguard did not start" >&2; cat "$dir/server.err" >&2; exit 1; }

  delay=$((MIN_MS + RANDOM % (MAX_MS - MIN_MS + 1)))
  # The client gives up by itself after this long (it normally stops at the kill).
  "${client_pin[@]}" "$load_client" "$port" "$CONNECTIONS" $((MAX_MS / 1000 + 10)) \
    "$dir/client.json" >"$dir/client.out" 2>"$dir/client.err" &
  client=$!
  for ((i = 0; i < 1000; i++)); do
    grep -q '^ready$' "$dir/client.out" && break
    kill -0 "$client" 2>/dev/null || break
    sleep 0.01
  done
  grep -q '^ready$' "$dir/client.out" || { echo "crash.sh: the client did not start" >&2; cat "$dir/client.err" >&2; exit 1; }
  ready=$(now_us)
  sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
  killed=$(now_us)
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
  client_status=0
  wait "$client" || client_status=$?
  client=
  if ((client_status != 0)) || [ ! -s "$dir/client.json" ]; then
    echo "crash.sh: run $run: the client failed ($client_status):" >&2
    cat "$dir/client.err" >&2
    exit 1
  fi

  if python3 tests/crash.py check "$dir/security.log" "$dir/client.json" "$ready" "$killed" \
    >"$dir/result.json"; then
    verdict=ok
  else
    verdict=FAIL
    failed=$((failed + 1))
    mkdir -p "$KEEP"
    rm -rf "${KEEP:?}/run$run"
    cp -r "$dir" "$KEEP/run$run"
  fi
  cat "$dir/result.json" >>"$results"
  python3 - "$dir/result.json" "$run" "$delay" "$verdict" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"run {sys.argv[2]:>3}: kill at {sys.argv[3]:>4} ms, {r['received']:>6} responses"
      f" ({r['rate']}/s), {r['lines']:>6} lines, {r['window']:>3} without an answer"
      f" (depth {r['depth']}), last line {'TORN ' + str(r['torn_bytes']) + ' B' if r['torn'] else 'whole'}: {sys.argv[4]}")
for f in r["failures"]:
    print(f"         {f}")
PY
  rm -f "$dir/security.log"
done

echo
python3 tests/crash.py summary "$results" || true
echo "took $((($(now_us) - started) / 1000000)) s"
if ((failed > 0)); then
  echo "crash.sh: $failed of $RUNS runs FAILED; their files are in $KEEP/" >&2
  exit 1
fi
echo "crash.sh: every received response was in the log, every log consistent: ok"
