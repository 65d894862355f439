"""
Splice control: handing the rest of a request body to a kernel splice
(L{streamrelay.splicing}) into the file its consumer offers (the backend)
or into the connection of Twisted's HTTP client under it (the proxy), and
giving the connection back to twisted.web afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure

from streamrelay import splicing
from streamrelay.store.interfaces import ISpliceTarget
from streamrelay.streaming.body import RequestBody
from streamrelay.streaming.internals import (
    bodyBytesLeft,
    channelMidParse,
    flushNow,
    giveBackReading,
    identityDecoder,
    readingTakenOver,
    setBodyBytesLeft,
    takeOverReading,
    transferDecoder,
    upstreamConnection,
    upstreamOwes,
    upstreamSent,
)

__all__ = ["Splice", "trySplice"]

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
        return bool(upstreamOwes(self.consumer) == remaining and flushNow(self.conn))

    def splicerArgs(self) -> dict[str, Any]:
        return {}

    def wrote(self, start: int, end: int) -> None:
        # The consumer counts what the request still owes.
        upstreamSent(self.consumer, end - start)

    def failure(self, error: BaseException) -> BaseException | None:
        # The upstream connection broke: Twisted's client finds out on its
        # own, and the request fails there.
        return None


def trySplice(
    request: Any,
    body: RequestBody,
    consumer: IConsumer,
    progressed: Callable[[], None],
    ended: Callable[[], None],
) -> tuple[bool, Splice | None]:
    """
    A splice of the rest of C{body} (of C{request}) into the file
    C{consumer} offers, or into the connection of Twisted's HTTP client
    under it, if the body and connections allow; see L{RequestBody}.  Not
    started yet.  C{(False, None)} when the body goes the usual way,
    C{(True, None)} when the consumer failed the body while taking the
    bytes read so far.

    The splice calls C{progressed} whenever it moved more of the body, and
    C{ended} as soon as it has ended, before it gives the connection back.
    """
    offer = ISpliceTarget(consumer).fileTarget if ISpliceTarget.providedBy(consumer) else None
    upstream = None if offer is not None else upstreamConnection(consumer)
    conn = request.transport
    channel: Any = request.channel
    decoder = identityDecoder(channel)
    left = None if decoder is None else bodyBytesLeft(decoder)
    if (
        (offer is None and upstream is None)
        or body.ended
        or _splicing >= splicing.SPLICE_MAX
        or not splicing.available()
        or not isinstance(conn, tcp.Connection)
        or readingTakenOver(conn)
        or conn.protocol is not channel
        or left is None
        or left < splicing.SPLICE_MIN
        or left != body.length - body.received
        or channelMidParse(channel)
        or not cast(Any, channel).requests
        or cast(Any, channel).requests[-1] is not request
    ):
        return False, None
    sink: _FileSink | _SocketSink
    if offer is not None:
        target: splicing.FileTarget | None = offer()
        if target is None:
            return False, None
        sink = _FileSink(consumer, target)
    else:
        assert upstream is not None
        sink = _SocketSink(consumer, upstream)
    try:
        seen = sink.take(body.takePending())
    except BaseException:
        body.fail(Failure())
        return True, None
    if not sink.ready(left):
        return False, None  # the rest goes the usual way
    return True, Splice(conn, channel, decoder, sink, body, seen, progressed, ended)


class Splice:
    """
    A request body being moved by the kernel: the connection's reads are
    the splicer's until it ends.

    @ivar received: body bytes read before the splicer started.
    @ivar remaining: body bytes still to come then.
    @ivar seen: bytes the splicer wrote that the sink's consumer was told of.
    """

    def __init__(
        self,
        conn: tcp.Connection,
        channel: Any,
        decoder: Any,
        sink: _FileSink | _SocketSink,
        body: RequestBody,
        seen: int,
        progressed: Callable[[], None],
        ended: Callable[[], None],
    ) -> None:
        global _splicing
        self.conn = conn
        self.channel = channel
        self.decoder = decoder
        self.sink = sink
        self.body = body
        self.received = body.received
        self.remaining: int = bodyBytesLeft(decoder) or 0
        self.seen = seen
        #: Whether the splicer ended.
        self.over = False
        self._progressed = progressed
        self._ended = ended
        from twisted.internet import reactor

        self.splicer = splicing.Splicer(
            cast(Any, reactor).callFromThread,
            conn.socket.fileno(), sink.fd, self.remaining,
            self._spliced, self._spliceEnded, **sink.splicerArgs(),
        )
        takeOverReading(conn, self._notReading)
        body.spliced = True
        _splicing += 1

    @property
    def blocked(self) -> bool:
        """Whether the splicer waits on its consumer's side."""
        return self.splicer.blocked

    def _notReading(self) -> None:
        # The splicer reads the socket: if twisted.web resumes the
        # transport meanwhile, it reads nothing.
        self.conn.stopReading()

    def _spliced(self, taken: int, written: int) -> None:
        """(Reactor.)  The splicer took and wrote the body this far."""
        if self.over or not self._see(taken, written):
            return
        self.splicer.seen(written)
        self._progressed()

    def _see(self, taken: int, written: int) -> bool:
        """
        Count what the splicer took and hand what it wrote since last time
        to the consumer; False if the body failed (then or before).
        """
        body = self.body
        body.received = self.received + taken
        if not body.delivering:
            return False
        if written > self.seen:
            try:
                self.sink.wrote(self.seen, written)
            except BaseException:
                body.fail(Failure())
                return False
            self.seen = written
        return True

    def _spliceEnded(self, taken: int, written: int, error: BaseException | None) -> None:
        """(Reactor.)  Give the connection back to the channel."""
        global _splicing
        self.over = True
        self._ended()
        _splicing -= 1
        conn, body, decoder = self.conn, self.body, self.decoder
        giveBackReading(conn)
        if transferDecoder(self.channel) is decoder and bodyBytesLeft(decoder) is not None:
            setBodyBytesLeft(decoder, self.remaining - taken)
        else:
            decoder = None
        ok = self._see(taken, written)
        failure = self.sink.failure(error) if error is not None else None
        if ok and failure is not None:
            body.fail(Failure(failure))
        if conn.disconnected or conn.disconnecting:
            return
        if decoder is not None and bodyBytesLeft(decoder) == 0:
            # All of it arrived: the channel ends the body as if it had
            # read the last byte itself.
            self.channel.rawDataReceived(b"")
        # The channel reads what follows (the next request, the end of the
        # connection, or the rest of the body when the splicer stopped early).
        conn.startReading()
