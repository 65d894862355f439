"""
tus requests streamrelay refuses, end to end with the real programs on
127.0.0.1: tus-js-client's parallel (concatenated) uploads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.processes import run, sha256File, startStack
from tests.test_tus_integration import CLIENTS, tusJSClient
from tests.test_upload_path import MiB, curl, sharedFile


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
            shutil.which("node") or "node", str(CLIENTS / "tusjs_parallel.js"), str(client),
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
