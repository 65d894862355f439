"""
Writing streams to files without blocking the reactor: bytes are queued
and written by threads, the producer is paused while too much waits, and
the files being written are synced in the background as they grow.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from streamrelay.store.interfaces import StorageFull, StorageUnavailable

#: Runs a function, in a thread or inline, and gives its result.
Runner = Callable[..., "Deferred[Any]"]

#: Every this many bytes written to a store (all its files together), the
#: files written since the last time are synced in the background and
#: dropped from the page cache: the disk (and its write cache) works while
#: uploads stream, and the fsync at the end of each has little left to do.
SYNC_EVERY = 128 << 20

#: Most buffers passed to one writev.
_IOV_MAX = 512


def inline(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A runner that runs in the calling thread (tests, and small files)."""
    return maybeDeferred(f, *args)


#: Errors of a storage that refuses writes for now: a disk remounted
#: read-only after errors, a folder the service may not write.  Answered
#: C{503 storage_unavailable}, not as a server fault.  (Not EIO:
#: streamrelay raises that itself, with its own message, for a file that
#: is not as its state says, which trying again does not mend.)
_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)


def storageError(error: BaseException) -> BaseException:
    """The error a failed file operation of a store is reported as."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(os.strerror(error.errno))
    if isinstance(error, OSError) and error.errno in _REFUSED:
        return StorageUnavailable(os.strerror(error.errno))
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        # The backend (or the machine) has too many files open: a moment
        # later, when uploads in flight have ended, it has room again.
        return StorageUnavailable("the backend has too many files open")
    return error


def _writeAll(fd: int, chunks: list[bytes], offset: int) -> None:
    """Write every chunk to C{fd} (in a thread)."""
    views = [memoryview(c) for c in chunks]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def dropCached(fd: int) -> None:
    """Drop a synced file's pages from the page cache (a hint)."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def syncAndDrop(fd: int) -> None:
    """(In a thread.) Sync a file's data and drop it from the page cache."""
    os.fdatasync(fd)
    dropCached(fd)


def _each(f: Callable[..., object], jobs: Sequence[tuple[Any, ...]]) -> list[BaseException | None]:
    """Run C{f(*job)} for each job (in a thread); each job's error or None."""
    results: list[BaseException | None] = []
    for job in jobs:
        try:
            f(*job)
        except Exception as e:
            results.append(e)
        else:
            results.append(None)
    return results


def _writeEach(jobs: list[tuple[int, list[bytes], int]]) -> list[BaseException | None]:
    """Run L{_writeAll} for each job (in a thread); each job's error or None."""
    return _each(_writeAll, jobs)


def _syncEach(fds: list[int]) -> list[BaseException | None]:
    """Run L{syncAndDrop} for each file (in a thread); each one's error or None."""
    return _each(syncAndDrop, [(fd,) for fd in fds])


def _errors(results: object, count: int) -> list[BaseException | None]:
    """
    Each job's error from the result of a job of L{_each}: its list, or
    the failure of the whole job, for all of them.
    """
    if isinstance(results, Failure):
        return [results.value] * count
    return cast(list[BaseException | None], results)


class WritePool:
    """
    Runs the writes of many files through C{run} as few jobs: at most
    C{jobs} run at once, and the writes asked for meanwhile wait and go
    together in the next job.  Many uploads at once then cost one thread
    hand-off per batch of writes instead of one per write.

    A file must have at most one write running at a time (L{QueuedWriter}
    sees to that).

    With C{syncEvery}: once that many bytes were written since the last
    time, the files written meanwhile are synced by one job in the
    background, while writes go on.  The disk then works while uploads
    stream, instead of at their end while every upload waits for its fsync.
    While a sync runs and twice C{syncEvery} bytes wait for the next,
    writes wait too: the page cache holds a bounded amount of unsynced
    bytes even when the disk is slower than the network.
    """

    def __init__(self, run: Runner, jobs: int = 2, syncEvery: int | None = None) -> None:
        self.run = run
        self._jobs = jobs
        self._syncEvery = syncEvery
        self._unsynced: dict[QueuedWriter, None] = {}
        self._unsyncedBytes = 0
        self._syncing = False
        self._running = 0
        self._waiting: list[tuple[int, list[bytes], int, Deferred[None]]] = []
        self._answering = False

    def write(self, fd: int, chunks: list[bytes], offset: int) -> Deferred[None]:
        """Write C{chunks} at C{offset} of C{fd}; fires once written."""
        d: Deferred[None] = Deferred()
        self._waiting.append((fd, chunks, offset, d))
        if not self._answering:
            self._startJobs()
        return d

    def _startJobs(self) -> None:
        while self._waiting and self._running < self._jobs and not self._holding():
            self._start()

    def _holding(self) -> bool:
        return (
            self._syncing
            and self._syncEvery is not None
            and self._unsyncedBytes >= 2 * self._syncEvery
        )

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self._running += 1
        jobs = [(fd, chunks, offset) for fd, chunks, offset, _ in batch]
        self.run(_writeEach, jobs).addBoth(self._ended, [d for *_, d in batch])

    def _ended(self, results: object, waiters: list[Deferred[None]]) -> None:
        self._running -= 1
        # Writes asked for while the answers run (the next batch of each
        # writer) wait, to go in one job together.
        self._answering = True
        try:
            for d, error in zip(waiters, _errors(results, len(waiters)), strict=True):
                if error is None:
                    d.callback(None)
                else:
                    d.errback(Failure(error))
        finally:
            self._answering = False
        self._startJobs()

    def wrote(self, writer: QueuedWriter, count: int) -> None:
        """C{writer} wrote C{count} bytes to its file; sync when due."""
        if self._syncEvery is None:
            return
        self._unsynced[writer] = None
        self._unsyncedBytes += count
        self._maybeSync()

    def forget(self, writer: QueuedWriter) -> None:
        """C{writer}'s file is about to be closed: it is synced no more."""
        self._unsynced.pop(writer, None)

    def _maybeSync(self) -> None:
        if (
            self._syncing
            or self._syncEvery is None
            or self._unsyncedBytes < self._syncEvery
            or not self._unsynced
        ):
            return
        writers = list(self._unsynced)
        self._unsynced.clear()
        self._unsyncedBytes = 0
        self._syncing = True
        for writer in writers:
            writer._syncStarted()
        self.run(_syncEach, [w.fd for w in writers]).addBoth(self._synced, writers)

    def _synced(self, results: object, writers: list[QueuedWriter]) -> None:
        self._syncing = False
        for writer, error in zip(writers, _errors(results, len(writers)), strict=True):
            writer._syncEnded(error)
        self._startJobs()
        self._maybeSync()


class WriteBudget:
    """
    Bytes all the writers of a store may hold queued together: above
    C{limit} every writer that receives more pauses its producer; they are
    resumed once the total is back under three quarters of it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0
        self._waiting: list[HeldWriter] = []

    def over(self) -> bool:
        return self.queued > self.limit

    def roomy(self) -> bool:
        return self.queued <= self.limit * 3 // 4

    def wait(self, writer: HeldWriter) -> None:
        if writer not in self._waiting:
            self._waiting.append(writer)

    def add(self, count: int) -> None:
        self.queued += count

    def remove(self, count: int) -> None:
        self.queued -= count
        if self._waiting and self.roomy():
            waiting, self._waiting = self._waiting, []
            for writer in waiting:
                writer._maybeResume()


class HeldWriter:
    """
    The producer's side of a store's file writer: the producer is paused
    while the writer holds more than C{high} bytes (L{holding}) or the
    store's C{budget} is over, and resumed once it holds C{low} or less and
    the budget has room; those waiting for the file hear of its end or
    error; after an error a paused producer is resumed, so that its next
    write comes and raises.
    """

    def __init__(self, high: int, low: int, budget: WriteBudget | None) -> None:
        self.producer: IPushProducer | None = None
        self._budget = budget or WriteBudget(1 << 62)
        self._high = high
        self._low = low
        self._paused = False
        self._error: BaseException | None = None
        self._waiters: list[Deferred[None]] = []

    def holding(self) -> int:
        """Bytes held: what the producer is paused and resumed by."""
        raise NotImplementedError

    def _pauseIfFull(self) -> None:
        """(After taking bytes.)  Pause the producer if too much is held."""
        overBudget = self._budget.over()
        if overBudget:
            self._budget.wait(self)
        if (
            (self.holding() > self._high or overBudget)
            and self.producer is not None
            and not self._paused
        ):
            self._paused = True
            self.producer.pauseProducing()

    def _maybeResume(self) -> None:
        if (
            self._paused
            and self.producer is not None
            and self.holding() <= self._low
            and self._budget.roomy()
        ):
            self._paused = False
            self.producer.resumeProducing()
        elif self._paused:
            self._budget.wait(self)

    def _answer(self) -> None:
        """Tell those waiting for the file."""
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if self._error is None:
                d.callback(None)
            else:
                d.errback(Failure(self._error))

    def _resumeToFail(self) -> None:
        """Resume a paused producer, so that its next write raises."""
        if self._paused and self.producer is not None:
            self._paused = False
            self.producer.resumeProducing()


class QueuedWriter(HeldWriter):
    """
    Writes to C{fd} through C{run} (a L{WritePool} shared with other files,
    or a runner of its own), one batch at a time, holding at most
    about C{high} bytes in memory: above it the producer is paused, and it
    is resumed once the queue is below C{low}.  A write error (or an error
    of a background sync by the pool) fails L{drained} and the next
    L{write}, and resumes the producer so that the next write comes and
    raises.  Call L{finish} (or L{abandon}) before closing C{fd}.
    """

    def __init__(
        self,
        fd: int,
        run: Runner | WritePool,
        high: int = 8 << 20,
        low: int = 2 << 20,
        budget: WriteBudget | None = None,
    ) -> None:
        super().__init__(high, low, budget)
        self.fd = fd
        self.written = 0
        self._pool = run if isinstance(run, WritePool) else WritePool(run, jobs=1)
        self._queue: list[bytes] = []
        self._queued = 0
        self._busy = False
        self._syncing = False
        self._abandoned = False
        self._whenIdle: Callable[[], object] | None = None

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._abandoned:
            raise RuntimeError("write after the file was abandoned")
        self._queue.append(data)
        self._queued += len(data)
        self._budget.add(len(data))
        if not self._busy:
            self._flush()
        self._pauseIfFull()

    def holding(self) -> int:
        return self._queued

    def drained(self) -> Deferred[None]:
        """
        Fires once everything written so far is in the file, and no
        background sync of it runs.
        """
        if self._error is not None:
            return fail(self._error)
        if self._settled():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def finish(self) -> Deferred[None]:
        """
        Like L{drained}, once the last byte was written: then the file is
        no longer synced in the background, and may be closed.
        """
        d = self.drained()
        d.addBoth(self._forget)
        return d

    def _forget(self, result: object) -> object:
        self._pool.forget(self)
        return result

    def abandon(self, then: Callable[[], object]) -> None:
        """
        Drop what is queued; call C{then} once no write or sync of the
        file is running.
        """
        self._pool.forget(self)
        self._abandoned = True
        self._queue.clear()
        self._budget.remove(self._queued)
        self._queued = 0
        self._whenIdle = then
        self._idle()

    def _settled(self) -> bool:
        return not self._busy and not self._queue and not self._syncing

    def _flush(self) -> None:
        if self._busy:
            return  # the running batch's end flushes what was queued meanwhile
        batch, self._queue = self._queue, []
        size = sum(len(c) for c in batch)
        self._busy = True
        offset = self.written
        self._pool.write(self.fd, batch, offset).addCallbacks(
            self._flushed, self._failed, callbackArgs=(size,)
        )

    def _flushed(self, _: object, size: int) -> None:
        self.written += size
        self._queued -= size
        if self._abandoned:
            # abandon() gave the budget back all that was queued, this batch
            # included.
            self._busy = False
            self._idle()
            return
        # Start the next batch before anything can resume a producer: a
        # resumed producer writes at once, and two batches must never run
        # together on one file.
        self._busy = False
        if self._queue:
            self._flush()
        # (Told before the waiters: one may be finish(), after which the
        # pool must not know the file.)
        self._pool.wrote(self, size)
        if self._settled():
            self._answer()
        self._budget.remove(size)
        self._maybeResume()

    def _syncStarted(self) -> None:
        """The pool started syncing the file."""
        self._syncing = True

    def _syncEnded(self, error: BaseException | None) -> None:
        """The pool's sync of the file ended, with C{error} or not."""
        self._syncing = False
        if self._idle():
            return
        if error is not None and self._error is None:
            # An error of the file is reported to one sync only: this upload
            # fails now, or the fsync at its end would not learn of it.
            self._error = storageError(error)
            # Drop what waits; a running batch ends (and counts) by itself.
            dropped = sum(len(c) for c in self._queue)
            self._queue.clear()
            self._queued -= dropped
            self._budget.remove(dropped)
            self._answer()
            self._resumeToFail()
        elif self._settled():
            self._answer()

    def _failed(self, failure: Failure) -> None:
        # Its error is kept without its frames: a pool thread's Failure is
        # one of the thread's locals, in a cycle with the chunks written.
        failure.cleanFailure()
        self._busy = False
        assert failure.value is not None
        self._error = storageError(failure.value)
        self._queue.clear()
        queued, self._queued = self._queued, 0
        if self._idle():
            self._budget.remove(queued)
            return
        if not self._syncing:
            self._answer()
        self._budget.remove(queued)
        self._resumeToFail()

    def _idle(self) -> bool:
        """
        Once abandoned, run what waited for the file's running write and
        sync to end; whether abandoned.
        """
        if not self._abandoned:
            return False
        if not self._busy and not self._syncing:
            then, self._whenIdle = self._whenIdle, None
            if then is not None:
                then()
        return True
