"""
CORS on the proxy, and the proxy's size check of tus requests, through
in-memory HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from streamrelay.proxy.cors import EXPOSE_HEADERS, CORSResource, parseOrigins, withCORS
from streamrelay.proxy.routes import ProxyRoutes
from streamrelay.webapp import appResource
from tests.httpfakes import Connection, Response


class Inner(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def render(self, request: IRequest) -> bytes:
        self.seen.append(request.method)
        request.setHeader(b"upload-offset", b"3")
        return b"inner"


def request(resource: Any, data: bytes) -> Response:
    conn = Connection(resource)
    conn.send(data)
    conn.turn()
    [response] = conn.responses()
    return response


PREFLIGHT = (
    b"OPTIONS /uploads/abc HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
    b"Access-Control-Request-Method: PATCH\r\n"
    b"Access-Control-Request-Headers: tus-resumable, upload-offset, content-type\r\n\r\n"
)


class CORSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.inner = Inner()
        self.resource = CORSResource(self.inner, ["https://app.example"])

    def test_preflight(self) -> None:
        """An allowed origin's preflight is answered here, not forwarded."""
        response = request(self.resource, PREFLIGHT)
        self.assertEqual(response.status, 204)
        h = response.headers
        self.assertEqual(h[b"access-control-allow-origin"], b"https://app.example")
        self.assertIn(b"PATCH", h[b"access-control-allow-methods"])
        for name in (b"Tus-Resumable", b"Upload-Offset", b"Content-Type", b"Authorization",
                     b"Upload-Metadata", b"Upload-Length", b"Upload-Checksum"):
            self.assertIn(name, h[b"access-control-allow-headers"])
        self.assertEqual(h[b"vary"], b"Origin")
        self.assertEqual(self.inner.seen, [])

    def test_exposesHeaders(self) -> None:
        response = request(self.resource, (
            b"HEAD /uploads/abc HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"))
        h = response.headers
        self.assertEqual(h[b"access-control-allow-origin"], b"https://app.example")
        exposed = {n.strip() for n in h[b"access-control-expose-headers"].split(b",")}
        for name in (b"Location", b"Upload-Offset", b"Upload-Length", b"Tus-Resumable",
                     b"Upload-Expires", b"Tus-Version", b"Tus-Extension", b"Tus-Max-Size",
                     b"X-Request-Id"):
            self.assertIn(name, exposed)
        self.assertEqual(h[b"upload-offset"], b"3")
        self.assertEqual(self.inner.seen, [b"HEAD"])

    def test_otherOrigin(self) -> None:
        """Another origin gets no CORS headers: its page cannot read the answer."""
        response = request(self.resource, PREFLIGHT.replace(b"app.example", b"evil.example"))
        self.assertNotIn(b"access-control-allow-origin", response.headers)
        self.assertEqual(self.inner.seen, [b"OPTIONS"])

    def test_otherPaths(self) -> None:
        """The page and health checks take no part."""
        for path in (b"/", b"/healthz", b"/uploadsx", b"/static/app.js"):
            response = request(self.resource, b"GET " + path + (
                b" HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"))
            self.assertNotIn(b"access-control-allow-origin", response.headers, path)
        response = request(self.resource, (
            b"GET /files/a HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"))
        self.assertEqual(response.headers[b"access-control-expose-headers"], EXPOSE_HEADERS)

    def test_anyOrigin(self) -> None:
        resource = CORSResource(self.inner, ["*"])
        response = request(resource, PREFLIGHT.replace(b"app.example", b"other.example"))
        self.assertEqual(response.headers[b"access-control-allow-origin"],
                         b"https://other.example")

    def test_noOriginsNoWrapper(self) -> None:
        self.assertIs(withCORS(self.inner, []), self.inner)

    def test_parseOrigins(self) -> None:
        self.assertEqual(
            parseOrigins("https://A.example, http://b.example:8080/ *"),
            ["https://a.example", "http://b.example:8080", "*"],
        )
        self.assertEqual(parseOrigins(""), [])
        for bad in ("a.example", "https://a.example/path", "ftp://a.example", "https://"):
            self.assertRaises(ValueError, parseOrigins, bad)


class ProxyUploadSizeTests(SynchronousTestCase):
    """The proxy refuses tus requests over its --max-size before the backend."""

    def setUp(self) -> None:
        class NoBackend:
            def request(self, *args: object, **kwargs: object) -> object:
                raise AssertionError("the backend was contacted")

        self.routes = ProxyRoutes(NoBackend(), "http://backend", maxSize=100)  # type: ignore[arg-type]

    def test_uploadLength(self) -> None:
        response = request(appResource(self.routes.app), (
            b"POST /uploads/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            b"Upload-Length: 101\r\n\r\n"))
        self.assertEqual(response.status, 413)
        self.assertEqual(json.loads(response.body)["error"], "too_large")

    def test_offsetPlusBody(self) -> None:
        response = request(appResource(self.routes.app), (
            b"PATCH /uploads/abc HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            b"Upload-Offset: 90\r\nContent-Length: 11\r\n"
            b"Content-Type: application/offset+octet-stream\r\n\r\n"))
        self.assertEqual(response.status, 413)
