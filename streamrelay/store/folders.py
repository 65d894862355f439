"""
The storage folder a disk store lives in, which may go away under a
running backend and come back: renamed or removed, unmounted and mounted
again, its dot-folders removed by a cleanup job.

While the folder is missing (or no longer the mount point it was) every
request that needs it is L{StorageUnavailable}, answered C{503}; it is
never made again in its place, where it would hide the real one or fill
the file system under a mount point.  Once it is back, the folders
streamrelay keeps in it are made again as they are needed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from streamrelay.store.interfaces import StorageUnavailable
from streamrelay.store.writer import storageError

#: Errors of a file operation under the storage folder that mean a folder
#: or file streamrelay made there was removed or replaced meanwhile.
_VANISHED = (errno.ENOENT, errno.ENOTDIR)


class StorageRoot:
    """
    The storage folder at C{path}; made at start-up when missing (with its
    parents), and remembered as a mount point if it is one then.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._mountPoint = os.path.ismount(path)

    def check(self) -> None:
        """
        Raise L{StorageUnavailable} unless the storage folder is there: a
        folder, and still a mount point if it was one at start-up.
        """
        try:
            st = os.stat(self.path)
        except OSError as e:
            if e.errno in _VANISHED:
                raise StorageUnavailable("the storage folder is missing") from None
            raise StorageUnavailable(
                f"the storage folder cannot be looked at ({e.strerror})"
            ) from e
        if not stat.S_ISDIR(st.st_mode):
            raise StorageUnavailable("the storage folder is not a folder")
        if self._mountPoint and not os.path.ismount(self.path):
            raise StorageUnavailable("nothing is mounted on the storage folder")

    def ensure(self, folder: Path) -> bool:
        """
        Check the storage folder (see L{check}), and make C{folder}, one of
        streamrelay's own folders directly in it, if it is missing: whether
        it was made.
        """
        self.check()
        if folder == self.path or os.path.isdir(folder):
            return False
        try:
            os.mkdir(folder)
        except FileExistsError:
            return False
        except OSError as e:
            raise self.failure(e) from e
        return True

    def failure(self, error: BaseException) -> BaseException:
        """
        The error a failed file operation under the storage folder is
        reported as: L{StorageUnavailable} when the folder went away, or
        what streamrelay made in it vanished; else as L{storageError} says.
        """
        if isinstance(error, StorageUnavailable):
            return error
        try:
            self.check()
        except StorageUnavailable as e:
            return e
        if isinstance(error, OSError) and error.errno in _VANISHED:
            return StorageUnavailable("a file in use was removed from the storage")
        return storageError(error)
