"""
A tus final upload's C{Upload-Concat} at the proxy: the partial uploads'
URLs go to the backend as paths, without their queries (a signed URL's
C{sr-*} parameters are the proxy's business); with a grant, each must be a
valid signed URL of an upload, signed with the grant's own key, so that a
final upload is made only of partial uploads its creator was given.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError
from streamrelay.grants import GrantKeys, GrantQuery, checkGrant, grantInvalid
from streamrelay.hooks.context import CLIENT_MAX_SIZE
from streamrelay.proxy.access import Access

_FINAL = b"final;"


def forwardConcat(request: IRequest, access: Access, keys: GrantKeys | None, now: float) -> None:
    """
    Rewrite the C{Upload-Concat} of a final upload's creation, in
    C{request}'s headers, as the backend gets it; any other is left for the
    backend to answer.

    @raise ApiError: C{403 grant_invalid} or C{403 grant_expired}: a
        partial upload's URL that the grant of the request does not cover.
    """
    values = request.requestHeaders.getRawHeaders(b"upload-concat")
    if not values:
        return
    if len(values) != 1:
        # The backend would act on one of them, maybe not the one checked.
        raise ApiError(400, "bad_request", "Upload-Concat is given more than once.")
    if not values[0].strip().startswith(_FINAL):
        return
    try:
        urls = values[0].strip()[len(_FINAL):].decode("ascii").split()
    except UnicodeDecodeError:
        return
    paths = []
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            if access.grant is not None:
                raise grantInvalid(f"{url[:200]!r} is not the URL of a partial upload") from None
            return
        if access.grant is not None:
            _checkPartial(parts.path, parts.query, access, keys, now)
        paths.append(parts.path)
    request.requestHeaders.setRawHeaders(
        b"upload-concat", [_FINAL + " ".join(paths).encode("ascii")]
    )


def finalLimit(request: IRequest, headers: Headers, limit: int | None) -> None:
    """
    Tell the backend, in C{headers} (the upstream request's), the proxy's
    C{limit} on a final upload's creation: its length is the sum of its
    partial uploads', which the proxy does not know, and each of them kept
    to the limit on its own.
    """
    if limit is None or request.method != b"POST":
        return
    values = request.requestHeaders.getRawHeaders(b"upload-concat")
    if values and any(v.strip().startswith(_FINAL) for v in values):
        headers.setRawHeaders(CLIENT_MAX_SIZE, [b"%d" % (limit,)])


def _checkPartial(path: str, query: str, access: Access, keys: GrantKeys | None,
                  now: float) -> None:
    assert access.grant is not None
    split = GrantQuery.split(query.encode("ascii"))
    if split is None:
        raise grantInvalid(f"the partial upload {path[:200]!r} is not given with a signed URL")
    grant = checkGrant(b"PATCH", path.encode("ascii"), split, keys, now)
    if grant.keyId != access.grant.keyId:
        raise grantInvalid(f"the partial upload {path[:200]!r} is signed with another key")
