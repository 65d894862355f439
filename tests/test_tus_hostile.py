"""
tus requests from clients that expect more than streamrelay does: a
checksum refusal's status line, and what a refused C{PATCH} may change.
(Concatenation, once refused here, is tested in L{tests.test_tus_concat}.)
"""

from __future__ import annotations

import base64
import hashlib

from streamrelay.tus import protocol
from tests.backendcases import TusTestCase
from tests.rawrequests import patch


def checksum(algorithm: str, data: bytes) -> bytes:
    digest = hashlib.new(algorithm, data).digest()
    return b"Upload-Checksum: " + algorithm.encode() + b" " + base64.b64encode(digest)


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
