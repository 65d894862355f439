"""
The tus 1.0.0 resumable upload protocol (tus.io), over an
L{IResumableStore} for partial uploads and an L{IUploadStore} for finished
files.

Supported: the core protocol and the extensions creation,
creation-with-upload, creation-defer-length, termination, checksum (sha1,
sha256), expiration and concatenation (see L{streamrelay.tus.concat}).
When the last byte arrives, the upload becomes the file named by its
C{Upload-Metadata} C{filename}, like a plain upload; a partial upload
never does.

One request at a time writes to an upload: a C{PATCH} (or C{DELETE})
arriving while another C{PATCH} streams into the same upload takes it
over: the first one stops, keeps what it received, and is answered C{423};
then the new one checks its offset.  Bytes of a C{PATCH} cut off mid-way
are kept (unless it carried C{Upload-Checksum}, which can then not be
verified), and C{HEAD} reports them.

Across backends sharing a bucket, a request writing to an upload (and
C{DELETE}, and the C{HEAD} that publishes a complete upload) also holds
the upload's lease (L{streamrelay.tus.lease}): a request arriving while
another backend holds it is answered C{423} with C{Retry-After: 1} at
once, its body unread, and tus clients retry.  A request whose lease is
lost meanwhile stops at once and is answered C{423}, writing nothing more:
the upload keeps what its last saved record counts.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.backend.answers import fileJSON, location, rfc3339
from streamrelay.errors import (
    ApiError,
    storageUnavailable,
    tooLarge,
    writeJSON,
)
from streamrelay.hooks.clients import ClientContexts
from streamrelay.hooks.decisions import PreCreateAsker, smallerLimit
from streamrelay.hooks.interfaces import Decision, IHooks, NoHooks
from streamrelay.names import BadName, validateName
from streamrelay.receiving import TooLarge, shielded
from streamrelay.store import FileInfo, IUploadStore, StorageFull, StorageUnavailable
from streamrelay.store.interfaces import NotAFile
from streamrelay.streaming import BodyIncomplete, BodyTimeout, RequestBody
from streamrelay.tus.concat import concatHeader, concatOf, createFinal
from streamrelay.tus.headers import (
    CHECKSUMS,
    EXTENSIONS,
    OFFSET_STREAM,
    TUS_VERSION,
    badRequest,
    checksumOf,
    contentType,
    count,
    httpDate,
    parseMetadata,
    requestBody,
    wantsJSON,
)
from streamrelay.tus.interfaces import (
    FINAL,
    PARTIAL,
    IPartialWriter,
    IResumableStore,
    ResumableUpload,
)
from streamrelay.tus.lease import ILease, ILeases, LeaseHeld, LocalLeases
from streamrelay.tus.writing import ChunkSink, TakenOver, WriteHolder, heldElsewhere, locked
from streamrelay.webapp import requestId

#: Where uploads live in the HTTP API.
UPLOADS_PATH = b"/uploads/"

#: Default life of an upload after its last write.
DEFAULT_EXPIRY = 24 * 3600.0


#: Errors that mean the request's body stopped arriving.
_CUT = (BodyIncomplete, BodyTimeout, ConnectionLost, ConnectionDone, CancelledError)


class TusUploads:
    """
    The tus protocol's requests, for the backend's C{/uploads} routes.

    @param maxSize: the largest upload accepted (C{Tus-Max-Size}).
    @param expiry: seconds an unfinished upload is kept after its last write.
    @param leases: where a request writing to an upload takes its lease
        (L{streamrelay.tus.lease}); by default granted at once (one
        backend alone writes the store).
    """

    _log = Logger()

    def __init__(
        self,
        resumable: IResumableStore,
        store: IUploadStore,
        clock: IReactorTime,
        maxSize: int | None = None,
        expiry: float = DEFAULT_EXPIRY,
        hooks: IHooks | None = None,
        contexts: ClientContexts | None = None,
        leases: ILeases | None = None,
    ) -> None:
        if resumable.store is not store:
            raise ValueError("the resumable store publishes into another store")
        self.resumable = resumable
        self.store = store
        self.clock = clock
        self.maxSize = maxSize
        self.expiry = expiry
        self._holders: dict[str, WriteHolder] = {}
        #: upload id -> (offset, SHA-256 state of the bytes before it)
        self._hashes: dict[str, tuple[int, Any]] = {}
        self._stopping = False
        self.hooks: IHooks = hooks or NoHooks()
        self.contexts = contexts or ClientContexts()
        self.leases: ILeases = leases or LocalLeases()

    # Requests

    def options(self, request: IRequest) -> bytes:
        request.setHeader(b"tus-resumable", TUS_VERSION)
        request.setHeader(b"tus-version", TUS_VERSION)
        request.setHeader(b"tus-extension", EXTENSIONS)
        request.setHeader(b"tus-checksum-algorithm", ",".join(CHECKSUMS).encode("ascii"))
        if self.maxSize is not None:
            request.setHeader(b"tus-max-size", b"%d" % (self.maxSize,))
        request.setResponseCode(204)
        return b""

    async def create(self, request: IRequest, ask: PreCreateAsker | None = None) -> bytes:
        """
        C{POST}: a new upload, once C{ask} (the C{pre-create} hook; by
        default this one's L{hooks}) allowed it, maybe under another name,
        with a smaller limit and metadata.
        """
        self._begin(request)
        concat = concatOf(request)
        if isinstance(concat, list):
            return await createFinal(self, request, concat, ask)
        length = count(request, b"upload-length")
        deferred = request.getHeader(b"upload-defer-length")
        if deferred is not None and (deferred.strip() != b"1" or length is not None):
            raise badRequest("Upload-Defer-Length is 1, and only without Upload-Length.")
        if length is None and deferred is None:
            raise badRequest("Creating an upload needs Upload-Length or Upload-Defer-Length: 1.")
        if length is not None and self.maxSize is not None and length > self.maxSize:
            raise tooLarge(self.maxSize)
        pairs: dict[str, str]
        if concat == PARTIAL:
            # It never becomes a file, whatever name its metadata gives.
            metadata, name, pairs = self._partialMetadata(request), "", {}
        else:
            metadata, name, pairs = self.uploadMetadata(request)
        body = requestBody(request)
        if body is not None and contentType(request) != OFFSET_STREAM:
            raise ApiError(
                415, "unsupported_media_type",
                "An upload's bytes are sent as application/offset+octet-stream.",
            )
        checksum = checksumOf(request)
        if body is not None and length is not None and (body.declaredLength or 0) > length:
            raise ApiError(413, "too_large", "The body is larger than Upload-Length.")
        if ask is None:
            context = self.contexts(request, "tus")
            decision = await self.hooks.preCreate(context, name, length, pairs)
        else:
            decision = await ask(name, length, pairs)
        if concat == PARTIAL:
            # Asked (with no name) as it stores bytes, but it makes no file:
            # only a refusal and a limit apply to it.
            decision = Decision(maxSize=decision.maxSize)
        limit = smallerLimit(self.maxSize, decision.maxSize)
        if length is not None and limit is not None and length > limit:
            raise tooLarge(limit)
        now = self.clock.seconds()
        upload = ResumableUpload(
            id=secrets.token_hex(16), length=length, offset=0, metadata=metadata,
            name=decision.name or name, created=now, expires=now + self.expiry,
            fileMetadata=dict(decision.metadata) if decision.metadata else None,
            maxSize=decision.maxSize, concat=PARTIAL if concat == PARTIAL else None,
        )
        await self.resumable.create(upload)
        self._hashes[upload.id] = (0, hashlib.sha256())
        self._log.info(
            "tus created request_id={rid} upload={id} name={name!r} length={length}"
            + (" partial" if upload.partial else ""),
            rid=requestId(request), id=upload.id, name=upload.name,
            length="deferred" if length is None else length,
        )
        request.setHeader(b"location", UPLOADS_PATH + upload.id.encode("ascii"))
        if body is not None or (upload.complete and not upload.partial):
            upload = await shielded(
                Deferred.fromCoroutine(
                    self._write(request, upload.id, 0, None, checksum, leased=False)
                )
            )
        self._uploadHeaders(request, upload)
        request.setResponseCode(201)
        return b""

    async def head(self, request: IRequest, uploadId: str) -> bytes:
        self._begin(request)
        try:
            upload = await self._live(uploadId)
            if _publishable(upload):
                upload = await shielded(
                    Deferred.fromCoroutine(self._finishLocked(request, uploadId))
                )
        except StorageUnavailable as e:
            # tus clients take any error but 423 on HEAD for "upload gone"
            # and start over; 423 makes them retry until the storage is back.
            unavailable = storageUnavailable(e)
            raise ApiError(423, unavailable.code, unavailable.message, unavailable.headers) from e
        self._uploadHeaders(request, upload)
        concat = concatHeader(upload)
        if concat is not None:
            request.setHeader(b"upload-concat", concat)
        if upload.concat == FINAL and not upload.complete:
            # Still being made: no offset until it is (tus concatenation).
            request.responseHeaders.removeHeader(b"upload-offset")
        if upload.length is None:
            request.setHeader(b"upload-defer-length", b"1")
        if upload.metadata:
            request.setHeader(b"upload-metadata", upload.metadata.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        request.setResponseCode(200)
        return b""

    async def info(self, request: IRequest, uploadId: str) -> bytes:
        """C{GET}: the upload as JSON (streamrelay's own, not tus)."""
        request.setHeader(b"tus-resumable", TUS_VERSION)
        upload = await self._live(uploadId)
        request.setHeader(b"cache-control", b"no-store")
        return writeJSON(request, 200, {
            "id": upload.id,
            "name": upload.name,
            "offset": upload.offset,
            "length": upload.length,
            "expires": rfc3339(upload.expires),
            "concat": upload.concat,
            "file": upload.stored,
        })

    async def finished(self, request: IRequest, uploadId: str) -> dict[str, Any] | None:
        """
        C{GET}: the JSON of the file a finished upload became, whose bytes
        the request gets (as tusd serves an upload's bytes); L{None} when it
        gets the upload's JSON (L{info}): it asked for it, or the upload is
        not a file (yet).
        """
        request.setHeader(b"tus-resumable", TUS_VERSION)
        if wantsJSON(request):
            return None
        return (await self._live(uploadId)).stored

    async def patch(self, request: IRequest, uploadId: str) -> bytes:
        self._begin(request)
        if contentType(request) != OFFSET_STREAM:
            raise ApiError(
                415, "unsupported_media_type",
                "PATCH takes Content-Type: application/offset+octet-stream.",
            )
        offset = count(request, b"upload-offset")
        if offset is None:
            raise badRequest("PATCH needs Upload-Offset.")
        newLength = count(request, b"upload-length")
        checksum = checksumOf(request)
        if (await self._live(uploadId)).concat == FINAL:
            raise ApiError(
                403, "forbidden",
                "A final upload takes no PATCH: its bytes are its partial uploads'.",
            )
        upload = await shielded(
            Deferred.fromCoroutine(self._write(request, uploadId, offset, newLength, checksum))
        )
        self._uploadHeaders(request, upload)
        request.setResponseCode(204)
        return b""

    async def terminate(self, request: IRequest, uploadId: str) -> bytes:
        self._begin(request)
        upload = await self._live(uploadId, expiredToo=True)
        await shielded(Deferred.fromCoroutine(self.removeUpload(request, uploadId)))
        if upload.stored is None and not upload.partial:
            # A finished upload's file stays: only an unfinished one is a
            # deletion (a partial upload was never to be a file).
            await self.hooks.deleted(self.contexts(request, "tus"), upload.name)
        request.setResponseCode(204)
        return b""

    # Writing, one request per upload at a time

    async def _acquire(self, uploadId: str) -> WriteHolder:
        while (holder := self._holders.get(uploadId)) is not None:
            released = holder.whenReleased()
            holder.takeOver()
            await released
        if self._stopping:
            raise _stopping()
        holder = self._holders[uploadId] = WriteHolder()
        return holder

    def _release(self, uploadId: str, holder: WriteHolder) -> None:
        if self._holders.get(uploadId) is holder:
            del self._holders[uploadId]
        holder.released()

    async def _lease(self, uploadId: str, holder: WriteHolder) -> ILease:
        """
        The upload's lease, renewed until released; losing it stops the
        request (L{WriteHolder.loseLease}).  Another backend holding it: 423.
        """
        try:
            lease = await self.leases.acquire(uploadId)
        except LeaseHeld as e:
            self._log.info(
                "tus upload={id} is being written by another backend (holder={holder})",
                id=uploadId, holder=e.holder,
            )
            raise heldElsewhere() from None
        lease.renewing(holder.loseLease)
        return lease

    def _stillHeld(self, holder: WriteHolder, lease: ILease | None) -> None:
        """Fail with 423 once the request's lease is lost."""
        if holder.leaseLost or (lease is not None and not lease.valid()):
            raise locked()

    async def _write(
        self,
        request: IRequest,
        uploadId: str,
        offset: int,
        newLength: int | None,
        checksum: tuple[str, bytes] | None,
        leased: bool = True,
    ) -> ResumableUpload:
        holder = await self._acquire(uploadId)
        lease: ILease | None = None
        try:
            if leased:
                lease = await self._lease(uploadId, holder)
            upload = await self._live(uploadId)
            if newLength is not None:
                await self._declareLength(upload, newLength)
            if offset != upload.offset:
                raise ApiError(
                    409, "offset_mismatch",
                    f"The upload is at offset {upload.offset}, not {offset}.",
                    {b"upload-offset": b"%d" % (upload.offset,),
                     b"tus-resumable": TUS_VERSION},
                )
            body = requestBody(request)
            room = self._room(upload)
            declared = body.declaredLength if body is not None else 0
            if room is not None and declared is not None and declared > room:
                raise ApiError(
                    413, "too_large",
                    f"The body is {declared} bytes; only {room} fit in this upload.",
                )
            if body is not None and not upload.complete:
                upload = await self._receive(
                    request, holder, upload, body, room, checksum, lease
                )
            if _publishable(upload):
                self._stillHeld(holder, lease)
                upload = await self._finish(request, upload)
            return upload
        finally:
            if lease is not None:
                await lease.release()
            self._release(uploadId, holder)

    def _limit(self, upload: ResumableUpload) -> int | None:
        """The backend's limit, or the C{pre-create} hook's for this upload if smaller."""
        return smallerLimit(self.maxSize, upload.maxSize)

    def _room(self, upload: ResumableUpload) -> int | None:
        if upload.length is not None:
            return upload.length - upload.offset
        limit = self._limit(upload)
        if limit is not None:
            return limit - upload.offset
        return None

    async def _declareLength(self, upload: ResumableUpload, length: int) -> None:
        if upload.length is not None:
            if upload.length != length:
                raise badRequest(f"The upload's length is {upload.length} already.")
            return
        if length < upload.offset:
            raise badRequest(f"Upload-Length is less than the {upload.offset} bytes received.")
        limit = self._limit(upload)
        if limit is not None and length > limit:
            raise tooLarge(limit)
        upload.length = length
        await self.resumable.save(upload)

    async def _runningHash(self, upload: ResumableUpload) -> Any:
        known = self._hashes.get(upload.id)
        if known is not None and known[0] == upload.offset:
            return known[1]
        # The backend restarted since: hash what was kept.
        running = await self.resumable.hashPrefix(upload)
        self._hashes[upload.id] = (upload.offset, running)
        return running

    async def _receive(
        self,
        request: IRequest,
        holder: WriteHolder,
        upload: ResumableUpload,
        body: RequestBody,
        room: int | None,
        checksum: tuple[str, bytes] | None,
        lease: ILease | None = None,
    ) -> ResumableUpload:
        start = upload.offset
        running = (await self._runningHash(upload)).copy()
        writer = await self.resumable.openWriter(upload)
        checkpoints: list[Deferred[None]] = []

        def checkpoint() -> None:
            if checkpoints and not checkpoints[-1].called:
                return
            checkpoints.append(
                Deferred.fromCoroutine(self._checkpoint(upload, writer, holder, lease))
            )

        sink = ChunkSink(
            writer, running, CHECKSUMS[checksum[0]]() if checksum else None, room,
            checkpoint if checksum is None else None,
        )
        error: BaseException | None = None
        writer.registerProducer(body, True)
        try:
            if holder.takenOver:
                raise TakenOver()
            holder.body = body.startProducing(sink)
            await holder.body
        except BaseException as e:
            error = TakenOver() if holder.takenOver else e
        holder.body = None
        writer.unregisterProducer()
        for d in checkpoints:
            await d
        if holder.leaseLost:
            # Another backend writes the upload now: nothing more from here.
            await self._leaseLost(request, upload, writer, start, sink.size)
        cut = isinstance(error, (TakenOver, *_CUT))
        keep = error is None or (cut and checksum is None)
        kept = 0
        try:
            if keep:
                kept = await writer.flush()
            if error is None and checksum is not None:
                assert sink.checksum is not None
                if sink.checksum.digest() != checksum[1]:
                    keep = False
                    error = ApiError(
                        460, "checksum_mismatch",
                        f"The body does not match its {checksum[0]} Upload-Checksum; "
                        "it was discarded.",
                    )
            if not keep:
                kept = 0
                await writer.truncate()
        except BaseException as e:
            # The disk failed: keep nothing of this request.
            error, kept = e, 0
            await writer.truncate()
        finally:
            writer.close()
        if holder.leaseLost or (lease is not None and not lease.valid()):
            # Lost while flushing: the segments stay unnamed (removed with
            # the upload); the record is the new holder's business.
            await self._leaseLost(request, upload, writer, start, sink.size)
        upload.offset = start + kept
        if kept:
            # Only a write moves the expiry: a refused request (a checksum
            # mismatch, a full disk) leaves it where it was.
            upload.expires = self.clock.seconds() + self.expiry
        await self.resumable.save(upload)
        if kept == sink.size:
            self._hashes[upload.id] = (upload.offset, sink.running)
        else:
            self._hashes.pop(upload.id, None)
        self._log.info(
            "tus patch request_id={rid} upload={id} offset={start} received={received} "
            "kept={kept} outcome={outcome}",
            rid=requestId(request), id=upload.id, start=start, received=sink.size,
            kept=kept, outcome=_outcome(error),
        )
        if error is None:
            return upload
        if isinstance(error, TakenOver):
            raise _stopping() if self._stopping else locked()
        if isinstance(error, TooLarge):
            raise ApiError(413, "too_large", "The body is larger than the room left in the upload.")
        if isinstance(error, BodyTimeout):
            raise ApiError(408, "timeout", f"The body stalled: {error}; its bytes were kept.")
        if isinstance(error, StorageFull):
            raise ApiError(507, "insufficient_storage", f"The storage is full: {error}.")
        raise error

    async def _leaseLost(
        self, request: IRequest, upload: ResumableUpload, writer: IPartialWriter,
        start: int, received: int,
    ) -> None:
        """Drop what this request has not recorded, and answer 423."""
        try:
            await writer.truncate()
        finally:
            writer.close()
        self._hashes.pop(upload.id, None)
        self._log.info(
            "tus patch request_id={rid} upload={id} offset={start} received={received} "
            "kept=unrecorded outcome=lease_lost",
            rid=requestId(request), id=upload.id, start=start, received=received,
        )
        raise locked()

    async def _checkpoint(
        self,
        upload: ResumableUpload,
        writer: IPartialWriter,
        holder: WriteHolder | None = None,
        lease: ILease | None = None,
    ) -> None:
        """Move the kept offset forward to what is on disk, mid-request."""
        try:
            covered = await writer.checkpoint()
            if holder is not None and (
                holder.leaseLost or (lease is not None and not lease.valid())
            ):
                return
            if covered:
                moved = ResumableUpload(**upload.asJSON())
                moved.offset = writer.start + covered
                await self.resumable.save(moved)
        except Exception as e:
            self._log.info("tus checkpoint failed upload={id}: {e}", id=upload.id, e=e)

    async def _finishLocked(self, request: IRequest, uploadId: str) -> ResumableUpload:
        holder = await self._acquire(uploadId)
        lease: ILease | None = None
        try:
            lease = await self._lease(uploadId, holder)
            upload = await self._live(uploadId)
            if _publishable(upload):
                upload = await self._finish(request, upload)
            return upload
        finally:
            if lease is not None:
                await lease.release()
            self._release(uploadId, holder)

    async def _finish(self, request: IRequest, upload: ResumableUpload) -> ResumableUpload:
        """Publish a complete upload as its file."""
        started = time.monotonic()
        try:
            sha256 = (await self._runningHash(upload)).hexdigest()
        except FileNotFoundError:
            # Published already; the backend stopped before noting it.
            info = await self.store.stat(upload.name)
            if info is None or info.size != upload.offset:
                raise
            stored, replaced = info, True
        else:
            stored, replaced = await self.publishUpload(upload, sha256)
        # The event is made durable before the upload notes that it is
        # published: if that fails, or the backend stops in between, the
        # next request finds the file published and records it again.
        self._hashes.pop(upload.id, None)
        await self.hooks.finished(self.contexts(request, "tus"), stored)
        upload.stored = {**fileJSON(stored), "replaced": replaced}
        await self.resumable.save(upload)
        self._log.info(
            "upload stored request_id={rid} name={name!r} size={size} "
            "sha256={sha256} seconds={seconds:.3f} upload={id}",
            rid=requestId(request), name=stored.name, size=stored.size,
            sha256=stored.sha256, seconds=time.monotonic() - started, id=upload.id,
        )
        return upload

    async def publishUpload(
        self, upload: ResumableUpload, sha256: str
    ) -> tuple[FileInfo, bool]:
        """Publish a complete upload's bytes as its file (the store's errors as answers)."""
        try:
            return await self.resumable.publish(upload, sha256)
        except StorageFull as e:
            raise ApiError(507, "insufficient_storage", f"The storage is full: {e}.") from None
        except NotAFile as e:
            # Kept, complete: once the folder is gone, HEAD publishes it.
            raise ApiError(
                409, "conflict",
                f"{e.name!r} is a folder in the storage, not a file; the upload is kept.",
            ) from None

    async def removeUpload(self, request: IRequest, uploadId: str) -> None:
        """Take the upload over and remove it with its bytes (termination, cancellation)."""
        holder = await self._acquire(uploadId)
        lease: ILease | None = None
        try:
            lease = await self._lease(uploadId, holder)
            await self.resumable.remove(uploadId)
            self._hashes.pop(uploadId, None)
            self._log.info("tus terminated request_id={rid} upload={id}",
                           rid=requestId(request), id=uploadId)
        finally:
            if lease is not None:
                await lease.release()
            self._release(uploadId, holder)
        await self.leases.forget(uploadId)

    # Expiry and stopping

    async def _sweep(self) -> int:
        now = self.clock.seconds()
        removed = 0
        for uploadId in await self.resumable.ids():
            upload = await self.resumable.load(uploadId)
            if uploadId in self._holders:
                continue
            if upload is None or upload.expires <= now:
                await self.resumable.remove(uploadId)
                await self.leases.forget(uploadId)
                self._hashes.pop(uploadId, None)
                removed += 1
        if removed:
            self._log.info("tus removed {count} expired upload(s)", count=removed)
        return removed

    def sweep(self) -> Deferred[int]:
        """Remove expired uploads (and unreadable records); how many."""
        return Deferred.fromCoroutine(self._sweep())

    def stop(self) -> Deferred[object]:
        """
        Refuse new writes; stop the requests writing, each keeping and
        recording what it received.
        """
        self._stopping = True
        waits = []
        for holder in list(self._holders.values()):
            waits.append(holder.whenReleased())
            holder.takeOver()
        return DeferredList(waits)  # type: ignore[return-value]

    # Helpers

    def _begin(self, request: IRequest) -> None:
        request.setHeader(b"tus-resumable", TUS_VERSION)
        request.setHeader(b"x-request-id", requestId(request).encode("ascii"))
        version = request.getHeader(b"tus-resumable")
        if version is None or version.strip() != TUS_VERSION:
            raise ApiError(
                412, "unsupported_version",
                "This server speaks tus 1.0.0: send Tus-Resumable: 1.0.0.",
                {b"tus-version": TUS_VERSION},
            )
        if self._stopping and request.method != b"HEAD":
            raise _stopping()

    async def _live(self, uploadId: str, expiredToo: bool = False) -> ResumableUpload:
        upload = await self.resumable.load(uploadId)
        if upload is None:
            raise ApiError(404, "not_found", "No such upload.")
        if not expiredToo and upload.stored is None and upload.expires <= self.clock.seconds():
            raise ApiError(410, "gone", "This upload expired.")
        return upload

    def uploadMetadata(self, request: IRequest) -> tuple[str, str, dict[str, str]]:
        """
        C{Upload-Metadata} as sent, the file name it gives, and its pairs
        whose values are text (what the C{pre-create} hook is shown).
        """
        raw = request.getHeader(b"upload-metadata") or b""
        try:
            text = raw.decode("ascii")
            pairs = parseMetadata(text)
        except (UnicodeDecodeError, ValueError) as e:
            raise badRequest(f"Upload-Metadata is malformed: {e}.") from None
        value = pairs.get("filename") or pairs.get("name")
        if not value:
            raise ApiError(400, "bad_name", "Upload-Metadata needs a filename.")
        try:
            name = validateName(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "bad_name", "The filename is not valid UTF-8.") from None
        except BadName as e:
            raise ApiError(400, "bad_name", str(e)) from None
        return text.strip(), name, _textPairs(pairs)

    def _partialMetadata(self, request: IRequest) -> str:
        """A partial upload's C{Upload-Metadata}: checked, kept, never a name."""
        raw = request.getHeader(b"upload-metadata") or b""
        try:
            text = raw.decode("ascii")
            parseMetadata(text)
        except (UnicodeDecodeError, ValueError) as e:
            raise badRequest(f"Upload-Metadata is malformed: {e}.") from None
        return text.strip()

    def _uploadHeaders(self, request: IRequest, upload: ResumableUpload) -> None:
        request.setHeader(b"upload-offset", b"%d" % (upload.offset,))
        if upload.length is not None:
            request.setHeader(b"upload-length", b"%d" % (upload.length,))
        if upload.stored is None:
            request.setHeader(b"upload-expires", httpDate(upload.expires))
        else:
            request.setHeader(b"content-location", location(upload.name))


def _publishable(upload: ResumableUpload) -> bool:
    """Whether C{upload} is complete and yet to become its file."""
    return upload.complete and upload.stored is None and not upload.partial


def _textPairs(pairs: dict[str, bytes]) -> dict[str, str]:
    text = {}
    for key, value in pairs.items():
        try:
            text[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return text


def _stopping() -> ApiError:
    return ApiError(
        503, "busy", "The backend is stopping; resume in a moment.", {b"retry-after": b"1"}
    )


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, TakenOver):
        return "taken_over"
    if isinstance(error, _CUT):
        return "cut"
    if isinstance(error, ApiError):
        return error.code
    if isinstance(error, TooLarge):
        return "too_large"
    return type(error).__name__
