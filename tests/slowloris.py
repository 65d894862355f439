"""
Opens N connections to 127.0.0.1:PORT and sends request headers one byte a
second on each, for at most SECONDS; prints how many the server cut off,
and after how long, as JSON.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time


def main(port: int, count: int, seconds: float) -> None:
    request = b"PUT /files/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 10000
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    print("OPEN", flush=True)
    started = time.monotonic()
    cut: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    sent = 0
    while time.monotonic() - started < seconds and len(cut) < count:
        for sock in sockets:
            if id(sock) in cut:
                continue
            try:
                sock.send(request[sent:sent + 1])
            except OSError:
                cut[id(sock)] = time.monotonic() - started
        sent += 1
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj  # type: ignore[assignment]
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                answers[id(sock)] = answers.get(id(sock), b"") + data
                if not data:
                    cut[id(sock)] = time.monotonic() - started
                    selector.unregister(sock)
                    sock.close()
    statuses = sorted({a.split(b" ")[1].decode() for a in answers.values() if a.count(b" ")})
    print(json.dumps({
        "opened": count,
        "cut": len(cut),
        "first_cut": min(cut.values(), default=None),
        "last_cut": max(cut.values(), default=None),
        "statuses": statuses,
    }), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
