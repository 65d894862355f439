"""
How the backend reaches its hook: the client every event is posted with
(L{streamrelay.hooks.wire}), how many connections it keeps open and the
one endpoint they are opened to.

Under W3 (64 uploads at once, each asking pre-create and recording a
post-finish), the costs that were per event and are now once: opening a
connection (the pool kept 16 while 80 events could be in flight), making
an endpoint for the URL's host (IDNA-encoding the host), and the two log
lines of each connection opened.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from streamrelay.hooks.sender import MAX_IN_FLIGHT
from streamrelay.hooks.wire import HookClient, hookURI

#: Pre-create requests expected at once when C{--max-concurrent-uploads}
#: sets no limit (the connections kept open for them; more still go, on
#: connections opened for them and closed after).
DEFAULT_PRE_CREATE_CONCURRENCY = 64

#: Seconds an idle connection to the hook is kept.
IDLE_CONNECTION_SECONDS = 30


def hookConnections(maxConcurrentUploads: int | None, maxInFlight: int = MAX_IN_FLIGHT) -> int:
    """
    How many idle connections to the hook are kept: one for each delivery
    the sender has in flight and each pre-create request of an upload
    taken at once.  Fewer, and every burst of uploads beyond them opens
    connections that are closed as soon as they answered (a TCP handshake
    and a teardown for each of those events, on both sides).
    """
    concurrency = maxConcurrentUploads or DEFAULT_PRE_CREATE_CONCURRENCY
    return maxInFlight + concurrency


@implementer(IAgentEndpointFactory)
class HookEndpoints:
    """
    The endpoint of each scheme, host and port, made once (the hook has
    one URL): TCP for C{http}, TLS checked as a browser would for C{https}.
    """

    def __init__(self, reactor: Any, tls: IPolicyForHTTPS | None = None) -> None:
        self.reactor = reactor
        self.tls = tls or BrowserLikePolicyForHTTPS()
        self._made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            if uri.scheme not in (b"http", b"https"):
                raise ValueError(f"no endpoint for a {uri.scheme!r} URL")
            endpoint = HostnameEndpoint(self.reactor, uri.host, uri.port)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(
                    self.tls.creatorForNetloc(uri.host, uri.port), endpoint
                )
            self._made[key] = endpoint
        return endpoint


def hookClient(reactor: Any, url: str, connections: int = MAX_IN_FLIGHT) -> HookClient:
    """The client events are posted with: up to C{connections} kept open."""
    endpoint = HookEndpoints(reactor).endpointForURI(URI.fromBytes(hookURI(url)))
    return HookClient(url, endpoint, reactor, connections, IDLE_CONNECTION_SECONDS)
