"""
The queued, threaded file writer, with a runner the test fires by hand.
"""

from __future__ import annotations

import errno
import gc
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamrelay.store.interfaces import StorageFull, StorageUnavailable
from streamrelay.store.writer import (
    QueuedWriter,
    WriteBudget,
    WritePool,
    _syncEach,
    _writeEach,
    storageError,
)
from tests.fakes import HandRunner, Producer


class StorageErrorTests(SynchronousTestCase):
    def test_fullAndRefused(self) -> None:
        """
        A full disk is StorageFull; one that refuses writes is
        StorageUnavailable (answered 503, to try again); both with the
        system's words, not the file's path.
        """
        for code, kind in [
            (errno.ENOSPC, StorageFull),
            (errno.EDQUOT, StorageFull),
            (errno.EROFS, StorageUnavailable),
            (errno.EACCES, StorageUnavailable),
            (errno.EPERM, StorageUnavailable),
        ]:
            error = storageError(OSError(code, os.strerror(code), "/srv/uploads/.partial/x"))
            self.assertIsInstance(error, kind)
            self.assertEqual(str(error), os.strerror(code))

    def test_ownInconsistencyKept(self) -> None:
        """
        An EIO streamrelay raises for a file not as its state says stays
        as it is, with its message: trying again would not mend it.
        """
        own = OSError(errno.EIO, "abc.part changed on disk: its SHA-256 differs")
        self.assertIs(storageError(own), own)
        other = ValueError("x")
        self.assertIs(storageError(other), other)


class QueuedWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT)
        self.addCleanup(lambda: os.close(self.fd) if self.fd is not None else None)
        self.runner = HandRunner()
        self.writer = QueuedWriter(self.fd, self.runner, high=10, low=4)
        self.producer = Producer()
        self.writer.producer = self.producer  # type: ignore[assignment]

    def contents(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def test_batchesInOrder(self) -> None:
        self.writer.write(b"ab")
        self.writer.write(b"cd")
        self.writer.write(b"ef")
        self.assertEqual(len(self.runner.calls), 1)  # one write at a time
        self.runner.step()
        self.runner.step()  # the rest, as one batch
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.contents(), b"abcdef")
        self.assertEqual(self.writer.written, 6)

    def test_pausesAboveHighResumesBelowLow(self) -> None:
        self.writer.write(b"x" * 6)
        self.writer.write(b"y" * 6)
        self.assertEqual(self.producer.events, ["pause"])
        self.runner.step()  # 6 written, 6 queued: above low
        self.assertEqual(self.producer.events, ["pause"])
        self.runner.step()
        self.assertEqual(self.producer.events, ["pause", "resume"])

    def test_drained(self) -> None:
        self.writer.write(b"abc")
        drained = self.writer.drained()
        self.assertNoResult(drained)
        self.runner.step()
        self.successResultOf(drained)
        self.successResultOf(self.writer.drained())

    def test_errorFailsDrainAndNextWrite(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDONLY)
        self.writer.fd = self.fd
        self.writer.write(b"x" * 12)
        self.assertEqual(self.producer.events, ["pause"])
        drained = self.writer.drained()
        self.runner.step()
        self.failureResultOf(drained, OSError)
        # resumed, so the next write comes and learns of the error
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.assertRaises(OSError, self.writer.write, b"more")

    def test_diskFullIsStorageFull(self) -> None:
        def full(fd: int, buffers: list[bytes]) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "writev", full)
        self.writer.write(b"x")
        self.runner.step()
        self.assertRaises(StorageFull, self.writer.write, b"y")

    def test_abandonWaitsForRunningWrite(self) -> None:
        closed: list[bool] = []
        self.writer.write(b"abc")
        self.writer.write(b"def")
        self.writer.abandon(lambda: closed.append(True))
        self.assertEqual(closed, [])
        self.runner.step()
        self.assertEqual(closed, [True])
        self.assertEqual(self.runner.calls, [])  # the queued rest was dropped

    def test_abandonGivesBudgetBackOnce(self) -> None:
        """
        Abandoning while a batch is written gives the store's budget back
        what was queued once: it was given back twice, and every upload
        aborted mid-write loosened the budget of all the others.
        """
        budget = WriteBudget(100)
        writer = QueuedWriter(self.fd, self.runner, budget=budget)
        writer.write(b"x" * 10)  # being written
        writer.write(b"y" * 5)  # queued
        self.assertEqual(budget.queued, 15)
        writer.abandon(lambda: None)
        self.assertEqual(budget.queued, 0)
        self.runner.step()
        self.assertEqual(budget.queued, 0)

    def test_sharedBudget(self) -> None:
        """
        Writers of one store pause once all of them together hold more than
        the budget, and resume when it has room again.
        """
        budget = WriteBudget(10)
        other = QueuedWriter(self.fd, self.runner, high=100, low=50, budget=budget)
        otherProducer = Producer()
        other.producer = otherProducer  # type: ignore[assignment]
        mine = QueuedWriter(self.fd, self.runner, high=100, low=50, budget=budget)
        mine.producer = self.producer  # type: ignore[assignment]
        other.write(b"x" * 8)
        mine.write(b"y" * 4)
        self.assertEqual(self.producer.events, ["pause"])
        self.assertEqual(otherProducer.events, [])
        self.runner.step()  # other's 8 bytes written: 4 queued, room again
        self.assertEqual(self.producer.events, ["pause", "resume"])
        self.runner.step()
        self.assertEqual(budget.queued, 0)

    def test_oneBatchAtATime(self) -> None:
        """
        A producer resumed when a batch ends writes at once, several chunks
        (as a request body does); that must never start a second batch
        beside the next one. (Two batches writing one file at once corrupt it.)
        """
        budget = WriteBudget(8)
        writer = QueuedWriter(self.fd, self.runner, high=100, low=6, budget=budget)
        sent: list[bytes] = []

        def send(data: bytes) -> None:
            sent.append(data)
            writer.write(data)

        class Eager(Producer):
            def resumeProducing(self) -> None:
                super().resumeProducing()
                for _ in range(2):
                    if len(sent) < 12:
                        send(b"%x" % len(sent) * 3)

        producer = Eager()
        writer.producer = producer  # type: ignore[assignment]
        for data in [b"aaa", b"bbb", b"ccc"]:
            send(data)
        self.assertIn("pause", producer.events)
        while self.runner.calls:
            self.assertEqual(len(self.runner.calls), 1)
            self.runner.step()
        self.assertIn("resume", producer.events)
        self.assertEqual(self.contents(), b"".join(sent))
        self.assertEqual(budget.queued, 0)


class WritePoolTests(SynchronousTestCase):
    """
    The writes of a store's files go through one L{WritePool}: those asked
    for while its jobs run go together in the next job.
    """

    def setUp(self) -> None:
        self.runner = HandRunner()
        self.pool = WritePool(self.runner, jobs=2)
        self.paths: list[str] = []
        self.fds: list[int] = []
        for _ in range(4):
            path = self.mktemp()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT)
            self.addCleanup(os.close, fd)
            self.paths.append(path)
            self.fds.append(fd)

    def contents(self, i: int) -> bytes:
        with open(self.paths[i], "rb") as f:
            return f.read()

    def test_writesWaitForARunningJobAndGoTogether(self) -> None:
        """
        At most C{jobs} jobs run at once; the writes asked for meanwhile
        go together in one job once a job ends.
        """
        done: list[int] = []
        for i in range(4):
            d = self.pool.write(self.fds[i], [b"file%d" % i], 0)
            d.addCallback(lambda _, n: done.append(n), i)
        self.assertEqual(len(self.runner.calls), 2)
        self.runner.step()
        self.assertEqual(done, [0])
        # Files 2 and 3 waited, and now go in one job beside file 1's.
        self.assertEqual(len(self.runner.calls), 2)
        self.assertEqual(len(self.runner.calls[1][1][0]), 2)
        self.runner.step()
        self.runner.step()
        self.assertEqual(sorted(done), [0, 1, 2, 3])
        self.assertEqual([self.contents(i) for i in range(4)], [b"file%d" % i for i in range(4)])

    def test_writesAskedForByAnswersGoTogether(self) -> None:
        """
        Writes asked for while the answers of an ended job run (each
        writer's next batch) wait to go in one job, not one job each.
        """
        pool = WritePool(self.runner, jobs=1)
        ends: list[Deferred[None]] = []


        def writeAgain(_: object, i: int) -> None:
            ends.append(pool.write(self.fds[i], [b"second"], 5))

        pool.write(self.fds[0], [b"busy"], 0)  # keeps the one job busy
        for i in (1, 2, 3):
            pool.write(self.fds[i], [b"first"], 0).addCallback(writeAgain, i)
        self.runner.step()  # file 0's job ends: files 1-3's writes, in one job
        self.assertEqual(len(self.runner.calls), 1)
        self.assertEqual(len(self.runner.calls[0][1][0]), 3)
        self.runner.step()  # their answers each ask for another write...
        self.assertEqual(len(ends), 3)
        self.assertEqual(len(self.runner.calls), 1)  # ...all in one job
        self.assertEqual(len(self.runner.calls[0][1][0]), 3)
        self.runner.step()
        self.assertEqual([self.successResultOf(d) for d in ends], [None] * 3)
        self.assertEqual([self.contents(i) for i in (1, 2, 3)], [b"firstsecond"] * 3)

    def test_oneFileFailsAlone(self) -> None:
        """
        A write that fails fails only its own file's Deferred; the other
        writes of the job succeed.
        """
        pool = WritePool(self.runner, jobs=1)
        os.close(self.fds[3])
        bad = os.open(self.paths[3], os.O_RDONLY)
        self.fds[3] = bad
        pool.write(self.fds[0], [b"x"], 0)
        good = pool.write(self.fds[1], [b"good"], 0)
        failed = pool.write(bad, [b"bad"], 0)
        self.runner.step()
        self.runner.step()
        self.assertIsNone(self.successResultOf(good))
        self.failureResultOf(failed, OSError)
        self.assertEqual(self.contents(1), b"good")

    def test_sharedByWriters(self) -> None:
        """
        Writers sharing a pool each write their own file in order, one
        batch of each file at a time.
        """
        writers = [QueuedWriter(fd, self.pool) for fd in self.fds]
        for round in range(3):
            for i, writer in enumerate(writers):
                writer.write(b"%d-%d;" % (i, round))
        while self.runner.calls:
            self.assertLessEqual(len(self.runner.calls), 2)
            for jobs in [call[1][0] for call in self.runner.calls]:
                fds = [fd for fd, _, _ in jobs]
                self.assertEqual(len(fds), len(set(fds)))
            self.runner.step()
        for i in range(4):
            self.assertEqual(self.contents(i), b"%d-0;%d-1;%d-2;" % (i, i, i))


class BackgroundSyncTests(SynchronousTestCase):
    """
    A L{WritePool} with C{syncEvery} syncs the files written since the last
    time in one background job, while writes go on.
    """

    def setUp(self) -> None:
        self.runner = HandRunner()
        self.pool = WritePool(self.runner, jobs=2, syncEvery=10)
        self.fds: list[int] = []
        for _ in range(3):
            fd = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT)
            self.addCleanup(os.close, fd)
            self.fds.append(fd)
        self.writers = [QueuedWriter(fd, self.pool) for fd in self.fds]

    def jobs(self, f: Callable[..., Any]) -> list[tuple[Any, ...]]:
        return [args for g, args, _ in self.runner.calls if g is f]

    def runAll(self) -> None:
        while self.runner.calls:
            self.runner.step()

    def test_syncsFilesWrittenSinceLastTime(self) -> None:
        """
        Once C{syncEvery} bytes were written, one job syncs every file
        written since the last sync; writes asked for meanwhile run beside
        it.
        """
        synced: list[int] = []
        self.patch(os, "fdatasync", synced.append)
        self.writers[0].write(b"a" * 6)
        self.writers[1].write(b"b" * 6)
        self.runner.step()
        self.assertEqual(self.jobs(_syncEach), [])  # 6 bytes: not due yet
        self.runner.step()
        self.assertEqual(self.jobs(_syncEach), [([self.fds[0], self.fds[1]],)])
        self.writers[2].write(b"c")
        self.assertEqual(len(self.jobs(_writeEach)), 1)  # not held up by the sync
        self.runAll()
        self.assertEqual(synced, [self.fds[0], self.fds[1]])

    def test_writesWaitWhenTooMuchIsUnsynced(self) -> None:
        """
        While a sync runs and twice C{syncEvery} bytes wait for the next,
        write jobs wait for the sync to end.
        """
        self.patch(os, "fdatasync", lambda fd: None)
        self.writers[0].write(b"a" * 10)
        self.runner.step()  # written: the sync starts
        [syncCall] = [c for c in self.runner.calls if c[0] is _syncEach]
        for i in range(2):
            self.writers[i + 1].write(b"x" * 10)
        while [c for c in self.runner.calls if c[0] is _writeEach]:
            self.runner.calls.remove(syncCall)
            self.runner.step()
            self.runner.calls.insert(0, syncCall)
        self.writers[1].write(b"more")
        self.assertEqual(self.jobs(_writeEach), [])  # 20 unsynced: held
        self.runner.step()  # the sync ends...
        self.assertEqual(len(self.jobs(_writeEach)), 1)  # ...writes go on
        self.runAll()

    def test_syncErrorFailsTheUpload(self) -> None:
        """
        A failed background sync fails the upload: L{drained} fails, the
        next write raises, and a paused producer is resumed to learn it.
        (The file's error would not be reported again by its last fsync.)
        """

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "fdatasync", full)
        writer = QueuedWriter(self.fds[0], self.pool, high=12, low=4)
        producer = Producer()
        writer.producer = producer  # type: ignore[assignment]
        writer.write(b"a" * 10)
        self.runner.step()  # written; the sync starts
        writer.write(b"b" * 13)  # being written; paused
        self.assertEqual(producer.events, ["pause"])
        drained = writer.drained()
        self.runner.calls.sort(key=lambda c: c[0] is not _syncEach)
        self.runner.step()  # the sync fails
        self.failureResultOf(drained, StorageFull)
        self.assertEqual(producer.events, ["pause", "resume"])
        self.assertRaises(StorageFull, writer.write, b"c")
        self.runAll()

    def test_abandonWaitsForSync(self) -> None:
        """An abandoned file is closed only once its sync ended."""
        self.patch(os, "fdatasync", lambda fd: None)
        self.writers[0].write(b"a" * 10)
        self.runner.step()
        closed: list[bool] = []
        self.writers[0].abandon(lambda: closed.append(True))
        self.assertEqual(closed, [])
        self.runner.step()
        self.assertEqual(closed, [True])

    def test_finishedFileIsSyncedNoMore(self) -> None:
        """
        L{QueuedWriter.finish} fires once no sync runs, and the file is in
        no later sync (its descriptor is closed after).
        """
        synced: list[int] = []
        self.patch(os, "fdatasync", synced.append)
        self.writers[0].write(b"a" * 4)
        self.runner.step()
        finished = self.writers[0].finish()
        self.successResultOf(finished)
        self.writers[1].write(b"b" * 10)
        self.runAll()
        self.assertEqual(synced, [self.fds[1]])

    def test_finishWaitsForRunningSync(self) -> None:
        self.patch(os, "fdatasync", lambda fd: None)
        self.writers[0].write(b"a" * 10)
        self.runner.step()
        finished = self.writers[0].finish()
        self.assertNoResult(finished)
        self.runner.step()
        self.successResultOf(finished)


class FailedWriteInThreadTests(TestCase):
    """The writer with the backend's runner: a real thread pool."""

    async def test_failedWriteLetGo(self) -> None:
        """
        The bytes of a write that failed in a pool thread go with the
        writer, without waiting for the cycle collector: the error kept
        holds no frame of the thread (whose Failure is one of its locals).
        """
        def run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
            pool = reactor.getThreadPool()  # type: ignore[attr-defined]
            return deferToThreadPool(reactor, pool, f, *args)  # type: ignore[arg-type]

        def full(fd: int, buffers: list[bytes]) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "writev", full)
        gc.disable()
        self.addCleanup(gc.enable)
        path = self.mktemp()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        self.addCleanup(os.close, fd)
        chunk = b"w" * (1 << 20)
        alone = sys.getrefcount(chunk)
        writer = QueuedWriter(fd, run, high=4 << 20, low=1 << 20)
        writer.write(chunk)
        with self.assertRaises(StorageFull):
            await writer.finish()
        del writer
        self.assertEqual(sys.getrefcount(chunk), alone)
