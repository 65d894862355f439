"""
C{twistd streamrelay-backend}: options and service wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from streamrelay.accesslog import redactedLogFormatter
from streamrelay.auth import readSecret
from streamrelay.backend.multipart import DEFAULT_MAX_FORM_FILES
from streamrelay.backend.routes import BackendRoutes
from streamrelay.collector import tuneCollector
from streamrelay.hooks.clients import ClientContexts
from streamrelay.hooks.config import HOOK_OPTIONS, checkHookOptions, makeHooks
from streamrelay.hooks.metrics import HookMetrics
from streamrelay.limits import UploadSlots
from streamrelay.memory import tuneMalloc
from streamrelay.metrics import Metrics
from streamrelay.options import ServiceOptions, parseSize
from streamrelay.service import (
    Closing,
    GracefulStop,
    ListeningService,
    StreamrelayService,
    exitOnOSError,
    handleSignals,
)
from streamrelay.store.commitmetrics import register as registerCommitMetrics
from streamrelay.store.disk import DiskStore
from streamrelay.store.s3.config import S3_OPTIONS, checkS3Options, isS3URL, makeS3Store
from streamrelay.store.writer import Runner
from streamrelay.streaming import makeSite
from streamrelay.tus.config import RESUMABLE_OPTIONS, checkResumableOptions, makeResumable
from streamrelay.webapp import JSONAnswers, appResource

if TYPE_CHECKING:
    from streamrelay.store.s3.store import S3Store

_log = Logger()


class Options(ServiceOptions):
    synopsis = "[options]"
    longdesc = "Store uploads streamed to it under a storage folder."
    defaultListen = "tcp:8081:interface=127.0.0.1"
    optParameters = [
        ["storage", None, "uploads",
         "Folder to keep files in, or s3://bucket/prefix (see docs/s3.md). "
         "[env STREAMRELAY_STORAGE]"],
        ["max-size", None, None,
         "Largest body accepted, in bytes (K, M, G, T suffixes); none by default. "
         "[env STREAMRELAY_MAX_SIZE]"],
        ["max-form-files", None, str(DEFAULT_MAX_FORM_FILES),
         "Most files one POST /files form may hold; a form with more is refused "
         "(413 too_many_files) and nothing of it is stored. "
         "[env STREAMRELAY_MAX_FORM_FILES]"],
        ["idle-timeout", None, "60",
         "Seconds a connection may send nothing before it is closed "
         "(not counted while streamrelay itself holds the client back). "
         "[env STREAMRELAY_IDLE_TIMEOUT]"],
        ["shared-secret", None, None,
         "Refuse every /files and /uploads request without "
         "'Authorization: Bearer SECRET' (give the proxy the same). "
         "[env STREAMRELAY_SHARED_SECRET]"],
        ["shared-secret-file", None, None,
         "File whose first line is the shared secret. [env STREAMRELAY_SHARED_SECRET_FILE]"],
        ["debug-write-rate", None, None,
         "Slow disk writes to about this many bytes a second (for testing "
         "backpressure only). [env STREAMRELAY_DEBUG_WRITE_RATE]"],
        *S3_OPTIONS,
        *RESUMABLE_OPTIONS,
        *HOOK_OPTIONS,
    ]

    def postOptions(self) -> None:
        super().postOptions()
        for key in ("max-size", "debug-write-rate"):
            if self[key] is not None:
                self[key] = parseSize(str(self[key]))
        try:
            self["max-form-files"] = int(self["max-form-files"])
        except ValueError:
            raise usage.UsageError("--max-form-files takes a whole number") from None
        if self["max-form-files"] < 1:
            raise usage.UsageError("--max-form-files is at least 1")
        try:
            self["idle-timeout"] = float(self["idle-timeout"])
        except ValueError:
            raise usage.UsageError("--idle-timeout takes a number of seconds") from None
        self["s3"] = checkS3Options(self) if isS3URL(self["storage"]) else None
        checkResumableOptions(self)
        checkHookOptions(self, s3=self["s3"] is not None)


def threadRunner(reactor: Any) -> Runner:
    """Runs disk work in the reactor's thread pool: a slow disk never
    stalls the reactor, and hashing and writing use both cores."""
    reactor.suggestThreadPoolSize(16)

    def run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


def ownThread(reactor: Any, name: str) -> Runner:
    """
    Runs work in a thread of its own, one job at a time, in order: work
    that must not queue behind the uploads' in the shared pool (the hook
    journal's group commits, which each upload's answer waits for).
    Started and stopped with the reactor, as its own pool is.
    """
    pool = ThreadPool(1, 1, name)
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)

    def run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, pool, f, *args)

    return run


@exitOnOSError("streamrelay-backend")
def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tuneMalloc()
    tuneCollector(reactor)

    store: DiskStore | S3Store
    if options["s3"] is not None:
        store = makeS3Store(options["s3"], reactor)
        where = store.description
    else:
        root = Path(options["storage"])
        store = DiskStore(
            root,
            clock=reactor,  # type: ignore[arg-type]
            writeRate=options["debug-write-rate"],
            run=threadRunner(reactor),
        )
        where = str(root.resolve())
        if not store.claim():
            _log.warn(
                "{root} has no file locks: make sure no other backend uses it "
                "(each would sweep the other's uploads in flight)",
                root=where,
            )
    swept = store.sweep()
    if swept:
        _log.info("removed {count} partial upload(s) left by an earlier run", count=swept)
    slots = UploadSlots(reactor, options["max-concurrent-uploads"])  # type: ignore[arg-type]
    metrics = Metrics("backend")
    if isinstance(store, DiskStore):
        registerCommitMetrics(metrics.registry, store.commits)
    hooks, hookService = makeHooks(
        options,
        reactor,
        HookMetrics(metrics.registry),
        ownThread(reactor, "streamrelay-hook-journal"),
        check=store.storage.check if isinstance(store, DiskStore) else lambda: None,
    )
    secret = readSecret(options["shared-secret"], options["shared-secret-file"])
    contexts = ClientContexts(secret, options["hook-forward-headers"])
    tus, tusService = makeResumable(
        options, store, reactor, threadRunner(reactor), hooks=hooks, contexts=contexts
    )
    routes = BackendRoutes(
        store,
        maxSize=options["max-size"],
        secret=secret,
        slots=slots,
        metrics=metrics,
        tus=tus,
        maxFormFiles=options["max-form-files"],
        hooks=hooks,
        forwardHeaders=options["hook-forward-headers"],
    )
    site = makeSite(
        appResource(routes.app), options["idle-timeout"], JSONAnswers(), redactedLogFormatter
    )
    handleSignals(reactor, "streamrelay-backend")
    _log.info("streamrelay-backend storing files in {root}", root=where)
    service = StreamrelayService(options["log-format"])
    GracefulStop(slots, options["grace"]).setServiceParent(service)
    if isinstance(store, DiskStore):
        Closing(store.close).setServiceParent(service)
    listener = ListeningService(reactor, "streamrelay-backend", options["listen"], site)
    listener.setServiceParent(service)
    tusService.setServiceParent(service)
    hookService.setServiceParent(service)
    return service
