"""
One hook delivery attempt (L{streamrelay.hooks.delivery}), against an
in-memory receiver with treq's testing client and a fake clock.
"""

from __future__ import annotations

from typing import Any, cast

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from streamrelay.hooks.delivery import MAX_ANSWER_BYTES, DeliveryFailed, deliver
from streamrelay.hooks.signature import verify


class Receiver(Resource):
    isLeaf = True

    def __init__(self, status: int = 204, answer: bytes = b"", hang: bool = False) -> None:
        super().__init__()
        self.status = status
        self.answer = answer
        self.hang = hang
        self.seen: list[tuple[dict[bytes, Any], bytes]] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.seen.append((headers, request.content.read()))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return self.answer


class DeliverTests(SynchronousTestCase):
    def attempt(self, receiver: Receiver, secret: bytes | None = b"s3cret", timeout: float = 10):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        http = StubTreq(receiver)
        url = "http://hook.example/events"
        d = deliver(cast(HTTPClient, http), url, b'{"id":"1"}', secret, timeout, self.clock)
        http.flush()
        return d

    def test_answer(self) -> None:
        """The status and body come back; the body was posted as JSON."""
        receiver = Receiver(200, b'{"name":"b"}')
        result = self.successResultOf(self.attempt(receiver))
        self.assertEqual(result, (200, b'{"name":"b"}'))
        headers, body = receiver.seen[0]
        self.assertEqual(body, b'{"id":"1"}')
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])

    def test_signed(self) -> None:
        """C{Streamrelay-Signature} verifies with the secret at the clock's time."""
        receiver = Receiver()
        self.successResultOf(self.attempt(receiver))
        headers, body = receiver.seen[0]
        (signature,) = headers[b"Streamrelay-Signature"]
        self.assertTrue(verify(b"s3cret", signature, body, now=1_700_000_000))
        self.assertFalse(verify(b"other", signature, body, now=1_700_000_000))

    def test_unsigned(self) -> None:
        """Without a secret, no signature header."""
        receiver = Receiver()
        self.successResultOf(self.attempt(receiver, secret=None))
        self.assertNotIn(b"Streamrelay-Signature", receiver.seen[0][0])

    def test_errorStatusIsAnAnswer(self) -> None:
        """A 500 is an answer: the caller judges it."""
        result = self.successResultOf(self.attempt(Receiver(500, b"oops")))
        self.assertEqual(result, (500, b"oops"))

    def test_timeout(self) -> None:
        """No answer within the timeout: L{DeliveryFailed}, and not before."""
        d = self.attempt(Receiver(hang=True), timeout=3)
        self.assertNoResult(d)
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, DeliveryFailed)
        self.assertFalse(self.clock.getDelayedCalls())

    def test_timerCancelled(self) -> None:
        """An answer in time leaves no timer behind."""
        self.successResultOf(self.attempt(Receiver()))
        self.assertFalse(self.clock.getDelayedCalls())

    def test_answerTooLong(self) -> None:
        """A runaway answer is not read into memory: the attempt fails."""
        d = self.attempt(Receiver(200, b"x" * (MAX_ANSWER_BYTES + 1)))
        self.failureResultOf(d, DeliveryFailed)

    def test_unreachable(self) -> None:
        """A connection error is a L{DeliveryFailed} too."""
        self.clock = Clock()
        http = cast(HTTPClient, StubTreq(Receiver()))
        d = deliver(http, "http://[bad", b"{}", None, 1, self.clock)
        self.failureResultOf(d, DeliveryFailed)
