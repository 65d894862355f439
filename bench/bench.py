"""
C{make bench}: streamrelay's throughput and memory next to the machine's own
limits, from one run.

Starts its own backend and proxy on 127.0.0.1 (fresh ones for each measured
path, storage in a temporary folder under the system temp dir, removed at the
end), measures each path C{--runs} times, the paths of a workload interleaved
(run 1 of each, then run 2 of each, ...) and each run started on a settled
disk (previous files removed, C{os.sync()}, Dirty+Writeback small, the disk
idle), and prints the medians, the peak RSS
of each service, the machine's limits (one loopback TCP stream, disk write
with fsync, SHA-256) and the ratios between them.  Every upload's answered
SHA-256 is checked against the source, and so is one download's bytes per
download path; any error makes the exit status 1.

    .venv/bin/python bench/bench.py [--size 1G] [--runs 3]
        [--workloads W1,W2,W3,W4] [--w3-files 1000] [--json results.json]
        [--peers[=nginx,aiohttp,tornado]] [--disk-limit 500M]

With C{--peers}, W1-W3 also run through nginx, aiohttp + uvloop and
Tornado (bench/peers/, installed first if missing: bench/peerinstall.py),
interleaved with streamrelay's own routes, and a table of each relay's
figures without and with fsync and streamrelay's ratios to them follows.

With C{--disk-limit}, everything is stored on a disk that writes at that
rate (bench/limiteddisk.py): the regime of an ordinary disk, slower than
the CPU, on any machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from clients import uploaderStartup
from limiteddisk import limitedDisk, unavailable
from machine import describe, loadAverage, measureLimits
from peerinstall import install as installPeers
from peerreport import PEER_WORKLOADS, peerRatios, peersTable
from peerservices import PEERS
from peerworkloads import PeerRoute, PeersWorkload, peerRoutes
from report import asJSON, machineLines, ratios, resultsTable, settleLine
from s3 import workload as s3Workload
from workloads import (
    PLANNED,
    WORKLOADS,
    Context,
    Measurement,
    UploadWorkload,
    Workload,
    progress,
    sizeLabel,
)

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parseSize(text: str) -> int:
    """C{1073741824}, C{512M}, C{1G}, C{2GiB}: powers of 1024."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 1G, 2G)")
    power = " KMGT".index(match.group(2).upper() or " ")
    size = int(match.group(1)) * 1024**power
    if size <= 0:
        raise argparse.ArgumentTypeError("the size must be positive")
    return size


_RATE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:B(?:/s)?)?\s*$", re.IGNORECASE)


def parseRate(text: str) -> int:
    """C{500M}, C{500MB/s}, C{1G}: bytes per second, powers of 1000 (as MB/s is reported)."""
    match = _RATE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 300M, 500MB/s, 1G)")
    rate = int(match.group(1)) * 1000 ** " KMG".index(match.group(2).upper() or " ")
    if rate < 10**6:
        raise argparse.ArgumentTypeError("the rate must be at least 1M (10^6 bytes/s)")
    return rate


def parseWorkloads(text: str) -> list[str]:
    keys = [k.strip().upper() for k in text.split(",") if k.strip()]
    for key in keys:
        if key in PLANNED:
            raise argparse.ArgumentTypeError(f"{key} is not implemented yet: {PLANNED[key]}")
        if key not in WORKLOADS:
            raise argparse.ArgumentTypeError(
                f"unknown workload {key!r}; choose from {', '.join(WORKLOADS)}"
            )
    if not keys:
        raise argparse.ArgumentTypeError("no workload named")
    return keys


def parsePeers(text: str) -> list[str]:
    """C{nginx,tornado}: peers by name, in the order they are reported; C{all}: every one."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(PEERS)
    for name in names:
        if name not in PEERS:
            raise argparse.ArgumentTypeError(
                f"unknown peer {name!r}; choose from {', '.join(PEERS)} (or all)"
            )
    if not names:
        raise argparse.ArgumentTypeError("no peer named")
    return [p for p in PEERS if p in names]


def parseCount(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return count


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark streamrelay's upload and download paths against the "
        "machine's limits.",
    )
    p.add_argument("--size", type=parseSize, default=parseSize("1G"),
                   help="W1 and W4 file size, and the size the machine limits are measured with "
                   "(e.g. 512M, 1G, 2G; default 1G)")
    p.add_argument("--runs", type=int, default=3,
                   help="runs of each path; the median is reported (default 3)")
    p.add_argument("--workloads", type=parseWorkloads, default=list(WORKLOADS),
                   help=f"comma-separated, from {','.join(WORKLOADS)} (default all)")
    p.add_argument("--w3-files", type=parseCount, default=1000, metavar="N",
                   help="W3's number of 1 MiB uploads (64 at a time; default 1000)")
    p.add_argument("--peers", type=parsePeers, nargs="?", const=list(PEERS), default=[],
                   metavar="NAMES",
                   help="also run W1-W3 through other relays, interleaved with streamrelay's "
                   f"routes: {', '.join(PEERS)} (default all), installing what they need "
                   "(apt-get for nginx, pip into this Python's environment)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also save the results as JSON")
    p.add_argument("--tmpdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary storage folder goes (default %(default)s)")
    p.add_argument("--disk-limit", type=parseRate, metavar="RATE",
                   help="store everything on a disk that writes RATE bytes/s (e.g. 500M): a "
                   "RAM-backed ext4 held to that rate by the kernel's block I/O throttle, made "
                   "under --tmpdir for the run (needs root and about 3 x --size + 1 GiB of "
                   "free memory)")
    return p


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the services are stopped and the folder removed."""
    progress("terminated: stopping the services and removing the temporary folder")
    raise SystemExit(128 + signum)


def selectedWorkloads(options: argparse.Namespace, peers: list[str]) -> dict[str, Workload]:
    """
    The workloads to run, by key: W3 with C{--w3-files} uploads, and W1-W3
    with the routes of C{peers} added (L{PeersWorkload}).
    """
    selected: dict[str, Workload] = {}
    for key in options.workloads:
        workload = WORKLOADS[key]
        if key == "W3" and isinstance(workload, UploadWorkload):
            workload = copy.copy(workload)
            workload.count = options.w3_files
        if peers and key in PEER_WORKLOADS and isinstance(workload, UploadWorkload):
            workload = PeersWorkload(workload, peerRoutes(peers))
        selected[key] = workload
    return selected


def run(options: argparse.Namespace) -> int:
    """One benchmark run; the exit status."""
    peers, versions, skipped = [], {}, {}
    if options.peers:
        installed = installPeers(options.peers)
        peers, versions, skipped = installed.peers, installed.versions, installed.skipped
    workloads = selectedWorkloads(options, peers)
    with ExitStack() as disk:
        parent = options.tmpdir
        if options.disk_limit is not None:
            parent = disk.enter_context(
                limitedDisk(options.disk_limit, diskSize(options.size), options.tmpdir)
            )
            progress(f"storage: a RAM-backed ext4 that writes {options.disk_limit / 1e6:.0f} MB/s")
        return measure(options, workloads, parent, peers, versions, skipped)


def diskSize(size: int) -> int:
    """What a limited disk holds: the source, a run's files and a limit probe's file."""
    return 3 * size + (1 << 30)


def measure(
    options: argparse.Namespace,
    workloads: dict[str, Workload],
    parent: Path,
    peers: list[str],
    versions: dict[str, str],
    skipped: dict[str, str],
) -> int:
    """Measure C{workloads} with storage under C{parent}, and print the results."""
    workDir = Path(tempfile.mkdtemp(prefix="streamrelay-bench-", dir=parent))
    try:
        ctx = Context(workDir, options.runs, options.size)
        info = describe(workDir)
        if options.disk_limit is not None:
            info["filesystem"] += (f", a RAM-backed loop device whose writes are held to "
                                   f"{options.disk_limit / 1e6:.0f} MB/s (--disk-limit)")
        source, _ = ctx.source(options.size)
        limits = measureLimits(source, ctx.storage, options.runs, ctx.settle)
        measurements: list[Measurement] = []
        titles = []
        for key, workload in workloads.items():
            titles.append(f"{key}: {workload.title(ctx)}")
            progress(f"{titles[-1]}")
            measurements += workload.run(ctx)
        startup = uploaderStartup() if "W1" in options.workloads else None
        info["load_average_end"] = loadAverage()
    finally:
        shutil.rmtree(workDir, ignore_errors=True)

    errors = [e for m in measurements for e in m.errors]
    ours = [m for m in measurements if not isinstance(m.route, PeerRoute)]
    print()
    print("\n".join(machineLines(info)))
    print(f"runs per path: {options.runs} (median reported); MB/s = 10^6 bytes/s, "
          f"wall clock from client start to exit; limits measured on {sizeLabel(options.size)}")
    print("; ".join(titles))
    print("peak RSS = VmHWM of a service started fresh for that path, growth = over its idle "
          "RSS; CPU = its CPU time during the timed runs / their wall time (100% = one core)")
    print(settleLine(ctx.settles))
    print()
    print(resultsTable(measurements, limits))
    print()
    print("ratios (of medians; a machine limit at its best run):")
    for ratio in ratios(ours, limits):
        print(ratio.line())
    if options.peers:
        peerLines(measurements, versions, skipped)
    if startup is not None:
        print(f"\nstreamrelay-upload start-up (interpreter and imports, timed with --help): "
              f"{startup:.2f} s, included in its MB/s")
    for key, why in PLANNED.items():
        print(f"not measured yet: {key}, {why}")
    if errors:
        print(f"\n{len(errors)} ERROR(S):")
        for error in errors:
            print(f"  {error}")
    if options.json is not None:
        record = asJSON(info, {
            "size": options.size, "runs": options.runs, "workloads": options.workloads,
            "uploader_startup_s": startup, "w3_files": options.w3_files, "peers": options.peers,
        }, measurements, limits, errors)
        record["peers"] = {
            "versions": versions, "skipped": skipped,
            "ratios": [{"label": r.label, "value": r.value, "target": r.target}
                       for r in peerRatios(measurements)],
        }
        record["settle"] = [
            {"dirty_before_bytes": s.before, "dirty_after_bytes": s.dirty,
             "seconds": s.seconds, "settled": s.settled}
            for s in ctx.settles
        ]
        options.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nresults saved to {options.json}")
    return 1 if errors else 0


def peerLines(
    measurements: list[Measurement], versions: dict[str, str], skipped: dict[str, str]
) -> None:
    """The peers' table and streamrelay's ratios to them."""
    print()
    print("peers (median figures, run interleaved with streamrelay's routes above; every "
          "stored file re-read and its SHA-256 checked after each run; (!) = a run failed):")
    print(peersTable(measurements, versions))
    for peer, why in skipped.items():
        print(f"  {peer}: not run: {why}")
    print()
    print("streamrelay via its proxy / each peer at the same durability (ratios of medians):")
    for ratio in peerRatios(measurements):
        print(ratio.line())


def optionErrors(options: argparse.Namespace) -> list[str]:
    """What is wrong with options that each parse."""
    errors = []
    if options.runs < 1:
        errors.append("--runs must be at least 1")
    if options.peers and not set(options.workloads) & set(PEER_WORKLOADS):
        errors.append(f"--peers runs with {', '.join(PEER_WORKLOADS)}: name one in --workloads")
    if options.disk_limit is not None:
        why = unavailable()
        if why is not None:
            errors.append(f"--disk-limit {why}")
    return errors


def registerS3() -> None:
    """W1S3 (W1 with the S3 store) when an S3 server is at hand; else say why not."""
    w1s3, why = s3Workload("W1S3")
    if w1s3 is not None:
        WORKLOADS["W1S3"] = w1s3
    else:
        PLANNED["W1S3"] = why


def main(argv: Sequence[str] | None = None) -> int:
    registerS3()
    options = parser().parse_args(argv)
    for error in optionErrors(options):
        parser().error(error)
    signal.signal(signal.SIGTERM, _terminated)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
