"""
The services' wiring: listening backlogs and signal handling.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase


class BacklogTests(SynchronousTestCase):
    def test_backlog(self) -> None:
        from streamrelay.service import withBacklog

        self.assertEqual(withBacklog("tcp:0:interface=127.0.0.1"),
                         "tcp:0:interface=127.0.0.1:backlog=1024")
        self.assertEqual(withBacklog("ssl:443:privateKey=k"), "ssl:443:privateKey=k:backlog=1024")
        self.assertEqual(withBacklog("tcp:80:backlog=5"), "tcp:80:backlog=5")
        self.assertEqual(withBacklog("unix:/tmp/s"), "unix:/tmp/s")


class _SignalReactor:
    """The part of a reactor L{handleSignals} uses; it runs nothing by itself."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.queued: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.whenRunning: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.handled.append(number)

    def sigInt(self, number: int, frame: object = None) -> None:
        self.handled.append(number)

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.queued.append((f, args))

    def callWhenRunning(self, f: Callable[..., object], *args: Any) -> None:
        self.whenRunning.append((f, args))

    def run(self, calls: list[tuple[Callable[..., object], tuple[Any, ...]]]) -> None:
        while calls:
            f, args = calls.pop(0)
            f(*args)


class SignalTests(SynchronousTestCase):
    """The services' signal handlers leave the work, logging included, to the reactor thread."""

    def setUp(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.reactor = _SignalReactor()

    def handleSignals(self, reload: Callable[[], None] | None = None) -> None:
        from streamrelay.service import handleSignals

        handleSignals(self.reactor, "test", reload)
        self.reactor.run(self.reactor.whenRunning)

    def test_stopSignalsLater(self) -> None:
        """
        SIGTERM and SIGINT still reach the reactor's own handlers (which
        log, then stop it), but from the reactor thread, not inside the
        signal handler: one landing while the main thread holds the log
        observer's lock would wait for that lock forever.
        """
        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        signal.signal(signal.SIGINT, self.reactor.sigInt)
        self.handleSignals()
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            assert callable(handler)
            handler(number, None)
        self.assertEqual(self.reactor.handled, [])
        self.reactor.run(self.reactor.queued)
        self.assertEqual(self.reactor.handled, [signal.SIGTERM, signal.SIGINT])

    def test_otherHandlersKept(self) -> None:
        """A handler that is not the reactor's (a debugger's SIGINT, say) stays."""

        def mine(number: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        signal.signal(signal.SIGINT, mine)
        self.handleSignals()
        self.assertIs(signal.getsignal(signal.SIGINT), mine)
        self.assertNotEqual(signal.getsignal(signal.SIGTERM), self.reactor.sigTerm)

    def test_hangUpReloads(self) -> None:
        """SIGHUP calls C{reload}, in the reactor thread."""
        reloaded: list[bool] = []
        self.handleSignals(lambda: reloaded.append(True))
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(reloaded, [])
        self.reactor.run(self.reactor.queued)
        self.assertEqual(reloaded, [True])
