#!/usr/bin/env bash
# Where the time goes: interleaved load runs of variants of one request, server CPU per
# request and write(2) calls per request, medians over rounds.
#
#   bench/variants.sh                         # floor, /healthz, log to /dev/null, log to a
#                                             # file, log to a file sealed (--seal-key)
#   bench/variants.sh OLD/jwtguard ...        # also other jwtguard binaries (log to a file)
#
# Environment: BENCH_SECONDS (per run, default 5), BENCH_ROUNDS (default 3). The server is
# pinned to CPU 0 and wrk to CPU 1, as in bench/run.sh; see bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need taskset util-linux

TMP=$(mktemp -d "${TMPDIR:-/tmp}/jwtguard-variants.XXXXXX")
PID=""
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  if [ -n "$PID" ]; then kill -KILL "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --quiet --bin jwtguard --example floor
JWTGUARD=target/release/jwtguard
export JWTGUARD_SECRET
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN=$("$JWTGUARD" token --sub bench --ttl 3600)

# run NAME PATH CMD...: one warm-up and one measured run; appends "NAME us writes" to
# $TMP/results.
run() {
  local name=$1 path=$2 port="" i t0 t1 w0 w1 out reqs
  shift 2
  rm -f "$TMP/security.log"
  : >"$TMP/out"
  taskset -c 0 "$@" >"$TMP/out" 2>"$TMP/err" &
  PID=$!
  for ((i = 0; i < 500; i++)); do
    port=$(port_of "$TMP/out")
    [ -n "$port" ] && break
    sleep 0.01
  done
  if [ -z "$port" ]; then
    echo "bench/variants.sh: $name did not start" >&2
    cat "$TMP/err" >&2
    exit 1
  fi
  local url="http://127.0.0.1:$port$path"
  taskset -c 1 wrk -t2 -c32 -d2s -H "Authorization: Bearer $TOKEN" "$url" >/dev/null
  sleep 0.2
  local serving_pid
  serving_pid=$(serving "$PID") # the supervisor's worker, if any
  read -r t0 < <(awk '{ print $14 + $15 }' "/proc/$serving_pid/stat")
  w0=$(awk '/^syscw:/ { print $2 }' "/proc/$serving_pid/io")
  out=$(taskset -c 1 wrk -t2 -c32 -d"${SECONDS_RUN}s" -H "Authorization: Bearer $TOKEN" "$url")
  sleep 0.2
  read -r t1 < <(awk '{ print $14 + $15 }' "/proc/$serving_pid/stat")
  w1=$(awk '/^syscw:/ { print $2 }' "/proc/$serving_pid/io")
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
  reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
  awk -v n="$name" -v t="$((t1 - t0))" -v w="$((w1 - w0))" -v r="$reqs" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%s\t%.2f\t%.3f\n", n, t * 1000000 / hz / r, w / r }' >>"$TMP/results"
  printf '   %-40s %s\n' "$name" "$(tail -n1 "$TMP/results" | cut -f2- | tr '\t' ' ')"
}

LOG="$TMP/security.log"
for ((round = 1; round <= ROUNDS; round++)); do
  echo "-- round $round (name, server CPU us/request, write(2) calls/request)"
  run "floor (tiny_http respond)" /api/protected target/release/examples/floor --listen 127.0.0.1:0
  run "jwtguard /healthz" /healthz "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$LOG"
  run "jwtguard valid, --log-file /dev/null" /api/protected \
    "$JWTGUARD" --listen 127.0.0.1:0 --log-file /dev/null
  run "jwtguard valid, --log-file (a file)" /api/protected \
    "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$LOG"
  rm -f "$TMP/seal.key" "$TMP/seal.key.state"
  "$JWTGUARD" seal-init "$TMP/seal.key" >/dev/null 2>&1
  run "jwtguard valid, --log-file --seal-key" /api/protected \
    "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$LOG" --seal-key "$TMP/seal.key"
  for other in "$@"; do
    run "$other valid, --log-file (a file)" /api/protected \
      "$other" --listen 127.0.0.1:0 --log-file "$LOG"
  done
done

echo "== medians over $ROUNDS rounds"
awk -F'\t' '{ us[$1] = us[$1] " " $2; wr[$1] = wr[$1] " " $3; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
  function median(list,   v, k, i, j, t) {
    k = split(list, v, " ")
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
  }
  END { for (i = 1; i <= n; i++) printf "   %-40s %6.2f us/request  %.3f writes/request\n", order[i], median(us[order[i]]), median(wr[order[i]]) }' \
  "$TMP/results"
