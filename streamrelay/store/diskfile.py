"""
Files of the disk store opened for reading: their info, and their bytes
streamed to a consumer a chunk per reactor turn.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from streamrelay.store.diskmeta import readMetadata
from streamrelay.store.interfaces import FileInfo, IStoredFile
from streamrelay.store.placing import getSHA256


def fileInfo(name: str, fd: int, root: Path | None = None) -> FileInfo:
    """The info of C{name}, open as C{fd}; a sidecar of its metadata is under C{root}."""
    st = os.fstat(fd)
    return FileInfo(name, st.st_size, getSHA256(fd), st.st_mtime, readMetadata(fd, root, name))


@implementer(IPushProducer)
class _FileStreamer:
    """
    Writes a byte range of an open file to a consumer, one C{CHUNK} per
    reactor turn while the consumer does not pause it.
    """

    CHUNK = 1 << 20

    def __init__(
        self, clock: IReactorTime, fd: int, start: int, end: int, consumer: IConsumer
    ) -> None:
        self._clock = clock
        self._fd = fd
        self._offset = start
        self._end = end
        self._consumer = consumer
        self._paused = False
        self._call: IDelayedCall | None = None
        self.done: Deferred[None] = Deferred(lambda d: self.stopProducing())

    def start(self) -> Deferred[None]:
        self._consumer.registerProducer(self, True)
        self._schedule()
        return self.done

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self.done.called:
            self._call = self._clock.callLater(0, self._produce)

    def _produce(self) -> None:
        self._call = None
        if self._paused or self.done.called:
            return
        if self._offset >= self._end:
            self._consumer.unregisterProducer()
            self.done.callback(None)
            return
        try:
            data = os.pread(self._fd, min(self.CHUNK, self._end - self._offset), self._offset)
        except OSError as e:
            self._consumer.unregisterProducer()
            self.done.errback(e)
            return
        if not data:
            self._consumer.unregisterProducer()
            self.done.errback(OSError(errno.EIO, "the file is shorter than it was"))
            return
        self._offset += len(data)
        self._consumer.write(data)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._paused = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@implementer(IStoredFile)
class DiskFile:
    """A stored file open for reading."""

    def __init__(
        self, clock: IReactorTime, name: str, fd: int, root: Path | None = None
    ) -> None:
        self._clock = clock
        self._fd: int | None = fd
        self.info = fileInfo(name, fd, root)

    def stream(self, start: int, end: int, consumer: IConsumer) -> Deferred[None]:
        assert self._fd is not None
        return _FileStreamer(self._clock, self._fd, start, end, consumer).start()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

