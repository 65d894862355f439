"""
Request targets: which forms are served and how they parse
(L{streamrelay.targets}), how the streaming request layer answers the
others, and how the proxy makes the backend's URL from the parse.
"""

from __future__ import annotations

import json

from hyperlink import EncodedURL
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from streamrelay.errors import patchTimeout
from streamrelay.proxy.upstream import UpstreamURL, fitsBackend
from streamrelay.streaming import BodyTimeout, StreamingChannel
from streamrelay.targets import BadTarget, Target, parseTarget
from tests.httpfakes import Connection, Upload
from tests.rawrequests import chunk, chunkedHead, put


class ParseTargetTests(SynchronousTestCase):
    def test_originForm(self) -> None:
        for target, path, query in [
            (b"/", b"/", b""),
            (b"/files/a", b"/files/a", b""),
            (b"/files/a?x=1&y", b"/files/a", b"x=1&y"),
            (b"/files/a??b", b"/files/a", b"?b"),
            (b"/files/a%23b", b"/files/a%23b", b""),
            (b"//files", b"//files", b""),
        ]:
            self.assertEqual(parseTarget(target, b"GET", [b"x"]), Target(path, query), target)

    def test_originFormKeptWhole(self) -> None:
        self.assertEqual(Target(b"/f", b"a=1").originForm, b"/f?a=1")
        self.assertEqual(Target(b"/f").originForm, b"/f")

    def test_absoluteFormOfThisHost(self) -> None:
        for target, hosts, expected in [
            (b"http://x/files/a?q", [b"x"], Target(b"/files/a", b"q", b"x")),
            (b"HTTP://X:80/files", [b"x"], Target(b"/files", b"", b"X:80")),
            (b"https://x:443", [b"X:443"], Target(b"/", b"", b"x:443")),
            (b"http://x?q=1", [b"x"], Target(b"/", b"q=1", b"x")),
            (b"http://x:8080/f", [], Target(b"/f", b"", b"x:8080")),
        ]:
            self.assertEqual(parseTarget(target, b"GET", hosts), expected, target)

    def test_refused(self) -> None:
        for target in [
            b"", b"Xfiles", b"@files", b"#files", b"files/a", b"?x", b"*/files",
            b"/files/victim#not-victim", b"/files/frag#.hidden", b"/f?a#b",
            b"http://elsewhere/files", b"http://x:81/files", b"http://u@x/files",
            b"ftp://x/files", b"http:///files", b"x:80", b"/files/a\x00", b"/a\x7f",
            b"/a b", b"/a\tb",
        ]:
            self.assertRaises(BadTarget, parseTarget, target, b"GET", [b"x"])

    def test_asterisk(self) -> None:
        self.assertEqual(parseTarget(b"*", b"OPTIONS", [b"x"]), Target(b"*"))
        for method in (b"GET", b"HEAD", b"PUT", b"DELETE"):
            self.assertRaises(BadTarget, parseTarget, b"*", method, [b"x"])


def request(method: bytes, target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([method + b" " + target + b" HTTP/1.1", b"Host: x", *headers, b"", b""])


class RequestLayerTests(SynchronousTestCase):
    """Targets are refused, or parsed once, before any resource sees them."""

    def answer(self, data: bytes) -> tuple[Upload, Connection, dict[str, str]]:
        resource = Upload()
        conn = Connection(resource)
        conn.send(data)
        conn.turn()
        [response] = conn.responses()
        self.assertEqual(response.status, 400, response)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertIn(b"x-request-id", response.headers)
        answer: dict[str, str] = json.loads(response.body)
        self.assertEqual(answer["error"], "bad_request")
        self.assertEqual(resource.requests, [])
        return resource, conn, answer

    def test_badTargetWithoutBody(self) -> None:
        """The connection stays open and serves the next request."""
        for target in [b"Xfiles", b"@files", b"#files", b"/files/a#b", b"http://other/f"]:
            resource, conn, _ = self.answer(request(b"GET", target))
            conn.send(request(b"GET", b"/f"))
            self.assertEqual(conn.responses()[1].status, 200, target)
            self.assertEqual(len(resource.requests), 1)
            self.assertFalse(conn.transport.disconnecting)

    def test_badTargetWithBody(self) -> None:
        """The body is read and dropped; nothing reaches the resource."""
        resource, conn, _ = self.answer(put(b"/f#x", b"a" * 100)[:-90])
        conn.send(b"a" * 90)
        self.assertTrue(conn.transport.disconnecting)
        self.assertEqual(resource.requests, [])

    def test_badTargetChunked(self) -> None:
        resource, conn, _ = self.answer(chunkedHead(b"#files") + chunk(b"abc"))
        conn.send(chunk(b""))
        self.assertEqual(resource.requests, [])

    def test_absoluteFormParsedOnce(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(request(b"GET", b"http://x/f?a=1"))
        [request_] = resource.requests
        self.assertEqual(
            (request_.path, request_.uri, request_.args), (b"/f", b"/f?a=1", {b"a": [b"1"]})
        )
        self.assertEqual(request_.query, b"a=1")  # type: ignore[attr-defined]
        self.assertEqual(conn.responses()[0].status, 200)

    def test_absoluteFormGivesHost(self) -> None:
        """An HTTP/1.0 request without Host takes the target's."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(b"GET http://example.org/f HTTP/1.0\r\n\r\n")
        [request_] = resource.requests
        self.assertEqual(request_.getHeader(b"host"), b"example.org")
        self.assertEqual(request_.path, b"/f")

    def test_optionsAsterisk(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(request(b"OPTIONS", b"*"))
        [response] = conn.responses()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        methods = json.loads(response.body)["methods"]
        self.assertEqual(response.headers[b"allow"], ", ".join(methods).encode("ascii"))
        self.assertIn("PUT", methods)
        self.assertEqual(resource.requests, [])

    def test_otherMethodAsterisk(self) -> None:
        _, _, answer = self.answer(request(b"GET", b"*"))
        self.assertIn("OPTIONS", answer["message"])

    def test_headAsterisk(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(request(b"HEAD", b"*"))
        head, _, rest = conn.output().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
        self.assertEqual(rest, b"")


class UpstreamURLTests(SynchronousTestCase):
    def test_pathAndQueryAsGiven(self) -> None:
        upstream = UpstreamURL("http://127.0.0.1:8081/")
        for path, query, expected in [
            (b"/files/a", b"", "/files/a"),
            (b"/files/a%2Fb", b"x=%FF&y=1+2", "/files/a%2Fb?x=%FF&y=1+2"),
            (b"//elsewhere/files", b"", "//elsewhere/files"),
            (b"/files/a:b@c", b"a==&&=", "/files/a:b@c?a==&&="),
            (b"/files/%zz%", b"%", "/files/%zz%?%"),
            # What a URL may not hold as such is escaped, so the backend
            # decodes the same bytes.
            (b"/files/caf\xc3\xa9 [1]", b"q=\xff", "/files/caf%C3%A9%20%5B1%5D?q=%FF"),
        ]:
            url = upstream.of(path, query)
            self.assertEqual(url.to_uri().to_text(), "http://127.0.0.1:8081" + expected, path)
            self.assertEqual(upstream.targetLength(url), len(expected))

    def test_basePathKept(self) -> None:
        """
        A backend URL with a path (a backend behind a path prefix) keeps it:
        each request's path goes under it, as the health check's does.
        """
        for base in ["http://127.0.0.1:8081/prefix", "http://127.0.0.1:8081/prefix/"]:
            upstream = UpstreamURL(base)
            url = upstream.of(b"/files/a b", b"x=1")
            self.assertEqual(
                url.to_uri().to_text(), "http://127.0.0.1:8081/prefix/files/a%20b?x=1", base
            )
            self.assertEqual(upstream.targetLength(url), len("/prefix/files/a%20b?x=1"))

    def test_uriFormHost(self) -> None:
        """
        The backend's host goes in URI form, made once: an IPv6 literal as
        it is, a name lowercased and IDNA-encoded.
        """
        for base, origin in [
            ("http://[::1]:8081", "http://[::1]:8081"),
            ("http://B\xe4ckend.Example:8081/p", "http://xn--bckend-bua.example:8081/p"),
            # A compose service name: IDNA refuses "_", resolvers do not.
            ("http://My_Backend:8081", "http://my_backend:8081"),
        ]:
            upstream = UpstreamURL(base)
            url = upstream.of(b"/files/a b", b"x=1")
            self.assertEqual(url.to_text(), origin + "/files/a%20b?x=1")
            self.assertEqual(
                upstream.targetLength(url), len(origin.partition("8081")[2] + "/files/a%20b?x=1")
            )

    def test_alreadyURI(self) -> None:
        """
        Each URL made is its own URI form, as hyperlink would convert it:
        treq's conversion of it for every request is free.
        """
        for base in ["https://Backend.Example/", "http://127.0.0.1:8081/caf\xe9 x/"]:
            upstream = UpstreamURL(base)
            cases = [(b"/files/caf\xc3\xa9 [1]", b"q=\xff"), (b"/a%zz/b:c@d", b"a==&&=")]
            for path, query in cases:
                url = upstream.of(path, query)
                self.assertIs(url.to_uri(), url)
                self.assertEqual(
                    url.to_text(), EncodedURL.from_text(url.to_text()).to_uri().to_text()
                )
                # A changed copy is converted as any URL is.
                child = url.child("caf\xe9 y")
                self.assertIsNot(child.to_uri(), child)
                self.assertTrue(child.to_uri().to_text().endswith(
                    "/caf%C3%A9%20y?" + url.to_text().partition("?")[2]
                ))

    def test_notOriginForm(self) -> None:
        upstream = UpstreamURL("http://127.0.0.1:8081")
        for path, query in [(b"Xfiles", b""), (b"@files", b""), (b"/f#x", b""), (b"/f", b"#")]:
            self.assertRaises(ValueError, upstream.of, path, query)

    def test_fitsBackend(self) -> None:
        """The proxy's headers and its client's count against the backend's limits."""
        upstream = UpstreamURL("http://127.0.0.1:8081")
        url = upstream.of(b"/files/a", b"")
        headers = Headers()
        for i in range(StreamingChannel.maxHeaders - 4):
            headers.addRawHeader(b"x-h%d" % i, b"v")
        self.assertTrue(fitsBackend(upstream, b"PUT", url, headers))
        headers.addRawHeader(b"x-request-id", b"r")
        self.assertFalse(fitsBackend(upstream, b"PUT", url, headers))
        big = Headers({b"x-big": [b"v" * (StreamingChannel.totalHeadersSize - 200)]})
        self.assertTrue(fitsBackend(upstream, b"PUT", url, big))
        big.addRawHeader(b"x-forwarded-for", b"127.0.0.1" * 20)
        self.assertFalse(fitsBackend(upstream, b"PUT", url, big))


class PatchTimeoutTests(SynchronousTestCase):
    def test_saysWhatIsKept(self) -> None:
        kept = patchTimeout(BodyTimeout(1), checksummed=False)
        self.assertEqual((kept.status, kept.code), (408, "timeout"))
        self.assertIn("keeps", kept.message)
        self.assertNotIn("nothing was stored", kept.message)
        dropped = patchTimeout(BodyTimeout(1), checksummed=True)
        self.assertIn("none of this PATCH's bytes were kept", dropped.message)
        self.assertIn("HEAD", dropped.message)
