#!/usr/bin/env bash
# Every ```sh block in README.md, docs/, SECURITY.md and CONTRIBUTING.md is marked: the
# line before it is `<!-- run -->` (run here) or `<!-- not run: WHY -->` (a service, a
# root install, a long benchmark). Each runnable block runs on its own with `bash -e` in a
# scratch directory whose target/ is this clone's (`cargo` builds this clone), with every
# 127.0.0.1:PORT in it moved to a free port (the block as written uses fixed ones, for a
# reader); then its leftover processes are killed. Fails on an unmarked block or a block
# that fails. Also: the README's nginx block is examples/nginx.conf. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
command -v curl >/dev/null || { echo "docs.sh: needs curl" >&2; exit 1; }
cargo build --release --quiet --bin jwtguard

tmp=$(mktemp -d)
group=
cleanup() { [ -n "$group" ] && kill -- "-$group" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# The blocks, one file each, ports moved, with a prelude; unmarked blocks fail here.
python3 - "$tmp" README.md docs/*.md SECURITY.md CONTRIBUTING.md <<'PY'
import re, socket, sys
out, files = sys.argv[1], sys.argv[2:]
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
n, bad = 0, []
for path in files:
    lines = open(path).read().split("\n")
    for i, line in enumerate(lines):
        if line.strip() != "```sh":
            continue
        mark = lines[i - 1].strip() if i else ""
        if mark.startswith("<!-- not run:"):
            continue
        if mark != "<!-- run -->":
            bad.append(f"{path}:{i + 1}")
            continue
        end = lines.index("```", i + 1)
        block = "\n".join(lines[i + 1:end])
        # A port, in the block's words, is its own word: 127.0.0.1:5000 and `http.server 5000`.
        for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d{4,5})\b", block))):
            block = re.sub(rf"\b{port}\b", str(free_port()), block)
        n += 1
        with open(f"{out}/block{n:02}.sh", "w") as f:
            f.write(f"# {path}:{i + 1}\n")
            f.write('cargo() { command cargo "$@" --manifest-path "$REPO/Cargo.toml"; }\n')
            f.write(block + "\n")
if bad:
    sys.exit("docs.sh: a sh block with neither <!-- run --> nor <!-- not run: WHY --> before it: " + ", ".join(bad))
if n == 0:
    sys.exit("docs.sh: no runnable block found")
PY

for block in "$tmp"/block*.sh; do
  where=$(head -n 1 "$block" | cut -c3-)
  dir=$tmp/$(basename "$block" .sh)
  mkdir "$dir"
  ln -s "$repo/target" "$dir/target"
  # Its own session, so that what it leaves running is killed with it.
  (cd "$dir" && REPO=$repo PATH=$repo/target/release:$PATH exec setsid bash -e -o pipefail "$block") \
    >"$dir.out" 2>&1 </dev/null &
  group=$!
  status=
  for _ in $(seq 1200); do # 120 s at most
    if ! kill -0 "$group" 2>/dev/null; then
      wait "$group" && status=0 || status=$?
      break
    fi
    sleep 0.1
  done
  kill -- "-$group" 2>/dev/null || true
  group=
  if [ "$status" != 0 ]; then
    echo "docs.sh: the block at $where failed (${status:-timed out after 120 s}):" >&2
    cat "$dir.out" >&2
    exit 1
  fi
  echo "docs.sh: $where: ok"
done

# The README shows the nginx server block that tests/nginx.sh runs.
awk '/^```nginx$/ { on = 1; next } on && /^```$/ { exit } on' README.md | diff -u examples/nginx.conf - >&2 ||
  { echo "docs.sh: README.md's nginx block is not examples/nginx.conf" >&2; exit 1; }
echo "docs.sh: every runnable block ran: ok"
