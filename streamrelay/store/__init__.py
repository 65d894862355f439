"""
Where uploads are kept: the store seam (L{streamrelay.store.interfaces})
and its implementations, a folder (C{disk}, with C{placing} putting files
in place and C{diskfile} reading them, over C{writer} and C{direct}) and
S3 (C{s3}).
"""

from streamrelay.store.interfaces import (
    FileInfo,
    IStoredFile,
    IUpload,
    IUploadStore,
    StorageFull,
    StorageUnavailable,
)

__all__ = [
    "FileInfo", "IStoredFile", "IUpload", "IUploadStore", "StorageFull", "StorageUnavailable",
]
