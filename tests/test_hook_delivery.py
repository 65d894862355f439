"""
One hook delivery attempt (L{streamrelay.hooks.delivery}), against an
in-memory receiver with treq's testing agent and a fake clock.
"""

from __future__ import annotations

from typing import Any, cast

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import fail
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from streamrelay.hooks.delivery import (
    MAX_ANSWER_BYTES,
    BytesBody,
    DeliveryFailed,
    deliver,
    hookURI,
)
from streamrelay.hooks.signature import verify


class Receiver(Resource):
    isLeaf = True

    def __init__(self, status: int = 204, answer: bytes = b"", hang: bool = False) -> None:
        super().__init__()
        self.status = status
        self.answer = answer
        self.hang = hang
        self.cookie: bytes | None = None
        self.location: bytes | None = None
        self.seen: list[tuple[dict[bytes, Any], bytes]] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.seen.append((headers, request.content.read()))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        if self.cookie is not None:
            request.setHeader(b"set-cookie", self.cookie)
        if self.location is not None:
            request.setHeader(b"location", self.location)
        return self.answer


class DeliverTests(SynchronousTestCase):
    def attempt(self, receiver: Receiver, secret: bytes | None = b"s3cret", timeout: float = 10):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        agent = RequestTraversalAgent(receiver)
        url = b"http://hook.example/events"
        d = deliver(agent, url, b'{"id":"1"}', secret, timeout, self.clock)
        agent.flush()
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
        agent = RequestTraversalAgent(Receiver())
        d = deliver(agent, b"http://[bad", b"{}", None, 1, self.clock)
        self.failureResultOf(d, DeliveryFailed)

    def test_lengthAndAgent(self) -> None:
        """The body goes with its length (not chunked) and streamrelay's user agent."""
        receiver = Receiver()
        self.successResultOf(self.attempt(receiver))
        headers, body = receiver.seen[0]
        self.assertEqual(headers[b"Content-Length"], [b"%d" % len(body)])
        self.assertNotIn(b"Transfer-Encoding", headers)
        self.assertEqual(headers[b"User-Agent"], [b"streamrelay-hooks"])

    def test_noCookiesKept(self) -> None:
        """A cookie the hook sets is not sent back with the next event."""
        receiver = Receiver()
        receiver.cookie = b"session=1"
        agent = RequestTraversalAgent(receiver)
        clock = Clock()
        for _ in range(2):
            d = deliver(agent, b"http://hook.example/", b"{}", None, 10, clock)
            agent.flush()
            self.successResultOf(d)
        self.assertNotIn(b"Cookie", receiver.seen[1][0])

    def test_redirectNotFollowed(self) -> None:
        """A redirect is the hook's answer, not followed."""
        receiver = Receiver(302)
        receiver.location = b"http://elsewhere.example/"
        self.assertEqual(self.successResultOf(self.attempt(receiver)), (302, b""))
        self.assertEqual(len(receiver.seen), 1)


class HookURITests(SynchronousTestCase):
    def test_ascii(self) -> None:
        self.assertEqual(hookURI("http://127.0.0.1:9/events?x=1"), b"http://127.0.0.1:9/events?x=1")

    def test_iri(self) -> None:
        """An IRI is sent as its URI: the host in IDNA, the path percent-encoded."""
        self.assertEqual(
            hookURI("https://bücher.example/é vents"),
            b"https://xn--bcher-kva.example/%C3%A9%20vents",
        )


class BytesBodyTests(SynchronousTestCase):
    def test_writtenAtOnce(self) -> None:
        written: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                written.append(data)

        body = BytesBody(b"abc")
        self.assertEqual(body.length, 3)
        self.successResultOf(body.startProducing(Consumer()))  # type: ignore[arg-type]
        self.assertEqual(written, [b"abc"])


class _StaleFirst:
    """
    An agent whose first C{request} fails as a kept-open connection the
    hook closed does (C{failure}); the next ones go to C{receiver}.
    """

    def __init__(self, receiver: Receiver, failure: Exception, times: int = 1) -> None:
        self.inner = RequestTraversalAgent(receiver)
        self.failure = failure
        self.times = times
        self.calls = 0

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: Any = None) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            return fail(self.failure)
        return self.inner.request(method, uri, headers, bodyProducer)


class StaleConnectionTests(SynchronousTestCase):
    def deliverThrough(self, agent: _StaleFirst) -> Any:
        clock = Clock()
        d = deliver(cast(IAgent, agent), b"http://hook.example/events", b'{"id":"1"}', None, 10,
                    clock)
        agent.inner.flush()
        return d

    def test_sentAgainOnce(self) -> None:
        """
        The hook closed a kept-open connection as the event went out (no
        answer began): the event goes once more and its answer is read.
        """
        for error in (ResponseNeverReceived([Failure(ConnectionDone())]),
                      RequestTransmissionFailed([Failure(ConnectionDone())]),
                      RequestNotSent()):
            receiver = Receiver(200, b'{"name": "x"}')
            agent = _StaleFirst(receiver, error)
            self.assertEqual(self.successResultOf(self.deliverThrough(agent)),
                             (200, b'{"name": "x"}'))
            self.assertEqual((agent.calls, len(receiver.seen)), (2, 1))

    def test_onlyOnce(self) -> None:
        """Twice in a row is a failed attempt, not a loop."""
        receiver = Receiver()
        agent = _StaleFirst(receiver, RequestNotSent(), times=2)
        self.failureResultOf(self.deliverThrough(agent), DeliveryFailed)
        self.assertEqual((agent.calls, receiver.seen), (2, []))

    def test_otherErrorsNotRetried(self) -> None:
        receiver = Receiver()
        agent = _StaleFirst(receiver, ConnectionRefusedError())
        self.failureResultOf(self.deliverThrough(agent), DeliveryFailed)
        self.assertEqual(agent.calls, 1)
