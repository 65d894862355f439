"""
Fakes of the S3 store's collaborators: an S3 client whose calls the test
answers by hand, and a body producer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface import implementer

from streamrelay.store.s3.client import syncSHA256


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    result: Deferred[Any]
    cancelled: bool = False


class FakeS3:
    """Stands in for L{S3Client}: each operation waits for the test's answer."""

    bucket = "b"
    endpoint = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.clock = Clock()
        self.calls: list[Call] = []
        self.hashChunks = syncSHA256

    def _call(self, name: str, *args: Any) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            call.cancelled = True

        call = Call(name, args, Deferred(cancel))
        self.calls.append(call)
        return call.result

    def __getattr__(self, name: str) -> Any:
        if name in {"createUpload", "uploadPart", "complete", "abortUpload", "head", "put",
                    "copy", "delete", "listObjects", "listUploads", "lastPartTime",
                    "bucketReachable", "get", "copyPart", "read"}:
            return lambda *args, **kwargs: self._call(name, *args, *kwargs.values())
        raise AttributeError(name)

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
