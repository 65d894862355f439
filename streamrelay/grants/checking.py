"""
Checking a request's grant: its C{sr-*} query parameters against the
method and path it was sent with, and the keys the proxy holds.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from streamrelay.errors import ApiError
from streamrelay.grants.keys import GrantKeys
from streamrelay.grants.signing import (
    EXPIRES,
    KEY,
    KEY_ID,
    MAX_SIZE,
    SIGNATURE,
    isGrantParam,
    signature,
)

__all__ = ["Grant", "GrantQuery", "checkGrant", "grantExpired", "grantInvalid", "signedMethod"]

_PARAMS = frozenset({KEY, EXPIRES, MAX_SIZE, SIGNATURE})
_DIGITS = {EXPIRES: re.compile(r"[0-9]{1,12}"), MAX_SIZE: re.compile(r"[0-9]{1,19}")}
_HEX = re.compile(r"[0-9a-fA-F]{64}")
#: The path of a resumable upload's own URL (not its creation's).
_UPLOAD_URL = re.compile(rb"/uploads/[^/]+")
#: What a grant for an upload's own URL, signed for C{PATCH}, lets its holder do.
UPLOAD_URL_METHODS = frozenset({b"GET", b"HEAD", b"PATCH", b"DELETE"})


def grantInvalid(why: str) -> ApiError:
    return ApiError(403, "grant_invalid", f"The signed URL is not valid: {why}.")


def grantExpired() -> ApiError:
    return ApiError(403, "grant_expired", "The signed URL has expired.")


@dataclass(frozen=True)
class GrantQuery:
    """
    A query split in two: its C{sr-*} parameters (names and values
    decoded; a name given twice is noted in C{repeated}) and the rest, as
    sent, which is what the backend gets.
    """

    params: dict[str, str]
    rest: bytes
    repeated: frozenset[str] = frozenset()

    @classmethod
    def split(cls, query: bytes) -> GrantQuery | None:
        """The parts of C{query}; L{None} if it holds no C{sr-*} parameter."""
        params: dict[str, str] = {}
        repeated: set[str] = set()
        rest: list[bytes] = []
        for part in query.split(b"&"):
            text = part.decode("utf-8", "replace")
            if not isGrantParam(text):
                rest.append(part)
                continue
            name, _, value = text.partition("=")
            name = unquote_plus(name)
            if name in params:
                repeated.add(name)
            params[name] = unquote_plus(value)
        if not params:
            return None
        return cls(params, b"&".join(p for p in rest if p), frozenset(repeated))


@dataclass(frozen=True)
class Grant:
    """What a valid signed URL lets its holder do."""

    keyId: str
    #: The method signed (C{PATCH} for an upload's own URL).
    method: str
    path: bytes
    expires: int
    maxSize: int | None

    @property
    def identity(self) -> str:
        """Who asked, as hook events say it."""
        return f"grant:{self.keyId}"


def signedMethod(method: bytes, path: bytes) -> bytes:
    """
    The method a grant for a C{method} request to C{path} is signed for:
    C{PATCH} for every request that goes on with a resumable upload at its
    own URL (C{HEAD}, C{PATCH}, C{DELETE}, C{GET}), else the request's own.
    """
    if method in UPLOAD_URL_METHODS and _UPLOAD_URL.fullmatch(path):
        return b"PATCH"
    return method


def checkGrant(
    method: bytes, path: bytes, query: GrantQuery, keys: GrantKeys | None, now: float
) -> Grant:
    """
    The grant of a C{method} request to C{path} (as sent) whose query holds
    C{query}'s C{sr-*} parameters, at Unix time C{now}.

    @raise ApiError: C{403 grant_invalid} or C{403 grant_expired}.
    """
    params = query.params
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise grantInvalid(f"unknown parameter {unknown[0]}")
    if query.repeated:
        raise grantInvalid(f"{sorted(query.repeated)[0]} is given more than once")
    for name in (KEY, EXPIRES, SIGNATURE):
        if name not in params:
            raise grantInvalid(f"{name} is missing")
    for name, pattern in _DIGITS.items():
        if name in params and not pattern.fullmatch(params[name]):
            raise grantInvalid(f"{name} is not a number of {name[3:]}")
    if not _HEX.fullmatch(params[SIGNATURE]):
        raise grantInvalid(f"{SIGNATURE} is not 64 hexadecimal digits")
    keyId = params[KEY]
    secret = keys.secret(keyId) if keys is not None and KEY_ID.fullmatch(keyId) else None
    if secret is None:
        raise grantInvalid(f"no such key: {keyId[:64]!r}")
    signed = signedMethod(method, path).decode("ascii")
    expected = signature(
        secret, signed, path.decode("latin-1"), params[EXPIRES], params.get(MAX_SIZE, "")
    )
    if not hmac.compare_digest(expected, params[SIGNATURE].lower()):
        raise grantInvalid("the signature does not match this method and path")
    expires = int(params[EXPIRES])
    if now > expires:
        raise grantExpired()
    maxSize = params.get(MAX_SIZE)
    return Grant(keyId, signed, path, expires, int(maxSize) if maxSize is not None else None)
