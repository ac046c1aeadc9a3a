#!/usr/bin/env bash
# The stripped binary of each feature set against its budget (issues 17, 18, 19).
#
#   bench/size.sh                  # three release builds, about 2 minutes
#   BENCH_BLOAT=1 bench/size.sh    # also `cargo bloat` per build (installs cargo-bloat)
#
# Each build is `cargo build --release` (stripped by the profile) with its features, and
# its binary is copied to target/bench/size/ so that the three can be compared. With
# BENCH_BLOAT=1 the same build is linked again unstripped for `cargo bloat --crates` and
# the 60 largest functions (target/bench/size/*.bloat). Environment: BENCH_STRICT (1: exit
# 1 when a budget fails).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=target/bench/size
mkdir -p "$OUT"
FAILED=0

# build NAME BUDGET_BYTES|- WHAT CARGO_FLAGS...
build() {
  local name=$1 budget=$2 what=$3 bytes verdict
  shift 3
  cargo build --release --quiet --bin jwtguard "$@"
  cp target/release/jwtguard "$OUT/$name"
  bytes=$(stat -c %s "$OUT/$name")
  if [ "$budget" = - ]; then
    verdict="no budget"
  elif [ "$bytes" -le "$budget" ]; then
    verdict="budget $budget PASS"
  else
    verdict="budget $budget FAIL" FAILED=1
  fi
  printf '%-8s %9d bytes (%s MiB)  %-22s %s\n' "$name" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')" "$verdict" "$what"
  if [ "${BENCH_BLOAT:-0}" = 1 ]; then
    command -v cargo-bloat >/dev/null || cargo install --quiet cargo-bloat
    {
      CARGO_PROFILE_RELEASE_STRIP=false cargo bloat --release --bin jwtguard "$@" --crates -n 40
      CARGO_PROFILE_RELEASE_STRIP=false cargo bloat --release --bin jwtguard "$@" -n 60
    } >"$OUT/$name.bloat" 2>&1
  fi
}

# 1.6 MiB with every verification algorithm (issue 18); 1.25 MiB HS256 only (issue 17).
build default 1677721 "default features (cli, idp): every algorithm"
build hs256 1310720 "--no-default-features --features cli: HS256 only" --no-default-features --features cli
# Signing (jwtguard token --key-file, jwks --from-pem) is not held to a budget: reported.
build sign - "--features sign: every algorithm, and signing with PEM keys" --features sign
if [ "${BENCH_STRICT:-0}" = 1 ] && [ "$FAILED" = 1 ]; then exit 1; fi
