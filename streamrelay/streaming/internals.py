"""
Every Twisted internal streamrelay relies on, behind a named helper.

twisted.web has no public API for streaming request bodies (see
twisted/twisted#4688), for handing a connection's reads to a kernel splice,
or for tuning a TCP transport's send path.  What streamrelay needs of its
internals is read and written here and nowhere else; L{PRIVATE_NAMES} lists
each name, and a test asserts that each still exists in the installed
Twisted, so an upgrade that drops one fails in one place.  The private
hooks the streaming package overrides (C{Request._cleanup},
C{HTTPChannel._maybeChooseTransferDecoder},
C{HTTPChannel._respondToBadRequestAndDisconnect}) are given public names
here, by L{RequestHooks} and L{ChannelHooks}; the interim (1xx) responses
that Twisted's HTTP client reads and drops are told of by
L{ClientProtocolHooks} (on the connections of a L{ConnectionPoolHooks}).

Tested against the Twisted range pinned in setup.cfg.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web._newclient import HTTP11ClientProtocol, HTTPClientParser, LengthEnforcingConsumer
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

__all__ = [
    "PRIVATE_NAMES",
    "BoundedChunkedDecoder",
    "ChannelHooks",
    "ClientProtocolHooks",
    "ConnectionPoolHooks",
    "InterimObserver",
    "RequestHooks",
    "MAX_CHUNK_SIZE",
    "bodyBytesLeft",
    "busyReceiving",
    "channelIdle",
    "channelMidParse",
    "chunkedDecoder",
    "clientGone",
    "clientNotReading",
    "connectionUnder",
    "flushNow",
    "headerCounts",
    "identityDecoder",
    "producerConnection",
    "readingTakenOver",
    "requestLine",
    "requestLineRead",
    "sendEagerly",
    "send100Continue",
    "setBodyBytesLeft",
    "hasSendLimit",
    "setSendLimit",
    "setTimeoutAfterRequest",
    "takeOverReading",
    "giveBackReading",
    "transferDecoder",
    "unparsed",
    "upstreamConnection",
    "upstreamOwes",
    "upstreamSent",
]

#: The private (or internal) names of Twisted used here, by the class or
#: module that has them.  Some are set on instances only (the request line
#: an C{HTTPChannel} keeps while it parses a request, say): the test that
#: checks them looks on instances in use.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "twisted.web.http": (
        "_ChunkedTransferDecoder", "_IdentityTransferDecoder", "_MalformedChunkedDataError",
    ),
    "twisted.web.http._ChunkedTransferDecoder": ("_dataReceived_CHUNK_LENGTH", "length"),
    "twisted.web.http._IdentityTransferDecoder": ("contentLength",),
    "twisted.web.http.HTTPChannel": (
        "_command", "_path", "_version", "_send100Continue", "_savedTimeOut",
        "_waitingForTransport", "_handlingRequest", "_receivedHeaderSize",
        "_receivedHeaderCount", "_transferDecoder", "_buffer", "_busyReceiving",
        "_maybeChooseTransferDecoder", "_respondToBadRequestAndDisconnect", "line_mode",
    ),
    "twisted.web.http.Request": ("_cleanup", "_disconnected"),
    "twisted.web._newclient.LengthEnforcingConsumer": ("_consumer", "_length", "_finished"),
    "twisted.web._newclient.TransportProxyProducer": ("_producer",),
    "twisted.web._newclient.HTTP11ClientProtocol": ("_parser", "_currentRequest"),
    # Public names, of a class of a private module: what an interim
    # response is read from before the parser drops it.
    "twisted.web._newclient.HTTPClientParser": (
        "allHeadersReceived", "response", "headers", "connHeaders",
    ),
    "twisted.web._newclient.Request": ("bodyProducer",),
    "twisted.web.client": ("_HTTP11ClientFactory",),
    "twisted.web.client._HTTP11ClientFactory": ("_quiescentCallback",),
    "twisted.web.client.HTTPConnectionPool": ("_factory",),
    "twisted.internet.tcp.Connection": (
        "SEND_LIMIT", "dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen",
        "_writeDisconnected", "socket", "doRead",
    ),
}

#: The largest chunk size streamrelay reads: 2**63 - 1 (16 hex digits).
MAX_CHUNK_SIZE = (1 << 63) - 1


# The HTTP channel (HTTP/1.1)


def requestLine(channel: Any) -> tuple[bytes, bytes, bytes]:
    """The method, target and version of the request C{channel} parses."""
    return channel._command, channel._path, channel._version


def requestLineRead(channel: Any) -> bool:
    """Whether C{channel} has read the request line of the request it parses."""
    return "_command" in vars(channel)


def send100Continue(channel: Any) -> None:
    """Have C{channel} send C{100 Continue}."""
    channel._send100Continue()


def setTimeoutAfterRequest(channel: Any, timeout: float | None) -> None:
    """
    The idle timeout C{channel} restores once its current request is done:
    it saved the one it had when its timeout was set to None.
    """
    channel._savedTimeOut = timeout


def clientNotReading(channel: Any) -> bool:
    """Whether the client of C{channel} stopped reading (its transport paused it)."""
    return bool(getattr(channel, "_waitingForTransport", False))


def channelMidParse(channel: Any) -> bool:
    """
    Whether C{channel} is in the middle of parsing: in line mode, inside
    its C{dataReceived}, holding unparsed bytes, or handling a request.
    """
    return bool(
        channel.line_mode
        or channel._busyReceiving
        or channel._buffer
        or channel._handlingRequest
    )


def channelIdle(channel: Any) -> bool:
    """Whether C{channel} handles no request and parses none (between requests)."""
    return not channel._handlingRequest and not channel.requests


def busyReceiving(channel: Any) -> bool:
    """Whether C{channel} is inside its own C{dataReceived}."""
    return bool(channel._busyReceiving)


def unparsed(channel: Any) -> bytes:
    """The bytes C{channel} holds that it did not parse yet (in line mode)."""
    return bytes(channel._buffer)


def headerCounts(channel: Any) -> tuple[int, int]:
    """The size and the number of the header lines C{channel} received."""
    return channel._receivedHeaderSize, channel._receivedHeaderCount


def transferDecoder(channel: Any) -> Any:
    """The decoder of the body C{channel} reads, if any."""
    return getattr(channel, "_transferDecoder", None)


def identityDecoder(channel: Any) -> Any:
    """
    The decoder of the body with a C{Content-Length} that C{channel} reads,
    or None (a chunked body, or none).
    """
    decoder = getattr(channel, "_transferDecoder", None)
    if type(decoder) is not http._IdentityTransferDecoder:
        return None
    return decoder


def bodyBytesLeft(decoder: Any) -> int | None:
    """How many body bytes the identity C{decoder} still expects."""
    return decoder.contentLength  # type: ignore[no-any-return]


def setBodyBytesLeft(decoder: Any, left: int) -> None:
    decoder.contentLength = left


def chunkedDecoder(channel: Any) -> Any:
    """
    Replace the chunked decoder C{channel} just chose by a
    L{BoundedChunkedDecoder} with the same callbacks.
    """
    chunked = channel._transferDecoder
    channel._transferDecoder = BoundedChunkedDecoder(chunked.dataCallback, chunked.finishCallback)
    return channel._transferDecoder


class BoundedChunkedDecoder(http._ChunkedTransferDecoder):
    """
    twisted.web's decoder of chunked bodies, refusing a chunk size over
    L{MAX_CHUNK_SIZE} (which it would wait on forever) as malformed.
    """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        read = super()._dataReceived_CHUNK_LENGTH()
        if read and self.length > MAX_CHUNK_SIZE:
            raise http._MalformedChunkedDataError("Chunk size too large.")
        return read


class ChannelHooks(http.HTTPChannel):
    """
    twisted.web's HTTP/1.1 channel, with the private hooks a subclass
    overrides under public names.
    """

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        return self.chooseTransferDecoder(header, data)

    def chooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        """
        Choose the body's decoder for a C{Content-Length} or
        C{Transfer-Encoding} line C{header: data}; False refuses the request.
        """
        return bool(http.HTTPChannel._maybeChooseTransferDecoder(self, header, data))

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuseMalformed()

    def refuseMalformed(self) -> None:
        """Answer a request twisted.web cannot parse, and close."""
        http.HTTPChannel._respondToBadRequestAndDisconnect(self)


# Requests


class RequestHooks(server.Request):
    """
    twisted.web's request, with the private hook a subclass overrides under
    a public name.
    """

    def _cleanup(self) -> None:
        self.cleanupAfterResponse()

    def cleanupAfterResponse(self) -> None:
        """
        What twisted.web does once the response is finished: the channel
        goes on to the next request, C{notifyFinish} Deferreds fire.
        """
        server.Request._cleanup(self)


def clientGone(request: object) -> bool:
    """Whether the client of a twisted.web request has disconnected."""
    return bool(getattr(request, "_disconnected", False))


# TCP transports


def hasSendLimit(transport: object) -> bool:
    """Whether C{transport} sends at most its C{SEND_LIMIT} per system call (TCP)."""
    return transport is not None and hasattr(transport, "SEND_LIMIT")


def setSendLimit(transport: object, limit: int) -> None:
    """Let a TCP transport send up to C{limit} bytes per system call."""
    transport.SEND_LIMIT = limit  # type: ignore[attr-defined]


def sendEagerly(transport: object) -> None:
    """
    Let a TCP transport send each write at once while nothing waits in its
    buffer, instead of at the reactor's next pass.

    A proxied body chunk then leaves while it is still in the CPU's cache,
    and the transport neither registers for writability nor pauses and
    resumes its producer around every chunk.  What the socket does not take
    is buffered and sent as before, and pauses the producer as before; a
    socket error is left to that path, which reports it as a lost
    connection.  Other transports (TLS, say) are left alone.
    """
    if not isinstance(transport, tcp.Connection) or "write" in vars(transport):
        return
    conn = transport
    buffered = type(conn).write

    def write(data: bytes) -> None:
        if (
            conn.connected
            and not conn.disconnecting
            and not conn._writeDisconnected
            and not conn._tempDataBuffer
            and conn.offset == len(conn.dataBuffer)
        ):
            try:
                sent = conn.socket.send(data)
            except OSError:
                sent = 0  # full (EAGAIN), or an error the buffered path reports
            if sent == len(data):
                return
            data = data[sent:]
        buffered(conn, data)

    conn.write = write  # type: ignore[method-assign]


def flushNow(conn: tcp.Connection) -> bool:
    """
    Send what C{conn} holds queued (the request's headers) at once; whether
    all of it went.  What did not stays queued for the reactor to send.
    """
    pending = bytes(conn.dataBuffer[conn.offset:]) + b"".join(conn._tempDataBuffer)
    if not pending:
        return True
    try:
        sent = conn.socket.send(pending)
    except OSError:
        sent = 0
    conn.dataBuffer, conn.offset = pending[sent:], 0
    conn._tempDataBuffer, conn._tempDataLen = [], 0
    return sent == len(pending)


def readingTakenOver(conn: tcp.Connection) -> bool:
    """Whether L{takeOverReading} holds C{conn}'s reads."""
    return "doRead" in vars(conn)


def takeOverReading(conn: tcp.Connection, instead: Callable[[], object]) -> None:
    """
    Stop C{conn} reading, and have C{instead} run in place of its reads
    should anything start it again (the socket is read elsewhere).
    """
    conn.doRead = instead  # type: ignore[method-assign,assignment]
    conn.stopReading()


def giveBackReading(conn: tcp.Connection) -> None:
    """Undo L{takeOverReading} (C{conn} is not reading yet)."""
    del conn.doRead


# Twisted's HTTP client


def connectionUnder(consumer: object) -> Any:
    """
    The connection under C{consumer}: what Twisted's HTTP client's
    C{LengthEnforcingConsumer} writes to, or a consumer's C{transport}.
    """
    return getattr(consumer, "_consumer", None) or getattr(consumer, "transport", None)


def producerConnection(transport: object) -> Any:
    """
    The connection under the C{TransportProxyProducer} that Twisted's HTTP
    client gives a response body's protocol as its transport.
    """
    return getattr(transport, "_producer", None)


def upstreamConnection(consumer: object) -> tcp.Connection | None:
    """
    The TCP connection of Twisted's HTTP client behind C{consumer} (its
    C{LengthEnforcingConsumer}, sending a request body), if any.
    """
    if type(consumer) is not LengthEnforcingConsumer:
        return None
    conn = getattr(consumer, "_consumer", None)
    if (
        not isinstance(conn, tcp.Connection)
        or not conn.connected
        or conn.disconnecting
        or getattr(consumer, "_finished", None) is None
    ):
        return None
    return conn


def upstreamOwes(consumer: Any) -> int:
    """How many body bytes the request C{consumer} sends still owes."""
    return consumer._length  # type: ignore[no-any-return]


def upstreamSent(consumer: Any, count: int) -> None:
    """Count C{count} body bytes sent past C{consumer} (by a splice)."""
    consumer._length -= count


#: What is told of an interim (1xx) response: its status, its reason
#: phrase, and all its headers.
InterimObserver = Callable[[int, bytes, Headers], object]

_clientLog = Logger()


def _watchInterim(parser: HTTPClientParser, observer: InterimObserver) -> None:
    """
    Have C{observer} told of each interim response C{parser} reads, when
    its header section ends: before the parser (C{allHeadersReceived})
    drops it and starts on the next response.  What C{observer} raises is
    logged, never raised into the parser.
    """
    plain = parser.allHeadersReceived

    def allHeadersReceived() -> None:
        response = getattr(parser, "response", None)
        if response is not None and 100 <= response.code < 200:
            headers = Headers()
            for source in (parser.connHeaders, parser.headers):
                for name, values in source.getAllRawHeaders():
                    for value in values:
                        headers.addRawHeader(name, value)
            try:
                observer(response.code, response.phrase, headers)
            except Exception:
                _clientLog.failure("while telling of a {code} interim response",
                                   code=response.code)
        plain()

    parser.allHeadersReceived = allHeadersReceived  # type: ignore[method-assign]


class ClientProtocolHooks(HTTP11ClientProtocol):
    """
    Twisted's HTTP/1.1 client protocol, which reads the interim (1xx)
    responses to a request and drops them (C{HTTPClientParser}), asking
    L{interimObserver} for each request it sends who is told of them, as
    each arrives.
    """

    def request(self, request: Any) -> Any:
        sent = super().request(request)
        parser, current = self._parser, self._currentRequest
        # (A request refused at once, the connection busy, has no parser.)
        if current is not None and current is request and parser is not None:
            observer = self.interimObserver(current.bodyProducer)
            if observer is not None:
                _watchInterim(parser, observer)
        return sent

    def interimObserver(self, bodyProducer: IBodyProducer | None) -> InterimObserver | None:
        """
        Who is told of the interim responses to the request whose body
        C{bodyProducer} sends (None: a request without a body), if anyone.
        """
        return None


class ConnectionPoolHooks(HTTPConnectionPool):
    """
    Twisted's pool of HTTP client connections, whose new connections speak
    L{clientProtocol} (called with the pool's callback for a connection
    that is idle again).
    """

    clientProtocol: Callable[[Callable[[Any], None]], HTTP11ClientProtocol] = (
        HTTP11ClientProtocol
    )

    def __init__(self, reactor: Any, persistent: bool = True) -> None:
        super().__init__(reactor, persistent)
        build = type(self).clientProtocol

        class Factory(_HTTP11ClientFactory):  # type: ignore[misc]
            def buildProtocol(self, addr: IAddress | None) -> HTTP11ClientProtocol:
                return build(self._quiescentCallback)

        self._factory = Factory
