"""
The part of the tus engine (L{TusUploads}) that resumable uploads of the
IETF draft share with tus uploads: one lock registry (so a request of
either protocol takes an upload over from one of the other, and stopping
the backend stops both), the running SHA-256 of each upload, and the
write path that keeps what a cut request received.

This is the one module that reaches into L{TusUploads}' own attributes;
the draft's protocol talks to this adapter only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from streamrelay.hooks.clients import ClientContexts
from streamrelay.hooks.interfaces import IHooks
from streamrelay.store import FileInfo
from streamrelay.streaming import RequestBody
from streamrelay.tus.interfaces import IResumableStore, ResumableUpload
from streamrelay.tus.lease import ILease
from streamrelay.tus.protocol import TusUploads
from streamrelay.tus.writing import WriteHolder


class SharedEngine:
    """L{TusUploads}' store, settings, locks and write path, for another protocol."""

    def __init__(self, tus: TusUploads) -> None:
        self._tus = tus

    @property
    def resumable(self) -> IResumableStore:
        return self._tus.resumable

    @property
    def clock(self) -> IReactorTime:
        return self._tus.clock

    @property
    def maxSize(self) -> int | None:
        return self._tus.maxSize

    @property
    def expiry(self) -> float:
        return self._tus.expiry

    @property
    def hooks(self) -> IHooks:
        return self._tus.hooks

    @property
    def contexts(self) -> ClientContexts:
        return self._tus.contexts

    @property
    def stopping(self) -> bool:
        return self._tus._stopping

    async def acquire(self, uploadId: str) -> WriteHolder:
        """Hold the upload, taking it over from whoever writes to it."""
        return await self._tus._acquire(uploadId)

    def release(self, uploadId: str, holder: WriteHolder) -> None:
        self._tus._release(uploadId, holder)

    async def lease(self, uploadId: str, holder: WriteHolder) -> ILease:
        """
        The upload's lease in the storage (one backend writes to an upload
        at a time), renewed until released; another backend holding it is
        423 at once, its request going on (a takeover reaches requests on
        this backend only).  Losing it stops C{holder}'s request.
        """
        return await self._tus._lease(uploadId, holder)

    def stillHeld(self, holder: WriteHolder, lease: ILease) -> None:
        """Fail with 423 once the lease is lost."""
        self._tus._stillHeld(holder, lease)

    async def live(self, uploadId: str, expiredToo: bool = False) -> ResumableUpload:
        """The upload (404 if unknown, 410 if expired unless C{expiredToo})."""
        return await self._tus._live(uploadId, expiredToo)

    def limit(self, upload: ResumableUpload) -> int | None:
        """The most bytes the upload may hold (the backend's or its hook's limit)."""
        return self._tus._limit(upload)

    def room(self, upload: ResumableUpload) -> int | None:
        return self._tus._room(upload)

    def started(self, upload: ResumableUpload) -> None:
        """A new upload, with no bytes yet: its running SHA-256 is empty."""
        self._tus._hashes[upload.id] = (0, hashlib.sha256())

    def forget(self, uploadId: str) -> None:
        self._tus._hashes.pop(uploadId, None)

    async def publish(self, upload: ResumableUpload, sha256: str) -> tuple[FileInfo, bool]:
        """Publish the complete upload as its file (507, 409 as tus answers them)."""
        return await self._tus.publishUpload(upload, sha256)

    async def runningHash(self, upload: ResumableUpload) -> Any:
        """The SHA-256 state of the upload's kept bytes."""
        return await self._tus._runningHash(upload)

    async def receive(
        self,
        request: IRequest,
        holder: WriteHolder,
        upload: ResumableUpload,
        body: RequestBody,
        room: int | None,
        checksum: tuple[str, bytes] | None,
        lease: ILease | None = None,
    ) -> ResumableUpload:
        """
        Append C{body} (while C{holder} holds the upload and C{lease}): a
        cut body keeps what arrived unless C{checksum} was given, which must
        then match.
        """
        return await self._tus._receive(request, holder, upload, body, room, checksum, lease)

    async def terminate(self, request: IRequest, uploadId: str) -> None:
        """Take the upload over and remove it with its bytes."""
        await self._tus.removeUpload(request, uploadId)
