"""
The seam between the tus protocol and where resumable uploads are kept.

A resumable upload is a state record (L{ResumableUpload}) and the bytes
received so far.  Bytes are appended at the record's offset through an
L{IPartialWriter}; the record only moves forward once what it counts is on
stable storage.  Once complete, the bytes are published into an
L{IUploadStore} under the upload's file name.  Protocol rules (offsets,
locks, checksums, limits) are the protocol layer's business.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import Attribute, Interface

from streamrelay.store import FileInfo, IUploadStore

#: What an upload id looks like (C{secrets.token_hex(16)}); anything else
#: names no upload, in any resumable store.
ID_PATTERN = re.compile(r"[0-9a-f]{32}")

#: L{ResumableUpload.concat} of a partial upload, and of a final one.
PARTIAL = "partial"
FINAL = "final"


@dataclass
class ResumableUpload:
    """
    The state of one resumable upload, as kept across restarts.

    @ivar length: the total size, or L{None} while deferred.
    @ivar offset: bytes received and flushed to stable storage.
    @ivar metadata: the C{Upload-Metadata} header as the client sent it.
    @ivar name: the name the file takes once complete.
    @ivar expires: POSIX time after which an unfinished upload is removed.
    @ivar stored: the stored file's JSON once published, with
        C{"replaced"}; L{None} before.
    @ivar fileMetadata: what the file keeps once published (a
        C{pre-create} hook's metadata), or L{None}.
    @ivar maxSize: the most bytes this upload may hold (a C{pre-create}
        hook's limit), or L{None} for the backend's own.
    @ivar concat: L{PARTIAL} for a partial upload (tus concatenation: it
        never becomes a file), L{FINAL} for the upload made of partial
        ones, L{None} for any other.
    @ivar parts: a final upload's partial uploads (their ids), in order.
    """

    id: str
    length: int | None
    offset: int
    metadata: str
    name: str
    created: float
    expires: float
    stored: dict[str, Any] | None = None
    fileMetadata: dict[str, str] | None = None
    maxSize: int | None = None
    concat: str | None = None
    parts: list[str] | None = None

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length

    @property
    def partial(self) -> bool:
        """Whether this is a partial upload, which is never published."""
        return self.concat == PARTIAL

    def asJSON(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> ResumableUpload:
        return cls(
            id=str(data["id"]),
            length=None if data["length"] is None else int(data["length"]),
            offset=int(data["offset"]),
            metadata=str(data["metadata"]),
            name=str(data["name"]),
            created=float(data["created"]),
            expires=float(data["expires"]),
            stored=data.get("stored"),
            fileMetadata=_metadata(data.get("fileMetadata")),
            maxSize=None if data.get("maxSize") is None else int(data["maxSize"]),
            concat=_concat(data.get("concat")),
            parts=_parts(data.get("parts")),
        )


def _concat(value: Any) -> str | None:
    if value is None:
        return None
    if value not in (PARTIAL, FINAL):
        raise ValueError(f"not a concatenation: {value!r}")
    return str(value)


def _parts(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, str) and ID_PATTERN.fullmatch(v) for v in value
    ):
        raise ValueError("not a list of upload ids")
    return list(value)


def _metadata(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()} or None


class IPartialWriter(IConsumer):
    """
    Appends bytes to an upload's partial data, from the offset it was
    opened at; a store that cannot keep up pauses the registered producer.
    """

    start: int = Attribute("The offset the writer was opened at.")

    def written() -> int:
        """Bytes known to be written since C{start} (not yet flushed)."""

    def flush() -> Deferred[int]:
        """
        Make every byte written so far durable, waiting for queued writes;
        fires with how many bytes since C{start} are now on stable storage.
        """

    def checkpoint() -> Deferred[int]:
        """
        Make durable what is already written, without waiting for queued
        writes; fires with how many bytes since C{start} that covers.
        """

    def truncate() -> Deferred[None]:
        """Drop everything written through this writer (back to C{start})."""

    def close() -> None:
        """Release the writer; queued writes are dropped."""


class IResumableStore(Interface):
    """
    Resumable uploads: their state and their partial bytes, and the store
    they are published into once complete.
    """

    store: IUploadStore = Attribute(
        "The store complete uploads become files of (see L{publish})."
    )

    def create(upload: ResumableUpload) -> Deferred[None]:
        """Keep a new upload with no bytes yet."""

    def load(uploadId: str) -> Deferred[ResumableUpload | None]:
        """The upload called C{uploadId}, or L{None}."""

    def save(upload: ResumableUpload) -> Deferred[None]:
        """Replace an upload's state record, durably and atomically."""

    def ids() -> Deferred[list[str]]:
        """Every upload kept (for sweeping)."""

    def openWriter(upload: ResumableUpload) -> Deferred[IPartialWriter]:
        """
        A writer appending at C{upload.offset}; bytes past that offset (left
        by a crash before the state moved) are dropped first.
        """

    def hashPrefix(upload: ResumableUpload) -> Deferred[hashlib._Hash]:
        """The SHA-256 state of the upload's first C{offset} bytes."""

    def publish(upload: ResumableUpload, sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        """
        Make the complete bytes the file C{upload.name} of L{store},
        atomically, with SHA-256 C{sha256}; whether it replaced one.  The
        partial bytes are gone afterwards.
        """

    def concatenate(
        final: ResumableUpload, partials: Sequence[ResumableUpload]
    ) -> Deferred[hashlib._Hash]:
        """
        Give the new upload C{final} (created, no byte yet) the bytes of
        the complete uploads C{partials}, in order, without changing them;
        fires with the SHA-256 state of those bytes.  The caller then saves
        C{final} with its offset at its length; until then it holds none.
        """

    def remove(uploadId: str) -> Deferred[None]:
        """Forget an upload and its bytes."""
