#!/usr/bin/env bash
# examples/nginx.conf as written (its ports templated), with Debian's nginx in the
# foreground on its own scratch configuration: nginx's auth_request asks
# `jwtguard --forward-auth /auth`, and proxies what it allows to examples/flask_app.py
# (Flask from PyPI, in a venv) with the user in X-Auth-User. Asserts with curl who reaches
# the app and as whom, what is refused and never reaches it, and what jwtguard's log says
# about the original request, through the headers the configuration sets. A second copy of
# the server block asks a jwtguard without --trusted-proxy, which believes none of them.
# Run by .ci/run; installs nginx (without starting its service), python3-venv and jq when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
script=nginx.sh

# shellcheck source=tests/server.sh
. tests/server.sh
# shellcheck source=tests/apps.sh
. tests/apps.sh
need_service nginx nginx

start_flask
untrusted_log=$tmp/untrusted.log
start_jwtguard nginx --forward-auth /auth --public /public --require /api/admin=admin \
  --log-file "$untrusted_log"
untrusted=${url#http://}
start_another_jwtguard nginx --forward-auth /auth --trusted-proxy 127.0.0.1 --public /public \
  --require /api/admin=admin --log-file "$log"
jwtguard=${url#http://}

# site PORT JWTGUARD: examples/nginx.conf on 127.0.0.1:PORT, asking JWTGUARD.
site() {
  sed -e "s|^\( *listen\) 127\.0\.0\.1:8080;|\1 127.0.0.1:$1;|" -e "s|127\.0\.0\.1:9090|$2|" \
    -e "s|127\.0\.0\.1:5000|${app#http://}|" examples/nginx.conf
}
if ! grep -q '^ *listen 127.0.0.1:8080;' examples/nginx.conf ||
  ! grep -q 127.0.0.1:9090 examples/nginx.conf ||
  ! grep -q 127.0.0.1:5000 examples/nginx.conf; then
  fail 'examples/nginx.conf: a port to template is gone'
fi

# run_nginx PORT: nginx in the foreground, everything it writes under $tmp/nginx: the
# example on PORT, asking the trusting jwtguard, and on another free port (in
# $tmp/nginx/untrusted.port) asking the other one.
mkdir -p "$tmp/nginx"
chmod 711 "$tmp" # nginx's workers run as nobody: they need to reach their temp dirs
run_nginx() {
  local n=$tmp/nginx other
  other=$(free_port)
  echo "$other" >"$n/untrusted.port"
  site "$1" "$jwtguard" >"$n/site.conf"
  site "$other" "$untrusted" >"$n/untrusted.conf"
  cat >"$n/nginx.conf" <<EOF
pid $n/nginx.pid;
events {}
http {
    access_log $n/access.log;
    client_body_temp_path $n/body;
    proxy_temp_path $n/proxy;
    fastcgi_temp_path $n/fastcgi;
    uwsgi_temp_path $n/uwsgi;
    scgi_temp_path $n/scgi;
    include $n/site.conf;
    include $n/untrusted.conf;
}
EOF
  exec nginx -e stderr -p "$n" -c "$n/nginx.conf" -g 'daemon off;'
}
start_on_free_port nginx "$tmp/nginx.err" /public/hello run_nginx
front=http://127.0.0.1:$port
untrusted_front=http://127.0.0.1:$(cat "$tmp/nginx/untrusted.port")

jwt() { target/debug/jwtguard token "$@"; }
alice=$(jwt --sub alice --claim scope=read)
admin=$(jwt --sub root --claim scope="read admin")
expired=$(jwt --sub alice --claim exp=1)
forged=$(JWTGUARD_SECRET=not-the-secret-but-32-bytes-long-0123 jwt --sub alice)

# 1. A valid token reaches the app, which sees its user; the log has the client's address
# (curl binds 127.0.0.2, nginx connects from 127.0.0.1).
req valid 200 -H "Authorization: Bearer $alice" "$front/api/protected?t=valid"
reached valid
# A body over nginx's default limit (1 MiB) reaches the app: the example's
# client_max_body_size, not nginx's 413.
python3 -c 'import json; print(json.dumps({"note": "a" * 2000000}))' >"$tmp/big.json"
req bigbody 200 -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  --data-binary @"$tmp/big.json" "$front/api/orders?t=bigbody"
reached bigbody
check 'app sees X-Auth-User' "$(body valid .user)" alice
check 'valid: event' "$(event valid '[."event.action", ."event.reason", ."user.id", ."source.ip",
  ."client.ip", ."http.request.method", ."url.path"] | join(" ")')" \
  "authorize ok alice 127.0.0.1 $client GET /api/protected"

# 2. No token, a forged signature, an expired token: 401 with jwtguard's challenge (nginx
# passes WWW-Authenticate on), never the app.
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

# A malformed Authorization header: 401 invalid_request, never 400 (which nginx would
# turn into 500).
req malformed 401 -H 'Authorization: Bearer a b' "$front/api/protected?t=malformed"
not_reached malformed
check 'malformed: event' "$(event malformed '."event.reason"')" invalid_request

# A public prefix climbed out of is not public: the decision is on the normalised path.
req dotdot 401 --path-as-is "$front/public/../api/admin/stats?t=dotdot"
not_reached dotdot
check 'dotdot: logged' "$(event dotdot '."url.path" + " " + ."event.reason"')" \
  '/api/admin/stats missing_token'

# 3. A token without the admin scope on /api/admin: 403 (nginx's own page); with it, 200.
req noscope 403 -H "Authorization: Bearer $alice" "$front/api/admin/stats?t=noscope"
not_reached noscope
check 'noscope: reason' "$(event noscope '."event.reason" + " " + ."url.path"')" \
  'insufficient_scope /api/admin/stats'
req scope 200 -H "Authorization: Bearer $admin" "$front/api/admin/stats?t=scope"
reached scope
check 'scope: user' "$(body scope .user)" root

# 4. A client's own X-Auth-User never reaches the app as such: with a token for another
# user, the token's user; on a public path without a token, none (jwtguard answers an
# empty X-Auth-User, and nginx then sends none). Nor do a client's own original-request
# headers decide: nginx's X-Original-* replace them, and the config drops the client's
# X-Forwarded-Uri and -Method (jwtguard would refuse the two disagreeing, 401).
req forged-user 200 -H "Authorization: Bearer $alice" -H 'X-Auth-User: admin' \
  "$front/api/protected?t=forged-user"
check 'forged X-Auth-User, with a token' "$(body forged-user .user)" alice
req forged-public 200 -H 'X-Auth-User: admin' "$front/public/hello?t=forged-public"
check 'forged X-Auth-User, public path' "$(body forged-public .user)" null
check 'forged X-Auth-User, public path: header' \
  "$(body forged-public '.headers | has("X-Auth-User")')" false
req forged-uri 401 -H 'X-Original-URI: /public/x' -H 'X-Original-Method: GET' \
  -H 'X-Forwarded-Uri: /public/x' -H 'X-Forwarded-Method: GET' "$front/api/admin/stats?t=forged-uri"
not_reached forged-uri
check 'forged original URI: logged' "$(event forged-uri '."url.path"')" /api/admin/stats

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

# Without --trusted-proxy, jwtguard believes none of nginx's headers: the event is the
# subrequest's own GET /auth, with no client.ip.
log=$untrusted_log
req untrusted 200 -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  --data-binary "$order" "$untrusted_front/api/orders?x=1&t=untrusted"
check 'untrusted: event' "$(event untrusted '[."http.request.method", ."url.path", ."source.ip",
  ."client.ip" // "-"] | join(" ")')" 'GET /auth 127.0.0.1 -'

not_reached missing && not_reached bad && not_reached expired && not_reached noscope
not_reached dotdot && not_reached malformed
not_reached forged-uri
finish
