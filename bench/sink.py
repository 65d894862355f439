"""
A minimal HTTP/1.1 sink on 127.0.0.1 for measuring one loopback stream:
it reads each PUT body (1 MiB reads) and discards it, answering
C{{"size": N}}.  Prints C{sink listening on 127.0.0.1:PORT}; runs until killed.
"""

from __future__ import annotations

import json
import socket
import sys

READ_SIZE = 1 << 20


def _headers(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request head and whatever body bytes came with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the headers")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def serve(conn: socket.socket) -> None:
    """Answer one request on C{conn}."""
    head, rest = _headers(conn)
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    length = int(fields[b"content-length"])
    if fields.get(b"expect", b"").lower() == b"100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    received = len(rest)
    buffer = bytearray(READ_SIZE)
    while received < length:
        count = conn.recv_into(buffer)
        if not count:
            raise ConnectionError(f"closed after {received} of {length} bytes")
        received += count
    body = json.dumps({"size": received}).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"sink listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                serve(conn)
            except (ConnectionError, KeyError, ValueError) as e:
                print(f"sink: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
