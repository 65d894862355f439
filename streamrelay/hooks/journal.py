"""
The durable queue of C{post-finish} and C{post-delete} events: each is on
stable storage before the client that caused it is answered, and stays
there until its hook answered C{2xx} (or it was moved to the dead list).

One append-only file, C{events.log}, one record a line:
C{<crc32 hex> <JSON>}, the JSON one of C{{"add": event, "t": seconds}},
C{{"done": id}} or C{{"dead": id}}.  A line whose checksum does not match
(a record torn by C{kill -9} or a power cut) is skipped on reload.

Group commit: records are written by one job at a time, off the reactor
thread; a job takes every record made until it starts, writes them all
and syncs once.  Each record's Deferred fires when its own job has
synced.  While a job runs, the next one is already handed to the runner
(at most two at once): it starts as soon as the first ends, in the
runner's thread, without waiting for the reactor to hear of the first
(under load the reactor answered a job's end 20 ms or more later, and
the records made meanwhile waited that long for their sync to begin).
A rewrite (below) goes only with no other job in flight.

C{done} marks are not waited for: losing one only means the event is
delivered again, which at-least-once allows.  So a job writing nothing
but C{done} marks does not sync (they reach the disk with the next job
that does, or the kernel's writeback): under steady uploads that halved
the syncs, each of which the uploads' own syncs queue behind.

Dead events are appended, as plain JSON lines, to C{dead.log} (synced
before the event leaves C{events.log}): for an operator to read and replay.

The file is rewritten with only the pending events (compacted) once enough
marks piled up, on every start, and when it vanished (its folder removed
under the running backend: the events still pending are all in memory).
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamrelay.errors import jsonBytes
from streamrelay.store.placing import fsyncFolder
from streamrelay.store.writer import Runner

EVENTS_FILE = "events.log"
DEAD_FILE = "dead.log"
_TEMPORARY = EVENTS_FILE + ".new"

#: Rewrite the file once this many events left it (and more than are pending).
COMPACT_AFTER = 2000


@dataclass
class Entry:
    """One pending event, as the sender handles it."""

    event: dict[str, Any]
    #: Unix seconds it was recorded: for C{--hook-max-age} and latency.
    recorded: float
    attempts: int = 0
    line: bytes = field(default=b"", repr=False)
    _body: bytes = field(default=b"", repr=False)

    @property
    def body(self) -> bytes:
        """The event's JSON, as posted to the hook (made once)."""
        if not self._body:
            self._body = jsonBytes(self.event)
        return self._body

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def name(self) -> str:
        return str(self.event["file"]["name"])


@dataclass
class _Batch:
    """What one job wrote, taken by the job itself when it starts."""

    lines: list[bytes] = field(default_factory=list)
    waiters: list[tuple[Deferred[None], Entry | None]] = field(default_factory=list)
    deadLines: list[bytes] = field(default_factory=list)


class QueueUnavailable(Exception):
    """An event could not be made durable: the queue's disk is full or gone."""


class _Vanished(Exception):
    """C{events.log} is no longer the file this journal writes to."""


def encode(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _line(body)


def _line(body: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(body), body)


def encodeAdd(entry: Entry) -> bytes:
    """C{{"add": event, "t": recorded}}, with the event's JSON as it is posted."""
    return _line(b'{"add":%s,"t":%s}' % (entry.body.rstrip(b"\n"), repr(entry.recorded).encode()))


def decode(line: bytes) -> dict[str, Any] | None:
    """A record, or L{None} for a torn or damaged line."""
    crc, _, body = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body) or len(crc) != 8:
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class EventJournal:
    """
    The queue in C{folder} (made when missing, with its parents, at
    L{open}; later only the folder itself is made again, after C{check}).

    @param run: runs the file work off the reactor thread.
    @param sync: C{os.fdatasync}; tests count its calls.
    @param check: called before the folder is made again; raises when its
        parent must not be written (a storage folder no longer mounted).
    """

    _log = Logger()

    def __init__(
        self,
        folder: Path,
        run: Runner,
        sync: Callable[[int], None] = os.fdatasync,
        check: Callable[[], None] = lambda: None,
        compactAfter: int = COMPACT_AFTER,
    ) -> None:
        self.folder = folder
        self.path = folder / EVENTS_FILE
        self.deadPath = folder / DEAD_FILE
        self._run = run
        self._sync = sync
        self._check = check
        self._compactAfter = compactAfter
        self._fd = -1
        self._size = 0
        #: Durable events not yet delivered nor dead, oldest first.
        self._pending: dict[str, Entry] = {}
        self._obsolete = 0
        #: What the next job takes, guarded by C{_lock} (taken in the
        #: runner's thread, added to in the reactor's).
        self._lines: list[bytes] = []
        self._waiters: list[tuple[Deferred[None], Entry | None]] = []
        self._deadLines: list[bytes] = []
        self._lock = threading.Lock()
        #: A job was handed to the runner and has not started (under C{_lock}).
        self._queued = False
        #: Jobs handed to the runner and not yet answered (reactor thread).
        self._jobs = 0
        #: Held by the job writing: jobs never overlap, whatever the runner.
        self._writing = threading.Lock()
        self._rewrite = False
        #: Events in C{dead.log}.
        self.deadCount = 0
        self.skipped = 0

    # Start and stop (in the reactor thread, before it serves)

    def open(self) -> list[Entry]:
        """
        Reload the events still pending, oldest first, skipping torn
        records; write them back into a clean file.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / _TEMPORARY).unlink(missing_ok=True)
        pending: dict[str, Entry] = {}
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    self._replay(line, pending)
        except FileNotFoundError:
            pass
        self.deadCount = _countLines(self.deadPath)
        self._pending = pending
        self._writeClean(list(pending.values()))
        if self.skipped:
            self._log.warn(
                "hook queue {path}: skipped {count} torn or damaged record(s)",
                path=str(self.path), count=self.skipped,
            )
        return list(pending.values())

    def _replay(self, line: bytes, pending: dict[str, Entry]) -> None:
        record = decode(line) if line.endswith(b"\n") else None
        if record is None:
            self.skipped += 1
            return
        if "add" in record and isinstance(record["add"], dict):
            entry = Entry(record["add"], float(record.get("t", 0)), line=line)
            pending[entry.id] = entry
        else:
            pending.pop(str(record.get("done", record.get("dead"))), None)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # Recording

    def record(self, entry: Entry) -> Deferred[None]:
        """
        Append C{entry}; fires once it is durable, or fails with
        L{QueueUnavailable}.
        """
        entry.line = encodeAdd(entry)
        d: Deferred[None] = Deferred()
        with self._lock:
            self._lines.append(entry.line)
            self._waiters.append((d, entry))
        self._kick()
        return d

    def delivered(self, entry: Entry) -> None:
        """Mark C{entry} delivered; it is not waited for."""
        if self._pending.pop(entry.id, None) is not None:
            self._obsolete += 1
            with self._lock:
                self._lines.append(encode({"done": entry.id}))
            self._kick()

    def dead(self, entry: Entry, reason: str, now: float) -> Deferred[None]:
        """
        Move C{entry} to C{dead.log}; fires once it is durable there.
        """
        d: Deferred[None] = Deferred()
        deadLine = json.dumps(
            {"event": entry.event, "recorded": entry.recorded, "dead": now,
             "attempts": entry.attempts, "reason": reason},
            ensure_ascii=False, separators=(",", ":"),
        ).encode("utf-8") + b"\n"
        with self._lock:
            self._deadLines.append(deadLine)
            self._lines.append(encode({"dead": entry.id}))
            self._waiters.append((d, None))

        def moved(result: None) -> None:
            if self._pending.pop(entry.id, None) is not None:
                self._obsolete += 1
            self.deadCount += 1

        d.addCallback(moved)
        self._kick()
        return d

    @property
    def pending(self) -> int:
        return len(self._pending)

    # The writing job

    def _kick(self) -> None:
        """Hand a job to the runner if records wait and none will take them."""
        with self._lock:
            if self._queued or not (self._lines or self._deadLines):
                return
            snapshot: list[Entry] | None = None
            if self._rewrite or (
                self._obsolete >= self._compactAfter and self._obsolete > len(self._pending)
            ):
                if self._jobs:
                    # The rewrite needs every earlier record answered
                    # (in _pending); the running job's end kicks again.
                    return
                snapshot = list(self._pending.values())
                self._obsolete = 0
                self._rewrite = False
            elif self._jobs >= 2:
                return
            self._queued = True
        self._jobs += 1
        batch = _Batch()
        job = self._run(self._job, batch, snapshot)
        job.addBoth(self._written, batch)

    def _job(self, batch: _Batch, snapshot: list[Entry] | None) -> None:
        """
        In the runner's thread: take what waits, then write it.  When the
        file vanished, what was taken is put back first, in order, for
        the rewrite.
        """
        with self._writing:
            with self._lock:
                self._queued = False
                batch.lines, self._lines = self._lines, []
                batch.waiters, self._waiters = self._waiters, []
                batch.deadLines, self._deadLines = self._deadLines, []
            if not (batch.lines or batch.deadLines or snapshot is not None):
                return
            try:
                self._write(batch.lines, batch.deadLines, snapshot, bool(batch.waiters))
            except _Vanished:
                with self._lock:
                    self._lines[:0] = batch.lines
                    self._waiters[:0] = batch.waiters
                    self._deadLines[:0] = batch.deadLines
                batch.lines, batch.waiters, batch.deadLines = [], [], []
                raise

    def _written(self, result: object, batch: _Batch) -> None:
        """In the reactor thread: answer the job's records, then kick again."""
        self._jobs -= 1
        if isinstance(result, Failure) and result.check(_Vanished):
            self._log.warn("hook queue {path} vanished; writing it again",
                           path=str(self.path))
            self._rewrite = True
        elif isinstance(result, Failure):
            error = QueueUnavailable(f"{self.folder}: {result.getErrorMessage()}")
            self._log.error(
                "hook queue {path}: {count} record(s) not written: {error}",
                path=str(self.path), count=len(batch.lines), error=error,
            )
            for d, _ in batch.waiters:
                d.errback(error)
        else:
            for d, entry in batch.waiters:
                if entry is not None:
                    self._pending[entry.id] = entry
                d.callback(None)
        self._kick()

    def _write(
        self,
        lines: list[bytes],
        deadLines: list[bytes],
        snapshot: list[Entry] | None,
        sync: bool = True,
    ) -> None:
        """
        In a thread: a rewrite if due, the dead events, then the records;
        synced when C{sync} (a record is waited for).
        """
        if snapshot is None and not self._sameFile():
            raise _Vanished()
        if snapshot is not None:
            self._check()
            try:
                os.mkdir(self.folder, 0o700)
            except FileExistsError:
                pass
            self._writeClean(snapshot)
        if deadLines:
            created = not self.deadPath.exists()
            fd = os.open(self.deadPath, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                _writeAll(fd, b"".join(deadLines))
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsyncFolder(self.folder)
        data = b"".join(lines)
        before = self._size
        try:
            _writeAll(self._fd, data)
            if sync:
                self._sync(self._fd)
        except OSError:
            # Never leave a torn record for the next ones to follow.
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                pass
            raise
        self._size = before + len(data)

    def _sameFile(self) -> bool:
        try:
            there, ours = os.stat(self.path), os.fstat(self._fd)
        except OSError:
            return False
        return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)

    def _writeClean(self, entries: list[Entry]) -> None:
        """Replace C{events.log} with just C{entries}, durably."""
        temporary = self.folder / _TEMPORARY
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        data = b"".join(e.line or encodeAdd(e) for e in entries)
        try:
            _writeAll(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, self.path)
        fsyncFolder(self.folder)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = len(data)


def _writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _countLines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0
