#!/usr/bin/env bash
# The security log's destination failing under a running server, with real file systems:
#  1. a full device (a small tmpfs, filled): protected requests get 503, /healthz says the
#     log is failing, stderr says so once, the file holds only whole lines (none torn),
#     one per request answered otherwise; room again (the tmpfs grown): served again;
#  2. the log file replaced by a directory (it cannot be reopened): 503 until it can;
#  3. the log file deleted: a new one at once, mode 0600, no request refused;
#  4. an unwritable --log-file at start-up: a clear error and exit 1.
# Run by .ci/run. Needs root (it mounts a tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/server.sh
. tests/server.sh
need curl curl
mnt="$tmp/mnt"
mkdir -p "$mnt"
mount -t tmpfs -o size=64k tmpfs "$mnt" || { echo "sink_faults.sh: cannot mount a tmpfs (run as root)" >&2; exit 1; }
unmount() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; umount "$mnt" 2>/dev/null || true; cleanup; }
trap unmount EXIT

log="$mnt/security.log"
start_jwtguard sink_faults --log-format text --log-file "$log"
token=$(target/debug/jwtguard token --sub alice)
fail() { echo "sink_faults.sh: $*" >&2; echo "--- stderr:" >&2; cat "$tmp/err" >&2; exit 1; }
code() { curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Authorization: Bearer $token" "$url$1"; }
health() { curl -s -m 5 "$url/healthz"; }
# whole FILE: every line ends with the closing quote of its message field.
whole() { ! grep -qv ' message="[^"]*"$' "$1"; }

# 1. A full device. Fill it up to about 1 KiB of room, then make requests until one fails.
dd if=/dev/zero of="$mnt/filler" bs=1k count=$(( $(df -k --output=avail "$mnt" | tail -1) - 1 )) 2>/dev/null || true
served=0 refused=0
for _ in $(seq 40); do
  case $(code /api/full) in
    200) served=$((served + 1)) ;;
    503) refused=$((refused + 1)) ;;
    *) fail "unexpected status" ;;
  esac
done
[ "$refused" -gt 0 ] || fail "the device never filled ($served served)"
[ "$(health)" = '{"status":"unavailable","log":"failing","accepting":true}' ] || fail "/healthz: $(health)"
grep -q "cannot write the security log to $log" "$tmp/err" || fail "no report on stderr"
whole "$log" || { cat "$log" >&2; fail "a torn line is left in the log"; }
lines=$(grep -c 'url.path="/api/full"' "$log" || true)
[ "$lines" = "$served" ] || fail "$lines lines for $served requests served"
# Room again: the next request is served and logged.
mount -o remount,size=1m "$mnt"
[ "$(code /api/again)" = 200 ] || fail "not served again with room"
[ "$(health)" = '{"status":"ok","log":"ok","accepting":true}' ] || fail "/healthz after recovery: $(health)"
grep -q "is writable again" "$tmp/err" || fail "no recovery report on stderr"
whole "$log" || fail "a torn line after recovery"
echo "sink_faults.sh: full device: $served served and logged, $refused refused with 503, no torn line, recovered: ok"

# 2. The file replaced by a directory: it cannot be reopened.
rm "$log"
mkdir "$log"
[ "$(code /api/dir)" = 503 ] || fail "served while the log cannot be opened"
[ "$(health)" = '{"status":"unavailable","log":"failing","accepting":true}' ] || fail "/healthz: $(health)"
rmdir "$log"
[ "$(code /api/back)" = 200 ] || fail "not served once the log can be opened"
grep -q 'url.path="/api/back"' "$log" || fail "no event in the new file"
echo "sink_faults.sh: log path unusable: 503 until it is usable, then served: ok"

# 3. The file deleted: a new one, mode 0600, at once.
rm "$log"
[ "$(code /api/deleted)" = 200 ] || fail "a request refused after the file was deleted"
[ "$(stat -c %a "$log")" = 600 ] || fail "the new file is mode $(stat -c %a "$log")"
grep -q 'url.path="/api/deleted"' "$log" || fail "the event is not in the new file"
echo "sink_faults.sh: log deleted: a new file at once, mode 0600, nothing refused: ok"

# 4. An unwritable log file at start-up.
set +e
out=$(JWTGUARD_SECRET=x-test-secret-0123456789abcdef0123456789 target/debug/jwtguard --listen 127.0.0.1:0 --log-file "$tmp/missing/dir/security.log" 2>&1 >/dev/null)
status=$?
set -e
[ "$status" = 1 ] || fail "exit $status for an unwritable log file"
grep -q "cannot open the log file $tmp/missing/dir/security.log" <<<"$out" || fail "unclear error: $out"
echo "sink_faults.sh: unwritable log at start-up: exit 1, \"$out\": ok"
