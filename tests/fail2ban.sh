#!/usr/bin/env bash
# contrib/fail2ban/jwtguard.conf against a real text log, with the real fail2ban-regex:
# every refusal counts once for the peer address, and an address smuggled into a header
# counts for nothing. Run by .ci/run; installs fail2ban from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/server.sh
. tests/server.sh
need fail2ban-regex fail2ban
start_jwtguard fail2ban --log-format text --log-file "$tmp/security.log"

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
