"""
pre-create end to end: the real backend asks a hook receiver this test
runs on 127.0.0.1, and enforces its answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from streamrelay.hooks.signature import verify
from tests.processes import Program, call, client, partials, reactor, startService

SECRET = b"integration hook secret"


class Receiver(Resource):
    """The application's hook: answers each pre-create with C{answer(event)}."""

    isLeaf = True

    def __init__(self, answer: Callable[[dict[str, Any]], tuple[int, bytes]]) -> None:
        super().__init__()
        self.answer = answer
        self.events: list[dict[str, Any]] = []
        self.signed: list[bool] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        event = json.loads(body)
        self.events.append(event)
        signature = request.getHeader(b"streamrelay-signature") or b""
        self.signed.append(verify(SECRET, signature, body))
        if event["type"] != "pre-create":
            request.setResponseCode(204)
            return b""
        status, answer = self.answer(event)
        request.setResponseCode(status)
        return answer


class Flood(Protocol):
    """
    A hook that answers any request with a status line and then header
    lines without end (up to L{TOTAL}, as fast as the peer reads them).
    """

    TOTAL = 256 << 20
    CHUNK = b"X-Flood: aaaaaaaaaaaaaaaa\r\n" * 2500

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        if self.sent == 0:
            assert self.transport is not None
            self.sent = 1
            self.transport.write(b"HTTP/1.1 200 OK\r\n")
            self.transport.registerProducer(self, False)  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        if self.closed or self.transport is None:
            return
        if self.sent >= self.TOTAL:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            return
        self.sent += len(self.CHUNK)
        self.transport.write(self.CHUNK)

    def stopProducing(self) -> None:
        self.closed = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


class PreCreateTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.storage = Path(self.mktemp()) / "uploads"
        self.secretFile = Path(self.mktemp())
        self.secretFile.write_bytes(SECRET + b"\n")

    def receive(self, answer: Callable[[dict[str, Any]], tuple[int, bytes]]) -> tuple[
        Receiver, str
    ]:
        receiver = Receiver(answer)
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return receiver, f"http://127.0.0.1:{port.getHost().port}/hook"

    async def backend(self, url: str, *args: str) -> Program:
        return await startService(
            self, "backend", "--storage", str(self.storage), "--hook-url", url,
            "--hook-secret-file", str(self.secretFile), "--hook-timeout", "5", *args,
        )

    async def put(self, backend: Program, name: str, data: bytes, chunked: bool = False
                  ) -> tuple[int, dict[str, Any]]:
        producer = FileBodyProducer(BytesIO(data))
        if chunked:
            producer.length = UNKNOWN_LENGTH
        response = await client().request("PUT", f"{backend.url}/files/{name}", data=producer)
        body = await response.content()
        return response.code, json.loads(body)

    async def listing(self, backend: Program) -> list[dict[str, Any]]:
        _, _, body = await call("GET", f"{backend.url}/files")
        files: list[dict[str, Any]] = json.loads(body)["files"]
        return files

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.storage.iterdir() if not p.name.startswith("."))

    async def test_decisions(self) -> None:
        """reject, rename, a size limit on a chunked body, metadata in the listing."""

        def answer(event: dict[str, Any]) -> tuple[int, bytes]:
            name = event["file"]["name"]
            if name == "secret.txt":
                return 200, b'{"reject": {"status": 403, "message": "Not yours."}}'
            if name == "draft.txt":
                return 200, b'{"name": "final.txt"}'
            if name == "big.bin":
                return 200, b'{"maxSize": 1000}'
            return 200, b'{"metadata": {"owner": "ana"}}'

        receiver, url = self.receive(answer)
        backend = await self.backend(url)
        status, body = await self.put(backend, "secret.txt", b"x" * 100)
        self.assertEqual((status, body["error"], body["message"]), (403, "rejected", "Not yours."))
        status, body = await self.put(backend, "draft.txt", b"text")
        self.assertEqual((status, body["name"]), (201, "final.txt"))
        status, body = await self.put(backend, "big.bin", b"b" * 5000, chunked=True)
        self.assertEqual((status, body["error"]), (413, "too_large"))
        status, body = await self.put(backend, "doc.txt", b"doc")
        self.assertEqual((status, body["metadata"]), (201, {"owner": "ana"}))
        self.assertEqual(self.stored(), ["doc.txt", "final.txt"])
        self.assertEqual(partials(self.storage), [])
        listing = {f["name"]: f.get("metadata") for f in await self.listing(backend)}
        self.assertEqual(listing, {"doc.txt": {"owner": "ana"}, "final.txt": None})
        preCreates = [e for e in receiver.events if e["type"] == "pre-create"]
        self.assertEqual(
            [(e["file"]["name"], e["file"]["size"], e["request"]["protocol"]) for e in preCreates],
            [("secret.txt", 100, "put"), ("draft.txt", 4, "put"), ("big.bin", None, "put"),
             ("doc.txt", 3, "put")],
        )
        self.assertTrue(all(receiver.signed))

    async def refusingURL(self) -> str:
        """A URL on 127.0.0.1 where nothing listens (any more)."""
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        return f"http://127.0.0.1:{number}/hook"

    async def test_hookDownDeny(self) -> None:
        backend = await self.backend(await self.refusingURL())
        status, body = await self.put(backend, "a.txt", b"data")
        self.assertEqual((status, body["error"]), (503, "hook_unavailable"))
        self.assertEqual(self.stored(), [])

    async def test_hostileHook(self) -> None:
        """
        A hook that answers with an endless head: the backend stops reading
        it at 64 KiB (its memory does not follow), the upload gets 503 and
        nothing is stored, and the backend goes on serving.
        """
        flood = Flood()
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: flood), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        backend = await self.backend(f"http://127.0.0.1:{port.getHost().port}/hook")
        before = backend.peak()
        status, body = await self.put(backend, "a.txt", b"data")
        self.assertEqual((status, body["error"]), (503, "hook_unavailable"))
        self.assertTrue(flood.closed, "the backend closed the connection")
        self.assertLess(flood.sent, Flood.TOTAL, "the backend did not read it all")
        self.assertEqual(self.stored(), [])
        self.assertLess(backend.peak() - before, 16 << 20)
        code, _, _ = await call("GET", f"{backend.url}/healthz")
        self.assertEqual(code, 200)

    async def test_hookDownAllow(self) -> None:
        backend = await self.backend(await self.refusingURL(), "--hook-unreachable", "allow")
        status, body = await self.put(backend, "a.txt", b"data")
        self.assertEqual((status, body["name"]), (201, "a.txt"))
        self.assertEqual((self.storage / "a.txt").read_bytes(), b"data")

