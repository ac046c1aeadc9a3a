#!/usr/bin/env bash
# examples/tiny_http_loop.rs, the library in a plain tiny_http loop, against curl on a
# free loopback port: a valid token gets 200 and its user, no token and a forged one 401;
# each request leaves exactly its one event on stderr, and neither token nor secret ever
# appears there. Run by .ci/run; installs curl and jq when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
script=tiny_http_example.sh

# shellcheck source=tests/server.sh
. tests/server.sh # need, $tmp, and $pid stopped on exit
need curl curl
need jq jq

cargo build --quiet --bin jwtguard --example tiny_http_loop
export JWTGUARD_SECRET="tiny-http-example-secret-0123456789abcdef"
valid=$(target/debug/jwtguard token --sub alice)
forged=$(JWTGUARD_SECRET=not-the-secret-but-32-bytes-long-0123 target/debug/jwtguard token --sub alice)

target/debug/examples/tiny_http_loop 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
  grep -qs '^listening on' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$tmp/out")

passed=0
fail() {
  echo "$script: FAIL: $*" >&2
  echo "--- stderr of the example:" >&2
  tail -n 20 "$tmp/err" >&2
  echo "$passed passed, 1 failed"
  exit 1
}
check() { # check WHAT GOT WANT
  [ "$2" = "$3" ] || fail "$1: got '$2', not '$3'"
  passed=$((passed + 1))
}
[ -n "$url" ] || fail "the example did not start"

# req NAME STATUS CURL_ARGS...: one request; its body in $tmp/NAME.b and the stderr lines
# it added in $tmp/NAME.ev. The guard answers only once its event is written, so the line
# is there when curl returns.
req() {
  local name=$1 want=$2 before got
  shift 2
  before=$(wc -l <"$tmp/err")
  got=$(curl -s -m 10 -o "$tmp/$name.b" -w '%{http_code}' "$@" "$url/api/protected") || true
  tail -n +"$((before + 1))" "$tmp/err" >"$tmp/$name.ev"
  check "$name: status" "$got" "$want"
  check "$name: events on stderr" "$(wc -l <"$tmp/$name.ev")" 1
}
event() { jq -r "$2" "$tmp/$1.ev"; }

req valid 200 -H "Authorization: Bearer $valid"
check 'valid: body' "$(jq -c . "$tmp/valid.b")" '{"status":"ok","user":"alice"}'
check 'valid: event' "$(event valid '[."event.outcome", ."event.reason", ."user.id"] | join(" ")')" \
  'success ok alice'

req none 401
check 'none: event' "$(event none '[."event.outcome", ."event.reason"] | join(" ")')" \
  'failure missing_token'

req bad 401 -H "Authorization: Bearer $forged"
check 'bad: event' "$(event bad '[."event.outcome", ."event.reason"] | join(" ")')" \
  'failure bad_signature'

# Neither token, nor either signature alone, nor the secret, anywhere in stderr.
for secret in "$valid" "$forged" "${valid##*.}" "${forged##*.}" "$JWTGUARD_SECRET"; do
  if grep -qF -- "$secret" "$tmp/err"; then fail "a token or the secret is on stderr"; fi
  passed=$((passed + 1))
done

echo "$script: $SECONDS s"
echo "$passed passed, 0 failed"
