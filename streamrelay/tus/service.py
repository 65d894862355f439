"""
The service that sweeps expired tus uploads and, when the backend stops,
lets the requests writing into uploads record what they received.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamrelay.tus.protocol import TusUploads


class TusService(Service):
    """Sweeps expired uploads every C{interval} seconds; on stop, lets the
    requests writing record what they received."""

    _log = Logger()

    def __init__(self, uploads: TusUploads, clock: IReactorTime, interval: float = 60.0):
        self.uploads = uploads
        self._loop = LoopingCall(self._sweep)
        self._loop.clock = clock
        self._interval = interval

    def _sweep(self) -> Deferred[object]:
        # A failed sweep (the storage away for a moment) is logged; the
        # loop goes on, and the next sweep tries again.
        return self.uploads.sweep().addErrback(
            lambda f: self._log.failure(
                "tus sweep failed; the next one runs in {interval:g} s", f,
                interval=self._interval,
            )
        )

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=True)

    def stopService(self) -> Deferred[object] | None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self.uploads.stop()
