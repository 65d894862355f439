"""
Fakes for the hooks engine's unit tests: runners that do the journal's
file work at once or when told, and a hook whose answers a test gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from streamrelay.hooks.context import RequestContext
from streamrelay.hooks.events import POST_FINISH, event, fileObject
from streamrelay.hooks.journal import Entry

CONTEXT = RequestContext("rid-1", "127.0.0.1", "token:alice", "put", {})


def runNow(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A runner doing the work in the caller's thread, at once."""
    return maybeDeferred(f, *args)


class HeldRunner:
    """A runner whose jobs run only when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((f, args, d))
        return d

    def runOne(self) -> None:
        f, args, d = self.jobs.pop(0)
        maybeDeferred(f, *args).chainDeferred(d)


def entry(name: str = "a.txt", now: float = 1000.0, type: str = POST_FINISH) -> Entry:
    return Entry(event(type, fileObject(name, 3, "ab" * 32), CONTEXT, now), now)


class Hook:
    """A deliverer whose every attempt waits for the test's answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Deferred[tuple[int, bytes]]]] = []

    def __call__(
        self, agent: Any, url: bytes, body: bytes, secret: bytes | None, timeout: float, clock: Any
    ) -> Deferred[tuple[int, bytes]]:
        import json

        d: Deferred[tuple[int, bytes]] = Deferred()
        self.calls.append((json.loads(body), d))
        return d

    def names(self) -> list[str]:
        return [str(call[0]["file"]["name"]) for call in self.calls]

    def answer(self, index: int, status: int) -> None:
        self.calls[index][1].callback((status, b""))
