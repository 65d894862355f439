"""
What the S3 store's uploads and the resumable uploads kept in its bucket
share: S3's limits and the part sizes within them, how S3 failures are
reported, the hold on a body's producer, the digests of stored objects,
and publishing staged bytes under a file's key by copies inside S3, with
the background work (aborts, removals) that leaves nothing behind.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IProducer, IPushProducer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from streamrelay.store.interfaces import FileInfo, StorageFull, StorageUnavailable
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import S3Error

if TYPE_CHECKING:
    from streamrelay.store.s3.client import ObjectHead

#: S3's smallest part (but the last) and its largest object copied in one request.
MIN_PART_SIZE = 5 << 20
MAX_COPY_SIZE = 5 << 30
MAX_PARTS = 10000
#: The part size doubles every this many parts, so that 10,000 parts hold
#: as much as 62,000 starting parts (325 GB with 5 MiB parts, 520 GB with 8 MiB).
PARTS_PER_SIZE = 2000


class UploadFailed(Exception):
    """The upload broke earlier (an S3 request failed); nothing was stored."""


#: S3 error codes that mean the store is full (Ceph RGW quotas, for one).
FULL_CODES = {"QuotaExceeded", "InsufficientCapacity", "InsufficientStorage"}


def storeError(error: BaseException | None) -> Exception:
    """
    What a write or commit raises for an S3 failure: L{StorageFull} when
    full, the failure itself when S3 is unavailable.
    """
    if isinstance(error, S3Error) and (error.code in FULL_CODES or error.status == 507):
        return StorageFull(str(error))
    if isinstance(error, StorageUnavailable):
        return error
    return UploadFailed(str(error))


def partTarget(partSize: int, number: int) -> int:
    """How many bytes part C{number} (from 1) collects before it is sent."""
    return partSize << ((number - 1) // PARTS_PER_SIZE)


#: Parts of a multipart copy: their smallest size, and how many are copied at once.
COPY_PART_SIZE = 1 << 30
COPY_CONCURRENCY = 4
#: Digests remembered by (key, ETag).
REMEMBERED = 20000


class ProducerHolder:
    """
    A consumer's hold on the push producer writing to it: paused while the
    consumer cannot take more, resumed (once) when it can.
    """

    def __init__(self) -> None:
        self._producer: IPushProducer | None = None
        self._paused = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer if IPushProducer.providedBy(producer) else None

    def unregisterProducer(self) -> None:
        self._resume()
        self._producer = None

    def _pause(self) -> None:
        if self._producer is not None and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def _resume(self) -> None:
        if self._producer is not None and self._paused:
            self._paused = False
            self._producer.resumeProducing()


class Digests:
    """
    The SHA-256s (and metadata) of objects, remembered by (key, S3 ETag):
    listings name objects without their metadata, so what was seen once is
    not asked again.
    """

    def __init__(self, size: int = REMEMBERED) -> None:
        self._size = size
        self._known: OrderedDict[tuple[str, str], tuple[str, dict[str, str] | None]] = (
            OrderedDict()
        )

    def get(self, key: str, etag: str) -> str | None:
        known = self._known.get((key, etag))
        return None if known is None else known[0]

    def metadata(self, key: str, etag: str) -> dict[str, str] | None:
        known = self._known.get((key, etag))
        return None if known is None else known[1]

    def remember(
        self, key: str, etag: str, sha256: str, metadata: dict[str, str] | None = None
    ) -> None:
        self._known[(key, etag)] = (sha256, metadata)
        self._known.move_to_end((key, etag))
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    def fileInfo(self, name: str, key: str, head: ObjectHead) -> FileInfo:
        """The info of an object that carries its SHA-256; remembered."""
        assert head.sha256 is not None
        self.remember(key, head.etag, head.sha256, head.metadata)
        return FileInfo(name, head.size, head.sha256, head.modified, head.metadata)


@dataclass(frozen=True)
class CopySource:
    """Bytes C{start} to C{end} (exclusive) of the object C{key}, if still C{etag}."""

    key: str
    etag: str
    start: int
    end: int


class S3Publisher:
    """
    Puts staged bytes in place under a key, and does the background work
    that leaves nothing behind in the bucket.

    @ivar live: keys of staging objects and multipart uploads in progress
        here, which sweeping must leave alone.
    @param copyLimit: the largest object copied with one CopyObject; a
        larger one is copied as the parts of a multipart upload, each of at
        least C{copyPartSize} bytes.
    """

    _log = Logger()

    def __init__(
        self, client: IS3Client, copyLimit: int = MAX_COPY_SIZE,
        copyPartSize: int = COPY_PART_SIZE,
    ) -> None:
        self.client = client
        self.clock = client.clock
        self.copyLimit = copyLimit
        self.copyPartSize = copyPartSize
        self.live: set[str] = set()
        self._background: set[Deferred[Any]] = set()

    def started(self, key: str) -> None:
        self.live.add(key)

    def finished(self, key: str) -> None:
        self.live.discard(key)

    async def publish(
        self, source: str, staged: ObjectHead, key: str, metadata: dict[str, str]
    ) -> None:
        """
        Copy the completed staging object C{source} to C{key} with
        C{metadata}: one CopyObject up to 5 GiB, a multipart copy above.
        """
        if staged.size <= self.copyLimit:
            await self.client.copy(source, key, staged.etag, metadata)
            return
        partSize = max(self.copyPartSize, -(-staged.size // MAX_PARTS))
        await self.copyParts(key, metadata, [
            CopySource(source, staged.etag, start, min(start + partSize, staged.size))
            for start in range(0, staged.size, partSize)
        ])

    async def copyParts(
        self, key: str, metadata: dict[str, str], sources: Sequence[CopySource]
    ) -> None:
        """
        Make C{key}, with C{metadata}, of C{sources} in order, copied inside
        S3 as the parts of one multipart upload, a few at a time.  On any
        failure the multipart upload is aborted.
        """
        self.live.add(key)
        uploadId = await self.client.createUpload(key, metadata)
        try:
            semaphore = DeferredSemaphore(COPY_CONCURRENCY)

            def copyPart(number: int, piece: CopySource) -> Deferred[tuple[int, str]]:
                async def copy() -> tuple[int, str]:
                    etag = await self.client.copyPart(
                        piece.key, piece.etag, key, uploadId, number, piece.start, piece.end
                    )
                    return number, etag

                return Deferred.fromCoroutine(copy())

            parts = await gatherResults(
                [semaphore.run(copyPart, n, piece) for n, piece in enumerate(sources, 1)],
                consumeErrors=True,
            )
            await self.client.complete(key, uploadId, sorted(parts))
        except BaseException:
            done: Deferred[str | None] = Deferred()
            done.callback(uploadId)
            self.abortLater(key, done)
            raise
        finally:
            self.live.discard(key)

    def abortLater(self, key: str, uploadId: Deferred[str | None]) -> None:
        """
        Abort a multipart upload once its id is known, in the background,
        until S3 no longer knows it (a part still in flight can outlive
        one abort).
        """

        async def abort() -> None:
            try:
                upload = await uploadId
                if upload is None:
                    return
                for _attempt in range(5):
                    await self.client.abortUpload(key, upload)
                    try:
                        await self.client.lastPartTime(key, upload)
                    except S3Error as e:
                        if e.status == 404:
                            return
                        raise
                    await deferLater(self.clock, 1.0)
                self._log.warn("S3 upload {key!r} still there after 5 aborts", key=key)
            finally:
                self.finished(key)

        self.background(f"aborting the multipart upload of {key!r}", abort)

    def removeLater(self, key: str) -> None:
        self.background(f"removing {key!r}", lambda: self.client.delete(key))

    def background(self, what: str, work: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            try:
                await work()
            except Exception as e:
                self._log.warn("S3: {what} failed: {error}", what=what, error=str(e) or repr(e))

        d = Deferred.fromCoroutine(run())
        if not d.called:
            self._background.add(d)
            d.addBoth(lambda _: self._background.discard(d))

    def settled(self, timeout: float | None = None) -> Deferred[None]:
        """
        Fires once the background work running now (aborts, removals) is
        done, or after C{timeout} seconds.
        """
        done: Deferred[None] = Deferred()

        def fire(_: object = None) -> None:
            if not done.called:
                done.callback(None)

        gatherResults(list(self._background)).addBoth(fire)
        if timeout is not None and not done.called:
            call = self.clock.callLater(timeout, fire)

            def stopTimer(result: object) -> object:
                if call.active():
                    call.cancel()
                return result

            done.addBoth(stopTimer)
        return done
