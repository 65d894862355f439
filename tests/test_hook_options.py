"""
The backend's C{--hook-*} options: defaults, and bad values refused at start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI

from streamrelay.backend.tap import Options, ownThread
from streamrelay.hooks.connections import (
    DEFAULT_PRE_CREATE_CONCURRENCY,
    IDLE_CONNECTION_SECONDS,
    HookEndpoints,
    hookClient,
    hookConnections,
)
from streamrelay.hooks.sender import MAX_IN_FLIGHT


def parse(*args: str, **env: str) -> Options:
    options = Options()
    options.environ = env
    options.parseOptions(list(args))
    return options


class HookOptionTests(SynchronousTestCase):
    def refused(self, *args: str, **env: Any) -> str:
        e = self.assertRaises(usage.UsageError, parse, *args, **env)
        return str(e)

    def test_defaults(self) -> None:
        options = parse()
        self.assertIsNone(options["hook-url"])
        self.assertEqual(options["hook-events"], ["pre-create", "post-finish", "post-delete"])
        self.assertEqual(options["hook-timeout"], 10)
        self.assertEqual(options["hook-unreachable"], "deny")
        self.assertEqual(options["hook-forward-headers"], ["Authorization", "Cookie"])
        self.assertEqual(options["hook-max-age"], 3 * 24 * 3600)
        self.assertIsNone(options["hook-secret"])

    def test_given(self) -> None:
        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write("s3cret\n")
        options = parse(
            "--hook-url", "https://app.example/hooks", "--hook-secret-file", secret,
            "--hook-events", "post-finish, post-delete", "--hook-timeout", "2.5",
            "--hook-unreachable", "allow", "--hook-forward-headers", "Cookie,X-User",
            "--hook-max-age", "60",
        )
        self.assertEqual(options["hook-secret"], b"s3cret")
        self.assertEqual(options["hook-events"], ["post-finish", "post-delete"])
        self.assertEqual(options["hook-timeout"], 2.5)
        self.assertEqual(options["hook-forward-headers"], ["Cookie", "X-User"])

    def test_environment(self) -> None:
        options = parse(STREAMRELAY_HOOK_URL="http://127.0.0.1:9/", STREAMRELAY_HOOK_EVENTS="")
        self.assertEqual(options["hook-url"], "http://127.0.0.1:9/")
        self.assertEqual(options["hook-events"], [])

    def test_unknownEvent(self) -> None:
        self.assertIn("unknown event 'post-upload'",
                      self.refused("--hook-events", "post-finish,post-upload"))

    def test_badURL(self) -> None:
        self.assertIn("http:// or https://", self.refused("--hook-url", "ftp://x/"))
        self.assertIn("http:// or https://", self.refused("--hook-url", "http:///path"))

    def test_badNumbers(self) -> None:
        self.assertIn("number of seconds", self.refused("--hook-timeout", "soon"))
        self.assertIn("more than 0", self.refused("--hook-timeout", "0"))
        self.assertIn("more than 0", self.refused("--hook-max-age", "-1"))
        self.assertIn("more than 0", self.refused("--hook-max-age", "inf"))

    def test_badUnreachable(self) -> None:
        self.assertIn("deny or allow", self.refused("--hook-unreachable", "maybe"))

    def test_badHeader(self) -> None:
        self.assertIn("not a header name", self.refused("--hook-forward-headers", "Bad Name"))

    def test_secretFile(self) -> None:
        self.assertIn("--hook-secret-file", self.refused("--hook-secret-file", "/nonexistent"))
        empty = self.mktemp()
        open(empty, "w").close()
        self.assertIn("is empty", self.refused("--hook-secret-file", empty))

    def test_s3NeedsQueue(self) -> None:
        env = {"STREAMRELAY_S3_ENDPOINT": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
               "AWS_SECRET_ACCESS_KEY": "s"}
        message = self.refused("--storage", "s3://bucket/p", "--hook-url", "http://h/", **env)
        self.assertIn("--hook-queue", message)


class HookConnectionTests(SynchronousTestCase):
    """The connections to the hook kept open between events."""

    def test_oneForEachEventAtOnce(self) -> None:
        """
        One for each delivery the sender has in flight and each upload's
        pre-create request that may be asked at once.
        """
        self.assertEqual(hookConnections(8, maxInFlight=16), 24)
        self.assertEqual(hookConnections(100, maxInFlight=4), 104)

    def test_noUploadLimit(self) -> None:
        """Without --max-concurrent-uploads, a burst of 64 pre-creates is provided for."""
        self.assertEqual(DEFAULT_PRE_CREATE_CONCURRENCY, 64)
        self.assertEqual(hookConnections(None), MAX_IN_FLIGHT + 64)

    def test_client(self) -> None:
        """The client keeps that many idle connections, for a while, to the hook's URL."""
        client = hookClient(MemoryReactorClock(), "http://127.0.0.1:9/events", 80)
        self.assertEqual(client._keep, 80)
        self.assertEqual(client._idleSeconds, IDLE_CONNECTION_SECONDS)
        self.assertIsInstance(client._endpoint, HostnameEndpoint)
        self.assertEqual(client.url, b"http://127.0.0.1:9/events")

    def test_quiet(self) -> None:
        """Opening a connection to the hook logs nothing (it was two lines at info)."""
        client = hookClient(MemoryReactorClock(), "http://127.0.0.1:9/events", 1)
        self.assertFalse(client._factory.noisy)


class HookEndpointTests(SynchronousTestCase):
    """The endpoint the hook's connections are opened to, made once."""

    def test_madeOnce(self) -> None:
        endpoints = HookEndpoints(MemoryReactorClock())
        first = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9/events"))
        again = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9/other"))
        self.assertIs(first, again)
        self.assertIsInstance(first, HostnameEndpoint)
        other = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:10/events"))
        self.assertIsNot(other, first)

    def test_https(self) -> None:
        """An https hook is reached over TLS (checked as a browser would), not plain TCP."""
        endpoints = HookEndpoints(MemoryReactorClock())
        endpoint = endpoints.endpointForURI(URI.fromBytes(b"https://hook.example/events"))
        self.assertNotIsInstance(endpoint, HostnameEndpoint)
        self.assertIsInstance(endpoint._wrappedEndpoint, HostnameEndpoint)  # type: ignore[attr-defined]

    def test_otherScheme(self) -> None:
        endpoints = HookEndpoints(MemoryReactorClock())
        self.assertRaises(ValueError, endpoints.endpointForURI, URI.fromBytes(b"ftp://h/x"))


class _Reactor:
    """Just what L{ownThread} uses of a reactor, each call kept for the test to make."""

    def __init__(self) -> None:
        self.whenRunning: list[Callable[[], object]] = []
        self.shutdown: list[Callable[[], object]] = []
        self.fromThread: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def callWhenRunning(self, f: Callable[[], object]) -> None:
        self.whenRunning.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], object]) -> None:
        assert (phase, event) == ("during", "shutdown")
        self.shutdown.append(f)

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        with self._lock:
            self.fromThread.append((f, args))

    def run(self) -> None:
        for f in self.whenRunning:
            f()

    def stop(self) -> None:
        """Shut down (the thread is joined), then run what it handed back."""
        for f in self.shutdown:
            f()
        for f, args in self.fromThread:
            f(*args)


class OwnThreadTests(SynchronousTestCase):
    """The hook journal's thread, apart from the uploads' pool."""

    def test_ownThreadInOrder(self) -> None:
        """Jobs run one at a time, in order, in the named thread, once the reactor runs."""
        reactor = _Reactor()
        run = ownThread(reactor, "hook-journal-test")
        seen: list[tuple[int, str]] = []

        def job(n: int) -> int:
            seen.append((n, threading.current_thread().name))
            return n * 10

        results = [run(job, n) for n in range(3)]
        self.assertEqual(seen, [])
        reactor.run()
        reactor.stop()
        self.assertEqual([n for n, _ in seen], [0, 1, 2])
        self.assertEqual({name for _, name in seen}, {"PoolThread-hook-journal-test-0"})
        self.assertEqual([self.successResultOf(d) for d in results], [0, 10, 20])

    def test_errorsPassedOn(self) -> None:
        reactor = _Reactor()
        run = ownThread(reactor, "hook-journal-test")
        d = run(lambda: 1 / 0)
        reactor.run()
        reactor.stop()
        self.failureResultOf(d, ZeroDivisionError)
