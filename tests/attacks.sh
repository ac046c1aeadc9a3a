#!/usr/bin/env bash
# shellcheck disable=SC2154 # $tmp comes from tests/server.sh
# Attacks on the connection and the process, each against a fresh, supervised release
# jwtguard while a client polls a protected path every 50 ms on a new connection
# (tests/attacks.py): a flood of huge Content-Length bodies and HTTP/2.0 request lines with
# the server's hard limit on open files at 512 (tiny_http leaked descriptors and a thread
# on each until its worker was replaced; serve mode's loop answers and closes them, with
# no restart), 2000 idle connections (past --max-connections the longest idle ones make
# room), a client that pipelines and never reads, a wedged worker (SIGSTOP), a killed
# worker (SIGKILL). Each must end with no refused connection, no failed request after the
# first recovery, and a whole log with every answer in it; a killed worker is replaced
# within 100 ms.
#
#   bash tests/attacks.sh                  # all, about a minute
#   bash tests/attacks.sh wedged_worker    # some
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/server.sh
. tests/server.sh # need, $tmp, $pid (stopped on exit)
need python3 python3
cargo build --release --quiet --bin jwtguard
export JWTGUARD_SECRET=attacks-test-secret-0123456789abcdef
TOKEN=$(target/release/jwtguard token --sub poller --ttl 600)

attacks=("$@")
if [ ${#attacks[@]} = 0 ]; then
  attacks=(content_length_flood http2_lines idle_connections pipeline_no_read wedged_worker
    sigkill_worker)
fi

failed=0
for attack in "${attacks[@]}"; do
  log=$tmp/$attack.log
  rm -f "$tmp/out"
  # The descriptor floods run with a low hard limit, so that they reach it within seconds.
  limit=unlimited
  case $attack in content_length_flood | http2_lines) limit=512 ;; esac
  (
    if [ "$limit" != unlimited ]; then ulimit -n "$limit"; fi
    exec target/release/jwtguard --listen 127.0.0.1:0 --log-file "$log"
  ) >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 100); do grep -qs '^listening on' "$tmp/out" && break; sleep 0.05; done
  url=$(sed -n 's/^listening on //p' "$tmp/out")
  [ -n "$url" ] || { echo "attacks.sh: jwtguard did not start" >&2; cat "$tmp/err" >&2; exit 1; }
  if python3 tests/attacks.py "$attack" "$url" "$TOKEN" "$pid" "$log" >"$tmp/result"; then
    verdict=ok
  else
    verdict=FAIL
    failed=1
  fi
  kill -TERM "$pid"
  wait "$pid" || { echo "attacks.sh: $attack: the supervisor did not exit 0" >&2; failed=1; }
  pid=
  echo "$verdict $(cat "$tmp/result")"
done
[ "$failed" = 0 ] || { echo "attacks.sh: FAILED" >&2; exit 1; }
echo "attacks.sh: every attack: no refused connection, no failed request after the first recovery, the log whole: ok"
