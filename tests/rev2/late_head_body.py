#!/usr/bin/env python3
"""rev2 (low, inherent race): an app that answers HEAD with a body written a moment after
the head. jwtguard pools the connection as soon as the head is in (nothing after it
yet); a request taken onto it before the late bytes arrive gets them as its answer."""
import os, socket, subprocess, sys, threading, time
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/jwtguard"
SECRET = "integration-test-secret-0123456789abcdef"
def serve(c):
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            if head.startswith(b"HEAD"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n")
                time.sleep(0.02)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nalice's-secret!!!")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass
def up(l):
    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(8)
threading.Thread(target=up, args=(l,), daemon=True).start()
env = dict(os.environ, JWTGUARD_SECRET=SECRET)
tok = subprocess.run([BIN, "token", "--sub", "a"], env=env, capture_output=True, text=True).stdout.strip().encode()
p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--log-file", "/dev/null", "--upstream",
                      "http://127.0.0.1:%d" % l.getsockname()[1], "--upstream-timeout", "2"],
                     env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    h, pt = p.stdout.readline().strip().rsplit("/", 1)[1].rsplit(":", 1)
    addr = (h, int(pt)); bad = 0
    for i in range(10):
        a = socket.create_connection(addr, timeout=5)
        b = socket.create_connection(addr, timeout=5)
        a.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % tok)
        a.recv(4096)
        b.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n" % tok)
        data = b""
        while True:
            d = b.recv(65536)
            if not d:
                break
            data += d
        bad += b"alice's-secret" in data
        a.close(); b.close(); time.sleep(0.1)
    print("a later client got the HEAD answer's late body in %d/10 tries" % bad)
    sys.exit(1 if bad else 0)
finally:
    p.kill(); p.wait()
