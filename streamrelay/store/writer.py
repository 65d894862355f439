"""
Writing a stream to a file without blocking the reactor: bytes are queued
and written by a thread, and the producer is paused while too much waits.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from streamrelay.store.interfaces import StorageFull

#: Runs a function, in a thread or inline, and gives its result.
Runner = Callable[..., "Deferred[Any]"]

#: Every this many bytes, the kernel is asked to start writing the file back
#: to disk and to drop what it already wrote from the page cache, so an
#: fsync at the end has little left to do.
WRITEBACK_EVERY = 16 << 20

#: Most buffers passed to one writev.
_IOV_MAX = 512


def inline(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A runner that runs in the calling thread (tests, and small files)."""
    return maybeDeferred(f, *args)


def storageError(error: BaseException) -> BaseException:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(os.strerror(error.errno))
    return error


def _writeAll(fd: int, chunks: list[bytes], offset: int) -> None:
    """Write every chunk to C{fd} (in a thread); hint writeback as it goes."""
    views = [memoryview(c) for c in chunks]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        total = written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
        before, offset = offset, offset + total
        if before // WRITEBACK_EVERY != offset // WRITEBACK_EVERY:
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass


def _writeEach(jobs: list[tuple[int, list[bytes], int]]) -> list[BaseException | None]:
    """Run L{_writeAll} for each job (in a thread); each job's error or None."""
    results: list[BaseException | None] = []
    for fd, chunks, offset in jobs:
        try:
            _writeAll(fd, chunks, offset)
        except Exception as e:
            results.append(e)
        else:
            results.append(None)
    return results


class WritePool:
    """
    Runs the writes of many files through C{run} as few jobs: at most
    C{jobs} run at once, and the writes asked for meanwhile wait and go
    together in the next job.  Many uploads at once then cost one thread
    hand-off per batch of writes instead of one per write.

    A file must have at most one write running at a time (L{QueuedWriter}
    sees to that).
    """

    def __init__(self, run: Runner, jobs: int = 2) -> None:
        self._run = run
        self._jobs = jobs
        self._running = 0
        self._waiting: list[tuple[int, list[bytes], int, Deferred[None]]] = []
        self._answering = False

    def write(self, fd: int, chunks: list[bytes], offset: int) -> Deferred[None]:
        """Write C{chunks} at C{offset} of C{fd}; fires once written."""
        d: Deferred[None] = Deferred()
        self._waiting.append((fd, chunks, offset, d))
        if not self._answering and self._running < self._jobs:
            self._start()
        return d

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self._running += 1
        jobs = [(fd, chunks, offset) for fd, chunks, offset, _ in batch]
        self._run(_writeEach, jobs).addBoth(self._ended, [d for *_, d in batch])

    def _ended(self, results: object, waiters: list[Deferred[None]]) -> None:
        self._running -= 1
        # Writes asked for while the answers run (the next batch of each
        # writer) wait, to go in one job together.
        self._answering = True
        try:
            for i, d in enumerate(waiters):
                if isinstance(results, Failure):
                    d.errback(results)
                else:
                    error = cast(list[BaseException | None], results)[i]
                    if error is None:
                        d.callback(None)
                    else:
                        d.errback(Failure(error))
        finally:
            self._answering = False
        while self._waiting and self._running < self._jobs:
            self._start()


class WriteBudget:
    """
    Bytes all the writers of a store may hold queued together: above
    C{limit} every writer that receives more pauses its producer; they are
    resumed once the total is back under three quarters of it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0
        self._waiting: list[QueuedWriter] = []

    def over(self) -> bool:
        return self.queued > self.limit

    def roomy(self) -> bool:
        return self.queued <= self.limit * 3 // 4

    def wait(self, writer: QueuedWriter) -> None:
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


class QueuedWriter:
    """
    Writes to C{fd} through C{run} (a L{WritePool} shared with other files,
    or a runner of its own), one batch at a time, holding at most
    about C{high} bytes in memory: above it the producer is paused, and it
    is resumed once the queue is below C{low}.  A write error fails
    L{drained} and the next L{write}, and resumes the producer so that the
    next write comes and raises.
    """

    def __init__(
        self,
        fd: int,
        run: Runner | WritePool,
        high: int = 8 << 20,
        low: int = 2 << 20,
        budget: WriteBudget | None = None,
    ) -> None:
        self.fd = fd
        self._budget = budget or WriteBudget(1 << 62)
        self.producer: IPushProducer | None = None
        self.written = 0
        self._pool = run if isinstance(run, WritePool) else WritePool(run, jobs=1)
        self._high = high
        self._low = low
        self._queue: list[bytes] = []
        self._queued = 0
        self._busy = False
        self._paused = False
        self._error: BaseException | None = None
        self._waiters: list[Deferred[None]] = []
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
        overBudget = self._budget.over()
        if overBudget:
            self._budget.wait(self)
        if (
            (self._queued > self._high or overBudget)
            and self.producer is not None
            and not self._paused
        ):
            self._paused = True
            self.producer.pauseProducing()

    def _maybeResume(self) -> None:
        if (
            self._paused
            and self.producer is not None
            and self._queued <= self._low
            and self._budget.roomy()
        ):
            self._paused = False
            self.producer.resumeProducing()
        elif self._paused:
            self._budget.wait(self)

    def drained(self) -> Deferred[None]:
        """Fires once everything written so far is in the file."""
        if self._error is not None:
            return fail(self._error)
        if not self._busy and not self._queue:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def abandon(self, then: Callable[[], object]) -> None:
        """Drop what is queued; call C{then} once no write is running."""
        self._abandoned = True
        self._queue.clear()
        self._budget.remove(self._queued)
        self._queued = 0
        if self._busy:
            self._whenIdle = then
        else:
            then()

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
        else:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)
        self._budget.remove(size)
        self._maybeResume()

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        assert failure.value is not None
        self._error = storageError(failure.value)
        self._queue.clear()
        queued, self._queued = self._queued, 0
        if self._idle():
            self._budget.remove(queued)
            return
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(Failure(self._error))
        self._budget.remove(queued)
        if self._paused and self.producer is not None:
            self._paused = False
            self.producer.resumeProducing()

    def _idle(self) -> bool:
        """Run what waited for the running write to end; whether abandoned."""
        if self._abandoned:
            then, self._whenIdle = self._whenIdle, None
            if then is not None:
                then()
            return True
        return False
