"""
The machine a benchmark ran on, and its own limits measured in the same run:
one loopback TCP stream, disk writes with fsync, SHA-256.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from clients import CURL

from streamrelay.store.direct import JOBS, PIECE
from streamrelay.store.writer import SYNC_EVERY, syncAndDrop

MiB = 1 << 20
_SINK = Path(__file__).with_name("sink.py")
_SINK_LISTENING = re.compile(rb"sink listening on 127\.0\.0\.1:(\d+)")


def _firstMatch(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(folder: Path) -> str:
    """The device and type of the filesystem holding C{folder}."""
    best = ("", "unknown", "unknown")
    target = str(folder.resolve())
    with open("/proc/mounts") as f:
        for line in f:
            device, mountPoint, kind = line.split()[:3]
            inside = target == mountPoint or target.startswith(mountPoint.rstrip("/") + "/")
            if inside and len(mountPoint) >= len(best[0]):
                best = (mountPoint, device, kind)
    return f"{best[1]} ({best[2]}) on {best[0]}"


def _readText(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def network() -> str:
    """
    The TCP congestion control new connections get, and the default
    queueing discipline (C{net.core.default_qdisc}; the loopback device
    itself has none): on loopback, a pacing congestion control (bbr) costs
    the proxy path far more than the direct one.
    """
    control = _readText("/proc/sys/net/ipv4/tcp_congestion_control") or "unknown"
    qdisc = _readText("/proc/sys/net/core/default_qdisc") or "unknown"
    return f"TCP congestion control {control}, default qdisc {qdisc}"


def loadAverage() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def describe(folder: Path) -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, filesystem and software versions."""
    curl = subprocess.run([CURL, "--version"], capture_output=True, text=True, check=False)
    memKiB = _firstMatch("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _firstMatch("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(memKiB) / MiB, 1) if memKiB.isdigit() else None,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": _version("Twisted"),
        "klein": _version("klein"),
        "treq": _version("treq"),
        "curl": " ".join(curl.stdout.split()[:2]),
        "filesystem": _filesystem(folder),
        "network": network(),
        "load_average_start": loadAverage(),
    }


class LoopbackSink:
    """L{sink.py <sink>} running in its own process, stopped by PID."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(_SINK)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        match = _SINK_LISTENING.search(self.process.stdout.readline())
        if match is None:
            self.stop()
            raise RuntimeError("the loopback sink did not start")
        self.url = f"http://127.0.0.1:{int(match.group(1))}/sink"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def loopbackSeconds(sink: LoopbackSink, source: Path) -> float:
    """
    Seconds for C{curl -T source} into the sink: one TCP stream over
    127.0.0.1 with the benchmark's own client and no storage behind it.
    """
    started = time.perf_counter()
    result = subprocess.run(
        [CURL, "--silent", "--show-error", "-T", str(source), "-w", "\n%{http_code}", sink.url],
        capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - started
    body, _, status = result.stdout.rpartition("\n")
    if result.returncode != 0 or status != "200" or f'"size": {source.stat().st_size}' not in body:
        raise RuntimeError(f"loopback measurement failed: {result.stderr.strip() or body}")
    return seconds


def diskWriteSeconds(folder: Path, size: int) -> float:
    """
    Seconds to write C{size} bytes in 1 MiB writes into C{folder}, fsync
    included, syncing in the background every C{SYNC_EVERY} bytes as the
    backend's writers do (else the probe measures a final fsync of the
    whole file, slower than the disk's sustained rate the backend gets).
    """
    block = os.urandom(MiB)
    path = folder / f".disk-probe-{os.getpid()}"
    try:
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        syncer: threading.Thread | None = None
        try:
            left, unsynced = size, 0
            while left:
                count = os.write(fd, memoryview(block)[: min(MiB, left)])
                left -= count
                unsynced += count
                if unsynced >= SYNC_EVERY and (syncer is None or not syncer.is_alive()):
                    unsynced = 0
                    syncer = threading.Thread(target=syncAndDrop, args=(fd,))
                    syncer.start()
            os.fsync(fd)
        finally:
            if syncer is not None:
                syncer.join()
            os.close(fd)
        return time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)


def diskDirectSeconds(folder: Path, size: int) -> float | None:
    """
    Seconds to write C{size} bytes into C{folder} with direct I/O as the
    backend writes uploads: pieces of C{PIECE} bytes from aligned buffers,
    C{JOBS} at once, then fsync; None where the file system refuses direct
    I/O.
    """
    path = folder / f".direct-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError:
        path.unlink(missing_ok=True)
        return None
    lock = threading.Lock()
    offsets = iter(range(0, size, PIECE))
    errors: list[BaseException] = []

    def writer() -> None:
        buffer = mmap.mmap(-1, PIECE)
        buffer.write(os.urandom(PIECE))
        try:
            while True:
                with lock:
                    offset = next(offsets, None)
                if offset is None:
                    return
                os.pwrite(fd, memoryview(buffer)[: min(PIECE, size - offset)], offset)
        except BaseException as e:
            errors.append(e)

    try:
        started = time.perf_counter()
        threads = [threading.Thread(target=writer) for _ in range(JOBS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        os.fsync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def smallFilesSeconds(folder: Path, count: int, size: int = MiB) -> float:
    """Seconds to write C{count} files of C{size} bytes one after another, each fsynced."""
    block = os.urandom(size)
    paths = [folder / f".files-probe-{os.getpid()}-{i}" for i in range(count)]
    try:
        started = time.perf_counter()
        for path in paths:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
        return time.perf_counter() - started
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def sha256Seconds(size: int) -> float:
    """Seconds for hashlib to hash C{size} bytes fed in 1 MiB chunks (one thread)."""
    block = memoryview(os.urandom(MiB))
    digest = hashlib.sha256()
    started = time.perf_counter()
    left = size
    while left:
        chunk = block[: min(MiB, left)]
        digest.update(chunk)
        left -= len(chunk)
    digest.hexdigest()
    return time.perf_counter() - started


@dataclass
class Limit:
    """One of the machine's limits: its runs' seconds for C{size} bytes."""

    key: str
    label: str
    size: int
    files: int = 1
    seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.size / s / 1e6 for s in self.seconds]

    def median(self) -> float:
        return statistics.median(self.rates)

    def best(self) -> float:
        """
        The fastest run: what the machine can do.  A run is only ever
        slowed by other work on the machine, so a ratio against the best
        is not flattered by one disturbed probe.
        """
        return max(self.rates)

    @property
    def fileRates(self) -> list[float]:
        return [self.files / s for s in self.seconds]


#: The limits a single stream can be held to besides the disk's, which is
#: the faster of the disk probes (through the page cache, or direct I/O);
#: the others give context.
STREAM_LIMITS = ("loopback", "sha256")
DISK_PROBES = ("disk", "direct")

#: Files in the small-file probe: enough for a stable rate, quick on slow disks.
SMALL_FILES = 200


#: The limits that write to the disk: each of their runs starts on a settled disk.
DISK_LIMITS = ("disk", "direct", "files")


def measureLimits(
    source: Path, folder: Path, runs: int, settle: Callable[[str], object] | None = None
) -> list[Limit]:
    """
    Each limit C{runs} times, for as many bytes as C{source} holds;
    C{settle(what)} is called before each run of a disk limit.
    """
    size = source.stat().st_size
    folder.mkdir(parents=True, exist_ok=True)
    sink = LoopbackSink()
    try:
        probes: list[tuple[Limit, Callable[[], float | None]]] = [
            (Limit("loopback", "loopback TCP, curl -T -> sink", size),
             lambda: loopbackSeconds(sink, source)),
            (Limit("disk", f"disk write + fsync (synced every {SYNC_EVERY >> 20} MiB)", size),
             lambda: diskWriteSeconds(folder, size)),
            (Limit("direct", f"disk write, direct I/O ({JOBS} x {PIECE >> 20} MiB at once) + fsync",
                   size),
             lambda: diskDirectSeconds(folder, size)),
            (Limit("sha256", "SHA-256, 1 MiB chunks", size),
             lambda: sha256Seconds(size)),
            (Limit("files", f"disk: {SMALL_FILES} x 1 MiB files, each fsynced",
                   SMALL_FILES * MiB, SMALL_FILES),
             lambda: smallFilesSeconds(folder, SMALL_FILES)),
        ]
        for limit, probe in probes:
            for run in range(1, runs + 1):
                if settle is not None and limit.key in DISK_LIMITS:
                    settle(f"limit {limit.label} run {run}")
                seconds = probe()
                if seconds is None:
                    break
                limit.seconds.append(seconds)
            if limit.seconds:
                print(f"limit {limit.label}: {limit.median():.0f} MB/s",
                      file=sys.stderr, flush=True)
    finally:
        sink.stop()
    return [limit for limit, _ in probes if limit.seconds]


def streamLimits(limits: list[Limit]) -> list[Limit]:
    """The limits one stream is held to: loopback, SHA-256, and the faster disk probe."""
    found = [limit for limit in limits if limit.key in STREAM_LIMITS]
    disks = [limit for limit in limits if limit.key in DISK_PROBES]
    if disks:
        found.append(max(disks, key=lambda limit: limit.best()))
    return found
