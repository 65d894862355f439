"""
The benchmark's workloads, and what one measured path of a workload yields.

A workload starts a fresh stack for each of its routes (client and target),
so the services' peak RSS belongs to that route, and runs the routes
interleaved: run 1 of every route, then run 2 of every route, and so on, so
that whatever drifts over the workload (the disk, other work on the
machine) hits every route alike.  Before each run the previous run's files
are removed and the disk is settled (L{settle.settle}).  W1-W3 are
instances of L{UploadWorkload}, W4 of L{DownloadWorkload}; both have the
C{key}/C{title}/C{run} shape of L{Workload} and are registered in
L{WORKLOADS}.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from clients import (
    Batch,
    check,
    checkDownload,
    curlDownload,
    curlDownloadSHA256,
    curlUploads,
    uploaderUpload,
)
from services import ServiceFailed, Stack, Usage
from settle import Settled, settle

MiB = 1 << 20
GiB = 1 << 30
MB = 1e6


def sizeLabel(size: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def makeRandomFile(path: Path, size: int, seed: int) -> str:
    """Write C{size} pseudo-random bytes to C{path}, fsynced; return their SHA-256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            data = rng.randbytes(min(16 * MiB, left))
            digest.update(data)
            f.write(data)
            left -= len(data)
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Context:
    """What every workload shares in one benchmark run."""

    workDir: Path
    runs: int
    size: int
    _sources: dict[int, tuple[Path, str]] = field(default_factory=dict)
    #: Every wait for the disk to settle, in order.
    settles: list[Settled] = field(default_factory=list)
    _backends: int = 0

    @property
    def storage(self) -> Path:
        return self.workDir / "storage"

    def backendStorage(self) -> Path:
        """
        A storage folder of its own for one more backend, inside
        L{storage}: a backend holds its folder for itself while it runs,
        and the routes' backends run side by side.
        """
        self._backends += 1
        return self.storage / f"backend-{self._backends}"

    def settle(self, before: str) -> Settled:
        """Flush and wait for the disk (see L{settle.settle}); say so on stderr."""
        self.storage.mkdir(parents=True, exist_ok=True)
        settled = settle(self.storage)
        self.settles.append(settled)
        progress(f"{before}: {settled.line()}")
        return settled

    def source(self, size: int) -> tuple[Path, str]:
        """A random file of C{size} bytes (made once per run) and its SHA-256."""
        if size not in self._sources:
            folder = self.workDir / "sources"
            folder.mkdir(exist_ok=True)
            path = folder / f"random-{size}.bin"
            progress(f"writing a random {sizeLabel(size)} source file")
            self._sources[size] = (path, makeRandomFile(path, size, seed=size))
        return self._sources[size]


@dataclass(frozen=True)
class Route:
    """Which client sends, and whether through the proxy."""

    label: str
    client: str
    viaProxy: bool
    #: The backend sends hook events to a local receiver (bench/hooksink.py).
    hooks: bool = False


DIRECT = Route("curl -T -> backend", "curl", False)
PROXY = Route("curl -T -> proxy -> backend", "curl", True)
HOOKS_DIRECT = Route("curl -T -> backend, hooks on", "curl", False, hooks=True)
UPLOADER = Route("streamrelay-upload -> proxy -> backend", "uploader", True)
DOWNLOAD_DIRECT = Route("curl -o /dev/null <- backend", "curl", False)
DOWNLOAD_PROXY = Route("curl -o /dev/null <- proxy <- backend", "curl", True)


@dataclass
class Measurement:
    """One route of one workload over all runs."""

    workload: str
    route: Route
    bytesPerRun: int
    uploadsPerRun: int
    seconds: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    idle: dict[str, Usage] = field(default_factory=dict)
    end: dict[str, Usage] = field(default_factory=dict)
    #: CPU seconds each service used during the timed runs only.
    cpu: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Connections the hook sink accepted and requests it answered, all runs.
    hookCounts: tuple[int, int] | None = None
    #: Timed runs whose CPU time is in L{cpu} (those with errors too).
    cpuRuns: int = 0

    @property
    def rates(self) -> list[float]:
        """MB/s (10^6 bytes a second) of each successful run."""
        return [self.bytesPerRun / s / MB for s in self.seconds]

    @property
    def uploadRates(self) -> list[float]:
        """Uploads a second of each successful run."""
        return [self.uploadsPerRun / s for s in self.seconds]

    def median(self) -> float | None:
        return statistics.median(self.rates) if self.seconds else None

    def peak(self, label: str) -> int | None:
        usage = self.end.get(label)
        return usage.peak if usage else None

    def growth(self, label: str) -> int | None:
        """How far the peak RSS rose over the RSS measured idle after start-up."""
        if label not in self.end or label not in self.idle:
            return None
        return self.end[label].peak - self.idle[label].rss

    def cpuShare(self, label: str) -> float | None:
        """CPU time the service used during the timed runs, over their wall time."""
        if label not in self.cpu or not self.seconds:
            return None
        return self.cpu[label] / sum(self.seconds)

    def cpuPerUpload(self, label: str) -> float | None:
        """CPU seconds the service used per upload in the timed runs."""
        if label not in self.cpu or not self.cpuRuns:
            return None
        return self.cpu[label] / (self.cpuRuns * self.uploadsPerRun)

    def addCPU(self, before: dict[str, Usage], after: dict[str, Usage]) -> None:
        self.cpuRuns += 1
        for label, usage in after.items():
            if label in before:
                spent = usage.cpuSeconds - before[label].cpuSeconds
                self.cpu[label] = self.cpu.get(label, 0.0) + spent

    def latency(self, quantile: float) -> float | None:
        """A quantile of the per-upload times, as the client timed them."""
        if len(self.latencies) < 2:
            return None
        points = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return points[round(quantile * 100) - 1]


class Workload(Protocol):
    """A measured workload: a key such as C{W1}, a title, and its measurements."""

    key: str

    def title(self, ctx: Context) -> str: ...

    def run(self, ctx: Context) -> list[Measurement]: ...


def _clearStorage(storage: Path) -> None:
    """
    Remove stored files, in C{storage} and the backends' folders in it
    (their own C{.partial} and C{.tus} folders stay).
    """
    if not storage.exists():
        return
    for entry in storage.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _clearStorage(entry)
        else:
            entry.unlink()


#: What a failed route or run records instead of a figure.
_FAILURES = (ServiceFailed, OSError, subprocess.SubprocessError)


@dataclass
class Timed:
    """One timed run of a route: wall time, each transfer's time, what went wrong."""

    seconds: float
    latencies: list[float]
    errors: list[str]


class RouteRuns:
    """
    One route of a workload: its services, started once and kept for all
    its runs, and how one timed run goes (C{timed}) and is prepared for,
    untimed (C{prepare}); both are given the services' URL and the run's
    number, and return what went wrong.
    """

    def __init__(
        self,
        measurement: Measurement,
        stack: Stack | None,
        timed: Callable[[str, int], Timed],
        prepare: Callable[[str, int], list[str]],
    ) -> None:
        self.m = measurement
        self._stack = stack
        self._started: Stack | None = None
        self._timed = timed
        self._prepare = prepare

    def start(self, exits: ExitStack) -> None:
        if self._stack is not None:
            self._started = exits.enter_context(self._stack)
            self.m.idle = self._started.usage()

    def usage(self) -> dict[str, Usage]:
        return self._started.usage() if self._started is not None else {}

    @property
    def url(self) -> str:
        return self._started.url if self._started is not None else ""

    def once(self, ctx: Context, run: int) -> None:
        """Prepare, settle the disk, and time run C{run}; record it."""
        m = self.m
        m.errors += [f"{m.workload} {m.route.label}: {e}" for e in self._prepare(self.url, run)]
        ctx.settle(f"{m.workload} {m.route.label} run {run}")
        before = self.usage()
        result = self._timed(self.url, run)
        m.addCPU(before, self.usage())
        m.errors += [f"{m.workload} {m.route.label}: {e}" for e in result.errors]
        if result.errors:
            progress(f"{m.workload} {m.route.label} run {run}: {len(result.errors)} error(s)")
            return
        m.seconds.append(result.seconds)
        m.latencies += result.latencies
        progress(
            f"{m.workload} {m.route.label} run {run}/{ctx.runs}: "
            f"{m.rates[-1]:.0f} MB/s in {result.seconds:.2f} s"
        )

    def finish(self) -> None:
        if self._started is not None:
            self.m.end = self._started.usage()

    def stopped(self) -> None:
        """After its services stopped: what the hook sink counted."""
        if self._started is not None:
            self.m.hookCounts = self._started.hookCounts


def interleave(ctx: Context, routes: list[RouteRuns]) -> list[Measurement]:
    """
    Start every route's services, then run 1 of each route in turn, run 2
    of each, and so on; a route whose services fail is dropped (its error
    recorded), the others go on.
    """
    with ExitStack() as exits:
        live = []
        for route in routes:
            try:
                route.start(exits)
                live.append(route)
            except _FAILURES as e:
                route.m.errors.append(f"{route.m.workload} {route.m.route.label}: {e}")
        for run in range(1, ctx.runs + 1):
            for route in list(live):
                try:
                    route.once(ctx, run)
                except _FAILURES as e:
                    route.m.errors.append(f"{route.m.workload} {route.m.route.label}: {e}")
                    live.remove(route)
        for route in live:
            try:
                route.finish()
            except _FAILURES as e:
                route.m.errors.append(f"{route.m.workload} {route.m.route.label}: {e}")
    for route in routes:
        route.stopped()
    return [route.m for route in routes]


class UploadWorkload:
    """
    C{count} uploads of one random file of C{fileSize(ctx)} bytes,
    C{parallel} at a time, over each of C{routes}.
    """

    def __init__(
        self,
        key: str,
        fileSize: Callable[[Context], int],
        count: int,
        parallel: int,
        routes: tuple[Route, ...],
    ) -> None:
        self.key = key
        self.fileSize = fileSize
        self.count = count
        self.parallel = parallel
        self.routes = routes

    def title(self, ctx: Context) -> str:
        size = sizeLabel(self.fileSize(ctx))
        if self.count == 1:
            return f"one {size} upload"
        return f"{self.count} uploads of {size}, {self.parallel} at a time"

    def run(self, ctx: Context) -> list[Measurement]:
        size = self.fileSize(ctx)
        source, sha256 = ctx.source(size)
        clientDir = ctx.workDir / "client"
        clientDir.mkdir(exist_ok=True)
        try:
            return interleave(ctx, [
                RouteRuns(
                    Measurement(self.key, route, size * self.count, self.count),
                    self.stack(ctx, route),
                    partial(self.timed, ctx, route, source=source, size=size, sha256=sha256,
                            clientDir=clientDir),
                    partial(self.prepare, ctx),
                )
                for route in self.routes
            ])
        finally:
            self.clear(ctx)
            shutil.rmtree(clientDir, ignore_errors=True)

    def stack(self, ctx: Context, route: Route) -> Stack | None:
        """
        The services a route sends to (bench/s3.py stores in S3 instead);
        L{None} for a route that needs none of streamrelay's.
        """
        return Stack(ctx.backendStorage(), ctx.workDir, route.viaProxy, hooks=route.hooks)

    def clear(self, ctx: Context) -> None:
        """Remove what the runs stored."""
        _clearStorage(ctx.storage)

    def prepare(self, ctx: Context, url: str, run: int) -> list[str]:
        """Before each run: remove what the previous run stored."""
        self.clear(ctx)
        return []

    def timed(
        self, ctx: Context, route: Route, url: str, run: int, *, source: Path, size: int,
        sha256: str, clientDir: Path,
    ) -> Timed:
        """One timed run of C{route} against C{url}, each answer checked."""
        batch = self._upload(url, route, source, run, clientDir)
        return Timed(
            batch.seconds, [t.seconds for t in batch.transfers], check(batch, size, sha256)
        )

    def _upload(self, url: str, route: Route, source: Path, run: int, workDir: Path) -> Batch:
        if route.client == "uploader":
            if self.count != 1:
                raise ValueError("the uploader route sends one file per workload run")
            return uploaderUpload(url, source, workDir)
        return curlUploads(url, source, self.names(run), self.parallel, workDir)

    def names(self, run: int) -> list[str]:
        """The names run C{run} stores its files under (with curl)."""
        return [f"{self.key.lower()}-r{run}-{i:04d}.bin" for i in range(self.count)]


class DownloadWorkload:
    """
    One download of a random file of C{fileSize(ctx)} bytes, C{GET
    /files/{name}} with C{curl -o /dev/null}, over each of C{routes}.

    The file is stored once for the whole workload by a backend of its own
    (a direct C{curl -T}, not timed, its answer checked), so that upload
    counts in no measured service's peak RSS.  Each route's fresh stack
    first serves one untimed download whose bytes are hashed as they
    arrive and must match the source's SHA-256; then the C{runs} timed ones,
    interleaved with the other routes', each checked for status and size.
    """

    NAME = "w4-source.bin"

    def __init__(
        self, key: str, fileSize: Callable[[Context], int], routes: tuple[Route, ...]
    ) -> None:
        self.key = key
        self.fileSize = fileSize
        self.routes = routes

    def title(self, ctx: Context) -> str:
        return f"one {sizeLabel(self.fileSize(ctx))} download (curl -o /dev/null)"

    def run(self, ctx: Context) -> list[Measurement]:
        size = self.fileSize(ctx)
        source, sha256 = ctx.source(size)
        clientDir = ctx.workDir / "client"
        clientDir.mkdir(exist_ok=True)
        try:
            folder = ctx.backendStorage()
            try:
                stored = self._store(ctx, folder, source, size, sha256, clientDir)
            except _FAILURES as e:
                stored = [f"{self.key} storing the file: {e}"]
            if stored:
                return [Measurement(self.key, route, size, 1, errors=stored)
                        for route in self.routes]
            routes = [
                RouteRuns(
                    Measurement(self.key, route, size, 1),
                    Stack(self._linked(ctx, folder), ctx.workDir, route.viaProxy),
                    partial(self._timed, size=size, clientDir=clientDir),
                    partial(self._verify, route, size=size, sha256=sha256),
                )
                for route in self.routes
            ]
            return interleave(ctx, routes)
        finally:
            _clearStorage(ctx.storage)
            shutil.rmtree(clientDir, ignore_errors=True)

    def _store(
        self, ctx: Context, folder: Path, source: Path, size: int, sha256: str, clientDir: Path
    ) -> list[str]:
        progress(f"{self.key}: storing the {sizeLabel(size)} file to download (not timed)")
        with Stack(folder, ctx.workDir, withProxy=False) as stack:
            batch = curlUploads(stack.url, source, [self.NAME], 1, clientDir)
        return check(batch, size, sha256)

    def _linked(self, ctx: Context, folder: Path) -> Path:
        """A new backend folder holding the stored file (a hard link: same bytes, same xattr)."""
        linked = ctx.backendStorage()
        linked.mkdir(parents=True, exist_ok=True)
        os.link(folder / self.NAME, linked / self.NAME)
        return linked

    def _verify(self, route: Route, url: str, run: int, *, size: int, sha256: str) -> list[str]:
        """Before the first timed run: one untimed download, its bytes hashed."""
        if run != 1:
            return []
        verified = checkDownload(curlDownloadSHA256(f"{url}/files/{self.NAME}"), size, sha256)
        progress(f"{self.key} {route.label}: downloaded bytes' sha256 "
                 f"{'matches the source' if not verified else 'WRONG'} (not timed)")
        return [f"(sha256 check) {e}" for e in verified]

    def _timed(self, url: str, run: int, *, size: int, clientDir: Path) -> Timed:
        transfer = curlDownload(f"{url}/files/{self.NAME}", clientDir)
        return Timed(transfer.seconds, [transfer.seconds], checkDownload(transfer, size))


#: Every implemented workload, by key, in the order they run.
WORKLOADS: dict[str, Workload] = {
    "W1": UploadWorkload("W1", lambda ctx: ctx.size, 1, 1, (DIRECT, PROXY, UPLOADER)),
    "W2": UploadWorkload("W2", lambda ctx: 64 * MiB, 32, 32, (DIRECT, PROXY)),
    "W3": UploadWorkload("W3", lambda ctx: MiB, 1000, 64, (DIRECT, PROXY, HOOKS_DIRECT)),
    "W4": DownloadWorkload("W4", lambda ctx: ctx.size, (DOWNLOAD_DIRECT, DOWNLOAD_PROXY)),
}

#: Workloads of issue 7 not measured yet, and what they wait for.
PLANNED: dict[str, str] = {}
