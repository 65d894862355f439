"""
One request writing into a tus upload: who holds the upload (and who waits
to take it over), and where the request's body goes on its way to the
partial upload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from zope.interface import implementer

from streamrelay.errors import ApiError
from streamrelay.receiving import TooLarge
from streamrelay.tus.interfaces import IPartialWriter

#: A long PATCH without a checksum moves the kept offset forward every this
#: many bytes, so a crash loses at most that much.
CHECKPOINT_EVERY = 64 << 20


class TakenOver(Exception):
    """Another request took the upload over (or the backend is stopping)."""


def locked() -> ApiError:
    return ApiError(
        423, "locked", "Another request took this upload over; ask for its offset again."
    )


def heldElsewhere() -> ApiError:
    """Another backend sharing the bucket holds the upload's lease."""
    return ApiError(
        423, "locked",
        "Another request is writing to this upload; try again in a moment.",
        {b"retry-after": b"1"},
    )


class WriteHolder:
    """The one request writing to an upload, and who waits for it."""

    def __init__(self) -> None:
        self.takenOver = False
        #: The upload's lease was lost: nothing more may be written.
        self.leaseLost = False
        self.body: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        self._released = False

    def takeOver(self) -> None:
        self.takenOver = True
        body, self.body = self.body, None
        if body is not None:
            body.cancel()

    def loseLease(self, reason: object = None) -> None:
        """Another backend took the upload's lease: stop at once, write nothing more."""
        self.leaseLost = True
        self.takeOver()

    def whenReleased(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._released:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def released(self) -> None:
        self._released = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


@implementer(IConsumer)
class ChunkSink:
    """
    Where one request's body goes: hashed into the upload's running
    SHA-256 and the request's checksum, counted against the room left, and
    written; every L{CHECKPOINT_EVERY} bytes it asks for a checkpoint.
    """

    def __init__(
        self,
        writer: IPartialWriter,
        running: Any,
        checksum: Any | None,
        room: int | None,
        checkpoint: Callable[[], object] | None,
    ) -> None:
        self._writer = writer
        self.running = running
        self.checksum = checksum
        self._room = room
        self._checkpoint = checkpoint
        self.size = 0
        self._nextCheckpoint = CHECKPOINT_EVERY

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._writer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._writer.unregisterProducer()

    def write(self, data: bytes) -> None:
        if self._room is not None and self.size + len(data) > self._room:
            raise TooLarge(self._room)
        self._writer.write(data)
        self.size += len(data)
        self.running.update(data)
        if self.checksum is not None:
            self.checksum.update(data)
        if self._checkpoint is not None and self.size >= self._nextCheckpoint:
            self._nextCheckpoint = self.size + CHECKPOINT_EVERY
            self._checkpoint()
