"""
Interim (1xx) responses: sent by a route through the streaming layer
(L{streamrelay.streaming.interim}), seen by Twisted's HTTP client
(L{streamrelay.streaming.interimclient}), and relayed by the proxy
(L{streamrelay.proxy.interim}).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamrelay.streaming import StreamingRequest, sendInterim
from streamrelay.streaming.interim import interimHead
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
