"""One attack of tests/attacks.sh against a running, supervised jwtguard (python3 standard
library only).

    attacks.py ATTACK URL TOKEN SUPERVISOR_PID LOG

A client polls GET /api/poll with TOKEN every 50 ms, each time on a new connection, from
1 s before the attack to a few seconds after it. Prints one JSON object: the polls, those
refused (connection refused), those failed before and after the first recovery (the
first answer after the attack's disruption), the longest time without an answer (the
recovery latency as a client sees it), the supervisor's events, and whether the log is
whole: every line JSON, every answer the poller got in it by its X-Request-Id, no request
id twice. Exit status 1 if a check failed.
"""

import json
import os
import signal
import socket
import sys
import threading
import time

POLL_EVERY = 0.05


def now():
    return time.monotonic()


def workers(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


class Poller(threading.Thread):
    def __init__(self, host, port, token):
        super().__init__(daemon=True)
        self.addr = (host, port)
        self.request = (
            "GET /api/poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        self.results = []  # (start, end, outcome, request id)
        self.stopping = False

    def once(self):
        start = now()
        try:
            s = socket.create_connection(self.addr, timeout=10)
        except ConnectionRefusedError:
            return start, now(), "refused", None
        except OSError as e:
            return start, now(), f"connect: {e}", None
        try:
            s.settimeout(15)
            s.sendall(self.request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            return start, now(), f"io: {e}", None
        finally:
            s.close()
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        status = head[9:12] if head.startswith("HTTP/1.1 ") else "none"
        rid = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "x-request-id":
                rid = value.strip()
        return start, now(), status, rid

    def run(self):
        while not self.stopping:
            t = now()
            self.results.append(self.once())
            time.sleep(max(0.0, POLL_EVERY - (now() - t)))


def hold(host, port, payload, n, read_answer):
    """n connections that each send payload and stay open; returns them."""
    held = []
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            if payload:
                s.sendall(payload)
            if read_answer:
                s.settimeout(5)
                s.recv(4096)
            held.append(s)
        except OSError:
            pass
    return held


def attack(name, host, port, pid):
    """Runs the attack; returns (what it did, a cleanup to run after the observation)."""
    if name == "content_length_flood":
        payload = b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n"
        held = hold(host, port, payload, 400, True)
        return f"{len(held)} connections announcing 1 TB bodies, held open", lambda: [
            s.close() for s in held
        ]
    if name == "http2_lines":
        held = hold(host, port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400, False)
        time.sleep(0.5)
        for s in held:
            s.close()
        return f"{len(held)} HTTP/2.0 request lines", lambda: None
    if name == "idle_connections":
        held = hold(host, port, b"", 2000, False)
        return f"{len(held)} idle connections, held open", lambda: [s.close() for s in held]
    if name == "pipeline_no_read":
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
        request = b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        sent = 0
        deadline = now() + 2
        reset = ""
        while now() < deadline:
            try:
                sent += s.send(request)
            except BlockingIOError:
                time.sleep(0.01)
            except (ConnectionResetError, BrokenPipeError):
                # The server may drop a client that does not read: that is a defence.
                reset = ", until the server reset the connection"
                break
        return f"one connection pipelining {sent} bytes of requests, never reading{reset}", s.close
    if name == "wedged_worker":
        [worker] = workers(pid)
        os.kill(worker, signal.SIGSTOP)
        return f"worker {worker} stopped (SIGSTOP)", lambda: os.kill(worker, signal.SIGCONT)
    if name == "sigkill_worker":
        [worker] = workers(pid)
        os.kill(worker, signal.SIGKILL)
        return f"worker {worker} killed (SIGKILL)", lambda: None
    raise SystemExit(f"unknown attack {name}")


def main():
    name, url, token, pid, log = sys.argv[1:6]
    pid = int(pid)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    port = int(port)
    poller = Poller(host, port, token)
    poller.start()
    time.sleep(1)
    began = now()
    did, cleanup = attack(name, host, port, pid)
    # Watch until the answers have flowed for 2 s without a failure (20 s at most).
    deadline = now() + 20
    while now() < deadline:
        time.sleep(0.2)
        recent = [r for r in poller.results if r[0] > now() - 2]
        if now() - began > 3 and recent and all(r[2] == "200" for r in recent):
            break
    cleanup()
    time.sleep(0.5)
    poller.stopping = True
    poller.join()

    results = poller.results
    refused = [r for r in results if r[2] == "refused"]
    after = [r for r in results if r[0] >= began]
    failures = [r for r in after if r[2] != "200"]
    # The first recovery: the first answer to a poll started after the last failure that
    # began before any success following the attack; nothing may fail after it.
    first_ok = next((r for r in after if r[2] == "200" and r[0] > (failures[0][0] if failures else began)), None)
    failed_after = [r for r in failures if first_ok and r[0] > first_ok[0]]
    ends = [began] + [r[1] for r in after if r[2] == "200"]
    gap = max(b - a for a, b in zip(ends, ends[1:])) if len(ends) > 1 else None

    ok_ids = {r[3] for r in results if r[2] == "200"}
    with open(log, "rb") as f:
        lines = f.read().split(b"\n")
    whole = lines[-1] == b""
    events, bad = [], []
    for i, line in enumerate(lines[:-1], 1):
        try:
            events.append(json.loads(line))
        except ValueError:
            bad.append(i)
    ids = [e.get("http.request.id") for e in events if e.get("event.action") == "authorize"]
    missing = ok_ids - set(ids)
    doubled = len(ids) - len(set(ids))
    supervision = [
        f'{e["event.action"]} {e.get("event.reason")} {e.get("event.duration", 0) / 1e6:.1f} ms'
        if e["event.action"] == "restart"
        else f'{e["event.action"]} {e.get("event.reason")}'
        for e in events
        if e.get("event.action") in ("restart", "replace", "reload")
    ]
    result = {
        "attack": name,
        "did": did,
        "polls": len(results),
        "ok": sum(r[2] == "200" for r in results),
        "refused": len(refused),
        "failed_before_recovery": len(failures) - len(failed_after),
        "failed_after_recovery": len(failed_after),
        "longest_without_answer_ms": round(gap * 1000) if gap else None,
        "supervisor": supervision,
        "log_lines": len(lines) - 1,
        "log_bad_lines": bad,
        "log_ends_whole": whole,
        "answers_missing_from_log": len(missing),
        "request_ids_twice": doubled,
        "failures": [f"{r[2]} at +{(r[0] - began) * 1000:.0f} ms" for r in failures][:5],
    }
    print(json.dumps(result))
    restarts = [
        e.get("event.duration", 0) / 1e6 for e in events if e.get("event.action") == "restart"
    ]
    # The budget: a dead worker is replaced within 100 ms.
    budget = name != "sigkill_worker" or (restarts and max(restarts) <= 100)
    # What the supervisor may do about each attack: nothing, for those jwtguard bounds
    # in-process (serve mode's own loop answers and closes the descriptor floods that
    # tiny_http leaked until a restart); the one each of the others calls for.
    allowed = {
        "content_length_flood": set(),
        "http2_lines": set(),
        "idle_connections": set(),
        "pipeline_no_read": set(),
        "wedged_worker": {"replace"},
        "sigkill_worker": {"restart"},
    }[name]
    actions = {e["event.action"] for e in events if e.get("event.action") in ("restart", "replace", "reload")}
    expected = actions <= allowed and (actions or not allowed)
    ok = (
        budget
        and expected
        and not refused
        and not failed_after
        and first_ok is not None
        and not bad
        and whole
        and not missing
        and not doubled
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
