#!/usr/bin/env bash
# Sustained load: one jwtguard (release, --log-file) under wrk with a mix of requests for a
# minute, then checks that nothing failed, that the security log holds one whole JSON line
# per /api/ response, and that memory stayed flat.
#
#   bench/load.sh                                # 5 s warm-up, 60 s measured: about 90 s
#   LOAD_SECONDS=5 LOAD_WARMUP=1 bench/load.sh   # a short run: about 10 s
#
# Environment (defaults in brackets):
#   LOAD_SECONDS         measured run, seconds [60]
#   LOAD_WARMUP          warm-up run before it, seconds [5]
#   LOAD_CONNECTIONS     wrk keep-alive connections [64]
#   LOAD_THREADS         wrk threads [2]
#   LOAD_MIX             weights of valid,forged,none,healthz [6,2,1,1]: of every 10
#                        requests of a wrk thread, 6 carry a valid token, 2 a forged one
#                        (the valid token's header and claims, another secret's signature),
#                        1 no Authorization header, all GET /api/protected; 1 is GET /healthz
#   LOAD_TIMEOUT         wrk's response timeout, seconds [2]; a timeout is a socket error
#   LOAD_RSS_GROWTH_PCT  largest allowed growth of VmRSS over the measured run, % [10]
#
# The server is pinned to CPU 0 and wrk to CPU 1 (taskset), as in bench/run.sh. wrk runs
# bench/load.lua, which builds the mix and counts responses by kind: a response carrying
# X-Request-Id is an /api/ one, anything else a /healthz one.
#
# Checks (each PASS or FAIL; the script exits 1 if any fails):
#   - socket errors: wrk's connect, read, write and timeout errors are 0 (warm-up and run);
#   - 5xx: no response with status >= 500 (wrk's count), and no log line with one;
#   - statuses: /api/ answered only 200 or 401, /healthz only 200;
#   - lines vs responses: the security log's `authorize` lines written during the measured
#     run (counted between the log's sizes once it stopped growing after the warm-up and
#     after the run) minus the /api/ responses wrk completed in that run is in
#     [0, LOAD_CONNECTIONS], in total and for 200 and 401 apart: each decision is logged
#     before it is answered, and the requests in flight when wrk stops (at most one per
#     connection) are decided and logged but never counted by wrk. The warm-up is checked
#     the same way;
#   - JSON: every line of the log parses as one JSON object, the first is `startup`, and
#     after SIGTERM the last is `shutdown`;
#   - ids: the `authorize` lines' http.request.id are PREFIX-1, PREFIX-2, ... in order, one
#     prefix, no gap and no repeat (ids are given out in order by the one serving thread,
#     and every decision is logged);
#   - RSS flat: VmRSS is sampled every second from the server's start; over the measured
#     run, from its second sample (its first second is when wrk's new connections and
#     tiny_http's threads for them come up), the largest sample is at most
#     LOAD_RSS_GROWTH_PCT % above the first.
# Also reported: req/s, latency p50/p99, server CPU per request, how busy the server and wrk
# kept their CPUs (when neither is near 100 %, other processes on this machine took time
# from them and req/s is lower than it can be), the load average before the runs, the log.
# The summary is printed and written to target/bench/load-summary.txt. The log, about 500
# bytes per /api/ request (1 to 2 GB for the default run), is written under $TMPDIR (/tmp)
# and removed on exit; reading it back for the checks takes about 15 s of the 90.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECONDS_RUN=${LOAD_SECONDS:-60}
WARMUP=${LOAD_WARMUP:-5}
CONNECTIONS=${LOAD_CONNECTIONS:-64}
THREADS=${LOAD_THREADS:-2}
MIX=${LOAD_MIX:-6,2,1,1}
TIMEOUT=${LOAD_TIMEOUT:-2}
RSS_GROWTH_PCT=${LOAD_RSS_GROWTH_PCT:-10}
SERVER_CPU=0
CLIENT_CPU=1

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need taskset util-linux
need python3 python3

if [ "$(nproc)" -lt 2 ]; then
  echo "bench/load.sh: needs 2 CPUs (server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU)" >&2
  exit 1
fi
if ((THREADS < 1 || CONNECTIONS < THREADS || SECONDS_RUN < 2 || WARMUP < 1)); then
  echo "bench/load.sh: need LOAD_THREADS >= 1, LOAD_CONNECTIONS >= LOAD_THREADS," \
    "LOAD_SECONDS >= 2, LOAD_WARMUP >= 1" >&2
  exit 2
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------
# Processes: every one started is recorded and killed by its PID on exit.

scratch load # $TMP, and $PIDS killed and removed on exit (bench/lib.sh)

forget() { # forget PID: drop PID from PIDS once it is reaped
  local -a left=()
  local p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || left+=("$p"); done
  PIDS=("${left[@]}")
}




# settled_size FILE: the size of FILE once it stopped growing (two equal readings 0.1 s
# apart; 10 s at most).
settled_size() {
  local a b i
  a=$(stat -c %s "$1")
  for ((i = 0; i < 100; i++)); do
    sleep 0.1
    b=$(stat -c %s "$1")
    [ "$a" = "$b" ] && break
    a=$b
  done
  echo "$b"
}

# ---------------------------------------------------------------------------------------
# Build, tokens, server

echo "== build"
cargo build --release --quiet --bin jwtguard
JWTGUARD=target/release/jwtguard

export JWTGUARD_SECRET
JWTGUARD_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
OTHER=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOAD_VALID=$("$JWTGUARD" token --sub load --ttl 3600)
OTHER_TOKEN=$(JWTGUARD_SECRET=$OTHER "$JWTGUARD" token --sub load --ttl 3600)
LOAD_FORGED="${LOAD_VALID%.*}.${OTHER_TOKEN##*.}"
export LOAD_VALID LOAD_FORGED LOAD_MIX=$MIX

LOG=$TMP/security.log
# The forged part of the mix comes from one address: the limiter counts it (its cost is
# in the figures) but never answers 429 here.
taskset -c "$SERVER_CPU" "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$LOG" \
  --max-failures 4294967295 >"$TMP/server.out" 2>"$TMP/server.err" &
PID=$!
PIDS+=("$PID")
PORT=""
for ((i = 0; i < 500; i++)); do
  PORT=$(port_of "$TMP/server.out")
  [ -n "$PORT" ] && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.01
done
if [ -z "$PORT" ]; then
  echo "bench/load.sh: jwtguard did not start:" >&2
  cat "$TMP/server.err" >&2
  exit 1
fi
URL="http://127.0.0.1:$PORT"

# VmRSS of the server every second, as "epoch-µs KiB", until it exits (bounded by the
# runs' length plus a minute). awk reads the file in one read: bash's `read` takes it in
# pieces, and /proc/PID/status can change between them.
(
  for ((i = 0; i < WARMUP + SECONDS_RUN + 60; i++)); do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$(serving "$PID")/status" 2>/dev/null) || break
    [ -n "$rss" ] || break
    echo "${EPOCHREALTIME//[.,]/} $rss"
    sleep 1
  done
) >"$TMP/rss" &
SAMPLER=$!
PIDS+=("$SAMPLER")

# load NAME SECONDS [wrk args...]: wrk with bench/load.lua on the client CPU.
load() {
  local name=$1 secs=$2
  shift 2
  timeout $((secs + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout "${TIMEOUT}s" \
    -s bench/load.lua "$@" "$URL" >"$TMP/$name.wrk"
}

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== warm-up: ${WARMUP}s, wrk -t$THREADS -c$CONNECTIONS, mix valid,forged,none,healthz = $MIX"
OFF0=$(stat -c %s "$LOG")
load warmup "$WARMUP"
OFF1=$(settled_size "$LOG")

echo "== measured: ${SECONDS_RUN}s; server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
T0=$(now_us)
C0=$(cpu_ticks "$PID")
children_cpu_us
K0=$CHILD_US
load run "$SECONDS_RUN" --latency
T1=$(now_us)
C1=$(cpu_ticks "$PID")
children_cpu_us
K1=$CHILD_US
OFF2=$(settled_size "$LOG")

# SIGTERM: the server logs "shutdown" and exits 0.
kill -TERM "$PID"
STATUS=0
for ((i = 0; i < 500; i++)); do
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.01
done
kill -KILL "$PID" 2>/dev/null || true
wait "$PID" || STATUS=$?
forget "$PID"
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
forget "$SAMPLER"

# ---------------------------------------------------------------------------------------
# The log: every line JSON; authorize lines by status in [OFF0, OFF1) and [OFF1, OFF2).

echo "== checking the log ($(calc "$(stat -c %s "$LOG") / 1048576" 0) MiB)"
python3 - "$LOG" "$OFF0" "$OFF1" "$OFF2" >"$TMP/log.txt" <<'PY'
import json, sys
path, bounds = sys.argv[1], [int(a) for a in sys.argv[2:]]
ranges = {"warmup": (bounds[0], bounds[1]), "run": (bounds[1], bounds[2])}
count = {f"{r}_{k}": 0 for r in ranges for k in ("lines", "200", "401", "other", "5xx")}
lines = bad = 0
first_bad = []
first = last = None
reasons = {}
id_prefix, id_next, id_breaks, first_break = None, 1, 0, "-"
pos = 0
with open(path, "rb") as f:
    for raw in f:
        lines += 1
        start, pos = pos, pos + len(raw)
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("no newline")
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            bad += 1
            if len(first_bad) < 3:
                first_bad.append(str(lines))
            continue
        action = event.get("event.action")
        if first is None:
            first = action
        last = action
        if action != "authorize":
            continue
        prefix, _, counter = str(event.get("http.request.id")).rpartition("-")
        if id_prefix is None:
            id_prefix = prefix
        if prefix != id_prefix or counter != str(id_next):
            id_breaks += 1
            if first_break == "-":
                first_break = f"line {lines}: {prefix}-{counter} after {id_next - 1}"
            id_next = int(counter) if counter.isdigit() else id_next
        id_next += 1
        status = event.get("http.response.status_code")
        reason = event.get("event.reason")
        reasons[reason] = reasons.get(reason, 0) + 1
        for r, (lo, hi) in ranges.items():
            if lo <= start < hi:
                count[f"{r}_lines"] += 1
                key = str(status) if status in (200, 401) else "other"
                count[f"{r}_{key}"] += 1
                if isinstance(status, int) and status >= 500:
                    count[f"{r}_5xx"] += 1
print(f"lines={lines}")
print(f"bad={bad}")
print(f"first_bad={','.join(first_bad) or '-'}")
print(f"first={first}")
print(f"ids={id_prefix}-1..{id_next - 1}")
print(f"id_breaks={id_breaks}")
print(f"first_break={first_break}")
print(f"last={last}")
print("reasons=" + (",".join(f"{k}:{v}" for k, v in sorted(reasons.items())) or "-"))
for k, v in count.items():
    print(f"{k}={v}")
PY
declare -A L
while IFS='=' read -r k v; do L[$k]=$v; done <"$TMP/log.txt"

# ---------------------------------------------------------------------------------------
# wrk's numbers

declare -A W # W[run_api], W[warmup_s5xx], ...
wrk_numbers() { # wrk_numbers NAME
  local f="$TMP/$1.wrk" k v errs c r w t
  [ -f "$f" ] || { echo "bench/load.sh: no wrk output for $1" >&2; exit 1; }
  local -a kvs
  read -r -a kvs <<<"$(sed -n 's/^counts //p' "$f")"
  for kv in "${kvs[@]}"; do
    k=${kv%%=*} v=${kv#*=}
    W[$1_$k]=$v
  done
  W[$1_requests]=$(awk '/ requests in / { print $1 }' "$f")
  W[$1_rps]=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  errs=$(sed -n 's/^ *Socket errors: *//p' "$f")
  c=0 r=0 w=0 t=0
  if [ -n "$errs" ]; then
    read -r c r w t <<<"$(sed -E 's/connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)/\1 \2 \3 \4/' <<<"$errs")"
  fi
  W[$1_errors]="connect $c, read $r, write $w, timeout $t"
  W[$1_errors_total]=$((c + r + w + t))
  W[$1_p50]=$(awk '$1 == "50%" { print $2 }' "$f")
  W[$1_p99]=$(awk '$1 == "99%" { print $2 }' "$f")
}
wrk_numbers warmup
wrk_numbers run
for k in api api_200 api_401 api_other health health_200 s5xx requests; do
  for r in warmup run; do
    if [ -z "${W[${r}_$k]:-}" ]; then
      echo "bench/load.sh: no '$k' in wrk's output for $r:" >&2
      cat "$TMP/$r.wrk" >&2
      exit 1
    fi
  done
done

# ---------------------------------------------------------------------------------------
# RSS over the measured run, from its second sample

read -r RSS_N RSS_FIRST RSS_LAST RSS_MAX RSS_MIN < <(awk -v t0="$T0" -v t1="$T1" '
  $1 >= t0 && $1 <= t1 && $2 != "" {
    n++; if (n == 1) next
    m++; if (m == 1) first = $2; last = $2
    if ($2 > max) max = $2; if (min == "" || $2 < min) min = $2 }
  END { print m + 0, first + 0, last + 0, max + 0, min + 0 }' "$TMP/rss")
RSS_WARM=$(awk -v t0="$T0" '$1 < t0 { printf "%s%s", sep, $2; sep = " " }' "$TMP/rss")
RSS_RUN=$(awk -v t0="$T0" -v t1="$T1" '$1 >= t0 && $1 <= t1 { printf "%s%s", sep, $2; sep = " " }' "$TMP/rss")

# ---------------------------------------------------------------------------------------
# Verdicts and summary

FAILS=0
verdict() { # verdict NAME CONDITION: sets NAME to PASS, or to FAIL and counts it
  if awk "BEGIN { exit !($2) }"; then
    printf -v "$1" PASS
  else
    printf -v "$1" FAIL
    FAILS=$((FAILS + 1))
  fi
}
in_window() { echo "($1) >= 0 && ($1) <= $CONNECTIONS"; } # lines - responses in [0, C]

D_RUN=$((L[run_lines] - W[run_api]))
D_RUN_200=$((L[run_200] - W[run_api_200]))
D_RUN_401=$((L[run_401] - W[run_api_401]))
D_WARM=$((L[warmup_lines] - W[warmup_api]))
D_WARM_200=$((L[warmup_200] - W[warmup_api_200]))
D_WARM_401=$((L[warmup_401] - W[warmup_api_401]))
CPU_US=$(calc "($C1 - $C0) * 1000000 / $CLK_TCK / ${W[run_requests]}" 2)
WALL_S=$(calc "($T1 - $T0) / 1000000" 1)
# Shares of a CPU over the measured run. When neither is near 100 %, other processes
# took CPU time from them and the throughput is lower than the machine can do.
SERVER_PCT=$(calc "($C1 - $C0) * 100000000 / $CLK_TCK / ($T1 - $T0)" 0)
WRK_PCT=$(calc "($K1 - $K0) * 100 / ($T1 - $T0)" 0) # wrk, with timeout and taskset
RSS_GROWTH=$(calc "($RSS_MAX - $RSS_FIRST) * 100 / ($RSS_FIRST > 0 ? $RSS_FIRST : 1)" 1)

verdict V_ERR "${W[warmup_errors_total]} == 0 && ${W[run_errors_total]} == 0"
verdict V_5XX "${W[warmup_s5xx]} == 0 && ${W[run_s5xx]} == 0 && ${L[warmup_5xx]} == 0 && ${L[run_5xx]} == 0"
verdict V_STATUS "${W[warmup_api_other]} == 0 && ${W[run_api_other]} == 0 && ${L[warmup_other]} == 0 && ${L[run_other]} == 0 && ${W[run_health]} == ${W[run_health_200]} && ${W[warmup_health]} == ${W[warmup_health_200]}"
verdict V_COUNT "${W[run_requests]} == ${W[run_api]} + ${W[run_health]} && ${W[warmup_requests]} == ${W[warmup_api]} + ${W[warmup_health]} && ${W[run_api]} > 0"
verdict V_LINES "$(in_window "$D_RUN") && $(in_window "$D_RUN_200") && $(in_window "$D_RUN_401") && $(in_window "$D_WARM") && $(in_window "$D_WARM_200") && $(in_window "$D_WARM_401")"
verdict V_JSON "${L[bad]} == 0 && \"${L[first]}\" == \"startup\" && \"${L[last]}\" == \"shutdown\" && $STATUS == 0"
verdict V_IDS "${L[id_breaks]} == 0"
verdict V_RSS "$RSS_N >= 2 && $RSS_MAX <= $RSS_FIRST * (1 + $RSS_GROWTH_PCT / 100)"

mkdir -p target/bench
SUMMARY=target/bench/load-summary.txt
{
  echo "jwtguard sustained load, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty')"
  echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr)"
  echo "wrk -t$THREADS -c$CONNECTIONS -d${SECONDS_RUN}s --timeout ${TIMEOUT}s -s bench/load.lua (after ${WARMUP}s warm-up);" \
    "mix valid,forged,none,healthz = $MIX; server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
  echo
  printf '%-34s %14s %14s\n' "" "warm-up" "measured"
  row() { printf '%-34s %14s %14s\n' "$1" "$2" "$3"; }
  row "requests completed (wrk)" "${W[warmup_requests]}" "${W[run_requests]}"
  row "req/s" "${W[warmup_rps]}" "${W[run_rps]}"
  row "latency p50 / p99" "" "${W[run_p50]} / ${W[run_p99]}"
  row "/api/ responses: 200 / 401 / other" "${W[warmup_api_200]}/${W[warmup_api_401]}/${W[warmup_api_other]}" \
    "${W[run_api_200]}/${W[run_api_401]}/${W[run_api_other]}"
  row "/healthz responses (200)" "${W[warmup_health]} (${W[warmup_health_200]})" "${W[run_health]} (${W[run_health_200]})"
  row "5xx responses" "${W[warmup_s5xx]}" "${W[run_s5xx]}"
  row "authorize lines: 200 / 401 / other" "${L[warmup_200]}/${L[warmup_401]}/${L[warmup_other]}" \
    "${L[run_200]}/${L[run_401]}/${L[run_other]}"
  row "lines - /api/ responses" "$D_WARM" "$D_RUN"
  row "  of which 200 / 401" "$D_WARM_200 / $D_WARM_401" "$D_RUN_200 / $D_RUN_401"
  echo
  echo "socket errors: warm-up ${W[warmup_errors]}; measured ${W[run_errors]}"
  echo "server CPU: $CPU_US us/request over the measured run (${WALL_S}s wall); busy: server" \
    "$SERVER_PCT% of CPU $SERVER_CPU, wrk $WRK_PCT% of CPU $CLIENT_CPU; load average before: $LOADAVG"
  echo "log: ${L[lines]} lines, $(calc "$(stat -c %s "$LOG") / 1048576" 1) MiB, reasons ${L[reasons]};" \
    "first ${L[first]}, last ${L[last]}, non-JSON lines ${L[bad]} (first at ${L[first_bad]}); exit status $STATUS"
  echo "request ids: ${L[ids]}, breaks in the sequence ${L[id_breaks]} (first: ${L[first_break]})"
  echo "VmRSS (KiB), measured run from its 2nd sample: first $RSS_FIRST, last $RSS_LAST, min $RSS_MIN," \
    "max $RSS_MAX ($RSS_N samples, growth +$RSS_GROWTH%)"
  echo "  warm-up samples: $RSS_WARM"
  echo "  measured samples: $RSS_RUN"
  echo
  printf '%-64s %s\n' "check" "verdict"
  printf '%-64s %s\n' "socket errors 0 (connect/read/write/timeout)" "$V_ERR"
  printf '%-64s %s\n' "no 5xx (wrk and log)" "$V_5XX"
  printf '%-64s %s\n' "/api/ only 200 or 401, /healthz only 200" "$V_STATUS"
  printf '%-64s %s\n' "wrk's requests = /api/ + /healthz responses counted" "$V_COUNT"
  printf '%-64s %s\n' "authorize lines - /api/ responses in [0, $CONNECTIONS] (all, 200, 401)" "$V_LINES"
  printf '%-64s %s\n' "every line JSON, startup first, shutdown last, exit 0" "$V_JSON"
  printf '%-64s %s\n' "request ids PREFIX-1..N in log order, no gap or repeat" "$V_IDS"
  printf '%-64s %s\n' "VmRSS max <= first + $RSS_GROWTH_PCT% over the measured run" "$V_RSS"
  if ((FAILS > 0)); then echo "RESULT: FAIL ($FAILS checks)"; else echo "RESULT: PASS"; fi
} >"$SUMMARY"

echo
cat "$SUMMARY"
echo "summary written to $SUMMARY"
((FAILS == 0))
