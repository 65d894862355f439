"""
tus concatenation on the backend's routes, in memory over a disk store:
partial uploads never become files, a final upload is made of complete
ones and published once, with the SHA-256 of the whole; and C{GET} of a
finished upload gives its file's bytes.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from streamrelay.backend.routes import BackendRoutes
from streamrelay.hooks import Decision
from streamrelay.hooks.interfaces import HookRejected
from streamrelay.store.disk import DiskStore
from streamrelay.store.placing import SHA256_XATTR
from streamrelay.tus import diskconcat
from streamrelay.tus.disk import DiskResumableStore
from streamrelay.tus.protocol import TusUploads
from tests.backendcases import TusTestCase
from tests.hashing import sha
from tests.httpfakes import Response
from tests.precreatefakes import FakeHooks
from tests.rawrequests import JSON, OCTETS, TUS, b64, get, meta, patch, req

FIRST = b"the first part, "
SECOND = b"then the second."
WHOLE = FIRST + SECOND


class ConcatTestCase(TusTestCase):
    maxSize = 1000

    def setUp(self) -> None:
        super().setUp()
        # A store whose reads are paced by the test's clock.
        self.store = DiskStore(self.root, clock=self.clock)
        self.resumable = DiskResumableStore(self.root / ".tus", self.store, rename=self.rename)
        self.hooks = FakeHooks()
        self.tus = TusUploads(self.resumable, self.store, self.clock, maxSize=self.maxSize,
                              expiry=3600, hooks=self.hooks)
        self.routes = BackendRoutes(
            self.store, maxSize=self.maxSize, tus=self.tus, hooks=self.hooks
        )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "f.bin").write_bytes(b"the good file")

    def partial(self, data: bytes, *headers: bytes, send: bool = True) -> bytes:
        """A partial upload of C{data}'s length, holding C{data} unless not C{send}."""
        response = self.request(req(
            b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
            b"Upload-Length: %d" % (len(data),), *headers,
        ))
        self.assertEqual(response.status, 201, response.body)
        location = response.headers[b"location"]
        if send and data:
            self.assertEqual(self.request(patch(location, 0, data)).status, 204)
        return location

    def final(self, *urls: bytes, name: str = "whole.bin", headers: tuple[bytes, ...] = (),
              body: bytes | None = None) -> Response:
        metadata = (meta(name),) if name else ()
        return self.request(req(
            b"POST", b"/uploads", TUS, b"Upload-Concat: final;" + b" ".join(urls),
            *metadata, *headers, body=body,
        ))

    def fetch(self, data: bytes) -> Response:
        """The answer to C{data}, streamed in as many turns as it takes."""
        conn = self.connect()
        conn.send(data)
        for _ in range(100):
            self.clock.advance(0)
        [response] = conn.responses()
        return response

    def finalAsked(self) -> list[Any]:
        """The pre-create questions about files (partial uploads are asked with no name)."""
        return [asked for asked in self.hooks.asked if asked.name]

    def uploads(self) -> list[str]:
        return self.successResultOf(self.resumable.ids())

    def listing(self) -> list[str]:
        files = json.loads(self.request(get(b"/files")).body)["files"]
        return [f["name"] for f in files]

    def assertUntouched(self) -> None:
        """Only the stored file, as it was."""
        self.assertEqual(self.files(), ["f.bin"])
        self.assertEqual(self.listing(), ["f.bin"])
        self.assertEqual((self.root / "f.bin").read_bytes(), b"the good file")
        self.assertEqual(self.hooks.finishedFiles, [])


class PartialTests(ConcatTestCase):
    def test_advertised(self) -> None:
        response = self.request(req(b"OPTIONS", b"/uploads"))
        self.assertIn(b"concatenation", response.headers[b"tus-extension"].split(b","))

    def test_neverPublished(self) -> None:
        """
        A complete partial upload carrying the name of a stored file (as
        tus-js-client's partial uploads may) does not replace it, listed or
        on disk, when its last byte arrives or when asked for with HEAD; no
        hook hears of it.
        """
        location = self.partial(b"frag", meta("f.bin"))
        response = self.head(location)
        self.assertEqual(response.headers[b"upload-concat"], b"partial")
        self.assertEqual(response.headers[b"upload-offset"], b"4")
        self.assertNotIn(b"content-location", response.headers)
        self.assertUntouched()
        self.assertEqual([(a.name, a.size) for a in self.hooks.asked], [("", 4)])
        info = json.loads(self.request(req(b"GET", location, TUS)).body)
        self.assertEqual((info["concat"], info["file"], info["offset"]), ("partial", None, 4))

    def test_hookAsked(self) -> None:
        """
        A partial upload stores bytes, so pre-create is asked before it is
        made (with no name: it makes no file): a refusal keeps it from
        being made, a limit holds for it; a name or metadata do not apply.
        """
        self.hooks.decide = lambda name: HookRejected(403, "not you")
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
                                    b"Upload-Length: 4", OCTETS, body=b"frag"))
        self.assertError(response, 403, "rejected")
        self.assertEqual(self.uploads(), [])
        self.hooks.decide = lambda name: Decision(maxSize=3, name="x.bin", metadata={"k": "v"})
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
                                    b"Upload-Length: 4"))
        self.assertError(response, 413, "too_large")
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
                                    b"Upload-Defer-Length: 1"))
        self.assertEqual(response.status, 201, response.body)
        location = response.headers[b"location"]
        response = self.request(patch(location, 0, b"abcd"))
        self.assertError(response, 413, "too_large")
        self.assertEqual([(a.name, a.size) for a in self.hooks.asked],
                         [("", 4), ("", 4), ("", None)])
        self.assertUntouched()

    def test_creationWithUpload(self) -> None:
        """All its bytes in the creation: complete, and still no file."""
        response = self.request(req(
            b"POST", b"/uploads", TUS, b"Upload-Concat: partial", b"Upload-Length: 4",
            meta("f.bin"), OCTETS, body=b"frag",
        ))
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(response.headers[b"upload-offset"], b"4")
        self.assertNotIn(b"content-location", response.headers)
        self.assertUntouched()

    def test_empty(self) -> None:
        """An empty partial upload is complete at once, and no file either."""
        self.partial(b"", meta("f.bin"))
        self.assertUntouched()

    def test_needsNoName(self) -> None:
        location = self.partial(b"frag")
        self.assertEqual(self.head(location).headers[b"upload-offset"], b"4")

    def test_badMetadata(self) -> None:
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
                                    b"Upload-Length: 4", b"Upload-Metadata: a b c"))
        self.assertError(response, 400, "bad_request")
        self.assertEqual(self.uploads(), [])

    def test_maxSize(self) -> None:
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
                                    b"Upload-Length: 1001"))
        self.assertError(response, 413, "too_large")
        self.assertEqual(self.uploads(), [])

    def test_terminated(self) -> None:
        """Terminating a partial upload deletes no file: no post-delete."""
        location = self.partial(b"frag", meta("f.bin"))
        self.assertEqual(self.request(req(b"DELETE", location, TUS)).status, 204)
        self.assertEqual(self.hooks.deletedNames, [])
        self.assertEqual(self.uploads(), [])
        self.assertUntouched()


class FinalTests(ConcatTestCase):
    def test_final(self) -> None:
        """
        The final upload holds the partial uploads' bytes in order, is
        published once under its name with the SHA-256 of the whole, after
        the hook was asked for it with the sum of the lengths.
        """
        a = self.partial(FIRST, meta("f.bin"))
        b = self.partial(SECOND, meta("f.bin"))
        response = self.final(a, b)
        self.assertEqual(response.status, 201, response.body)
        location = response.headers[b"location"]
        self.assertRegex(location.decode(), r"^/uploads/[0-9a-f]{32}$")
        self.assertEqual(response.headers[b"upload-offset"], b"%d" % (len(WHOLE),))
        self.assertEqual(response.headers[b"content-location"], b"/files/whole.bin")
        self.assertEqual((self.root / "whole.bin").read_bytes(), WHOLE)
        self.assertEqual(
            os.getxattr(self.root / "whole.bin", SHA256_XATTR).decode(), sha(WHOLE)
        )
        self.assertEqual(self.listing(), ["f.bin", "whole.bin"])
        self.assertEqual((self.root / "f.bin").read_bytes(), b"the good file")
        [asked] = self.finalAsked()
        self.assertEqual((asked.name, asked.size, asked.context.protocol),
                         ("whole.bin", len(WHOLE), "tus"))
        [finished] = self.hooks.finishedFiles
        self.assertEqual((finished.name, finished.size, finished.sha256),
                         ("whole.bin", len(WHOLE), sha(WHOLE)))

        head = self.head(location)
        self.assertEqual(head.status, 200)
        self.assertEqual(head.headers[b"upload-concat"], b"final;" + a + b" " + b)
        self.assertEqual(head.headers[b"upload-offset"], b"%d" % (len(WHOLE),))
        self.assertEqual(head.headers[b"upload-length"], b"%d" % (len(WHOLE),))
        info = json.loads(self.request(req(b"GET", location, TUS, JSON)).body)
        self.assertEqual((info["concat"], info["file"]["sha256"]), ("final", sha(WHOLE)))
        # HEAD again publishes nothing again.
        self.assertEqual(len(self.hooks.finishedFiles), 1)

    def test_partialsKeptUntilExpiry(self) -> None:
        """
        As tusd, the partial uploads stay (another final upload may be made
        of them) until they expire and are swept.
        """
        a, b = self.partial(FIRST), self.partial(SECOND)
        self.assertEqual(self.final(a, b).status, 201)
        self.assertEqual(self.final(b, a, name="other.bin").status, 201)
        self.assertEqual((self.root / "other.bin").read_bytes(), SECOND + FIRST)
        self.assertEqual(self.head(a).status, 200)
        self.clock.advance(3601)
        self.successResultOf(self.tus.sweep())
        self.assertEqual(self.head(a).status, 404)
        self.assertEqual(self.uploads(), [])
        self.assertEqual(self.files(), ["f.bin", "other.bin", "whole.bin"])

    def test_urls(self) -> None:
        """
        Absolute and relative URLs, with a query (a signed URL's) or not,
        name the same uploads; one upload may be named twice.
        """
        a, b = self.partial(FIRST), self.partial(SECOND)
        absolute = b"https://files.example" + a + b"?sr-key=k1&sr-expires=9&sr-signature=ab"
        response = self.final(absolute, b[1:] + b"?x=1", a)
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual((self.root / "whole.bin").read_bytes(), WHOLE + FIRST)

    def test_lengthGiven(self) -> None:
        """An Upload-Length equal to the sum is accepted; another one is refused."""
        a, b = self.partial(FIRST), self.partial(SECOND)
        response = self.final(a, b, headers=(b"Upload-Length: %d" % (len(WHOLE) + 1),))
        self.assertError(response, 400, "bad_request")
        response = self.final(a, b, headers=(b"Upload-Length: %d" % (len(WHOLE),),))
        self.assertEqual(response.status, 201, response.body)

    def test_noPatch(self) -> None:
        a = self.partial(FIRST)
        location = self.final(a).headers[b"location"]
        response = self.request(patch(location, len(FIRST), b"more"))
        self.assertError(response, 403, "forbidden")
        self.assertEqual((self.root / "whole.bin").read_bytes(), FIRST)

    def test_renamedByHook(self) -> None:
        """The hook's decision (name, metadata) holds for the final upload."""
        self.hooks.decide = lambda name: Decision(name="renamed.bin", metadata={"k": "v"})
        a = self.partial(FIRST)
        response = self.final(a)
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(response.headers[b"content-location"], b"/files/renamed.bin")
        self.assertEqual(self.files(), ["f.bin", "renamed.bin"])

    def test_copyFallback(self) -> None:
        """Where copy_file_range cannot copy, the bytes are read and written."""
        def unsupported(*args: Any) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        self.patch(diskconcat, "copyFileRange", unsupported)
        a, b = self.partial(FIRST), self.partial(SECOND)
        self.assertEqual(self.final(a, b).status, 201)
        self.assertEqual((self.root / "whole.bin").read_bytes(), WHOLE)
        self.patch(diskconcat, "copyFileRange", None)
        self.assertEqual(self.final(b, a, name="other.bin").status, 201)
        self.assertEqual((self.root / "other.bin").read_bytes(), SECOND + FIRST)


class CopiedFinalTests(FinalTests):
    """The same, with the final file copied into the store, not renamed."""

    rename = False


class RefusedFinalTests(ConcatTestCase):
    """Each refusal creates nothing, publishes nothing, asks no hook when it need not."""

    def assertRefused(self, response: Response, status: int, code: str,
                      kept: list[bytes]) -> None:
        self.assertError(response, status, code)
        self.assertNotIn(b"location", response.headers)
        self.assertEqual(self.uploads(), sorted(k.rsplit(b"/", 1)[1].decode() for k in kept))
        self.assertUntouched()

    def test_malformed(self) -> None:
        a = self.partial(FIRST)
        for value in [b"", b"junk", b"final", b"final;", b"final; ", b"partial;x",
                      b"final;/files/f.bin", b"final;" + a + b" /elsewhere/x",
                      b"final;/uploads/", b"final;\xff"]:
            response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: " + value,
                                        b"Upload-Length: 4", meta("f.bin")))
            self.assertRefused(response, 400, "bad_request", [a])
        self.assertEqual(self.finalAsked(), [])

    def test_unknown(self) -> None:
        a = self.partial(FIRST)
        for url in [b"/uploads/" + b"0" * 32, b"/uploads/nope"]:
            self.assertRefused(self.final(a, url), 404, "not_found", [a])
        self.assertEqual(self.finalAsked(), [])

    def test_unfinished(self) -> None:
        a = self.partial(FIRST)
        b = self.partial(SECOND, send=False)
        self.assertEqual(self.request(patch(b, 0, SECOND[:3])).status, 204)
        self.assertRefused(self.final(a, b), 400, "bad_request", [a, b])
        c = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Concat: partial",
                             b"Upload-Defer-Length: 1")).headers[b"location"]
        self.assertRefused(self.final(a, c), 400, "bad_request", [a, b, c])

    def test_notPartial(self) -> None:
        """An ordinary upload, even complete, and a final one are no partial uploads."""
        a = self.partial(FIRST)
        plain = self.create("p.bin", 4, body=None)
        self.assertRefused(self.final(a, plain), 400, "bad_request", [a, plain])
        finished = self.create("f.bin", 4, body=None)
        response = self.final(a, name="")
        self.assertError(response, 400, "bad_name")
        made = self.final(a).headers[b"location"]
        response = self.final(a, made, name="again.bin")
        self.assertError(response, 400, "bad_request")
        self.assertFalse((self.root / "again.bin").exists())
        del finished

    def test_expired(self) -> None:
        a = self.partial(FIRST)
        self.clock.advance(3601)
        self.assertRefused(self.final(a), 410, "gone", [a])

    def test_noName(self) -> None:
        a = self.partial(FIRST)
        self.assertRefused(self.final(a, name=""), 400, "bad_name", [a])
        response = self.final(a, headers=(b"Upload-Metadata: filename " +
                                          b64("../up").encode(),), name="")
        self.assertRefused(response, 400, "bad_name", [a])

    def test_deferredLength(self) -> None:
        a = self.partial(FIRST)
        response = self.final(a, headers=(b"Upload-Defer-Length: 1",))
        self.assertRefused(response, 400, "bad_request", [a])

    def test_body(self) -> None:
        a = self.partial(FIRST)
        response = self.final(a, headers=(OCTETS,), body=b"more")
        self.assertRefused(response, 400, "bad_request", [a])

    def test_tooLarge(self) -> None:
        """The sum over --max-size is refused, though each partial upload fits."""
        a, b = self.partial(b"a" * 600), self.partial(b"b" * 600)
        self.assertRefused(self.final(a, b), 413, "too_large", [a, b])
        self.assertEqual(self.finalAsked(), [])

    def test_proxysLimit(self) -> None:
        """
        The proxy's limit (a signed URL's sr-max-size, its --max-size), told
        in Streamrelay-Client-Max-Size, holds for the sum, before the hook
        is asked; a sum within it is made.
        """
        a, b = self.partial(FIRST), self.partial(SECOND)
        limit = b"Streamrelay-Client-Max-Size: %d" % (len(WHOLE) - 1,)
        self.assertRefused(self.final(a, b, headers=(limit,)), 413, "too_large", [a, b])
        self.assertEqual(self.finalAsked(), [])
        limit = b"Streamrelay-Client-Max-Size: %d" % (len(WHOLE),)
        self.assertEqual(self.final(a, b, headers=(limit,)).status, 201)
        self.assertEqual((self.root / "whole.bin").read_bytes(), WHOLE)

    def test_hookLimit(self) -> None:
        self.hooks.decide = lambda name: Decision(maxSize=len(WHOLE) - 1)
        a, b = self.partial(FIRST), self.partial(SECOND)
        self.assertRefused(self.final(a, b), 413, "too_large", [a, b])

    def test_hookRejects(self) -> None:
        self.hooks.decide = lambda name: HookRejected(403, "not yours") if name else Decision()
        a, b = self.partial(FIRST), self.partial(SECOND)
        self.assertRefused(self.final(a, b), 403, "rejected", [a, b])

    def test_storageFails(self) -> None:
        """A concatenation the disk fails leaves no final upload, no file."""
        def failing(*args: Any) -> int:
            raise OSError(errno.EIO, "the disk failed")

        self.patch(diskconcat, "copyFileRange", failing)
        a, b = self.partial(FIRST), self.partial(SECOND)
        response = self.final(a, b)
        self.assertGreaterEqual(response.status, 500, response.body)
        self.flushLoggedErrors(OSError)
        self.assertEqual(self.uploads(), sorted(k.rsplit(b"/", 1)[1].decode() for k in [a, b]))
        self.assertUntouched()


class FinishedGetTests(ConcatTestCase):
    """C{GET /uploads/{id}} of a finished upload: the file's bytes, as tusd serves them."""

    def finished(self, data: bytes, name: str = "got.txt") -> bytes:
        location = self.create(name, len(data), body=None)
        if data:
            self.assertEqual(self.request(patch(location, 0, data)).status, 204)
        return location

    def test_bytes(self) -> None:
        location = self.finished(b"hello world")
        response = self.fetch(req(b"GET", location, TUS))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello world")
        self.assertEqual(response.headers[b"content-length"], b"11")
        self.assertEqual(response.headers[b"content-type"].split(b";")[0], b"text/plain")
        self.assertEqual(response.headers[b"tus-resumable"], b"1.0.0")
        ranged = self.fetch(req(b"GET", location, b"Range: bytes=6-"))
        self.assertEqual((ranged.status, ranged.body), (206, b"world"))
        for accept in [b"*/*", b"application/json, text/plain, */*", b"text/html"]:
            response = self.fetch(req(b"GET", location, b"Accept: " + accept))
            self.assertEqual(response.body, b"hello world", accept)

    def test_final(self) -> None:
        a, b = self.partial(FIRST), self.partial(SECOND)
        location = self.final(a, b).headers[b"location"]
        self.assertEqual(self.fetch(req(b"GET", location, TUS)).body, WHOLE)

    def test_empty(self) -> None:
        location = self.finished(b"")
        response = self.fetch(req(b"GET", location, TUS))
        self.assertEqual((response.status, response.body), (200, b""))

    def test_json(self) -> None:
        location = self.finished(b"hello world")
        response = self.fetch(req(b"GET", location, JSON))
        self.assertEqual(json.loads(response.body)["file"]["sha256"], sha(b"hello world"))

    def test_unfinished(self) -> None:
        """An unfinished upload, and a partial one, answer their JSON."""
        location = self.create("u.bin", 5)
        self.assertEqual(json.loads(self.fetch(req(b"GET", location)).body)["offset"], 0)
        partial = self.partial(FIRST)
        info = json.loads(self.fetch(req(b"GET", partial)).body)
        self.assertEqual((info["offset"], info["file"]), (len(FIRST), None))

    def test_replaced(self) -> None:
        """Once its file is replaced or deleted, a finished upload's bytes are gone: 410."""
        location = self.finished(b"hello world")
        self.finished(b"another", "got.txt")
        self.assertError(self.fetch(req(b"GET", location)), 410, "gone")
        self.assertEqual(self.request(req(b"DELETE", b"/files/got.txt")).status, 204)
        self.assertError(self.fetch(req(b"GET", location)), 410, "gone")

    def test_unknown(self) -> None:
        self.assertError(self.fetch(req(b"GET", b"/uploads/" + b"0" * 32)), 404, "not_found")
