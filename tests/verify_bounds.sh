#!/usr/bin/env bash
# verify-log is bounded on any input: each input below (100 MB, VERIFY_BOUNDS_BYTES to
# change it), judged by the release binary under /usr/bin/time, must take under 2 s of
# CPU (user + system) and under 32 MiB of resident memory, and be reported not intact
# (exit 1, TAMPERED or INCOMPLETE). The inputs: bytes of every kind (random, one line
# without a newline, NULs, newlines only, short lines, invalid UTF-8, lines just over the
# longest jwtguard writes), and real sealed logs (examples/sealed_log, the library's own
# sealed writer, as bench/verify.sh makes them) changed: every tag bad, the last tag bad,
# verified whole and found stale, shuffled, repeated, with a 50 MB line inserted, with a
# line deleted and a 50 MB line after it, its first line claiming epoch 2^27. Run by .ci/run (about 20 s after the release
# build); needs python3 and installs `time`.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

# shellcheck source=tests/server.sh
. tests/server.sh # need, $tmp (removed on exit)
need /usr/bin/time time
need python3 python3
SIZE=${VERIFY_BOUNDS_BYTES:-100000000}
MAX_CPU_MS=2000
MAX_RSS_KIB=$((32 * 1024))

cargo build --release --quiet --bin jwtguard --example sealed_log
bin=$PWD/target/release/jwtguard
vk=$("$bin" seal-init "$tmp/key" 2>/dev/null)
# Real sealed logs of about SIZE bytes (an event is about 590 bytes in JSON, 520 in text),
# on one chain (the text log goes on from the JSON one, from its file seal line).
target/release/examples/sealed_log "$tmp/json.log" "$tmp/key" $((SIZE / 590)) json >/dev/null
target/release/examples/sealed_log "$tmp/text.log" "$tmp/key" $((SIZE / 520)) text >/dev/null

# make_input KIND: writes $tmp/input.
make_input() {
  python3 - "$1" "$SIZE" "$tmp" <<'PY'
import os, random, sys
kind, size, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MAX_LINE = 64 * 1024  # src/record/event.rs MAX_LINE_BYTES
random.seed(16)
def real(fmt):
    with open(f"{tmp}/{fmt}.log", "rb") as f:
        return f.read().split(b"\n")[:-1]
def lines(ls):
    return b"\n".join(ls) + b"\n"
def bad_tag(line):  # the last hex digit of event.hash changed
    at = len(line) - (3 if line.endswith(b'"}') else 1)
    return line[:at] + (b"0" if line[at:at + 1] != b"0" else b"1") + line[at + 1:]
def upto(ls, n):  # the first lines of ls, n bytes at most
    out, total = [], 0
    for l in ls:
        total += len(l) + 1
        if total > n:
            break
        out.append(l)
    return out
if kind == "random":
    data = os.urandom(size)
elif kind == "one-line":
    data = b"a" * size
elif kind == "nul":
    data = b"\0" * size
elif kind == "newlines":
    data = b"\n" * size
elif kind == "short-lines":
    data = b"x\n" * (size // 2)
elif kind == "invalid-utf8":
    line = b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xff\xfe" * 9 + b"\n"
    data = line * (size // len(line))
elif kind == "overlong-lines":  # real lines, then lines one byte over the longest
    data = lines(real("json")[:100] + [b"{" + b"x" * MAX_LINE] * (size // MAX_LINE))
elif kind == "json-every-tag-bad":
    data = lines([bad_tag(l) for l in real("json")])
elif kind == "json-last-tag-bad":
    ls = real("json")
    ls[-1] = bad_tag(ls[-1])
    data = lines(ls)
elif kind == "text-stale":  # intact, but judged as of a day later: cut short
    data = lines(real("text"))
elif kind == "json-shuffled":
    ls = real("json")
    rest = ls[2:]
    random.shuffle(rest)
    data = lines(ls[:2] + rest)
elif kind == "text-repeated":
    ls = real("text")[:1000]
    data = lines(ls) * (size // len(lines(ls)))
elif kind == "json-huge-line-inserted":
    ls = real("json")
    head = upto(ls, size // 4)
    data = lines(head + [b"a" * (size // 2)] + upto(ls[len(head):], size // 4))
elif kind == "json-deleted-then-huge-line":
    ls = real("json")
    head = upto(ls, size // 4)
    data = lines(head[:2] + head[3:] + [b"\0" * (size // 2)] + upto(ls[len(head):], size // 4))
elif kind == "json-epoch-claimed":  # the first line claims epoch 2^27: no key walk to it
    import re
    ls = real("json")
    ls[0] = re.sub(rb'"jwtguard\.seal\.epoch":[0-9]+', b'"jwtguard.seal.epoch":134217728', ls[0])
    assert b'"jwtguard.seal.epoch":134217728' in ls[0]
    data = lines(ls)
else:
    sys.exit(f"unknown input {kind}")
with open(f"{tmp}/input", "wb") as f:
    f.write(data)
PY
}

failed=0
as_of=$(date -u -d tomorrow +%Y-%m-%dT%H:%M:%SZ)
printf '%-28s %7s %7s %8s  %s\n' input MB "CPU s" "RSS MiB" "verify-log says"
for kind in random one-line nul newlines short-lines invalid-utf8 overlong-lines \
  json-every-tag-bad json-last-tag-bad text-stale json-shuffled text-repeated \
  json-huge-line-inserted json-deleted-then-huge-line json-epoch-claimed; do
  make_input "$kind"
  status=0
  /usr/bin/time -o "$tmp/time" -f '%U %S %M' \
    "$bin" verify-log --key "$vk" --as-of "$as_of" "$tmp/input" >"$tmp/out" 2>&1 || status=$?
  read -r user sys rss_kib < <(tail -1 "$tmp/time") # after "Command exited with ..."
  cpu_ms=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%d", (u + s) * 1000 }')
  printf '%-28s %7.1f %7.2f %8.1f  %.90s\n' "$kind" \
    "$(awk -v b="$(stat -c %s "$tmp/input")" 'BEGIN { print b / 1e6 }')" \
    "$(awk -v m="$cpu_ms" 'BEGIN { print m / 1000 }')" \
    "$(awk -v k="$rss_kib" 'BEGIN { print k / 1024 }')" "$(head -1 "$tmp/out")"
  why=""
  [ "$status" = 1 ] || why="$why exit status $status, not 1;"
  grep -Eq '^(TAMPERED|INCOMPLETE): ' "$tmp/out" || why="$why not reported as TAMPERED or INCOMPLETE;"
  [ "$cpu_ms" -lt "$MAX_CPU_MS" ] || why="$why ${cpu_ms} ms of CPU, the budget is under $MAX_CPU_MS;"
  [ "$rss_kib" -lt "$MAX_RSS_KIB" ] || why="$why ${rss_kib} KiB resident, the budget is under $MAX_RSS_KIB;"
  if [ -n "$why" ]; then
    echo "verify_bounds.sh: $kind:$why" >&2
    cat "$tmp/out" >&2
    failed=1
  fi
  rm -f "$tmp/input"
done
[ "$failed" = 0 ] || exit 1
echo "verify_bounds.sh: every input judged within 2 s of CPU and 32 MiB (${SECONDS} s)"
