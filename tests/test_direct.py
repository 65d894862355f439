"""
Direct-I/O writes: aligned pieces in flight at once, the end written last,
with a runner the test fires by hand.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamrelay.store.direct import ALIGN, DirectPool, DirectWriter, directIO
from streamrelay.store.disk import DiskStore
from streamrelay.store.interfaces import StorageFull
from streamrelay.store.writer import QueuedWriter, WriteBudget, inline
from tests.fakes import HandRunner, Producer

PIECE = 2 * ALIGN


class DirectWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT)
        self.addCleanup(os.close, self.fd)
        self.direct = directIO(self.fd)
        self.runner = HandRunner()
        self.pool = DirectPool(self.runner, jobs=2, piece=PIECE)
        self.budget = WriteBudget(1 << 30)
        self.writer = DirectWriter(
            self.fd, self.pool, high=4 * PIECE, low=PIECE, budget=self.budget
        )
        self.producer = Producer()
        self.writer.producer = self.producer  # type: ignore[assignment]

    def contents(self) -> bytes:
        return Path(self.path).read_bytes()

    def pieces(self) -> list[tuple[int, int, bool]]:
        """(offset, size, last) of each piece cut and waiting for a job."""
        return [(p.offset, p.size, p.last) for p in self.pool._ready]

    def runAll(self) -> None:
        while self.runner.calls:
            self.runner.step()

    def test_directIO(self) -> None:
        """The test's file system takes direct I/O (else these tests prove less)."""
        self.assertTrue(self.direct)
        self.assertTrue(fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT)

    def test_piecesCutAheadForTheJobs(self) -> None:
        """
        Aligned pieces are cut as bytes come, each for its offset, and up to
        the pool's jobs start to write them.
        """
        self.writer.write(b"a" * PIECE + b"b" * PIECE + b"c" * PIECE)
        self.assertEqual(self.pieces(), [(0, PIECE, False), (PIECE, PIECE, False),
                                         (2 * PIECE, PIECE, False)])
        self.assertEqual(len(self.runner.calls), 2)
        self.runAll()
        self.assertEqual(self.contents(), b"a" * PIECE + b"b" * PIECE + b"c" * PIECE)
        self.assertEqual(self.writer.written, 3 * PIECE)

    def test_jobTakesPiecesCutWhileItRuns(self) -> None:
        """
        A job goes on with the pieces cut after it started: the writes do
        not wait for the reactor to hear of the one before.
        """
        pool = DirectPool(self.runner, jobs=1, piece=PIECE)
        writer = DirectWriter(self.fd, pool)
        writer.write(b"a" * PIECE)
        writer.write(b"b" * PIECE)
        self.assertEqual(len(self.runner.calls), 1)
        self.runner.step()
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.contents(), b"a" * PIECE + b"b" * PIECE)
        self.assertEqual(writer.written, 2 * PIECE)

    def test_cutsAheadAtMostTwiceTheJobs(self) -> None:
        """What waits beyond that stays queued, to go as larger pieces."""
        self.writer.write(b"x" * 6 * PIECE)
        self.assertEqual(len(self.pieces()), 4)
        self.runner.step()
        self.assertEqual(self.pieces(), [(4 * PIECE, PIECE, False), (5 * PIECE, PIECE, False)])

    def test_piecesSpanChunks(self) -> None:
        """A piece gathers what several writes brought, cut at a block."""
        self.writer.write(b"a" * 100)
        self.assertEqual(self.pieces(), [])
        self.writer.write(b"b" * ALIGN)
        self.assertEqual(self.pieces(), [(0, ALIGN, False)])
        self.runAll()
        finished = self.writer.finish()
        self.assertEqual(self.pieces(), [(ALIGN, 100, True)])
        self.runAll()
        self.successResultOf(finished)
        self.assertEqual(self.contents(), b"a" * 100 + b"b" * ALIGN)

    def test_endWrittenLast(self) -> None:
        """
        The unaligned end waits for the pieces before it, and is written
        through the page cache.
        """
        self.writer.write(b"x" * (PIECE + 10))
        finished = self.writer.finish()
        self.assertEqual(self.pieces(), [(0, PIECE, False)])
        self.runner.step()
        self.assertNoResult(finished)
        self.assertEqual(self.pieces(), [(PIECE, 10, True)])
        self.runAll()
        self.successResultOf(finished)
        self.assertEqual(self.contents(), b"x" * (PIECE + 10))
        self.assertFalse(fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT)

    def test_finishEmpty(self) -> None:
        self.successResultOf(self.writer.finish())
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.contents(), b"")

    def test_writeAfterFinish(self) -> None:
        self.writer.finish()
        self.assertRaises(RuntimeError, self.writer.write, b"x")

    def test_pausesAboveHighResumesBelowLow(self) -> None:
        """What is queued and being written counts until it is written."""
        for _ in range(5):
            self.writer.write(b"x" * PIECE)
        self.assertEqual(self.producer.events, ["pause"])
        self.runner.step()  # the 4 pieces cut: 1 held, not above low
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def test_staysPausedAboveLow(self) -> None:
        for _ in range(7):
            self.writer.write(b"x" * PIECE)
        self.runner.step()  # 4 written, 3 held: above low
        self.assertEqual(self.producer.events, ["pause"])
        self.runAll()
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def test_sharedBudget(self) -> None:
        """The store's budget pauses a writer holding less than its own high."""
        budget = WriteBudget(PIECE)
        writer = DirectWriter(self.fd, self.pool, high=1 << 30, budget=budget)
        producer = Producer()
        writer.producer = producer  # type: ignore[assignment]
        writer.write(b"x" * PIECE)
        writer.write(b"y" * ALIGN)
        self.assertEqual(producer.events, ["pause"])
        self.runAll()
        self.assertEqual(producer.events, ["pause", "resume"])
        self.assertEqual(budget.queued, 0)

    def test_diskFullIsStorageFull(self) -> None:
        """
        A failed piece fails the file: finish fails, a paused producer is
        resumed so that its next write raises, and nothing more is written.
        """

        def full(fd: int, data: Any, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "pwrite", full)
        for _ in range(6):
            self.writer.write(b"x" * PIECE)
        finished = self.writer.finish()
        self.runner.step()
        self.failureResultOf(finished, StorageFull)
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.assertRaises(StorageFull, self.writer.write, b"y")
        self.runAll()
        self.assertEqual(self.pieces(), [])
        self.assertEqual(self.budget.queued, 0)

    def test_abandonWaitsForRunningPieces(self) -> None:
        """
        Abandoning drops what is queued, skips the pieces not yet written,
        and calls back once no job holds one.
        """
        closed: list[bool] = []
        for _ in range(6):
            self.writer.write(b"x" * PIECE)
        self.writer.abandon(lambda: closed.append(True))
        self.assertEqual(closed, [])
        self.runner.step()
        self.assertEqual(closed, [True])
        self.runAll()
        self.assertEqual(self.contents(), b"")  # the cut pieces were skipped
        self.assertEqual(self.budget.queued, 0)

    def test_filesTakeTurns(self) -> None:
        """Files with bytes to write take turns as pieces are cut."""
        pool = DirectPool(self.runner, jobs=1, piece=PIECE)
        writer = DirectWriter(self.fd, pool)
        other = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT)
        self.addCleanup(os.close, other)
        second = DirectWriter(other, pool)
        writer.write(b"a" * 5 * PIECE)
        second.write(b"b" * 3 * PIECE)
        self.assertEqual([p.writer for p in pool._ready], [writer, writer])
        self.runner.step()
        self.assertEqual([p.writer for p in pool._ready], [writer, second])
        self.runner.step()
        self.assertEqual([p.writer for p in pool._ready], [writer, second])

    def test_shortRestIsCopied(self) -> None:
        """
        The unaligned rest of a chunk waits as a copy of its own, not as
        the whole chunk it came in (which could be a read of 1 MiB).
        """
        self.writer.write(b"x" * (PIECE + 10))
        [rest] = self.writer._queue
        self.assertEqual(len(rest), 10)

    def test_directRefusedAtWrite(self) -> None:
        """
        A file system that takes O_DIRECT at open but refuses a write
        (EINVAL) gets the piece through the page cache.
        """
        original = os.pwrite
        refused: list[int] = []

        def picky(fd: int, data: Any, offset: int) -> int:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                refused.append(offset)
                raise OSError(errno.EINVAL, "Invalid argument")
            return original(fd, data, offset)

        self.patch(os, "pwrite", picky)
        self.writer.write(b"x" * PIECE)
        self.runner.step()
        self.successResultOf(self.writer.finish())
        self.assertEqual(refused, [0])
        self.assertEqual(self.contents(), b"x" * PIECE)


class DiskStoreDirectTests(SynchronousTestCase):
    def test_manyUploadsDirect(self) -> None:
        """Every upload of a store on a file system that allows it is direct."""
        store = DiskStore(Path(self.mktemp()), run=inline)
        uploads = [store.begin(f"f{i}") for i in range(8)]
        self.assertEqual({type(upload._writer) for upload in uploads}, {DirectWriter})
        for upload in uploads:
            upload.abort()

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = DiskStore(self.root, run=inline)

    def test_stored(self) -> None:
        """A file written directly, not a whole number of blocks, is stored whole."""
        data = os.urandom(3 * (1 << 20) + 12345)
        upload = self.store.begin("f")
        self.assertIsInstance(upload._writer, DirectWriter)
        for start in range(0, len(data), 100_000):
            upload.write(data[start : start + 100_000])
        self.successResultOf(upload.commit("0" * 64))
        self.assertEqual((self.root / "f").read_bytes(), data)

    def test_notDirect(self) -> None:
        """A store made with direct=False writes through the page cache."""
        store = DiskStore(self.root, run=inline, direct=False)
        upload = store.begin("f")
        self.assertIsInstance(upload._writer, QueuedWriter)
        upload.abort()


class FailedPieceInThreadTests(TestCase):
    """The direct writer with the backend's runner: a real thread pool."""

    async def test_failedPieceLetGo(self) -> None:
        """
        The bytes of a piece whose write failed in a pool thread go with
        the writer, without waiting for the cycle collector: the error kept
        holds no frame of the job (whose piece holds the error).
        """
        def run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
            pool = reactor.getThreadPool()  # type: ignore[attr-defined]
            return deferToThreadPool(reactor, pool, f, *args)  # type: ignore[arg-type]

        def full(fd: int, data: Any, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "pwrite", full)
        gc.disable()
        self.addCleanup(gc.enable)
        fd = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT)
        self.addCleanup(os.close, fd)
        directIO(fd)
        pool = DirectPool(run, jobs=1, piece=PIECE)
        chunk = b"d" * PIECE
        alone = sys.getrefcount(chunk)
        writer = DirectWriter(fd, pool, high=4 * PIECE, low=PIECE, budget=WriteBudget(1 << 30))
        writer.write(chunk)
        with self.assertRaises(StorageFull):
            await writer.finish()
        # The failure is heard inside the pool's own call, which still
        # holds the piece until it returns.
        await deferLater(reactor, 0, lambda: None)
        del writer
        self.assertEqual(sys.getrefcount(chunk), alone)
