"""
An S3 bucket in memory behind L{IS3Client}: what the store contract runs
the S3 store over without a server.  It answers at once and keeps what S3
would: objects with their metadata and ETags, multipart uploads and their
parts; it checks what S3 checks (payload SHA-256s, C{If-Match} ETags,
conditional writes).

A test can hold an operation (L{MemoryS3.hold}): its calls then wait, and
each takes effect only when the test lets it go (L{MemoryS3.letGo}), so
that two writers can be made to race in a chosen order.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface import implementer

from streamrelay.store.metadata import S3_HEADER, fromS3Header, s3Headers
from streamrelay.store.s3.client import SHA256_META, ObjectHead, Versioned
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import (
    ListedObject,
    ObjectPage,
    PendingUpload,
    PreconditionFailed,
    S3Error,
    UploadPage,
)
from streamrelay.store.s3.signing import UNSIGNED_PAYLOAD, syncSHA256


@dataclass
class StoredObject:
    data: bytes
    etag: str
    modified: float
    metadata: dict[str, str]


@dataclass
class Multipart:
    key: str
    metadata: dict[str, str]
    initiated: float
    parts: dict[int, tuple[bytes, str, float]] = field(default_factory=dict)


class _BodyTransport:
    """What a response body's protocol may pause, resume and stop: nothing to do here."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class MemoryResponse:
    """A C{206} answer whose body is delivered whole, at once."""

    code = 206

    def __init__(self, data: bytes, start: int, end: int, size: int) -> None:
        self._data = data
        self.length = len(data)
        self.headers = Headers(
            {b"content-range": [b"bytes %d-%d/%d" % (start, end - 1, size)]}
        )

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_BodyTransport())
        if self._data:
            protocol.dataReceived(self._data)
        protocol.connectionLost(Failure(ResponseDone()))


def _etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 (S3's ETag, not security)


def _missing(key: str) -> S3Error:
    return S3Error(404, "NoSuchKey", "no such key", key)


@implementer(IS3Client)
class MemoryS3:
    """One bucket, in memory."""

    bucket = "memory"
    endpoint = "http://127.0.0.1:1"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.payloadHash = syncSHA256
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, Multipart] = {}
        #: operation name -> calls waiting to take effect, in order
        self.held: dict[str, list[Callable[[], object]]] = {}
        #: operations held: their calls wait for L{letGo}
        self._holding: set[str] = set()
        #: operation name -> an error its next call fails with (once)
        self.failNext: dict[str, Exception] = {}

    # Holding operations, for races

    def hold(self, *operations: str) -> None:
        """From now on, calls of C{operations} wait for L{letGo}."""
        self._holding.update(operations)

    def unhold(self, *operations: str) -> None:
        """Calls of C{operations} take effect at once again (held ones still wait)."""
        self._holding.difference_update(operations)

    def letGo(self, operation: str, index: int = 0) -> None:
        """The waiting call C{index} of C{operation} (the oldest: 0) takes effect and answers."""
        waiting = self.held.get(operation, [])
        if len(waiting) <= index:
            raise AssertionError(f"no {operation} call {index} is held")
        waiting.pop(index)()

    def _run(self, operation: str, action: Callable[[], object]) -> Deferred[Any]:
        def run() -> Deferred[Any]:
            error = self.failNext.pop(operation, None)
            if error is not None:
                return fail(error)
            try:
                return succeed(action())
            except Exception as e:
                return fail(e)

        if operation not in self._holding:
            return run()
        d: Deferred[Any] = Deferred()
        self.held.setdefault(operation, []).append(lambda: run().chainDeferred(d))
        return d

    def _now(self) -> float:
        return float(int(self.clock.seconds()))

    def _object(self, key: str, etag: str | None) -> StoredObject:
        stored = self.objects.get(key)
        if stored is None:
            raise _missing(key)
        if etag is not None and stored.etag != etag:
            raise S3Error(412, "PreconditionFailed", "the ETag differs", key)
        return stored

    def _store(self, key: str, data: bytes, metadata: dict[str, str]) -> str:
        etag = _etag(data)
        self.objects[key] = StoredObject(data, etag, self._now(), dict(metadata))
        return etag

    def _upload(self, key: str, uploadId: str) -> Multipart:
        upload = self.uploads.get(uploadId)
        if upload is None or upload.key != key:
            raise S3Error(404, "NoSuchUpload", "no such upload", key)
        return upload

    # IS3Client

    def bucketReachable(self) -> Deferred[None]:
        return succeed(None)

    def head(self, key: str) -> Deferred[ObjectHead | None]:
        stored = self.objects.get(key)
        if stored is None:
            return succeed(None)
        return succeed(ObjectHead(
            len(stored.data), stored.etag, stored.modified, stored.metadata.get(SHA256_META),
            fromS3Header(stored.metadata.get(S3_HEADER)),
        ))

    def read(self, key: str) -> Deferred[bytes | None]:
        stored = self.objects.get(key)
        return succeed(None if stored is None else stored.data)

    def get(self, key: str, start: int, end: int, etag: str | None) -> Deferred[Any]:
        try:
            stored = self._object(key, etag)
        except S3Error as e:
            return fail(e)
        return succeed(MemoryResponse(stored.data[start:end], start, end, len(stored.data)))

    def put(
        self,
        key: str,
        chunks: Sequence[bytes],
        sha256: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Deferred[str]:
        data = b"".join(chunks)
        if sha256 is None:
            return succeed(self._store(key, data, s3Headers(metadata)))
        if hashlib.sha256(data).hexdigest() != sha256:
            return fail(S3Error(400, "XAmzContentSHA256Mismatch", "", key))
        return succeed(self._store(key, data, {SHA256_META: sha256, **s3Headers(metadata)}))

    def delete(self, key: str) -> Deferred[None]:
        self.objects.pop(key, None)
        return succeed(None)

    def readVersion(self, key: str) -> Deferred[Versioned | None]:
        def read() -> Versioned | None:
            stored = self.objects.get(key)
            return None if stored is None else Versioned(stored.data, stored.etag)

        return self._run("readVersion", read)

    def putIf(
        self,
        key: str,
        chunks: Sequence[bytes],
        sha256: str,
        ifMatch: str | None = None,
        ifNoneMatch: bool = False,
    ) -> Deferred[str]:
        if (ifMatch is None) == (not ifNoneMatch):
            raise ValueError("a conditional put takes exactly one of ifMatch, ifNoneMatch")
        data = b"".join(chunks)

        def put() -> str:
            if hashlib.sha256(data).hexdigest() != sha256:
                raise S3Error(400, "XAmzContentSHA256Mismatch", "", key)
            stored = self.objects.get(key)
            if ifNoneMatch and stored is not None:
                raise PreconditionFailed(412, "PreconditionFailed", "it exists", key)
            if ifMatch is not None and (stored is None or stored.etag != ifMatch.strip('"')):
                raise PreconditionFailed(412, "PreconditionFailed", "the ETag differs", key)
            return self._store(key, data, {SHA256_META: sha256})

        return self._run("putIf", put)

    def deleteIf(self, key: str, ifMatch: str) -> Deferred[None]:
        def delete() -> None:
            stored = self.objects.get(key)
            if stored is None or stored.etag != ifMatch.strip('"'):
                raise PreconditionFailed(412, "PreconditionFailed", "the ETag differs", key)
            del self.objects[key]

        return self._run("deleteIf", delete)

    def copy(
        self, source: str, target: str, sourceETag: str, metadata: dict[str, str]
    ) -> Deferred[str]:
        try:
            stored = self._object(source, sourceETag)
        except S3Error as e:
            return fail(e)
        return succeed(self._store(target, stored.data, metadata))

    def listObjects(
        self, prefix: str, startAfter: str | None = None, continuation: str | None = None,
        maxKeys: int = 1000,
    ) -> Deferred[ObjectPage]:
        after = continuation if continuation is not None else startAfter
        keys = sorted(
            key for key in self.objects
            if key.startswith(prefix) and "/" not in key[len(prefix):]
            and (after is None or key > after)
        )
        page = keys[:maxKeys]
        truncated = len(keys) > maxKeys
        return succeed(ObjectPage(
            [
                ListedObject(
                    key, len(self.objects[key].data), f'"{self.objects[key].etag}"',
                    self.objects[key].modified,
                )
                for key in page
            ],
            truncated,
            page[-1] if truncated else None,
        ))

    def createUpload(self, key: str, metadata: dict[str, str] | None = None) -> Deferred[str]:
        uploadId = secrets.token_hex(8)
        self.uploads[uploadId] = Multipart(key, dict(metadata or {}), self._now())
        return succeed(uploadId)

    def uploadPart(
        self, key: str, uploadId: str, number: int, chunks: Sequence[bytes],
        payload: str | None = None,
    ) -> Deferred[str]:
        data = b"".join(chunks)
        if payload not in (None, UNSIGNED_PAYLOAD) and hashlib.sha256(data).hexdigest() != payload:
            return fail(S3Error(400, "XAmzContentSHA256Mismatch", "", key))
        try:
            upload = self._upload(key, uploadId)
        except S3Error as e:
            return fail(e)
        etag = _etag(data)
        upload.parts[number] = (data, etag, self._now())
        return succeed(f'"{etag}"')

    def copyPart(
        self, source: str, sourceETag: str, key: str, uploadId: str, number: int,
        start: int, end: int,
    ) -> Deferred[str]:
        try:
            stored = self._object(source, sourceETag)
            upload = self._upload(key, uploadId)
        except S3Error as e:
            return fail(e)
        data = stored.data[start:end]
        etag = _etag(data)
        upload.parts[number] = (data, etag, self._now())
        return succeed(f'"{etag}"')

    def complete(self, key: str, uploadId: str, parts: list[tuple[int, str]]) -> Deferred[None]:
        try:
            upload = self._upload(key, uploadId)
        except S3Error as e:
            return fail(e)
        pieces = []
        for number, etag in parts:
            part = upload.parts.get(number)
            if part is None or f'"{part[1]}"' != etag and part[1] != etag:
                return fail(S3Error(400, "InvalidPart", f"part {number}", key))
            pieces.append(part[0])
        del self.uploads[uploadId]
        self._store(key, b"".join(pieces), upload.metadata)
        return succeed(None)

    def abortUpload(self, key: str, uploadId: str) -> Deferred[None]:
        upload = self.uploads.get(uploadId)
        if upload is not None and upload.key == key:
            del self.uploads[uploadId]
        return succeed(None)

    def listUploads(
        self, prefix: str, keyMarker: str | None = None, uploadIdMarker: str | None = None
    ) -> Deferred[UploadPage]:
        pending = sorted(
            (upload.key, uploadId, upload.initiated)
            for uploadId, upload in self.uploads.items()
            if upload.key.startswith(prefix)
        )
        return succeed(UploadPage([PendingUpload(*p) for p in pending], False, None, None))

    def lastPartTime(self, key: str, uploadId: str) -> Deferred[float | None]:
        try:
            upload = self._upload(key, uploadId)
        except S3Error as e:
            return fail(e)
        times = [when for _, _, when in upload.parts.values()]
        return succeed(max(times) if times else None)
