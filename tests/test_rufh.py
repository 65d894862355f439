"""
The IETF resumable upload draft on the backend's routes, per interop
version, over a real disk store and resumable store, in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json

from twisted.internet.defer import Deferred, succeed

from streamrelay.hooks import Decision, RequestContext
from streamrelay.rufh.headers import PROBLEMS
from streamrelay.rufh.versions import VERSIONS, versionOf
from streamrelay.store import FileInfo
from tests.backendcases import TusTestCase
from tests.hashing import sha
from tests.httpfakes import Response
from tests.precreatefakes import FakeHooks
from tests.rawrequests import TUS, meta, req
from tests.rufhraw import append, completeHeader, completeIn, creation, query


class RecordingHooks(FakeHooks):
    """Also records the post-finish and post-delete events."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, str]] = []

    def finished(self, context: RequestContext, info: FileInfo) -> Deferred[None]:
        self.events.append(("post-finish", context.protocol, info.name))
        return succeed(None)

    def deleted(self, context: RequestContext, name: str) -> Deferred[None]:
        self.events.append(("post-delete", context.protocol, name))
        return succeed(None)


def digest(data: bytes) -> bytes:
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()) + b":"


class RufhCases(TusTestCase):
    """The draft's behaviour; a subclass per interop version sets C{version}."""

    version = 0
    skip = "a base: run per version"

    def setUp(self) -> None:
        super().setUp()
        self.hooks = RecordingHooks()
        self.routes.hooks = self.hooks
        self.tus.hooks = self.hooks

    # Helpers

    def put(self, name: str, body: bytes, *extra: bytes) -> list[Response]:
        """A plain PUT made resumable: every response, interim ones included."""
        conn = self.connect()
        conn.send(creation(self.version, name, len(body), *extra) + body)
        conn.turn()
        return conn.responses()

    def cutPut(self, name: str, body: bytes, sent: int, *extra: bytes) -> bytes:
        """A resumable PUT whose connection drops after C{sent} bytes; its upload URL."""
        conn = self.connect()
        conn.send(creation(self.version, name, len(body), *extra) + body[:sent])
        conn.turn()
        [interim] = conn.responses()
        self.assertEqual(interim.status, 104)
        conn.lose()
        return interim.headers[b"location"]

    def appendTo(self, url: bytes, offset: int, data: bytes, complete: bool = True,
                 *extra: bytes) -> Response:
        head = append(self.version, url, offset, len(data), complete)
        return self.request(head[:-2] + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + data)

    def headOf(self, url: bytes, *extra: bytes) -> Response:
        return self.request(query(b"HEAD", self.version, url)[:-2]
                            + b"".join(h + b"\r\n" for h in extra) + b"\r\n")

    def assertProblem(self, response: Response, status: int, kind: str | None,
                      code: str) -> dict[str, object]:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.headers[b"content-type"], b"application/problem+json")
        problem = json.loads(response.body)
        if kind is not None:
            self.assertEqual(problem["type"], PROBLEMS + kind)
        self.assertEqual(problem["error"], code)
        self.assertIsInstance(problem["message"], str)
        return problem  # type: ignore[no-any-return]

    def assertStoredFile(self, response: Response, name: str, data: bytes) -> None:
        self.assertEqual(response.status, 201, response.body)
        answer = json.loads(response.body)
        self.assertEqual((answer["name"], answer["size"], answer["sha256"]),
                         (name, len(data), sha(data)))
        fileURL = b"/files/" + name.encode()
        if response.headers.get(b"content-location") is not None:
            # A creation's answer in drafts -01 to -05: Location is the upload's.
            self.assertNotEqual(self.version, 8)
            self.assertEqual(response.headers[b"content-location"], fileURL)
            self.assertTrue(response.headers[b"location"].startswith(b"/uploads/"))
        else:
            self.assertEqual(response.headers[b"location"], fileURL)
        self.assertEqual(response.headers[b"etag"], b'"%s"' % sha(data).encode())
        self.assertIs(completeIn(self.version, response), True)
        self.assertEqual((self.root / name).read_bytes(), data)

    # Creation

    def test_interimBeforeBody(self) -> None:
        """
        The 104, with the upload's URL and the version, goes out before a
        byte of the body is read; then the whole body is the plain PUT's
        answer, and the upload is complete.
        """
        body = b"hello, resumable"
        conn = self.connect()
        conn.send(creation(self.version, "a.txt", len(body)))
        conn.turn()
        [interim] = conn.responses()
        self.assertEqual(interim.status, 104)
        self.assertIn(b"104 Upload Resumption Supported", interim.raw)
        url = interim.headers[b"location"]
        self.assertRegex(url, rb"^/uploads/[0-9a-f]{32}$")
        self.assertEqual(interim.headers[b"upload-draft-interop-version"],
                         b"%d" % self.version)
        if self.version >= 6:
            age = b"expires" if self.version == 6 else b"max-age"
            self.assertEqual(interim.headers[b"upload-limit"], age + b"=3600")
        else:
            self.assertNotIn(b"upload-limit", interim.headers)
        self.assertEqual(self.files(), [])
        conn.send(body)
        conn.turn()
        final = conn.responses()[-1]
        self.assertStoredFile(final, "a.txt", body)
        head = self.headOf(url)
        self.assertEqual(head.status, 204)
        self.assertIs(completeIn(self.version, head), True)
        self.assertEqual(head.headers[b"upload-offset"], b"%d" % len(body))
        self.assertEqual(self.hooks.events, [("post-finish", "rufh", "a.txt")])
        [asked] = self.hooks.asked
        self.assertEqual((asked.name, asked.size, asked.context.protocol),
                         ("a.txt", len(body), "rufh"))

    def test_creationLocation(self) -> None:
        """
        A creation that completes the upload in one request: for drafts -01
        to -05 its answer's Location is the upload's, as in the 104 (the
        file in Content-Location); from -09 on, the answer is the file's.
        """
        interim, final = self.put("loc.bin", b"abc")
        self.assertStoredFile(final, "loc.bin", b"abc")
        if self.version == 8:
            self.assertEqual(final.headers[b"location"], b"/files/loc.bin")
            self.assertNotIn(b"content-location", final.headers)
        else:
            self.assertEqual(final.headers[b"location"], interim.headers[b"location"])
            self.assertEqual(final.headers[b"content-location"], b"/files/loc.bin")

    def test_plainPutHasNoInterim(self) -> None:
        """Without the interop header: a plain upload, no 104, no upload kept."""
        conn = self.connect()
        conn.send(creation(None, "p.txt", 3) + b"abc")
        conn.turn()
        self.assertEqual([r.status for r in conn.responses()], [201])
        self.assertEqual(list((self.root / ".tus").glob("*.json")), [])

    def test_cutThenResume(self) -> None:
        """
        The connection drops mid-body: what arrived is kept, HEAD tells
        it, and a PATCH of the rest completes the upload with the plain
        upload's answer.
        """
        data = bytes(range(256)) * 40
        url = self.cutPut("b.bin", data, 3000)
        head = self.headOf(url)
        self.assertEqual(head.status, 204)
        self.assertEqual(head.headers[b"upload-offset"], b"3000")
        self.assertEqual(head.headers[b"upload-length"], b"%d" % len(data))
        self.assertEqual(head.headers[b"cache-control"], b"no-store")
        self.assertIs(completeIn(self.version, head), False)
        self.assertEqual(self.files(), [])
        self.assertStoredFile(self.appendTo(url, 3000, data[3000:]), "b.bin", data)

    def test_postCreationInParts(self) -> None:
        """
        POST /uploads/ names the file in Upload-Metadata (as tus-js-client
        sends it); unfinished appends are acknowledged with the offset.
        """
        response = self.request(req(
            b"POST", b"/uploads/", b"Upload-Draft-Interop-Version: %d" % self.version,
            completeHeader(self.version, False), b"Upload-Length: 6", meta("c.txt")))
        self.assertEqual(response.status, 201, response.body)
        url = response.headers[b"location"]
        self.assertIs(completeIn(self.version, response), False)
        self.assertEqual(response.headers[b"upload-offset"], b"0")
        first = self.appendTo(url, 0, b"abc", False)
        self.assertEqual(first.status, 204 if self.version == 8 else 201, first.body)
        self.assertEqual(first.headers[b"upload-offset"], b"3")
        self.assertIs(completeIn(self.version, first), False)
        self.assertStoredFile(self.appendTo(url, 3, b"def"), "c.txt", b"abcdef")

    def test_contentDispositionName(self) -> None:
        """Without Upload-Metadata, Content-Disposition's filename names the file."""
        response = self.request(req(
            b"POST", b"/uploads", b"Upload-Draft-Interop-Version: %d" % self.version,
            completeHeader(self.version, True),
            b"Content-Disposition: inline; filename=\"x.txt\"; filename*=UTF-8''%C3%A9.txt",
            body=b"hi"))
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(json.loads(response.body)["name"], "\u00e9.txt")

    def test_unnamedPost(self) -> None:
        response = self.request(req(
            b"POST", b"/uploads", b"Upload-Draft-Interop-Version: %d" % self.version,
            body=b"hi"))
        self.assertError(response, 400, "bad_name")
        self.assertEqual(list((self.root / ".tus").glob("*.json")), [])

    def test_inconsistentLength(self) -> None:
        """Upload-Length and a complete Content-Length disagree: 400, nothing created."""
        responses = self.put("d.bin", b"abc", b"Upload-Length: 5")
        self.assertEqual([r.status for r in responses], [400])
        self.assertProblem(responses[0], 400, "inconsistent-upload-length",
                           "inconsistent_length")
        self.assertEqual(list((self.root / ".tus").glob("*.json")), [])

    def test_tooLargeBeforeInterim(self) -> None:
        """Over the backend's limit: 413 at once, no 104, no upload."""
        self.tus.maxSize = self.routes.maxSize = 10
        responses = self.put("e.bin", b"x" * 11)
        self.assertEqual([r.status for r in responses], [413])
        self.assertEqual(list((self.root / ".tus").glob("*.json")), [])

    def test_limitAdvertised(self) -> None:
        self.tus.maxSize = self.routes.maxSize = 1000
        interim = self.put("f.bin", b"abc")[0]
        if self.version >= 6:
            self.assertIn(b"max-size=1000", interim.headers[b"upload-limit"])
        else:
            self.assertNotIn(b"upload-limit", interim.headers)

    # Appends

    def test_offsetMismatch(self) -> None:
        """409 with the offsets, as a problem; nothing appended."""
        url = self.cutPut("g.bin", b"0123456789", 4)
        response = self.appendTo(url, 6, b"6789")
        problem = self.assertProblem(response, 409, "mismatching-upload-offset",
                                     "offset_mismatch")
        self.assertEqual((problem["expected-offset"], problem["provided-offset"]), (4, 6))
        self.assertEqual(response.headers[b"upload-offset"], b"4")
        self.assertEqual(self.headOf(url).headers[b"upload-offset"], b"4")

    def test_appendToCompleted(self) -> None:
        url = self.put("h.bin", b"abc")[0].headers[b"location"]
        response = self.appendTo(url, 3, b"more")
        if self.version == 8:
            self.assertProblem(response, 400, "inconsistent-upload-length",
                               "inconsistent_length")
        else:
            self.assertProblem(response, 400, "completed-upload", "completed_upload")
        empty = self.appendTo(url, 3, b"")
        self.assertProblem(empty, 400, "completed-upload", "completed_upload")
        self.assertEqual((self.root / "h.bin").read_bytes(), b"abc")

    def test_mediaType(self) -> None:
        """6 and later take appends as application/partial-upload only."""
        url = self.cutPut("i.bin", b"abcdef", 2)
        head = append(self.version, url, 2, 4).replace(
            b"Content-Type: application/partial-upload\r\n", b"")
        response = self.request(head + b"cdef")
        if self.version >= 6:
            self.assertProblem(response, 415, None, "unsupported_media_type")
            self.assertEqual(self.headOf(url).headers[b"upload-offset"], b"2")
        else:
            self.assertStoredFile(response, "i.bin", b"abcdef")

    def test_contentDigest(self) -> None:
        """A Content-Digest mismatch appends nothing; a match appends."""
        url = self.cutPut("j.bin", b"abcdef", 2)
        response = self.appendTo(url, 2, b"cdef", True, b"Content-Digest: " + digest(b"XXXX"))
        self.assertProblem(response, 400, None, "digest_mismatch")
        self.assertEqual(self.headOf(url).headers[b"upload-offset"], b"2")
        self.assertEqual(self.files(), [])
        ok = self.appendTo(url, 2, b"cdef", True, b"Content-Digest: " + digest(b"cdef"))
        self.assertStoredFile(ok, "j.bin", b"abcdef")

    def test_reprDigestChecked(self) -> None:
        """
        Repr-Digest of the whole, sent on creation, is checked on
        completion: a mismatch publishes nothing and discards the upload.
        """
        url = self.cutPut("k.bin", b"abcdef", 3, b"Repr-Digest: " + digest(b"abcdeX"))
        response = self.appendTo(url, 3, b"def")
        self.assertProblem(response, 400, None, "digest_mismatch")
        self.assertEqual(self.files(), [])
        self.assertEqual(self.headOf(url).status, 404)
        self.assertEqual(self.hooks.events, [])
        good = self.cutPut("k.bin", b"abcdef", 3, b"Repr-Digest: " + digest(b"abcdef"))
        self.assertStoredFile(self.appendTo(good, 3, b"def"), "k.bin", b"abcdef")

    def test_takeover(self) -> None:
        """
        A HEAD (then a PATCH) while an append still streams into the upload
        stops the older request, which keeps what it received; nothing
        interleaves.
        """
        url = self.cutPut("l.bin", b"0123456789", 2)
        first = self.connect()
        first.send(append(self.version, url, 2, 8) + b"2345")
        first.turn()
        head = self.headOf(url)
        self.assertEqual(head.headers[b"upload-offset"], b"6")
        [answer] = first.responses()
        self.assertError(answer, 423, "locked")
        first.send(b"6789")  # too late: dropped
        first.turn()
        self.assertStoredFile(self.appendTo(url, 6, b"WXYZ"), "l.bin", b"012345WXYZ")

    # Cancellation and queries

    def test_cancel(self) -> None:
        url = self.cutPut("m.bin", b"abcdef", 3)
        response = self.request(query(b"DELETE", self.version, url))
        self.assertEqual(response.status, 204)
        self.assertEqual(self.headOf(url).status, 404)
        self.assertEqual(self.files(), [])
        self.assertEqual(list((self.root / ".tus").glob("*.part")), [])
        self.assertEqual(self.hooks.events, [("post-delete", "rufh", "m.bin")])

    def test_queriesTakeNoUploadHeaders(self) -> None:
        """3 to 6: HEAD and DELETE with Upload-Offset are refused (400)."""
        url = self.cutPut("n.bin", b"abcdef", 3)
        response = self.headOf(url, b"Upload-Offset: 3")
        self.assertEqual(response.status, 400 if self.version < 8 else 204)

    def test_tusSeesTheSameUpload(self) -> None:
        """An upload of the draft is a tus upload too (the same store)."""
        url = self.cutPut("o.bin", b"abcdef", 3)
        response = self.request(req(b"HEAD", url, TUS))
        self.assertEqual(response.headers[b"upload-offset"], b"3")


class Interop3Tests(RufhCases):
    version = 3
    skip = None  # type: ignore[assignment]


class Interop5Tests(RufhCases):
    version = 5
    skip = None  # type: ignore[assignment]


class Interop6Tests(RufhCases):
    version = 6
    skip = None  # type: ignore[assignment]


class Interop8Tests(RufhCases):
    version = 8
    skip = None  # type: ignore[assignment]


class UnsupportedVersionTests(TusTestCase):
    def test_versions(self) -> None:
        self.assertEqual(sorted(VERSIONS), [3, 5, 6, 8])
        self.assertIsNone(versionOf(_Headers(b"4")))  # type: ignore[arg-type]
        self.assertEqual(versionOf(_Headers(b" 6 ")), VERSIONS[6])  # type: ignore[arg-type]

    def test_putOfUnspokenVersionIsPlain(self) -> None:
        conn = self.connect()
        conn.send(req(b"PUT", b"/files/q.txt", b"Upload-Draft-Interop-Version: 7",
                      b"Upload-Complete: ?1", body=b"abc"))
        conn.turn()
        self.assertEqual([r.status for r in conn.responses()], [201])

    def test_partOfUnspokenVersionRefused(self) -> None:
        """A part (Upload-Complete: ?0) stored as a whole file would be wrong: 400."""
        response = self.request(req(b"PUT", b"/files/q.txt", b"Upload-Draft-Interop-Version: 7",
                                    b"Upload-Complete: ?0", body=b"abc"))
        self.assertError(response, 400, "unsupported_version")
        self.assertEqual(self.files(), [])

    def test_uploadsOfUnspokenVersion(self) -> None:
        response = self.request(req(b"POST", b"/uploads/", b"Upload-Draft-Interop-Version: 2",
                                    meta("a"), body=b"abc"))
        self.assertError(response, 400, "unsupported_version")

    def test_decisionRenames(self) -> None:
        """A pre-create decision's name applies to the draft's uploads too."""
        hooks = FakeHooks(lambda name: Decision(name="renamed.txt"))
        self.routes.hooks = hooks
        conn = self.connect()
        conn.send(creation(8, "a.txt", 3) + b"abc")
        conn.turn()
        final = conn.responses()[-1]
        self.assertEqual(json.loads(final.body)["name"], "renamed.txt")


class _Headers:
    def __init__(self, value: bytes) -> None:
        self.value = value

    def getHeader(self, name: bytes) -> bytes | None:
        return self.value if name == b"upload-draft-interop-version" else None


class ConcatenationTests(TusTestCase):
    def test_partialUploadNotTheDrafts(self) -> None:
        """A tus partial upload is never appended to, nor completed, by the draft."""
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 3",
                                    b"Upload-Concat: partial", meta("x.bin")))
        self.assertEqual(response.status, 201, response.body)
        url = response.headers[b"location"]
        answer = self.request(append(8, url, 0, 3) + b"abc")
        self.assertEqual(answer.status, 403, answer.body)
        self.assertEqual(self.request(query(b"HEAD", 8, url)).status, 403)
        self.assertEqual(self.files(), [])
