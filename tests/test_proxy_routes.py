"""
The proxy's routes in memory: a client's connection to them through the
streaming request layer (L{tests.httpfakes}), and their treq client wired
to a backend resource as C{treq.testing} wires an agent to a site.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamrelay.auth import TokenFile
from streamrelay.streaming import StreamingChannel
from tests.proxyharness import BACKEND, FORM, ProxyTestCase
from tests.rawrequests import OCTETS, TUS, chunk, chunkedHead, get, patch, post, put, req


class ForwardingTests(ProxyTestCase):
    def test_methodPathQueryBody(self) -> None:
        """Each route's method, path, query and body reach the backend as they came."""
        for data, method, target, body in [
            (put(b"/files/a.txt?x=1", b"hello"), b"PUT", b"/files/a.txt?x=1", b"hello"),
            (get(b"/files/a.txt"), b"GET", b"/files/a.txt", b""),
            (get(b"/files/a.txt", method=b"HEAD"), b"HEAD", b"/files/a.txt", b""),
            (get(b"/files/a.txt", method=b"DELETE"), b"DELETE", b"/files/a.txt", b""),
            (get(b"/files?prefix=a&limit=2"), b"GET", b"/files?prefix=a&limit=2", b""),
            (post(FORM), b"POST", b"/files", FORM),
            (req(b"POST", b"/uploads", TUS, b"Upload-Length: 3"), b"POST", b"/uploads", b""),
            (patch(b"/uploads/abc", 0, b"abc"), b"PATCH", b"/uploads/abc", b"abc"),
            (req(b"OPTIONS", b"/uploads", TUS), b"OPTIONS", b"/uploads", b""),
        ]:
            seen = self.forwarded(data)
            self.assertEqual((seen.method, seen.target, seen.body), (method, target, body))
        self.assertEqual(
            [uri for _, uri in self.agent.asked][:2],
            [BACKEND.encode() + b"/files/a.txt?x=1", BACKEND.encode() + b"/files/a.txt"],
        )

    def test_chunkedBody(self) -> None:
        """A chunked upload streams on to the backend whole."""
        seen = self.forwarded(chunkedHead(b"/files/c") + chunk(b"abc") + chunk(b"de") + chunk(b""))
        self.assertEqual((seen.method, seen.body), (b"PUT", b"abcde"))

    def test_hopByHopDropped(self) -> None:
        """
        Hop-by-hop headers, those the client's C{Connection} names, and
        C{Proxy-*} stay with the proxy; end-to-end ones go on.
        """
        seen = self.forwarded(put(
            b"/files/h", b"x", b"Connection: keep-alive, X-Secret", b"X-Secret: 1",
            b"Keep-Alive: timeout=5", b"TE: trailers", b"Upgrade: h2c",
            b"Proxy-Authorization: Basic eA==", b"Proxy-Other: 1",
            b"X-Custom: kept", b"Content-Type: text/plain",
        ))
        for name in (b"x-secret", b"keep-alive", b"te", b"upgrade", b"proxy-authorization",
                     b"proxy-other"):
            self.assertEqual(seen.header(name), [], name)
        self.assertNotIn(b"X-Secret", b" ".join(seen.header(b"connection")))
        self.assertEqual(seen.header(b"x-custom"), [b"kept"])
        self.assertEqual(seen.header(b"content-type"), [b"text/plain"])

    def test_hostIsTheBackends(self) -> None:
        seen = self.forwarded(put(b"/files/h", b"x"))
        self.assertEqual(seen.header(b"host"), [b"backend.internal:8081"])

    def test_forwardedFor(self) -> None:
        """The client's address is added to C{X-Forwarded-For}, or starts it."""
        seen = self.forwarded(put(b"/files/f", b"x"))
        self.assertEqual(seen.header(b"x-forwarded-for"), [b"127.0.0.1"])
        seen = self.forwarded(put(b"/files/f", b"x", b"X-Forwarded-For: 10.0.0.1"))
        self.assertEqual(seen.header(b"x-forwarded-for"), [b"10.0.0.1, 127.0.0.1"])

    def test_requestIdPassed(self) -> None:
        """A safe C{X-Request-Id} goes to the backend and comes back to the client."""
        response = self.request(put(b"/files/r", b"x", b"X-Request-Id: client-id_1.2"))
        [seen] = self.backend.seen
        self.assertEqual(seen.header(b"x-request-id"), [b"client-id_1.2"])
        self.assertEqual(response.headers[b"x-request-id"], b"client-id_1.2")

    def test_requestIdMade(self) -> None:
        """
        Without one, or with one unsafe to log, the proxy makes an id: the
        backend and the client get the same one.
        """
        for extra in ((), (b"X-Request-Id: has space",), (b"X-Request-Id: " + b"a" * 129,)):
            response = self.request(put(b"/files/r", b"x", *extra))
            [seen] = self.backend.seen
            self.backend.seen.clear()
            [made] = seen.header(b"x-request-id")
            self.assertRegex(made, rb"^[0-9a-f]{32}$")
            self.assertEqual(response.headers[b"x-request-id"], made)


class RequestTargetTests(ProxyTestCase):
    def test_pathAndQueryOnly(self) -> None:
        """
        Only the path and query of the client's target reach the backend,
        at the backend's own address: an absolute-form target's scheme and
        host do not.
        """
        for target in (b"/files/a?x=1", b"http://proxy.example/files/a?x=1",
                       b"HTTP://PROXY.EXAMPLE:80/files/a?x=1"):
            seen = self.forwarded(
                put(target, b"x").replace(b"Host: x", b"Host: proxy.example")
            )
            self.assertEqual(seen.target, b"/files/a?x=1", target)
            self.assertEqual(seen.header(b"host"), [b"backend.internal:8081"])
            self.assertEqual(self.agent.asked[-1][1], BACKEND.encode() + b"/files/a?x=1")

    def test_escapesAsGiven(self) -> None:
        """Percent-escapes and sub-delims reach the backend as the client wrote them."""
        for target in (b"/files/a%20b", b"/files/a%2Cb?q=%41%2B&r", b"/files/it's(1)!",
                       b"/files/x?a=1&a=2&b"):
            seen = self.forwarded(put(target, b"x"))
            self.assertEqual(seen.target, target)

    def test_unsafeBytesEscaped(self) -> None:
        """A byte a URL may not hold as it is goes percent-escaped."""
        seen = self.forwarded(put(b"/files/a\"b?q=<x>", b"x"))
        self.assertEqual(seen.target, b"/files/a%22b?q=%3Cx%3E")

    def test_refusedTargetNotForwarded(self) -> None:
        """A target the proxy refuses (a fragment, another host) never reaches the backend."""
        for target in (b"/files/victim#x", b"http://elsewhere/files/victim", b"files/victim"):
            response = self.request(get(target, method=b"DELETE"))
            self.assertError(response, 400, "bad_request")
        self.assertNotAsked()


class HeaderCountTests(ProxyTestCase):
    def test_countWithTheProxysOwn(self) -> None:
        """
        A request the proxy takes either reaches the backend, which takes
        it too, or is answered 431 by the proxy, whose own headers would
        take it over the backend's limit: near the limit, both happen.
        """
        outcomes = []
        for count in range(StreamingChannel.maxHeaders - 8, StreamingChannel.maxHeaders + 1):
            # "count" header lines with Host and Content-Length.
            headers = [b"X-H%d: v" % i for i in range(count - 2)]
            response = self.request(put(b"/files/h", b"x", *headers))
            if response.status == 431:
                answer = self.assertError(response, 431, "headers_too_large")
                self.assertIn("X-Forwarded-For", answer["message"])
                self.assertEqual(self.backend.seen, [])
            else:
                self.assertEqual(response.status, 201, (count, response.body))
                [seen] = self.backend.seen
                self.assertEqual(len(seen.header(b"x-h%d" % (count - 3))), 1)
            self.backend.seen.clear()
            outcomes.append(response.status)
        self.assertEqual(outcomes, sorted(outcomes), outcomes)
        self.assertEqual({outcomes[0], outcomes[-1]}, {201, 431})

    def test_sizeWithTheProxysOwn(self) -> None:
        """The same for the headers' bytes."""
        outcomes = []
        total = StreamingChannel.totalHeadersSize
        for size in range(total - 200, total + 1, 20):
            line = b"X-Big: " + b"v" * (size - 100)
            response = self.request(put(b"/files/big", b"x", line))
            if response.status == 431:
                self.assertError(response, 431, "headers_too_large")
                self.assertEqual(self.backend.seen, [])
            else:
                self.assertEqual(response.status, 201, (size, response.body))
                self.assertEqual(len(self.backend.seen), 1)
            self.backend.seen.clear()
            outcomes.append(response.status)
        self.assertEqual({outcomes[0], outcomes[-1]}, {201, 431}, outcomes)


class TokenTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        path = Path(self.mktemp())
        path.write_bytes(b"# tokens\nt0ken\nother\n")
        self.routes = self.makeRoutes(tokens=TokenFile(path))

    def test_refusedWithoutToken(self) -> None:
        """
        A request to /files or /uploads without a good token is answered
        401 by the proxy, naming the scheme, and never forwarded.
        """
        for data in (put(b"/files/a", b"x"), get(b"/files"), get(b"/files/a"),
                     put(b"/files/a", b"x", b"Authorization: Bearer wrong"),
                     put(b"/files/a", b"x", b"Authorization: Basic dDBrZW46"),
                     req(b"POST", b"/uploads", TUS, b"Upload-Length: 3"),
                     patch(b"/uploads/abc", 0, b"abc")):
            response = self.request(data)
            self.assertError(response, 401, "unauthorized")
            self.assertEqual(response.headers[b"www-authenticate"], b'Bearer realm="streamrelay"')
        self.assertNotAsked()

    def test_forwardedWithToken(self) -> None:
        """A good token lets the request through; it is the proxy's, so it goes no further."""
        for token in (b"t0ken", b"other"):
            seen = self.forwarded(put(b"/files/a", b"x", b"Authorization: Bearer " + token))
            self.assertEqual(seen.header(b"authorization"), [])

    def test_sharedSecret(self) -> None:
        """With a shared secret the backend gets it, never the client's token."""
        self.routes = self.makeRoutes(tokens=self.routes.tokens, secret=b"s3cret")
        seen = self.forwarded(put(b"/files/a", b"x", b"Authorization: Bearer t0ken"))
        self.assertEqual(seen.header(b"authorization"), [b"Bearer s3cret"])

    def test_tusOptionsNeedNone(self) -> None:
        """The tus discovery (OPTIONS) needs no token, as browsers send it without."""
        seen = self.forwarded(req(b"OPTIONS", b"/uploads", TUS))
        self.assertEqual(seen.method, b"OPTIONS")


class SizeLimitTests(ProxyTestCase):
    maxSize = 10

    def test_declaredTooLarge(self) -> None:
        """
        A body declared larger than the limit, or a tus upload whose length
        is, is answered 413 before the backend is asked anything.
        """
        for data in (put(b"/files/big", b"x" * 11), post(b"y" * 11),
                     req(b"POST", b"/uploads", TUS, b"Upload-Length: 11"),
                     req(b"POST", b"/uploads", TUS, b"Upload-Length: 11", OCTETS, body=b"abc"),
                     patch(b"/uploads/abc", 0, b"z" * 11)):
            self.assertError(self.request(data), 413, "too_large")
        self.assertNotAsked()

    def test_atLimit(self) -> None:
        seen = self.forwarded(put(b"/files/ok", b"x" * 10))
        self.assertEqual(seen.body, b"x" * 10)
        seen = self.forwarded(req(b"POST", b"/uploads", TUS, b"Upload-Length: 10"))
        self.assertEqual(seen.header(b"upload-length"), [b"10"])

    def test_chunkedPastLimit(self) -> None:
        """
        A chunked body is counted as it streams: past the limit the
        proxy answers 413 and cuts the backend's request short, so the
        backend never has a whole request.
        """
        response = self.request(
            chunkedHead(b"/files/big") + chunk(b"x" * 8) + chunk(b"x" * 8) + chunk(b"")
        )
        self.assertError(response, 413, "too_large")
        self.assertEqual(len(self.agent.asked), 1)
        self.assertEqual(self.backend.seen, [])


class BackendErrorTests(ProxyTestCase):
    backendTimeout = 5.0

    def test_unreachable(self) -> None:
        """A backend that cannot be reached is a JSON 502 saying why, with the request's id."""
        self.agent.reachable = False
        for data in (put(b"/files/a", b"x", b"X-Request-Id: rid-1"),
                     get(b"/files/a", b"X-Request-Id: rid-1"),
                     patch(b"/uploads/abc", 0, b"abc", b"X-Request-Id: rid-1")):
            response = self.request(data)
            answer = self.assertError(response, 502, "backend_unavailable")
            self.assertIn("refused", answer["message"])
            self.assertEqual(response.headers[b"x-request-id"], b"rid-1")
        self.assertEqual(len(self.agent.asked), 3)

    def test_tusHeadWhileUnreachable(self) -> None:
        """
        A tus HEAD while the backend is unreachable is 423 with
        C{Retry-After}: tus clients take any other error for "upload
        gone" and start over.  A HEAD of a file stays 502.
        """
        self.agent.reachable = False
        response = self.request(req(b"HEAD", b"/uploads/abc", TUS))
        self.assertEqual(response.status, 423)
        self.assertEqual(response.headers[b"retry-after"], b"1")
        self.assertEqual(self.request(get(b"/files/a", method=b"HEAD")).status, 502)

    def test_tusHeadAnswerRelayed(self) -> None:
        """The backend's own answer to a tus HEAD (404: the upload is gone) is the client's."""
        self.backend.answer = (404, b"Not Found", {b"tus-resumable": b"1.0.0"}, b"")
        response = self.request(req(b"HEAD", b"/uploads/abc", TUS))
        self.assertEqual(response.status, 404)
        self.assertEqual(response.headers[b"tus-resumable"], b"1.0.0")

    def test_backendSilent(self) -> None:
        """A backend that takes the request and never answers is a JSON 504 after its timeout."""
        self.backend.answer = None
        conn, responses = self.exchange(get(b"/files/a"))
        self.assertEqual(responses, [])
        self.assertEqual(len(self.backend.seen), 1)
        self.clock.pump([self.backendTimeout / 4] * 5)
        [response] = conn.responses()
        self.assertError(response, 504, "backend_timeout")


class ResponseTests(ProxyTestCase):
    def test_statusPhraseHeadersBody(self) -> None:
        """
        The backend's status, reason phrase, end-to-end headers and body
        are the client's; its hop-by-hop headers, C{Server} and C{Date}
        are not, and the C{X-Request-Id} is the proxy's.
        """
        self.backend.answer = (207, b"Partly Done", {
            b"etag": b'"v1"', b"location": b"/files/a", b"x-custom": b"yes",
            b"keep-alive": b"timeout=9", b"upgrade": b"h2c",
            b"server": b"BackendServer/1", b"x-request-id": b"backends-own",
        }, b"the body")
        response = self.request(get(b"/files/a", b"X-Request-Id: mine"))
        self.assertEqual(response.status, 207)
        self.assertTrue(response.raw.startswith(b"HTTP/1.1 207 Partly Done\r\n"), response.raw)
        self.assertEqual(response.headers[b"etag"], b'"v1"')
        self.assertEqual(response.headers[b"location"], b"/files/a")
        self.assertEqual(response.headers[b"x-custom"], b"yes")
        self.assertEqual(response.headers[b"content-length"], b"8")
        self.assertEqual(response.body, b"the body")
        self.assertEqual(response.headers[b"x-request-id"], b"mine")
        for name in (b"keep-alive", b"upgrade"):
            self.assertNotIn(name, response.headers)
        self.assertNotIn(b"BackendServer", response.raw)

    def test_errorRelayed(self) -> None:
        """The backend's errors reach the client as they are."""
        body = b'{"error": "not_found", "message": "No such file."}'
        self.backend.answer = (404, b"Not Found", {b"content-type": b"application/json"}, body)
        response = self.request(get(b"/files/nope"))
        self.assertEqual((response.status, response.body), (404, body))
        self.assertEqual(response.headers[b"content-type"], b"application/json")

    def test_noContent(self) -> None:
        """A 204 is relayed with no body and no C{Content-Length}."""
        self.backend.answer = (204, b"No Content", {}, b"")
        response = self.request(get(b"/files/a", method=b"DELETE"))
        self.assertEqual((response.status, response.body), (204, b""))
        self.assertNotIn(b"content-length", response.headers)
        self.assertIsNone(re.search(rb"(?i)transfer-encoding", response.raw))
