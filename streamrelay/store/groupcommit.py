"""
Group commit: the files that many uploads finish at about the same time
are made durable together, so that they share the waits for the disk.

An upload hands its written file to L{GroupCommit.commit} and hears back
when its own round has ended.  Files handed in while a round runs wait and
go together in the next one: one job off the reactor thread that

 1. makes the bytes of every file of the round durable (see L{flushFiles}:
    one C{syncfs(2)} of their file system while little else waits to be
    written on the machine, else one C{fdatasync} per file, several at
    once), then closes each;
 2. then puts each file in place under its name (its L{Entry.place});
 3. then fsyncs, once each, the folders whose entries changed.

That order is what crash safety needs: a name only ever points at bytes
that are on stable storage, and an upload is answered only once its
name's folder entry is on stable storage too.  A file whose bytes could
not be synced is not put in place and fails alone (with C{syncfs}, whose
error names no file, every file of the round fails); a folder that could
not be synced fails each file placed in it, which is taken back first
where it can be (L{Entry.withdraw}).  Nothing of a failed file is answered
as stored.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from streamrelay.store.placing import fsyncFolder
from streamrelay.store.writer import Runner, dropCached

T = TypeVar("T")

#: C{syncfs} is used for a round only while the machine's dirty and
#: written-back bytes together are below this: it writes (and waits for)
#: every file's unwritten bytes on the file system, other uploads' and other
#: programs' too, and a 1 MiB upload must not wait behind a 2 GiB one.
SYNCFS_BELOW = 32 << 20

#: Most files in one round: a round holds each one's file open.
ROUND_FILES = 256

#: A file larger than this is committed in a round of its own, at once
#: and beside the others: its sync is mostly its own bytes, which it would
#: make every small file of a shared round wait for.
ALONE_ABOVE = 16 << 20

#: Syncs the bytes of each given file; each one's error, or None.
Flush = Callable[[Sequence[int]], list[BaseException | None]]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """
    One file's part of a round.

    @ivar file: the open file to make durable (handed over: the round
        closes it), or its status when it was made durable before (sealed),
        or None when only C{place} is wanted.
    @ivar place: (in the round's thread, once the file's bytes are durable)
        put the file in place under its name; given the file's status
        (None when C{file} was None); its result is the entry's.
    @ivar folders: the folders whose entries C{place} changed: each is
        fsynced before the entry is answered.
    @ivar withdraw: (in the round's thread) take back what C{place} did,
        when a folder of the entry could not be synced.
    @ivar size: the file's size: above L{ALONE_ABOVE}, it goes alone.
    """

    file: int | os.stat_result | None
    place: Callable[[os.stat_result | None], T]
    folders: tuple[Path, ...] = ()
    withdraw: Callable[[T], object] | None = None
    size: int = 0


class FolderNotSynced(OSError):
    """A folder holding a new file's name could not be synced."""


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def syncfs(fd: int) -> None:
    """(Blocking.) C{syncfs(2)}: flush the whole file system holding C{fd}."""
    if _LIBC is None or not hasattr(_LIBC, "syncfs"):
        raise OSError(errno.ENOSYS, "syncfs is not available")
    if _LIBC.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def unwrittenBytes() -> int:
    """The machine's Dirty + Writeback bytes (from C{/proc/meminfo})."""
    total = 0
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith((b"Dirty:", b"Writeback:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 1 << 62
    return total


#: Files synced at once by L{syncEach}.
SYNCERS = 8

_syncers: ThreadPoolExecutor | None = None


def _fdatasync(fd: int) -> BaseException | None:
    try:
        os.fdatasync(fd)
    except OSError as e:
        return e
    return None


def syncEach(fds: Sequence[int]) -> list[BaseException | None]:
    """
    (Blocking.) C{fdatasync} each file, L{SYNCERS} at once; each one's
    error, or None.  At once, because each sync ends with a flush of the
    disk's cache, which waits for every write in flight on the disk (a
    large file's writeback): the kernel merges the flushes asked for
    together, where one after another each would wait its turn.
    """
    global _syncers
    if len(fds) == 1:
        return [_fdatasync(fds[0])]
    if _syncers is None:
        _syncers = ThreadPoolExecutor(SYNCERS, thread_name_prefix="streamrelay-sync")
    return list(_syncers.map(_fdatasync, fds))


def flushFiles(
    fds: Sequence[int],
    unwritten: Callable[[], int] = unwrittenBytes,
    whole: Callable[[int], None] = syncfs,
    each: Flush = syncEach,
) -> list[BaseException | None]:
    """
    (Blocking.) Make the bytes of the files C{fds} durable: by one
    C{syncfs} of their file system (they are all on one: a store's) while
    the machine holds less than L{SYNCFS_BELOW} unwritten bytes, else by
    one C{fdatasync} each (L{syncEach}).  Each file's error, or None.

    With direct I/O the bytes of a small file are on the disk before it is
    handed in, and a file's sync is mostly the disk's cache flush and the
    journal's commit: C{syncfs} does those once for all, where an
    C{fdatasync} per file flushes the disk's cache once per file.  But
    C{syncfs} also writes, and waits for, every other unwritten byte of the
    file system: behind a large file being written it took 0.5 s a round
    where parallel C{fdatasync}s took 0.08 (bench/syncways.py,
    docs/performance.md).
    """
    if len(fds) > 1 and unwritten() < SYNCFS_BELOW:
        try:
            whole(fds[0])
        except OSError as e:
            if e.errno != errno.ENOSYS:
                return [e] * len(fds)
        else:
            return [None] * len(fds)
    return each(fds)


def _closeSynced(fd: int) -> os.stat_result:
    try:
        dropCached(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def runRound(
    entries: Sequence[Entry[Any]],
    flush: Flush = flushFiles,
    syncFolder: Callable[[Path], None] = fsyncFolder,
) -> list[Any]:
    """
    (In a thread.)  One round: the files' bytes made durable, each put in
    place, the folders synced.  Each entry's result, or the exception it
    failed with.
    """
    results: list[Any] = [None] * len(entries)
    failed: list[BaseException | None] = [None] * len(entries)
    toSync = [(i, e.file) for i, e in enumerate(entries) if isinstance(e.file, int)]
    try:
        errors = flush([fd for _, fd in toSync]) if toSync else []
    except BaseException as e:
        errors = [e] * len(toSync)
    status: list[os.stat_result | None] = [
        e.file if isinstance(e.file, os.stat_result) else None for e in entries
    ]
    for (i, fd), error in zip(toSync, errors, strict=True):
        if error is None:
            try:
                status[i] = _closeSynced(fd)
            except OSError as e:
                failed[i] = e
        else:
            failed[i] = error
            try:
                os.close(fd)
            except OSError:
                pass
    for i, entry in enumerate(entries):
        if failed[i] is not None:
            continue
        try:
            results[i] = entry.place(status[i])
        except BaseException as e:
            failed[i] = e
    folders = {
        folder: None
        for i, entry in enumerate(entries)
        if failed[i] is None
        for folder in entry.folders
    }
    unsynced: dict[Path, BaseException] = {}
    for folder in folders:
        try:
            syncFolder(folder)
        except OSError as e:
            unsynced[folder] = e
    for i, entry in enumerate(entries):
        if failed[i] is not None:
            continue
        lost = [folder for folder in entry.folders if folder in unsynced]
        if not lost:
            continue
        error = unsynced[lost[0]]
        failed[i] = FolderNotSynced(
            getattr(error, "errno", None) or errno.EIO,
            f"the folder could not be synced, so the new name might not survive a crash: "
            f"{error}",
            str(lost[0]),
        )
        if entry.withdraw is not None:
            try:
                entry.withdraw(results[i])
            except OSError:
                pass
    return [f if f is not None else r for f, r in zip(failed, results, strict=True)]


class GroupCommit:
    """
    Runs rounds (L{runRound}) through C{run}, one at a time: each file
    handed in while a round runs goes in the next one, at most
    L{ROUND_FILES} a round.  A file larger than C{aloneAbove} goes at once
    in a round of its own, beside the shared ones.

    @param run: runs a round off the reactor thread.
    @param flush: makes the files of a round durable (tests count its calls).
    @param syncFolder: fsyncs a folder.
    """

    def __init__(
        self,
        run: Runner,
        flush: Flush = flushFiles,
        syncFolder: Callable[[Path], None] = fsyncFolder,
        roundFiles: int = ROUND_FILES,
        aloneAbove: int = ALONE_ABOVE,
    ) -> None:
        self._run = run
        self._flush = flush
        self._syncFolder = syncFolder
        self._roundFiles = roundFiles
        self._aloneAbove = aloneAbove
        self._waiting: list[tuple[Entry[Any], Deferred[Any]]] = []
        self._running = False
        self._answering = False
        #: Rounds run, and files they covered: for tests and metrics.
        self.rounds = 0
        self.files = 0

    @property
    def waiting(self) -> int:
        """Files waiting for the next round."""
        return len(self._waiting)

    def commit(self, entry: Entry[T]) -> Deferred[T]:
        """
        Make C{entry}'s file durable and put it in place in the next round;
        fires with what its C{place} gave once the round ended, or fails
        with the error of its own file or folder.
        """
        d: Deferred[T] = Deferred()
        if entry.size > self._aloneAbove:
            self._start([(entry, d)], alone=True)
            return d
        self._waiting.append((entry, d))
        self._kick()
        return d

    def _kick(self) -> None:
        if self._running or self._answering or not self._waiting:
            return
        batch = self._waiting[: self._roundFiles]
        del self._waiting[: len(batch)]
        self._running = True
        self._start(batch, alone=False)

    def _start(self, batch: list[tuple[Entry[Any], Deferred[Any]]], alone: bool) -> None:
        self.rounds += 1
        self.files += len(batch)
        entries = [entry for entry, _ in batch]
        self._run(runRound, entries, self._flush, self._syncFolder).addBoth(
            self._ended, [d for _, d in batch], alone
        )

    def _ended(self, results: object, waiters: list[Deferred[Any]], alone: bool) -> None:
        if not alone:
            self._running = False
        if isinstance(results, Failure):
            outcomes: list[Any] = [results.value] * len(waiters)
        else:
            assert isinstance(results, list)
            outcomes = results
        # Commits asked for while the answers run wait, to go in one round.
        self._answering = True
        try:
            for d, outcome in zip(waiters, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    d.errback(Failure(outcome))
                else:
                    d.callback(outcome)
        finally:
            self._answering = False
        self._kick()
