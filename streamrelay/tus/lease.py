"""
Per-upload leases kept in the S3 bucket, so that of the backends sharing a
bucket only one at a time writes to a resumable upload; for tus and for the
IETF resumable upload draft alike (they share upload ids and the store).

A lease is one small JSON object per upload, C{<folder><upload id>.lease}::

    {"holder": "<backend instance id>", "expires": <POSIX time>,
     "generation": <n>, "nonce": "<random>"}

written only with S3 conditional writes, so that two backends never both
believe they hold it:

  - taking a free upload creates it with C{If-None-Match: *};
  - taking an expired lease, or one this backend holds, or taking over a
    live one (where the protocol asks for that) replaces it with
    C{If-Match} on the ETag read, the generation counted up;
  - the holder renews it every C{ttl / 3} seconds with C{If-Match} on the
    ETag it last wrote, moving C{expires} to C{ttl} seconds ahead;
  - releasing writes it expired (C{expires} 0), again with C{If-Match}.
    Ceph RGW 16 ignores C{If-Match} on a DELETE (docs/s3.md), so the
    object stays, released, until its upload is removed (L{ILeases.forget}).

Each write carries a fresh nonce, so its ETag (the MD5 of the JSON) is
new: a holder whose lease was replaced, however often, fails its next
renewal (C{412}) and is told at once (the callback given to
L{ILease.renewing}).  A holder that cannot renew (S3 unreachable) gives
the lease up by itself C{margin} seconds before the expiry it wrote, so
another backend (which takes only once its own clock passes C{expires})
never overlaps it while the clocks agree within C{margin} (keep them in
sync with NTP).  C{ILease.valid} says whether the lease still holds: a
holder asks before each write that must not follow another's (a record
save, publishing).

When a conditional write's answer is lost and S3 refuses its retry (the
first one did take effect), the lease is read back: a body that is the one
sent means the write won.

API (all through L{ILeases} and L{ILease})::

    leases = S3Leases(client, folder, clock, holder=newHolderId())
    try:
        lease = await leases.acquire(uploadId, takeover=False)
    except LeaseHeld as e:          # another backend writes: answer 423,
        ...                         # Retry-After e.retryAfter
    lease.renewing(stop)            # stop(LeaseLost) once, if it is lost
    ...                             # write, asking lease.valid() before
    await lease.release()           # never fails (a failure is logged)

L{LocalLeases} grants every lease at once, for stores one backend alone
writes (a folder): the per-process write lock of the protocol is enough.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import PreconditionFailed, S3Error
from streamrelay.store.s3.publishing import storeError

T = TypeVar("T")

#: Seconds a lease lasts unless renewed.
DEFAULT_TTL = 30.0
LEASE_SUFFIX = ".lease"
#: Reads and conditional writes tried before an acquisition that keeps
#: losing races answers that the upload is held.
ATTEMPTS = 3


def newHolderId() -> str:
    """A backend instance's id: random, one per process."""
    return secrets.token_hex(8)


class LeaseHeld(Exception):
    """
    Another backend holds a live lease on the upload.

    @ivar holder: its instance id, when known.
    @ivar retryAfter: seconds after which asking again makes sense.
    """

    def __init__(self, uploadId: str, holder: str | None, retryAfter: float) -> None:
        super().__init__(uploadId, holder, retryAfter)
        self.uploadId = uploadId
        self.holder = holder
        self.retryAfter = retryAfter


class LeaseLost(Exception):
    """The lease was taken by another backend, or could not be renewed in time."""


class ILease(Interface):
    """One upload's lease, held by this backend until released or lost."""

    uploadId: str = Attribute("The upload the lease is on.")
    generation: int = Attribute("Counted up each time the lease changes hands.")

    def renewing(onLost: Callable[[LeaseLost], object]) -> None:
        """
        Keep the lease alive until L{release}; call C{onLost} once if it is
        lost meanwhile (another backend took it, or renewals failed until
        the expiry came near).
        """

    def valid() -> bool:
        """Whether the lease still holds (not lost, released, or near its expiry)."""

    def release() -> Deferred[None]:
        """Give the lease up (stops renewing); never fails."""


class ILeases(Interface):
    """Where leases are taken."""

    def acquire(uploadId: str, takeover: bool = False) -> Deferred[ILease]:
        """
        The lease on upload C{uploadId}; fails with L{LeaseHeld} while
        another backend holds a live one, unless C{takeover}, which takes
        it from its holder (who learns at its next renewal).
        """

    def forget(uploadId: str) -> Deferred[None]:
        """Remove what is kept of the lease (once its upload is removed)."""


@dataclass(frozen=True)
class LeaseState:
    """What a lease object holds."""

    holder: str
    expires: float
    generation: int
    nonce: str

    def encode(self) -> bytes:
        return json.dumps({
            "holder": self.holder, "expires": self.expires,
            "generation": self.generation, "nonce": self.nonce,
        }, sort_keys=True).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> LeaseState:
        try:
            record = json.loads(data)
            return cls(
                str(record["holder"]), float(record["expires"]),
                int(record["generation"]), str(record["nonce"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a lease: {e}") from None


@implementer(ILeases)
class S3Leases:
    """
    Leases kept as objects under C{folder} in the bucket of C{client}.

    @param holder: this backend instance's id (L{newHolderId}).
    @param ttl: seconds a lease lasts unless renewed; renewed every third.
    @param margin: seconds before the expiry it wrote that a holder that
        could not renew gives the lease up (the clock skew tolerated).
    """

    _log = Logger()

    def __init__(
        self,
        client: IS3Client,
        folder: str,
        clock: IReactorTime,
        holder: str | None = None,
        ttl: float = DEFAULT_TTL,
        margin: float | None = None,
    ) -> None:
        self.client = client
        self.folder = folder
        self.clock = clock
        self.holder = holder or newHolderId()
        self.ttl = ttl
        self.margin = ttl / 6 if margin is None else margin
        if not 0 <= self.margin < ttl / 3 * 2:
            raise ValueError("the margin is less than two renewal intervals")

    def key(self, uploadId: str) -> str:
        return f"{self.folder}{uploadId}{LEASE_SUFFIX}"

    def state(self, generation: int, expires: float) -> LeaseState:
        return LeaseState(self.holder, expires, generation, secrets.token_hex(8))

    async def write(self, key: str, state: LeaseState, etag: str | None) -> str | None:
        """
        Write C{state} over the lease of ETag C{etag} (none: create it);
        its new ETag, or L{None} when another write came first.
        """
        body = state.encode()
        sha256 = hashlib.sha256(body).hexdigest()
        try:
            return await self.client.putIf(
                key, [body], sha256, ifMatch=etag, ifNoneMatch=etag is None
            )
        except PreconditionFailed:
            # Lost, or won by an attempt whose answer was lost and whose
            # retry was then refused: the lease says which.
            current = await self.client.readVersion(key)
            if current is not None and current.data == body:
                return current.etag
            return None

    async def _acquire(self, uploadId: str, takeover: bool) -> ILease:
        key = self.key(uploadId)
        for _ in range(ATTEMPTS):
            current = await self.client.readVersion(key)
            now = self.clock.seconds()
            generation = 1
            if current is not None:
                try:
                    held = LeaseState.decode(current.data)
                except ValueError:
                    self._log.warn("lease of upload {id} is damaged; replacing it", id=uploadId)
                else:
                    generation = held.generation + 1
                    if held.holder != self.holder and held.expires > now and not takeover:
                        raise LeaseHeld(uploadId, held.holder, held.expires - now)
            state = self.state(generation, now + self.ttl)
            etag = await self.write(key, state, None if current is None else current.etag)
            if etag is not None:
                return S3Lease(self, uploadId, state, etag, now)
        raise LeaseHeld(uploadId, None, 1.0)

    def acquire(self, uploadId: str, takeover: bool = False) -> Deferred[ILease]:
        return Deferred.fromCoroutine(_storeErrors(self._acquire(uploadId, takeover)))

    def forget(self, uploadId: str) -> Deferred[None]:
        return Deferred.fromCoroutine(_storeErrors(self.client.delete(self.key(uploadId))))


async def _storeErrors(operation: Awaitable[T]) -> T:
    """S3's errors as the store's (L{StorageUnavailable}, ...)."""
    try:
        return await operation
    except S3Error as e:
        raise storeError(e) from e


@implementer(ILease)
class S3Lease:
    """A lease this backend holds, kept in the bucket by L{S3Leases}."""

    _log = Logger()

    def __init__(
        self, leases: S3Leases, uploadId: str, state: LeaseState, etag: str, sent: float
    ) -> None:
        self._leases = leases
        self._clock = leases.clock
        self.uploadId = uploadId
        self.generation = state.generation
        self._etag = etag
        #: When this backend stops counting on the lease, by its own clock.
        self._deadline = sent + leases.ttl - leases.margin
        self._onLost: Callable[[LeaseLost], object] | None = None
        self._lost: LeaseLost | None = None
        self._released = False
        self._renewal: IDelayedCall | None = None
        self._watchdog: IDelayedCall | None = None
        self._writing: Deferred[None] | None = None

    # ILease

    def renewing(self, onLost: Callable[[LeaseLost], object]) -> None:
        if self._released:
            raise RuntimeError("renewing a released lease")
        self._onLost = onLost
        if self._lost is not None:
            onLost(self._lost)
            return
        self._schedule()

    def valid(self) -> bool:
        return (
            self._lost is None and not self._released
            and self._clock.seconds() < self._deadline
        )

    def release(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._release())

    # Renewing

    def _schedule(self) -> None:
        self._cancelTimers()
        interval = self._leases.ttl / 3
        self._renewal = self._clock.callLater(interval, self._renew)
        self._watchdog = self._clock.callLater(
            max(0.0, self._deadline - self._clock.seconds()), self._expired
        )

    def _cancelTimers(self) -> None:
        for call in (self._renewal, self._watchdog):
            if call is not None and call.active():
                call.cancel()
        self._renewal = self._watchdog = None

    def _renew(self) -> None:
        self._renewal = None
        writing = Deferred.fromCoroutine(self._renewOnce())
        if not writing.called:
            self._writing = writing

            def done(result: None) -> None:
                self._writing = None

            writing.addBoth(done)

    async def _renewOnce(self) -> None:
        sent = self._clock.seconds()
        state = self._leases.state(self.generation, sent + self._leases.ttl)
        try:
            etag = await self._leases.write(self._leases.key(self.uploadId), state, self._etag)
        except Exception as e:
            # S3 away for a moment: try again; the watchdog ends the lease
            # if no renewal gets through before the deadline.
            if self._lost is None and not self._released:
                self._log.info(
                    "lease of upload {id} not renewed ({error}); trying again",
                    id=self.uploadId, error=e,
                )
                self._renewal = self._clock.callLater(self._leases.ttl / 10, self._renew)
            return
        if self._lost is not None or self._released:
            return
        if etag is None:
            self._lose(LeaseLost(f"the lease of upload {self.uploadId} was taken over"))
            return
        self._etag = etag
        self._deadline = sent + self._leases.ttl - self._leases.margin
        self._schedule()

    def _expired(self) -> None:
        self._watchdog = None
        self._lose(LeaseLost(
            f"the lease of upload {self.uploadId} could not be renewed before it expired"
        ))

    def _lose(self, reason: LeaseLost) -> None:
        if self._lost is not None or self._released:
            return
        self._lost = reason
        self._cancelTimers()
        self._log.info("lease lost: {reason}", reason=reason)
        if self._onLost is not None:
            self._onLost(reason)

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._cancelTimers()
        while self._writing is not None:
            await self._writing
        if self._lost is not None:
            return
        state = self._leases.state(self.generation, 0.0)
        try:
            await self._leases.write(self._leases.key(self.uploadId), state, self._etag)
        except Exception as e:
            # It expires by itself.
            self._log.info("lease of upload {id} not released: {error}",
                           id=self.uploadId, error=e)


@implementer(ILease)
class LocalLease:
    """A lease nobody else can take: one backend alone writes the store."""

    generation = 1

    def __init__(self, uploadId: str) -> None:
        self.uploadId = uploadId
        self._released = False

    def renewing(self, onLost: Callable[[LeaseLost], object]) -> None:
        pass

    def valid(self) -> bool:
        return not self._released

    def release(self) -> Deferred[None]:
        self._released = True
        return succeed(None)


@implementer(ILeases)
class LocalLeases:
    """Grants every lease at once (a store one backend alone writes)."""

    def acquire(self, uploadId: str, takeover: bool = False) -> Deferred[ILease]:
        return succeed(LocalLease(uploadId))

    def forget(self, uploadId: str) -> Deferred[None]:
        return succeed(None)

