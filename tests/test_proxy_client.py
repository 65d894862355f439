"""
The proxy's HTTP client for the backend (L{backendClient}), against a real
HTTP server on loopback: it keeps no cookie of one request for the next,
and passes a request's own C{Cookie} header on as it is; and the endpoints
it connects through (L{KeptEndpoints}), made once per origin.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamrelay.proxy.endpoints import KEPT_ORIGINS, KeptEndpoints
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


class KeptEndpointsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoints = KeptEndpoints(self.reactor, BrowserLikePolicyForHTTPS())

    def endpoint(self, url: bytes) -> Any:
        return self.endpoints.endpointForURI(URI.fromBytes(url))

    def test_keptPerOrigin(self) -> None:
        """Requests to one origin share its endpoint; another origin has its own."""
        first = self.endpoint(b"http://127.0.0.1:8081/files/a")
        self.assertIs(self.endpoint(b"http://127.0.0.1:8081/files/b?x=1"), first)
        self.assertIsNot(self.endpoint(b"http://127.0.0.1:8082/files/a"), first)
        self.assertIsNot(self.endpoint(b"https://127.0.0.1:8081/files/a"), first)

    def test_connects(self) -> None:
        """
        A kept endpoint connects each time it is asked, to its host and
        port, resolving the name again each time (a backend that moved is
        found).
        """
        asked: list[str] = []
        resolver = self.reactor.nameResolver

        class Counting:
            def resolveHostName(self, receiver: Any, hostName: str, *args: Any, **kw: Any) -> Any:
                asked.append(hostName)
                return resolver.resolveHostName(receiver, hostName, *args, **kw)

        self.reactor.installNameResolver(Counting())  # type: ignore[arg-type]
        endpoint = self.endpoint(b"http://backend:8081/files/a")
        self.assertIsInstance(endpoint, HostnameEndpoint)
        for _ in range(2):
            endpoint.connect(_NoProtocol())
            self.reactor.advance(0)
        self.assertEqual([(c[0], c[1]) for c in self.reactor.tcpClients], [("127.0.0.1", 8081)] * 2)
        self.assertEqual(asked, ["backend", "backend"])

    def test_backendClient(self) -> None:
        """The proxy's client for the backend connects through kept endpoints."""
        client: Any = backendClient(self.reactor)
        self.assertIsInstance(client._agent._endpointFactory, KeptEndpoints)

    def test_tls(self) -> None:
        """An https origin's endpoint speaks TLS (it is not the plain one)."""
        endpoint = self.endpoint(b"https://backend.example:8443/files/a")
        self.assertNotIsInstance(endpoint, HostnameEndpoint)
        self.assertIs(self.endpoint(b"https://backend.example:8443/other"), endpoint)

    def test_otherScheme(self) -> None:
        with self.assertRaises(SchemeNotSupported):
            self.endpoint(b"ftp://127.0.0.1/files/a")

    def test_bounded(self) -> None:
        """Past KEPT_ORIGINS origins, the kept ones are dropped and made again."""
        first = self.endpoint(b"http://127.0.0.1:1/")
        for port in range(2, KEPT_ORIGINS + 2):
            self.endpoint(b"http://127.0.0.1:%d/" % port)
        self.assertLessEqual(len(self.endpoints._kept), KEPT_ORIGINS)
        self.assertIsNot(self.endpoint(b"http://127.0.0.1:1/"), first)


class _NoProtocol:
    """A protocol factory that is never asked for a protocol here."""

    def buildProtocol(self, addr: object) -> None:
        return None

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass
