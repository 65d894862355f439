"""
What the IETF resumable upload tests send on raw sockets, per interop
version: the creation's head (a plain C{PUT} made resumable), the append's
head, and the headers a version puts in its answers.
"""

from __future__ import annotations

import re
import socket
from typing import Protocol

from tests.rawhttp import RawResponse, ResponseReader


class _Answer(Protocol):
    headers: dict[bytes, bytes]

#: The interop versions streamrelay speaks.
VERSIONS = (3, 5, 6, 8)

_APPEND = re.compile(
    rb"rufh append request_id=\S+ upload=(\w+) version=(\d+) offset=(\d+) kept=(\d+) "
    rb"outcome=(\w+)\n"
)


def appends(output: bytes, upload: bytes | None = None) -> list[tuple[int, int, str]]:
    """The appends a backend logged (to C{upload}'s id): (offset, kept, outcome)."""
    return [(int(m.group(3)), int(m.group(4)), m.group(5).decode())
            for m in _APPEND.finditer(output) if upload in (None, m.group(1))]


def completeHeader(version: int, complete: bool) -> bytes:
    """The version's completeness header saying C{complete}."""
    if version == 3:
        return b"Upload-Incomplete: " + (b"?0" if complete else b"?1")
    return b"Upload-Complete: " + (b"?1" if complete else b"?0")


def completeIn(version: int, response: _Answer) -> bool | None:
    """What an answer says of completeness, in the version's header."""
    if version == 3:
        value = response.headers.get(b"upload-incomplete")
        return None if value is None else value == b"?0"
    value = response.headers.get(b"upload-complete")
    return None if value is None else value == b"?1"


def request(method: bytes, target: bytes, *headers: bytes) -> bytes:
    # Closed after the answer: a 204 (or a HEAD's answer) has no body, and
    # ResponseReader reads one without Content-Length up to the close.
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def creation(version: int | None, name: str, size: int, *extra: bytes) -> bytes:
    """C{PUT /files/NAME} of C{size} bytes, announcing C{version} (if any)."""
    headers = [b"Content-Length: %d" % (size,), *extra]
    if version is not None:
        headers += [b"Upload-Draft-Interop-Version: %d" % (version,),
                    completeHeader(version, True)]
    return request(b"PUT", b"/files/" + name.encode(), *headers)


def append(version: int, url: bytes, offset: int, size: int, complete: bool = True) -> bytes:
    headers = [b"Upload-Draft-Interop-Version: %d" % (version,),
               b"Upload-Offset: %d" % (offset,), b"Content-Length: %d" % (size,),
               completeHeader(version, complete)]
    if version >= 6:
        headers.append(b"Content-Type: application/partial-upload")
    return request(b"PATCH", url, *headers)


def query(method: bytes, version: int, url: bytes) -> bytes:
    return request(method, url, b"Upload-Draft-Interop-Version: %d" % (version,))


def createAndCut(port: int, head: bytes, body: bytes, cut: int) -> RawResponse:
    """
    Send C{head}, read the 104, send C{cut} bytes of C{body}, and drop
    the connection; the 104.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        interim = ResponseReader(sock).next()
        if interim.status == 104:
            sock.sendall(body[:cut])
        return interim


def exchangeAll(port: int, data: bytes) -> list[RawResponse]:
    """Send C{data}; every response up to the final one."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        return ResponseReader(sock).untilFinal()


def firstResponse(port: int, head: bytes, body: bytes) -> tuple[RawResponse, list[RawResponse]]:
    """Send C{head}, read one response, then send C{body}; the rest up to the final one."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        reader = ResponseReader(sock)
        first = reader.next()
        if first.status >= 200:
            return first, []
        sock.sendall(body)
        return first, reader.untilFinal()
