"""
The Twisted internals streamrelay relies on: all of them behind the named
helpers of L{streamrelay.streaming.internals}, and all of them still in the
installed Twisted, so that an upgrade that drops one fails here, in one place.
"""

from __future__ import annotations

import ast
import importlib
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web._newclient import (
    HTTPClientParser,
    LengthEnforcingConsumer,
    Request,
    TransportProxyProducer,
)
from twisted.web.client import _HTTP11ClientFactory
from twisted.web.http_headers import Headers

from streamrelay.streaming.internals import (
    PRIVATE_NAMES,
    ClientProtocolHooks,
    ConnectionPoolHooks,
    InterimObserver,
)

PACKAGE = Path(__file__).resolve().parent.parent / "streamrelay"
STREAMING = PACKAGE / "streaming"

#: The Twisted modules streamrelay builds on, whose private names the grep
#: below looks for.
TWISTED_MODULES = [
    "web/http.py", "web/server.py", "web/_newclient.py", "web/client.py", "web/resource.py",
    "internet/tcp.py", "internet/abstract.py", "internet/protocol.py", "protocols/basic.py",
    "protocols/tls.py", "web/_http2.py",
]


class _Sized:
    length = 5


def _instances() -> dict[str, list[object]]:
    """Instances in use of the classes whose internals streamrelay reads."""
    channel = http.HTTPChannel()
    channel.callLater = Clock().callLater  # type: ignore[method-assign,assignment]
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n")
    a, b = socket.socketpair()
    conn = tcp.Connection(a, None)  # type: ignore[arg-type]
    enforcing = LengthEnforcingConsumer(_Sized(), StringTransport(), Deferred())
    proxy = TransportProxyProducer(object())
    chunked = http._ChunkedTransferDecoder(lambda data: None, lambda extra: None)
    chunked.dataReceived(b"5\r\n")
    request = Request(b"GET", b"/", Headers(), None)
    parser = HTTPClientParser(request, lambda rest: None)
    parser.makeConnection(StringTransport())
    parser.dataReceived(b"HTTP/1.1 104 Upload Resumption Supported\r\n")
    instances: dict[str, list[object]] = {
        "twisted.web._newclient.HTTPClientParser": [parser],
        "twisted.web._newclient.Request": [request],
        "twisted.web.client._HTTP11ClientFactory": [_HTTP11ClientFactory(lambda p: None, "")],
        "twisted.web.http.HTTPChannel": [channel],
        "twisted.internet.tcp.Connection": [conn],
        "twisted.web._newclient.LengthEnforcingConsumer": [enforcing],
        "twisted.web._newclient.TransportProxyProducer": [proxy],
        "twisted.web.http._ChunkedTransferDecoder": [chunked],
        "twisted.web.http._IdentityTransferDecoder": [
            http._IdentityTransferDecoder(5, lambda data: None, lambda extra: None)
        ],
    }
    a.close()
    b.close()
    channel.connectionLost(Failure(ConnectionDone()))
    return instances


def _owner(dotted: str) -> Any:
    """The module, or the class in a module, C{dotted} names."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _twistedPrivateNames() -> set[str]:
    """The private names Twisted's modules that streamrelay uses define."""
    names: set[str] = set()
    root = Path(http.__file__).parent.parent
    for module in TWISTED_MODULES:
        source = (root / module).read_text()
        names.update(re.findall(r"\bself\.(_[A-Za-z]\w*)\s*=", source))
        names.update(re.findall(r"^\s*(?:def|class)\s+(_[A-Za-z]\w*)", source, re.M))
        names.update(re.findall(r"^\s+(_[A-Za-z]\w*)\s*[:=]", source, re.M))
        names.update(re.findall(r"^(_[A-Za-z]\w*)\s*[:=]", source, re.M))
    return {name for name in names if not name.startswith("__")}


def privateUses(path: Path, names: set[str]) -> list[str]:
    """
    Where C{path} imports a private name of Twisted, or reads one of
    C{names} (Twisted's private names) on an object other than its own
    C{self}: by attribute, or by name (C{getattr}, C{vars()} and the like).

    It reads names, not types: one of streamrelay's own private names that
    Twisted uses too, read on another of streamrelay's objects, is found
    as well (give it another name, or read it through a method).
    """
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")) or any(
                alias.name.startswith("_") for alias in node.names
            ):
                found.append(f"{where}: from {module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("twisted") and any(
                    part.startswith("_") for part in alias.name.split(".")
                ):
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in names:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in names:
            found.append(f"{where}: {node.value!r}")
    return found


class _Watching(ClientProtocolHooks):
    def __init__(self, observer: InterimObserver | None) -> None:
        super().__init__()
        self.observer = observer
        self.asked: list[object] = []

    def interimObserver(self, bodyProducer: object) -> InterimObserver | None:
        self.asked.append(bodyProducer)
        return self.observer


class ClientHooksTests(SynchronousTestCase):
    def test_parserWatched(self) -> None:
        """
        L{ClientProtocolHooks} asks, for each request it sends, who is told
        of its interim responses, and tells them as the parser reads them.
        """
        seen: list[tuple[int, bytes, Sequence[bytes] | None]] = []
        protocol = _Watching(lambda code, reason, headers: seen.append(
            (code, reason, headers.getRawHeaders(b"location"))))
        protocol.makeConnection(StringTransport())
        responses: list[Any] = []
        protocol.request(Request(b"GET", b"/", Headers({b"host": [b"b"]}), None)).addCallback(
            responses.append)
        self.assertEqual(protocol.asked, [None])
        protocol.dataReceived(
            b"HTTP/1.1 103 Early Hints\r\nLocation: /a\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\n"
        )
        self.assertEqual(seen, [(103, b"Early Hints", [b"/a"])])
        self.assertEqual([r.code for r in responses], [204])

    def test_busyConnection(self) -> None:
        """A request refused at once (the connection is busy) is not watched."""
        protocol = _Watching(None)
        protocol.makeConnection(StringTransport())
        protocol.request(Request(b"GET", b"/", Headers({b"host": [b"b"]}), None))
        failures: list[Failure] = []
        protocol.request(Request(b"GET", b"/", Headers(), None)).addErrback(failures.append)
        self.assertEqual(len(protocol.asked), 1)
        self.assertEqual(len(failures), 1)

    def test_poolBuilds(self) -> None:
        """A L{ConnectionPoolHooks} builds its L{clientProtocol}."""

        class Built(ClientProtocolHooks):
            pass

        class Pool(ConnectionPoolHooks):
            clientProtocol = Built

        pool = Pool(Clock())
        built: list[object] = []

        class Endpoint:
            def connect(self, factory: Any) -> Deferred[object]:
                built.append(factory.buildProtocol(None))
                return Deferred()

        pool.getConnection("key", Endpoint())  # type: ignore[arg-type]
        self.assertEqual([type(p) for p in built], [Built])


class InternalsTests(SynchronousTestCase):
    def test_privateNamesExist(self) -> None:
        """
        Every private name of Twisted that streamrelay.streaming.internals
        lists is still there, on its module or class or on an instance in use.
        """
        instances = _instances()
        missing = []
        for dotted, names in PRIVATE_NAMES.items():
            owner = _owner(dotted)
            for name in names:
                if hasattr(owner, name):
                    continue
                if any(name in vars(instance) for instance in instances.get(dotted, [])):
                    continue
                missing.append(f"{dotted}.{name}")
        self.assertEqual(missing, [], "Twisted no longer has these: see internals.py")

    def test_onlyInStreaming(self) -> None:
        """
        No module of streamrelay outside streamrelay/streaming/ imports a
        private name of Twisted or reads a private attribute of a Twisted
        object (by attribute, or by name as with C{getattr}); nor does the
        streaming package outside its named helpers (internals.py).
        """
        names = _twistedPrivateNames()
        self.assertIn("_disconnected", names)  # the grep looks for something
        found = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if path != STREAMING / "internals.py":
                found.extend(privateUses(path, names))
        self.assertEqual(found, [])

    def test_grepFinds(self) -> None:
        """The grep finds what it looks for (here, in the package that may)."""
        names = _twistedPrivateNames()
        found = privateUses(STREAMING / "internals.py", names)
        self.assertTrue(any("_newclient" in f for f in found), found)
        self.assertTrue(any("'_disconnected'" in f for f in found), found)
        self.assertTrue(any("._savedTimeOut" in f for f in found), found)
