"""
What uploads leave in a disk store's C{.partial/}: the files there other
than its lock and the store's spare files (empty files made ahead for the
next uploads, see L{streamrelay.store.spares}).
"""

from __future__ import annotations

from pathlib import Path

from streamrelay.store.disk import LOCK_FILE, DiskStore


def leftInPartial(store: DiskStore) -> list[Path]:
    """The files uploads of C{store} keep or left in its C{.partial/}."""
    spares = set(store.spares.paths())
    return sorted(
        p for p in store.partialDir.iterdir() if p.name != LOCK_FILE and p not in spares
    )
