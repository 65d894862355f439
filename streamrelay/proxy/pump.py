"""
Pumping a backend response body to the client, with backpressure.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.server import Request
from zope.interface import implementer

from streamrelay.streaming import producerConnection, sendEagerly, tuneForStreaming


@implementer(IPushProducer)
class ResponsePump(Protocol):
    """
    Writes a response body it is delivered to C{request}, as the request's
    producer: a client that reads slowly pauses the backend connection.

    L{done} fires when the body ended, fails when the backend connection
    broke, and stops the backend connection when cancelled.  L{paused}
    says whether the client is holding the backend back.
    """

    transport: IPushProducer  # type: ignore[assignment]

    def __init__(self, request: Request) -> None:
        self._request = request
        self._registered = False
        self.sent = 0
        self.paused = False
        self.done: Deferred[None] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        # Read the backend's answer in large pieces: one reactor pass and one
        # parser pass per 64 KiB (Twisted's default) is what a download
        # through the proxy spends its time on.
        connection = producerConnection(self.transport)
        tuneForStreaming(connection)
        # And send each piece on to the client as it comes.
        sendEagerly(getattr(self._request, "transport", None))
        self._request.registerProducer(self, True)
        self._registered = True

    # IPushProducer, for the request

    def pauseProducing(self) -> None:
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    # Protocol

    def dataReceived(self, data: bytes) -> None:
        self.sent += len(data)
        self._request.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        reason = reason or Failure(ResponseDone())
        self._unregister()
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            # After the client is gone the request has no channel left.
            if getattr(self._request, "channel", None) is not None:
                self._request.unregisterProducer()

    def _cancel(self, d: Deferred[None]) -> None:
        self._unregister()
        if self.transport is not None:
            self.transport.stopProducing()
