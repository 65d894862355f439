"""
Tuning the TCP transports that carry bodies: how much they read at once
(shared among the bodies streaming at once) and how much they send.
"""

from __future__ import annotations

from streamrelay.streaming.internals import (
    connectionUnder,
    hasSendLimit,
    sendEagerly,
    setSendLimit,
)

__all__ = [
    "BODY_READ_BUDGET",
    "HEADER_READ_SIZE",
    "MIN_STREAM_BUFFER_SIZE",
    "STREAM_BUFFER_SIZE",
    "readSize",
    "sendEagerly",
    "tuneForStreaming",
    "tuneUpstreamBody",
]

#: Read size (and write high-water mark) of a connection streaming a body:
#: 1 MiB while few bodies stream, shrinking so that all of them together
#: read at most about BODY_READ_BUDGET at once.
STREAM_BUFFER_SIZE = 1 << 20
MIN_STREAM_BUFFER_SIZE = 32 << 10
#: Read size of a connection between bodies (Twisted's own): the read that
#: brings the next request's headers holds at most this much of its body
#: until a route starts consuming it.
HEADER_READ_SIZE = 64 << 10
BODY_READ_BUDGET = 16 << 20


def tuneForStreaming(transport: object, readSize: int = STREAM_BUFFER_SIZE) -> None:
    """
    Let a TCP transport read C{readSize} bytes at a time (also its write
    high-water mark) and send up to 1 MiB per system call instead of
    Twisted's 128 KiB, for connections that carry large bodies.
    """
    if transport is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = readSize
        setSendLimit(transport, STREAM_BUFFER_SIZE)


def readSize(streaming: int) -> int:
    """The read size of one of C{streaming} bodies streaming at once."""
    share = BODY_READ_BUDGET // max(1, streaming)
    return max(MIN_STREAM_BUFFER_SIZE, min(STREAM_BUFFER_SIZE, share))


def tuneUpstreamBody(consumer: object) -> None:
    """
    For a body producer that Twisted's HTTP client consumes: let the
    connection under C{consumer} send up to 1 MiB per system call (instead
    of 128 KiB, one call per pass of the reactor) and each chunk at once
    while nothing waits in its buffer.  Its write high-water mark stays
    small, so many uploads at once hold little memory.  A connection that
    is not plain TCP is left alone.
    """
    inner = connectionUnder(consumer)
    if hasSendLimit(inner):
        setSendLimit(inner, STREAM_BUFFER_SIZE)
        sendEagerly(inner)
