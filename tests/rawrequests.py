"""
Raw HTTP/1.1 requests, as bytes, for the in-memory connections of
L{tests.httpfakes}: uploads (whole or chunked), forms, downloads, and the
requests of the tus protocol.
"""

from __future__ import annotations

import base64


def put(path: bytes, body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return (
        b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (len(body),)
        + extra + b"\r\n" + body
    )


def chunkedHead(path: bytes) -> bytes:
    return b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % (len(data),) + data + b"\r\n"


BOUNDARY = b"----streamrelayBoundary7MA4YWxk"


def form(*parts: tuple[bytes, bytes | None, bytes]) -> bytes:
    """A multipart body of (field, filename or None, content) parts."""
    out = b""
    for field, filename, content in parts:
        disposition = b'form-data; name="' + field + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        out += (
            b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition
            + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
        )
    return out + b"--" + BOUNDARY + b"--\r\n"


def post(body: bytes, contentType: bytes | None = None) -> bytes:
    ctype = contentType or b"multipart/form-data; boundary=" + BOUNDARY
    return (
        b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype
        + b"\r\nContent-Length: %d\r\n\r\n" % (len(body),) + body
    )


def get(path: bytes, *headers: bytes, method: bytes = b"GET") -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


TUS = b"Tus-Resumable: 1.0.0"
OCTETS = b"Content-Type: application/offset+octet-stream"
#: What asks C{GET /uploads/{id}} for the upload's JSON rather than its file.
JSON = b"Accept: application/json"


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def meta(name: str, **more: str) -> bytes:
    pairs = [f"filename {b64(name)}"] + [f"{k} {b64(v)}" for k, v in more.items()]
    return b"Upload-Metadata: " + ",".join(pairs).encode("ascii")


def req(method: bytes, path: bytes, *headers: bytes, body: bytes | None = None) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: x", *headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % (len(body),))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def patch(path: bytes, offset: int, body: bytes, *headers: bytes) -> bytes:
    return req(b"PATCH", path, TUS, OCTETS, b"Upload-Offset: %d" % (offset,), *headers,
               body=body)
