"""
tus requests beyond the plain upload, end to end with the real programs on
127.0.0.1: tus-js-client's parallel (concatenated) uploads, and the status
line of a checksum refusal, direct and through the proxy.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.processes import (
    MiB,
    Program,
    call,
    curl,
    deferLater,
    run,
    sha256File,
    sharedFile,
    startStack,
)
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
        tus-js-client with C{parallelUploads: 3} and 5 MiB requests stores
        64 MiB through the proxy, intact (SHA-256); its partial uploads,
        carrying the name of a stored file, never replace it, nor appear in
        the listing, polled all along; the upload's URL gives the file.
        """
        client = await deferToThread(tusJSClient)
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        good, goodSHA = sharedFile(32 * MiB)
        code, output = await run(self, "curl", curl(
            "-T", str(good), "-w", "\n%{http_code}", f"{proxy.url}/files/photo.bin"))
        self.assertEqual((code, output.rsplit(b"\n", 1)[1]), (0, b"201"), output)

        source, sourceSHA = sharedFile(64 * MiB)
        uploading = Deferred.fromCoroutine(run(self, "tus-js-client", [
            shutil.which("node") or "node", str(CLIENTS / "tusjs_upload.js"), str(client),
            proxy.url + "/uploads/", str(source), "parallel.bin", "3", "photo.bin",
        ], timeout=240))
        expected = {"photo.bin": goodSHA, "parallel.bin": sourceSHA}
        polls = 0
        while not uploading.called or polls == 0:
            status, _, body = await call("GET", proxy.url + "/files")
            self.assertEqual(status, 200, body)
            listed = {f["name"]: f["sha256"] for f in json.loads(body)["files"]}
            self.assertIn("photo.bin", listed)
            for name, sha in listed.items():
                self.assertEqual(sha, expected.get(name), listed)
            polls += 1
            await deferLater(0.02)
        code, output = await uploading
        self.assertEqual(code, 0, output.decode())
        self.assertIn(b"DONE", output)

        self.assertEqual(sha256File(storage / "parallel.bin"), sourceSHA)
        self.assertEqual(sha256File(storage / "photo.bin"), goodSHA)
        code, listing = await run(self, "curl", curl(f"{proxy.url}/files"))
        files = json.loads(listing)["files"]
        self.assertEqual(sorted((f["name"], f["sha256"]) for f in files),
                         [("parallel.bin", sourceSHA), ("photo.bin", goodSHA)])
        # Three partial uploads, then one final upload of them, published once.
        self.assertEqual(backend.output.count(b" partial\n"), 3, backend.output[-3000:])
        [final] = re.findall(rb"final_of=(\S+)", backend.output)
        self.assertEqual(len(final.split(b",")), 3)
        self.assertEqual(backend.output.count(b"upload stored "), 2)
        # The final upload's URL, as tus clients' tests download it.
        [url] = re.findall(rb"^URL (\S+)$", output, re.MULTILINE)
        fetched = Path(self.mktemp())
        code, output = await run(self, "curl", curl("-o", str(fetched), "-w", "%{http_code}",
                                                    url.decode()))
        self.assertEqual((code, output), (0, b"200"))
        self.assertEqual(sha256File(fetched), sourceSHA)


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
