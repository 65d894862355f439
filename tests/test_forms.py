"""
Hostile forms and request ids: a form's count of files is capped, its files
are held open a few at a time and taken a few per reactor turn, it is logged
in one line; a malformed part header leaves no raw parser line in the log;
an unsafe C{X-Request-Id} never reaches a log line.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer

from streamrelay.backend.multipart import MAX_OPEN_FILES, FormUpload
from streamrelay.backend.routes import BackendRoutes
from streamrelay.backend.tap import Options
from streamrelay.store.disk import DiskStore
from streamrelay.webapp import requestId
from tests.backendcases import BackendTestCase
from tests.fakes import HandRunner
from tests.httpfakes import parseResponses
from tests.partialfiles import leftInPartial
from tests.processes import (
    Program,
    call,
    eventually,
    partials,
    reactor,
    serviceArgv,
    spawn,
    startService,
    startStack,
)
from tests.rawrequests import BOUNDARY, form, post

_GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def emptyParts(count: int, boundary: bytes = BOUNDARY, content: bytes = b"") -> bytes:
    """C{count} file parts (f0, f1, ...) holding C{content}, without the closing boundary."""
    return b"".join(
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f"; filename="f%d"'
        b"\r\n\r\n" % (i,) + content + b"\r\n"
        for i in range(count)
    )


def closing(boundary: bytes = BOUNDARY) -> bytes:
    return b"--" + boundary + b"--\r\n"


def formRequest(body: bytes, boundary: bytes = BOUNDARY, length: int | None = None) -> bytes:
    """A raw C{POST /files} request with C{body} (declaring C{length} if given)."""
    return (
        b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
        + boundary + b"\r\nContent-Length: %d\r\n\r\n" % (len(body) if length is None else length,)
        + body
    )


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@implementer(IPushProducer)
class _Body:
    """Stands in for a request body: only records whether it is paused."""

    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class _TooLarge(Exception):
    pass


class FormStepsTests(SynchronousTestCase):
    """
    A form of many files over a store whose work runs in threads (here: by
    hand) holds a few files open at a time, and takes a few files per turn.
    """

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.jobs = HandRunner()
        self.store = DiskStore(self.root, run=self.jobs)
        self.body = _Body()
        self.form = FormUpload(self.store, BOUNDARY, None, _TooLarge)
        self.form.registerProducer(self.body, True)

    def openFiles(self) -> int:
        """The process's open files but the store's spare files."""
        return openDescriptors() - len(self.store.spares)

    def openFilesBefore(self) -> int:
        """
        L{openFiles} now, once stores of earlier tests were collected (and
        let go of their spare files).
        """
        gc.collect()
        return self.openFiles()

    def test_fewFilesOpenAtOnce(self) -> None:
        """
        One read holding 1,000 files leaves at most a few of them open, and
        the body paused, until their sealing ends; then the next few come.
        """
        before = self.openFilesBefore()
        self.form.write(emptyParts(1000) + closing())
        self.assertLessEqual(self.openFiles() - before, MAX_OPEN_FILES + 2)
        self.assertLessEqual(self.form.files, MAX_OPEN_FILES + 2)
        self.assertTrue(self.body.paused)
        self.jobs.step()
        self.assertGreater(self.form.files, MAX_OPEN_FILES)
        while self.jobs.calls:
            self.jobs.runAll()
            self.assertLessEqual(self.openFiles() - before, MAX_OPEN_FILES + 2)
        self.assertEqual(self.form.files, 1000)
        self.assertFalse(self.body.paused)
        committing = Deferred.fromCoroutine(self.form.commit())
        while self.jobs.calls:
            self.jobs.runAll()
        stored = self.successResultOf(committing)
        self.assertEqual([info.name for info in stored], [f"f{i}" for i in range(1000)])
        self.assertEqual(len(list(self.root.iterdir())), 1001)
        self.assertEqual(leftInPartial(self.store), [])
        self.assertEqual(self.openFiles(), before)

    def test_abortWhileSealing(self) -> None:
        """A form aborted while files are being sealed leaves nothing."""
        before = self.openFilesBefore()
        self.form.write(emptyParts(40))
        self.form.abort()
        while self.jobs.calls:
            self.jobs.runAll()
        self.assertEqual(os.listdir(self.root), [".partial"])
        self.assertEqual(leftInPartial(self.store), [])
        self.assertEqual(self.openFiles(), before)


class FormLimitTests(BackendTestCase):
    """C{--max-form-files}, with the routes over a real disk store."""

    def setUp(self) -> None:
        super().setUp()
        self.routes = BackendRoutes(self.store, maxFormFiles=3)

    def test_overLimit(self) -> None:
        """One file over the limit: 413 too_many_files, nothing of the form kept."""
        body = form(*[(b"file", b"f%d" % (i,), b"data %d" % (i,)) for i in range(4)])
        response = self.request(post(body))
        self.assertError(response, 413, "too_many_files")
        self.assertNothingStored()

    def test_atLimit(self) -> None:
        """Plain fields do not count; as many files as the limit are stored."""
        parts = [(b"file", b"f%d" % (i,), b"data") for i in range(3)]
        response = self.request(post(form(*parts, (b"note", None, b"a field"))))
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(len(json.loads(response.body)["files"]), 3)


class MaxFormFilesOptionTests(SynchronousTestCase):
    """C{--max-form-files}, or C{STREAMRELAY_MAX_FORM_FILES}."""

    def parse(self, argv: list[str], environ: dict[str, str]) -> Options:
        options = Options()
        options.environ = environ
        options.parseOptions(argv)
        return options

    def test_values(self) -> None:
        self.assertEqual(self.parse([], {})["max-form-files"], 1000)
        self.assertEqual(self.parse([], {"STREAMRELAY_MAX_FORM_FILES": "7"})["max-form-files"], 7)
        self.assertEqual(
            self.parse(["--max-form-files", "9"], {"STREAMRELAY_MAX_FORM_FILES": "7"})[
                "max-form-files"
            ],
            9,
        )

    def test_refused(self) -> None:
        for bad in ["0", "-1", "many", "1.5"]:
            self.assertRaises(UsageError, self.parse, ["--max-form-files", bad], {})


class RequestIdTests(SynchronousTestCase):
    """Only a safe X-Request-Id is taken from a client."""

    def idOf(self, value: bytes | None) -> tuple[str, str]:
        request: Any = type("R", (), {})()
        request.requestHeaders = Headers()
        if value is not None:
            request.requestHeaders.setRawHeaders(b"x-request-id", [value])
        request.getHeader = lambda name: (request.requestHeaders.getRawHeaders(name) or [None])[-1]
        return requestId(request), requestId(request)

    def test_safeKept(self) -> None:
        for safe in [b"abc-123", b"A.b_C-9", b"x" * 128]:
            self.assertEqual(self.idOf(safe), (safe.decode(),) * 2)

    def test_unsafeReplaced(self) -> None:
        """An unsafe id is replaced by a new one, the same on every later call."""
        for unsafe in [None, b"", b"\x1b[31mRED\x1b[0m", b"a b", b"x" * 129, b"a\tb",
                       "é".encode(), b"a/b", b"a\\b", b"a;b"]:
            first, second = self.idOf(unsafe)
            self.assertRegex(first, _GENERATED_ID, unsafe)
            self.assertEqual(first, second)


# With the real programs


class _RawClient(Protocol):
    """Sends C{data}, with a body of C{filler} bytes after it while it reads; keeps what came."""

    def __init__(self, data: bytes, filler: int = 0) -> None:
        self.data = data
        self.received = b""
        self.answered: Deferred[bytes] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.filler = _Filler(self, filler)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)
        if self.filler.left:
            self.transport.registerProducer(self.filler, True)  # type: ignore[attr-defined]
            self.filler.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        responses = [r for r in parseResponses(self.received) if r.status >= 200]
        head, sep, rest = self.received.partition(b"\r\n\r\n")
        if responses and not self.answered.called:
            length = int(responses[0].headers.get(b"content-length", b"0"))
            if len(rest) >= length:
                self.filler.stopProducing()
                self.answered.callback(self.received)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.filler.stopProducing()
        if not self.answered.called:
            self.answered.errback(reason)
        self.ended.callback(None)

    @property
    def answer(self) -> tuple[int, dict[bytes, bytes], Any]:
        response = [r for r in parseResponses(self.received) if r.status >= 200][0]
        return response.status, response.headers, json.loads(response.body)


@implementer(IPushProducer)
class _Filler:
    """Writes C{left} bytes of body to a client's connection as fast as it takes them."""

    CHUNK = b"x" * (1 << 20)

    def __init__(self, client: _RawClient, left: int) -> None:
        self.client = client
        self.left = left
        self.sent = 0
        self._paused = True
        self._stopped = False

    def resumeProducing(self) -> None:
        self._paused = False
        reactor.callLater(0, self._write)

    def _write(self) -> None:
        transport = self.client.transport
        while not self._paused and not self._stopped and self.left and transport is not None:
            chunk = self.CHUNK[: self.left]
            self.left -= len(chunk)
            self.sent += len(chunk)
            transport.write(chunk)

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._stopped = True


async def rawRequest(port: int, data: bytes, filler: int = 0) -> _RawClient:
    """A connection to C{port} that sends C{data} (and C{filler} more bytes)."""
    client = _RawClient(data, filler)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


async def startLimited(test: TestCase, storage: Path, nofile: int, *args: str) -> Program:
    """The backend, allowed at most C{nofile} open descriptors."""
    limited = [
        sys.executable, "-c",
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        "os.execv(sys.argv[1], sys.argv[1:])",
        *serviceArgv("backend", ["tcp:0:interface=127.0.0.1"], "--storage", str(storage), *args),
    ]
    program = spawn(test, "backend", limited, service=True)
    timeout = reactor.callLater(30, program.protocol.listening.cancel)
    program.port = await program.protocol.listening
    if timeout.active():
        timeout.cancel()
    return program


def storedNames(storage: Path) -> list[str]:
    return sorted(p.name for p in storage.iterdir() if not p.name.startswith("."))


class ManyFilesTests(TestCase):
    timeout = 180

    async def test_overLimitRefused(self) -> None:
        """
        1,001 empty file parts: 413 too_many_files JSON, directly and
        through the proxy, and nothing of the form is kept.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        body = emptyParts(1001) + closing()
        headers: dict[bytes | str, bytes | str] = {
            "Content-Type": b"multipart/form-data; boundary=" + BOUNDARY
        }
        for target in (backend, proxy):
            code, answered, content = await call("POST", target.url + "/files", body, headers)
            self.assertEqual((code, json.loads(content)["error"]), (413, "too_many_files"),
                             target.label)
            self.assertEqual(answered["content-type"], "application/json")
            self.assertTrue(await eventually(lambda: partials(storage) == [], 30))
            self.assertEqual(storedNames(storage), [])
        self.assertNotIn(b"Traceback", backend.output + proxy.output)

    async def test_overLimitAnsweredEarlyThroughProxy(self) -> None:
        """
        A form that goes on with a huge file after its 1,001st part gets
        the backend's 413 through the proxy before its body ends.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        parts = emptyParts(1001)
        huge = 16 << 30
        client = await rawRequest(
            proxy.port, formRequest(parts, length=len(parts) + huge), filler=huge
        )
        await client.answered
        status, _, answer = client.answer
        self.assertEqual((status, answer["error"]), (413, "too_many_files"))
        self.assertGreater(client.filler.left, 0)
        assert client.transport is not None
        client.transport.abortConnection()  # type: ignore[attr-defined]
        await client.ended
        self.assertTrue(await eventually(lambda: partials(storage) == [], 30))
        self.assertEqual(storedNames(storage), [])

    async def test_thousandFilesFewDescriptors(self) -> None:
        """
        A backend allowed 200 open descriptors stores a form of 1,000 files,
        and logs it in one line with its count of files and total size.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend = await startLimited(self, storage, 200)
        body = emptyParts(1000, content=b"12345") + closing()
        headers: dict[bytes | str, bytes | str] = {
            "Content-Type": b"multipart/form-data; boundary=" + BOUNDARY
        }
        code, _, content = await call("POST", backend.url + "/files", body, headers)
        self.assertEqual(code, 201, content[:500])
        self.assertEqual(len(json.loads(content)["files"]), 1000)
        self.assertEqual(storedNames(storage), sorted(f"f{i}" for i in range(1000)))
        self.assertEqual((storage / "f999").read_bytes(), b"12345")
        output = await backend.protocol.waitFor(b"form stored")
        self.assertEqual(len(re.findall(rb"form stored .*files=1000 size=5000 ", output)), 1)
        self.assertNotIn(b"upload stored", output)

    async def test_healthzWhileFormIsTaken(self) -> None:
        """
        A /healthz asked while a form of 1,000 files is being taken is
        answered before the form (which a malformed last part fails).  The
        backend's writes are slowed, so the form takes a while.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend = await startService(
            self, "backend", "--storage", str(storage), "--debug-write-rate", "400"
        )
        # All in one read of the backend (64 KiB): no pause between reads.
        body = b"".join(
            b'--b\r\nContent-Disposition: form-data; filename="%d"\r\n\r\n1\r\n' % (i,)
            for i in range(1000)
        ) + b"--b\r\nX: no disposition\r\n\r\nx\r\n--b--\r\n"
        self.assertLess(len(body), 60000)
        formClient = await rawRequest(backend.port, formRequest(body, b"b"))
        self.assertTrue(await eventually(lambda: partials(storage) != [], 60))
        health = await rawRequest(
            backend.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await health.answered
        self.assertEqual(health.answer[0], 200)
        self.assertEqual(formClient.received, b"", "the form was answered first")
        await formClient.answered
        status, _, answer = formClient.answer
        self.assertEqual((status, answer["error"]), (400, "bad_request"))
        self.assertTrue(await eventually(lambda: partials(storage) == [], 30))
        self.assertEqual(storedNames(storage), [])


class HostileInputTests(TestCase):
    timeout = 120

    async def test_carriageReturnInPartHeader(self) -> None:
        """
        A CR inside a part's header: 400 bad_request JSON, nothing stored,
        and no raw line of the multipart parser in the backend's log.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend = await startService(self, "backend", "--storage", str(storage))
        body = (
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f"; '
            b'filename="a\rb.txt"\r\n\r\nhello\r\n' + closing()
        )
        client = await rawRequest(backend.port, formRequest(body))
        await client.answered
        status, headers, answer = client.answer
        self.assertEqual((status, answer["error"]), (400, "bad_request"))
        self.assertEqual(headers[b"content-type"], b"application/json")
        output = await backend.protocol.waitFor(b"reason=bad_request")
        self.assertNotIn(b"Did not find", output)
        self.assertNotIn(b"Traceback", output)
        self.assertEqual(storedNames(storage), [])
        self.assertEqual(partials(storage), [])

    async def test_hostileRequestId(self) -> None:
        """
        An X-Request-Id with escape codes and spaces never reaches a log
        line: the proxy makes a new one, echoes it and passes it on.  A safe
        one is still echoed, passed on and logged.
        """
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        hostile = b"\x1b[31mRED\x1b[0m and more"
        for target in (proxy, backend):
            client = await rawRequest(
                target.port,
                b"PUT /files/hostile.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"X-Request-Id: " + hostile + b"\r\nContent-Length: 2\r\n\r\nhi",
            )
            await client.answered
            status, headers, _ = client.answer
            self.assertIn(status, (200, 201))
            rid = headers[b"x-request-id"]
            self.assertRegex(rid.decode("ascii"), _GENERATED_ID)
            await backend.protocol.waitFor(b"request_id=" + rid)
            await target.protocol.waitFor(b"request_id=" + rid)
        for program in (backend, proxy):
            self.assertNotIn(b"\x1b", program.output, program.label)
            self.assertNotIn(b"[31m", program.output, program.label)

        client = await rawRequest(
            proxy.port,
            b"PUT /files/safe.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"X-Request-Id: safe-id_1.2\r\nContent-Length: 2\r\n\r\nhi",
        )
        await client.answered
        self.assertEqual(client.answer[1][b"x-request-id"], b"safe-id_1.2")
        await backend.protocol.waitFor(b"request_id=safe-id_1.2 name='safe.txt'")
        await proxy.protocol.waitFor(b"request_id=safe-id_1.2")
