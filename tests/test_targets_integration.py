"""
Request targets that are not what they seem, sent over raw sockets to the
real backend and through the real proxy: each is refused with API.md's
JSON 400, or acts on exactly the file it names, and no other file is
touched.  Also: the proxy's own headers never push a request over the
backend's limits, and a stalled tus PATCH is told the truth.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.ipv6 import noIPv6
from tests.processes import Program, deferLater, startService, startStack
from tests.rawhttp import RawResponse, exchange

#: The files every test starts with, and their content.
KNOWN = {"victim": b"victim's bytes", "not-victim": b"other bytes", "frag": b"frag bytes"}


def request(method: bytes, target: bytes, body: bytes = b"", *headers: bytes) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    if body or method in (b"PUT", b"POST", b"PATCH"):
        lines.append(b"Content-Length: %d" % (len(body),))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class TargetTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.storage = Path(self.mktemp()) / "uploads"
        self.backend, self.proxy = await startStack(self, self.storage)
        for name, data in KNOWN.items():
            (self.storage / name).write_bytes(data)

    def stored(self) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in self.storage.iterdir()
            if p.is_file() and not p.name.startswith(".")
        }

    async def refused(self, service: Program, data: bytes) -> RawResponse:
        """C{data} is answered JSON 400 bad_request and nothing is touched."""
        response = await exchange(service.port, data)
        assert response is not None, (service.label, data)
        self.assertEqual(response.status, 400, (service.label, data, response))
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertEqual(response.json()["error"], "bad_request", (service.label, data))
        self.assertEqual(self.stored(), KNOWN, (service.label, data))
        return response

    async def test_fragmentNeverDropped(self) -> None:
        """
        A '#' in a target is refused: DELETE /files/victim#not-victim
        deletes neither, PUT /files/frag#.hidden stores nothing.
        """
        for service in (self.proxy, self.backend):
            await self.refused(service, request(b"DELETE", b"/files/victim#not-victim"))
            await self.refused(service, request(b"DELETE", b"/files/not-victim#"))
            await self.refused(service, request(b"PUT", b"/files/frag#.hidden", b"new"))
            await self.refused(service, request(b"PUT", b"/files/new?x=1#y", b"new"))
            await self.refused(service, request(b"GET", b"#files"))
            await self.refused(
                service,
                request(b"POST", b"#files", b"--b\r\nContent-Disposition: form-data; "
                        b'name="f"; filename="posted"\r\n\r\nnew\r\n--b--\r\n',
                        b"Content-Type: multipart/form-data; boundary=b"),
            )

    async def test_notOriginForm(self) -> None:
        """
        Targets that do not start with '/' are refused on both services:
        none lists, reads, stores or deletes anything, and the proxy never
        answers 500 or names another host.
        """
        for service in (self.proxy, self.backend):
            for target in [b"Xfiles", b"@files", b"files", b"Xfiles/victim", b"@files/victim",
                           b"?files", b"%2Ffiles", b"127.0.0.1:8081", b"\\files"]:
                for method in (b"GET", b"DELETE"):
                    response = await self.refused(service, request(method, target))
                    self.assertNotIn(b"victim", response.body)
                await self.refused(service, request(b"PUT", target, b"new"))

    async def test_absoluteForm(self) -> None:
        """
        An absolute target naming this server (its Host) is served as its
        path; one naming another host is refused.
        """
        for service in (self.proxy, self.backend):
            host = f"127.0.0.1:{service.port}".encode("ascii")
            response = await exchange(service.port, request(
                b"DELETE", b"http://" + host + b"/files/not-victim", b"", b"Host: " + host,
            ).replace(b"Host: 127.0.0.1\r\n", b""))
            assert response is not None
            self.assertEqual(response.status, 204, (service.label, response))
            self.assertNotIn("not-victim", self.stored())
            (self.storage / "not-victim").write_bytes(KNOWN["not-victim"])
            for target in [b"http://elsewhere/files/victim", b"http://user@127.0.0.1/files/victim",
                           b"ftp://127.0.0.1/files/victim"]:
                await self.refused(service, request(b"DELETE", target))

    async def test_asterisk(self) -> None:
        """
        OPTIONS * answers 200 with Allow and JSON; any other method with
        '*' is a JSON 400.
        """
        for service in (self.proxy, self.backend):
            response = await exchange(service.port, request(b"OPTIONS", b"*"))
            assert response is not None
            self.assertEqual(response.status, 200, service.label)
            self.assertEqual(response.headers[b"content-type"], b"application/json")
            self.assertIn(b"PUT", response.headers[b"allow"])
            self.assertIn("GET", response.json()["methods"])
            for method in (b"GET", b"HEAD", b"DELETE", b"PUT"):
                response = await exchange(service.port, request(method, b"*"))
                assert response is not None
                self.assertEqual(response.status, 400, (service.label, method))
                if method != b"HEAD":
                    self.assertEqual(response.json()["error"], "bad_request")
            self.assertEqual(self.stored(), KNOWN)

    async def test_keepsServing(self) -> None:
        """After a refused target the connection and the service still serve."""
        for service in (self.proxy, self.backend):
            response = await exchange(
                service.port, request(b"GET", b"Xfiles") + request(b"GET", b"/files/victim")
            )
            assert response is not None
            self.assertEqual(response.status, 400)
            response = await exchange(service.port, request(b"GET", b"/files/victim"))
            assert response is not None
            self.assertEqual((response.status, response.body), (200, KNOWN["victim"]))


class ProxyHeaderTests(TestCase):
    """
    A request within the proxy's limits never gets the backend's 431 for
    headers the proxy added: either it passes, or the proxy answers 431.
    """

    timeout = 120

    async def test_maxHeaderCount(self) -> None:
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        for count in (490, 495, 497, 498, 499, 500):
            # The Host line counts too: "count" header lines in all.
            headers = [b"X-H%d: v" % i for i in range(count - 2)]
            for method, target, body in [
                (b"GET", b"/files", b""), (b"PUT", b"/files/h%d" % count, b"data"),
            ]:
                response = await exchange(
                    proxy.port, request(method, target, body, *headers)
                )
                assert response is not None, count
                self.assertIn(response.status, (200, 201, 431), (count, response))
                if response.status == 431:
                    answer = response.json()
                    self.assertEqual(answer["error"], "headers_too_large")
                    self.assertIn("proxy", answer["message"], count)
            # The backend itself takes as many as the proxy lets through.
            response = await exchange(backend.port, request(b"GET", b"/files", b"", *headers))
            assert response is not None
            self.assertEqual(response.status, 200, count)

    async def test_maxHeaderSize(self) -> None:
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        for size in range(16000, 16400, 40):
            line = b"X-Big: " + b"v" * (size - 80)
            response = await exchange(proxy.port, request(b"PUT", b"/files/big", b"data", line))
            assert response is not None, size
            self.assertIn(response.status, (200, 201, 431), (size, response))
            if response.status == 431:
                self.assertIn("proxy", response.json()["message"], size)


class StalledPatchTests(TestCase):
    """The proxy's 408 for a stalled tus PATCH says what was kept."""

    timeout = 120

    async def test_stalledPatchKeepsItsBytes(self) -> None:
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(
            self, storage, backendArgs=["--idle-timeout", "30"],
            proxyArgs=["--idle-timeout", "1"],
        )
        created = await exchange(proxy.port, request(
            b"POST", b"/uploads/", b"", b"Tus-Resumable: 1.0.0", b"Upload-Length: 1000",
            b"Upload-Metadata: filename c3RhbGxlZA==",
        ))
        assert created is not None
        self.assertEqual(created.status, 201, created)
        location = created.headers[b"location"]
        # 600 of the 1000 bytes are sent, then the client stalls.
        head = request(
            b"PATCH", location, b"", b"Tus-Resumable: 1.0.0", b"Upload-Offset: 0",
            b"Content-Type: application/offset+octet-stream",
        ).replace(b"Content-Length: 0", b"Content-Length: 1000")
        response = await exchange(proxy.port, head + b"x" * 600)
        assert response is not None
        self.assertEqual(response.status, 408, response)
        message = response.json()["message"]
        self.assertNotIn("nothing was stored", message)
        self.assertIn("keeps", message)

        # The backend keeps what reached it, once the cut request ends there.
        offsets: list[int] = []
        for _ in range(400):
            answer = await exchange(proxy.port, request(
                b"HEAD", location, b"", b"Tus-Resumable: 1.0.0"))
            assert answer is not None
            offsets.append(int(answer.headers.get(b"upload-offset", b"-1")))
            if offsets[-1] == 600:
                break
            await deferLater(0.05)
        self.assertEqual(offsets[-1], 600, offsets)
        self.assertFalse((storage / "stalled").exists())



class IPv6BackendTests(TestCase):
    """A proxy whose backend is at an IPv6 literal address (C{http://[::1]:PORT})."""

    timeout = 60
    skip = noIPv6()

    async def test_forwards(self) -> None:
        """
        It starts, is ready once the backend answers, and forwards an
        upload and its download (hyperlink's IDNA step refused the host).
        """
        storage = Path(self.mktemp()) / "uploads"
        backend = await startService(
            self, "backend", "--storage", str(storage), listen="tcp6:0:interface=\\:\\:1"
        )
        proxy = await startService(self, "proxy", "--backend", f"http://[::1]:{backend.port}")
        ready = await exchange(proxy.port, request(b"GET", b"/readyz"))
        assert ready is not None
        self.assertEqual(ready.status, 200, ready)
        stored = await exchange(proxy.port, request(b"PUT", b"/files/six.bin", b"over ::1"))
        assert stored is not None
        self.assertEqual(stored.status, 201, stored)
        self.assertEqual((storage / "six.bin").read_bytes(), b"over ::1")
        got = await exchange(proxy.port, request(b"GET", b"/files/six.bin"))
        assert got is not None
        self.assertEqual((got.status, got.body), (200, b"over ::1"))
