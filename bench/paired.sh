#!/usr/bin/env bash
# The CPU budgets of bench/run.sh, measured in short paired slices: the floor, jwtguard
# (valid token, log file) and jwtguard sealed (--seal-key) run side by side, all three
# pinned to CPU 0, and wrk (on CPU 1) loads one at a time for BENCH_SLICE seconds, in an
# order that turns every round. Each round gives valid - floor and sealed - valid in
# server CPU per request, from slices a few seconds apart; the summary takes the medians.
#
#   bench/paired.sh                        # 15 rounds of 2 s slices, about 2 minutes
#   BENCH_ROUNDS=25 bench/paired.sh
#
# Why: on a shared VM the CPU a request costs moves by a microsecond or more between runs
# (bench/run.sh's 10 s runs of one round differ by up to 5 µs between scenarios). Here the
# servers stay up and the slices are short, so the rounds are many for the time: 15 pairs
# in 2 minutes where bench/run.sh takes 5 in about 5. The noise within a slice is as large
# (2 s slices spread as widely): only the number of rounds steadies the median. Environment: BENCH_ROUNDS (default 15), BENCH_SLICE
# (seconds, default 2), BENCH_CONNECTIONS (32), BENCH_STRICT (1: exit 1 on any FAIL).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${BENCH_ROUNDS:-15}
SLICE=${BENCH_SLICE:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
STRICT=${BENCH_STRICT:-0}

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need taskset util-linux
scratch paired
CLK_TCK=$(getconf CLK_TCK)

cargo build --release --quiet --bin jwtguard --example floor
JWTGUARD=target/release/jwtguard
export JWTGUARD_SECRET
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN=$("$JWTGUARD" token --sub bench --ttl 3600)
"$JWTGUARD" seal-init "$TMP/seal.key" >/dev/null 2>&1

declare -A PID PORT LOG
# start NAME CMD...: on CPU 0; sets PID[NAME] and PORT[NAME] once it prints its address.
start() {
  local name=$1 i port=""
  shift
  : >"$TMP/$name.out"
  taskset -c 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID[$name]=$!
  PIDS+=($!)
  for ((i = 0; i < 500; i++)); do
    port=$(port_of "$TMP/$name.out")
    [ -n "$port" ] && break
    sleep 0.01
  done
  [ -n "$port" ] || { echo "bench/paired.sh: $name did not start:" >&2; cat "$TMP/$name.err" >&2; exit 1; }
  PORT[$name]=$port
}
LOG[valid]=$TMP/valid.log
LOG[sealed]=$TMP/sealed.log
start floor target/release/examples/floor
start valid "$JWTGUARD" --listen 127.0.0.1:0 --log-file "${LOG[valid]}"
start sealed "$JWTGUARD" --listen 127.0.0.1:0 --log-file "${LOG[sealed]}" --seal-key "$TMP/seal.key"

# slice NAME SECONDS: loads NAME; sets US (server CPU µs per request) and RPS.
slice() {
  local name=$1 t0 t1 reqs
  t0=$(cpu_ticks "${PID[$name]}")
  taskset -c 1 wrk -t2 -c"$CONNECTIONS" -d"$2s" -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:${PORT[$name]}/api/protected" >"$TMP/wrk"
  sleep 0.2 # requests in flight when wrk stopped are answered by now
  t1=$(cpu_ticks "${PID[$name]}")
  reqs=$(awk '/ requests in / { print $1 }' "$TMP/wrk")
  RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk")
  US=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $reqs" 2)
  # The log's pages are dropped at once, not written back during the next slice.
  if [ -n "${LOG[$name]:-}" ]; then : >"${LOG[$name]}"; fi
}

echo "== $ROUNDS rounds of $SLICE s slices, floor / valid / sealed side by side on CPU 0, wrk -t2 -c$CONNECTIONS on CPU 1"
for name in floor valid sealed; do slice "$name" 1; done # warm-up
ORDERS=("floor valid sealed" "valid sealed floor" "sealed floor valid")
D_VALID=() D_SEALED=() R_VALID=()
for ((r = 1; r <= ROUNDS; r++)); do
  declare -A U=() Q=()
  for name in ${ORDERS[$(((r - 1) % 3))]}; do
    slice "$name" "$SLICE"
    U[$name]=$US
    Q[$name]=$RPS
  done
  D_VALID+=("$(calc "${U[valid]} - ${U[floor]}" 2)")
  D_SEALED+=("$(calc "${U[sealed]} - ${U[valid]}" 2)")
  R_VALID+=("$(calc "${Q[valid]} / ${Q[floor]}" 3)")
  printf '   round %2d: floor %6s  valid %6s  sealed %6s us/req   valid-floor %+6.2f  sealed-valid %+6.2f\n' \
    "$r" "${U[floor]}" "${U[valid]}" "${U[sealed]}" "${D_VALID[-1]}" "${D_SEALED[-1]}"
done

verdict() { if awk -v a="$1" -v b="$2" "BEGIN { exit !(a $3 b) }"; then echo PASS; else echo FAIL; fi; }
DV=$(median "${D_VALID[@]}")
DS=$(median "${D_SEALED[@]}")
RV=$(median "${R_VALID[@]}")
echo "== medians of the $ROUNDS rounds' differences (server CPU per request, and req/s ratio)"
printf '   valid - floor   %+.2f us   budget <= +1     %s\n' "$DV" "$(verdict "$DV" 1 '<=')"
printf '   sealed - valid  %+.2f us   budget <= +0.5   %s\n' "$DS" "$(verdict "$DS" 0.5 '<=')"
printf '   valid / floor   %.3f req/s  budget >= 0.95  %s\n' "$RV" "$(verdict "$RV" 0.95 '>=')"
if [ "$STRICT" = 1 ] && [ "$(verdict "$DV" 1 '<=')$(verdict "$DS" 0.5 '<=')$(verdict "$RV" 0.95 '>=')" != PASSPASSPASS ]; then
  exit 1
fi
