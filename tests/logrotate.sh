#!/usr/bin/env bash
# contrib/logrotate/jwtguard with the real logrotate against a running jwtguard: after
# copytruncate, events go on into the fresh file from its start (O_APPEND), nothing is
# lost across the rotation, and every line is still one JSON object. Run by .ci/run;
# installs logrotate from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/server.sh
. tests/server.sh
need logrotate logrotate
log="$tmp/security.log"
start_jwtguard logrotate --log-file "$log"

hit() { curl -s -o /dev/null -m 5 "$url/api/$1"; }
for i in 1 2 3; do hit "before-$i"; done

# The shipped configuration, pointed at the test's file; no compression, to read it back.
sed -e "s#/var/log/jwtguard/security.log#$log#" -e '/compress/d' \
  contrib/logrotate/jwtguard >"$tmp/logrotate.conf"
logrotate --force --state "$tmp/state" "$tmp/logrotate.conf"

for i in 1 2; do hit "after-$i"; done
kill "$pid"; wait "$pid" || true; pid=

fail() { echo "logrotate.sh: $*" >&2; ls -l "$tmp" >&2; exit 1; }
[ -f "$log.1" ] || fail "no rotated file $log.1"
python3 - "$log.1" "$log" <<'PY' || fail "unexpected log contents"
import json, sys
old = [json.loads(l) for l in open(sys.argv[1])]   # every line one JSON object
new = [json.loads(l) for l in open(sys.argv[2])]
paths = lambda events: [e["url.path"] for e in events if e.get("event.action") == "authorize"]
assert paths(old) == ["/api/before-1", "/api/before-2", "/api/before-3"], paths(old)
assert paths(new) == ["/api/after-1", "/api/after-2"], paths(new)
assert new[-1]["event.action"] == "shutdown"
# O_APPEND: the fresh file starts with an event, not with a hole of NUL bytes.
assert open(sys.argv[2], "rb").read(1) == b"{"
PY
echo "logrotate.sh: copytruncate rotation kept every event, one JSON line each: ok"
