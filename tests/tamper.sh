#!/usr/bin/env bash
# The sealed log against tampering. For each format (json, text): a real log from the debug
# binary with --seal-key (requests with curl on 127.0.0.1, a restart, two logrotate-style
# rotations: the file renamed, jwtguard moving to a new one at the path), which verify-log
# must find intact, across the restart and the three files. Then copies of it, each
# tampered with in one way, and verify-log must exit 1 naming the right line and the right
# kind: a changed line, a deleted one, an inserted one (forged, copied, unsealed), two
# lines swapped, a file missing in the middle of the rotation, lines cut off the end of a
# rotated file, the tail cut (a log that ends without a shutdown: fine while it is fresh,
# "INCOMPLETE" once its last seal is older than an epoch), a torn last line, an old file
# replayed as the current one, the head of the first file cut, another key. And the usage
# errors exit 2. The untouched logs' tags are also computed again from the README's
# description of the MAC, in Python (tests/seal_spec.py). Run by .ci/run (about 15 s); needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

# shellcheck source=tests/server.sh
. tests/server.sh
need curl curl
bin=$PWD/target/debug/jwtguard
checks=0

fail() {
  echo "tamper.sh: $*" >&2
  [ -f "$tmp/out" ] && { echo "--- verify-log said:" >&2; cat "$tmp/out" >&2; }
  exit 1
}

# verify STATUS PATTERN ARGS...: verify-log ARGS (in $dir) must exit STATUS and print a
# line matching the extended regex PATTERN.
verify() {
  local want=$1 pattern=$2 got=0
  shift 2
  (cd "$dir" && "$bin" verify-log "$@") >"$tmp/out" 2>&1 || got=$?
  [ "$got" = "$want" ] || fail "$format: verify-log $* exited $got, not $want"
  grep -Eq -- "$pattern" "$tmp/out" || fail "$format: verify-log $* did not say /$pattern/"
  checks=$((checks + 1))
}

# tampered NAME: a fresh copy of the untouched files in $dir (= $tmp/NAME).
tampered() {
  dir=$tmp/$format-$1
  rm -rf "$dir"
  cp -r "$clean" "$dir"
}

# line_of FILE PATTERN [N]: the number of the Nth line (default 1) of FILE matching PATTERN.
line_of() { grep -n -- "$2" "$1" | sed -n "${3:-1}p" | cut -d: -f1; }
# seq_of FILE LINE: that line's event.sequence.
seq_of() { sed -n "$2p" "$1" | grep -Eo 'event\.sequence"?[=:][0-9]+' | grep -Eo '[0-9]+$'; }

requests() { # requests N: N allowed and N refused requests to /api/rI
  local i
  for ((i = 1; i <= $1; i++)); do
    curl -s -o /dev/null -m 5 -H "Authorization: Bearer $ok" "$url/api/r$i"
    curl -s -o /dev/null -m 5 "$url/api/r$i"
  done
}
stop() { kill "$pid"; wait "$pid" || true; pid=; }
rotate() { # logrotate's create mode, by hand: rename, and jwtguard moves on within a second
  [ -f "$log.1" ] && mv "$log.1" "$log.2"
  mv "$log" "$log.1"
  sleep 1.1
}

for format in json text; do
  clean=$tmp/$format
  mkdir "$clean"
  log=$clean/log
  key=$tmp/$format.key
  vk=$("$bin" seal-init "$key" 2>/dev/null)
  [ "$(stat -c %a "$key")" = 600 ] || fail "the key file is not mode 0600"
  start_jwtguard tamper --log-format "$format" --log-file "$log" --seal-key "$key"
  ok=$("$bin" token --sub alice)
  requests 4
  rotate
  requests 4
  stop
  start_jwtguard tamper --log-format "$format" --log-file "$log" --seal-key "$key"
  requests 4
  rotate
  requests 3
  stop
  grep -q "$(sed -n 's/^key //p' "$key")" "$log" "$log.1" "$log.2" && fail "the sealing key is in the log"
  grep -q "$vk" "$log" "$log.1" "$log.2" && fail "the verification key is in the log"

  # Untouched: intact across the restart and the three files.
  dir=$clean
  total=$(cat "$log.2" "$log.1" "$log" | wc -l)
  verify 0 "^intact: $total lines in 3 files, sequences 1 to $total" --key "$vk" log.2 log.1 log
  verify 0 "epochs 1 to 7: 4 start-ups, 2 shutdowns, 0 of 15 minutes; 3 files begun" --key "$vk" log.2 log.1 log
  verify 0 "the log ends with a shutdown" --key "$vk" log.2 log.1 log
  # Each file alone verifies too (each begins with a seal line naming where the chain is).
  verify 0 "^intact: " --key "$vk" log
  verify 0 "no shutdown at the end" --key "$vk" log.2 log.1
  # Every tag is the one the README's description gives, computed again from it in Python.
  python3 tests/seal_spec.py "$vk" "$log.2" "$log.1" "$log" >"$tmp/out" 2>&1 ||
    fail "$format: a tag differs from the description (tests/seal_spec.py)"
  grep -q "^seal_spec.py: $total lines carry" "$tmp/out" ||
    fail "$format: tests/seal_spec.py did not check all $total lines"
  checks=$((checks + 1))

  # A changed line: a path in the middle of log.1.
  tampered changed
  n=$(line_of "$dir/log.1" 'r3' 2)
  s=$(seq_of "$dir/log.1" "$n")
  sed -i "${n}s#/api/r3#/api/R3#" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $n \(sequence $s\): changed: its hash" --key "$vk" log.2 log.1 log

  # A changed outcome: a refusal made a success, in the first file.
  tampered outcome
  n=$(line_of "$dir/log.2" 'event.outcome"*[=:]"*failure' 2)
  sed -i "${n}s#failure#success#" "$dir/log.2"
  verify 1 "^TAMPERED: log.2 line $n .*: changed" --key "$vk" log.2 log.1 log

  # A deleted line.
  tampered deleted
  n=$(line_of "$dir/log.1" 'r2')
  s=$(seq_of "$dir/log.1" "$n")
  sed -i "${n}d" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $n \(sequence $((s + 1))\): lines deleted before it: sequences $s to $s are missing \(1 line\)" \
    --key "$vk" log.2 log.1 log

  # Three deleted lines.
  tampered deleted3
  sed -i "$((n)),$((n + 2))d" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $n \(sequence $((s + 3))\): lines deleted before it: sequences $s to $((s + 2))" \
    --key "$vk" log.2 log.1 log

  # Inserted lines: a forged one (a real line with another path, its seal kept), a copy of
  # an earlier line, a line without a seal.
  tampered inserted
  sed -i "${n}{h;s#/api/r2#/api/forged#;p;x}" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $n \(sequence $s\): inserted: the line after it carries its sequence" \
    --key "$vk" log.2 log.1 log
  tampered copied
  sed -i "$((n - 2))p" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $((n - 1)) \(sequence $((s - 2))\): inserted: it repeats sequence $((s - 2))" \
    --key "$vk" log.2 log.1 log
  tampered unsealed
  sed -i "${n}{h;s# event\.sequence=.*##;s#,\"event\.sequence\".*#}#;p;x}" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $n: inserted" --key "$vk" log.2 log.1 log

  # Two lines swapped.
  tampered reordered
  sed -i "${n}{h;d};$((n + 1)){G}" "$dir/log.1"
  verify 1 "^TAMPERED: log.1 line $n \(sequence $((s + 1))\): reordered: it comes where sequence $s was due, and $s is at log.1 line $((n + 1))" \
    --key "$vk" log.2 log.1 log

  # A file missing in the middle of the rotation.
  dir=$clean
  last2=$(seq_of "$clean/log.2" "$(wc -l <"$clean/log.2")")
  first=$(seq_of "$clean/log" 1)
  verify 1 "^TAMPERED: log line 1 \(sequence $first\): a file is missing before log: sequences $((last2 + 1)) to $((first - 1))" \
    --key "$vk" log.2 log

  # Lines cut off the end of a rotated file.
  tampered cut-end
  last1=$(wc -l <"$dir/log.1")
  s=$(seq_of "$dir/log.1" $((last1 - 1)))
  sed -i "$((last1 - 1)),\$d" "$dir/log.1"
  verify 1 "^TAMPERED: log line 1 \(sequence $((s + 2))\): lines deleted from the end of log.1: sequences $s to $((s + 1))" \
    --key "$vk" log.2 log.1 log

  # The tail cut after the last seal: the shutdown and the requests before it removed.
  # Fresh, it looks like a running jwtguard's log; as of 20 minutes later, the missing
  # seals show.
  tampered tail
  sed -i '$d' "$dir/log"
  sed -i '$d' "$dir/log"
  sed -i '$d' "$dir/log"
  # The last seal in log.1: the second run's start-ups (the supervisor's, then its worker's).
  seal=$(line_of "$dir/log.1" 'event.reason"*[=:]"*startup' '$')
  sealed=$(sed -n "${seal}p" "$dir/log.1" | grep -Eo '20[0-9-]+T[0-9:.]+Z' | head -n 1)
  verify 0 "^intact: .*" --key "$vk" log.2 log.1 log
  verify 0 "sealed up to $sealed \(log.1 line $seal\); the [0-9]+ lines after it verify .* no shutdown at the end" \
    --key "$vk" log.2 log.1 log
  later=$(date -u -d "@$(($(date +%s) + 1200))" +%Y-%m-%dT%H:%M:%SZ)
  verify 1 "^INCOMPLETE: log.1 line $seal: the log ends without a shutdown, and its last seal is 2[0-9] minutes old" \
    --key "$vk" --as-of "$later" log.2 log.1 log
  verify 1 "sealed up to $sealed \(log.1 line $seal\)" --key "$vk" --as-of "$later" log.2 log.1 log
  # The untouched log, as of the same time: it ends with a shutdown.
  dir=$clean
  verify 0 "^intact: " --key "$vk" --as-of "$later" log.2 log.1 log

  # A torn last line.
  tampered torn
  last=$(wc -l <"$dir/log")
  sed -i '$s#.\{30\}$##' "$dir/log"
  truncate -s -1 "$dir/log"
  verify 1 "^INCOMPLETE: log line $last: the last line is torn" --key "$vk" log.2 log.1 log

  # An old file replayed as the current one.
  tampered replayed
  cp "$dir/log.2" "$dir/log"
  verify 1 "^TAMPERED: log line 1 \(sequence 1\): an old file again" --key "$vk" log.2 log.1 log

  # The head of the first file cut.
  tampered head
  sed -i '1,3d' "$dir/log.2"
  verify 1 "^TAMPERED: log.2 line 1 \(sequence 4\): not where a sealed log file begins" \
    --key "$vk" log.2 log.1 log

  # Another key.
  other=$("$bin" seal-init "$tmp/$format.other" 2>/dev/null)
  dir=$clean
  verify 1 "^TAMPERED: log.2 line 1 \(sequence 1\): sealed with another key" --key "$other" log.2 log.1 log
done

# Usage: exit 2.
dir=$clean
verify 2 "needs --key" log
verify 2 "invalid --key" --key nothex log
verify 2 "cannot read nowhere" --key "$vk" nowhere
verify 2 "invalid --as-of" --key "$vk" --as-of yesterday log
"$bin" seal-init "$key" >/dev/null 2>"$tmp/out" && fail "seal-init overwrote a key file"
grep -q "File exists" "$tmp/out" || fail "seal-init did not say why it refused"

echo "tamper.sh: $checks verify-log checks passed, json and text: an untouched log verifies across" \
  "a restart and two rotations, each tampering is found at its line (${SECONDS}s)"
