"""
Unit tests of resumable uploads kept in S3 (L{streamrelay.tus.s3}), with a
fake S3 client: segments cut at the part size with backpressure, the
record naming only stored segments, a short last segment sent again, what
is removed and when, publishing by copies inside S3, and failures.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from streamrelay.store import StorageFull
from streamrelay.store.s3.client import SHA256_META, ObjectHead
from streamrelay.store.s3.messages import S3Error
from streamrelay.store.s3.publishing import UploadFailed
from streamrelay.store.s3.store import S3Store
from streamrelay.tus.interfaces import IPartialWriter, IResumableStore, ResumableUpload
from streamrelay.tus.s3 import S3ResumableStore
from tests.s3fakes import FakeBody, FakeS3

MiB = 1 << 20
ID = "0123456789abcdef0123456789abcdef"
FOLDER = "p/.streamrelay/tus/"


def newUpload(offset: int = 0, length: int | None = None) -> ResumableUpload:
    return ResumableUpload(
        id=ID, length=length, offset=offset, metadata="", name="f.bin",
        created=0.0, expires=1e12,
    )


def record(upload: ResumableUpload, segments: list[list[Any]]) -> bytes:
    return json.dumps({"upload": upload.asJSON(), "segments": segments}).encode()


class S3ResumableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s3 = FakeS3()
        self.store = S3Store(self.s3, "p/", partSize=5 * MiB)  # type: ignore[arg-type]
        self.resumable = S3ResumableStore(self.store)
        self.body = FakeBody()

    def loaded(self, upload: ResumableUpload, segments: list[list[Any]]) -> ResumableUpload:
        """C{upload} as read from its record, naming C{segments}."""
        d = self.resumable.load(ID)
        answered = self.s3.answer("read", record(upload, segments))
        self.assertEqual(answered.args, (FOLDER + ID + ".json",))
        got = self.successResultOf(d)
        assert got is not None
        return got

    def writer(self, upload: ResumableUpload) -> Any:
        d = self.resumable.openWriter(upload)
        writer = self.successResultOf(d)
        writer.registerProducer(self.body, True)
        return writer

    def savedRecord(self, upload: ResumableUpload) -> dict[str, Any]:
        d = self.resumable.save(upload)
        call = self.s3.answer("put", "record-etag")
        self.successResultOf(d)
        key, chunks, digest = call.args
        self.assertEqual(key, FOLDER + ID + ".json")
        self.assertEqual(digest, hashlib.sha256(b"".join(chunks)).hexdigest())
        return json.loads(b"".join(chunks))  # type: ignore[no-any-return]

    def test_interfaces(self) -> None:
        verifyObject(IResumableStore, self.resumable)
        upload = newUpload()
        d = self.resumable.create(upload)
        self.s3.answer("put", "e")
        self.successResultOf(d)
        verifyObject(IPartialWriter, self.writer(upload))

    def test_segmentsAtPartSizeWithBackpressure(self) -> None:
        """
        Bytes go out as segments of a part's size, one at a time; while a
        full segment waits the body is paused.  The record names exactly
        the segments stored, in order.
        """
        upload = newUpload()
        d = self.resumable.create(upload)
        self.assertEqual(self.savedRecordFrom(d)["segments"], [])
        writer = self.writer(upload)
        for _ in range(5):
            writer.write(b"a" * MiB)
        first = self.s3.take("put")
        self.assertTrue(first.args[0].startswith(FOLDER + ID + "."))
        self.assertEqual(b"".join(first.args[1]), b"a" * 5 * MiB)
        # No digest of its own: the client signs its payload hash (or none).
        self.assertIsNone(first.args[2])
        self.assertFalse(self.body.paused)
        for _ in range(5):
            writer.write(b"b" * MiB)
        self.assertTrue(self.body.paused)
        self.assertEqual(self.s3.pending(), ["put"])
        self.assertEqual(self.successResultOf(writer.checkpoint()), 0)

        self.s3.answer("put", "e1")
        self.assertFalse(self.body.paused)
        self.assertEqual(b"".join(self.s3.take("put").args[1]), b"b" * 5 * MiB)
        self.assertEqual(self.successResultOf(writer.checkpoint()), 5 * MiB)
        writer.write(b"c" * 100)
        flushed = writer.flush()
        self.assertNoResult(flushed)
        self.s3.answer("put", "e2")
        last = self.s3.take("put")
        self.assertEqual(b"".join(last.args[1]), b"c" * 100)
        self.s3.answer("put", "e3")
        self.assertEqual(self.successResultOf(flushed), 10 * MiB + 100)
        self.assertEqual(writer.written(), 10 * MiB + 100)
        writer.close()

        upload.offset = 10 * MiB + 100
        segments = self.savedRecord(upload)["segments"]
        self.assertEqual([(s[1], s[2]) for s in segments],
                         [(5 * MiB, "e1"), (5 * MiB, "e2"), (100, "e3")])
        self.assertEqual(self.s3.pending(), [])

    def savedRecordFrom(self, d: Any) -> dict[str, Any]:
        call = self.s3.answer("put", "record-etag")
        self.successResultOf(d)
        return json.loads(b"".join(call.args[1]))  # type: ignore[no-any-return]

    def test_shortLastSegmentSentAgain(self) -> None:
        """
        A last segment shorter than 5 MiB is read back and sent at the head
        of the next one; once a record without it is stored, it is removed.
        """
        upload = self.loaded(
            newUpload(offset=5 * MiB + 10),
            [["1" * 16, 5 * MiB, "e1"], ["2" * 16, 10, "e2"]],
        )
        d = self.resumable.openWriter(upload)
        self.assertEqual(self.s3.answer("read", b"t" * 10).args, (FOLDER + ID + "." + "2" * 16,))
        writer = self.successResultOf(d)
        for _ in range(5):
            writer.write(b"n" * MiB)
        sent = self.s3.take("put")
        self.assertEqual(b"".join(sent.args[1]), b"t" * 10 + b"n" * 5 * MiB)
        self.s3.answer("put", "e3")
        self.assertEqual(self.successResultOf(writer.flush()), 5 * MiB)
        writer.close()

        upload.offset += 5 * MiB
        segments = self.savedRecord(upload)["segments"]
        self.assertEqual([s[0] for s in segments][0], "1" * 16)
        self.assertEqual([s[1] for s in segments], [5 * MiB, 5 * MiB + 10])
        self.assertEqual(self.s3.take("delete").args, (FOLDER + ID + "." + "2" * 16,))

    def test_nothingNewKeepsTheShortSegment(self) -> None:
        """A request that brings no byte sends nothing and removes nothing."""
        upload = self.loaded(newUpload(offset=10), [["2" * 16, 10, "e2"]])
        d = self.resumable.openWriter(upload)
        self.s3.answer("read", b"t" * 10)
        writer = self.successResultOf(d)
        self.assertEqual(self.successResultOf(writer.flush()), 0)
        writer.close()
        self.assertEqual(self.savedRecord(upload)["segments"], [["2" * 16, 10, "e2"]])
        self.assertEqual(self.s3.pending(), [])

    def test_truncateForgetsNewSegments(self) -> None:
        """
        Truncating (a checksum mismatch, a failure) goes back to the
        record's segments, and the ones sent meanwhile are removed once
        that record is stored again.
        """
        upload = self.loaded(newUpload(offset=5 * MiB), [["1" * 16, 5 * MiB, "e1"]])
        writer = self.writer(upload)
        for _ in range(5):
            writer.write(b"n" * MiB)
        newKey = self.s3.answer("put", "e2").args[0]
        self.successResultOf(writer.truncate())
        writer.close()
        self.assertEqual(self.savedRecord(upload)["segments"], [["1" * 16, 5 * MiB, "e1"]])
        self.assertEqual(self.s3.take("delete").args, (newKey,))

    def test_failedSegment(self) -> None:
        """
        A segment S3 refuses fails the next write and the flush (a full
        bucket as L{StorageFull}), and releases the paused body.
        """
        upload = self.loaded(newUpload(), [])
        writer = self.writer(upload)
        for _ in range(10):
            writer.write(b"x" * MiB)
        self.assertTrue(self.body.paused)
        self.s3.answer("put", S3Error(403, "QuotaExceeded"))
        self.assertFalse(self.body.paused)
        self.assertRaises(StorageFull, writer.write, b"y")
        self.failureResultOf(writer.flush(), StorageFull)
        writer.close()

    def test_failedSegmentLetGo(self) -> None:
        """
        A refused segment's bytes go with its writer, without waiting for
        the cycle collector: the error kept holds no frame that sent them.
        """
        gc.disable()
        self.addCleanup(gc.enable)
        chunk = b"z" * MiB
        alone = sys.getrefcount(chunk)
        writer = self.writer(self.loaded(newUpload(), []))
        for _ in range(10):
            writer.write(chunk)
        self.s3.answer("put", S3Error(500, "InternalError"))
        self.assertRaises(UploadFailed, writer.write, b"y")
        self.failureResultOf(writer.flush())
        writer.close()
        del writer
        self.s3.calls.clear()
        self.assertEqual(sys.getrefcount(chunk), alone)

    def test_damagedRecords(self) -> None:
        """
        Records that do not parse, or count other bytes than their
        segments hold, name no upload.
        """
        for data in (b"{", record(newUpload(offset=7), [["1" * 16, 5, "e"]]),
                     record(newUpload(offset=5), [["../../x", 5, "e"]])):
            d = self.resumable.load(ID)
            self.s3.answer("read", data)
            self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(self.resumable.load("../" + ID)))
        self.assertEqual(self.s3.pending(), [])

    def test_publishCopiesSegmentsAsParts(self) -> None:
        """
        A complete upload of several segments is published as a multipart
        upload copying each segment inside S3, with the SHA-256 in its
        metadata; the segments are then removed.
        """
        size = 5 * MiB + 3
        upload = self.loaded(
            newUpload(offset=size, length=size),
            [["1" * 16, 5 * MiB, "e1"], ["2" * 16, 3, "e2"]],
        )
        d = self.resumable.publish(upload, "ab" * 32)
        self.assertEqual(self.s3.answer("head", None).args, ("p/f.bin",))
        self.assertEqual(self.s3.answer("createUpload", "U").args,
                         ("p/f.bin", {SHA256_META: "ab" * 32}))
        first = self.s3.answer("copyPart", '"c1"')
        second = self.s3.answer("copyPart", '"c2"')
        segment = FOLDER + ID + "."
        self.assertEqual(first.args, (segment + "1" * 16, "e1", "p/f.bin", "U", 1, 0, 5 * MiB))
        self.assertEqual(second.args, (segment + "2" * 16, "e2", "p/f.bin", "U", 2, 0, 3))
        self.assertEqual(self.s3.answer("complete").args,
                         ("p/f.bin", "U", [(1, '"c1"'), (2, '"c2"')]))
        self.s3.answer("head", ObjectHead(size, "E", 1.0, "ab" * 32))
        info, replaced = self.successResultOf(d)
        self.assertEqual((info.name, info.size, info.sha256, replaced),
                         ("f.bin", size, "ab" * 32, False))
        # Then every object of the upload but its record goes, in the background.
        from streamrelay.store.s3.messages import ListedObject, ObjectPage

        listed = [segment + t for t in ("json", "1" * 16, "2" * 16, "3" * 16)]
        self.assertEqual(self.s3.answer("listObjects", ObjectPage(
            [ListedObject(k, 1, "e", 0.0) for k in listed], False, None)).args[0], segment)
        for _ in range(3):
            self.s3.answer("delete")
        self.assertEqual(sorted(c.args[0] for c in self.s3.calls if c.name == "delete"),
                         listed[1:])

    def test_publishFailureAbortsTheCopy(self) -> None:
        """A copy S3 refuses aborts the multipart upload and fails the publish."""
        size = 5 * MiB + 3
        upload = self.loaded(
            newUpload(offset=size, length=size),
            [["1" * 16, 5 * MiB, "e1"], ["2" * 16, 3, "e2"]],
        )
        d = self.resumable.publish(upload, "ab" * 32)
        self.s3.answer("head", None)
        self.s3.answer("createUpload", "U")
        self.s3.answer("copyPart", S3Error(403, "AccessDenied"))
        self.s3.answer("copyPart", '"c2"')
        self.s3.answer("abortUpload")
        self.assertEqual(self.s3.take("lastPartTime").args, ("p/f.bin", "U"))
        self.failureResultOf(d, Exception)
        self.assertEqual(self.s3.pending(), ["lastPartTime"])

    def test_publishedBeforeItWasNoted(self) -> None:
        """
        Segments gone but the file there with the upload's size and
        SHA-256: a backend published it and stopped before noting it.
        """
        upload = self.loaded(newUpload(offset=6, length=6), [["1" * 16, 6, "e1"]])
        d = self.resumable.publish(upload, "cd" * 32)
        self.s3.answer("head", ObjectHead(6, "E", 1.0, "cd" * 32))
        self.s3.answer("copy", S3Error(404, "NoSuchKey"))
        self.s3.answer("head", ObjectHead(6, "E", 1.0, "cd" * 32))
        info, replaced = self.successResultOf(d)
        self.assertEqual((info.size, info.sha256, replaced), (6, "cd" * 32, True))

    def test_hashPrefixOfMissingSegment(self) -> None:
        """Hashing an upload whose segments are gone says so as FileNotFoundError."""
        upload = self.loaded(newUpload(offset=6), [["1" * 16, 6, "e1"]])
        d = self.resumable.hashPrefix(upload)
        self.s3.answer("get", S3Error(404, "NoSuchKey"))
        self.failureResultOf(d, FileNotFoundError)

    def test_idsAndRemove(self) -> None:
        """
        Uploads are the records in the folder; segments without a record
        and older than the stale age are removed; removing an upload
        removes its segments, then its record.
        """
        from streamrelay.store.s3.messages import ListedObject, ObjectPage

        other = "f" * 32
        d = self.resumable.ids()
        self.s3.answer("listObjects", ObjectPage([
            ListedObject(FOLDER + ID + ".json", 10, "e", 0.0),
            ListedObject(FOLDER + ID + "." + "1" * 16, 10, "e", 0.0),
            ListedObject(FOLDER + other + "." + "2" * 16, 10, "e", -1e9),
            ListedObject(FOLDER + "junk", 10, "e", -1e9),
        ], False, None))
        self.assertEqual(self.successResultOf(d), [ID])
        self.assertEqual(self.s3.answer("delete").args, (FOLDER + other + "." + "2" * 16,))

        removed = self.resumable.remove(ID)
        self.assertEqual(self.s3.answer("listObjects", ObjectPage([
            ListedObject(FOLDER + ID + ".json", 10, "e", 0.0),
            ListedObject(FOLDER + ID + "." + "1" * 16, 10, "e", 0.0),
        ], False, None)).args[0], FOLDER + ID + ".")
        self.assertEqual(self.s3.answer("delete").args, (FOLDER + ID + "." + "1" * 16,))
        self.assertNoResult(removed)
        self.assertEqual(self.s3.answer("delete").args, (FOLDER + ID + ".json",))
        self.successResultOf(removed)
