#!/usr/bin/env bash
# contrib/fail2ban/ with the real fail2ban. A real text log from the debug binary, with
# forged failure prefixes in every field a client or a token controls (User-Agent, path,
# method, sub, other claims), on successes and on refusals, and requests through a trusted
# proxy (127.0.0.2, naming the client in X-Forwarded-For), and a client the brute-force
# limiter refuses (its rate_limit line); then the lines of a second run
# with --seal-key (seal lines, a sealed refusal and success, verified by verify-log);
# then synthetic lines for combinations a loopback test cannot make (IPv6 peers, proxied
# and sealed) and torn lines. fail2ban-regex
# must match exactly the real refusals, each for its address (client.ip when present,
# else source.ip), and read the UTC timestamps as UTC. Then
# fail2ban-client tests the example jail against the stock configuration.
# FAIL2BAN_FILTER=FILE checks another filter file. Run by .ci/run; installs fail2ban
# from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

# shellcheck source=tests/server.sh
. tests/server.sh
need fail2ban-regex fail2ban
filter=${FAIL2BAN_FILTER:-contrib/fail2ban/jwtguard.conf}
log=$tmp/security.log

fail() {
  echo "fail2ban.sh: $*" >&2
  if [ -e "$tmp/got" ]; then diff -u "$tmp/expected" "$tmp/got" >&2 || true; fi
  echo "--- the log:" >&2
  cat "$log" >&2
  exit 1
}

start_jwtguard fail2ban --log-format text --log-file "$log" --trusted-proxy 127.0.0.2/32 \
  --max-failures 4
jwt() { target/debug/jwtguard token "$@"; }
ok_token=$(jwt --sub ok)

# Forged failure prefixes, each for another address: one that tries to close the quoted
# field first, one with a proxy's client.ip, a timestamp and a message of its own.
p='log.level=warn event.action=authorize event.outcome=failure event.reason=x'
a="\" $p source.ip=10.9.9.1 "
b="\\\" @timestamp=2026-01-01T00:00:00.000Z $p source.ip=10.9.9.2 client.ip=10.9.9.3 message=\"x\""
# (A backslash in a path, even escaped, is refused as bad_path: pct is for paths without.)
pct() { local s=${1// /%20}; s=${s//\"/%22}; printf '%s' "${s//\\/%5C}"; }

# req STATUS PATH CURL_ARGS...: one request to /api/rN-PATH that must get STATUS. The
# log line of a refusal (anything but 200) must match for 127.0.0.1, any other none.
n=0
want=(- -) # want[i]: the address log line i must match for, - for none; line 1: start-up
req() {
  local status=$1 path=$2 got
  shift 2
  n=$((n + 1))
  got=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$@" "$url/api/r$n-$path")
  [ "$got" = "$status" ] || fail "request $n got $got, not $status"
  if [ "$status" = 200 ]; then want+=(-); else want+=(127.0.0.1); fi
}

# Successes: a valid token, forged text in each field the client or the token controls.
req 200 ua -A "$a" -H "Authorization: Bearer $ok_token"
req 200 ua -A "$b" -H "Authorization: Bearer $ok_token"
req 200 "$(pct "$a")" -H "Authorization: Bearer $ok_token"
req 200 "$(pct "${b//\\/}")" -H "Authorization: Bearer $ok_token"
req 400 method -X 'source.ip=10.9.9.4' -H "Authorization: Bearer $ok_token"
req 200 sub -H "Authorization: Bearer $(jwt --sub "$a")"
req 200 sub -H "Authorization: Bearer $(jwt --sub "$b")"
req 200 claims -H "Authorization: Bearer $(jwt --sub x --claim sub=null --claim "user_id=$a" \
  --claim "note=$b" --claim "iss=$a")"
# Refusals, with the same forgeries (and an X-Forwarded-For, which jwtguard ignores).
req 401 no-token -A "$a" -H 'X-Forwarded-For: 10.9.9.5'
req 401 "$(pct "$a")" -A "$b" -H 'Authorization: Bearer x.y.z'
req 401 "$(pct "${b//\\/}")" -A "$a" -H 'Authorization: Basic YTpi'
req 400 empty -A "$b" -H 'Authorization: Bearer'
req 400 method -X 'source.ip=10.9.9.4'
req 401 expired -A "$a" -H "Authorization: Bearer $(jwt --sub "$a" --claim exp=1)"
req 401 expired -H "Authorization: Bearer $(jwt --sub "$b" --claim exp=1 --claim "note=$a")"
other=another-secret-0123456789abcdef0123
req 401 signature -H "Authorization: Bearer $(JWTGUARD_SECRET=$other jwt --sub "$b")"
req 401 audience -H "Authorization: Bearer $(jwt --sub "$a" --claim "aud=$b")"
# Through a trusted proxy (curl binds 127.0.0.2): client.ip is the rightmost address of
# X-Forwarded-For that is not a trusted proxy, and a refusal is for it; the forged
# leftmost one never counts.
via() { # via CLIENT STATUS PATH CURL_ARGS...
  local client=$1
  shift
  req "$@" --interface 127.0.0.2 -H "X-Forwarded-For: 10.9.9.6, $client"
  [ "$1" = 200 ] || want[-1]=$client
}
via 203.0.113.5 401 proxied-no-token -A "$a"
via 2001:db8::5 401 proxied-bad -H 'Authorization: Bearer x.y.z'
via 203.0.113.6 200 proxied-ok -A "$b" -H "Authorization: Bearer $ok_token"
# The limiter (--max-failures 4): after four bad tokens a client's next request gets 429
# and its window's one rate_limit line, which matches for that client too.
for i in 1 2 3 4; do via 203.0.113.20 401 "limited-$i" -H 'Authorization: Bearer x.y.z'; done
via 203.0.113.20 429 limited -H "Authorization: Bearer $ok_token"
grep -q ' event\.action=rate_limit event\.outcome=failure event\.reason=rate_limited source\.ip=127\.0\.0\.2 client\.ip=203\.0\.113\.20 ' "$log" ||
  fail "no rate_limit line for 203.0.113.20"
# Plain ones, the templates of the synthetic lines below.
req 401 plain -H 'Authorization: Bearer x.y.z'
req 200 plain -H "Authorization: Bearer $ok_token"
kill "$pid"
wait "$pid" || true
pid=
want+=(-) # the shutdown event
real=$n

lines=$(wc -l <"$log")
[ "$lines" = $((n + 2)) ] || fail "$lines log lines for $n requests"
for i in $(seq "$n"); do
  grep -q "^@timestamp=.* url\.path=\"/api/r$i-" <(sed -n "$((i + 1))p" "$log") ||
    fail "log line $((i + 1)) is not request $i"
done
refused=$(sed -n "$((n))p" "$log") # the last two requests: a plain refusal, a success
allowed=$(sed -n "$((n + 1))p" "$log")
forged_ok=$(sed -n 2p "$log") # the first request: a success with a forged User-Agent
grep -q ' event\.outcome=failure .* message="refused: ' <<<"$refused" || fail "no plain refusal"
grep -q ' event\.outcome=success .* message="allowed: ' <<<"$allowed" || fail "no plain success"
# Each forgery reached the log, in a success and in a refusal.
grep -F ' event.outcome=success ' "$log" >"$tmp/success"
grep -F ' event.outcome=failure ' "$log" >"$tmp/failure"
for forged in 'user_agent.original="\" log.level=warn ' 'user_agent.original="\\\" @timestamp=' \
  '-%22%20log.level=warn%20' '-%22%20@timestamp=' 'user.id="\" log.level=warn ' \
  'user.id="\\\" @timestamp='; do
  for outcome in success failure; do
    grep -qF -- "$forged" "$tmp/$outcome" || fail "no $outcome line with $forged"
  done
done
# A method that is not a token is refused (bad_framing): it reaches refusal lines only.
grep -qF 'http.request.method="source.ip=10.9.9.4"' "$tmp/failure" || fail "no refusal with the forged method"

# Synthetic lines: add LINE to the log; it must match for WANT (- for none).
add() {
  want+=("$1")
  printf '%s\n' "$2" >>"$log"
}

# Real sealed lines: a second run, sealed; its refusal matches, nothing else does (seal
# lines, start-up, the success, shutdown).
key=$tmp/seal.key
vk=$(target/debug/jwtguard seal-init "$key" 2>/dev/null)
start_jwtguard fail2ban --log-format text --log-file "$tmp/sealed.log" --seal-key "$key"
curl -s -o /dev/null -m 5 -H 'Authorization: Bearer x.y.z' "$url/api/sealed-refused"
curl -s -o /dev/null -m 5 -H "Authorization: Bearer $ok_token" "$url/api/sealed-ok"
kill "$pid"
wait "$pid" || true
pid=
target/debug/jwtguard verify-log --key "$vk" "$tmp/sealed.log" >"$tmp/verified" ||
  { cat "$tmp/verified" >&2; fail "the sealed log does not verify"; }
sealed_refusals=0
while IFS= read -r line; do
  [[ $line == *' event.sequence='*' event.hash='* ]] || fail "not sealed: $line"
  if [[ $line == *' event.action=authorize event.outcome=failure '* ]]; then
    add 127.0.0.1 "$line"
    sealed_refusals=$((sealed_refusals + 1))
  else
    add - "$line"
  fi
done <"$tmp/sealed.log"
[ "$sealed_refusals" = 1 ] || fail "$sealed_refusals sealed refusals, not 1"
sealed_refused=$(grep -F ' event.outcome=failure ' "$tmp/sealed.log")
proxied() { # proxied LINE SOURCE CLIENT: LINE with source.ip=SOURCE client.ip=CLIENT
  local src=source.ip=$2
  printf '%s' "${1/ source.ip=127.0.0.1 / $src${3:+ client.ip=$3} }"
}
seal=" event.sequence=42 event.hash=$(printf 'jwtguard' | sha256sum | cut -c1-32)"
add 203.0.113.7 "$(proxied "$refused" 127.0.0.1 203.0.113.7)"
add 2001:db8::7 "$(proxied "$refused" ::1 2001:db8::7)"
add 2001:db8::8 "$(proxied "$refused" 192.0.2.1 2001:db8::8)"
add 2001:db8::9 "$(proxied "$refused" 2001:db8::9)"
add 198.51.100.4 "$(proxied "$refused" ::1 198.51.100.4)$seal"
add 198.51.100.5 "$(proxied "$sealed_refused" 127.0.0.1 198.51.100.5)"
add - "$(proxied "$allowed" 127.0.0.1 203.0.113.8)"
add - "$(proxied "$allowed" ::1 2001:db8::a)$seal"
add - "$(proxied "$forged_ok" 127.0.0.1 203.0.113.9)$seal"
# Torn lines: cut in the middle (among the bare values, in a quoted one, after client.ip),
# right before the message, inside it, inside the seal; and lines that do not start with
# jwtguard's timestamp.
add - "${refused:0:${#refused}/2}"
add - "${refused%%user_agent.original=*}user_agent.original=\"cur"
add - "$(proxied "$refused" 127.0.0.1 203.0.113.10 | cut -d' ' -f1-8)"
add - "${refused% message=*}"
add - "${refused%\"}"
add - "$refused${seal% *} event.hash=0123"
add - "$refused${seal:0:${#seal}-1}"
add - "${sealed_refused:0:${#sealed_refused}-1}"
add - "${sealed_refused% event.hash=*}"
add - "${refused#* }"
add - "x$refused"

# fail2ban-regex: the address and the line of each match, in log order.
fail2ban-regex -o ip "$log" "$filter" >"$tmp/ips"
fail2ban-regex -o msg "$log" "$filter" >"$tmp/msgs"
paste "$tmp/ips" "$tmp/msgs" >"$tmp/got"
i=0
matches=0
while IFS= read -r line; do
  i=$((i + 1))
  [ "${want[i]}" = - ] && continue
  printf '%s\t%s\n' "${want[i]}" "$line"
  matches=$((matches + 1))
done <"$log" >"$tmp/expected"
[ "$i" = "$((${#want[@]} - 1))" ] || fail "$i log lines, ${#want[@]} expectations"
cmp -s "$tmp/expected" "$tmp/got" ||
  fail "$filter: matches differ from the expected ones (- expected, + got):"

# The timestamps are UTC: fail2ban must read them so on a host far from UTC too.
stamp=${refused#@timestamp=}
stamp=${stamp%% *}
printf '%s\n' "$refused" >"$tmp/one.log"
t=$(TZ=Asia/Tokyo fail2ban-regex -o '<time>' "$tmp/one.log" "$filter" | head -n 1)
[ "${t%%.*}" = "$(date -u -d "$stamp" +%s)" ] ||
  fail "$filter reads $stamp as $t, not $(date -u -d "$stamp" +%s), with TZ=Asia/Tokyo"

# The example jail, with the stock configuration, through fail2ban's own config test.
# The distribution's jail.d (Debian's enables sshd, whose log this machine may lack) is
# left out; zz-test.local points logpath at our log, as -t wants an existing file.
etc=$tmp/etc
cp -r /etc/fail2ban "$etc"
rm -f "$etc"/jail.d/*
cp "$filter" "$etc/filter.d/jwtguard.conf"
cp contrib/fail2ban/jail.d/jwtguard.local "$etc/jail.d/"
printf '[jwtguard]\nlogpath = %s\n' "$log" >"$etc/jail.d/zz-test.local"
fail2ban-client -c "$etc" -t >"$tmp/test.out" 2>&1 ||
  { cat "$tmp/test.out" >&2; fail "fail2ban-client -t failed"; }
fail2ban-client -c "$etc" -d >"$tmp/dump" 2>/dev/null
for expect in "['add', 'jwtguard', 'auto']" "['set', 'jwtguard', 'maxretry', 10]" \
  "['set', 'jwtguard', 'findtime', '10m']" "['set', 'jwtguard', 'bantime', '1h']" \
  "['set', 'jwtguard', 'addlogpath', '$log', 'head']" "['start', 'jwtguard']"; do
  grep -qxF "$expect" "$tmp/dump" || { cat "$tmp/dump" >&2; fail "the jail dump lacks $expect"; }
done
[ "$(grep -c "^\['set', 'jwtguard', 'addfailregex', " "$tmp/dump")" = 1 ] ||
  fail "the jail has not one failregex"

refusals=0
for w in "${want[@]:1:real+2}"; do [ "$w" = - ] || refusals=$((refusals + 1)); done
echo "fail2ban.sh: $matches matches in $i lines: the $refusals real refusals (127.0.0.1," \
  "or the client a trusted proxy named), $sealed_refusals real sealed one and" \
  "$((matches - refusals - sealed_refusals)) synthetic ones (client.ip, IPv6, sealed), each for its address;" \
  "no forged prefix, torn line or other line matched; UTC timestamps read as UTC;" \
  "jail config test ok (${SECONDS}s)"
