"""
Who a request comes from, as the proxy decides it: a signed URL's grant,
one of C{--tokens-file}'s tokens, or nobody in particular; and what that
leaves of its query for the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from twisted.web.iweb import IRequest

from streamrelay.auth import TokenFile
from streamrelay.errors import ApiError
from streamrelay.grants import Grant, GrantKeys, GrantQuery, checkGrant, signURL
from streamrelay.tus.headers import count

__all__ = ["Access", "authorize", "grantLimit", "signedLocation", "unchecked"]


@dataclass(frozen=True)
class Access:
    """
    What the proxy let in.

    @ivar identity: C{grant:<key id>}, C{token:<name>}, or L{None}.
    @ivar grant: the signed URL's grant, if the request carried one.
    @ivar query: the query for the backend: the client's, as sent, without
        its C{sr-*} parameters.
    """

    identity: str | None
    grant: Grant | None
    query: bytes


def _query(request: IRequest) -> bytes:
    return getattr(request, "query", b"")


def unchecked(request: IRequest) -> Access:
    """A request that needs no access (tus's discovery, preflights): nobody, no C{sr-*}."""
    split = GrantQuery.split(_query(request))
    return Access(None, None, split.rest if split is not None else _query(request))


def authorize(
    request: IRequest, tokens: TokenFile | None, keys: GrantKeys | None, now: float
) -> Access:
    """
    The access of C{request}.  A request with any C{sr-*} query parameter
    is judged by its grant alone (a token beside a bad grant does not let
    it in: an explicit claim that fails is an error, as in S3); any other,
    by its bearer token when there is a C{--tokens-file}.

    @raise ApiError: C{403 grant_invalid}, C{403 grant_expired}, C{401
        unauthorized}.
    """
    split = GrantQuery.split(_query(request))
    if split is not None:
        grant = checkGrant(request.method, request.path, split, keys, now)
        return Access(grant.identity, grant, split.rest)
    if tokens is not None:
        return Access(f"token:{tokens.check(request)}", None, _query(request))
    return Access(None, None, _query(request))


def grantLimit(request: IRequest, access: Access) -> int | None:
    """
    The most body bytes C{request} may send under its grant's
    C{sr-max-size}: for an upload's C{PATCH}, what is left after its
    C{Upload-Offset}.
    """
    grant = access.grant
    if grant is None or grant.maxSize is None:
        return None
    if request.method == b"PATCH":
        try:
            offset = count(request, b"upload-offset")
        except ApiError:
            offset = None  # the backend answers what is wrong
        if offset is not None:
            return max(0, grant.maxSize - offset)
    return grant.maxSize


def signedLocation(location: bytes, grant: Grant, keys: GrantKeys) -> bytes:
    """
    The C{Location} of an upload created with C{grant}, signed with the
    same key, expiry and size limit for the upload's own URL (C{PATCH}, see
    L{streamrelay.grants.signedMethod}): a tus client goes on with the URL
    as it is.  Unchanged if the key went away meanwhile, or it is not an
    upload's URL.
    """
    secret = keys.secret(grant.keyId)
    try:
        text = location.decode("ascii")
        parts = urlsplit(text)
    except ValueError:
        return location
    if secret is None or not parts.path.startswith("/uploads/"):
        return location
    path = urlunsplit(("", "", parts.path, parts.query, ""))
    signed = signURL(path, grant.keyId, secret, "PATCH", expires=grant.expires,
                     maxSize=grant.maxSize)
    signedParts = urlsplit(signed)
    return urlunsplit(
        (parts.scheme, parts.netloc, signedParts.path, signedParts.query, parts.fragment)
    ).encode("ascii")
