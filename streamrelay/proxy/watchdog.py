"""
Noticing a backend that stopped making progress while the proxy waits on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from streamrelay.proxy.pump import ResponsePump
from streamrelay.streaming import RequestBody


class BackendWatchdog:
    """
    Cancels C{waiting} when, for C{timeout} seconds, C{progress()} did not
    move while C{backendsTurn()} said the backend was the one holding
    things up.  The constructors say what progress and the backend's turn
    are for the two halves of an exchange.

    It looks C{CHECKS} times per timeout, so a stall is noticed between
    C{timeout} and C{timeout * (1 + 1 / CHECKS)} seconds after it began.
    """

    CHECKS = 4

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        waiting: Deferred[Any],
        progress: Callable[[], int],
        backendsTurn: Callable[[], bool],
    ) -> None:
        self.fired = False
        self._clock = clock
        self._timeout = timeout
        self._waiting = waiting
        self._progress = progress
        self._backendsTurn = backendsTurn
        self._seen = progress()
        self._since = clock.seconds()
        self._call: IDelayedCall | None = clock.callLater(self._interval(), self._check)

    def _interval(self) -> float:
        return self._timeout / self.CHECKS

    @classmethod
    def forRequest(
        cls, clock: IReactorTime, timeout: float, body: RequestBody | None, waiting: Deferred[Any]
    ) -> BackendWatchdog:
        """
        Until the backend answers: it neither took body bytes nor answered
        while the client was held back by backpressure, or had sent
        everything.  A client that stalls by itself is the body idle
        timer's business (408), not the backend's.
        """
        if body is None:
            return cls(clock, timeout, waiting, lambda: 0, lambda: True)
        return cls(
            clock, timeout, waiting,
            lambda: body.received, lambda: body.ended or body.heldBack,
        )

    @classmethod
    def forResponse(
        cls, clock: IReactorTime, timeout: float, pump: ResponsePump
    ) -> BackendWatchdog:
        """
        While the answer's body streams: the backend sent no byte while
        the client was ready for more.  A client that reads slowly holds
        the backend back, which is not the backend stalling.
        """
        return cls(clock, timeout, pump.done, lambda: pump.sent, lambda: not pump.paused)

    def _check(self) -> None:
        self._call = None
        progress = self._progress()
        now = self._clock.seconds()
        if progress != self._seen or not self._backendsTurn():
            self._seen = progress
            self._since = now
        elif now - self._since >= self._timeout - self._interval() / 64:
            # (With a little slack: CHECKS steps of timeout / CHECKS on the
            # reactor's clock, in seconds since 1970, may add up to a hair
            # under the timeout in floating point.)
            self.fired = True
            self._waiting.cancel()
            return
        self._call = self._clock.callLater(self._interval(), self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
