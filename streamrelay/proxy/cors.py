"""
CORS for browser clients on other origins (tus-js-client, Uppy): the proxy
answers their preflights and lets them read the API's headers.

Only C{/uploads} and C{/files} take part, and only for the origins given
with C{--cors-origin}; the proxy's own page is same-origin and needs none.
Tokens travel in C{Authorization} headers, never cookies, so no
credentials are allowed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

#: Response headers a page on another origin may read (tus's, the IETF
#: resumable upload draft's, the file API's).
EXPOSE_HEADERS = (
    b"Location, Upload-Offset, Upload-Length, Tus-Resumable, Upload-Expires, "
    b"Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, "
    b"Upload-Metadata, Upload-Defer-Length, Upload-Concat, Content-Location, X-Request-Id, "
    b"ETag, Repr-Digest, Content-Range, Content-Disposition, Retry-After, "
    b"Upload-Complete, Upload-Incomplete, Upload-Limit, Upload-Draft-Interop-Version"
)
#: Request headers such a page may send (C{Upload-Concat}: tus-js-client's
#: parallel uploads).
ALLOW_HEADERS = (
    b"Authorization, Content-Type, Content-Digest, If-None-Match, If-Range, Range, "
    b"Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, "
    b"Upload-Defer-Length, Upload-Checksum, Upload-Concat, X-Request-Id, "
    b"X-HTTP-Method-Override, X-Requested-With, Upload-Complete, Upload-Incomplete, "
    b"Upload-Draft-Interop-Version, Repr-Digest, Want-Repr-Digest, Content-Disposition"
)
ALLOW_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
#: How long a browser may keep a preflight's answer.
MAX_AGE = b"86400"

_PREFIXES = (b"/uploads", b"/files")


def parseOrigins(value: str) -> list[str]:
    """
    The origins of a C{--cors-origin} value (comma or space separated):
    each C{*} or C{scheme://host[:port]}; L{ValueError} otherwise.
    """
    origins = []
    for item in value.replace(",", " ").split():
        if item != "*":
            parts = urlsplit(item)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(f"not an origin (scheme://host[:port]): {item!r}")
            item = f"{parts.scheme}://{parts.netloc}".lower()
        origins.append(item)
    return origins


def _covered(path: bytes) -> bool:
    return any(path == p or path.startswith(p + b"/") for p in _PREFIXES)


class CORSResource(Resource):
    """
    Wraps the proxy's resource: answers preflights from allowed origins
    and adds the CORS response headers to their requests.
    """

    isLeaf = True

    def __init__(self, inner: IResource, origins: list[str]) -> None:
        super().__init__()
        self._inner = inner
        self._any = "*" in origins
        self._origins = {o.encode("ascii") for o in origins if o != "*"}

    def allows(self, origin: bytes) -> bool:
        return self._any or origin.lower() in self._origins

    def render(self, request: IRequest) -> Any:
        origin = request.getHeader(b"origin")
        if origin is None or not _covered(request.path):
            return self._inner.render(request)
        request.setHeader(b"vary", b"Origin")
        if not self.allows(origin):
            # No CORS headers: the browser keeps the answer from the page.
            return self._inner.render(request)
        request.setHeader(b"access-control-allow-origin", origin)
        if request.method == b"OPTIONS" and request.getHeader(
            b"access-control-request-method"
        ) is not None:
            request.setHeader(b"access-control-allow-methods", ALLOW_METHODS)
            request.setHeader(b"access-control-allow-headers", ALLOW_HEADERS)
            request.setHeader(b"access-control-max-age", MAX_AGE)
            request.setHeader(b"content-length", b"0")
            request.setResponseCode(204)
            return b""
        request.setHeader(b"access-control-expose-headers", EXPOSE_HEADERS)
        return self._inner.render(request)


def withCORS(resource: IResource, origins: list[str]) -> IResource:
    """C{resource}, answering CORS for C{origins} when there are any."""
    return CORSResource(resource, origins) if origins else resource
