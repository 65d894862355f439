"""
Unit tests of per-upload leases in the bucket (L{streamrelay.tus.lease})
over an S3 bucket in memory and a fake clock: taking, renewing, expiring,
taking over and releasing a lease, a renewal losing its race stopping the
holder, two backends racing; and the tus protocol of two backends sharing
one bucket: the second request for an upload is answered 423 at once, its
body unread, and a request whose lease is lost stops writing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from streamrelay.backend.routes import BackendRoutes
from streamrelay.store import StorageUnavailable
from streamrelay.store.s3.messages import PreconditionFailed, S3Unavailable
from streamrelay.store.s3.store import S3Store
from streamrelay.tus.config import LEASE_FOLDER
from streamrelay.tus.lease import (
    ILease,
    ILeases,
    LeaseHeld,
    LeaseLost,
    LeaseState,
    LocalLeases,
    S3Leases,
)
from streamrelay.tus.protocol import TusUploads
from streamrelay.tus.s3 import S3ResumableStore
from streamrelay.webapp import appResource
from tests.httpfakes import Connection, Response
from tests.rawrequests import TUS, meta, req
from tests.s3memory import MemoryS3

ID = "0123456789abcdef0123456789abcdef"
FOLDER = "p/.streamrelay/leases/"
KEY = FOLDER + ID + ".lease"
MiB = 1 << 20


class LeaseTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.s3 = MemoryS3(self.clock)
        self.a = S3Leases(self.s3, FOLDER, self.clock, holder="a")
        self.b = S3Leases(self.s3, FOLDER, self.clock, holder="b")
        self.lost: list[LeaseLost] = []

    def stored(self) -> LeaseState:
        return LeaseState.decode(self.s3.objects[KEY].data)

    def take(self, leases: S3Leases, takeover: bool = False) -> ILease:
        lease = self.successResultOf(leases.acquire(ID, takeover))
        assert lease is not None
        return lease

    def held(self, leases: S3Leases, takeover: bool = False) -> LeaseHeld:
        return self.failureResultOf(leases.acquire(ID, takeover), LeaseHeld).value  # type: ignore[return-value]


class LeaseTests(LeaseTestCase):
    def test_interfaces(self) -> None:
        verifyObject(ILeases, self.a)
        verifyObject(ILease, self.take(self.a))
        verifyObject(ILeases, LocalLeases())
        verifyObject(ILease, self.successResultOf(LocalLeases().acquire(ID)))

    def test_take(self) -> None:
        """A free upload's lease is created, with the holder and an expiry TTL ahead."""
        lease = self.take(self.a)
        self.assertTrue(lease.valid())
        self.assertEqual(lease.generation, 1)
        state = self.stored()
        self.assertEqual((state.holder, state.generation), ("a", 1))
        self.assertEqual(state.expires, self.clock.seconds() + 30)

    def test_heldByAnother(self) -> None:
        """While one backend holds a live lease, another is told at once, and until when."""
        self.take(self.a)
        self.clock.advance(12)
        error = self.held(self.b)
        self.assertEqual((error.holder, error.retryAfter), ("a", 18))
        self.assertEqual(self.stored().holder, "a")

    def test_renewedWhileHeld(self) -> None:
        """A held lease is renewed every TTL/3: another backend never gets it."""
        lease = self.take(self.a)
        lease.renewing(self.lost.append)
        for _ in range(10):
            etag = self.s3.objects[KEY].etag
            self.clock.advance(10)
            self.assertNotEqual(self.s3.objects[KEY].etag, etag)
            self.assertEqual(self.stored().expires, self.clock.seconds() + 30)
            self.held(self.b)
        self.assertTrue(lease.valid())
        self.assertEqual(self.lost, [])
        self.assertEqual(self.stored().generation, 1)

    def test_expired(self) -> None:
        """A lease not renewed expires: another backend takes it, one generation on."""
        lease = self.take(self.a)
        self.clock.advance(25)
        self.assertFalse(lease.valid(), "the holder stops counting on it a margin early")
        self.held(self.b)
        self.clock.advance(5)
        taken = self.take(self.b)
        self.assertEqual((self.stored().holder, taken.generation), ("b", 2))

    def test_takeover(self) -> None:
        """
        A takeover replaces a live lease; the old holder learns at its next
        renewal, at once, and writes nothing more to the lease.
        """
        old = self.take(self.a)
        old.renewing(self.lost.append)
        self.clock.advance(4)
        new = self.take(self.b, takeover=True)
        self.assertEqual((self.stored().holder, new.generation), ("b", 2))
        self.assertTrue(old.valid(), "not known yet")
        etag = self.s3.objects[KEY].etag
        self.clock.advance(6)
        self.assertEqual(len(self.lost), 1)
        self.assertFalse(old.valid())
        self.assertEqual(self.s3.objects[KEY].etag, etag)
        self.successResultOf(old.release())
        self.assertEqual(self.s3.objects[KEY].etag, etag)
        self.assertEqual(self.stored().holder, "b")

    def test_release(self) -> None:
        """A released lease is written expired: another backend takes it at once."""
        lease = self.take(self.a)
        lease.renewing(self.lost.append)
        self.successResultOf(lease.release())
        self.assertEqual(self.stored().expires, 0)
        self.assertFalse(lease.valid())
        self.clock.advance(60)
        self.assertEqual(self.lost, [], "no renewal after the release")
        self.assertEqual(self.take(self.b).generation, 2)

    def test_ownLeaseTakenBack(self) -> None:
        """A live lease of this backend's own (a release that failed) is taken again."""
        self.take(self.a)
        self.assertEqual(self.take(self.a).generation, 2)

    def test_renewalLosesTheRace(self) -> None:
        """
        The holder's renewal and another backend's takeover of the expired
        lease (the renewal was late) reach S3 at once: the takeover is
        stored first, so the renewal fails and the holder stops.
        """
        lease = self.take(self.a)
        lease.renewing(self.lost.append)
        self.s3.hold("putIf")
        self.clock.advance(10)  # the renewal is sent, and held
        d = self.b.acquire(ID, takeover=True)
        self.s3.letGo("putIf", 1)  # the takeover first
        self.s3.letGo("putIf")
        self.assertEqual(self.successResultOf(d).generation, 2)
        self.assertEqual(len(self.lost), 1)
        self.assertFalse(lease.valid())
        self.assertEqual(self.stored().holder, "b")

    def test_renewalsFailingUntilTheDeadline(self) -> None:
        """
        Renewals failing (S3 unreachable) are tried again; if none gets
        through, the holder gives the lease up a margin before its expiry.
        """
        lease = self.take(self.a)
        lease.renewing(self.lost.append)
        for _ in range(5):
            self.s3.failNext["putIf"] = S3Unavailable(503, "SlowDown")
            self.clock.advance(3)
        self.assertEqual(self.lost, [])
        self.s3.hold("putIf")
        self.clock.advance(10)
        self.assertTrue(self.clock.seconds() >= 1_800_000_000 + 25)
        self.assertEqual(len(self.lost), 1)
        self.assertFalse(lease.valid())

    def test_renewalAfterAFailure(self) -> None:
        lease = self.take(self.a)
        lease.renewing(self.lost.append)
        self.s3.failNext["putIf"] = S3Unavailable(503, "SlowDown")
        self.clock.advance(10)
        self.clock.advance(3)
        self.assertEqual(self.stored().expires, self.clock.seconds() + 30)
        self.clock.advance(60)
        self.assertEqual(self.lost, [])
        self.assertTrue(lease.valid())

    def test_twoBackendsRace(self) -> None:
        """
        Two backends asking for a free lease at once both find none; S3
        creates it for one, and the other, reading again, is told it is held.
        """
        self.s3.hold("putIf")
        da, db = self.a.acquire(ID), self.b.acquire(ID)
        self.s3.letGo("putIf", 1)
        self.s3.letGo("putIf")
        self.assertEqual(self.successResultOf(db).generation, 1)
        error = self.failureResultOf(da, LeaseHeld).value
        self.assertEqual(error.holder, "b")  # type: ignore[attr-defined]

    def test_twoTakeoversOfAnExpiredLease(self) -> None:
        c = S3Leases(self.s3, FOLDER, self.clock, holder="c")
        self.take(self.a)
        self.clock.advance(31)
        self.s3.hold("putIf")
        db, dc = self.b.acquire(ID), c.acquire(ID)
        self.s3.letGo("putIf")
        self.s3.letGo("putIf")
        self.assertEqual(self.successResultOf(db).generation, 2)
        self.failureResultOf(dc, LeaseHeld)

    def test_wonWhenTheAnswerWasLost(self) -> None:
        """A write that took effect but was answered 412 (its retry refused) won."""
        s3 = self.s3
        putIf = s3.putIf

        def lostAnswer(*args: Any, **kwargs: Any) -> Any:
            d = putIf(*args, **kwargs)
            self.successResultOf(d)
            raise PreconditionFailed(412, "PreconditionFailed")

        self.patch(s3, "putIf", lostAnswer)
        lease = self.take(self.a)
        self.assertEqual(lease.generation, 1)
        self.assertEqual(self.stored().holder, "a")

    def test_damagedLeaseReplaced(self) -> None:
        data = b"not json"
        self.successResultOf(self.s3.put(KEY, [data], hashlib.sha256(data).hexdigest()))
        self.assertEqual(self.take(self.b).generation, 1)
        self.assertEqual(self.stored().holder, "b")

    def test_unavailable(self) -> None:
        """S3 away: the store's error (StorageUnavailable), not S3's."""
        self.s3.failNext["readVersion"] = S3Unavailable(503, "SlowDown")
        self.failureResultOf(self.a.acquire(ID), StorageUnavailable)

    def test_forget(self) -> None:
        self.take(self.a)
        self.successResultOf(self.a.forget(ID))
        self.assertNotIn(KEY, self.s3.objects)


# The tus protocol on two backends sharing one bucket


def patchHead(location: bytes, offset: int, length: int) -> bytes:
    return (
        b"PATCH " + location + b" HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        b"Content-Type: application/offset+octet-stream\r\n"
        b"Upload-Offset: %d\r\nContent-Length: %d\r\n\r\n" % (offset, length)
    )


class Backend:
    """One backend's tus routes over the shared bucket."""

    def __init__(self, s3: MemoryS3, clock: Clock, holder: str) -> None:
        self.clock = clock
        self.store = S3Store(s3, "p/", partSize=5 * MiB)
        self.resumable = S3ResumableStore(self.store)
        self.leases = S3Leases(s3, "p/" + LEASE_FOLDER, clock, holder=holder)
        self.tus = TusUploads(
            self.resumable, self.store, clock, expiry=3600, leases=self.leases
        )
        self.routes = BackendRoutes(self.store, tus=self.tus)

    def connect(self) -> Connection:
        return Connection(appResource(self.routes.app), clock=self.clock)


class TwoBackendsCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.s3 = MemoryS3(self.clock)
        self.one = Backend(self.s3, self.clock, "one")
        self.two = Backend(self.s3, self.clock, "two")

    def request(self, backend: Backend, data: bytes) -> Response:
        conn = backend.connect()
        conn.send(data)
        conn.turn()
        [response] = conn.responses()
        return response

    def create(self, length: int) -> bytes:
        response = self.request(self.one, req(
            b"POST", b"/uploads", TUS, b"Upload-Length: %d" % (length,), meta("f.bin")
        ))
        self.assertEqual(response.status, 201, response.body)
        return response.headers[b"location"]

    def offset(self, backend: Backend, location: bytes) -> int:
        response = self.request(backend, req(b"HEAD", location, TUS))
        return int(response.headers[b"upload-offset"])

    def file(self) -> bytes:
        return self.s3.objects["p/f.bin"].data

class TwoBackendsTests(TwoBackendsCase):
    def test_secondBackendTold423AtOnce(self) -> None:
        """
        While one backend streams a PATCH into an upload, a PATCH for it
        through another backend is answered 423 with Retry-After: 1 at once,
        its body unread; the first goes on, and the file is its bytes.
        """
        location = self.create(10)
        first = self.one.connect()
        first.send(patchHead(location, 0, 10) + b"0123")
        first.turn()
        second = self.two.connect()
        second.send(patchHead(location, 0, 10) + b"ab")
        second.turn()
        [answer] = second.responses()
        self.assertEqual(answer.status, 423, answer.body)
        self.assertEqual(json.loads(answer.body)["error"], "locked")
        self.assertEqual(answer.headers[b"retry-after"], b"1")
        self.assertEqual(first.responses(), [])
        first.send(b"456789")
        first.turn()
        [done] = first.responses()
        self.assertEqual(done.status, 204, done.body)
        self.assertEqual(self.file(), b"0123456789")
        self.assertEqual(self.offset(self.two, location), 10)

    def test_afterTheFirstTheSecondWrites(self) -> None:
        """Once the first request released the lease, the other backend writes at once."""
        location = self.create(6)
        self.assertEqual(self.request(self.one, patchHead(location, 0, 3) + b"abc").status, 204)
        self.assertEqual(self.request(self.two, patchHead(location, 3, 3) + b"def").status, 204)
        self.assertEqual(self.file(), b"abcdef")

    def test_leaseLostStopsTheRequest(self) -> None:
        """
        A request whose lease another backend took over stops at its next
        renewal: answered 423, it writes nothing more (its record stays
        where it was), and the taker's bytes are the file's.
        """
        location = self.create(10)
        first = self.one.connect()
        first.send(patchHead(location, 0, 10) + b"0123")
        first.turn()
        uploadId = location.decode().rsplit("/", 1)[1]
        taken = self.successResultOf(self.two.leases.acquire(uploadId, takeover=True))
        self.clock.advance(10)
        [answer] = first.responses()
        self.assertEqual(answer.status, 423, answer.body)
        self.successResultOf(taken.release())
        self.assertEqual(self.offset(self.two, location), 0)
        first.send(b"456789")  # too late: dropped
        self.assertEqual(self.request(self.two, patchHead(location, 0, 10) + b"ABCDEFGHIJ").status,
                         204)
        self.assertEqual(self.file(), b"ABCDEFGHIJ")

    def test_deleteWhileAnotherWrites(self) -> None:
        """Termination through another backend waits for the writer: 423, then 204."""
        location = self.create(10)
        first = self.one.connect()
        first.send(patchHead(location, 0, 10) + b"0123")
        first.turn()
        self.assertEqual(self.request(self.two, req(b"DELETE", location, TUS)).status, 423)
        first.send(b"456789")
        first.turn()
        self.assertEqual(first.responses()[0].status, 204)
        self.assertEqual(self.request(self.two, req(b"DELETE", location, TUS)).status, 204)
        self.assertEqual([k for k in self.s3.objects if "leases" in k], [])


def rufhAppendHead(location: bytes, offset: int, length: int, complete: bool) -> bytes:
    """An IETF draft (interop version 8) append's head, its content to follow."""
    return (
        b"PATCH " + location + b" HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 8\r\n"
        b"Content-Type: application/partial-upload\r\nUpload-Complete: ?%d\r\n"
        b"Upload-Offset: %d\r\nContent-Length: %d\r\n\r\n" % (complete, offset, length)
    )


class TwoBackendsRufhTests(TwoBackendsCase):
    """The IETF draft's appends take the same lease as tus."""

    def test_rufhAppendTold423AtOnce(self) -> None:
        """
        While one backend streams an append into an upload, an append for
        it through another backend is answered 423 at once, its content
        unread; the first completes the upload with its own bytes.
        """
        location = self.create(10)
        first = self.one.connect()
        first.send(rufhAppendHead(location, 0, 10, True) + b"0123")
        first.turn()
        second = self.two.connect()
        second.send(rufhAppendHead(location, 0, 10, True) + b"ab")
        second.turn()
        [answer] = second.responses()
        self.assertEqual(answer.status, 423, answer.body)
        self.assertEqual(first.responses(), [])
        first.send(b"456789")
        first.turn()
        [done] = first.responses()
        self.assertIn(done.status, (200, 201), done.body)
        self.assertEqual(self.file(), b"0123456789")
