#!/usr/bin/env bash
# shellcheck disable=SC2154 # $tmp comes from tests/server.sh
# contrib/systemd/ with systemd's own tools, without a running systemd:
#   - systemd-analyze verify on the units (ExecStart pointed at the debug binary);
#   - socket activation through systemd-socket-activate (LISTEN_FDS, LISTEN_PID): served,
#     and still served after the worker is killed (the supervisor holds the passed socket);
#   - sd_notify on a NOTIFY_SOCKET of our own: READY=1 once a worker accepts, WATCHDOG=1
#     while it beats, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/server.sh
. tests/server.sh # need, $tmp, $pid (stopped on exit)
need systemd-analyze systemd
need systemd-socket-activate systemd
need python3 python3
need curl curl
cargo build --quiet --bin jwtguard
bin=$PWD/target/debug/jwtguard
export JWTGUARD_SECRET=systemd-test-secret-0123456789abcdef
token=$("$bin" token --sub unit)
fail() { echo "systemd.sh: $*" >&2; exit 1; }

# 1. The units, as systemd reads them.
mkdir "$tmp/units"
cp contrib/systemd/jwtguard.socket "$tmp/units/"
sed "s|/usr/local/bin/jwtguard|$bin|" contrib/systemd/jwtguard.service >"$tmp/units/jwtguard.service"
cp contrib/systemd/jwtguard-jwks.service contrib/systemd/jwtguard-jwks.timer "$tmp/units/"
systemd-analyze verify "$tmp/units/jwtguard.socket" "$tmp/units/jwtguard.service" \
  "$tmp/units/jwtguard-jwks.service" "$tmp/units/jwtguard-jwks.timer" \
  >"$tmp/verify" 2>&1 || { cat "$tmp/verify" >&2; fail "systemd-analyze verify failed"; }
# verify exits 0 on warnings too: there must be none about our units.
if grep -q jwtguard "$tmp/verify"; then cat "$tmp/verify" >&2; fail "systemd-analyze warns"; fi
echo "systemd.sh: systemd-analyze verify: the units are clean"

# 2. Socket activation: the socket is systemd-socket-activate's, passed as descriptor 3.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
systemd-socket-activate -l "127.0.0.1:$port" -E JWTGUARD_SECRET \
  "$bin" serve --log-file "$tmp/activated.log" >"$tmp/out" 2>"$tmp/err" &
pid=$!
url=http://127.0.0.1:$port
# Until systemd-socket-activate listens, a connection is refused (curl's exit 7 under load).
hex=$(printf '%04X' "$port")
for _ in $(seq 200); do grep -q ":$hex 00000000:0000 0A" /proc/net/tcp && break; sleep 0.05; done
# systemd-socket-activate starts jwtguard at the first connection.
got=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url/api/x")
[ "$got" = 200 ] || { cat "$tmp/err" >&2; fail "activated: $got"; }
for _ in $(seq 100); do [ -n "$(cat /proc/"$pid"/task/*/children)" ] && break; sleep 0.05; done
worker=$(cat /proc/"$pid"/task/*/children)
[ -n "$worker" ] || fail "no worker under the activated supervisor"
kill -KILL "$worker"
got=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url/api/x")
[ "$got" = 200 ] || fail "after the worker was killed: $got"
# The supervisor's events are written by a thread of their own: give it a moment.
for _ in $(seq 100); do grep -q '"event.action":"restart"' "$tmp/activated.log" && break; sleep 0.05; done
grep -q '"event.action":"restart"' "$tmp/activated.log" || fail "no restart event"
kill -TERM "$pid"
wait "$pid" || fail "the activated supervisor did not exit 0"
pid=
echo "systemd.sh: socket activation: served on the passed socket, and after a worker's death"

# 3. sd_notify, on a socket of our own.
python3 - "$tmp/notify" >"$tmp/notified" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
start = time.monotonic()
while True:
    try:
        message = s.recv(4096).decode()
    except socket.timeout:
        break
    print(f"{time.monotonic() - start:.3f} {message!r}", flush=True)
    if "STOPPING=1" in message:
        break
PY
listener=$!
for _ in $(seq 100); do [ -S "$tmp/notify" ] && break; sleep 0.05; done
NOTIFY_SOCKET=$tmp/notify "$bin" serve --listen 127.0.0.1:0 --log-file "$tmp/notify.log" \
  >"$tmp/out2" 2>"$tmp/err2" &
pid=$!
wait_for() { # wait_for PATTERN: in what the listener got, 10 s at most
  for _ in $(seq 200); do grep -q "$1" "$tmp/notified" && return 0; sleep 0.05; done
  cat "$tmp/notified" >&2
  fail "no $1 on NOTIFY_SOCKET"
}
wait_for "READY=1"
wait_for "WATCHDOG=1"
kill -HUP "$pid"
wait_for "RELOADING=1"
[ "$(grep -c 'READY=1' "$tmp/notified")" -ge 1 ] || fail "no READY=1"
for _ in $(seq 200); do [ "$(grep -c "'READY=1'" "$tmp/notified")" -ge 2 ] && break; sleep 0.05; done
[ "$(grep -c "'READY=1'" "$tmp/notified")" -ge 2 ] || { cat "$tmp/notified" >&2; fail "no READY=1 after the reload"; }
kill -TERM "$pid"
wait "$pid" || fail "the supervisor did not exit 0"
pid=
wait_for "STOPPING=1"
wait "$listener" || true
echo "systemd.sh: sd_notify: READY=1, WATCHDOG=1, RELOADING=1 and READY=1 around a reload, STOPPING=1: ok"
