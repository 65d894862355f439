"""
The durable queue of hook events (L{streamrelay.hooks.journal}): durable
before the client is answered, group commit, reload, compaction, dead list.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from streamrelay.hooks.events import eventId
from streamrelay.hooks.journal import (
    DEAD_FILE,
    EVENTS_FILE,
    EventJournal,
    QueueUnavailable,
    decode,
    encode,
    encodeAdd,
)
from tests.hookfakes import HeldRunner, entry, runNow


class JournalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp()) / "queue"
        self.syncs: list[int] = []

    def journal(self, run=runNow, compactAfter: int = 2000) -> EventJournal:  # type: ignore[no-untyped-def]
        journal = EventJournal(
            self.folder, run, sync=self.syncs.append, compactAfter=compactAfter
        )
        self.addCleanup(journal.close)
        return journal

    def reopened(self) -> list[str]:
        return [e.event["file"]["name"] for e in self.journal().open()]

    def test_durableBeforeFiring(self) -> None:
        """
        A record fires only after its bytes are written and synced, in
        the runner's thread, never before.
        """
        runner = HeldRunner()
        journal = self.journal(runner)
        journal.open()
        d = journal.record(entry("a"))
        self.assertNoResult(d)
        self.assertEqual(self.syncs, [])
        self.assertEqual((self.folder / EVENTS_FILE).read_bytes(), b"")
        seen: list[bytes] = []
        d.addCallback(lambda _: seen.append((self.folder / EVENTS_FILE).read_bytes()))
        runner.runOne()
        self.assertEqual(len(self.syncs), 1)
        self.assertIn(b'"name":"a"', seen[0])
        self.assertEqual(journal.pending, 1)

    def test_groupCommit(self) -> None:
        """
        Records made before a job starts share it: one sync for them all.
        """
        runner = HeldRunner()
        journal = self.journal(runner)
        journal.open()
        records = [journal.record(entry(name)) for name in "abcd"]
        self.assertEqual(len(runner.jobs), 1)
        for d in records:
            self.assertNoResult(d)
        runner.runOne()
        for d in records:
            self.successResultOf(d)
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(runner.jobs, [])
        self.assertEqual(self.reopened(), ["a", "b", "c", "d"])

    def test_nextJobWaitsInRunner(self) -> None:
        """
        Records made while a job writes go to the next job, handed to the
        runner at once (it starts when the first ends, without the
        reactor); none fires before its own job synced.
        """
        runner = HeldRunner()
        later: list[Any] = []

        def sync(fd: int) -> None:
            self.syncs.append(fd)
            if not later:
                later.extend(journal.record(entry(name)) for name in "bcd")
                self.assertEqual(len(runner.jobs), 1)

        journal = EventJournal(self.folder, runner, sync=sync)
        self.addCleanup(journal.close)
        journal.open()
        first = journal.record(entry("a"))
        runner.runOne()
        self.successResultOf(first)
        for d in later:
            self.assertNoResult(d)
        self.assertEqual(len(runner.jobs), 1)
        runner.runOne()
        for d in later:
            self.successResultOf(d)
        self.assertEqual(len(self.syncs), 2)
        self.assertEqual(self.reopened(), ["a", "b", "c", "d"])

    def test_vanishedUnderTwoJobs(self) -> None:
        """
        The folder removed while a job writes, the next one waiting: that
        one's records go, in order, after the pending events into the
        file written again.
        """
        runner = HeldRunner()
        later: list[Any] = []

        def sync(fd: int) -> None:
            self.syncs.append(fd)
            if not later:
                shutil.rmtree(self.folder)
                later.extend(journal.record(entry(name)) for name in "bc")

        journal = EventJournal(self.folder, runner, sync=sync)
        self.addCleanup(journal.close)
        journal.open()
        first = journal.record(entry("a"))
        runner.runOne()
        self.successResultOf(first)
        runner.runOne()
        for d in later:
            self.assertNoResult(d)
        self.assertEqual(len(runner.jobs), 1)
        runner.runOne()
        for d in later:
            self.successResultOf(d)
        journal.close()
        self.assertEqual(self.reopened(), ["a", "b", "c"])

    def test_reloadSkipsTornRecord(self) -> None:
        """
        A record torn by a crash (the last line cut short) or damaged is
        skipped on reload; the others come back in order, and new records
        after the reload are read back too.
        """
        journal = self.journal()
        journal.open()
        for name in "abc":
            self.successResultOf(journal.record(entry(name)))
        journal.close()
        path = self.folder / EVENTS_FILE
        lines = path.read_bytes().splitlines(keepends=True)
        damaged = lines[1].replace(b'"b"', b'"x"')
        path.write_bytes(lines[0] + damaged + lines[2] + lines[2][:30])
        again = self.journal()
        self.assertEqual([e.event["file"]["name"] for e in again.open()], ["a", "c"])
        self.assertEqual(again.skipped, 2)
        self.successResultOf(again.record(entry("d")))
        again.close()
        self.assertEqual(self.reopened(), ["a", "c", "d"])

    def test_deliveredNotReloaded(self) -> None:
        journal = self.journal()
        journal.open()
        a, b = entry("a"), entry("b")
        self.successResultOf(journal.record(a))
        self.successResultOf(journal.record(b))
        journal.delivered(a)
        self.assertEqual(journal.pending, 1)
        journal.close()
        self.assertEqual(self.reopened(), ["b"])

    def test_doneMarksNotSynced(self) -> None:
        """
        A job writing only C{done} marks (nothing waits for them) does not
        sync; the next record's sync takes them along.
        """
        journal = self.journal()
        journal.open()
        a = entry("a")
        self.successResultOf(journal.record(a))
        self.assertEqual(len(self.syncs), 1)
        journal.delivered(a)
        self.assertEqual(len(self.syncs), 1)
        self.assertIn(b'"done"', (self.folder / EVENTS_FILE).read_bytes())
        self.successResultOf(journal.record(entry("b")))
        self.assertEqual(len(self.syncs), 2)
        journal.close()
        self.assertEqual(self.reopened(), ["b"])

    def test_doneMarksRideWithRecords(self) -> None:
        """A mark made before a job starts goes in it, with the records: one sync."""
        runner = HeldRunner()
        journal = self.journal(runner)
        journal.open()
        a = entry("a")
        d = journal.record(a)
        runner.runOne()
        self.successResultOf(d)
        b = journal.record(entry("b"))
        journal.delivered(a)
        c = journal.record(entry("c"))
        self.assertEqual(len(runner.jobs), 1)
        runner.runOne()
        self.successResultOf(b)
        self.successResultOf(c)
        self.assertEqual(len(self.syncs), 2)
        self.assertEqual(runner.jobs, [])
        journal.close()
        self.assertEqual(self.reopened(), ["b", "c"])

    def test_compaction(self) -> None:
        """
        Once enough events were delivered, the file is rewritten with only
        the pending ones: its size stays bounded, and nothing pending is lost.
        """
        journal = self.journal(compactAfter=10)
        journal.open()
        keep = entry("keep")
        self.successResultOf(journal.record(keep))
        path = self.folder / EVENTS_FILE
        largest = 0
        for i in range(100):
            e = entry(f"f{i}")
            self.successResultOf(journal.record(e))
            journal.delivered(e)
            largest = max(largest, path.stat().st_size)
        self.assertLess(largest, 25 * len(keep.line) * 2)
        self.assertLess(path.stat().st_size, 25 * len(keep.line))
        journal.close()
        self.assertEqual(self.reopened(), ["keep"])

    def test_dead(self) -> None:
        """A dead event leaves the queue for dead.log, durably, and is counted."""
        journal = self.journal()
        journal.open()
        a = entry("a")
        self.successResultOf(journal.record(a))
        self.successResultOf(journal.dead(a, "the hook answered 500", 5000.0))
        self.assertEqual(journal.pending, 0)
        self.assertEqual(journal.deadCount, 1)
        (line,) = (self.folder / DEAD_FILE).read_bytes().splitlines()
        dead = json.loads(line)
        self.assertEqual(dead["event"]["id"], a.id)
        self.assertEqual(dead["reason"], "the hook answered 500")
        journal.close()
        again = self.journal()
        self.assertEqual(again.open(), [])
        self.assertEqual(again.deadCount, 1)

    def test_folderVanished(self) -> None:
        """
        The queue's folder removed under a running backend: it is written
        again, with every event still pending, before the next record fires.
        """
        journal = self.journal()
        journal.open()
        self.successResultOf(journal.record(entry("a")))
        shutil.rmtree(self.folder)
        self.successResultOf(journal.record(entry("b")))
        journal.close()
        self.assertEqual(self.reopened(), ["a", "b"])

    def test_parentVanished(self) -> None:
        """When the queue cannot be written again, the record fails: no silent loss."""
        journal = self.journal()
        journal.open()
        shutil.rmtree(self.folder.parent)
        self.failureResultOf(journal.record(entry("a")), QueueUnavailable)

    def test_diskFull(self) -> None:
        """
        A write that fails (disk full) fails its records, leaves no torn
        record behind, and the next records go on.
        """
        journal = self.journal()
        journal.open()
        self.successResultOf(journal.record(entry("a")))

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        journal._sync = full
        failure = self.failureResultOf(journal.record(entry("b")), QueueUnavailable)
        self.assertIn("No space left", failure.getErrorMessage())
        journal._sync = self.syncs.append
        self.successResultOf(journal.record(entry("c")))
        journal.close()
        self.assertEqual(self.reopened(), ["a", "c"])
        reopened = self.journal()
        reopened.open()
        self.assertEqual(reopened.skipped, 0)


class EncodingTests(SynchronousTestCase):
    def test_addIsTheEventAsPosted(self) -> None:
        """
        The journal's record holds the event JSON exactly as the hook is
        sent it (made once), and reads back as the event.
        """
        e = entry("é\u2028.txt")
        line = encodeAdd(e)
        record = decode(line)
        assert record is not None
        self.assertEqual(record, {"add": e.event, "t": e.recorded})
        self.assertIn(e.body.rstrip(b"\n"), line)
        self.assertEqual(line, encode({"add": e.event, "t": e.recorded}))

    def test_eventIds(self) -> None:
        """Ids are 32 hex digits, never repeated."""
        ids = {eventId() for _ in range(10_000)}
        self.assertEqual(len(ids), 10_000)
        for i in list(ids)[:10]:
            self.assertRegex(i, "^[0-9a-f]{32}$")
