"""
Reading objects back from S3: a stored file's bytes streamed to a consumer
with the S3 connection paused as the consumer pauses, and a consumer that
only hashes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from streamrelay.store.interfaces import FileInfo, IStoredFile
from streamrelay.store.s3.interfaces import IS3Client, started
from streamrelay.store.s3.messages import S3Error


class ObjectChanged(Exception):
    """The object was replaced or removed while it was being read."""


_RESPONSE_DONE = Failure(ResponseDone())


@implementer(IPushProducer)
class _ResponsePump(Protocol):
    """
    Writes an S3 response body to a consumer, pausing the S3 connection
    whenever the consumer pauses it.
    """

    def __init__(self, consumer: IConsumer, expected: int) -> None:
        self._consumer = consumer
        self._expected = expected
        self.received = 0
        self._paused = False
        self.stopped = False
        self.request: Deferred[Any] | None = None
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.stopped:
            self.transport.stopProducing()  # type: ignore[union-attr]
        elif self._paused:
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        left = self._expected - self.received
        if len(data) > left:
            data = data[:left]
        self.received += len(data)
        if data:
            self._consumer.write(data)

    def connectionLost(self, reason: Failure = _RESPONSE_DONE) -> None:
        if self.done.called:
            return
        if self.stopped:
            self.done.errback(CancelledError())
        elif self.received == self._expected and reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(
                ObjectChanged(
                    f"the S3 answer ended after {self.received} of {self._expected} bytes: "
                    f"{reason.getErrorMessage()}"
                )
            )

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        elif self.request is not None:
            self.request.cancel()
        if not self.done.called:
            self.done.errback(CancelledError())


@implementer(IStoredFile)
class S3File:
    """
    A stored object opened for reading.  Reads ask for the ETag it had when
    opened (C{If-Match}): if it was replaced meanwhile, reading fails
    rather than mixing versions.
    """

    def __init__(self, client: IS3Client, key: str, info: FileInfo, etag: str) -> None:
        self._client = client
        self._key = key
        self._etag = etag
        self.info = info

    def stream(self, start: int, end: int, consumer: IConsumer) -> Deferred[None]:
        pump = _ResponsePump(consumer, end - start)
        consumer.registerProducer(pump, True)

        async def run() -> None:
            try:
                pump.request = started(self._client.get(self._key, start, end, self._etag))
                try:
                    response = await pump.request
                except BaseException:
                    # No body will come: what stopping says there is moot.
                    pump.done.addErrback(lambda _: None)
                    raise
                pump.request = None
                ranges = response.headers.getRawHeaders(b"content-range") or [b""]
                if not ranges[0].startswith(b"bytes %d-" % (start,)):
                    response.deliverBody(Protocol())
                    raise ObjectChanged(f"S3 answered the range {ranges[0]!r}")
                response.deliverBody(pump)
                await pump.done
            except S3Error as e:
                if e.status in (404, 412):
                    raise ObjectChanged(f"{self._key!r} was replaced or removed") from e
                raise
            finally:
                if not pump.stopped:
                    consumer.unregisterProducer()

        work = Deferred.fromCoroutine(run())
        done: Deferred[None] = Deferred(lambda _: pump.stopProducing())
        work.chainDeferred(done)
        return done

    def close(self) -> None:
        pass


@implementer(IConsumer)
class HashSink:
    """A consumer hashing what it is written (SHA-256)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.digest.update(data)
