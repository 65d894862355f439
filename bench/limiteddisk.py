"""
C{make bench --disk-limit 500M}: an ordinary disk on any machine, to see
streamrelay where the disk, not the CPU, is the bound.

A disk's write speed differs from one machine to the next, and on a shared
virtual machine from one minute to the next (here: 430 to 1,300 MB/s for
the same 2 GiB written and synced, minutes apart).  This makes a disk that
writes at one known rate: an ext4 file system on a loop device whose image
lies in RAM (a tmpfs), its writes held to C{rate} bytes/s by the kernel's
block I/O throttle (cgroup v1 C{blkio.throttle.write_bps_device} of the
root group, which also holds the kernel's writeback of the page cache).
Reads are not held: a file just written is read back from the page cache
anyway.  Every relay in the run writes to it, so their ratios stay fair.

Needs root, C{losetup} and C{mkfs.ext4} (util-linux, e2fsprogs), the loop
driver, and cgroup v1's blkio controller; says which is missing otherwise.
Everything made is taken down at the end, also after Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

__all__ = ["THROTTLE", "limitedDisk", "unavailable"]

THROTTLE = Path("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device")
GiB = 1 << 30


def unavailable() -> str | None:
    """Why a limited disk cannot be made here; None if it can."""
    if os.geteuid() != 0:
        return "needs root (a loop device and the kernel's block I/O throttle)"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux, e2fsprogs)"
    if not THROTTLE.exists():
        return f"needs cgroup v1's blkio controller ({THROTTLE} is missing)"
    if not Path("/dev/loop-control").exists():
        return "needs the loop driver (/dev/loop-control is missing)"
    return None


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def _available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _throttle(device: str, rate: int) -> None:
    THROTTLE.write_text(f"{device} {rate}\n")


@contextmanager
def limitedDisk(rate: int, size: int, parent: Path) -> Iterator[Path]:
    """
    A folder under C{parent} on a fresh file system of C{size} bytes that
    takes writes at C{rate} bytes/s; taken down when the block ends.
    """
    why = unavailable()
    if why is not None:
        raise RuntimeError(f"--disk-limit {why}")
    if size + GiB > _available():
        raise RuntimeError(
            f"--disk-limit needs {(size + GiB) / GiB:.1f} GiB of free memory for its "
            f"RAM-backed disk; {_available() / GiB:.1f} GiB available (a smaller --size helps)"
        )
    with ExitStack() as stack:
        top = Path(tempfile.mkdtemp(prefix="streamrelay-disk-", dir=parent.resolve()))
        stack.callback(top.rmdir)
        ram, mounted = top / "ram", top / "disk"
        ram.mkdir()
        stack.callback(ram.rmdir)
        mounted.mkdir()
        stack.callback(mounted.rmdir)
        _run("mount", "-t", "tmpfs", "-o", f"size={size + (64 << 20)}", "tmpfs", str(ram))
        stack.callback(_run, "umount", str(ram))
        image = ram / "image"
        with open(image, "wb") as f:
            f.truncate(size)
        loop = _run("losetup", "--direct-io=on", "--find", "--show", str(image))
        stack.callback(_run, "losetup", "--detach", loop)
        device = Path(f"/sys/block/{Path(loop).name}/dev").read_text().strip()
        _run("mkfs.ext4", "-q", "-E", "nodiscard", loop)
        # (discard: a deleted file gives its memory back to the tmpfs)
        _run("mount", "-o", "discard", loop, str(mounted))
        stack.callback(_run, "umount", str(mounted))
        _throttle(device, rate)
        stack.callback(_throttle, device, 0)
        yield mounted
