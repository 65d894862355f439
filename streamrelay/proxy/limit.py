"""
The proxy's size limit on bodies of unknown length (chunked), enforced as
they stream to the backend.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from streamrelay.streaming import RequestBody, connectionUnder


class BodyTooLarge(Exception):
    """A body of unknown length went past the proxy's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body passed {limit} bytes")
        self.limit = limit


@implementer(IConsumer)
class _Limiting:
    """Passes bytes on to C{target}; raises L{BodyTooLarge} past C{limit}."""

    def __init__(self, target: IConsumer, limit: int) -> None:
        self._target = target
        self._limit = limit
        self._count = 0
        # RequestBody tunes the connection it finds here for streaming.
        self.transport = connectionUnder(target)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._target.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._target.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._count += len(data)
        if self._count > self._limit:
            raise BodyTooLarge(self._limit)
        self._target.write(data)


@implementer(IBodyProducer)
class LimitedBody:
    """
    C{body} as the upstream request's body, failing with L{BodyTooLarge}
    (in C{body.error}) once more than C{limit} bytes came: the upstream
    request is then cut short, so the backend keeps nothing.
    """

    length: Any = UNKNOWN_LENGTH

    def __init__(self, body: RequestBody, limit: int) -> None:
        self._body = body
        self._limit = limit

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self._body.startProducing(_Limiting(consumer, self._limit))

    def pauseProducing(self) -> None:
        self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        self._body.stopProducing()


def upstreamBody(body: RequestBody | None, limit: int | None) -> IBodyProducer | None:
    """What to send upstream for C{body}: limited when its length is unknown."""
    if body is None or limit is None or body.declaredLength is not None:
        return body
    return LimitedBody(body, limit)
