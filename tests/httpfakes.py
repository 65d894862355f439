"""
In-memory HTTP/1.1 connections to a twisted.web Site using
L{StreamingRequest}: real parsing, fake transport and clock; and a
resource that takes uploads through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from streamrelay.streaming import BodyTimeout, StreamingRequest, makeSite
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


@implementer(IConsumer)
class ListConsumer:
    """Keeps what it is written; can pause its producer on each write."""

    def __init__(self, pauseEach: bool = False, failAfter: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.producer: IPushProducer | None = None
        self.pauseEach = pauseEach
        self.failAfter = failAfter

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        assert IPushProducer.providedBy(producer)
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.failAfter is not None and len(self.chunks) > self.failAfter:
            raise OSError("disk on fire")
        if self.pauseEach and self.producer is not None:
            self.producer.pauseProducing()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class Upload(Resource):
    """
    A PUT target: records its requests; C{consume} decides whether it reads
    the body or answers at once with 413.
    """

    isLeaf = True

    def __init__(self, consume: bool = True, consumer: ListConsumer | None = None) -> None:
        super().__init__()
        self.consume = consume
        self.consumer = consumer or ListConsumer()
        self.requests: list[StreamingRequest] = []
        self.results: list[object] = []

    def render_PUT(self, request: StreamingRequest) -> object:
        self.requests.append(request)
        if not self.consume or request.body is None:
            request.setResponseCode(413 if request.body is not None else 200)
            request.setHeader(b"content-length", b"2")
            return b"no"
        body = request.body
        if self.consumer.producer is None:
            self.consumer.registerProducer(body, True)
        d = body.startProducing(self.consumer)

        def done(result: object) -> None:
            self.results.append(result)
            if isinstance(result, Failure):
                if result.check(BodyTimeout):
                    request.setResponseCode(408)
                    request.setHeader(b"content-length", b"0")
                    request.finish()
                return
            answer = b"%d" % (len(self.consumer.data),)
            request.setHeader(b"content-length", b"%d" % (len(answer),))
            request.write(answer)
            request.finish()

        d.addBoth(done)
        return NOT_DONE_YET

    def render_GET(self, request: StreamingRequest) -> bytes:
        self.requests.append(request)
        request.setHeader(b"content-length", b"2")
        return b"ok"
