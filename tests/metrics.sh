#!/usr/bin/env bash
# `--metrics` against Prometheus's own linter and parser: `promtool check metrics` (Debian's
# prometheus package) accepts a scrape taken after real traffic (allowed, refused, the
# limiter's 429s), and the scrape's counters are what curl sent. Run by .ci/run; installs
# prometheus (for promtool) and curl from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/server.sh
. tests/server.sh
need promtool prometheus
need curl curl

fail() { echo "metrics.sh: $*" >&2; cat "$tmp/scrape" >&2 || true; exit 1; }

start_jwtguard metrics --no-supervisor --metrics 127.0.0.1:0 --max-failures 2 \
  --log-file "$tmp/security.log"
for _ in $(seq 100); do grep -qs '^metrics on' "$tmp/out" && break; sleep 0.05; done
metrics=$(sed -n 's/^metrics on //p' "$tmp/out")
[ -n "$metrics" ] || fail "no metrics address printed"

good=$(target/debug/jwtguard token --sub alice)
# The same token with the signature's first character changed: bad_signature.
sig=${good##*.}
if [ "${sig:0:1}" = A ]; then c=B; else c=A; fi
forged=${good%.*}.$c${sig:1}
req() { # req STATUS CURL_ARGS...
  local want=$1 got
  shift
  got=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$@" "$url/api/x")
  [ "$got" = "$want" ] || fail "got $got, not $want"
}
for _ in 1 2 3; do req 200 -H "Authorization: Bearer $good"; done
req 401
req 401 -H "Authorization: Bearer x.y.z"
req 401 -H "Authorization: Bearer $forged"
for _ in 1 2; do req 429 -H "Authorization: Bearer $good"; done

curl -sf -m 5 "$metrics" >"$tmp/scrape" || fail "scrape failed"
promtool check metrics <"$tmp/scrape" >"$tmp/lint" 2>&1 || { cat "$tmp/lint" >&2; fail "promtool refused the scrape"; }
[ ! -s "$tmp/lint" ] || { cat "$tmp/lint" >&2; fail "promtool found problems"; }

value() { # value 'NAME{LABELS}': its sample's value
  awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print "missing" }' "$tmp/scrape"
}
expect() { # expect 'NAME{LABELS}' VALUE
  local got
  got=$(value "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, not $2"
}
d=jwtguard_decisions_total
expect "$d{outcome=\"allowed\",reason=\"ok\"}" 3
expect "$d{outcome=\"refused\",reason=\"missing_token\"}" 1
expect "$d{outcome=\"refused\",reason=\"malformed_token\"}" 1
expect "$d{outcome=\"refused\",reason=\"bad_signature\"}" 1
expect "$d{outcome=\"refused\",reason=\"rate_limited\"}" 2
expect 'jwtguard_responses_total{code="2xx"}' 3
expect 'jwtguard_responses_total{code="4xx"}' 5
expect 'jwtguard_decision_seconds_count' 8
expect 'jwtguard_log_lines_total' "$(wc -l <"$tmp/security.log")"
echo "metrics.sh: promtool accepts the scrape; its counters match the requests sent"
