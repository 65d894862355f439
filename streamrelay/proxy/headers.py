"""
Which headers the proxy passes on, in each direction.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

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


def upstreamHeaders(headers: Headers, clientHost: str | None, requestId: str) -> Headers:
    """The headers of the request the proxy sends to the backend."""
    result = endToEnd(headers, _REQUEST_OWN)
    if clientHost is not None:
        forwarded = result.getRawHeaders(b"x-forwarded-for", [])
        chain = b", ".join([*forwarded, clientHost.encode("ascii", "replace")])
        result.setRawHeaders(b"x-forwarded-for", [chain])
    result.setRawHeaders(b"x-request-id", [requestId.encode("ascii")])
    return result


def downstreamHeaders(headers: Headers) -> Headers:
    """The backend's response headers as the client gets them."""
    result = endToEnd(headers, frozenset({b"server", b"date"}))
    if result.getRawHeaders(b"content-encoding") in ([b""], [""]):
        # treq's decoding agent leaves an empty one behind.
        result.removeHeader(b"content-encoding")
    return result
