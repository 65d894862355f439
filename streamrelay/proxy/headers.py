"""
Which headers the proxy passes on, in each direction.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

from streamrelay.hooks.context import (
    CLIENT_ADDRESS,
    CLIENT_AUTHORIZATION,
    CLIENT_HEADERS,
    CLIENT_IDENTITY,
)

#: Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: Request headers the proxy's own HTTP client sets for the upstream request.
_REQUEST_OWN = frozenset({b"host", b"content-length", b"expect"})


def _connectionTokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def endToEnd(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """
    The end-to-end headers of C{headers}: without hop-by-hop ones, those
    named in C{Connection}, C{Proxy-*} and C{drop}.
    """
    skip = HOP_BY_HOP | drop | _connectionTokens(headers)
    result = Headers()
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower in skip or lower.startswith(b"proxy-"):
            continue
        result.setRawHeaders(name, list(values))
    return result


def upstreamHeaders(
    headers: Headers, clientHost: str | None, requestId: str, identity: str | None = None
) -> Headers:
    """
    The headers of the request the proxy sends to the backend, with the
    C{Streamrelay-Client-*} ones its hooks read made by the proxy (a
    client's own are dropped): the client's address and C{identity}.
    """
    result = endToEnd(headers, _REQUEST_OWN | frozenset(CLIENT_HEADERS))
    if clientHost is not None:
        result.setRawHeaders(CLIENT_ADDRESS, [clientHost.encode("ascii", "replace")])
    if identity is not None:
        result.setRawHeaders(CLIENT_IDENTITY, [identity.encode("ascii", "replace")])
    if clientHost is not None:
        forwarded = result.getRawHeaders(b"x-forwarded-for", [])
        chain = b", ".join([*forwarded, clientHost.encode("ascii", "replace")])
        result.setRawHeaders(b"x-forwarded-for", [chain])
    result.setRawHeaders(b"x-request-id", [requestId.encode("ascii")])
    return result


def replaceAuthorization(headers: Headers, value: bytes | None) -> None:
    """
    Replace the client's C{Authorization} in C{headers} (the upstream
    request's) with C{value}, or drop it: the client's own then goes in
    C{Streamrelay-Client-Authorization}, for the backend's hooks.
    """
    own = headers.getRawHeaders(b"authorization")
    headers.removeHeader(b"authorization")
    if own:
        headers.setRawHeaders(CLIENT_AUTHORIZATION, list(own))
    if value is not None:
        headers.setRawHeaders(b"authorization", [value])


def downstreamHeaders(headers: Headers) -> Headers:
    """The backend's response headers as the client gets them."""
    result = endToEnd(headers, frozenset({b"server", b"date"}))
    if result.getRawHeaders(b"content-encoding") in ([b""], [""]):
        # treq's decoding agent leaves an empty one behind.
        result.removeHeader(b"content-encoding")
    return result
