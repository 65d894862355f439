"""
The backend's routes over a real disk store, through in-memory HTTP.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store.disk import DiskStore
from tests.backendcases import BackendTestCase, answerToFailedWrite, failWritesAfterFirst
from tests.hashing import sha
from tests.httpfakes import Response
from tests.partialfiles import leftInPartial
from tests.rawrequests import chunk, chunkedHead, put


def contentDigest(data: bytes) -> bytes:
    return b"Content-Digest: sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()) + b":"


class PutTests(BackendTestCase):
    def test_created(self) -> None:
        response = self.request(put(b"/files/hello.txt", b"hello"))
        self.assertEqual(response.status, 201)
        answer = json.loads(response.body)
        self.assertEqual(
            (answer["name"], answer["size"], answer["sha256"]),
            ("hello.txt", 5, sha(b"hello")),
        )
        self.assertRegex(answer["modified"], r"Z$")
        self.assertEqual(response.headers[b"location"], b"/files/hello.txt")
        self.assertEqual(response.headers[b"etag"], b'"%s"' % sha(b"hello").encode())
        self.assertEqual(
            response.headers[b"repr-digest"],
            b"sha-256=:" + base64.b64encode(hashlib.sha256(b"hello").digest()) + b":",
        )
        self.assertEqual((self.root / "hello.txt").read_bytes(), b"hello")

    def test_replaced(self) -> None:
        self.request(put(b"/files/a", b"one"))
        response = self.request(put(b"/files/a", b"two"))
        self.assertEqual(response.status, 200)
        self.assertEqual((self.root / "a").read_bytes(), b"two")

    def test_unicodeName(self) -> None:
        response = self.request(put(b"/files/caf%C3%A9%20menu.txt", b"x"))
        self.assertEqual(response.status, 201)
        self.assertEqual(json.loads(response.body)["name"], "café menu.txt")
        self.assertEqual(response.headers[b"location"], b"/files/caf%C3%A9%20menu.txt")
        self.assertTrue((self.root / "café menu.txt").exists())

    def test_chunked(self) -> None:
        conn = self.connect()
        conn.send(chunkedHead(b"/files/c") + chunk(b"abc"))
        conn.turn()
        conn.send(chunk(b"def") + b"0\r\n\r\n")
        [response] = conn.responses()
        self.assertEqual(json.loads(response.body)["size"], 6)
        self.assertEqual((self.root / "c").read_bytes(), b"abcdef")

    def test_emptyBody(self) -> None:
        response = self.request(put(b"/files/empty", b""))
        self.assertEqual(response.status, 201)
        self.assertEqual(json.loads(response.body)["sha256"], sha(b""))
        self.assertEqual((self.root / "empty").read_bytes(), b"")

    def test_notVisibleUntilComplete(self) -> None:
        body = b"x" * 10_000
        conn = self.connect()
        conn.send(put(b"/files/p", body)[:-50])
        conn.turn()
        self.assertFalse((self.root / "p").exists())
        [partial] = leftInPartial(self.store)
        # Written so far: all that came, or (direct I/O) its whole blocks.
        self.assertIn(partial.stat().st_size, (8192, 9950))
        conn.send(b"x" * 50)
        self.assertEqual((self.root / "p").read_bytes(), body)
        self.assertEqual(leftInPartial(self.store), [])

    def test_clientGoneLeavesNothing(self) -> None:
        conn = self.connect()
        conn.send(put(b"/files/p", b"x" * 100)[:-50])
        conn.turn()
        conn.channel.connectionLost(Failure(ConnectionDone()))
        self.assertNothingStored()
        # and the backend serves the next one
        self.assertEqual(self.request(put(b"/files/q", b"x")).status, 201)

    def test_ontoFolder(self) -> None:
        """
        A name that is a folder in the storage answers 409 conflict, at once,
        and nothing is stored; the folder stays.
        """
        (self.root / "dir").mkdir()
        for headers in [(), (b"If-None-Match: *",)]:
            response = self.request(put(b"/files/dir", b"data", *headers))
            self.assertError(response, 409, "conflict")
            self.assertTrue((self.root / "dir").is_dir())
            self.assertEqual(leftInPartial(self.store), [])

    def test_folderMadeDuringUpload(self) -> None:
        """A folder made at the name while the body streams: 409, nothing kept."""
        conn = self.connect()
        conn.send(put(b"/files/late", b"x" * 100)[:-50])
        conn.turn()
        (self.root / "late").mkdir()
        conn.send(b"x" * 50)
        [response] = conn.responses()
        self.assertError(response, 409, "conflict")
        self.assertTrue((self.root / "late").is_dir())
        self.assertEqual(leftInPartial(self.store), [])
        self.assertEqual(self.request(put(b"/files/q", b"x")).status, 201)

    def test_requestIdEchoed(self) -> None:
        response = self.request(put(b"/files/a", b"x", b"X-Request-Id: abc-123"))
        self.assertEqual(response.headers[b"x-request-id"], b"abc-123")


class BadNameTests(BackendTestCase):
    names = [
        b"..", b".", b".hidden", b".partial", b"a%2Fb", b"a%2fb", b"a%5Cb", b"a\\b",
        b"a%00b", b"a%0Ab", b"a%7Fb", b"%C3%28", b"%2E%2E", b"x" * 256,
        b"%C3%A9" * 128,
    ]

    def test_badNames(self) -> None:
        for name in self.names:
            response = self.request(put(b"/files/" + name, b"data"))
            self.assertError(response, 400, "bad_name")
        self.assertNothingStored()

    def test_nestedPath(self) -> None:
        self.assertError(self.request(put(b"/files/a/b", b"data")), 400, "bad_name")
        self.assertNothingStored()

    def test_longestName(self) -> None:
        self.assertEqual(self.request(put(b"/files/" + b"x" * 255, b"d")).status, 201)


class IntegrityTests(BackendTestCase):
    def test_digestMatches(self) -> None:
        response = self.request(put(b"/files/d", b"data", contentDigest(b"data")))
        self.assertEqual(response.status, 201)

    def test_digestMismatchKeepsOldVersion(self) -> None:
        self.request(put(b"/files/d", b"old"))
        response = self.request(put(b"/files/d", b"new", contentDigest(b"other")))
        self.assertError(response, 400, "digest_mismatch")
        self.assertEqual((self.root / "d").read_bytes(), b"old")
        self.assertEqual(leftInPartial(self.store), [])

    def test_malformedDigest(self) -> None:
        response = self.request(put(b"/files/d", b"data", b"Content-Digest: sha-256=:nope:"))
        self.assertError(response, 400, "bad_request")
        self.assertNothingStored()

    def test_ifNoneMatchStar(self) -> None:
        self.assertEqual(self.request(put(b"/files/n", b"1", b"If-None-Match: *")).status, 201)
        response = self.request(put(b"/files/n", b"2", b"If-None-Match: *"))
        self.assertError(response, 412, "exists")
        self.assertEqual((self.root / "n").read_bytes(), b"1")


class LimitTests(BackendTestCase):
    maxSize = 10

    def test_contentLengthOverLimit(self) -> None:
        conn = self.connect()
        conn.send(put(b"/files/big", b"x" * 11)[:-11])
        conn.turn()
        [response] = conn.responses()
        self.assertError(response, 413, "too_large")
        self.assertNothingStored()

    def test_chunkedOverLimit(self) -> None:
        conn = self.connect()
        conn.send(chunkedHead(b"/files/big") + chunk(b"x" * 6))
        conn.turn()
        conn.send(chunk(b"x" * 6))
        [response] = conn.responses()
        self.assertError(response, 413, "too_large")
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertNothingStored()

    def test_atLimit(self) -> None:
        self.assertEqual(self.request(put(b"/files/ok", b"x" * 10)).status, 201)


class DiskFullTests(BackendTestCase):
    def test_enospc(self) -> None:
        """A full disk answers 507 and leaves nothing behind."""
        failWritesAfterFirst(self)
        request = put(b"/files/f", b"x" * 3 * 8192)
        response = answerToFailedWrite(self.connect(), request, 2 * 8192, 8192)
        self.assertError(response, 507, "insufficient_storage")
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertNothingStored()


class DiskFullBufferedTests(DiskFullTests):
    """The same, with files written through the page cache."""

    def setUp(self) -> None:
        super().setUp()
        self.store = DiskStore(self.root, direct=False)
        self.routes = BackendRoutes(self.store, maxSize=self.maxSize)


class ReadOnlyStorageTests(BackendTestCase):
    """
    Storage that refuses writes (a disk remounted read-only after errors,
    a folder the service may not write) answers 503 C{storage_unavailable},
    to try again later, and leaves nothing behind.
    """

    def assertUnavailable(self, response: Response) -> None:
        self.assertError(response, 503, "storage_unavailable")
        self.assertEqual(response.headers[b"retry-after"], b"5")
        self.assertIn("Read-only file system", json.loads(response.body)["message"])
        self.assertNothingStored()

    def test_refusedMidUpload(self) -> None:
        failWritesAfterFirst(self, errno.EROFS)
        request = put(b"/files/f", b"x" * 3 * 8192)
        self.assertUnavailable(answerToFailedWrite(self.connect(), request, 2 * 8192, 8192))

    def test_refusedAtStart(self) -> None:
        """The upload's file cannot even be made; the next upload can."""
        original = os.open
        refusing = [True]

        def readOnly(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if refusing and flags & os.O_CREAT:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return original(path, flags, *args, **kwargs)

        self.patch(os, "open", readOnly)
        self.assertUnavailable(self.request(put(b"/files/f", b"x" * 10)))
        refusing.clear()
        self.assertEqual(self.request(put(b"/files/f", b"x" * 10)).status, 201)
        self.assertEqual((self.root / "f").read_bytes(), b"x" * 10)


class OtherRouteTests(BackendTestCase):
    def test_notFound(self) -> None:
        self.assertError(self.request(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), 404, "not_found")

    def test_methodNotAllowed(self) -> None:
        response = self.request(b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers[b"allow"], b"GET, HEAD")

    def test_healthz(self) -> None:
        response = self.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((response.status, json.loads(response.body)), (200, {"status": "ok"}))

    def test_readyz(self) -> None:
        response = self.request(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(response.status, 200)
        self.patch(self.store, "writable", lambda: False)
        response = self.request(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(response.status, 503)
