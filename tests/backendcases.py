"""
Test case bases serving the backend's routes over a real disk store
through in-memory HTTP, and ways to make the store's writes fail.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store.disk import DiskStore
from streamrelay.tus.disk import DiskResumableStore
from streamrelay.tus.protocol import TusUploads
from streamrelay.webapp import appResource
from tests.httpfakes import Connection, Response
from tests.partialfiles import leftInPartial
from tests.rawrequests import OCTETS, TUS, meta, req


class RoutesTestCase(SynchronousTestCase):
    """Requests to routes served in memory, one connection each."""

    def connect(self) -> Connection:
        raise NotImplementedError()

    def request(self, data: bytes) -> Response:
        conn = self.connect()
        conn.send(data)
        conn.turn()
        responses = [r for r in conn.responses() if r.status >= 200]
        self.assertEqual(len(responses), 1, conn.output())
        return responses[0]


class BackendTestCase(RoutesTestCase):
    maxSize: int | None = None

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = DiskStore(self.root)
        self.routes = BackendRoutes(self.store, maxSize=self.maxSize)

    def connect(self) -> Connection:
        return Connection(appResource(self.routes.app))

    def assertError(self, response: Response, status: int, code: str) -> None:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        answer = json.loads(response.body)
        self.assertEqual(answer["error"], code)
        self.assertIsInstance(answer["message"], str)

    def assertNothingStored(self) -> None:
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), [".partial"])
        self.assertEqual(leftInPartial(self.store), [])


def failWritesAfterFirst(test: SynchronousTestCase, code: int = errno.ENOSPC) -> None:
    """
    Make every file write after the first fail with C{code}, as on a full
    disk by default (writes through the page cache and direct ones alike).
    """
    written: list[object] = []

    def failing(write: Any) -> Any:
        def fail(*args: Any) -> int:
            if written:
                raise OSError(code, os.strerror(code))
            written.append(args)
            return cast(int, write(*args))

        return fail

    test.patch(os, "writev", failing(os.writev))
    test.patch(os, "pwrite", failing(os.pwrite))


def answerToFailedWrite(conn: Connection, request: bytes, held: int, failing: int) -> Response:
    """
    Send C{request} but its last C{held} bytes, let the server take that
    in, then C{failing} bytes more (whose write fails: see
    L{failWritesAfterFirst}) and a few after them, by which time the
    failure is answered: that answer.
    """
    conn.send(request[:-held])
    conn.turn()
    conn.send(request[-held:][:failing])
    conn.send(request[-held:][failing : failing + 5])
    [response] = conn.responses()
    return response


class TusTestCase(RoutesTestCase):
    maxSize: int | None = None
    rename = True

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = DiskStore(self.root)
        self.resumable = DiskResumableStore(self.root / ".tus", self.store, rename=self.rename)
        self.tus = TusUploads(self.resumable, self.store, self.clock, maxSize=self.maxSize,
                              expiry=3600)
        self.routes = BackendRoutes(self.store, maxSize=self.maxSize, tus=self.tus)

    def connect(self) -> Connection:
        return Connection(appResource(self.routes.app), clock=self.clock)

    def create(self, name: str = "f.bin", length: int | None = 10, *headers: bytes,
               body: bytes | None = None) -> bytes:
        size = (b"Upload-Length: %d" % (length,)) if length is not None else (
            b"Upload-Defer-Length: 1")
        extra = (OCTETS,) if body is not None else ()
        response = self.request(
            req(b"POST", b"/uploads", TUS, size, meta(name), *extra, *headers, body=body)
        )
        self.assertEqual(response.status, 201, response.body)
        location = response.headers[b"location"]
        self.assertRegex(location.decode(), r"^/uploads/[0-9a-f]{32}$")
        return location

    def head(self, location: bytes) -> Response:
        return self.request(req(b"HEAD", location, TUS))

    def assertError(self, response: Response, status: int, code: str | None = None) -> None:
        self.assertEqual(response.status, status, response.body)
        if code is not None and response.body:
            self.assertEqual(json.loads(response.body)["error"], code)

    def files(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))
