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

    def __init__(
        self, name: str, total: int, out: TextIO, bar: bool, overall: tqdm | None = None
    ) -> None:
        self.name = name
        self._overall = overall
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
        if self._overall is not None:
            self._overall.update(count)

    def done(self, line: str) -> None:
        if self._bar is not None:
            self._bar.close()
        seconds = time.monotonic() - self._started
        text = f"{line} in {seconds:.1f} s ({_rate(self.sent, seconds)})"
        if self._bar is not None:
            tqdm.write(text, file=self._out)  # above the bars still running
        else:
            print(text, file=self._out)

    def close(self) -> None:
        """End the bar without a line: the caller reports what happened."""
        if self._bar is not None:
            self._bar.close()


class Reporter:
    """
    Makes a L{FileProgress} per file, bars only on a terminal; with
    L{expect}, a bar for all the files together too.
    """

    def __init__(self, out: TextIO = sys.stderr, bars: bool | None = None) -> None:
        self._out = out
        self._bars = out.isatty() if bars is None else bars
        self._overall: tqdm | None = None

    def expect(self, files: int, size: int) -> None:
        """Show the progress of C{files} files of C{size} bytes in all."""
        if self._bars and files > 1:
            self._overall = tqdm(
                total=size, desc=f"all {files} files", unit="B", unit_scale=True,
                unit_divisor=1024, file=self._out, leave=True, dynamic_ncols=True, position=0,
            )

    def finish(self) -> None:
        if self._overall is not None:
            self._overall.close()
            self._overall = None

    def start(self, name: str, total: int) -> FileProgress:
        return FileProgress(name, total, self._out, self._bars, self._overall)
