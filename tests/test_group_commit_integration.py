"""
The group commit with the real programs on 127.0.0.1: many small uploads
at once through the proxy, each stored intact under its own name and
answered, the backend's syncs shared between them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.processes import call, curl, partials, run, startStack

#: Uploads, and how many go at once (as the benchmark's W3 does).
COUNT = 200
PARALLEL = 64


class ConcurrentSmallUploadsTests(TestCase):
    timeout = 240

    async def test_manySmallUploadsAtOnce(self) -> None:
        """
        200 files of different sizes and bytes, 64 at a time through the
        proxy: each answered 201 with its own SHA-256, each stored under its
        own name with exactly its bytes, nothing left in C{.partial/}; and
        the backend synced them in fewer rounds than files.
        """
        storage = Path(self.mktemp()) / "uploads"
        sources = Path(self.mktemp())
        sources.mkdir(parents=True)
        expected: dict[str, str] = {}
        for i in range(COUNT):
            data = os.urandom(1 + (i * 7919) % (1 << 20))
            (sources / f"s{i}.bin").write_bytes(data)
            expected[f"s{i}.bin"] = hashlib.sha256(data).hexdigest()
        backend, proxy = await startStack(self, storage)
        answers = Path(self.mktemp())
        answers.mkdir()
        lines = ["parallel", f"parallel-max = {PARALLEL}", 'write-out = "%{http_code}\\n"']
        for name in expected:
            lines += [f'upload-file = "{sources / name}"', f'output = "{answers / name}.json"',
                      f'url = "{proxy.url}/files/{name}"']
        config = Path(self.mktemp())
        config.write_text("\n".join(lines) + "\n")
        code, output = await run(self, "curl", curl("--config", str(config)))
        self.assertEqual(code, 0, output)
        # (curl's parallel mode may print its progress meter too.)
        statuses = re.findall(r"^\d{3}$", output.decode(), re.M)
        self.assertEqual(statuses, ["201"] * COUNT, output)
        for name, sha in expected.items():
            answer = json.loads((answers / f"{name}.json").read_bytes())
            self.assertEqual((answer["name"], answer["sha256"]), (name, sha))
            self.assertEqual(hashlib.sha256((storage / name).read_bytes()).hexdigest(), sha)
        self.assertEqual(partials(storage), [])
        status, _, body = await call("GET", f"{backend.url}/metrics")
        self.assertEqual(status, 200)
        counts = {
            m.group(1): float(m.group(2))
            for m in re.finditer(
                rb"^streamrelay_group_commit_(rounds|files)_total\{[^}]*\} (\S+)$", body, re.M
            )
        }
        self.assertEqual(counts[b"files"], COUNT, body)
        self.assertLess(counts[b"rounds"], COUNT, body)
        print(f"\n{COUNT} uploads at once ({PARALLEL} at a time): "
              f"{counts[b'rounds']:.0f} rounds of syncs")
