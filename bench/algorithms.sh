#!/usr/bin/env bash
# Issue 18's speed budgets through HTTP: HS256 against RS256, ES256 and EdDSA tokens from
# one JWK Set, with the token cache on (the same token reused: req/s against HS256's) and
# off (`--token-cache 0`: every request verifies its signature, as distinct tokens do).
#
#   bench/algorithms.sh                    # 9 rounds of 8 slices of 2 s, about 3 minutes
#   BENCH_ROUNDS=15 bench/algorithms.sh
#   BENCH_JWTGUARD=/path/to/jwtguard BENCH_MINT=/path/to/signing/jwtguard bench/algorithms.sh
#                                          # serve that binary, mint with that one, no build
#
# Two servers (the release build, default features, `--jwks` with an `oct` HS256 key and
# the public keys of tests/data/idp, `--log-file`) run side by side pinned to CPU 0, one
# with the default cache and one with `--token-cache 0`; wrk (CPU 1, -t2 -c32, keep-alive)
# loads one server with one algorithm's token for BENCH_SLICE seconds at a time, the eight
# slices of a round in an order that turns every round. The tokens are minted by a
# `--features sign` build (the served binary does not sign). Per round: each algorithm's
# req/s over HS256's on the cached server, and its server CPU per request less HS256's on
# the uncached one (what a signature verification costs over an HS256 request). The
# summary takes the medians. "others": CPU 0's busy time used by neither server, over the
# slice (above a few percent another process competed). Environment: BENCH_ROUNDS (9),
# BENCH_SLICE (2), BENCH_CONNECTIONS (32), BENCH_STRICT (1: exit 1 on a FAIL).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${BENCH_ROUNDS:-9}
SLICE=${BENCH_SLICE:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
SERVER_CPU=0

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk
need taskset util-linux
need curl curl
need python3 python3
scratch algorithms
CLK_TCK=$(getconf CLK_TCK)

# The minting build first, then the served one, so that target/release/jwtguard is the latter.
if [ -n "${BENCH_MINT:-}" ]; then
  cp "$BENCH_MINT" "$TMP/mint"
else
  cargo build --release --quiet --bin jwtguard --features sign
  cp target/release/jwtguard "$TMP/mint"
fi
JWTGUARD=${BENCH_JWTGUARD:-target/release/jwtguard}
[ -n "${BENCH_JWTGUARD:-}" ] || cargo build --release --quiet --bin jwtguard

ALGS=(HS256 RS256 ES256 EdDSA)
declare -A KEY=([RS256]=rsa2048 [ES256]=p256 [EdDSA]=ed25519) TOKEN
SECRET=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
for alg in RS256 ES256 EdDSA; do
  "$TMP/mint" jwks --from-pem "tests/data/idp/${KEY[$alg]}.pem" --kid "${KEY[$alg]}" >"$TMP/$alg.jwks"
done
python3 - "$SECRET" "$TMP"/{RS256,ES256,EdDSA}.jwks >"$TMP/jwks.json" <<'PY'
import json, sys
keys = [{"kty": "oct", "kid": "hs", "alg": "HS256", "k": sys.argv[1]}]
for path in sys.argv[2:]:
    keys += json.load(open(path))["keys"]
print(json.dumps({"keys": keys}))
PY
TOKEN[HS256]=$("$TMP/mint" token --jwks "$TMP/jwks.json" --kid hs --sub bench --ttl 3600)
for alg in RS256 ES256 EdDSA; do
  TOKEN[$alg]=$("$TMP/mint" token --key-file "tests/data/idp/${KEY[$alg]}.pem" \
    --kid "${KEY[$alg]}" --sub bench --ttl 3600)
done

declare -A SPID SPORT
for server in cached uncached; do
  cache=()
  [ "$server" = uncached ] && cache=(--token-cache 0)
  start "$server" "$JWTGUARD" --listen 127.0.0.1:0 --log-file "$TMP/$server.log" \
    --jwks "$TMP/jwks.json" "${cache[@]}"
  SPID[$server]=$PID
  SPORT[$server]=$PORT
done
for alg in "${ALGS[@]}"; do # every token is good on both servers
  for server in cached uncached; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN[$alg]}" \
      "http://127.0.0.1:${SPORT[$server]}/api/protected")
    [ "$code" = 200 ] || { echo "bench/algorithms.sh: $alg on $server: $code" >&2; exit 1; }
  done
done

# slice SERVER ALG SECONDS: sets RPS, US (server CPU µs per request) and OTHERS (%).
slice() {
  local server=$1 alg=$2 pid=${SPID[$1]} t0 t1 b0 b1 o0 o1 reqs
  t0=$(cpu_ticks "$pid")
  o0=$(cpu_ticks "${SPID[cached]}")+$(cpu_ticks "${SPID[uncached]}")
  b0=$(cpu_busy "$SERVER_CPU")
  taskset -c 1 wrk -t2 -c"$CONNECTIONS" -d"$3s" -H "Authorization: Bearer ${TOKEN[$alg]}" \
    "http://127.0.0.1:${SPORT[$server]}/api/protected" >"$TMP/wrk"
  sleep 0.2 # requests in flight when wrk stopped are answered by now
  t1=$(cpu_ticks "$pid")
  o1=$(cpu_ticks "${SPID[cached]}")+$(cpu_ticks "${SPID[uncached]}")
  b1=$(cpu_busy "$SERVER_CPU")
  reqs=$(awk '/ requests in / { print $1 }' "$TMP/wrk")
  RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk")
  US=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $reqs" 2)
  OTHERS=$(calc "100 * (($b1 - $b0) - (($o1) - ($o0))) / ($3 + 0.2) / $CLK_TCK" 0)
  : >"$TMP/$server.log" # its pages dropped now, not written back during the next slice
}

echo "== $ROUNDS rounds of 8 slices of $SLICE s: HS256 RS256 ES256 EdDSA, cache on and off; servers on CPU 0, wrk -t2 -c$CONNECTIONS on CPU 1"
for server in cached uncached; do for alg in "${ALGS[@]}"; do slice "$server" "$alg" 1; done; done
SLICES=()
for server in cached uncached; do for alg in "${ALGS[@]}"; do SLICES+=("$server:$alg"); done; done
declare -A RATIO CPU_RATIO DIFF RAW
for ((r = 0; r < ROUNDS; r++)); do
  declare -A Q=() U=()
  line=""
  for ((i = 0; i < 8; i++)); do
    s=${SLICES[$(((i + r * 3) % 8))]} # a turning order: each slice moves 3 places a round
    slice "${s%%:*}" "${s#*:}" "$SLICE"
    Q[$s]=$RPS U[$s]=$US
    line+=" ${s#*:}/${s:0:1} $(printf '%.0f' "$RPS") ${US} o${OTHERS}%"
  done
  for alg in RS256 ES256 EdDSA; do
    RATIO[$alg]+=" $(calc "${Q[cached:$alg]} / ${Q[cached:HS256]}" 3)"
    CPU_RATIO[$alg]+=" $(calc "${U[cached:HS256]} / ${U[cached:$alg]}" 3)"
    DIFF[$alg]+=" $(calc "${U[uncached:$alg]} - ${U[uncached:HS256]}" 2)"
  done
  for s in "${SLICES[@]}"; do RAW[$s]+=" ${Q[$s]}/${U[$s]}"; done
  printf '   round %d:%s\n' "$((r + 1))" "$line"
done

echo "== medians of the $ROUNDS rounds (req/s, server CPU us per request)"
for s in "${SLICES[@]}"; do
  read -r -a vals <<<"${RAW[$s]}"
  printf '   %-15s %9.0f req/s %8.2f us/req\n' "$s" "$(median "${vals[@]%/*}")" "$(median "${vals[@]#*/}")"
done
FAILED=0
for alg in RS256 ES256 EdDSA; do
  read -r -a ratios <<<"${RATIO[$alg]}"
  read -r -a cpu <<<"${CPU_RATIO[$alg]}"
  read -r -a diffs <<<"${DIFF[$alg]}"
  m=$(median "${ratios[@]}")
  v=$(verdict "$m >= 0.9")
  [ "$v" = PASS ] || FAILED=1
  printf '   %-6s same token: %.3f x HS256 req/s (budget >= 0.9) %s, %.3f from CPU per request; cache off: +%.2f us a request over HS256\n' \
    "$alg" "$m" "$v" "$(median "${cpu[@]}")" "$(median "${diffs[@]}")"
done
# On a CPU shared with other work (the "others" figures) req/s follows the share of CPU 0
# each slice got; HS256's CPU per request over the algorithm's is the same ratio without it.
if [ "${BENCH_STRICT:-0}" = 1 ] && [ "$FAILED" = 1 ]; then exit 1; fi
