"""
Who asked: the request's id, the client's address and identity, the
protocol and the client's allow-listed headers, as hook events carry them.

Behind a proxy the backend sees the proxy, not the client, and the proxy
replaces the client's C{Authorization} with the shared secret.  So the
proxy tells the backend about the client in the C{Streamrelay-Client-*}
headers below.  The backend believes them only from a request that
carries the shared secret (only the proxy holds it); from anyone else
they are ignored and the connection's own address is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.web.iweb import IRequest

#: The client's address, as the proxy saw it.
CLIENT_ADDRESS = b"streamrelay-client-address"
#: Who the proxy let in: C{token:<name>}, C{grant:<key id>}; absent for nobody.
CLIENT_IDENTITY = b"streamrelay-client-identity"
#: The client's own C{Authorization} header, which the proxy replaced.
CLIENT_AUTHORIZATION = b"streamrelay-client-authorization"
#: The most bytes the proxy lets the request store (its C{--max-size} or a
#: signed URL's C{sr-max-size}) where it cannot count them itself: a tus
#: final upload, whose length is its partial uploads'.  It only lowers a
#: limit, so the backend heeds it from anyone.
CLIENT_MAX_SIZE = b"streamrelay-client-max-size"
#: Every C{Streamrelay-Client-*} header: the proxy drops them from clients.
CLIENT_HEADERS = (CLIENT_ADDRESS, CLIENT_IDENTITY, CLIENT_AUTHORIZATION, CLIENT_MAX_SIZE)

#: The forwarded headers by default (C{--hook-forward-headers}).
DEFAULT_FORWARD_HEADERS = ("Authorization", "Cookie")


@dataclass(frozen=True)
class RequestContext:
    """The C{request} object of a hook event."""

    id: str
    remote: str | None
    identity: str | None
    #: C{put}, C{form}, C{tus} or C{rufh}.
    protocol: str
    headers: dict[str, str] = field(default_factory=dict)

    def toJSON(self) -> dict[str, object]:
        return {
            "id": self.id,
            "remote": self.remote,
            "identity": self.identity,
            "protocol": self.protocol,
            "headers": dict(self.headers),
        }


def requestContext(
    request: IRequest,
    requestId: str,
    protocol: str,
    trusted: bool,
    forwardHeaders: Sequence[str] = DEFAULT_FORWARD_HEADERS,
) -> RequestContext:
    """
    The context of C{request}.  C{trusted}: the request carries the shared
    secret, so its C{Streamrelay-Client-*} headers are the proxy's word.
    """
    peer = request.getClientAddress()
    remote: str | None = getattr(peer, "host", None)
    identity: str | None = None
    if trusted:
        remote = _header(request, CLIENT_ADDRESS) or remote
        identity = _header(request, CLIENT_IDENTITY)
    headers: dict[str, str] = {}
    for name in forwardHeaders:
        key = name.strip().lower().encode("latin-1")
        if trusted and key == b"authorization":
            value = _header(request, CLIENT_AUTHORIZATION)
        elif key in CLIENT_HEADERS:
            value = None
        else:
            value = _header(request, key)
        if value is not None:
            headers[name.strip()] = value
    return RequestContext(requestId, remote, identity, protocol, headers)


def _header(request: IRequest, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    return ", ".join(v.decode("latin-1") for v in values)
