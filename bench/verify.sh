#!/usr/bin/env bash
# verify-log throughput: a sealed log of VERIFY_LINES events (examples/sealed_log.rs,
# through the library's sealed SecurityLog) in each format, checked by the release
# binary; MB/s is the file's size over the wall time of `jwtguard verify-log`, the best of
# VERIFY_RUNS runs with the file in the page cache. The budget is 100 MB/s.
#
#   flock /tmp/jwtguard-bench.lock bench/verify.sh
#   VERIFY_LINES=100000 bench/verify.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LINES=${VERIFY_LINES:-500000}
RUNS=${VERIFY_RUNS:-3}

# shellcheck source=bench/lib.sh
. bench/lib.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jwtguard-verify.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

cargo build --release --quiet --bin jwtguard --example sealed_log
bin=target/release/jwtguard
echo "verify-log throughput: $LINES events a log, best of $RUNS runs, warm page cache," \
  "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
status=0
for format in json text; do
  rm -f "$TMP"/*
  vk=$("$bin" seal-init "$TMP/key" 2>/dev/null)
  target/release/examples/sealed_log "$TMP/log" "$TMP/key" "$LINES" "$format" >"$TMP/made"
  size=$(stat -c %s "$TMP/log")
  lines=$(wc -l <"$TMP/log")
  best=""
  for ((r = 0; r < RUNS; r++)); do
    t0=$(now_us)
    "$bin" verify-log --key "$vk" "$TMP/log" >"$TMP/out"
    t1=$(now_us)
    grep -q "^intact: $lines lines in 1 file" "$TMP/out" || { cat "$TMP/out" >&2; exit 1; }
    if [ -z "$best" ] || ((t1 - t0 < best)); then best=$((t1 - t0)); fi
  done
  mbps=$(calc "$size / $best" 0)
  verdict=$(awk -v m="$mbps" 'BEGIN { print (m >= 100) ? "PASS" : "FAIL" }')
  [ "$verdict" = PASS ] || status=1
  printf '  %-4s %7.1f MB, %8d lines (%s bytes a line), verified in %6.3f s: %5d MB/s  %s (>= 100 MB/s)\n' \
    "$format" "$(calc "$size / 1000000" 1)" "$lines" "$(calc "$size / $lines" 0)" \
    "$(calc "$best / 1000000" 3)" "$mbps" "$verdict"
done
exit $status
