"""
Interim (1xx) responses: sent by a route through the streaming layer
(L{streamrelay.streaming.interim}), seen by Twisted's HTTP client
(L{streamrelay.streaming.interimclient}), and relayed by the proxy
(L{streamrelay.proxy.interim}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, ResponseDone
from twisted.web.client import Request as ClientRequest
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from streamrelay.proxy.interim import relayInterim
from streamrelay.streaming import StreamingRequest, sendInterim
from streamrelay.streaming.interim import interimHead
from streamrelay.streaming.interimclient import (
    InterimClientProtocol,
    InterimConnectionPool,
    WatchedBody,
    watchInterim,
)
from tests.httpfakes import Connection, ListConsumer
from tests.rawrequests import put

LOCATION = (b"Location", b"/uploads/x")
RESUMABLE = b"HTTP/1.1 104 Upload Resumption Supported\r\nLocation: /uploads/x\r\n\r\n"


class Resumable(Resource):
    """
    A PUT target that sends a 104 before anything else, then reads the
    body (or answers 413 at once, without reading, when C{consume} is
    false) and answers 201.
    """

    isLeaf = True

    def __init__(self, consume: bool = True) -> None:
        super().__init__()
        self.consume = consume
        self.consumer = ListConsumer()
        self.requests: list[StreamingRequest] = []
        self.sent: list[bool] = []

    def render_PUT(self, request: StreamingRequest) -> object:
        self.requests.append(request)
        self.sent.append(sendInterim(request, 104, [LOCATION]))
        if not self.consume or request.body is None:
            request.setResponseCode(413 if request.body is not None else 201)
            request.setHeader(b"content-length", b"2")
            return b"no"
        d = request.body.startProducing(self.consumer)

        def done(result: object) -> None:
            request.setResponseCode(201)
            request.setHeader(b"content-length", b"2")
            request.write(b"ok")
            request.finish()

        d.addBoth(done)
        return NOT_DONE_YET


class SendInterimTests(SynchronousTestCase):
    def test_sentBeforeFinal(self) -> None:
        """
        On HTTP/1.1, the interim response is on the wire at once, with its
        reason phrase and headers, before the final response.
        """
        resource = Resumable()
        conn = Connection(resource)
        conn.send(put(b"/f", b""))  # no body: the route runs on this turn
        self.assertEqual(resource.sent, [True])
        self.assertTrue(conn.output().startswith(RESUMABLE), conn.output())
        self.assertEqual([r.status for r in conn.responses()], [104, 201])
        self.assertEqual(conn.responses()[0].headers, {b"location": b"/uploads/x"})

    def test_streamedBody(self) -> None:
        """
        While a body streams, the interim response leaves before the route
        reads it, and the final response still comes after the body.
        """
        resource = Resumable()
        conn = Connection(resource)
        conn.send(put(b"/f", b"abc")[:-3])
        conn.turn()
        self.assertEqual(conn.output(), RESUMABLE)
        conn.send(b"abc")
        self.assertEqual(resource.consumer.data, b"abc")
        self.assertEqual([r.status for r in conn.responses()], [104, 201])

    def test_beforeContinue(self) -> None:
        """
        A 104 sent before the route reads the body goes out before the
        C{100 Continue}, which is still sent once, when the body is read.
        """
        resource = Resumable()
        conn = Connection(resource)
        conn.send(put(b"/f", b"abc", b"Expect: 100-continue")[:-3])
        self.assertEqual(conn.output(), b"")
        conn.turn()
        self.assertEqual(conn.output(), RESUMABLE + b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.send(b"abc")
        self.assertEqual([r.status for r in conn.responses()], [104, 100, 201])

    def test_noContinueWhenRefused(self) -> None:
        """
        An interim response does not send the C{100 Continue} of a body the
        route then refuses without reading.
        """
        resource = Resumable(consume=False)
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 10, b"Expect: 100-continue")[:-10])
        conn.turn()
        self.assertEqual([r.status for r in conn.responses()], [104, 413])
        self.assertNotIn(b"100 Continue", conn.output())

    def test_afterContinue(self) -> None:
        """An interim response sent after the C{100 Continue} follows it."""
        conn = Connection(Resource())
        conn.send(put(b"/f", b"abc", b"Expect: 100-continue")[:-3])
        request = conn.channel.requests[0]  # type: ignore[attr-defined]
        request.continueBody()
        self.assertTrue(sendInterim(request, 103, {b"Link": b"</a>; rel=preload"}))
        self.assertEqual(
            conn.output(),
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 \r\nLink: </a>; rel=preload\r\n\r\n",
        )

    def test_http10(self) -> None:
        """An HTTP/1.0 client never gets one: nothing is sent, False."""
        resource = Resumable()
        conn = Connection(resource)
        conn.send(b"PUT /f HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(resource.sent, [False])
        self.assertEqual([r.status for r in conn.responses()], [201])
        self.assertNotIn(b" 104 ", conn.output())

    def test_afterFinalStarted(self) -> None:
        """Once the final response has started, or ended: nothing, False."""
        conn = Connection(Resource())
        conn.send(put(b"/f", b"abc")[:-3])
        request = conn.channel.requests[0]  # type: ignore[attr-defined]
        request.setHeader(b"content-length", b"2")
        request.write(b"o")
        sent = conn.output()
        self.assertFalse(sendInterim(request, 104, [LOCATION]))
        request.write(b"k")
        request.finish()
        self.assertFalse(sendInterim(request, 104, [LOCATION]))
        self.assertEqual(conn.output(), sent + b"k")

    def test_clientGone(self) -> None:
        """Once the client is gone: nothing, False."""
        conn = Connection(Resource())
        conn.send(put(b"/f", b"abc")[:-3])
        request = conn.channel.requests[0]  # type: ignore[attr-defined]
        conn.lose()
        self.assertFalse(sendInterim(request, 104, [LOCATION]))
        self.assertEqual(conn.output(), b"")

    def test_badHeadersRefused(self) -> None:
        """
        A header that is not a token, a value or phrase with CR, LF or NUL,
        a framing header, or a status that is not an interim one a route
        sends: ValueError, and nothing is written.
        """
        conn = Connection(Resource())
        conn.send(put(b"/f", b"abc")[:-3])
        request = conn.channel.requests[0]  # type: ignore[attr-defined]
        bad: list[tuple[int, Any, Any]] = [
            (104, [(b"Location", b"/a\r\nSet-Cookie: x=1")], None),
            (104, [(b"Location", b"/a\nX: y")], None),
            (104, [(b"Location", b"/a\x00")], None),
            (104, [(b"Bad Name", b"v")], None),
            (104, [(b"Bad:Name", b"v")], None),
            (104, [(b"", b"v")], None),
            (104, [(b"Content-Length", b"0")], None),
            (104, Headers({b"Transfer-Encoding": [b"chunked"]}), None),
            (104, [("Location", "/a")], None),
            (104, None, b"Upload\r\nX: y"),
            (100, None, None),
            (101, None, None),
            (200, None, None),
            (99, None, None),
        ]
        for code, headers, reason in bad:
            self.assertRaises(ValueError, sendInterim, request, code, headers, reason)
        self.assertEqual(conn.output(), b"")

    def test_head(self) -> None:
        """The phrase of 104 is the draft's; headers come in any of three forms."""
        for headers in ([LOCATION], {b"Location": b"/uploads/x"},
                        Headers({b"location": [b"/uploads/x"]})):
            reason, head = interimHead(104, headers)
            self.assertEqual(reason, b"Upload Resumption Supported")
            self.assertEqual(head.getRawHeaders(b"location"), [b"/uploads/x"])
        self.assertEqual(interimHead(103, None, b"Early Hints")[0], b"Early Hints")


@implementer(IBodyProducer)
class BytesBody:
    """A body written at once."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.ended: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended = reason


class Observed:
    def __init__(self) -> None:
        self.seen: list[tuple[int, bytes, list[tuple[bytes, list[bytes]]]]] = []

    def __call__(self, code: int, reason: bytes, headers: Headers) -> None:
        self.seen.append((code, reason, sorted(
            (name.lower(), list(values)) for name, values in headers.getAllRawHeaders()
        )))


FINAL = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"


def clientRequest(body: IBodyProducer | None) -> tuple[
    InterimClientProtocol, StringTransport, list[IResponse], list[Failure]
]:
    protocol = InterimClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    responses: list[IResponse] = []
    failures: list[Failure] = []
    sent = protocol.request(ClientRequest(
        b"PUT", b"/files/x", Headers({b"host": [b"backend"]}), body, persistent=True
    ))
    sent.addCallbacks(responses.append, failures.append)
    return protocol, transport, responses, failures


class ClientObservationTests(SynchronousTestCase):
    def assertFinal(self, responses: list[IResponse], failures: list[Failure]) -> None:
        self.assertEqual(failures, [])
        [response] = responses
        self.assertEqual((response.code, response.phrase), (201, b"Created"))
        self.assertEqual(response.headers.getRawHeaders(b"x-final"), [b"yes"])
        body = Collect()
        response.deliverBody(body)
        self.assertEqual(body.data, b"ok")
        assert body.ended is not None
        self.assertTrue(body.ended.check(ResponseDone))

    def test_interimSeen(self) -> None:
        """
        Each interim response is told (status, phrase, headers) as its
        header section ends, before the final response, which is parsed
        and delivered as ever; in one read or byte by byte.
        """
        raw = (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 104 Upload Resumption Supported\r\n"
            b"Location: /uploads/x\r\nUpload-Draft-Interop-Version: 6\r\n\r\n"
            + FINAL
        )
        for reads in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
            observed = Observed()
            protocol, transport, responses, failures = clientRequest(
                watchInterim(BytesBody(b"abc"), observed)
            )
            self.assertIn(b"Content-Length: 3", transport.value())
            self.assertTrue(transport.value().endswith(b"\r\n\r\nabc"))
            checked = 0
            for i, data in enumerate(reads):
                protocol.dataReceived(data)
                if i == len(reads) - len(FINAL) - 1:
                    # The 104's header section is complete; no final yet.
                    self.assertEqual(len(observed.seen), 2)
                    self.assertEqual(responses, [])
                    checked += 1
            self.assertEqual(checked, 0 if len(reads) == 1 else 1)
            self.assertEqual(observed.seen, [
                (100, b"Continue", []),
                (104, b"Upload Resumption Supported", [
                    (b"location", [b"/uploads/x"]),
                    (b"upload-draft-interop-version", [b"6"]),
                ]),
            ])
            self.assertFinal(responses, failures)

    def test_seenBeforeFinal(self) -> None:
        """The observer is told before the final response's head arrives."""
        observed = Observed()
        protocol, transport, responses, failures = clientRequest(
            watchInterim(BytesBody(b"abc"), observed)
        )
        protocol.dataReceived(RESUMABLE)
        self.assertEqual([code for code, _, _ in observed.seen], [104])
        self.assertEqual(responses, [])
        protocol.dataReceived(FINAL)
        self.assertFinal(responses, failures)

    def test_otherBodies(self) -> None:
        """
        A request with another body, or none, is left as Twisted sends it:
        its interim responses are dropped and the final one parsed.
        """
        for body in (BytesBody(b"abc"), None):
            protocol, transport, responses, failures = clientRequest(body)
            protocol.dataReceived(RESUMABLE + FINAL)
            self.assertFinal(responses, failures)

    def test_observerFails(self) -> None:
        """An observer that raises is logged; the response is parsed as ever."""

        def fails(code: int, reason: bytes, headers: Headers) -> None:
            raise RuntimeError("observer on fire")

        protocol, transport, responses, failures = clientRequest(
            watchInterim(BytesBody(b"abc"), fails)
        )
        protocol.dataReceived(RESUMABLE + FINAL)
        self.assertFinal(responses, failures)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_watchedBodyDelegates(self) -> None:
        """A watched body is its producer, to Twisted's client."""
        inner = BytesBody(b"abc")
        watched = watchInterim(inner, Observed())
        self.assertEqual(watched.length, 3)
        watched.stopProducing()
        self.assertTrue(inner.stopped)

    def test_throughAgent(self) -> None:
        """
        An Agent on an L{InterimConnectionPool} tells the observer of the
        request sent with a watched body; its connections stay pooled.
        """
        reactor = MemoryReactorClock()
        pool = InterimConnectionPool(reactor)
        agent = Agent(reactor, pool=pool)
        observed = Observed()
        responses: list[IResponse] = []
        agent.request(
            b"PUT", b"http://127.0.0.1:8081/files/x", Headers(),
            watchInterim(BytesBody(b"abc"), observed),
        ).addCallback(responses.append)
        [(host, port, factory, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 8081))
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"PUT /files/x HTTP/1.1\r\n"))
        protocol.dataReceived(RESUMABLE)
        self.assertEqual([code for code, _, _ in observed.seen], [104])
        protocol.dataReceived(FINAL)
        self.assertFinal(responses, [])


class RelayTests(SynchronousTestCase):
    def interim(self, version: bytes = b"HTTP/1.1") -> tuple[Connection, Any]:
        """A client request to the proxy, and what its upstream body tells."""
        conn = Connection(Resource())
        conn.send(put(b"/f", b"abc").replace(b"HTTP/1.1", version, 1)[:-3])
        request = conn.channel.requests[0]  # type: ignore[attr-defined]
        watched = relayInterim(request, request.body)
        self.assertIsInstance(watched, WatchedBody)
        return conn, watched.observer  # type: ignore[union-attr]

    def test_relayed(self) -> None:
        """
        An interim response of the backend goes to the client at once:
        same status and phrase, its end-to-end headers only.
        """
        conn, observer = self.interim()
        headers = Headers({
            b"Location": [b"/uploads/x"],
            b"Upload-Draft-Interop-Version": [b"6"],
            b"Connection": [b"X-Hop"],
            b"X-Hop": [b"1"],
            b"Keep-Alive": [b"timeout=5"],
            b"Content-Length": [b"0"],
        })
        observer(104, b"Upload Resumption Supported", headers)
        [response] = conn.responses()
        self.assertEqual(response.status, 104)
        self.assertTrue(response.raw.startswith(b"HTTP/1.1 104 Upload Resumption Supported\r\n"))
        self.assertEqual(response.headers, {
            b"location": b"/uploads/x", b"upload-draft-interop-version": b"6",
        })

    def test_notRelayed(self) -> None:
        """
        C{100 Continue} (hop by hop) and C{101} are not relayed, nor is
        anything to an HTTP/1.0 client.
        """
        conn, observer = self.interim()
        observer(100, b"Continue", Headers())
        observer(101, b"Switching Protocols", Headers({b"Upgrade": [b"h2c"]}))
        self.assertEqual(conn.output(), b"")
        conn, observer = self.interim(b"HTTP/1.0")
        observer(104, b"Upload Resumption Supported", Headers({b"Location": [b"/u"]}))
        self.assertEqual(conn.output(), b"")

    def test_badPhraseLogged(self) -> None:
        """What the streaming layer refuses to send is logged and dropped."""
        conn, observer = self.interim()
        observer(104, b"Bad\x00Phrase", Headers())
        self.assertEqual(conn.output(), b"")

    def test_noBody(self) -> None:
        """A request without a body stays without one."""
        conn = Connection(Resource())
        conn.send(put(b"/f", b"abc")[:-3])
        self.assertIsNone(relayInterim(conn.channel.requests[0], None))  # type: ignore[attr-defined]
