"""
The L{RequestContext} of a backend request: the proxy's word about its
client is believed only from a request carrying the shared secret.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest

from streamrelay.auth import bearerToken, matches
from streamrelay.hooks.context import DEFAULT_FORWARD_HEADERS, RequestContext, requestContext
from streamrelay.webapp import requestId


class ClientContexts:
    """Makes the context hook events carry, for the backend's requests."""

    def __init__(
        self,
        secret: bytes | None = None,
        forwardHeaders: Sequence[str] = DEFAULT_FORWARD_HEADERS,
    ) -> None:
        self.secret = secret
        self.forwardHeaders = tuple(forwardHeaders)

    def __call__(self, request: IRequest, protocol: str) -> RequestContext:
        trusted = self.secret is not None and matches(bearerToken(request), [self.secret])
        return requestContext(
            request, requestId(request), protocol, trusted, self.forwardHeaders
        )
