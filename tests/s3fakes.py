"""
Fakes of the S3 store's collaborators: an S3 client (L{IS3Client}) whose
calls the test answers by hand, and a body producer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface import implementer

from streamrelay.store.s3.client import ObjectHead, Versioned
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import ObjectPage, UploadPage
from streamrelay.store.s3.signing import syncSHA256


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    result: Deferred[Any]
    cancelled: bool = False


@implementer(IS3Client)
class FakeS3:
    """Stands in for L{S3Client}: each operation waits for the test's answer."""

    bucket = "b"
    endpoint = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.clock = Clock()
        self.calls: list[Call] = []
        self.payloadHash = syncSHA256

    def _call(self, name: str, *args: Any) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            call.cancelled = True

        call = Call(name, args, Deferred(cancel))
        self.calls.append(call)
        return call.result

    # IS3Client: each operation is recorded with its arguments, in order.

    def bucketReachable(self) -> Deferred[None]:
        return self._call("bucketReachable")

    def head(self, key: str) -> Deferred[ObjectHead | None]:
        return self._call("head", key)

    def read(self, key: str) -> Deferred[bytes | None]:
        return self._call("read", key)

    def get(self, key: str, start: int, end: int, etag: str | None) -> Deferred[Any]:
        return self._call("get", key, start, end, etag)

    def put(
        self,
        key: str,
        chunks: Sequence[bytes],
        sha256: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Deferred[str]:
        if metadata:
            return self._call("put", key, chunks, sha256, dict(metadata))
        return self._call("put", key, chunks, sha256)

    def delete(self, key: str) -> Deferred[None]:
        return self._call("delete", key)

    def readVersion(self, key: str) -> Deferred[Versioned | None]:
        return self._call("readVersion", key)

    def putIf(
        self,
        key: str,
        chunks: Sequence[bytes],
        sha256: str,
        ifMatch: str | None = None,
        ifNoneMatch: bool = False,
    ) -> Deferred[str]:
        return self._call("putIf", key, chunks, sha256, ifMatch, ifNoneMatch)

    def deleteIf(self, key: str, ifMatch: str) -> Deferred[None]:
        return self._call("deleteIf", key, ifMatch)

    def copy(
        self, source: str, target: str, sourceETag: str, metadata: dict[str, str]
    ) -> Deferred[str]:
        return self._call("copy", source, target, sourceETag, metadata)

    def listObjects(
        self, prefix: str, startAfter: str | None = None, continuation: str | None = None,
        maxKeys: int = 1000,
    ) -> Deferred[ObjectPage]:
        return self._call("listObjects", prefix, startAfter, continuation, maxKeys)

    def createUpload(self, key: str, metadata: dict[str, str] | None = None) -> Deferred[str]:
        return self._call("createUpload", key, *([] if metadata is None else [metadata]))

    def uploadPart(
        self, key: str, uploadId: str, number: int, chunks: Sequence[bytes],
        payload: str | None = None,
    ) -> Deferred[str]:
        return self._call("uploadPart", key, uploadId, number, chunks, payload)

    def copyPart(
        self, source: str, sourceETag: str, key: str, uploadId: str, number: int,
        start: int, end: int,
    ) -> Deferred[str]:
        return self._call("copyPart", source, sourceETag, key, uploadId, number, start, end)

    def complete(self, key: str, uploadId: str, parts: list[tuple[int, str]]) -> Deferred[None]:
        return self._call("complete", key, uploadId, parts)

    def abortUpload(self, key: str, uploadId: str) -> Deferred[None]:
        return self._call("abortUpload", key, uploadId)

    def listUploads(
        self, prefix: str, keyMarker: str | None = None, uploadIdMarker: str | None = None
    ) -> Deferred[UploadPage]:
        return self._call("listUploads", prefix, keyMarker, uploadIdMarker)

    def lastPartTime(self, key: str, uploadId: str) -> Deferred[float | None]:
        return self._call("lastPartTime", key, uploadId)

    def pending(self) -> list[str]:
        return [c.name for c in self.calls if not c.result.called]

    def take(self, name: str) -> Call:
        for call in self.calls:
            if call.name == name and not call.result.called:
                return call
        raise AssertionError(f"no pending {name}; pending: {self.pending()}")

    def answer(self, name: str, result: Any = None) -> Call:
        call = self.take(name)
        if isinstance(result, Exception):
            call.result.errback(result)
        else:
            call.result.callback(result)
        return call


@implementer(IPushProducer)
class FakeBody:
    """A request body as a push producer: records pause and resume."""

    def __init__(self) -> None:
        self.paused = False
        self.log: list[str] = []

    def pauseProducing(self) -> None:
        self.paused = True
        self.log.append("pause")

    def resumeProducing(self) -> None:
        self.paused = False
        self.log.append("resume")

    def stopProducing(self) -> None:
        self.log.append("stop")
