"""
The default store: files in a folder, byte for byte under their names.

A new version is written to C{<root>/.partial/<random>}, fsynced, and
put in place as C{<root>/<name>}: linked there when the name is free (which
fails when it is not, so "only if new" is one atomic step), else renamed
over the older version.  Readers see the old file or the new one, never a
partial one.  The SHA-256 of each file is kept in an extended attribute set
before, so it travels with the file atomically.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import os
import secrets
import stat
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IProducer,
    IPushProducer,
    IReactorTime,
)
from zope.interface import implementer

from streamrelay.names import isValidName
from streamrelay.splicing import FileTarget
from streamrelay.store.direct import DirectPool, DirectWriter, bufferedIO, directIO
from streamrelay.store.diskfile import DiskFile, fileInfo
from streamrelay.store.diskmeta import forgetMetadata
from streamrelay.store.folders import StorageRoot
from streamrelay.store.groupcommit import Entry, GroupCommit
from streamrelay.store.interfaces import (
    FileInfo,
    IExclusiveUpload,
    IRevocableUpload,
    ISealableUpload,
    ISpliceTarget,
    IStoredFile,
    IUploadStore,
    NotAFile,
    StorageFull,
    StorageUnavailable,
)
from streamrelay.store.placing import (
    Published,
    fsyncFolder,
    isFolder,
    placeFlushed,
    revokeFile,
    takeBack,
)
from streamrelay.store.spares import SparePool
from streamrelay.store.writer import (
    SYNC_EVERY,
    QueuedWriter,
    Runner,
    WriteBudget,
    WritePool,
    inline,
    storageError,
)

PARTIAL_DIR = ".partial"
#: In PARTIAL_DIR: the lock a backend holds on its storage folder while it
#: runs (see L{DiskStore.claim}); it holds the backend's process id.
LOCK_FILE = ".lock"


#: Bytes all uploads together may hold queued for the disk (one upload
#: holds at most 8 MiB).
WRITE_BUDGET = 24 << 20
#: The same with direct I/O: its writes wait for the disk, so its queue is
#: fuller, and the pool's buffers come on top (see
#: L{streamrelay.store.direct}).
DIRECT_WRITE_BUDGET = 12 << 20


@implementer(IExclusiveUpload, IRevocableUpload, ISealableUpload, ISpliceTarget)
class DiskUpload:
    """
    One file being written into a L{DiskStore}: written by threads through
    a L{DirectWriter} (or, where the file system refuses direct I/O, a
    L{QueuedWriter}), then synced and put in place by the store's group
    commit, together with the other files finished meanwhile.  Sealed, it
    is synced and closed at once, and only put in place when committed.
    """

    def __init__(
        self, store: DiskStore, name: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.size = 0
        self.metadata = dict(metadata) if metadata else None
        self._store = store
        self._path, fd = store.spares.new()
        #: Owned here until publishing takes it (and always closes it).
        self._fd: int | None = fd
        self._writer: QueuedWriter | DirectWriter
        if store.direct is not None and directIO(fd):
            self._writer = DirectWriter(fd, store.direct, budget=store.budget)
        else:
            self._writer = QueuedWriter(fd, store.writes, budget=store.budget)
        self._closed = False
        self._published: Published | None = None
        #: The file's status once sealed (flushed and closed).
        self._sealed: os.stat_result | None = None
        #: Whether the body is written straight into the file (then this
        #: reads it back, see fileTarget).
        self._spliced = False
        self._readFd: int | None = None
        self._throttle = (
            _Throttle(store.clock, store.writeRate)
            if store.clock is not None and store.writeRate
            else None
        )

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._writer.producer = producer if IPushProducer.providedBy(producer) else None

    def unregisterProducer(self) -> None:
        self._writer.producer = None

    def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError(f"upload of {self.name!r} is closed")
        if self._spliced:
            raise RuntimeError(f"upload of {self.name!r} is written into its file")
        self._writer.write(data)
        self._wrote(len(data))

    def _wrote(self, count: int) -> None:
        self.size += count
        if self._throttle is not None and self._writer.producer is not None:
            self._throttle.wrote(count, self._writer.producer)

    # ISpliceTarget: the file itself, for a body spliced into it

    def fileTarget(self) -> FileTarget | None:
        """
        Let the body be written into the file directly, from its start and
        through the page cache; None once anything was written.
        """
        if self._closed or self.size or self._fd is None or self._spliced:
            return None
        try:
            self._readFd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if isinstance(self._writer, DirectWriter):
            bufferedIO(self._fd)
        self._spliced = True
        return FileTarget(self._fd, self._readFd, 0, storageError)

    def wroteToFile(self, data: memoryview) -> None:
        if self._closed:
            raise RuntimeError(f"upload of {self.name!r} is closed")
        self._wrote(len(data))

    # IUpload, IExclusiveUpload, IRevocableUpload

    def commit(self, sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        return self._startCommit(sha256, replace=True, revocable=False)

    def commitNew(self, sha256: str) -> Deferred[FileInfo]:
        d = self._startCommit(sha256, replace=False, revocable=False)
        return d.addCallback(lambda result: result[0])

    def commitRevocably(self, sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        return self._startCommit(sha256, replace=True, revocable=True)

    def revoke(self) -> Deferred[None]:
        published, self._published = self._published, None
        if published is None:
            return succeed(None)
        return self._store.run(revokeFile, self._store.root / self.name, published)

    def settle(self) -> Deferred[None]:
        published, self._published = self._published, None
        if published is None or published.kept is None:
            return succeed(None)
        return self._store.run(published.kept.unlink, True)

    # ISealableUpload

    def seal(self) -> Deferred[None]:
        if self._closed:
            raise RuntimeError(f"upload of {self.name!r} is closed")
        return Deferred.fromCoroutine(self._seal())

    async def _seal(self) -> None:
        try:
            await self._writer.finish()
            if self._closed:
                return  # aborted meanwhile: the file is discarded
            self._closeReader()
            fd, self._fd = self._fd, None
            assert fd is not None
            self._sealed = await self._store.commits.commit(Entry(fd, _status, size=self.size))
        except BaseException as e:
            raise storageError(e) from e

    def _startCommit(
        self, sha256: str, replace: bool, revocable: bool
    ) -> Deferred[tuple[FileInfo, bool]]:
        if self._closed:
            raise RuntimeError(f"upload of {self.name!r} is closed")
        self._closed = True
        return Deferred.fromCoroutine(self._commit(sha256, replace, revocable))

    async def _commit(self, sha256: str, replace: bool, revocable: bool) -> tuple[FileInfo, bool]:
        keep = self._store.partialDir / f"{secrets.token_hex(16)}.old" if revocable else None
        try:
            await self._writer.finish()
            self._closeReader()
            fd, self._fd = self._fd, None
            flushed = self._sealed if fd is None else fd
            assert flushed is not None
            target = self._store.root / self.name
            published = await self._store.commits.commit(Entry(
                flushed,
                partial(placeFlushed, partial=self._path, target=target, sha256=sha256,
                        replace=replace, keep=keep, metadata=self.metadata),
                folders=(self._store.root,),
                withdraw=partial(takeBack, target),
                size=self.size,
            ))
        except BaseException as e:
            self._discard()
            raise self._store.failure(e) from e
        if revocable:
            self._published = published
        info = FileInfo(self.name, self.size, sha256, published.modified, self.metadata)
        return info, published.replaced

    def abort(self) -> None:
        if self._throttle is not None:
            self._throttle.cancel()
        if not self._closed:
            self._closed = True
            self._writer.abandon(self._discard)

    def _closeReader(self) -> None:
        fd, self._readFd = self._readFd, None
        if fd is not None:
            os.close(fd)

    def _discard(self) -> None:
        self._closeReader()
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass


def _status(st: os.stat_result | None) -> os.stat_result:
    """A sealed file's status, as its group commit gives it."""
    assert st is not None
    return st


class _Throttle:
    """
    Slows writes to about C{rate} bytes a second by pausing the producer:
    how streamrelay's tests stand in for a slow disk.
    """

    def __init__(self, clock: IReactorTime, rate: int) -> None:
        self._clock = clock
        self._rate = rate
        self._start = clock.seconds()
        self._written = 0
        self._call: IDelayedCall | None = None

    def wrote(self, count: int, producer: IPushProducer) -> None:
        self._written += count
        due = self._start + self._written / self._rate
        delay = due - self._clock.seconds()
        if delay > 0 and self._call is None:
            producer.pauseProducing()
            self._call = self._clock.callLater(delay, self._resume, producer)

    def _resume(self, producer: IPushProducer) -> None:
        self._call = None
        producer.resumeProducing()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None



@implementer(IUploadStore)
class DiskStore:
    """
    Files kept under C{root}.

    The root may go away while the backend runs and come back (see
    L{streamrelay.store.folders}): meanwhile every operation raises
    L{StorageUnavailable}; once it is back, C{.partial/} and the lock of
    L{claim} are made again as uploads need them.

    @param run: runs file writes, fsyncs and renames; the service passes a
        thread pool so disk waits never stall the reactor (default: inline).
    @param writeRate: when set (with C{clock}), writes are slowed to about
        this many bytes a second; for tests of backpressure only.
    @param direct: write new files with direct I/O where the file system
        allows it (see L{streamrelay.store.direct}); else through the page
        cache, synced in the background.
    """

    def __init__(
        self,
        root: Path,
        clock: IReactorTime | None = None,
        writeRate: int | None = None,
        run: Runner = inline,
        direct: bool = True,
    ) -> None:
        self.root = root
        self.run = run
        self.writes = WritePool(run, syncEvery=SYNC_EVERY)
        self.direct = DirectPool(run) if direct else None
        self.budget = WriteBudget(DIRECT_WRITE_BUDGET if direct else WRITE_BUDGET)
        self.partialDir = root / PARTIAL_DIR
        self.clock = clock
        self.writeRate = writeRate
        self.partialDir.mkdir(parents=True, exist_ok=True)
        self.storage = StorageRoot(root)
        #: Syncs and places the files of uploads finished at about the same
        #: time together (see L{streamrelay.store.groupcommit}).
        self.commits = GroupCommit(run)
        #: The empty files new uploads are written to, made ahead of time
        #: by C{run} (see L{streamrelay.store.spares}).
        self.spares = SparePool(self.partialDir, run)

    def ready(self) -> None:
        """
        Raise L{StorageUnavailable} unless new files can be written here:
        the root is there, and so are C{.partial/} and this process's lock
        (both made again if they were removed, or the root replaced).
        """
        if self.storage.ensure(self.partialDir):
            # Made again: the spares were files of the old one.  (Taking a
            # spare checks that too; this lets go of them at once.)
            self.spares.discard()
        self._keepClaim()

    def failure(self, error: BaseException) -> BaseException:
        """The error a failed file operation of this store is reported as."""
        return self.storage.failure(error)

    def begin(self, name: str, metadata: Mapping[str, str] | None = None) -> DiskUpload:
        self.ready()
        if isFolder(self.root / name):
            raise NotAFile(name)
        try:
            return DiskUpload(self, name, metadata)
        except OSError as e:
            raise self.failure(e) from e

    def _openFile(self, name: str) -> int | None:
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise self.failure(e) from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def stat(self, name: str) -> Deferred[FileInfo | None]:
        self.storage.check()
        fd = self._openFile(name)
        if fd is None:
            return succeed(None)
        try:
            return succeed(fileInfo(name, fd, self.root))
        finally:
            os.close(fd)

    def open(self, name: str) -> Deferred[IStoredFile | None]:
        self.storage.check()
        fd = self._openFile(name)
        if fd is None:
            return succeed(None)
        try:
            return succeed(DiskFile(self._clock(), name, fd, self.root))
        except BaseException:
            os.close(fd)
            raise

    def list(self, after: str | None, limit: int) -> Deferred[tuple[list[FileInfo], bool]]:
        self.storage.check()
        try:
            names = [
                entry.name
                for entry in os.scandir(self.root)
                # Files put in the folder by other means may have names the
                # API cannot name (not UTF-8: decoded with surrogate escapes).
                if isValidName(entry.name)
                and (after is None or entry.name > after)
                and entry.is_file(follow_symlinks=False)
            ]
        except OSError as e:
            raise self.failure(e) from e
        page = heapq.nsmallest(limit + 1, names)
        files = []
        for name in page[:limit]:
            fd = self._openFile(name)
            if fd is None:
                continue  # removed meanwhile
            try:
                files.append(fileInfo(name, fd, self.root))
            finally:
                os.close(fd)
        return succeed((files, len(page) > limit))

    def delete(self, name: str) -> Deferred[bool]:
        self.storage.check()
        path = self.root / name
        if not path.is_file() or path.is_symlink():
            return succeed(False)
        try:
            path.unlink()
        except FileNotFoundError:
            return succeed(False)
        except OSError as e:
            raise self.failure(e) from e
        forgetMetadata(self.root, name)
        try:
            self.syncFolder()
        except OSError as e:
            raise self.failure(e) from e
        return succeed(True)

    def _clock(self) -> IReactorTime:
        if self.clock is None:
            from twisted.internet import reactor

            return reactor  # type: ignore[return-value]
        return self.clock

    _claim: int | None = None

    def claim(self) -> bool:
        """
        Take the storage folder for this process: an exclusive lock on
        C{.partial/.lock}, held until the process ends (or L{release}).
        Two backends on one folder would sweep each other's uploads in
        flight, so while another process holds it this raises L{OSError}
        (C{EBUSY}) naming the folder and the holder's process id.  False
        where the file system has no locks (nothing is held then).

        A lock file removed (with C{.partial/}, or the root replaced) is
        made and locked again by L{ready}.
        """
        fd = self._lock()
        if fd is None:
            return False
        self._claim = fd
        return True

    def _keepClaim(self) -> None:
        """
        Lock C{.partial/.lock} again if the file locked by L{claim} is no
        longer there: else a second backend could take the folder.  If
        one did meanwhile, it keeps it, and this store is
        L{StorageUnavailable} until it lets go.
        """
        held = self._claim
        if held is None:
            return
        try:
            current = os.stat(self.partialDir / LOCK_FILE)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self.failure(e) from e
        else:
            mine = os.fstat(held)
            if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                return
        try:
            fd = self._lock()
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise StorageUnavailable(e.strerror) from None
            raise self.failure(e) from e
        os.close(held)
        self._claim = fd

    def _lock(self) -> int | None:
        """
        Lock C{.partial/.lock}: its open file, or None where the file
        system has no locks; L{OSError} C{EBUSY} if another process holds it.
        """
        fd = os.open(self.partialDir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OSError(
                errno.EBUSY,
                f"in use by another streamrelay-backend (process {holder})",
                str(self.root),
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    def release(self) -> None:
        """Let go of the folder taken by L{claim}."""
        fd, self._claim = self._claim, None
        if fd is not None:
            os.close(fd)

    def sweep(self) -> int:
        """
        Remove every file in C{.partial/} but the lock; return how many held
        bytes of an upload.  Empty files are removed without being counted:
        spare files (this store's own, or those a stopped backend left),
        or uploads that had received nothing.
        """
        self.spares.discard()
        count = 0
        for entry in self.partialDir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            try:
                held = entry.lstat().st_size > 0
            except FileNotFoundError:
                continue
            entry.unlink(missing_ok=True)
            count += held
        return count

    def close(self) -> Deferred[None]:
        """
        The store stops: its spare files are removed (and no more made).
        Uploads under way go on; those begun later create their own files.
        """
        return self.spares.close()

    def syncFolder(self) -> None:
        fsyncFolder(self.root)

    def writable(self) -> bool:
        """Whether new files can be written (see L{ready}): what C{/readyz} says."""
        try:
            self.ready()
        except (StorageUnavailable, StorageFull, OSError):
            return False
        return os.access(self.partialDir, os.W_OK)
