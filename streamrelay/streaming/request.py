"""
L{StreamingRequest}: a twisted.web request dispatched to its resource as
soon as its headers are in, its body (L{RequestBody}) streamed to the
resource as it arrives, with flow control, an idle timer, splicing and a
lingering close for answers that come before the body's end.
"""

from __future__ import annotations

import io
from typing import Any, cast
from urllib.parse import parse_qs

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from twisted.web import http, server

from streamrelay.streaming.answers import AnswerRenderer, PlainAnswers
from streamrelay.streaming.body import BodyTimeout, RequestBody
from streamrelay.streaming.internals import (
    RequestHooks,
    clientNotReading,
    requestLine,
    send100Continue,
    setTimeoutAfterRequest,
)
from streamrelay.streaming.splice import Splice, trySplice
from streamrelay.streaming.tuning import HEADER_READ_SIZE, readSize, tuneForStreaming
from streamrelay.targets import ASTERISK, BadTarget, parseTarget

__all__ = ["LINGER_SECONDS", "SERVER_METHODS", "StreamingRequest", "parseQuery", "stopCall"]

#: The methods streamrelay's services serve, as C{OPTIONS *} answers them.
SERVER_METHODS = (b"DELETE", b"GET", b"HEAD", b"OPTIONS", b"PATCH", b"POST", b"PUT")

#: How long an early response waits for the rest of a body before closing.
LINGER_SECONDS = 30.0

_PLAIN = PlainAnswers()

# The states of a StreamingRequest (see its _state).
NO_BODY = "NO_BODY"
RECEIVING = "RECEIVING"
DISCARDING = "DISCARDING"
LINGERING = "LINGERING"
ENDED = "ENDED"
GONE = "GONE"
#: States in which the body is still arriving on an open connection (and
#: counts among the site's streaming bodies).
_ARRIVING = (RECEIVING, DISCARDING, LINGERING)


def stopCall(call: IDelayedCall | None) -> None:
    """Cancel C{call} unless it ran or was cancelled already."""
    if call is not None and call.active():
        call.cancel()


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


class StreamingRequest(RequestHooks):
    """
    A request dispatched to its resource as soon as its headers are in.

    Use as C{Site(resource, requestFactory=StreamingRequest)} (or
    L{makeSite}).  A request with a body has L{body}; a request without one
    has C{body = None} and is handled as stock twisted.web does.
    C{request.content} is always empty.  C{request.args} holds UTF-8 bytes;
    a query string that is not UTF-8 is answered 400 C{bad_request} here,
    without reaching the resource.

    The request target is parsed once (L{streamrelay.targets}): C{path},
    C{query} and C{uri} (their origin form) are what every check and every
    action on the request use.  A target streamrelay does not serve is
    answered 400 C{bad_request} here too, and C{OPTIONS *} with the methods
    the server allows.

    @ivar _state: what the request's body is doing; one of:

          - NO_BODY: the state a request starts in, and stays in when it
            has no body (its C{Content-Length} is 0): twisted.web handles it.

          - RECEIVING: L{gotLength} announced a body.  The site counts it
            among its streaming bodies; the channel's idle timeout is held
            (saved as C{_idleTimeout}) and the body's own timer
            (C{_bodyTimer}) runs while the client may send.  The client is
            paused until a consumer takes the body, and whenever it does
            not want more (C{_clientPaused}).  The body may be moved by the
            kernel meanwhile (C{_splice}).

          - DISCARDING: the consumer stopped, cancelled or failed the body
            before it ended (from RECEIVING): the rest is read and dropped,
            the channel's idle timeout applies again.

          - LINGERING: the response finished before the body ended (from
            RECEIVING or DISCARDING): twisted.web's cleanup of the request
            waits for the rest of the body, the client closing, or
            L{LINGER_SECONDS}; on the timeout, the cleanup closes the
            connection and the request is GONE, its body incomplete.

          - ENDED: the whole body arrived (from RECEIVING, DISCARDING or
            LINGERING): it left the site's count, the channel has its idle
            timeout back.

          - GONE: the connection was lost (from any state).  Nothing else
            happens to the request.

    @ivar _clientPaused: whether the client's connection (or its splice)
        is paused by this request.
    @ivar _idleTimeout: the channel's idle timeout, which the body's timer
        uses while the body streams.
    @ivar _bodyTimer: the body's idle timer, while it runs.
    @ivar _dispatchCall: the call that dispatches the request on the turn
        after its headers, until it does.
    @ivar _lingerCall: the end of the lingering close, while LINGERING.
    @ivar _expectContinue: whether the client waits for C{100 Continue},
        sent once a consumer starts on the body.
    @ivar _refusal: why the request is refused before any resource sees
        it, if it is.
    @ivar _splice: the kernel splice moving the body, while it runs.
    """

    body: RequestBody | None = None
    _state = NO_BODY
    _expectContinue = False
    _clientPaused = False
    _idleTimeout: float | None = None
    _bodyTimer: IDelayedCall | None = None
    _dispatchCall: IDelayedCall | None = None
    _lingerCall: IDelayedCall | None = None
    _refusal: str | None = None
    _splice: Splice | None = None
    #: Body bytes the splice had taken when its timer last ran out.
    _spliceTaken = 0
    #: The query string (after C{?}) of the request target.
    query: bytes = b""

    @property
    def clientPaused(self) -> bool:
        return self._clientPaused

    def _uncount(self) -> None:
        """
        This body no longer streams (it ended, or the client left): it
        leaves the count, and its connection reads headers-sized again.
        """
        if self.channel is not None:
            site: Any = getattr(self.channel, "site", None)
            if site is not None:
                site.streamingBodies = max(0, getattr(site, "streamingBodies", 1) - 1)
            tuneForStreaming(self.channel.transport, HEADER_READ_SIZE)

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()
        if length == 0:
            return
        channel = self.channel
        command, path, version = requestLine(channel)
        self.body = RequestBody(self, length)
        self._state = RECEIVING
        expect = self.requestHeaders.getRawHeaders(b"expect")
        if expect is not None:
            # twisted.web would answer 100 Continue right away; it is sent
            # only once a route starts consuming the body.
            self.requestHeaders.removeHeader(b"expect")
            self._expectContinue = (
                expect[0].lower() == b"100-continue" and version == b"HTTP/1.1"
            )
        site: Any = getattr(channel, "site", None)
        streaming = getattr(site, "streamingBodies", 0) + 1
        if site is not None:
            site.streamingBodies = streaming
        tuneForStreaming(self.transport, readSize(streaming))
        self._setRequestLine(command, path, version)
        # While the body streams, its own idle timer replaces the channel's:
        # it stops while streamrelay holds the client back, and a stalled
        # client gets a 408 answer instead of a silent close.
        self._idleTimeout = channel.timeOut
        channel.setTimeout(None)
        self.pauseClient()
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
        # answer with no resource involved: a 400 for a target or query
        # refused, or what the server allows for OPTIONS *.  An unread body
        # is dropped (see cleanupAfterResponse) and the connection stays
        # usable otherwise.
        self.site = cast(Any, self.channel).site
        answers: AnswerRenderer = getattr(self.site, "answers", _PLAIN)
        self.setHeader(b"server", server.version)
        self.setHeader(b"date", http.datetimeToString())
        if self._refusal is not None:
            status = 400
            contentType, body = answers.error(self, status, "bad_request", self._refusal)
        else:
            status = 200
            self.setHeader(b"allow", b", ".join(SERVER_METHODS))
            contentType, body = answers.document(
                self, status, {"methods": [m.decode("ascii") for m in SERVER_METHODS]}
            )
        self.setResponseCode(status)
        self.setHeader(b"content-type", contentType)
        self.setHeader(b"content-length", b"%d" % (len(body),))
        self.write(body)
        self.finish()

    def _gone(self) -> bool:
        """Whether the connection is lost or being closed (e.g. refused)."""
        return self._state is GONE or bool(getattr(self.transport, "disconnecting", False))

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
        previous, self._state = self._state, ENDED
        self._clientPaused = False
        self._disarmBodyTimer()
        if previous in _ARRIVING:
            self._uncount()
        if previous is RECEIVING:
            # The channel saved "no timeout" because we held it; give it
            # the real one back for the next request.
            setTimeoutAfterRequest(self.channel, self._idleTimeout)
        body.bodyEnded()
        if previous is LINGERING:
            self._endLingering()

    # Flow control of the client's connection (BodyControl, for the body)

    def pauseClient(self) -> None:
        if self._state not in _ARRIVING or self._gone():
            return
        if self._splice is not None:
            self._splice.splicer.pause()
        else:
            # Re-pause even when already paused: twisted.web may have
            # resumed the transport behind our back.
            cast(IPushProducer, self.transport).pauseProducing()
        self._clientPaused = True
        self._disarmBodyTimer()

    def resumeClient(self) -> None:
        if not self._clientPaused or self._gone():
            return
        self._clientPaused = False
        self._armBodyTimer()
        if self._splice is not None:
            self._splice.splicer.resume()
        else:
            cast(IPushProducer, self.transport).resumeProducing()

    def bodyDiscarded(self) -> None:
        """The rest of the body is read and dropped: the channel's own idle
        timeout applies again."""
        self._disarmBodyTimer()
        if self._state is RECEIVING:
            self._state = DISCARDING
            self.channel.setTimeout(self._idleTimeout)
        self.resumeClient()

    def continueBody(self) -> None:
        if self._expectContinue:
            self._expectContinue = False
            if self._state in _ARRIVING:
                send100Continue(self.channel)

    def _armBodyTimer(self) -> None:
        if (
            self._state is not RECEIVING
            or self._clientPaused
            or not self._idleTimeout
            or cast(RequestBody, self.body).discarding
        ):
            return
        if self._bodyTimer is not None and self._bodyTimer.active():
            self._bodyTimer.reset(self._idleTimeout)
        else:
            self._bodyTimer = self.channel.callLater(self._idleTimeout, self._bodyTimedOut)

    def _disarmBodyTimer(self) -> None:
        stopCall(self._bodyTimer)
        self._bodyTimer = None

    def _bodyTimedOut(self) -> None:
        self._bodyTimer = None
        if self._splice is not None and self._spliceMoved():
            # A splice reports only every few MiB: at a slow consumer's
            # pace that can be longer than the timeout while bytes flow.
            self._armBodyTimer()
            return
        if self.body is not None and self._idleTimeout:
            self.body.fail(Failure(BodyTimeout(self._idleTimeout)))

    def _spliceMoved(self) -> bool:
        """
        Whether the splice took body bytes since this was last asked, or
        waits for its consumer's side to take more: then the client is not
        silent, only held back.
        """
        splice = cast(Splice, self._splice)
        taken = splice.splicer.taken
        moved = splice.blocked or taken != self._spliceTaken
        self._spliceTaken = taken
        return moved

    # Splicing the body into its consumer's file, or the proxy's upstream
    # (BodyControl, for the body)

    def startSplicing(self, consumer: IConsumer) -> bool:
        body = self.body
        if body is None or self._gone():
            return False
        handled, splice = trySplice(self, body, consumer, self._armBodyTimer, self._spliceEnded)
        if splice is None:
            return handled
        self._splice = splice
        if body.wanting():
            splice.splicer.start()
            self.resumeClient()
        else:
            # The consumer paused while taking the first bytes.
            splice.splicer.pause()
            splice.splicer.start()
        return True

    def stopSplicing(self) -> None:
        if self._splice is not None:
            self._splice.splicer.stop()

    def spliceBlocked(self) -> bool:
        return self._splice is not None and self._splice.blocked

    def _spliceEnded(self) -> None:
        self._splice = None

    # Response bodies

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if streaming and clientNotReading(self.channel):
            # twisted.web does not pause a producer registered while the
            # client is not reading: it would fill memory until it does.
            producer.pauseProducing()

    # Responses that finish before the body ends

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self._state in _ARRIVING:
            # The rest of the body cannot be parsed as further requests.
            self.setHeader(b"connection", b"close")
            self.channel.persistent = False
        super().write(data)

    def cleanupAfterResponse(self) -> None:
        if self._state is RECEIVING or self._state is DISCARDING:
            # Lingering close: closing with unread data would send a RST that
            # can destroy the response we just wrote.
            cast(RequestBody, self.body).discard()
            self._state = LINGERING
            self._lingerCall = self.channel.callLater(LINGER_SECONDS, self._lingerTimedOut)
            return
        super().cleanupAfterResponse()

    def _lingerTimedOut(self) -> None:
        self._lingerCall = None
        if self._state is not LINGERING:
            return
        # The cleanup closes the connection and takes this request off the
        # channel, which then never tells it of the connection's end: the
        # body ends here, incomplete, and leaves the site's count.
        self._state = GONE
        self._uncount()
        self._endLingering()
        if self.body is not None:
            self.body.connectionLost(Failure(ConnectionDone(
                f"the rest of the body did not arrive within {LINGER_SECONDS:g} s"
                " of the answer"
            )))

    def _endLingering(self) -> None:
        """The cleanup the lingering close held back."""
        stopCall(self._lingerCall)
        self._lingerCall = None
        super().cleanupAfterResponse()

    def connectionLost(self, reason: Failure) -> None:
        previous, self._state = self._state, GONE
        self._disarmBodyTimer()
        if previous in _ARRIVING:
            self._uncount()
        stopCall(self._dispatchCall)
        self._dispatchCall = None
        if previous is LINGERING:
            # The response was written in full; the client just went away
            # without sending the rest of the body.
            stopCall(self._lingerCall)
            self._lingerCall = None
            notifications, self.notifications = self.notifications, []
            for d in notifications:
                d.callback(None)
        super().connectionLost(reason)
        if self.body is not None:
            self.body.connectionLost(reason)
