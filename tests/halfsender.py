"""
A client that sends half of a file's body, says HALF, and waits for a line
on stdin: "go" sends the rest and prints the answer, "abort" drops the
connection, "read" prints the answer that comes without sending more.
Used by the integration tests to hold unsent data.
"""

from __future__ import annotations

import socket
import sys


def readResponse(sock: socket.socket) -> bytes:
    """One response, read up to the end of its Content-Length body."""
    answer = b""
    while True:
        head, sep, rest = answer.partition(b"\r\n\r\n")
        if sep and not head.startswith(b"HTTP/1.1 100"):
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) >= length:
                return answer
        elif sep:
            answer = rest  # skip 100 Continue
            continue
        data = sock.recv(65536)
        if not data:
            return answer
        answer += data


def main(port: int, path: str, filename: str) -> None:
    with open(filename, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        sock = socket.create_connection(("127.0.0.1", port))
        # The headers go with the first body bytes, as a client that does
        # not wait for 100 Continue sends them.
        head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n"
        half = size // 2
        sent = 0
        pending = head.encode()
        while sent < half:
            chunk = f.read(min(1 << 20, half - sent))
            sock.sendall(pending + chunk)
            pending = b""
            sent += len(chunk)
        print("HALF", flush=True)
        command = sys.stdin.readline().strip()
        if command == "abort":
            sock.close()
            print("ABORTED", flush=True)
            return
        if command == "read":
            # Read the answer that comes without sending more.
            print(readResponse(sock).decode("utf-8", "replace"), flush=True)
            print("DONE", flush=True)
            return
        while chunk := f.read(1 << 20):
            sock.sendall(chunk)
        print(readResponse(sock).decode("utf-8", "replace"), flush=True)
        print("DONE", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
