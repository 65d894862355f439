"""
In-memory HTTP/1.1 connections to a twisted.web Site using
L{StreamingRequest}: real parsing, fake transport and clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource

from streamrelay.streaming import makeSite
from streamrelay.webapp import JSONAnswers


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw: bytes = field(repr=False)


class Connection:
    """One client connection to C{resource}, driven by hand."""

    def __init__(self, resource: IResource, clock: Clock | None = None, timeout: float = 60):
        self.clock = clock or Clock()
        self.site = makeSite(resource, timeout, JSONAnswers())
        self.site._updateLogDateTime = lambda: None  # type: ignore[method-assign]
        self.site.callLater = self.clock.callLater  # type: ignore[attr-defined]
        self.channel: HTTPChannel = self.site.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 40000)
        )  # type: ignore[assignment]
        self.channel.callLater = self.clock.callLater  # type: ignore[method-assign]
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        )
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def turn(self) -> None:
        """Run what was scheduled for the next reactor turn."""
        self.clock.advance(0)

    def clientStopsReading(self) -> None:
        """What the transport does when its write buffer is full."""
        producer = self.transport.producer
        assert producer is not None
        producer.pauseProducing()

    def clientReads(self) -> None:
        """What the transport does once its write buffer drained."""
        producer = self.transport.producer
        assert producer is not None
        producer.resumeProducing()

    @property
    def paused(self) -> bool:
        return self.transport.producerState == "paused"

    def output(self) -> bytes:
        return self.transport.value()

    def responses(self) -> list[Response]:
        return parseResponses(self.output())

    def lose(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.channel.connectionLost(Failure(ConnectionLost()))


def parseResponses(data: bytes) -> list[Response]:
    """Split raw HTTP/1.1 responses (Content-Length, chunked or 1xx)."""
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            responses.append(Response(status, headers, b"", head))
            data = rest
            continue
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                sizeLine, _, rest = rest.partition(b"\r\n")
                size = int(sizeLine, 16)
                body += rest[:size]
                rest = rest[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, rest = rest[:length], rest[length:]
        responses.append(Response(status, headers, body, head))
        data = rest
    return responses
