"""
Writing streams to files opened with C{O_DIRECT}: the bytes skip the page
cache, and each file has several writes in flight at once.

A file written through the page cache costs a copy into the cache, the
kernel's writeback of it, and the syncs that keep the cache from filling;
the disk sees one write at a time.  Here a stream is cut into aligned
pieces, each piece is copied into a page-aligned buffer by a thread and
written at its offset, and up to L{DirectPool}'s C{jobs} pieces (of all
files together) are written at once, each thread going on to the next
piece by itself, so the disk works on several while the reactor receives
the next.  The last bytes of a file, short of a
block, are written through the page cache when the file is finished.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed

from streamrelay.store.writer import HeldWriter, Runner, WriteBudget, storageError

__all__ = ["ALIGN", "DirectPool", "DirectWriter", "bufferedIO", "directIO"]

#: Offsets and lengths of direct writes are multiples of this (the largest
#: logical block size of common disks).
ALIGN = 4096

#: Most bytes in one piece; also the size of each job's buffer.
PIECE = 1 << 20

#: Pieces written at once, all files of a store together.  On a 2-core
#: machine two kept the disk busier than four, and far busier while the
#: cores were busy receiving and hashing (likely: a writing thread switched
#: out while it holds the interpreter lock stalls every other thread).
JOBS = 2

#: Most rounds of collecting, cutting and starting jobs in one call.
_PASSES = 64

#: (bytes, start, end): part of a chunk received.
_Slice = tuple[bytes, int, int]


def directIO(fd: int) -> bool:
    """
    Switch C{fd} to direct I/O; whether the file system allowed it (most
    local ones do; tmpfs and some network file systems do not).
    """
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return False
    return True


def bufferedIO(fd: int) -> None:
    """Switch C{fd} back to writes through the page cache."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)


class _Buffer:
    """A page-aligned buffer (an anonymous mapping), and its address."""

    def __init__(self, size: int) -> None:
        self.memory = mmap.mmap(-1, size)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))


def _writePiece(fd: int, buffer: _Buffer, slices: list[_Slice], offset: int, last: bool) -> None:
    """
    (In a thread.)  Copy C{slices} into C{buffer} and write them at
    C{offset} of C{fd}; C{last}: the file's unaligned end, written through
    the page cache.  ctypes' memmove lets go of the interpreter lock while
    it copies.
    """
    size = 0
    for data, start, end in slices:
        source = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        assert source is not None
        ctypes.memmove(buffer.address + size, source + start, end - start)
        size += end - start
    if last:
        bufferedIO(fd)
    view = memoryview(buffer.memory)
    try:
        done = 0
        while done < size:
            try:
                done += os.pwrite(fd, view[done:size], offset + done)
            except OSError as e:
                if e.errno != errno.EINVAL or not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                    raise
                # A file system that takes O_DIRECT at open but not this
                # write (or a short write left the rest unaligned).
                bufferedIO(fd)
    finally:
        view.release()


class _Piece:
    """A piece cut from a file's stream, to be written by a job."""

    __slots__ = ("writer", "slices", "offset", "size", "last", "error")

    def __init__(
        self, writer: DirectWriter, slices: list[_Slice], offset: int, size: int, last: bool
    ) -> None:
        self.writer = writer
        self.slices = slices
        self.offset = offset
        self.size = size
        self.last = last
        self.error: BaseException | None = None


class DirectPool:
    """
    Writes the pieces of a store's direct files: the reactor cuts pieces
    ahead (at most twice C{jobs} waiting, files taking turns), and up to
    C{jobs} jobs run through C{run}, each with a reused buffer of C{piece}
    bytes, writing pieces one after another until none waits.  A job so
    takes the next piece without a round trip to the reactor, which, busy
    with many connections, hears of a job's end only between its turns;
    the reactor learns which pieces were written whenever a file asks for
    a piece and when a job ends.
    """

    def __init__(self, run: Runner, jobs: int = JOBS, piece: int = PIECE) -> None:
        assert piece % ALIGN == 0
        self.run = run
        self._jobs = jobs
        self._piece = piece
        self._buffers: list[_Buffer] = []
        self._running = 0
        #: Pieces cut and waiting for a job; jobs take them from other
        #: threads (deque's append and popleft are atomic).
        self._ready: deque[_Piece] = deque()
        #: Pieces written (or failed), appended by the jobs.
        self._done: deque[_Piece] = deque()
        self._wanting: dict[DirectWriter, None] = {}
        self._starting = False

    def want(self, writer: DirectWriter) -> None:
        """C{writer} has bytes it could write."""
        self._wanting[writer] = None
        self._start()

    def forget(self, writer: DirectWriter) -> None:
        self._wanting.pop(writer, None)

    def _buffer(self) -> _Buffer:
        if self._buffers:
            return self._buffers.pop()
        return _Buffer(self._piece)

    def _start(self) -> None:
        if self._starting:
            return  # an outer call's loop goes on
        self._starting = True
        try:
            # Again while pieces were written meanwhile (at once, with a
            # runner that runs in the calling thread): telling their files
            # can free room or let a file's end be cut.
            for _ in range(_PASSES):
                self._collect()
                self._cut()
                while self._running < self._jobs and self._ready:
                    buffer = self._buffer()
                    self._running += 1
                    self.run(self._work, buffer).addBoth(self._ended, buffer)
                if not self._done:
                    break
        finally:
            self._starting = False

    def _cut(self) -> None:
        """Cut pieces, files taking turns, until twice C{jobs} wait."""
        while self._wanting and len(self._ready) < 2 * self._jobs:
            writer = next(iter(self._wanting))
            del self._wanting[writer]
            cut = writer._nextPiece(self._piece)
            if cut is None:
                continue
            if writer._canWrite():
                self._wanting[writer] = None  # its turn again after the others
            self._ready.append(_Piece(writer, *cut))

    def _collect(self) -> None:
        """Tell the files of their pieces written since last time."""
        while self._done:
            piece = self._done.popleft()
            piece.writer._pieceEnded(piece.error, piece.size)

    def _work(self, buffer: _Buffer) -> None:
        """(In a thread.)  Write pieces until none waits."""
        while True:
            try:
                piece = self._ready.popleft()
            except IndexError:
                return
            if not piece.writer._abandoned:
                try:
                    _writePiece(piece.writer.fd, buffer, piece.slices, piece.offset, piece.last)
                except Exception as e:
                    # Without its frames: this one holds the piece, which
                    # would hold its bytes and the error in a cycle.
                    piece.error = e.with_traceback(None)
            self._done.append(piece)

    def _ended(self, result: object, buffer: _Buffer) -> None:
        self._running -= 1
        self._buffers.append(buffer)
        self._start()


class DirectWriter(HeldWriter):
    """
    Writes to C{fd}, a file switched to direct I/O (see L{directIO}),
    through C{pool}: aligned pieces as the bytes come, the end of the file
    once L{finish} is called.  Holds the producer to C{high} bytes
    queued or being written (see L{HeldWriter}; the default leaves room for
    the pool's pieces in flight and the next one).  A write error fails
    L{finish} and the next L{write}.  The same contract as
    L{streamrelay.store.writer.QueuedWriter}.
    """

    def __init__(
        self,
        fd: int,
        pool: DirectPool,
        high: int = 5 << 20,
        low: int = 2 << 20,
        budget: WriteBudget | None = None,
    ) -> None:
        super().__init__(high, low, budget)
        self.fd = fd
        self.written = 0
        self._pool = pool
        self._queue: deque[bytes] = deque()
        #: Bytes of C{_queue[0]} already taken by a piece.
        self._head = 0
        #: Bytes queued and not yet taken by a piece.
        self._queued = 0
        #: Bytes queued or being written (what the producer is held to).
        self._held = 0
        #: Where the next piece goes in the file.
        self._offset = 0
        self._running = 0
        self._finishing = False
        self._abandoned = False
        self._whenIdle: Callable[[], object] | None = None

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._abandoned or self._finishing:
            raise RuntimeError("write after the file was finished or abandoned")
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._queue.append(data)
        self._queued += len(data)
        self._held += len(data)
        self._budget.add(len(data))
        if self._canWrite():
            self._pool.want(self)
        self._pauseIfFull()

    def finish(self) -> Deferred[None]:
        """
        Fires once every byte written is in the file (the last ones through
        the page cache: fsync the file after); no write may follow.
        """
        if self._error is not None:
            return fail(self._error)
        self._finishing = True
        if self._settled():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._canWrite():
            self._pool.want(self)
        return d

    def abandon(self, then: Callable[[], object]) -> None:
        """
        Drop what is queued; call C{then} once no write of the file runs.
        """
        self._pool.forget(self)
        self._abandoned = True
        self._drop()
        self._whenIdle = then
        self._idle()

    # For the pool

    def _canWrite(self) -> bool:
        """Whether a piece could start now."""
        if self._error is not None or self._abandoned:
            return False
        if self._queued >= ALIGN:
            return True
        return self._finishing and self._queued > 0 and self._running == 0

    def _nextPiece(self, limit: int) -> tuple[list[_Slice], int, int, bool] | None:
        """
        Take the next piece: at most C{limit} bytes, a multiple of L{ALIGN}
        unless it is the file's end; its slices, offset, size and whether
        it is the end.
        """
        if not self._canWrite():
            return None
        last = self._queued < ALIGN
        size = self._queued if last else min(limit, self._queued - self._queued % ALIGN)
        slices: list[_Slice] = []
        wanted = size
        while wanted:
            data = self._queue[0]
            end = min(len(data), self._head + wanted)
            slices.append((data, self._head, end))
            wanted -= end - self._head
            if end == len(data):
                self._queue.popleft()
                self._head = 0
            elif len(data) - end < ALIGN:
                # A rest too short to write before more comes: keep a copy
                # of it, not the whole chunk.
                self._queue[0] = data[end:]
                self._head = 0
            else:
                self._head = end
        offset = self._offset
        self._offset += size
        self._queued -= size
        self._running += 1
        return slices, offset, size, last

    def _pieceEnded(self, error: BaseException | None, size: int) -> None:
        """A piece of C{size} bytes was written, failed with C{error}, or skipped."""
        self._running -= 1
        self._held -= size
        if self._abandoned:
            pass  # skipped, or written for nothing: the file goes
        elif error is not None:
            if self._error is None:
                self._error = storageError(error)
                self._drop()
        else:
            self.written += size
        if self._idle():
            self._budget.remove(size)
            return
        if self._canWrite():
            self._pool.want(self)
        if self._error is not None or self._settled():
            self._answer()
        self._budget.remove(size)
        if self._error is not None:
            self._resumeToFail()
        else:
            self._maybeResume()

    def holding(self) -> int:
        return self._held

    # Inside

    def _settled(self) -> bool:
        return self._running == 0 and self._queued == 0

    def _drop(self) -> None:
        """Drop what is queued and not yet being written."""
        dropped, self._queued = self._queued, 0
        self._queue.clear()
        self._head = 0
        self._held -= dropped
        self._budget.remove(dropped)

    def _idle(self) -> bool:
        """
        Once abandoned, run what waited for the running writes to end;
        whether abandoned.
        """
        if not self._abandoned:
            return False
        if self._running == 0:
            then, self._whenIdle = self._whenIdle, None
            if then is not None:
                then()
        return True
