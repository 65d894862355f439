"""
The S3 store against a real S3 server (Ceph RGW, started by
C{bash .ci/s3-ceph.sh start}; see L{tests.s3env}), with the real programs:
a 1 GiB upload through the proxy in bounded memory, aborts that leave no
multipart upload, ranges, deletes, two backends sharing one bucket, and
the store's own sweeping and copying.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from streamrelay.store.s3.client import ObjectHead
from streamrelay.store.s3.store import S3Store
from tests.processes import (
    BIN,
    GiB,
    MiB,
    Program,
    call,
    curl,
    deferLater,
    eventually,
    run,
    sha256File,
    sharedFile,
    spawn,
    startService,
)
from tests.s3env import SERVER, allKeys, newBucket, pendingUploads, skipUnlessServer

#: Allowed growth of the backend's peak RSS over its idle RSS for one upload
#: with the default parts (issues 9 and 28): three 5 MiB parts in flight and
#: one more filling hold 20 MiB; RSS grew by 23-28 MiB (more with parts
#: signed, as here: RGW is on http), so the margin is about 4 MiB.
S3_MEMORY_BOUND = 32 * MiB
PREFIX = "shared/"
TUS: dict[bytes | str, bytes | str] = {"tus-resumable": "1.0.0"}


@skipUnlessServer
class S3IntegrationTests(TestCase):
    timeout = 400

    async def backend(self, bucket: str, *args: str) -> Program:
        assert SERVER is not None
        return await startService(
            self, "backend", *SERVER.backendArgs(bucket, PREFIX), *args, env=SERVER.processEnv()
        )

    async def settled(self, client: object, bucket: str, keys: list[str]) -> None:
        """
        The bucket ends up holding exactly C{keys} under the prefix and no
        multipart upload (staging objects are removed in the background).
        """
        from streamrelay.store.s3.client import S3Client

        assert isinstance(client, S3Client)
        state: dict[str, object] = {}

        async def check() -> bool:
            state["keys"] = sorted(await allKeys(client))
            state["uploads"] = await pendingUploads(client)
            return state["keys"] == sorted(keys) and state["uploads"] == []

        for _ in range(100):
            if await check():
                return
            await deferLater(0.1)
        self.fail(f"bucket {bucket} holds {state}")

    async def test_oneGiBThroughProxy(self) -> None:
        """
        1 GiB sent with curl through the proxy lands as one object with the
        right SHA-256 in its metadata; with the default parts the backend's
        memory grows by less than 32 MiB; nothing else stays in the bucket.
        """
        source, sha = sharedFile(GiB)
        bucket, client = await newBucket(self)
        backend = await self.backend(bucket)
        proxy = await startService(self, "proxy", "--backend", backend.url)
        # The first request loads what the backend imports lazily.
        self.assertEqual((await call("GET", backend.url + "/files"))[0], 200)
        idle = backend.rss()
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code}", f"{proxy.url}/files/big.bin",
        ), timeout=300)
        self.assertEqual(code, 0, output)
        body, _, status = output.decode().rpartition("\n")
        self.assertEqual(status, "201", body)
        answer = json.loads(body)
        self.assertEqual((answer["size"], answer["sha256"]), (GiB, sha))
        growth = backend.peak() - idle
        self.assertLess(growth, S3_MEMORY_BOUND, f"backend peak RSS grew {growth / MiB:.1f} MiB")
        head = await client.head(PREFIX + "big.bin")
        assert head is not None
        self.assertEqual((head.size, head.sha256), (GiB, sha))
        await self.settled(client, bucket, [PREFIX + "big.bin"])
        code, headers, _ = await call("HEAD", proxy.url + "/files/big.bin")
        self.assertEqual((code, headers["etag"]), (200, f'"{sha}"'))

    async def test_clientAbortLeavesNoUpload(self) -> None:
        """
        A client that drops its connection half-way through a 256 MiB upload
        leaves no object and no multipart upload (ListMultipartUploads is
        empty), and the backend keeps serving.
        """
        source, _ = sharedFile(256 * MiB)
        bucket, client = await newBucket(self)
        backend = await self.backend(bucket)
        proxy = await startService(self, "proxy", "--backend", backend.url)
        sender = spawn(self, "halfsender", [
            sys.executable, "-m", "tests.halfsender", str(proxy.port), "/files/gone.bin",
            str(source),
        ])
        await sender.protocol.waitFor(b"HALF")
        uploads: list[object] = []
        for _ in range(50):
            uploads = await pendingUploads(client)
            if uploads:
                break
            await deferLater(0.1)
        self.assertEqual(len(uploads), 1, uploads)
        self.assertTrue(uploads[0].key.startswith(PREFIX + ".streamrelay/partial/"))  # type: ignore[attr-defined]
        sender.writeStdin(b"abort\n")
        await sender.protocol.waitFor(b"ABORTED")
        await self.settled(client, bucket, [])
        self.assertEqual(await pendingUploads(client), [])
        code, _, body = await call("PUT", proxy.url + "/files/next.txt", b"still serving")
        self.assertEqual(code, 201, body)
        await self.settled(client, bucket, [PREFIX + "next.txt"])

    async def test_digestMismatchStoresNothing(self) -> None:
        """
        A 20 MiB body (several parts) whose Content-Digest does not match
        is refused; the older version stays and no upload is left.
        """
        bucket, client = await newBucket(self)
        backend = await self.backend(bucket, "--s3-part-size", "5M")
        url = backend.url + "/files/doc.bin"
        old = b"old version"
        self.assertEqual((await call("PUT", url, old))[0], 201)
        data = bytes(range(256)) * (80 * 1024)
        wrong = base64.b64encode(hashlib.sha256(b"not it").digest()).decode()
        code, _, body = await call("PUT", url, data, {"Content-Digest": f"sha-256=:{wrong}:"})
        self.assertEqual((code, json.loads(body)["error"]), (400, "digest_mismatch"))
        await self.settled(client, bucket, [PREFIX + "doc.bin"])
        self.assertEqual((await call("GET", url))[2], old)
        code, _, body = await call("PUT", url, data)
        sha = hashlib.sha256(data).hexdigest()
        self.assertEqual((code, json.loads(body)["sha256"]), (200, sha))
        self.assertEqual((await call("GET", url))[2], data)

    async def test_rangesAndDelete(self) -> None:
        """
        Downloads pass Range through (curl ranges and resume, HEAD, 304,
        416); DELETE removes the object; the listing follows.
        """
        source, sha = sharedFile(16 * MiB)
        bucket, client = await newBucket(self)
        backend = await self.backend(bucket, "--s3-part-size", "5M")
        base = backend.url + "/files/"
        code, output = await run(self, "curl", curl("-T", str(source), base + "r.bin"))
        self.assertEqual(code, 0, output)
        self.assertEqual(json.loads(output)["sha256"], sha)
        data = source.read_bytes()

        code, headers, body = await call("GET", base + "r.bin", headers={"Range": "bytes=100-1099"})
        self.assertEqual((code, body), (206, data[100:1100]))
        self.assertEqual(headers["content-range"], f"bytes 100-1099/{len(data)}")
        code, _, body = await call("GET", base + "r.bin", headers={"Range": "bytes=-5000000"})
        self.assertEqual((code, body), (206, data[-5000000:]))
        code, _, _ = await call("GET", base + "r.bin", headers={"Range": f"bytes={len(data)}-"})
        self.assertEqual(code, 416)
        code, _, _ = await call("GET", base + "r.bin", headers={"If-None-Match": f'"{sha}"'})
        self.assertEqual(code, 304)
        code, headers, body = await call("HEAD", base + "r.bin")
        self.assertEqual((code, headers["etag"], body), (200, f'"{sha}"', b""))

        # curl resumes a download cut after 3 MiB.
        partial = Path(self.mktemp())
        partial.write_bytes(data[: 3 * MiB])
        code, output = await run(self, "curl", curl("-C", "-", "-o", str(partial), base + "r.bin"))
        self.assertEqual(code, 0, output)
        self.assertEqual(sha256File(partial), sha)

        listing = json.loads((await call("GET", backend.url + "/files"))[2])
        self.assertEqual([(f["name"], f["sha256"]) for f in listing["files"]], [("r.bin", sha)])
        self.assertEqual((await call("DELETE", base + "r.bin"))[0], 204)
        self.assertEqual((await call("GET", base + "r.bin"))[0], 404)
        self.assertEqual((await call("DELETE", base + "r.bin"))[0], 404)
        self.assertEqual(json.loads((await call("GET", backend.url + "/files"))[2]), {"files": []})
        await self.settled(client, bucket, [])

    async def test_twoBackendsShareBucket(self) -> None:
        """
        Two backends (each with its proxy) on one bucket serve, list and
        delete each other's files; one sends its parts unsigned.
        """
        source, sha = sharedFile(16 * MiB)
        bucket, client = await newBucket(self)
        one = await self.backend(
            bucket, "--s3-part-size", "5M", "--s3-parts-in-flight", "3",
            "--s3-payload-hash", "unsigned",
        )
        two = await self.backend(bucket, "--s3-part-size", "5M")
        proxyOne = await startService(self, "proxy", "--backend", one.url)
        proxyTwo = await startService(self, "proxy", "--backend", two.url)

        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code}", proxyOne.url + "/files/from-one.bin"))
        self.assertTrue(output.endswith(b"\n201"), output)
        self.assertEqual((await call("PUT", proxyTwo.url + "/files/from-two.txt", b"two"))[0], 201)

        got = Path(self.mktemp())
        code, output = await run(self, "curl", curl(
            "-o", str(got), proxyTwo.url + "/files/from-one.bin"))
        self.assertEqual(code, 0, output)
        self.assertEqual(sha256File(got), sha)
        self.assertEqual((await call("GET", proxyOne.url + "/files/from-two.txt"))[2], b"two")
        for proxy in (proxyOne, proxyTwo):
            listing = json.loads((await call("GET", proxy.url + "/files"))[2])
            self.assertEqual(
                [(f["name"], f["sha256"]) for f in listing["files"]],
                [("from-one.bin", sha), ("from-two.txt", hashlib.sha256(b"two").hexdigest())],
            )
        # A new version stored by one is what the other serves next.
        self.assertEqual((await call("PUT", proxyOne.url + "/files/from-two.txt", b"2"))[0], 200)
        self.assertEqual((await call("GET", proxyTwo.url + "/files/from-two.txt"))[2], b"2")
        self.assertEqual((await call("DELETE", proxyTwo.url + "/files/from-one.bin"))[0], 204)
        self.assertEqual((await call("GET", proxyOne.url + "/files/from-one.bin"))[0], 404)
        await self.settled(client, bucket, [PREFIX + "from-two.txt"])

    async def test_resumableUpload(self) -> None:
        """
        A resumable (tus) upload with S3 storage: its partial bytes stay on
        the backend's disk (--resumable-dir) and the finished file is
        published into the bucket with its SHA-256.
        """
        source, sha = sharedFile(16 * MiB)
        bucket, client = await newBucket(self)
        partial = Path(self.mktemp())
        backend = await self.backend(bucket, "--s3-part-size", "5M",
                                     "--resumable-dir", str(partial))
        proxy = await startService(self, "proxy", "--backend", backend.url)
        code, output = await run(self, "uploader", [
            str(BIN / "streamrelay-upload"), "--resumable", "--url", proxy.url,
            "--name", "tus.bin", str(source),
        ])
        self.assertEqual(code, 0, output.decode())
        self.assertIn(f"sha256 {sha}".encode(), output)
        head = await client.head(PREFIX + "tus.bin")
        assert head is not None
        self.assertEqual((head.size, head.sha256), (16 * MiB, sha))
        await self.settled(client, bucket, [PREFIX + "tus.bin"])

    async def tusCreate(self, program: Program, name: str, length: int) -> str:
        """A new resumable upload through C{program}: its path."""
        code, headers, body = await call("POST", program.url + "/uploads", None, {
            **TUS, "upload-length": str(length),
            "upload-metadata": "filename " + base64.b64encode(name.encode()).decode(),
        })
        self.assertEqual(code, 201, body)
        return headers["location"]

    async def tusOffset(self, program: Program, path: str) -> int:
        code, headers, body = await call("HEAD", program.url + path, None, TUS)
        self.assertEqual(code, 200, body)
        return int(headers["upload-offset"])

    async def tusPatch(self, program: Program, path: str, offset: int, data: bytes) -> int:
        code, headers, body = await call("PATCH", program.url + path, data, {
            **TUS, "upload-offset": str(offset),
            "content-type": "application/offset+octet-stream",
        })
        self.assertEqual(code, 204, body)
        return int(headers["upload-offset"])

    async def test_resumableAcrossBackends(self) -> None:
        """
        Without --resumable-dir, a resumable upload is kept in the bucket:
        started through one backend, continued through another (which
        learns the offset and hashes the bytes the first stored), cut off
        mid-request (what arrived is kept), and finished through the
        first.  The file is one object with the right SHA-256, no
        multipart upload is left, and of the upload only its record
        remains until it expires.
        """
        data = secrets.token_bytes(23 * MiB + 12345)
        sha = hashlib.sha256(data).hexdigest()
        bucket, client = await newBucket(self)
        one = await self.backend(bucket, "--s3-part-size", "5M")
        two = await self.backend(bucket, "--s3-part-size", "5M")

        path = await self.tusCreate(one, "shared.bin", len(data))
        uploadId = path.rsplit("/", 1)[1]
        # Two segments: 5 MiB, and a short one the next request sends again.
        offset = await self.tusPatch(one, path, 0, data[:7 * MiB + 5])
        self.assertEqual(await self.tusOffset(two, path), offset)
        offset = await self.tusPatch(two, path, offset, data[offset:16 * MiB + 77])
        self.assertEqual(offset, 16 * MiB + 77)

        # Cut off: curl sends at 2 MB/s and gives up after 2 s.
        rest = Path(self.mktemp())
        rest.write_bytes(data[offset:])
        code, output = await run(self, "curl", [
            "curl", "-sS", "-X", "PATCH", "--data-binary", f"@{rest}", "--limit-rate", "2M",
            "--max-time", "2", "-H", "Tus-Resumable: 1.0.0", "-H", f"Upload-Offset: {offset}",
            "-H", "Content-Type: application/offset+octet-stream", one.url + path,
        ])
        self.assertEqual(code, 28, output)  # timed out
        kept = 0
        for _ in range(50):
            kept = await self.tusOffset(two, path)
            if kept > offset:
                break
            await deferLater(0.2)
        self.assertGreater(kept, offset)
        self.assertLess(kept, len(data))

        self.assertEqual(await self.tusPatch(one, path, kept, data[kept:]), len(data))
        head = await client.head(PREFIX + "shared.bin")
        assert head is not None
        self.assertEqual((head.size, head.sha256), (len(data), sha))
        code, _, body = await call("GET", two.url + "/files/shared.bin")
        self.assertEqual((code, hashlib.sha256(body).hexdigest()), (200, sha))
        # Either backend answers the finished upload.
        self.assertEqual(await self.tusOffset(two, path), len(data))
        # Its lease stays too, released, until the upload expires.
        await self.settled(client, bucket, [
            PREFIX + "shared.bin", f"{PREFIX}.streamrelay/tus/{uploadId}.json",
            f"{PREFIX}.streamrelay/leases/{uploadId}.lease",
        ])

    async def test_resumableBackendKilled(self) -> None:
        """
        A backend killed (SIGKILL) while receiving a resumable upload kept
        in the bucket: another backend answers the offset the record
        counts and takes the upload from there; once the file is stored,
        the segments the killed backend left are removed too.  Until the
        killed backend's lease on the upload expires (a TTL of 6 s here),
        the other answers 423, which clients retry.
        """
        data = secrets.token_bytes(20 * MiB)
        sha = hashlib.sha256(data).hexdigest()
        bucket, client = await newBucket(self)
        ttl = ("--s3-part-size", "5M", "--resumable-lease-ttl", "6")
        one = await self.backend(bucket, *ttl)
        two = await self.backend(bucket, *ttl)
        path = await self.tusCreate(one, "survivor.bin", len(data))
        offset = await self.tusPatch(one, path, 0, data[:1000])
        source = Path(self.mktemp())
        source.write_bytes(data[offset:])
        sending = spawn(self, "curl", [
            "curl", "-sS", "-X", "PATCH", "--data-binary", f"@{source}", "--limit-rate", "4M",
            "-H", "Tus-Resumable: 1.0.0", "-H", f"Upload-Offset: {offset}",
            "-H", "Content-Type: application/offset+octet-stream", one.url + path,
        ])
        folder = PREFIX + ".streamrelay/tus/"

        # The record, the 1000 bytes, and a first segment of the new request.
        for _ in range(200):
            if len(await allKeys(client, folder)) >= 3:
                break
            await deferLater(0.1)
        self.assertEqual(len(await allKeys(client, folder)), 3)
        one.signal(signal.SIGKILL)
        await sending.protocol.ended
        killed = time.monotonic()
        # The record was not moved by the killed request.
        self.assertEqual(await self.tusOffset(two, path), offset)
        while True:
            code, headers, body = await call("PATCH", two.url + path, data[offset:], {
                **TUS, "upload-offset": str(offset),
                "content-type": "application/offset+octet-stream",
            })
            if code != 423:
                break
            self.assertEqual(headers.get("retry-after"), "1")
            self.assertLess(time.monotonic() - killed, 6 + 5, "the lease never expired")
            await deferLater(0.5)
        self.assertEqual((code, headers.get("upload-offset")), (204, str(len(data))), body)
        head = await client.head(PREFIX + "survivor.bin")
        assert head is not None
        self.assertEqual((head.size, head.sha256), (len(data), sha))
        uploadId = path.rsplit("/", 1)[1]
        await self.settled(client, bucket, [
            PREFIX + "survivor.bin", f"{folder}{uploadId}.json",
            f"{PREFIX}.streamrelay/leases/{uploadId}.lease",
        ])

    async def test_resumableTerminatedAndExpired(self) -> None:
        """
        An upload kept in the bucket and terminated through another
        backend than the one that received its bytes leaves nothing; one
        left alone is removed once it expires.
        """
        data = secrets.token_bytes(6 * MiB)
        bucket, client = await newBucket(self)
        one = await self.backend(bucket, "--s3-part-size", "5M")
        two = await self.backend(bucket, "--s3-part-size", "5M")
        path = await self.tusCreate(one, "gone.bin", 3 * len(data))
        await self.tusPatch(one, path, 0, data)
        self.assertEqual(len(await allKeys(client, PREFIX + ".streamrelay/tus/")), 3)
        code, _, body = await call("DELETE", two.url + path, None, TUS)
        self.assertEqual(code, 204, body)
        self.assertEqual((await call("HEAD", one.url + path, None, TUS))[0], 404)
        await self.settled(client, bucket, [])

        expiring = await self.backend(
            bucket, "--s3-part-size", "5M", "--resumable-expiry", "1"
        )
        path = await self.tusCreate(expiring, "expired.bin", 3 * len(data))
        await self.tusPatch(expiring, path, 0, data)
        await self.settled(client, bucket, [])
        self.assertEqual((await call("HEAD", two.url + path, None, TUS))[0], 404)

    async def test_readiness(self) -> None:
        """/readyz is 200 with a reachable bucket, 503 without one."""
        bucket, _ = await newBucket(self)
        good = await self.backend(bucket)
        missing = await self.backend(bucket + "-missing")

        async def status(program: Program) -> int:
            return (await call("GET", program.url + "/readyz"))[0]

        for program, expected in ((good, 200), (missing, 503)):
            seen = []
            for _ in range(50):
                seen.append(await status(program))
                if seen[-1] == expected:
                    break
                await deferLater(0.2)
            self.assertEqual(seen[-1], expected, seen)


@skipUnlessServer
class S3StoreTests(TestCase):
    """The store in this process, on the real server: what the CLI cannot reach."""

    timeout = 120

    async def test_sweepAbortsStaleUploadsOnly(self) -> None:
        """
        C{sweepStale} aborts multipart uploads and staging objects left
        under the prefix, and leaves those of an upload in progress alone.
        """
        bucket, client = await newBucket(self)
        store = S3Store(client, PREFIX, partSize=5 * MiB, staleAfter=0)
        leftover = store.stagingKey("leftover")
        await client.createUpload(leftover)
        await client.put(store.stagingKey("completed"), [b"x"], hashlib.sha256(b"x").hexdigest())
        upload = store.begin("live.bin")
        upload.write(b"\0" * (6 * MiB))  # part 1 goes out: a live multipart upload
        await eventually(lambda: bool(upload._parts), 10)
        self.assertEqual(len(await pendingUploads(client)), 2)

        self.assertEqual(await store.sweepStale(), 2)
        uploads = await pendingUploads(client)
        self.assertEqual([u.key for u in uploads], [upload._staging])
        info, replaced = await upload.commit(hashlib.sha256(b"\0" * (6 * MiB)).hexdigest())
        self.assertEqual((info.size, replaced), (6 * MiB, False))
        await store.settled()
        self.assertEqual(await allKeys(client), [PREFIX + "live.bin"])

    async def test_multipartCopyAboveCopyLimit(self) -> None:
        """
        Above the single-copy limit (5 GiB on S3, lowered here) an upload is
        published with a multipart copy, with its digest in the metadata.
        """
        bucket, client = await newBucket(self)
        store = S3Store(client, PREFIX, partSize=5 * MiB, copyLimit=6 * MiB,
                        copyPartSize=5 * MiB)
        data = bytes(range(256)) * (48 * 1024)  # 12 MiB
        upload = store.begin("copied.bin")
        for i in range(0, len(data), MiB):
            upload.write(data[i:i + MiB])
        sha = hashlib.sha256(data).hexdigest()
        info, _ = await upload.commit(sha)
        self.assertEqual((info.size, info.sha256), (len(data), sha))
        head = await client.head(PREFIX + "copied.bin")
        assert isinstance(head, ObjectHead)
        self.assertTrue(head.etag.endswith("-3"), head.etag)  # three copied parts
        stored = await store.open("copied.bin")
        assert stored is not None
        got = await _read(stored, 0, len(data))
        self.assertEqual(got, data)
        await store.settled()
        self.assertEqual(await allKeys(client), [PREFIX + "copied.bin"])
        self.assertEqual(await pendingUploads(client), [])

    async def test_objectStoredByOtherMeans(self) -> None:
        """
        An object put in the prefix by another tool (no digest in its
        metadata) is listed and served with its SHA-256, read once.
        """
        bucket, client = await newBucket(self)
        store = S3Store(client, PREFIX)
        data = b"placed by hand\n" * 1000
        await client.call("PUT", PREFIX + "hand.txt", body=[data])
        await client.call("PUT", PREFIX + "sub/nested.txt", body=[b"not a file name"])
        await client.call("PUT", PREFIX + ".hidden", body=[b"dot"])
        files, more = await store.list(None, 10)
        self.assertEqual(
            [(f.name, f.size, f.sha256) for f in files],
            [("hand.txt", len(data), hashlib.sha256(data).hexdigest())],
        )
        self.assertFalse(more)
        info = await store.stat("hand.txt")
        assert info is not None
        self.assertEqual(info.sha256, hashlib.sha256(data).hexdigest())

    async def test_replacedWhileReading(self) -> None:
        """A file replaced after it was opened fails to read rather than mix versions."""
        bucket, client = await newBucket(self)
        store = S3Store(client, PREFIX)
        await client.put(PREFIX + "v.txt", [b"one"], hashlib.sha256(b"one").hexdigest())
        stored = await store.open("v.txt")
        assert stored is not None
        await client.put(PREFIX + "v.txt", [b"two"], hashlib.sha256(b"two").hexdigest())
        from streamrelay.store.s3.reading import ObjectChanged

        with self.assertRaises(ObjectChanged):
            await _read(stored, 0, 3)


async def _read(stored: object, start: int, end: int) -> bytes:
    from twisted.internet.interfaces import IConsumer
    from zope.interface import implementer

    from streamrelay.store import IStoredFile

    assert IStoredFile.providedBy(stored)

    @implementer(IConsumer)
    class Collect:
        def __init__(self) -> None:
            self.data: list[bytes] = []

        def registerProducer(self, producer: object, streaming: bool) -> None:
            pass

        def unregisterProducer(self) -> None:
            pass

        def write(self, data: bytes) -> None:
            self.data.append(data)

    sink = Collect()
    await stored.stream(start, end, sink)  # type: ignore[attr-defined]
    return b"".join(sink.data)


class S3UnavailableTests(TestCase):
    """
    A backend whose S3 service does not answer (no server needed): every
    request that needs the bucket gets 503 storage_unavailable, to try
    again, nothing is half-stored, and the backend keeps serving.
    """

    timeout = 120

    async def test_deadEndpoint(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        backend = await startService(
            self, "backend", "--storage", "s3://nowhere/p", "--s3-endpoint",
            f"http://127.0.0.1:{port}", env={
                "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
            },
        )
        big = secrets.token_bytes(12 * MiB)
        for method, path, body, headers in [
            ("PUT", "/files/small.txt", b"small", {}),
            ("PUT", "/files/big.bin", big, {}),
            ("GET", "/files", None, {}),
            ("GET", "/files/small.txt", None, {}),
            ("DELETE", "/files/small.txt", None, {}),
            ("POST", "/uploads", None,
             {**TUS, "upload-length": "5", "upload-metadata": "filename YQ=="}),
        ]:
            code, answer, text = await call(method, backend.url + path, body, headers)
            self.assertEqual(code, 503, (method, path, text))
            self.assertEqual(json.loads(text)["error"], "storage_unavailable", text)
            self.assertEqual(answer["retry-after"], "5")
        # tus clients take any error but 423 on HEAD as "start over".
        code, answer, text = await call(
            "HEAD", backend.url + "/uploads/0123456789abcdef0123456789abcdef", None, TUS)
        self.assertEqual((code, answer["retry-after"]), (423, "5"))
        self.assertEqual((await call("GET", backend.url + "/healthz"))[0], 200)
        self.assertEqual((await call("GET", backend.url + "/readyz"))[0], 503)
        self.assertIn(b"storage unavailable for", backend.output)

    async def test_storeStopsTakingBytes(self) -> None:
        """
        A store that stops reading a part (or an object) without closing
        the connection, as a full Ceph RGW does, fails the upload with 503
        in about three C{--s3-timeout}s (it was three 600 s waits), the
        multipart upload is aborted, and the backend keeps serving.
        """
        from twisted.internet import reactor

        from tests.s3stall import StallingS3Factory

        server = StallingS3Factory()
        port: Any = server.listen(reactor)
        self.addCleanup(port.stopListening)
        backend = await startService(
            self, "backend", "--storage", "s3://b/p", "--s3-endpoint",
            f"http://127.0.0.1:{port.getHost().port}", "--s3-timeout", "3", env={
                "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
            },
        )
        for name, body in [("big.bin", secrets.token_bytes(24 * MiB)), ("small.txt", b"small")]:
            code, answer, text = await call("PUT", backend.url + "/files/" + name, body)
            self.assertEqual(code, 503, (name, text))
            self.assertEqual(json.loads(text)["error"], "storage_unavailable", text)
        self.assertGreaterEqual(server.stalled, 6)
        self.assertTrue(await eventually(
            lambda: any(b"DELETE" in asked and b"uploadId=stalled-1" in asked
                        for asked in server.asked), 30
        ), server.asked)
        self.assertEqual((await call("GET", backend.url + "/healthz"))[0], 200)
        self.assertIn(b"nothing sent or answered in 3 s", backend.output)
