"""
Unit tests of the small shared pieces: names, headers, digests, options, disk store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from streamrelay.backend.tap import Options as BackendOptions
from streamrelay.digests import hashFilePrefix, parseSHA256Digest, reprDigest
from streamrelay.names import BadName, nameFromPath, validateName
from streamrelay.options import parseSize
from streamrelay.proxy.headers import downstreamHeaders, upstreamHeaders
from streamrelay.proxy.tap import Options as ProxyOptions
from streamrelay.store import FileInfo, IUpload, IUploadStore
from streamrelay.store.disk import DiskStore
from streamrelay.store.interfaces import StorageFull
from streamrelay.store.placing import SHA256_XATTR
from streamrelay.upload.sender import answerFailed


class NameTests(SynchronousTestCase):
    def test_good(self) -> None:
        for name in ["a", "file.tar.gz", "café", "x" * 255, "a b", "-rf", "日本語"]:
            self.assertEqual(validateName(name), name)

    def test_bad(self) -> None:
        for name in ["", ".", "..", ".x", "a/b", "a\\b", "a\x00b", "a\nb", "a\x7fb",
                     "a\x85b", "x" * 256, "é" * 128, "\ud800"]:
            self.assertRaises(BadName, validateName, name)

    def test_fromPath(self) -> None:
        self.assertEqual(nameFromPath(b"/files/a%20b", b"/files/"), "a b")
        for path in [b"/files/a%2Fb", b"/files/a/b", b"/files/%FF", b"/other/x"]:
            self.assertRaises(BadName, nameFromPath, path, b"/files/")


class HeaderTests(SynchronousTestCase):
    def test_upstreamDropsHopByHop(self) -> None:
        headers = Headers({
            b"Connection": [b"close, X-Secret"], b"X-Secret": [b"1"], b"Keep-Alive": [b"5"],
            b"TE": [b"trailers"], b"Transfer-Encoding": [b"chunked"], b"Upgrade": [b"h2c"],
            b"Proxy-Authorization": [b"x"], b"Host": [b"h"], b"Content-Length": [b"5"],
            b"Expect": [b"100-continue"], b"Content-Type": [b"text/plain"],
            b"X-Forwarded-For": [b"10.0.0.1"], b"Authorization": [b"Bearer t"],
        })
        result = upstreamHeaders(headers, "127.0.0.1", "rid")
        names = {name.lower() for name, _ in result.getAllRawHeaders()}
        self.assertEqual(
            names,
            {b"content-type", b"x-forwarded-for", b"x-request-id", b"authorization"},
        )
        self.assertEqual(result.getRawHeaders(b"x-forwarded-for"), [b"10.0.0.1, 127.0.0.1"])
        self.assertEqual(result.getRawHeaders(b"x-request-id"), [b"rid"])

    def test_downstream(self) -> None:
        headers = Headers({
            b"Content-Encoding": [b""], b"ETag": [b'"x"'], b"Connection": [b"close"],
            b"Server": [b"TwistedWeb"], b"Location": [b"/files/a"],
        })
        result = downstreamHeaders(headers)
        names = {name.lower() for name, _ in result.getAllRawHeaders()}
        self.assertEqual(names, {b"etag", b"location"})


class DigestTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        sha = "ab" * 32
        value = reprDigest(sha).decode()
        self.assertEqual(parseSHA256Digest(value), sha)
        self.assertEqual(parseSHA256Digest("md5=:AAAA:, " + value), sha)
        self.assertIsNone(parseSHA256Digest("sha-512=:AAAA:"))
        self.assertRaises(ValueError, parseSHA256Digest, "sha-256=:AAAA:")


class FilePrefixTests(SynchronousTestCase):
    def test_prefixDigest(self) -> None:
        """The digest of the first bytes, one that goes on with the rest."""
        path = Path(self.mktemp())
        data = os.urandom(3 * (1 << 20) + 5)
        path.write_bytes(data)
        digest = hashFilePrefix(path, 2 * (1 << 20) + 1)
        digest.update(data[2 * (1 << 20) + 1:])
        self.assertEqual(digest.hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(hashFilePrefix(path, 0).hexdigest(), hashlib.sha256().hexdigest())

    def test_shorterFile(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(b"12345")
        error = self.assertRaises(OSError, hashFilePrefix, path, 6)
        self.assertEqual(error.errno, errno.EIO)


class AnswerFailedTests(SynchronousTestCase):
    class Response:
        def __init__(self, code: int, retryAfter: bytes | None = None) -> None:
            self.code = code
            self.phrase = b"Phrase"
            self.headers = Headers({b"retry-after": [retryAfter]} if retryAfter else {})

    def test_jsonError(self) -> None:
        """The status, code and message of the answer, and whether to retry, and when."""
        failed = answerFailed(
            self.Response(503, b"5"), '{"error": "busy", "message": "Try later."}', "sending"
        )
        self.assertEqual(str(failed), "sending: HTTP 503 busy: Try later.")
        self.assertTrue(failed.retryable)
        self.assertEqual(failed.retryAfter, 5.0)

    def test_notJSON(self) -> None:
        failed = answerFailed(self.Response(400), "  not json  ")
        self.assertEqual(str(failed), "HTTP 400 : not json")
        self.assertFalse(failed.retryable)

    def test_retryOn(self) -> None:
        """Which statuses are worth another try is the caller's."""
        self.assertFalse(answerFailed(self.Response(409), "{}").retryable)
        self.assertTrue(answerFailed(self.Response(409), "{}", retryOn=frozenset({409})).retryable)


class OptionTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        self.assertEqual(parseSize("1024"), 1024)
        self.assertEqual(parseSize("1M"), 1 << 20)
        self.assertEqual(parseSize("2GiB"), 2 << 30)
        self.assertRaises(usage.UsageError, parseSize, "-1")
        self.assertRaises(usage.UsageError, parseSize, "lots")

    def test_environmentAndFlags(self) -> None:
        options = BackendOptions()
        options.environ = {
            "STREAMRELAY_STORAGE": "/data", "STREAMRELAY_MAX_SIZE": "1G",
            "STREAMRELAY_LISTEN": "tcp:1 tcp:2",
        }
        options.parseOptions(["--max-size", "5"])
        self.assertEqual(options["storage"], "/data")
        self.assertEqual(options["max-size"], 5)
        self.assertEqual(options["listen"], ["tcp:1", "tcp:2"])

    def test_listenRepeatable(self) -> None:
        options = ProxyOptions()
        options.environ = {}
        options.parseOptions(["--listen", "tcp:1", "--listen", "unix:/x"])
        self.assertEqual(options["listen"], ["tcp:1", "unix:/x"])
        self.assertEqual(options["backend"], "http://127.0.0.1:8081")

    def test_badBackend(self) -> None:
        options = ProxyOptions()
        options.environ = {}
        self.assertRaises(usage.UsageError, options.parseOptions, ["--backend", "ftp://x"])

    def test_badListen(self) -> None:
        """
        An endpoint Twisted cannot listen on is refused when the options are
        read, naming it and saying why: from a flag or from the environment,
        a bad syntax, an unknown kind, a missing TLS key.
        """
        for argv, environ, said in [
            (["--listen", "tcp:abc"], {}, "--listen tcp:abc: invalid literal"),
            (["--listen", "foo:1"], {}, "--listen foo:1: Unknown endpoint type"),
            ([], {"STREAMRELAY_LISTEN": "tcp:1 tcp:x"}, "--listen tcp:x:"),
            (["--listen", "ssl:1:privateKey=/nonexistent.pem"], {}, "No such file"),
        ]:
            options = BackendOptions()
            options.environ = environ
            error = self.assertRaises(usage.UsageError, options.parseOptions, argv)
            self.assertIn(said, str(error))


class DiskStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = DiskStore(self.root)

    def test_interfaces(self) -> None:
        verifyObject(IUploadStore, self.store)
        upload = self.store.begin("a")
        verifyObject(IUpload, upload)
        upload.abort()

    def test_commit(self) -> None:
        upload = self.store.begin("a")
        upload.write(b"hello")
        self.assertFalse((self.root / "a").exists())
        results: list[tuple[FileInfo, bool]] = []
        upload.commit("ff" * 32).addCallback(results.append)
        [(info, replaced)] = results
        self.assertEqual((info.name, info.size, replaced), ("a", 5, False))
        self.assertEqual((self.root / "a").read_bytes(), b"hello")
        self.assertEqual(list(self.store.partialDir.iterdir()), [])
        stat = self.successResultOf(self.store.stat("a"))
        assert stat is not None
        self.assertEqual(stat.size, 5)

    def test_shaWithoutXattr(self) -> None:
        """Where no extended attribute was kept, the digest is computed."""
        (self.root / "plain").write_bytes(b"hello")
        stat = self.successResultOf(self.store.stat("plain"))
        assert stat is not None
        self.assertEqual(
            stat.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        )

    def test_abort(self) -> None:
        upload = self.store.begin("a")
        upload.write(b"x")
        upload.abort()
        self.assertEqual(list(self.root.iterdir()), [self.store.partialDir])
        self.assertEqual(list(self.store.partialDir.iterdir()), [])

    def test_fileTarget(self) -> None:
        """
        An upload lends its file to a body written straight into it: the
        bytes written there are counted and committed, the file is read
        back through the target's reader, and nothing else may write.
        """
        upload = self.store.begin("a")
        target = upload.fileTarget()
        assert target is not None
        self.assertIsNone(upload.fileTarget())  # lent once
        os.pwrite(target.fd, b"spliced", target.offset)
        self.assertEqual(os.pread(target.readFd, 100, 0), b"spliced")
        upload.wroteToFile(memoryview(b"spliced"))
        self.assertRaises(RuntimeError, upload.write, b"more")
        self.assertIsInstance(target.failure(OSError(errno.ENOSPC, "full")), StorageFull)
        info, _ = self.successResultOf(upload.commit("ff" * 32))
        self.assertEqual(info.size, 7)
        self.assertEqual((self.root / "a").read_bytes(), b"spliced")
        self.assertRaises(OSError, os.fstat, target.readFd)  # closed with the upload

    def test_noFileTargetOnceWritten(self) -> None:
        """An upload that took bytes the usual way lends no file; abort closes the reader."""
        upload = self.store.begin("a")
        upload.write(b"x")
        self.assertIsNone(upload.fileTarget())
        upload.abort()
        other = self.store.begin("b")
        target = other.fileTarget()
        assert target is not None
        other.abort()
        self.assertRaises(OSError, os.fstat, target.readFd)
        self.assertEqual(list(self.store.partialDir.iterdir()), [])

    def test_sweep(self) -> None:
        (self.store.partialDir / "left-over").write_bytes(b"x")
        self.assertEqual(DiskStore(self.root).sweep(), 1)
        self.assertEqual(list(self.store.partialDir.iterdir()), [])

    def test_claim(self) -> None:
        """
        One store at a time takes a folder: another is refused, naming the
        folder and the holder's process, until the first lets go; a sweep
        keeps the lock and removes what uploads left.
        """
        self.assertTrue(self.store.claim())
        self.addCleanup(self.store.release)
        other = DiskStore(self.root)
        error = self.assertRaises(OSError, other.claim)
        self.assertEqual(error.errno, errno.EBUSY)
        self.assertEqual(error.filename, str(self.root))
        self.assertIn(f"in use by another streamrelay-backend (process {os.getpid()})",
                      error.strerror)
        (self.store.partialDir / "left-over").write_bytes(b"x")
        self.assertEqual(self.store.sweep(), 1)
        self.assertEqual([p.name for p in self.store.partialDir.iterdir()], [".lock"])
        self.assertRaises(OSError, other.claim)
        self.store.release()
        self.assertTrue(other.claim())
        other.release()

    def test_missing(self) -> None:
        self.assertIsNone(self.successResultOf(self.store.stat("nope")))

    def test_throttle(self) -> None:
        """With a write rate, the producer is paused until the bytes are due."""
        clock = Clock()
        store = DiskStore(self.root, clock=clock, writeRate=100)
        upload = store.begin("slow")
        events: list[str] = []

        class Producer:
            def pauseProducing(self) -> None:
                events.append("pause")

            def resumeProducing(self) -> None:
                events.append("resume")

            def stopProducing(self) -> None:
                pass

        from twisted.internet.interfaces import IPushProducer
        from zope.interface import directlyProvides

        producer = Producer()
        directlyProvides(producer, IPushProducer)
        upload.registerProducer(producer, True)  # type: ignore[arg-type]
        upload.write(b"x" * 50)
        self.assertEqual(events, ["pause"])
        clock.advance(0.49)
        self.assertEqual(events, ["pause"])
        clock.advance(0.02)
        self.assertEqual(events, ["pause", "resume"])
        upload.abort()


class XattrTests(SynchronousTestCase):
    def test_digestKeptWithFile(self) -> None:
        root = Path(self.mktemp())
        store = DiskStore(root)
        upload = store.begin("a")
        upload.write(b"x")
        upload.commit("ab" * 32)
        try:
            value = os.getxattr(root / "a", SHA256_XATTR)
        except OSError:
            raise self.skipTest("this file system keeps no user extended attributes") from None
        self.assertEqual(value, b"ab" * 32)
        stat = self.successResultOf(store.stat("a"))
        assert stat is not None
        self.assertEqual(stat.sha256, "ab" * 32)


class BacklogTests(SynchronousTestCase):
    def test_backlog(self) -> None:
        from streamrelay.service import withBacklog

        self.assertEqual(withBacklog("tcp:0:interface=127.0.0.1"),
                         "tcp:0:interface=127.0.0.1:backlog=1024")
        self.assertEqual(withBacklog("ssl:443:privateKey=k"), "ssl:443:privateKey=k:backlog=1024")
        self.assertEqual(withBacklog("tcp:80:backlog=5"), "tcp:80:backlog=5")
        self.assertEqual(withBacklog("unix:/tmp/s"), "unix:/tmp/s")


class _SignalReactor:
    """The part of a reactor L{handleSignals} uses; it runs nothing by itself."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.queued: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.whenRunning: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.handled.append(number)

    def sigInt(self, number: int, frame: object = None) -> None:
        self.handled.append(number)

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.queued.append((f, args))

    def callWhenRunning(self, f: Callable[..., object], *args: Any) -> None:
        self.whenRunning.append((f, args))

    def run(self, calls: list[tuple[Callable[..., object], tuple[Any, ...]]]) -> None:
        while calls:
            f, args = calls.pop(0)
            f(*args)


class SignalTests(SynchronousTestCase):
    """The services' signal handlers leave the work, logging included, to the reactor thread."""

    def setUp(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.reactor = _SignalReactor()

    def handleSignals(self, reload: Callable[[], None] | None = None) -> None:
        from streamrelay.service import handleSignals

        handleSignals(self.reactor, "test", reload)
        self.reactor.run(self.reactor.whenRunning)

    def test_stopSignalsLater(self) -> None:
        """
        SIGTERM and SIGINT still reach the reactor's own handlers (which
        log, then stop it), but from the reactor thread, not inside the
        signal handler: one landing while the main thread holds the log
        observer's lock would wait for that lock forever.
        """
        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        signal.signal(signal.SIGINT, self.reactor.sigInt)
        self.handleSignals()
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            assert callable(handler)
            handler(number, None)
        self.assertEqual(self.reactor.handled, [])
        self.reactor.run(self.reactor.queued)
        self.assertEqual(self.reactor.handled, [signal.SIGTERM, signal.SIGINT])

    def test_otherHandlersKept(self) -> None:
        """A handler that is not the reactor's (a debugger's SIGINT, say) stays."""

        def mine(number: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGTERM, self.reactor.sigTerm)
        signal.signal(signal.SIGINT, mine)
        self.handleSignals()
        self.assertIs(signal.getsignal(signal.SIGINT), mine)
        self.assertNotEqual(signal.getsignal(signal.SIGTERM), self.reactor.sigTerm)

    def test_hangUpReloads(self) -> None:
        """SIGHUP calls C{reload}, in the reactor thread."""
        reloaded: list[bool] = []
        self.handleSignals(lambda: reloaded.append(True))
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(reloaded, [])
        self.reactor.run(self.reactor.queued)
        self.assertEqual(reloaded, [True])


class PackagingTests(SynchronousTestCase):
    def test_everyPackageListed(self) -> None:
        """
        setup.cfg lists every package (a non-editable install, as in the
        container image, leaves out any that is missing).
        """
        import configparser

        top = Path(__file__).parent.parent
        config = configparser.ConfigParser()
        config.read(top / "setup.cfg")
        listed = set(config["options"]["packages"].split())
        found = {
            ".".join(init.parent.relative_to(top).parts)
            for init in (top / "streamrelay").rglob("__init__.py")
        }
        self.assertEqual(found - listed, set())
