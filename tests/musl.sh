#!/usr/bin/env bash
# jwtguard built for musl (x86_64-unknown-linux-musl, as on OpenWrt or Alpine) reads its
# command line: on glibc the binary has its own entry point (src/entry.rs), which std's
# argument handling allows only there; a musl build with it read no arguments at all
# (`--version` started a server on 8080). Installs the Rust target; about 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
rustup target add "$TARGET" >/dev/null 2>&1 || rustup target add "$TARGET"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/jwtguard-musl.XXXXXX")
PID=
cleanup() {
  [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
CARGO_TARGET_DIR="$DIR/target" cargo build --release --quiet --target "$TARGET" --bin jwtguard
BIN="$DIR/target/$TARGET/release/jwtguard"
fail() {
  echo "tests/musl.sh: $*" >&2
  exit 1
}

# Each command times out rather than serving: a binary that reads no argument serves.
version=$(timeout 5 "$BIN" --version) || fail "--version did not exit at once"
[ "$version" = "jwtguard $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] ||
  fail "--version printed: $version"
export JWTGUARD_SECRET=0123456789abcdef0123456789abcdef
token=$(timeout 5 "$BIN" token --sub musl --ttl 60) || fail "token did not exit at once"

# And it serves, on the port it is given, the token it minted.
timeout 30 "$BIN" --no-supervisor --listen 127.0.0.1:0 --log-file "$DIR/log" >"$DIR/out" 2>&1 &
PID=$!
port=
for _ in $(seq 100); do
  port=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$DIR/out" | head -1 | cut -d: -f3 || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "no address printed: $(cat "$DIR/out")"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$port/api/protected")
[ "$status" = 200 ] || fail "a valid token got $status"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/protected")
[ "$status" = 401 ] || fail "no token got $status"
grep -q '"user.id":"musl"' "$DIR/log" || fail "the allowed request is not in the log"
echo "tests/musl.sh: ok"
