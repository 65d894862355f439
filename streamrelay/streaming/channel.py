"""
L{StreamingChannel}: twisted.web's HTTP/1.1 channel framing requests as
RFC 9112 does, and refusing what twisted.web would refuse (or read
otherwise) with the application's error answers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from streamrelay.streaming.answers import AnswerRenderer, PlainAnswers
from streamrelay.streaming.internals import (
    MAX_CHUNK_SIZE,
    ChannelHooks,
    busyReceiving,
    channelIdle,
    chunkedDecoder,
    hasSendLimit,
    headerCounts,
    requestLine,
    requestLineRead,
    setSendLimit,
    unparsed,
)
from streamrelay.streaming.request import stopCall
from streamrelay.streaming.tuning import STREAM_BUFFER_SIZE

__all__ = [
    "MAX_CHUNK_SIZE",
    "Refusal",
    "StreamingChannel",
    "codingsRefusal",
    "hasBareLineFeed",
    "hostRefusal",
    "transferCodings",
]

_PLAIN = PlainAnswers()


class Refusal(NamedTuple):
    """The error a request is refused with before any resource sees it."""

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
    coding, and there once (RFC 9112 section 6.3), and when no line is
    empty (an empty coding, C{b""}): otherwise 400.  Codings
    before a final C{chunked} (gzip, identity, ...) are ones streamrelay
    does not implement: 501 (RFC 9112 section 6.1).  HTTP/1.0 has no
    transfer codings: its framing is faulty then (400, same section).
    """
    if version == b"HTTP/1.0":
        return Refusal(400, b"Bad Request", "bad_request",
                       "An HTTP/1.0 request cannot have a Transfer-Encoding.")
    if codings == [b"chunked"]:
        return None
    if (
        not codings
        or codings[-1] != b"chunked"
        or codings.count(b"chunked") > 1
        or b"" in codings
    ):
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


class StreamingChannel(ChannelHooks):
    """
    HTTP/1.1 with the application's errors (its site's C{answers}, an
    L{AnswerRenderer}) for requests twisted.web refuses before any resource
    sees them: malformed request lines, headers or chunking (400), and too
    long or too many headers (431).

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
        if hasSendLimit(self.transport):
            setSendLimit(self.transport, STREAM_BUFFER_SIZE)

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            # Whatever follows a refused request is not read.
            return
        if not self._inHeaders and channelIdle(self):
            self._inHeaders = True
            if self.timeOut:
                self._headerTimer = self.callLater(self.timeOut, self._headersTimedOut)
        super().dataReceived(data)
        # Lines end with CRLF: a request line or header ending with a bare
        # LF would wait for one forever.  In line mode, what is left unread
        # is (part of) the next request line or header, never body bytes.
        if (
            self.line_mode
            and not self._refused
            and not busyReceiving(self)
            and hasBareLineFeed(unparsed(self))
        ):
            self._refuseBareLineFeed()

    def lineReceived(self, line: bytes) -> None:
        if b"\n" in line:
            self._refuseBareLineFeed()
            return
        if line[:1] in (b" ", b"\t") and requestLineRead(self):
            # A header line (the request line is in): twisted.web would
            # join it to the previous header, where others may not.
            self._refuseRequest(Refusal(400, b"Bad Request", "bad_request",
                                        "Header lines must not be folded."))
            return
        super().lineReceived(line)

    def chooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        if header != b"Transfer-Encoding":
            return bool(super().chooseTransferDecoder(header, data))
        # Several Transfer-Encoding lines make one list, judged once all
        # headers are in: the body is chunked, or refused before it is read.
        # A line that lists no coding at all stands for an empty one, which
        # is refused: a front proxy reading only the last line would see
        # no coding where streamrelay reads chunked.
        first = self._transferCodings is None
        self._transferCodings = (self._transferCodings or []) + (transferCodings(data) or [b""])
        if not first:
            return True
        if not super().chooseTransferDecoder(header, b"chunked"):
            return False  # with a Content-Length: refused
        chunkedDecoder(self)
        return True

    def allHeadersReceived(self) -> None:
        self._stopHeaderTimer()
        codings, self._transferCodings = self._transferCodings, None
        request = self.requests[-1]
        version = requestLine(self)[2]
        refusal = hostRefusal(version, request.requestHeaders.getRawHeaders(b"host"))
        if refusal is None and codings is not None:
            refusal = codingsRefusal(version, codings)
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
        stopCall(self._headerTimer)
        self._headerTimer = None

    def _headersTimedOut(self) -> None:
        self._headerTimer = None
        self._refuse(Refusal(408, b"Request Timeout", "timeout",
                             "The request's headers did not arrive in time."))

    def _refuseBareLineFeed(self) -> None:
        self._refuseRequest(Refusal(400, b"Bad Request", "bad_request",
                                    "Request and header lines must end with CRLF."))

    def refuseMalformed(self) -> None:
        size, count = headerCounts(self)
        if size > self.totalHeadersSize or count > self.maxHeaders:
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
        self._refuse(refusal)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(Refusal(431, b"Request Header Fields Too Large", "headers_too_large",
                             "A request line or header is too long."))

    def _refuse(self, refusal: Refusal) -> None:
        self._refused = True
        answers: AnswerRenderer = getattr(getattr(self, "site", None), "answers", _PLAIN)
        contentType, body = answers.error(None, refusal.status, refusal.code, refusal.message)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (refusal.status, refusal.reason, contentType, len(body), body)
        )
        self.loseConnection()
