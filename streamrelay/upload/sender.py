"""
Sending one file to streamrelay: streamed from disk, hashed on the way,
checked against the digest the server answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.internet.task import Cooperator
from twisted.web.client import FileBodyProducer
from zope.interface import implementer

from streamrelay.digests import HashingConsumer
from streamrelay.uris import URIForm, uriOf

#: Bytes read from disk at a time.
READ_SIZE = 1 << 20


#: Answers worth sending the file again for: the proxy or backend was
#: briefly unavailable or busy.
RETRYABLE_STATUS = frozenset({502, 503, 504})


class UploadFailed(Exception):
    """
    A file was not stored intact; the message says why, in one line.

    @ivar retryable: whether sending it again may succeed (connection
        errors, 502, 503, 504).
    @ivar retryAfter: seconds the server asked to wait, if it did.
    """

    def __init__(
        self, message: str, retryable: bool = False, retryAfter: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retryAfter = retryAfter


@dataclass(frozen=True)
class Stored:
    """What the server answered for a file stored intact."""

    name: str
    size: int
    sha256: str
    status: int
    answer: dict[str, Any]


@implementer(IConsumer)
class _Counting:
    """Reports each write's size to C{progress}, then passes it on."""

    def __init__(self, consumer: IConsumer, progress: Callable[[int], object]) -> None:
        self._consumer = consumer
        self._progress = progress

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._consumer.write(data)
        self._progress(len(data))


class FileSender(FileBodyProducer):
    """
    A file, from where it is positioned to its end, as a request body: read
    C{READ_SIZE} bytes at a time, hashed as it is sent (into C{sha256} when
    given, going on from bytes hashed before).
    """

    def __init__(
        self,
        inputFile: BinaryIO,
        progress: Callable[[int], object],
        cooperator: Cooperator | None = None,
        sha256: Any = None,
    ) -> None:
        kwargs: dict[str, Any] = {"readSize": READ_SIZE}
        if cooperator is not None:
            kwargs["cooperator"] = cooperator
        super().__init__(inputFile, **kwargs)
        self._progress = progress
        self._sha256 = sha256
        self._hashing: HashingConsumer | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._hashing = HashingConsumer(
            _Counting(consumer, self._progress), sha256=self._sha256
        )
        return super().startProducing(self._hashing)

    def sent(self) -> tuple[int, str]:
        """How many bytes went out, and their SHA-256."""
        assert self._hashing is not None
        return self._hashing.size, self._hashing.hexdigest()


def fileURL(base: str, name: str) -> URIForm:
    """C{base}'s URL of the file C{name} (C{base} checked by the command line)."""
    return uriOf(base.rstrip("/") + "/files/" + quote(name, safe=""))


async def sendFile(
    client: HTTPClient,
    base: str,
    path: str,
    name: str,
    progress: Callable[[int], object],
    headers: dict[bytes | str, list[bytes | str]] | None = None,
) -> Stored:
    """
    Upload the file at C{path} as C{name}; succeed only if the server
    stored exactly the bytes read.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the upload
    except OSError as e:
        raise UploadFailed(f"cannot read {path}: {e.strerror}") from None
    try:
        size = os.fstat(f.fileno()).st_size
        producer = FileSender(f, progress)
        try:
            response = await client.put(
                fileURL(base, name), data=producer, headers=headers, unbuffered=True
            )
            text = await response.text("utf-8")
        except Exception as e:
            raise UploadFailed(f"connection failed: {_describe(e)}", retryable=True) from None
    finally:
        f.close()
    if response.code not in (200, 201):
        raise answerFailed(response, text)
    answer = _json(text)
    sentSize, sentSHA = producer.sent()
    if sentSize != size:
        raise UploadFailed(f"the file changed while it was sent ({sentSize} of {size} bytes)")
    if answer.get("sha256") != sentSHA or answer.get("size") != sentSize:
        raise UploadFailed(
            f"the server stored other bytes (sha256 {answer.get('sha256')}, "
            f"sent {sentSHA})"
        )
    return Stored(name, sentSize, sentSHA, response.code, answer)


def answerFailed(
    response: Any, text: str, what: str = "", retryOn: frozenset[int] = RETRYABLE_STATUS
) -> UploadFailed:
    """
    The failure an error answer means: its status, JSON error code and
    message, after C{what} was being done; retryable for C{retryOn}, after
    its C{Retry-After}.
    """
    answer = _json(text)
    message = answer.get("message") or text.strip()[:200] or response.phrase
    code = answer.get("error", "")
    prefix = f"{what}: " if what else ""
    return UploadFailed(
        f"{prefix}HTTP {response.code} {code}: {message}".replace("  ", " "),
        retryable=response.code in retryOn,
        retryAfter=_retryAfter(response.headers.getRawHeaders(b"retry-after")),
    )


def _retryAfter(values: list[bytes] | None) -> float | None:
    if not values:
        return None
    try:
        return max(0.0, float(values[0]))
    except ValueError:
        return None


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(_describe(r.value) for r in reasons)
    return str(error) or type(error).__name__
