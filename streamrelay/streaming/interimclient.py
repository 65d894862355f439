"""
Interim (1xx) responses to the requests Twisted's HTTP client sends, told
as each arrives.

Twisted's client reads an interim response and drops it (RFC 9110 lets a
client that does not expect one ignore it).  On the connections of an
L{InterimConnectionPool}, the request whose body is a L{WatchedBody} has
its observer told of each one (status, reason phrase, all its headers)
when its header section ends, before the final response; the final
response is then parsed and delivered as ever.  Requests sent without a
body, or with any other body, are left as Twisted sends them.

How this reaches into Twisted's client (its parser, its pool's factory) is
in L{streamrelay.streaming.internals}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from streamrelay.streaming.internals import (
    ClientProtocolHooks,
    ConnectionPoolHooks,
    InterimObserver,
)

__all__ = [
    "InterimClientProtocol",
    "InterimConnectionPool",
    "InterimObserver",
    "WatchedBody",
    "watchInterim",
]


@implementer(IBodyProducer)
class WatchedBody:
    """
    C{producer}, as the body of a request whose interim responses
    C{observer} is told of (on an L{InterimConnectionPool}'s connection).
    """

    def __init__(self, producer: IBodyProducer, observer: InterimObserver) -> None:
        self.producer = producer
        self.observer = observer

    @property
    def length(self) -> object:  # type: ignore[override]
        return self.producer.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self.producer.startProducing(consumer)

    def pauseProducing(self) -> None:
        self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


def watchInterim(producer: IBodyProducer, observer: InterimObserver) -> WatchedBody:
    """C{producer}, to send as a request's body, its interim responses told to C{observer}."""
    return WatchedBody(producer, observer)


class InterimClientProtocol(ClientProtocolHooks):
    """An HTTP/1.1 client connection that tells a L{WatchedBody}'s observer."""

    def interimObserver(self, bodyProducer: IBodyProducer | None) -> InterimObserver | None:
        if isinstance(bodyProducer, WatchedBody):
            return bodyProducer.observer
        return None


class InterimConnectionPool(ConnectionPoolHooks):
    """A pool of L{InterimClientProtocol} connections."""

    clientProtocol = InterimClientProtocol
