"""
Where uploads are kept: the store seam and its implementations.
"""

from streamrelay.store.interfaces import (
    FileInfo,
    IUpload,
    IUploadStore,
    StorageFull,
)

__all__ = ["FileInfo", "IUpload", "IUploadStore", "StorageFull"]
