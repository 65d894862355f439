"""
Keys and signed URLs for the tests of signed upload URLs.
"""

from __future__ import annotations

from pathlib import Path

SECRET1 = b"k1-secret-0123456789abcdef"
SECRET2 = b"k2-secret-fedcba9876543210"
#: A keys file holding k1 and k2.
KEYS = b"# grant keys\nk1 " + SECRET1 + b"\n\nk2 " + SECRET2 + b"\n"


def writeKeys(path: Path, data: bytes = KEYS) -> Path:
    path.write_bytes(data)
    return path
