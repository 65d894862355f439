"""
Where uploads are kept: the store seam and its implementations.
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
