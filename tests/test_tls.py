"""
HTTPS on both services, with a certificate the test makes.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import TestCase

from tests.processes import curl, run, startService


def makeCertificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certFile, keyFile = folder / "cert.pem", folder / "key.pem"
    certFile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyFile.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return certFile, keyFile


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
