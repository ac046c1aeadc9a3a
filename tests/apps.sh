# shellcheck shell=bash disable=SC2154  # $tmp, $pid (tests/server.sh), $script (the caller)
# Sourced by tests/nginx.sh, tests/caddy.sh and tests/upstream.sh, after tests/server.sh:
# jwtguard in front of examples/flask_app.py, for real. Every process started here is
# stopped by its PID on exit, and the scratch dir removed; everything listens on loopback.
#   need_service COMMAND PACKAGE   installs PACKAGE from Debian without starting its service
#   start_flask                    the example app on a free port: sets $app (its URL) and
#                                  $app_log (the development server's line per request)
#   free_port                      a loopback port nothing listens on, for servers that
#                                  cannot be given port 0
#   started PID                    stop PID on exit
#   start_another_jwtguard NAME ARGS...
#                                  tests/server.sh's start_jwtguard again, the earlier
#                                  one still running
#   wait_http NAME PID URL         until URL answers (0), or PID exits (1); at most 20 s
#   start_on_free_port NAME OUT PATH COMMAND...
#                                  a server on a free port (see below): sets $port
#   req NAME STATUS CURL_ARGS...   one request (curl from 127.0.0.2, so that the client's
#                                  address differs from the proxy's 127.0.0.1); its head in
#                                  $tmp/NAME.h, body in $tmp/NAME.b, and the jwtguard events
#                                  it added to $log in $tmp/NAME.ev
#   header NAME FIELD              a header of NAME's answer
#   body NAME JQ                   jq on NAME's answer
#   event NAME JQ                  jq on the one event NAME's request added to the log
#   check WHAT GOT WANT            GOT must be WANT
#   reached NAME, not_reached NAME whether NAME's request reached the app: each request's
#                                  target carries t=NAME in its query, and the app's
#                                  development server logs the target of each it serves
#   finish                         the time taken and the count of checks passed
# FLASK_PYTHON=PATH uses that interpreter (with Flask) instead of a new venv.

need curl curl
need jq jq
client=127.0.0.2
log=$tmp/security.log
: >"$log"
procs=()
passed=0

stop_all() {
  local p
  for p in "${procs[@]}" $pid; do kill "$p" 2>/dev/null || true; done
  for p in "${procs[@]}" $pid; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap stop_all EXIT

fail() {
  echo "$script: FAIL: $*" >&2
  local f
  for f in "$tmp"/*.log "$tmp"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f") (last 30 lines):" >&2; tail -n 30 "$f" >&2; }
  done
  echo "$passed passed, 1 failed"
  exit 1
}

started() { procs+=("$1"); }

# start_jwtguard (tests/server.sh) once more, the one it started still running (stopped on
# exit too). Its first line goes to $tmp/out again: without the old file, the wait cannot
# see the earlier process's line before the new one has truncated it.
start_another_jwtguard() {
  started "$pid"
  rm -f "$tmp/out" "$tmp/err"
  start_jwtguard "$@"
}

# Installs without starting the service the package brings (run here in the foreground).
need_service() {
  command -v "$1" >/dev/null 2>&1 && return
  local policy=/usr/sbin/policy-rc.d made=
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made=1
  fi
  need "$1" "$2"
  [ -z "$made" ] || rm -f $policy
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

wait_http() {
  local name=$1 p=$2 url=$3
  for _ in $(seq 200); do
    kill -0 "$p" 2>/dev/null || return 1
    curl -s -o /dev/null -m 1 "$url" && return
    sleep 0.1
  done
  fail "$name did not answer on $url within 20 s"
}

# start_on_free_port NAME OUT URL_PATH COMMAND...: runs `COMMAND... PORT` in the
# background (a function that execs the server, say), with a free PORT and its output in
# OUT, until it answers on http://127.0.0.1:PORT/URL_PATH; again on another port if
# another process took that one first. Sets $port.
start_on_free_port() {
  local name=$1 out=$2 path=$3
  shift 3
  for _ in 1 2 3; do
    port=$(free_port)
    "$@" "$port" >"$out" 2>&1 &
    started $!
    wait_http "$name" $! "http://127.0.0.1:$port$path" && return
    grep -qi 'in use' "$out" || break
  done
  cat "$out" >&2
  fail "$name did not start"
}

start_flask() {
  local py=${FLASK_PYTHON:-}
  if [ -z "$py" ]; then
    # The system's python3 on Debian needs python3-venv for `-m venv`.
    python3 -m venv "$tmp/venv" >/dev/null 2>&1 || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$tmp/venv"
      python3 -m venv "$tmp/venv"
    }
    "$tmp/venv/bin/pip" install -q --disable-pip-version-check 'flask>=3,<4' >/dev/null
    py=$tmp/venv/bin/python
  fi
  app_log=$tmp/app.log
  : >"$app_log" # there before the app opens it: read below while it starts
  PYTHONUNBUFFERED=1 "$py" examples/flask_app.py 0 >/dev/null 2>>"$app_log" &
  started $!
  local port=
  for _ in $(seq 100); do
    port=$(sed -n 's|^ \* Running on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$app_log")
    [ -n "$port" ] && break
    kill -0 "${procs[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || fail "the Flask app did not start"
  app=http://127.0.0.1:$port
  wait_http flask "${procs[-1]}" "$app/public/hello" || fail "the Flask app exited"
}

req() {
  local name=$1 want=$2 got before
  shift 2
  before=$(wc -l <"$log")
  got=$(curl -s -m 10 --interface $client -D "$tmp/$name.h" -o "$tmp/$name.b" \
    -w '%{http_code}' "$@") || true
  tail -n +"$((before + 1))" "$log" >"$tmp/$name.ev"
  if [ "$got" != "$want" ]; then
    cat "$tmp/$name.h" "$tmp/$name.b" >&2
    fail "$name: got $got, not $want"
  fi
  passed=$((passed + 1))
}

header() { sed -n "s/^$2: *//Ip" "$tmp/$1.h" | tr -d '\r'; }
body() { jq -r "$2" "$tmp/$1.b"; }

# (In a command substitution, so it says what is wrong rather than fail: check then does.)
event() {
  local n
  n=$(wc -l <"$tmp/$1.ev")
  if [ "$n" = 1 ]; then jq -r "$2" "$tmp/$1.ev"; else echo "$n events in the log, not 1"; fi
}

check() {
  [ "$2" = "$3" ] || fail "$1: got '$2', not '$3'"
  passed=$((passed + 1))
}

reached() {
  grep -q "[?&]t=$1[& ]" "$app_log" || fail "$1 did not reach the app"
  passed=$((passed + 1))
}

not_reached() {
  if grep "[?&]t=$1[& ]" "$app_log" >&2; then fail "$1 reached the app"; fi
  passed=$((passed + 1))
}

finish() {
  echo "$script: $SECONDS s"
  echo "$passed passed, 0 failed"
}
