#!/usr/bin/env bash
# Tokens as identity providers mint them: PyJWT (from PyPI, in a venv) signs with keys
# made by Python's `cryptography` (RSA 2048, P-256, P-384, Ed25519) and publishes them as a
# JWK Set (PyJWT's own to_jwk); jwtguard serves with that set (--jwks) and must accept each
# algorithm (RS256, RS384, RS512, PS256, ES256, ES384, EdDSA), refuse each token signed by
# another key, and log the kid and alg. A key added to the file later is used without a
# restart. The other way round, PyJWT verifies tokens `jwtguard token --key-file` signed
# with the same PEM keys against the set `jwtguard jwks --from-pem` printed. Last, the
# same tokens through --jwks-url, the set served by python3 -m http.server.
# Run by .ci/run; installs curl, jq and python3-venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

# shellcheck source=tests/server.sh
. tests/server.sh
need curl curl
need jq jq

fail() {
  echo "idp.sh: FAIL: $*" >&2
  [ -s "$tmp/err" ] && tail -n 20 "$tmp/err" >&2
  [ -s "$tmp/security.log" ] && tail -n 5 "$tmp/security.log" >&2
  exit 1
}

python3 -m venv "$tmp/venv" >/dev/null 2>&1 || {
  # The system's python3 on Debian needs python3-venv for `-m venv`.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  rm -rf "$tmp/venv"
  python3 -m venv "$tmp/venv"
}
"$tmp/venv/bin/pip" install -q --disable-pip-version-check 'pyjwt[crypto]>=2.8,<3' >/dev/null
py=$tmp/venv/bin/python
# `token --key-file` and `jwks --from-pem` need the `sign` feature (off by default).
cargo build --quiet --bin jwtguard --features sign
jwtguard=target/debug/jwtguard

# The keys (PEM, PKCS#8), the JWK Set, and one token per algorithm (TSV: kid, alg, token),
# plus a token each algorithm's key signs under another key's kid.
"$py" - "$tmp" <<'EOF'
import json, sys, time
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

out = sys.argv[1]
keys = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "late": ec.generate_private_key(ec.SECP256R1()),
}
for name, key in keys.items():
    with open(f"{out}/{name}.pem", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
to_jwk = {"rsa": RSAAlgorithm.to_jwk, "p256": ECAlgorithm.to_jwk,
          "p384": ECAlgorithm.to_jwk, "ed25519": OKPAlgorithm.to_jwk, "late": ECAlgorithm.to_jwk}
algs = [("rsa", "RS256"), ("rsa", "RS384"), ("rsa", "RS512"), ("rsa", "PS256"),
        ("p256", "ES256"), ("p384", "ES384"), ("ed25519", "EdDSA"), ("late", "ES256")]
jwks = {"keys": []}
now = int(time.time())
claims = {"sub": "alice", "iat": now, "exp": now + 600, "iss": "https://idp.example"}
with open(f"{out}/tokens.tsv", "w") as tokens:
    for name, alg in algs:
        kid = f"{name}-{alg}"
        jwk = to_jwk[name](keys[name].public_key(), as_dict=True)
        jwk.update(kid=kid, alg=alg, use="sig")
        if name != "late":
            jwks["keys"].append(jwk)
        else:
            with open(f"{out}/late.json", "w") as f:
                json.dump(jwk, f)
        token = jwt.encode(claims, keys[name], algorithm=alg, headers={"kid": kid})
        # The same claims signed by another key of the same type, under this kid.
        other = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
                 "p256": keys["late"], "late": keys["p256"],
                 "p384": ec.generate_private_key(ec.SECP384R1()),
                 "ed25519": ed25519.Ed25519PrivateKey.generate()}[name]
        forged = jwt.encode(claims, other, algorithm=alg, headers={"kid": kid})
        tokens.write(f"{kid}\t{alg}\t{token}\t{forged}\n")
with open(f"{out}/jwks.json", "w") as f:
    json.dump(jwks, f)
EOF

"$jwtguard" --listen 127.0.0.1:0 --no-supervisor --jwks "$tmp/jwks.json" \
  --issuer https://idp.example --log-file "$tmp/security.log" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
  grep -qs '^listening on' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$tmp/out")
[ -n "$url" ] || fail "jwtguard did not start"

status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$url/api/x"; }
last_event() { grep '"event.action":"authorize"' "$tmp/security.log" | tail -n 1; }
checks=0

# 1. Each algorithm's PyJWT token passes, twice (the second from the cache); the forged one
# does not. The event names the kid and the alg.
while IFS=$'\t' read -r kid alg token forged; do
  if [ "$kid" = late-ES256 ]; then late_token=$token; continue; fi
  for _ in 1 2; do
    got=$(status "$token")
    [ "$got" = 200 ] || fail "$kid: PyJWT's $alg token got $got"
  done
  got=$(last_event | jq -r '[."event.reason", ."jwtguard.token.kid", ."jwtguard.token.alg", ."user.id"] | join(" ")')
  [ "$got" = "ok $kid $alg alice" ] || fail "$kid: event says $got"
  got=$(status "$forged")
  [ "$got" = 401 ] || fail "$kid: a token of another key got $got"
  got=$(last_event | jq -r '."event.reason"')
  [ "$got" = bad_signature ] || fail "$kid: the forged token's event says $got"
  checks=$((checks + 4))
done <"$tmp/tokens.tsv"

# 2. A key added to the file (renamed into place, as curl -o then mv) is used within 2 s.
[ "$(status "$late_token")" = 401 ] || fail "the late key's token passed before its key was published"
jq --slurpfile late "$tmp/late.json" '.keys += $late' "$tmp/jwks.json" >"$tmp/jwks.new"
mv "$tmp/jwks.new" "$tmp/jwks.json"
start=$SECONDS
until [ "$(status "$late_token")" = 200 ]; do
  [ $((SECONDS - start)) -le 2 ] || fail "the late key was not used within 2 s"
  sleep 0.1
done
grep -q '"event.action":"jwks_load","event.outcome":"success"' "$tmp/security.log" ||
  fail "no jwks_load event"
checks=$((checks + 2))

# 3. The other way round: PyJWT verifies what jwtguard signs, with the set jwtguard prints.
for name in rsa p256 p384 ed25519; do
  "$jwtguard" jwks --from-pem "$tmp/$name.pem" --kid "$name" >"$tmp/$name.jwks"
  "$jwtguard" token --key-file "$tmp/$name.pem" --kid "$name" --sub bob >"$tmp/$name.token"
done
"$jwtguard" token --key-file "$tmp/rsa.pem" --kid rsa --alg PS256 --sub bob >"$tmp/rsa-ps.token"
"$py" - "$tmp" <<'EOF' || fail "PyJWT refused a token jwtguard signed"
import json, sys
import jwt
out = sys.argv[1]
for name, token in [("rsa", "rsa"), ("rsa", "rsa-ps"), ("p256", "p256"), ("p384", "p384"), ("ed25519", "ed25519")]:
    jwk = json.load(open(f"{out}/{name}.jwks"))["keys"][0]
    key = jwt.PyJWK(jwk)
    text = open(f"{out}/{token}.token").read().strip()
    alg = jwt.get_unverified_header(text)["alg"]
    claims = jwt.decode(text, key.key, algorithms=[alg])
    assert claims["sub"] == "bob", claims
    print(f"PyJWT verified jwtguard's {alg} token ({name})")
EOF
checks=$((checks + 5))

# 4. The same tokens through --jwks-url: the set served over plain HTTP by a sidecar
# (python3 -m http.server on port 0). Protected paths answer 503 until the set is
# fetched; a kid the set lacks makes jwtguard fetch it again at once (the late key).
kill "$pid"
wait "$pid" 2>/dev/null || true
mkdir "$tmp/served"
: >"$tmp/http.out"
jq '.keys |= map(select(.kid != "late-ES256"))' "$tmp/jwks.json" >"$tmp/served/jwks.json"
"$py" -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/served" >"$tmp/http.out" 2>/dev/null &
sidecar=$!
trap 'kill "$sidecar" 2>/dev/null; cleanup' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$tmp/http.out")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || fail "python3 -m http.server did not start"
rm -f "$tmp/out"
"$jwtguard" --listen 127.0.0.1:0 --no-supervisor --jwks-url "http://127.0.0.1:$port/jwks.json" \
  --issuer https://idp.example --log-file "$tmp/security.log" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
  grep -qs '^listening on' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$tmp/out")
[ -n "$url" ] || fail "jwtguard --jwks-url did not start"
start=$SECONDS
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz")" = 200 ]; do
  [ $((SECONDS - start)) -le 5 ] || fail "/healthz not 200 within 5 s of --jwks-url"
  sleep 0.1
done
while IFS=$'\t' read -r kid alg token forged; do
  [ "$kid" = late-ES256 ] && continue
  got=$(status "$token")
  [ "$got" = 200 ] || fail "--jwks-url: $kid: PyJWT's $alg token got $got"
  got=$(status "$forged")
  [ "$got" = 401 ] || fail "--jwks-url: $kid: a token of another key got $got"
  checks=$((checks + 2))
done <"$tmp/tokens.tsv"
jq --slurpfile late "$tmp/late.json" '.keys += $late' "$tmp/served/jwks.json" >"$tmp/served/new"
mv "$tmp/served/new" "$tmp/served/jwks.json"
start=$SECONDS
until [ "$(status "$late_token")" = 200 ]; do
  [ $((SECONDS - start)) -le 2 ] || fail "--jwks-url: the late key was not fetched within 2 s"
  sleep 0.1
done
checks=$((checks + 1))
echo "idp.sh: $checks checks passed in ${SECONDS}s"
