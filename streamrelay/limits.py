"""
How many uploads a service takes at once, and stopping gracefully: in-flight
uploads may finish for a grace period, then are aborted cleanly.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError
from streamrelay.streaming import clientGone

_log = Logger()


def busy(limit: int) -> ApiError:
    return ApiError(
        503,
        "busy",
        f"Too many uploads at once (the limit is {limit}); try again shortly.",
        {b"retry-after": b"1"},
    )


class UploadSlots:
    """
    Uploads in flight, at most C{limit} (L{None}: no limit).  A route takes
    a slot with L{take} before reading a body and gives it back with
    L{release} whatever happens.
    """

    def __init__(self, clock: IReactorTime | None, limit: int | None = None) -> None:
        self.clock = clock
        self.limit = limit
        self.active: set[IRequest] = set()
        self.stopping = False
        self._idle: list[Deferred[None]] = []

    def take(self, request: IRequest) -> None:
        """Count C{request} in, or raise 503 busy."""
        if self.stopping:
            raise ApiError(503, "busy", "The service is stopping.", {b"retry-after": b"5"})
        if self.limit is not None and len(self.active) >= self.limit:
            raise busy(self.limit)
        self.active.add(request)

    def release(self, request: IRequest) -> None:
        """
        Give C{request}'s slot back once its answer is written (or its
        client gone): a graceful stop waits for the answer too.
        """
        if getattr(request, "finished", True) or clientGone(request):
            self._free(request)
        else:
            cast(Any, request).notifyFinish().addBoth(lambda _: self._free(request))

    def _free(self, request: IRequest) -> None:
        self.active.discard(request)
        if not self.active:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    async def drain(self, grace: float) -> None:
        """
        Let in-flight uploads finish for up to C{grace} seconds, then abort
        the rest (their partial files are removed as for any client abort).
        """
        self.stopping = True
        answering = [getattr(request, "transport", None) for request in self.active]
        if self.active:
            _log.info("waiting up to {grace} s for {count} upload(s) in flight",
                      grace=grace, count=len(self.active))
            await _within(self._clock(), self.whenIdle(), grace)
        if self.active:
            _log.info("aborting {count} upload(s) still in flight", count=len(self.active))
            for request in list(self.active):
                transport = getattr(request, "transport", None)
                if transport is not None:
                    transport.abortConnection()
            await _within(self._clock(), self.whenIdle(), 5.0)
        await self._sent([t for t in answering if t is not None], 5.0)

    async def _sent(self, transports: list[Any], seconds: float) -> None:
        """
        Close the connections of the uploads that finished while stopping
        once their answers are sent, and wait (at most C{seconds}) until
        they are: the program's end would cut what is still queued.
        """
        for transport in transports:
            transport.loseConnection()
        waited = 0.0
        while waited < seconds and any(_open(t) for t in transports):
            await deferLater(self._clock(), 0.01)
            waited += 0.01

    def _clock(self) -> IReactorTime:
        if self.clock is None:
            from twisted.internet import reactor

            return reactor  # type: ignore[return-value]
        return self.clock


def _open(transport: Any) -> bool:
    """Whether the connection under C{transport} (TLS, say) is still open."""
    while not hasattr(transport, "socket") and getattr(transport, "transport", None) is not None:
        transport = transport.transport
    return bool(getattr(transport, "connected", False))


async def _within(clock: IReactorTime, d: Deferred[None], seconds: float) -> None:
    """Wait for C{d}, but no longer than C{seconds}."""
    timer = clock.callLater(seconds, d.cancel)
    try:
        await d
    except Exception:
        pass
    finally:
        if timer.active():
            timer.cancel()
