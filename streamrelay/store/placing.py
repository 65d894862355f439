"""
Putting a written file in place in a storage folder, as the disk store
and the resumable uploads kept beside it both do: flushed, its SHA-256 in
an extended attribute, then linked under a free name (so "only if new" is
one atomic step) or renamed over an older version, and the folder fsynced;
a revocable placement keeps the older version aside to be put back.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamrelay.store.diskmeta import keepMetadata
from streamrelay.store.interfaces import NameTaken, NotAFile
from streamrelay.store.writer import dropCached

SHA256_XATTR = "user.streamrelay.sha256"


@dataclass(frozen=True)
class Published:
    """A version put in place, and what it replaced."""

    modified: float
    replaced: bool
    #: (st_dev, st_ino): whether the name still holds this version.
    inode: tuple[int, int]
    #: Where the version replaced is kept aside, for a revocable commit.
    kept: Path | None


#: Errors of link() where the file system keeps no hard links.
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def flushFile(fd: int) -> os.stat_result:
    """(In a thread.) Flush a written file to the disk and close it; its status."""
    try:
        os.fsync(fd)
        dropCached(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def publishFile(
    file: int | os.stat_result,
    partial: Path,
    target: Path,
    sha256: str,
    replace: bool,
    keep: Path | None,
    metadata: Mapping[str, str] | None = None,
) -> Published:
    """
    (In a thread.) Flush the file and close it (given open; given by its
    status, L{flushFile} did already), keep its digest and metadata with
    it, and put it in place (see L{placeFile}); fsync the folder so that
    survives a crash.
    """
    st = flushFile(file) if isinstance(file, int) else file
    published = placeFlushed(st, partial, target, sha256, replace, keep, metadata)
    fsyncFolder(target.parent)
    return published


def placeFlushed(
    st: os.stat_result | None,
    partial: Path,
    target: Path,
    sha256: str,
    replace: bool,
    keep: Path | None,
    metadata: Mapping[str, str] | None = None,
) -> Published:
    """
    (In a thread, once the file's bytes are durable; C{st} its status.)
    Keep its digest and metadata with it and put it in place (see
    L{placeFile}); the caller fsyncs the folder (a group commit, once for
    many files) before telling anyone.
    """
    assert st is not None
    setSHA256(partial, sha256)
    keepMetadata(partial, target.parent, target.name, metadata)
    replaced, kept = placeFile(partial, target, replace, keep)
    return Published(st.st_mtime, replaced, (st.st_dev, st.st_ino), kept)


#: Held while a file is put in place or taken back: each of those is a few
#: steps (check, keep aside, rename), and another upload's steps between
#: them would be lost or undone.
_PLACING = threading.Lock()


def placeFile(
    partial: Path, target: Path, replace: bool = True, keep: Path | None = None
) -> tuple[bool, Path | None]:
    with _PLACING:
        return _placeFile(partial, target, replace, keep)


def _placeFile(
    partial: Path, target: Path, replace: bool, keep: Path | None
) -> tuple[bool, Path | None]:
    """
    (In a thread.) Move C{partial} to C{target}: whether it replaced a
    file there, and where that file is kept aside (at C{keep}, when given
    and the file system keeps hard links).

    A free name is taken by linking, which fails when the name is taken
    meanwhile: with C{replace} false, that is L{NameTaken}, in one atomic
    step.  A taken name is replaced by an atomic rename.  A folder at the
    name is L{NotAFile}.  On failure, C{partial} is left for the caller.
    """
    name = target.name
    try:
        os.link(partial, target, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        return _placeWithoutLinks(partial, target, replace), None
    else:
        os.unlink(partial)
        return False, None
    if isFolder(target):
        raise NotAFile(name)
    if not replace:
        raise NameTaken(name)
    kept = _keepAside(target, keep) if keep is not None else None
    try:
        os.replace(partial, target)
    except BaseException as e:
        if kept is not None:
            kept.unlink(missing_ok=True)
        if isinstance(e, IsADirectoryError):
            raise NotAFile(name) from e
        raise
    # A rename between two links of one file does nothing: so it goes when
    # publishing again what a crash stopped between link and unlink.
    partial.unlink(missing_ok=True)
    return True, kept


def _placeWithoutLinks(partial: Path, target: Path, replace: bool) -> bool:
    """
    Where the file system keeps no hard links, the check that the name is
    free and the rename are two steps: the best it allows.
    """
    if isFolder(target):
        raise NotAFile(target.name)
    existed = os.path.lexists(target)
    if existed and not replace:
        raise NameTaken(target.name)
    try:
        os.replace(partial, target)
    except IsADirectoryError as e:
        raise NotAFile(target.name) from e
    return existed


def _keepAside(target: Path, keep: Path) -> Path | None:
    """
    A second name for the version at C{target}, so that it can be put back;
    L{None} if it is gone, or the file system keeps no hard links (then it
    cannot be put back).
    """
    try:
        os.link(target, keep, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in _NO_LINKS:
            return None
        raise
    return keep


def revokeFile(target: Path, published: Published) -> None:
    """
    (In a thread.) Take back a published version, if the name still holds
    it: put back the version it replaced, or free the name.
    """
    takeBack(target, published)
    fsyncFolder(target.parent)


def takeBack(target: Path, published: Published) -> None:
    """L{revokeFile} without the folder's fsync (the caller's to do)."""
    with _PLACING:
        _takeBack(target, published)


def _takeBack(target: Path, published: Published) -> None:
    try:
        st = os.lstat(target)
        ours = (st.st_dev, st.st_ino) == published.inode
    except FileNotFoundError:
        ours = False
    if ours:
        if published.kept is not None:
            os.replace(published.kept, target)
        elif not published.replaced:
            os.unlink(target)
        # else the version replaced could not be kept: the new one stays.
    if published.kept is not None:
        published.kept.unlink(missing_ok=True)


def isFolder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def fsyncFolder(folder: Path) -> None:
    """(Blocking.) fsync a folder, so that renames and links in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def setSHA256(file: int | Path, sha256: str) -> None:
    try:
        os.setxattr(file, SHA256_XATTR, sha256.encode("ascii"))
    except OSError:
        # The file system keeps no extended attributes: the digest is
        # computed again when asked for.
        pass


def getSHA256(fd: int) -> str:
    """
    The SHA-256 kept with an open file; computed (and then kept) for a file
    placed in the folder by other means.
    """
    try:
        return os.getxattr(fd, SHA256_XATTR).decode("ascii")
    except OSError:
        pass
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    sha256 = digest.hexdigest()
    setSHA256(fd, sha256)
    return sha256



def publishByRename(
    part: Path, target: Path, sha256: str, metadata: Mapping[str, str] | None = None
) -> tuple[float, bool]:
    """
    (In a thread.) Publish a file written elsewhere on the same file system
    (a resumable upload's bytes) as the disk store publishes an upload: the
    digest and metadata go with the file, which is put in place under its name with
    L{placeFile} (so whether it replaced a file is known, not guessed, and a
    folder at the name is L{NotAFile}); both folders are synced so the move
    survives a crash.  Its time, and whether it replaced a file.
    """
    fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setSHA256(fd, sha256)
        os.fsync(fd)
        modified = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    keepMetadata(part, target.parent, target.name, metadata)
    replaced, _ = placeFile(part, target)
    fsyncFolder(target.parent)
    fsyncFolder(part.parent)
    return modified, replaced


def openToPublish(part: Path, sha256: str) -> int:
    """
    (In a thread.) Open a file written elsewhere on the same file system (a
    resumable upload's bytes) to hand it to a group commit, its digest kept
    with it: the group commit syncs and closes it, then
    L{placeRenamed} puts it in place.
    """
    fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setSHA256(fd, sha256)
    except BaseException:
        os.close(fd)
        raise
    return fd


def placeRenamed(
    st: os.stat_result | None,
    part: Path,
    target: Path,
    metadata: Mapping[str, str] | None = None,
) -> tuple[float, bool]:
    """
    (In a thread, once the file opened by L{openToPublish} is durable; C{st}
    its status.)  Put it in place as L{publishByRename} does, but leave
    fsyncing both folders to the caller.  Its time, and whether it replaced
    a file.
    """
    assert st is not None
    keepMetadata(part, target.parent, target.name, metadata)
    replaced, _ = placeFile(part, target)
    return st.st_mtime, replaced
