#!/usr/bin/env bash
# jwtguard in front of an app: --upstream against nginx proxy_pass (no auth) to the same
# upstream, and --forward-auth decisions against serve mode's, on loopback.
#
#   bench/proxy.sh                  # about 3 minutes
#   BENCH_STRICT=1 bench/proxy.sh   # exit 1 when a budget fails
#
# Environment: BENCH_SECONDS (measured run, default 10), BENCH_WARMUP (default 3),
# BENCH_CONNECTIONS (default 32), BENCH_ROUNDS (default 3; the summary takes medians of
# per-round pairs), BENCH_STRICT. See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_RUN=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
ROUNDS=${BENCH_ROUNDS:-3}
STRICT=${BENCH_STRICT:-0}
SERVER_CPU=0 # the proxy or the guard under test
CLIENT_CPU=1 # wrk and the upstream

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need nginx nginx-light
need taskset util-linux
need strip binutils
need curl curl
need python3 python3
CLK_TCK=$(getconf CLK_TCK)

scratch proxy # $TMP, and $PIDS killed and removed on exit (bench/lib.sh)

# jwtguard_on NAME ARGS...: jwtguard on the server CPU, logging to $TMP/NAME.log; sets
# PID and PORT.
jwtguard_on() {
  local name=$1
  shift
  start "$name" "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$TMP/$name.log" "$@"
}

# measure NAME PID URL HEADER...: warm-up, then the measured run; appends to the
# per-scenario lists.
declare -A RPS CPU CSW HWM NON2XX REQS LINES OTHER
measure() {
  local name=$1 pid=$2 url=$3 t0 t1 s0 s1 w1 w2 b0 b1 l0=0 l1=0 logged=-
  shift 3
  local -a args=()
  for h in "$@"; do args+=(-H "$h"); done
  local out="$TMP/$name.wrk"
  timeout $((WARMUP + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${args[@]}" "$url" >/dev/null
  sleep 0.3
  [ -f "$TMP/$name.log" ] && l0=$(wc -l <"$TMP/$name.log")
  t0=$(cpu_ticks "$pid")
  s0=$(switches "$(serving "$pid")")
  b0=$(cpu_busy "$SERVER_CPU")
  w1=$(now_us)
  timeout $((SECONDS_RUN + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" "${args[@]}" "$url" >"$out"
  w2=$(now_us)
  sleep 0.3
  t1=$(cpu_ticks "$pid")
  s1=$(switches "$(serving "$pid")")
  b1=$(cpu_busy "$SERVER_CPU")
  local rps reqs non2xx cpu csw hwm other
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  reqs=$(awk '/ requests in / { print $1 }' "$out")
  if [ -f "$TMP/$name.log" ]; then
    l1=$(wc -l <"$TMP/$name.log")
    logged=$((l1 - l0 - reqs))
  fi
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  cpu=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $reqs" 2)
  csw=$(calc "($s1 - $s0) / $reqs" 2)
  hwm=$(vm_hwm "$(serving "$pid")")
  # Time on the server CPU used by other processes over the run: high means noisy.
  other=$(calc "((($b1 - $b0) - ($t1 - $t0)) * 1000000 / $CLK_TCK) * 100 / ($w2 - $w1 + 300000)" 0)
  RPS[$name]+="$rps " CPU[$name]+="$cpu " CSW[$name]+="$csw " HWM[$name]+="$hwm " NON2XX[$name]+="${non2xx:-0} "
  REQS[$name]+="$reqs " LINES[$name]+="$((l1 - l0)) " OTHER[$name]+="$other "
  printf '   %-7s %9s req/s  %6s us/req  %5s switches/req  VmHWM %5s KiB  non-2xx %s  log lines - requests %s  others %s%%\n' \
    "$name" "$rps" "$cpu" "$csw" "$hwm" "${non2xx:-0}" "$logged" "$other"
  rm -f "$TMP/$name.log"
}

echo "== build"
cargo build --release --quiet --bin jwtguard
JWTGUARD=target/release/jwtguard
SIZE=$(strip_size "$JWTGUARD")
export JWTGUARD_SECRET
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN=$("$JWTGUARD" token --sub bench --ttl 3600)
AUTH="Authorization: Bearer $TOKEN"

# The upstream: nginx answering 200 "ok" on the client CPU, for every scenario.
UPSTREAM_PORT=$(free_port)
nginx_on "$CLIENT_CPU" upstream "$UPSTREAM_PORT" 'return 200 "ok\n";'
check "http://127.0.0.1:$UPSTREAM_PORT/api/protected" 200

run_nginx() {
  local port
  port=$(free_port)
  nginx_on "$SERVER_CPU" nginx "$port" \
    'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'
  check "http://127.0.0.1:$port/api/protected" 200
  measure nginx "$PID" "http://127.0.0.1:$port/api/protected" "$AUTH"
  stop "$PID"
}
run_proxy() {
  jwtguard_on proxy --upstream "http://127.0.0.1:$UPSTREAM_PORT"
  check "http://127.0.0.1:$PORT/api/protected" 401
  check "http://127.0.0.1:$PORT/api/protected" 200 "$AUTH"
  measure proxy "$PID" "http://127.0.0.1:$PORT/api/protected" "$AUTH"
  stop "$PID"
}
# serve and auth get the same request bytes but the path: the original method and URI
# headers nginx's auth_request sends (ignored in serve mode).
ORIGINAL=("X-Original-URI: /api/protected" "X-Original-Method: GET")
run_serve() {
  jwtguard_on serve
  check "http://127.0.0.1:$PORT/api/protected" 200 "$AUTH"
  measure serve "$PID" "http://127.0.0.1:$PORT/api/protected" "$AUTH" "${ORIGINAL[@]}"
  stop "$PID"
}
run_auth() {
  jwtguard_on auth --forward-auth /auth --trusted-proxy 127.0.0.1/32
  check "http://127.0.0.1:$PORT/auth" 401 "${ORIGINAL[@]}"
  check "http://127.0.0.1:$PORT/auth" 200 "$AUTH" "${ORIGINAL[@]}"
  measure auth "$PID" "http://127.0.0.1:$PORT/auth" "$AUTH" "${ORIGINAL[@]}"
  stop "$PID"
}

echo "== $ROUNDS rounds; wrk -t1 -c$CONNECTIONS ${WARMUP}s + ${SECONDS_RUN}s; proxy or guard on CPU $SERVER_CPU, wrk and the upstream (nginx) on CPU $CLIENT_CPU"
ORDERS=("nginx proxy serve auth" "proxy serve auth nginx" "serve auth nginx proxy" "auth nginx proxy serve")
for ((round = 1; round <= ROUNDS; round++)); do
  order=${ORDERS[$(((round - 1) % 4))]}
  echo "-- round $round: $order"
  for scenario in $order; do "run_$scenario"; done
done

# shellcheck disable=SC2086 # word splitting of the per-round lists is intended
{
  RATIO=$(paired 'b / a' "${RPS[nginx]}" "${RPS[proxy]}")
  DCPU=$(paired 'b - a' "${CPU[serve]}" "${CPU[auth]}")
  HWM_PROXY=$(largest ${HWM[proxy]})
  NON2XX_ALL=$(printf '%s\n' ${NON2XX[nginx]} ${NON2XX[proxy]} ${NON2XX[serve]} ${NON2XX[auth]} | awk '{ s += $1 } END { print s }')
  LOG_OK=1
  read -r -a l <<<"${LINES[proxy]} ${LINES[auth]}"
  read -r -a r <<<"${REQS[proxy]} ${REQS[auth]}"
  for i in "${!l[@]}"; do
    d=$((l[i] - r[i]))
    if ((d < 0 || d > CONNECTIONS)); then LOG_OK=0; fi
  done
  V_RATIO=$(verdict "$RATIO >= 0.8")
  V_RSS=$(verdict "$HWM_PROXY <= 6144")
  V_CPU=$(verdict "$DCPU <= 1")
  V_SIZE=$(verdict "$SIZE <= 1310720")
  V_STATUS=$(verdict "$NON2XX_ALL == 0 && $LOG_OK == 1")
  mkdir -p target/bench
  {
    echo "jwtguard proxy benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty')"
    echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(nginx -v 2>&1)"
    echo "wrk -t1 -c$CONNECTIONS -d${SECONDS_RUN}s, $ROUNDS rounds, medians; a fresh process per run"
    echo
    printf '%-22s %12s %12s %12s %12s\n' "" "nginx proxy" "jwt proxy" "jwt serve" "jwt auth"
    printf '%-22s %12s %12s %12s %12s\n' "req/s" "$(median ${RPS[nginx]})" "$(median ${RPS[proxy]})" \
      "$(median ${RPS[serve]})" "$(median ${RPS[auth]})"
    printf '%-22s %12s %12s %12s %12s\n' "server CPU us/request" "$(median ${CPU[nginx]})" \
      "$(median ${CPU[proxy]})" "$(median ${CPU[serve]})" "$(median ${CPU[auth]})"
    printf '%-22s %12s %12s %12s %12s\n' "context switches/req" "$(median ${CSW[nginx]})" \
      "$(median ${CSW[proxy]})" "$(median ${CSW[serve]})" "$(median ${CSW[auth]})"
    printf '%-22s %12s %12s %12s %12s\n' "peak RSS KiB (max)" "$(largest ${HWM[nginx]})" \
      "$HWM_PROXY" "$(largest ${HWM[serve]})" "$(largest ${HWM[auth]})"
    printf '%-22s %12s %12s %12s %12s\n' "others on CPU $SERVER_CPU % (max)" "$(largest ${OTHER[nginx]})" \
      "$(largest ${OTHER[proxy]})" "$(largest ${OTHER[serve]})" "$(largest ${OTHER[auth]})"
    echo
    echo "$V_RATIO  proxy req/s / nginx proxy_pass req/s = $RATIO (budget >= 0.8)"
    echo "$V_RSS  proxy peak RSS = $HWM_PROXY KiB at $CONNECTIONS connections (budget <= 6144)"
    echo "$V_CPU  forward-auth CPU - serve CPU = $DCPU us/decision (budget <= 1)"
    echo "$V_SIZE  stripped binary = $SIZE bytes (budget <= 1310720, 1.25 MiB)"
    echo "$V_STATUS  every answer 2xx, every proxied and forward-auth request logged (lines - requests in [0, $CONNECTIONS])"
  } | tee target/bench/proxy.txt
}
if [ "$STRICT" = 1 ] && grep -q '^FAIL' target/bench/proxy.txt; then exit 1; fi
