"""
The S3 operations streamrelay needs, signed with SigV4 by botocore's signer
and sent with treq on the reactor.

botocore only signs here: it never sends anything, so no blocking call runs
on the reactor thread.  Part bodies are hashed for their signature in a
thread (L{streamrelay.store.s3.signing.threadedSHA256}), or sent with
C{UNSIGNED-PAYLOAD} (L{streamrelay.store.s3.signing.unsignedPayload});
everything else is small.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from streamrelay.store.metadata import S3_HEADER, fromS3Header, s3Headers
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import (
    PRECONDITION_STATUSES,
    ObjectPage,
    PreconditionFailed,
    S3Error,
    S3Unavailable,
    UploadPage,
    completeBody,
    errorFrom,
    parseCopyETag,
    parseLastPartTime,
    parseObjectPage,
    parseUploadId,
    parseUploadPage,
    raiseIfError,
)
from streamrelay.store.s3.signing import (
    EMPTY_SHA256,
    ChunksProducer,
    Signer,
    sha256Chunks,
    syncSHA256,
)
from streamrelay.uris import uriOf

#: The largest error answer read from a request meant to stream.
MAX_ERROR_BODY = 1 << 20
#: The object metadata that holds a stored file's SHA-256.
SHA256_META = "x-amz-meta-sha256"

#: Answers worth another try: S3 asks for it (503 SlowDown) or failed inside.
_RETRY_STATUSES = {500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable"}


class RequestTimedOut(Exception):
    """S3 did not answer within the request timeout."""


@dataclass(frozen=True)
class Answer:
    """A buffered S3 answer."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode("ascii"))
        return values[-1].decode("latin-1") if values else None


@dataclass(frozen=True)
class ObjectHead:
    """What HEAD tells of an object."""

    size: int
    etag: str
    modified: float
    sha256: str | None
    #: The file's metadata (see L{streamrelay.store.metadata}), if any.
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class Versioned:
    """A small object's bytes, and the ETag they are stored under."""

    data: bytes
    etag: str


def unquoteETag(value: str) -> str:
    return value.strip().removeprefix("W/").strip('"')


def headOf(answer: Answer) -> ObjectHead:
    modified = answer.header("last-modified")
    stamp = 0.0
    if modified:
        try:
            stamp = email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            pass
    sha256 = answer.header(SHA256_META)
    return ObjectHead(
        int(answer.header("content-length") or 0),
        unquoteETag(answer.header("etag") or ""),
        stamp,
        sha256.strip().lower() if sha256 else None,
        fromS3Header(answer.header(S3_HEADER)),
    )


class _Collect(Protocol):
    """
    An answer's body, read whole into L{done}; cancelling L{done} closes
    the connection (treq's C{content()} cannot be cancelled, so an answer
    whose body stalled would never end).
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, done: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


def _body(response: IResponse) -> Deferred[bytes]:
    """The whole body of C{response}, in a Deferred that can be cancelled."""
    collect = _Collect()
    response.deliverBody(collect)
    return collect.done


class _Discard(Protocol):
    """Closes an answer's connection instead of reading its body."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


def _why(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(_why(r.value) for r in reasons)
    return str(error) or type(error).__name__


def _cancellation(error: BaseException) -> bool:
    """
    Whether C{error} is a request's cancellation: a L{CancelledError}, or
    one wrapped as twisted.web's client fails a request cancelled while
    its body was being sent (C{RequestGenerationFailed([CancelledError])}).
    """
    if isinstance(error, CancelledError):
        return True
    reasons = getattr(error, "reasons", None) or ()
    return any(isinstance(reason, Failure) and reason.check(CancelledError) for reason in reasons)


def _retriable(error: BaseException) -> bool:
    if isinstance(error, S3Error):
        return error.status in _RETRY_STATUSES or error.code in _RETRY_CODES
    return isinstance(
        error,
        ConnectError | ConnectionLost | DNSLookupError | RequestTimedOut
        | ResponseFailed | RequestTransmissionFailed,
    )


@implementer(IS3Client)
class S3Client:
    """
    One bucket of an S3-compatible service, addressed path-style
    (C{<endpoint>/<bucket>/<key>}), which AWS, Ceph RGW, MinIO and
    SeaweedFS all take.

    @param http: the treq client every request goes through.
    @param payloadHash: the payload hash signed for a body that has no
        known digest (a part): its SHA-256 (L{threadedSHA256} in the
        services) or L{unsignedPayload}.
    @param timeout: seconds a request may take until its answer's headers;
        for one that sends a file's bytes (a part, an object, a segment),
        seconds in which no chunk of them went to the connection (one goes
        when the last has left its buffer), or the answer's headers did not
        come after the last: a slow link goes on as long as a chunk gets
        out in each C{timeout}, and a store that stopped taking bytes fails.
    @param partTimeout: seconds for a request S3 may work long on before it
        answers (copying, completing a multipart upload).
    @param attempts: tries of each request that failed in a way worth
        another (connection lost, 5xx, SlowDown), with a short backoff.
    """

    _log = Logger()

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        endpoint: str,
        bucket: str,
        signer: Signer,
        payloadHash: Callable[[Sequence[bytes]], Deferred[str]] = syncSHA256,
        timeout: float = 60.0,
        partTimeout: float = 600.0,
        attempts: int = 3,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.http = http
        self.clock = clock
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.signer = signer
        self.payloadHash = payloadHash
        self.timeout = timeout
        self.partTimeout = partTimeout
        self.attempts = attempts
        defaultPort = 443 if parts.scheme == "https" else 80
        self._host = parts.hostname if parts.port in (None, defaultPort) else parts.netloc
        if ":" in parts.hostname and parts.port in (None, defaultPort):
            self._host = f"[{parts.hostname}]"

    # Requests

    def url(self, key: str | None = None, query: Sequence[tuple[str, str]] = ()) -> str:
        path = "/" + quote(self.bucket, safe="")
        if key is not None:
            path += "/" + quote(key, safe="/~")
        url = self.endpoint + path
        if query:
            url += "?" + "&".join(
                f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query
            )
        return url

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        payloadSHA256: str,
        body: ChunksProducer | None,
        unbuffered: bool,
    ) -> Deferred[IResponse]:
        # twisted.web adds Content-Length itself; it need not be signed.
        headers = dict(headers, host=self._host)
        signed = self.signer.sign(method, url, headers, payloadSHA256)
        raw = Headers()
        for name, value in signed.items():
            raw.addRawHeader(name.encode("ascii"), value.encode("utf-8"))
        return self.http.request(  # type: ignore[return-value]
            method,
            uriOf(url),  # an IPv6 endpoint has no IDNA form
            headers=raw,
            data=body,
            allow_redirects=False,
            unbuffered=unbuffered,
        )

    async def _attempt(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        payloadSHA256: str,
        body: Sequence[bytes] | None,
        ok: Iterable[int],
        timeout: float,
        stream: bool,
        errorIn200: bool,
        idle: bool,
    ) -> tuple[Any, Answer | None]:
        timedOut = False
        awaited: list[Deferred[Any]] = []

        def expire() -> None:
            nonlocal timedOut
            timedOut = True
            awaited[-1].cancel()

        def moved() -> None:
            if timer.active():
                timer.reset(timeout)

        timer = self.clock.callLater(timeout, expire)
        producer = ChunksProducer(body, moved if idle else None) if body is not None else None
        awaited.append(self._send(method, url, headers, payloadSHA256, producer, stream))
        try:
            response: Any = await awaited[-1]
            if stream and response.code in ok:
                return response, None
            if stream and not 0 <= response.length <= MAX_ERROR_BODY:
                # Not an S3 error document (a server ignoring Range answers
                # 200 with the whole object): do not read it.
                response.deliverBody(_Discard())
                raise S3Error(response.code, str(response.code), "unexpected answer")
            awaited.append(_body(response))
            content = await awaited[-1]
        except Exception as e:
            if producer is not None:
                # A failed request's connection keeps its producer until
                # collected; the part's chunks need not live that long.
                producer.stopProducing()
            if not _cancellation(e):
                raise
            if timedOut:
                what = "nothing sent or answered" if idle else "no answer"
                raise RequestTimedOut(f"{method} {url}: {what} in {timeout:g} s") from None
            raise CancelledError() from e
        finally:
            if timer.active():
                timer.cancel()
        answer = Answer(response.code, response.headers, content)
        if answer.status not in ok:
            raise errorFrom(answer.status, content)
        if errorIn200 and answer.status == 200:
            raiseIfError(200, content)
        return None, answer

    async def _call(
        self,
        method: str,
        key: str | None,
        query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        body: Sequence[bytes] | None = None,
        payloadSHA256: str | None = None,
        ok: Iterable[int] = (200,),
        timeout: float | None = None,
        stream: bool = False,
        attempts: int | None = None,
        errorIn200: bool = False,
        idle: bool = False,
    ) -> tuple[Any, Answer | None]:
        """
        One request, tried again as L{attempts} says; C{idle} makes its
        timeout count from the last of its body's bytes that moved (see
        C{timeout} above), not from its start.
        """
        url = self.url(key, query)
        if payloadSHA256 is None:
            payloadSHA256 = sha256Chunks(body) if body else EMPTY_SHA256
        ok = frozenset(ok)
        attempt = 1
        while True:
            try:
                return await self._attempt(
                    method, url, headers or {}, payloadSHA256, body, ok,
                    timeout or self.timeout, stream, errorIn200, idle,
                )
            except Exception as e:
                if not _retriable(e):
                    raise
                if attempt >= (attempts or self.attempts):
                    status = e.status if isinstance(e, S3Error) else 503
                    code = e.code if isinstance(e, S3Error) else "Unreachable"
                    raise S3Unavailable(
                        status, code, f"{method} failed {attempt} time(s): {_why(e)}", key or ""
                    ) from e
                delay = 0.25 * 4 ** (attempt - 1)
                self._log.info(
                    "S3 {method} {key!r} failed ({error}); try {next} in {delay} s",
                    method=method, key=key, error=str(e) or type(e).__name__,
                    next=attempt + 1, delay=delay,
                )
                attempt += 1
                await deferLater(self.clock, delay)

    async def call(self, method: str, key: str | None, **kwargs: Any) -> Answer:
        """A request whose answer is read whole (answers of S3 are small)."""
        _, answer = await self._call(method, key, **kwargs)
        assert answer is not None
        return answer

    async def open(self, method: str, key: str | None, **kwargs: Any) -> IResponse:
        """A request whose successful answer's body is left to the caller to stream."""
        response, _ = await self._call(method, key, stream=True, **kwargs)
        assert response is not None
        return response  # type: ignore[no-any-return]

    # Buckets

    async def bucketReachable(self) -> None:
        """Fails unless the bucket answers HEAD with 200."""
        await self.call("HEAD", None, attempts=1, timeout=10.0)

    async def createBucket(self) -> None:
        """Create the bucket (for tests and set-up); an existing one of ours is fine."""
        try:
            await self.call("PUT", None)
        except S3Error as e:
            if e.code != "BucketAlreadyOwnedByYou":
                raise

    # Objects

    async def head(self, key: str) -> ObjectHead | None:
        answer = await self.call("HEAD", key, ok=(200, 404))
        return headOf(answer) if answer.status == 200 else None

    async def read(self, key: str) -> bytes | None:
        """A small object's bytes, read whole; L{None} when there is none."""
        answer = await self.call("GET", key, ok=(200, 404))
        return answer.body if answer.status == 200 else None

    async def get(self, key: str, start: int, end: int, etag: str | None) -> IResponse:
        """
        Bytes C{start} to C{end} (exclusive) of C{key}, unread; 412 (as an
        L{S3Error}) when its ETag is no longer C{etag}.
        """
        headers = {"range": f"bytes={start}-{end - 1}"}
        if etag is not None:
            headers["if-match"] = f'"{etag}"'
        # Keep the stored bytes as they are, even for an object another
        # tool stored with a Content-Encoding (treq would decode gzip).
        query = [("response-content-encoding", "identity")]
        return await self.open("GET", key, query=query, headers=headers, ok=(206,))

    async def put(
        self,
        key: str,
        chunks: Sequence[bytes],
        sha256: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """
        Store C{chunks} as C{key} with its SHA-256 (and the file's
        C{metadata}) kept in object metadata; S3 checks the bytes against
        the SHA-256 (the signed payload hash).  Without a SHA-256 (a
        segment of a resumable upload) the object keeps none, and the
        payload hash signed is L{payloadHash}'s.
        """
        headers = dict(s3Headers(metadata))
        if sha256 is None:
            payload = await self.payloadHash(chunks)
        else:
            payload = headers[SHA256_META] = sha256
        answer = await self.call(
            "PUT", key, headers=headers, body=chunks, payloadSHA256=payload, idle=True
        )
        return unquoteETag(answer.header("etag") or "")

    async def delete(self, key: str) -> None:
        await self.call("DELETE", key, ok=(200, 204, 404))

    # Conditional writes

    async def readVersion(self, key: str) -> Versioned | None:
        """A small object's bytes and ETag; L{None} when there is none."""
        answer = await self.call("GET", key, ok=(200, 404))
        if answer.status != 200:
            return None
        return Versioned(answer.body, unquoteETag(answer.header("etag") or ""))

    async def putIf(
        self,
        key: str,
        chunks: Sequence[bytes],
        sha256: str,
        ifMatch: str | None = None,
        ifNoneMatch: bool = False,
    ) -> str:
        """
        PutObject with C{If-None-Match: *} or C{If-Match}, both signed
        (botocore signs every header given); L{PreconditionFailed} when
        the condition does not hold (412) or another write raced (409).

        The ETag goes unquoted: Ceph RGW compares C{If-Match} on a PUT
        byte for byte with the ETag it keeps, which has no quotes (a
        quoted one never matches there).
        """
        if (ifMatch is None) == (not ifNoneMatch):
            raise ValueError("a conditional put takes exactly one of ifMatch, ifNoneMatch")
        condition = (
            {"if-none-match": "*"} if ifNoneMatch else {"if-match": unquoteETag(ifMatch or "")}
        )
        try:
            answer = await self.call(
                "PUT", key, headers={SHA256_META: sha256, **condition}, body=chunks,
                payloadSHA256=sha256,
            )
        except S3Error as e:
            if e.status in PRECONDITION_STATUSES:
                raise PreconditionFailed(e.status, e.code, e.message, key) from None
            raise
        return unquoteETag(answer.header("etag") or "")

    async def deleteIf(self, key: str, ifMatch: str) -> None:
        """DeleteObject with C{If-Match}; see L{IS3Client.deleteIf} for who honours it."""
        try:
            await self.call(
                "DELETE", key, headers={"if-match": unquoteETag(ifMatch)}, ok=(200, 204),
            )
        except S3Error as e:
            if e.status in (*PRECONDITION_STATUSES, 404):
                raise PreconditionFailed(e.status, e.code, e.message, key) from None
            raise

    async def copy(
        self, source: str, target: str, sourceETag: str, metadata: dict[str, str]
    ) -> str:
        """Copy C{source} (if still C{sourceETag}) to C{target} with new metadata."""
        headers = {
            "x-amz-copy-source": self._copySource(source),
            "x-amz-copy-source-if-match": f'"{sourceETag}"',
            "x-amz-metadata-directive": "REPLACE",
            **metadata,
        }
        answer = await self.call(
            "PUT", target, headers=headers, timeout=self.partTimeout, errorIn200=True
        )
        return unquoteETag(parseCopyETag(answer.status, answer.body))

    def _copySource(self, key: str) -> str:
        return "/" + quote(self.bucket, safe="") + "/" + quote(key, safe="/~")

    async def listObjects(
        self,
        prefix: str,
        startAfter: str | None = None,
        continuation: str | None = None,
        maxKeys: int = 1000,
    ) -> ObjectPage:
        """One page of ListObjectsV2 of the keys under C{prefix}, not below a further C{/}."""
        query = [
            ("delimiter", "/"), ("encoding-type", "url"), ("list-type", "2"),
            ("max-keys", str(maxKeys)), ("prefix", prefix),
        ]
        if continuation is not None:
            query.append(("continuation-token", continuation))
        elif startAfter is not None:
            query.append(("start-after", startAfter))
        answer = await self.call("GET", None, query=sorted(query))
        return parseObjectPage(answer.body)

    # Multipart uploads

    async def createUpload(self, key: str, metadata: dict[str, str] | None = None) -> str:
        answer = await self.call("POST", key, query=[("uploads", "")], headers=metadata)
        return parseUploadId(answer.body)

    async def uploadPart(
        self, key: str, uploadId: str, number: int, chunks: Sequence[bytes],
        payload: str | None = None,
    ) -> str:
        """
        Send one part with its payload hash (L{payloadHash} unless given):
        S3 checks the bytes against it, unless it is C{UNSIGNED-PAYLOAD}.
        """
        if payload is None:
            payload = await self.payloadHash(chunks)
        answer = await self.call(
            "PUT", key, query=[("partNumber", str(number)), ("uploadId", uploadId)],
            body=chunks, payloadSHA256=payload, idle=True,
        )
        etag = answer.header("etag")
        if not etag:
            raise S3Error(answer.status, "NoETag", f"part {number} answered no ETag", key)
        return etag

    async def copyPart(
        self, source: str, sourceETag: str, key: str, uploadId: str, number: int,
        start: int, end: int,
    ) -> str:
        headers = {
            "x-amz-copy-source": self._copySource(source),
            "x-amz-copy-source-if-match": f'"{sourceETag}"',
            "x-amz-copy-source-range": f"bytes={start}-{end - 1}",
        }
        answer = await self.call(
            "PUT", key, query=[("partNumber", str(number)), ("uploadId", uploadId)],
            headers=headers, timeout=self.partTimeout, errorIn200=True,
        )
        return parseCopyETag(answer.status, answer.body)

    async def complete(self, key: str, uploadId: str, parts: list[tuple[int, str]]) -> None:
        # CompleteMultipartUpload may fail after answering 200 (and is then
        # worth another try, says AWS).
        await self.call(
            "POST", key, query=[("uploadId", uploadId)], body=[completeBody(parts)],
            timeout=self.partTimeout, errorIn200=True,
        )

    async def abortUpload(self, key: str, uploadId: str) -> None:
        await self.call("DELETE", key, query=[("uploadId", uploadId)], ok=(200, 204, 404))

    async def listUploads(
        self, prefix: str, keyMarker: str | None = None, uploadIdMarker: str | None = None
    ) -> UploadPage:
        query = [("encoding-type", "url"), ("prefix", prefix), ("uploads", "")]
        if keyMarker is not None:
            query.append(("key-marker", keyMarker))
            if uploadIdMarker is not None:
                query.append(("upload-id-marker", uploadIdMarker))
        answer = await self.call("GET", None, query=sorted(query))
        return parseUploadPage(answer.body)

    async def lastPartTime(self, key: str, uploadId: str) -> float | None:
        """When the newest part of an upload arrived; L{None} without parts."""
        answer = await self.call("GET", key, query=[("uploadId", uploadId)])
        return parseLastPartTime(answer.body)

