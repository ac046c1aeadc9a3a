# shellcheck shell=bash
# Sourced by the tests/*.sh scripts: installs a Debian package when its command is
# missing, and starts the debug jwtguard on a free loopback port, stopped by PID on exit.
#   need COMMAND PACKAGE
#   start_jwtguard NAME ARGS...   sets $tmp (a scratch dir), $pid and $url

need() {
  command -v "$1" >/dev/null 2>&1 && return
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

start_jwtguard() {
  local name=$1
  shift
  cargo build --quiet --bin jwtguard
  export JWTGUARD_SECRET="$name-test-secret-0123456789abcdef"
  rm -f "$tmp/out" # a second start must not read the first one's line
  target/debug/jwtguard --listen 127.0.0.1:0 "$@" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 100); do
    grep -qs '^listening on' "$tmp/out" && break
    kill -0 "$pid" 2>/dev/null || break # exited at start-up
    sleep 0.05
  done
  url=$(sed -n 's/^listening on //p' "$tmp/out")
  [ -n "$url" ] || { echo "$name: jwtguard did not start" >&2; cat "$tmp/err" >&2; exit 1; }
}
