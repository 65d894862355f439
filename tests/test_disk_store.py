"""
The disk store: its interfaces, commits, aborts, lent files, sweeps, locks,
throttling, extended attributes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from streamrelay.store import FileInfo, IUpload, IUploadStore, diskmeta
from streamrelay.store.disk import DiskStore
from streamrelay.store.interfaces import StorageFull
from streamrelay.store.placing import SHA256_XATTR
from tests.partialfiles import leftInPartial


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
        self.assertEqual(leftInPartial(self.store), [])
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
        self.assertEqual(leftInPartial(self.store), [])

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
        self.assertEqual(leftInPartial(self.store), [])

    def test_sweep(self) -> None:
        (self.store.partialDir / "left-over").write_bytes(b"x")
        self.assertEqual(DiskStore(self.root).sweep(), 1)
        self.assertEqual(leftInPartial(self.store), [])

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


class MetadataTests(SynchronousTestCase):
    """A file's metadata: an extended attribute, or a sidecar where refused."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = DiskStore(self.root)

    def store_(self, name: str, data: bytes, metadata: dict[str, str] | None) -> FileInfo:
        upload = self.store.begin(name, metadata)
        upload.write(data)
        [(info, _)] = [self.successResultOf(upload.commit("ab" * 32))]
        return info

    def test_inExtendedAttribute(self) -> None:
        self.store_("a", b"x", {"k": "v"})
        try:
            value = os.getxattr(self.root / "a", diskmeta.XATTR)
        except OSError:
            raise self.skipTest("this file system keeps no user extended attributes") from None
        self.assertEqual(value, b'{"k":"v"}')
        self.assertFalse((self.root / diskmeta.SIDECAR_DIR).exists())

    def refuseXattrs(self) -> None:
        def refuse(path: object, name: str, value: bytes) -> None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        self.patch(diskmeta, "setxattr", refuse)

    def test_sidecar(self) -> None:
        """Without extended attributes, the metadata is kept in a sidecar."""
        self.refuseXattrs()
        self.store_("a", b"x", {"k": "v"})
        self.assertTrue((self.root / diskmeta.SIDECAR_DIR / "a").exists())
        stat = self.successResultOf(self.store.stat("a"))
        assert stat is not None
        self.assertEqual(stat.metadata, {"k": "v"})
        files, _ = self.successResultOf(self.store.list(None, 10))
        self.assertEqual([(f.name, f.metadata) for f in files], [("a", {"k": "v"})])

    def test_sidecarOfAnotherVersion(self) -> None:
        """A version stored without metadata does not take an older sidecar's."""
        self.refuseXattrs()
        self.store_("a", b"x", {"k": "v"})
        self.store_("a", b"y", None)
        stat = self.successResultOf(self.store.stat("a"))
        assert stat is not None
        self.assertIsNone(stat.metadata)

    def test_deleteRemovesSidecar(self) -> None:
        self.refuseXattrs()
        self.store_("a", b"x", {"k": "v"})
        self.assertTrue(self.successResultOf(self.store.delete("a")))
        self.assertFalse((self.root / diskmeta.SIDECAR_DIR / "a").exists())
        (self.root / "a").write_bytes(b"x")
        stat = self.successResultOf(self.store.stat("a"))
        assert stat is not None
        self.assertIsNone(stat.metadata)
