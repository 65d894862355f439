"""
Bringing the disk back to the same state before each measured run.

A 2 GiB run leaves work behind it: pages still being written back, and on a
file system mounted with C{discard} the trims of the files just removed.
Measured at once, the next run pays for them, so later runs come out slower
than earlier ones.  L{settle} flushes with C{os.sync()} and waits (bounded)
until C{/proc/meminfo}'s Dirty + Writeback is small and the storage device
has done no I/O for a short while.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20

#: Dirty + Writeback under this counts as settled.
DIRTY_SMALL = 16 * MiB

#: Over the last C{QUIET} seconds the device must have been busy less than
#: C{BUSY_SMALL} of the time (and Dirty small) to count as settled; not
#: fully idle, since other work may share the disk.
QUIET = 0.5
BUSY_SMALL = 0.1

#: Never wait longer than this: a busy machine must not stall the benchmark.
TIMEOUT = 30.0

_POLL = 0.05


def dirtyBytes(meminfo: str = "/proc/meminfo") -> int:
    """Dirty + Writeback from C{/proc/meminfo}, in bytes."""
    total = 0
    with open(meminfo) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Dirty", "Writeback"):
                total += int(rest.split()[0]) * 1024
    return total


def blockDevice(folder: Path) -> Path | None:
    """C{/sys/block/<disk>/stat} of the disk holding C{folder}, if one is found."""
    try:
        dev = os.stat(folder).st_dev
        link = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    except OSError:
        return None
    # A partition's folder sits inside its disk's; the disk has the stat we want.
    for candidate in (link, link.parent):
        if (candidate / "stat").exists() and candidate.parent.name == "block":
            return candidate / "stat"
    return link / "stat" if (link / "stat").exists() else None


def ioTicks(stat: Path | None) -> int | None:
    """Milliseconds the device spent doing I/O (field 10 of its stat), or L{None}."""
    if stat is None:
        return None
    try:
        return int(stat.read_text().split()[9])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Settled:
    """How one wait for the disk ended."""

    before: int
    dirty: int
    seconds: float
    settled: bool

    def line(self) -> str:
        state = "settled" if self.settled else "NOT settled"
        return (f"{state}: Dirty+Writeback {self.before / MiB:.0f} -> {self.dirty / MiB:.0f} MiB "
                f"after {self.seconds:.1f} s")


def settle(
    folder: Path,
    timeout: float = TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled:
    """
    C{os.sync()}, then wait until Dirty + Writeback is under L{DIRTY_SMALL}
    and the disk under C{folder} has been (nearly) idle for L{QUIET}
    seconds, or C{timeout} seconds went by.
    """
    started = clock()
    before = dirtyBytes()
    os.sync()
    stat = blockDevice(folder)
    window: deque[tuple[float, int | None]] = deque()
    while True:
        now = clock()
        dirty = dirtyBytes()
        window.append((now, ioTicks(stat)))
        while len(window) > 1 and now - window[1][0] >= QUIET:
            window.popleft()
        (then, ticksThen), (_, ticksNow) = window[0], window[-1]
        busy = (
            (ticksNow - ticksThen) / 1000
            if ticksNow is not None and ticksThen is not None
            else 0.0
        )
        quiet = now - then >= QUIET and busy < BUSY_SMALL * (now - then)
        if dirty < DIRTY_SMALL and quiet:
            return Settled(before, dirty, now - started, True)
        if now - started >= timeout:
            return Settled(before, dirty, now - started, False)
        sleep(_POLL)
