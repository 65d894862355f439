"""
Resumable uploads (tus) end to end with the real programs on 127.0.0.1,
and with clients no one here wrote: tuspy and tus-js-client (under node).
Each is interrupted half-way and must resume sending only what the
backend does not have.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.processes import (
    BIN,
    MEMORY_BOUND,
    GiB,
    MiB,
    Program,
    curl,
    eventually,
    run,
    sha256File,
    sharedFile,
    spawn,
    startService,
    startStack,
)
from tests.tusenv import CLIENTS, Cutter, patches, tusJSClient


class ResumableTests(TestCase):
    timeout = 400

    def setUp(self) -> None:
        self.storage = Path(self.mktemp()) / "uploads"

    def assertStored(self, name: str, sha: str) -> None:
        self.assertEqual(sha256File(self.storage / name), sha)
        self.assertEqual(list((self.storage / ".tus").glob("*.part")), [])

    def assertResumedWithRest(self, size: int, *backends: Program) -> None:
        """
        The backends received every byte once: the PATCHes' received bytes
        add up to the size, and a later PATCH started where an earlier one
        was cut, sending the rest.
        """
        logged = patches(*backends)
        self.assertGreaterEqual(len(logged), 2, logged)
        self.assertEqual(sum(received for _, received, _, _ in logged), size, logged)
        self.assertEqual(sum(kept for _, _, kept, _ in logged), size, logged)
        resumed = [p for p in logged if p[0] > 0]
        self.assertTrue(resumed, logged)
        offset, received, _, outcome = resumed[-1]
        self.assertEqual((offset + received, outcome), (size, "ok"), logged)
        self.assertLess(offset, size)
        print(f"\nPATCHes (offset, received, kept, outcome): {logged}")

    async def restartBackend(self, backend: Program) -> Program:
        """SIGTERM the backend and start another on its port and storage."""
        backend.signal(15)
        await backend.protocol.ended
        return await startService(
            self, "backend", "--storage", str(self.storage),
            listen=f"tcp:{backend.port}:interface=127.0.0.1",
        )

    async def test_tuspyCutConnection(self) -> None:
        """
        tuspy uploads 64 MiB through the proxy; the network drops its
        connection half-way; it asks the offset and sends only the rest.
        """
        try:
            import tusclient  # noqa: F401
        except ImportError:
            raise SkipTest("tuspy is not installed (make install installs it)") from None
        source, sha = sharedFile(64 * MiB)
        backend, proxy = await startStack(self, self.storage)
        cutter = Cutter(proxy.port, 32 * MiB)
        self.addCleanup(cutter.listening.stopListening)
        code, output = await run(self, "tuspy", [
            sys.executable, str(CLIENTS / "tuspy_upload.py"), cutter.url + "/uploads/",
            str(source), "tuspy.bin",
        ])
        self.assertEqual(code, 0, output.decode())
        self.assertIn(b"DONE %d" % (64 * MiB,), output)
        self.assertTrue(cutter.done)
        self.assertStored("tuspy.bin", sha)
        self.assertResumedWithRest(64 * MiB, backend)

    async def test_tusJSClientBackendRestart(self) -> None:
        """
        tus-js-client (node) uploads 128 MiB through the proxy; the backend
        is restarted half-way; it resumes from the offset the new backend
        reports and sends only the rest.
        """
        client = await deferToThread(tusJSClient)
        source, sha = sharedFile(128 * MiB)
        backend, proxy = await startStack(
            self, self.storage, backendArgs=["--debug-write-rate", str(32 * MiB)]
        )
        node = spawn(self, "tus-js-client", [
            shutil.which("node") or "node", str(CLIENTS / "tusjs_upload.js"), str(client),
            proxy.url + "/uploads/", str(source), "node.bin",
        ])
        await node.protocol.waitFor(b"QUARTER")

        def partSize() -> int:
            return sum(p.stat().st_size for p in (self.storage / ".tus").glob("*.part"))

        self.assertTrue(await eventually(lambda: partSize() >= 16 * MiB, 20))
        second = await self.restartBackend(backend)
        await node.protocol.waitFor(b"DONE")
        self.assertStored("node.bin", sha)
        self.assertIn(b"outcome=taken_over", backend.output)
        self.assertResumedWithRest(128 * MiB, backend, second)

    async def test_uploaderBackendRestart(self) -> None:
        """
        streamrelay-upload --resumable rides out a backend restart and
        resends nothing the backend kept.
        """
        source, sha = sharedFile(128 * MiB)
        backend, proxy = await startStack(
            self, self.storage, backendArgs=["--debug-write-rate", str(32 * MiB)]
        )
        uploader = spawn(self, "uploader", [
            str(BIN / "streamrelay-upload"), "--resumable", "--url", proxy.url,
            "--name", "cli.bin", str(source),
        ])
        self.assertTrue(await eventually(
            lambda: (self.storage / ".tus").exists()
            and sum(p.stat().st_size for p in (self.storage / ".tus").glob("*.part"))
            >= 32 * MiB, 30))
        second = await self.restartBackend(backend)
        code = await uploader.protocol.ended
        self.assertEqual(code, 0, uploader.output.decode())
        self.assertIn(b"resuming cli.bin at byte", uploader.output)
        self.assertIn(f"sha256 {sha}".encode(), uploader.output)
        self.assertStored("cli.bin", sha)
        self.assertResumedWithRest(128 * MiB, backend, second)

    async def test_oneGiBMemory(self) -> None:
        """
        A 1 GiB resumable upload through the proxy: the stored bytes are
        the source's and neither service's memory grows by 32 MiB.
        """
        source, sha = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        idle = {p.label: p.rss() for p in (backend, proxy)}
        code, output = await run(self, "uploader", [
            str(BIN / "streamrelay-upload"), "--resumable", "--url", proxy.url,
            "--name", "big.bin", str(source),
        ], timeout=300)
        self.assertEqual(code, 0, output.decode())
        self.assertIn(f"sha256 {sha}".encode(), output)
        self.assertStored("big.bin", sha)
        for program in (backend, proxy):
            growth = program.peak() - idle[program.label]
            print(f"\n{program.label} peak RSS growth: {growth / MiB:.1f} MiB")
            self.assertLess(growth, MEMORY_BOUND, f"{program.label} grew {growth / MiB:.1f} MiB")


class ProtocolThroughProxyTests(TestCase):
    """The tus statuses with curl through the proxy: its headers pass both ways."""

    timeout = 120

    async def curl(self, *args: str) -> tuple[int, dict[str, str], str]:
        code, output = await run(self, "curl", curl("-i", *args))
        self.assertEqual(code, 0, output)
        text = output.decode("utf-8", "replace")
        while text.startswith("HTTP/1.1 100"):
            text = text.split("\r\n\r\n", 1)[1]
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body

    async def test_statuses(self) -> None:
        storage = Path(self.mktemp()) / "uploads"
        tokens = Path(self.mktemp())
        tokens.write_text("t0ken\n")
        backend, proxy = await startStack(
            self, storage,
            backendArgs=["--max-size", "1M"],
            proxyArgs=["--cors-origin", "https://app.example", "--tokens-file", str(tokens),
                       "--max-size", "1M"],
        )
        url = proxy.url + "/uploads/"
        tus = ["-H", "Tus-Resumable: 1.0.0", "-H", "Authorization: Bearer t0ken"]
        status, h, _ = await self.curl("-X", "OPTIONS", url)
        self.assertEqual((status, h["tus-version"], h["tus-max-size"]), (204, "1.0.0", "1048576"))
        status, h, _ = await self.curl(
            "-X", "OPTIONS", url, "-H", "Origin: https://app.example",
            "-H", "Access-Control-Request-Method: POST")
        self.assertEqual((status, h["access-control-allow-origin"]), (204, "https://app.example"))

        status, _, _ = await self.curl("-X", "POST", url, "-H", "Upload-Length: 5")
        self.assertEqual(status, 401)
        status, _, _ = await self.curl("-X", "POST", url, *tus, "-H", "Upload-Length: 2000000",
                                       "-H", "Upload-Metadata: filename YQ==")
        self.assertEqual(status, 413)
        status, h, _ = await self.curl("-X", "POST", url, *tus, "-H", "Upload-Length: 5",
                                       "-H", "Upload-Metadata: filename aGkudHh0",
                                       "-H", "Origin: https://app.example")
        self.assertEqual(status, 201)
        self.assertIn("Location", h["access-control-expose-headers"])
        location = proxy.url + h["location"]
        patch = ["-X", "PATCH", location, *tus,
                 "-H", "Content-Type: application/offset+octet-stream"]
        status, h, _ = await self.curl(*patch, "-H", "Upload-Offset: 0", "--data-binary", "he")
        self.assertEqual((status, h["upload-offset"]), (204, "2"))
        self.assertIn("GMT", h["upload-expires"])
        status, h, _ = await self.curl("-I", location, *tus)
        self.assertEqual((status, h["upload-offset"], h["upload-length"]), (200, "2", "5"))
        status, _, _ = await self.curl(*patch, "-H", "Upload-Offset: 0", "--data-binary", "x")
        self.assertEqual(status, 409)
        status, h, _ = await self.curl(
            "-X", "PATCH", location, "-H", "Authorization: Bearer t0ken",
            "-H", "Tus-Resumable: 0.9", "-H", "Content-Type: application/offset+octet-stream",
            "-H", "Upload-Offset: 2", "--data-binary", "x")
        self.assertEqual((status, h["tus-version"]), (412, "1.0.0"))
        status, _, _ = await self.curl("-X", "PATCH", location, *tus, "-H", "Upload-Offset: 2",
                                       "-H", "Content-Type: text/plain", "--data-binary", "x")
        self.assertEqual(status, 415)
        status, _, body = await self.curl(*patch, "-H", "Upload-Offset: 2",
                                          "-H", "Upload-Checksum: sha1 " + "A" * 27 + "=",
                                          "--data-binary", "llo")
        self.assertEqual((status, json.loads(body)["error"]), (460, "checksum_mismatch"))
        self.assertFalse((storage / "hi.txt").exists())
        status, _, _ = await self.curl(*patch, "-H", "Upload-Offset: 2", "--data-binary", "llo")
        self.assertEqual(status, 204)
        self.assertEqual((storage / "hi.txt").read_bytes(), b"hello")
        status, _, body = await self.curl(location, *tus, "-H", "Accept: application/json")
        self.assertEqual(json.loads(body)["file"]["name"], "hi.txt")
        # The finished upload's URL gives its file, as tusd's does.
        status, _, body = await self.curl(location, *tus)
        self.assertEqual((status, body), (200, "hello"))

        status, h, _ = await self.curl("-X", "POST", url, *tus, "-H", "Upload-Length: 5",
                                       "-H", "Upload-Metadata: filename Ynll")
        location = proxy.url + h["location"]
        status, _, _ = await self.curl("-X", "DELETE", location, *tus)
        self.assertEqual(status, 204)
        status, _, _ = await self.curl("-I", location, *tus)
        self.assertEqual(status, 404)
        # Only the finished upload's record is left, until it expires.
        self.assertEqual([Path(x).suffix for x in os.listdir(storage / ".tus")], [".json"])

        # With the backend gone, HEAD says "locked, retry" (tus clients would
        # otherwise start over), other requests 502.
        backend.signal(15)
        await backend.protocol.ended
        status, h, _ = await self.curl("-I", location, *tus)
        self.assertEqual((status, h["retry-after"]), (423, "1"))
        status, _, _ = await self.curl(*patch, "-H", "Upload-Offset: 5", "--data-binary", "x")
        self.assertEqual(status, 502)
