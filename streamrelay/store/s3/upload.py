"""
One new version of a file, streamed into S3.

A body smaller than a part is kept in memory and stored with one PutObject
at commit.  A larger one goes into a multipart upload at a hidden staging
key, parts sent as they fill, C{partsInFlight} of the store at a time:
while that many are in flight, the next part is hashed (for its signature)
as soon as it is full and the request body is paused, so about
C{partsInFlight + 1} parts are in memory at most.

At commit the upload is completed and the staging object is copied under
its name with the SHA-256 in its metadata.  (Metadata can only be set when
an object is created, and the SHA-256 is known only at the end.)  So the
file appears under its name whole, verified and with its digest, at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from streamrelay.store.interfaces import FileInfo, IUpload, StorageFull
from streamrelay.store.metadata import s3Headers
from streamrelay.store.s3.client import SHA256_META
from streamrelay.store.s3.interfaces import IS3Client, started
from streamrelay.store.s3.messages import S3Error
from streamrelay.store.s3.publishing import (
    MAX_PARTS,
    Digests,
    ProducerHolder,
    S3Publisher,
    UploadFailed,
    partTarget,
    storeError,
)


@dataclass
class UploadContext:
    """What the uploads into an S3 store work with, shared by all of them."""

    client: IS3Client
    publisher: S3Publisher
    digests: Digests
    #: Bytes of the first parts (see L{partTarget}), and parts sent at once.
    partSize: int
    partsInFlight: int

@dataclass
class _Part:
    number: int
    chunks: list[bytes]
    payload: Deferred[str]


@implementer(IUpload)
class S3Upload(ProducerHolder):
    """
    A file being streamed into an L{S3Store}: stored as C{key} at commit,
    staged (when larger than a part) as C{staging}.
    """

    _log = Logger()

    def __init__(
        self,
        context: UploadContext,
        name: str,
        key: str,
        staging: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.metadata = dict(metadata) if metadata else None
        self.size = 0
        self._context = context
        self._publisher = context.publisher
        self._client = context.client
        self._key = key
        self._staging = staging
        self._chunks: list[bytes] = []
        self._filled = 0
        self._creation: Deferred[None] | None = None
        self._idWaiters: list[Deferred[str]] = []
        self._uploadId: str | None = None
        self._cut = 0
        self._sending: list[Deferred[None]] = []
        self._ready: _Part | None = None
        self._parts: list[tuple[int, str]] = []
        self._completed = False
        self._failure: Failure | None = None
        self._closed = False
        self._aborted = False


    def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError(f"upload of {self.name!r} is closed")
        if self._failure is not None:
            raise storeError(self._failure.value) from self._failure.value
        if not isinstance(data, bytes):
            data = bytes(data)
        self._chunks.append(data)
        self._filled += len(data)
        self.size += len(data)
        if self._partFull():
            if self._canSend():
                self._send(self._cutPart())
            else:
                if self._ready is None:
                    # Hashed while the parts before it are sent.
                    self._ready = self._cutPart()
                self._pause()

    # Parts

    def _partFull(self) -> bool:
        return self._filled >= partTarget(self._context.partSize, self._cut + 1)

    def _takeChunks(self) -> list[bytes]:
        chunks, self._chunks, self._filled = self._chunks, [], 0
        return chunks

    def _cutPart(self) -> _Part:
        """The bytes received so far, as the next part, its payload hash under way."""
        self._cut += 1
        chunks = self._takeChunks()
        return _Part(self._cut, chunks, self._client.payloadHash(chunks))

    def _multipartUpload(self) -> Deferred[str]:
        """
        The id of the multipart upload, created on first use.  Cancelling
        the wait leaves the creation going, so that an abort still learns
        the id it must abort.
        """
        waiter: Deferred[str] = Deferred()
        if self._uploadId is not None:
            waiter.callback(self._uploadId)
            return waiter
        if self._creation is not None and self._creation.called:
            # It failed (else the id would be known).
            waiter.errback(UploadFailed("the multipart upload could not be created"))
            return waiter
        self._idWaiters.append(waiter)
        if self._creation is None:
            self._publisher.started(self._staging)
            creation: Deferred[str] = started(self._client.createUpload(self._staging))
            self._creation = creation.addCallbacks(self._created, self._notCreated)
        return waiter

    def _created(self, uploadId: str) -> None:
        self._uploadId = uploadId
        waiters, self._idWaiters = self._idWaiters, []
        for waiter in waiters:
            waiter.callback(uploadId)  # ignored by a cancelled one

    def _notCreated(self, failure: Failure) -> None:
        waiters, self._idWaiters = self._idWaiters, []
        for waiter in waiters:
            waiter.errback(failure)

    def _canSend(self) -> bool:
        return len(self._sending) < self._context.partsInFlight

    def _send(self, part: _Part) -> None:
        sending = Deferred.fromCoroutine(self._uploadPart(part))
        self._sending.append(sending)
        sending.addCallbacks(
            self._partSent, self._partFailed, callbackArgs=(sending,), errbackArgs=(sending,)
        )

    async def _uploadPart(self, part: _Part) -> None:
        if part.number > MAX_PARTS:
            raise S3Error(400, "TooManyParts", f"over {MAX_PARTS} parts", self._key)
        uploadId = await self._multipartUpload()
        payload = await part.payload
        etag = await self._client.uploadPart(
            self._staging, uploadId, part.number, part.chunks, payload
        )
        self._parts.append((part.number, etag))

    def _forget(self, sending: Deferred[None]) -> None:
        if sending in self._sending:  # not after a clean-up
            self._sending.remove(sending)

    def _partSent(self, _: object, sending: Deferred[None]) -> None:
        self._forget(sending)
        if self._closed:
            return
        if self._ready is not None:
            part, self._ready = self._ready, None
            self._send(part)
        if self._partFull():
            if self._canSend():
                self._send(self._cutPart())
            else:
                self._ready = self._cutPart()
        if self._ready is None:
            self._resume()

    def _partFailed(self, failure: Failure, sending: Deferred[None]) -> None:
        self._forget(sending)
        if not failure.check(CancelledError):
            self._fail(failure)

    def _fail(self, failure: Failure) -> None:
        # Kept (to fail the body's next write) without its frames: they
        # hold the part that failed, and this upload, in a cycle.
        failure.cleanFailure()
        if self._failure is None:
            self._failure = failure
            self._log.warn(
                "S3 upload of {name!r} failed: {error}", name=self.name, error=failure.value
            )
        self._chunks, self._filled = [], 0
        # The body's next write raises, which ends the request.
        self._resume()

    # IUpload

    def commit(self, sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        if self._closed:
            raise RuntimeError(f"upload of {self.name!r} is closed")
        self._closed = True
        self._resume()
        work = Deferred.fromCoroutine(self._commit(sha256.lower()))
        # Cancelling the commit does not interrupt it: abort() says whether
        # what it stores is kept, as long as that is not yet done.
        result: Deferred[tuple[FileInfo, bool]] = Deferred()
        work.chainDeferred(result)
        return result

    async def _commit(self, sha256: str) -> tuple[FileInfo, bool]:
        publisher, client = self._publisher, self._client
        try:
            while self._sending:
                await self._sending[0]
            self._checkAlive()
            if self._cut == 0:
                before = await client.head(self._key)
                self._checkAlive()
                await client.put(self._key, self._takeChunks(), sha256, self.metadata)
            else:
                if self._ready is not None:
                    part, self._ready = self._ready, None
                    await self._uploadPart(part)
                if self._filled:
                    await self._uploadPart(self._cutPart())
                self._checkAlive()
                uploadId = await self._multipartUpload()
                await client.complete(self._staging, uploadId, sorted(self._parts))
                self._completed = True
                publisher.finished(self._staging)
                staged = await client.head(self._staging)
                if staged is None or staged.size != self.size:
                    raise S3Error(500, "BadCompletion", "the completed upload is not as sent")
                before = await client.head(self._key)
                self._checkAlive()
                await publisher.publish(
                    self._staging, staged, self._key,
                    {SHA256_META: sha256, **s3Headers(self.metadata)},
                )
                publisher.removeLater(self._staging)
        except S3Error as e:
            self._cleanUp()
            full = storeError(e)
            if isinstance(full, StorageFull):
                raise full from e
            raise
        except BaseException:
            self._cleanUp()
            raise
        head = await client.head(self._key)
        if (
            head is None or head.size != self.size or head.sha256 != sha256
            or head.metadata != self.metadata
        ):
            raise S3Error(500, "Replaced", f"{self._key!r} changed as it was stored")
        return self._context.digests.fileInfo(self.name, self._key, head), before is not None

    def _checkAlive(self) -> None:
        if self._failure is not None:
            raise storeError(self._failure.value) from self._failure.value
        if self._aborted:
            raise CancelledError()

    def abort(self) -> None:
        """
        Throw it all away: the part in flight is cancelled and the multipart
        upload aborted, in the background.  During a commit, the commit
        stops at its next step, unless the file is already in place.
        """
        if self._aborted:
            return
        self._aborted = True
        if not self._closed:
            self._closed = True
            self._cleanUp()

    def _cleanUp(self) -> None:
        self._chunks, self._filled = [], 0
        self._ready = None
        sending, self._sending = self._sending, []
        for part in sending:
            part.cancel()
        if self._completed:
            self._publisher.removeLater(self._staging)
        elif self._creation is not None:
            uploadId: Deferred[str | None] = Deferred()
            # Fires once the creation did, whatever its outcome.
            self._creation.addBoth(lambda _: uploadId.callback(self._uploadId))
            self._publisher.abortLater(self._staging, uploadId)
