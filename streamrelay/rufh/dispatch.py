"""
Which protocol a request speaks: the IETF draft's (it carries
C{Upload-Draft-Interop-Version}) or tus's (C{Tus-Resumable}), and for the
draft, which interop version.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError
from streamrelay.rufh.versions import VERSIONS, InteropVersion, announced, supported, versionOf


def wantsRufh(request: IRequest) -> bool:
    """A request to C{/uploads} for the draft: an interop version, no tus version."""
    return announced(request) is not None and request.getHeader(b"tus-resumable") is None


def unsupportedVersion(value: bytes) -> ApiError:
    return ApiError(
        400, "unsupported_version",
        f"Upload-Draft-Interop-Version {value.decode('ascii', 'replace')!r} is not spoken "
        f"here; these are: {supported()}.",
        {b"upload-draft-interop-version": supported().encode("ascii")},
    )


def rufhVersion(request: IRequest, strict: bool = False) -> InteropVersion | None:
    """
    The interop version of a request that may become resumable, or L{None}
    for a plain one (no version, or one not spoken: the draft forbids a
    104 then, and the request is an upload as any other).

    @param strict: the request is on an upload's URL or creates one there,
        so there is no plain upload to fall back on.
    @raise ApiError: C{400 unsupported_version} when C{strict}, or when
        the request says its content is not the whole upload (as a plain
        upload it would store a fragment as the file).
    """
    value = announced(request)
    if value is None:
        return None
    version = versionOf(request)
    if version is not None:
        return version
    incomplete = request.getHeader(b"upload-complete") == b"?0" or request.getHeader(
        b"upload-incomplete"
    ) == b"?1"
    if strict or incomplete:
        raise unsupportedVersion(value)
    return None


__all__ = ["VERSIONS", "rufhVersion", "unsupportedVersion", "wantsRufh"]
