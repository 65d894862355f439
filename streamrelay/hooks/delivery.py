"""
One delivery attempt: C{POST} one event's JSON to the hook, signed, within
a time limit, and read back the (small) answer.

Both C{pre-create} (which reads the answer) and the post-event sender use
it.  The answer's body is read up to L{MAX_ANSWER_BYTES}: a hook is the
application's own endpoint, but a runaway one must not fill our memory.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from streamrelay.hooks.signature import HEADER, sign

#: The most of a hook's answer read; beyond it the attempt fails.
MAX_ANSWER_BYTES = 64 * 1024

JSON_TYPE = b"application/json"


class DeliveryFailed(Exception):
    """The attempt got no complete answer: no connection, a timeout, too long an answer."""


def deliver(
    http: HTTPClient,
    url: str,
    body: bytes,
    secret: bytes | None,
    timeout: float,
    reactor: IReactorTime,
) -> Deferred[tuple[int, bytes]]:
    """
    C{POST} C{body} (an event's JSON) to C{url}, with C{Streamrelay-Signature}
    when C{secret} is given.  Fires with the answer's status and body, or
    fails with L{DeliveryFailed} when no whole answer came within C{timeout}
    seconds (connecting, the headers and the body together).  The status is
    the caller's to judge (C{2xx} is success).
    """
    headers: dict[bytes | str, list[bytes | str]] = {
        b"content-type": [JSON_TYPE],
        b"user-agent": [b"streamrelay-hooks"],
    }
    if secret is not None:
        headers[HEADER] = [sign(secret, body, reactor.seconds())]
    try:
        attempt: Deferred[Any] = http.post(
            url, data=body, headers=headers, unbuffered=True, allow_redirects=False
        )
    except Exception as e:
        return fail(DeliveryFailed(f"cannot post to {url!r}: {e}"))
    attempt.addCallback(_readAnswer)
    timedOut = []

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
