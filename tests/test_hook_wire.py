"""
The backend's HTTP/1.1 client for its hook (L{streamrelay.hooks.wire}):
the request it writes, every framing of an answer it must read, when it
keeps a connection and when it must not, against in-memory transports.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from streamrelay.hooks.wire import MAX_ANSWER_BYTES, AnswerError, HookClient, NotAnswered

HEADERS = [(b"Content-Type", b"application/json")]


@implementer(IStreamClientEndpoint)
class Connections:
    """An endpoint handing out connections over L{StringTransport}s."""

    def __init__(self) -> None:
        self.made: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.made.append((protocol, transport))
        return succeed(protocol)


class WireTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = Connections()
        self.client = HookClient(
            "http://hook.example/events?app=1", self.endpoint, self.clock, keep=2, idleSeconds=30
        )

    def post(self, body: bytes = b'{"id":"1"}') -> Deferred[tuple[int, bytes]]:
        return self.client.post(HEADERS, body)

    def answer(self, data: bytes, index: int = -1, step: int = 0) -> None:
        """The hook's bytes on connection C{index}, in pieces of C{step} (0: at once)."""
        protocol, _ = self.endpoint.made[index]
        for i in range(0, len(data), step or len(data)):
            protocol.dataReceived(data[i:i + (step or len(data))])

    def close(self, index: int = -1, reason: Exception | None = None) -> None:
        protocol, _ = self.endpoint.made[index]
        protocol.connectionLost(Failure(reason or ConnectionDone()))

    def transport(self, index: int = -1) -> StringTransport:
        return self.endpoint.made[index][1]

    # The request

    def test_request(self) -> None:
        """One write: request line, Host, the caller's headers, the length, the body."""
        self.post(b'{"id":"1"}')
        self.assertEqual(
            self.transport().value(),
            b"POST /events?app=1 HTTP/1.1\r\nHost: hook.example\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            b'{"id":"1"}',
        )

    def test_hostAndTarget(self) -> None:
        """A port other than the scheme's goes in Host; an IPv6 host in brackets."""
        for url, start in [
            ("http://[::1]:8080/x", b"POST /x HTTP/1.1\r\nHost: [::1]:8080\r\n"),
            ("https://hook.example", b"POST / HTTP/1.1\r\nHost: hook.example\r\n"),
            ("http://hook.example:80/a%20b", b"POST /a%20b HTTP/1.1\r\nHost: hook.example\r\n"),
        ]:
            endpoint = Connections()
            HookClient(url, endpoint, self.clock, 1, 30).post([], b"")
            self.assertTrue(endpoint.made[0][1].value().startswith(start), url)

    # Framing

    def test_contentLength(self) -> None:
        d = self.post()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", step=3)
        self.assertEqual(self.successResultOf(d), (200, b"hello"))

    def test_noBody(self) -> None:
        """A 204 has no body, whatever else it says."""
        d = self.post()
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.successResultOf(d), (204, b""))

    def test_chunked(self) -> None:
        """A chunked body, read a byte at a time, extensions and trailers skipped."""
        d = self.post()
        self.answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
            step=1,
        )
        self.assertEqual(self.successResultOf(d), (200, b"abc0123456789"))
        self.assertFalse(self.transport().disconnecting)

    def test_interim(self) -> None:
        """A 1xx answer is skipped; the final one counts."""
        d = self.post()
        self.answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(d), (201, b""))

    def test_untilClosed(self) -> None:
        """Without a length, the body ends with the connection, which is not kept."""
        d = self.post()
        self.answer(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        self.answer(b"part two")
        self.assertNoResult(d)
        self.close()
        self.assertEqual(self.successResultOf(d), (200, b"part one, part two"))
        self.post()
        self.assertEqual(len(self.endpoint.made), 2)

    # Keeping connections

    def test_reused(self) -> None:
        """A framed answer with nothing after it leaves the connection for the next post."""
        d = self.post()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d)
        self.transport().clear()
        d = self.post()
        self.assertEqual(len(self.endpoint.made), 1)
        self.assertTrue(self.transport().value().startswith(b"POST "))
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.successResultOf(d), (204, b""))

    def test_notReused(self) -> None:
        """Connection: close, an HTTP/1.0 answer, or bytes after the answer: closed."""
        for answer in [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
        ]:
            self.setUp()
            d = self.post()
            self.answer(answer)
            self.assertEqual(self.successResultOf(d)[0], 200)
            self.assertTrue(self.transport().disconnecting, answer)
            self.post()
            self.assertEqual(len(self.endpoint.made), 2, answer)

    def test_keepAlive10(self) -> None:
        """An HTTP/1.0 answer saying keep-alive keeps the connection."""
        d = self.post()
        self.answer(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d)
        self.assertFalse(self.transport().disconnecting)

    def test_keepsAtMost(self) -> None:
        """Beyond C{keep} idle connections, the ones answered are closed."""
        posts = [self.post() for _ in range(3)]
        self.assertEqual(len(self.endpoint.made), 3)
        for i in range(3):
            self.answer(b"HTTP/1.1 204 No Content\r\n\r\n", index=i)
        for d in posts:
            self.successResultOf(d)
        self.assertEqual([t.disconnecting for _, t in self.endpoint.made], [False, False, True])

    def test_idleClosed(self) -> None:
        """An idle connection is closed after C{idleSeconds}, and no timer is left."""
        d = self.post()
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.successResultOf(d)
        self.clock.advance(29)
        self.assertFalse(self.transport().disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport().disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closedByTheHook(self) -> None:
        """An idle connection the hook closed is not used again."""
        d = self.post()
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.successResultOf(d)
        self.close()
        self.post()
        self.assertEqual(len(self.endpoint.made), 2)

    def test_unaskedBytes(self) -> None:
        """Bytes on an idle connection: it is dropped, not trusted with the next answer."""
        d = self.post()
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.successResultOf(d)
        self.answer(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(self.transport().disconnecting)
        self.close()
        self.post()
        self.assertEqual(len(self.endpoint.made), 2)

    # Failures

    def test_notAnswered(self) -> None:
        """Closed before any byte of an answer: L{NotAnswered} (safe to send again)."""
        d = self.post()
        self.close(reason=ConnectionLost())
        self.failureResultOf(d, NotAnswered)

    def test_closedInTheAnswer(self) -> None:
        for partial in [
            b"HTTP/1.1 200 OK\r\nContent-",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ]:
            d = self.post()
            self.answer(partial)
            self.close()
            self.failureResultOf(d, AnswerError)

    def test_malformed(self) -> None:
        """A malformed answer fails the post and closes the connection."""
        for answer in [
            b"SPDY/3 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n bad: name\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ]:
            d = self.post()
            self.answer(answer)
            self.failureResultOf(d, AnswerError)
            self.assertTrue(self.transport().disconnected, answer)
            self.close()

    def test_tooLong(self) -> None:
        """A runaway answer is not read into memory, however it is framed."""
        big = MAX_ANSWER_BYTES + 1
        for answer in [
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big,
            b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * big,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % big + b"x" * big,
            b"HTTP/1.1 200 OK\r\nX: " + b"x" * big,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
        ]:
            d = self.post()
            self.answer(answer)
            self.failureResultOf(d, AnswerError)
            self.close()

    def test_cancelled(self) -> None:
        """Cancelling a post aborts its connection; its loss reports nothing more."""
        d = self.post()
        d.cancel()
        self.assertTrue(self.transport().disconnected)
        self.close(reason=ConnectionLost())
        self.failureResultOf(d)
        self.post()
        self.assertEqual(len(self.endpoint.made), 2)

    def test_closeIdle(self) -> None:
        """L{HookClient.close} closes the idle connections and its timer."""
        d = self.post()
        self.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.successResultOf(d)
        self.client.close()
        self.assertTrue(self.transport().disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
