#!/usr/bin/env bash
# Two jwtguard binaries, A and B, side by side: server CPU per request with a valid HS256
# token, B less A, in paired slices (as bench/paired.sh pairs the floor and jwtguard).
#
#   bench/ab.sh A/jwtguard B/jwtguard           # 20 rounds of 2 s slices, about 2 minutes
#   BENCH_ROUNDS=30 bench/ab.sh A B
#
# Both servers (`--log-file`, supervised) are pinned to CPU 0; wrk (-t2 -c32, CPU 1) loads
# one at a time for BENCH_SLICE seconds, A first in even rounds and B first in odd ones.
# Per round: each one's CPU per request, B - A, and "others", CPU 0's busy time not the
# loaded server's over the slice (the kernel's loopback work counts too). The summary is
# the median of B - A and in how many rounds B was the slower. Used for build settings
# (opt-level, features: docs/performance.md, Binary size). Environment: BENCH_ROUNDS (20),
# BENCH_SLICE (2), BENCH_CONNECTIONS (32).
set -euo pipefail
A=$(realpath "$1")
B=$(realpath "$2")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${BENCH_ROUNDS:-20}
SLICE=${BENCH_SLICE:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
SERVER_CPU=0

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need taskset util-linux
scratch ab
CLK_TCK=$(getconf CLK_TCK)
export JWTGUARD_SECRET
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN=$("$A" token --sub bench --ttl 3600)

declare -A SPID SPORT
start a "$A" --listen 127.0.0.1:0 --log-file "$TMP/a.log"
SPID[a]=$PID SPORT[a]=$PORT
start b "$B" --listen 127.0.0.1:0 --log-file "$TMP/b.log"
SPID[b]=$PID SPORT[b]=$PORT

# slice NAME SECONDS: sets US (server CPU µs per request) and OTHERS (%).
slice() {
  local t0 t1 b0 b1 reqs
  t0=$(cpu_ticks "${SPID[$1]}")
  b0=$(cpu_busy "$SERVER_CPU")
  taskset -c 1 wrk -t2 -c"$CONNECTIONS" -d"$2s" -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:${SPORT[$1]}/api/protected" >"$TMP/wrk"
  sleep 0.2 # requests in flight when wrk stopped are answered by now
  t1=$(cpu_ticks "${SPID[$1]}")
  b1=$(cpu_busy "$SERVER_CPU")
  reqs=$(awk '/ requests in / { print $1 }' "$TMP/wrk")
  US=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $reqs" 2)
  OTHERS=$(calc "100 * (($b1 - $b0) - ($t1 - $t0)) / ($2 + 0.2) / $CLK_TCK" 0)
  : >"$TMP/$1.log" # its pages dropped now, not written back during the next slice
}

echo "== $ROUNDS rounds of $SLICE s slices; A $A, B $B; CPU 0, wrk -t2 -c$CONNECTIONS on CPU 1"
slice a 1
slice b 1
DIFFS=()
SLOWER=0
for ((r = 0; r < ROUNDS; r++)); do
  order="a b"
  ((r % 2)) && order="b a"
  declare -A U=() O=()
  for name in $order; do
    slice "$name" "$SLICE"
    U[$name]=$US O[$name]=$OTHERS
  done
  DIFFS+=("$(calc "${U[b]} - ${U[a]}" 2)")
  if awk -v d="${DIFFS[-1]}" 'BEGIN { exit !(d > 0) }'; then SLOWER=$((SLOWER + 1)); fi
  printf '   round %2d: A %6s us/req (others %3s%%)  B %6s us/req (others %3s%%)  B-A %+6.2f\n' \
    "$((r + 1))" "${U[a]}" "${O[a]}" "${U[b]}" "${O[b]}" "${DIFFS[-1]}"
done
printf '== B - A: %+.2f us a request (median of %d rounds); B slower in %d\n' \
  "$(median "${DIFFS[@]}")" "$ROUNDS" "$SLOWER"
