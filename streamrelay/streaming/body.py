"""
The body of a streamed request: an L{IBodyProducer} fed by its request as
the bytes arrive, and the small interface between the two.
"""

from __future__ import annotations

from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from streamrelay.streaming.tuning import tuneUpstreamBody

__all__ = ["BodyControl", "BodyIncomplete", "BodyTimeout", "RequestBody"]


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


class BodyControl(Protocol):
    """
    What a L{RequestBody} asks of the request that feeds it (a
    L{streamrelay.streaming.request.StreamingRequest}): holding the client
    back or letting it send, and moving the body by the kernel.
    """

    @property
    def clientPaused(self) -> bool:
        """Whether the client's connection (or its splice) is paused."""

    def pauseClient(self) -> None:
        """Stop reading the client (its current read may still come)."""

    def resumeClient(self) -> None:
        """Read the client again, if it was paused."""

    def continueBody(self) -> None:
        """The consumer starts: send C{100 Continue} if the client waits for it."""

    def startSplicing(self, consumer: IConsumer) -> bool:
        """Have the rest of the body moved into C{consumer}'s file or connection;
        whether that is under way (or failed the body trying)."""

    def stopSplicing(self) -> None:
        """Stop moving the body by the kernel, if it is."""

    def spliceBlocked(self) -> bool:
        """Whether a splice waits on its consumer's side."""

    def bodyDiscarded(self) -> None:
        """The rest of the body is read and dropped."""


@implementer(IBodyProducer)
class RequestBody:
    """
    The body of a L{StreamingRequest}, produced as it arrives.

    One consumer reads it: C{startProducing(consumer)} returns a Deferred
    that fires once the whole body was written to the consumer, or fails
    when the client goes away or the consumer raises.  The consumer may
    pause, resume and stop it like any push producer.

    A consumer providing L{ISpliceTarget<streamrelay.store.interfaces.ISpliceTarget>}
    may have a large body with a C{Content-Length} on a TCP connection
    written into the file its C{fileTarget()} lends: then C{wroteToFile} is
    called with the bytes (read back from the file)
    in place of C{write}, in order, as they land there.  Twisted's HTTP
    client sending the body on over TCP (its C{LengthEnforcingConsumer})
    may have it moved straight into its connection.

    Its request feeds it through L{dataReceived}, L{bodyEnded},
    L{connectionLost}, L{discard} and L{fail}, and asks it L{wanting},
    L{delivering} and L{discarding}; it asks its request through
    L{BodyControl}.

    @ivar length: the declared C{Content-Length}, or L{UNKNOWN_LENGTH} for a
        chunked body.
    @ivar received: body bytes read from the client so far.
    @ivar spliced: whether the body is (or was) moved into its consumer's
        file or connection by the kernel.
    @ivar ended: whether the whole body arrived.
    @ivar discarding: whether what arrives is dropped: the consumer stopped
        or was given the whole body, or the body failed.
    @ivar error: why the body failed, once it did.
    @ivar _consumer: the one consumer, once it started.
    @ivar _done: the Deferred C{startProducing} returned, until it fires
        (None too once the consumer stopped or cancelled it).
    @ivar _pending: bytes that arrived and the consumer did not take yet
        (at most about one read: the client is paused meanwhile).
    @ivar _paused: whether the consumer paused the body.
    @ivar _failure: why the body failed before anybody consumed it, for
        C{startProducing} to report.
    """

    def __init__(self, control: BodyControl, length: int | None) -> None:
        self._control = control
        self.length: int = cast(int, UNKNOWN_LENGTH) if length is None else length
        self.received = 0
        self.spliced = False
        self.ended = False
        self.discarding = False
        self.error: BaseException | None = None
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._pending: list[bytes] = []
        self._paused = False
        self._failure: Failure | None = None

    @property
    def declaredLength(self) -> int | None:
        """The C{Content-Length} of the body, or L{None} when chunked."""
        return None if self.length is UNKNOWN_LENGTH else self.length

    @property
    def heldBack(self) -> bool:
        """Whether streamrelay is holding the client back (backpressure)."""
        return (self._control.clientPaused and not self.discarding) or (
            self._control.spliceBlocked()
        )

    # IBodyProducer, for the one consumer

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._consumer is not None or self.discarding:
            raise RuntimeError("a request body can only be consumed once")
        self._consumer = consumer
        self._done = Deferred(self._cancel)
        # Sent on by Twisted's HTTP client (the proxy's upstream request).
        tuneUpstreamBody(consumer)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self.discarding = True
            done, self._done = self._done, None
            done.errback(failure)
            return done
        done = self._done
        self._control.continueBody()
        if not self._control.startSplicing(consumer):
            self._deliver()
        return done

    def pauseProducing(self) -> None:
        self._paused = True
        self._control.pauseClient()

    def resumeProducing(self) -> None:
        self._paused = False
        self._deliver()

    def stopProducing(self) -> None:
        """
        Drop the rest of the body; the startProducing Deferred never fires.
        """
        self._done = None
        self.discard()

    # Fed by the request

    def discard(self) -> None:
        """Read and drop whatever is left of the body."""
        self.discarding = True
        self._pending.clear()
        self._control.stopSplicing()
        self._control.bodyDiscarded()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.discarding:
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
        self.fail(reason)

    def fail(self, failure: Failure) -> None:
        """The body failed (C{failure}): tell the consumer, drop the rest."""
        self.error = failure.value
        done, self._done = self._done, None
        if done is None and self._consumer is None:
            # Nobody consumes yet: keep it for startProducing.
            self._failure = failure
            return
        self.discarding = True
        self._pending.clear()
        self._control.stopSplicing()
        if not self.ended:
            self._control.bodyDiscarded()
        if done is not None:
            done.errback(failure)

    # Asked by the request

    def wanting(self) -> bool:
        """Whether the consumer takes bytes now."""
        return (
            self._consumer is not None
            and self._done is not None
            and not self._paused
            and not self.discarding
        )

    @property
    def delivering(self) -> bool:
        """Whether the consumer is still given the body (it may be paused)."""
        return not self.discarding and self._done is not None

    def takePending(self) -> list[bytes]:
        """The bytes the consumer was not given yet, which it then never is."""
        pending, self._pending = self._pending, []
        return pending

    # Internals

    def _deliver(self) -> None:
        """
        Hand pending data to the consumer while it wants it; pause the
        client whenever it does not.
        """
        while self._pending and self.wanting():
            data = self._pending.pop(0)
            try:
                assert self._consumer is not None
                self._consumer.write(data)
            except BaseException:
                self.fail(Failure())
                return
        if self.discarding:
            return
        if not self.wanting():
            self._control.pauseClient()
            return
        if self.ended:
            done, self._done = self._done, None
            if done is not None:
                self.discarding = True
                done.callback(None)
        else:
            self._control.resumeClient()

    def _cancel(self, d: Deferred[None]) -> None:
        # The consumer gave up (e.g. Klein cancelled the route): the
        # Deferred fails with CancelledError and the rest is dropped.
        self._done = None
        self.discard()
