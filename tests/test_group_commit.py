"""
The disk store's group commit (L{streamrelay.store.groupcommit}): rounds
and what waits for them, the order of syncs and renames, failures that
fail exactly the files they cover, and the answers of the routes that
wait for their round.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store.disk import DiskStore
from streamrelay.store.groupcommit import (
    SYNCFS_BELOW,
    Entry,
    FolderNotSynced,
    GroupCommit,
    flushFiles,
    runRound,
    syncEach,
)
from streamrelay.store.interfaces import NameTaken
from streamrelay.webapp import appResource
from tests.httpfakes import Connection
from tests.partialfiles import leftInPartial
from tests.rawrequests import put


class HeldRounds:
    """A runner that holds each job until released, the rest inline."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if f is not runRound:
            return maybeDeferred(f, *args)
        d: Deferred[Any] = Deferred()
        self.held.append((f, args, d))
        return d

    def release(self) -> None:
        """Run the oldest held round."""
        f, args, d = self.held.pop(0)
        maybeDeferred(f, *args).chainDeferred(d)


class Events:
    """
    Stands in for the syncs of a round, recording them in order with what
    the test's places record.
    """

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.failFiles: dict[int, OSError] = {}
        self.failFolders: dict[Path, OSError] = {}

    def flush(self, fds: Sequence[int]) -> list[BaseException | None]:
        self.log.append(("flush", len(fds)))
        return [self.failFiles.get(fd) for fd in fds]

    def syncFolder(self, folder: Path) -> None:
        self.log.append(("folder", folder))
        if folder in self.failFolders:
            raise self.failFolders[folder]

    def names(self) -> list[str]:
        return [what for what, _ in self.log]


def inline(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


class RoundTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.root.mkdir()
        self.events = Events()

    def file(self, name: str, data: bytes = b"data") -> int:
        fd = os.open(self.root / f".{name}", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, data)
        return fd

    def entry(self, name: str, fd: int | None = None) -> Entry[str]:
        """A file renamed to C{name} in its place step."""

        def place(st: os.stat_result | None) -> str:
            # The name appears only after every file of the round was synced.
            self.assertIn("flush", self.events.names())
            self.events.log.append(("place", name))
            os.rename(self.root / f".{name}", self.root / name)
            return name

        def withdraw(result: str) -> None:
            self.events.log.append(("withdraw", result))
            os.unlink(self.root / result)

        return Entry(self.file(name) if fd is None else fd, place, (self.root,), withdraw)

    def commits(self, runner: Callable[..., Deferred[Any]] = inline, **kw: Any) -> GroupCommit:
        return GroupCommit(runner, self.events.flush, self.events.syncFolder, **kw)

    def test_order(self) -> None:
        """
        A round syncs the files' bytes, then puts each in place, then syncs
        their folder once; only then is each answered.
        """
        runner = HeldRounds()
        commits = self.commits(runner)
        answered: list[str] = []
        first = commits.commit(self.entry("a"))
        first.addCallback(answered.append)
        commits.commit(self.entry("b")).addCallback(answered.append)
        commits.commit(self.entry("c")).addCallback(answered.append)
        runner.release()
        self.assertEqual(answered, ["a"])
        self.assertEqual(
            self.events.log, [("flush", 1), ("place", "a"), ("folder", self.root)]
        )
        self.events.log.clear()
        runner.release()
        self.assertEqual(answered, ["a", "b", "c"])
        self.assertEqual(
            self.events.log,
            [("flush", 2), ("place", "b"), ("place", "c"), ("folder", self.root)],
        )
        self.assertEqual((commits.rounds, commits.files), (2, 3))

    def test_answeredOnlyAfterOwnRound(self) -> None:
        """
        Files handed in while a round runs wait for the next one: none is
        answered, nor has its name, until that round ended.
        """
        runner = HeldRounds()
        commits = self.commits(runner)
        one = commits.commit(self.entry("one"))
        two = commits.commit(self.entry("two"))
        self.assertEqual((len(runner.held), commits.waiting), (1, 1))
        self.assertNoResult(one)
        self.assertFalse((self.root / "one").exists())
        runner.release()
        self.assertEqual(self.successResultOf(one), "one")
        self.assertNoResult(two)
        self.assertFalse((self.root / "two").exists())
        self.assertEqual(commits.waiting, 0)  # in the round now held
        runner.release()
        self.assertEqual(self.successResultOf(two), "two")
        self.assertEqual(runner.held, [])

    def test_roundSize(self) -> None:
        runner = HeldRounds()
        commits = self.commits(runner, roundFiles=2)
        ds = [commits.commit(self.entry(n)) for n in "abcd"]
        runner.release()  # a
        runner.release()  # b, c
        self.assertEqual([self.successResultOf(d) for d in ds[:3]], ["a", "b", "c"])
        self.assertNoResult(ds[3])
        runner.release()
        self.assertEqual(self.successResultOf(ds[3]), "d")

    def test_largeFileAlone(self) -> None:
        """
        A large file goes at once in a round of its own: small files never
        wait for its bytes to be synced, nor it for theirs.
        """
        runner = HeldRounds()
        commits = self.commits(runner, aloneAbove=100)
        small = commits.commit(self.entry("small"))
        large = commits.commit(Entry(self.file("large", b"x" * 101), lambda st: "large",
                                     (self.root,), size=101))
        self.assertEqual(len(runner.held), 2)
        runner.release()
        self.assertEqual(self.successResultOf(small), "small")
        self.assertNoResult(large)
        after = commits.commit(self.entry("after"))
        self.assertEqual(len(runner.held), 2)  # its round did not wait for the large one
        runner.held.reverse()
        runner.release()
        self.assertEqual(self.successResultOf(after), "after")
        runner.release()
        self.assertEqual(self.successResultOf(large), "large")

    def test_fileNotSynced(self) -> None:
        """
        A file whose bytes could not be synced fails alone, with its own
        error, is never put in place, and its file is closed; the others of
        its round are stored.
        """
        runner = HeldRounds()
        commits = self.commits(runner)
        commits.commit(self.entry("first"))
        bad = self.file("bad")
        self.events.failFiles[bad] = OSError(errno.EIO, "Input/output error")
        good = commits.commit(self.entry("good"))
        failed = commits.commit(self.entry("bad", bad))
        runner.release()
        runner.release()
        self.assertEqual(self.successResultOf(good), "good")
        error = self.failureResultOf(failed, OSError).value
        self.assertEqual(error.errno, errno.EIO)
        self.assertNotIn(("place", "bad"), self.events.log)
        self.assertFalse((self.root / "bad").exists())
        self.assertRaises(OSError, os.fstat, bad)  # closed by the round

    def test_wholeFlushFails(self) -> None:
        """A flush that fails as a whole (syncfs) fails every file of its round."""

        def flush(fds: Sequence[int]) -> list[BaseException | None]:
            raise OSError(errno.EIO, "Input/output error")

        commits = GroupCommit(inline, flush, self.events.syncFolder)
        d = commits.commit(self.entry("a"))
        self.assertEqual(self.failureResultOf(d, OSError).value.errno, errno.EIO)
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".a"])

    def test_placeFails(self) -> None:
        """A file that cannot be put in place (its name taken) fails alone."""

        def taken(st: os.stat_result | None) -> str:
            raise NameTaken("x")

        commits = self.commits(HeldRounds())
        runner = commits._run
        assert isinstance(runner, HeldRounds)
        commits.commit(self.entry("first"))
        failing = commits.commit(Entry(self.file("x"), taken, (self.root,)))
        fine = commits.commit(self.entry("fine"))
        runner.release()
        runner.release()
        self.failureResultOf(failing, NameTaken)
        self.assertEqual(self.successResultOf(fine), "fine")

    def test_folderNotSynced(self) -> None:
        """
        A folder that could not be synced fails each file put in it, with
        an error that says so, after taking its name back; files of the
        round in other folders are stored.
        """
        other = Path(self.mktemp())
        other.mkdir()
        runner = HeldRounds()
        commits = self.commits(runner)
        commits.commit(self.entry("first"))

        def placeOther(st: os.stat_result | None) -> str:
            return "other"

        a = commits.commit(self.entry("a"))
        elsewhere = commits.commit(Entry(self.file("o"), placeOther, (other,)))
        runner.release()
        self.events.failFolders[self.root] = OSError(errno.EIO, "Input/output error")
        runner.release()
        error = self.failureResultOf(a, FolderNotSynced).value
        self.assertIn("could not be synced", str(error))
        self.assertEqual(error.errno, errno.EIO)
        self.assertIn(("withdraw", "a"), self.events.log)
        self.assertFalse((self.root / "a").exists())
        self.assertEqual(self.successResultOf(elsewhere), "other")
        self.assertIn(("folder", other), self.events.log)

    def test_sealed(self) -> None:
        """A file synced before (given by its status) is placed without a sync."""
        st = os.stat(self.root)
        seen: list[os.stat_result | None] = []
        commits = self.commits()

        def place(s: os.stat_result | None) -> int:
            seen.append(s)
            return 1

        d = commits.commit(Entry(st, place, (self.root,)))
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(seen, [st])
        self.assertEqual(self.events.names(), ["folder"])

    def test_answersQueueNextRound(self) -> None:
        """Commits made by the answers of a round go in one next round."""
        commits = self.commits(HeldRounds())
        runner = commits._run
        assert isinstance(runner, HeldRounds)
        later: list[Deferred[str]] = []

        def more(_: object) -> None:
            later.append(commits.commit(self.entry(f"n{len(later)}")))

        for name in "ab":
            commits.commit(self.entry(name)).addCallback(more)
        runner.release()
        runner.release()
        self.assertEqual(len(later), 2)
        self.assertEqual(len(runner.held), 1)
        runner.release()
        self.assertEqual([self.successResultOf(d) for d in later], ["n0", "n1"])


class FlushTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def whole(self, fd: int) -> None:
        self.calls.append(("syncfs", fd))

    def each(self, fds: Sequence[int]) -> list[BaseException | None]:
        self.calls.append(("each", list(fds)))
        return [None] * len(fds)

    def test_syncfsWhileLittleUnwritten(self) -> None:
        result = flushFiles([3, 4], lambda: 0, self.whole, self.each)
        self.assertEqual((result, self.calls), ([None, None], [("syncfs", 3)]))

    def test_eachWhileMuchUnwritten(self) -> None:
        """
        While much waits to be written (another upload's big file), each
        file is synced by itself, not waiting for the others' bytes.
        """
        result = flushFiles([3, 4], lambda: SYNCFS_BELOW, self.whole, self.each)
        self.assertEqual((result, self.calls), ([None, None], [("each", [3, 4])]))

    def test_oneFile(self) -> None:
        flushFiles([3], lambda: 0, self.whole, self.each)
        self.assertEqual(self.calls, [("each", [3])])

    def test_syncfsFails(self) -> None:
        error = OSError(errno.EIO, "Input/output error")

        def whole(fd: int) -> None:
            raise error

        self.assertEqual(flushFiles([3, 4], lambda: 0, whole, self.each), [error, error])

    def test_noSyncfs(self) -> None:
        def whole(fd: int) -> None:
            raise OSError(errno.ENOSYS, "no syncfs")

        flushFiles([3, 4], lambda: 0, whole, self.each)
        self.assertEqual(self.calls, [("each", [3, 4])])

    def test_eachFileItsOwnError(self) -> None:
        """Synced at once, each file still gets its own error."""
        folder = Path(self.mktemp())
        folder.mkdir()
        fds = [os.open(folder / n, os.O_WRONLY | os.O_CREAT, 0o644) for n in "abc"]
        os.close(fds[1])
        try:
            errors = syncEach(fds)
        finally:
            os.close(fds[0])
            os.close(fds[2])
        self.assertIsNone(errors[0])
        self.assertIsNone(errors[2])
        assert isinstance(errors[1], OSError)
        self.assertEqual(errors[1].errno, errno.EBADF)

    def test_realFiles(self) -> None:
        """Both ways work on this machine's file system."""
        folder = Path(self.mktemp())
        folder.mkdir()
        fds = [os.open(folder / n, os.O_WRONLY | os.O_CREAT, 0o644) for n in "ab"]
        try:
            for fd in fds:
                os.write(fd, b"x")
            self.assertEqual(flushFiles(fds, lambda: 0), [None, None])
            self.assertEqual(flushFiles(fds, lambda: SYNCFS_BELOW), [None, None])
        finally:
            for fd in fds:
                os.close(fd)


class DiskStoreCommitTests(SynchronousTestCase):
    """The disk store's commits through its group commit."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.runner = HeldRounds()
        self.store = DiskStore(self.root, run=self.runner)
        self.events = Events()
        self.store.commits = GroupCommit(self.runner, self.recordFlush, self.recordFolder)

    def recordFlush(self, fds: Sequence[int]) -> list[BaseException | None]:
        # When the bytes are synced, no name of the round is there yet.
        self.events.log.append(("flush", sorted(p.name for p in self.root.iterdir())))
        return flushFiles(fds)

    def recordFolder(self, folder: Path) -> None:
        self.events.log.append(("folder", sorted(p.name for p in folder.iterdir())))

    def upload(self, name: str, data: bytes) -> Deferred[Any]:
        upload = self.store.begin(name)
        upload.write(data)
        return upload.commit(hashlib.sha256(data).hexdigest())

    def test_syncedThenNamedThenAnswered(self) -> None:
        first = self.upload("first", b"1")
        a = self.upload("a", b"aa")
        b = self.upload("b", b"bbb")
        self.runner.release()
        self.successResultOf(first)
        self.events.log.clear()
        self.assertNoResult(a)
        self.assertFalse((self.root / "a").exists())
        self.runner.release()
        self.assertEqual(self.events.log, [
            ("flush", [".partial", "first"]),
            ("folder", [".partial", "a", "b", "first"]),
        ])
        self.assertEqual(self.successResultOf(a)[0].size, 2)
        self.assertEqual(self.successResultOf(b)[0].sha256, hashlib.sha256(b"bbb").hexdigest())
        self.assertEqual((self.root / "b").read_bytes(), b"bbb")
        self.assertEqual(leftInPartial(self.store), [])

    def test_crashBetweenDataAndRename(self) -> None:
        """
        A backend that dies after a round synced its files' bytes and
        before it renamed them answered none of them and named none: what
        is on the disk then holds every file answered before, whole, and
        started again the backend sweeps the round's bytes.
        """
        answered = self.upload("answered", b"kept")
        self.runner.release()
        self.successResultOf(answered)
        onDisk: dict[str, bytes] = {}

        class Crash(Exception):
            pass

        def syncThenDie(fds: Sequence[int]) -> list[BaseException | None]:
            self.assertEqual(flushFiles(fds), [None] * len(fds))
            for path in self.root.iterdir():
                if path.is_file():
                    onDisk[path.name] = path.read_bytes()
            raise Crash()

        self.store.commits = GroupCommit(self.runner, syncThenDie, self.recordFolder)
        pending = [self.upload(n, n.encode()) for n in ("x", "y")]
        while self.runner.held:
            self.runner.release()
        for d in pending:
            self.failureResultOf(d, Crash)  # never answered as stored
        self.assertEqual(onDisk, {"answered": b"kept"})
        self.assertNotIn("folder", [what for what, _ in self.events.log[2:]])
        again = DiskStore(self.root)
        again.sweep()
        self.assertEqual((self.root / "answered").read_bytes(), b"kept")
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial", "answered"])
        self.assertEqual(leftInPartial(again), [])

    def test_crashBeforeRound(self) -> None:
        """
        A backend that stops while its files wait for their round answered
        none of them, and named none: started again, it sweeps their bytes
        and has lost nothing it answered.
        """
        answered = self.upload("answered", b"kept")
        self.runner.release()
        self.successResultOf(answered)
        pending = [self.upload(n, n.encode()) for n in ("x", "y")]
        for d in pending:
            self.assertNoResult(d)
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial", "answered"])
        again = DiskStore(self.root)
        self.assertEqual(again.sweep(), 2)
        self.assertEqual((self.root / "answered").read_bytes(), b"kept")
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial", "answered"])
        # (The old store's round, released after the sweep, stores nothing.)
        while self.runner.held:
            self.runner.release()
        for d in pending:
            self.failureResultOf(d)
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial", "answered"])

    def test_folderNotSyncedNothingPublished(self) -> None:
        """A failed folder sync answers an error and leaves no name or partial."""

        def failing(folder: Path) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.store.commits = GroupCommit(inline, flushFiles, failing)
        self.store.run = inline
        upload = self.store.begin("a")
        upload.write(b"data")
        failure = self.failureResultOf(upload.commit(hashlib.sha256(b"data").hexdigest()))
        self.assertIn("could not be synced", failure.getErrorMessage())
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial"])
        self.assertEqual(leftInPartial(self.store), [])


class RouteAnswerTests(SynchronousTestCase):
    """The backend's 201 waits for the upload's round."""

    def test_answerWithheldWhileRoundHeld(self) -> None:
        root = Path(self.mktemp())
        runner = HeldRounds()
        store = DiskStore(root, run=runner)
        conn = Connection(appResource(BackendRoutes(store).app))
        body = b"x" * 5000
        conn.send(put(b"/files/held.bin", body))
        conn.turn()
        self.assertEqual(len(runner.held), 1)
        self.assertEqual([r.status for r in conn.responses() if r.status >= 200], [])
        self.assertFalse((root / "held.bin").exists())
        runner.release()
        conn.turn()
        [response] = [r for r in conn.responses() if r.status >= 200]
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual((root / "held.bin").read_bytes(), body)

    def test_syncsBeforeAnswer(self) -> None:
        """
        The file's bytes are synced, then its name appears, then its folder
        is synced, and only then is the 201 sent.
        """
        root = Path(self.mktemp())
        store = DiskStore(root)
        conn = Connection(appResource(BackendRoutes(store).app))
        seen: list[tuple[str, bool, bool]] = []

        def answered() -> bool:
            return any(r.status == 201 for r in conn.responses())

        def flush(fds: Sequence[int]) -> list[BaseException | None]:
            seen.append(("flush", (root / "f.bin").exists(), answered()))
            return flushFiles(fds)

        def syncFolder(folder: Path) -> None:
            seen.append(("folder", (root / "f.bin").exists(), answered()))

        store.commits = GroupCommit(inline, flush, syncFolder)
        conn.send(put(b"/files/f.bin", b"y" * 3000))
        conn.turn()
        self.assertTrue(answered())
        # (name there?, answered?) at each step
        self.assertEqual(seen, [("flush", False, False), ("folder", True, False)])
