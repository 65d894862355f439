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


class ResponseReader:
    """
    Reads the responses on a blocking socket one at a time, interim (1xx)
    ones included: an interim response is its head; a final one ends with
    its C{Content-Length} body, or with the connection.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        try:
            more = self.sock.recv(65536)
        except ConnectionResetError:
            more = b""
        self.buffer += more
        return bool(more)

    def next(self) -> RawResponse:
        """The next response; L{EOFError} when the connection ends before it."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise EOFError(f"connection closed; unparsed: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        response = _parse(head + b"\r\n\r\n")
        assert response is not None
        if 100 <= response.status < 200:
            return response
        length = response.headers.get(b"content-length")
        if length is None:
            while self._more():
                pass
            response.body, self.buffer = self.buffer, b""
            return response
        while len(self.buffer) < int(length):
            if not self._more():
                break
        response.body, self.buffer = self.buffer[: int(length)], self.buffer[int(length):]
        return response

    def untilFinal(self) -> list[RawResponse]:
        """The next responses up to the next final one, which is last."""
        responses = [self.next()]
        while 100 <= responses[-1].status < 200:
            responses.append(self.next())
        return responses
