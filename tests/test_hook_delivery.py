"""
One hook delivery attempt (L{streamrelay.hooks.delivery}), through the
backend's hook client against Twisted's HTTP server in memory, with a
fake clock.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from streamrelay.hooks.delivery import MAX_ANSWER_BYTES, DeliveryFailed, deliver, hookURI
from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.signature import verify
from streamrelay.hooks.wire import NotAnswered
from tests.hookfakes import FlushingPoster, MemoryHook


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
        self.hook = MemoryHook(receiver)
        # The client's own clock: its idle connections' timer is not the attempt's.
        d = deliver(self.hook.poster(Clock()), b'{"id":"1"}', secret, timeout, self.clock)
        self.hook.flush()
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
        self.hook.flush()
        self.assertEqual(self.hook.pumps, [], "the connection is closed")

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
        d = deliver(cast(IPoster, _Refused()), b"{}", None, 1, Clock())
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
        clock = Clock()
        poster = MemoryHook(receiver).poster(clock)
        for _ in range(2):
            self.successResultOf(deliver(poster, b"{}", None, 10, clock))
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


class _Refused:
    url = b"http://hook.example/events"

    def post(self, headers: Any, body: bytes) -> Deferred[tuple[int, bytes]]:
        return fail(ConnectionRefusedError("hook.example:80"))


class _StaleFirst:
    """
    A hook client whose first C{post}s (C{times}) fail as a kept-open
    connection the hook closed does; the next ones go to C{receiver}.
    """

    def __init__(self, receiver: Receiver, failure: Exception, times: int = 1) -> None:
        self.inner: FlushingPoster = MemoryHook(receiver).poster(Clock())
        self.url = self.inner.url
        self.failure = failure
        self.times = times
        self.calls = 0

    def post(self, headers: Any, body: bytes) -> Deferred[tuple[int, bytes]]:
        self.calls += 1
        if self.calls <= self.times:
            return fail(self.failure)
        return self.inner.post(headers, body)


class StaleConnectionTests(SynchronousTestCase):
    def deliverThrough(self, poster: _StaleFirst) -> Any:
        return deliver(cast(IPoster, poster), b'{"id":"1"}', None, 10, Clock())

    def test_sentAgainOnce(self) -> None:
        """
        The hook closed a kept-open connection as the event went out (no
        answer began): the event goes once more and its answer is read.
        """
        receiver = Receiver(200, b'{"name": "x"}')
        poster = _StaleFirst(receiver, NotAnswered("closed"))
        self.assertEqual(self.successResultOf(self.deliverThrough(poster)),
                         (200, b'{"name": "x"}'))
        self.assertEqual((poster.calls, len(receiver.seen)), (2, 1))

    def test_onlyOnce(self) -> None:
        """Twice in a row is a failed attempt, not a loop."""
        receiver = Receiver()
        poster = _StaleFirst(receiver, NotAnswered("closed"), times=2)
        self.failureResultOf(self.deliverThrough(poster), DeliveryFailed)
        self.assertEqual((poster.calls, receiver.seen), (2, []))

    def test_otherErrorsNotRetried(self) -> None:
        receiver = Receiver()
        poster = _StaleFirst(receiver, ConnectionRefusedError())
        self.failureResultOf(self.deliverThrough(poster), DeliveryFailed)
        self.assertEqual(poster.calls, 1)
