"""
How the C library hands out memory to a process that streams.

Every read of a streamed body is a new buffer of up to 1 MiB.  With
glibc's defaults such buffers are mapped and unmapped, or the top of the
heap is given back and taken again, over and over: each time the kernel
maps fresh zeroed pages and takes a page fault per 4 KiB on first touch.
Measured on a 1 GiB upload through the proxy: 50,000-90,000 page faults
per GiB in each service, and about a third of the backend's system time.
Keeping buffers of this size on the heap, and keeping freed heap for the
next buffer, removes nearly all of them.  Memory in use is unchanged; what
is kept is at most L{TRIM_THRESHOLD} of free heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations up to this size come from the heap rather than mmap.
MMAP_THRESHOLD = 8 << 20
#: Free heap kept for reuse before it is given back to the system.
TRIM_THRESHOLD = 32 << 20


def tuneMalloc() -> bool:
    """
    Set glibc's thresholds for this process; whether it could (other C
    libraries have no C{mallopt} and are left as they are).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
