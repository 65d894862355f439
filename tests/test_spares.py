"""
Spare partial files (L{streamrelay.store.spares}): a disk store's uploads
begin in files made ahead of time by its runner, never in one of a
C{.partial/} that was removed or replaced since; the spares are removed
when the store closes, and swept (uncounted) after a crash.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamrelay.service import Closing
from streamrelay.store.disk import LOCK_FILE, DiskStore
from streamrelay.store.interfaces import StorageFull
from streamrelay.store.spares import (
    KEEP,
    LOW_WATER,
    SparePool,
    createPartial,
    identity,
    remove,
)
from tests.fakes import HandRunner
from tests.hashing import sha
from tests.partialfiles import leftInPartial
from tests.processes import call, eventually, partials, startService


class RecordingRunner:
    """Runs each call inline, and keeps the functions it ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.ran.append((f, args))
        return maybeDeferred(f, *args)


def isOpen(fd: int, inode: int) -> bool:
    """Whether C{fd} is still the open file of C{inode} (its number may be reused)."""
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


class CountingCreator:
    """L{createPartial}, counting the files made and where."""

    def __init__(self) -> None:
        self.inThread = 0
        self.here = 0

    def __call__(self, folder: Path, dirFd: int | None) -> tuple[Path, int]:
        if dirFd is None:
            self.here += 1
        else:
            self.inThread += 1
        return createPartial(folder, dirFd)


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.jobs = HandRunner()
        self.created = CountingCreator()
        self.pool = SparePool(self.folder, self.jobs, create=self.created)
        self.addCleanup(self.closePool)

    def closePool(self) -> None:
        d = self.pool.close()
        while self.jobs.calls:
            self.jobs.step()
        self.successResultOf(d)

    def test_takeCreatesNothing(self) -> None:
        """
        With spares ready, a new file is one of them: nothing is created
        in the calling thread.  Without, it is created there, as before.
        """
        path, fd = self.pool.new()
        self.assertEqual((self.created.here, self.created.inThread), (1, 0))
        os.close(fd)
        self.jobs.step()
        self.assertEqual((self.created.here, self.created.inThread), (1, KEEP))
        spares = set(self.pool.paths())
        self.assertEqual(len(spares), KEEP)
        for _ in range(KEEP - LOW_WATER):
            path, fd = self.pool.new()
            self.assertIn(path, spares)
            self.assertEqual(os.fstat(fd).st_size, 0)
            os.close(fd)
        self.assertEqual((self.created.here, self.created.inThread), (1, KEEP))
        self.assertEqual(self.jobs.calls, [])

    def test_spareFiles(self) -> None:
        """Spares are empty files of mode 0644 under 32 hex digits, opened for writing."""
        self.pool.refill()
        self.jobs.step()
        path, fd = self.pool.new()
        self.addCleanup(os.close, fd)
        self.assertEqual(path.parent, self.folder)
        self.assertRegex(path.name, r"^[0-9a-f]{32}$")
        st = os.stat(path)
        self.assertEqual((st.st_size, st.st_mode & 0o777), (0, 0o644))
        self.assertEqual(os.fstat(fd).st_ino, st.st_ino)
        os.write(fd, b"x")
        self.assertEqual(path.read_bytes(), b"x")

    def test_oneRefillAtATime(self) -> None:
        """
        Taking spares below the low-water mark starts one refill in the
        runner; more takes meanwhile start none; it fills the pool up to
        KEEP as it was when it started.
        """
        self.assertIsNone(self.pool.take())
        self.assertIsNone(self.pool.take())
        self.assertEqual(len(self.jobs.calls), 1)
        self.jobs.step()
        self.assertEqual(len(self.pool), KEEP)
        for _ in range(KEEP - LOW_WATER):
            os.close(self.pool.new()[1])
        self.assertEqual((len(self.pool), self.jobs.calls), (LOW_WATER, []))
        os.close(self.pool.new()[1])
        os.close(self.pool.new()[1])
        self.assertEqual(len(self.jobs.calls), 1)
        [(_, (count, _), _)] = self.jobs.calls
        self.assertEqual(count, KEEP - LOW_WATER + 1)
        self.jobs.step()
        self.assertEqual(len(self.pool), KEEP - 1)
        self.assertEqual(len(list(self.folder.iterdir())), KEEP - 1 + KEEP - LOW_WATER + 2)

    def test_refillFails(self) -> None:
        """
        A refill that fails (a full disk) is logged once, however often it
        fails; a file is then created in the calling thread, whose error
        is raised.
        """
        events: list[LogEvent] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def full(folder: Path, dirFd: int | None) -> tuple[Path, int]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.pool.create = full
        for _ in range(3):
            self.assertRaises(OSError, self.pool.new)
            self.jobs.step()
        said = [formatEvent(e) for e in events if "spare" in formatEvent(e)]
        self.assertEqual(len(said), 1, said)
        self.assertIn("No space left on device", said[0])
        self.assertEqual(len(self.pool), 0)
        self.pool.create = createPartial
        self.assertIsNone(self.pool.take())
        self.jobs.step()
        self.assertEqual(len(self.pool), KEEP)

    def test_folderGone(self) -> None:
        """A refill in a folder that is gone makes nothing; the caller is told the error."""
        self.folder.rmdir()
        self.assertRaises(FileNotFoundError, self.pool.new)
        self.jobs.step()
        self.assertEqual(len(self.pool), 0)

    def test_refillOvertakenByDiscard(self) -> None:
        """The files of a refill under way when the spares are discarded are removed."""
        self.pool.refill()
        self.pool.discard()
        self.jobs.step()  # the refill stopped before making any
        self.assertEqual((len(self.pool), list(self.folder.iterdir())), (0, []))
        self.pool.refill()
        [(make, args, d)] = self.jobs.calls
        self.jobs.calls = []
        batch = make(*args)  # made in full before the discard is seen
        self.pool.discard()
        d.callback(batch)
        self.jobs.step()
        self.assertEqual((len(self.pool), list(self.folder.iterdir())), (0, []))
        for _, fd in batch.files:
            self.assertRaises(OSError, os.fstat, fd)

    def test_closeWaitsForRefill(self) -> None:
        """Closing while a refill runs: it ends once the refill's files are removed too."""
        self.pool.refill()
        [(make, args, d)] = self.jobs.calls
        self.jobs.calls = []
        batch = make(*args)
        closed = self.pool.close()
        self.assertNoResult(closed)
        d.callback(batch)
        self.assertNoResult(closed)
        self.jobs.step()
        self.successResultOf(closed)
        self.assertEqual(list(self.folder.iterdir()), [])
        self.pool.refill()
        self.assertEqual(self.jobs.calls, [])


class StoreSparesTests(SynchronousTestCase):
    """A disk store's uploads and its spares (the runner inline, as by default)."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.runner = RecordingRunner()
        self.store = DiskStore(self.root, run=self.runner)
        # The first upload finds no spare; its refill makes KEEP of them.
        self.store.begin("first").abort()
        self.assertEqual(len(self.store.spares), KEEP)

    def spares(self) -> dict[Path, tuple[int, int]]:
        """The spares: their open file and inode, by path."""
        return {
            path: (fd, os.fstat(fd).st_ino) for path, fd in self.store.spares._spares
        }

    def countCreations(self) -> list[Any]:
        """The files C{os.open} creates from now on (in any module)."""
        creations: list[Any] = []
        realOpen = os.open

        def counting(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_CREAT:
                creations.append(path)
            return realOpen(path, flags, *args, **kwargs)

        self.patch(os, "open", counting)
        return creations

    def test_beginCreatesNoFile(self) -> None:
        """With spares ready, beginning an upload creates no file: it takes a spare."""
        spares = self.spares()
        creations = self.countCreations()
        upload = self.store.begin("a")
        self.assertEqual(creations, [])
        self.assertIn(upload._path, spares)
        self.assertEqual(upload._fd, spares[upload._path][0])
        self.assertNotIn(upload._path, self.store.spares.paths())
        upload.abort()
        self.assertFalse(upload._path.exists())

    def test_storedFromSpare(self) -> None:
        """An upload begun in a spare is stored and published byte for byte."""
        spares = self.spares()
        data = os.urandom(3 << 20) + b"tail"
        upload = self.store.begin("big.bin", {"owner": "ana"})
        self.assertIn(upload._path, spares)
        for i in range(0, len(data), 65536):
            upload.write(data[i:i + 65536])
        info, replaced = self.successResultOf(upload.commit(sha(data)))
        self.assertEqual((info.name, info.size, info.sha256, replaced),
                         ("big.bin", len(data), sha(data), False))
        self.assertEqual((self.root / "big.bin").read_bytes(), data)
        self.assertEqual(os.stat(self.root / "big.bin").st_mode & 0o777, 0o644)
        self.assertEqual(os.stat(self.root / "big.bin").st_ino, spares[upload._path][1])
        stat = self.successResultOf(self.store.stat("big.bin"))
        assert stat is not None
        self.assertEqual((stat.sha256, stat.metadata), (sha(data), {"owner": "ana"}))
        files, more = self.successResultOf(self.store.list(None, 100))
        self.assertEqual(([f.name for f in files], more), (["big.bin"], False))
        self.assertEqual(leftInPartial(self.store), [])

    def removed(self) -> set[tuple[Path, int]]:
        """The files the runner closed and removed (see L{remove})."""
        return {file for f, args in self.runner.ran if f is remove for file in args[0]}

    def assertDiscarded(self, old: dict[Path, tuple[int, int]]) -> None:
        """None of C{old} is a spare any more, and each was closed (and removed)."""
        self.assertEqual(set(old) & set(self.store.spares.paths()), set())
        self.assertLessEqual({(path, fd) for path, (fd, _) in old.items()}, self.removed())

    def test_partialFolderMadeAgain(self) -> None:
        """
        C{.partial/} removed and made again by the next upload: no spare of
        the old one is handed out, and each is closed; the upload is stored.
        """
        old = self.spares()
        shutil.rmtree(self.store.partialDir)
        upload = self.store.begin("after")
        self.assertNotIn(upload._path, old)
        self.assertTrue(upload._path.exists())
        self.assertDiscarded(old)
        upload.write(b"after")
        self.successResultOf(upload.commit(sha(b"after")))
        self.assertEqual((self.root / "after").read_bytes(), b"after")
        self.assertEqual(len(self.store.spares), KEEP)
        for path in self.store.spares.paths():
            self.assertTrue(path.exists())

    def test_partialFolderMadeAgainWithSameInode(self) -> None:
        """
        Made again by someone else, even with the inode number of the old
        one (file systems reuse them): the spares, removed with the old
        folder, are not handed out.
        """
        old = self.spares()
        shutil.rmtree(self.store.partialDir)
        self.store.partialDir.mkdir()
        self.patch(self.store.spares, "_madeIn", identity(os.stat(self.store.partialDir)))
        upload = self.store.begin("after")
        self.assertNotIn(upload._path, old)
        self.assertTrue(upload._path.exists())
        self.assertDiscarded(old)
        upload.abort()

    def test_partialFolderReplaced(self) -> None:
        """
        C{.partial/} moved away and another made in its place (not by the
        store): the spares, files of the moved folder, are not handed out.
        """
        old = self.spares()
        away = self.root / "away"
        self.store.partialDir.rename(away)
        self.store.partialDir.mkdir()
        upload = self.store.begin("after")
        self.assertNotIn(upload._path, old)
        self.assertEqual(upload._path.parent, self.store.partialDir)
        self.assertTrue(upload._path.exists())
        self.assertDiscarded(old)
        upload.write(b"after")
        self.successResultOf(upload.commit(sha(b"after")))
        self.assertEqual((self.root / "after").read_bytes(), b"after")

    def test_storageReplaced(self) -> None:
        """The storage folder replaced by another (as by a new mount): no old spare is used."""
        old = self.spares()
        self.root.rename(self.root.with_name("old-root"))
        self.root.mkdir()
        upload = self.store.begin("after")
        self.assertNotIn(upload._path, old)
        self.assertTrue(upload._path.exists())
        self.assertDiscarded(old)
        upload.abort()

    def test_storageBack(self) -> None:
        """The same storage folder away and back: its spares are still good."""
        old = self.spares()
        away = self.root.with_name("away")
        self.root.rename(away)
        self.assertFalse(self.store.writable())
        away.rename(self.root)
        upload = self.store.begin("back")
        self.assertIn(upload._path, old)
        upload.write(b"back")
        self.successResultOf(upload.commit(sha(b"back")))
        self.assertEqual((self.root / "back").read_bytes(), b"back")

    def test_spareRemoved(self) -> None:
        """A spare removed alone (a cleanup job) is closed and passed over."""
        old = self.spares()
        gone = list(old)[:3]
        for path in gone:
            path.unlink()
        upload = self.store.begin("a")
        self.assertIn(upload._path, old)
        self.assertNotIn(upload._path, gone)
        self.assertTrue(upload._path.exists())
        self.assertEqual(self.removed(), {(path, old[path][0]) for path in gone})
        self.assertEqual(len(self.store.spares), KEEP - 4)
        upload.abort()

    def test_close(self) -> None:
        """
        Closing the store removes its spares from disk and closes them;
        an upload begun after creates its own file and makes no spares.
        """
        old = self.spares()
        self.successResultOf(self.store.close())
        self.assertEqual(list(self.store.partialDir.iterdir()), [])
        self.assertDiscarded(old)
        for fd, inode in old.values():
            self.assertFalse(isOpen(fd, inode))
        upload = self.store.begin("late")
        upload.write(b"late")
        self.successResultOf(upload.commit(sha(b"late")))
        self.assertEqual(list(self.store.partialDir.iterdir()), [])
        self.assertEqual(len(self.store.spares), 0)

    def test_crash(self) -> None:
        """
        A backend that ended without closing its store leaves its spares
        (empty files) beside the upload it was writing: the next one
        sweeps them all, counting only the upload, and lists neither.
        """
        self.store.claim()
        upload = self.store.begin("cut")
        upload.write(b"x" * (3 << 20))
        self.assertGreater(upload._path.stat().st_size, 0)
        self.assertEqual(len(list(self.store.partialDir.iterdir())), KEEP + 1)  # and the lock
        self.store.release()  # its process ended
        again = DiskStore(self.root)
        self.assertEqual(again.sweep(), 1)
        self.assertEqual([p.name for p in again.partialDir.iterdir()], [LOCK_FILE])
        self.assertEqual(self.successResultOf(again.list(None, 100)), ([], False))
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial"])

    def test_sweepEmptyUncounted(self) -> None:
        """Sweeping removes empty leftovers without counting them as uploads."""
        for name in ("a" * 32, "b" * 32):
            (self.store.partialDir / name).touch()
        (self.store.partialDir / ("c" * 32)).write_bytes(b"bytes")
        again = DiskStore(self.root)
        self.assertEqual(again.sweep(), 1)
        self.assertEqual(list(again.partialDir.iterdir()), [])

    def test_sweepDropsOwnSpares(self) -> None:
        """A store's sweep drops its own spares too (their files go)."""
        old = self.spares()
        self.assertEqual(self.store.sweep(), 0)
        self.assertEqual(list(self.store.partialDir.iterdir()), [])
        self.assertDiscarded(old)
        upload = self.store.begin("a")
        self.assertTrue(upload._path.exists())
        upload.abort()

    def test_fullDisk(self) -> None:
        """
        No spare and none can be made (a full disk): the upload is told, as
        before, by creating its file itself.
        """
        self.successResultOf(self.store.spares.discard())

        def full(folder: Path, dirFd: int | None) -> tuple[Path, int]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.store.spares.create = full
        self.assertRaises(StorageFull, self.store.begin, "a")


class ClosingTests(SynchronousTestCase):
    def test_stopCloses(self) -> None:
        """The service stopping calls close and waits for it."""
        calls: list[Deferred[None]] = []

        def close() -> Deferred[None]:
            calls.append(Deferred())
            return calls[-1]

        service = Closing(close)
        service.startService()
        self.assertEqual(calls, [])
        stopped = service.stopService()
        self.assertEqual(len(calls), 1)
        self.assertNoResult(stopped)
        calls[0].callback(None)
        self.successResultOf(stopped)

    def test_storeClose(self) -> None:
        """Stopping the service closes the store: its spares are removed."""
        store = DiskStore(Path(self.mktemp()))
        store.begin("a").abort()
        self.assertEqual(len(list(store.partialDir.iterdir())), KEEP)
        service = Closing(store.close)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(list(store.partialDir.iterdir()), [])


class RealBackendTests(TestCase):
    timeout = 120

    def spareFiles(self, storage: Path) -> list[Path]:
        return [p for p in (storage / ".partial").iterdir()
                if p.name != LOCK_FILE and p.stat().st_size == 0]

    async def test_stopRemovesSpares(self) -> None:
        """
        The backend makes its spares in its thread pool once uploads begin,
        and removes them when it stops.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend = await startService(self, "backend", "--storage", str(storage))
        for i in range(3):
            code, _, _ = await call("PUT", f"{backend.url}/files/f{i}", b"data %d" % (i,))
            self.assertEqual(code, 201)
        self.assertTrue(await eventually(lambda: len(self.spareFiles(storage)) >= KEEP - 3, 10))
        backend.signal(signal.SIGTERM)
        await backend.protocol.ended
        self.assertEqual([p.name for p in (storage / ".partial").iterdir()], [LOCK_FILE])
        self.assertEqual(sorted(p.name for p in storage.iterdir() if p.name[0] != "."),
                         ["f0", "f1", "f2"])

    async def test_killedWithSpares(self) -> None:
        """
        A backend killed with spares on disk: started again, it sweeps them
        without calling them partial uploads, and lists only the files.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend = await startService(self, "backend", "--storage", str(storage))
        code, _, _ = await call("PUT", f"{backend.url}/files/kept", b"kept")
        self.assertEqual(code, 201)
        self.assertTrue(await eventually(lambda: len(self.spareFiles(storage)) >= KEEP - 1, 10))
        backend.signal(signal.SIGKILL)
        await backend.protocol.ended
        again = await startService(self, "backend", "--storage", str(storage))
        self.assertNotIn(b"removed", again.output)
        self.assertEqual([p.name for p in (storage / ".partial").iterdir()], [LOCK_FILE])
        self.assertEqual(partials(storage), [])
        code, _, body = await call("GET", f"{again.url}/files")
        self.assertEqual(code, 200)
        self.assertIn(b'"kept"', body)
        self.assertNotIn(b".partial", body)
