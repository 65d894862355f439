"""
How the uploader shows progress: a bar on a terminal, one line per file
otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def _rate(size: int, seconds: float) -> str:
    return f"{size / max(seconds, 1e-6) / 1e6:.1f} MB/s"


class FileProgress:
    """Progress of one file."""

    def __init__(self, name: str, total: int, out: TextIO, bar: bool) -> None:
        self.name = name
        self.total = total
        self.sent = 0
        self._out = out
        self._started = time.monotonic()
        self._bar: tqdm | None = (
            tqdm(
                total=total,
                desc=name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=out,
                leave=True,
                dynamic_ncols=True,
            )
            if bar
            else None
        )

    def advance(self, count: int) -> None:
        self.sent += count
        if self._bar is not None:
            self._bar.update(count)

    def done(self, line: str) -> None:
        if self._bar is not None:
            self._bar.close()
        seconds = time.monotonic() - self._started
        print(f"{line} in {seconds:.1f} s ({_rate(self.sent, seconds)})", file=self._out)

    def close(self) -> None:
        """End the bar without a line: the caller reports what happened."""
        if self._bar is not None:
            self._bar.close()


class Reporter:
    """Makes a L{FileProgress} per file, bars only on a terminal."""

    def __init__(self, out: TextIO = sys.stderr, bars: bool | None = None) -> None:
        self._out = out
        self._bars = out.isatty() if bars is None else bars

    def start(self, name: str, total: int) -> FileProgress:
        return FileProgress(name, total, self._out, self._bars)
