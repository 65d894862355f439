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
import hashlib
import heapq
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProducer,
    IPushProducer,
    IReactorTime,
)
from zope.interface import implementer

from streamrelay.errors import StorageUnavailable
from streamrelay.names import isValidName
from streamrelay.splicing import FileTarget
from streamrelay.store.direct import DirectPool, DirectWriter, bufferedIO, directIO
from streamrelay.store.folders import StorageRoot
from streamrelay.store.interfaces import (
    FileInfo,
    IExclusiveUpload,
    IRevocableUpload,
    ISealableUpload,
    ISpliceTarget,
    IStoredFile,
    IUploadStore,
    NameTaken,
    NotAFile,
    StorageFull,
)
from streamrelay.store.writer import (
    SYNC_EVERY,
    QueuedWriter,
    Runner,
    WriteBudget,
    WritePool,
    dropCached,
    inline,
    storageError,
)

PARTIAL_DIR = ".partial"
#: In PARTIAL_DIR: the lock a backend holds on its storage folder while it
#: runs (see L{DiskStore.claim}); it holds the backend's process id.
LOCK_FILE = ".lock"
SHA256_XATTR = "user.streamrelay.sha256"


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
    L{QueuedWriter}), fsynced and put in place by a thread.  Sealed, it is
    fsynced and closed at once, and only put in place when committed.
    """

    def __init__(self, store: DiskStore, name: str) -> None:
        self.name = name
        self.size = 0
        self._store = store
        self._path = store.partialDir / secrets.token_hex(16)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        #: Owned here until publishing takes it (and always closes it).
        self._fd: int | None = fd
        self._writer: QueuedWriter | DirectWriter
        if store.direct is not None and directIO(fd):
            self._writer = DirectWriter(fd, store.direct, budget=store.budget)
        else:
            self._writer = QueuedWriter(fd, store.writes, budget=store.budget)
        self._closed = False
        self._published: _Published | None = None
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
        return self._store.run(_revoke, self._store.root / self.name, published)

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
            self._sealed = await self._store.run(_flush, fd)
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
            published = await self._store.run(
                _publish, flushed, self._path, self._store.root / self.name, sha256, replace,
                keep,
            )
        except BaseException as e:
            self._discard()
            raise self._store.failure(e) from e
        if revocable:
            self._published = published
        return FileInfo(self.name, self.size, sha256, published.modified), published.replaced

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


@dataclass(frozen=True)
class _Published:
    """A version put in place, and what it replaced."""

    modified: float
    replaced: bool
    #: (st_dev, st_ino): whether the name still holds this version.
    inode: tuple[int, int]
    #: Where the version replaced is kept aside, for a revocable commit.
    kept: Path | None


#: Errors of link() where the file system keeps no hard links.
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def _flush(fd: int) -> os.stat_result:
    """(In a thread.) Flush a written file to the disk and close it; its status."""
    try:
        os.fsync(fd)
        dropCached(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _publish(
    file: int | os.stat_result,
    partial: Path,
    target: Path,
    sha256: str,
    replace: bool,
    keep: Path | None,
) -> _Published:
    """
    (In a thread.) Flush the file and close it (given open; given by its
    status, L{_flush} did already), keep its digest with it, and put it in
    place (see L{placeFile}); fsync the folder so that survives a crash.
    """
    st = _flush(file) if isinstance(file, int) else file
    _setSHA256(partial, sha256)
    replaced, kept = placeFile(partial, target, replace, keep)
    fsyncFolder(target.parent)
    return _Published(st.st_mtime, replaced, (st.st_dev, st.st_ino), kept)


#: Held while a file is put in place or taken back: each of those is a few
#: steps (check, keep aside, rename), and another upload's steps between
#: them would be lost or undone.
_PLACING = threading.Lock()


def placeFile(
    partial: Path, target: Path, replace: bool = True, keep: Path | None = None
) -> tuple[bool, Path | None]:
    with _PLACING:
        return _placeFile(partial, target, replace, keep)


def _placeFile(
    partial: Path, target: Path, replace: bool, keep: Path | None
) -> tuple[bool, Path | None]:
    """
    (In a thread.) Move C{partial} to C{target}: whether it replaced a
    file there, and where that file is kept aside (at C{keep}, when given
    and the file system keeps hard links).

    A free name is taken by linking, which fails when the name is taken
    meanwhile: with C{replace} false, that is L{NameTaken}, in one atomic
    step.  A taken name is replaced by an atomic rename.  A folder at the
    name is L{NotAFile}.  On failure, C{partial} is left for the caller.
    """
    name = target.name
    try:
        os.link(partial, target, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        return _placeWithoutLinks(partial, target, replace), None
    else:
        os.unlink(partial)
        return False, None
    if _isFolder(target):
        raise NotAFile(name)
    if not replace:
        raise NameTaken(name)
    kept = _keepAside(target, keep) if keep is not None else None
    try:
        os.replace(partial, target)
    except BaseException as e:
        if kept is not None:
            kept.unlink(missing_ok=True)
        if isinstance(e, IsADirectoryError):
            raise NotAFile(name) from e
        raise
    # A rename between two links of one file does nothing: so it goes when
    # publishing again what a crash stopped between link and unlink.
    partial.unlink(missing_ok=True)
    return True, kept


def _placeWithoutLinks(partial: Path, target: Path, replace: bool) -> bool:
    """
    Where the file system keeps no hard links, the check that the name is
    free and the rename are two steps: the best it allows.
    """
    if _isFolder(target):
        raise NotAFile(target.name)
    existed = os.path.lexists(target)
    if existed and not replace:
        raise NameTaken(target.name)
    try:
        os.replace(partial, target)
    except IsADirectoryError as e:
        raise NotAFile(target.name) from e
    return existed


def _keepAside(target: Path, keep: Path) -> Path | None:
    """
    A second name for the version at C{target}, so that it can be put back;
    L{None} if it is gone, or the file system keeps no hard links (then it
    cannot be put back).
    """
    try:
        os.link(target, keep, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in _NO_LINKS:
            return None
        raise
    return keep


def _revoke(target: Path, published: _Published) -> None:
    """
    (In a thread.) Take back a published version, if the name still holds
    it: put back the version it replaced, or free the name.
    """
    with _PLACING:
        _takeBack(target, published)
    fsyncFolder(target.parent)


def _takeBack(target: Path, published: _Published) -> None:
    try:
        st = os.lstat(target)
        ours = (st.st_dev, st.st_ino) == published.inode
    except FileNotFoundError:
        ours = False
    if ours:
        if published.kept is not None:
            os.replace(published.kept, target)
        elif not published.replaced:
            os.unlink(target)
        # else the version replaced could not be kept: the new one stays.
    if published.kept is not None:
        published.kept.unlink(missing_ok=True)


def _isFolder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def fsyncFolder(folder: Path) -> None:
    """(Blocking.) fsync a folder, so that renames and links in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _setSHA256(file: int | Path, sha256: str) -> None:
    try:
        os.setxattr(file, SHA256_XATTR, sha256.encode("ascii"))
    except OSError:
        # The file system keeps no extended attributes: the digest is
        # computed again when asked for.
        pass


def _getSHA256(fd: int) -> str:
    """
    The SHA-256 kept with an open file; computed (and then kept) for a file
    placed in the folder by other means.
    """
    try:
        return os.getxattr(fd, SHA256_XATTR).decode("ascii")
    except OSError:
        pass
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    sha256 = digest.hexdigest()
    _setSHA256(fd, sha256)
    return sha256


def _info(name: str, fd: int) -> FileInfo:
    st = os.fstat(fd)
    return FileInfo(name, st.st_size, _getSHA256(fd), st.st_mtime)


@implementer(IPushProducer)
class _FileStreamer:
    """
    Writes a byte range of an open file to a consumer, one C{CHUNK} per
    reactor turn while the consumer does not pause it.
    """

    CHUNK = 1 << 20

    def __init__(
        self, clock: IReactorTime, fd: int, start: int, end: int, consumer: IConsumer
    ) -> None:
        self._clock = clock
        self._fd = fd
        self._offset = start
        self._end = end
        self._consumer = consumer
        self._paused = False
        self._call: IDelayedCall | None = None
        self.done: Deferred[None] = Deferred(lambda d: self.stopProducing())

    def start(self) -> Deferred[None]:
        self._consumer.registerProducer(self, True)
        self._schedule()
        return self.done

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self.done.called:
            self._call = self._clock.callLater(0, self._produce)

    def _produce(self) -> None:
        self._call = None
        if self._paused or self.done.called:
            return
        if self._offset >= self._end:
            self._consumer.unregisterProducer()
            self.done.callback(None)
            return
        try:
            data = os.pread(self._fd, min(self.CHUNK, self._end - self._offset), self._offset)
        except OSError as e:
            self._consumer.unregisterProducer()
            self.done.errback(e)
            return
        if not data:
            self._consumer.unregisterProducer()
            self.done.errback(OSError(errno.EIO, "the file is shorter than it was"))
            return
        self._offset += len(data)
        self._consumer.write(data)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._paused = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@implementer(IStoredFile)
class DiskFile:
    """A stored file open for reading."""

    def __init__(self, clock: IReactorTime, name: str, fd: int) -> None:
        self._clock = clock
        self._fd: int | None = fd
        self.info = _info(name, fd)

    def stream(self, start: int, end: int, consumer: IConsumer) -> Deferred[None]:
        assert self._fd is not None
        return _FileStreamer(self._clock, self._fd, start, end, consumer).start()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


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

    def ready(self) -> None:
        """
        Raise L{StorageUnavailable} unless new files can be written here:
        the root is there, and so are C{.partial/} and this process's lock
        (both made again if they were removed, or the root replaced).
        """
        self.storage.ensure(self.partialDir)
        self._keepClaim()

    def failure(self, error: BaseException) -> BaseException:
        """The error a failed file operation of this store is reported as."""
        return self.storage.failure(error)

    def begin(self, name: str) -> DiskUpload:
        self.ready()
        if _isFolder(self.root / name):
            raise NotAFile(name)
        try:
            return DiskUpload(self, name)
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
            return succeed(_info(name, fd))
        finally:
            os.close(fd)

    def open(self, name: str) -> Deferred[IStoredFile | None]:
        self.storage.check()
        fd = self._openFile(name)
        if fd is None:
            return succeed(None)
        try:
            return succeed(DiskFile(self._clock(), name, fd))
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
                files.append(_info(name, fd))
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
        count = 0
        for entry in self.partialDir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            entry.unlink(missing_ok=True)
            count += 1
        return count

    def syncFolder(self) -> None:
        fsyncFolder(self.root)

    def writable(self) -> bool:
        """Whether new files can be written (see L{ready}): what C{/readyz} says."""
        try:
            self.ready()
        except (StorageUnavailable, StorageFull, OSError):
            return False
        return os.access(self.partialDir, os.W_OK)
