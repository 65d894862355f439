"""
The proxy's routes in memory, for tests: a client's connection to them
through the streaming request layer (L{tests.httpfakes}), and their treq
client wired to a backend resource as C{treq.testing} wires an agent to a
site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from streamrelay.proxy.routes import ProxyRoutes
from streamrelay.webapp import appResource
from tests.httpfakes import Connection, Response
from tests.rawrequests import form

BACKEND = "http://backend.internal:8081"
FORM = form((b"file", b"a.txt", b"abc"))


@dataclass
class Seen:
    """A request as the backend got it."""

    method: bytes
    target: bytes
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return list(self.headers.getRawHeaders(name, []))


class Backend(Resource):
    """
    The backend as the proxy reaches it: keeps each whole request it gets
    and answers C{answer}'s status, phrase, headers and body, or never
    when C{answer} is L{None}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.answer: tuple[int, bytes, dict[bytes, bytes], bytes] | None = (
            201, b"Created", {b"content-type": b"application/json"}, b'{"stored": true}'
        )

    def render(self, request: Request) -> bytes | int:
        assert request.content is not None
        self.seen.append(Seen(
            request.method, request.uri, request.requestHeaders.copy(), request.content.read()
        ))
        if self.answer is None:
            return NOT_DONE_YET
        code, phrase, headers, body = self.answer
        request.setResponseCode(code, phrase)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


class BackendAgent(RequestTraversalAgent):
    """
    C{treq.testing}'s in-memory agent, noting each request the proxy's
    client makes; while not C{reachable}, every connection is refused.
    """

    reachable = True

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.asked: list[tuple[bytes, bytes]] = []

    def request(
        self, method: bytes, uri: bytes, headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.asked.append((method, uri))
        if not self.reachable:
            return fail(ConnectionRefusedError("backend.internal", 8081))
        return super().request(method, uri, headers, bodyProducer)  # type: ignore[no-any-return]


class ProxyTestCase(SynchronousTestCase):
    """L{ProxyRoutes} forwarding to an in-memory L{Backend}."""

    maxSize: int | None = None
    backendTimeout = 60.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend()
        self.agent = BackendAgent(self.backend)
        self.routes = self.makeRoutes()

    def makeRoutes(self, **kwargs: Any) -> ProxyRoutes:
        return ProxyRoutes(
            HTTPClient(self.agent), BACKEND, maxSize=self.maxSize,
            backendTimeout=self.backendTimeout, clock=self.clock, **kwargs,
        )

    def exchange(self, data: bytes) -> tuple[Connection, list[Response]]:
        """
        Send C{data} to the proxy and let everything it leads to happen:
        the connection and the final responses on it.
        """
        conn = Connection(appResource(self.routes.app), clock=self.clock)
        conn.send(data)
        conn.turn()  # The proxy dispatches the request on the next turn.
        self.agent.flush()  # Bytes go both ways until neither side has more.
        return conn, [r for r in conn.responses() if r.status >= 200]

    def request(self, data: bytes) -> Response:
        """The one response to C{data}."""
        conn, responses = self.exchange(data)
        self.assertEqual(len(responses), 1, conn.output())
        return responses[0]

    def forwarded(self, data: bytes) -> Seen:
        """The one request the backend got for C{data}; the client got the backend's 201."""
        response = self.request(data)
        self.assertEqual(response.status, 201, response.body)
        [seen] = self.backend.seen
        self.backend.seen.clear()
        return seen

    def assertError(self, response: Response, status: int, code: str) -> dict[str, Any]:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        answer: dict[str, Any] = json.loads(response.body)
        self.assertEqual(answer["error"], code)
        self.assertIsInstance(answer["message"], str)
        return answer

    def assertNotAsked(self) -> None:
        """The proxy's client never asked for the backend."""
        self.assertEqual(self.agent.asked, [])
        self.assertEqual(self.backend.seen, [])
