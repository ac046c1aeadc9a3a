# shellcheck shell=bash
# Sourced by the bench/ scripts: what they share.

need() { # need COMMAND PACKAGE: install PACKAGE from Debian when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 (for $1)"
  if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# port_of FILE: the port from a "listening on http://IP:PORT" first line, or nothing.
port_of() {
  local line=""
  IFS= read -r line <"$1" 2>/dev/null || true
  if [[ $line =~ ^listening\ on\ http://.*:([0-9]+)$ ]]; then
    echo "${BASH_REMATCH[1]}"
  fi
}

now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

# children PID: PID's child processes (a supervised jwtguard's worker), space-separated.
children() { cat "/proc/$1/task/"*/children 2>/dev/null || true; }

# serving PID: the process that serves: the worker of jwtguard's supervisor PID, or PID
# itself (run with --no-supervisor, or another server).
serving() {
  local c
  c=$(children "$1")
  c=${c%% *}
  echo "${c:-$1}"
}

# cpu_ticks PID: utime + stime of PID and of its children (jwtguard's supervisor and its
# worker), in clock ticks.
cpu_ticks() {
  local p stat total=0
  for p in "$1" $(children "$1"); do
    stat=$(<"/proc/$p/stat") || continue
    stat=${stat##*) } # fields after "(comm) "; utime and stime are fields 14 and 15
    total=$((total + $(awk '{ print $12 + $13 }' <<<"$stat")))
  done
  echo "$total"
}

# own_ticks PID: utime + stime of PID alone (the supervisor without its worker).
own_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

# pss_kib PID: the proportional set size of PID (shared pages split among their users), KiB.
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }

# switches PID: context switches (voluntary and not) of the process's threads alive now.
# A thread that exited takes its count with it: compare runs whose threads live on.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}

# children_cpu_us: sets CHILD_US to the user + system time of this shell's reaped
# children so far, in µs (`times` must run in this shell, not in a command substitution).
# Needs $TMP.
children_cpu_us() {
  times >"$TMP/times"
  # shellcheck disable=SC2034 # read by the sourcing script
  CHILD_US=$(awk 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub(/s$/, "", p[2]); t += p[1] * 60 + p[2] }
    printf "%.0f\n", t * 1000000 }' "$TMP/times")
}

# vm_hwm PID: peak resident set size of the process so far, KiB.
vm_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# to_us VALUE: a wrk duration (12.3us, 1.2ms, 1.0s) in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
    printf "%.1f", n }'
}

median() { # median VALUES...
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# cpu_busy N: busy clock ticks of CPU N so far (all but idle and iowait).
cpu_busy() {
  awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

largest() { printf '%s\n' "$@" | sort -g | tail -n1; }

verdict() { # verdict CONDITION: PASS or FAIL
  if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi
}

# paired MAP A B [DECIMALS]: the median over rounds of MAP applied to round i of A and of B, where
# MAP is an awk expression in a and b. Pairing runs of one round cancels slow drift in
# the machine's load better than comparing medians.
paired() {
  local expr=$1 decimals=${4:-3} i
  local -a a b ratios=()
  read -r -a a <<<"$2"
  read -r -a b <<<"$3"
  for i in "${!a[@]}"; do
    ratios+=("$(awk -v a="${a[i]}" -v b="${b[i]}" "BEGIN { printf \"%.${decimals}f\", $expr }")")
  done
  median "${ratios[@]}"
}

# strip_size BINARY: the size of a stripped copy, bytes. Needs $TMP.
strip_size() {
  cp "$1" "$TMP/stripped"
  strip "$TMP/stripped"
  stat -c %s "$TMP/stripped"
}

# The scripts' processes. Each needs $TMP and $PIDS (scratch), and $SERVER_CPU.

# stop PID: SIGTERM, up to 5 s to exit, then SIGKILL; PID leaves $PIDS.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 500; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local -a left=()
  for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || left+=("$i"); done
  PIDS=("${left[@]}")
}

# start NAME CMD...: runs CMD on the server CPU with stdout in $TMP/NAME.out and stderr in
# $TMP/NAME.err; sets PID and PORT once the first stdout line names the port (5 s at most).
start() {
  local name=$1 i
  shift
  : >"$TMP/$name.out"
  taskset -c "$SERVER_CPU" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID=$!
  PIDS+=("$PID")
  PORT=""
  for ((i = 0; i < 500; i++)); do
    PORT=$(port_of "$TMP/$name.out")
    [ -n "$PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.01
  done
  echo "$(basename "$0"): $name did not start:" >&2
  cat "$TMP/$name.err" >&2
  exit 1
}

# healthz PORT: true when GET /healthz answers 200 (no child process: bash /dev/tcp).
healthz() {
  local status=""
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 2>/dev/null || true
  IFS= read -r -t 2 status <&3 || true
  exec 3>&-
  [[ $status == "HTTP/1."[01]" 200"* ]]
}

# first_request [CMD...]: sets FR_US, microseconds from the spawn of CMD (not pinned;
# by default $JWTGUARD on port 0, logging to $TMP/first.log) to its first 200 from
# /healthz.
first_request() {
  local out="$TMP/first.out" t0 t1 pid port="" deadline
  if (($# == 0)); then set -- "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$TMP/first.log"; fi
  : >"$out"
  rm -f "$TMP/first.log"
  t0=$(now_us)
  "$@" >"$out" 2>"$TMP/first.err" &
  pid=$!
  PIDS+=("$pid")
  deadline=$((t0 + 5000000))
  while (($(now_us) < deadline)); do
    if [ -z "$port" ]; then
      port=$(port_of "$out")
    elif healthz "$port"; then
      t1=$(now_us)
      stop "$pid"
      # shellcheck disable=SC2034 # read by the sourcing script
      FR_US=$((t1 - t0))
      return 0
    fi
  done
  stop "$pid"
  echo "$(basename "$0"): $1 did not answer /healthz within 5 s" >&2
  cat "$TMP/first.err" >&2
  exit 1
}

# check URL WANT HEADER...: one request must get WANT.
check() {
  local url=$1 want=$2 got h
  shift 2
  local -a args=()
  for h in "$@"; do args+=(-H "$h"); done
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${args[@]}" "$url" || true)
  [ "$got" = "$want" ] || {
    echo "$(basename "$0"): $url answered $got, not $want" >&2
    exit 1
  }
}

# free_port: a loopback port nothing listens on now, for servers that cannot take port 0.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# up PORT: waits (5 s at most) until something accepts on PORT.
up() {
  local i
  for ((i = 0; i < 500; i++)); do
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && {
      exec 3>&-
      return 0
    }
    sleep 0.01
  done
  echo "$(basename "$0"): nothing listens on $1" >&2
  exit 1
}

# nginx_on CPU NAME PORT LOCATION: one nginx process (no master, one worker's work) on
# CPU, serving LOCATION's directives for every path, with an `app` upstream (keep-alive)
# at 127.0.0.1:$UPSTREAM_PORT when that is set; sets PID.
nginx_on() {
  local cpu=$1 name=$2 port=$3 location=$4 upstream=""
  if [ -n "${UPSTREAM_PORT:-}" ]; then
    upstream="upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; keepalive_requests 1000000; }"
  fi
  mkdir -p "$TMP/$name"
  cat >"$TMP/$name/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid $TMP/$name/nginx.pid;
error_log $TMP/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TMP/$name/body;
  proxy_temp_path $TMP/$name/proxy;
  fastcgi_temp_path $TMP/$name/fastcgi;
  uwsgi_temp_path $TMP/$name/uwsgi;
  scgi_temp_path $TMP/$name/scgi;
  $upstream
  server { listen 127.0.0.1:$port; location / { $location } }
}
EOF
  taskset -c "$cpu" nginx -p "$TMP/$name" -e "$TMP/$name/error.log" -c "$TMP/$name/nginx.conf" &
  PID=$!
  PIDS+=("$PID")
  up "$port"
}

# scratch NAME: a temporary directory in $TMP, and $PIDS, the processes started and not yet
# reaped: on exit every one is killed by its PID and the directory removed.
scratch() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/jwtguard-$1.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
