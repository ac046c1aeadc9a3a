#!/usr/bin/env bash
# A bounded fuzz campaign: each cargo-fuzz target in fuzz/ (authorization, verify, encode,
# connection, chunked, upstream_answer) runs for FUZZ_SECONDS (default 20) from a copy of its seed corpus in
# fuzz/corpus/, one after the other; exits non-zero when a target finds a crash (a panic, a failed check, a
# timeout or running out of memory). Prints each target's execs, exec/s, coverage and CPU
# time from libFuzzer's output. Uses the nightly toolchain when rustup has one, else the
# default one (enough without a sanitizer); installs cargo-fuzz when it is missing
# (`cargo install cargo-fuzz --locked`: about a minute on 2 cores).
#
#   bash tests/fuzz.sh                          # about 20 s a target, plus the build
#   FUZZ_SECONDS=600 bash tests/fuzz.sh verify  # one target, 10 minutes
#
# Settings (environment):
#   FUZZ_SECONDS    time per target, in seconds (default 20)
#   FUZZ_SANITIZER  cargo fuzz's --sanitizer: none (default; jwtguard forbids unsafe code,
#                   and AddressSanitizer makes these targets 5 to 10 times slower) or
#                   address (needs nightly)
#   FUZZ_WORK       keep the grown corpora in FUZZ_WORK/<target>/ and libFuzzer's output
#                   in FUZZ_WORK/<target>.log (default: a temporary directory, removed at
#                   the end)
# The committed corpus is never written to: libFuzzer adds to the copy. A crash input is
# kept in fuzz/artifacts/<target>/ (ignored by git) with libFuzzer's output, and printed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-none}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(authorization verify encode connection chunked upstream_answer)

# cargo-fuzz wants nightly, but without a sanitizer it passes no nightly-only flag: the
# default toolchain builds the targets then (a new machine may have no nightly).
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
elif [ "$sanitizer" = none ]; then
  fuzz=(cargo fuzz)
  echo "fuzz.sh: no nightly toolchain; building with $(rustc --version)"
else
  echo "fuzz.sh: --sanitizer $sanitizer needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (about a minute on 2 cores)"
  cargo install cargo-fuzz --locked
fi

# The longest input per target: past the 8192-byte token cap, past the 4096-byte cap on a
# log message; tokens need no more than libFuzzer's default.
max_len() {
  case $1 in
    authorization) echo 9000 ;;
    encode) echo 5000 ;;
    *) echo 4096 ;;
  esac
}

if [ -n "${FUZZ_WORK:-}" ]; then
  work=$FUZZ_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

start=$SECONDS
failed=()
summary=()
TIMEFORMAT='%R %U %S'
for target in "${targets[@]}"; do
  seeds=fuzz/corpus/$target
  [ -d "$seeds" ] || { echo "fuzz.sh: no target $target" >&2; exit 2; }
  echo "== $target: building (sanitizer $sanitizer)"
  "${fuzz[@]}" build --sanitizer "$sanitizer" "$target"
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  cp -R "$seeds/." "$work/$target/"
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=("-dict=$PWD/fuzz/dict/$target.dict")
  log=$work/$target.log
  echo "== $target: fuzzing for ${seconds}s from $(find "$seeds" -type f | wc -l) seeds"
  status=0
  { time "${fuzz[@]}" run --sanitizer "$sanitizer" "$target" "$work/$target" -- \
      -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$PWD/fuzz/artifacts/$target/" \
      "${dict[@]}" >"$log" 2>&1; } 2>"$work/$target.time" || status=$?
  read -r wall user sys <"$work/$target.time"
  # The last status line: "#N DONE cov: C ft: F corp: U/S lim: L exec/s: E rss: R".
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  final() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
  field() { sed -E -n "s/.* $1: ([^ ]+).*/\1/p" <<<"$last"; }
  line=$(printf '%-13s %11s execs %7s exec/s  cov %5s  ft %5s  corpus %-11s new %4s  rss %4s MB  wall %5.0fs  cpu %5.0fs' \
    "$target" "$(final number_of_executed_units)" "$(final average_exec_per_sec)" \
    "$(field cov)" "$(field ft)" "$(field corp)" "$(final new_units_added)" \
    "$(final peak_rss_mb)" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')")
  summary+=("$line")
  echo "$line"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    cp "$log" "fuzz/artifacts/$target/libfuzzer.log"
    echo "fuzz.sh: $target failed (exit $status); what libFuzzer said (all of it in fuzz/artifacts/$target/libfuzzer.log):" >&2
    grep -E -A6 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|ALARM|out-of-memory' "$log" |
      grep -v -E '^ +[0-9]+: |^ +at ' | head -n 40 >&2 || true
    sed -n 's/^artifact_prefix=.*; Test unit written to \(.*\)$/\1/p' "$log" | while read -r crash; do
      echo "fuzz.sh: crash input $crash (reproduce: ${fuzz[*]} run -s $sanitizer $target $crash):" >&2
      od -A d -t x1z "$crash" | head -n 40 >&2 || true
    done || true
  fi
done

echo "== summary (${seconds}s a target, sanitizer $sanitizer, $((SECONDS - start))s in all)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${#targets[@]} targets"
