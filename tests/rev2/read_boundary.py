#!/usr/bin/env python3
"""rev2 finding: an upstream answer that ends exactly at the end of one 16 KiB read, with a
second answer already in the kernel buffer, leaves the upstream connection "reusable"
(its input Vec is empty, but the socket is not): the pooled connection is never re-armed
(edge-triggered), and the NEXT client's request gets the left-over answer.
Usage: tests/rev2/read_boundary.py [path/to/jwtguard]"""
import os, socket, subprocess, sys, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/jwtguard"
SECRET = "integration-test-secret-0123456789abcdef"
READ = 16 * 1024

def upstream(listener):
    while True:
        try:
            c, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def serve(c):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            try:
                d = c.recv(65536)
            except OSError:
                return
            if not d:
                return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        path = head.split(b" ")[1]
        if path == b"/first":
            start = b"HTTP/1.1 200 OK\r\nContent-Length: "
            # total of the first answer: exactly one read of jwtguard's scratch buffer
            n = READ - len(start) - len(b"00000\r\n\r\n")
            first = start + b"%05d\r\n\r\n" % n + b"a" * n
            assert len(first) == READ
            left = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nalice's-secret!!!"
            c.sendall(first + left)
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))

def get(addr, path, token):
    s = socket.create_connection(addr, timeout=5)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
              % (path, token.encode()))
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    return data

def main():
    lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(16)
    threading.Thread(target=upstream, args=(lst,), daemon=True).start()
    env = dict(os.environ, JWTGUARD_SECRET=SECRET)
    token = subprocess.run([BIN, "token", "--sub", "alice"], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--log-file", "/dev/null",
                          "--upstream", "http://127.0.0.1:%d" % lst.getsockname()[1],
                          "--upstream-timeout", "2"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline().strip()
        host, port = line.rsplit("/", 1)[1].rsplit(":", 1)
        addr = (host, int(port))
        bad = 0
        for i in range(20):
            a = get(addr, b"/first", token)
            b = get(addr, b"/second", token)
            if b"alice's-secret" in b:
                bad += 1
        print("second client got the first one's left-over answer in %d/20 tries" % bad)
        sys.exit(1 if bad else 0)
    finally:
        p.kill(); p.wait()

main()
