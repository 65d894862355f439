"""
A stand-in backend for the tests of interim responses through the real
proxy: it answers each request with a C{104 Upload Resumption Supported}
as soon as its head is in, then, once the whole body (C{Content-Length})
arrived, with C{201}.  It runs in the test's own process.
"""

from __future__ import annotations

import json
import re

from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory

#: The 104 it sends, with a header the proxy must drop (named in Connection).
INTERIM = (
    b"HTTP/1.1 104 Upload Resumption Supported\r\n"
    b"Location: /uploads/abc\r\n"
    b"Upload-Draft-Interop-Version: 6\r\n"
    b"Connection: X-Hop\r\n"
    b"X-Hop: dropped\r\n"
    b"\r\n"
)

_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")


class _Exchange(Protocol):
    def __init__(self, backend: InterimBackend) -> None:
        self.backend = backend

    def connectionMade(self) -> None:
        self.buffer = b""
        self.length: int | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.length is None:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.backend.heads.append(head)
            found = _LENGTH.search(head)
            self.length = int(found.group(1)) if found else 0
            self.buffer = rest
            self.transport.write(INTERIM)  # type: ignore[union-attr]
        if len(self.buffer) < self.length:
            return
        body = self.buffer[: self.length]
        self.backend.bodies.append(body)
        answer = json.dumps({"name": "a.bin", "size": len(body)}).encode()
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (len(answer),) + answer
        )
        self.transport.loseConnection()  # type: ignore[union-attr]


class InterimBackend(ServerFactory):
    """Records the heads and bodies of the requests it answered."""

    def buildProtocol(self, addr: IAddress | None) -> _Exchange:
        return _Exchange(self)

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []

    def listen(self, reactor: IReactorTCP) -> IListeningPort:
        return reactor.listenTCP(0, self, interface="127.0.0.1")
