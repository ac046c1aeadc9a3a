#!/usr/bin/env bash
# What an attacking connection costs jwtguard where tiny_http 0.12 leaves no in-process
# fix: for each attack, N connections against a fresh release server, and the server's
# open descriptors, threads and resident memory before, during, and after the clients
# close. Also the stall one client that never reads costs everyone else. README,
# Security, reports these figures.
#
#   bench/bounds.sh          # N=200 connections per attack
#   BOUNDS_N=500 bench/bounds.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${BOUNDS_N:-200}
# shellcheck source=bench/lib.sh
. bench/lib.sh # serving

cargo build --release --quiet --bin jwtguard
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jwtguard-bounds.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
export JWTGUARD_SECRET=bounds-secret-0123456789abcdef0123456789

start() {
  target/release/jwtguard --listen 127.0.0.1:0 --log-file "$TMP/security.log" >"$TMP/out" 2>"$TMP/err" &
  PID=$!
  for _ in $(seq 100); do grep -qs '^listening on' "$TMP/out" && break; sleep 0.02; done
  PORT=$(sed -n 's/^listening on http:\/\/127.0.0.1://p' "$TMP/out")
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
usage() { # fds threads rss_kib of the process that serves (the supervisor's worker)
  local p
  p=$(serving "$PID")
  printf '%s %s %s' "$(ls "/proc/$p/fd" | wc -l)" "$(ls "/proc/$p/task" | wc -l)" \
    "$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status")"
}

# attack NAME PAYLOAD: N connections each send PAYLOAD (python escapes) and stay open;
# usage is read with them open, then 2 s after they close.
attack() {
  local name=$1 payload=$2
  start
  read -r f0 t0 r0 <<<"$(usage)"
  python3 - "$PORT" "$N" "$payload" "$TMP/ready" "$TMP/go" <<'PY' &
import os, socket, sys, time
port, n, payload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if payload:
        s.sendall(payload)
    socks.append(s)
open(sys.argv[4], "w").close()
while not os.path.exists(sys.argv[5]):
    time.sleep(0.05)
for s in socks:
    s.close()
PY
  local client=$!
  for _ in $(seq 400); do [ -e "$TMP/ready" ] && break; sleep 0.05; done
  sleep 1 # let the server take what was sent
  read -r f1 t1 r1 <<<"$(usage)"
  touch "$TMP/go"
  wait "$client"
  sleep 2
  read -r f2 t2 r2 <<<"$(usage)"
  local alive=yes
  curl -s -o /dev/null -m 5 "http://127.0.0.1:$PORT/healthz" || alive=no
  printf '%-34s %6s %6s %8s   %6s %6s %8s   %s\n' "$name" \
    "$(awk -v a="$f1" -v b="$f0" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')" \
    "$(awk -v a="$t1" -v b="$t0" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')" \
    "$(awk -v a="$r1" -v b="$r0" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }')" \
    "$(awk -v a="$f2" -v b="$f0" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')" \
    "$(awk -v a="$t2" -v b="$t0" -v n="$N" 'BEGIN { printf "%.2f", (a - b) / n }')" \
    "$(awk -v a="$r2" -v b="$r0" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }')" "$alive"
  rm -f "$TMP/ready" "$TMP/go"
  stop
}

echo "== $N connections per attack; per connection: descriptors, threads, RSS KiB"
printf '%-34s %22s   %22s   %s\n' "" "while open" "2 s after they close" "serving"
printf '%-34s %6s %6s %8s   %6s %6s %8s\n' "attack" fds thr KiB fds thr KiB
attack "idle connection (no bytes)" ""
attack "half a request line" "GET /api/x HTT"
attack "HTTP/2.0 request line" 'GET / HTTP/2.0\r\nHost: x\r\n\r\n'
attack "body announced, never sent (1 MB)" 'POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n'
attack "body announced, never sent (16 MiB)" 'POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n'
attack "body over 16 MiB (answered 413)" 'POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n'

# A header line without end: tiny_http keeps all of it in memory.
start
read -r _ _ r0 <<<"$(usage)"
python3 - "$PORT" "$TMP/ready" "$TMP/go" <<'PY' &
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /api/x HTTP/1.1\r\nX: ")
for _ in range(160):   # 10 MiB
    s.sendall(b"a" * 65536)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
PY
client=$!
for _ in $(seq 400); do [ -e "$TMP/ready" ] && break; sleep 0.05; done
sleep 2 # tiny_http reads it a byte at a time
read -r _ _ r1 <<<"$(usage)"
touch "$TMP/go"; wait "$client"; rm -f "$TMP/ready" "$TMP/go"
echo "a 10 MiB header line (no end): RSS +$(( (r1 - r0) / 1024 )) MiB while the connection lasts"
stop

# The stall: a client that pipelines and never reads; how long others wait.
start
python3 - "$PORT" <<'PY'
import http.client, socket, sys, threading, time
port = int(sys.argv[1])
a = socket.socket(); a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
a.connect(("127.0.0.1", port))
threading.Thread(target=lambda: a.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 90000), daemon=True).start()
worst, n, end = 0.0, 0, time.time() + 3
while time.time() < end:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    t = time.time(); c.request("GET", "/healthz"); c.getresponse().read(); worst = max(worst, time.time() - t); n += 1
    c.close()
print(f"a client that never reads: others' worst latency over {n} requests in 3 s: {worst * 1000:.1f} ms")
PY
grep -c client_not_reading "$TMP/security.log" | sed 's/^/  client_not_reading events: /'
stop
