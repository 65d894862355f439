"""
The background sender of recorded events: each is C{POST}ed to the hook
until it answers C{2xx}, with backoff, in order per file name.

Events for one name go one at a time, in the order they were recorded (a
later one waits for the earlier, even while that one is backing off);
different names go in parallel, at most C{maxInFlight} at once.  A failing
event is tried again after 1 s, doubling to 5 min.  Once it failed and is
older than C{maxAge}, it is moved to the dead list (kept on disk, counted,
logged) and the name's next event goes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamrelay.hooks.delivery import deliver
from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.journal import Entry, EventJournal
from streamrelay.hooks.metrics import HookMetrics

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
MAX_IN_FLIGHT = 16

Deliver = Callable[
    [IPoster, bytes, "bytes | None", float, IReactorTime],
    "Deferred[tuple[int, bytes]]",
]


def backoff(attempts: int) -> float:
    """Seconds to wait after the C{attempts}th failed attempt."""
    return min(FIRST_BACKOFF * 2 ** min(attempts - 1, 30), MAX_BACKOFF)


class HookSender(Service):
    """
    Delivers the events of C{journal} through C{poster}.  Events pending at start
    (reloaded by the journal) go first; L{add} queues each new one once
    it is durable.
    """

    _log = Logger()

    def __init__(
        self,
        journal: EventJournal,
        reloaded: list[Entry],
        poster: IPoster,
        secret: bytes | None,
        timeout: float,
        maxAge: float,
        clock: IReactorTime,
        metrics: HookMetrics,
        maxInFlight: int = MAX_IN_FLIGHT,
        deliverer: Deliver = deliver,
    ) -> None:
        self.journal = journal
        self.poster = poster
        self.secret = secret
        self.timeout = timeout
        self.maxAge = maxAge
        self.clock = clock
        self.metrics = metrics
        self.maxInFlight = maxInFlight
        self._deliver = deliverer
        #: name -> its pending events, oldest first; the head is being sent
        #: or waits for its retry.
        self._byName: dict[str, deque[Entry]] = {}
        #: Names whose head may be sent now.
        self._ready: deque[str] = deque()
        self._timers: dict[str, IDelayedCall] = {}
        self._attempts: dict[str, Deferred[Any]] = {}
        metrics.dead.set(journal.deadCount)
        for entry in reloaded:
            self._queue(entry)

    def add(self, entry: Entry) -> None:
        """Send C{entry}, recorded durably, after the earlier ones for its name."""
        self._queue(entry)
        self._pump()

    def _queue(self, entry: Entry) -> None:
        self.metrics.pending.inc()
        events = self._byName.get(entry.name)
        if events is None:
            self._byName[entry.name] = deque([entry])
            self._ready.append(entry.name)
        else:
            events.append(entry)

    def startService(self) -> None:
        super().startService()
        if self._byName:
            self._log.info("hook events: {count} pending from an earlier run",
                           count=sum(len(q) for q in self._byName.values()))
        self._pump()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        for name, timer in self._timers.items():
            timer.cancel()
            self._ready.append(name)
        self._timers.clear()
        for attempt in list(self._attempts.values()):
            attempt.cancel()
        return None

    # Sending

    def _pump(self) -> None:
        while self.running and self._ready and len(self._attempts) < self.maxInFlight:
            self._send(self._ready.popleft())

    def _send(self, name: str) -> None:
        entry = self._byName[name][0]
        entry.attempts += 1
        body = entry.body
        attempt = self._deliver(
            self.poster, body, self.secret, self.timeout, self.clock
        )
        self._attempts[name] = attempt
        attempt.addBoth(self._answered, name, entry)

    def _answered(self, result: tuple[int, bytes] | Failure, name: str, entry: Entry) -> None:
        del self._attempts[name]
        if not self.running:
            # Stopped meanwhile: sent again first if started again.
            self._ready.appendleft(name)
            return
        if isinstance(result, Failure):
            why = result.getErrorMessage()
        elif 200 <= result[0] < 300:
            self.journal.delivered(entry)
            self.metrics.delivered.inc()
            self.metrics.latency.observe(max(0.0, self.clock.seconds() - entry.recorded))
            self._next(name)
            return
        else:
            why = f"the hook answered {result[0]}"
        self.metrics.failedAttempts.inc()
        if self.clock.seconds() - entry.recorded >= self.maxAge:
            self._giveUp(name, entry, why)
        else:
            self._retryLater(name, entry, why)
        self._pump()

    def _next(self, name: str) -> None:
        """C{name}'s head is done: its next event may go."""
        self.metrics.pending.dec()
        events = self._byName[name]
        events.popleft()
        if events:
            self._ready.append(name)
        else:
            del self._byName[name]
        self._pump()

    def _retryLater(self, name: str, entry: Entry, why: str) -> None:
        delay = backoff(entry.attempts)
        self._log.info(
            "hook event {id} ({type} {name!r}) not delivered, attempt {n}: {why}; "
            "again in {delay:g} s",
            id=entry.id, type=entry.event.get("type"), name=name, n=entry.attempts,
            why=why, delay=delay,
        )

        def again() -> None:
            del self._timers[name]
            self._ready.append(name)
            self._pump()

        self._timers[name] = self.clock.callLater(delay, again)

    def _giveUp(self, name: str, entry: Entry, why: str) -> None:
        self._log.error(
            "hook event {id} ({type} {name!r}) is dead after {n} attempts over "
            "{age:.0f} s: {why}; kept in {path}",
            id=entry.id, type=entry.event.get("type"), name=name, n=entry.attempts,
            age=self.clock.seconds() - entry.recorded, why=why,
            path=str(self.journal.deadPath),
        )
        moving = self.journal.dead(entry, why, self.clock.seconds())

        def moved(_: None) -> None:
            self.metrics.dead.set(self.journal.deadCount)
            if self.running:
                self._next(name)

        def notMoved(failure: Failure) -> None:
            if self.running:
                self._retryLater(name, entry, failure.getErrorMessage())

        moving.addCallbacks(moved, notMoved)
