"""
The S3 store: files as objects C{<prefix><name>} of one bucket, shared by
any number of backends.

Each object keeps its SHA-256 in its metadata (C{x-amz-meta-sha256}), so a
backend answers the same name, size, digest and ETag as the disk store.
Listings name objects without their metadata: digests already seen are
remembered by (key, S3 ETag), the others are read with HEAD.  A file's
own metadata (a C{pre-create} hook's, see L{streamrelay.store.metadata})
is one more object metadata header, remembered and read the same way, so
listing it costs no request more than listing the digests.  The store's
own objects (staging objects of uploads in progress) live under
C{<prefix>.streamrelay/}, which no file name can reach.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Mapping

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from streamrelay.names import isValidName
from streamrelay.store.interfaces import FileInfo, IStoredFile, IUploadStore
from streamrelay.store.s3.client import ObjectHead, unquoteETag
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import ListedObject, S3Error
from streamrelay.store.s3.publishing import (
    COPY_PART_SIZE,
    MAX_COPY_SIZE,
    Digests,
    S3Publisher,
)
from streamrelay.store.s3.reading import HashSink, S3File
from streamrelay.store.s3.upload import S3Upload, UploadContext

#: Where the store keeps its own objects, under the prefix.
OWN_FOLDER = ".streamrelay/"
#: The defaults: three parts of an upload in flight, so that S3 writes some
#: down while the next arrives (with one, S3 sat idle between parts; three
#: 5 MiB parts went 7-12 % faster than two of 6 MiB, unsigned, into Ceph
#: RGW), and 5 MiB parts (S3's least), so that an upload holds at most four
#: parts, 20 MiB, whatever its size (until parts double, past 2,000 parts:
#: about 10 GB).
DEFAULT_PART_SIZE = 5 << 20
DEFAULT_PARTS_IN_FLIGHT = 3
#: Multipart uploads and staging objects idle this long are an interrupted
#: upload's leftovers, whichever backend started them.
STALE_AFTER = 24 * 3600.0
SWEEP_EVERY = 3600.0
#: How often C{writable} may ask S3 whether the bucket answers.
PROBE_EVERY = 5.0
#: HEAD requests a listing sends at once.
LIST_CONCURRENCY = 16


@implementer(IUploadStore)
class S3Store:
    """
    Files kept as objects of one bucket, under C{prefix}.

    @param prefix: the key prefix (C{""} for the whole bucket, or a folder
        such as C{"team/"}).
    @param partSize: bytes per part of a multipart upload (at least 5 MiB).
    @param partsInFlight: parts of one upload sent at once; each upload
        holds at most one part more than that in memory.
    @param staleAfter: seconds after which an idle multipart upload or
        staging object under the prefix counts as left behind.
    """

    _log = Logger()

    def __init__(
        self,
        client: IS3Client,
        prefix: str = "",
        partSize: int = DEFAULT_PART_SIZE,
        staleAfter: float = STALE_AFTER,
        copyLimit: int = MAX_COPY_SIZE,
        copyPartSize: int = COPY_PART_SIZE,
        partsInFlight: int = DEFAULT_PARTS_IN_FLIGHT,
    ) -> None:
        if partSize < 5 << 20:
            raise ValueError("S3 parts have at least 5 MiB")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.client = client
        self.clock: IReactorTime = client.clock
        self.prefix = prefix
        self.staleAfter = staleAfter
        self.digests = Digests()
        self.publisher = S3Publisher(client, copyLimit, copyPartSize)
        #: Keys of uploads in progress here, which sweeping leaves alone.
        self._live = self.publisher.live
        self.uploads = UploadContext(client, self.publisher, self.digests, partSize, partsInFlight)
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
        return self.digests.fileInfo(name, self.key(name), head)

    async def _info(self, name: str, head: ObjectHead) -> FileInfo:
        if head.sha256 is not None:
            return self.remember(name, head)
        key = self.key(name)
        sha256 = self.digests.get(key, head.etag)
        if sha256 is None:
            # Stored by other means: read it once to learn its digest.
            sink = HashSink()
            if head.size:
                reader = S3File(self.client, key, FileInfo(name, head.size, "", 0), head.etag)
                await reader.stream(0, head.size, sink)
            sha256 = sink.digest.hexdigest()
            self.digests.remember(key, head.etag, sha256, head.metadata)
        return FileInfo(name, head.size, sha256, head.modified, head.metadata)

    # IUploadStore

    @property
    def partSize(self) -> int:
        return self.uploads.partSize

    @property
    def partsInFlight(self) -> int:
        return self.uploads.partsInFlight

    @partsInFlight.setter
    def partsInFlight(self, count: int) -> None:
        self.uploads.partsInFlight = count

    def begin(self, name: str, metadata: Mapping[str, str] | None = None) -> S3Upload:
        token = secrets.token_hex(16)
        return S3Upload(
            self.uploads, name, self.key(name), self.stagingKey(token), metadata
        )

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
            sha256 = self.digests.get(listed.key, etag)
            if sha256 is not None:
                # HEAD answers whole seconds; so does the listing, to agree.
                return FileInfo(
                    name, listed.size, sha256, float(int(listed.modified)),
                    self.digests.metadata(listed.key, etag),
                )
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
        self.publisher.background("sweeping stale uploads", self.sweepStale)
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

    # Background work (see S3Publisher)

    def started(self, key: str) -> None:
        self.publisher.started(key)

    def removeLater(self, key: str) -> None:
        self.publisher.removeLater(key)

    def settled(self, timeout: float | None = None) -> Deferred[None]:
        """
        Fires once the background work running now (aborts, removals) is
        done, or after C{timeout} seconds.
        """
        return self.publisher.settled(timeout)
