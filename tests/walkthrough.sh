#!/usr/bin/env bash
# The README's "Walkthrough with curl", run as written, with the demo (`cargo run
# --release`'s server) still running on 8080 beside it: every curl reaches the
# walkthrough's own server, and security.log gets one event per request. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/server.sh
. tests/server.sh
need curl curl
cargo build --release --quiet --bin jwtguard

# The README block between "## Walkthrough with curl" and the next heading.
awk '/^## Walkthrough with curl/ { on = 1; next } /^## / { on = 0 }
     on && /^```sh$/ { code = 1; next } on && /^```$/ { code = 0 } on && code' README.md >"$tmp/walkthrough.sh"
grep -q 'jwtguard token --sub alice' "$tmp/walkthrough.sh" || { echo "walkthrough.sh: no walkthrough block in README.md" >&2; exit 1; }
# Its port (8081) on a free one, so that a machine using 8081 does not fail it.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grep -q '127\.0\.0\.1:8081' "$tmp/walkthrough.sh" || { echo "walkthrough.sh: the block's port 8081 is gone" >&2; exit 1; }
sed -i "s/127\.0\.0\.1:8081/127.0.0.1:$(free_port)/g" "$tmp/walkthrough.sh"

# The demo, as `cargo run --release` starts it, on 8080; when something else holds 8080
# on this machine, on a free port (the demo's port is not what this checks).
demo_args=() demo_addr=127.0.0.1:8080
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  demo_addr=127.0.0.1:$(free_port) demo_args=(--listen "$demo_addr")
  echo "walkthrough.sh: 8080 is in use here: the demo runs on $demo_addr" >&2
fi
env -u JWTGUARD_SECRET -u JWTGUARD_SECRET_FILE target/release/jwtguard "${demo_args[@]}" >"$tmp/demo.out" 2>"$tmp/demo.err" &
pid=$!
for _ in $(seq 100); do grep -qs '^listening on' "$tmp/demo.out" && break; sleep 0.05; done
grep -q "^listening on http://$demo_addr\$" "$tmp/demo.out" || { echo "walkthrough.sh: the demo did not start on $demo_addr" >&2; cat "$tmp/demo.err" >&2; exit 1; }

# It writes security.log in the working directory: keep a developer's own aside.
[ -e security.log ] && mv security.log "$tmp/saved.log"
restore() { rm -f security.log; [ -e "$tmp/saved.log" ] && mv "$tmp/saved.log" security.log; cleanup; }
trap restore EXIT
timeout 60 bash -e "$tmp/walkthrough.sh" >"$tmp/walk.out" 2>&1 ||
  { echo "walkthrough.sh: the walkthrough failed:" >&2; cat "$tmp/walk.out" >&2; exit 1; }
cp security.log "$tmp/security.log"

python3 - "$tmp/security.log" "$tmp/walk.out" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]   # every line one JSON object
reasons = [e["event.reason"] for e in events if e.get("event.action") == "authorize"]
assert reasons == ["ok", "missing_token", "expired", "bad_signature"], reasons
assert events[0]["event.action"] == "startup" and events[-1]["event.action"] == "shutdown", events
out = open(sys.argv[2]).read()
for status in ["HTTP/1.1 200 OK", "HTTP/1.1 401 Unauthorized"]:
    assert status in out, out
assert '{"status":"ok","user":"alice"}' in out, out
PY
# The demo saw none of it.
if grep -q '"event.action":"authorize"' "$tmp/demo.err"; then
  echo "walkthrough.sh: a walkthrough request reached the demo" >&2; exit 1
fi
echo "walkthrough.sh: the README walkthrough ran beside the demo, 4 events as described: ok"
