#!/usr/bin/env bash
# contrib/logrotate/jwtguard (create mode) with the real logrotate against a running
# jwtguard under a steady stream of requests: every request answered has its event
# exactly once, in the rotated file or the new one; every line is whole JSON; the new
# file (created by logrotate) gets the events from a second after the rotation on. Then
# the same with --seal-key, and verify-log must find the two files one intact chain (the
# new file starts with a seal line naming the rotated file's last hash). Run by .ci/run;
# installs logrotate from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/server.sh
. tests/server.sh
need logrotate logrotate
for sealed in no yes; do # (not indented: the heredocs below end at the line's start)
log="$tmp/$sealed/security.log"
mkdir -p "$tmp/$sealed"
seal=()
if [ "$sealed" = yes ]; then
  vk=$(target/debug/jwtguard seal-init "$tmp/seal.key" 2>/dev/null)
  seal=(--seal-key "$tmp/seal.key")
fi
start_jwtguard logrotate --log-file "$log" "${seal[@]}"

# The shipped configuration, pointed at the test's file; no compression, to read it back.
sed -e "s#/var/log/jwtguard/security.log#$log#" -e '/compress/d' \
  contrib/logrotate/jwtguard >"$tmp/logrotate.conf"

# Requests for about 3 s, rotating after the first second; the client notes every answer's
# X-Request-Id.
python3 - "$url" "$tmp/answers" "$tmp/logrotate.conf" "$tmp/state" <<'PY'
import http.client, subprocess, sys, time, urllib.parse
url, answers, conf, state = sys.argv[1:5]
host = urllib.parse.urlsplit(url).netloc
conn = http.client.HTTPConnection(host, timeout=5)
ids, start, rotated = [], time.time(), False
while time.time() - start < 3:
    if not rotated and time.time() - start > 1:
        subprocess.run(["logrotate", "--force", "--state", state, conf], check=True)
        rotated = True
    conn.request("GET", "/api/r")
    response = conn.getresponse()
    response.read()
    assert response.status == 401, response.status
    ids.append(response.getheader("X-Request-Id"))
open(answers, "w").write("\n".join(ids) + "\n")
PY
kill "$pid"; wait "$pid" || true; pid=
rm -f "$tmp/state"

fail() { echo "logrotate.sh: $*" >&2; ls -l "$tmp" >&2; exit 1; }
[ -f "$log.1" ] || fail "no rotated file $log.1"
python3 - "$log.1" "$log" "$tmp/answers" <<'PY' || fail "unexpected log contents"
import json, sys
# every line one JSON object; seal lines aside
old = [e for e in map(json.loads, open(sys.argv[1])) if e["event.action"] != "seal"]
new = [e for e in map(json.loads, open(sys.argv[2])) if e["event.action"] != "seal"]
answered = open(sys.argv[3]).read().split()
logged = [e["http.request.id"] for e in old + new if e.get("event.action") == "authorize"]
assert sorted(logged) == sorted(answered), (len(logged), len(answered))
assert len(set(logged)) == len(logged), "an event twice"
moved = [e for e in new if e.get("event.action") == "authorize"]
assert moved and new[-1]["event.action"] == "shutdown", "the new file got no events"
print(f"logrotate.sh: {len(answered)} requests, {len(logged) - len(moved)} events in the rotated file, {len(moved)} in the new one")
PY
if [ "$sealed" = yes ]; then
  target/debug/jwtguard verify-log --key "$vk" "$log.1" "$log" >"$tmp/verified" ||
    { cat "$tmp/verified" >&2; fail "the sealed files do not verify"; }
  grep -q '^intact: .* in 2 files' "$tmp/verified" || fail "$(cat "$tmp/verified")"
  grep -q '"event.reason":"file"' <(head -n 1 "$log") || fail "the new file does not start with a seal line"
  echo "logrotate.sh: sealed, the rotated file and the new one verify as one chain: $(head -n 1 "$tmp/verified")"
fi
done
echo "logrotate.sh: create-mode rotation under load lost no event, doubled none, tore none, sealed or not: ok"
