"""
Moving a request body from its socket into a file, or into another socket,
with C{splice(2)}.

A body received the usual way is copied from the kernel into a Python
bytes object, and copied again on its way to the disk or the backend.  A
L{Splicer} instead has the kernel move the bytes from the socket into a
pipe and from the pipe into the file's pages (the backend) or the next
socket (the proxy), in a thread of its own.  The backend's reactor then
reads them back from the page cache (L{mapped}) to hash and count them: one
copy of each byte is left, made by the kernel, and the reactor thread is
free to hash while the next bytes arrive.  The proxy's bytes are not
copied at all.

A file is written through the page cache: the splicer starts the writeback
of each step it wrote (L{SYNC_STEP}, smaller when many bodies arrive at
once), and of the rest once the body is in, and once
the reactor has seen a range and its writeback is done, drops it from the
cache, so the final fsync has little left to do and the cache does not fill
with uploads.  Splicers into files at once share how far they may run ahead
of the reactor's hashing (L{AHEAD_TOTAL}, each at least L{AHEAD_MIN}).  A
socket that takes no more holds the splicer, and so the client, back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["FileTarget", "Splicer", "mapped", "available", "SPLICE_MIN", "SPLICE_MAX"]

#: Bodies with less than this still to come are read the usual way.
SPLICE_MIN = 16 << 20
#: Bodies spliced at once in one process (each holds a thread and a pipe).
SPLICE_MAX = 32
#: Capacity asked for each splicer's pipe: the most moved per system call.
PIPE_SIZE = 1 << 20
#: The reactor hears of progress every this many bytes written into a file
#: (it then hashes them), or into a socket (it only counts them), or every
#: L{REPORT_SECONDS} while bytes move.
REPORT_BYTES = 4 << 20
REPORT_SOCKET_BYTES = 8 << 20
REPORT_SECONDS = 0.5
#: The splicer wakes when this much has arrived (or the body's last bytes,
#: or the end of the connection): on a connection that brings a body
#: slowly, or one of many, it moves a few large pieces instead of many
#: small ones.
LOW_WATER = 1 << 20
#: The reactor reads the bytes back (maps them) this many at most at once.
VIEW_SIZE = 4 << 20
#: Most bytes written to a file that the reactor has not seen yet (for a
#: socket: twice its report size).
AHEAD = 32 << 20
#: Most such bytes of all the bodies spliced into files at once, shared
#: evenly (but each may go L{AHEAD_MIN} ahead): with many bodies at once
#: the reactor would otherwise fall far behind, and be left hashing alone
#: once they all arrived.
AHEAD_TOTAL = 64 << 20
#: More than a report and a pipe's worth, so that a splicer always gets to
#: report what it waits on.
AHEAD_MIN = 8 << 20
#: Writeback is started for every this many bytes written by a splicer
#: alone; splicers into files at once share L{SYNC_TOTAL} (each at least
#: L{SYNC_STEP_MIN}), so that with many bodies arriving together the disk
#: starts writing after about the same number of bytes as with one, rather
#: than sitting idle until each body has a whole step.
SYNC_STEP = 16 << 20
SYNC_TOTAL = 32 << 20
SYNC_STEP_MIN = 1 << 20

_PAGE = mmap.ALLOCATIONGRANULARITY
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


@dataclass(frozen=True)
class FileTarget:
    """
    A file a body's consumer lets the body be written into directly.

    @ivar fd: the file, written from C{offset} on (the splicer writes
        through a duplicate, so closing it meanwhile is safe).
    @ivar readFd: the same file opened for reading: the bytes written are
        read back through it to be hashed and counted.
    @ivar failure: what a write error of the file is reported as.
    """

    fd: int
    readFd: int
    offset: int
    failure: Callable[[BaseException], BaseException]


def _syncFileRange() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function: Any = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_sync_file_range = _syncFileRange()


def available() -> bool:
    """Whether this system can splice (Linux, Python 3.10 or newer)."""
    return hasattr(os, "splice") and hasattr(os, "eventfd")


class _FileShare:
    """The splicers writing into files at once, who share L{AHEAD_TOTAL}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def join(self) -> None:
        with self._lock:
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1

    def ahead(self) -> int:
        """How far each of them may now be ahead of the reactor."""
        return max(AHEAD_MIN, min(AHEAD, AHEAD_TOTAL // max(1, self.count)))

    def step(self) -> int:
        """How many bytes each of them now writes between writeback starts."""
        return max(SYNC_STEP_MIN, min(SYNC_STEP, SYNC_TOTAL // max(1, self.count)))


_intoFiles = _FileShare()


def _syncRange(fd: int, start: int, length: int, flags: int) -> None:
    if _sync_file_range is None or length <= 0:
        return
    if _sync_file_range(fd, start, length, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _setLowWater(sock: socket.socket, count: int) -> int:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, count)
    except OSError:
        return 1
    return count


@contextmanager
def mapped(fd: int, start: int, end: int) -> Iterator[memoryview]:
    """A read-only view of bytes C{start} to C{end} of the file C{fd}."""
    base = start - start % _PAGE
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    with mmap.mmap(fd, end - base, flags, mmap.PROT_READ, offset=base) as pages:
        with memoryview(pages) as view, view[start - base:] as part:
            yield part


class _Stopped(Exception):
    """The splicer was stopped while it waited for its output."""


class Splicer:
    """
    Moves C{count} bytes from the socket C{sock} into C{out}, in a thread:
    a file, written at C{offset} after C{prefix} (bytes of the body that
    were already read), or, with C{offset} None, a socket.

    The descriptors are duplicated: whatever closes the originals meanwhile,
    the splicer's own stay valid until it ends.

    C{report(taken, written)} and, once, C{ended(taken, written, error)}
    are called through C{callFromThread}: C{written} counts the bytes
    written to C{out} (the prefix included), C{taken} those read from
    C{sock}.  C{taken} can be short of C{count} when the client closed the
    connection; C{written} short of C{taken + len(prefix)} when C{out}
    refused the bytes (C{error}) or the splicer was stopped.

    @ivar blocked: whether the splicer waits for a socket C{out} to take
        bytes (the client is held back by what comes after).
    """

    def __init__(
        self,
        callFromThread: Callable[..., object],
        sock: int,
        out: int,
        count: int,
        report: Callable[[int, int], object],
        ended: Callable[[int, int, BaseException | None], object],
        prefix: Sequence[bytes] = (),
        offset: int | None = None,
    ) -> None:
        self._callFromThread = callFromThread
        self._sock = os.dup(sock)
        self._out = os.dup(out)
        self._offset = offset
        self._count = count
        self._prefix = list(prefix)
        self._report = report
        self._ended = ended
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._lock = threading.Condition()
        self._paused = False
        self._stopped = False
        self._finished = False
        self._seen = 0
        self.written = 0
        self.taken = 0
        self.blocked = False
        self._every = REPORT_BYTES if offset is not None else REPORT_SOCKET_BYTES

    def start(self) -> None:
        threading.Thread(target=self.run, name="streamrelay-splice", daemon=True).start()

    # From the reactor

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._lock.notify()

    def seen(self, written: int) -> None:
        """The reactor has read the first C{written} bytes back."""
        with self._lock:
            self._seen = written
            self._lock.notify()

    def stop(self) -> None:
        """End as soon as possible; C{ended} is still called."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
            if not self._finished:
                # (Under the lock: once finished, the descriptor is closed
                # and its number may belong to something else.)
                os.eventfd_write(self._wake, 1)

    # In the thread

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._move()
        except _Stopped:
            pass
        except OSError as e:
            error = e
        finally:
            with self._lock:
                self._finished = True
                for fd in (self._sock, self._out, self._wake):
                    os.close(fd)
        self._callFromThread(self._ended, self.taken, self.written, error)

    def _aheadNow(self) -> int:
        return _intoFiles.ahead() if self._offset is not None else 2 * REPORT_SOCKET_BYTES

    def _held(self) -> bool:
        """(Under the lock.)  Whether the splicer must wait: paused or too far ahead."""
        return self._paused or self.written - self._seen > self._aheadNow()

    def _wait(self) -> bool:
        """Wait while held; False once stopped."""
        with self._lock:
            while not self._stopped and self._held():
                self._lock.wait()
            return not self._stopped

    def _move(self) -> None:
        if self._offset is None:
            self._moveBody()
            return
        _intoFiles.join()
        try:
            self._moveBody()
        finally:
            _intoFiles.leave()

    def _moveBody(self) -> None:
        for data in self._prefix:
            self._pwrite(data)
        if self._prefix:
            self._callFromThread(self._report, self.taken, self.written)
        reported, lastReport = self.written, time.monotonic()
        synced = dropped = 0
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        self._outPoller = select.poll()
        self._outPoller.register(self._out, select.POLLOUT)
        self._outPoller.register(self._wake, select.POLLIN)
        sock = socket.socket(fileno=self._sock)
        lowWater = 1
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # the default capacity (64 KiB) still works
            toFile = True
            while self.taken < self._count and self._wait():
                want = min(LOW_WATER, self._count - self.taken)
                if want != lowWater:
                    lowWater = _setLowWater(sock, want)
                try:
                    n = os.splice(
                        self._sock, write, min(PIPE_SIZE, self._count - self.taken),
                        flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK,
                    )
                except BlockingIOError:
                    poller.poll()
                    continue
                except OSError as e:
                    if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT):
                        return  # the connection is gone; the reactor finds out
                    raise
                if n == 0:
                    return
                self.taken += n
                toFile = self._drain(read, n, toFile)
                now = time.monotonic()
                if self.written - reported >= self._every or now - lastReport >= REPORT_SECONDS:
                    self._callFromThread(self._report, self.taken, self.written)
                    reported, lastReport = self.written, now
                if self._offset is not None and self.written - synced >= _intoFiles.step():
                    dropped = self._syncBehind(synced, dropped)
                    synced = self.written
            if self._offset is not None and self.taken == self._count and not self._stopped:
                # The reactor hashes the last bytes while the disk takes
                # what no step covered (rather than in the final fsync).
                if self.written > reported:
                    self._callFromThread(self._report, self.taken, self.written)
                _syncRange(self._out, self._offset + synced, self.written - synced, _WRITE)
        finally:
            os.close(read)
            os.close(write)
            if lowWater != 1:
                _setLowWater(sock, 1)  # as the reactor expects it back
            sock.detach()

    def _drain(self, pipe: int, count: int, toFile: bool) -> bool:
        """Move C{count} bytes from the pipe into C{out}."""
        if self._offset is None:
            self._send(pipe, count)
            return True
        while count:
            if toFile:
                try:
                    n = os.splice(pipe, self._out, count, offset_dst=self._offset + self.written)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    toFile = False  # a file system that takes no splice
                    continue
            else:
                n = self._pwrite(os.read(pipe, count))
            if n == 0:
                raise OSError(errno.EIO, "the file took no bytes")
            count -= n
            if toFile:
                self.written += n
        return toFile

    def _send(self, pipe: int, count: int) -> None:
        """Move C{count} bytes from the pipe into the socket C{out}."""
        while count:
            try:
                n = os.splice(pipe, self._out, count,
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                self.blocked = True
                self._outPoller.poll()
                self.blocked = False
                with self._lock:
                    if self._stopped:
                        raise _Stopped() from None
                continue
            count -= n
            self.written += n

    def _pwrite(self, data: bytes) -> int:
        assert self._offset is not None
        view = memoryview(data)
        while view:
            n = os.pwrite(self._out, view, self._offset + self.written)
            self.written += n
            view = view[n:]
        return len(data)

    def _syncBehind(self, synced: int, dropped: int) -> int:
        """
        Start the writeback of what was written since C{synced}; wait for
        that of everything the reactor has seen and drop it from the cache.
        Returns how far the cache is dropped.
        """
        base = self._offset
        assert base is not None
        _syncRange(self._out, base + synced, self.written - synced, _WRITE)
        with self._lock:
            seen = self._seen
        upto = min(seen, synced)
        upto -= (base + upto) % _PAGE
        if upto > dropped:
            _syncRange(self._out, base + dropped, upto - dropped,
                       _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
            os.posix_fadvise(self._out, base + dropped, upto - dropped, os.POSIX_FADV_DONTNEED)
            return upto
        return dropped
