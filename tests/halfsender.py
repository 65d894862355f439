"""
A client that sends half of a file's body, says HALF, and waits for a line
on stdin: "go" sends the rest and prints the answer, "abort" drops the
connection.  Used by the integration tests to hold unsent data.
"""

from __future__ import annotations

import socket
import sys


def main(port: int, path: str, filename: str) -> None:
    with open(filename, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        half = size // 2
        sent = 0
        while sent < half:
            chunk = f.read(min(1 << 20, half - sent))
            sock.sendall(chunk)
            sent += len(chunk)
        print("HALF", flush=True)
        command = sys.stdin.readline().strip()
        if command == "abort":
            sock.close()
            print("ABORTED", flush=True)
            return
        while chunk := f.read(1 << 20):
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        print(answer.decode("utf-8", "replace"), flush=True)
        print("DONE", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
