"""
The uploader's folder watcher, with a fake clock and a fake sender.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.upload.sender import Stored, UploadFailed
from streamrelay.upload.watch import FolderWatcher, UploadState


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.pending: list[Deferred[Stored]] = []
        self.hold = False
        self.failures = 0

    def __call__(self, path: Path, name: str) -> Deferred[Stored]:
        data = path.read_bytes()
        if self.failures:
            self.failures -= 1
            return fail(UploadFailed("HTTP 502 backend_unavailable"))
        self.sent.append((name, data))
        stored = Stored(name, len(data), "ab" * 32, 201, {})
        if self.hold:
            d: Deferred[Stored] = Deferred()
            self.pending.append(d)
            return d
        return succeed(stored)


class WatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.statePath = self.folder / ".state.json"
        self.clock = Clock()
        self.sender = Sender()
        self.reports: list[str] = []
        self.watcher = self.makeWatcher()

    def makeWatcher(self) -> FolderWatcher:
        watcher = FolderWatcher(
            self.clock, self.folder, UploadState(self.statePath), self.sender,
            self.reports.append, settle=2, interval=1,
        )
        watcher.start()
        self.addCleanup(watcher.stop)
        return watcher

    def write(self, name: str, data: bytes, mtime: float) -> None:
        path = self.folder / name
        with open(path, "ab") as f:
            f.write(data)
        os.utime(path, (mtime, mtime))

    def tick(self, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.advance(1)

    def test_sentOnlyWhenComplete(self) -> None:
        """A file written slowly is sent once, after it stopped changing."""
        for second in range(5):
            self.write("slow.bin", b"x" * 10, mtime=1000 + second)
            self.tick(1)
        self.assertEqual(self.sender.sent, [])
        self.tick(3)
        self.assertEqual(self.sender.sent, [("slow.bin", b"x" * 50)])
        self.tick(10)
        self.assertEqual(len(self.sender.sent), 1)

    def test_notSentAgainAfterRestart(self) -> None:
        self.write("a", b"1", mtime=1000)
        self.tick(4)
        self.assertEqual(len(self.sender.sent), 1)
        self.watcher.stop()
        self.watcher = self.makeWatcher()
        self.tick(10)
        self.assertEqual(len(self.sender.sent), 1)

    def test_newVersionSent(self) -> None:
        self.write("a", b"1", mtime=1000)
        self.tick(4)
        self.write("a", b"2", mtime=2000)
        self.tick(4)
        self.assertEqual(self.sender.sent, [("a", b"1"), ("a", b"12")])

    def test_queuedWhileSending(self) -> None:
        self.sender.hold = True
        self.write("first", b"1", mtime=1000)
        self.tick(4)
        self.write("second", b"2", mtime=1000)
        self.write("third", b"3", mtime=1000)
        self.tick(4)
        self.assertEqual([name for name, _ in self.sender.sent], ["first"])
        self.sender.pending.pop(0).callback(Stored("first", 1, "ab" * 32, 201, {}))
        self.assertEqual([name for name, _ in self.sender.sent], ["first", "second"])
        self.sender.pending.pop(0).callback(Stored("second", 1, "ab" * 32, 201, {}))
        self.assertEqual([name for name, _ in self.sender.sent], ["first", "second", "third"])

    def test_failureRetriedWithBackoff(self) -> None:
        self.sender.failures = 2
        self.write("a", b"1", mtime=1000)
        self.tick(4)
        self.assertEqual(len(self.reports), 1)
        self.assertIn("FAILED a: HTTP 502", self.reports[0])
        self.tick(30)
        self.assertEqual(len(self.reports), 2)
        self.assertEqual(self.sender.sent, [("a", b"1")])
        self.tick(30)
        self.assertEqual(len(self.sender.sent), 1)

    def test_hiddenFilesSkipped(self) -> None:
        self.write(".partial", b"1", mtime=1000)
        (self.folder / "sub").mkdir()
        self.tick(10)
        self.assertEqual(self.sender.sent, [])

    def test_stateFileRecordsDigest(self) -> None:
        self.write("a", b"1", mtime=1000)
        self.tick(4)
        state = UploadState(self.statePath)
        st = (self.folder / "a").stat()
        from streamrelay.upload.watch import Version

        self.assertTrue(state.sent("a", Version(st.st_size, st.st_mtime_ns)))
        self.assertIn("ab" * 32, self.statePath.read_text())
