"""
The backend's HTTP/1.1 client for its one hook URL: each event is one
C{POST} written whole in one write, on a kept-open connection, and its
answer parsed in place.

Twisted's agent spent about 230 microseconds of the reactor's time on
each event (a request object, a body producer, a line-by-line parser, a
response object and a chain of Deferreds per answer); this client spends
about 50.  Under W3 an upload asks one pre-create and records one
post-finish, so that was a tenth of the upload's own cost.

It speaks what a hook's answer may be: a status line, headers, then a
body framed by C{Content-Length}, chunked, or by the connection closing;
interim (1xx) answers are skipped.  A connection is used again only when
its answer was framed and nothing follows it.  Each answer's head and
body are read up to L{MAX_ANSWER_BYTES}: the hook is the application's
own endpoint, but a runaway one must not fill memory.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hyperlink import URL, DecodedURL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from streamrelay.hooks.interfaces import IPoster

__all__ = [
    "MAX_ANSWER_BYTES",
    "AnswerError",
    "HookClient",
    "NotAnswered",
    "hookURI",
]

#: The most of a hook's answer read (its head, and its body); beyond it
#: the attempt fails.
MAX_ANSWER_BYTES = 64 * 1024

#: The longest chunk-size line of a chunked answer.
_MAX_CHUNK_LINE = 1024


class NotAnswered(Exception):
    """
    The connection closed before any byte of an answer came: a kept-open
    connection the hook closed as the event went out.  Safe to send again
    (the receiver drops a repeat by the event's id).
    """


class AnswerError(Exception):
    """No whole answer: a malformed or too long one, or the connection lost in it."""


def _uri(url: str) -> URL:
    """C{url} (an IRI perhaps) as the ASCII URI a request is sent to."""
    parsed = DecodedURL.from_text(url)
    if ":" in parsed.host:
        # An IPv6 address: nothing to IDNA-encode (which would refuse it).
        return parsed.replace(host="ipv6.invalid").to_uri().replace(host=parsed.host)
    return parsed.to_uri()


def hookURI(url: str) -> bytes:
    """C{url} (an IRI perhaps) as the ASCII URI a request is sent to."""
    return _uri(url).to_text().encode("ascii")


class _Answer:
    """
    Parses one answer from the bytes given to L{feed}: C{done} once whole,
    then C{status}, C{body}, C{reusable} and C{rest} (bytes after it).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.status = 0
        self.body = bytearray()
        self.reusable = True
        self.done = False
        self.rest = b""
        #: Body framing once the head is read: "length", "chunked" or "close".
        self._framing: str | None = None
        self._remaining = 0
        #: In a chunked body: "size", "data", "crlf" or "trailers".
        self._chunk = "size"
        self.started = False

    def feed(self, data: bytes) -> None:
        self.started = True
        self._buffer += data
        while not self.done:
            if self._framing is None:
                if not self._head():
                    return
            elif self._framing == "length":
                self._length()
                return
            elif self._framing == "close":
                self._take(len(self._buffer))
                return
            elif not self._chunked():
                return

    def closed(self) -> None:
        """The connection closed: a body read to the close is whole."""
        if not self.done and self._framing == "close":
            self.done = True
            self.reusable = False
        if not self.done:
            raise AnswerError("the hook closed the connection in the middle of its answer")

    # The head

    def _head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_ANSWER_BYTES:
                raise AnswerError(f"the hook's answer head is over {MAX_ANSWER_BYTES} bytes")
            return False
        head = bytes(self._buffer[:end]).split(b"\r\n")
        del self._buffer[: end + 4]
        version, _, rest = head[0].partition(b" ")
        code = rest[:3]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or not (code.isdigit() and len(code) == 3):
            raise AnswerError(f"not an HTTP answer: {head[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            if status == 101:
                raise AnswerError("the hook switched protocols")
            return True  # an interim answer: the final one follows
        self.status = status
        length: int | None = None
        chunked = False
        tokens: set[bytes] = set()
        for line in head[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise AnswerError(f"a malformed header line: {line[:80]!r}")
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise AnswerError(f"a bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                chunked = codings[-1] == b"chunked"
                if not chunked:
                    length = None
            elif name == b"connection":
                tokens.update(t.strip().lower() for t in value.split(b","))
        if version == b"HTTP/1.0":
            self.reusable = b"keep-alive" in tokens
        if b"close" in tokens:
            self.reusable = False
        if status in (204, 304):
            self._finish()
        elif chunked:
            self._framing = "chunked"
        elif length is not None:
            if length > MAX_ANSWER_BYTES:
                raise AnswerError(f"the hook's answer is over {MAX_ANSWER_BYTES} bytes")
            self._framing = "length"
            self._remaining = length
            if length == 0:
                self._finish()
        else:
            self._framing = "close"
            self.reusable = False
        return True

    # The body

    def _take(self, count: int) -> None:
        if len(self.body) + count > MAX_ANSWER_BYTES:
            raise AnswerError(f"the hook's answer is over {MAX_ANSWER_BYTES} bytes")
        self.body += self._buffer[:count]
        del self._buffer[:count]

    def _length(self) -> None:
        count = min(self._remaining, len(self._buffer))
        self._take(count)
        self._remaining -= count
        if not self._remaining:
            self._finish()

    def _chunked(self) -> bool:
        """One step of a chunked body; whether it can go on with what is here."""
        if self._chunk in ("size", "trailers"):
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_CHUNK_LINE:
                    raise AnswerError("a chunked answer's line is too long")
                return False
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            if self._chunk == "trailers":
                if not line:
                    self._finish()
                return True
            size = line.partition(b";")[0].strip()
            try:
                self._remaining = int(size, 16)
            except ValueError:
                raise AnswerError(f"a bad chunk size: {size[:20]!r}") from None
            if self._remaining < 0 or size.startswith((b"-", b"+", b"0x", b"0X")):
                raise AnswerError(f"a bad chunk size: {size[:20]!r}")
            self._chunk = "data" if self._remaining else "trailers"
            return True
        if self._chunk == "data":
            count = min(self._remaining, len(self._buffer))
            self._take(count)
            self._remaining -= count
            if self._remaining:
                return False
            self._chunk = "crlf"
            return True
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] != b"\r\n":
            raise AnswerError("a chunk not followed by CRLF")
        del self._buffer[:2]
        self._chunk = "size"
        return True

    def _finish(self) -> None:
        self.done = True
        self.rest = bytes(self._buffer)
        self._buffer.clear()


class _HookConnection(Protocol):
    """One connection to the hook: one request at a time."""

    def __init__(self, client: HookClient) -> None:
        self._client = client
        self._answer: _Answer | None = None
        self._waiting: Deferred[tuple[int, bytes]] | None = None
        #: When it was last given back idle (the client's clock).
        self.idleSince = 0.0

    def send(self, request: bytes) -> Deferred[tuple[int, bytes]]:
        d: Deferred[tuple[int, bytes]] = Deferred(lambda _: self._abort())
        self._waiting, self._answer = d, _Answer()
        assert self.transport is not None
        self.transport.write(request)
        return d

    def _abort(self) -> None:
        self._waiting = self._answer = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        answer, waiting = self._answer, self._waiting
        if answer is None or waiting is None:
            # Bytes nobody asked for: this connection cannot be trusted.
            self._abort()
            return
        try:
            answer.feed(data)
        except AnswerError as e:
            self._fail(e)
            return
        if answer.done:
            self._answer = self._waiting = None
            if answer.reusable and not answer.rest:
                self._client._release(self)
            else:
                self._close()
            waiting.callback((answer.status, bytes(answer.body)))

    def _fail(self, error: Exception) -> None:
        waiting = self._waiting
        self._abort()
        if waiting is not None:
            waiting.errback(error)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._client._lost(self)
        answer, waiting = self._answer, self._waiting
        self._answer = self._waiting = None
        if answer is None or waiting is None:
            return
        if not answer.started:
            waiting.errback(NotAnswered(reason.getErrorMessage()))
            return
        try:
            answer.closed()
        except AnswerError as e:
            waiting.errback(e)
            return
        waiting.callback((answer.status, bytes(answer.body)))


class _Connections(Factory):
    noisy = False

    def __init__(self, client: HookClient) -> None:
        self._client = client

    def buildProtocol(self, addr: Any) -> _HookConnection:
        return _HookConnection(self._client)


@implementer(IPoster)
class HookClient:
    """
    Posts to C{url} over connections to C{endpoint}, keeping up to
    C{keep} of them open while idle, each for C{idleSeconds}.
    """

    def __init__(
        self,
        url: str,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        keep: int,
        idleSeconds: float,
    ) -> None:
        uri = _uri(url)
        self.url = uri.to_text().encode("ascii")
        host = uri.host.encode("ascii")
        if ":" in uri.host:
            host = b"[" + host + b"]"
        default = {"http": 80, "https": 443}.get(uri.scheme)
        if uri.port is not None and uri.port != default:
            host += b":%d" % uri.port
        target = uri.replace(scheme="", host="", port=None, fragment="").to_text() or "/"
        if not target.startswith("/"):
            target = "/" + target
        self._start = b"POST %s HTTP/1.1\r\nHost: %s\r\n" % (target.encode("ascii"), host)
        self._endpoint = endpoint
        self._clock = clock
        self._keep = keep
        self._idleSeconds = idleSeconds
        self._factory = _Connections(self)
        #: Open and idle, the most recently used last.
        self._idle: deque[_HookConnection] = deque()
        self._reaper: IDelayedCall | None = None

    def post(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Deferred[tuple[int, bytes]]:
        """
        C{POST} C{body} with C{headers}: fires with the answer's status and
        body; fails with L{NotAnswered} when the connection closed before
        an answer began, else with another error.  Cancelling it closes
        the connection.
        """
        request = b"".join(
            [self._start, *(b"%s: %s\r\n" % h for h in headers),
             b"Content-Length: %d\r\n\r\n" % len(body), body]
        )
        if self._idle:
            # A connection leaves the idle ones as it is lost (L{_lost}).
            return self._idle.pop().send(request)

        def connected(connection: IProtocol) -> Deferred[tuple[int, bytes]]:
            assert isinstance(connection, _HookConnection)
            return connection.send(request)

        return self._endpoint.connect(self._factory).addCallback(connected)

    def _release(self, connection: _HookConnection) -> None:
        if len(self._idle) >= self._keep:
            connection._close()
            return
        connection.idleSince = self._clock.seconds()
        self._idle.append(connection)
        if self._reaper is None:
            self._reaper = self._clock.callLater(self._idleSeconds, self._reap)

    def _lost(self, connection: _HookConnection) -> None:
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def _reap(self) -> None:
        """Close the connections idle for C{idleSeconds} (the oldest are first)."""
        self._reaper = None
        now = self._clock.seconds()
        while self._idle and now - self._idle[0].idleSince >= self._idleSeconds:
            self._idle.popleft()._close()
        if self._idle:
            due = self._idle[0].idleSince + self._idleSeconds - now
            self._reaper = self._clock.callLater(due, self._reap)

    def close(self) -> None:
        """Close the idle connections (the busy ones close when answered or timed out)."""
        if self._reaper is not None and self._reaper.active():
            self._reaper.cancel()
        self._reaper = None
        while self._idle:
            self._idle.pop()._close()
