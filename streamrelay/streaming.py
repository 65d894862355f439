"""
Streaming request bodies for twisted.web.

Stock twisted.web reads a whole request body into ``request.content`` before
it looks up a resource.  L{StreamingRequest} instead dispatches a request to
its resource as soon as its headers are in, and exposes the body as
L{RequestBody}, an L{IBodyProducer} whose pause and resume pause and resume
reading the client's socket.

It also tunes the TCP transports that carry bodies: their read size, their
send size, and (L{sendEagerly}) sending each write at once.  A large body
whose consumer offers a file to write it into (the backend), or which is sent
on by Twisted's HTTP client over TCP (the proxy), is moved there by the
kernel (L{streamrelay.splicing}) instead of being read into Python.

This is the only module of streamrelay that touches Twisted internals
(C{HTTPChannel._command}, C{_path}, C{_version}, C{_savedTimeOut},
C{_send100Continue}, C{_transferDecoder}, C{_handlingRequest},
C{rawDataReceived}, C{length}, C{_maybeChooseTransferDecoder},
C{LineReceiver}'s C{line_mode}, C{_buffer} and C{_busyReceiving},
C{_ChunkedTransferDecoder} with C{_dataReceived_CHUNK_LENGTH}, C{length},
C{dataCallback} and C{finishCallback}, C{_MalformedChunkedDataError},
C{Request._cleanup}, the HTTP client's
C{LengthEnforcingConsumer} with its C{_consumer}, C{_length} and
C{_finished}, and a TCP transport's C{SEND_LIMIT}, C{dataBuffer}, C{offset},
C{_tempDataBuffer}, C{_tempDataLen}, C{_writeDisconnected}, C{socket} and
C{doRead}); it is tested against the Twisted range pinned in setup.cfg.
"""

from __future__ import annotations

import io
import json
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qs

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web._newclient import LengthEnforcingConsumer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import IResource
from zope.interface import implementer

from streamrelay import splicing
from streamrelay.targets import ASTERISK, BadTarget, parseTarget

__all__ = [
    "BodyIncomplete",
    "BodyTimeout",
    "RequestBody",
    "clientGone",
    "StreamingChannel",
    "StreamingRequest",
    "makeSite",
    "sendEagerly",
    "LINGER_SECONDS",
]

#: The methods streamrelay's services serve, as C{OPTIONS *} answers them.
SERVER_METHODS = (b"DELETE", b"GET", b"HEAD", b"OPTIONS", b"PATCH", b"POST", b"PUT")

#: How long an early response waits for the rest of a body before closing.
LINGER_SECONDS = 30.0

#: Read size (and write high-water mark) of a connection streaming a body:
#: 1 MiB while few bodies stream, shrinking so that all of them together
#: read at most about BODY_READ_BUDGET at once.
STREAM_BUFFER_SIZE = 1 << 20
MIN_STREAM_BUFFER_SIZE = 32 << 10
#: Read size of a connection between bodies (Twisted's own): the read that
#: brings the next request's headers holds at most this much of its body
#: until a route starts consuming it.
HEADER_READ_SIZE = 64 << 10
BODY_READ_BUDGET = 16 << 20


def tuneForStreaming(transport: object, readSize: int = STREAM_BUFFER_SIZE) -> None:
    """
    Let a TCP transport read C{readSize} bytes at a time (also its write
    high-water mark) and send up to 1 MiB per system call instead of
    Twisted's 128 KiB, for connections that carry large bodies.
    """
    if transport is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = readSize
        transport.SEND_LIMIT = STREAM_BUFFER_SIZE  # type: ignore[attr-defined]


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


def clientGone(request: object) -> bool:
    """Whether the client of a twisted.web request has disconnected."""
    return bool(getattr(request, "_disconnected", False))


def readSize(streaming: int) -> int:
    """The read size of one of C{streaming} bodies streaming at once."""
    share = BODY_READ_BUDGET // max(1, streaming)
    return max(MIN_STREAM_BUFFER_SIZE, min(STREAM_BUFFER_SIZE, share))


def parseQuery(query: bytes) -> dict[bytes, list[bytes]]:
    """
    The arguments of a query string, names and values as UTF-8 bytes (as
    twisted.web gives them); L{ValueError} (a L{UnicodeDecodeError}) when
    the query, or what one of its percent-escapes decodes to, is not UTF-8.
    """
    if not query:
        return {}
    parsed = parse_qs(query.decode("utf-8"), keep_blank_values=True, errors="strict")
    return {
        name.encode("utf-8"): [value.encode("utf-8") for value in values]
        for name, values in parsed.items()
    }


class BodyTimeout(Exception):
    """The client sent no body byte for the idle timeout while it could."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"no body byte arrived for {self.seconds:g} s"


class BodyIncomplete(Exception):
    """
    The client's connection ended before its whole request body arrived.

    @ivar received: how many body bytes did arrive.
    """

    def __init__(self, received: int, expected: int | None) -> None:
        super().__init__(received, expected)
        self.received = received
        self.expected = expected

    def __str__(self) -> str:
        wanted = "" if self.expected is None else f" of {self.expected}"
        return f"connection closed after {self.received}{wanted} body bytes"


@implementer(IBodyProducer)
class RequestBody:
    """
    The body of a L{StreamingRequest}, produced as it arrives.

    One consumer reads it: C{startProducing(consumer)} returns a Deferred
    that fires once the whole body was written to the consumer, or fails
    when the client goes away or the consumer raises.  The consumer may
    pause, resume and stop it like any push producer.

    A consumer with C{fileTarget()} (returning a L{splicing.FileTarget}, or
    None) and C{wroteToFile(data)} may have a large body with a
    C{Content-Length} on a TCP connection written into that file directly:
    then C{wroteToFile} is called with the bytes (read back from the file)
    in place of C{write}, in order, as they land there.  Twisted's HTTP
    client sending the body on over TCP (its C{LengthEnforcingConsumer})
    may have it moved straight into its connection.

    @ivar length: the declared C{Content-Length}, or L{UNKNOWN_LENGTH} for a
        chunked body.
    @ivar received: body bytes read from the client so far.
    @ivar spliced: whether the body is (or was) moved into its consumer's
        file or connection by the kernel.
    """

    def __init__(self, request: StreamingRequest, length: int | None) -> None:
        self._request = request
        self.length: int = cast(int, UNKNOWN_LENGTH) if length is None else length
        self.received = 0
        self.spliced = False
        self.ended = False
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._pending: list[bytes] = []
        self._paused = False
        self._discarding = False
        self._failure: Failure | None = None
        #: Why the body failed, once it did.
        self.error: BaseException | None = None

    @property
    def declaredLength(self) -> int | None:
        """The C{Content-Length} of the body, or L{None} when chunked."""
        return None if self.length is UNKNOWN_LENGTH else self.length

    @property
    def heldBack(self) -> bool:
        """Whether streamrelay is holding the client back (backpressure)."""
        return (self._request._clientPaused and not self._discarding) or (
            self._request._spliceBlocked()
        )

    # IBodyProducer, for the one consumer

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._consumer is not None or self._discarding:
            raise RuntimeError("a request body can only be consumed once")
        self._consumer = consumer
        self._done = Deferred(self._cancel)
        # Sent on by Twisted's HTTP client (the proxy's upstream request):
        # let its connection send up to 1 MiB per system call, and send each
        # chunk as it comes.  (Its write high-water mark stays small, so many
        # uploads at once hold little memory.)
        inner = getattr(consumer, "_consumer", None) or getattr(consumer, "transport", None)
        if inner is not None and hasattr(inner, "SEND_LIMIT"):
            inner.SEND_LIMIT = STREAM_BUFFER_SIZE
            sendEagerly(inner)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._discarding = True
            done, self._done = self._done, None
            done.errback(failure)
            return done
        done = self._done
        self._request._continueBody()
        if not self._request._startSplicing(consumer):
            self._deliver()
        return done

    def pauseProducing(self) -> None:
        self._paused = True
        self._request._pauseClient()

    def resumeProducing(self) -> None:
        self._paused = False
        self._deliver()

    def stopProducing(self) -> None:
        """
        Drop the rest of the body; the startProducing Deferred never fires.
        """
        self._done = None
        self.discard()

    # Feeding, from the request

    def discard(self) -> None:
        """Read and drop whatever is left of the body."""
        self._discarding = True
        self._pending.clear()
        self._request._stopSplicing()
        self._request._bodyDiscarded()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self._discarding:
            return
        self._pending.append(data)
        self._deliver()

    def bodyEnded(self) -> None:
        self.ended = True
        self._deliver()

    def connectionLost(self, reason: Failure) -> None:
        if self.ended:
            return
        if reason.check(ConnectionDone):
            reason = Failure(BodyIncomplete(self.received, self.declaredLength))
        self._pending.clear()
        self._fail(reason)

    # Internals

    def _wanting(self) -> bool:
        return (
            self._consumer is not None
            and self._done is not None
            and not self._paused
            and not self._discarding
        )

    def _deliver(self) -> None:
        """
        Hand pending data to the consumer while it wants it; pause the
        client whenever it does not.
        """
        while self._pending and self._wanting():
            data = self._pending.pop(0)
            try:
                assert self._consumer is not None
                self._consumer.write(data)
            except BaseException:
                self._fail(Failure())
                return
        if self._discarding:
            return
        if not self._wanting():
            self._request._pauseClient()
            return
        if self.ended:
            done, self._done = self._done, None
            if done is not None:
                self._discarding = True
                done.callback(None)
        else:
            self._request._resumeClient()

    def _fail(self, failure: Failure) -> None:
        self.error = failure.value
        done, self._done = self._done, None
        if done is None and self._consumer is None:
            # Nobody consumes yet: keep it for startProducing.
            self._failure = failure
            return
        self._discarding = True
        self._pending.clear()
        self._request._stopSplicing()
        if not self.ended:
            self._request._bodyDiscarded()
        if done is not None:
            done.errback(failure)

    def _cancel(self, d: Deferred[None]) -> None:
        # The consumer gave up (e.g. Klein cancelled the route): the
        # Deferred fails with CancelledError and the rest is dropped.
        self._done = None
        self.discard()


class StreamingRequest(server.Request):
    """
    A request dispatched to its resource as soon as its headers are in.

    Use as C{Site(resource, requestFactory=StreamingRequest)}.  A request
    with a body has L{body}; a request without one has C{body = None} and is
    handled as stock twisted.web does.  C{request.content} is always empty.
    C{request.args} holds UTF-8 bytes; a query string that is not UTF-8 is
    answered 400 C{bad_request} here, without reaching the resource.

    The request target is parsed once (L{streamrelay.targets}): C{path},
    C{query} and C{uri} (their origin form) are what every check and every
    action on the request use.  A target streamrelay does not serve is
    answered 400 C{bad_request} here too, and C{OPTIONS *} with the methods
    the server allows.
    """

    body: RequestBody | None = None
    _expectContinue = False
    _clientPaused = False
    _idleTimeout: float | None = None
    _channelTimeoutHeld = False
    _bodyTimer: IDelayedCall | None = None
    _dispatchCall: IDelayedCall | None = None
    _lingerCall: IDelayedCall | None = None
    _lingering = False
    _counted = False
    #: Why the request is refused before any resource sees it, if it is.
    _refusal: str | None = None
    #: The query string (after C{?}) of the request target.
    query: bytes = b""
    _splice: _Splice | None = None

    def _uncount(self) -> None:
        """
        This body no longer streams (it ended, or the client left): it
        leaves the count, and its connection reads headers-sized again.
        """
        if self._counted and self.channel is not None:
            self._counted = False
            site: Any = getattr(self.channel, "site", None)
            if site is not None:
                site.streamingBodies = max(0, getattr(site, "streamingBodies", 1) - 1)
            tuneForStreaming(self.channel.transport, HEADER_READ_SIZE)

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        if length == 0:
            return
        channel = self.channel
        self.body = RequestBody(self, length)
        expect = self.requestHeaders.getRawHeaders(b"expect")
        if expect is not None:
            # twisted.web would answer 100 Continue right away; it is sent
            # only once a route starts consuming the body.
            self.requestHeaders.removeHeader(b"expect")
            self._expectContinue = (
                expect[0].lower() == b"100-continue"
                and channel._version == b"HTTP/1.1"
            )
        site: Any = getattr(channel, "site", None)
        streaming = getattr(site, "streamingBodies", 0) + 1
        if site is not None:
            site.streamingBodies = streaming
        self._counted = True
        tuneForStreaming(self.transport, readSize(streaming))
        self._setRequestLine(channel._command, channel._path, channel._version)
        # While the body streams, its own idle timer replaces the channel's:
        # it stops while streamrelay holds the client back, and a stalled
        # client gets a 408 answer instead of a silent close.
        self._idleTimeout = channel.timeOut
        channel.setTimeout(None)
        self._channelTimeoutHeld = True
        self._pauseClient()
        # Never dispatch inside gotLength: a synchronous answer would make the
        # channel parse the rest of this body as new requests.
        self._dispatchCall = channel.callLater(0, self._dispatch)

    def _setRequestLine(self, command: bytes, path: bytes, version: bytes) -> None:
        self.method, self.uri = command, path
        self.clientproto = version
        self.args = {}
        # Refusals are answered by process(): raising here would drop the
        # connection without any answer.
        try:
            target = parseTarget(path, command, self.requestHeaders.getRawHeaders(b"host", []))
        except BadTarget as e:
            self.path = b"/"
            self._refusal = str(e)
            return
        # Every check and every action on this request sees this one parse.
        self.uri, self.path, self.query = target.originForm, target.path, target.query
        if target.host is not None and not self.requestHeaders.hasHeader(b"host"):
            self.requestHeaders.setRawHeaders(b"host", [target.host])
        try:
            self.args = parseQuery(target.query)
        except ValueError:
            self._refusal = "The query string is not valid UTF-8."

    def _dispatch(self) -> None:
        self._dispatchCall = None
        if not self._gone():
            self.process()

    def process(self) -> None:
        if self._refusal is None and self.path != ASTERISK:
            super().process()
            return
        # What server.Request.process sets up before rendering; then an
        # answer with no resource involved: API.md's JSON 400 for a target
        # or query refused, or what the server allows for OPTIONS *.  An
        # unread body is dropped (see _cleanup) and the connection stays
        # usable otherwise.
        from streamrelay.errors import ApiError, writeJSON  # (the app layer, above this one)
        from streamrelay.webapp import answerError, requestId

        self.site = cast(Any, self.channel).site
        self.setHeader(b"server", server.version)
        self.setHeader(b"date", http.datetimeToString())
        if self._refusal is not None:
            self.write(answerError(self, ApiError(400, "bad_request", self._refusal)))
        else:
            self.setHeader(b"allow", b", ".join(SERVER_METHODS))
            self.setHeader(b"x-request-id", requestId(self).encode("ascii"))
            self.write(writeJSON(
                self, 200, {"methods": [m.decode("ascii") for m in SERVER_METHODS]}
            ))
        self.finish()

    def _gone(self) -> bool:
        """Whether the connection is lost or being closed (e.g. refused)."""
        return self._disconnected or bool(getattr(self.transport, "disconnecting", False))

    def handleContentChunk(self, data: bytes) -> None:
        if self.body is not None and data:
            self._armBodyTimer()
            # The next read takes this body's share of the read budget as it
            # is now: bodies that began while few streamed read less once
            # many do.
            site: Any = getattr(self.channel, "site", None)
            if site is not None:
                tuneForStreaming(self.transport, readSize(getattr(site, "streamingBodies", 1)))
            self.body.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        body = self.body
        if body is None:
            self._setRequestLine(command, path, version)
            self.process()
            return
        self._clientPaused = False
        self._disarmBodyTimer()
        self._uncount()
        if self._channelTimeoutHeld:
            # The channel saved "no timeout" because we held it; give it
            # the real one back for the next request.
            self.channel._savedTimeOut = self._idleTimeout
            self._channelTimeoutHeld = False
        body.bodyEnded()
        if self._lingering:
            self._stopLingering()

    # Flow control of the client's connection

    def _pauseClient(self) -> None:
        if self.body is None or self.body.ended or self._gone():
            return
        if self._splice is not None:
            self._splice.splicer.pause()
        else:
            # Re-pause even when already paused: twisted.web may have
            # resumed the transport behind our back.
            cast(IPushProducer, self.transport).pauseProducing()
        self._clientPaused = True
        self._disarmBodyTimer()

    def _resumeClient(self) -> None:
        if not self._clientPaused or self._gone():
            return
        self._clientPaused = False
        self._armBodyTimer()
        if self._splice is not None:
            self._splice.splicer.resume()
        else:
            cast(IPushProducer, self.transport).resumeProducing()

    def _bodyDiscarded(self) -> None:
        """The rest of the body is read and dropped: the channel's own idle
        timeout applies again."""
        self._disarmBodyTimer()
        if self._channelTimeoutHeld and not self._disconnected:
            self._channelTimeoutHeld = False
            self.channel.setTimeout(self._idleTimeout)
        self._resumeClient()

    def _armBodyTimer(self) -> None:
        body = self.body
        if (
            body is None
            or body.ended
            or body._discarding
            or self._clientPaused
            or self._disconnected
            or not self._idleTimeout
        ):
            return
        if self._bodyTimer is not None and self._bodyTimer.active():
            self._bodyTimer.reset(self._idleTimeout)
        else:
            self._bodyTimer = self.channel.callLater(self._idleTimeout, self._bodyTimedOut)

    def _disarmBodyTimer(self) -> None:
        if self._bodyTimer is not None and self._bodyTimer.active():
            self._bodyTimer.cancel()
        self._bodyTimer = None

    def _bodyTimedOut(self) -> None:
        self._bodyTimer = None
        if self.body is not None and self._idleTimeout:
            self.body._fail(Failure(BodyTimeout(self._idleTimeout)))

    # Splicing a body into its consumer's file, or the proxy's upstream

    def _startSplicing(self, consumer: IConsumer) -> bool:
        """
        Have the rest of the body moved into the file C{consumer} offers, or
        into the connection of Twisted's HTTP client under it, if the body
        and connections allow; see L{RequestBody}.  Whether it started.
        """
        global _splicing
        body = self.body
        offer = getattr(consumer, "fileTarget", None)
        upstream = None if offer is not None else _upstreamOf(consumer)
        conn = self.transport
        channel: Any = self.channel
        decoder = getattr(channel, "_transferDecoder", None)
        if (
            (offer is None and upstream is None)
            or body is None
            or body.ended
            or _splicing >= splicing.SPLICE_MAX
            or not splicing.available()
            or not isinstance(conn, tcp.Connection)
            or "doRead" in vars(conn)
            or conn.protocol is not channel
            or type(decoder) is not http._IdentityTransferDecoder
            or decoder.contentLength is None
            or decoder.contentLength < splicing.SPLICE_MIN
            or decoder.contentLength != body.length - body.received
            or channel.line_mode
            or channel._busyReceiving
            or channel._buffer
            or channel._handlingRequest
            or not channel.requests
            or channel.requests[-1] is not self
            or self._gone()
        ):
            return False
        sink: _FileSink | _SocketSink
        if offer is not None:
            target: splicing.FileTarget | None = offer()
            if target is None:
                return False
            sink = _FileSink(consumer, target)
        else:
            assert upstream is not None
            sink = _SocketSink(consumer, upstream)
        prefix, body._pending = body._pending, []
        try:
            seen = sink.take(prefix)
        except BaseException:
            body._fail(Failure())
            return True
        if not sink.ready(decoder.contentLength):
            return False  # the rest goes the usual way
        splice = _Splice(conn, channel, decoder, sink, body.received, seen)
        from twisted.internet import reactor

        splice.splicer = splicing.Splicer(
            cast(Any, reactor).callFromThread,
            conn.socket.fileno(), sink.fd, decoder.contentLength,
            self._spliced, self._spliceEnded, **sink.splicerArgs(),
        )
        conn.doRead = splice.notReading  # type: ignore[method-assign]
        conn.stopReading()
        self._splice = splice
        body.spliced = True
        _splicing += 1
        if body._wanting():
            splice.splicer.start()
            self._resumeClient()
        else:
            # The consumer paused while taking the first bytes.
            splice.splicer.pause()
            splice.splicer.start()
        return True

    def _spliced(self, taken: int, written: int) -> None:
        """(Reactor.)  The splicer took and wrote the body this far."""
        splice, body = self._splice, self.body
        if splice is None or body is None or not self._see(splice, taken, written):
            return
        splice.splicer.seen(written)
        self._armBodyTimer()

    def _see(self, splice: _Splice, taken: int, written: int) -> bool:
        """
        Count what the splicer took and hand what it wrote since last time
        to the consumer; False if the body failed (then or before).
        """
        body = self.body
        if body is None:
            return False
        body.received = splice.received + taken
        if body._discarding or body._done is None:
            return False
        if written > splice.seen:
            try:
                splice.sink.wrote(splice.seen, written)
            except BaseException:
                body._fail(Failure())
                return False
            splice.seen = written
        return True

    def _stopSplicing(self) -> None:
        if self._splice is not None:
            self._splice.splicer.stop()

    def _spliceBlocked(self) -> bool:
        return self._splice is not None and self._splice.splicer.blocked

    def _spliceEnded(self, taken: int, written: int, error: BaseException | None) -> None:
        """(Reactor.)  Give the connection back to the channel."""
        global _splicing
        splice, self._splice = self._splice, None
        assert splice is not None
        _splicing -= 1
        conn, body, decoder = splice.conn, self.body, splice.decoder
        del conn.doRead
        if splice.channel._transferDecoder is decoder and decoder.contentLength is not None:
            decoder.contentLength = splice.remaining - taken
        else:
            decoder = None
        ok = self._see(splice, taken, written)
        failure = splice.sink.failure(error) if error is not None else None
        if ok and failure is not None and body is not None:
            body._fail(Failure(failure))
        if conn.disconnected or conn.disconnecting:
            return
        if decoder is not None and decoder.contentLength == 0:
            # All of it arrived: the channel ends the body as if it had
            # read the last byte itself.
            splice.channel.rawDataReceived(b"")
        # The channel reads what follows (the next request, the end of the
        # connection, or the rest of the body when the splicer stopped early).
        conn.startReading()

    def _continueBody(self) -> None:
        if self._expectContinue:
            self._expectContinue = False
            if self.body is not None and not self.body.ended and not self._disconnected:
                self.channel._send100Continue()

    # Response bodies

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if streaming and getattr(self.channel, "_waitingForTransport", False):
            # twisted.web does not pause a producer registered while the
            # client is not reading: it would fill memory until it does.
            producer.pauseProducing()

    # Responses that finish before the body ends

    def write(self, data: bytes) -> None:
        if (
            not self.startedWriting
            and self.body is not None
            and not self.body.ended
            and not self._disconnected
        ):
            # The rest of the body cannot be parsed as further requests.
            self.setHeader(b"connection", b"close")
            self.channel.persistent = False
        super().write(data)

    def _cleanup(self) -> None:
        body = self.body
        if body is not None and not body.ended and not self._disconnected:
            # Lingering close: closing with unread data would send a RST that
            # can destroy the response we just wrote.
            self._lingering = True
            body.discard()
            self._lingerCall = self.channel.callLater(
                LINGER_SECONDS, self._stopLingering
            )
            return
        super()._cleanup()

    def _stopLingering(self) -> None:
        if not self._lingering:
            return
        self._lingering = False
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        self._lingerCall = None
        super()._cleanup()

    def connectionLost(self, reason: Failure) -> None:
        self._disarmBodyTimer()
        self._uncount()
        if self._dispatchCall is not None and self._dispatchCall.active():
            self._dispatchCall.cancel()
        self._dispatchCall = None
        if self._lingering:
            # The response was written in full; the client just went away
            # without sending the rest of the body.
            self._lingering = False
            if self._lingerCall is not None and self._lingerCall.active():
                self._lingerCall.cancel()
            notifications, self.notifications = self.notifications, []
            for d in notifications:
                d.callback(None)
        super().connectionLost(reason)
        if self.body is not None:
            self.body.connectionLost(reason)


#: Bodies being spliced in this process.
_splicing = 0


class _FileSink:
    """A consumer's file that a body is spliced into (the backend)."""

    def __init__(self, consumer: Any, target: splicing.FileTarget) -> None:
        self.consumer = consumer
        self.target = target
        self.fd = target.fd
        self._prefix: list[bytes] = []

    def take(self, prefix: list[bytes]) -> int:
        """
        Hand the body bytes read before splicing to the consumer; return
        how many of them the splicer still writes (here: all).
        """
        for data in prefix:
            self.consumer.wroteToFile(memoryview(data))
        self._prefix = prefix
        return sum(map(len, prefix))

    def ready(self, remaining: int) -> bool:
        return True

    def splicerArgs(self) -> dict[str, Any]:
        return {"prefix": self._prefix, "offset": self.target.offset}

    def wrote(self, start: int, end: int) -> None:
        """Hand the bytes C{start} to C{end} of the file to the consumer."""
        target, offset = self.target, self.target.offset
        while start < end:
            stop = min(end, start + splicing.VIEW_SIZE)
            with splicing.mapped(target.readFd, offset + start, offset + stop) as data:
                self.consumer.wroteToFile(data)
            start = stop

    def failure(self, error: BaseException) -> BaseException | None:
        return self.target.failure(error)


class _SocketSink:
    """
    The connection of Twisted's HTTP client sending a request with a
    C{Content-Length} (the proxy's upstream), under C{consumer} (the
    client's C{LengthEnforcingConsumer}).
    """

    def __init__(self, consumer: Any, conn: tcp.Connection) -> None:
        self.consumer = consumer
        self.conn = conn
        self.fd = conn.socket.fileno()

    def take(self, prefix: list[bytes]) -> int:
        """Send the body bytes read before splicing the usual way (first)."""
        for data in prefix:
            self.consumer.write(data)
        return 0

    def ready(self, remaining: int) -> bool:
        """Whether the request owes C{remaining} bytes and its headers went."""
        return bool(self.consumer._length == remaining and _flushNow(self.conn))

    def splicerArgs(self) -> dict[str, Any]:
        return {}

    def wrote(self, start: int, end: int) -> None:
        # The consumer counts what the request still owes.
        self.consumer._length -= end - start

    def failure(self, error: BaseException) -> BaseException | None:
        # The upstream connection broke: Twisted's client finds out on its
        # own, and the request fails there.
        return None


def _upstreamOf(consumer: object) -> tcp.Connection | None:
    """The TCP connection of Twisted's HTTP client behind C{consumer}, if any."""
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


def _flushNow(conn: tcp.Connection) -> bool:
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


class _Splice:
    """What a request splicing its body keeps track of."""

    splicer: splicing.Splicer

    def __init__(
        self,
        conn: tcp.Connection,
        channel: Any,
        decoder: Any,
        sink: _FileSink | _SocketSink,
        received: int,
        seen: int,
    ) -> None:
        self.conn = conn
        self.channel = channel
        self.decoder = decoder
        self.sink = sink
        #: Body bytes read before the splicer started, and still to come then.
        self.received = received
        self.remaining = decoder.contentLength
        #: Bytes the splicer wrote that the sink's consumer was told of.
        self.seen = seen

    def notReading(self) -> None:
        # The splicer reads the socket: if twisted.web resumes the
        # transport meanwhile, it reads nothing.
        self.conn.stopReading()


#: The largest chunk size streamrelay reads: 2**63 - 1 (16 hex digits).
MAX_CHUNK_SIZE = (1 << 63) - 1


class Refusal(NamedTuple):
    """The JSON error a request is refused with before any resource sees it."""

    status: int
    reason: bytes
    code: str
    message: str


def transferCodings(value: bytes) -> list[bytes]:
    """
    The transfer codings a C{Transfer-Encoding} field value lists, lower
    case, without empty list elements (RFC 9110 section 5.6.1).
    """
    codings = (item.strip(b" \t").lower() for item in value.split(b","))
    return [coding for coding in codings if coding]


def codingsRefusal(version: bytes, codings: list[bytes]) -> Refusal | None:
    """
    Why a request of HTTP C{version} whose C{Transfer-Encoding} lines list
    C{codings} (all of them, in order) is refused, or None when its body is
    just chunked.

    The body of a request is delimited only when C{chunked} is the last
    coding, and there once (RFC 9112 section 6.3): otherwise 400.  Codings
    before a final C{chunked} (gzip, identity, ...) are ones streamrelay
    does not implement: 501 (RFC 9112 section 6.1).  HTTP/1.0 has no
    transfer codings: its framing is faulty then (400, same section).
    """
    if version == b"HTTP/1.0":
        return Refusal(400, b"Bad Request", "bad_request",
                       "An HTTP/1.0 request cannot have a Transfer-Encoding.")
    if codings == [b"chunked"]:
        return None
    if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        return Refusal(400, b"Bad Request", "bad_request",
                       "Transfer-Encoding must end with chunked, listed once.")
    return Refusal(501, b"Not Implemented", "not_implemented",
                   "The only transfer coding streamrelay reads is chunked.")


def hostRefusal(version: bytes, hosts: list[bytes] | None) -> Refusal | None:
    """
    Why a request of HTTP C{version} with C{Host} lines C{hosts} (None:
    none) is refused, or None: HTTP/1.1 requires exactly one, HTTP/1.0
    allows none (RFC 9112 section 3.2).
    """
    if hosts is None:
        if version == b"HTTP/1.0":
            return None
        return Refusal(400, b"Bad Request", "bad_request",
                       "An HTTP/1.1 request must have a Host header.")
    if len(hosts) > 1:
        return Refusal(400, b"Bad Request", "bad_request",
                       "A request may have only one Host header.")
    return None


def hasBareLineFeed(data: bytes) -> bool:
    """Whether C{data} holds a LF that does not end a CRLF."""
    return data.count(b"\n") != data.count(b"\r\n")


class _ChunkedDecoder(http._ChunkedTransferDecoder):
    """
    twisted.web's decoder of chunked bodies, refusing a chunk size over
    L{MAX_CHUNK_SIZE} (which it would wait on forever) as malformed.
    """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        read = super()._dataReceived_CHUNK_LENGTH()
        if read and self.length > MAX_CHUNK_SIZE:
            raise http._MalformedChunkedDataError("Chunk size too large.")
        return read


class StreamingChannel(http.HTTPChannel):
    """
    HTTP/1.1 with API.md's JSON errors for requests twisted.web refuses
    before any resource sees them: malformed request lines, headers or
    chunking (400), and too long or too many headers (431).

    It also frames requests as RFC 9112 does, so that no front proxy can
    read a request otherwise than streamrelay does: a request whose
    C{Transfer-Encoding} is not C{chunked} alone (400, or 501 for codings
    before a final C{chunked}), with a folded header line (obs-fold), a
    request line or header ending in a bare LF, no C{Host} on HTTP/1.1 or
    several C{Host} lines is refused at its headers, before any resource
    sees it; a chunk size over L{MAX_CHUNK_SIZE} is malformed chunking.
    A refused request's connection is closed, and nothing more is read.
    """

    _headerTimer: IDelayedCall | None = None
    _inHeaders = False
    #: The codings of the request's Transfer-Encoding lines so far.
    _transferCodings: list[bytes] | None = None
    #: Whether a request was refused (the connection is closing).
    _refused = False

    # Headers must arrive whole within the idle timeout, however slowly
    # they trickle in: a slowloris client is cut off with 408.

    def connectionMade(self) -> None:
        super().connectionMade()
        # Downloads leave in up to 1 MiB per send instead of 128 KiB.
        if self.transport is not None and hasattr(self.transport, "SEND_LIMIT"):
            self.transport.SEND_LIMIT = STREAM_BUFFER_SIZE  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            # Whatever follows a refused request is not read.
            return
        if not self._inHeaders and not self._handlingRequest and not self.requests:
            self._inHeaders = True
            if self.timeOut:
                self._headerTimer = self.callLater(self.timeOut, self._headersTimedOut)
        super().dataReceived(data)
        # Lines end with CRLF: a request line or header ending with a bare
        # LF would wait for one forever.  In line mode, what is left unread
        # is (part of) the next request line or header, never body bytes.
        if (
            self.line_mode
            and not self._busyReceiving
            and not self._refused
            and hasBareLineFeed(self._buffer)
        ):
            self._refuseBareLineFeed()

    def lineReceived(self, line: bytes) -> None:
        if b"\n" in line:
            self._refuseBareLineFeed()
            return
        if line[:1] in (b" ", b"\t") and "_command" in vars(self):
            # A header line (the request line is in): twisted.web would
            # join it to the previous header, where others may not.
            self._refuseRequest(Refusal(400, b"Bad Request", "bad_request",
                                        "Header lines must not be folded."))
            return
        super().lineReceived(line)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        if header != b"Transfer-Encoding":
            return bool(super()._maybeChooseTransferDecoder(header, data))
        # Several Transfer-Encoding lines make one list, judged once all
        # headers are in: the body is chunked, or refused before it is read.
        first = self._transferCodings is None
        self._transferCodings = (self._transferCodings or []) + transferCodings(data)
        if not first:
            return True
        if not super()._maybeChooseTransferDecoder(header, b"chunked"):
            return False  # with a Content-Length: refused
        chunked: Any = self._transferDecoder
        self._transferDecoder = _ChunkedDecoder(chunked.dataCallback, chunked.finishCallback)
        return True

    def allHeadersReceived(self) -> None:
        self._stopHeaderTimer()
        codings, self._transferCodings = self._transferCodings, None
        request = self.requests[-1]
        refusal = hostRefusal(self._version, request.requestHeaders.getRawHeaders(b"host"))
        if refusal is None and codings is not None:
            refusal = codingsRefusal(self._version, codings)
        if refusal is not None:
            # Not dispatched: twisted.web would take a request with length
            # 0 as complete once this returns.
            self.length = None
            self._refuseRequest(refusal)
            return
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        self._inHeaders = False
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopHeaderTimer()
        super().connectionLost(reason)

    def _stopHeaderTimer(self) -> None:
        if self._headerTimer is not None and self._headerTimer.active():
            self._headerTimer.cancel()
        self._headerTimer = None

    def _headersTimedOut(self) -> None:
        self._headerTimer = None
        self._refuse(408, b"Request Timeout", "timeout",
                     "The request's headers did not arrive in time.")

    def _refuseBareLineFeed(self) -> None:
        self._refuseRequest(Refusal(400, b"Bad Request", "bad_request",
                                    "Request and header lines must end with CRLF."))

    def _respondToBadRequestAndDisconnect(self) -> None:
        if (
            self._receivedHeaderSize > self.totalHeadersSize
            or self._receivedHeaderCount > self.maxHeaders
        ):
            self._refuseRequest(Refusal(
                431, b"Request Header Fields Too Large", "headers_too_large",
                "The request's headers are too large or too many."))
        else:
            self._refuseRequest(Refusal(400, b"Bad Request", "bad_request",
                                        "The request is not well-formed HTTP/1.1."))

    def _refuseRequest(self, refusal: Refusal) -> None:
        """Answer C{refusal} and close, unless a response is on its way."""
        if any(getattr(r, "startedWriting", False) for r in self.requests):
            # A response is on its way already: all that is left is to close.
            self._refused = True
            self.loseConnection()
            return
        self._refuse(*refusal)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(431, b"Request Header Fields Too Large", "headers_too_large",
                     "A request line or header is too long.")

    def _refuse(self, status: int, reason: bytes, code: str, message: str) -> None:
        self._refused = True
        body = json.dumps({"error": code, "message": message}).encode("ascii")
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        self.loseConnection()


def makeSite(resource: IResource, idleTimeout: float | None) -> server.Site:
    """
    A Site serving C{resource} with streamed request bodies and JSON
    errors; C{idleTimeout} seconds of silence close a connection (a body
    that stalls is answered 408 first).
    """
    site = server.Site(resource, requestFactory=StreamingRequest)
    site.protocol = StreamingChannel  # type: ignore[assignment]
    site.timeOut = idleTimeout or None
    site.displayTracebacks = False
    return site
