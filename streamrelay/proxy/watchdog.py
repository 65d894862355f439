"""
Noticing a backend that stopped making progress while the proxy waits on it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from streamrelay.streaming import RequestBody


class BackendWatchdog:
    """
    Cancels C{waiting} (the upstream request) when, for C{timeout} seconds,
    the backend neither took body bytes nor answered, while it was the one
    holding things up: the client was held back by backpressure, or had
    sent everything.  A client that stalls by itself is the body idle
    timer's business (408), not the backend's.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        body: RequestBody | None,
        waiting: Deferred[Any],
    ) -> None:
        self.fired = False
        self._clock = clock
        self._timeout = timeout
        self._body = body
        self._waiting = waiting
        self._seen = self._progress()
        self._call: IDelayedCall | None = clock.callLater(timeout, self._check)

    def _progress(self) -> int:
        return self._body.received if self._body is not None else 0

    def _backendsTurn(self) -> bool:
        body = self._body
        return body is None or body.ended or body.heldBack

    def _check(self) -> None:
        self._call = None
        progress = self._progress()
        if progress == self._seen and self._backendsTurn():
            self.fired = True
            self._waiting.cancel()
            return
        self._seen = progress
        self._call = self._clock.callLater(self._timeout, self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
