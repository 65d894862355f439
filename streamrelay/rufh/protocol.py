"""
The requests of draft-ietf-httpbis-resumable-upload (interop versions in
L{streamrelay.rufh.versions}), over the store tus uploads are kept in.

A creation (C{PUT /files/{name}} or C{POST /uploads/}) that announces a
version streamrelay speaks becomes an upload like a tus one: the
C{pre-create} hook is asked (protocol C{rufh}), the upload is created,
C{104 Upload Resumption Supported} goes out with its C{Location} before a
byte of the body is read, and the body is appended.  The request whose
content ends the upload gets the plain upload's answer (C{201}/C{200},
the file's JSON); an unfinished one gets the upload's URL back.  A body
cut off keeps what arrived (unless it carried C{Content-Digest}, which
can then not be verified), and the client resumes with C{HEAD} and
C{PATCH} on the upload's URL.

Completion: a request saying C{Upload-Complete: ?1} (3:
C{Upload-Incomplete: ?0}) whose content fully arrived completes the
upload; so does reaching the length the client declared (C{Upload-Length},
or C{Content-Length} with C{?1}), as in tus: once every declared byte is
in, nothing can be appended, and a client that lost the final answer
(tus-js-client takes C{Upload-Offset} equal to C{Upload-Length} for
done) finds the file published.  C{Repr-Digest} sent on creation is kept
with the upload and checked then: a mismatch discards the upload and
publishes nothing.
"""

from __future__ import annotations

import base64
import secrets
import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.backend.answers import fileHeaders, fileJSON, location
from streamrelay.errors import ApiError, tooLarge, writeJSON
from streamrelay.hooks.decisions import PreCreateAsker, smallerLimit
from streamrelay.names import BadName, validateName
from streamrelay.receiving import shielded
from streamrelay.rufh.engine import SharedEngine
from streamrelay.rufh.headers import (
    Problem,
    badRequest,
    completedUpload,
    completeness,
    digestOf,
    filenameOf,
    inconsistentLength,
    offsetMismatch,
    sfInteger,
)
from streamrelay.rufh.versions import InteropVersion
from streamrelay.store import FileInfo
from streamrelay.streaming import sendInterim
from streamrelay.tus.headers import contentType, parseMetadata, requestBody
from streamrelay.tus.interfaces import ResumableUpload
from streamrelay.tus.lease import ILease
from streamrelay.tus.protocol import UPLOADS_PATH, TusUploads
from streamrelay.webapp import requestId

#: The C{Upload-Metadata} key under which an upload keeps the hex SHA-256
#: of its C{Repr-Digest} (the state record has no field of its own for it).
REPR_KEY = "streamrelay-repr-sha256"

_Finished = tuple[FileInfo, bool]


class RufhUploads:
    """The draft's requests, for the backend's routes, on tus's engine."""

    _log = Logger()

    def __init__(self, tus: TusUploads) -> None:
        self.engine = SharedEngine(tus)

    # Creation

    async def create(
        self, request: IRequest, version: InteropVersion, name: str | None, ask: PreCreateAsker
    ) -> bytes:
        """
        A creation, to be stored as C{name} (C{PUT /files/{name}}), or the
        name its C{Upload-Metadata} C{filename} or C{Content-Disposition}
        gives (C{POST /uploads/}).
        """
        try:
            return await self._create(request, version, name, ask)
        except Problem as p:
            return p.write(request)

    async def _create(
        self, request: IRequest, version: InteropVersion, name: str | None, ask: PreCreateAsker
    ) -> bytes:
        self._begin(request)
        complete = completeness(request, version)
        complete = True if complete is None else complete
        declared = sfInteger(request, b"upload-length")
        body = requestBody(request)
        sent = body.declaredLength if body is not None else 0
        if complete and sent is not None:
            if declared is not None and declared != sent:
                raise inconsistentLength(
                    f"Upload-Length says {declared} bytes, the complete content {sent}."
                )
            declared = sent
        maxSize = self.engine.maxSize
        if declared is not None and maxSize is not None and declared > maxSize:
            raise tooLarge(maxSize)
        wholeDigest = digestOf(request, b"repr-digest")
        partDigest = digestOf(request, b"content-digest")
        raw, pairs, named = self._metadata(request)
        name = name or named
        if name is None:
            raise ApiError(
                400, "bad_name",
                "Name the file: Upload-Metadata filename, or Content-Disposition filename.",
            )
        decision = await ask(name, declared, pairs)
        limit = smallerLimit(maxSize, decision.maxSize)
        if declared is not None and limit is not None and declared > limit:
            raise tooLarge(limit)
        if wholeDigest is not None:
            kept = base64.b64encode(wholeDigest.encode("ascii")).decode("ascii")
            raw = ",".join(p for p in (raw, f"{REPR_KEY} {kept}") if p)
        now = self.engine.clock.seconds()
        upload = ResumableUpload(
            id=secrets.token_hex(16), length=declared, offset=0, metadata=raw,
            name=decision.name or name, created=now, expires=now + self.engine.expiry,
            fileMetadata=dict(decision.metadata) if decision.metadata else None,
            maxSize=decision.maxSize,
        )
        await self.engine.resumable.create(upload)
        self.engine.started(upload)
        self._log.info(
            "rufh created request_id={rid} upload={id} name={name!r} length={length} "
            "version={version}",
            rid=requestId(request), id=upload.id, name=upload.name,
            length="unknown" if declared is None else declared, version=version.number,
        )
        url = UPLOADS_PATH + upload.id.encode("ascii")
        interim = [(b"location", url), (b"upload-draft-interop-version", version.header)]
        interim += self._limitHeader(version, upload)
        sendInterim(request, 104, interim)
        request.setHeader(b"location", url)
        upload, finished = await shielded(Deferred.fromCoroutine(self._transfer(
            request, version, upload.id, 0, complete, None, partDigest
        )))
        if finished is None:
            request.setHeader(b"location", url)
            for header, value in self._limitHeader(version, upload):
                request.setHeader(header, value)
        answer = self._answer(request, version, upload, finished, 201)
        if finished is not None and version.creationLocation:
            request.setHeader(b"content-location", location(finished[0].name))
            request.setHeader(b"location", url)
        return answer

    # Offset retrieval, append, cancellation

    async def head(self, request: IRequest, version: InteropVersion, uploadId: str) -> bytes:
        try:
            self._begin(request)
            self._strictQuery(request, version)
            holder = await self.engine.acquire(uploadId)
            try:
                upload = _notConcatenated(await self.engine.live(uploadId))
                if upload.complete and upload.stored is None:
                    # Every declared byte is in (the backend stopped before
                    # it published them): publish now, holding the lease.
                    lease = await self.engine.lease(uploadId, holder)
                    try:
                        upload = _notConcatenated(await self.engine.live(uploadId))
                        if upload.complete and upload.stored is None:
                            upload, _ = await self._finish(request, upload)
                    finally:
                        await lease.release()
            finally:
                self.engine.release(uploadId, holder)
        except Problem as p:
            return p.write(request)
        done = upload.stored is not None
        request.setHeader(b"upload-offset", b"%d" % (upload.offset,))
        request.setHeader(version.completeHeader, version.completeValue(done))
        if upload.length is not None:
            request.setHeader(b"upload-length", b"%d" % (upload.length,))
        if done:
            request.setHeader(b"content-location", location(upload.name))
        else:
            for header, value in self._limitHeader(version, upload):
                request.setHeader(header, value)
        request.setHeader(b"cache-control", b"no-store")
        request.setResponseCode(204)
        return b""

    async def append(self, request: IRequest, version: InteropVersion, uploadId: str) -> bytes:
        try:
            self._begin(request)
            if version.appendType is not None and contentType(request) != version.appendType:
                raise Problem(
                    415, "unsupported_media_type",
                    f"An append takes Content-Type: {version.appendType.decode()}.",
                )
            offset = sfInteger(request, b"upload-offset")
            if offset is None:
                raise badRequest("An append needs Upload-Offset.")
            complete = bool(completeness(request, version))
            declared = sfInteger(request, b"upload-length")
            partDigest = digestOf(request, b"content-digest")
            await self.engine.live(uploadId)
            upload, finished = await shielded(Deferred.fromCoroutine(self._transfer(
                request, version, uploadId, offset, complete, declared, partDigest
            )))
            return self._answer(request, version, upload, finished, version.pendingStatus)
        except Problem as p:
            return p.write(request)

    async def cancel(self, request: IRequest, version: InteropVersion, uploadId: str) -> bytes:
        try:
            self._begin(request)
            self._strictQuery(request, version)
        except Problem as p:
            return p.write(request)
        upload = await self.engine.live(uploadId, expiredToo=True)
        await shielded(Deferred.fromCoroutine(self.engine.terminate(request, uploadId)))
        if upload.stored is None:
            # A finished upload's file stays: only an unfinished one is a deletion.
            await self.engine.hooks.deleted(self.engine.contexts(request, "rufh"), upload.name)
        request.setResponseCode(204)
        return b""

    # Writing

    async def _transfer(
        self,
        request: IRequest,
        version: InteropVersion,
        uploadId: str,
        offset: int,
        complete: bool,
        declared: int | None,
        partDigest: str | None,
    ) -> tuple[ResumableUpload, _Finished | None]:
        """
        Append the request's content at C{offset}, holding the upload
        (taking it over from an earlier request), and publish the upload
        if that completes it.
        """
        holder = await self.engine.acquire(uploadId)
        lease: ILease | None = None
        try:
            lease = await self.engine.lease(uploadId, holder)
            upload = _notConcatenated(await self.engine.live(uploadId))
            body = requestBody(request)
            sent = body.declaredLength if body is not None else 0
            if upload.stored is not None:
                if version.contentForCompleted and sent != 0:
                    raise inconsistentLength("The upload is complete: nothing can be appended.")
                raise completedUpload()
            if offset != upload.offset:
                raise offsetMismatch(upload.offset, offset)
            total = offset + sent if complete and sent is not None else None
            for length in (declared, total):
                if length is None:
                    continue
                if upload.length is not None and upload.length != length:
                    raise inconsistentLength(
                        f"The upload's length is {upload.length} bytes, not {length}."
                    )
                limit = self.engine.limit(upload)
                if limit is not None and length > limit:
                    raise tooLarge(limit)
                if length < upload.offset:
                    raise inconsistentLength(
                        f"{length} bytes is less than the {upload.offset} received."
                    )
                if upload.length is None:
                    upload.length = length
                    await self.engine.resumable.save(upload)
            room = self.engine.room(upload)
            if room is not None and sent is not None and sent > room:
                raise Problem(
                    413, "too_large",
                    f"The content is {sent} bytes; only {room} fit in this upload.",
                )
            start = upload.offset
            if body is not None and sent != 0:
                checksum = None if partDigest is None else ("sha256", bytes.fromhex(partDigest))
                try:
                    upload = await self.engine.receive(
                        request, holder, upload, body, room, checksum, lease
                    )
                except ApiError as e:
                    self._logAppend(request, version, upload, start, e.code)
                    if e.status == 460:
                        raise Problem(
                            400, "digest_mismatch",
                            "The content does not match its Content-Digest; "
                            "none of it was appended.",
                            headers={b"upload-offset": b"%d" % (upload.offset,)},
                        ) from None
                    raise
                except BaseException:
                    self._logAppend(request, version, upload, start, "cut")
                    raise
            elif partDigest is not None and partDigest != _EMPTY_SHA256:
                raise Problem(400, "digest_mismatch", "The empty content does not match "
                              "its Content-Digest.")
            self._logAppend(request, version, upload, start, "ok")
            if complete and upload.length is None:
                upload.length = upload.offset
                await self.engine.resumable.save(upload)
            if upload.complete:
                self.engine.stillHeld(holder, lease)
                return await self._finish(request, upload)
            if complete:
                raise inconsistentLength(
                    f"The upload is {upload.length} bytes; {upload.offset} were received."
                )
            return upload, None
        finally:
            if lease is not None:
                await lease.release()
            self.engine.release(uploadId, holder)

    async def _finish(
        self, request: IRequest, upload: ResumableUpload
    ) -> tuple[ResumableUpload, _Finished]:
        """Check the C{Repr-Digest} and publish the complete upload as its file."""
        started = time.monotonic()
        try:
            sha256 = (await self.engine.runningHash(upload)).hexdigest()
        except FileNotFoundError:
            # Published already; the backend stopped before noting it.
            info = await self.engine.resumable.store.stat(upload.name)
            if info is None or info.size != upload.offset:
                raise
            stored, replaced = info, True
        else:
            expected = _reprDigest(upload)
            if expected is not None and expected != sha256:
                await self.engine.resumable.remove(upload.id)
                self.engine.forget(upload.id)
                self._log.info(
                    "rufh digest mismatch request_id={rid} upload={id}: discarded",
                    rid=requestId(request), id=upload.id,
                )
                raise Problem(
                    400, "digest_mismatch",
                    "The upload does not match its Repr-Digest; it was discarded "
                    "and nothing was stored.",
                    headers={b"upload-complete": b"?1"},
                )
            stored, replaced = await self.engine.publish(upload, sha256)
        # As tus does: the event is durable before the upload notes that it
        # is published, so that a failure in between is recorded again by
        # the next request, which finds the file published.
        self.engine.forget(upload.id)
        await self.engine.hooks.finished(self.engine.contexts(request, "rufh"), stored)
        upload.stored = {**fileJSON(stored), "replaced": replaced}
        await self.engine.resumable.save(upload)
        self._log.info(
            "upload stored request_id={rid} name={name!r} size={size} "
            "sha256={sha256} seconds={seconds:.3f} upload={id}",
            rid=requestId(request), name=stored.name, size=stored.size,
            sha256=stored.sha256, seconds=time.monotonic() - started, id=upload.id,
        )
        return upload, (stored, replaced)

    # Answers and helpers

    def _answer(
        self,
        request: IRequest,
        version: InteropVersion,
        upload: ResumableUpload,
        finished: _Finished | None,
        pending: int,
    ) -> bytes:
        request.setHeader(b"upload-offset", b"%d" % (upload.offset,))
        request.setHeader(version.completeHeader, version.completeValue(finished is not None))
        if finished is None:
            request.setResponseCode(pending)
            return b""
        info, replaced = finished
        fileHeaders(request, info)
        return writeJSON(request, 200 if replaced else 201, fileJSON(info))

    def _logAppend(
        self,
        request: IRequest,
        version: InteropVersion,
        upload: ResumableUpload,
        start: int,
        outcome: str,
    ) -> None:
        self._log.info(
            "rufh append request_id={rid} upload={id} version={version} offset={start} "
            "kept={kept} outcome={outcome}",
            rid=requestId(request), id=upload.id, version=version.number, start=start,
            kept=upload.offset - start, outcome=outcome,
        )

    def _limitHeader(
        self, version: InteropVersion, upload: ResumableUpload
    ) -> list[tuple[bytes, bytes]]:
        if version.limitAge is None:
            return []
        limits = []
        limit = self.engine.limit(upload)
        if limit is not None:
            limits.append(b"max-size=%d" % (limit,))
        left = max(0, int(upload.expires - self.engine.clock.seconds()))
        limits.append(version.limitAge + b"=%d" % (left,))
        return [(b"upload-limit", b", ".join(limits))]

    def _begin(self, request: IRequest) -> None:
        request.setHeader(b"x-request-id", requestId(request).encode("ascii"))
        if self.engine.stopping and request.method != b"HEAD":
            raise ApiError(
                503, "busy", "The backend is stopping; resume in a moment.",
                {b"retry-after": b"1"},
            )

    def _strictQuery(self, request: IRequest, version: InteropVersion) -> None:
        if version.strictQueries and (
            request.getHeader(b"upload-offset") is not None
            or request.getHeader(version.completeHeader) is not None
        ):
            raise badRequest(
                f"{request.method.decode()} takes neither Upload-Offset nor "
                f"{version.completeHeader.decode().title()}."
            )

    def _metadata(self, request: IRequest) -> tuple[str, dict[str, str], str | None]:
        """
        C{Upload-Metadata} as sent, its text pairs, and the file name it or
        C{Content-Disposition} gives (if any).
        """
        raw = request.getHeader(b"upload-metadata") or b""
        try:
            text = raw.decode("ascii").strip()
            pairs = parseMetadata(text)
        except (UnicodeDecodeError, ValueError) as e:
            raise badRequest(f"Upload-Metadata is malformed: {e}.") from None
        if REPR_KEY in pairs:
            raise badRequest(f"Upload-Metadata key {REPR_KEY!r} is streamrelay's own.")
        textPairs: dict[str, str] = {}
        for key, value in pairs.items():
            try:
                textPairs[key] = value.decode("utf-8")
            except UnicodeDecodeError:
                continue
        name = textPairs.get("filename") or textPairs.get("name") or filenameOf(request)
        if name is not None:
            try:
                name = validateName(name)
            except BadName as e:
                raise ApiError(400, "bad_name", str(e)) from None
        return text, textPairs, name


def _notConcatenated(upload: ResumableUpload) -> ResumableUpload:
    """The upload, unless it is one of tus concatenation's (never the draft's)."""
    if upload.concat is not None:
        raise Problem(
            403, "forbidden",
            f"This is a tus concatenation upload ({upload.concat}); go on with tus.",
        )
    return upload


def _reprDigest(upload: ResumableUpload) -> str | None:
    try:
        value = parseMetadata(upload.metadata).get(REPR_KEY)
    except ValueError:
        return None
    return None if value is None else value.decode("ascii")


_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


__all__ = ["REPR_KEY", "RufhUploads"]
