"""
HTTPS on both services, with a certificate the test makes.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.certificates import makeCertificate
from tests.processes import curl, run, startService


class TLSTests(TestCase):
    timeout = 60

    async def test_httpsEndToEnd(self) -> None:
        """
        curl → HTTPS proxy → HTTPS backend trusted through --backend-ca; a
        proxy that does not trust the backend's certificate answers 502.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        cert, key = makeCertificate(folder)
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        backend = await startService(
            self, "backend", "--storage", str(folder / "uploads"), listen=listen)
        backendURL = f"https://localhost:{backend.port}"
        proxy = await startService(
            self, "proxy", "--backend", backendURL, "--backend-ca", str(cert), listen=listen)
        source = folder / "hello.txt"
        source.write_bytes(b"over TLS, both ways")
        code, output = await run(self, "curl", curl(
            "--cacert", str(cert), "-T", str(source), "-w", "\n%{http_code}",
            f"https://localhost:{proxy.port}/files/hello.txt"))
        self.assertTrue(output.endswith(b"\n201"), output)
        self.assertEqual((folder / "uploads" / "hello.txt").read_bytes(), b"over TLS, both ways")
        code, output = await run(self, "curl", curl(
            "--cacert", str(cert), f"https://localhost:{proxy.port}/files/hello.txt"))
        self.assertEqual(output, b"over TLS, both ways")

        untrusting = await startService(self, "proxy", "--backend", backendURL)
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code}", f"{untrusting.url}/files/x.txt"))
        body, _, status = output.decode().rpartition("\n")
        self.assertEqual(status, "502", output)
        self.assertEqual(json.loads(body)["error"], "backend_unavailable")
