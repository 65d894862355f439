"""
Ids that no other streamrelay process makes, made without asking the
kernel for randomness each time: this process's random 64 bits, then a
count, as 32 hex digits (the length of a random UUID's).

A repeat needs two processes (backends and proxies, or one's runs) to draw
the same 64 random bits.  A random UUID per id asked the kernel for 16
bytes (a system call that lets go of the interpreter lock): about 1 % of
the proxy's and the backend's CPU for uploads of 1 MiB.  The ids are for
finding things in logs and events, not secrets: the next one is easy to
guess.
"""

from __future__ import annotations

import itertools
import os
import secrets

__all__ = ["newId"]


def _fresh() -> None:
    global _PROCESS, _COUNT
    _PROCESS = secrets.token_hex(8)
    _COUNT = itertools.count(1)


_PROCESS = ""
_COUNT = itertools.count(1)
_fresh()
# A forked child draws its own bits: it would otherwise repeat its parent's ids.
os.register_at_fork(after_in_child=_fresh)


def newId() -> str:
    """A new id: 32 hex digits, never the same twice."""
    return f"{_PROCESS}{next(_COUNT):016x}"
