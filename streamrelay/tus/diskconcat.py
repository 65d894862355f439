"""
Concatenating partial uploads' files into a final upload's file (tus
concatenation, on disk): the bytes are copied by the kernel with
C{copy_file_range} (a reflink, so no copy at all, where the file system
shares extents: btrfs, XFS; a copy inside the kernel elsewhere), or with a
read and write loop where it cannot; then read back once to hash them, and
fsynced.  Blocking: the disk store runs it in a thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

#: Bytes asked of one C{copy_file_range}, read or hashed at a time.
COPY_SIZE = 64 << 20
READ_SIZE = 1 << 20

#: C{os.copy_file_range}, where the platform has it (tests replace it).
copyFileRange: Callable[[int, int, int, int, int], int] | None = getattr(
    os, "copy_file_range", None
)

#: What C{copy_file_range} fails with where it cannot copy these files
#: (across file systems on older kernels, file systems without it, seccomp).
_UNSUPPORTED = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM, errno.ETXTBSY}
)


def concatenateFiles(target: Path, sources: Sequence[tuple[Path, int]]) -> hashlib._Hash:
    """
    Make C{target} hold the first C{size} bytes of each C{(path, size)} of
    C{sources}, in order, durably; the SHA-256 state of what it holds.

    @raise OSError: a source holds fewer bytes than it should (C{EIO}), or
        the disk failed; C{target} is then left for its caller to remove.
    """
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        position = 0
        for path, size in sources:
            source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if os.fstat(source).st_size < size:
                    raise OSError(errno.EIO, f"{path.name} holds fewer bytes than its state counts")
                _copy(source, fd, size, position)
            finally:
                os.close(source)
            position += size
        digest = hashlib.sha256()
        _hash(fd, position, digest)
        os.fsync(fd)
        return digest
    finally:
        os.close(fd)


def _copy(source: int, target: int, size: int, at: int) -> None:
    done = 0
    if copyFileRange is not None:
        try:
            while done < size:
                copied = copyFileRange(source, target, min(COPY_SIZE, size - done), done, at + done)
                if copied == 0:
                    raise OSError(errno.EIO, "a partial upload's file ended early")
                done += copied
            return
        except OSError as e:
            if e.errno not in _UNSUPPORTED or done:
                raise
    while done < size:
        data = os.pread(source, min(READ_SIZE, size - done), done)
        if not data:
            raise OSError(errno.EIO, "a partial upload's file ended early")
        view = memoryview(data)
        while view:
            written = os.pwrite(target, view, at + done)
            view = view[written:]
            done += written


def _hash(fd: int, size: int, digest: hashlib._Hash) -> None:
    """Hash the C{size} bytes C{fd} holds: what was written, as the disk gives it back."""
    offset = 0
    while offset < size:
        data = os.pread(fd, min(READ_SIZE, size - offset), offset)
        if not data:
            raise OSError(errno.EIO, "the final upload's file ended early")
        digest.update(data)
        offset += len(data)
