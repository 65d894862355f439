"""
Resumable uploads kept in the S3 bucket beside the files, so that any
backend sharing the bucket continues any upload and none keeps state of
its own.

Under C{<prefix>.streamrelay/tus/}, an upload has:

  - C{<id>.json}, its record: the upload's state, and the I{segments}
    holding its bytes, in order;
  - C{<id>.<token>}, the segments: objects each holding a consecutive
    stretch of the upload's bytes.  All of them go once the file is
    published; the record stays until the upload expires.

Every segment but the last holds at least S3's smallest part (5 MiB), so
publishing copies the segments inside S3, as the parts of one multipart
upload under the file's key (one CopyObject for a single segment): the
bytes do not come back through the backend.  A request that ends leaves a
shorter last segment; the next request writing the upload reads it back
(less than 5 MiB) and sends it again at the head of its first segment.

Segments are never rewritten: each has a fresh name.  A record is stored
only once every segment it names is, so it never counts bytes the bucket
does not hold, whichever backend stopped when.  Segments a stored record
no longer names are removed; those of an interrupted request go with their
upload.  Two backends writing one upload at the same moment (a client
sending twice) cannot mix their bytes: the last record stored wins whole;
and the protocol lets only one backend at a time write an upload, by a
lease kept in the bucket (L{streamrelay.tus.lease}).

The SHA-256 of an upload is computed as its bytes arrive; a backend that
did not receive the bytes before (another did, or it restarted) reads the
segments back once to hash them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
    succeed,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from streamrelay.store import FileInfo
from streamrelay.store.metadata import s3Headers
from streamrelay.store.s3.client import SHA256_META, ObjectHead
from streamrelay.store.s3.interfaces import started
from streamrelay.store.s3.messages import S3Error
from streamrelay.store.s3.publishing import (
    MAX_COPY_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    CopySource,
    ProducerHolder,
    partTarget,
    storeError,
)
from streamrelay.store.s3.reading import HashSink, ObjectChanged, S3File
from streamrelay.store.s3.store import OWN_FOLDER, S3Store
from streamrelay.tus.interfaces import (
    ID_PATTERN,
    IPartialWriter,
    IResumableStore,
    ResumableUpload,
)

#: Where the uploads are kept, under the store's prefix.
TUS_FOLDER = OWN_FOLDER + "tus/"
RECORD_SUFFIX = ".json"
TOKEN_PATTERN = re.compile(r"[0-9a-f]{16}")
#: Deletions sent at once when removing an upload.
CONCURRENCY = 4


@dataclass(frozen=True)
class Segment:
    """
    One object holding a stretch of an upload's bytes; C{owner} is the
    upload whose object it is when not the upload's own (a final upload
    made of its partial uploads' segments).
    """

    token: str
    size: int
    etag: str
    owner: str | None = None

    def asJSON(self) -> list[Any]:
        own = [self.token, self.size, self.etag]
        return own if self.owner is None else [*own, self.owner]

    @classmethod
    def fromJSON(cls, data: Any) -> Segment:
        token, size, etag, *owner = data
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            raise ValueError(f"not a segment name: {token!r}")
        if owner and (len(owner) != 1 or not ID_PATTERN.fullmatch(str(owner[0]))):
            raise ValueError(f"not an upload id: {owner!r}")
        return cls(token, int(size), str(etag), str(owner[0]) if owner else None)


Layout = tuple[Segment, ...]


def _unwrap(error: BaseException) -> BaseException:
    while isinstance(error, FirstError):
        inner = error.subFailure.value
        assert inner is not None
        error = inner
    return error


@implementer(IResumableStore)
class S3ResumableStore:
    """
    Resumable uploads in the bucket of C{store}, published into it.

    @param staleAfter: seconds after which segments whose upload has no
        record (left by a removal cut short) are removed.
    """

    def __init__(self, store: S3Store, staleAfter: float | None = None) -> None:
        self.store = store
        self.client = store.client
        self.publisher = store.publisher
        self.folder = store.prefix + TUS_FOLDER
        self.staleAfter = store.staleAfter if staleAfter is None else staleAfter
        #: upload id -> offset -> the segments holding the bytes before it
        self._layouts: dict[str, dict[int, Layout]] = {}
        #: upload id -> segments to remove once a stored record does not name them
        self._garbage: dict[str, set[str]] = {}

    # Keys and layouts

    def segmentKey(self, uploadId: str, token: str) -> str:
        return f"{self.folder}{uploadId}.{token}"

    def keyOf(self, uploadId: str, segment: Segment) -> str:
        """The object of C{segment}, one of upload C{uploadId}'s."""
        return self.segmentKey(segment.owner or uploadId, segment.token)

    def recordKey(self, uploadId: str) -> str:
        return f"{self.folder}{uploadId}{RECORD_SUFFIX}"

    def known(self, uploadId: str, offset: int, layout: Layout) -> None:
        """The bytes before C{offset} are now held by C{layout}."""
        self._layouts.setdefault(uploadId, {})[offset] = layout

    def discard(self, uploadId: str, tokens: Iterable[str]) -> None:
        """Remove these segments once a record no longer names them."""
        self._garbage.setdefault(uploadId, set()).update(tokens)

    def layout(self, upload: ResumableUpload) -> Layout:
        layout = self._layouts.get(upload.id, {}).get(upload.offset)
        if layout is None:
            raise OSError(
                errno.EIO, f"no segments known for upload {upload.id} at {upload.offset}"
            )
        return layout

    # IResumableStore

    def create(self, upload: ResumableUpload) -> Deferred[None]:
        assert upload.offset == 0
        self.known(upload.id, 0, ())
        return self.save(upload)

    async def _load(self, uploadId: str) -> ResumableUpload | None:
        if not ID_PATTERN.fullmatch(uploadId):
            return None
        try:
            data = await self.client.read(self.recordKey(uploadId))
        except S3Error as e:
            raise storeError(e) from e
        if data is None:
            return None
        try:
            record = json.loads(data)
            upload = ResumableUpload.fromJSON(record["upload"])
            layout = tuple(Segment.fromJSON(s) for s in record["segments"])
        except (ValueError, KeyError, TypeError):
            # A damaged record names no usable upload; sweeping removes it.
            return None
        if upload.id != uploadId or sum(s.size for s in layout) != upload.offset:
            return None
        self.known(uploadId, upload.offset, layout)
        return upload

    def load(self, uploadId: str) -> Deferred[ResumableUpload | None]:
        return Deferred.fromCoroutine(self._load(uploadId))

    async def _save(self, upload: ResumableUpload) -> None:
        layout = self.layout(upload)
        record = {"upload": upload.asJSON(), "segments": [s.asJSON() for s in layout]}
        data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        try:
            await self.client.put(
                self.recordKey(upload.id), [data], hashlib.sha256(data).hexdigest()
            )
        except S3Error as e:
            raise storeError(e) from e
        known = self._layouts.get(upload.id, {})
        for offset in [o for o in known if o < upload.offset]:
            del known[offset]
        named = {s.token for s in layout}
        garbage = self._garbage.get(upload.id, set())
        for token in sorted(garbage - named):
            self.publisher.removeLater(self.segmentKey(upload.id, token))
        garbage &= named

    def save(self, upload: ResumableUpload) -> Deferred[None]:
        return Deferred.fromCoroutine(self._save(upload))

    async def _listed(self, prefix: str) -> list[tuple[str, float]]:
        """Every key under C{prefix} in the upload folder, with its time."""
        found: list[tuple[str, float]] = []
        token: str | None = None
        while True:
            page = await self.client.listObjects(prefix, continuation=token)
            found.extend((listed.key, listed.modified) for listed in page.objects)
            if not page.truncated or page.continuation is None:
                return found
            token = page.continuation

    async def _ids(self) -> list[str]:
        records: set[str] = set()
        others: dict[str, list[tuple[str, float]]] = {}
        for key, modified in await self._listed(self.folder):
            uploadId, _, rest = key[len(self.folder):].partition(".")
            if not ID_PATTERN.fullmatch(uploadId):
                continue
            if "." + rest == RECORD_SUFFIX:
                records.add(uploadId)
            else:
                others.setdefault(uploadId, []).append((key, modified))
        cutoff = self.client.clock.seconds() - self.staleAfter
        for uploadId, keys in others.items():
            if uploadId not in records and all(modified <= cutoff for _, modified in keys):
                for key, _ in keys:
                    self.publisher.removeLater(key)
        return sorted(records)

    def ids(self) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._ids())

    async def _openWriter(self, upload: ResumableUpload) -> IPartialWriter:
        layout = self.layout(upload)
        head: list[bytes] = []
        base = layout
        if layout and layout[-1].size < MIN_PART_SIZE:
            # Too short to be a part but the last: sent again with what follows.
            last = layout[-1]
            try:
                data = await self.client.read(self.segmentKey(upload.id, last.token))
            except S3Error as e:
                raise storeError(e) from e
            if data is None or len(data) != last.size:
                raise OSError(errno.EIO, f"segment {last.token} of {upload.id} is not as stored")
            head, base = [data], layout[:-1]
        return S3PartialWriter(self, upload.id, upload.offset, layout, base, head)

    def openWriter(self, upload: ResumableUpload) -> Deferred[IPartialWriter]:
        return Deferred.fromCoroutine(self._openWriter(upload))

    async def _hashPrefix(self, upload: ResumableUpload) -> Any:
        hasher = HashSink()
        for segment in self.layout(upload):
            if not segment.size:
                continue
            key = self.keyOf(upload.id, segment)
            reader = S3File(self.client, key, FileInfo(key, segment.size, "", 0), segment.etag)
            try:
                await reader.stream(0, segment.size, hasher)
            except ObjectChanged as e:
                raise FileNotFoundError(errno.ENOENT, f"segment {segment.token} is gone") from e
        return hasher.digest

    def hashPrefix(self, upload: ResumableUpload) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._hashPrefix(upload))

    async def _publish(self, upload: ResumableUpload, sha256: str) -> tuple[FileInfo, bool]:
        assert upload.complete
        layout = self.layout(upload)
        key = self.store.key(upload.name)
        try:
            before = await self.client.head(key)
            metadata = {SHA256_META: sha256, **s3Headers(upload.fileMetadata)}
            if not layout:
                await self.client.put(key, [], sha256, upload.fileMetadata)
            elif len(layout) == 1:
                only = layout[0]
                staged = ObjectHead(only.size, only.etag, 0.0, None)
                await self.publisher.publish(self.keyOf(upload.id, only), staged, key, metadata)
            else:
                await self.publisher.copyParts(key, metadata, [
                    CopySource(self.keyOf(upload.id, s), s.etag, 0, s.size) for s in layout
                ])
        except BaseException as e:
            error = _unwrap(e)
            if isinstance(error, S3Error) and error.status in (404, 412):
                # A segment is gone: published by a backend that stopped
                # before noting it, if the file is these bytes.
                head = await self.client.head(key)
                if head is not None and (head.size, head.sha256) == (upload.offset, sha256):
                    return self.store.remember(upload.name, head), True
            if isinstance(error, S3Error):
                raise storeError(error) from error
            raise error from None
        head = await self.client.head(key)
        if head is None or head.size != upload.offset or head.sha256 != sha256:
            raise storeError(S3Error(500, "Replaced", f"{key!r} changed as it was stored"))
        self.publisher.background(
            f"removing the segments of upload {upload.id}",
            lambda: self._removeSegments(upload.id),
        )
        return self.store.remember(upload.name, head), before is not None

    def publish(self, upload: ResumableUpload, sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        return Deferred.fromCoroutine(self._publish(upload, sha256))

    def concatenate(
        self, final: ResumableUpload, partials: Sequence[ResumableUpload]
    ) -> Deferred[Any]:
        from streamrelay.tus.s3concat import concatenate

        return Deferred.fromCoroutine(concatenate(self, final, partials))

    async def _removeSegments(self, uploadId: str) -> None:
        """Remove every object of the upload but its record."""
        record = self.recordKey(uploadId)
        keys = [key for key, _ in await self._listed(f"{self.folder}{uploadId}.")]
        semaphore = DeferredSemaphore(CONCURRENCY)
        await gatherResults(
            [semaphore.run(self._delete, key) for key in keys if key != record],
            consumeErrors=True,
        )

    async def _remove(self, uploadId: str) -> None:
        if not ID_PATTERN.fullmatch(uploadId):
            return
        try:
            await self._removeSegments(uploadId)
            # The record goes last: until then, sweeping finds the upload.
            await self.client.delete(self.recordKey(uploadId))
        except BaseException as e:
            error = _unwrap(e)
            raise (storeError(error) if isinstance(error, S3Error) else error) from None
        self._layouts.pop(uploadId, None)
        self._garbage.pop(uploadId, None)

    def _delete(self, key: str) -> Deferred[None]:
        return started(self.client.delete(key))

    def remove(self, uploadId: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._remove(uploadId))


@implementer(IPartialWriter)
class S3PartialWriter(ProducerHolder):
    """
    Appends to an upload kept in S3: the bytes are cut into segments of a
    part's size, one sent while the next fills; the request body is paused
    while a full segment waits, so about two segments are in memory.

    @param layout: the segments the upload has at C{start}.
    @param base: the segments kept as they are (C{layout} but a short last
        one, whose bytes are C{head} and are sent again first).
    """

    def __init__(
        self,
        resumable: S3ResumableStore,
        uploadId: str,
        start: int,
        layout: Layout,
        base: Layout,
        head: Sequence[bytes],
    ) -> None:
        super().__init__()
        self.start = start
        self._resumable = resumable
        self._client = resumable.client
        self._partSize = resumable.store.partSize
        self._id = uploadId
        self._layout = layout
        self._base = base
        self._replaced = [s.token for s in layout[len(base):]]
        self._chunks: list[bytes] = list(head)
        self._filled = sum(len(c) for c in head)
        self._received = 0
        self._cuts = len(base)
        self._stored: list[Segment] = []
        self._storedEnd = sum(s.size for s in base)
        self._sending: Deferred[Any] | None = None
        self._full: list[bytes] | None = None
        self._error: BaseException | None = None
        self._closed = False


    # IConsumer

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("write after the writer was closed")
        self._chunks.append(bytes(data))
        self._filled += len(data)
        self._received += len(data)
        if self._filled < self._target():
            return
        if self._sending is None:
            self._send(self._cut())
        else:
            if self._full is None:
                self._full = self._cut()
            self._pause()

    # Segments

    def _target(self) -> int:
        return min(partTarget(self._partSize, self._cuts + 1), MAX_COPY_SIZE)

    def _cut(self) -> list[bytes]:
        self._cuts += 1
        chunks, self._chunks, self._filled = self._chunks, [], 0
        return chunks

    def _send(self, chunks: list[bytes]) -> None:
        sending = Deferred.fromCoroutine(self._put(chunks, self._cuts))
        # Set first: the put may be done already, and _sent clears it.
        self._sending = sending
        sending.addCallbacks(self._sent, self._failed)

    async def _put(self, chunks: list[bytes], number: int) -> Segment:
        if number > MAX_PARTS:
            raise S3Error(400, "TooManyParts", f"an upload holds at most {MAX_PARTS} parts")
        token = secrets.token_hex(8)
        etag = await self._client.put(self._resumable.segmentKey(self._id, token), chunks, None)
        return Segment(token, sum(len(c) for c in chunks), etag)

    def _sent(self, segment: Segment) -> None:
        self._sending = None
        self._stored.append(segment)
        self._storedEnd += segment.size
        self._resumable.known(self._id, self._storedEnd, self._base + tuple(self._stored))
        if self._replaced:
            self._resumable.discard(self._id, self._replaced)
            self._replaced = []
        full, self._full = self._full, None
        if full is not None and not self._closed:
            self._send(full)
            self._resume()

    def _failed(self, failure: Failure) -> None:
        # Its error is kept without its frames: they hold the segment's
        # bytes, and this writer, in a cycle.
        failure.cleanFailure()
        self._sending = None
        self._full = None
        if self._error is None:
            error = failure.value
            self._error = (
                storeError(error) if isinstance(error, S3Error)
                else error if isinstance(error, CancelledError | OSError)
                else OSError(errno.EIO, str(error) or repr(error))
            )
        self._resume()

    def _covered(self) -> int:
        return self._storedEnd - self.start if self._stored else 0

    async def _settle(self) -> None:
        while self._sending is not None:
            await self._sending
        if self._error is not None:
            raise self._error

    # IPartialWriter

    def written(self) -> int:
        return self._received

    async def _flush(self) -> int:
        await self._settle()
        if self._received and self._chunks:
            self._send(self._cut())
            await self._settle()
        return self._covered()

    def flush(self) -> Deferred[int]:
        return Deferred.fromCoroutine(self._flush())

    def checkpoint(self) -> Deferred[int]:
        return succeed(self._covered())

    def truncate(self) -> Deferred[None]:
        self._stop()
        self._resumable.discard(self._id, [s.token for s in self._stored])
        self._stored = []
        self._storedEnd = sum(s.size for s in self._base)
        self._resumable.known(self._id, self.start, self._layout)
        return succeed(None)

    def _stop(self) -> None:
        self._chunks, self._filled, self._full = [], 0, None
        sending = self._sending
        if sending is not None:
            sending.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop()
