"""
The backend's file API beyond PUT, through in-memory HTTP: forms, listing,
downloads, ranges, conditional requests, deletes, concurrent writers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.backend.multipart import sanitizeFileName
from streamrelay.backend.ranges import Unsatisfiable, parseRange
from streamrelay.backend.routes import BackendRoutes
from streamrelay.names import BadName
from streamrelay.store.disk import DiskStore
from streamrelay.store.groupcommit import runRound
from streamrelay.webapp import appResource
from tests.backendcases import BackendTestCase
from tests.httpfakes import Connection, Response
from tests.partialfiles import leftInPartial
from tests.rawrequests import BOUNDARY, form, get, post, put


class RangeParsingTests(SynchronousTestCase):
    def test_ranges(self) -> None:
        self.assertEqual(parseRange("bytes=0-99", 1000), (0, 100))
        self.assertEqual(parseRange("bytes=100-", 1000), (100, 1000))
        self.assertEqual(parseRange("bytes=-100", 1000), (900, 1000))
        self.assertEqual(parseRange("bytes=-2000", 1000), (0, 1000))
        self.assertEqual(parseRange("bytes=990-2000", 1000), (990, 1000))
        self.assertIsNone(parseRange(None, 1000))
        self.assertIsNone(parseRange("items=0-1", 1000))
        self.assertIsNone(parseRange("bytes=5-1", 1000))
        self.assertIsNone(parseRange("bytes=x-y", 1000))

    def test_unsatisfiable(self) -> None:
        for header in ["bytes=1000-", "bytes=-0", "bytes=0-1,5-6", "bytes=" + "0-1," * 10000]:
            self.assertRaises(Unsatisfiable, parseRange, header, 1000)
        self.assertRaises(Unsatisfiable, parseRange, "bytes=-5", 0)


class SanitizeTests(SynchronousTestCase):
    def test_names(self) -> None:
        self.assertEqual(sanitizeFileName("a.txt"), "a.txt")
        self.assertEqual(sanitizeFileName("../../etc/passwd"), "passwd")
        self.assertEqual(sanitizeFileName("C:\\Users\\me\\report.pdf"), "report.pdf")
        self.assertEqual(sanitizeFileName(".bashrc"), "bashrc")
        self.assertEqual(sanitizeFileName("a\x00b\nc"), "a_b_c")
        self.assertEqual(len(sanitizeFileName("é" * 200).encode()), 254)
        for bad in ["", "..", "/", "dir/"]:
            self.assertRaises(BadName, sanitizeFileName, bad)


class FormTests(BackendTestCase):
    maxSize = 1 << 20

    def test_severalFiles(self) -> None:
        body = form(
            (b"file", b"one.txt", b"first file"),
            (b"note", None, b"a plain field"),
            (b"file", b"two.bin", b"\x00\r\n--not a boundary\r\n"),
        )
        response = self.request(post(body))
        self.assertEqual(response.status, 201, response.body)
        answer = json.loads(response.body)
        self.assertEqual([f["name"] for f in answer["files"]], ["one.txt", "two.bin"])
        self.assertEqual(answer["files"][0]["sha256"], hashlib.sha256(b"first file").hexdigest())
        self.assertEqual((self.root / "one.txt").read_bytes(), b"first file")
        self.assertEqual((self.root / "two.bin").read_bytes(), b"\x00\r\n--not a boundary\r\n")

    def test_hostileFileName(self) -> None:
        response = self.request(post(form((b"file", b"../../../etc/passwd", b"x"))))
        self.assertEqual(response.status, 201)
        self.assertEqual(json.loads(response.body)["files"][0]["name"], "passwd")
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial", "passwd"])

    def test_noBoundary(self) -> None:
        response = self.request(post(b"whatever", b"multipart/form-data"))
        self.assertError(response, 400, "bad_request")
        self.assertNothingStored()

    def test_notAForm(self) -> None:
        response = self.request(post(b"{}", b"application/json"))
        self.assertError(response, 400, "bad_request")

    def test_endlessHeader(self) -> None:
        body = b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + b"x" * 100000
        response = self.request(post(body))
        self.assertError(response, 400, "bad_request")
        self.assertNothingStored()

    def test_truncated(self) -> None:
        """A form whose body ends before its closing boundary stores nothing."""
        body = form((b"file", b"a.txt", b"complete"), (b"file", b"b.txt", b"cut"))
        response = self.request(post(body[:-30]).replace(
            b"Content-Length: %d" % (len(body) - 30,), b"Content-Length: %d" % (len(body) - 30,)))
        self.assertError(response, 400, "bad_request")
        self.assertNothingStored()

    def test_noFile(self) -> None:
        response = self.request(post(form((b"note", None, b"x"))))
        self.assertError(response, 400, "bad_request")
        self.assertNothingStored()

    def test_tooLarge(self) -> None:
        body = form((b"file", b"a.txt", b"x" * 600000), (b"file", b"b.txt", b"y" * 600000))
        conn = self.connect()
        head, _, rest = post(body).partition(b"\r\n\r\n")
        conn.send(head.replace(b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked")
                  + b"\r\n\r\n")
        conn.turn()
        for i in range(0, len(rest), 100000):
            piece = rest[i:i + 100000]
            conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        [response] = [r for r in conn.responses() if r.status >= 200]
        self.assertError(response, 413, "too_large")
        self.assertNothingStored()

    def test_badFileName(self) -> None:
        response = self.request(post(form((b"file", b"..", b"x"))))
        self.assertError(response, 400, "bad_name")
        self.assertNothingStored()

    def assertOnlyFolder(self, name: str) -> None:
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial", name])
        self.assertTrue((self.root / name).is_dir())
        self.assertEqual(leftInPartial(self.store), [])

    def test_laterPartIsAFolder(self) -> None:
        """
        A form whose second file's name is a folder in the storage answers
        409 conflict and stores nothing, not even its first file.
        """
        (self.root / "two.bin").mkdir()
        body = form((b"file", b"one.txt", b"first"), (b"file", b"two.bin", b"second"))
        response = self.request(post(body))
        self.assertError(response, 409, "conflict")
        self.assertOnlyFolder("two.bin")

    def sendWithFolderMadeMidway(self, body: bytes, folder: str) -> Response:
        """Send a form; make C{folder} once its last part began arriving."""
        request = post(body)
        cut = request.rindex(b"second")
        conn = self.connect()
        conn.send(request[:cut])
        conn.turn()
        (self.root / folder).mkdir()
        conn.send(request[cut:])
        [response] = [r for r in conn.responses() if r.status >= 200]
        return response

    def test_publishedPartTakenBack(self) -> None:
        """
        When a later file of a form fails to be published (a folder took its
        name meanwhile), the files published before it are taken back.
        """
        body = form((b"file", b"one.txt", b"first"), (b"file", b"two.bin", b"second"))
        response = self.sendWithFolderMadeMidway(body, "two.bin")
        self.assertError(response, 409, "conflict")
        self.assertOnlyFolder("two.bin")

    def test_replacedVersionPutBack(self) -> None:
        """A file of a failed form that replaced an older version puts it back."""
        self.assertEqual(self.request(post(form((b"file", b"one.txt", b"old")))).status, 201)
        body = form(
            (b"file", b"one.txt", b"new"),
            (b"file", b"one.txt", b"newer"),
            (b"file", b"two.bin", b"second"),
        )
        response = self.sendWithFolderMadeMidway(body, "two.bin")
        self.assertError(response, 409, "conflict")
        self.assertEqual((self.root / "one.txt").read_bytes(), b"old")
        self.assertEqual(sorted(p.name for p in self.root.iterdir()),
                         [".partial", "one.txt", "two.bin"])
        self.assertEqual(leftInPartial(self.store), [])
        listing = json.loads(self.request(get(b"/files")).body)
        self.assertEqual(listing["files"][0]["sha256"], hashlib.sha256(b"old").hexdigest())


class ClientLeavesWhilePublishingTests(BackendTestCase):
    """
    A client that leaves once its body is in, while its files are being put
    in place (in a thread, which nothing can stop): publishing ends as a
    whole, as if the client had stayed.
    """

    def setUp(self) -> None:
        super().setUp()
        self.runner = HeldPublishing()
        self.store = DiskStore(self.root, run=self.runner)
        self.routes = BackendRoutes(self.store)

    def releaseAll(self) -> None:
        for _ in range(10):
            if not self.runner.held:
                return
            self.runner.release()
        self.fail("publishing never ended")

    def test_form(self) -> None:
        first = self.connect()
        first.send(post(form((b"file", b"one.txt", b"old"))))
        first.turn()
        self.releaseAll()
        self.assertEqual([r.status for r in first.responses()], [201])
        conn = self.connect()
        conn.send(post(form((b"file", b"one.txt", b"new"), (b"file", b"two.bin", b"second"))))
        conn.turn()
        self.assertEqual(len(self.runner.held), 1)  # one.txt being put in place
        conn.lose()
        self.releaseAll()
        self.assertEqual((self.root / "one.txt").read_bytes(), b"new")
        self.assertEqual((self.root / "two.bin").read_bytes(), b"second")
        self.assertEqual(leftInPartial(self.store), [])

    def test_put(self) -> None:
        conn = self.connect()
        conn.send(put(b"/files/left.bin", b"x" * 1000))
        conn.turn()
        self.assertEqual(len(self.runner.held), 1)
        conn.lose()
        self.releaseAll()
        self.assertEqual((self.root / "left.bin").read_bytes(), b"x" * 1000)
        self.assertEqual(leftInPartial(self.store), [])


class DownloadTests(BackendTestCase):
    content = bytes(range(256)) * 40

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.store = DiskStore(self.root, clock=self.clock)
        self.routes = BackendRoutes(self.store)
        self.assertEqual(self.request(put(b"/files/data.bin", self.content)).status, 201)
        self.etag = b'"' + hashlib.sha256(self.content).hexdigest().encode() + b'"'

    def connect(self) -> Connection:
        return Connection(appResource(self.routes.app), clock=self.clock)

    def fetch(self, data: bytes) -> Response:
        conn = self.connect()
        conn.send(data)
        for _ in range(100):
            self.clock.advance(0)
        [response] = conn.responses()
        return response

    def test_whole(self) -> None:
        response = self.fetch(get(b"/files/data.bin"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, self.content)
        headers = response.headers
        self.assertEqual(headers[b"content-length"], b"%d" % len(self.content))
        self.assertEqual(headers[b"etag"], self.etag)
        self.assertEqual(headers[b"accept-ranges"], b"bytes")
        self.assertIn(b"GMT", headers[b"last-modified"])
        self.assertEqual(
            headers[b"content-disposition"],
            b"attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin",
        )

    def test_head(self) -> None:
        response = self.fetch(get(b"/files/data.bin", method=b"HEAD"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers[b"content-length"], b"%d" % len(self.content))
        self.assertEqual(response.body, b"")

    def test_range(self) -> None:
        response = self.fetch(get(b"/files/data.bin", b"Range: bytes=100-199"))
        self.assertEqual(response.status, 206)
        self.assertEqual(response.body, self.content[100:200])
        self.assertEqual(response.headers[b"content-range"], b"bytes 100-199/10240")

    def test_suffixRange(self) -> None:
        response = self.fetch(get(b"/files/data.bin", b"Range: bytes=-100"))
        self.assertEqual((response.status, response.body), (206, self.content[-100:]))

    def test_unsatisfiable(self) -> None:
        response = self.fetch(get(b"/files/data.bin", b"Range: bytes=20000-"))
        self.assertError(response, 416, "range_not_satisfiable")
        self.assertEqual(response.headers[b"content-range"], b"bytes */10240")

    def test_ifRangeStale(self) -> None:
        response = self.fetch(get(b"/files/data.bin", b"Range: bytes=0-9", b'If-Range: "old"'))
        self.assertEqual((response.status, response.body), (200, self.content))

    def test_notModified(self) -> None:
        response = self.fetch(get(b"/files/data.bin", b"If-None-Match: " + self.etag))
        self.assertEqual((response.status, response.body), (304, b""))
        response = self.fetch(get(b"/files/data.bin", b'If-None-Match: "other"'))
        self.assertEqual(response.status, 200)

    def test_unicodeDisposition(self) -> None:
        self.request(put(b"/files/r%C3%A9sum%C3%A9.txt", b"x"))
        response = self.fetch(get(b"/files/r%C3%A9sum%C3%A9.txt"))
        self.assertIn(b"filename*=UTF-8''r%C3%A9sum%C3%A9.txt",
                      response.headers[b"content-disposition"])

    def test_missing(self) -> None:
        self.assertError(self.fetch(get(b"/files/nope")), 404, "not_found")

    def test_slowReaderPausesFile(self) -> None:
        """A client that stops reading stops the file being read."""
        conn = self.connect()
        conn.send(get(b"/files/data.bin"))
        conn.clientStopsReading()  # the transport's buffer is full
        for _ in range(10):
            self.clock.advance(0)
        sent = len(conn.output())
        self.assertLess(sent, len(self.content))
        conn.clientReads()
        for _ in range(100):
            self.clock.advance(0)
        [response] = conn.responses()
        self.assertEqual(response.body, self.content)

    def test_pausedBeforeRegistering(self) -> None:
        """
        A download that starts while the client is not reading (after a
        pipelined response filled its buffer) starts paused.
        """
        conn = self.connect()
        conn.clientStopsReading()
        conn.send(get(b"/files/data.bin"))
        for _ in range(10):
            self.clock.advance(0)
        self.assertEqual(conn.output(), b"")
        conn.clientReads()
        for _ in range(100):
            self.clock.advance(0)
        [response] = conn.responses()
        self.assertEqual(response.body, self.content)

    def test_readerSeesWholeVersion(self) -> None:
        """A download opened before a replace sends the version it opened."""
        conn = self.connect()
        conn.clientStopsReading()
        conn.send(get(b"/files/data.bin"))
        self.clock.advance(0)
        self.assertEqual(self.request(put(b"/files/data.bin", b"new")).status, 200)
        conn.clientReads()
        for _ in range(100):
            self.clock.advance(0)
        [response] = conn.responses()
        self.assertEqual(response.body, self.content)

    def test_delete(self) -> None:
        response = self.fetch(get(b"/files/data.bin", method=b"DELETE"))
        self.assertEqual((response.status, response.body), (204, b""))
        self.assertFalse((self.root / "data.bin").exists())
        self.assertError(self.fetch(get(b"/files/data.bin", method=b"DELETE")), 404, "not_found")

    def test_methodNotAllowed(self) -> None:
        response = self.fetch(get(b"/files/data.bin", method=b"PATCH"))
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers[b"allow"], b"DELETE, GET, HEAD, PUT")


class ListingTests(BackendTestCase):
    def setUp(self) -> None:
        super().setUp()
        for name in ["b", "a", "é", "c d", "Z"]:
            self.request(put(b"/files/" + name.encode().replace(b" ", b"%20")
                             .replace("é".encode(), b"%C3%A9"), name.encode()))

    def listing(self, query: bytes = b"") -> dict[str, object]:
        response = self.request(get(b"/files" + query))
        self.assertEqual(response.status, 200, response.body)
        return json.loads(response.body)  # type: ignore[no-any-return]

    def test_sorted(self) -> None:
        answer = self.listing()
        self.assertEqual([f["name"] for f in answer["files"]], ["Z", "a", "b", "c d", "é"])  # type: ignore[attr-defined]
        self.assertNotIn("next", answer)

    def test_pages(self) -> None:
        names: list[str] = []
        query = b"?limit=2"
        while True:
            answer = self.listing(query)
            names += [f["name"] for f in answer["files"]]  # type: ignore[attr-defined]
            if "next" not in answer:
                break
            after = str(answer["next"]).encode().replace(b" ", b"%20")
            query = b"?limit=2&after=" + after
        self.assertEqual(names, ["Z", "a", "b", "c d", "é"])

    def test_badLimit(self) -> None:
        for query in [b"?limit=0", b"?limit=x", b"?limit=100000"]:
            self.assertError(self.request(get(b"/files" + query)), 400, "bad_request")

    def test_unrepresentableNamesLeftOut(self) -> None:
        """
        Files put in the folder by other means under names the API cannot
        name (not UTF-8, control characters) are left out of the listing.
        """
        for raw in [b"bad\xffname", b"a\nb", b"\x7f", b"tab\there"]:
            fd = os.open(bytes(self.root) + b"/" + raw, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
        names = ["Z", "a", "b", "c d", "é"]
        self.assertEqual([f["name"] for f in self.listing()["files"]], names)  # type: ignore[attr-defined]
        answer = self.listing(b"?limit=3")
        self.assertEqual([f["name"] for f in answer["files"]], names[:3])  # type: ignore[attr-defined]
        self.assertEqual(answer["next"], "b")
        answer = self.listing(b"?after=b")
        self.assertEqual([f["name"] for f in answer["files"]], names[3:])  # type: ignore[attr-defined]


class ConcurrentWriterTests(BackendTestCase):
    def test_twoWritersOneWins(self) -> None:
        """Two interleaved uploads to one name leave one of them, whole."""
        one, two = self.connect(), self.connect()
        a, b = b"a" * 1000, b"b" * 1000
        one.send(put(b"/files/same", a)[:-500])
        two.send(put(b"/files/same", b)[:-500])
        one.turn()
        two.turn()
        one.send(a[:500])
        two.send(b[:500])
        self.assertIn((self.root / "same").read_bytes(), (a, b))
        self.assertEqual(leftInPartial(self.store), [])

    def test_ifNoneMatchRace(self) -> None:
        """
        Two uploads of one name with C{If-None-Match: *} whose bodies end
        together, both published before either is in place: one gets 201,
        the other 412 exists and stores nothing.
        """
        runner = HeldPublishing()
        self.store = DiskStore(self.root, run=runner)
        self.routes = BackendRoutes(self.store)
        one, two = self.connect(), self.connect()
        a, b = b"a" * 1000, b"b" * 1000
        one.send(put(b"/files/same", a, b"If-None-Match: *")[:-1])
        two.send(put(b"/files/same", b, b"If-None-Match: *")[:-1])
        one.turn()
        two.turn()
        one.send(a[-1:])
        two.send(b[-1:])
        # Both passed every check: one is being put in place, the other
        # waits for the next round of the group commit.
        self.assertEqual((len(runner.held), self.store.commits.waiting), (1, 1))
        runner.release()
        runner.release()
        [first] = one.responses()
        [second] = two.responses()
        self.assertEqual(first.status, 201, first.body)
        self.assertError(second, 412, "exists")
        self.assertEqual((self.root / "same").read_bytes(), a)
        self.assertEqual(leftInPartial(self.store), [])


class HeldPublishing:
    """
    A store runner that holds each round of its group commit (files synced
    and renamed into place, in a thread in the service) until released;
    the rest runs inline.
    """

    def __init__(self) -> None:
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if f is not runRound:
            return maybeDeferred(f, *args)
        d: Deferred[Any] = Deferred()
        self.held.append((f, args, d))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for f, args, d in held:
            maybeDeferred(f, *args).chainDeferred(d)

