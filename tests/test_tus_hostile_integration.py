"""
tus requests streamrelay refuses, end to end with the real programs on
127.0.0.1: tus-js-client's parallel (concatenated) uploads, and the status
line of a checksum refusal, direct and through the proxy.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.processes import MiB, Program, curl, run, sha256File, sharedFile, startStack
from tests.rawhttp import exchange
from tests.tusenv import CLIENTS, tusJSClient


def request(method: bytes, path: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Tus-Resumable: 1.0.0",
             *headers, b"Content-Length: %d" % (len(body),), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ConcatenationTests(TestCase):
    timeout = 300

    async def test_tusJSClientParallelUploads(self) -> None:
        """
        tus-js-client with C{parallelUploads: 2}, its partial uploads
        carrying the name of a stored 32 MiB file, gets an error; the
        stored file is intact and nothing else appears, in the listing or
        among the kept uploads.
        """
        client = await deferToThread(tusJSClient)
        storage = Path(self.mktemp()) / "uploads"
        _, proxy = await startStack(self, storage)
        good, goodSHA = sharedFile(32 * MiB)
        code, output = await run(self, "curl", curl(
            "-T", str(good), "-w", "\n%{http_code}", f"{proxy.url}/files/photo.bin"))
        self.assertEqual((code, output.rsplit(b"\n", 1)[1]), (0, b"201"), output)

        fragment, _ = sharedFile(22 * MiB)
        code, output = await run(self, "tus-js-client", [
            shutil.which("node") or "node", str(CLIENTS / "tusjs_upload.js"), str(client),
            proxy.url + "/uploads/", str(fragment), "photo.bin", "2",
        ])
        self.assertEqual(code, 1, output.decode())
        self.assertIn(b"ERROR ", output)

        self.assertEqual(sha256File(storage / "photo.bin"), goodSHA)
        code, listed = await run(self, "curl", curl(f"{proxy.url}/files"))
        files = json.loads(listed)["files"]
        self.assertEqual([(f["name"], f["sha256"]) for f in files], [("photo.bin", goodSHA)])
        kept = storage / ".tus"
        self.assertEqual(list(kept.iterdir()) if kept.exists() else [], [])
        # The client was told why, by the backend.
        self.assertIn(b"response code: 400", output)
        self.assertIn(b"concatenation is not supported", output)


class ChecksumStatusLineTests(TestCase):
    timeout = 120

    async def refusal(self, program: Program) -> bytes:
        """The status line answering a PATCH that fails its checksum, on C{program}."""
        name = base64.b64encode(b"sum.bin")
        created = await exchange(program.port, request(
            b"POST", b"/uploads/", b"Upload-Length: 3", b"Upload-Metadata: filename " + name))
        assert created is not None
        self.assertEqual(created.status, 201, created.body)
        answer = await exchange(program.port, request(
            b"PATCH", created.headers[b"location"],
            b"Content-Type: application/offset+octet-stream",
            b"Upload-Offset: 0", b"Upload-Checksum: sha1 " + b"A" * 27 + b"=", body=b"abc"))
        assert answer is not None
        self.assertEqual(answer.json()["error"], "checksum_mismatch")
        return answer.line

    async def test_reasonPhrase(self) -> None:
        """460 goes out as C{460 Checksum Mismatch} from the backend and the proxy."""
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        for program in (backend, proxy):
            self.assertEqual(await self.refusal(program), b"HTTP/1.1 460 Checksum Mismatch")
        self.assertFalse((storage / "sum.bin").exists())
