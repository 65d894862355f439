"""
Resumable uploads kept in a folder: C{<id>.json} holds the state,
C{<id>.part} the bytes received so far.

The backend keeps this folder under its storage root as C{.tus/}, a name
no file may take, so uploads survive restarts and are never listed.  The
offset in the state only moves once the bytes it counts were fsynced, so
after a crash the state never claims bytes the disk does not hold; bytes
past it are dropped when the upload is next written.

The folder is made again if it is removed under a running backend (the
uploads it held are gone then); while the folder it lives in (the storage
folder, for C{.tus/}) is missing, every operation is L{StorageUnavailable}
(see L{streamrelay.store.folders}).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProducer, IPushProducer
from zope.interface import implementer

from streamrelay.digests import hashFilePrefix
from streamrelay.store import FileInfo, IUploadStore, StorageFull
from streamrelay.store.disk import DiskStore
from streamrelay.store.folders import StorageRoot
from streamrelay.store.groupcommit import Entry
from streamrelay.store.interfaces import StorageUnavailable
from streamrelay.store.placing import fsyncFolder, openToPublish, placeRenamed
from streamrelay.store.writer import QueuedWriter, Runner, inline, storageError, syncAndDrop
from streamrelay.tus.diskconcat import concatenateFiles
from streamrelay.tus.interfaces import (
    ID_PATTERN,
    IPartialWriter,
    IResumableStore,
    ResumableUpload,
)

#: Bytes read at a time when hashing or copying partial data.
READ_SIZE = 1 << 20


@implementer(IPartialWriter)
class PartialWriter:
    """Appends to one C{.part} file through a L{QueuedWriter}."""

    def __init__(self, fd: int, start: int, run: Runner) -> None:
        self.start = start
        self._fd = fd
        self._run = run
        self._writer = QueuedWriter(fd, run)
        self._closed = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._writer.producer = producer if IPushProducer.providedBy(producer) else None

    def unregisterProducer(self) -> None:
        self._writer.producer = None

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def written(self) -> int:
        return self._writer.written

    async def _flush(self) -> int:
        await self._writer.drained()
        return await self._checkpoint()

    def flush(self) -> Deferred[int]:
        return Deferred.fromCoroutine(self._flush())

    async def _checkpoint(self) -> int:
        covered = self._writer.written
        try:
            await self._run(syncAndDrop, self._fd)
        except BaseException as e:
            raise storageError(e) from e
        return covered

    def checkpoint(self) -> Deferred[int]:
        return Deferred.fromCoroutine(self._checkpoint())

    async def _truncate(self) -> None:
        try:
            await self._writer.drained()
        except Exception:
            pass  # the write error was answered; the bytes go anyway
        await self._run(_truncate, self._fd, self.start)

    def truncate(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._truncate())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        fd = self._fd

        def closeFile() -> None:
            try:
                os.close(fd)
            except OSError:
                pass

        self._writer.abandon(closeFile)


def _truncate(fd: int, size: int) -> None:
    os.ftruncate(fd, size)
    os.fsync(fd)


def _openForAppend(path: Path, offset: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.fstat(fd).st_size < offset:
            raise OSError(errno.EIO, f"{path.name} holds fewer bytes than its state counts")
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _writeState(folder: Path, uploadId: str, data: bytes) -> None:
    tmp = folder / f"{uploadId}.json.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / f"{uploadId}.json")
    fsyncFolder(folder)


def _removeFiles(folder: Path, uploadId: str) -> None:
    for suffix in (".part", ".json", ".json.tmp"):
        (folder / f"{uploadId}{suffix}").unlink(missing_ok=True)
    fsyncFolder(folder)


@implementer(IPushProducer)
class _Gate:
    """A push producer for a copy loop: the loop waits while it is paused."""

    def __init__(self) -> None:
        self._paused = False
        self._waiting: Deferred[None] | None = None
        self.stopped = False

    def open(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._paused and not self.stopped:
            self._waiting = d
        else:
            d.callback(None)
        return d

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()


@implementer(IResumableStore)
class DiskResumableStore:
    """
    Resumable uploads in C{folder}, published into C{store}.

    @param run: runs file writes, fsyncs and renames (the backend passes a
        thread pool).
    @param rename: publish into a L{DiskStore} on the same file system by
        renaming the partial file; otherwise (or into any other store) the
        bytes are copied through the store's C{begin}/C{commit}.
    """

    def __init__(
        self, folder: Path, store: IUploadStore, run: Runner = inline, rename: bool = True
    ) -> None:
        self.folder = folder
        self.store = store
        self.run = run
        self.rename = rename
        folder.mkdir(parents=True, exist_ok=True)
        # A folder that is a mount point itself is never made again.
        self._storage = StorageRoot(folder if os.path.ismount(folder) else folder.parent)
        self._cache: dict[str, ResumableUpload] = {}
        self._identity = _identity(os.stat(folder))

    def _ready(self) -> None:
        """
        Make the folder again if it was removed, and forget the states read
        from it if it is not the same folder any more.  Beside a disk store,
        only while that store still holds its storage folder (its lock):
        else another backend has it, and this one keeps off its uploads too.
        """
        if isinstance(self.store, DiskStore):
            self.store.ready()
        made = self._storage.ensure(self.folder)
        try:
            identity = _identity(os.stat(self.folder))
        except OSError as e:
            raise self._storage.failure(e) from e
        if made or identity != self._identity:
            self._cache.clear()
            self._identity = identity

    def _part(self, uploadId: str) -> Path:
        return self.folder / f"{uploadId}.part"

    def ids(self) -> Deferred[list[str]]:
        try:
            self._ready()
            return succeed(self._ids())
        except (StorageUnavailable, StorageFull, OSError):
            # Nothing to sweep while the storage is away.
            return succeed([])

    def _ids(self) -> list[str]:
        return sorted(
            name.removesuffix(".json")
            for name in os.listdir(self.folder)
            if name.endswith(".json") and ID_PATTERN.fullmatch(name.removesuffix(".json"))
        )

    async def _create(self, upload: ResumableUpload) -> None:
        self._ready()
        try:
            await self.run(_createPart, self._part(upload.id))
        except BaseException as e:
            raise self._storage.failure(e) from e
        try:
            await self._save(upload, new=True)
        except BaseException:
            # Nothing of an upload that could not be created stays behind.
            try:
                await self.run(_removeFiles, self.folder, upload.id)
            except OSError:
                pass
            raise

    def create(self, upload: ResumableUpload) -> Deferred[None]:
        return Deferred.fromCoroutine(self._create(upload))

    def _loadNow(self, uploadId: str) -> ResumableUpload | None:
        if not ID_PATTERN.fullmatch(uploadId):
            return None
        self._ready()
        cached = self._cache.get(uploadId)
        if cached is None:
            try:
                data = json.loads((self.folder / f"{uploadId}.json").read_bytes())
                cached = ResumableUpload.fromJSON(data)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise self._storage.failure(e) from e
            except (ValueError, KeyError, TypeError):
                # A damaged record names no usable upload; sweeping removes it.
                return None
            self._cache[uploadId] = cached
        return dataclasses.replace(cached)

    def load(self, uploadId: str) -> Deferred[ResumableUpload | None]:
        return Deferred.fromCoroutine(self._load(uploadId))

    async def _load(self, uploadId: str) -> ResumableUpload | None:
        return self._loadNow(uploadId)

    async def _save(self, upload: ResumableUpload, new: bool = False) -> None:
        data = json.dumps(upload.asJSON(), ensure_ascii=False).encode("utf-8")
        self._ready()
        if not new and upload.id not in self._cache:
            # The folder it was read from was removed or replaced since:
            # its bytes are gone, and a state saved now would claim them.
            raise StorageUnavailable("the upload was removed from the storage")
        try:
            await self.run(_writeState, self.folder, upload.id, data)
        except BaseException as e:
            raise self._storage.failure(e) from e
        self._cache[upload.id] = dataclasses.replace(upload)

    def save(self, upload: ResumableUpload) -> Deferred[None]:
        return Deferred.fromCoroutine(self._save(upload))

    async def _openWriter(self, upload: ResumableUpload) -> IPartialWriter:
        self._ready()
        try:
            fd = await self.run(_openForAppend, self._part(upload.id), upload.offset)
        except BaseException as e:
            raise self._storage.failure(e) from e
        return PartialWriter(fd, upload.offset, self.run)

    def openWriter(self, upload: ResumableUpload) -> Deferred[IPartialWriter]:
        return Deferred.fromCoroutine(self._openWriter(upload))

    async def _hashPrefix(self, upload: ResumableUpload) -> hashlib._Hash:
        self._ready()
        return await self.run(hashFilePrefix, self._part(upload.id), upload.offset)

    def hashPrefix(self, upload: ResumableUpload) -> Deferred[hashlib._Hash]:
        return Deferred.fromCoroutine(self._hashPrefix(upload))

    def _canRename(self) -> bool:
        store = self.store
        if not self.rename or not isinstance(store, DiskStore):
            return False
        try:
            return os.stat(self.folder).st_dev == os.stat(store.root).st_dev
        except OSError:
            return False

    async def _publish(self, upload: ResumableUpload, sha256: str) -> tuple[FileInfo, bool]:
        assert upload.complete
        self._ready()
        part = self._part(upload.id)
        store = self.store
        if self._canRename():
            assert isinstance(store, DiskStore)
            store.ready()
            try:
                fd = await self.run(openToPublish, part, sha256)
                # Synced and renamed with the store's other new files.
                modified, replaced = await store.commits.commit(Entry(
                    fd,
                    partial(placeRenamed, part=part, target=store.root / upload.name,
                            metadata=upload.fileMetadata),
                    folders=(store.root, part.parent),
                    size=upload.offset,
                ))
            except BaseException as e:
                raise store.failure(e) from e
            info = FileInfo(upload.name, upload.offset, sha256, modified, upload.fileMetadata)
            return info, replaced
        result = await self._copy(part, upload, store, sha256)
        await self.run(_removePart, part)
        return result

    async def _copy(
        self, part: Path, upload: ResumableUpload, store: IUploadStore, sha256: str
    ) -> tuple[FileInfo, bool]:
        """Stream the partial file into a new version in C{store}."""
        try:
            fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise self._storage.failure(e) from e
        try:
            target = store.begin(upload.name, upload.fileMetadata)
        except BaseException:
            os.close(fd)
            raise
        gate = _Gate()
        digest = hashlib.sha256()
        try:
            target.registerProducer(gate, True)
            offset = 0
            while offset < upload.offset:
                await gate.open()
                if gate.stopped:
                    raise OSError(errno.EIO, "the store stopped the copy")
                data = await self.run(os.pread, fd, min(READ_SIZE, upload.offset - offset), offset)
                if not data:
                    raise OSError(errno.EIO, f"{part.name} is shorter than its state counts")
                digest.update(data)
                target.write(data)
                offset += len(data)
            target.unregisterProducer()
            if digest.hexdigest() != sha256:
                raise OSError(errno.EIO, f"{part.name} changed on disk: its SHA-256 differs")
            return await target.commit(sha256)
        except BaseException as e:
            target.abort()
            raise self._storage.failure(e) from e
        finally:
            os.close(fd)

    def publish(self, upload: ResumableUpload, sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        return Deferred.fromCoroutine(self._publish(upload, sha256))

    async def _concatenate(
        self, final: ResumableUpload, partials: Sequence[ResumableUpload]
    ) -> hashlib._Hash:
        self._ready()
        sources = [(self._part(p.id), p.offset) for p in partials]
        try:
            return await self.run(concatenateFiles, self._part(final.id), sources)
        except BaseException as e:
            # The final upload holds no byte (its state says so): an empty file.
            try:
                await self.run(_createPart, self._part(final.id))
            except OSError:
                pass
            raise self._storage.failure(e) from e

    def concatenate(
        self, final: ResumableUpload, partials: Sequence[ResumableUpload]
    ) -> Deferred[hashlib._Hash]:
        return Deferred.fromCoroutine(self._concatenate(final, partials))

    async def _remove(self, uploadId: str) -> None:
        if not ID_PATTERN.fullmatch(uploadId):
            return
        self._cache.pop(uploadId, None)
        self._ready()
        try:
            await self.run(_removeFiles, self.folder, uploadId)
        except BaseException as e:
            raise self._storage.failure(e) from e

    def remove(self, uploadId: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._remove(uploadId))


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _createPart(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.close(fd)


def _removePart(path: Path) -> None:
    path.unlink(missing_ok=True)
