"""The SHA-256 the tests expect of bytes, as streamrelay reports it (hex)."""

from __future__ import annotations

import hashlib


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
