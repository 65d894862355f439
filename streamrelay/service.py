"""
The services' frame: listening on Twisted endpoint descriptions (saying
where), stopping gracefully, and ending the program with status 1 and one
clear line when a service cannot start.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.logger import ILogObserver, Logger, jsonFileLogObserver

from streamrelay.limits import UploadSlots
from streamrelay.signals import inReactorThread

#: Connections the kernel queues before they are accepted. Twisted's
#: default of 50 drops connections when hundreds of uploads start at once.
LISTEN_BACKLOG = 1024


_MakeService = Callable[[Any], IService]


def withBacklog(description: str) -> str:
    """C{description} with streamrelay's listen backlog, unless it sets one."""
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def exitOnOSError(label: str) -> Callable[[_MakeService], _MakeService]:
    """
    Decorate a plugin's C{makeService}: a file or folder it cannot use
    (storage, a secret or token file, ...) ends the program with status 1
    and one line that names it and says why, not a traceback.
    """

    def decorate(makeService: _MakeService) -> _MakeService:
        @functools.wraps(makeService)
        def make(options: Any) -> IService:
            try:
                return makeService(options)
            except OSError as e:
                where = f"{e.filename}: " if e.filename else ""
                raise SystemExit(f"{label} cannot start: {where}{e.strerror or e}") from None

        return make

    return decorate


def handleSignals(
    reactor: Any, label: str, reload: Callable[[], None] | None = None
) -> None:
    """
    Make SIGHUP call C{reload} (in the reactor thread), or, with nothing
    to reload, only be logged: its default action would end the program
    at once and cut every transfer in flight.

    And once the reactor runs, have its own SIGTERM and SIGINT handlers
    (which log, then stop it) run in the reactor thread rather than in the
    signal handler: a signal that lands while the main thread is inside the
    log observer's lock would otherwise wait for that lock forever, and the
    service would never stop (Twisted issue 7736).
    """
    log = Logger(namespace=label)

    def hungUp(number: int) -> None:
        if reload is not None:
            reload()
        else:
            log.info("SIGHUP: nothing to reload (only the proxy's --tokens-file and "
                     "--grant-keys-file are); "
                     "still serving")

    signal.signal(signal.SIGHUP, inReactorThread(reactor, hungUp))
    reactor.callWhenRunning(_deferStopSignals, reactor)


def _deferStopSignals(reactor: Any) -> None:
    """(Once the reactor installed its signal handlers.)  See L{handleSignals}."""
    for number, own in ((signal.SIGTERM, reactor.sigTerm), (signal.SIGINT, reactor.sigInt)):
        if signal.getsignal(number) == own:  # (not a handler someone else set)
            signal.signal(number, inReactorThread(reactor, own))


def _exitFailed() -> None:
    """(At exit.)  End the process with status 1 instead of twistd's 0."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def stopFailed(reactor: IReactorCore) -> None:
    """
    Stop C{reactor} because the service cannot work, and make the process
    exit with status 1 (twistd always exits 0), so that whatever started
    it sees the failure.  A service fails while the reactor starts, where
    a plain C{stop()} is lost and the process would wait forever: the stop
    comes once the reactor runs.
    """
    atexit.register(_exitFailed)

    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # another failure (a second --listen, say) stopped it first

    reactor.callWhenRunning(stop)


class ListeningService(Service):
    """
    Listens on each endpoint description while running and logs the
    address it bound, e.g. C{streamrelay-proxy listening on
    tcp:127.0.0.1:8080}: tests and operators learn a C{tcp:0} port there.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        label: str,
        descriptions: list[str],
        factory: IProtocolFactory,
    ) -> None:
        self._reactor = reactor
        self._label = label
        self._descriptions = descriptions
        self._factory = factory
        self._ports: list[IListeningPort] = []

    def startService(self) -> None:
        super().startService()
        for description in self._descriptions:
            endpoint = serverFromString(self._reactor, withBacklog(description))
            endpoint.listen(self._factory).addCallbacks(
                self._listening,
                self._failed,
                errbackArgs=(description,),
            )

    def _listening(self, port: IListeningPort) -> None:
        self._ports.append(port)
        host: Any = port.getHost()
        where = (
            f"{host.type.lower()}:{host.host}:{host.port}"
            if hasattr(host, "port")
            else f"unix:{getattr(host, 'name', host)}"
        )
        self._log.info("{label} listening on {where}", label=self._label, where=where)

    def _failed(self, failure, description: str) -> None:  # type: ignore[no-untyped-def]
        self._log.critical(
            "{label} cannot listen on {description}: {reason}",
            label=self._label,
            description=description,
            reason=failure.getErrorMessage(),
        )
        stopFailed(self._reactor)

    def stopService(self) -> Deferred[object]:
        super().stopService()
        ports, self._ports = self._ports, []
        return DeferredList([d for d in (p.stopListening() for p in ports) if d is not None])  # type: ignore[return-value]


class GracefulStop(Service):
    """
    On stop (SIGTERM), lets uploads in flight finish for C{grace} seconds,
    then aborts the rest; the listeners stop accepting at the same time.
    """

    def __init__(self, slots: UploadSlots, grace: float) -> None:
        self._slots = slots
        self._grace = grace

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._slots.drain(self._grace))


class Closing(Service):
    """
    Calls C{close} when the service stops (e.g. a store's, which removes
    the files it made ahead of time) and waits for what it returns.
    """

    def __init__(self, close: Callable[[], Deferred[None]]) -> None:
        self._close = close

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._close()


class StreamrelayService(MultiService):
    """
    A service's top: with C{logFormat="json"}, twistd logs each event as
    one JSON object (Twisted's JSON log observer) instead of text.
    """

    def __init__(self, logFormat: str = "text") -> None:
        super().__init__()
        self._logFormat = logFormat

    def setServiceParent(self, parent: Any) -> Any:
        if self._logFormat == "json" and hasattr(parent, "setComponent"):
            # twistd asks the application for its log observer after
            # making the service: this is how a plugin chooses one.
            parent.setComponent(ILogObserver, jsonFileLogObserver(sys.stdout))
        return super().setServiceParent(parent)

