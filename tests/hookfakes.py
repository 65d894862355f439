"""
Fakes for the hooks engine's unit tests: runners that do the journal's
file work at once or when told, and a hook whose answers a test gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import implementer

from streamrelay.hooks.context import RequestContext
from streamrelay.hooks.events import POST_FINISH, event, fileObject
from streamrelay.hooks.interfaces import IPoster
from streamrelay.hooks.journal import Entry
from streamrelay.hooks.wire import HookClient

_ADDRESS = IPv4Address("TCP", "127.0.0.1", 9)

CONTEXT = RequestContext("rid-1", "127.0.0.1", "token:alice", "put", {})


@implementer(IStreamClientEndpoint)
class MemoryHook:
    """
    An endpoint whose every connection reaches a L{Site} around C{resource}
    in memory (Twisted's own HTTP server): L{flush} moves the bytes.
    """

    def __init__(self, resource: IResource) -> None:
        self.site = Site(resource, reactor=Clock())
        self.pumps: list[iosim.IOPump] = []
        self.connections = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.connections += 1
        server = self.site.buildProtocol(_ADDRESS)
        client = factory.buildProtocol(_ADDRESS)
        assert client is not None and server is not None
        self.pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, isServer=True),
            client, iosim.FakeTransport(client, isServer=False), greet=False,
        ))
        return succeed(client)

    def flush(self) -> None:
        for pump in list(self.pumps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self.pumps.remove(pump)

    def client(self, clock: Clock, url: str = "http://hook.example/events") -> HookClient:
        """A client of this hook; each post needs a L{flush} to be answered."""
        return HookClient(url, self, clock, keep=4, idleSeconds=30)

    def poster(self, clock: Clock, url: str = "http://hook.example/events") -> FlushingPoster:
        """A client of this hook whose posts are flushed as they go."""
        return FlushingPoster(self.client(clock, url), self)


@implementer(IPoster)
class FlushingPoster:
    """Posts with C{client}, then flushes C{hook}: a synchronous answer is there at once."""

    def __init__(self, client: HookClient, hook: MemoryHook) -> None:
        self.client = client
        self.hook = hook
        self.url = client.url

    def post(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Deferred[tuple[int, bytes]]:
        d = self.client.post(headers, body)
        self.hook.flush()
        return d


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
        self, poster: Any, body: bytes, secret: bytes | None, timeout: float, clock: Any
    ) -> Deferred[tuple[int, bytes]]:
        import json

        d: Deferred[tuple[int, bytes]] = Deferred()
        self.calls.append((json.loads(body), d))
        return d

    def names(self) -> list[str]:
        return [str(call[0]["file"]["name"]) for call in self.calls]

    def answer(self, index: int, status: int) -> None:
        self.calls[index][1].callback((status, b""))
