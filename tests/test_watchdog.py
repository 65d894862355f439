"""
Unit tests of the proxy's watch on a backend that stops making progress
(L{streamrelay.proxy.watchdog}), with a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.proxy.watchdog import BackendWatchdog


class FakePump:
    """What the watchdog reads of a response pump."""

    def __init__(self) -> None:
        self.sent = 0
        self.paused = False
        self.done: Deferred[None] = Deferred()


class ResponseWatchdogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pump = FakePump()
        self.watchdog = BackendWatchdog.forResponse(self.clock, 5.0, self.pump)  # type: ignore[arg-type]

    def test_stalledWhileTheClientWaits(self) -> None:
        """No byte for the timeout while the client wants more: the body is cancelled."""
        self.pump.sent = 100
        self.clock.advance(5)  # progress since the start
        self.assertNoResult(self.pump.done)
        self.clock.advance(5)
        self.assertTrue(self.watchdog.fired)
        self.failureResultOf(self.pump.done, CancelledError)

    def test_slowClientHoldsTheBackend(self) -> None:
        """A client that does not read pauses the backend; that is not a stall."""
        self.pump.paused = True
        self.clock.advance(60)
        self.assertFalse(self.watchdog.fired)
        self.assertNoResult(self.pump.done)
        self.pump.paused = False
        self.clock.advance(5)
        self.assertTrue(self.watchdog.fired)
        self.failureResultOf(self.pump.done, CancelledError)

    def test_stallNoticedWithinTheTimeout(self) -> None:
        """
        A stall that begins just after the watchdog looked is noticed about
        one timeout later, not two.
        """
        for _ in range(21):  # a byte every 0.25 s up to 5 s, then nothing
            self.pump.sent += 1
            self.clock.advance(0.25)
        self.assertFalse(self.watchdog.fired)
        self.clock.pump([0.25] * 26)  # to 11.75 s: 6.75 s into the stall
        self.assertTrue(self.watchdog.fired)
        self.failureResultOf(self.pump.done, CancelledError)

    def test_oddTimeouts(self) -> None:
        """
        Timeouts whose quarters do not add up exactly in floating point
        still fire on the fourth look.
        """
        for timeout in (0.1, 0.7, 1.1, 2.2):
            waiting: Deferred[None] = Deferred()
            clock = Clock()
            clock.advance(1_800_000_000.3)  # the reactor's clock: seconds since 1970
            watchdog = BackendWatchdog(clock, timeout, waiting, lambda: 0, lambda: True)
            clock.pump([timeout / 4] * 4)
            self.assertTrue(watchdog.fired, timeout)
            self.failureResultOf(waiting, CancelledError)

    def test_steadyProgress(self) -> None:
        for _ in range(20):
            self.pump.sent += 1
            self.clock.advance(5)
        self.assertFalse(self.watchdog.fired)

    def test_stop(self) -> None:
        self.watchdog.stop()
        self.clock.advance(60)
        self.assertFalse(self.watchdog.fired)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RequestWatchdogTests(SynchronousTestCase):
    def test_noBodyNoAnswer(self) -> None:
        """Without a body, an answer not coming within the timeout is the backend's doing."""
        clock = Clock()
        waiting: Deferred[Any] = Deferred()
        watchdog = BackendWatchdog.forRequest(clock, 5.0, None, waiting)
        clock.advance(5)
        self.assertTrue(watchdog.fired)
        self.failureResultOf(waiting, CancelledError)

    def test_clientStallingIsNotTheBackend(self) -> None:
        """A client that stops sending by itself is left to the body's idle timer."""

        class Body:
            received = 10
            ended = False
            heldBack = False

        clock = Clock()
        waiting: Deferred[Any] = Deferred()
        watchdog = BackendWatchdog.forRequest(clock, 5.0, Body(), waiting)  # type: ignore[arg-type]
        clock.advance(30)
        self.assertFalse(watchdog.fired)
        Body.heldBack = True
        clock.advance(5)
        self.assertTrue(watchdog.fired)
        self.failureResultOf(waiting, CancelledError)
