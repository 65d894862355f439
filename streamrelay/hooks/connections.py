"""
How the backend reaches its hook: the agent every event is posted with
(L{streamrelay.hooks.delivery}), its pool of persistent connections and
the one endpoint they are opened to.

Under W3 (64 uploads at once, each asking pre-create and recording a
post-finish), the costs that were per event and are now once: opening a
connection (the pool kept 16 while 80 events could be in flight), making
an endpoint for the URL's host (Twisted's agent makes one per request,
IDNA-encoding the host each time: a sixth of a request's CPU), and the
two log lines of each connection opened.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from streamrelay.hooks.sender import MAX_IN_FLIGHT
from streamrelay.streaming.internals import QuietConnectionPool

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


class HookPool(QuietConnectionPool):
    """The pool of connections to the hook, opened without log lines."""


def hookPool(reactor: Any, connections: int) -> HTTPConnectionPool:
    """Persistent connections to the hook: up to C{connections} kept idle."""
    pool = HookPool(reactor, persistent=True)
    pool.maxPersistentPerHost = connections
    pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
    return pool


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


def hookAgent(reactor: Any, connections: int = MAX_IN_FLIGHT) -> IAgent:
    """The agent events are posted with: pooled connections, one endpoint."""
    return Agent.usingEndpointFactory(
        reactor, HookEndpoints(reactor), pool=hookPool(reactor, connections)
    )
