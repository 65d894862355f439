"""
Leases of resumable uploads against a real S3 server (Ceph RGW, started by
C{bash .ci/s3-ceph.sh start}; see L{tests.s3env}): the conditional writes
the server honours (what L{streamrelay.tus.lease} relies on, as docs/s3.md
states), and two real backends on one bucket racing for one upload 100
times: two clients send a C{PATCH} of the same upload at the same offset
at once, one through each backend; each time one holds the upload, the
other is answered 423 at once (while the holder still waits for the rest
of its body), and the file is the holder's bytes, whole.
"""

from __future__ import annotations

import base64
import secrets
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from streamrelay.store.s3.messages import PreconditionFailed
from tests.hashing import sha
from tests.processes import Program, call, startService
from tests.rawhttp import RawResponse, _parse
from tests.s3env import SERVER, newBucket, skipUnlessServer

PREFIX = "shared/"
TUS: dict[bytes | str, bytes | str] = {"tus-resumable": "1.0.0"}
ROUNDS = 100
#: Bytes each client sends; half at first, the rest once the race is decided.
SIZE = 256 * 1024
#: Seconds within which the request that lost is answered (it reads no body).
AT_ONCE = 5.0


class RawClient(Protocol):
    """One HTTP/1.1 exchange written by hand, in pieces, on the reactor."""

    def __init__(self) -> None:
        self.data = b""
        self.answered: Deferred[RawResponse] = Deferred()
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        response = _parse(self.data)
        if response is None or self.answered.called:
            return
        length = response.headers.get(b"content-length")
        if response.status == 204 or (length is not None and len(response.body) >= int(length)):
            self.answered.callback(response)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        if not self.answered.called:
            self.answered.errback(reason or Failure(ConnectionError("closed unanswered")))

    def send(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.loseConnection()


async def connect(port: int) -> RawClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await connectProtocol(endpoint, RawClient())  # type: ignore[no-any-return]


def patchHead(path: str, offset: int, length: int) -> bytes:
    return (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
    ).encode("ascii")


@skipUnlessServer
class ConditionalWritesTests(TestCase):
    """What the server does with the conditional writes the leases use."""

    timeout = 60

    async def test_conditionalWrites(self) -> None:
        _, client = await newBucket(self)
        body = b'{"lease": 1}'
        etag = await client.putIf("k", [body], sha(body), ifNoneMatch=True)
        with self.assertRaises(PreconditionFailed):
            await client.putIf("k", [b"2"], sha(b"2"), ifNoneMatch=True)
        with self.assertRaises(PreconditionFailed):
            await client.putIf("k", [b"3"], sha(b"3"), ifMatch="0" * 32)
        with self.assertRaises(PreconditionFailed):
            await client.putIf("absent", [b"4"], sha(b"4"), ifMatch=etag)
        versioned = await client.readVersion("k")
        assert versioned is not None
        self.assertEqual((versioned.data, versioned.etag), (body, etag))
        # RGW takes If-Match on a PUT only unquoted: the client unquotes it.
        second = await client.putIf("k", [b"5"], sha(b"5"), ifMatch=f'"{etag}"')
        self.assertNotEqual(second, etag)
        with self.assertRaises(PreconditionFailed):
            await client.putIf("k", [b"6"], sha(b"6"), ifMatch=etag)
        self.assertEqual(await client.read("k"), b"5")

    async def test_racingCreatesAndReplacements(self) -> None:
        """Of eight writes at once with one condition, exactly one wins, every time."""
        _, client = await newBucket(self)
        for round in range(5):
            key = f"race{round}"

            async def create(i: int, key: str = key) -> str | None:
                data = b"c%d" % (i,)
                try:
                    return await client.putIf(key, [data], sha(data), ifNoneMatch=True)
                except PreconditionFailed:
                    return None

            created = await gatherResults([Deferred.fromCoroutine(create(i)) for i in range(8)])
            [etag] = [e for e in created if e is not None]

            async def replace(i: int, key: str = key, etag: str = etag) -> str | None:
                data = b"r%d" % (i,)
                try:
                    return await client.putIf(key, [data], sha(data), ifMatch=etag)
                except PreconditionFailed:
                    return None

            replaced = await gatherResults([Deferred.fromCoroutine(replace(i)) for i in range(8)])
            self.assertEqual(len([e for e in replaced if e is not None]), 1, replaced)

    async def test_conditionalDeleteIgnored(self) -> None:
        """
        Ceph RGW 16 ignores If-Match on DELETE: a stale ETag still deletes.
        The leases never rely on it (they release by writing); this test
        says when that changes.
        """
        _, client = await newBucket(self)
        await client.putIf("k", [b"1"], sha(b"1"), ifNoneMatch=True)
        try:
            await client.deleteIf("k", "0" * 32)
        except PreconditionFailed:
            self.assertIsNotNone(await client.read("k"))
            return
        self.assertIsNone(await client.read("k"), "RGW ignored If-Match on DELETE")


@skipUnlessServer
class TwoBackendsRaceTests(TestCase):
    timeout = 600

    async def backend(self, bucket: str) -> Program:
        assert SERVER is not None
        return await startService(
            self, "backend", *SERVER.backendArgs(bucket, PREFIX), "--s3-part-size", "5M",
            env=SERVER.processEnv(),
        )

    async def create(self, program: Program, name: str, length: int) -> str:
        code, headers, body = await call("POST", program.url + "/uploads", None, {
            **TUS, "upload-length": str(length),
            "upload-metadata": "filename " + base64.b64encode(name.encode()).decode(),
        })
        self.assertEqual(code, 201, body)
        return headers["location"]

    async def race(self, one: Program, two: Program, round: int) -> tuple[int, float]:
        """
        Two clients PATCH one new upload at offset 0 at once, one through
        each backend, each sending half its body first: which won, and
        how long the other waited for its 423.
        """
        assert one.port is not None and two.port is not None
        name = f"race-{round}.bin"
        path = await self.create((one, two)[round % 2], name, SIZE)
        bodies = [secrets.token_bytes(SIZE), secrets.token_bytes(SIZE)]
        clients = await gatherResults([
            Deferred.fromCoroutine(connect(port)) for port in (one.port, two.port)
        ])
        started = time.monotonic()
        for client, body in zip(clients, bodies, strict=True):
            client.send(patchHead(path, 0, SIZE) + body[: SIZE // 2])
        # One is answered 423 at once, while the other holds the upload
        # and still waits for the rest of its body.
        first: Deferred[tuple[RawResponse, int]] = DeferredList(  # type: ignore[assignment]
            [c.answered for c in clients], fireOnOneCallback=True, fireOnOneErrback=True,
            consumeErrors=True,
        )
        first.addTimeout(AT_ONCE * 2, reactor)
        response, loserIndex = await first
        waited = time.monotonic() - started
        self.assertEqual(response.status, 423, response.body)
        self.assertEqual(response.headers.get(b"retry-after"), b"1")
        winner = clients[1 - loserIndex]
        self.assertFalse(winner.answered.called, "both answered before the body was whole")
        winner.send(bodies[1 - loserIndex][SIZE // 2:])
        done = await winner.answered
        self.assertEqual(done.status, 204, done.body)
        self.assertEqual(done.headers[b"upload-offset"], b"%d" % (SIZE,))
        for client in clients:
            client.close()
        # The file is the winner's bytes, whole; both backends serve it.
        expected = sha(bodies[1 - loserIndex])
        for program in (one, two):
            code, _, content = await call("GET", program.url + "/files/" + name)
            self.assertEqual((code, sha(content)), (200, expected))
        head = await self.client.head(PREFIX + name)
        assert head is not None
        self.assertEqual((head.size, head.sha256), (SIZE, expected))
        return 1 - loserIndex, waited

    async def test_oneHolderAtATime(self) -> None:
        bucket, self.client = await newBucket(self)
        one = await self.backend(bucket)
        two = await self.backend(bucket)
        wins = [0, 0]
        waits = []
        began = time.monotonic()
        for round in range(ROUNDS):
            winner, waited = await self.race(one, two, round)
            wins[winner] += 1
            waits.append(waited)
        elapsed = time.monotonic() - began
        print(f"\n{ROUNDS} races in {elapsed:.1f} s: won by backend one {wins[0]}, "
              f"two {wins[1]}; 423 after {min(waits) * 1000:.0f}-{max(waits) * 1000:.0f} ms "
              f"(median {sorted(waits)[len(waits) // 2] * 1000:.0f} ms)")
        self.assertLess(max(waits), AT_ONCE)
        self.assertLess(elapsed, 300)
