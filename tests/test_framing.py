"""
Message framing by RFC 9112, so that streamrelay never reads a request
otherwise than a front proxy may: Transfer-Encoding other than a final
C{chunked}, folded header lines, huge chunk sizes, bare LF line endings and
missing or repeated C{Host} headers are refused at once with API.md's JSON
errors, before any route sees the request.  In memory with Twisted's fakes,
and over raw sockets with the real backend and proxy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.httpfakes import Connection, Response, Upload, parseResponses
from tests.processes import Program, call, eventually, reactor, startStack
from tests.rawrequests import chunk, chunkedHead, put

#: The smuggled request of the tests: it must never run.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


class FramingTestCase(SynchronousTestCase):
    def refused(self, data: bytes, status: int = 400, code: str = "bad_request") -> None:
        """
        C{data} is answered C{status} with C{code} alone, at once, before
        any route saw it, and the connection closes.
        """
        resource = Upload()
        conn = Connection(resource)
        conn.send(data)
        conn.turn()
        conn.turn()
        responses = conn.responses()
        self.assertEqual([r.status for r in responses], [status], conn.output())
        self.assertError(responses[0], status, code)
        self.assertEqual(resource.requests, [])
        self.assertTrue(conn.transport.disconnecting)
        # What the client sends after that is dropped.
        conn.send(b"zz\r\n" + SMUGGLED)
        conn.turn()
        self.assertEqual(len(conn.responses()), 1)
        self.assertEqual(resource.requests, [])
        conn.lose()

    def assertError(self, response: Response, status: int, code: str) -> None:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertEqual(response.headers[b"connection"], b"close")
        answer = json.loads(response.body)
        self.assertEqual(answer["error"], code)
        self.assertIsInstance(answer["message"], str)

    def served(self, data: bytes, turns: int = 3) -> list[tuple[int, bytes, bytes]]:
        """The status, path and body of each answer to C{data}, sent on one connection."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(data)
        for _ in range(turns):
            conn.turn()
        self.assertFalse(conn.transport.disconnecting, conn.output())
        paths = [r.path for r in resource.requests]
        return [
            (r.status, path, r.body) for r, path in zip(conn.responses(), paths, strict=True)
        ]


class TransferEncodingTests(FramingTestCase):
    """Only C{chunked}, once and last, is a Transfer-Encoding streamrelay reads."""

    def test_identityAlone(self) -> None:
        """
        C{identity} alone was ignored: the body was read as the next
        request.
        """
        self.refused(
            b"PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" + SMUGGLED
        )
        self.refused(
            b"PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
            b"Content-Length: 5\r\n\r\nxxxxx"
        )

    def test_chunkedNotLast(self) -> None:
        """Several Transfer-Encoding lines are one list: C{chunked} must end it."""
        for values in [
            [b"chunked", b"identity"],
            [b"chunked", b"gzip"],
            [b"chunked", b"chunked"],
            [b"chunked, identity"],
            [b"chunked,chunked"],
            [b"gzip"],
            [b""],
            [b"chunked;x=1"],
        ]:
            head = b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in values)
            self.refused(
                b"PUT /f HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + chunk(b"abc")
                + b"0\r\n\r\n" + SMUGGLED
            )

    def test_emptyLine(self) -> None:
        """
        An empty Transfer-Encoding line beside C{chunked} is refused: a
        front proxy that reads only the last line would see no coding.
        """
        for values in [[b"chunked", b""], [b"", b"chunked"], [b"chunked", b" , "]]:
            head = b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in values)
            self.refused(
                b"PUT /f HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + chunk(b"abc")
                + b"0\r\n\r\n" + SMUGGLED
            )

    def test_otherCodingsBeforeChunked(self) -> None:
        """
        Codings before a final C{chunked} are ones streamrelay does not
        implement: 501 (RFC 9112 section 6.1).
        """
        for values in [[b"identity", b"chunked"], [b"gzip, chunked"], [b"gzip", b"chunked"]]:
            head = b"".join(b"Transfer-Encoding: " + v + b"\r\n" for v in values)
            self.refused(
                b"PUT /f HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + chunk(b"abc")
                + b"0\r\n\r\n",
                501, "not_implemented",
            )

    def test_withContentLength(self) -> None:
        """Content-Length beside Transfer-Encoding, in either order."""
        for head in [
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            b"Transfer-Encoding: gzip\r\nContent-Length: 3\r\n",
        ]:
            self.refused(b"PUT /f HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + chunk(b"abc"))

    def test_http10(self) -> None:
        """
        HTTP/1.0 has no Transfer-Encoding: a request carrying one has faulty
        framing (RFC 9112 section 6.1), even a plain C{chunked}.
        """
        self.refused(
            b"PUT /f HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"abc")
            + b"0\r\n\r\n" + SMUGGLED
        )

    def test_chunkedRead(self) -> None:
        """C{chunked} in any case, with list padding, is read as before."""
        for value in [b"chunked", b"Chunked", b"CHUNKED", b", chunked", b"chunked ,"]:
            data = (
                b"PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + value + b"\r\n\r\n"
                + chunk(b"abc") + b"0\r\n\r\n"
            )
            self.assertEqual(self.served(data), [(200, b"/f", b"3")], value)


class ChunkSizeTests(FramingTestCase):
    def test_hugeChunkSize(self) -> None:
        """A chunk size over 2**63 - 1 was accepted and waited on."""
        for size in [b"1" + b"0" * 18, b"8000000000000000", b"F" * 17]:
            self.refused(chunkedHead(b"/f") + size + b"\r\nabc")

    def test_largestChunkSize(self) -> None:
        """A chunk size of 2**63 - 1 (or with leading zeros) is waited on."""
        for size in [b"7fffffffffffffff", b"0000000000000000003"]:
            resource = Upload()
            conn = Connection(resource)
            conn.send(chunkedHead(b"/f") + size + b"\r\nabc")
            conn.turn()
            self.assertEqual(conn.output(), b"")
            self.assertFalse(conn.transport.disconnecting)
            self.assertEqual(len(resource.requests), 1)
            conn.lose()


class ObsFoldTests(FramingTestCase):
    """A header line starting with SP or HTAB (obs-fold) is refused."""

    def test_folded(self) -> None:
        for head in [
            b"Transfer-Encoding:\r\n chunked\r\n",
            b"X-A: b\r\n Transfer-Encoding: chunked\r\n",
            b"Content-Length:\r\n\t3\r\n",
            b"X-A: b\r\n\tContent-Length: 3\r\n",
            b" X-A: b\r\n",
        ]:
            self.refused(b"PUT /f HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + chunk(b"abc"))
        self.refused(b"GET /f HTTP/1.1\r\n Host: x\r\n\r\n")


class BareLineFeedTests(FramingTestCase):
    """Lines of the request line and headers must end with CRLF."""

    def test_bareLF(self) -> None:
        for data in [
            b"GET /f HTTP/1.1\nHost: x\n\n",
            b"GET /f HTTP/1.1\n",
            b"GET /f HTTP/1.1\r\nHost: x\n\n",
            b"GET /f HTTP/1.1\r\nHost: x\r\n\n",
            b"GET /f HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
            b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\n\r\nabc",
        ]:
            self.refused(data)

    def test_bareLFInPieces(self) -> None:
        """Found at once however the bytes arrive."""
        resource = Upload()
        conn = Connection(resource)
        conn.send(b"GET /f HTTP/1.1\r\nHost: x")
        self.assertEqual(conn.output(), b"")
        conn.send(b"\n")
        [response] = conn.responses()
        self.assertError(response, 400, "bad_request")
        self.assertTrue(conn.transport.disconnecting)

    def test_CRLFInPieces(self) -> None:
        """A CR at the end of one read and its LF at the start of the next."""
        resource = Upload()
        conn = Connection(resource)
        for piece in [b"GET /f HTTP/1.1\r", b"\nHost: x\r", b"\n\r", b"\n"]:
            conn.send(piece)
        self.assertEqual([(r.status, r.body) for r in conn.responses()], [(200, b"ok")])

    def test_bodiesUntouched(self) -> None:
        """
        Line feeds in bodies are data: pipelined requests with them are
        served on one connection.
        """
        data = (
            put(b"/a", b"a\nb\n\n")
            + chunkedHead(b"/b") + chunk(b"\n\nc\n") + b"0\r\n\r\n"
            + put(b"/c", b"\n")
            + b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(
            self.served(data, turns=4),
            # (Upload answers how many bytes its consumer has in all.)
            [(200, b"/a", b"5"), (200, b"/b", b"9"), (200, b"/c", b"10"), (200, b"/d", b"ok")],
        )


class HostTests(FramingTestCase):
    """RFC 9112 section 3.2: one Host header, required on HTTP/1.1."""

    def test_missing(self) -> None:
        self.refused(b"GET /f HTTP/1.1\r\n\r\n")
        self.refused(b"PUT /f HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")

    def test_duplicate(self) -> None:
        self.refused(b"GET /f HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
        self.refused(b"GET /f HTTP/1.1\r\nHost: x\r\nhost: x\r\n\r\n")
        self.refused(b"GET /f HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n")

    def test_HTTP10WithoutHost(self) -> None:
        resource = Upload()
        conn = Connection(resource)
        conn.send(b"GET /f HTTP/1.0\r\n\r\n")
        conn.turn()
        self.assertEqual([(r.status, r.body) for r in conn.responses()], [(200, b"ok")])

    def test_emptyHost(self) -> None:
        """An empty Host is valid (RFC 9112 section 3.2)."""
        self.assertEqual(self.served(b"GET /f HTTP/1.1\r\nHost:\r\n\r\n"), [(200, b"/f", b"ok")])


class _Collect(Protocol):
    """What a raw connection receives, until it closes."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True


async def exchange(port: int, data: bytes, wait: float = 30) -> bytes:
    """
    Send C{data} on a new connection to C{port}; what came back until the
    service closed the connection, or C{wait} seconds passed (generous:
    each exchange here ends with the service closing it).
    """
    collect = _Collect()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), collect)
    assert collect.transport is not None
    collect.transport.write(data)
    await eventually(lambda: collect.closed, wait)
    if not collect.closed:
        cast(Any, collect.transport).abortConnection()
    return collect.data


class FramingIntegrationTests(TestCase):
    """Each refusal, over raw sockets, by the backend and by the proxy."""

    timeout = 180

    async def start(self) -> None:
        """The backend and proxy of a test, and a stored file that must stay."""
        self.storage = Path(self.mktemp()) / "uploads"
        self.backend, self.proxy = await startStack(self, self.storage)
        code, _, _ = await call("PUT", self.backend.url + "/files/victim", b"keep me")
        self.assertEqual(code, 201)

    async def assertRefused(
        self, data: bytes, status: int = 400, code: str = "bad_request"
    ) -> None:
        """
        Both services answer C{data} with C{status} and C{code} alone and
        close; nothing is stored or deleted, and each keeps serving.
        """
        for target in (self.backend, self.proxy):
            answer = await exchange(target.port, data)
            responses = parseResponses(answer)
            self.assertEqual([r.status for r in responses], [status], (target.label, answer))
            self.assertEqual(responses[0].headers[b"content-type"], b"application/json")
            self.assertEqual(json.loads(responses[0].body)["error"], code, target.label)
            await self.assertUntouched(target)

    async def assertUntouched(self, target: Program) -> None:
        self.assertEqual(sorted(p.name for p in self.storage.iterdir() if p.name[0] != "."),
                         ["victim"], target.label)
        self.assertEqual((self.storage / "victim").read_bytes(), b"keep me")
        code, _, _ = await call("GET", target.url + "/healthz")
        self.assertEqual(code, 200, target.label)

    async def test_identityAlone(self) -> None:
        """The body of a Transfer-Encoding: identity request never runs as a request."""
        await self.start()
        await self.assertRefused(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"
            b"DELETE /files/victim HTTP/1.1\r\nHost: x\r\n\r\n"
        )

    async def test_chunkedThenIdentity(self) -> None:
        await self.start()
        await self.assertRefused(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )

    async def test_codingBeforeChunked(self) -> None:
        await self.start()
        await self.assertRefused(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            501, "not_implemented",
        )

    async def test_obsFold(self) -> None:
        await self.start()
        await self.assertRefused(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )
        await self.assertRefused(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n 3\r\n\r\nabc"
        )

    async def test_hugeChunkSize(self) -> None:
        await self.start()
        await self.assertRefused(
            b"PUT /files/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1000000000000000000\r\nabc"
        )

    async def test_bareLF(self) -> None:
        await self.start()
        await self.assertRefused(b"GET /healthz HTTP/1.1\nHost: x\n\n")
        await self.assertRefused(b"DELETE /files/victim HTTP/1.1\r\nHost: x\r\n\n")

    async def test_host(self) -> None:
        await self.start()
        await self.assertRefused(b"DELETE /files/victim HTTP/1.1\r\n\r\n")
        await self.assertRefused(b"DELETE /files/victim HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    async def test_validStillServed(self) -> None:
        """
        A keep-alive pipeline of a Content-Length upload, a chunked one (both
        with line feeds in their bodies) and an HTTP/1.1 GET, then an
        HTTP/1.0 GET without Host.
        """
        await self.start()
        for target in (self.backend, self.proxy):
            answer = await exchange(
                target.port,
                b"PUT /files/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\na\nb\n"
                b"PUT /files/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\n\n\n\r\n0\r\n\r\n"
                b"GET /files/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            responses = parseResponses(answer)
            self.assertEqual([r.status for r in responses], [201, 201, 200],
                             (target.label, answer))
            self.assertEqual(responses[2].body, b"a\nb\n", target.label)
            self.assertEqual((self.storage / "b").read_bytes(), b"\n\n")
            answer = await exchange(target.port, b"GET /files/b HTTP/1.0\r\n\r\n")
            [response] = parseResponses(answer)
            self.assertEqual((response.status, response.body), (200, b"\n\n"), target.label)
            (self.storage / "a").unlink()
            (self.storage / "b").unlink()
