"""
tus requests from clients that expect more than streamrelay does: a
concatenation it does not support, a checksum refusal's status line, and
what a refused C{PATCH} may change.
"""

from __future__ import annotations

import base64
import hashlib
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store.s3.store import S3Store
from streamrelay.tus import protocol
from streamrelay.tus.protocol import TusUploads
from streamrelay.tus.s3 import S3ResumableStore
from streamrelay.webapp import appResource
from tests.backendcases import TusTestCase
from tests.httpfakes import Connection
from tests.rawrequests import OCTETS, TUS, meta, patch, req
from tests.s3fakes import FakeS3

CONCATS = (b"partial", b"final;/uploads/a /uploads/b", b"final; /uploads/a", b"", b"junk")


def checksum(algorithm: str, data: bytes) -> bytes:
    digest = hashlib.new(algorithm, data).digest()
    return b"Upload-Checksum: " + algorithm.encode() + b" " + base64.b64encode(digest)


class ConcatenationTests(TusTestCase):
    """
    Concatenation is not supported: a creation asking for it is refused,
    so no partial upload is ever created, let alone published under the
    name its metadata gives.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "f.bin").write_bytes(b"the good file")

    def kept(self) -> list[str]:
        """What the resumable store keeps."""
        tus = self.root / ".tus"
        return sorted(p.name for p in tus.iterdir()) if tus.exists() else []

    def assertRefused(self, *headers: bytes, body: bytes | None = None) -> None:
        response = self.request(req(b"POST", b"/uploads", TUS, *headers, body=body))
        self.assertEqual(response.status, 400, response.body)
        answer = json.loads(response.body)
        self.assertEqual(answer["error"], "bad_request")
        self.assertIn("concatenation is not supported", answer["message"])
        self.assertNotIn(b"location", response.headers)
        self.assertEqual(self.kept(), [])
        self.assertEqual(self.files(), ["f.bin"])
        self.assertEqual((self.root / "f.bin").read_bytes(), b"the good file")

    def test_partialRefused(self) -> None:
        """
        A partial upload carrying the name of a stored file (as
        tus-js-client's parallel uploads send) is refused at creation,
        whatever else it carries, and the stored file stays.
        """
        for value in CONCATS:
            self.assertRefused(b"Upload-Concat: " + value, b"Upload-Length: 4", meta("f.bin"))
            self.assertRefused(b"Upload-Concat: " + value, b"Upload-Defer-Length: 1",
                               meta("f.bin"))

    def test_partialWithUploadRefused(self) -> None:
        """A partial upload whose creation carries all its bytes stores none."""
        self.assertRefused(b"Upload-Concat: partial", b"Upload-Length: 4", meta("f.bin"),
                           OCTETS, body=b"frag")

    def test_finalRefused(self) -> None:
        """The final upload (no length, no metadata needed) is refused for what it is."""
        self.assertRefused(b"Upload-Concat: final;/uploads/a /uploads/b")
        self.assertRefused(b"Upload-Concat: final;/uploads/a", meta("f.bin"))

    def test_notAdvertised(self) -> None:
        response = self.request(req(b"OPTIONS", b"/uploads"))
        self.assertNotIn(b"concatenation", response.headers[b"tus-extension"])

    def test_plainCreationStillWorks(self) -> None:
        location = self.create("f.bin", 3)
        self.assertEqual(self.request(patch(location, 0, b"new")).status, 204)
        self.assertEqual((self.root / "f.bin").read_bytes(), b"new")


class S3ConcatenationTests(SynchronousTestCase):
    """With uploads kept in S3, a refused concatenation never reaches S3."""

    def test_partialRefused(self) -> None:
        s3 = FakeS3()
        store = S3Store(s3, "p/")  # type: ignore[arg-type]
        clock = Clock()
        tus = TusUploads(S3ResumableStore(store), store, clock)
        routes = BackendRoutes(store, tus=tus)
        for value in CONCATS:
            conn = Connection(appResource(routes.app), clock=clock)
            conn.send(req(b"POST", b"/uploads", TUS, b"Upload-Concat: " + value,
                          b"Upload-Length: 4", meta("f.bin"), OCTETS, body=b"frag"))
            conn.turn()
            [response] = conn.responses()
            self.assertEqual(response.status, 400, response.body)
            self.assertEqual(json.loads(response.body)["error"], "bad_request")
        self.assertEqual(s3.calls, [])


class ChecksumRefusalTests(TusTestCase):
    def refused(self) -> tuple[bytes, bytes]:
        """An upload with 3 bytes, and the answer to a PATCH failing its checksum."""
        location = self.create("k", 6)
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        self.clock.advance(1000)
        response = self.request(patch(location, 3, b"xyz", checksum("sha1", b"def")))
        self.assertError(response, 460, "checksum_mismatch")
        return location, response.raw

    def test_reasonPhrase(self) -> None:
        """460 goes out as C{460 Checksum Mismatch}, not an unknown status."""
        _, raw = self.refused()
        self.assertEqual(raw.split(b"\r\n", 1)[0], b"HTTP/1.1 460 Checksum Mismatch")

    def test_expiryNotExtended(self) -> None:
        """
        A PATCH refused for its checksum keeps nothing, so it is no write:
        the upload expires when it would have without it.
        """
        created = self.clock.seconds()
        location, _ = self.refused()
        head = self.head(location)
        self.assertEqual(head.headers[b"upload-expires"], protocol.httpDate(created + 3600))
        upload = self.successResultOf(self.resumable.load(location.decode().rsplit("/")[-1]))
        assert upload is not None
        self.assertEqual((upload.offset, upload.expires), (3, created + 3600))
        self.clock.advance(2600)
        self.assertError(self.head(location), 410, "gone")

    def test_keptBytesExtendExpiry(self) -> None:
        """A PATCH that keeps bytes moves the expiry to an hour after it."""
        location, _ = self.refused()
        response = self.request(patch(location, 3, b"de", checksum("sha256", b"de")))
        self.assertEqual(response.status, 204)
        self.assertEqual(response.headers[b"upload-expires"],
                         protocol.httpDate(self.clock.seconds() + 3600))
