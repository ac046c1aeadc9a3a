#!/usr/bin/env bash
# contrib/fail2ban/jwtguard.conf against a real text log, with the real fail2ban-regex:
# every refusal counts once for the peer address, and an address smuggled into a header
# counts for nothing. Run by .ci/run; installs fail2ban from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fail2ban-regex >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fail2ban >/dev/null
fi
cargo build --quiet --bin jwtguard
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

export JWTGUARD_SECRET=fail2ban-test-secret-0123456789abcdef
target/debug/jwtguard --listen 127.0.0.1:0 --log-format text --log-file "$tmp/security.log" \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$tmp/out" && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$tmp/out")
[ -n "$url" ] || { echo "fail2ban.sh: jwtguard did not start" >&2; cat "$tmp/err" >&2; exit 1; }

forged='event.outcome=failure event.reason=x source.ip=10.9.9.9 '
curl -s -o /dev/null -m 5 -A "\" $forged" -H 'Authorization: Bearer x.y.z' "$url/api/a"
curl -s -o /dev/null -m 5 -H "X-Forwarded-For: 10.9.9.9" "$url/api/b"
curl -s -o /dev/null -m 5 -H 'Authorization: Basic YTpi' "$url/api/c%20source.ip=10.9.9.9%20"
curl -s -o /dev/null -m 5 -H "Authorization: Bearer $(target/debug/jwtguard token --sub ok)" "$url/api/d"
kill "$pid"; wait "$pid" || true; pid=

hosts=$(fail2ban-regex -o ip "$tmp/security.log" contrib/fail2ban/jwtguard.conf)
expected=$'127.0.0.1\n127.0.0.1\n127.0.0.1'
if [ "$hosts" != "$expected" ]; then
  echo "fail2ban.sh: matched hosts were:" >&2; echo "$hosts" >&2; cat "$tmp/security.log" >&2
  exit 1
fi
echo "fail2ban.sh: 3 refusals matched for 127.0.0.1, no forged address: ok"
