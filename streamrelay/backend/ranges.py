"""
C{Range: bytes=…} requests (RFC 9110 section 14), single ranges only.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")

#: Longest Range header looked at; anything longer is refused unparsed.
MAX_RANGE_HEADER = 1024


class Unsatisfiable(Exception):
    """The range asks for no byte the representation has (416)."""


def parseRange(header: str | None, size: int) -> tuple[int, int] | None:
    """
    The byte range C{[start, end)} asked for by a C{Range} header value on a
    representation of C{size} bytes, or L{None} to send it whole (no header,
    another unit, or a header this parser ignores as RFC 9110 allows).

    @raise Unsatisfiable: a well-formed range that selects nothing, or
        several ranges (streamrelay serves one range at a time).
    """
    if header is None:
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise Unsatisfiable("The Range header is too long.")
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    if "," in spec:
        raise Unsatisfiable("Only one range can be asked for at a time.")
    match = _RANGE.match(spec)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable("The range selects no byte.")
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable(f"The range starts past the end ({size} bytes).")
    return start, min(end, size)
