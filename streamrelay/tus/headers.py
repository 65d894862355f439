"""
The headers of the tus 1.0.0 protocol, read: versions and extensions,
C{Upload-Metadata}, C{Upload-Checksum}, byte counts, and what a request
declares in all (which the proxy checks too).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError
from streamrelay.streaming import RequestBody

TUS_VERSION = b"1.0.0"
EXTENSIONS = (
    b"creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,"
    b"concatenation"
)
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OFFSET_STREAM = b"application/offset+octet-stream"


def badRequest(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def parseMetadata(value: str) -> dict[str, bytes]:
    """
    The pairs of an C{Upload-Metadata} header (C{key base64value}, comma
    separated, value optional); L{ValueError} when malformed.
    """
    result: dict[str, bytes] = {}
    if not value.strip():
        return result
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise ValueError(f"malformed pair {pair.strip()!r}")
        key = parts[0]
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        try:
            result[key] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except binascii.Error:
            raise ValueError(f"the value of {key!r} is not base64") from None
    return result


def parseChecksum(value: bytes) -> tuple[str, bytes]:
    """The algorithm and digest of an C{Upload-Checksum} header."""
    try:
        algorithm, encoded = value.decode("ascii").strip().split(" ")
        digest = base64.b64decode(encoded, validate=True)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise badRequest("Upload-Checksum is 'ALGORITHM BASE64DIGEST'.") from None
    if algorithm not in CHECKSUMS:
        raise badRequest(
            f"Upload-Checksum algorithm {algorithm!r} is not supported "
            f"(Tus-Checksum-Algorithm: {', '.join(CHECKSUMS)})."
        )
    return algorithm, digest


def count(request: IRequest, header: bytes) -> int | None:
    value = request.getHeader(header)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 19:
        raise badRequest(f"{header.decode().title()} is a whole number of bytes.")
    return int(value)


def exceedsMaxSize(request: IRequest, maxSize: int | None) -> bool:
    """
    Whether a tus request declares more than C{maxSize} bytes in all (its
    C{Upload-Length}, or C{Upload-Offset} plus its body): what a proxy can
    refuse before any byte is forwarded.
    """
    if maxSize is None:
        return False
    try:
        length = count(request, b"upload-length")
        offset = count(request, b"upload-offset")
    except ApiError:
        return False  # the backend answers what is wrong
    body = requestBody(request)
    declared = body.declaredLength if body is not None else 0
    return (length is not None and length > maxSize) or (
        offset is not None and declared is not None and offset + declared > maxSize
    )


def httpDate(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")


def requestBody(request: IRequest) -> RequestBody | None:
    return getattr(request, "body", None)


def contentType(request: IRequest) -> bytes:
    value = request.getHeader(b"content-type") or b""
    return value.split(b";")[0].strip().lower()


def wantsJSON(request: IRequest) -> bool:
    """
    Whether a C{GET} of an upload asks for streamrelay's JSON rather than
    the file's bytes: its C{Accept} names C{application/json} and no
    wildcard (axios, for one, sends C{application/json, text/plain, */*}).
    """
    accept = (request.getHeader(b"accept") or b"").lower()
    types = {item.split(b";")[0].strip() for item in accept.split(b",")}
    return b"application/json" in types and not types & {b"*/*", b"application/*"}


def checksumOf(request: IRequest) -> tuple[str, bytes] | None:
    value = request.getHeader(b"upload-checksum")
    return None if value is None else parseChecksum(value)
