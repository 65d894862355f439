"""
The S3 store: files as objects C{<prefix><name>} of one bucket, shared by
any number of backends.

Each object keeps its SHA-256 in its metadata (C{x-amz-meta-sha256}), so a
backend answers the same name, size, digest and ETag as the disk store.
Listings name objects without their metadata: digests already seen are
remembered by (key, S3 ETag), the others are read with HEAD.  The store's
own objects (staging objects of uploads in progress) live under
C{<prefix>.streamrelay/}, which no file name can reach.
"""

from __future__ import annotations

import builtins
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from streamrelay.names import isValidName
from streamrelay.store.interfaces import FileInfo, IStoredFile, IUploadStore
from streamrelay.store.s3.client import ObjectHead, S3Client, unquoteETag
from streamrelay.store.s3.messages import ListedObject, S3Error
from streamrelay.store.s3.upload import MAX_COPY_SIZE, MAX_PARTS, S3Upload

#: Where the store keeps its own objects, under the prefix.
OWN_FOLDER = ".streamrelay/"
DEFAULT_PART_SIZE = 8 << 20
#: Multipart uploads and staging objects idle this long are an interrupted
#: upload's leftovers, whichever backend started them.
STALE_AFTER = 24 * 3600.0
SWEEP_EVERY = 3600.0
#: How often C{writable} may ask S3 whether the bucket answers.
PROBE_EVERY = 5.0
#: Digests remembered by (key, ETag), and HEAD requests a listing sends at once.
REMEMBERED = 20000
LIST_CONCURRENCY = 16
COPY_PART_SIZE = 1 << 30
COPY_CONCURRENCY = 4


@dataclass(frozen=True)
class CopySource:
    """Bytes C{start} to C{end} (exclusive) of the object C{key}, if still C{etag}."""

    key: str
    etag: str
    start: int
    end: int


class ObjectChanged(Exception):
    """The object was replaced or removed while it was being read."""


_RESPONSE_DONE = Failure(ResponseDone())


@implementer(IPushProducer)
class _ResponsePump(Protocol):
    """
    Writes an S3 response body to a consumer, pausing the S3 connection
    whenever the consumer pauses it.
    """

    def __init__(self, consumer: IConsumer, expected: int) -> None:
        self._consumer = consumer
        self._expected = expected
        self.received = 0
        self._paused = False
        self.stopped = False
        self.request: Deferred[Any] | None = None
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.stopped:
            self.transport.stopProducing()  # type: ignore[union-attr]
        elif self._paused:
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        left = self._expected - self.received
        if len(data) > left:
            data = data[:left]
        self.received += len(data)
        if data:
            self._consumer.write(data)

    def connectionLost(self, reason: Failure = _RESPONSE_DONE) -> None:
        if self.done.called:
            return
        if self.stopped:
            self.done.errback(CancelledError())
        elif self.received == self._expected and reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(
                ObjectChanged(
                    f"the S3 answer ended after {self.received} of {self._expected} bytes: "
                    f"{reason.getErrorMessage()}"
                )
            )

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        elif self.request is not None:
            self.request.cancel()
        if not self.done.called:
            self.done.errback(CancelledError())


@implementer(IStoredFile)
class S3File:
    """
    A stored object opened for reading.  Reads ask for the ETag it had when
    opened (C{If-Match}): if it was replaced meanwhile, reading fails
    rather than mixing versions.
    """

    def __init__(self, client: S3Client, key: str, info: FileInfo, etag: str) -> None:
        self._client = client
        self._key = key
        self._etag = etag
        self.info = info

    def stream(self, start: int, end: int, consumer: IConsumer) -> Deferred[None]:
        pump = _ResponsePump(consumer, end - start)
        consumer.registerProducer(pump, True)

        async def run() -> None:
            try:
                pump.request = ensureDeferred(self._client.get(self._key, start, end, self._etag))
                try:
                    response = await pump.request
                except BaseException:
                    # No body will come: what stopping says there is moot.
                    pump.done.addErrback(lambda _: None)
                    raise
                pump.request = None
                ranges = response.headers.getRawHeaders(b"content-range") or [b""]
                if not ranges[0].startswith(b"bytes %d-" % (start,)):
                    response.deliverBody(Protocol())
                    raise ObjectChanged(f"S3 answered the range {ranges[0]!r}")
                response.deliverBody(pump)
                await pump.done
            except S3Error as e:
                if e.status in (404, 412):
                    raise ObjectChanged(f"{self._key!r} was replaced or removed") from e
                raise
            finally:
                if not pump.stopped:
                    consumer.unregisterProducer()

        work = Deferred.fromCoroutine(run())
        done: Deferred[None] = Deferred(lambda _: pump.stopProducing())
        work.chainDeferred(done)
        return done

    def close(self) -> None:
        pass


@implementer(IConsumer)
class HashSink:
    """A consumer hashing what it is written (SHA-256)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.digest.update(data)


@implementer(IUploadStore)
class S3Store:
    """
    Files kept as objects of one bucket, under C{prefix}.

    @param prefix: the key prefix (C{""} for the whole bucket, or a folder
        such as C{"team/"}).
    @param partSize: bytes per part of a multipart upload (at least 5 MiB);
        about two parts of each upload are in memory at most.
    @param staleAfter: seconds after which an idle multipart upload or
        staging object under the prefix counts as left behind.
    """

    _log = Logger()

    def __init__(
        self,
        client: S3Client,
        prefix: str = "",
        partSize: int = DEFAULT_PART_SIZE,
        staleAfter: float = STALE_AFTER,
        copyLimit: int = MAX_COPY_SIZE,
        copyPartSize: int = COPY_PART_SIZE,
        partsInFlight: int = 1,
    ) -> None:
        if partSize < 5 << 20:
            raise ValueError("S3 parts have at least 5 MiB")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.client = client
        self.clock: IReactorTime = client.clock
        self.prefix = prefix
        self.partSize = partSize
        self.partsInFlight = partsInFlight
        self.staleAfter = staleAfter
        self.copyLimit = copyLimit
        self.copyPartSize = copyPartSize
        self._digests: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._live: set[str] = set()
        self._background: set[Deferred[Any]] = set()
        self._reachable = False
        self._probe: Deferred[None] | None = None
        self._probedAt: float | None = None

    @property
    def description(self) -> str:
        return f"s3://{self.client.bucket}/{self.prefix} at {self.client.endpoint}"

    # Keys

    def key(self, name: str) -> str:
        return self.prefix + name

    def stagingKey(self, token: str) -> str:
        return f"{self.prefix}{OWN_FOLDER}partial/{token}"

    def _name(self, key: str) -> str | None:
        """The file name of C{key}, or L{None} for a key no file name maps to."""
        name = key[len(self.prefix):]
        return name if key.startswith(self.prefix) and isValidName(name) else None

    # Digests

    def remember(self, name: str, head: ObjectHead) -> FileInfo:
        """The info of an object that carries its SHA-256; remembered for listings."""
        assert head.sha256 is not None
        self._remember(self.key(name), head.etag, head.sha256)
        return FileInfo(name, head.size, head.sha256, head.modified)

    def _remember(self, key: str, etag: str, sha256: str) -> None:
        self._digests[(key, etag)] = sha256
        self._digests.move_to_end((key, etag))
        while len(self._digests) > REMEMBERED:
            self._digests.popitem(last=False)

    async def _info(self, name: str, head: ObjectHead) -> FileInfo:
        if head.sha256 is not None:
            return self.remember(name, head)
        key = self.key(name)
        sha256 = self._digests.get((key, head.etag))
        if sha256 is None:
            # Stored by other means: read it once to learn its digest.
            sink = HashSink()
            if head.size:
                reader = S3File(self.client, key, FileInfo(name, head.size, "", 0), head.etag)
                await reader.stream(0, head.size, sink)
            sha256 = sink.digest.hexdigest()
            self._remember(key, head.etag, sha256)
        return FileInfo(name, head.size, sha256, head.modified)

    # IUploadStore

    def begin(self, name: str) -> S3Upload:
        return S3Upload(self, name)

    def stat(self, name: str) -> Deferred[FileInfo | None]:
        async def stat() -> FileInfo | None:
            head = await self.client.head(self.key(name))
            return None if head is None else await self._info(name, head)

        return Deferred.fromCoroutine(stat())

    def open(self, name: str) -> Deferred[IStoredFile | None]:
        async def open() -> IStoredFile | None:
            key = self.key(name)
            head = await self.client.head(key)
            if head is None:
                return None
            return S3File(self.client, key, await self._info(name, head), head.etag)

        return Deferred.fromCoroutine(open())

    def list(self, after: str | None, limit: int) -> Deferred[tuple[list[FileInfo], bool]]:
        return Deferred.fromCoroutine(self._list(after, limit))

    async def _list(
        self, after: str | None, limit: int
    ) -> tuple[builtins.list[FileInfo], bool]:
        found: builtins.list[tuple[str, ListedObject]] = []
        startAfter = self.key(after) if after is not None else None
        token: str | None = None
        while len(found) <= limit:
            page = await self.client.listObjects(
                self.prefix, startAfter=startAfter, continuation=token,
                maxKeys=min(1000, limit + 1 - len(found)),
            )
            for listed in page.objects:
                name = self._name(listed.key)
                if name is not None:
                    found.append((name, listed))
            if not page.truncated:
                break
            token = page.continuation
            if token is None and page.objects:
                startAfter = page.objects[-1].key
        more = len(found) > limit
        semaphore = DeferredSemaphore(LIST_CONCURRENCY)
        infos = await gatherResults(
            [semaphore.run(self._listedInfo, name, listed) for name, listed in found[:limit]],
            consumeErrors=True,
        )
        return [info for info in infos if info is not None], more

    def _listedInfo(self, name: str, listed: ListedObject) -> Deferred[FileInfo | None]:
        async def info() -> FileInfo | None:
            etag = unquoteETag(listed.etag)
            sha256 = self._digests.get((listed.key, etag))
            if sha256 is not None:
                # HEAD answers whole seconds; so does the listing, to agree.
                return FileInfo(name, listed.size, sha256, float(int(listed.modified)))
            head = await self.client.head(listed.key)
            return None if head is None else await self._info(name, head)

        return Deferred.fromCoroutine(info())

    def delete(self, name: str) -> Deferred[bool]:
        async def delete() -> bool:
            key = self.key(name)
            if await self.client.head(key) is None:
                return False
            await self.client.delete(key)
            return True

        return Deferred.fromCoroutine(delete())

    def sweep(self) -> int:
        """
        Start removing what interrupted uploads left behind, now and every
        hour; the count is logged once S3 answered, so 0 is returned.
        """
        self.writable()  # a first probe, so that /readyz soon knows
        self.background("sweeping stale uploads", self.sweepStale)
        self.clock.callLater(SWEEP_EVERY, self.sweep)
        return 0

    async def sweepStale(self) -> int:
        """
        Abort multipart uploads under the prefix, and remove staging
        objects, idle for C{staleAfter} seconds and not this store's own:
        those of other live backends are recent, so they stay.
        """
        cutoff = self.clock.seconds() - self.staleAfter
        count = 0
        keyMarker: str | None = None
        uploadMarker: str | None = None
        while True:
            page = await self.client.listUploads(self.prefix, keyMarker, uploadMarker)
            for pending in page.uploads:
                if pending.key in self._live or pending.initiated > cutoff:
                    continue
                try:
                    last = await self.client.lastPartTime(pending.key, pending.uploadId)
                except S3Error as e:
                    if e.status == 404:
                        continue
                    raise
                if last is not None and last > cutoff:
                    continue
                await self.client.abortUpload(pending.key, pending.uploadId)
                count += 1
            if not page.truncated or page.nextKey is None:
                break
            keyMarker, uploadMarker = page.nextKey, page.nextUploadId
        staging = self.stagingKey("")
        token: str | None = None
        while True:
            objects = await self.client.listObjects(staging, continuation=token)
            for listed in objects.objects:
                if listed.key not in self._live and listed.modified <= cutoff:
                    await self.client.delete(listed.key)
                    count += 1
            if not objects.truncated or objects.continuation is None:
                break
            token = objects.continuation
        if count:
            self._log.info("removed {count} upload(s) left behind in S3", count=count)
        return count

    # Readiness

    def writable(self) -> bool:
        """
        Whether the bucket answered the last probe.  A probe (HEAD of the
        bucket) is sent when the last one is over C{PROBE_EVERY} seconds
        old, so C{/readyz} follows S3 a probe behind.
        """
        now = self.clock.seconds()
        if self._probe is None and (
            self._probedAt is None or now - self._probedAt >= PROBE_EVERY
        ):
            self._probedAt = now
            self._probe = Deferred.fromCoroutine(self._probeBucket())
        return self._reachable

    async def _probeBucket(self) -> None:
        try:
            await self.client.bucketReachable()
        except Exception as e:
            if self._reachable:
                self._log.warn("S3 bucket unreachable: {error}", error=str(e) or repr(e))
            self._reachable = False
        else:
            if not self._reachable:
                self._log.info("S3 bucket reachable: {where}", where=self.description)
            self._reachable = True
        finally:
            self._probe = None

    # For uploads

    def started(self, stagingKey: str) -> None:
        self._live.add(stagingKey)

    def finished(self, stagingKey: str) -> None:
        self._live.discard(stagingKey)

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
        self._live.add(key)
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
            self._live.discard(key)

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

    def background(self, what: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
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
