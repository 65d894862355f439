"""
C{make bench --disk-limit}: its rate argument, and the limited disk made
and taken down for real where the machine allows it (root, a loop device,
cgroup v1's blkio throttle).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import tests.benchpath  # noqa: F401  (bench/ on the path for the imports below)

# isort: split
import limiteddisk
from limiteddisk import THROTTLE, limitedDisk, unavailable
from machine import Limit
from report import ratios
from workloads import DIRECT, PROXY, Measurement

from bench import diskSize, optionErrors, parser, parseRate  # type: ignore[attr-defined]


class RateTests(SynchronousTestCase):
    def test_rates(self) -> None:
        """Rates are bytes per second in powers of 1000, as the bench reports MB/s."""
        self.assertEqual(parseRate("500M"), 500 * 10**6)
        self.assertEqual(parseRate("500MB/s"), 500 * 10**6)
        self.assertEqual(parseRate("1g"), 10**9)
        self.assertEqual(parseRate("2000000"), 2 * 10**6)

    def test_badRates(self) -> None:
        """Anything else, or less than 1 MB/s, is refused."""
        for text in ("fast", "500MiB", "-5M", "0M", "999K", ""):
            self.assertRaises(argparse.ArgumentTypeError, parseRate, text)

    def test_option(self) -> None:
        """Without C{--disk-limit} the disk is the machine's; with it, the rate asked for."""
        self.assertIsNone(parser().parse_args([]).disk_limit)
        self.assertEqual(parser().parse_args(["--disk-limit", "300M"]).disk_limit, 300 * 10**6)

    def test_refusedWhereUnavailable(self) -> None:
        """
        Where no limited disk can be made (here: not root), C{--disk-limit}
        is refused with the reason before anything is installed or run.
        """
        self.patch(limiteddisk.os, "geteuid", lambda: 1000)
        options = parser().parse_args(["--disk-limit", "300M"])
        self.assertEqual(optionErrors(options), [
            "--disk-limit needs root (a loop device and the kernel's block I/O throttle)"
        ])
        self.assertEqual(optionErrors(parser().parse_args([])), [])

    def test_size(self) -> None:
        """The disk holds the source, a run's files and a limit probe's file, with room."""
        self.assertGreater(diskSize(1 << 30), 3 << 30)


def _w1(route: object, megabytes: float) -> Measurement:
    m = Measurement("W1", route, 10**9, 1)  # type: ignore[arg-type]
    m.seconds = [1000 / megabytes]
    return m


def _limit(key: str, megabytes: float) -> Limit:
    return Limit(key, key, 10**9, seconds=[1000 / megabytes])


class TargetTests(SynchronousTestCase):
    """W1 against the machine: issue 28's targets for each regime."""

    def found(self, disk: float, sha: float) -> dict[str, tuple[float, float | None]]:
        measurements = [_w1(DIRECT, 450), _w1(PROXY, 400)]
        limits = [_limit("loopback", 2000), _limit("disk", disk), _limit("sha256", sha)]
        return {r.label: (round(r.value, 2), r.target) for r in ratios(measurements, limits)
                if "limit" in r.label or "SHA" in r.label}

    def test_diskBound(self) -> None:
        """A disk slower than 0.6 / 0.9 of SHA-256: 0.9 of it direct, 0.8 through the proxy."""
        self.assertEqual(self.found(disk=500, sha=1500), {
            "W1 direct path / disk limit (best run, disk; the disk is the bound)": (0.9, 0.9),
            "W1 proxy path / disk limit (best run, disk)": (0.8, 0.8),
        })

    def test_cpuBound(self) -> None:
        """
        A disk faster than that, even when it is the slowest limit: 0.6 of
        SHA-256 direct (through the proxy, the proxy/direct ratio holds).
        """
        self.assertEqual(self.found(disk=1200, sha=1500), {
            "W1 direct path / SHA-256 (best run; the CPU is the bound)": (0.3, 0.6),
        })


def _mounted(folder: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(folder) for line in f)


def _throttled() -> list[str]:
    return [line for line in THROTTLE.read_text().splitlines() if line.strip()]


class LimitedDiskTests(SynchronousTestCase):
    def setUp(self) -> None:
        why = unavailable()
        if why is not None:
            raise self.skipTest(why)  # type: ignore[attr-defined]
        self.parent = Path(self.mktemp()).resolve()
        self.parent.mkdir()

    def test_madeAndTakenDown(self) -> None:
        """
        Inside the block: a mounted ext4 folder that takes files and fsyncs,
        and its device in the throttle at the rate asked for.  After it:
        unmounted, the loop device detached, the throttle line and every
        folder gone.
        """
        before = _throttled()
        with limitedDisk(200 * 10**6, 256 << 20, self.parent) as folder:
            self.assertTrue(_mounted(folder))
            path = folder / "file"
            with open(path, "wb") as f:
                f.write(os.urandom(1 << 20))
                os.fsync(f.fileno())
            self.assertEqual(path.stat().st_size, 1 << 20)
            added = [line for line in _throttled() if line not in before]
            self.assertEqual(len(added), 1)
            self.assertTrue(added[0].endswith(" 200000000"), added)
            loops = Path("/sys/block").glob("loop*/loop/backing_file")
            backing = [p for p in loops if str(self.parent) in p.read_text()]
            self.assertEqual(len(backing), 1)
        self.assertFalse(_mounted(folder))
        self.assertEqual(_throttled(), before)
        self.assertFalse(backing[0].exists())
        self.assertEqual(list(self.parent.iterdir()), [])

    def test_takenDownOnError(self) -> None:
        """An error (or Ctrl-C) inside the block takes the disk down too."""
        before = _throttled()
        with self.assertRaises(KeyboardInterrupt):
            with limitedDisk(200 * 10**6, 256 << 20, self.parent) as folder:
                (folder / "file").write_bytes(b"x")
                raise KeyboardInterrupt()
        self.assertFalse(_mounted(folder))
        self.assertEqual(_throttled(), before)
        self.assertEqual(list(self.parent.iterdir()), [])

    def test_tooLittleMemory(self) -> None:
        """A disk larger than the free memory is refused before anything is made."""
        with self.assertRaises(RuntimeError) as caught:
            with limitedDisk(200 * 10**6, 1 << 50, self.parent):
                pass
        self.assertIn("free memory", str(caught.exception))
        self.assertEqual(list(self.parent.iterdir()), [])
