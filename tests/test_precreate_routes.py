"""
The backend's routes enforcing pre-create decisions (a fake hook, in
memory): PUT, each file of a form, tus creation.
"""

from __future__ import annotations

import json
import os

from streamrelay.backend.routes import BackendRoutes
from streamrelay.hooks import Decision, HookRejected, HookUnavailable
from tests.backendcases import BackendTestCase, TusTestCase
from tests.precreatefakes import FakeHooks
from tests.rawrequests import (
    BOUNDARY,
    JSON,
    TUS,
    chunk,
    chunkedHead,
    form,
    get,
    meta,
    patch,
    post,
    put,
    req,
)

FORM_HEAD = b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="


def rename(to: str) -> FakeHooks:
    return FakeHooks(lambda name: Decision(name=to))


class PutTests(BackendTestCase):
    maxSize = 1000

    def useHooks(self, hooks: FakeHooks, secret: bytes | None = None) -> FakeHooks:
        self.routes = BackendRoutes(self.store, maxSize=self.maxSize, hooks=hooks, secret=secret)
        return hooks

    def listing(self) -> list[dict[str, object]]:
        response = self.request(get(b"/files"))
        files: list[dict[str, object]] = json.loads(response.body)["files"]
        return files

    def test_asked(self) -> None:
        """The hook is asked with the name, declared size and the request's context."""
        hooks = self.useHooks(FakeHooks())
        response = self.request(put(b"/files/a.txt", b"hello", b"X-Request-Id: r-1",
                                    b"Authorization: Bearer user", b"Cookie: c=1"))
        self.assertEqual(response.status, 201)
        [asked] = hooks.asked
        self.assertEqual((asked.name, asked.size, asked.metadata), ("a.txt", 5, None))
        context = asked.context
        self.assertEqual((context.id, context.protocol, context.identity), ("r-1", "put", None))
        self.assertEqual(context.headers, {"Authorization": "Bearer user", "Cookie": "c=1"})
        chunked = self.connect()
        chunked.send(chunkedHead(b"/files/b") + chunk(b"x") + b"0\r\n\r\n")
        chunked.turn()
        self.assertIsNone(hooks.asked[-1].size)

    def test_trustedContext(self) -> None:
        """The Streamrelay-Client-* headers are believed with the shared secret only."""
        hooks = self.useHooks(FakeHooks(), secret=b"s3cret")
        self.request(put(b"/files/a", b"x", b"Authorization: Bearer s3cret",
                         b"Streamrelay-Client-Address: 198.51.100.9",
                         b"Streamrelay-Client-Identity: token:ci",
                         b"Streamrelay-Client-Authorization: Bearer user"))
        context = hooks.asked[-1].context
        self.assertEqual((context.remote, context.identity), ("198.51.100.9", "token:ci"))
        self.assertEqual(context.headers, {"Authorization": "Bearer user"})
        hooks = self.useHooks(FakeHooks())
        self.request(put(b"/files/a", b"x", b"Streamrelay-Client-Address: 198.51.100.9",
                         b"Streamrelay-Client-Identity: token:ci"))
        context = hooks.asked[-1].context
        self.assertNotEqual(context.remote, "198.51.100.9")
        self.assertIsNone(context.identity)

    def test_rejected(self) -> None:
        self.useHooks(FakeHooks(lambda name: HookRejected(402, "Pay first.")))
        response = self.request(put(b"/files/a.txt", b"hello"))
        self.assertError(response, 402, "rejected")
        self.assertEqual(json.loads(response.body)["message"], "Pay first.")
        self.assertNothingStored()

    def test_unavailable(self) -> None:
        self.useHooks(FakeHooks(lambda name: HookUnavailable()))
        response = self.request(put(b"/files/a.txt", b"hello"))
        self.assertError(response, 503, "hook_unavailable")
        self.assertEqual(response.headers[b"retry-after"], b"5")
        self.assertNothingStored()

    def test_nothingStoredWhileAsking(self) -> None:
        """
        While the hook is asked, no upload is begun (no partial file), and
        a refusal then keeps nothing of the body that came meanwhile.
        """
        hooks = self.useHooks(FakeHooks(lambda name: None))
        conn = self.connect()
        conn.send(chunkedHead(b"/files/a") + chunk(b"x" * 500))
        conn.turn()
        self.assertEqual(len(hooks.asked), 1)
        self.assertNothingStored()
        self.assertEqual(conn.responses(), [])
        hooks.asked[0].answer.errback(HookRejected(403, "no"))
        conn.send(chunk(b"y" * 100) + b"0\r\n\r\n")
        conn.turn()
        [response] = conn.responses()
        self.assertError(response, 403, "rejected")
        self.assertNothingStored()

    def test_renamed(self) -> None:
        self.useHooks(rename("b.txt"))
        response = self.request(put(b"/files/a.txt", b"hello"))
        self.assertEqual(response.status, 201)
        self.assertEqual(json.loads(response.body)["name"], "b.txt")
        self.assertEqual(response.headers[b"location"], b"/files/b.txt")
        self.assertEqual(sorted(os.listdir(self.root)), [".partial", "b.txt"])

    def test_onlyIfNewChecksFinalName(self) -> None:
        """With If-None-Match: *, the name the hook gives is the one checked."""
        (self.root / "b.txt").write_bytes(b"older")
        self.useHooks(rename("b.txt"))
        response = self.request(put(b"/files/a.txt", b"hello", b"If-None-Match: *"))
        self.assertError(response, 412, "exists")
        self.assertEqual((self.root / "b.txt").read_bytes(), b"older")
        self.assertFalse((self.root / "a.txt").exists())

    def test_maxSizeDeclared(self) -> None:
        """A Content-Length over the hook's limit: 413 at once."""
        self.useHooks(FakeHooks(lambda name: Decision(maxSize=10)))
        conn = self.connect()
        conn.send(b"PUT /files/a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        conn.turn()
        [response] = conn.responses()
        self.assertError(response, 413, "too_large")
        self.assertIn(b"10 bytes", response.body)
        self.assertNothingStored()
        self.assertEqual(self.request(put(b"/files/a", b"x" * 10)).status, 201)

    def test_maxSizeChunked(self) -> None:
        """A chunked body over the hook's limit: 413 too_large, nothing kept."""
        self.useHooks(FakeHooks(lambda name: Decision(maxSize=10)))
        conn = self.connect()
        conn.send(chunkedHead(b"/files/a") + chunk(b"x" * 6))
        conn.turn()
        conn.send(chunk(b"y" * 6) + b"0\r\n\r\n")
        conn.turn()
        [response] = conn.responses()
        self.assertError(response, 413, "too_large")
        self.assertNothingStored()

    def test_maxSizeLargerThanBackends(self) -> None:
        """The backend's own limit stays when the hook's is larger."""
        self.useHooks(FakeHooks(lambda name: Decision(maxSize=10**9)))
        conn = self.connect()
        conn.send(chunkedHead(b"/files/a") + chunk(b"x" * 1001) + b"0\r\n\r\n")
        conn.turn()
        [response] = conn.responses()
        self.assertError(response, 413, "too_large")
        self.assertIn(b"1000 bytes", response.body)

    def test_metadata(self) -> None:
        """Metadata is in the upload's answer, the listing, and goes with a new version."""
        self.useHooks(FakeHooks(lambda name: Decision(metadata={"owner": "ana"})))
        response = self.request(put(b"/files/a", b"one"))
        self.assertEqual(json.loads(response.body)["metadata"], {"owner": "ana"})
        self.assertEqual([f.get("metadata") for f in self.listing()], [{"owner": "ana"}])
        self.useHooks(FakeHooks())
        response = self.request(put(b"/files/a", b"two"))
        self.assertEqual(response.status, 200)
        self.assertNotIn("metadata", json.loads(response.body))
        self.assertNotIn("metadata", self.listing()[0])


class FormTests(BackendTestCase):
    def useHooks(self, hooks: FakeHooks) -> FakeHooks:
        self.routes = BackendRoutes(self.store, hooks=hooks)
        return hooks

    def test_eachFileAsked(self) -> None:
        hooks = self.useHooks(FakeHooks(lambda name: Decision(
            name="renamed" if name == "one" else None,
            metadata={"n": name},
        )))
        body = form((b"file", b"one", b"1"), (b"note", None, b"text"), (b"file", b"two", b"22"))
        response = self.request(post(body))
        self.assertEqual(response.status, 201, response.body)
        files = json.loads(response.body)["files"]
        self.assertEqual([(f["name"], f["metadata"]) for f in files],
                         [("renamed", {"n": "one"}), ("two", {"n": "two"})])
        self.assertEqual([(a.name, a.size, a.context.protocol) for a in hooks.asked],
                         [("one", None, "form"), ("two", None, "form")])
        self.assertEqual((self.root / "renamed").read_bytes(), b"1")

    def test_rejectRefusesWholeForm(self) -> None:
        """The second file refused: the hook's status, and the first is not kept."""
        self.useHooks(FakeHooks(
            lambda name: HookRejected(409, "no two") if name == "two" else Decision()
        ))
        body = form((b"file", b"one", b"1" * 3000), (b"file", b"two", b"2"))
        response = self.request(post(body))
        self.assertError(response, 409, "rejected")
        self.assertNothingStored()

    def test_unavailable(self) -> None:
        self.useHooks(FakeHooks(lambda name: HookUnavailable()))
        response = self.request(post(form((b"file", b"one", b"1"))))
        self.assertError(response, 503, "hook_unavailable")
        self.assertNothingStored()

    def test_heldWhileAsking(self) -> None:
        """
        While the hook is asked about a file, the form stores none of it
        and reads no more of its body; the answer lets it go on.
        """
        hooks = self.useHooks(FakeHooks(lambda name: None))
        body = form((b"file", b"one", b"1" * 100), (b"file", b"two", b"2" * 100))
        conn = self.connect()
        conn.send(post(body))
        conn.turn()
        self.assertEqual([a.name for a in hooks.asked], ["one"])
        self.assertNothingStored()
        self.assertTrue(conn.paused)
        hooks.asked[0].answer.callback(Decision(metadata={"k": "1"}))
        conn.turn()
        self.assertEqual([a.name for a in hooks.asked], ["one", "two"])
        self.assertEqual(conn.responses(), [])
        hooks.asked[1].answer.callback(Decision(name="deux"))
        conn.turn()
        [response] = conn.responses()
        self.assertEqual(response.status, 201, response.body)
        files = json.loads(response.body)["files"]
        self.assertEqual([(f["name"], f["size"], f.get("metadata")) for f in files],
                         [("one", 100, {"k": "1"}), ("deux", 100, None)])

    def test_heldWhileAskingChained(self) -> None:
        """
        A form whose whole body arrives while the hook is asked about its
        first file, the answer being a Deferred that is already called but
        waits on another (as the real hook's HTTP request is): every file is
        asked about in turn and stored, none is dropped, and the form is
        answered only once all are decided.
        """
        hooks = self.useHooks(FakeHooks(lambda name: None, chained=True))
        body = form((b"file", b"one", b"1" * 100), (b"file", b"two", b"2" * 100))
        head = (
            b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
            + BOUNDARY + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        conn = self.connect()
        conn.send(head + chunk(body) + b"0\r\n\r\n")
        conn.turn()
        self.assertEqual([a.name for a in hooks.asked], ["one"])
        self.assertEqual(conn.responses(), [])
        hooks.asked[0].answer.callback(Decision())
        conn.turn()
        self.assertEqual([a.name for a in hooks.asked], ["one", "two"])
        self.assertEqual(conn.responses(), [])
        hooks.asked[1].answer.callback(Decision())
        conn.turn()
        [response] = conn.responses()
        self.assertEqual(response.status, 201, response.body)
        files = json.loads(response.body)["files"]
        self.assertEqual([(f["name"], f["size"]) for f in files], [("one", 100), ("two", 100)])

    def test_heldThenRefused(self) -> None:
        hooks = self.useHooks(FakeHooks(lambda name: None))
        conn = self.connect()
        conn.send(post(form((b"file", b"one", b"1" * 100))))
        conn.turn()
        hooks.asked[0].answer.errback(HookRejected(451, "not here"))
        conn.turn()
        [response] = conn.responses()
        self.assertError(response, 451, "rejected")
        self.assertNothingStored()

    def test_maxSizePerFile(self) -> None:
        """A file over the hook's limit for it: 413, nothing of the form kept."""
        self.useHooks(FakeHooks(lambda name: Decision(maxSize=10 if name == "two" else None)))
        body = form((b"file", b"one", b"1" * 50), (b"file", b"two", b"2" * 11))
        response = self.request(post(body))
        self.assertError(response, 413, "too_large")
        self.assertNothingStored()
        body = form((b"file", b"one", b"1" * 50), (b"file", b"two", b"2" * 10))
        self.assertEqual(self.request(post(body)).status, 201)


class TusTests(TusTestCase):
    maxSize = 1000

    def useHooks(self, hooks: FakeHooks) -> FakeHooks:
        self.routes = BackendRoutes(self.store, maxSize=self.maxSize, tus=self.tus, hooks=hooks)
        return hooks

    def uploads(self) -> list[str]:
        return self.successResultOf(self.resumable.ids())

    def test_askedAtCreationOnly(self) -> None:
        hooks = self.useHooks(FakeHooks())
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 6",
                                    meta("a.txt", filetype="text/plain")))
        location = response.headers[b"location"]
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        self.assertEqual(self.request(patch(location, 3, b"def")).status, 204)
        [asked] = hooks.asked
        self.assertEqual((asked.name, asked.size, asked.context.protocol), ("a.txt", 6, "tus"))
        self.assertEqual(asked.metadata, {"filename": "a.txt", "filetype": "text/plain"})
        self.create("b.txt", None)
        self.assertIsNone(hooks.asked[-1].size)

    def test_rejected(self) -> None:
        self.useHooks(FakeHooks(lambda name: HookRejected(403, "no")))
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 3", meta("a")))
        self.assertError(response, 403, "rejected")
        self.assertEqual(self.uploads(), [])
        self.assertEqual(self.files(), [])

    def test_unavailable(self) -> None:
        self.useHooks(FakeHooks(lambda name: HookUnavailable()))
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 3", meta("a")))
        self.assertError(response, 503, "hook_unavailable")
        self.assertEqual(self.uploads(), [])

    def test_renamed(self) -> None:
        self.useHooks(rename("b.txt"))
        location = self.create("a.txt", 3)
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        self.assertEqual(self.files(), ["b.txt"])
        info = json.loads(self.request(req(b"GET", location, TUS, JSON)).body)
        self.assertEqual((info["name"], info["file"]["name"]), ("b.txt", "b.txt"))

    def test_maxSizeAtCreation(self) -> None:
        self.useHooks(FakeHooks(lambda name: Decision(maxSize=5)))
        response = self.request(req(b"POST", b"/uploads", TUS, b"Upload-Length: 6", meta("a")))
        self.assertError(response, 413, "too_large")
        self.assertEqual(self.uploads(), [])
        self.create("a", 5)

    def test_maxSizeDeferred(self) -> None:
        """A deferred length is held to the hook's limit when declared and while appending."""
        self.useHooks(FakeHooks(lambda name: Decision(maxSize=5)))
        location = self.create("a", None)
        response = self.request(patch(location, 0, b"abc", b"Upload-Length: 6"))
        self.assertError(response, 413, "too_large")
        response = self.request(patch(location, 0, b"abcdef"))
        self.assertError(response, 413, "too_large")
        self.assertEqual(self.files(), [])
        self.assertEqual(self.request(patch(location, 0, b"abcde", b"Upload-Length: 5")).status,
                         204)
        self.assertEqual((self.root / "a").read_bytes(), b"abcde")

    def test_metadata(self) -> None:
        """Metadata is kept with the upload (across a restart) and then with its file."""
        self.useHooks(FakeHooks(lambda name: Decision(metadata={"owner": "ana"})))
        location = self.create("a", 3)
        uploadId = location.rsplit(b"/", 1)[-1].decode()
        record = json.loads((self.root / ".tus" / f"{uploadId}.json").read_bytes())
        self.assertEqual(record["fileMetadata"], {"owner": "ana"})
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        listing = json.loads(self.request(get(b"/files")).body)["files"]
        self.assertEqual([(f["name"], f["metadata"]) for f in listing], [("a", {"owner": "ana"})])
        info = json.loads(self.request(req(b"GET", location, TUS, JSON)).body)
        self.assertEqual(info["file"]["metadata"], {"owner": "ana"})
