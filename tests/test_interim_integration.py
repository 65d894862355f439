"""
Interim responses through the real proxy: a stand-in backend
(L{tests.interimbackend}) answers each PUT with a 104 as soon as its head
is in and with 201 once its body is; raw-socket clients read what the
proxy relays.
"""

from __future__ import annotations

import socket

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.interimbackend import InterimBackend
from tests.processes import reactor, startService
from tests.rawhttp import RawResponse, ResponseReader

BODY = b"hello, resumable world"


def head(*extra: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    lines = [b"PUT /files/a.bin " + version, b"Host: 127.0.0.1",
             b"Content-Length: %d" % (len(BODY),), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def uploadNow(
    port: int, head: bytes, before: int
) -> tuple[list[RawResponse], list[RawResponse]]:
    """
    Send C{head}, read C{before} responses, only then send the body, and
    read the responses up to the final one.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        reader = ResponseReader(sock)
        first = [reader.next() for _ in range(before)]
        sock.sendall(BODY)
        return first, reader.untilFinal()


def upload(port: int, head: bytes, before: int) -> Deferred[
    tuple[list[RawResponse], list[RawResponse]]
]:
    return deferToThread(uploadNow, port, head, before)


class InterimThroughProxyTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.backend = InterimBackend()
        port = self.backend.listen(reactor)
        self.addCleanup(port.stopListening)
        backendURL = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        self.proxy = await startService(self, "proxy", "--backend", backendURL)

    def assertResumable(self, response: RawResponse) -> None:
        """The backend's 104, as the proxy relays it."""
        self.assertEqual(response.line, b"HTTP/1.1 104 Upload Resumption Supported")
        self.assertEqual(response.headers, {
            b"location": b"/uploads/abc", b"upload-draft-interop-version": b"6",
        })

    def assertStored(self, final: list[RawResponse]) -> None:
        self.assertEqual([r.status for r in final], [201])
        self.assertEqual(final[0].json(), {"name": "a.bin", "size": len(BODY)})
        self.assertEqual(self.backend.bodies, [BODY])

    async def test_relayedBeforeBody(self) -> None:
        """
        The 104 reaches the client while the backend still waits for the
        body (which the client sends only once it has the 104), with its
        Location; the 201 follows.
        """
        first, final = await upload(self.proxy.port, head(), 1)
        self.assertResumable(first[0])
        self.assertStored(final)

    async def test_expectContinue(self) -> None:
        """
        A client that asks for C{100 Continue} gets it once, from the proxy
        (the backend is not asked), then the 104, then the 201.
        """
        first, final = await upload(self.proxy.port, head(b"Expect: 100-continue"), 2)
        self.assertEqual(first[0].line, b"HTTP/1.1 100 Continue")
        self.assertResumable(first[1])
        self.assertStored(final)
        [backendHead] = self.backend.heads
        self.assertNotIn(b"expect:", backendHead.lower())

    async def test_http10(self) -> None:
        """An HTTP/1.0 client gets no 104, only the final answer."""
        first, final = await upload(self.proxy.port, head(version=b"HTTP/1.0"), 0)
        self.assertEqual(first, [])
        self.assertStored(final)
