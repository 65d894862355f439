"""
URLs handed to treq already in URI form.

treq converts every URL it is given with hyperlink's C{to_uri}, which
encodes the host with IDNA each time: that fails for an IPv6 literal
(C{http://[::1]:8081}) and for names with C{_} (compose service names),
and costs the proxy a little on every request.  A L{URIForm} is converted
once, here, and its C{to_uri} is itself.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from hyperlink import EncodedURL

__all__ = ["URIForm", "httpURL", "toURIForm", "uriOf"]

_U = TypeVar("_U", bound=EncodedURL)

#: A host name (or IPv4 address) as resolvers take it: labels of letters,
#: digits, "-" and "_", a final dot allowed.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")


class URIForm(EncodedURL):
    """
    A URL in URI form: an ASCII host, and no byte in it that a URI may not
    hold as such.  Made by L{uriOf} (or by code that escapes its path and
    query itself, as the proxy does); its L{to_uri} is itself.  A changed
    copy (C{replace}, C{child}, C{click}) is a plain L{EncodedURL} again,
    converted as usual.
    """

    @classmethod
    def from_text(cls, text: str) -> URIForm:
        """The same as L{uriOf}: a URIForm is made converted."""
        return uriOf(text)

    def to_uri(self) -> URIForm:
        return self

    def replace(self, *args: Any, **kwargs: Any) -> EncodedURL:
        return _as(EncodedURL, super().replace(*args, **kwargs))


def _as(kind: type[_U], url: EncodedURL) -> _U:
    """C{url} as a C{kind}, every part the same."""
    return kind(
        scheme=url.scheme, host=url.host, path=url.path, query=url.query,
        fragment=url.fragment, port=url.port, rooted=url.rooted, userinfo=url.userinfo,
        uses_netloc=url.uses_netloc,
    )


def toURIForm(url: EncodedURL) -> EncodedURL:
    """
    C{url} in URI form, its host included: an ASCII host (a name, with C{_}
    or not, or an IPv4 or IPv6 literal) lowercased, any other IDNA-encoded.

    @raise ValueError: for a host no resolver takes.
    """
    host = url.host
    host = host.lower() if host.isascii() else url.to_uri().host
    if ":" not in host and not _HOST_NAME.fullmatch(host):
        raise ValueError(f"not a host name: {host!r}")
    # Everything else as hyperlink converts it, with a host its IDNA step takes.
    return url.replace(host="placeholder.invalid").to_uri().replace(host=host)


def uriOf(text: str) -> URIForm:
    """
    The L{URIForm} of the absolute URL C{text}.

    @raise ValueError: for text that is not such a URL.
    """
    return _as(URIForm, toURIForm(EncodedURL.from_text(text)))


def httpURL(text: str) -> SplitResult:
    """
    The parts of C{text}, an C{http://} or C{https://} URL with a host
    that resolvers take and a port that is a number (or none).

    @raise ValueError: for text that is not such a URL.
    """
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {text!r}")
    parts.port  # noqa: B018 - a ValueError when it is no port number
    uriOf(text)
    return parts
