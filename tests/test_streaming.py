"""
Unit tests of the streaming request layer, with Twisted's fakes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from streamrelay.streaming import (
    HEADER_READ_SIZE,
    LINGER_SECONDS,
    BodyIncomplete,
    BodyTimeout,
    RequestBody,
    StreamingRequest,
    sendEagerly,
)
from tests.httpfakes import Connection, ListConsumer, Upload
from tests.rawrequests import chunk, chunkedHead, put


class Hold(Resource):
    """A PUT target that neither reads nor answers: the test does."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[StreamingRequest] = []

    def render_PUT(self, request: StreamingRequest) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


class DispatchTests(SynchronousTestCase):
    def test_dispatchedBeforeBodyEnds(self) -> None:
        """
        The resource runs on the turn after the headers, while the client
        still holds most of the body, and reads what has come so far.
        """
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 10)[:-6])
        self.assertEqual(resource.requests, [])
        conn.turn()
        self.assertEqual(len(resource.requests), 1)
        request = resource.requests[0]
        self.assertEqual(request.method, b"PUT")
        self.assertEqual(request.path, b"/f")
        self.assertEqual(resource.consumer.data, b"a" * 4)
        assert request.content is not None
        self.assertEqual(request.content.read(), b"")
        conn.send(b"a" * 6)
        self.assertEqual(resource.consumer.data, b"a" * 10)
        self.assertEqual(conn.responses()[0].body, b"10")

    def test_bodyIsABodyProducer(self) -> None:
        resource = Upload(consume=False)
        conn = Connection(resource)
        conn.send(chunkedHead(b"/f"))
        conn.turn()
        body = resource.requests[0].body
        assert body is not None
        verifyObject(IBodyProducer, body)
        self.assertIs(body.length, UNKNOWN_LENGTH)
        self.assertIsNone(body.declaredLength)

    def test_queryArguments(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f?a=1&b=", b"xyz"))
        conn.turn()
        request = resource.requests[0]
        self.assertEqual(request.path, b"/f")
        self.assertEqual(request.uri, b"/f?a=1&b=")
        self.assertEqual(request.args, {b"a": [b"1"], b"b": [b""]})

    def test_queryArgumentsDecodedAsUTF8(self) -> None:
        """Percent-escaped UTF-8 reaches the resource as bytes."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(b"GET /f?after=%C3%A9&%E2%82%AC=&c=%2B+d HTTP/1.1\r\nHost: x\r\n\r\n")
        [request] = resource.requests
        self.assertEqual(
            request.args,
            {b"after": [b"\xc3\xa9"], b"\xe2\x82\xac": [b""], b"c": [b"+ d"]},
        )
        self.assertEqual(conn.responses()[0].status, 200)

    def test_noBody(self) -> None:
        """A request without a body is handled as twisted.web does."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(resource.requests), 1)
        self.assertIsNone(resource.requests[0].body)
        self.assertEqual(conn.responses()[0].body, b"ok")

    def test_connectionLostBeforeDispatch(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 10)[:-5])
        conn.lose()
        conn.turn()
        self.assertEqual(resource.requests, [])


class FlowControlTests(SynchronousTestCase):
    def test_pausedUntilConsumed(self) -> None:
        """The client is not read until the route starts consuming."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 100)[:-50])
        self.assertTrue(conn.paused)
        conn.turn()
        self.assertFalse(conn.paused)

    def test_pauseAndResumeReachTransport(self) -> None:
        consumer = ListConsumer(pauseEach=True)
        resource = Upload(consumer=consumer)
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 30)[:-20])
        conn.turn()
        self.assertEqual(consumer.data, b"a" * 10)
        self.assertTrue(conn.paused)
        # twisted.web may resume the transport behind our back: the next
        # read is kept, not delivered, and the transport paused again.
        conn.transport.resumeProducing()
        conn.send(b"b" * 10)
        self.assertEqual(consumer.data, b"a" * 10)
        self.assertTrue(conn.paused)
        assert consumer.producer is not None
        consumer.pauseEach = False
        consumer.producer.resumeProducing()
        self.assertEqual(consumer.data, b"a" * 10 + b"b" * 10)
        self.assertFalse(conn.paused)
        conn.send(b"c" * 10)
        self.assertEqual(conn.responses()[0].body, b"30")

    def test_idleTimeoutSuspendedWhilePaused(self) -> None:
        """
        A client held back by backpressure is not timed out; the timeout
        applies again once it is resumed, and after the body for the next
        request on the connection.
        """
        consumer = ListConsumer(pauseEach=True)
        resource = Upload(consumer=consumer)
        conn = Connection(resource, timeout=10)
        conn.send(put(b"/f", b"a" * 20)[:-10])
        conn.turn()
        conn.clock.advance(100)
        self.assertFalse(conn.transport.disconnecting)
        assert consumer.producer is not None
        consumer.pauseEach = False
        consumer.producer.resumeProducing()
        conn.send(b"b" * 10)
        self.assertEqual(conn.responses()[0].body, b"20")
        conn.clock.advance(11)
        self.assertTrue(conn.transport.disconnecting)

    def test_timeoutRestoredWhenBodyEndsWhilePaused(self) -> None:
        consumer = ListConsumer(pauseEach=True)
        resource = Upload(consumer=consumer)
        conn = Connection(resource, timeout=10)
        conn.send(put(b"/f", b"a" * 20)[:-10])
        conn.turn()
        conn.send(b"b" * 10)  # the last bytes arrive while paused
        assert consumer.producer is not None
        consumer.pauseEach = False
        consumer.producer.resumeProducing()
        self.assertEqual(conn.responses()[0].body, b"20")
        conn.clock.advance(11)
        self.assertTrue(conn.transport.disconnecting)

    def test_splicedBodyMovingBetweenReports(self) -> None:
        """
        A spliced body reports only every few MiB: while its splice takes
        bytes, or waits for its consumer's side, the body is not timed out
        between reports; once it takes nothing for the timeout, it is.
        """

        class Splicer:
            taken = 0
            blocked = False

            def pause(self) -> None:
                pass

            def resume(self) -> None:
                pass

            def stop(self) -> None:
                pass

        class Splice:
            splicer = Splicer()

            @property
            def blocked(self) -> bool:
                return self.splicer.blocked

        resource = Upload()
        conn = Connection(resource, timeout=10)
        conn.send(put(b"/f", b"a" * 20)[:-10])
        conn.turn()
        [request] = resource.requests
        splice = Splice()
        request._splice = splice  # type: ignore[assignment]
        splice.splicer.taken = 5
        conn.clock.advance(10)
        splice.splicer.blocked = True
        conn.clock.advance(10)
        splice.splicer.blocked = False
        conn.clock.advance(9)
        self.assertEqual(resource.results, [])
        conn.clock.advance(1)
        [result] = resource.results
        assert isinstance(result, Failure)
        self.assertIsInstance(result.value, BodyTimeout)
        request._splice = None

    def test_idleClientTimedOut(self) -> None:
        """
        A client that stops sending while not held back fails the body with
        BodyTimeout, so the route can answer 408; then the connection is
        closed by the idle timeout.
        """
        resource = Upload()
        conn = Connection(resource, timeout=10)
        conn.send(put(b"/f", b"a" * 20)[:-10])
        conn.turn()
        conn.clock.advance(9)
        conn.send(b"a")  # a moving client is not cut off
        conn.clock.advance(9)
        self.assertEqual(resource.results, [])
        conn.clock.advance(2)
        [result] = resource.results
        assert isinstance(result, Failure)
        self.assertIsInstance(result.value, BodyTimeout)
        [response] = conn.responses()
        self.assertEqual(response.status, 408)
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertFalse(conn.transport.disconnecting)
        conn.clock.advance(11)
        self.assertTrue(conn.transport.disconnecting)


class ChunkedAndPipelinedTests(SynchronousTestCase):
    def test_chunked(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(chunkedHead(b"/f") + chunk(b"hello "))
        conn.turn()
        self.assertEqual(resource.consumer.data, b"hello ")
        conn.send(chunk(b"world") + b"0\r\n\r\n")
        self.assertEqual(resource.consumer.data, b"hello world")
        self.assertEqual(conn.responses()[0].body, b"11")

    def test_malformedChunk(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(chunkedHead(b"/f") + chunk(b"hello "))
        conn.turn()
        conn.send(b"zz\r\nnope\r\n")
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(conn.responses()[0].status, 400)
        conn.lose()
        self.assertEqual(len(resource.results), 1)
        self.assertIsInstance(resource.results[0], Failure)

    def test_pipelined(self) -> None:
        """A Content-Length PUT, a chunked PUT and a GET in one write."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(
            put(b"/a", b"x" * 5)
            + chunkedHead(b"/b") + chunk(b"yyy") + b"0\r\n\r\n"
            + b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        for _ in range(3):
            conn.turn()
        self.assertEqual(
            [(r.status, r.body) for r in conn.responses()],
            [(200, b"5"), (200, b"8"), (200, b"ok")],
        )
        self.assertEqual([r.path for r in resource.requests], [b"/a", b"/b", b"/c"])


class EarlyResponseTests(SynchronousTestCase):
    def test_earlyErrorLingers(self) -> None:
        """
        An answer before the body ends closes the connection, but only
        after the rest of the body was read and dropped.
        """
        resource = Upload(consume=False)
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 100)[:-90])
        conn.turn()
        [response] = conn.responses()
        self.assertEqual(response.status, 413)
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertFalse(conn.transport.disconnecting)
        self.assertFalse(conn.paused)
        conn.send(b"a" * 90)
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(len(conn.responses()), 1)

    def test_lingerIsCapped(self) -> None:
        resource = Upload(consume=False)
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 100)[:-90])
        conn.turn()
        conn.send(b"a" * 10)
        conn.clock.advance(LINGER_SECONDS - 1)
        conn.send(b"a" * 10)  # keeps the idle timeout from firing first
        self.assertFalse(conn.transport.disconnecting)
        conn.clock.advance(1)
        self.assertTrue(conn.transport.disconnecting)

    def test_lingerTimeoutEndsTheBody(self) -> None:
        """
        A client still sending when the lingering close gives up: its body
        leaves the site's count of streaming bodies (which sizes every
        connection's reads), and a consumer still reading it learns that it
        ended incomplete.
        """
        results: list[object] = []

        class AnswerEarly(Resource):
            isLeaf = True

            def render_PUT(self, request: StreamingRequest) -> bytes:
                assert request.body is not None
                request.body.startProducing(ListConsumer()).addBoth(results.append)
                request.setResponseCode(413)
                request.setHeader(b"content-length", b"2")
                return b"no"

        conn = Connection(AnswerEarly())
        conn.send(put(b"/f", b"a" * 100)[:-90])
        conn.turn()
        site: Any = conn.site
        self.assertEqual(site.streamingBodies, 1)
        conn.clock.advance(LINGER_SECONDS)
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(site.streamingBodies, 0)
        conn.lose()
        self.assertEqual(site.streamingBodies, 0)
        [result] = results
        assert isinstance(result, Failure)
        result.trap(BodyIncomplete)

    def test_clientClosesWhileLingering(self) -> None:
        resource = Upload(consume=False)
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 100)[:-90])
        conn.turn()
        finished = resource.requests[0].notifyFinish()
        results: list[object] = []
        finished.addBoth(results.append)
        conn.lose()
        self.assertEqual(results, [None])

    def test_continueOnlyWhenConsumed(self) -> None:
        """
        C{100 Continue} goes out when the route starts reading the body,
        never when it answers without reading.
        """
        refused = Connection(Upload(consume=False))
        refused.send(put(b"/f", b"", b"Expect: 100-continue").replace(
            b"Content-Length: 0", b"Content-Length: 1000"))
        refused.turn()
        self.assertEqual([r.status for r in refused.responses()], [413])

        accepted = Connection(Upload())
        accepted.send(put(b"/f", b"", b"Expect: 100-continue").replace(
            b"Content-Length: 0", b"Content-Length: 3"))
        self.assertEqual(accepted.output(), b"")
        accepted.turn()
        self.assertEqual(accepted.output(), b"HTTP/1.1 100 Continue\r\n\r\n")
        accepted.send(b"abc")
        self.assertEqual([r.status for r in accepted.responses()], [100, 200])


class FailureTests(SynchronousTestCase):
    def test_clientGoneFailsBody(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 100)[:-90])
        conn.turn()
        conn.channel.connectionLost(Failure(ConnectionDone()))
        [result] = resource.results
        assert isinstance(result, Failure)
        error = result.value
        assert isinstance(error, BodyIncomplete)
        self.assertEqual((error.received, error.expected), (10, 100))

    def test_consumerErrorFailsBodyNotConnection(self) -> None:
        """
        An exception from the consumer fails the body; the connection
        keeps parsing, and the rest of the body is dropped.
        """
        consumer = ListConsumer(failAfter=1)
        resource = Upload(consumer=consumer)
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 30)[:-20])
        conn.turn()
        conn.send(b"b" * 10)
        [result] = resource.results
        assert isinstance(result, Failure)
        self.assertIsInstance(result.value, OSError)
        self.assertFalse(conn.transport.disconnecting)
        conn.send(b"c" * 10)
        self.assertEqual(consumer.data, b"a" * 10 + b"b" * 10)

    def test_cancelDropsBody(self) -> None:
        resource = Hold()
        conn = Connection(resource)
        conn.send(chunkedHead(b"/f"))
        conn.turn()
        body = resource.requests[0].body
        assert body is not None
        consumer = ListConsumer()
        d: Deferred[None] = body.startProducing(consumer)
        failures: list[Failure] = []
        d.addErrback(failures.append)
        d.cancel()
        conn.send(chunk(b"late"))
        self.assertEqual(consumer.data, b"")
        self.assertEqual(len(failures), 1)

    def test_consumedOnce(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f", b"a" * 30)[:-20])
        conn.turn()
        body = resource.requests[0].body
        assert isinstance(body, RequestBody)
        self.assertRaises(RuntimeError, body.startProducing, ListConsumer())


class MalformedRequestTests(SynchronousTestCase):
    """Requests twisted.web refuses itself get API.md's JSON errors."""

    def refused(self, data: bytes) -> tuple[int, dict[str, str], bool]:
        import json

        resource = Upload()
        conn = Connection(resource)
        conn.send(data)
        conn.turn()
        responses = [r for r in conn.responses() if r.status >= 200]
        self.assertEqual(len(responses), 1, conn.output())
        self.assertEqual(resource.requests, [])
        response = responses[0]
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertEqual(response.headers[b"connection"], b"close")
        return response.status, json.loads(response.body), conn.transport.disconnecting

    def test_badRequestLine(self) -> None:
        status, answer, closed = self.refused(b"NONSENSE\r\n\r\n")
        self.assertEqual((status, answer["error"], closed), (400, "bad_request", True))

    def test_contentLengthAndChunked(self) -> None:
        """Both framings at once (request smuggling) are refused."""
        status, answer, _ = self.refused(
            b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        self.assertEqual((status, answer["error"]), (400, "bad_request"))

    def test_badContentLength(self) -> None:
        for value in [b"-1", b"abc", b"1e3", b"5, 5"]:
            status, answer, _ = self.refused(
                b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nxxxxx"
            )
            self.assertEqual((status, answer["error"]), (400, "bad_request"), value)

    def test_badChunkFraming(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(chunkedHead(b"/f") + b"zz\r\nnope\r\n")
        conn.turn()
        [response] = conn.responses()
        self.assertEqual(response.status, 400)
        self.assertIn(b"bad_request", response.body)
        self.assertTrue(conn.transport.disconnecting)

    def test_tooManyHeaders(self) -> None:
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(600))
        status, answer, _ = self.refused(b"GET /f HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertEqual((status, answer["error"]), (431, "headers_too_large"))

    def test_headersTooLarge(self) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
        status, answer, _ = self.refused(b"GET /f HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertEqual((status, answer["error"]), (431, "headers_too_large"))

    def test_headerLineTooLong(self) -> None:
        status, answer, _ = self.refused(
            b"GET /f HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 20000 + b"\r\n\r\n"
        )
        self.assertEqual((status, answer["error"]), (431, "headers_too_large"))

    def test_slowHeadersCut(self) -> None:
        """
        Headers trickling in byte by byte are cut off with 408 once the
        idle timeout has passed since the request began, though each byte
        came well within it.
        """
        resource = Upload()
        conn = Connection(resource, timeout=10)
        request = b"GET /f HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"v" * 100
        for byte in request[:9]:
            conn.send(bytes([byte]))
            conn.clock.advance(1)
        self.assertEqual(conn.output(), b"")
        conn.send(request[9:10])
        conn.clock.advance(1)
        [response] = conn.responses()
        self.assertEqual(response.status, 408)
        self.assertIn(b'"timeout"', response.body)
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(resource.requests, [])

    def test_keepAliveRequestsEachGetTheirTime(self) -> None:
        resource = Upload()
        conn = Connection(resource, timeout=10)
        for _ in range(3):
            conn.clock.advance(8)
            conn.send(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses()], [200, 200, 200])
        self.assertFalse(conn.transport.disconnecting)


class BadQueryTests(SynchronousTestCase):
    """
    A query string whose percent-escapes are not UTF-8 is answered API.md's
    JSON 400 without reaching the resource, instead of the connection
    dropping with no answer.
    """

    def answer(self, response: Any) -> dict[str, str]:
        import json

        self.assertEqual(response.status, 400)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        answer: dict[str, str] = json.loads(response.body)
        self.assertEqual(answer["error"], "bad_request")
        self.assertIsInstance(answer["message"], str)
        return answer

    def test_withoutBody(self) -> None:
        """
        The connection stays open and serves the next request.
        """
        for query in [b"after=%FF", b"x=%C3", b"%FF=1", b"a=1&x=%ED%A0%80"]:
            resource = Upload()
            conn = Connection(resource)
            conn.send(b"GET /f?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.send(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
            first, second = conn.responses()
            self.answer(first)
            self.assertNotIn(b"connection", first.headers)
            self.assertEqual((second.status, second.body), (200, b"ok"), query)
            self.assertEqual(len(resource.requests), 1)
            self.assertFalse(conn.transport.disconnecting)

    def test_head(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(b"HEAD /f?x=%FF HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.output().partition(b"\r\n\r\n")
        self.assertTrue(head[0].startswith(b"HTTP/1.1 400 "), head[0])
        self.assertEqual(head[2], b"")
        self.assertEqual(resource.requests, [])

    def test_withBody(self) -> None:
        """
        A request with a body is answered as soon as its headers are in;
        its body is read and dropped before the connection closes.
        """
        resource = Upload()
        conn = Connection(resource)
        conn.send(put(b"/f?x=%FF", b"a" * 100)[:-90])
        conn.turn()
        [response] = conn.responses()
        self.answer(response)
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertEqual(resource.requests, [])
        self.assertFalse(conn.transport.disconnecting)
        conn.send(b"a" * 90)
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(len(conn.responses()), 1)

    def test_chunkedBody(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(chunkedHead(b"/f?x=%FF") + chunk(b"abc"))
        conn.turn()
        [response] = conn.responses()
        self.answer(response)
        conn.send(chunk(b""))
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(resource.requests, [])


class ReadSizeTests(SynchronousTestCase):
    def test_shrinksWithConcurrency(self) -> None:
        from streamrelay.streaming import readSize

        self.assertEqual(readSize(1), 1 << 20)
        self.assertEqual(readSize(16), 1 << 20)
        self.assertEqual(readSize(32), 512 << 10)
        self.assertEqual(readSize(256), 64 << 10)
        self.assertEqual(readSize(1000), 32 << 10)

    def test_earlierBodiesShrinkWhenMoreStream(self) -> None:
        """
        A body that began alone reads 1 MiB at a time; once many more
        stream, its next read takes its share of the budget as it is then
        (the reads of all bodies together stay about BODY_READ_BUDGET).
        """
        from streamrelay.streaming import readSize

        resource = Hold()
        first = Connection(resource)
        first.transport.bufferSize = 0  # type: ignore[attr-defined]
        first.send(chunkedHead(b"/a"))
        self.assertEqual(first.transport.bufferSize, 1 << 20)  # type: ignore[attr-defined]
        others = []
        for i in range(63):
            other = Connection(resource)
            other.site = first.site
            other.channel.site = first.site  # type: ignore[attr-defined]
            other.send(chunkedHead(b"/b%d" % i))
            others.append(other)
        first.send(b"5\r\nhello\r\n")
        self.assertEqual(first.transport.bufferSize, readSize(64))  # type: ignore[attr-defined]
        self.assertEqual(readSize(64), 256 << 10)

    def test_counted(self) -> None:
        """Streaming bodies are counted per site while they stream."""
        resource = Hold()
        one, two = Connection(resource), Connection(resource)
        two.site = one.site
        two.channel.site = one.site  # type: ignore[attr-defined]
        one.send(chunkedHead(b"/a"))
        two.send(chunkedHead(b"/b"))
        self.assertEqual(one.site.streamingBodies, 2)  # type: ignore[attr-defined]
        one.send(b"0\r\n\r\n")
        self.assertEqual(one.site.streamingBodies, 1)  # type: ignore[attr-defined]
        two.lose()
        self.assertEqual(one.site.streamingBodies, 0)  # type: ignore[attr-defined]


@implementer(IPushProducer)
class CountingProducer:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class EagerSendTests(SynchronousTestCase):
    """
    L{sendEagerly}: a write goes to the socket at once while nothing waits
    in the transport's buffer; what the socket does not take is buffered,
    in order, with backpressure, as Twisted does.  (A socketpair stands in
    for the proxy's connection to the backend; no port is opened.)
    """

    def setUp(self) -> None:
        self.conn = self.connection()
        self.producer = CountingProducer()
        self.conn.registerProducer(self.producer, True)
        sendEagerly(self.conn)

    def connection(self) -> Any:
        """A TCP transport on one end of a socketpair with small buffers."""
        import socket

        from twisted.internet import tcp
        from twisted.internet.protocol import Protocol
        from twisted.internet.testing import MemoryReactor

        ours, self.peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(self.peer.close)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        self.peer.setblocking(False)
        self.reactor = MemoryReactor()
        conn = tcp.Connection(ours, Protocol(), self.reactor)
        conn.connected = True
        return conn

    def received(self) -> bytes:
        """What the peer can read now."""
        chunks = []
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def drain(self) -> bytes:
        """Read on the peer and let the transport write, until it is idle."""
        got = []
        for _ in range(10_000):
            got.append(self.received())
            if self.conn not in self.reactor.getWriters():
                break
            self.assertIsNone(self.conn.doWrite())
        got.append(self.received())
        return b"".join(got)

    def test_sentAtOnce(self) -> None:
        """
        A write the socket takes whole is on the wire when write() returns:
        the transport is not registered for writing and its producer is not
        paused (stock Twisted would do both for any write over 64 KiB).
        """
        data = b"a" * 60_000
        self.conn.write(data)
        self.assertEqual(self.received(), data)
        self.assertEqual(self.reactor.getWriters(), [])
        self.assertEqual(self.producer.pauses, 0)

    def test_restBufferedWithBackpressure(self) -> None:
        """
        When the socket takes part of a write, the rest is buffered, the
        transport waits for writability and the producer is paused; every
        byte arrives, in order, and the producer is resumed once sent.
        """
        data = bytes(range(256)) * 8192  # 2 MiB
        self.conn.write(data)
        self.assertIn(self.conn, self.reactor.getWriters())
        self.assertTrue(self.producer.paused)
        self.assertEqual(self.drain(), data)
        self.assertFalse(self.producer.paused)
        self.assertEqual(self.reactor.getWriters(), [])

    def test_writesKeepTheirOrder(self) -> None:
        """A write made while bytes wait in the buffer queues behind them."""
        first = b"1" * (2 << 20)
        second = b"2" * 1000
        self.conn.write(first)
        self.conn.write(second)
        self.assertEqual(self.drain(), first + second)

    def test_errorLeftToTheBufferedPath(self) -> None:
        """
        A socket error is not raised by write(): the bytes are buffered, and
        the transport's next write attempt reports the lost connection.
        """
        self.peer.close()
        self.conn.write(b"x" * 1000)
        self.assertIn(self.conn, self.reactor.getWriters())
        self.assertIsInstance(self.conn.doWrite(), Exception)

    def test_onlyOnce(self) -> None:
        """Tuning a transport twice wraps its write once."""
        write = self.conn.write
        sendEagerly(self.conn)
        self.assertIs(self.conn.write, write)

    def test_otherTransportsLeftAlone(self) -> None:
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        sendEagerly(transport)
        self.assertNotIn("write", vars(transport))

    def test_upstreamOfARequestBody(self) -> None:
        """
        A request body sent on through Twisted's HTTP client (a consumer
        whose C{_consumer} is the TCP connection) makes that connection
        send eagerly.
        """
        resource = Hold()
        client = Connection(resource)
        client.send(put(b"/f", b"hello"))
        client.turn()
        [request] = resource.requests
        assert request.body is not None
        upstream = self.connection()
        self.assertNotIn("write", vars(upstream))

        class Enforcing:
            """Like Twisted's LengthEnforcingConsumer: writes to C{_consumer}."""

            def __init__(self, transport: Any) -> None:
                self._consumer = transport

            def write(self, data: bytes) -> None:
                self._consumer.write(data)

        request.body.startProducing(Enforcing(upstream))  # type: ignore[arg-type]
        self.assertIn("write", vars(upstream))
        self.assertEqual(self.received(), b"hello")
        self.assertEqual(self.reactor.getWriters(), [])


class HeaderReadSizeTests(SynchronousTestCase):
    def test_readsHeadersSizedBetweenBodies(self) -> None:
        """
        Once a body ended, its keep-alive connection reads 64 KiB at a time
        again: the read that brings the next request's headers holds little
        of its body while that request waits for a route (with 1 MiB reads,
        each waiting request held up to 1 MiB in the channel's buffer).
        """
        conn = Connection(Upload())
        conn.transport.bufferSize = 0  # type: ignore[attr-defined]
        conn.send(put(b"/f", b"x" * 1000)[:-10])
        conn.turn()
        self.assertEqual(conn.transport.bufferSize, 1 << 20)  # type: ignore[attr-defined]
        conn.send(b"x" * 10)
        self.assertEqual([r.status for r in conn.responses()], [200])
        self.assertEqual(conn.transport.bufferSize, HEADER_READ_SIZE)  # type: ignore[attr-defined]
        self.assertEqual(HEADER_READ_SIZE, 64 << 10)
