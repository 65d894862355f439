"""
Spare partial files: the empty files in C{.partial/} that new uploads of
a L{streamrelay.store.disk.DiskStore} are written to, made ahead of time
off the reactor thread.

Creating a file on ext4 waits behind the journal while other threads
fsync (the group commit, the hook event journal): a plain C{open(O_CREAT)}
on the reactor thread stalled every connection for 0.5 ms typically and
up to hundreds of ms.  So a L{SparePool} keeps a few files made by the
store's runner (its thread pool), and an upload starting takes one; only
when none is left does it create its own file, as before.

A spare is handed out only while it is still a file of the current
C{.partial/}: that folder may be removed and made again, or replaced with
the storage folder (see L{streamrelay.store.folders}), and a file of the
old one would be lost, or put in place from a folder that is not there.
"""

from __future__ import annotations

import os
import secrets
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamrelay.store.writer import Runner

_log = Logger()

#: How a new partial file is opened: never an existing file.
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
MODE = 0o644

#: Spares kept at most, and how few make the pool start a refill (one job
#: at a time, in the runner) back up to KEEP.  The refill waits in the
#: store's thread pool behind the uploads' writes and syncs, then creates
#: its files one by one, each perhaps behind a journal commit: under load it
#: takes several to tens of ms, which the LOW_WATER files left must outlast
#: at some 300 uploads a second, 64 at once (bench W3).  Over 2 x 1,000 such
#: uploads to one backend, 32/16 left 191 uploads to create their own file
#: (some 95 beyond the start, when 64 begin together and the pool is still
#: empty), 64/32 left 51 (the start only), 128/64 no fewer (65).  Each
#: spare costs an open file and an empty inode (no data blocks), and files
#: made ahead are thrown away when the store stops or C{.partial/} changes:
#: 64 is little of both.
KEEP = 64
LOW_WATER = 32


def createPartial(folder: Path, dirFd: int | None = None) -> tuple[Path, int]:
    """
    A new empty file in C{folder} under an unguessable name, opened for
    writing: its path and its file descriptor.  With C{dirFd}, an open
    C{folder}, it is made in that very folder even if the path names
    another one by now.
    """
    name = secrets.token_hex(16)
    where = name if dirFd is not None else folder / name
    return folder / name, os.open(where, FLAGS, MODE, dir_fd=dirFd)


Identity = tuple[int, int]
Creator = Callable[[Path, int | None], tuple[Path, int]]


def identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino


@dataclass
class _Batch:
    """Spares one refill made, and the folder they are in."""

    folder: Identity
    files: list[tuple[Path, int]] = field(default_factory=list)
    error: OSError | None = None


def remove(files: Iterable[tuple[Path, int]]) -> None:
    """
    Close and remove spare files (off the reactor thread: closing the last
    descriptor of a removed file frees its inode, which waits for the
    journal too).  A file already gone, or a folder that went away, is no
    error; what cannot be removed now is swept when the backend starts.
    """
    for path, fd in files:
        try:
            os.close(fd)
        except OSError:
            pass
        try:
            os.unlink(path)
        except OSError:
            pass


def _closeAll(spares: deque[tuple[Path, int]]) -> None:
    for _, fd in spares:
        try:
            os.close(fd)
        except OSError:
            pass
    spares.clear()


class SparePool:
    """
    Spare files of the folder C{folder}, made in batches by C{run}.

    Used from the reactor thread only; the refill job runs in C{run}'s
    thread and hands its batch back.
    """

    def __init__(
        self,
        folder: Path,
        run: Runner,
        create: Creator = createPartial,
        keep: int = KEEP,
        lowWater: int = LOW_WATER,
    ) -> None:
        self.folder = folder
        self.run = run
        self.create = create
        self.keep = keep
        self.lowWater = lowWater
        self._spares: deque[tuple[Path, int]] = deque()
        #: The folder (device, inode) the spares were made in.
        self._madeIn: Identity | None = None
        #: Counts discards: a refill started before the last one brings
        #: files nobody may use.
        self._generation = 0
        self._filling = False
        self._idle: list[Deferred[None]] = []
        self._closed = False
        self._failing = False
        # A pool dropped without close (a store of a test) lets go of its
        # files' descriptors; the files are swept at the next start.
        weakref.finalize(self, _closeAll, self._spares)

    def __len__(self) -> int:
        return len(self._spares)

    def paths(self) -> list[Path]:
        """The spares' paths (for tests and checks)."""
        return [path for path, _ in self._spares]

    def new(self) -> tuple[Path, int]:
        """
        A new partial file, its path and descriptor: a spare if one is
        ready, else one created here and now (whose errors are raised).
        """
        spare = self.take()
        if spare is not None:
            return spare
        return self.create(self.folder, None)

    def take(self) -> tuple[Path, int] | None:
        """
        A spare that is still a file of the current C{folder}, or None; the
        pool is refilled in the background once it runs low.

        Two cheap checks, neither of which creates anything or waits for
        the journal: one C{stat} of the folder, whose (device, inode) must
        be the one the spares were made in (else the folder was replaced,
        or the storage under it, and every spare is dropped); and one
        C{fstat} of the spare, whose link count is 0 once it was removed
        (with its folder, or alone by a cleanup job), even when a new
        folder got the old one's inode number.
        """
        spare = None
        if self._spares:
            try:
                current: Identity | None = identity(os.stat(self.folder))
            except OSError:
                current = None
            if current != self._madeIn:
                self.discard()
            else:
                dead = []
                while self._spares:
                    path, fd = self._spares.popleft()
                    if os.fstat(fd).st_nlink:
                        spare = path, fd
                        break
                    dead.append((path, fd))
                self._dispose(dead)
        if len(self._spares) < self.lowWater:
            self.refill()
        return spare

    def refill(self) -> None:
        """Start making spares up to L{keep}, unless a refill runs already."""
        if self._filling or self._closed:
            return
        count = self.keep - len(self._spares)
        if count <= 0:
            return
        self._filling = True
        generation = self._generation
        d = self.run(self._make, count, generation)
        d.addCallback(self._filled, generation)
        d.addBoth(self._settled)

    def _make(self, count: int, generation: int) -> _Batch:
        """Make C{count} spares (in C{run}'s thread)."""
        dirFd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            batch = _Batch(identity(os.fstat(dirFd)))
            for _ in range(count):
                # Plain reads of the reactor thread's flags: a refill
                # overtaken by a discard or close stops early.
                if self._closed or self._generation != generation:
                    break
                try:
                    batch.files.append(self.create(self.folder, dirFd))
                except OSError as e:
                    batch.error = e
                    break
            return batch
        finally:
            os.close(dirFd)

    def _filled(self, batch: _Batch, generation: int) -> Deferred[None] | None:
        if batch.error is not None:
            self._failed(batch.error)
        else:
            self._failing = False
        if self._closed or generation != self._generation:
            return self._dispose(batch.files)
        if batch.folder != self._madeIn:
            self.discard()
            self._madeIn = batch.folder
        self._spares.extend(batch.files)
        return None

    def _failed(self, error: BaseException) -> None:
        # Logged once while refills keep failing (a full disk, the folder
        # away): an upload finding no spare creates its file itself and is
        # told that error.
        if not self._failing:
            self._failing = True
            _log.info("cannot make spare partial files in {folder}: {error}",
                      folder=str(self.folder), error=error)

    def _settled(self, result: object) -> None:
        self._filling = False
        if isinstance(result, Failure):
            if isinstance(result.value, OSError):
                self._failed(result.value)
            else:
                _log.failure("making spare partial files failed", result)
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def discard(self) -> Deferred[None]:
        """
        Drop every spare (closed and removed in C{run}): C{folder} was made
        again, or swept.  A refill under way is discarded when it ends.
        """
        self._generation += 1
        self._madeIn = None
        dropped = list(self._spares)
        self._spares.clear()
        return self._dispose(dropped)

    def _dispose(self, files: list[tuple[Path, int]]) -> Deferred[None]:
        if not files:
            return succeed(None)
        return self.run(remove, files).addErrback(
            lambda f: _log.failure("removing spare partial files failed", f)
        )

    def close(self) -> Deferred[None]:
        """
        Remove every spare and make no more: the store stops.  Fires once
        they are removed, and the files of a refill under way too.
        """
        self._closed = True
        dropped = self.discard()
        if not self._filling:
            return dropped
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        return idle.addCallback(lambda _: dropped)
