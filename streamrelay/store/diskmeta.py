"""
A disk file's metadata (see L{streamrelay.store.metadata}): kept in the
extended attribute C{user.streamrelay.metadata} of the file, set on the
written file before it is put in place, so a published file always has
its own metadata and a new version never has the old one's.

Where the file system refuses extended attributes (or one this large),
the metadata goes to a sidecar, C{<root>/.metadata/<name>}, written (and
fsynced) before the file is put in place.  A sidecar names the version it
belongs to (device, inode, size, modification time): one left by an older
version, or by a version replaced by a file without metadata, is ignored.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from streamrelay.store.metadata import decode, encode

XATTR = "user.streamrelay.metadata"
#: Under the storage folder; a dot-name, so no file can take it.
SIDECAR_DIR = ".metadata"

#: How setxattr is called (tests stand in a file system without them).
setxattr = os.setxattr


def _version(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def keepMetadata(
    file: Path, root: Path, name: str, metadata: Mapping[str, str] | None
) -> None:
    """
    (Blocking, before C{file} is put in place as C{root/name}.)  Keep
    C{metadata} with the file: in its extended attribute, else a sidecar.
    """
    if not metadata:
        return
    data = encode(metadata)
    try:
        setxattr(file, XATTR, data)
        return
    except OSError:
        pass
    st = os.stat(file)
    folder = root / SIDECAR_DIR
    folder.mkdir(exist_ok=True)
    record = json.dumps({"version": _version(st), "metadata": dict(metadata)}).encode("utf-8")
    tmp = folder / f".{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)
    dirFd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirFd)
    finally:
        os.close(dirFd)


def readMetadata(fd: int, root: Path | None, name: str) -> dict[str, str] | None:
    """The metadata of the open file C{fd} (called C{name} under C{root})."""
    try:
        return decode(os.getxattr(fd, XATTR))
    except OSError as e:
        if root is None or e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
    try:
        record = json.loads((root / SIDECAR_DIR / name).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != _version(os.fstat(fd)):
        return None
    return decode(json.dumps(record.get("metadata")))


def forgetMetadata(root: Path, name: str) -> None:
    """(Blocking.) Remove the sidecar of a deleted file, if any."""
    try:
        os.unlink(root / SIDECAR_DIR / name)
    except OSError:
        pass
