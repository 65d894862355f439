"""
The tus protocol on the backend's routes, over a real disk store and a
real resumable store, through in-memory HTTP.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os

from twisted.internet.defer import Deferred, fail
from zope.interface.verify import verifyObject

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store.placing import SHA256_XATTR
from streamrelay.tus import protocol, writing
from streamrelay.tus.disk import DiskResumableStore
from streamrelay.tus.headers import parseMetadata
from streamrelay.tus.interfaces import IPartialWriter, IResumableStore
from streamrelay.tus.protocol import TusUploads
from streamrelay.tus.service import TusService
from tests.backendcases import TusTestCase, answerToFailedWrite, failWritesAfterFirst
from tests.partialfiles import leftInPartial
from tests.rawrequests import JSON, OCTETS, TUS, meta, patch, req


class OptionsTests(TusTestCase):
    maxSize = 1 << 30

    def test_options(self) -> None:
        """OPTIONS says what is supported, without Tus-Resumable needed."""
        response = self.request(req(b"OPTIONS", b"/uploads"))
        self.assertEqual(response.status, 204)
        self.assertEqual(response.headers[b"tus-version"], b"1.0.0")
        self.assertEqual(response.headers[b"tus-resumable"], b"1.0.0")
        self.assertEqual(
            set(response.headers[b"tus-extension"].split(b",")),
            {b"creation", b"creation-with-upload", b"creation-defer-length",
             b"termination", b"checksum", b"expiration", b"concatenation"},
        )
        self.assertEqual(response.headers[b"tus-max-size"], b"%d" % (1 << 30,))
        self.assertEqual(response.headers[b"tus-checksum-algorithm"], b"sha1,sha256")

    def test_optionsWithoutSecret(self) -> None:
        """A backend with a shared secret answers OPTIONS to anyone, not POST."""
        self.routes.secret = b"s3cret"
        self.assertEqual(self.request(req(b"OPTIONS", b"/uploads/")).status, 204)
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 1", meta("a")))
        self.assertError(response, 401, "unauthorized")

    def test_noTusConfigured(self) -> None:
        self.routes.tus = None
        self.assertError(self.request(req(b"OPTIONS", b"/uploads")), 404, "not_found")


class CoreTests(TusTestCase):
    def test_createPatchHead(self) -> None:
        """
        An upload in two PATCHes: HEAD reports each offset; nothing is
        under /files until the last byte, then the file has the same JSON
        and sha256 as a plain upload.
        """
        location = self.create("hello.txt", 11)
        response = self.head(location)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers[b"upload-offset"], b"0")
        self.assertEqual(response.headers[b"upload-length"], b"11")
        self.assertEqual(response.headers[b"tus-resumable"], b"1.0.0")
        self.assertEqual(response.headers[b"cache-control"], b"no-store")
        self.assertIn(b"filename", response.headers[b"upload-metadata"])

        response = self.request(patch(location, 0, b"hello "))
        self.assertEqual(response.status, 204)
        self.assertEqual(response.headers[b"upload-offset"], b"6")
        self.assertIn(b"GMT", response.headers[b"upload-expires"])
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"6")
        self.assertEqual(self.files(), [])

        response = self.request(patch(location, 6, b"world"))
        self.assertEqual(response.status, 204)
        self.assertEqual(response.headers[b"upload-offset"], b"11")
        self.assertEqual(response.headers[b"content-location"], b"/files/hello.txt")
        self.assertEqual((self.root / "hello.txt").read_bytes(), b"hello world")
        sha = hashlib.sha256(b"hello world").hexdigest()
        self.assertEqual(os.getxattr(self.root / "hello.txt", SHA256_XATTR).decode(), sha)

        listing = json.loads(self.request(req(b"GET", b"/files")).body)
        [info] = listing["files"]
        self.assertEqual((info["name"], info["size"], info["sha256"]), ("hello.txt", 11, sha))
        answer = json.loads(self.request(req(b"GET", location, JSON)).body)
        self.assertEqual(answer["file"]["sha256"], sha)
        self.assertEqual(answer["file"]["replaced"], False)
        self.assertEqual(answer["offset"], 11)
        # Finished: no partial bytes left
        self.assertEqual(list((self.root / ".tus").glob("*.part")), [])

    def test_replaces(self) -> None:
        (self.root / "a").write_bytes(b"old")
        location = self.create("a", 3)
        self.request(patch(location, 0, b"new"))
        self.assertEqual((self.root / "a").read_bytes(), b"new")
        self.assertTrue(
            json.loads(self.request(req(b"GET", location, JSON)).body)["file"]["replaced"]
        )

    def test_offsetMismatch(self) -> None:
        """409 when Upload-Offset is not the upload's; nothing written."""
        location = self.create()
        self.request(patch(location, 0, b"abc"))
        response = self.request(patch(location, 2, b"xyz"))
        self.assertError(response, 409, "offset_mismatch")
        self.assertEqual(response.headers[b"upload-offset"], b"3")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"3")

    def test_unsupportedVersion(self) -> None:
        """412, with Tus-Version, for a missing or other Tus-Resumable."""
        location = self.create()
        for version in (b"", b"Tus-Resumable: 0.2.2"):
            headers = [h for h in (version,) if h]
            for data in (
                req(b"POST", b"/uploads", *headers, b"Upload-Length: 1", meta("a")),
                req(b"HEAD", location, *headers),
                req(b"PATCH", location, *headers, OCTETS, b"Upload-Offset: 0", body=b"x"),
                req(b"DELETE", location, *headers),
            ):
                response = self.request(data)
                self.assertError(response, 412, "unsupported_version")
                self.assertEqual(response.headers[b"tus-version"], b"1.0.0")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"0")

    def test_wrongContentType(self) -> None:
        """415 for a PATCH that is not application/offset+octet-stream."""
        location = self.create()
        response = self.request(req(
            b"PATCH", location, TUS, b"Content-Type: application/octet-stream",
            b"Upload-Offset: 0", body=b"abc"))
        self.assertError(response, 415, "unsupported_media_type")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"0")

    def test_missingOffset(self) -> None:
        location = self.create()
        response = self.request(req(b"PATCH", location, TUS, OCTETS, body=b"abc"))
        self.assertError(response, 400, "bad_request")

    def test_unknownUpload(self) -> None:
        for path in (b"/uploads/" + b"0" * 32, b"/uploads/nothex", b"/uploads/..%2Fx"):
            self.assertError(self.head(path), 404)
            self.assertError(self.request(patch(path, 0, b"x")), 404)

    def test_tooMuch(self) -> None:
        """A body past Upload-Length: 413 and nothing kept."""
        location = self.create(length=4)
        response = self.request(patch(location, 0, b"12345"))
        self.assertError(response, 413, "too_large")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"0")

    def test_emptyUpload(self) -> None:
        """An upload of length 0 is a file as soon as it is created."""
        location = self.create("empty", 0)
        self.assertEqual((self.root / "empty").read_bytes(), b"")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"0")

    def test_requestIdEchoed(self) -> None:
        response = self.request(req(b"OPTIONS", b"/uploads"))
        location = self.create()
        response = self.request(patch(location, 0, b"x", b"X-Request-Id: r-1"))
        self.assertEqual(response.headers[b"x-request-id"], b"r-1")


class CreationTests(TusTestCase):
    maxSize = 100

    def test_creationWithUpload(self) -> None:
        """POST with a body: created, and the body is its first bytes."""
        location = self.create("c.txt", 6, body=b"abc")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"3")
        response = self.request(patch(location, 3, b"def"))
        self.assertEqual(response.status, 204)
        self.assertEqual((self.root / "c.txt").read_bytes(), b"abcdef")

    def test_creationWithWholeUpload(self) -> None:
        self.create("w.txt", 3, body=b"abc")
        self.assertEqual((self.root / "w.txt").read_bytes(), b"abc")

    def test_creationWithUploadWrongType(self) -> None:
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 3", meta("x"),
                                    b"Content-Type: text/plain", body=b"abc"))
        self.assertError(response, 415)
        self.assertEqual(self.successResultOf(self.resumable.ids()), [])

    def test_deferLength(self) -> None:
        """creation-defer-length: the length comes with a later PATCH."""
        location = self.create("d.txt", None)
        response = self.head(location)
        self.assertEqual(response.headers[b"upload-defer-length"], b"1")
        self.assertNotIn(b"upload-length", response.headers)
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        self.assertEqual(self.files(), [])
        response = self.request(patch(location, 3, b"de", b"Upload-Length: 5"))
        self.assertEqual(response.status, 204)
        self.assertEqual(response.headers[b"upload-length"], b"5")
        self.assertEqual((self.root / "d.txt").read_bytes(), b"abcde")

    def test_deferLengthChangeRefused(self) -> None:
        location = self.create("d.txt", 5)
        response = self.request(patch(location, 0, b"ab", b"Upload-Length: 6"))
        self.assertError(response, 400, "bad_request")

    def test_lengthRequired(self) -> None:
        for headers in ([], [b"Upload-Defer-Length: 2"],
                        [b"Upload-Defer-Length: 1", b"Upload-Length: 3"],
                        [b"Upload-Length: -1"], [b"Upload-Length: x"]):
            response = self.request(req(b"POST", b"/uploads", TUS, meta("a"), *headers))
            self.assertError(response, 400, "bad_request")
        self.assertEqual(self.successResultOf(self.resumable.ids()), [])

    def test_overMaxSize(self) -> None:
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 101", meta("a")))
        self.assertError(response, 413, "too_large")
        location = self.create("d", None)
        response = self.request(patch(location, 0, b"x", b"Upload-Length: 101"))
        self.assertError(response, 413, "too_large")

    def test_badNames(self) -> None:
        """Upload-Metadata's filename follows the rules of /files names."""
        for name in ("..", ".hidden", "a/b", "a\x00b", "x" * 256):
            response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 1",
                                        meta(name)))
            self.assertError(response, 400, "bad_name")
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 1"))
        self.assertError(response, 400, "bad_name")
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 1",
                                    b"Upload-Metadata: filename %%%"))
        self.assertError(response, 400, "bad_request")
        self.assertEqual(self.successResultOf(self.resumable.ids()), [])

    def test_parseMetadata(self) -> None:
        self.assertEqual(parseMetadata("a YQ==,b,c  "), {"a": b"a", "b": b"", "c": b""})
        self.assertEqual(parseMetadata(""), {})
        for bad in ("a YQ==,a YQ==", "a b c", "a !!", ","):
            self.assertRaises(ValueError, parseMetadata, bad)


class ChecksumTests(TusTestCase):
    def checksum(self, algorithm: str, data: bytes) -> bytes:
        digest = hashlib.new(algorithm, data).digest()
        return b"Upload-Checksum: " + algorithm.encode() + b" " + base64.b64encode(digest)

    def test_matches(self) -> None:
        location = self.create("k", 6)
        for offset, data, algorithm in ((0, b"abc", "sha1"), (3, b"def", "sha256")):
            response = self.request(patch(location, offset, data, self.checksum(algorithm, data)))
            self.assertEqual(response.status, 204)
        self.assertEqual((self.root / "k").read_bytes(), b"abcdef")

    def test_mismatchDiscardsChunk(self) -> None:
        """460: the chunk is discarded, and the upload goes on from before it."""
        location = self.create("k", 6)
        self.request(patch(location, 0, b"abc"))
        response = self.request(patch(location, 3, b"xyz", self.checksum("sha1", b"def")))
        self.assertError(response, 460, "checksum_mismatch")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"3")
        self.assertEqual(self.request(patch(location, 3, b"def")).status, 204)
        self.assertEqual((self.root / "k").read_bytes(), b"abcdef")
        info = json.loads(self.request(req(b"GET", b"/files")).body)["files"][0]
        self.assertEqual(info["sha256"], hashlib.sha256(b"abcdef").hexdigest())

    def test_unsupportedAlgorithm(self) -> None:
        location = self.create("k", 3)
        response = self.request(patch(location, 0, b"abc", b"Upload-Checksum: md5 AAAA"))
        self.assertError(response, 400, "bad_request")
        response = self.request(patch(location, 0, b"abc", b"Upload-Checksum: sha1"))
        self.assertError(response, 400, "bad_request")


class TerminationTests(TusTestCase):
    def test_delete(self) -> None:
        location = self.create("t", 10)
        self.request(patch(location, 0, b"abc"))
        response = self.request(req(b"DELETE", location, TUS))
        self.assertEqual(response.status, 204)
        self.assertError(self.head(location), 404)
        self.assertError(self.request(req(b"DELETE", location, TUS)), 404)
        self.assertEqual(os.listdir(self.root / ".tus"), [])
        self.assertEqual(self.files(), [])


class ExpirationTests(TusTestCase):
    def test_expiresAndIsSwept(self) -> None:
        """
        Upload-Expires is an HTTP date an hour after the last write; past
        it the upload is 410 Gone, and the sweep removes it.
        """
        location = self.create("e", 10)
        self.clock.advance(1000)
        response = self.request(patch(location, 0, b"abc"))
        self.assertEqual(
            response.headers[b"upload-expires"], protocol.httpDate(self.clock.seconds() + 3600)
        )
        self.clock.advance(3599)
        self.assertEqual(self.head(location).status, 200)
        other = self.create("kept", 10)
        self.clock.advance(2)
        self.assertError(self.head(location), 410, "gone")
        self.assertError(self.request(patch(location, 3, b"d")), 410, "gone")
        self.assertEqual(self.successResultOf(self.tus.sweep()), 1)
        self.assertError(self.head(location), 404)
        self.assertEqual(self.head(other).status, 200)
        self.assertEqual([p.name.split(".")[0] for p in (self.root / ".tus").iterdir()],
                         [other.decode().rsplit("/", 1)[1]] * 2)

    def test_serviceSweepsPeriodically(self) -> None:
        self.create("e", 10)
        service = TusService(self.tus, self.clock, interval=60)
        service.startService()
        self.assertEqual(len(self.successResultOf(self.resumable.ids())), 1)
        self.clock.advance(3601)
        self.assertEqual(self.successResultOf(self.resumable.ids()), [])
        service.stopService()

    def test_sweepGoesOnAfterAFailure(self) -> None:
        """A sweep that fails (the storage away meanwhile) is logged, and
        the next one runs all the same."""
        self.create("e", 10)
        ids = self.resumable.ids
        failing = [True]

        def flakyIds() -> Deferred[list[str]]:
            if failing:
                failing.pop()
                return fail(OSError(errno.EIO, "Input/output error"))
            return ids()

        self.patch(self.resumable, "ids", flakyIds)
        service = TusService(self.tus, self.clock, interval=60)
        service.startService()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(3601)
        self.assertEqual(self.successResultOf(ids()), [])
        service.stopService()


class InterruptionTests(TusTestCase):
    def test_cutKeepsBytes(self) -> None:
        """A PATCH cut off mid-way keeps what arrived; HEAD reports it."""
        location = self.create("cut", 10)
        conn = self.connect()
        conn.send(patch(location, 0, b"0123456789")[:-6])
        conn.turn()
        conn.lose()
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"4")
        self.assertEqual(self.files(), [])
        self.assertEqual(self.request(patch(location, 4, b"456789")).status, 204)
        self.assertEqual((self.root / "cut").read_bytes(), b"0123456789")
        info = json.loads(self.request(req(b"GET", b"/files")).body)["files"][0]
        self.assertEqual(info["sha256"], hashlib.sha256(b"0123456789").hexdigest())

    def test_cutWithChecksumKeepsNothing(self) -> None:
        location = self.create("cut", 10)
        conn = self.connect()
        digest = base64.b64encode(hashlib.sha1(b"0123456789").digest())
        conn.send(patch(location, 0, b"0123456789", b"Upload-Checksum: sha1 " + digest)[:-6])
        conn.turn()
        conn.lose()
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"0")

    def test_secondPatchTakesOver(self) -> None:
        """
        A PATCH arriving while another streams into the same upload stops
        it: the first keeps what it got and is answered 423; the second
        goes on from there, and the bytes never interleave.
        """
        location = self.create("two", 10)
        first = self.connect()
        first.send(patch(location, 0, b"0123456789")[:-6])
        first.turn()
        second = self.connect()
        second.send(patch(location, 0, b"abcdefghij"))
        second.turn()
        [answer] = first.responses()
        self.assertError(answer, 423, "locked")
        [answer] = second.responses()
        self.assertError(answer, 409, "offset_mismatch")
        self.assertEqual(answer.headers[b"upload-offset"], b"4")
        first.send(b"456789")  # too late: dropped
        third = self.request(patch(location, 4, b"ABCDEF"))
        self.assertEqual(third.status, 204)
        self.assertEqual((self.root / "two").read_bytes(), b"0123ABCDEF")

    def test_restartKeepsState(self) -> None:
        """A new backend over the same folder resumes where the old one was."""
        location = self.create("r", 6)
        self.request(patch(location, 0, b"abc"))
        resumable = DiskResumableStore(self.root / ".tus", self.store)
        self.tus = TusUploads(resumable, self.store, self.clock)
        self.routes = BackendRoutes(self.store, tus=self.tus)
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"3")
        self.assertEqual(self.request(patch(location, 3, b"def")).status, 204)
        info = json.loads(self.request(req(b"GET", b"/files")).body)["files"][0]
        self.assertEqual(info["sha256"], hashlib.sha256(b"abcdef").hexdigest())

    def test_bytesPastStateDropped(self) -> None:
        """After a crash, bytes the state does not count are not trusted."""
        location = self.create("r", 6)
        self.request(patch(location, 0, b"abc"))
        uploadId = location.decode().rsplit("/", 1)[1]
        with open(self.root / ".tus" / f"{uploadId}.part", "ab") as f:
            f.write(b"garbage")
        resumable = DiskResumableStore(self.root / ".tus", self.store)
        self.tus = TusUploads(resumable, self.store, self.clock)
        self.routes = BackendRoutes(self.store, tus=self.tus)
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"3")
        self.assertEqual(self.request(patch(location, 3, b"def")).status, 204)
        self.assertEqual((self.root / "r").read_bytes(), b"abcdef")

    def test_stopKeepsBytesAndRefuses(self) -> None:
        """Stopping the service stops writing requests; their bytes are kept."""
        location = self.create("s", 10)
        conn = self.connect()
        conn.send(patch(location, 0, b"0123456789")[:-4])
        conn.turn()
        stopped = self.tus.stop()
        self.successResultOf(stopped)
        [answer] = conn.responses()
        self.assertError(answer, 503, "busy")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"6")
        self.assertError(self.request(patch(location, 6, b"6789")), 503, "busy")


class CopyPublishTests(TusTestCase):
    """Publishing by copying through the store's begin/commit (S3 and others)."""

    rename = False

    def test_copied(self) -> None:
        location = self.create("copied", 6)
        self.request(patch(location, 0, b"abc"))
        self.request(patch(location, 3, b"def"))
        self.assertEqual((self.root / "copied").read_bytes(), b"abcdef")
        self.assertEqual(list((self.root / ".tus").glob("*.part")), [])
        self.assertEqual(leftInPartial(self.store), [])
        info = json.loads(self.request(req(b"GET", b"/files")).body)["files"][0]
        self.assertEqual(info["sha256"], hashlib.sha256(b"abcdef").hexdigest())


class InterfaceTests(TusTestCase):
    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(IResumableStore, self.resumable))
        location = self.create("i", 3)
        upload = self.successResultOf(self.resumable.load(location.decode().rsplit("/")[-1]))
        assert upload is not None
        writer = self.successResultOf(self.resumable.openWriter(upload))
        self.assertTrue(verifyObject(IPartialWriter, writer))
        writer.close()


class DurabilityTests(TusTestCase):
    def stateOffset(self, location: bytes) -> int:
        uploadId = location.decode().rsplit("/", 1)[1]
        return int(json.loads((self.root / ".tus" / f"{uploadId}.json").read_text())["offset"])

    def test_checkpointsWithinLongPatch(self) -> None:
        """
        A long PATCH moves the recorded offset forward as it goes, so a
        crash mid-request loses at most the last stretch.
        """
        self.patch(writing, "CHECKPOINT_EVERY", 4)
        location = self.create("long", 20)
        conn = self.connect()
        conn.send(patch(location, 0, b"x" * 20)[:-10])
        conn.turn()
        self.assertGreaterEqual(self.stateOffset(location), 8)
        self.assertEqual(self.head(location).headers[b"upload-offset"],
                         b"%d" % (self.stateOffset(location),))
        conn.send(b"x" * 10)
        self.assertEqual(self.stateOffset(location), 20)
        self.assertEqual((self.root / "long").read_bytes(), b"x" * 20)

    def test_checkpointSyncsFirst(self) -> None:
        """
        The offset a checkpoint records is never ahead of what the part
        file has synced to disk.
        """
        self.patch(writing, "CHECKPOINT_EVERY", 4)
        synced: list[int] = []
        realSync = os.fdatasync

        def fdatasync(fd: int) -> None:
            realSync(fd)
            synced.append(os.fstat(fd).st_size)

        self.patch(os, "fdatasync", fdatasync)
        location = self.create("synced", 20)
        conn = self.connect()
        conn.send(patch(location, 0, b"x" * 20)[:-10])
        conn.turn()
        recorded = self.stateOffset(location)
        self.assertGreaterEqual(recorded, 8)
        self.assertGreaterEqual(max(synced, default=0), recorded)
        conn.send(b"x" * 10)
        self.assertEqual((self.stateOffset(location), max(synced)), (20, 20))

    def test_failedFinishRetried(self) -> None:
        """
        When publishing the complete upload fails (disk full), the PATCH
        says so; the next HEAD publishes it before answering.
        """
        from streamrelay.store import StorageFull

        location = self.create("full", 3)
        real = self.resumable.publish
        calls: list[int] = []

        def failOnce(*args: object) -> object:
            calls.append(1)
            if len(calls) == 1:
                from twisted.internet.defer import fail

                return fail(StorageFull("No space left on device"))
            return real(*args)  # type: ignore[arg-type]

        self.patch(self.resumable, "publish", failOnce)
        self.assertError(self.request(patch(location, 0, b"abc")), 507, "insufficient_storage")
        self.assertEqual(self.files(), [])
        response = self.head(location)
        self.assertEqual((response.status, response.headers[b"upload-offset"]), (200, b"3"))
        self.assertEqual((self.root / "full").read_bytes(), b"abc")
        info = json.loads(self.request(req(b"GET", b"/files")).body)["files"][0]
        self.assertEqual(info["sha256"], hashlib.sha256(b"abc").hexdigest())

    def test_folderAtTheName(self) -> None:
        """
        A complete upload whose name is a folder in the storage answers 409
        conflict and is kept; once the folder is gone, HEAD publishes it.
        """
        location = self.create("taken", 3)
        (self.root / "taken").mkdir()
        self.assertError(self.request(patch(location, 0, b"abc")), 409, "conflict")
        self.assertTrue((self.root / "taken").is_dir())
        (self.root / "taken").rmdir()
        response = self.head(location)
        self.assertEqual((response.status, response.headers[b"upload-offset"]), (200, b"3"))
        self.assertEqual((self.root / "taken").read_bytes(), b"abc")

    def test_diskFullDiscardsChunk(self) -> None:
        """A full disk mid-PATCH answers 507; the offset stays where it was."""

        location = self.create("nospace", 30)
        self.request(patch(location, 0, b"abc"))
        failWritesAfterFirst(self)
        response = answerToFailedWrite(self.connect(), patch(location, 3, b"x" * 27), 20, 10)
        self.assertError(response, 507, "insufficient_storage")
        self.assertEqual(self.stateOffset(location), 3)
        uploadId = location.decode().rsplit("/", 1)[1]
        self.assertEqual((self.root / ".tus" / f"{uploadId}.part").stat().st_size, 3)

    def test_readOnlyDiskDiscardsChunk(self) -> None:
        """
        A disk that turns read-only mid-PATCH answers 503, to try again;
        the offset stays where it was.
        """
        location = self.create("readonly", 30)
        self.request(patch(location, 0, b"abc"))
        failWritesAfterFirst(self, errno.EROFS)
        response = answerToFailedWrite(self.connect(), patch(location, 3, b"x" * 27), 20, 10)
        self.assertError(response, 503, "storage_unavailable")
        self.assertEqual(response.headers[b"retry-after"], b"5")
        self.assertEqual(self.stateOffset(location), 3)
