#!/usr/bin/env python3
"""rev2 finding: an app that answers a POST before taking its whole body (a 413, a 401 of
its own, a redirect) while the client's body is all in jwtguard's hands but not all written
upstream yet (`to_up` not empty): the exchange ends `Done(reusable && body_done())`, the
unsent rest of the body is dropped, and the upstream connection goes back to the pool.
An app that discards the unread body after an early answer (as Go's net/http, Node and
Python's h11-based servers do) then takes the NEXT request's bytes as that body's rest:
the next request (here, the same client's pipelined one) is swallowed or split.
Usage: tests/rev2/early_answer.py [path/to/jwtguard]"""
import os, socket, subprocess, sys, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/jwtguard"
SECRET = "integration-test-secret-0123456789abcdef"
results = []

def upstream(listener):
    while True:
        try:
            c, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def serve(c):
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        time.sleep(0.5)  # jwtguard now holds the body: part in the sockets, part in to_up
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
        # Discard the body's rest, as an app does that keeps the connection.
        left = length - len(buf)
        got = b""
        c.settimeout(2)
        try:
            while len(got) < left:
                d = c.recv(min(65536, left - len(got)))
                if not d:
                    break
                got += d
        except socket.timeout:
            pass
        results.append((length, left, len(got), b"GET /second" in got))
    except OSError:
        return

import re

def attempt(addr, token, length):
    s = socket.create_connection(addr, timeout=6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    req = (b"POST /early HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           b"Content-Length: %d\r\n\r\n" % (token.encode(), length)) + b"B" * length
    try:
        s.sendall(req)
        data = b""
        while b"early" not in data:
            d = s.recv(65536)
            if not d:
                return "closed"
            data += d
        s.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % token.encode())
        time.sleep(2.5)
        return "kept"
    except OSError as e:
        return "err %s" % e
    finally:
        s.close()

def main():
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lst.bind(("127.0.0.1", 0)); lst.listen(16)
    threading.Thread(target=upstream, args=(lst,), daemon=True).start()
    env = dict(os.environ, JWTGUARD_SECRET=SECRET)
    token = subprocess.run([BIN, "token", "--sub", "alice"], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--log-file", "/dev/null",
                          "--upstream", "http://127.0.0.1:%d" % lst.getsockname()[1],
                          "--upstream-timeout", "5"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline().strip()
        host, port = line.rsplit("/", 1)[1].rsplit(":", 1)
        addr = (host, int(port))
        sizes = [int(a) for a in sys.argv[2:]] or [40000, 60000, 100000, 200000, 400000, 800000]
        bad = 0
        for n in sizes:
            before = len(results)
            client = attempt(addr, token, n)
            r = results[before:]
            print(n, client, r)
            bad += any(x[3] for x in r)
        print("next request swallowed into the early-answered body: %d/%d" % (bad, len(sizes)))
        sys.exit(1 if bad else 0)
    finally:
        p.kill(); p.wait()

main()
