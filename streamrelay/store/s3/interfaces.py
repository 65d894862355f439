"""
The S3 operations the S3 store and the resumable uploads kept in its bucket
rely on: what L{streamrelay.store.s3.client.S3Client} does over HTTP, and
what a test's fake does in memory (checked with C{verifyObject}, so the two
cannot drift).  Model: tusd's C{S3API}.

Each operation returns an awaitable: the real client's are coroutines, a
fake's may be Deferreds.  Errors are L{S3Error}s (L{S3Unavailable} once
retries are spent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IResponse
from zope.interface import Attribute, Interface

from streamrelay.store.s3.messages import ObjectPage, UploadPage

if TYPE_CHECKING:
    from streamrelay.store.s3.client import ObjectHead, Versioned

T = TypeVar("T")


class IS3Client(Interface):
    """One bucket of an S3-compatible service."""

    bucket: str = Attribute("The bucket's name.")
    endpoint: str = Attribute("The service's URL, for messages.")
    clock: IReactorTime = Attribute("Times requests, backoffs and the store's sweeps.")
    payloadHash: Callable[[Sequence[bytes]], Deferred[str]] = Attribute(
        "The payload hash signed for a body without a known digest: its SHA-256 "
        "(hex), or UNSIGNED-PAYLOAD where S3 need not check it."
    )

    # The bucket

    def bucketReachable() -> Awaitable[None]:
        """Fails unless the bucket answers."""

    # Objects

    def head(key: str) -> Awaitable[ObjectHead | None]:
        """The L{ObjectHead} of C{key}, or L{None} when there is none."""

    def read(key: str) -> Awaitable[bytes | None]:
        """A small object's bytes, read whole; L{None} when there is none."""

    def get(key: str, start: int, end: int, etag: str | None) -> Awaitable[IResponse]:
        """
        Bytes C{start} to C{end} (exclusive) of C{key}, unread (C{206});
        a 412 L{S3Error} when its ETag is no longer C{etag}.
        """

    def put(
        key: str,
        chunks: Sequence[bytes],
        sha256: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Awaitable[str]:
        """
        Store C{chunks} as C{key}, its SHA-256 and the file's C{metadata}
        (see L{streamrelay.store.metadata.s3Headers}) in its object
        metadata; its ETag.  Without a SHA-256 the object keeps none and
        is signed with L{payloadHash}'s hash.
        """

    def delete(key: str) -> Awaitable[None]:
        """Remove C{key}; none there is fine."""

    # Conditional writes (see docs/s3.md for what Ceph RGW honours)

    def readVersion(key: str) -> Awaitable[Versioned | None]:
        """A small object's bytes and ETag, read whole; L{None} when there is none."""

    def putIf(
        key: str,
        chunks: Sequence[bytes],
        sha256: str,
        ifMatch: str | None = None,
        ifNoneMatch: bool = False,
    ) -> Awaitable[str]:
        """
        Store C{chunks} as C{key} (as L{put}, without file metadata) only if
        it does not exist yet (C{ifNoneMatch}: C{If-None-Match: *}) or its
        ETag is still C{ifMatch} (C{If-Match}); its new ETag.  Fails with
        L{PreconditionFailed} otherwise, or when another write raced it.
        """

    def deleteIf(key: str, ifMatch: str) -> Awaitable[None]:
        """
        Remove C{key} only if its ETag is C{ifMatch}; L{PreconditionFailed}
        otherwise.  Some servers ignore the condition (Ceph RGW 16 does,
        and deletes whatever is there): callers must not rely on it there.
        """

    def copy(
        source: str, target: str, sourceETag: str, metadata: dict[str, str]
    ) -> Awaitable[str]:
        """Copy C{source} (if still C{sourceETag}) to C{target} with new metadata."""

    def listObjects(
        prefix: str,
        startAfter: str | None = None,
        continuation: str | None = None,
        maxKeys: int = 1000,
    ) -> Awaitable[ObjectPage]:
        """One page of the keys under C{prefix}, not below a further C{/}."""

    # Multipart uploads

    def createUpload(key: str, metadata: dict[str, str] | None = None) -> Awaitable[str]:
        """Start a multipart upload of C{key}; its id."""

    def uploadPart(
        key: str, uploadId: str, number: int, chunks: Sequence[bytes],
        payload: str | None = None,
    ) -> Awaitable[str]:
        """Send part C{number} signed with C{payload} (L{payloadHash}'s by default); its ETag."""

    def copyPart(
        source: str, sourceETag: str, key: str, uploadId: str, number: int,
        start: int, end: int,
    ) -> Awaitable[str]:
        """Make part C{number} of bytes C{start} to C{end} of C{source}; its ETag."""

    def complete(key: str, uploadId: str, parts: list[tuple[int, str]]) -> Awaitable[None]:
        """Complete a multipart upload of the parts (number, ETag) given."""

    def abortUpload(key: str, uploadId: str) -> Awaitable[None]:
        """Abort a multipart upload; one S3 no longer knows is fine."""

    def listUploads(
        prefix: str, keyMarker: str | None = None, uploadIdMarker: str | None = None
    ) -> Awaitable[UploadPage]:
        """One page of the multipart uploads under C{prefix}."""

    def lastPartTime(key: str, uploadId: str) -> Awaitable[float | None]:
        """When the newest part of an upload arrived; L{None} without parts."""


def started(operation: Awaitable[T]) -> Deferred[T]:
    """
    An operation of an L{IS3Client} as a Deferred (cancelling it cancels
    the request), for what waits on it from outside a coroutine.
    """
    if isinstance(operation, Deferred):
        return operation
    return ensureDeferred(cast(Coroutine[Any, Any, T], operation))
