"""
One delivery attempt: C{POST} one event's JSON to the hook, signed, within
a time limit, and read back the (small) answer.

Both C{pre-create} (which reads the answer) and the post-event sender use
it, through an L{IPoster}: the backend's own HTTP client for its hook
(L{streamrelay.hooks.wire}).  No cookies are kept, no redirect is
followed, nothing is decompressed.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.signature import HEADER, sign
from streamrelay.hooks.wire import MAX_ANSWER_BYTES, NotAnswered, hookURI

__all__ = ["MAX_ANSWER_BYTES", "DeliveryFailed", "deliver", "hookURI"]

JSON_TYPE = b"application/json"
USER_AGENT = b"streamrelay-hooks"


class DeliveryFailed(Exception):
    """The attempt got no complete answer: no connection, a timeout, too long an answer."""


def deliver(
    poster: IPoster,
    body: bytes,
    secret: bytes | None,
    timeout: float,
    reactor: IReactorTime,
) -> Deferred[tuple[int, bytes]]:
    """
    C{POST} C{body} (an event's JSON) to the hook, with
    C{Streamrelay-Signature} when C{secret} is given.  Fires with the
    answer's status and body, or fails with L{DeliveryFailed} when no whole
    answer came within C{timeout} seconds (connecting, the headers and the
    body together).  The status is the caller's to judge (C{2xx} is
    success).
    """
    headers = [(b"Content-Type", JSON_TYPE), (b"User-Agent", USER_AGENT)]
    if secret is not None:
        headers.append((HEADER.title(), sign(secret, body, reactor.seconds())))

    timedOut: list[bool] = []

    def again(failure: Failure) -> Deferred[tuple[int, bytes]] | Failure:
        # A kept-open connection the hook closed as the event went out: no
        # answer ever began, so the event goes once more, on a new
        # connection (the receiver drops a repeat by its id).  Not once the
        # time is up (the attempt was cancelled).
        if not timedOut and failure.check(NotAnswered):
            return poster.post(headers, body)
        return failure

    try:
        attempt = poster.post(headers, body)
    except Exception as e:
        url = poster.url.decode("ascii", "replace")
        return fail(DeliveryFailed(f"cannot post to {url!r}: {e}"))
    attempt.addErrback(again)

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
