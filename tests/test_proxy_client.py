"""
The proxy's HTTP client for the backend (L{backendClient}), against a real
HTTP server on loopback: it keeps no cookie of one request for the next,
and passes a request's own C{Cookie} header on as it is.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamrelay.proxy.tap import backendClient
from streamrelay.proxy.upstream import UpstreamURL


class _CookieSetter(Resource):
    """Sets a cookie on every answer and notes the C{Cookie} each request sent."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes | None] = []

    def render_GET(self, request: Any) -> bytes:
        self.sent.append(request.getHeader(b"cookie"))
        request.setHeader(b"set-cookie", b"session=backend; Path=/")
        return b"ok"


class BackendClientTests(TestCase):
    async def test_noCookiesKept(self) -> None:
        resource = _CookieSetter()
        site: Any = Site(resource)
        port: Any = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = backendClient(reactor)
        self.addCleanup(client._agent._pool.closeCachedConnections)  # type: ignore[attr-defined]
        upstream = UpstreamURL(f"http://127.0.0.1:{port.getHost().port}")
        for headers in [Headers(), Headers(), Headers({b"cookie": [b"user=mine"]})]:
            response = await client.request("GET", upstream.of(b"/x", b""), headers=headers)
            self.assertEqual(await response.content(), b"ok")
        self.assertEqual(resource.sent, [None, None, b"user=mine"])
        self.assertEqual(list(client._cookiejar), [])  # type: ignore[attr-defined]
