"""
Signed upload URLs with the real programs on 127.0.0.1: a proxy with
--tokens-file and --grant-keys-file takes a URL streamrelay-sign printed,
refuses expired and tampered ones, follows a key rotation on SIGHUP, and
lets tuspy carry a resumable upload through with a grant alone.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from streamrelay.grants import signURL
from tests.grantkeys import SECRET1, SECRET2, writeKeys
from tests.processes import (
    BIN,
    MiB,
    Program,
    call,
    deferLater,
    eventually,
    run,
    sha256File,
    sharedFile,
    startStack,
)
from tests.tusenv import CLIENTS, Cutter, patches


class SignedURLTests(TestCase):
    timeout = 180

    async def start(self, keys: bytes | None = None) -> tuple[Path, Path, Program, Program]:
        self.storage = Path(self.mktemp()) / "uploads"
        keysFile = writeKeys(Path(self.mktemp()), *(() if keys is None else (keys,)))
        tokens = Path(self.mktemp())
        tokens.write_text("app t0ken\n")
        backend, proxy = await startStack(
            self, self.storage, backendArgs=["--shared-secret", "s3cret"],
            proxyArgs=["--tokens-file", str(tokens), "--grant-keys-file", str(keysFile),
                       "--shared-secret", "s3cret"],
        )
        return self.storage, keysFile, backend, proxy

    async def sign(self, keysFile: Path, *args: str) -> str:
        code, output = await run(self, "sign", [
            str(BIN / "streamrelay-sign"), "--keys-file", str(keysFile), *args,
        ])
        self.assertEqual(code, 0, output)
        return output.decode().strip()

    async def test_signedPut(self) -> None:
        """
        A URL from streamrelay-sign stores its file without a token; expired,
        tampered, over-size and unsigned requests are refused, nothing stored.
        """
        storage, keysFile, _, proxy = await self.start()
        url = await self.sign(keysFile, "--key-id", "k1", "--method", "PUT",
                              "--expires-in", "3600", "--max-size", "10",
                              proxy.url + "/files/report 2026.txt")
        self.assertIn("/files/report%202026.txt?", url)
        status, _, body = await call("PUT", url, b"hello")
        self.assertEqual(status, 201, body)
        self.assertEqual(json.loads(body)["name"], "report 2026.txt")
        self.assertEqual((storage / "report 2026.txt").read_bytes(), b"hello")

        refusals = [
            (signURL(proxy.url + "/files/old.txt", "k1", SECRET1, "PUT",
                     expires=int(time.time()) - 5), 403, "grant_expired"),
            (url.replace("report%202026", "other"), 403, "grant_invalid"),
            (url.replace("sr-key=k1", "sr-key=k2"), 403, "grant_invalid"),
            (proxy.url + "/files/plain.txt", 401, "unauthorized"),
        ]
        for target, code, error in refusals:
            status, _, body = await call("PUT", target, b"x")
            self.assertEqual((status, json.loads(body)["error"]), (code, error), target)
        status, _, body = await call("PUT", url, b"more than ten bytes")
        self.assertEqual((status, json.loads(body)["error"]), (413, "too_large"))
        status, _, body = await call("GET", url)  # signed for PUT only
        self.assertEqual((status, json.loads(body)["error"]), (403, "grant_invalid"))
        self.assertEqual(sorted(p.name for p in storage.iterdir() if not p.name.startswith(".")),
                         ["report 2026.txt"])
        self.assertEqual((storage / "report 2026.txt").read_bytes(), b"hello")
        self.assertNotIn(SECRET1, proxy.output)
        # The access log names the request, never a usable signature.
        signature = url.rsplit("sr-signature=", 1)[1].split("&")[0].encode()
        self.assertTrue(await eventually(lambda: b"report%202026.txt" in proxy.output, 10))
        self.assertNotIn(signature, proxy.output)
        self.assertIn(b"sr-signature=-", proxy.output)

    async def test_rotation(self) -> None:
        """
        SIGHUP reloads the keys file: a new key is taken, a removed one
        refused; an unreadable file keeps the keys there were.
        """
        _, keysFile, _, proxy = await self.start(b"k1 " + SECRET1 + b"\n")
        old = signURL(proxy.url + "/files/none", "k1", SECRET1, "GET", expiresIn=3600)
        new = signURL(proxy.url + "/files/none", "k2", SECRET2, "GET", expiresIn=3600)

        async def status(url: str) -> int:
            return (await call("GET", url))[0]

        self.assertEqual((await status(old), await status(new)), (404, 403))
        keysFile.write_bytes(b"# rotated\nk2 " + SECRET2 + b"\n")
        proxy.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while await status(new) != 404:
            self.assertLess(time.monotonic(), deadline, "the new key was never taken")
            await deferLater(0.1)
        self.assertEqual(await status(old), 403)
        await proxy.protocol.waitFor(b"reloaded 1 grant key(s)")

        keysFile.write_bytes(b"k3 tooshort\n")
        proxy.signal(signal.SIGHUP)
        await proxy.protocol.waitFor(b"cannot reload grant keys")
        self.assertEqual(await status(new), 404)
        self.assertNotIn(SECRET2, proxy.output)

    async def test_tuspyResumes(self) -> None:
        """
        tuspy uploads 8 MiB with a signed creation URL and no token; the
        network drops half-way; it asks the offset and sends the rest at the
        signed Location the proxy gave.
        """
        try:
            import tusclient  # noqa: F401
        except ImportError:
            raise SkipTest("tuspy is not installed (make install installs it)") from None
        source, sha = sharedFile(8 * MiB)
        storage, _, backend, proxy = await self.start()
        cutter = Cutter(proxy.port, 4 * MiB)
        self.addCleanup(cutter.listening.stopListening)
        endpoint = signURL(cutter.url + "/uploads/", "k2", SECRET2, "POST", expiresIn=600,
                           maxSize=8 * MiB)
        code, output = await run(self, "tuspy", [
            sys.executable, str(CLIENTS / "tuspy_upload.py"), endpoint, str(source), "signed.bin",
        ])
        self.assertEqual(code, 0, output.decode())
        self.assertIn(b"DONE %d" % (8 * MiB,), output)
        self.assertIn(b"sr-signature=", output)  # the upload's URL, as the proxy signed it
        self.assertTrue(cutter.done)
        self.assertEqual(sha256File(storage / "signed.bin"), sha)
        resumed = [p for p in patches(backend) if p[0] > 0]
        self.assertTrue(resumed, patches(backend))

        tooBig = signURL(proxy.url + "/uploads/", "k2", SECRET2, "POST", expiresIn=600,
                         maxSize=MiB)
        code, output = await run(self, "tuspy", [
            sys.executable, str(CLIENTS / "tuspy_upload.py"), tooBig, str(source), "big.bin",
        ])
        self.assertNotEqual(code, 0)
        self.assertIn(b"413", output)
        self.assertFalse((storage / "big.bin").exists())
