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
        [--workloads W1,W2,W3,W4] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from clients import uploaderStartup
from machine import describe, loadAverage, measureLimits
from report import asJSON, machineLines, ratios, resultsTable, settleLine
from s3 import workload as s3Workload
from workloads import PLANNED, WORKLOADS, Context, Measurement, progress, sizeLabel

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
    p.add_argument("--json", type=Path, metavar="FILE", help="also save the results as JSON")
    p.add_argument("--tmpdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary storage folder goes (default %(default)s)")
    return p


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the services are stopped and the folder removed."""
    progress("terminated: stopping the services and removing the temporary folder")
    raise SystemExit(128 + signum)


def run(options: argparse.Namespace) -> int:
    """One benchmark run; the exit status."""
    workDir = Path(tempfile.mkdtemp(prefix="streamrelay-bench-", dir=options.tmpdir))
    try:
        ctx = Context(workDir, options.runs, options.size)
        info = describe(workDir)
        source, _ = ctx.source(options.size)
        limits = measureLimits(source, ctx.storage, options.runs, ctx.settle)
        measurements: list[Measurement] = []
        titles = []
        for key in options.workloads:
            workload = WORKLOADS[key]
            titles.append(f"{key}: {workload.title(ctx)}")
            progress(f"{titles[-1]}")
            measurements += workload.run(ctx)
        startup = uploaderStartup() if "W1" in options.workloads else None
        info["load_average_end"] = loadAverage()
    finally:
        shutil.rmtree(workDir, ignore_errors=True)

    errors = [e for m in measurements for e in m.errors]
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
    for ratio in ratios(measurements, limits):
        print(ratio.line())
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
            "uploader_startup_s": startup,
        }, measurements, limits, errors)
        record["settle"] = [
            {"dirty_before_bytes": s.before, "dirty_after_bytes": s.dirty,
             "seconds": s.seconds, "settled": s.settled}
            for s in ctx.settles
        ]
        options.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nresults saved to {options.json}")
    return 1 if errors else 0


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
    if options.runs < 1:
        parser().error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, _terminated)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
