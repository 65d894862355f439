"""
Which way of making a round of small new files durable, and their names,
is fastest on this machine's disk: the probe behind the group commit's
choice (streamrelay/store/groupcommit.py; docs/performance.md).

Each round writes C{--files} files of 1 MiB (with direct I/O, as the
backend writes uploads, or through the page cache with C{--buffered}),
then makes them durable and links each under its name in the folder, then
fsyncs the folder, one of four ways, interleaved round by round:

 - C{threads}: each file by itself in a pool of 16 threads (fsync, link,
   folder fsync): what the backend did before the group commit;
 - C{fsync}: one thread, one C{fsync} per file, then the links, one folder fsync;
 - C{fdatasync}: the same after starting every file's writeback at once;
 - C{parallel}: one C{fdatasync} per file, 8 at once, then the links and
   one folder fsync;
 - C{syncfs}: one C{syncfs(2)} of the file system, the links, one folder fsync.

With C{--writer} another thread writes a large file through the page cache
meanwhile (another upload, or another program): C{syncfs} then waits for
its bytes too.

    .venv/bin/python bench/syncways.py [--files 64] [--rounds 7] [--buffered]
        [--writer] [--tmpdir /tmp]
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MiB = 1 << 20
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong,
                                  ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2

#: (fd, its path in the partial folder)
File = tuple[int, Path]


def _fsyncFolder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link(folder: Path, files: list[File]) -> None:
    for fd, path in files:
        os.close(fd)
        os.link(path, folder / path.name)
        os.unlink(path)
    _fsyncFolder(folder)


def threads(folder: Path, files: list[File]) -> None:
    def one(file: File) -> None:
        fd, path = file
        os.fsync(fd)
        os.close(fd)
        os.link(path, folder / path.name)
        os.unlink(path)
        _fsyncFolder(folder)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, files))


def fsyncEach(folder: Path, files: list[File]) -> None:
    for fd, _ in files:
        os.fsync(fd)
    _link(folder, files)


def fdatasyncEach(folder: Path, files: list[File]) -> None:
    for fd, _ in files:
        _LIBC.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
    for fd, _ in files:
        os.fdatasync(fd)
    _link(folder, files)


_SYNCERS = ThreadPoolExecutor(8)


def fdatasyncParallel(folder: Path, files: list[File]) -> None:
    list(_SYNCERS.map(os.fdatasync, [fd for fd, _ in files]))
    _link(folder, files)


def syncfs(folder: Path, files: list[File]) -> None:
    if _LIBC.syncfs(files[0][0]) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    _link(folder, files)


WAYS: dict[str, Callable[[Path, list[File]], None]] = {
    "threads": threads, "fsync": fsyncEach, "fdatasync": fdatasyncEach,
    "parallel": fdatasyncParallel, "syncfs": syncfs,
}


def _writer(folder: Path, stop: threading.Event) -> None:
    """Write a file through the page cache over and over, never synced by itself."""
    block = os.urandom(MiB)
    path = folder / "big-writer"
    while not stop.is_set():
        with open(path, "wb") as f:
            for _ in range(512):
                if stop.is_set():
                    break
                f.write(block)
    path.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--buffered", action="store_true", help="write through the page cache")
    p.add_argument("--writer", action="store_true", help="a large file written meanwhile")
    p.add_argument("--tmpdir", default=tempfile.gettempdir())
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="syncways-", dir=args.tmpdir))
    partial = root / "partial"
    partial.mkdir()
    buffer = mmap.mmap(-1, MiB)
    buffer.write(os.urandom(MiB))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (0 if args.buffered else os.O_DIRECT)
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(root, stop))
    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    try:
        os.sync()
        if args.writer:
            writer.start()
            time.sleep(1)
        for turn in range(args.rounds):
            for name, way in WAYS.items():
                if not args.writer:
                    os.sync()
                files = []
                for i in range(args.files):
                    path = partial / f"{name}-{turn}-{i}"
                    fd = os.open(path, flags, 0o644)
                    os.write(fd, buffer)
                    files.append((fd, path))
                started = time.perf_counter()
                way(root, files)
                seconds[name].append(time.perf_counter() - started)
                for _, path in files:
                    (root / path.name).unlink()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.files} files of 1 MiB a round, {'page cache' if args.buffered else 'direct I/O'}"
          f"{', a large file written meanwhile' if args.writer else ''}; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(f"{name:10s} median {median * 1000:7.1f} ms a round ({args.files / median:6.0f} "
              f"files/s), min-max {min(runs) * 1000:.1f}-{max(runs) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
