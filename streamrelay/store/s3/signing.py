"""
Signing S3 requests with AWS Signature Version 4 (botocore's signer, which
only signs and never sends), the payload hashes signed for their bodies
(their SHA-256, or C{UNSIGNED-PAYLOAD}), and the producer that sends a body
already in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from streamrelay.streaming.tuning import tuneUpstreamBody

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def sha256Chunks(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def threadedSHA256(reactor: Any) -> Callable[[Sequence[bytes]], Deferred[str]]:
    """
    Hash part bodies in the reactor's thread pool: hashlib releases the GIL,
    so the reactor keeps streaming meanwhile.
    """
    from twisted.internet.threads import deferToThreadPool

    def payloadHash(chunks: Sequence[bytes]) -> Deferred[str]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), sha256Chunks, chunks)

    return payloadHash


def syncSHA256(chunks: Sequence[bytes]) -> Deferred[str]:
    return succeed(sha256Chunks(chunks))


def unsignedPayload(chunks: Sequence[bytes]) -> Deferred[str]:
    """
    Signs no hash of the body: S3 stores it unchecked, and the bytes are
    read once less on each side (for an endpoint behind TLS, which guards
    them on the way).
    """
    return succeed(UNSIGNED_PAYLOAD)


class _PayloadAuth(S3SigV4Auth):
    """botocore's S3 SigV4, signing the payload hash it is given instead of hashing the body."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["payload_sha256"])


class Signer:
    """
    Signs requests with AWS Signature Version 4, by botocore.

    @param credentials: access key, secret key and optional session token.
    """

    def __init__(self, credentials: Credentials, region: str) -> None:
        self.region = region
        self._auth = _PayloadAuth(credentials, "s3", region)

    def sign(
        self, method: str, url: str, headers: dict[str, str], payloadSHA256: str
    ) -> dict[str, str]:
        """
        The headers to send: C{headers} plus C{X-Amz-Date},
        C{X-Amz-Content-SHA256} and C{Authorization}.
        """
        request = AWSRequest(method=method, url=url, headers=headers)
        request.context["payload_sha256"] = payloadSHA256
        self._auth.add_auth(request)
        return {str(k): str(v) for k, v in request.headers.items()}


@implementer(IBodyProducer)
class ChunksProducer:
    """
    A request body made of chunks already in memory, written one at a time
    while the connection wants more; nothing is copied.

    @param moved: called each time chunks have gone to the connection (the
        request's timeout counts from then).
    """

    def __init__(
        self, chunks: Sequence[bytes], moved: Callable[[], None] | None = None
    ) -> None:
        self._chunks = chunks
        self._moved = moved
        self.length = sum(len(c) for c in chunks)
        self._index = 0
        self._paused = False
        self._stopped = False
        self._writing = False
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        tuneUpstreamBody(consumer)
        self._write()
        return self._done

    def _write(self) -> None:
        if self._writing or self._consumer is None:
            return
        self._writing = True
        start = self._index
        try:
            while not self._paused and not self._stopped and self._index < len(self._chunks):
                chunk = self._chunks[self._index]
                self._index += 1
                self._consumer.write(chunk)
        finally:
            self._writing = False
        if self._moved is not None and self._index > start:
            self._moved()
        if (
            self._index == len(self._chunks)
            and not self._stopped
            and self._done is not None
            and not self._done.called
        ):
            self._release()
            self._done.callback(None)

    def _release(self) -> None:
        # twisted.web keeps the request, and so its producer, as long as
        # the response; the chunks must not live that long.
        self._chunks = ()
        self._index = 0

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        # The startProducing Deferred never fires after this (IBodyProducer).
        self._stopped = True
        self._release()
