"""The checks of tests/crash.sh (python3 standard library only).

    crash.py check LOG CLIENT_JSON READY_US KILL_US
        CLIENT_JSON is what examples/crash_client.rs wrote.
        Checks one run (READY_US: when the client said ready, KILL_US: just before the
        SIGKILL, both epoch µs); prints one JSON object of results; exit status 1 if a
        check failed.

    crash.py summary RESULTS_JSONL
        The table over the runs.
"""

import json
import re
import statistics
import sys


# A whole line with its digits masked: the shape that a torn last line must be a prefix of.
def mask(line):
    return re.sub(rb"[0-9]+", b"0", line)


def check(log_path, client_path, ready_us, kill_us):
    with open(log_path, "rb") as f:
        data = f.read()
    with open(client_path) as f:
        run = json.load(f)
    failures = []
    parts = data.split(b"\n")
    whole, tail = parts[:-1], parts[-1]  # tail: b"" when the file ends with a newline
    events = []
    bad = []
    for i, line in enumerate(whole, 1):
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError
        except ValueError:
            bad.append(f"line {i}: {line[:80]!r}")
            continue
        events.append(event)
    if bad:
        failures.append(f"{len(bad)} of {len(whole)} whole lines are not one JSON object, e.g. {bad[:2]}")
    if events and events[0].get("event.action") != "startup":
        failures.append("the first line is not the startup event")

    # Order: ids PREFIX-1, PREFIX-2, ... as decided, no gap, no repeat, no line inside another.
    logged = {}
    order = []
    prefix, due, breaks = None, 1, []
    for event in events:
        if event.get("event.action") != "authorize":
            continue
        rid = event.get("http.request.id", "")
        p, _, n = rid.rpartition("-")
        prefix = prefix or p
        if p != prefix or n != str(due):
            breaks.append(f"{rid} where {prefix}-{due} was due")
        due = int(n) + 1 if n.isdigit() else due + 1
        if rid in logged:
            breaks.append(f"{rid} twice")
        logged[rid] = event.get("http.response.status_code")
        order.append(rid)
    if breaks:
        failures.append(f"{len(breaks)} breaks in the request id sequence, e.g. {breaks[:3]}")

    torn = bool(tail)
    torn_id = None
    if torn:
        shapes = {mask(line) for line in whole}
        if not any(s.startswith(mask(tail)) for s in shapes):
            failures.append(f"the last line is not a prefix of any line's shape: {tail[:120]!r}")
        m = re.search(rb'"http\.request\.id":"([0-9a-f]+-[0-9]+)"', tail)
        torn_id = m.group(1).decode() if m else None

    received = run["received"]
    seen = set()
    missing, wrong, twice = [], [], []
    for rid, status in received:
        if rid in seen:
            twice.append(rid)
        seen.add(rid)
        if rid not in logged:
            missing.append(rid)
        elif logged[rid] != status:
            wrong.append(f"{rid}: answered {status}, logged {logged[rid]}")
    if missing:
        failures.append(f"{len(missing)} received responses have no line, e.g. {missing[:3]}")
    if wrong:
        failures.append(f"{len(wrong)} statuses differ from the log, e.g. {wrong[:3]}")
    if twice:
        failures.append(f"{len(twice)} request ids received twice, e.g. {twice[:3]}")
    if torn_id is not None and torn_id in seen:
        failures.append(f"the torn line's request {torn_id} was answered")
    if not received:
        failures.append("no response received before the kill: no load")
    early = [e for e in run["ends"] if e[0] < kill_us]
    if early:
        failures.append(f"{len(early)} connections ended before the kill, e.g. {early[:3]}")
    if run["still_open"]:
        failures.append(f"{run['still_open']} connections still open after the kill")
    if run["unexpected"]:
        failures.append(f"responses without X-Request-Id or Content-Length: {run['unexpected'][:2]}")

    # The group-commit window: lines written whose answer was not received.
    window = [rid for rid in order if rid not in seen]
    first_unreceived = order.index(window[0]) if window else len(order)
    result = {
        "ok": not failures,
        "lines": len(order),
        "received": len(received),
        "window": len(window),
        # how far back from the end of the log the first line without an answer is
        "depth": len(order) - first_unreceived,
        "torn": torn,
        "torn_bytes": len(tail),
        "cut_responses": run["cut"],
        "rate": round(len(received) * 1e6 / max(kill_us - ready_us, 1)),
        "failures": failures,
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def summary(path):
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if not runs:
        print("no runs")
        return 1
    windows = [r["window"] for r in runs]
    depths = [r["depth"] for r in runs]
    torn = sum(r["torn"] for r in runs)
    failed = [i + 1 for i, r in enumerate(runs) if not r["ok"]]
    rates = [r["rate"] for r in runs if "rate" in r]

    def stats(values):
        return (
            f"min {min(values)}, median {statistics.median(values):g}, max {max(values)}"
        )

    print(f"runs: {len(runs)}, failed: {len(failed)}{' (runs ' + ','.join(map(str, failed)) + ')' if failed else ''}")
    print(f"group-commit window (lines written, answer not received): {stats(windows)}")
    print(f"  per run: {' '.join(map(str, windows))}")
    print(f"  depth (first such line, from the log's end): {stats(depths)};"
          f" they are the log's last lines (depth = window) in"
          f" {sum(r['depth'] == r['window'] for r in runs)} of {len(runs)} runs")
    print(f"torn last line: {torn} of {len(runs)} runs"
          + (f" ({', '.join(str(r['torn_bytes']) + ' B' for r in runs if r['torn'])})" if torn else ""))
    print(f"responses received per run: {stats([r['received'] for r in runs])};"
          f" responses cut by the kill: {sum(r['cut_responses'] for r in runs)}")
    if rates:
        print(f"client rate before the kill (responses/s): {stats(rates)}")
    return 1 if failed else 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "client":
        client(int(args[0]), int(args[1]), float(args[2]), args[3])
    elif cmd == "check":
        sys.exit(check(args[0], args[1], int(args[2]), int(args[3])))
    elif cmd == "summary":
        sys.exit(summary(args[0]))
    else:
        sys.exit(f"crash.py: unknown command {cmd}")
