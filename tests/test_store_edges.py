"""
The disk store at its edges: names taken meanwhile, folders where files
should be, files put in its folder by other means, commits taken back.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from streamrelay.store.disk import DiskStore, DiskUpload
from streamrelay.store.interfaces import (
    FileInfo,
    IExclusiveUpload,
    IRevocableUpload,
    NameTaken,
    NotAFile,
)
from streamrelay.store.placing import SHA256_XATTR
from streamrelay.store.placing import publishByRename as _publishByRename
from tests.hashing import sha
from tests.partialfiles import leftInPartial


class StoreTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = DiskStore(self.root)

    def begin(self, name: str, data: bytes) -> DiskUpload:
        upload = self.store.begin(name)
        upload.write(data)
        return upload

    def storeFile(self, name: str, data: bytes) -> None:
        self.successResultOf(self.begin(name, data).commit(sha(data)))

    def assertNoPartial(self) -> None:
        self.assertEqual(leftInPartial(self.store), [])

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.name != ".partial")


class ExclusiveCommitTests(StoreTestCase):
    def test_interfaces(self) -> None:
        upload = self.store.begin("a")
        self.assertTrue(verifyObject(IExclusiveUpload, upload))
        self.assertTrue(verifyObject(IRevocableUpload, upload))
        upload.abort()

    def test_new(self) -> None:
        info = self.successResultOf(self.begin("a", b"one").commitNew(sha(b"one")))
        self.assertEqual((info.name, info.size, info.sha256), ("a", 3, sha(b"one")))
        self.assertEqual((self.root / "a").read_bytes(), b"one")
        self.assertNoPartial()

    def test_takenMeanwhile(self) -> None:
        """
        Of two uploads begun while the name was free, the second to commit
        with "only if new" fails with NameTaken and leaves nothing.
        """
        first, second = self.begin("a", b"one"), self.begin("a", b"two")
        self.successResultOf(first.commitNew(sha(b"one")))
        self.failureResultOf(second.commitNew(sha(b"two")), NameTaken)
        self.assertEqual((self.root / "a").read_bytes(), b"one")
        self.assertNoPartial()

    def test_replaceFlagIsKnown(self) -> None:
        first, second = self.begin("a", b"one"), self.begin("a", b"two")
        self.assertFalse(self.successResultOf(first.commit(sha(b"one")))[1])
        self.assertTrue(self.successResultOf(second.commit(sha(b"two")))[1])
        self.assertEqual((self.root / "a").read_bytes(), b"two")
        self.assertNoPartial()

    def test_withoutHardLinks(self) -> None:
        """
        Where the file system keeps no hard links, uploads are still stored
        (checked, then renamed).
        """
        def noLinks(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        self.patch(os, "link", noLinks)
        info, replaced = self.successResultOf(self.begin("a", b"one").commit(sha(b"one")))
        self.assertFalse(replaced)
        self.failureResultOf(self.begin("a", b"two").commitNew(sha(b"two")), NameTaken)
        info, replaced = self.successResultOf(self.begin("a", b"three").commit(sha(b"three")))
        self.assertTrue(replaced)
        self.assertEqual((self.root / "a").read_bytes(), b"three")
        self.assertNoPartial()


class FolderTests(StoreTestCase):
    def test_beginOntoFolder(self) -> None:
        (self.root / "dir").mkdir()
        self.assertRaises(NotAFile, self.store.begin, "dir")
        self.assertNoPartial()

    def test_folderMadeBeforeCommit(self) -> None:
        for commit in ["commit", "commitNew", "commitRevocably"]:
            upload = self.begin("dir", b"data")
            (self.root / "dir").mkdir()
            self.failureResultOf(getattr(upload, commit)(sha(b"data")), NotAFile)
            self.assertTrue((self.root / "dir").is_dir())
            self.assertNoPartial()
            (self.root / "dir").rmdir()

    def test_resumableOntoFolder(self) -> None:
        """A resumable upload published onto a folder: NotAFile, part kept."""
        part = self.root / "part"
        part.write_bytes(b"data")
        (self.root / "dir").mkdir()
        self.assertRaises(NotAFile, _publishByRename, part, self.root / "dir", sha(b"data"))
        self.assertEqual(part.read_bytes(), b"data")

    def test_resumableReplaceFlag(self) -> None:
        part = self.root / "part"
        part.write_bytes(b"one")
        self.assertFalse(_publishByRename(part, self.root / "a", sha(b"one"))[1])
        part.write_bytes(b"two")
        self.assertTrue(_publishByRename(part, self.root / "a", sha(b"two"))[1])
        self.assertEqual((self.root / "a").read_bytes(), b"two")
        self.assertFalse(part.exists())


    def test_resumablePublishedAgain(self) -> None:
        """
        Publishing again a part that a crash left linked under its name
        (between link and unlink) leaves the file, and no part.
        """
        part = self.root / "part"
        part.write_bytes(b"data")
        os.link(part, self.root / "a")
        _publishByRename(part, self.root / "a", sha(b"data"))
        self.assertEqual((self.root / "a").read_bytes(), b"data")
        self.assertFalse(part.exists())


class ListingTests(StoreTestCase):
    def test_unrepresentableNamesLeftOut(self) -> None:
        for raw in [b"bad\xffname", b"new\nline", b"\xc3\x28", b"ok"]:
            with open(bytes(self.root) + b"/" + raw, "wb") as f:
                f.write(b"x")
        files, more = self.successResultOf(self.store.list(None, 10))
        self.assertEqual([f.name for f in files], ["ok"])
        self.assertFalse(more)

    def test_pageCountsOnlyListed(self) -> None:
        """Names left out do not take the places of a page."""
        for raw in [b"a\xff", b"a\x01", b"b", b"c"]:
            with open(bytes(self.root) + b"/" + raw, "wb") as f:
                f.write(b"x")
        files, more = self.successResultOf(self.store.list(None, 1))
        self.assertEqual(([f.name for f in files], more), (["b"], True))
        files, more = self.successResultOf(self.store.list("b", 1))
        self.assertEqual(([f.name for f in files], more), (["c"], False))


class RevocableCommitTests(StoreTestCase):
    def commit(self, upload: DiskUpload, data: bytes) -> tuple[FileInfo, bool]:
        return self.successResultOf(upload.commitRevocably(sha(data)))

    def test_revokeNew(self) -> None:
        upload = self.begin("a", b"new")
        self.assertFalse(self.commit(upload, b"new")[1])
        self.assertEqual((self.root / "a").read_bytes(), b"new")
        self.successResultOf(upload.revoke())
        self.assertEqual(self.names(), [])
        self.assertNoPartial()

    def test_revokeReplaced(self) -> None:
        """The version replaced is put back, with its digest."""
        self.storeFile("a", b"old")
        upload = self.begin("a", b"new")
        self.assertTrue(self.commit(upload, b"new")[1])
        self.assertEqual((self.root / "a").read_bytes(), b"new")
        self.successResultOf(upload.revoke())
        self.assertEqual((self.root / "a").read_bytes(), b"old")
        info = self.successResultOf(self.store.stat("a"))
        assert info is not None
        self.assertEqual(info.sha256, sha(b"old"))
        self.assertNoPartial()

    def test_stepsHeldTogether(self) -> None:
        """
        Putting a file in place and taking it back each run under one lock,
        so another upload's steps never fall between their check and their
        rename.
        """
        from streamrelay.store import placing as disk

        held: list[tuple[str, bool]] = []
        for name in ("link", "replace", "lstat", "unlink"):
            real = getattr(os, name)

            def spy(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                held.append((_name, disk._PLACING.locked()))
                return _real(*args, **kw)

            self.patch(disk.os, name, spy)
        self.storeFile("a", b"old")
        upload = self.begin("a", b"new")
        self.commit(upload, b"new")
        placing = [step for step in held if step[0] in ("link", "replace")]
        self.assertTrue(placing)
        self.assertEqual({locked for _, locked in placing}, {True})
        held.clear()
        self.successResultOf(upload.revoke())
        self.assertIn(("lstat", True), held)
        self.assertIn(("replace", True), held)

    def test_revokeLeavesLaterVersion(self) -> None:
        """A version another upload stored meanwhile is not taken back."""
        self.storeFile("a", b"old")
        upload = self.begin("a", b"new")
        self.commit(upload, b"new")
        self.storeFile("a", b"other")
        self.successResultOf(upload.revoke())
        self.assertEqual((self.root / "a").read_bytes(), b"other")
        self.assertNoPartial()

    def test_settle(self) -> None:
        self.storeFile("a", b"old")
        upload = self.begin("a", b"new")
        self.commit(upload, b"new")
        self.assertEqual(len(leftInPartial(self.store)), 1)  # kept aside
        self.successResultOf(upload.settle())
        self.assertNoPartial()
        self.successResultOf(upload.revoke())  # nothing left to take back
        self.assertEqual((self.root / "a").read_bytes(), b"new")

    def test_sweptAfterCrash(self) -> None:
        """A version kept aside when the backend stopped is swept."""
        self.storeFile("a", b"old")
        self.commit(self.begin("a", b"new"), b"new")
        self.assertEqual(DiskStore(self.root).sweep(), 1)
        self.assertEqual((self.root / "a").read_bytes(), b"new")
        self.assertNoPartial()

    def test_digestTravels(self) -> None:
        upload = self.begin("a", b"new")
        self.commit(upload, b"new")
        try:
            value = os.getxattr(self.root / "a", SHA256_XATTR)
        except OSError:
            raise self.skipTest("this file system keeps no user extended attributes") from None
        self.assertEqual(value, sha(b"new").encode())
