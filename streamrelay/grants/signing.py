"""
Signing a URL: the string-to-sign of the contract, its HMAC, and the URL
with the C{sr-*} query parameters added.
"""

from __future__ import annotations

import hmac
import re
import time
from hashlib import sha256
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

__all__ = [
    "EXPIRES", "KEY", "KEY_ID", "MAX_SIZE", "SIGNATURE",
    "isGrantParam", "signURL", "signature", "stringToSign",
]

KEY = "sr-key"
EXPIRES = "sr-expires"
MAX_SIZE = "sr-max-size"
SIGNATURE = "sr-signature"

#: A method as HTTP spells it (a token); streamrelay's are upper case.
_METHOD = re.compile(r"[A-Z]+")
#: A key id: what goes in a URL without escaping, and in a header.
KEY_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
#: Bytes a path holds as they are: unreserved, sub-delims, ":", "@", "/"
#: and "%" (escapes already made).  Anything else is escaped by signURL.
_PATH_SAFE = "-._~!$&'()*+,;=:@/%"


def stringToSign(method: str, path: str, expires: str, maxSize: str = "") -> str:
    """
    METHOD, PATH (exactly as the request sends it, escapes included),
    C{sr-expires} and C{sr-max-size} (or nothing), one per line.
    """
    return f"{method}\n{path}\n{expires}\n{maxSize}"


def signature(secret: bytes, method: str, path: str, expires: str, maxSize: str = "") -> str:
    """The hex HMAC-SHA256 of L{stringToSign} with C{secret}."""
    message = stringToSign(method, path, expires, maxSize).encode("utf-8")
    return hmac.new(secret, message, sha256).hexdigest()


def signURL(
    url: str,
    keyId: str,
    secret: bytes | str,
    method: str,
    expires: int | None = None,
    expiresIn: int | None = None,
    maxSize: int | None = None,
) -> str:
    """
    C{url} (absolute, or a path such as C{/files/a.pdf}) signed for a
    C{method} request until the Unix time C{expires}, or for C{expiresIn}
    seconds from now; with C{maxSize}, bodies over that many bytes are
    refused.

    The path is signed as the returned URL holds it: characters a URL may
    not hold as they are (spaces, non-ASCII) are percent-escaped first,
    escapes already there are kept.  The URL's other query parameters stay
    (they are not signed); C{sr-*} ones are replaced.

    @raise ValueError: on a method, key id, expiry or size that cannot be.
    """
    if (expires is None) == (expiresIn is None):
        raise ValueError("give one of expires and expiresIn")
    if expires is None:
        assert expiresIn is not None
        if expiresIn <= 0:
            raise ValueError("expiresIn must be a positive number of seconds")
        expires = int(time.time()) + expiresIn
    if expires <= 0:
        raise ValueError("expires must be a positive Unix time")
    method = method.upper()
    if not _METHOD.fullmatch(method):
        raise ValueError(f"not an HTTP method: {method!r}")
    if not KEY_ID.fullmatch(keyId):
        raise ValueError("a key id is 1 to 64 of A-Z a-z 0-9 . _ ~ -")
    if maxSize is not None and maxSize < 0:
        raise ValueError("maxSize must be 0 or more bytes")
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {url!r}")
    size = "" if maxSize is None else str(maxSize)
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    params = [p for p in parts.query.split("&") if p and not isGrantParam(p)]
    params += [f"{KEY}={keyId}", f"{EXPIRES}={expires}"]
    if maxSize is not None:
        params.append(f"{MAX_SIZE}={size}")
    params.append(f"{SIGNATURE}={signature(key, method, path, str(expires), size)}")
    return urlunsplit((parts.scheme, parts.netloc, path, "&".join(params), parts.fragment))


def isGrantParam(param: str) -> bool:
    """Whether C{param} (C{name=value} of a query, as sent) is one of the C{sr-*} ones."""
    return unquote_plus(param.partition("=")[0]).lower().startswith("sr-")
