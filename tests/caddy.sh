#!/usr/bin/env bash
# examples/Caddyfile as written (its ports templated, bound to loopback, the admin API
# off), with Debian's Caddy in the foreground on its own scratch configuration: Caddy's
# forward_auth asks `jwtguard --forward-auth /auth`, and proxies what it allows to
# examples/flask_app.py (Flask from PyPI, in a venv) with the user in X-Auth-User. Asserts
# with curl who reaches the app and as whom, what is refused and never reaches it, and what
# jwtguard's log says about the original request, through the headers Caddy sends itself
# (X-Forwarded-Method, -Uri, -For). A second copy of the site asks a jwtguard without
# --trusted-proxy, which believes none of them.
# Run by .ci/run; installs caddy (without starting its service), python3-venv and jq when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
script=caddy.sh

# shellcheck source=tests/server.sh
. tests/server.sh
# shellcheck source=tests/apps.sh
. tests/apps.sh
need_service caddy caddy

start_flask
untrusted_log=$tmp/untrusted.log
start_jwtguard caddy --forward-auth /auth --public /public --require /api/admin=admin \
  --log-file "$untrusted_log"
untrusted=${url#http://}
start_another_jwtguard caddy --forward-auth /auth --trusted-proxy 127.0.0.1 --public /public \
  --require /api/admin=admin --log-file "$log"
jwtguard=${url#http://}

# site PORT JWTGUARD: examples/Caddyfile's site on 127.0.0.1:PORT, asking JWTGUARD.
site() {
  sed -e "s|^:8080 {|:$1 {\n\tbind 127.0.0.1|" -e "s|127\.0\.0\.1:9090|$2|" \
    -e "s|127\.0\.0\.1:5000|${app#http://}|" examples/Caddyfile
}
if ! grep -q '^:8080 {' examples/Caddyfile || ! grep -q 127.0.0.1:9090 examples/Caddyfile ||
  ! grep -q 127.0.0.1:5000 examples/Caddyfile; then
  fail 'examples/Caddyfile: a port to template is gone'
fi

# run_caddy PORT: Caddy in the foreground, everything it writes under $tmp/caddy: the
# example on PORT, asking the trusting jwtguard, and on another free port (in
# $tmp/caddy/untrusted.port) asking the other one.
mkdir -p "$tmp/caddy"
run_caddy() {
  local c=$tmp/caddy other
  other=$(free_port)
  echo "$other" >"$c/untrusted.port"
  {
    printf '{\n\tadmin off\n}\n'
    site "$1" "$jwtguard"
    site "$other" "$untrusted"
  } >"$c/Caddyfile"
  export HOME=$c XDG_DATA_HOME=$c/data XDG_CONFIG_HOME=$c/config
  exec caddy run --adapter caddyfile --config "$c/Caddyfile"
}
start_on_free_port caddy "$tmp/caddy.err" /public/hello run_caddy
front=http://127.0.0.1:$port
untrusted_front=http://127.0.0.1:$(cat "$tmp/caddy/untrusted.port")

jwt() { target/debug/jwtguard token "$@"; }
alice=$(jwt --sub alice --claim scope=read)
admin=$(jwt --sub root --claim scope="read admin")
expired=$(jwt --sub alice --claim exp=1)
forged=$(JWTGUARD_SECRET=not-the-secret-but-32-bytes-long-0123 jwt --sub alice)

# 1. A valid token reaches the app, which sees its user; the log has the client's address
# (curl binds 127.0.0.2, Caddy connects from 127.0.0.1).
req valid 200 -H "Authorization: Bearer $alice" "$front/api/protected?t=valid"
reached valid
check 'app sees X-Auth-User' "$(body valid .user)" alice
check 'valid: event' "$(event valid '[."event.action", ."event.reason", ."user.id", ."source.ip",
  ."client.ip", ."http.request.method", ."url.path"] | join(" ")')" \
  "authorize ok alice 127.0.0.1 $client GET /api/protected"

# 2. No token, a forged signature, an expired token: 401 with jwtguard's challenge (Caddy
# passes on the whole answer), never the app.
for case in missing:missing_token bad:bad_signature expired:expired; do
  name=${case%%:*}
  case $name in
  missing) auth=() ;;
  bad) auth=(-H "Authorization: Bearer $forged") ;;
  expired) auth=(-H "Authorization: Bearer $expired") ;;
  esac
  req "$name" 401 "${auth[@]}" "$front/api/protected?t=$name"
  not_reached "$name"
  check "$name: challenge" "$(header "$name" WWW-Authenticate | cut -c1-23)" \
    'Bearer realm="jwtguard"'
  check "$name: reason" "$(event "$name" '."event.reason"')" "${case#*:}"
done

# A malformed Authorization header: 401 invalid_request, never 400 (which it is without
# a proxy).
req malformed 401 -H 'Authorization: Bearer a b' "$front/api/protected?t=malformed"
not_reached malformed
check 'malformed: event' "$(event malformed '."event.reason"')" invalid_request

# A public prefix climbed out of is not public: the decision is on the normalised path.
req dotdot 401 --path-as-is "$front/public/../api/admin/stats?t=dotdot"
not_reached dotdot
check 'dotdot: logged' "$(event dotdot '."url.path" + " " + ."event.reason"')" \
  '/api/admin/stats missing_token'

# 3. A token without the admin scope on /api/admin: 403 (with jwtguard's challenge, which
# Caddy passes on); with it, 200.
req noscope 403 -H "Authorization: Bearer $alice" "$front/api/admin/stats?t=noscope"
not_reached noscope
check 'noscope: reason' "$(event noscope '."event.reason" + " " + ."url.path"')" \
  'insufficient_scope /api/admin/stats'
check 'noscope: challenge' "$(header noscope WWW-Authenticate)" \
  'Bearer realm="jwtguard", error="insufficient_scope", scope="admin"'
req scope 200 -H "Authorization: Bearer $admin" "$front/api/admin/stats?t=scope"
reached scope
check 'scope: user' "$(body scope .user)" root

# 4. A client's own X-Auth-User never reaches the app as such: with a token for another
# user, the token's user; on a public path without a token, none (an empty one: jwtguard
# answers it empty, and Caddy 2.6 copies that). Nor does a client's own X-Original-URI
# decide (the Caddyfile removes it: jwtguard would read it before Caddy's X-Forwarded-Uri),
# nor X-Forwarded-Uri (Caddy replaces it), nor X-Original-Method (what is logged).
req forged-user 200 -H "Authorization: Bearer $alice" -H 'X-Auth-User: admin' \
  "$front/api/protected?t=forged-user"
check 'forged X-Auth-User, with a token' "$(body forged-user .user)" alice
req forged-public 200 -H 'X-Auth-User: admin' "$front/public/hello?t=forged-public"
check 'forged X-Auth-User, public path' \
  "$(body forged-public '.hello + " [" + (.user // "") + "]"')" 'world []'
for h in X-Original-URI X-Forwarded-Uri; do
  req "forged-$h" 401 -H "$h: /public/x" "$front/api/admin/stats?t=forged-$h"
  not_reached "forged-$h"
  check "forged $h: logged" "$(event "forged-$h" '."url.path"')" /api/admin/stats
done
req forged-method 401 -H 'X-Original-Method: GET' -H "Authorization: Bearer $forged" \
  --data-binary '{}' "$front/api/orders?t=forged-method"
check 'forged X-Original-Method: logged' "$(event forged-method '."http.request.method"')" POST

# 5. The original method and path (not the subrequest's GET /auth), without the query, and
# the client's address, not the one it forged in X-Forwarded-For; the body reaches the app.
order='{"item":"book","qty":2}'
req post 200 -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  -H 'X-Forwarded-For: 6.6.6.6' --data-binary "$order" "$front/api/orders?x=1&t=post"
reached post
check 'post: event' "$(event post '[."http.request.method", ."url.path", ."client.ip",
  ."source.ip"] | join(" ")')" "POST /api/orders $client 127.0.0.1"
check 'post: body' "$(body post '.method + " " + (.order | tojson)')" "POST $order"

# 6. Public paths need no token, and write no event.
req public 200 "$front/public/hello?t=public"
reached public
check 'public: no event' "$(wc -l <"$tmp/public.ev")" 0

# Without --trusted-proxy, jwtguard believes none of Caddy's headers: the event is the
# subrequest's own GET /auth, with no client.ip.
log=$untrusted_log
req untrusted 200 -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  --data-binary "$order" "$untrusted_front/api/orders?x=1&t=untrusted"
check 'untrusted: event' "$(event untrusted '[."http.request.method", ."url.path", ."source.ip",
  ."client.ip" // "-"] | join(" ")')" 'GET /auth 127.0.0.1 -'

not_reached missing && not_reached bad && not_reached expired && not_reached noscope
not_reached dotdot && not_reached malformed
not_reached forged-X-Original-URI && not_reached forged-X-Forwarded-Uri
finish
