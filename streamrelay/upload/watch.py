"""
Watching a folder: each new file is uploaded once it is complete, and once
only, across restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamrelay.upload.sender import Stored, UploadFailed

_log = Logger()


@dataclass(frozen=True)
class Version:
    """One version of a file: what makes it the same file as before."""

    size: int
    mtime_ns: int


class UploadState:
    """
    What was sent, kept in a JSON file replaced atomically after each
    upload: C{{name: {"size", "mtime_ns", "sha256"}}}.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sent: dict[str, dict[str, Any]] = {}
        try:
            loaded = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the state file {path}: {e}") from None
        if isinstance(loaded, dict):
            self._sent = {k: v for k, v in loaded.items() if isinstance(v, dict)}

    def sent(self, name: str, version: Version) -> bool:
        entry = self._sent.get(name)
        return (
            entry is not None
            and entry.get("size") == version.size
            and entry.get("mtime_ns") == version.mtime_ns
        )

    def record(self, name: str, version: Version, sha256: str) -> None:
        self._sent[name] = {"size": version.size, "mtime_ns": version.mtime_ns, "sha256": sha256}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".new")
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(self._sent, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)


SendFile = Callable[[Path, str], "Deferred[Stored]"]


class FolderWatcher:
    """
    Polls C{folder} every C{interval} seconds.  A file is due once its size
    and modification time stayed the same for C{settle} seconds; due files
    are sent one after another, in the order they became due.  A failed
    file is tried again after C{retryDelay} seconds, doubling up to
    C{maxRetryDelay}.

    Files whose names start with C{.} are skipped (the state file, hidden
    and temporary files).
    """

    def __init__(
        self,
        clock: IReactorTime,
        folder: Path,
        state: UploadState,
        send: SendFile,
        report: Callable[[str], object],
        settle: float = 2.0,
        interval: float = 1.0,
        retryDelay: float = 2.0,
        maxRetryDelay: float = 60.0,
    ) -> None:
        self.clock = clock
        self.folder = folder
        self.state = state
        self.send = send
        self.report = report
        self.settle = settle
        self.interval = interval
        self.retryDelay = retryDelay
        self.maxRetryDelay = maxRetryDelay
        self._seen: dict[str, tuple[Version, float]] = {}
        self._queue: list[tuple[str, Version]] = []
        self._queued: set[str] = set()
        self._retryAt: dict[str, tuple[float, float]] = {}
        self._sending = False
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock

    def start(self) -> Deferred[LoopingCall]:
        return self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        now = self.clock.seconds()
        try:
            entries = list(os.scandir(self.folder))
        except OSError as e:
            self.report(f"cannot read {self.folder}: {e.strerror}")
            return
        present = set()
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            name = entry.name
            present.add(name)
            version = Version(st.st_size, st.st_mtime_ns)
            if self.state.sent(name, version) or name in self._queued:
                continue
            seen = self._seen.get(name)
            if seen is None or seen[0] != version:
                self._seen[name] = (version, now)
                continue
            retry = self._retryAt.get(name)
            if now - seen[1] >= self.settle and (retry is None or now >= retry[0]):
                self._queue.append((name, version))
                self._queued.add(name)
        for name in set(self._seen) - present:
            del self._seen[name]
        self._next()

    def _next(self) -> None:
        if self._sending or not self._queue:
            return
        name, version = self._queue.pop(0)
        self._sending = True
        ensureDeferred(self._sendOne(name, version)).addBoth(self._sent, name)

    async def _sendOne(self, name: str, version: Version) -> None:
        path = self.folder / name
        try:
            st = path.stat()
        except OSError:
            return
        if Version(st.st_size, st.st_mtime_ns) != version:
            # Changed since it settled: it settles again first.
            return
        try:
            stored = await self.send(path, name)
        except UploadFailed as e:
            delay = self._retryAt.get(name, (0.0, self.retryDelay / 2))[1] * 2
            delay = min(delay, self.maxRetryDelay)
            self._retryAt[name] = (self.clock.seconds() + delay, delay)
            self.report(f"FAILED {name}: {e} (trying again in {delay:.0f} s)")
            return
        self._retryAt.pop(name, None)
        after = path.stat() if path.exists() else None
        if after is None or Version(after.st_size, after.st_mtime_ns) == version:
            self.state.record(name, version, stored.sha256)

    def _sent(self, result: object, name: str) -> None:
        self._sending = False
        self._queued.discard(name)
        self._seen.pop(name, None)
        if isinstance(result, Failure):
            _log.failure("unexpected error uploading {name}", result, name=name)
        self._next()
