"""
Raw HTTP/1.1 exchanges over a socket, for requests an HTTP library would
clean up (request targets, header counts), run off the reactor thread.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.threads import deferToThread


@dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    #: The status line as sent, reason phrase included.
    line: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def _parse(answer: bytes) -> RawResponse | None:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body, lines[0])


def exchangeNow(port: int, data: bytes, timeout: float = 30) -> RawResponse | None:
    """
    Send C{data} on a new connection to C{port} and read the answer to its
    end (C{Content-Length}) or the connection's; L{None} when the server
    closed without answering.  The first final answer (not 1xx) counts.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused early: the answer may still be there to read
        answer = b""
        while True:
            while answer.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in answer:
                answer = answer.partition(b"\r\n\r\n")[2]
            response = _parse(answer)
            if response is not None:
                length = response.headers.get(b"content-length")
                if (
                    response.status in (204, 304)
                    or (length is not None and len(response.body) >= int(length))
                    or data.startswith(b"HEAD ")
                ):
                    return response
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                more = b""
            if not more:
                return _parse(answer)
            answer += more


async def exchange(port: int, data: bytes) -> RawResponse | None:
    """L{exchangeNow}, in a thread."""
    result: RawResponse | None = await deferToThread(exchangeNow, port, data)
    return result
