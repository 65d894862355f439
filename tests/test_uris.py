"""
URLs given to treq in URI form (L{streamrelay.uris}), and the treq-based
clients that use them against real programs and servers on C{::1}: the
uploader (plain and resumable) and the S3 client.  hyperlink's IDNA step,
which treq runs on every URL it gets, refuses an IPv6 literal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperlink import EncodedURL
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamrelay.uris import URIForm, uriOf
from tests.hashing import sha
from tests.ipv6 import noIPv6
from tests.processes import BIN, run, startService


class URIFormTests(SynchronousTestCase):
    def test_hosts(self) -> None:
        """
        An IPv6 literal stays as it is, a name with "_" is kept, a name is
        lowercased, an international one IDNA-encoded; the path is escaped
        as hyperlink escapes it.
        """
        for text, expected in [
            ("http://[::1]:9000/b/k%20x", "http://[::1]:9000/b/k%20x"),
            ("http://My_Service:8081/files/a", "http://my_service:8081/files/a"),
            ("https://B\xe4ckend.example/caf\xe9 x?q=\xe9", "https://xn--bckend-bua.example/caf%C3%A9%20x?q=%C3%A9"),
        ]:
            url = uriOf(text)
            self.assertIsInstance(url, URIForm)
            self.assertIs(url.to_uri(), url)
            self.assertEqual(url.to_text(), expected)

    def test_sameAsHyperlink(self) -> None:
        """For a host hyperlink takes, the text is what its own conversion gives."""
        for text in ["http://127.0.0.1:8081/files/a%2Fb?x=%FF&y=1+2", "http://h/%zz%?%",
                     "https://Example.ORG/\u00e9t\u00e9/x y/?a=b c"]:
            self.assertEqual(uriOf(text).to_text(), EncodedURL.from_text(text).to_uri().to_text())

    def test_fromTextConverted(self) -> None:
        """URIForm.from_text makes a converted URL, as uriOf does."""
        url = URIForm.from_text("http://h/caf\xe9 x")
        self.assertIsInstance(url, URIForm)
        self.assertEqual(url.to_text(), "http://h/caf%C3%A9%20x")

    def test_changedCopyConverted(self) -> None:
        url = uriOf("http://[::1]:1/a").child("caf\xe9")
        self.assertNotIsInstance(url, URIForm)

    def test_refused(self) -> None:
        for bad in ["http://a..b/", "http://a b/", "http://[::1"]:
            self.assertRaises(ValueError, uriOf, bad)


class _NotFound(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[bytes] = []

    def render(self, request: Any) -> bytes:
        self.asked.append(request.method + b" " + request.uri)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/xml")
        return b"<Error><Code>NoSuchKey</Code><Message>no</Message></Error>"


class IPv6ClientTests(TestCase):
    timeout = 60
    skip = noIPv6()

    async def test_s3Endpoint(self) -> None:
        """The S3 client asks an endpoint at an IPv6 literal (it failed in treq)."""
        from streamrelay.store.s3.config import checkS3Options, makeS3Store

        server = _NotFound()
        site: Any = Site(server)
        port: Any = reactor.listenTCP(0, site, interface="::1")
        self.addCleanup(port.stopListening)
        settings = checkS3Options({
            "storage": "s3://bucket/p", "s3-endpoint": f"http://[::1]:{port.getHost().port}",
            "s3-region": None, "s3-part-size": "5M", "s3-parts-in-flight": "3",
            "s3-payload-hash": "auto", "s3-timeout": "60",
            "s3-access-key": "ak", "s3-secret-key": "sk",
        })
        store = makeS3Store(settings, reactor)
        client: Any = store.client
        self.addCleanup(client.http._agent._pool.closeCachedConnections)
        self.assertIsNone(await store.client.head("p/missing"))
        self.assertEqual(server.asked, [b"HEAD /bucket/p/missing"])

    async def test_uploader(self) -> None:
        """streamrelay-upload, plain and resumable, to a proxy and backend on ::1."""
        storage = Path(self.mktemp()) / "uploads"
        six = "tcp6:0:interface=\\:\\:1"
        backend = await startService(self, "backend", "--storage", str(storage), listen=six)
        proxy = await startService(
            self, "proxy", "--backend", f"http://[::1]:{backend.port}", listen=six
        )
        source = Path(self.mktemp())
        data = b"sent over ::1\n" * 1000
        source.write_bytes(data)
        for name, extra in [("plain.txt", []), ("tus.txt", ["--resumable"])]:
            code, output = await run(self, "uploader", [
                str(BIN / "streamrelay-upload"), *extra, "--url", f"http://[::1]:{proxy.port}",
                "--name", name, str(source),
            ])
            self.assertEqual(code, 0, output.decode())
            self.assertEqual(sha((storage / name).read_bytes()), sha(data))
