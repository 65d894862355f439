"""
SHA-256 digests: the Digest header's form, and hashing a file's first bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from streamrelay.digests import hashFilePrefix, parseSHA256Digest, reprDigest


class DigestTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        sha = "ab" * 32
        value = reprDigest(sha).decode()
        self.assertEqual(parseSHA256Digest(value), sha)
        self.assertEqual(parseSHA256Digest("md5=:AAAA:, " + value), sha)
        self.assertIsNone(parseSHA256Digest("sha-512=:AAAA:"))
        self.assertRaises(ValueError, parseSHA256Digest, "sha-256=:AAAA:")


class FilePrefixTests(SynchronousTestCase):
    def test_prefixDigest(self) -> None:
        """The digest of the first bytes, one that goes on with the rest."""
        path = Path(self.mktemp())
        data = os.urandom(3 * (1 << 20) + 5)
        path.write_bytes(data)
        digest = hashFilePrefix(path, 2 * (1 << 20) + 1)
        digest.update(data[2 * (1 << 20) + 1:])
        self.assertEqual(digest.hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(hashFilePrefix(path, 0).hexdigest(), hashlib.sha256().hexdigest())

    def test_shorterFile(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(b"12345")
        error = self.assertRaises(OSError, hashFilePrefix, path, 6)
        self.assertEqual(error.errno, errno.EIO)
