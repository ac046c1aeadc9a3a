#!/usr/bin/env bash
# `jwtguard --upstream` directly in front of examples/flask_app.py (Flask from PyPI, in a
# venv), with curl: who reaches the app and as whom, what is refused and never reaches it,
# what the log says. Run by .ci/run; installs what it needs (python3-venv, jq) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
script=upstream.sh

# shellcheck source=tests/server.sh
. tests/server.sh
# shellcheck source=tests/apps.sh
. tests/apps.sh

start_flask
start_jwtguard upstream --upstream "$app" --public /public --require /api/admin=admin \
  --log-file "$log"
jwt() { target/debug/jwtguard token "$@"; }
alice=$(jwt --sub alice --claim scope=read)
admin=$(jwt --sub root --claim scope="read admin")
expired=$(jwt --sub alice --claim exp=1)
forged=$(JWTGUARD_SECRET=not-the-secret-but-32-bytes-long-0123 jwt --sub alice)

# 1. A valid token reaches the app, which sees its user, and the request's id.
req valid 200 -H "Authorization: Bearer $alice" "$url/api/protected?t=valid"
reached valid
check 'app sees X-Auth-User' "$(body valid .user)" alice
check 'X-Request-Id is the event id' "$(body valid '.headers["X-Request-Id"]')" \
  "$(event valid '."http.request.id"')"
check 'valid: event' "$(event valid '[."event.action", ."event.reason", ."user.id"] | join(" ")')" \
  'authorize ok alice'

# 2. No token, a forged signature, an expired token: 401 with a challenge, never the app.
for case in missing:missing_token bad:bad_signature expired:expired; do
  name=${case%%:*}
  case $name in
  missing) auth=() ;;
  bad) auth=(-H "Authorization: Bearer $forged") ;;
  expired) auth=(-H "Authorization: Bearer $expired") ;;
  esac
  req "$name" 401 "${auth[@]}" "$url/api/protected?t=$name"
  not_reached "$name"
  check "$name: challenge" "$(header "$name" WWW-Authenticate | cut -c1-23)" \
    'Bearer realm="jwtguard"'
  check "$name: reason" "$(event "$name" '."event.reason"')" "${case#*:}"
done

# A public prefix climbed out of is not public: the decision is on the normalised path.
req dotdot 401 --path-as-is "$url/public/../api/admin/stats?t=dotdot"
not_reached dotdot
check 'dotdot: logged' "$(event dotdot '."url.path" + " " + ."event.reason"')" \
  '/api/admin/stats missing_token'

# 3. A token without the admin scope on /api/admin: 403 insufficient_scope; with it, 200.
req noscope 403 -H "Authorization: Bearer $alice" "$url/api/admin/stats?t=noscope"
not_reached noscope
check 'noscope: challenge' "$(header noscope WWW-Authenticate)" \
  'Bearer realm="jwtguard", error="insufficient_scope", scope="admin"'
req scope 200 -H "Authorization: Bearer $admin" "$url/api/admin/stats?t=scope"
reached scope
check 'scope: user' "$(body scope .user)" root

# 4. A client's own X-Auth-User never reaches the app as such: with a token for another
# user, the token's user; on a public path without a token, none. Nor do its own
# X-Forwarded-For or X-Request-Id.
req forged-user 200 -H "Authorization: Bearer $alice" -H 'X-Auth-User: admin' \
  -H 'X-Forwarded-For: 6.6.6.6' -H 'X-Request-Id: 42' "$url/api/protected?t=forged-user"
check 'forged X-Auth-User, with a token' "$(body forged-user .user)" alice
check 'forged X-Forwarded-For' "$(body forged-user '.headers["X-Forwarded-For"]')" $client
check 'forged X-Request-Id' "$(body forged-user '.headers["X-Request-Id"]')" \
  "$(event forged-user '."http.request.id"')"
req forged-public 200 -H 'X-Auth-User: admin' "$url/public/hello?t=forged-public"
check 'forged X-Auth-User, public path' "$(body forged-public .user)" null

# 5. The log: the TCP peer (curl binds 127.0.0.2), the method, the path without the query.
order='{"item":"book","qty":2,"note":"caf\u00e9 & \"quotes\""}'
req post 200 -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  --data-binary "$order" "$url/api/orders?x=1&t=post"
reached post
check 'post: event' "$(event post '[."source.ip", ."http.request.method", ."url.path", ."user.id",
  (."client.ip" // "-")] | join(" ")')" "$client POST /api/orders alice -"

# 6. Public paths need no token, and write no event.
req public 200 "$url/public/hello?t=public"
reached public
check 'public: hello' "$(body public .hello)" world
check 'public: no event' "$(wc -l <"$tmp/public.ev")" 0

# 7. A body reaches the app intact: the small one above, and 1 MiB of JSON.
check 'post: method' "$(body post .method)" POST
check 'post: body' "$(body post .order | jq -cS .)" "$(jq -cS . <<<"$order")"
python3 -c 'import json; print(json.dumps({"lines": ["%06d %s" % (i, "x" * 100)
  for i in range(10000)]}))' >"$tmp/big.json"
req big 200 -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  --data-binary @"$tmp/big.json" "$url/api/orders?t=big"
check 'big body intact' "$(body big .order | sha256sum)" "$(jq . "$tmp/big.json" | sha256sum)"

# The app down: 502, and a forward event with upstream_unreachable.
kill "${procs[0]}"
wait "${procs[0]}" 2>/dev/null || true
req down 502 -H "Authorization: Bearer $alice" "$url/api/protected?t=down"
check 'down: events' "$(jq -r '[."event.action", ."event.reason",
  ."http.response.status_code" // "-"] | join(" ")' "$tmp/down.ev" | tr '\n' ';')" \
  'authorize ok -;forward upstream_unreachable 502;'

not_reached missing && not_reached bad && not_reached expired && not_reached noscope
not_reached dotdot
finish
