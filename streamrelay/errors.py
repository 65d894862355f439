"""
The JSON errors of the HTTP contract, and how they are written.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

JSON_TYPE = b"application/json"

#: Reason phrases for the statuses streamrelay answers that twisted.web does
#: not name (it would send "Unknown Status"): the resumable-upload draft's
#: interim 104, RFC 4918's 423, RFC 6585's 431 and tus's 460.
REASONS: dict[int, bytes] = {
    104: b"Upload Resumption Supported",
    423: b"Locked",
    431: b"Request Header Fields Too Large",
    460: b"Checksum Mismatch",
}


class ApiError(Exception):
    """
    An error answered as C{{"error": code, "message": message}}.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def jsonBytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def writeJSON(request: IRequest, status: int, obj: Any) -> bytes:
    """
    Set the status and JSON headers of C{request}; return the body to send.
    """
    body = jsonBytes(obj)
    request.setResponseCode(status, REASONS.get(status))
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return body


def writeError(request: IRequest, error: ApiError) -> bytes:
    for name, value in error.headers.items():
        request.setHeader(name, value)
    return writeJSON(request, error.status, {"error": error.code, "message": error.message})


def badName(message: str) -> ApiError:
    return ApiError(400, "bad_name", message)


def notFound(message: str = "No such resource.") -> ApiError:
    return ApiError(404, "not_found", message)


def tooLarge(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"The body is larger than the limit of {limit} bytes.")


def bodyTimeout(error: Exception) -> ApiError:
    return ApiError(408, "timeout", f"The upload stalled: {error}; nothing was stored.")


def patchTimeout(error: Exception, checksummed: bool) -> ApiError:
    """
    A resumable upload's C{PATCH} that stalled: the upload keeps what
    arrived of it, unless it carried C{Upload-Checksum}.
    """
    kept = (
        "none of this PATCH's bytes were kept (its checksum cannot be verified)"
        if checksummed else "the upload keeps the bytes of this PATCH that reached the backend"
    )
    return ApiError(
        408, "timeout",
        f"The upload stalled: {error}; {kept}. HEAD gives the offset to resume from.",
    )


def storageUnavailable(error: Exception) -> ApiError:
    return ApiError(
        503, "storage_unavailable",
        f"The storage is unavailable: {error}. Nothing was stored; try again.",
        {b"retry-after": b"5"},
    )
