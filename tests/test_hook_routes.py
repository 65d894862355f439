"""
The backend's routes with hooks: post-finish and post-delete are recorded
before the answer, filtered by --hook-events, and a failure to record them
is answered 503 event_not_recorded (the file stays).
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock

from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.journal import EventJournal
from streamrelay.hooks.metrics import HookMetrics
from streamrelay.hooks.sender import HookSender
from streamrelay.hooks.service import Hooks
from tests.backendcases import BackendTestCase, TusTestCase
from tests.hookfakes import Hook, runNow
from tests.rawrequests import patch, put


class HookRouteTests(BackendTestCase):
    def hooks(self, events: tuple[str, ...] = ("post-finish", "post-delete")) -> None:
        self.clock = Clock()
        self.journal = EventJournal(Path(self.mktemp()), runNow)
        self.addCleanup(self.journal.close)
        self.journal.open()
        self.hook = Hook()
        self.sender = HookSender(
            self.journal, [], cast(IPoster, None), None, 10, 60,
            self.clock, HookMetrics(), deliverer=self.hook,
        )
        self.sender.startService()
        self.routes.hooks = Hooks(self.journal, self.sender, events, self.clock)

    def recorded(self) -> list[dict[str, Any]]:
        self.journal.close()
        return [e.event for e in EventJournal(self.journal.folder, runNow).open()]

    def test_putRecordsAndSends(self) -> None:
        self.hooks()
        response = self.request(put(b"/files/a.txt", b"hello"))
        self.assertEqual(response.status, 201)
        (sent, _), = self.hook.calls
        self.assertEqual(sent["type"], "post-finish")
        self.assertEqual(sent["file"], {"name": "a.txt", "size": 5,
                                        "sha256": hashlib.sha256(b"hello").hexdigest()})
        self.assertEqual(sent["request"]["protocol"], "put")
        self.assertEqual([e["id"] for e in self.recorded()], [sent["id"]])

    def test_delete(self) -> None:
        self.hooks()
        self.request(put(b"/files/a.txt", b"hello"))
        self.hook.answer(0, 204)
        response = self.request(b"DELETE /files/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(response.status, 204)
        self.assertEqual(self.hook.calls[1][0]["type"], "post-delete")
        self.assertEqual(self.hook.calls[1][0]["file"]["name"], "a.txt")

    def test_eventsFiltered(self) -> None:
        """An event type not in --hook-events is neither recorded nor sent."""
        self.hooks(events=("post-delete",))
        self.assertEqual(self.request(put(b"/files/a.txt", b"hello")).status, 201)
        self.assertEqual(self.hook.calls, [])
        self.assertEqual(self.recorded(), [])

    def test_notRecorded(self) -> None:
        """
        The queue's disk full: the file is stored, the client hears 503
        event_not_recorded, and nothing is sent.
        """
        self.hooks()

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.journal._sync = full
        response = self.request(put(b"/files/a.txt", b"hello"))
        self.assertError(response, 503, "event_not_recorded")
        self.assertIn("a.txt", json.loads(response.body)["message"])
        self.assertEqual(response.headers[b"retry-after"], b"5")
        self.assertEqual((self.root / "a.txt").read_bytes(), b"hello")
        self.assertEqual(self.hook.calls, [])


class TusHookTests(TusTestCase):
    def test_finishNotRecordedThenRetried(self) -> None:
        """
        The event of a finished tus upload cannot be recorded: the client
        hears 503 event_not_recorded, and its next request (a HEAD, as tus
        clients ask after an error) records it: never published unrecorded.
        """
        journal = EventJournal(Path(self.mktemp()), runNow)
        self.addCleanup(journal.close)
        journal.open()
        hook = Hook()
        sender = HookSender(
            journal, [], cast(IPoster, None), None, 10, 60,
            self.clock, HookMetrics(), deliverer=hook,
        )
        sender.startService()
        self.addCleanup(sender.stopService)
        self.tus.hooks = Hooks(journal, sender, ("post-finish",), self.clock)

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        realSync = journal._sync
        journal._sync = full
        location = self.create("t.bin", 5)
        response = self.request(patch(location, 0, b"hello"))
        self.assertError(response, 503, "event_not_recorded")
        self.assertEqual(hook.calls, [])
        journal._sync = realSync
        response = self.head(location)
        self.assertEqual(response.status, 200, response.headers)
        self.assertEqual(response.headers[b"upload-offset"], b"5")
        (sent, _), = hook.calls
        self.assertEqual(sent["type"], "post-finish")
        self.assertEqual(sent["file"]["name"], "t.bin")
        self.assertEqual(sent["file"]["sha256"], hashlib.sha256(b"hello").hexdigest())
