"""
Storage that goes away under a running backend and comes back: its own
folders removed (a cleanup job, an operator), the storage folder renamed
away or unmounted.  While the storage folder is missing every request that
needs it answers 503 C{storage_unavailable}; once it is back, the backend
makes its folders and its lock again and serves without a restart.  A
full disk is 507 on every route, a resumable upload's creation too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store.disk import LOCK_FILE, DiskStore
from streamrelay.store.interfaces import StorageUnavailable
from streamrelay.tus.disk import DiskResumableStore
from streamrelay.tus.interfaces import ResumableUpload
from streamrelay.tus.protocol import TusUploads
from streamrelay.webapp import appResource
from tests.httpfakes import Connection, Response
from tests.partialfiles import leftInPartial
from tests.processes import (
    Program,
    call,
    mountTmpfs,
    partials,
    run,
    serviceArgv,
    startService,
    startStack,
)
from tests.rawrequests import OCTETS, TUS, meta, patch, put, req

BOUNDARY = b"b0undary"


def form(name: bytes, data: bytes) -> bytes:
    body = (
        b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
        + name + b"\"\r\n\r\n" + data + b"\r\n--" + BOUNDARY + b"--\r\n"
    )
    return req(b"POST", b"/files",
               b"Content-Type: multipart/form-data; boundary=" + BOUNDARY, body=body)


class OutageTestCase(SynchronousTestCase):
    """The backend's routes over a disk store and a resumable store under one root."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = DiskStore(self.root, clock=self.clock)
        self.resumable = DiskResumableStore(self.root / ".tus", self.store)
        self.tus = TusUploads(self.resumable, self.store, self.clock, expiry=3600)
        self.routes = BackendRoutes(self.store, tus=self.tus)

    def connect(self) -> Connection:
        return Connection(appResource(self.routes.app), clock=self.clock)

    def request(self, data: bytes) -> Response:
        conn = self.connect()
        conn.send(data)
        for _ in range(3):  # dispatch, then a download's chunk and its end
            conn.turn()
        responses = [r for r in conn.responses() if r.status >= 200]
        self.assertEqual(len(responses), 1, conn.output())
        return responses[0]

    def assertUnavailable(self, response: Response, status: int = 503) -> None:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.headers[b"retry-after"], b"5")
        if response.body:
            self.assertEqual(response.headers[b"content-type"], b"application/json")
            answer = json.loads(response.body)
            self.assertEqual(answer["error"], "storage_unavailable")
            self.assertIsInstance(answer["message"], str)

    def createUpload(self, name: str, length: int) -> bytes:
        response = self.request(
            req(b"POST", b"/uploads", TUS, b"Upload-Length: %d" % (length,), meta(name))
        )
        self.assertEqual(response.status, 201, response.body)
        return response.headers[b"location"]

    def cutByMissingStorage(self) -> tuple[Response, Path]:
        """
        The answer to an upload whose storage folder is taken away while
        its body streams, and where the folder went.
        """
        conn = self.connect()
        request = put(b"/files/cut", b"x" * 10_000)
        conn.send(request[:-50])
        conn.turn()
        away = self.moveRootAway()
        conn.send(request[-50:])
        [response] = conn.responses()
        return response, away

    def moveRootAway(self) -> Path:
        away = self.root.with_name(self.root.name + "-away")
        self.root.rename(away)
        return away


class OwnFoldersRemovedTests(OutageTestCase):
    def test_partialFolderRemoved(self) -> None:
        """
        With C{.partial/} removed under the backend, the next upload makes
        it again and is stored intact.
        """
        self.assertEqual(self.request(put(b"/files/before", b"one")).status, 201)
        shutil.rmtree(self.root / ".partial")
        response = self.request(put(b"/files/after", b"two" * 1000))
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual((self.root / "after").read_bytes(), b"two" * 1000)
        self.assertEqual(leftInPartial(self.store), [])
        self.assertEqual(self.request(form(b"formed", b"three")).status, 201)
        self.assertEqual((self.root / "formed").read_bytes(), b"three")

    def test_partialFolderRemovedMidUpload(self) -> None:
        """
        C{.partial/} removed while a body streams (taking the upload's file
        with it): 503 storage_unavailable, nothing stored; the next upload
        is stored.
        """
        conn = self.connect()
        request = put(b"/files/cut", b"x" * 10_000)
        conn.send(request[:-50])
        conn.turn()
        shutil.rmtree(self.root / ".partial")
        conn.send(request[-50:])
        [response] = conn.responses()
        self.assertUnavailable(response)
        self.assertFalse((self.root / "cut").exists())
        self.assertEqual(self.request(put(b"/files/next", b"n")).status, 201)

    def test_tusFolderRemoved(self) -> None:
        """
        With C{.tus/} removed, the uploads it held are gone (404), and a new
        one is made, written and stored.
        """
        old = self.createUpload("old.bin", 3)
        shutil.rmtree(self.root / ".tus")
        self.assertEqual(self.request(req(b"HEAD", old, TUS)).status, 404)
        location = self.createUpload("new.bin", 3)
        response = self.request(patch(location, 0, b"abc"))
        self.assertEqual(response.status, 204, response.body)
        self.assertEqual((self.root / "new.bin").read_bytes(), b"abc")

    def test_tusFolderRemovedMidPatch(self) -> None:
        """
        C{.tus/} removed while a PATCH streams (taking the upload's bytes
        with it): 503, and the upload is gone (404) instead of claiming
        bytes that are not there any more.
        """
        location = self.createUpload("cut.bin", 20_000)
        conn = self.connect()
        request = patch(location, 0, b"x" * 10_000)
        conn.send(request[:-50])
        conn.turn()
        shutil.rmtree(self.root / ".tus")
        conn.send(request[-50:])
        conn.turn()
        [response] = conn.responses()
        self.assertUnavailable(response)
        self.assertEqual(self.request(req(b"HEAD", location, TUS)).status, 404)
        self.assertEqual(os.listdir(self.root / ".tus"), [])

    def test_readOnlyWhenMakingThem(self) -> None:
        """
        A storage folder that refuses to have C{.partial/} made again (a
        read-only mount) answers 503 to uploads and is not ready; nothing
        is stored.
        """
        shutil.rmtree(self.root / ".partial")
        real = os.mkdir

        def refuse(path: object, *args: object, **kwargs: object) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        self.patch(os, "mkdir", refuse)
        self.assertUnavailable(self.request(put(b"/files/f", b"data")))
        self.assertEqual(self.request(req(b"GET", b"/readyz")).status, 503)
        self.assertFalse((self.root / "f").exists())
        self.patch(os, "mkdir", real)
        self.assertEqual(self.request(req(b"GET", b"/readyz")).status, 200)
        self.assertEqual(self.request(put(b"/files/f", b"data")).status, 201)


class FullDiskTests(OutageTestCase):
    def test_tusCreate(self) -> None:
        """
        A resumable upload created on a full disk answers 507, like a plain
        upload, not 500; nothing is kept of it.
        """

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.patch(os, "fsync", full)
        response = self.request(
            req(b"POST", b"/uploads", TUS, b"Upload-Length: 3", meta("full.bin"))
        )
        self.assertEqual(response.status, 507, response.body)
        self.assertEqual(json.loads(response.body)["error"], "insufficient_storage")
        self.assertFalse((self.root / "full.bin").exists())
        self.assertEqual(os.listdir(self.root / ".tus"), [])


class OutOfDescriptorsTests(OutageTestCase):
    def test_tooManyOpenFiles(self) -> None:
        """
        A backend out of file descriptors (EMFILE) answers uploads 503
        storage_unavailable with Retry-After, not 500; once it has some
        again, uploads are stored.
        """
        realOpen = os.open
        full = [True]

        def openOrFail(path: Any, *args: Any, **kwargs: Any) -> int:
            if full and (".partial" in str(path) or ".tus" in str(path)):
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return realOpen(path, *args, **kwargs)

        self.patch(os, "open", openOrFail)
        self.assertUnavailable(self.request(put(b"/files/new", b"data")))
        self.assertUnavailable(self.request(
            req(b"POST", b"/uploads", TUS, b"Upload-Length: 3", meta("t.bin"))
        ))
        full.clear()
        self.assertEqual(self.request(put(b"/files/new", b"data")).status, 201)


class RootMissingTests(OutageTestCase):
    def test_everyRouteUnavailable(self) -> None:
        """
        With the storage folder gone, every request that needs it answers
        503 storage_unavailable with Retry-After (a tus HEAD: 423, which
        makes tus clients retry instead of starting over); the folder is not
        made again in its place; /healthz still answers and /readyz says 503.
        """
        self.assertEqual(self.request(put(b"/files/kept", b"kept")).status, 201)
        location = self.createUpload("resumed.bin", 6)
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        self.moveRootAway()
        for request in [
            put(b"/files/new", b"data"),
            put(b"/files/new", b"data", b"If-None-Match: *"),
            form(b"formed", b"data"),
            req(b"GET", b"/files"),
            req(b"GET", b"/files/kept"),
            req(b"HEAD", b"/files/kept"),
            req(b"DELETE", b"/files/kept"),
            req(b"POST", b"/uploads", TUS, b"Upload-Length: 3", meta("other.bin")),
            patch(location, 3, b"def"),
            req(b"GET", location),
            req(b"DELETE", location, TUS),
        ]:
            response = self.request(request)
            self.assertUnavailable(response)
            self.assertFalse(self.root.exists(), request)
        self.assertUnavailable(self.request(req(b"HEAD", location, TUS)), 423)
        self.assertEqual(self.request(req(b"GET", b"/healthz")).status, 200)
        self.assertEqual(self.request(req(b"GET", b"/readyz")).status, 503)
        self.assertFalse(self.root.exists())

    def test_backAgain(self) -> None:
        """
        The storage folder put back: the backend serves it again, files and
        unfinished resumable uploads as they were.
        """
        self.assertEqual(self.request(put(b"/files/kept", b"kept")).status, 201)
        location = self.createUpload("resumed.bin", 6)
        self.assertEqual(self.request(patch(location, 0, b"abc")).status, 204)
        away = self.moveRootAway()
        self.assertUnavailable(self.request(put(b"/files/new", b"data")))
        away.rename(self.root)
        self.assertEqual(self.request(req(b"GET", b"/readyz")).status, 200)
        self.assertEqual(self.request(put(b"/files/new", b"data")).status, 201)
        self.assertEqual(self.request(req(b"GET", b"/files/kept")).body, b"kept")
        self.assertEqual(self.request(patch(location, 3, b"def")).status, 204)
        self.assertEqual((self.root / "resumed.bin").read_bytes(), b"abcdef")
        names = [f["name"] for f in json.loads(self.request(req(b"GET", b"/files")).body)["files"]]
        self.assertEqual(names, ["kept", "new", "resumed.bin"])

    def test_newEmptyFolder(self) -> None:
        """
        A new empty storage folder in place of the old one (a new mount):
        the backend makes its folders in it and stores uploads there.
        """
        self.moveRootAway()
        self.root.mkdir()
        self.assertEqual(self.request(req(b"GET", b"/readyz")).status, 200)
        self.assertEqual(self.request(put(b"/files/new", b"data")).status, 201)
        self.assertEqual((self.root / "new").read_bytes(), b"data")
        location = self.createUpload("t.bin", 2)
        self.assertEqual(self.request(patch(location, 0, b"ok")).status, 204)
        self.assertEqual((self.root / "t.bin").read_bytes(), b"ok")

    def test_goneMidUpload(self) -> None:
        """
        The storage folder taken away while a body streams: 503, and the
        file does not appear when the folder is back.
        """
        response, away = self.cutByMissingStorage()
        self.assertUnavailable(response)
        away.rename(self.root)
        self.assertFalse((self.root / "cut").exists())
        self.assertEqual(self.request(put(b"/files/next", b"n")).status, 201)


    def test_counted(self) -> None:
        """
        Uploads refused because the storage is missing, when they start or
        while their body streams, are counted under the reason
        C{storage_unavailable}.
        """
        _, away = self.cutByMissingStorage()
        self.assertUnavailable(self.request(put(b"/files/new", b"data")))
        away.rename(self.root)
        metrics = self.request(req(b"GET", b"/metrics")).body
        self.assertIn(
            b'streamrelay_uploads_failed_total{reason="storage_unavailable",service="backend"} 2.0',
            metrics,
        )


class LockTests(SynchronousTestCase):
    """
    The lock that keeps a second backend off a storage folder is made again
    with the folders: it still keeps a second backend out.
    """

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = DiskStore(self.root)
        self.assertTrue(self.store.claim())
        self.addCleanup(self.store.release)

    def assertHeldByUs(self) -> None:
        other = DiskStore(self.root)
        error = self.assertRaises(OSError, other.claim)
        self.assertEqual(error.errno, errno.EBUSY)

    def test_madeAgainWithPartialFolder(self) -> None:
        shutil.rmtree(self.root / ".partial")
        self.store.begin("a").abort()
        self.assertTrue((self.root / ".partial" / LOCK_FILE).exists())
        self.assertHeldByUs()

    def test_madeAgainInNewFolder(self) -> None:
        self.root.rename(self.root.with_name("away"))
        self.root.mkdir()
        self.assertTrue(self.store.writable())
        self.assertHeldByUs()

    def test_lockFileRemoved(self) -> None:
        (self.root / ".partial" / LOCK_FILE).unlink()
        self.assertTrue(self.store.writable())
        self.assertHeldByUs()

    def test_takenMeanwhile(self) -> None:
        """
        Another backend that took the folder while its lock was gone keeps
        it: this one refuses uploads (503) rather than share the folder.
        """
        shutil.rmtree(self.root / ".partial")
        other = DiskStore(self.root)
        self.assertTrue(other.claim())
        self.addCleanup(other.release)
        error = self.assertRaises(StorageUnavailable, self.store.begin, "a")
        self.assertIn(f"in use by another streamrelay-backend (process {os.getpid()})",
                      str(error))
        self.assertFalse(self.store.writable())
        self.assertEqual([p.name for p in (self.root / ".partial").iterdir()], [LOCK_FILE])


    def test_takenMeanwhileResumable(self) -> None:
        """
        Nor does it go on writing resumable uploads there, beside the
        backend that has the folder now.
        """
        resumable = DiskResumableStore(self.root / ".tus", self.store)

        def upload(uploadId: str) -> ResumableUpload:
            return ResumableUpload(uploadId, 3, 0, "", uploadId, 0.0, 3600.0)

        self.successResultOf(resumable.create(upload("a" * 32)))
        shutil.rmtree(self.root / ".partial")
        other = DiskStore(self.root)
        self.assertTrue(other.claim())
        self.addCleanup(other.release)
        self.failureResultOf(resumable.load("a" * 32), StorageUnavailable)
        self.failureResultOf(resumable.create(upload("b" * 32)), StorageUnavailable)

TUS_HEADERS: dict[bytes | str, bytes | str] = {"Tus-Resumable": "1.0.0"}


class RealBackendTests(TestCase):
    """The same with the real programs."""

    timeout = 120

    def setUp(self) -> None:
        self.storage = Path(self.mktemp()).absolute() / "uploads"

    async def assertUnavailable(
        self, method: str, url: str, body: bytes | None = None,
        headers: dict[bytes | str, bytes | str] | None = None, status: int = 503,
    ) -> None:
        code, answered, content = await call(method, url, body, headers)
        self.assertEqual(code, status, (method, url, content))
        self.assertEqual(answered["retry-after"], "5", (method, url))
        if method != "HEAD":
            self.assertEqual(answered["content-type"], "application/json")
            self.assertEqual(json.loads(content)["error"], "storage_unavailable")

    async def assertSecondBackendRefused(self, first: Program) -> None:
        """The folders made again still keep a second backend off the storage."""
        code, output = await run(self, "second", serviceArgv(
            "backend", ["tcp:0:interface=127.0.0.1"], "--storage", str(self.storage)),
            timeout=30)
        self.assertEqual(code, 1, output.decode())
        self.assertIn(f"in use by another streamrelay-backend (process {first.pid})".encode(),
                      output)

    async def createUpload(self, url: str, name: str, data: bytes) -> str:
        """A tus upload of C{data} created and written; its URL."""
        code, headers, content = await call("POST", url + "/uploads/", None, {
            **TUS_HEADERS, "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(name).split(b": ", 1)[1].decode(),
        })
        self.assertEqual(code, 201, content)
        location = url + headers["location"]
        code, _, content = await call("PATCH", location, data, {
            **TUS_HEADERS, "Upload-Offset": "0", "Content-Type": OCTETS.split(b": ")[1].decode(),
        })
        self.assertEqual(code, 204, content)
        return location

    async def test_ownFoldersRemoved(self) -> None:
        """
        C{.partial/} and C{.tus/} removed under a running backend: the next
        plain and resumable uploads are stored intact, and the lock is made
        again.
        """
        backend = await startService(self, "backend", "--storage", str(self.storage))
        self.assertEqual((await call("PUT", backend.url + "/files/a", b"a"))[0], 201)
        shutil.rmtree(self.storage / ".partial")
        shutil.rmtree(self.storage / ".tus")
        data = os.urandom(3 << 20)
        code, _, content = await call("PUT", backend.url + "/files/after.bin", data)
        self.assertEqual(code, 201, content)
        self.assertEqual(json.loads(content)["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual((self.storage / "after.bin").read_bytes(), data)
        self.assertEqual(partials(self.storage), [])
        await self.createUpload(backend.url, "resumed.bin", data[:1000])
        self.assertEqual((self.storage / "resumed.bin").read_bytes(), data[:1000])
        await self.assertSecondBackendRefused(backend)

    async def test_storageRemovedAndBack(self) -> None:
        """
        The storage folder renamed away: every request that needs it answers
        503 storage_unavailable with Retry-After (a tus HEAD 423), the
        backend keeps serving /healthz and /readyz says 503; renamed back,
        it serves again without a restart.
        """
        backend = await startService(self, "backend", "--storage", str(self.storage))
        url = backend.url
        self.assertEqual((await call("PUT", url + "/files/kept", b"kept"))[0], 201)
        location = await self.createUpload(url, "done.bin", b"done")
        away = self.storage.with_name("away")
        self.storage.rename(away)
        await self.assertUnavailable("PUT", url + "/files/new", b"data")
        await self.assertUnavailable("GET", url + "/files")
        await self.assertUnavailable("GET", url + "/files/kept")
        await self.assertUnavailable("HEAD", url + "/files/kept")
        await self.assertUnavailable("DELETE", url + "/files/kept")
        await self.assertUnavailable("POST", url + "/uploads/", None, {
            **TUS_HEADERS, "Upload-Length": "3",
            "Upload-Metadata": meta("x").split(b": ", 1)[1].decode()})
        await self.assertUnavailable("PATCH", location, b"x", {
            **TUS_HEADERS, "Upload-Offset": "4",
            "Content-Type": OCTETS.split(b": ")[1].decode()})
        await self.assertUnavailable("DELETE", location, None, TUS_HEADERS)
        await self.assertUnavailable("HEAD", location, None, TUS_HEADERS, status=423)
        self.assertEqual((await call("GET", url + "/healthz"))[0], 200)
        self.assertEqual((await call("GET", url + "/readyz"))[0], 503)
        self.assertFalse(self.storage.exists())

        away.rename(self.storage)
        self.assertEqual((await call("GET", url + "/readyz"))[0], 200)
        code, _, content = await call("PUT", url + "/files/new", b"data")
        self.assertEqual(code, 201, content)
        self.assertEqual((self.storage / "new").read_bytes(), b"data")
        self.assertEqual((await call("GET", url + "/files/kept"))[2], b"kept")
        await self.assertSecondBackendRefused(backend)

    async def test_newEmptyStorageThroughProxy(self) -> None:
        """
        Through the proxy: 503 storage_unavailable with Retry-After while
        the storage folder is missing; a new empty folder in its place is
        used at once, and kept from a second backend.
        """
        backend, proxy = await startStack(self, self.storage)
        self.storage.rename(self.storage.with_name("away"))
        await self.assertUnavailable("PUT", proxy.url + "/files/new", b"data")
        await self.assertUnavailable("GET", proxy.url + "/files")
        self.assertEqual((await call("GET", backend.url + "/readyz"))[0], 503)
        self.storage.mkdir()
        code, _, content = await call("PUT", proxy.url + "/files/new", b"data")
        self.assertEqual(code, 201, content)
        self.assertEqual((self.storage / "new").read_bytes(), b"data")
        self.assertEqual((await call("GET", backend.url + "/readyz"))[0], 200)
        await self.assertSecondBackendRefused(backend)

    async def test_unmountedAndMountedAgain(self) -> None:
        """
        A storage folder that is a mount point, unmounted: 503, and nothing
        is written to the folder left under it; a new file system mounted
        there is used at once.
        """
        self.storage = mountTmpfs(self, "8m").absolute()
        backend = await startService(self, "backend", "--storage", str(self.storage))
        self.assertEqual((await call("PUT", backend.url + "/files/a", b"a"))[0], 201)
        subprocess.run(["umount", "-l", str(self.storage)], check=True)
        await self.assertUnavailable("PUT", backend.url + "/files/b", b"b")
        self.assertEqual((await call("GET", backend.url + "/readyz"))[0], 503)
        self.assertEqual(os.listdir(self.storage), [])
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(self.storage)],
                       check=True)
        self.assertEqual((await call("GET", backend.url + "/readyz"))[0], 200)
        code, _, content = await call("PUT", backend.url + "/files/b", b"b")
        self.assertEqual(code, 201, content)
        self.assertEqual((self.storage / "b").read_bytes(), b"b")
        await self.assertSecondBackendRefused(backend)
