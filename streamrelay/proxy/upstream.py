"""
The request the proxy sends to the backend: its URL, made from the parsed
path and query of the client's request (never from its raw target), and
whether its head fits within what the backend accepts.
"""

from __future__ import annotations

import re

from hyperlink import EncodedURL
from twisted.web.http_headers import Headers

from streamrelay.streaming import StreamingChannel
from streamrelay.uris import URIForm, toURIForm

__all__ = ["UpstreamURL", "fitsBackend"]

#: Bytes of a target that go as they are: RFC 3986's unreserved and
#: sub-delims, ":", "@", "/", "?" and "%" (an escape, or a lone "%" the
#: backend reads as the proxy did).  Anything else is percent-escaped.
_UNSAFE = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]")

#: Header lines the proxy's HTTP client may add to those it is given:
#: C{Host}, C{Accept-Encoding}, C{Content-Length} or C{Transfer-Encoding},
#: and C{Connection: close} on a connection it does not keep.
_CLIENT_LINES = 4
_CLIENT_BYTES = (
    len(b"Accept-Encoding: gzip") + len(b"Content-Length: ") + 20 + len(b"Connection: close")
)


def _escape(part: bytes) -> bytes:
    """
    C{part} with every byte a URL may not hold as such percent-escaped:
    what the backend percent-decodes is what the proxy did.
    """
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], part)


class UpstreamURL:
    """
    The backend's URLs, from its base URL: scheme, host and port, and a
    path that every request's path goes under (a backend behind a prefix).

    @raise ValueError: for a base URL that is not one.
    """

    def __init__(self, backendURL: str) -> None:
        base = EncodedURL.from_text(backendURL.rstrip("/"))
        if not base.host:
            raise ValueError("it names no host")
        if base.userinfo or base.query or base.fragment:
            raise ValueError("it may not hold user info, a query or a fragment")
        self._base = toURIForm(base)
        self._prefix = [segment for segment in self._base.path if segment]
        origin = self._base.replace(path=(), query=(), fragment="")
        self._originLength = len(origin.to_text())
        self.hostLine = len(b"Host: ") + len(self._base.authority().encode("ascii"))

    def of(self, path: bytes, query: bytes) -> EncodedURL:
        """
        The URL of the backend's resource at C{path} (starting with C{/})
        and C{query} (without C{?}), both as the client's request gave them.
        """
        if not path.startswith(b"/") or b"#" in path + query:
            raise ValueError(f"not an origin-form target: {path!r} {query!r}")
        segments = _escape(path[1:]).decode("ascii").split("/")
        params: list[tuple[str, str | None]] = []
        if query:
            for param in _escape(query).decode("ascii").split("&"):
                name, equals, value = param.partition("=")
                params.append((name, value if equals else None))
        base = self._base
        # Escaped here: in URI form already (see streamrelay.uris).
        return URIForm(
            scheme=base.scheme, host=base.host, port=base.port,
            path=self._prefix + segments, query=params, rooted=True,
        )

    def targetLength(self, url: EncodedURL) -> int:
        """The length of the request target of C{url}, one of L{of}'s URLs."""
        return len(url.to_text()) - self._originLength


def fitsBackend(upstream: UpstreamURL, method: bytes, url: EncodedURL, headers: Headers) -> bool:
    """
    Whether a C{method} request to C{url} (one of C{upstream}'s) with
    C{headers} is within
    the limits of the backend's HTTP parser (the same as the proxy's): the
    proxy's own headers (C{X-Forwarded-For}, C{X-Request-Id}, the shared
    secret, C{Host}...) count too.
    """
    lines = _CLIENT_LINES
    size = len(method) + upstream.targetLength(url) + len(b"  HTTP/1.1")
    size += upstream.hostLine + _CLIENT_BYTES
    for name, values in headers.getAllRawHeaders():
        lines += len(values)
        size += sum(len(name) + 2 + len(value) for value in values)
    return (
        lines <= StreamingChannel.maxHeaders and size <= StreamingChannel.totalHeadersSize
    )
