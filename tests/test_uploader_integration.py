"""
streamrelay-upload against the real proxy and backend: watching a folder,
and retrying while the backend is down.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.processes import BIN, Program, deferLater, eventually, spawn, startService, startStack


def storedCount(backend: Program, name: str) -> int:
    return backend.output.count(b"upload stored request_id=") and sum(
        1 for line in backend.output.splitlines()
        if b"upload stored" in line and f"name={name!r}".encode() in line
    )


class WatchTests(TestCase):
    timeout = 120

    async def test_watchSendsCompleteFilesOnce(self) -> None:
        """
        Files written slowly into the watched folder are sent once each,
        only when complete; a restarted uploader sends nothing again.
        """
        storage = Path(self.mktemp()) / "uploads"
        folder = Path(self.mktemp())
        folder.mkdir()
        backend, proxy = await startStack(self, storage)

        def uploader() -> Program:
            return spawn(self, "watcher", [
                str(BIN / "streamrelay-upload"), "--url", proxy.url, "--watch", str(folder),
                "--settle", "1.5",
            ])

        watcher = uploader()
        await watcher.protocol.waitFor(b"watching")
        chunk = os.urandom(256 * 1024)
        with open(folder / "slow-a.bin", "wb") as a, open(folder / "slow-b.bin", "wb") as b:
            for _ in range(8):
                a.write(chunk)
                a.flush()
                b.write(chunk[::-1])
                b.flush()
                await deferLater(0.4)
        expected = {"slow-a.bin": chunk * 8, "slow-b.bin": chunk[::-1] * 8}

        def allStored() -> bool:
            return all((storage / n).exists() for n in expected)

        self.assertTrue(await eventually(allStored, 20), watcher.output.decode())
        for name, content in expected.items():
            self.assertEqual((storage / name).read_bytes(), content)
            # The file is in place a moment before the backend's log line.
            self.assertTrue(
                await eventually(lambda n=name: storedCount(backend, n) >= 1, 5),  # type: ignore[misc]
                backend.output.decode(),
            )
            self.assertEqual(storedCount(backend, name), 1, backend.output.decode())

        watcher.signal(signal.SIGTERM)
        self.assertEqual(await watcher.protocol.ended, 0)
        again = uploader()
        await again.protocol.waitFor(b"watching")
        (folder / "later.txt").write_bytes(b"after the restart")
        self.assertTrue(await eventually(lambda: (storage / "later.txt").exists(), 20))
        # The uploader records a file once the proxy's answer reached it,
        # a moment after the file is in place.
        statePath = folder / ".streamrelay-state.json"

        def recorded() -> list[str]:
            return sorted(json.loads(statePath.read_text())) if statePath.exists() else []

        self.assertTrue(
            await eventually(lambda: "later.txt" in recorded(), 20), again.output.decode()
        )
        self.assertEqual(recorded(), ["later.txt", "slow-a.bin", "slow-b.bin"])
        for name in expected:
            self.assertEqual(storedCount(backend, name), 1, again.output.decode())


class RetryTests(TestCase):
    timeout = 120

    async def test_retriesUntilBackendIsBack(self) -> None:
        """
        With the backend down the uploader gets 502 and retries with
        backoff; once the backend is up again the file is stored.
        """
        storage = Path(self.mktemp()) / "uploads"
        first = await startService(self, "backend", "--storage", str(storage))
        port = first.port
        first.signal(signal.SIGTERM)
        await first.protocol.ended
        proxy = await startService(self, "proxy", "--backend", f"http://127.0.0.1:{port}")
        source = Path(self.mktemp())
        source.write_bytes(os.urandom(1 << 20))
        uploader = spawn(self, "uploader", [
            str(BIN / "streamrelay-upload"), "--url", proxy.url, "--retries", "6",
            "--json", str(source),
        ])
        await uploader.protocol.waitFor(b"retrying")
        self.assertIn(b"502", uploader.output)
        backend = await startService(
            self, "backend", "--storage", str(storage),
            listen=f"tcp:{port}:interface=127.0.0.1",
        )
        self.assertEqual(backend.port, port)
        code = await uploader.protocol.ended
        self.assertEqual(code, 0, uploader.output.decode())
        self.assertEqual((storage / source.name).read_bytes(), source.read_bytes())
        result = json.loads(uploader.output.decode().strip().splitlines()[-1])
        self.assertTrue(result["ok"])
