"""
L{streamrelay.hooks.service.Hooks}: a post-finish or post-delete event is
recorded and handed to the sender whatever becomes of the request that
caused it (its client may leave while the event is being made durable).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.journal import EventJournal
from streamrelay.hooks.metrics import HookMetrics
from streamrelay.hooks.sender import HookSender
from streamrelay.hooks.service import Hooks
from streamrelay.store.interfaces import FileInfo
from tests.hookfakes import CONTEXT, HeldRunner, Hook


class ClientGoneTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = HeldRunner()
        self.journal = EventJournal(Path(self.mktemp()), self.runner, sync=lambda fd: None)
        self.addCleanup(self.journal.close)
        self.journal.open()
        self.hook = Hook()
        self.sender = HookSender(
            self.journal, [], cast(IPoster, None), None, 10, 60,
            self.clock, HookMetrics(), deliverer=self.hook,
        )
        self.sender.startService()
        self.hooks = Hooks(self.journal, self.sender, ("post-finish", "post-delete"), self.clock)

    def test_finishedSentWhenTheClientLeft(self) -> None:
        """
        The route awaiting a post-finish is cancelled (its client left)
        while the event is being written: the event, durable all the same,
        is still sent, not left in the queue until a restart.
        """
        answer = self.hooks.finished(CONTEXT, FileInfo("a.txt", 3, "ab" * 32, 0.0))
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        self.runner.runOne()
        self.assertEqual(self.journal.pending, 1)
        self.assertEqual(self.hook.names(), ["a.txt"])
        self.hook.answer(0, 204)
        self.assertEqual(self.journal.pending, 0)

    def test_deletedSentWhenTheClientLeft(self) -> None:
        answer = self.hooks.deleted(CONTEXT, "a.txt")
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        self.runner.runOne()
        self.assertEqual(self.hook.names(), ["a.txt"])
        self.assertEqual(self.hook.calls[0][0]["type"], "post-delete")
