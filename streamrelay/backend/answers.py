"""
How the HTTP API describes a stored file: its JSON (times in RFC 3339) and
its headers.  Stores only say what a file is; this says how it is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.web.iweb import IRequest

from streamrelay.digests import reprDigest
from streamrelay.store import FileInfo


def fileJSON(info: FileInfo) -> dict[str, Any]:
    """A stored file as the API answers it."""
    answer: dict[str, Any] = {
        "name": info.name,
        "size": info.size,
        "sha256": info.sha256,
        "modified": rfc3339(info.modified),
    }
    if info.metadata:
        answer["metadata"] = dict(info.metadata)
    return answer


def rfc3339(timestamp: float) -> str:
    when = datetime.fromtimestamp(timestamp, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fileHeaders(request: IRequest, info: FileInfo) -> None:
    """The headers that describe a stored file, on any answer about it."""
    request.setHeader(b"etag", etag(info))
    request.setHeader(b"repr-digest", reprDigest(info.sha256))
    request.setHeader(b"location", location(info.name))


def etag(info: FileInfo) -> bytes:
    return b'"' + info.sha256.encode("ascii") + b'"'


def location(name: str) -> bytes:
    return b"/files/" + quote(name, safe="").encode("ascii")
