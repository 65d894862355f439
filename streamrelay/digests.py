"""
SHA-256 digests as HTTP carries them (RFC 9530) and as a consumer computes them.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IConsumer, IProducer
from zope.interface import implementer

from streamrelay.store.interfaces import ISpliceTarget

if TYPE_CHECKING:
    from streamrelay.splicing import FileTarget

#: A dictionary member's key, and the C{=} before its value if it has one.
_MEMBER_KEY = re.compile(r"\s*([^=;,\s]*)\s*(=?)\s*")
#: A sha-256 member's value: a byte sequence, then nothing or parameters.
_SHA256_VALUE = re.compile(r":([A-Za-z0-9+/]*={0,2}):\s*(?:;.*)?", re.DOTALL)


def reprDigest(sha256hex: str) -> bytes:
    """The C{Repr-Digest} / C{Content-Digest} value for a hex SHA-256."""
    return b"sha-256=:" + base64.b64encode(bytes.fromhex(sha256hex)) + b":"


def _members(value: str) -> list[str]:
    """
    The members of a structured dictionary field (RFC 8941), split at the
    commas outside quoted strings (which a parameter may hold).
    """
    members: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == ",":
            members.append(value[start:i])
            start = i + 1
    if quoted:
        # It could hide a sha-256 member behind it.
        raise ValueError("a quoted string is not closed")
    members.append(value[start:])
    return members


def parseSHA256Digest(value: str) -> str | None:
    """
    The hex SHA-256 named in a C{Content-Digest} field value, L{None} when it
    names none; L{ValueError} when the sha-256 member is malformed.

    Other algorithms' members and every member's parameters are ignored
    (RFC 9530), but a sha-256 member is never: one that is not a byte
    sequence of 32 bytes (C{sha-256=:!!!:}, C{sha-256=<base64>}, a bare
    C{sha-256}, C{SHA-256=...}), or two that disagree, are an error, so
    that a check the client asked for is never skipped.
    """
    found: set[str] = set()
    for member in _members(value):
        key = _MEMBER_KEY.match(member)
        assert key is not None  # it matches any text
        if key.group(1).lower() != "sha-256":
            continue
        if key.group(1) != "sha-256" or not key.group(2):
            raise ValueError(f"a malformed sha-256 member: {member.strip()!r}")
        item = _SHA256_VALUE.fullmatch(member, key.end())
        if item is None:
            raise ValueError(f"a sha-256 digest is ':<base64>:', not {member.strip()!r}")
        encoded = item.group(1)
        # RFC 8941 byte sequences may leave out the "=" padding.
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        if len(raw) != 32:
            raise ValueError("a sha-256 digest has 32 bytes")
        found.add(raw.hex())
    if len(found) > 1:
        raise ValueError("two different sha-256 digests")
    return found.pop() if found else None


#: Bytes read at a time by L{hashFilePrefix}.
HASH_READ_SIZE = 1 << 20


def hashFilePrefix(path: str | os.PathLike[str], size: int) -> Any:
    """
    (Blocking: for a thread.)  The SHA-256 state of the first C{size}
    bytes of the file at C{path}, to go on hashing what follows;
    C{OSError(EIO)} when the file holds fewer.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            data = f.read(min(HASH_READ_SIZE, left))
            if not data:
                raise OSError(errno.EIO, f"{os.fspath(path)} holds fewer than {size} bytes")
            digest.update(data)
            left -= len(data)
    return digest


@implementer(ISpliceTarget)
class HashingConsumer:
    """
    Passes bytes on to C{consumer}, hashing and counting them; raises
    C{tooLarge()} from C{write} once more than C{limit} bytes went by.

    @param sha256: a SHA-256 to go on with (bytes hashed earlier, such as
        the part of a file a server already holds); a new one by default.
    """

    def __init__(
        self,
        consumer: IConsumer,
        limit: int | None = None,
        tooLarge: type[Exception] | None = None,
        sha256: Any = None,
    ) -> None:
        self._consumer = consumer
        self._limit = limit
        self._tooLarge = tooLarge or ValueError
        self._sha256 = sha256 if sha256 is not None else hashlib.sha256()
        self.size = 0

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._count(data)
        self._consumer.write(data)

    # The file the consumer offers, if it is an ISpliceTarget

    def fileTarget(self) -> FileTarget | None:
        if not ISpliceTarget.providedBy(self._consumer):
            return None
        return ISpliceTarget(self._consumer).fileTarget()

    def wroteToFile(self, data: memoryview) -> None:
        self._count(data)
        ISpliceTarget(self._consumer).wroteToFile(data)

    def _count(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._limit is not None and self.size > self._limit:
            raise self._tooLarge(self._limit)
        self._sha256.update(data)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()
