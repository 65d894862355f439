"""
Hooks as an application sees them, through the real proxy: a PUT, a form
of two files, a tus upload (tuspy) and a DELETE, from a client holding a
named token, and a signed PUT holding no token.  Each gives its
pre-create and post-finish / post-delete events with the stored size and
SHA-256, the client's identity, address and own Authorization header, and
a signature that verifies with the secret.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from streamrelay.grants import signURL
from streamrelay.hooks.signature import verify
from tests.grantkeys import SECRET1, writeKeys
from tests.hookreceiver import accepted, startReceiver
from tests.processes import MiB, call, eventually, run, sha256File, sharedFile, startStack
from tests.tusenv import CLIENTS

HOOK_SECRET = b"hook-secret"
TOKEN = "t0ken-of-ana"


class HooksThroughProxyTests(TestCase):
    timeout = 180

    async def test_eventsThroughProxy(self) -> None:
        try:
            import tusclient  # noqa: F401
        except ImportError:
            raise SkipTest("tuspy is not installed (make install installs it)") from None
        record = Path(self.mktemp())
        receiver = await startReceiver(self, record)
        secretFile = Path(self.mktemp())
        secretFile.write_bytes(HOOK_SECRET + b"\n")
        tokens = Path(self.mktemp())
        tokens.write_text(f"ana {TOKEN}\n")
        keys = writeKeys(Path(self.mktemp()))
        storage = Path(self.mktemp()) / "uploads"
        _, proxy = await startStack(
            self, storage,
            backendArgs=["--shared-secret", "s3cret",
                         "--hook-url", f"http://127.0.0.1:{receiver.port}/hook",
                         "--hook-secret-file", str(secretFile)],
            proxyArgs=["--shared-secret", "s3cret", "--tokens-file", str(tokens),
                       "--grant-keys-file", str(keys)],
        )
        auth: dict[bytes | str, bytes | str] = {
            "Authorization": f"Bearer {TOKEN}", "Cookie": "session=42",
        }

        put = b"put through the proxy\n" * 5000
        code, _, body = await call("PUT", proxy.url + "/files/put.txt", put, auth)
        self.assertEqual(code, 201, body)

        form = (
            b"--XX\r\nContent-Disposition: form-data; name=a; filename=\"one.txt\"\r\n\r\n"
            b"first file\r\n--XX\r\nContent-Disposition: form-data; name=b; "
            b"filename=\"two.txt\"\r\n\r\nsecond file!\r\n--XX--\r\n"
        )
        formHeaders = dict(auth)
        formHeaders["Content-Type"] = "multipart/form-data; boundary=XX"
        code, _, body = await call("POST", proxy.url + "/files", form, formHeaders)
        self.assertEqual(code, 201, body)

        source, sha = sharedFile(3 * MiB)
        exit, output = await run(self, "tuspy", [
            sys.executable, str(CLIENTS / "tuspy_upload.py"), proxy.url + "/uploads/",
            str(source), "tus.bin", TOKEN,
        ])
        self.assertEqual(exit, 0, output.decode())
        self.assertEqual(sha256File(storage / "tus.bin"), sha)

        code, _, body = await call("DELETE", proxy.url + "/files/put.txt", None, auth)
        self.assertEqual(code, 204, body)

        signed = signURL(proxy.url + "/files/signed.txt", "k1", SECRET1, "PUT", expiresIn=600)
        code, _, body = await call("PUT", signed, b"granted")
        self.assertEqual(code, 201, body)

        expected = {
            ("pre-create", "put.txt"), ("post-finish", "put.txt"),
            ("pre-create", "one.txt"), ("post-finish", "one.txt"),
            ("pre-create", "two.txt"), ("post-finish", "two.txt"),
            ("pre-create", "tus.bin"), ("post-finish", "tus.bin"),
            ("post-delete", "put.txt"),
            ("pre-create", "signed.txt"), ("post-finish", "signed.txt"),
        }

        def seen() -> set[tuple[str, str]]:
            return {(d.event["type"], d.event["file"]["name"]) for d in accepted(record)}

        self.assertTrue(await eventually(lambda: seen() >= expected, 60),
                        sorted(expected - seen()))
        events: dict[tuple[str, str], dict[str, Any]] = {}
        for delivery in accepted(record):
            self.assertTrue(verify(HOOK_SECRET, delivery.signature, delivery.body), delivery)
            self.assertFalse(verify(b"not the secret", delivery.signature, delivery.body))
            events[(delivery.event["type"], delivery.event["file"]["name"])] = delivery.event

        def finished(name: str, content: bytes | None, size: int, digest: str) -> None:
            file = events[("post-finish", name)]["file"]
            self.assertEqual(file["size"], size, name)
            self.assertEqual(file["sha256"],
                             hashlib.sha256(content).hexdigest() if content else digest, name)

        finished("put.txt", put, len(put), "")
        finished("one.txt", b"first file", 10, "")
        finished("two.txt", b"second file!", 12, "")
        finished("tus.bin", None, 3 * MiB, sha)
        finished("signed.txt", b"granted", 7, "")
        self.assertEqual(events[("pre-create", "put.txt")]["file"]["size"], len(put))
        self.assertEqual(events[("pre-create", "tus.bin")]["file"]["size"], 3 * MiB)

        protocols = {
            "put.txt": "put", "one.txt": "form", "two.txt": "form", "tus.bin": "tus",
            "signed.txt": "put",
        }
        for (kind, name), event in events.items():
            request = event["request"]
            self.assertEqual(request["remote"], "127.0.0.1", (kind, name))
            if kind != "post-delete":
                self.assertEqual(request["protocol"], protocols[name], (kind, name))
            if name == "signed.txt":
                self.assertEqual(request["identity"], "grant:k1")
                self.assertEqual(request["headers"], {})
            else:
                self.assertEqual(request["identity"], "token:ana", (kind, name))
                # The client's own Authorization, not the proxy's shared secret.
                self.assertEqual(request["headers"]["Authorization"], f"Bearer {TOKEN}")
                if name != "tus.bin":
                    self.assertEqual(request["headers"]["Cookie"], "session=42")
