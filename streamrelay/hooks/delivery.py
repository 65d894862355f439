"""
One delivery attempt: C{POST} one event's JSON to the hook, signed, within
a time limit, and read back the (small) answer.

Both C{pre-create} (which reads the answer) and the post-event sender use
it.  The answer's body is read up to L{MAX_ANSWER_BYTES}: a hook is the
application's own endpoint, but a runaway one must not fill our memory.

It goes straight to an L{IAgent} (pooled connections, see
L{streamrelay.hooks.connections}), with the URL made ASCII once (L{hookURI}):
treq's client around it parsed the URL twice, built a cookie request and
a content-decoding agent for every event, about as much reactor time as
hashing the 1 MiB upload the event was about.  No cookies are kept, no
redirect is followed, nothing is decompressed, as before.
"""

from __future__ import annotations

from typing import Any

from hyperlink import DecodedURL
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from streamrelay.hooks.signature import HEADER, sign

#: The most of a hook's answer read; beyond it the attempt fails.
MAX_ANSWER_BYTES = 64 * 1024

JSON_TYPE = b"application/json"
USER_AGENT = b"streamrelay-hooks"


class DeliveryFailed(Exception):
    """The attempt got no complete answer: no connection, a timeout, too long an answer."""


def hookURI(url: str) -> bytes:
    """C{url} (an IRI perhaps) as the ASCII URI a request is sent to."""
    return DecodedURL.from_text(url).to_uri().to_text().encode("ascii")


@implementer(IBodyProducer)
class BytesBody:
    """A body already in memory (an event's JSON), written at once."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def deliver(
    agent: IAgent,
    url: bytes,
    body: bytes,
    secret: bytes | None,
    timeout: float,
    reactor: IReactorTime,
) -> Deferred[tuple[int, bytes]]:
    """
    C{POST} C{body} (an event's JSON) to C{url} (L{hookURI}), with
    C{Streamrelay-Signature} when C{secret} is given.  Fires with the
    answer's status and body, or fails with L{DeliveryFailed} when no whole
    answer came within C{timeout} seconds (connecting, the headers and the
    body together).  The status is the caller's to judge (C{2xx} is
    success).
    """
    headers = Headers({b"content-type": [JSON_TYPE], b"user-agent": [USER_AGENT]})
    if secret is not None:
        headers.setRawHeaders(HEADER, [sign(secret, body, reactor.seconds())])

    def post() -> Deferred[Any]:
        return agent.request(b"POST", url, headers, BytesBody(body))

    timedOut: list[bool] = []

    def again(failure: Failure) -> Deferred[Any] | Failure:
        # A kept-open connection the hook closed as the event went out: no
        # answer ever began, so the event goes once more, on a new
        # connection (the receiver drops a repeat by its id).  Not once the
        # time is up (the attempt was cancelled).
        if not timedOut and failure.check(
            ResponseNeverReceived, RequestTransmissionFailed, RequestNotSent
        ):
            return post()
        return failure

    try:
        attempt: Deferred[Any] = post()
    except Exception as e:
        return fail(DeliveryFailed(f"cannot post to {url.decode('ascii', 'replace')!r}: {e}"))
    attempt.addErrback(again)
    attempt.addCallback(_readAnswer)

    def expire() -> None:
        timedOut.append(True)
        attempt.cancel()

    timer = reactor.callLater(timeout, expire)

    def done(result: object) -> object:
        if timer.active():
            timer.cancel()
        if isinstance(result, Failure):
            if timedOut and result.check(CancelledError):
                return Failure(DeliveryFailed(f"no answer within {timeout:g} s"))
            if not result.check(DeliveryFailed, CancelledError):
                return Failure(DeliveryFailed(result.getErrorMessage() or repr(result.value)))
        return result

    attempt.addBoth(done)
    return attempt


def _readAnswer(response: IResponse) -> Deferred[tuple[int, bytes]]:
    reader = _BoundedReader(response.code)
    response.deliverBody(reader)
    return reader.finished


class _BoundedReader(Protocol):
    def __init__(self, status: int) -> None:
        self.status = status
        self.chunks: list[bytes] = []
        self.size = 0
        self.finished: Deferred[tuple[int, bytes]] = Deferred(self._cancel)

    def _cancel(self, _: object) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > MAX_ANSWER_BYTES:
            self.finished.errback(
                DeliveryFailed(f"the hook's answer is over {MAX_ANSWER_BYTES} bytes")
            )
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback((self.status, b"".join(self.chunks)))
        else:
            self.finished.errback(DeliveryFailed(reason.getErrorMessage()))
