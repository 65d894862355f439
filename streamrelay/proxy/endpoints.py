"""
Where the proxy's HTTP client connects: one endpoint per backend origin,
made once and used for every request, instead of Twisted's agent making
one (and converting its host name again) for each request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["KeptEndpoints"]

#: Origins whose endpoints are kept (the proxy speaks to one backend; the
#: bound only keeps a misuse from growing without end).
KEPT_ORIGINS = 16


@implementer(IAgentEndpointFactory)
class KeptEndpoints:
    """
    Endpoints for an agent's requests, one made per scheme, host and port
    and kept.  An endpoint holds no connection: each new connection still
    resolves the host name, so a backend that moves is found.
    """

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS) -> None:
        self._reactor = reactor
        self._policy = policy
        self._kept: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._kept.get(key)
        if endpoint is None:
            endpoint = self._make(uri)
            if len(self._kept) >= KEPT_ORIGINS:
                self._kept.clear()
            self._kept[key] = endpoint
        return endpoint

    def _make(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"the host {uri.host!r} is not ASCII") from None
        endpoint = HostnameEndpoint(self._reactor, host, uri.port)
        if uri.scheme == b"http":
            return endpoint
        creator = self._policy.creatorForNetloc(uri.host, uri.port)
        return wrapClientTLS(creator, endpoint)
