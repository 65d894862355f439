"""
The store contract: what every L{IUploadStore} and every L{IResumableStore}
must do, whatever keeps the bytes.  One mixin of checks for each seam,
applied to each implementation: the disk store, the S3 store over an
in-memory bucket (L{tests.s3memory}), and the S3 store over a real S3
server (Ceph RGW in CI; skipped without one, see L{tests.s3env}).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IConsumer, IProducer
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from streamrelay.store import FileInfo, IStoredFile, IUpload, IUploadStore
from streamrelay.store.disk import DiskStore
from streamrelay.store.interfaces import (
    IExclusiveUpload,
    IRevocableUpload,
    ISealableUpload,
    NameTaken,
)
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.store import OWN_FOLDER, S3Store
from streamrelay.tus.disk import DiskResumableStore
from streamrelay.tus.interfaces import (
    FINAL,
    PARTIAL,
    IPartialWriter,
    IResumableStore,
    ResumableUpload,
)
from streamrelay.tus.s3 import S3ResumableStore
from tests.hashing import sha
from tests.partialfiles import leftInPartial
from tests.s3env import allKeys, newBucket, pendingUploads, skipUnlessServer
from tests.s3memory import MemoryS3

MiB = 1 << 20
UPLOAD_ID = "0123456789abcdef0123456789abcdef"
PREFIX = "contract/"


if TYPE_CHECKING:
    _Contract = TestCase
else:
    _Contract = object


@implementer(IConsumer)
class Collector:
    """A consumer keeping what it is written."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.producer: IProducer | None = None

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data += data


async def stored(
    store: IUploadStore, name: str, data: bytes, metadata: dict[str, str] | None = None
) -> tuple[FileInfo, bool]:
    """Store C{data} as C{name} with a plain upload."""
    upload = store.begin(name, metadata) if metadata is not None else store.begin(name)
    if data:
        upload.write(data)
    return await upload.commit(sha(data))


async def read(store: IUploadStore, name: str, start: int = 0, end: int | None = None) -> bytes:
    opened = await store.open(name)
    assert opened is not None, f"{name!r} is not stored"
    end = opened.info.size if end is None else end
    try:
        sink = Collector()
        if start < end:  # an empty range is never streamed (see the routes)
            await opened.stream(start, end, sink)
        return bytes(sink.data)
    finally:
        opened.close()


async def names(store: IUploadStore) -> list[str]:
    files, _ = await store.list(None, 1000)
    return [f.name for f in files]


class UploadStoreContract(_Contract):
    """
    What the routes rely on from any L{IUploadStore}.  A test class mixes
    this into a L{TestCase} and says how to make the store and what it
    keeps besides its files.
    """

    store: IUploadStore

    async def makeStore(self) -> IUploadStore:
        raise NotImplementedError

    async def leftovers(self) -> list[str]:
        """What the store keeps besides its files (staging objects, partial files)."""
        raise NotImplementedError

    async def setUp(self) -> None:  # type: ignore[override]
        self.store = await self.makeStore()

    async def test_provides(self) -> None:
        self.assertTrue(verifyObject(IUploadStore, self.store))
        upload = self.store.begin("a")
        self.assertTrue(verifyObject(IUpload, upload))
        upload.abort()

    async def test_commit(self) -> None:
        """A committed upload is the file: its name, size, SHA-256 and bytes."""
        data = b"hello, world\n" * 1000
        upload = self.store.begin("hello.txt")
        upload.write(data[:5000])
        upload.write(data[5000:])
        self.assertEqual(upload.size, len(data))
        info, replaced = await upload.commit(sha(data))
        self.assertEqual((info.name, info.size, info.sha256), ("hello.txt", len(data), sha(data)))
        self.assertFalse(replaced)
        statted = await self.store.stat("hello.txt")
        assert statted is not None
        self.assertEqual(
            (statted.name, statted.size, statted.sha256), (info.name, info.size, info.sha256)
        )
        self.assertEqual(await read(self.store, "hello.txt"), data)
        self.assertEqual(await self.leftovers(), [])

    async def test_emptyFile(self) -> None:
        info, replaced = await stored(self.store, "empty", b"")
        self.assertEqual((info.size, info.sha256), (0, sha(b"")))
        statted = await self.store.stat("empty")
        assert statted is not None
        self.assertEqual((statted.size, statted.sha256), (0, sha(b"")))

    async def test_notVisibleBeforeCommit(self) -> None:
        """Nothing of an upload is seen under its name until it is committed."""
        await stored(self.store, "old", b"old version")
        upload = self.store.begin("new")
        upload.write(b"new bytes")
        again = self.store.begin("old")
        again.write(b"newer version")
        self.assertIsNone(await self.store.stat("new"))
        self.assertIsNone(await self.store.open("new"))
        self.assertEqual(await names(self.store), ["old"])
        self.assertEqual(await read(self.store, "old"), b"old version")
        await upload.commit(sha(b"new bytes"))
        await again.commit(sha(b"newer version"))
        self.assertEqual(await names(self.store), ["new", "old"])

    async def test_abortLeavesNothing(self) -> None:
        await stored(self.store, "kept", b"kept")
        upload = self.store.begin("kept")
        upload.write(b"x" * 100)
        upload.abort()
        other = self.store.begin("gone")
        for _ in range(6):  # past a part: a multipart upload in S3
            other.write(b"y" * MiB)
        other.abort()
        self.assertIsNone(await self.store.stat("gone"))
        self.assertEqual(await read(self.store, "kept"), b"kept")
        self.assertEqual(await names(self.store), ["kept"])
        self.assertEqual(await self.leftovers(), [])

    async def test_replace(self) -> None:
        """A second version replaces the first whole, and says it did."""
        await stored(self.store, "f", b"first version, longer")
        info, replaced = await stored(self.store, "f", b"second")
        self.assertTrue(replaced)
        self.assertEqual((info.size, info.sha256), (6, sha(b"second")))
        self.assertEqual(await read(self.store, "f"), b"second")
        self.assertEqual(await names(self.store), ["f"])
        self.assertEqual(await self.leftovers(), [])

    async def test_onlyIfNew(self) -> None:
        """An exclusive commit takes a free name, and loses to a taken one, keeping nothing."""
        first = self.store.begin("x")
        if not IExclusiveUpload.providedBy(first):
            first.abort()
            raise self.skipTest("this store has no exclusive uploads")
        first.write(b"one")
        info = await first.commitNew(sha(b"one"))
        self.assertEqual(info.sha256, sha(b"one"))
        second = self.store.begin("x")
        assert IExclusiveUpload.providedBy(second)
        second.write(b"two")
        with self.assertRaises(NameTaken):
            await second.commitNew(sha(b"two"))
        self.assertEqual(await read(self.store, "x"), b"one")
        self.assertEqual(await self.leftovers(), [])

    async def test_revocable(self) -> None:
        """A revocable commit taken back puts the older version back; settled, it stays."""
        await stored(self.store, "r", b"older")
        upload = self.store.begin("r")
        if not IRevocableUpload.providedBy(upload):
            upload.abort()
            raise self.skipTest("this store has no revocable uploads")
        upload.write(b"newer")
        _, replaced = await upload.commitRevocably(sha(b"newer"))
        self.assertTrue(replaced)
        self.assertEqual(await read(self.store, "r"), b"newer")
        await upload.revoke()
        self.assertEqual(await read(self.store, "r"), b"older")
        fresh = self.store.begin("fresh")
        assert IRevocableUpload.providedBy(fresh)
        fresh.write(b"kept")
        await fresh.commitRevocably(sha(b"kept"))
        await fresh.settle()
        await fresh.revoke()  # nothing left to take back
        self.assertEqual(await read(self.store, "fresh"), b"kept")
        self.assertEqual(await self.leftovers(), [])

    async def test_sealed(self) -> None:
        """A sealed upload is committed later, whole, or aborted, leaving nothing."""
        upload = self.store.begin("s")
        if not ISealableUpload.providedBy(upload):
            upload.abort()
            raise self.skipTest("this store has no sealable uploads")
        upload.write(b"sealed bytes")
        await upload.seal()
        self.assertIsNone(await self.store.stat("s"))
        info, _ = await upload.commit(sha(b"sealed bytes"))
        self.assertEqual(info.size, 12)
        self.assertEqual(await read(self.store, "s"), b"sealed bytes")
        other = self.store.begin("t")
        assert ISealableUpload.providedBy(other)
        other.write(b"dropped")
        await other.seal()
        other.abort()
        self.assertIsNone(await self.store.stat("t"))
        self.assertEqual(await self.leftovers(), [])

    async def test_missing(self) -> None:
        self.assertIsNone(await self.store.stat("nothing"))
        self.assertIsNone(await self.store.open("nothing"))
        self.assertFalse(await self.store.delete("nothing"))

    async def test_delete(self) -> None:
        await stored(self.store, "d", b"bytes")
        self.assertTrue(await self.store.delete("d"))
        self.assertIsNone(await self.store.stat("d"))
        self.assertFalse(await self.store.delete("d"))
        self.assertEqual(await names(self.store), [])

    async def test_list(self) -> None:
        """Pages in code point order, after a name, with whether more follow."""
        for name in ["b", "a", "é", "c d", "B"]:
            await stored(self.store, name, name.encode())
        files, more = await self.store.list(None, 10)
        self.assertEqual([f.name for f in files], ["B", "a", "b", "c d", "é"])
        self.assertFalse(more)
        self.assertEqual(
            [(f.size, f.sha256) for f in files], [(len(n.encode()), sha(n.encode())) for n in
                                                  ["B", "a", "b", "c d", "é"]]
        )
        files, more = await self.store.list("a", 2)
        self.assertEqual([f.name for f in files], ["b", "c d"])
        self.assertTrue(more)
        files, more = await self.store.list("c d", 2)
        self.assertEqual([f.name for f in files], ["é"])
        self.assertFalse(more)

    async def test_metadata(self) -> None:
        """
        Metadata given at the start is the version's: in the commit's info,
        C{stat}, C{open} and listings; a version without any has none.
        """
        metadata = {"owner": "ana", "Content-Type": "text/plain", "note": "ç a, \"x\" %20"}
        info, _ = await stored(self.store, "m", b"with metadata", metadata)
        self.assertEqual(info.metadata, metadata)
        await stored(self.store, "plain", b"without")
        statted = await self.store.stat("m")
        assert statted is not None
        self.assertEqual(statted.metadata, metadata)
        opened = await self.store.open("m")
        assert opened is not None
        self.assertEqual(opened.info.metadata, metadata)
        opened.close()
        files, _ = await self.store.list(None, 10)
        self.assertEqual({f.name: f.metadata for f in files}, {"m": metadata, "plain": None})

    async def test_metadataReplaced(self) -> None:
        """A new version takes its own metadata, or none: never the older one's."""
        await stored(self.store, "m", b"one", {"v": "1"})
        info, replaced = await stored(self.store, "m", b"two", {"v": "2"})
        self.assertTrue(replaced)
        self.assertEqual(info.metadata, {"v": "2"})
        await stored(self.store, "m", b"three")
        statted = await self.store.stat("m")
        assert statted is not None
        self.assertIsNone(statted.metadata)
        files, _ = await self.store.list(None, 10)
        self.assertEqual([f.metadata for f in files], [None])

    async def test_metadataLargerThanAPart(self) -> None:
        """Metadata of a file over a part (S3: copied from its staging object)."""
        data = bytes(6 * MiB + 3)
        upload = self.store.begin("bigm", {"k": "v"})
        upload.write(data)
        info, _ = await upload.commit(sha(data))
        self.assertEqual(info.metadata, {"k": "v"})
        statted = await self.store.stat("bigm")
        assert statted is not None
        self.assertEqual(statted.metadata, {"k": "v"})

    async def test_range(self) -> None:
        data = bytes(range(256)) * 40
        await stored(self.store, "r", data)
        self.assertEqual(await read(self.store, "r", 100, 5000), data[100:5000])
        self.assertEqual(await read(self.store, "r", 10239, 10240), data[-1:])

    async def test_openedVersion(self) -> None:
        """
        A file opened keeps its info, and reading it gives its bytes or
        fails: never the bytes of a version stored since.
        """
        await stored(self.store, "v", b"version one")
        opened = await self.store.open("v")
        assert opened is not None
        self.assertTrue(verifyObject(IStoredFile, opened))
        await stored(self.store, "v", b"version two!")
        self.assertEqual(opened.info.sha256, sha(b"version one"))
        sink = Collector()
        try:
            await opened.stream(0, opened.info.size, sink)
        except Exception:
            pass
        else:
            self.assertEqual(bytes(sink.data), b"version one")
        finally:
            opened.close()

    async def test_largerThanAPart(self) -> None:
        """A file over S3's smallest part (a multipart upload there) is stored whole."""
        data = b"".join(bytes([i]) * MiB for i in range(6)) + b"tail"
        upload = self.store.begin("big")
        for offset in range(0, len(data), MiB):
            upload.write(data[offset:offset + MiB])
        info, _ = await upload.commit(sha(data))
        self.assertEqual((info.size, info.sha256), (len(data), sha(data)))
        self.assertEqual(sha(await read(self.store, "big")), sha(data))
        self.assertEqual(await self.leftovers(), [])


def newUpload(name: str = "resumed.bin", length: int | None = None) -> ResumableUpload:
    return ResumableUpload(
        id=UPLOAD_ID, length=length, offset=0, metadata="", name=name,
        created=1.0, expires=1e12,
    )


async def append(
    resumable: IResumableStore, upload: ResumableUpload, data: bytes
) -> IPartialWriter:
    """Write C{data} at the upload's offset, flush it and save the new offset."""
    writer = await resumable.openWriter(upload)
    try:
        for offset in range(0, len(data), MiB):
            writer.write(data[offset:offset + MiB])
        covered = await writer.flush()
    finally:
        writer.close()
    upload.offset = writer.start + covered
    await resumable.save(upload)
    return writer


class ResumableStoreContract(_Contract):
    """What the tus protocol relies on from any L{IResumableStore}."""

    store: IUploadStore
    resumable: IResumableStore

    async def makeStores(self) -> tuple[IUploadStore, IResumableStore]:
        raise NotImplementedError

    async def setUp(self) -> None:  # type: ignore[override]
        self.store, self.resumable = await self.makeStores()

    async def test_provides(self) -> None:
        self.assertTrue(verifyObject(IResumableStore, self.resumable))
        self.assertIs(self.resumable.store, self.store)

    async def test_createLoadSave(self) -> None:
        upload = newUpload(length=10)
        await self.resumable.create(upload)
        self.assertEqual(await self.resumable.load(UPLOAD_ID), upload)
        self.assertEqual(await self.resumable.ids(), [UPLOAD_ID])
        upload.metadata = "filename cmVzdW1lZC5iaW4="
        await self.resumable.save(upload)
        self.assertEqual(await self.resumable.load(UPLOAD_ID), upload)

    async def test_unknown(self) -> None:
        self.assertIsNone(await self.resumable.load("f" * 32))
        self.assertIsNone(await self.resumable.load("../not-an-id"))
        self.assertEqual(await self.resumable.ids(), [])

    async def test_writeResumeHash(self) -> None:
        """Bytes flushed are counted; a later writer appends; the prefix hash covers them."""
        upload = newUpload()
        await self.resumable.create(upload)
        writer = await append(self.resumable, upload, b"first ")
        self.assertEqual(writer.written(), 6)
        self.assertEqual(upload.offset, 6)
        await append(self.resumable, upload, b"second")
        loaded = await self.resumable.load(UPLOAD_ID)
        assert loaded is not None
        self.assertEqual(loaded.offset, 12)
        digest = await self.resumable.hashPrefix(loaded)
        self.assertEqual(digest.hexdigest(), sha(b"first second"))

    async def test_truncate(self) -> None:
        """A writer's bytes can be dropped, back to where it started."""
        upload = newUpload()
        await self.resumable.create(upload)
        await append(self.resumable, upload, b"kept")
        writer = await self.resumable.openWriter(upload)
        writer.write(b"dropped")
        await writer.truncate()
        writer.close()
        writer = await self.resumable.openWriter(upload)
        writer.write(b" and more")
        upload.offset += await writer.flush()
        writer.close()
        await self.resumable.save(upload)
        digest = await self.resumable.hashPrefix(upload)
        self.assertEqual(digest.hexdigest(), sha(b"kept and more"))

    async def test_publish(self) -> None:
        """The complete bytes become the file, whole, and only then."""
        data = b"".join(bytes([i]) * MiB for i in range(6)) + b"tail"
        upload = newUpload(length=len(data))
        await self.resumable.create(upload)
        await append(self.resumable, upload, data[:100])
        self.assertIsNone(await self.store.stat(upload.name))
        await append(self.resumable, upload, data[100:])
        self.assertTrue(upload.complete)
        self.assertIsNone(await self.store.stat(upload.name))
        info, replaced = await self.resumable.publish(upload, sha(data))
        self.assertEqual(
            (info.name, info.size, info.sha256), (upload.name, len(data), sha(data))
        )
        self.assertFalse(replaced)
        self.assertEqual(sha(await read(self.store, upload.name)), sha(data))

    async def test_publishReplaces(self) -> None:
        await stored(self.store, "resumed.bin", b"older")
        upload = newUpload(length=5)
        await self.resumable.create(upload)
        await append(self.resumable, upload, b"newer")
        info, replaced = await self.resumable.publish(upload, sha(b"newer"))
        self.assertTrue(replaced)
        self.assertEqual(await read(self.store, "resumed.bin"), b"newer")

    async def test_publishMetadata(self) -> None:
        """An upload's file metadata goes with the file it becomes."""
        upload = newUpload(length=5)
        upload.fileMetadata = {"k": "v"}
        await self.resumable.create(upload)
        await append(self.resumable, upload, b"bytes")
        info, _ = await self.resumable.publish(upload, sha(b"bytes"))
        self.assertEqual(info.metadata, {"k": "v"})
        statted = await self.store.stat(upload.name)
        assert statted is not None
        self.assertEqual(statted.metadata, {"k": "v"})
        loaded = await self.resumable.load(upload.id)
        assert loaded is not None
        self.assertEqual((loaded.fileMetadata, loaded.maxSize), ({"k": "v"}, None))

    async def test_remove(self) -> None:
        upload = newUpload()
        await self.resumable.create(upload)
        await append(self.resumable, upload, b"bytes")
        await self.resumable.remove(UPLOAD_ID)
        self.assertIsNone(await self.resumable.load(UPLOAD_ID))
        self.assertEqual(await self.resumable.ids(), [])

    async def concatenated(
        self, pieces: list[bytes], name: str = "whole.bin"
    ) -> tuple[ResumableUpload, list[ResumableUpload]]:
        """
        Partial uploads of C{pieces}, and the final upload made of them,
        checked: the hash of the whole, its bytes once loaded again, the
        partial uploads untouched; not yet published.
        """
        partials = []
        for data in pieces:
            partial = newUpload("", len(data))
            partial.id, partial.concat = secrets.token_hex(16), PARTIAL
            await self.resumable.create(partial)
            if data:
                await append(self.resumable, partial, data)
            partials.append(partial)
        whole = b"".join(pieces)
        final = newUpload(name, len(whole))
        final.id, final.concat, final.parts = secrets.token_hex(16), FINAL, [
            p.id for p in partials
        ]
        await self.resumable.create(final)
        state = await self.resumable.concatenate(final, partials)
        self.assertEqual(state.hexdigest(), sha(whole))
        final.offset = len(whole)
        await self.resumable.save(final)
        loaded = await self.resumable.load(final.id)
        self.assertEqual(loaded, final)
        assert loaded is not None
        self.assertEqual((await self.resumable.hashPrefix(loaded)).hexdigest(), sha(whole))
        for partial, data in zip(partials, pieces, strict=True):
            again = await self.resumable.load(partial.id)
            self.assertEqual(again, partial)
            assert again is not None
            self.assertEqual((await self.resumable.hashPrefix(again)).hexdigest(), sha(data))
        self.assertIsNone(await self.store.stat(name))
        return final, partials

    async def test_concatenate(self) -> None:
        """
        A final upload of partial uploads (the first a whole part's size,
        as S3 copies inside the bucket) holds their bytes in order, and
        publishes as any upload; the partial uploads stay as they were.
        """
        pieces = [bytes([7]) * (5 * MiB), b"tail" * 300_000]
        final, partials = await self.concatenated(pieces)
        whole = b"".join(pieces)
        info, replaced = await self.resumable.publish(final, sha(whole))
        self.assertEqual((info.name, info.size, info.sha256, replaced),
                         ("whole.bin", len(whole), sha(whole), False))
        self.assertEqual(sha(await read(self.store, "whole.bin")), sha(whole))
        for partial, data in zip(partials, pieces, strict=True):
            again = await self.resumable.load(partial.id)
            assert again is not None
            self.assertEqual((await self.resumable.hashPrefix(again)).hexdigest(), sha(data))

    async def test_concatenateSmall(self) -> None:
        """Partial uploads shorter than a part, or empty, anywhere."""
        pieces = [b"abc", b"", b"defg", bytes([1]) * (6 * MiB), b"h"]
        final, _ = await self.concatenated(pieces)
        whole = b"".join(pieces)
        await self.resumable.publish(final, sha(whole))
        self.assertEqual(await read(self.store, "whole.bin"), whole)

    async def test_concatenateEmpty(self) -> None:
        final, _ = await self.concatenated([b"", b""], "empty.bin")
        info, _ = await self.resumable.publish(final, sha(b""))
        self.assertEqual(info.size, 0)
        self.assertEqual(await read(self.store, "empty.bin"), b"")


# The disk store


def diskStore(test: TestCase) -> DiskStore:
    return DiskStore(Path(test.mktemp()))


class DiskStoreContractTests(UploadStoreContract, TestCase):
    async def makeStore(self) -> IUploadStore:
        self.disk = diskStore(self)
        return self.disk

    async def leftovers(self) -> list[str]:
        return [p.name for p in leftInPartial(self.disk)]


class DiskResumableContractTests(ResumableStoreContract, TestCase):
    async def makeStores(self) -> tuple[IUploadStore, IResumableStore]:
        store = diskStore(self)
        return store, DiskResumableStore(store.root / ".tus", store)


class DiskResumableCopyContractTests(ResumableStoreContract, TestCase):
    """Resumable uploads on disk published by copying, as into any store."""

    async def makeStores(self) -> tuple[IUploadStore, IResumableStore]:
        store = diskStore(self)
        return store, DiskResumableStore(Path(self.mktemp()), store, rename=False)


# The S3 store, over a bucket in memory


async def s3Leftovers(store: S3Store, client: IS3Client, keys: list[str]) -> list[str]:
    """Staging objects and multipart uploads left, once the background work is done."""
    await store.settled()
    uploads = [u.key for u in (await client.listUploads(store.prefix)).uploads]
    own = store.prefix + OWN_FOLDER
    return sorted([key for key in keys if key.startswith(own)] + uploads)


class MemoryS3StoreContractTests(UploadStoreContract, TestCase):
    async def makeStore(self) -> IUploadStore:
        self.s3 = MemoryS3()
        self.assertTrue(verifyObject(IS3Client, self.s3))
        self.s3store = S3Store(self.s3, PREFIX, partSize=5 * MiB)
        return self.s3store

    async def leftovers(self) -> list[str]:
        return await s3Leftovers(self.s3store, self.s3, list(self.s3.objects))


class MemoryS3ResumableContractTests(ResumableStoreContract, TestCase):
    async def makeStores(self) -> tuple[IUploadStore, IResumableStore]:
        self.s3 = MemoryS3()
        store = S3Store(self.s3, PREFIX, partSize=5 * MiB)
        self.s3resumable = S3ResumableStore(store)
        return store, self.s3resumable

    async def test_concatenateCopiedInS3(self) -> None:
        """
        Partial uploads whose segments are whole parts but the last make a
        final upload of those very segments (copied inside S3 when it is
        published), no object of its own; shorter ones are copied into
        segments of its own.
        """
        large = [bytes([7]) * (5 * MiB), bytes([8]) * (5 * MiB), b"tail"]
        final, partials = await self.concatenated(large)
        owners = [s.owner for s in self.s3resumable.layout(final)]
        self.assertEqual(owners, [p.id for p in partials])
        self.assertEqual(
            [k for k in self.s3.objects if final.id in k and not k.endswith(".json")], []
        )
        small = [b"abc", bytes([7]) * (5 * MiB)]
        final, _ = await self.concatenated(small, "small.bin")
        self.assertEqual({s.owner for s in self.s3resumable.layout(final)}, {None})
        await self.resumable.publish(final, sha(b"".join(small)))
        self.assertEqual(await read(self.store, "small.bin"), b"".join(small))


# The S3 store, over a real S3 server


@skipUnlessServer
class RealS3StoreContractTests(UploadStoreContract, TestCase):
    timeout = 120

    async def makeStore(self) -> IUploadStore:
        _, self.client = await newBucket(self)
        self.s3store = S3Store(self.client, PREFIX, partSize=5 * MiB)
        return self.s3store

    async def leftovers(self) -> list[str]:
        await self.s3store.settled()
        uploads = [u.key for u in await pendingUploads(self.client)]
        return sorted(await allKeys(self.client, PREFIX + OWN_FOLDER) + uploads)


@skipUnlessServer
class RealS3ResumableContractTests(ResumableStoreContract, TestCase):
    timeout = 120

    async def makeStores(self) -> tuple[IUploadStore, IResumableStore]:
        _, client = await newBucket(self)
        store = S3Store(client, PREFIX, partSize=5 * MiB)
        return store, S3ResumableStore(store)
