"""
The draft's header fields, read (structured-field booleans and integers,
the name a creation gives, digests) and its problem details (RFC 9457),
written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from twisted.web.iweb import IRequest

from streamrelay.digests import parseSHA256Digest
from streamrelay.errors import REASONS, ApiError, jsonBytes
from streamrelay.rufh.versions import InteropVersion

PROBLEM_TYPE = b"application/problem+json"
PROBLEMS = "https://iana.org/assignments/http-problem-types#"

_INTEGER = re.compile(rb"[0-9]{1,15}\Z")  # RFC 8941 Integers have at most 15 digits
_FILENAME = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^;\s]+)", re.IGNORECASE)


class Problem(Exception):
    """
    An error answered as a problem (C{application/problem+json}) that also
    carries streamrelay's C{error} and C{message}.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        kind: str | None = None,
        members: dict[str, Any] | None = None,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.kind = kind
        self.members = members or {}
        self.headers = headers or {}

    @classmethod
    def of(cls, error: ApiError) -> Problem:
        return cls(error.status, error.code, error.message, headers=dict(error.headers))

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self.kind is not None:
            document["type"] = PROBLEMS + self.kind
        document["title"] = self.message
        document.update(self.members)
        document["error"] = self.code
        document["message"] = self.message
        return document

    def write(self, request: IRequest) -> bytes:
        for name, value in self.headers.items():
            request.setHeader(name, value)
        body = jsonBytes(self.document())
        request.setResponseCode(self.status, REASONS.get(self.status))
        request.setHeader(b"content-type", PROBLEM_TYPE)
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body


def badRequest(message: str) -> Problem:
    return Problem(400, "bad_request", message)


def offsetMismatch(expected: int, provided: int) -> Problem:
    return Problem(
        409, "offset_mismatch",
        f"The upload is at offset {expected}, not {provided}.",
        "mismatching-upload-offset",
        {"expected-offset": expected, "provided-offset": provided},
        {b"upload-offset": b"%d" % (expected,)},
    )


def completedUpload() -> Problem:
    return Problem(400, "completed_upload", "The upload is complete already.", "completed-upload")


def inconsistentLength(message: str) -> Problem:
    return Problem(400, "inconsistent_length", message, "inconsistent-upload-length")


def sfInteger(request: IRequest, header: bytes) -> int | None:
    """A non-negative sf-integer header, L{None} if absent; 400 if malformed."""
    value = request.getHeader(header)
    if value is None:
        return None
    value = value.strip()
    if not _INTEGER.match(value):
        raise badRequest(f"{header.decode().title()} is a whole number of bytes.")
    return int(value)


def completeness(request: IRequest, version: InteropVersion) -> bool | None:
    """
    Whether the request says it ends the upload (its completeness header,
    an sf-boolean, read for C{version}); L{None} when it says nothing.
    """
    value = request.getHeader(version.completeHeader)
    if value is None:
        return None
    value = value.strip()
    if value not in (b"?0", b"?1"):
        raise badRequest(f"{version.completeHeader.decode().title()} is ?0 or ?1.")
    return (value == b"?1") != version.incompleteHeader


def filenameOf(request: IRequest) -> str | None:
    """The file name of a C{Content-Disposition} header (C{filename*} first)."""
    raw = request.getHeader(b"content-disposition")
    if raw is None:
        return None
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    star = _FILENAME_STAR.search(text)
    if star is not None:
        charset, _, rest = star.group(1).partition("'")
        _, _, encoded = rest.partition("'")
        if charset.lower() == "utf-8" and encoded:
            try:
                return unquote(encoded, encoding="utf-8", errors="strict")
            except UnicodeDecodeError:
                raise badRequest("Content-Disposition's filename* is not UTF-8.") from None
    plain = _FILENAME.search(text)
    if plain is None:
        return None
    value = plain.group(1) if plain.group(1) is not None else plain.group(2)
    return re.sub(r"\\(.)", r"\1", value)


def digestOf(request: IRequest, header: bytes) -> str | None:
    """The hex SHA-256 of a C{Repr-Digest} or C{Content-Digest} header."""
    values = request.requestHeaders.getRawHeaders(header)
    if not values:
        return None
    try:
        return parseSHA256Digest(b", ".join(values).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise badRequest(f"The {header.decode().title()} header is malformed.") from None
