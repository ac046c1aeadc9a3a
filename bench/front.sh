#!/usr/bin/env bash
# Issue 17's budgets in one run: jwtguard's HTTP front end against an axum + tokio +
# jsonwebtoken server doing the same work (bench/axum/) and against nginx, on loopback.
#
#   bench/front.sh                                   # about 6 minutes
#   BENCH_JWTGUARD=/path/to/jwtguard bench/front.sh  # that binary; builds no jwtguard
#   BENCH_STRICT=1 bench/front.sh                    # exit 1 when a budget fails
#   BENCH_SECONDS=1 BENCH_WARMUP=1 BENCH_ROUNDS=1 BENCH_IDLE=100 BENCH_STARTS=2 \
#     bench/front.sh                                 # smoke: about 40 s once built
#
# Environment: BENCH_SECONDS (measured run, default 10), BENCH_WARMUP (default 3),
# BENCH_ROUNDS (rounds of the seven load runs, in an order that turns; default 3),
# BENCH_IDLE (idle connections, default 1000), BENCH_STARTS (fresh starts timed to the
# first answer, default 5), BENCH_JWTGUARD, BENCH_STRICT. See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# A binary named relative to where the script was started.
if [ -n "${BENCH_JWTGUARD:-}" ]; then BENCH_JWTGUARD=$(realpath "$BENCH_JWTGUARD"); fi
cd "$ROOT"
SECONDS_RUN=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-3}
ROUNDS=${BENCH_ROUNDS:-3}
IDLE=${BENCH_IDLE:-1000}
STARTS=${BENCH_STARTS:-5}
STRICT=${BENCH_STRICT:-0}
SERVER_CPU=0 # the server under test
CLIENT_CPU=1 # wrk, the idle connections' holder, and the proxies' upstream
KEEPALIVE_CONNECTIONS=32
CLOSE_CONNECTIONS=16

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need nginx nginx-light
need taskset util-linux
need strip binutils
need curl curl
need python3 python3
if [ "$(nproc)" -lt 2 ]; then
  echo "bench/front.sh: needs 2 CPUs (server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU)" >&2
  exit 1
fi
CLK_TCK=$(getconf CLK_TCK)
# The idle connections need a descriptor each in the servers that do not raise their own
# limit (the axum server), and in the holder.
ulimit -n "$(ulimit -Hn)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

scratch front # $TMP, and $PIDS killed and removed on exit (bench/lib.sh)

echo "== build"
if [ -n "${BENCH_JWTGUARD:-}" ]; then
  JWTGUARD=$BENCH_JWTGUARD
else
  cargo build --release --quiet --bin jwtguard
  JWTGUARD=target/release/jwtguard
fi
# Its own crate and lock file, never part of jwtguard's build.
cargo build --release --quiet --manifest-path bench/axum/Cargo.toml
AXUM=bench/axum/target/release/jwtguard-bench-axum
SIZE=$(strip_size "$JWTGUARD")

export JWTGUARD_SECRET
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
VALID=$("$JWTGUARD" token --sub bench --ttl 3600)
AUTH="Authorization: Bearer $VALID"
# nginx's answer has the body jwtguard's has; it verifies and logs nothing.
NGINX_200='default_type application/json; return 200 "{\"status\":\"ok\",\"user\":\"bench\"}\n";'

# The proxies' upstream: nginx answering 200 "ok" on the client CPU, for the whole run.
UPSTREAM_PORT=$(free_port)
nginx_on "$CLIENT_CPU" upstream "$UPSTREAM_PORT" 'return 200 "ok\n";'
check "http://127.0.0.1:$UPSTREAM_PORT/" 200

# ---------------------------------------------------------------------------------------
# Load runs: a fresh server per run (its peak RSS is its own), wrk -t1 on the client CPU.

declare -A RPS CPU HWM NON2XX ERRORS LOGGED OTHER
# measure NAME PID URL CONNECTIONS LOG WRK_ARGS...: warm-up, then the measured run;
# appends one value per round to the lists above. LOG is the server's security log, or
# "-" for nginx (no log).
measure() {
  local name=$1 pid=$2 url=$3 conns=$4 log=$5 out="$TMP/$1.wrk"
  local t0 t1 b0 b1 w1 w2 l0=0 l1=0 rps reqs non2xx errors cpu hwm other logged=-
  shift 5
  timeout $((WARMUP + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t1 -c"$conns" -d"${WARMUP}s" "$@" "$url" >/dev/null
  sleep 0.3 # the requests in flight when wrk stopped are answered and logged by now
  [ "$log" = - ] || l0=$(wc -l <"$log")
  t0=$(cpu_ticks "$pid")
  b0=$(cpu_busy "$SERVER_CPU")
  w1=$(now_us)
  timeout $((SECONDS_RUN + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t1 -c"$conns" -d"${SECONDS_RUN}s" "$@" "$url" >"$out"
  w2=$(now_us)
  sleep 0.3
  t1=$(cpu_ticks "$pid")
  b1=$(cpu_busy "$SERVER_CPU")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  reqs=$(awk '/ requests in / { print $1 }' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  non2xx=${non2xx:-0}
  errors=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); gsub(/ /, ""); print }' "$out")
  errors=${errors:-none}
  cpu=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $reqs" 2)
  hwm=$(vm_hwm "$(serving "$pid")")
  # CPU time on the server's CPU that neither the server nor anything it started used:
  # above a few percent, another process competed and the run is noisy.
  other=$(calc "((($b1 - $b0) - ($t1 - $t0)) * 1000000 / $CLK_TCK) * 100 / ($w2 - $w1 + 300000)" 0)
  if [ "$log" != - ]; then
    l1=$(wc -l <"$log")
    # wrk does not count the requests in flight when it stops: up to one a connection.
    logged=$((l1 - l0 - reqs))
  fi
  RPS[$name]+="$rps " CPU[$name]+="$cpu " HWM[$name]+="$hwm " NON2XX[$name]+="$non2xx "
  ERRORS[$name]+="$errors " LOGGED[$name]+="$logged " OTHER[$name]+="$other "
  printf '   %-11s %9s req/s %7s us/req  VmHWM %6s KiB  non-2xx %s  lines-requests %s  others %s%%  errors %s\n' \
    "$name" "$rps" "$cpu" "$hwm" "$non2xx" "$logged" "$other" "$errors"
}

# jwtguard_on NAME ARGS...: jwtguard (supervisor and worker, as deployed) on the server
# CPU, logging to $TMP/NAME.log; sets PID and PORT.
jwtguard_on() {
  local name=$1
  shift
  start "$name" "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$TMP/$name.log" "$@"
}
axum_on() { start "$1" "$AXUM" 127.0.0.1:0 "$TMP/$1.log"; }
# nginx_here NAME LOCATION: nginx on the server CPU on a free port; sets PID and PORT.
nginx_here() {
  PORT=$(free_port)
  nginx_on "$SERVER_CPU" "$1" "$PORT" "$2"
}

# load NAME CONNECTIONS LOG [WRK_ARGS...]: checks that the server on $PORT refuses no
# token (when it guards) and answers the token 200, measures it, stops it.
load() {
  local name=$1 conns=$2 log=$3 url="http://127.0.0.1:$PORT/api/protected"
  shift 3
  [ "$log" = - ] || check "$url" 401
  check "$url" 200 "$AUTH"
  measure "$name" "$PID" "$url" "$conns" "$log" -H "$AUTH" "$@"
  stop "$PID"
  # A run writes a few hundred MB of log: removed now, its dirty pages are dropped rather
  # than written back while the next run is measured.
  [ "$log" = - ] || rm -f "$log"
}

CLOSE=(-H "Connection: close")
run_ka_jwt() { jwtguard_on ka_jwt && load ka_jwt "$KEEPALIVE_CONNECTIONS" "$TMP/ka_jwt.log"; }
run_ka_axum() { axum_on ka_axum && load ka_axum "$KEEPALIVE_CONNECTIONS" "$TMP/ka_axum.log"; }
run_ka_nginx() { nginx_here ka_nginx "$NGINX_200" && load ka_nginx "$KEEPALIVE_CONNECTIONS" -; }
run_close_jwt() {
  jwtguard_on close_jwt && load close_jwt "$CLOSE_CONNECTIONS" "$TMP/close_jwt.log" "${CLOSE[@]}"
}
run_close_axum() {
  axum_on close_axum && load close_axum "$CLOSE_CONNECTIONS" "$TMP/close_axum.log" "${CLOSE[@]}"
}
run_px_jwt() {
  jwtguard_on px_jwt --upstream "http://127.0.0.1:$UPSTREAM_PORT"
  load px_jwt "$KEEPALIVE_CONNECTIONS" "$TMP/px_jwt.log"
}
run_px_nginx() {
  nginx_here px_nginx 'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'
  load px_nginx "$KEEPALIVE_CONNECTIONS" -
}

SCENARIOS=(ka_jwt ka_axum ka_nginx close_jwt close_axum px_jwt px_nginx)
echo "== load: $ROUNDS rounds; wrk -t1, ${WARMUP}s warm-up + ${SECONDS_RUN}s measured;" \
  "server on CPU $SERVER_CPU, wrk and the upstream on CPU $CLIENT_CPU"
for ((round = 0; round < ROUNDS; round++)); do
  # The order turns every round, so that no run always comes first or after the same one.
  order=("${SCENARIOS[@]:round % 7}" "${SCENARIOS[@]:0:round % 7}")
  echo "-- round $((round + 1)): ${order[*]}"
  for scenario in "${order[@]}"; do "run_$scenario"; done
done

# ---------------------------------------------------------------------------------------
# Idle connections: what IDLE keep-alive connections, each after one answered request,
# add to the serving process, against its state after a short load.

declare -A IDLE_THREADS IDLE_RSS
# idle NAME: the server on $PORT, process $PID.
idle() {
  local name=$1 serve th0 th1 rss0 rss1 holder i status=0 t0
  timeout 30 taskset -c "$CLIENT_CPU" wrk -t1 -c"$KEEPALIVE_CONNECTIONS" -d1s -H "$AUTH" \
    "http://127.0.0.1:$PORT/api/protected" >/dev/null
  sleep 0.5
  serve=$(serving "$PID")
  th0=$(awk '/^Threads:/ { print $2 }' "/proc/$serve/status")
  rss0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$serve/status")
  BENCH_TOKEN=$VALID taskset -c "$CLIENT_CPU" python3 bench/idle.py "$PORT" "$IDLE" 120 \
    >"$TMP/idle.out" 2>"$TMP/idle.err" &
  holder=$!
  PIDS+=("$holder")
  t0=$(now_us)
  for ((i = 0; i < 600; i++)); do
    grep -qs '^ready' "$TMP/idle.out" && break
    kill -0 "$holder" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -qs '^ready' "$TMP/idle.out"; then
    if kill -0 "$holder" 2>/dev/null; then
      echo "bench/front.sh: $name: idle.py still opening connections" >&2
    else
      wait "$holder" || status=$?
    fi
    echo "bench/front.sh: $name: the $IDLE idle connections were not all answered" \
      "after $(calc "($(now_us) - $t0) / 1000000" 1) s (idle.py status $status):" >&2
    cat "$TMP/idle.err" >&2
    exit 1
  fi
  sleep 0.5
  th1=$(awk '/^Threads:/ { print $2 }' "/proc/$serve/status")
  rss1=$(awk '/^VmRSS:/ { print $2 }' "/proc/$serve/status")
  IDLE_THREADS[$name]=$((th1 - th0))
  IDLE_RSS[$name]=$((rss1 - rss0))
  printf '   %-6s threads %s -> %s, VmRSS %s -> %s KiB: %s bytes a connection\n' "$name" \
    "$th0" "$th1" "$rss0" "$rss1" "$(calc "($rss1 - $rss0) * 1024 / $IDLE" 0)"
  stop "$holder"
  stop "$PID"
}
echo "== $IDLE idle keep-alive connections (bench/idle.py on CPU $CLIENT_CPU)"
jwtguard_on idle_jwt && idle jwt
axum_on idle_axum && idle axum
nginx_here idle_nginx "$NGINX_200" && idle nginx

echo "== first answer ($STARTS fresh starts of each, turn about)"
# The axum server answers /healthz as soon as it is bound: its time is the floor of this
# way of measuring (process start-up, and polling from bash).
FIRST=() FIRST_AXUM=()
for ((s = 0; s < STARTS; s++)); do
  first_request
  FIRST+=("$FR_US")
  first_request "$AXUM" 127.0.0.1:0 "$TMP/first.log"
  FIRST_AXUM+=("$FR_US")
done
FIRST_MS=$(calc "$(median "${FIRST[@]}") / 1000" 2)
FIRST_AXUM_MS=$(calc "$(median "${FIRST_AXUM[@]}") / 1000" 2)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Summary

# rounds A B: round i's B/A ratios, joined by "/".
rounds() {
  local -a a b
  local i out=""
  read -r -a a <<<"${RPS[$1]}"
  read -r -a b <<<"${RPS[$2]}"
  for i in "${!a[@]}"; do out+="${out:+/}$(calc "${b[i]} / ${a[i]}" 2)"; done
  echo "$out"
}
total() { printf '%s\n' "$@" | awk '{ s += $1 } END { print s }'; }

# cpu_ratio A B: A's CPU per request over B's, the median of the rounds' pairs: the ratio
# of req/s each would reach on a CPU of its own. Steadier than req/s when other processes
# share the server's CPU (the "others" column); the budgets stay on req/s.
cpu_ratio() { paired 'a / b' "${CPU[$1]}" "${CPU[$2]}" 2; }

# shellcheck disable=SC2086 # word splitting of the per-round lists is intended
{
  R_AXUM=$(paired 'b / a' "${RPS[ka_axum]}" "${RPS[ka_jwt]}")
  R_NGINX=$(paired 'b / a' "${RPS[ka_nginx]}" "${RPS[ka_jwt]}")
  R_CLOSE=$(paired 'b / a' "${RPS[close_axum]}" "${RPS[close_jwt]}")
  R_PROXY=$(paired 'b / a' "${RPS[px_nginx]}" "${RPS[px_jwt]}")
  CPU_JWT=$(median ${CPU[ka_jwt]})
  HWM_JWT=$(largest ${HWM[ka_jwt]})
  NON2XX_ALL=0 LOG_OK=1 NOISE=0
  for s in "${SCENARIOS[@]}"; do
    NON2XX_ALL=$((NON2XX_ALL + $(total ${NON2XX[$s]})))
    NOISE=$(largest "$NOISE" ${OTHER[$s]})
    for d in ${LOGGED[$s]}; do
      [ "$d" = - ] && continue
      if ((d < 0 || d > KEEPALIVE_CONNECTIONS)); then LOG_OK=0; fi
    done
  done
  V_AXUM=$(verdict "$R_AXUM >= 1.8")
  V_NGINX=$(verdict "$R_NGINX >= 0.75")
  V_CPU=$(verdict "$CPU_JWT <= 10")
  V_CLOSE=$(verdict "$R_CLOSE >= 1.0")
  V_PROXY=$(verdict "$R_PROXY >= 1.0")
  V_THREADS=$(verdict "${IDLE_THREADS[jwt]} <= 0")
  V_IDLE_RSS=$(verdict "${IDLE_RSS[jwt]} <= 1024")
  V_HWM=$(verdict "$HWM_JWT <= 3072")
  V_SIZE=$(verdict "$SIZE <= 1310720")
  V_FIRST=$(verdict "$FIRST_MS <= 10")
  V_STATUS=$(verdict "$NON2XX_ALL == 0 && $LOG_OK == 1")
}

mkdir -p target/bench
SUMMARY=target/bench/front.txt
# shellcheck disable=SC2086 # word splitting of the per-round lists is intended
{
  if [ -n "${BENCH_JWTGUARD:-}" ]; then
    BUILT="sha256 $(sha256sum "$JWTGUARD" | cut -c1-12)"
  else
    BUILT="built at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty')"
  fi
  echo "jwtguard front-end benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $JWTGUARD ($BUILT)"
  echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), $(nginx -v 2>&1)"
  echo "load average before $LOAD_BEFORE, after $LOAD_AFTER"
  echo "wrk -t1 -d${SECONDS_RUN}s after ${WARMUP}s, $ROUNDS rounds, a fresh server a run; server on" \
    "CPU $SERVER_CPU, wrk and the upstream on CPU $CLIENT_CPU; ka: keep-alive -c$KEEPALIVE_CONNECTIONS," \
    "close: Connection: close -c$CLOSE_CONNECTIONS, px: proxy to nginx return 200 -c$KEEPALIVE_CONNECTIONS"
  echo
  printf '%-11s %10s %-26s %8s %9s %8s %10s\n' "" "req/s" "(rounds)" "us/req" "VmHWM KiB" "non-2xx" "others %"
  for s in "${SCENARIOS[@]}"; do
    printf '%-11s %10s %-26s %8s %9s %8s %10s\n' "$s" "$(median ${RPS[$s]})" \
      "($(tr ' ' '/' <<<"${RPS[$s]% }"))" "$(median ${CPU[$s]})" "$(largest ${HWM[$s]})" \
      "$(total ${NON2XX[$s]})" "$(largest ${OTHER[$s]})"
  done
  echo
  printf '%-6s %16s %18s\n' "idle" "threads added" "VmRSS added KiB"
  for s in jwt axum nginx; do printf '%-6s %16s %18s\n' "$s" "${IDLE_THREADS[$s]}" "${IDLE_RSS[$s]}"; done
  echo
  if ((NOISE > 10)); then
    echo "WARNING: up to $NOISE% of CPU $SERVER_CPU went to other processes during a run: noisy."
    echo "The scheduler shares a CPU among threads, so then a server with many threads (a"
    echo "thread per connection) gets more of it than a single-threaded one: its req/s ratios"
    echo "flatter it. Compare the ratios from CPU per request at the end."
    echo
  fi
  echo "Ratios: medians of per-round pairs (each round's ratio in brackets)."
  printf '%-48s %-32s %s\n' "budget" "measured" "verdict"
  printf '%-48s %-32s %s\n' "keep-alive req/s jwtguard/axum >= 1.8" "$R_AXUM ($(rounds ka_axum ka_jwt))" "$V_AXUM"
  printf '%-48s %-32s %s\n' "keep-alive req/s jwtguard/nginx return >= 0.75" "$R_NGINX ($(rounds ka_nginx ka_jwt))" "$V_NGINX"
  printf '%-48s %-32s %s\n' "keep-alive CPU us/request <= 10" "$CPU_JWT" "$V_CPU"
  printf '%-48s %-32s %s\n' "Connection: close req/s jwtguard/axum >= 1.0" "$R_CLOSE ($(rounds close_axum close_jwt))" "$V_CLOSE"
  printf '%-48s %-32s %s\n' "proxy req/s jwtguard/nginx proxy_pass >= 1.0" "$R_PROXY ($(rounds px_nginx px_jwt))" "$V_PROXY"
  printf '%-48s %-32s %s\n' "$IDLE idle connections: threads added 0" "${IDLE_THREADS[jwt]}" "$V_THREADS"
  printf '%-48s %-32s %s\n' "$IDLE idle connections: RSS added <= 1024 KiB" "${IDLE_RSS[jwt]} KiB" "$V_IDLE_RSS"
  printf '%-48s %-32s %s\n' "peak RSS of the worker at 32 conns <= 3072 KiB" "$HWM_JWT KiB" "$V_HWM"
  printf '%-48s %-32s %s\n' "stripped binary <= 1310720 bytes (1.25 MiB)" "$SIZE bytes" "$V_SIZE"
  printf '%-48s %-32s %s\n' "first answer <= 10 ms after spawn (median)" "$FIRST_MS ms (axum $FIRST_AXUM_MS)" "$V_FIRST"
  printf '%-48s %-32s %s\n' "every answer 2xx; every request logged" "non-2xx $NON2XX_ALL" "$V_STATUS"
  echo
  echo "The same ratios from CPU per request (what each would do on a CPU of its own; steadier"
  echo "when other processes share CPU $SERVER_CPU, informative only): keep-alive jwtguard/axum" \
    "$(cpu_ratio ka_axum ka_jwt), jwtguard/nginx $(cpu_ratio ka_nginx ka_jwt); close" \
    "jwtguard/axum $(cpu_ratio close_axum close_jwt); proxy jwtguard/nginx $(cpu_ratio px_nginx px_jwt)"
} >"$SUMMARY"

echo
cat "$SUMMARY"
echo
echo "summary written to $SUMMARY"
if [ "$STRICT" = 1 ] && grep -q ' FAIL$' "$SUMMARY"; then exit 1; fi
exit 0
