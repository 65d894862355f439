"""
The hook sender (L{streamrelay.hooks.sender}) driven by a fake clock:
backoff, order per name, parallel names, 2xx only, dead after max age.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from streamrelay.hooks.delivery import deliver
from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.journal import Entry, EventJournal
from streamrelay.hooks.metrics import HookMetrics
from streamrelay.hooks.sender import HookSender, backoff
from streamrelay.hooks.signature import verify
from tests.hookfakes import Hook, MemoryHook, entry, runNow


class SenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.journal = EventJournal(Path(self.mktemp()), runNow)
        self.addCleanup(self.journal.close)
        self.journal.open()
        self.hook = Hook()
        self.metrics = HookMetrics()

    def sender(self, maxAge: float = 3600, maxInFlight: int = 16, **kw: Any) -> HookSender:
        sender = HookSender(
            self.journal, kw.pop("reloaded", []), cast(IPoster, kw.pop("poster", None)),
            kw.pop("secret", None), 10, maxAge, self.clock,
            self.metrics, maxInFlight=maxInFlight, deliverer=kw.pop("deliverer", self.hook),
        )
        sender.startService()
        self.addCleanup(sender.stopService)
        return sender

    def add(self, sender: HookSender, name: str) -> Entry:
        e = entry(name, now=self.clock.seconds())
        self.successResultOf(self.journal.record(e))
        sender.add(e)
        return e

    def test_backoff(self) -> None:
        """1 s, doubling, up to 5 minutes."""
        self.assertEqual([backoff(n) for n in range(1, 12)],
                         [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300])

    def test_retriedWithBackoff(self) -> None:
        """A failing event is tried again at 1, 2, 4, 8 s after each failure."""
        sender = self.sender()
        self.add(sender, "a")
        start = self.clock.seconds()
        times = []
        for i in range(5):
            self.assertEqual(len(self.hook.calls), i + 1)
            times.append(self.clock.seconds() - start)
            self.hook.answer(i, 500)
            delay = backoff(i + 1)
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.hook.calls), i + 1)
            self.clock.advance(0.01)
        self.assertEqual(times, [0, 1, 3, 7, 15])
        self.assertEqual(self.metrics.failedAttempts._value.get(), 5)

    def test_onlyTwoXX(self) -> None:
        """A 3xx or 4xx is a failure; a 2xx delivers the event and it leaves the queue."""
        sender = self.sender()
        self.add(sender, "a")
        self.hook.answer(0, 302)
        self.clock.advance(1)
        self.hook.answer(1, 404)
        self.assertEqual(self.journal.pending, 1)
        self.clock.advance(2)
        self.hook.answer(2, 204)
        self.assertEqual(self.journal.pending, 0)
        self.assertEqual(self.metrics.delivered._value.get(), 1)
        self.assertEqual(self.metrics.pending._value.get(), 0)
        self.assertEqual(self.metrics.latency._sum.get(), 3)

    def test_orderPerName(self) -> None:
        """
        A later event for a name waits for the earlier one, even while it
        backs off; other names go meanwhile.
        """
        sender = self.sender()
        first = self.add(sender, "a")
        second = self.add(sender, "a")
        self.add(sender, "b")
        self.assertEqual(self.hook.names(), ["a", "b"])
        self.hook.answer(0, 500)
        self.clock.advance(0.5)
        self.assertEqual(self.hook.names(), ["a", "b"])
        self.clock.advance(0.5)
        self.assertEqual(self.hook.calls[2][0]["id"], first.id)
        self.hook.answer(2, 200)
        self.assertEqual(self.hook.calls[3][0]["id"], second.id)

    def test_boundedInFlight(self) -> None:
        """At most C{maxInFlight} names at once; the next goes when one is answered."""
        sender = self.sender(maxInFlight=2)
        for name in "abcde":
            self.add(sender, name)
        self.assertEqual(self.hook.names(), ["a", "b"])
        self.hook.answer(1, 204)
        self.assertEqual(self.hook.names(), ["a", "b", "c"])

    def test_deadAfterMaxAge(self) -> None:
        """
        Past C{maxAge}, a failing event goes to the dead list (counted,
        kept on disk), and the name's next event goes.
        """
        sender = self.sender(maxAge=10)
        doomed = self.add(sender, "a")
        self.add(sender, "a")
        answered = 0
        while self.clock.seconds() - doomed.recorded < 10:
            self.hook.answer(answered, 503)
            answered += 1
            self.clock.advance(backoff(answered))
        self.assertEqual(self.metrics.dead._value.get(), 0)
        self.hook.answer(answered, 503)
        self.assertEqual(self.metrics.dead._value.get(), 1)
        self.assertEqual(self.journal.deadCount, 1)
        self.assertTrue(self.journal.deadPath.read_bytes())
        self.assertNotEqual(self.hook.calls[-1][0]["id"], doomed.id)
        self.assertEqual(len(self.hook.calls), answered + 2)

    def test_reloadedGoFirst(self) -> None:
        """Events reloaded at start are sent as the service starts."""
        e = entry("old")
        self.successResultOf(self.journal.record(e))
        self.sender(reloaded=[e])
        self.assertEqual(self.hook.names(), ["old"])
        self.assertEqual(self.metrics.pending._value.get(), 1)

    def test_stopAndStart(self) -> None:
        """Stopping cancels attempts and retries; starting again sends them."""
        sender = self.sender()
        self.add(sender, "a")
        self.add(sender, "b")
        self.hook.answer(1, 500)
        sender.stopService()
        self.assertFalse(self.clock.getDelayedCalls())
        sender.startService()
        self.assertEqual(sorted(self.hook.names()[2:]), ["a", "b"])

    def test_signed(self) -> None:
        """Through the real delivery, the posted body is signed with the secret."""
        seen: list[tuple[bytes, bytes]] = []

        class Receiver(Resource):
            isLeaf = True

            def render_POST(self, request: Request) -> bytes:
                assert request.content is not None
                header = request.getHeader(b"streamrelay-signature") or b""
                seen.append((header, request.content.read()))
                request.setResponseCode(204)
                return b""

        hook = MemoryHook(Receiver())
        sender = self.sender(poster=hook.client(self.clock), secret=b"k", deliverer=deliver)
        e = self.add(sender, "a")
        hook.flush()
        (header, body), = seen
        self.assertTrue(verify(b"k", header, body, now=self.clock.seconds()))
        self.assertEqual(self.journal.pending, 0)
        self.assertIn(e.id.encode(), body)
