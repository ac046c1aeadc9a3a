#!/usr/bin/env bash
# Load benchmark: jwtguard against a bare tiny_http loop (examples/floor.rs), on loopback.
#
#   bench/run.sh                 # 10 s per measured run
#   BENCH_SECONDS=5 bench/run.sh
#   BENCH_STRICT=1 bench/run.sh  # exit 1 when a budget fails
#
# Environment: BENCH_SECONDS (measured run, default 10), BENCH_WARMUP (seconds, default 3),
# BENCH_CONNECTIONS (default 32), BENCH_THREADS (wrk threads, default 2),
# BENCH_ROUNDS (rounds of floor, valid, sealed, forged, in turning order; the summary takes
# medians, default 5),
# BENCH_STARTS (fresh starts timed for the first-request latency, default 5),
# BENCH_STRICT (1: exit 1 on any FAIL). See bench/README.md for what is measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECONDS_RUN=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
STARTS=${BENCH_STARTS:-5}
ROUNDS=${BENCH_ROUNDS:-5}
STRICT=${BENCH_STRICT:-0}
SERVER_CPU=0
CLIENT_CPU=1

# ---------------------------------------------------------------------------------------
# Tools

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need curl curl
need taskset util-linux
need strip binutils

if [ "$(nproc)" -lt 2 ]; then
  echo "bench/run.sh: needs 2 CPUs (server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU)" >&2
  exit 1
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------
# Processes: every one started is recorded and killed on exit.

scratch bench # $TMP, and $PIDS killed and removed on exit (bench/lib.sh)

lines_of() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
signed() { awk -v v="$1" 'BEGIN { printf "%+.2f", v }'; } # signed -0.08 / +0.74

# ---------------------------------------------------------------------------------------
# Build, sizes, tokens

echo "== build"
cargo build --release --quiet --bin jwtguard --example floor
JWTGUARD=target/release/jwtguard
FLOOR=target/release/examples/floor

SIZE_JWTGUARD=$(strip_size "$JWTGUARD")
SIZE_FLOOR=$(strip_size "$FLOOR")

SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')   # 64 bytes of hex
OTHER=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWTGUARD_SECRET=$SECRET
VALID=$("$JWTGUARD" token --sub bench --ttl 3600)
# The forged token: the valid token's header and claims, another secret's signature.
OTHER_TOKEN=$(JWTGUARD_SECRET=$OTHER "$JWTGUARD" token --sub bench --ttl 3600)
FORGED="${VALID%.*}.${OTHER_TOKEN##*.}"

# ---------------------------------------------------------------------------------------
# First request: spawn to the first 200 from /healthz, over fresh processes.

echo "== first request latency ($STARTS fresh starts)"
FIRST=()
for ((s = 0; s < STARTS; s++)); do
  first_request
  FIRST+=("$FR_US")
done
FIRST_SORTED=$(printf '%s\n' "${FIRST[@]}" | sort -n)
FIRST_MEDIAN_US=$(sed -n "$(((STARTS + 1) / 2))p" <<<"$FIRST_SORTED")
FIRST_MIN_US=$(head -n1 <<<"$FIRST_SORTED")
FIRST_MAX_US=$(tail -n1 <<<"$FIRST_SORTED")
echo "   spawn -> first /healthz 200 (ms): $(for v in "${FIRST[@]}"; do printf '%s ' "$(calc "$v/1000")"; done)"

# ---------------------------------------------------------------------------------------
# Load runs. Each scenario gets a fresh server process, so that VmHWM is its own.

# measure NAME PID URL LOG [wrk header args...]: warm-up, then the measured run; sets R_*.
measure() {
  local name=$1 pid=$2 url=$3 log=$4
  shift 4
  local out="$TMP/$name.wrk" t0 t1 s0 s1 b0 b1 c0 c1 w0 w1 w2 w3 k0 k1 l0 l1
  timeout $((WARMUP + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null
  sleep 0.3 # requests in flight when wrk stopped are answered (and logged) by now
  w0=$(now_us)
  t0=$(cpu_ticks "$pid")
  s0=$(own_ticks "$pid")
  b0=$(cpu_busy "$SERVER_CPU")
  c0=$(cpu_busy "$CLIENT_CPU")
  l0=$(lines_of "$log")
  children_cpu_us
  k0=$CHILD_US
  w1=$(now_us)
  timeout $((SECONDS_RUN + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_RUN}s" --latency "$@" "$url" >"$out"
  w2=$(now_us)
  children_cpu_us
  k1=$CHILD_US
  sleep 0.3
  t1=$(cpu_ticks "$pid")
  s1=$(own_ticks "$pid")
  b1=$(cpu_busy "$SERVER_CPU")
  c1=$(cpu_busy "$CLIENT_CPU")
  l1=$(lines_of "$log")
  w3=$(now_us)
  R_HWM=$(vm_hwm "$(serving "$pid")")
  # jwtguard's supervisor (the process started; its worker serves): its own CPU over the
  # run, in ms, and its proportional set size (shared pages split with the worker).
  R_SUP_MS=- R_SUP_PSS=-
  if [ "$(serving "$pid")" != "$pid" ]; then
    R_SUP_MS=$(calc "($s1 - $s0) * 1000 / $CLK_TCK" 0)
    R_SUP_PSS=$(pss_kib "$pid")
  fi
  R_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  R_REQS=$(awk '/ requests in / { print $1 }' "$out")
  R_NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  R_NON2XX=${R_NON2XX:-0}
  R_ERRORS=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$out")
  R_ERRORS=${R_ERRORS:-none}
  R_P50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")
  R_P99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
  R_CPU_US=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $R_REQS" 2)
  # Shares of the wrk run's wall time: the server, and wrk (with timeout and taskset).
  R_CPU_PCT=$(calc "($t1 - $t0) * 100000000 / $CLK_TCK / ($w2 - $w1)" 0)
  R_WRK_PCT=$(calc "($k1 - $k0) * 100 / ($w2 - $w1)" 0)
  # Time on each CPU used by neither the server nor wrk (other processes, interrupts not
  # charged to either), over the whole window: high values mean a noisy measurement.
  R_OTHER_PCT=$(calc "((($b1 - $b0) - ($t1 - $t0)) * 1000000 / $CLK_TCK) * 100 / ($w3 - $w0)" 0)
  R_OTHER1_PCT=$(calc "((($c1 - $c0) * 1000000 / $CLK_TCK) - ($k1 - $k0)) * 100 / ($w3 - $w0)" 0)
  R_LINES=$((l1 - l0))
  printf '   %-7s %9s req/s  p50 %7s us  p99 %7s us  %6s us/req  VmHWM %s KiB  non-2xx %s\n' \
    "$name" "$R_RPS" "$R_P50" "$R_P99" "$R_CPU_US" "$R_HWM" "$R_NON2XX"
  printf '   %-7s CPU %s: server %s%%, others %s%%; CPU %s: wrk %s%%, others %s%%\n' \
    "" "$SERVER_CPU" "$R_CPU_PCT" "$R_OTHER_PCT" "$CLIENT_CPU" "$R_WRK_PCT" "$R_OTHER1_PCT"
  if [ "$log" != /dev/null ]; then
    printf '   %-7s security log lines %s, wrk completed %s, lines - completed = %s\n' \
      "" "$R_LINES" "$R_REQS" "$((R_LINES - R_REQS))"
  fi
  if [ "$R_ERRORS" != none ]; then echo "   $name socket errors: $R_ERRORS"; fi
}

# Per scenario, one value per round (space-separated).
declare -A RPS P50 P99 CPU CPUPCT OTHER OTHER1 WRK HWM REQS LINES NON2XX SUPMS SUPPSS

record() {
  RPS[$1]+="$R_RPS " P50[$1]+="$R_P50 " P99[$1]+="$R_P99 " CPU[$1]+="$R_CPU_US "
  CPUPCT[$1]+="$R_CPU_PCT " HWM[$1]+="$R_HWM " SUPMS[$1]+="$R_SUP_MS " SUPPSS[$1]+="$R_SUP_PSS " REQS[$1]+="$R_REQS " LINES[$1]+="$R_LINES "
  NON2XX[$1]+="$R_NON2XX " OTHER[$1]+="$R_OTHER_PCT " OTHER1[$1]+="$R_OTHER1_PCT "
  WRK[$1]+="$R_WRK_PCT "
}

run_floor() {
  start floor "$FLOOR" --listen 127.0.0.1:0
  # The same request as jwtguard's valid run: the HTTP layer's cost of reading it is
  # the floor's, not the guard's.
  measure floor "$PID" "http://127.0.0.1:$PORT/api/protected" /dev/null \
    -H "Authorization: Bearer $VALID"
  record floor
  stop "$PID"
}

run_jwtguard() { # run_jwtguard valid|sealed|forged
  local scenario=$1 token want log url got seal=()
  if [ "$scenario" = forged ]; then token=$FORGED want=401; else token=$VALID want=200; fi
  log="$TMP/security-$scenario.log"
  if [ "$scenario" = sealed ]; then
    # A fresh sealing key each run (the chain state beside it starts over too).
    rm -f "$TMP/seal.key" "$TMP/seal.key.state"
    "$JWTGUARD" seal-init "$TMP/seal.key" >/dev/null 2>&1
    seal=(--seal-key "$TMP/seal.key")
  fi
  # Every forged request comes from one address: the limiter counts each (its cost is
  # measured) but is never to answer 429 here.
  start "$scenario" "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$log" "${seal[@]}" \
    --max-failures 4294967295
  url="http://127.0.0.1:$PORT/api/protected"
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $token" "$url" || true)
  if [ "$got" != "$want" ]; then
    echo "bench/run.sh: $scenario token answered $got, not $want" >&2
    exit 1
  fi
  measure "$scenario" "$PID" "$url" "$log" -H "Authorization: Bearer $token"
  record "$scenario"
  stop "$PID"
  # A run writes a few hundred MB of log: removed now, its dirty pages are dropped rather
  # than written back while the next run is measured.
  rm -f "$log"
}

echo "== load: $ROUNDS rounds of floor, valid, sealed, forged; wrk -t$THREADS -c$CONNECTIONS," \
  "${WARMUP}s warm-up + ${SECONDS_RUN}s measured; server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
# The order turns every round (floor valid sealed forged, valid sealed forged floor, ...),
# so that no scenario always runs first or right after another's. (sealed: the valid run
# with --seal-key.)
ORDERS=("floor valid sealed forged" "valid sealed forged floor" "sealed forged floor valid"
  "forged floor valid sealed")
for ((round = 1; round <= ROUNDS; round++)); do
  order=${ORDERS[$(((round - 1) % 4))]}
  echo "-- round $round: $order"
  for scenario in $order; do
    if [ "$scenario" = floor ]; then run_floor; else run_jwtguard "$scenario"; fi
  done
done

# ---------------------------------------------------------------------------------------
# Summary: medians over the rounds; peak RSS is the largest of the rounds' processes.
# Note: the floor gets the very request of the valid run (GET /api/protected with the
# bearer token) and ignores its header; tiny_http reads headers a byte at a time, so a
# header-less GET / would charge the HTTP layer's reading of the token to jwtguard.

total() { printf '%s\n' "$@" | awk '{ s += $1 } END { print s }'; }
# diffs SCENARIO: log lines - wrk completed, per round, joined by "/"
diffs() {
  local -a l r
  local i out=""
  read -r -a l <<<"${LINES[$1]}"
  read -r -a r <<<"${REQS[$1]}"
  for i in "${!l[@]}"; do out+="${out:+/}$((l[i] - r[i]))"; done
  echo "$out"
}

declare -A M_RPS M_P50 M_P99 M_CPU M_CPUPCT M_OTHER M_OTHER1 M_WRK M_HWM T_REQS T_LINES T_NON2XX
for s in floor valid sealed forged; do
  # shellcheck disable=SC2086 # word splitting of the per-round lists is intended
  {
    M_RPS[$s]=$(median ${RPS[$s]})
    M_P50[$s]=$(median ${P50[$s]})
    M_P99[$s]=$(median ${P99[$s]})
    M_CPU[$s]=$(median ${CPU[$s]})
    M_CPUPCT[$s]=$(median ${CPUPCT[$s]})
    M_OTHER[$s]=$(largest ${OTHER[$s]})
    M_OTHER1[$s]=$(largest ${OTHER1[$s]})
    M_WRK[$s]=$(median ${WRK[$s]})
    M_HWM[$s]=$(largest ${HWM[$s]})
    T_REQS[$s]=$(total ${REQS[$s]})
    T_LINES[$s]=$(total ${LINES[$s]})
    T_NON2XX[$s]=$(total ${NON2XX[$s]})
  }
done

RATIO_VALID=$(paired 'b / a' "${RPS[floor]}" "${RPS[valid]}")
RATIO_FORGED=$(paired 'b / a' "${RPS[floor]}" "${RPS[forged]}")
DCPU_VALID=$(paired 'b - a' "${CPU[floor]}" "${CPU[valid]}" 2)
DCPU_FORGED=$(paired 'b - a' "${CPU[floor]}" "${CPU[forged]}" 2)
# Sealing: the sealed run against the valid run of the same round.
DCPU_SEALED=$(paired 'b - a' "${CPU[valid]}" "${CPU[sealed]}" 2)
RATIO_SEALED=$(paired 'b / a' "${RPS[valid]}" "${RPS[sealed]}")
RATIO_FORGED_VALID=$(paired 'b / a' "${RPS[valid]}" "${RPS[forged]}")
HWM_MAX=$(largest "${M_HWM[valid]}" "${M_HWM[forged]}")
# shellcheck disable=SC2086 # word splitting of the per-round lists is intended
SUP_MS_MAX=$(largest ${SUPMS[valid]} ${SUPMS[forged]})
# shellcheck disable=SC2086
SUP_PSS_MAX=$(largest ${SUPPSS[valid]} ${SUPPSS[forged]})
FIRST_MS=$(calc "$FIRST_MEDIAN_US / 1000" 2)
DIFF_VALID=$(diffs valid)
DIFF_FORGED=$(diffs forged)
DIFF_SEALED=$(diffs sealed)
DIFF_OK=1
for d in ${DIFF_VALID//\// } ${DIFF_FORGED//\// } ${DIFF_SEALED//\// }; do
  if ((d < 0 || d > CONNECTIONS)); then DIFF_OK=0; fi
done

V_RATIO=$(verdict "$RATIO_VALID >= 0.95 && $RATIO_FORGED >= 0.95")
V_CPU=$(verdict "$DCPU_VALID <= 1 && $DCPU_FORGED <= 1")
V_FORGED=$(verdict "$RATIO_FORGED_VALID >= 1")
V_RSS=$(verdict "$HWM_MAX <= 4096")
V_SIZE=$(verdict "$SIZE_JWTGUARD <= 1310720")
V_SUP=$(verdict "$SUP_PSS_MAX <= 1024 && $SUP_MS_MAX <= 10 * $SECONDS_RUN")
V_FIRST=$(verdict "$FIRST_MEDIAN_US <= 20000")
V_LOG=$(verdict "$DIFF_OK == 1")
V_SEAL=$(verdict "$DCPU_SEALED <= 0.5")
V_STATUS=$(verdict "${T_NON2XX[floor]} == 0 && ${T_NON2XX[valid]} == 0 && ${T_NON2XX[sealed]} == 0 && ${T_NON2XX[forged]} == ${T_REQS[forged]}")

mkdir -p target/bench
SUMMARY=target/bench/summary.txt
{
  echo "jwtguard benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty')"
  echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr)"
  echo "wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_RUN}s --latency (after ${WARMUP}s warm-up), loopback;" \
    "server pinned to CPU $SERVER_CPU, wrk to CPU $CLIENT_CPU;" \
    "$ROUNDS rounds, a fresh server process per run"
  echo
  row() { printf '%-28s %14s %14s %14s %14s\n' "$1" "$2" "$3" "$4" "$5"; }
  each() { row "$1" "$(eval "echo \${$2[floor]}")" "$(eval "echo \${$2[valid]}")" \
    "$(eval "echo \${$2[sealed]}")" "$(eval "echo \${$2[forged]}")"; }
  row "" "floor" "jwt valid" "jwt sealed" "jwt forged"
  each "req/s (median)" M_RPS
  each "latency p50 (us, median)" M_P50
  each "latency p99 (us, median)" M_P99
  each "server CPU (us/req, median)" M_CPU
  each "server busy (% CPU, median)" M_CPUPCT
  each "wrk busy (% CPU, median)" M_WRK
  each "CPU $SERVER_CPU: others (%, max)" M_OTHER
  each "CPU $CLIENT_CPU: others (%, max)" M_OTHER1
  each "peak RSS VmHWM (KiB, max)" M_HWM
  each "requests completed (wrk)" T_REQS
  each "non-2xx responses" T_NON2XX
  row "security log lines" "-" "${T_LINES[valid]}" "${T_LINES[sealed]}" "${T_LINES[forged]}"
  row "lines - completed (rounds)" "-" "$DIFF_VALID" "$DIFF_SEALED" "$DIFF_FORGED"
  row "stripped binary (bytes)" "$SIZE_FLOOR" "$SIZE_JWTGUARD" "$SIZE_JWTGUARD" "$SIZE_JWTGUARD"
  echo
  echo "first request (spawn -> /healthz 200), $STARTS starts: median $FIRST_MS ms," \
    "min $(calc "$FIRST_MIN_US / 1000") ms, max $(calc "$FIRST_MAX_US / 1000") ms"
  echo
  NOISE=$(largest "${M_OTHER[@]}" "${M_OTHER1[@]}")
  if ((NOISE > 10)); then
    echo "WARNING: up to $NOISE% of a CPU went to other work during the runs: the numbers"
    echo "are noisy. Rerun on a quiet machine (or with more BENCH_ROUNDS)."
    echo
  fi
  echo "Ratios and CPU differences are medians over rounds of the runs of one round."
  printf '%-44s %-34s %s\n' "budget" "measured" "verdict"
  printf '%-44s %-34s %s\n' "req/s jwtguard/floor >= 0.95" "valid $RATIO_VALID, forged $RATIO_FORGED" "$V_RATIO"
  printf '%-44s %-34s %s\n' "CPU us/request <= floor + 1" "valid $(signed "$DCPU_VALID"), forged $(signed "$DCPU_FORGED")" "$V_CPU"
  printf '%-44s %-34s %s\n' "forged req/s >= valid req/s" "forged/valid $RATIO_FORGED_VALID" "$V_FORGED"
  printf '%-44s %-34s %s\n' "peak RSS <= 4096 KiB" "$HWM_MAX KiB" "$V_RSS"
  printf '%-44s %-34s %s\n' "stripped binary <= 1310720 bytes (1.25 MiB)" "$SIZE_JWTGUARD bytes" "$V_SIZE"
  printf '%-44s %-34s %s\n' "supervisor: PSS <= 1024 KiB, CPU <= 1 ms/s" "$SUP_PSS_MAX KiB, $SUP_MS_MAX ms in ${SECONDS_RUN}s" "$V_SUP"
  printf '%-44s %-34s %s\n' "first request <= 20 ms (median)" "$FIRST_MS ms" "$V_FIRST"
  printf '%-44s %-34s %s\n' "log lines - completed in [0, $CONNECTIONS] per run" "valid $DIFF_VALID, forged $DIFF_FORGED" "$V_LOG"
  printf '%-44s %-34s %s\n' "sealing CPU us/request <= valid + 0.5" "sealed $(signed "$DCPU_SEALED"), req/s $RATIO_SEALED" "$V_SEAL"
  printf '%-44s %-34s %s\n' "statuses: floor/valid/sealed 2xx, forged 401" "non-2xx ${T_NON2XX[floor]}/${T_NON2XX[valid]}/${T_NON2XX[sealed]}/${T_NON2XX[forged]}" "$V_STATUS"
} >"$SUMMARY"

echo
cat "$SUMMARY"
echo
echo "summary written to $SUMMARY"

if [ "$STRICT" = 1 ] && grep -q ' FAIL$' "$SUMMARY"; then
  exit 1
fi
exit 0
