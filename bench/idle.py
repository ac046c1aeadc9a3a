#!/usr/bin/env python3
"""Opens idle keep-alive connections to a server and holds them (bench/front.sh).

    idle.py PORT COUNT HOLD_SECONDS

Each connection to 127.0.0.1:PORT sends one request, GET /api/protected with the bearer
token in $BENCH_TOKEN, and reads its whole answer (Content-Length framing): the connection
is then what a keep-alive client leaves between requests, with the server's buffers in
whatever state a finished request leaves them. Prints "ready COUNT" once every answer is
in, then holds the connections for HOLD_SECONDS at most (the caller kills it sooner),
sending nothing. Exits 1 with a message when a connection fails or an answer is not 200.
"""

import os
import resource
import socket
import sys
import time

ANSWER_TIMEOUT = 10.0  # seconds for each connection's answer


def read_answer(sock):
    """Reads one HTTP answer with a Content-Length body; returns its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the answer's head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the answer's body")
        body += chunk
    return lines[0].decode("latin-1")


def main():
    port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    token = os.environ["BENCH_TOKEN"]
    # COUNT sockets and a few more: raise the soft limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 16:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    request = (
        "GET /api/protected HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    held = []
    for i in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT)
            sock.sendall(request)
            status = read_answer(sock)
        except (OSError, ConnectionError) as error:
            print(f"idle.py: connection {i}: {error}", file=sys.stderr)
            sys.exit(1)
        if " 200 " not in status + " ":
            print(f"idle.py: connection {i} answered {status!r}", file=sys.stderr)
            sys.exit(1)
        held.append(sock)
    print(f"ready {len(held)}", flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
