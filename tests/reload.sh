#!/usr/bin/env bash
# shellcheck disable=SC2154 # $tmp comes from tests/server.sh
# Reload under load: wrk keeps 32 connections busy on a protected path of a supervised
# release jwtguard for RELOAD_SECONDS (10) while it gets a SIGHUP every 0.5 s, half of
# them with a changed --config file. No request may fail (wrk: no socket error, no
# non-2xx), each reload must be a `reload` event per worker followed by the old worker's
# `drained` shutdown, the log whole, and every answered request in it. Two rounds: one
# worker, then --workers 2 (a reload replaces each worker in turn).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/server.sh
. tests/server.sh # need, $tmp, $pid (stopped on exit)
need wrk wrk
need python3 python3
SECONDS_RUN=${RELOAD_SECONDS:-10}
cargo build --release --quiet --bin jwtguard
export JWTGUARD_SECRET=reload-test-secret-0123456789abcdef
TOKEN=$(target/release/jwtguard token --sub loaded --ttl 600)
log=$tmp/security.log
conf=$tmp/jwtguard.conf

round() {
local workers=$1
rm -f "$log" "$tmp/out" "$tmp/err" "$tmp/wrk"
printf 'protect /api/\nworkers %s\n' "$workers" >"$conf"

target/release/jwtguard --listen 127.0.0.1:0 --config "$conf" --log-file "$log" \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -qs '^listening on' "$tmp/out" && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$tmp/out")
[ -n "$url" ] || { echo "reload.sh: jwtguard did not start" >&2; cat "$tmp/err" >&2; exit 1; }
until curl -s -o /dev/null "$url/healthz"; do sleep 0.05; done

wrk -t2 -c32 -d"${SECONDS_RUN}s" -H "Authorization: Bearer $TOKEN" "$url/api/x" >"$tmp/wrk" &
load=$!
sleep 1
reloads=0
while kill -0 "$load" 2>/dev/null; do
  reloads=$((reloads + 1))
  if ((reloads % 2)); then
    printf 'protect /api/\nprotect /r%s/\nworkers %s\n' "$reloads" "$workers" >"$conf"
  fi
  kill -HUP "$pid"
  sleep 0.5
  if ((reloads >= 2 * (SECONDS_RUN - 2))); then break; fi
done
wait "$load"
sleep 1
kill -TERM "$pid"
wait "$pid"
pid=

cat "$tmp/wrk"
python3 - "$log" "$tmp/wrk" "$reloads" "$workers" <<'PY'
import json, re, sys
log, wrk, sent, workers = sys.argv[1], open(sys.argv[2]).read(), int(sys.argv[3]), int(sys.argv[4])
fail = []
requests = int(re.search(r"(\d+) requests in", wrk).group(1))
if "Socket errors" in wrk:
    fail.append("wrk: " + re.search(r"Socket errors:.*", wrk).group(0))
if "Non-2xx" in wrk:
    fail.append("wrk: " + re.search(r"Non-2xx.*", wrk).group(0))
data = open(log, "rb").read()
if not data.endswith(b"\n"):
    fail.append("the log ends with a torn line")
events = []
for i, line in enumerate(data.split(b"\n")[:-1], 1):
    try:
        events.append(json.loads(line))
    except ValueError:
        fail.append(f"line {i} is not JSON: {line[:80]!r}")
actions = [e.get("event.action") for e in events]
reloaded = sum(1 for e in events if e.get("event.action") == "reload" and e["event.outcome"] == "success")
drained = sum(1 for e in events if e.get("event.action") == "shutdown" and e.get("event.reason") == "drained")
authorized = [e for e in events if e.get("event.action") == "authorize"]
ids = [e["http.request.id"] for e in authorized]
if len(ids) != len(set(ids)):
    fail.append("a request id twice")
# wrk does not count the requests in flight when it stops: at most one per connection.
if not 0 <= len(authorized) - requests <= 32:
    fail.append(f"{len(authorized)} events for {requests} requests")
# A SIGHUP that comes while a new worker starts waits for it: some reloads merge. Each
# reload is an event per worker.
if not (sent // 2 * workers <= reloaded <= sent * workers):
    fail.append(f"{reloaded} reloads for {sent} SIGHUPs and {workers} workers")
if drained != reloaded:
    fail.append(f"{drained} drained workers for {reloaded} reloads")
if any(e.get("event.action") in ("restart", "replace") for e in events):
    fail.append("a restart or replacement: " + str([e["message"] for e in events if e.get("event.action") in ("restart", "replace")]))
print(f"reload.sh: {workers} worker(s), {requests} requests, {reloaded} reloads ({sent} SIGHUPs), {drained} workers drained, {len(authorized)} events")
if fail:
    print("reload.sh: FAILED:", *fail, sep="\n  ")
    sys.exit(1)
print("reload.sh: no failed request, every reload a handover, the log whole: ok")
PY
}

round 1
round 2
