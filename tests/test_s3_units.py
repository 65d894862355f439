"""
Unit tests of the S3 store's pieces, with fakes and no network: SigV4
signing wiring, the requests the client sends, S3's XML, part buffering and
backpressure, aborts, listings, sweeping, readiness and the options.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import sys
from dataclasses import dataclass, field
from typing import Any

import botocore.auth
from botocore.credentials import Credentials
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import RequestGenerationFailed
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from streamrelay.backend.tap import Options as BackendOptions
from streamrelay.store import FileInfo, IStoredFile, IUpload, IUploadStore, StorageFull
from streamrelay.store.interfaces import StorageUnavailable
from streamrelay.store.s3.client import ObjectHead, RequestTimedOut, S3Client, Versioned
from streamrelay.store.s3.config import checkS3Options, parseS3URL
from streamrelay.store.s3.interfaces import IS3Client
from streamrelay.store.s3.messages import (
    ListedObject,
    MalformedAnswer,
    ObjectPage,
    PendingUpload,
    PreconditionFailed,
    S3Error,
    S3Unavailable,
    UploadPage,
    completeBody,
    errorFrom,
    parseLastPartTime,
    parseObjectPage,
    parseUploadId,
    parseUploadPage,
    raiseIfError,
)
from streamrelay.store.s3.publishing import UploadFailed, partTarget
from streamrelay.store.s3.reading import ObjectChanged, S3File
from streamrelay.store.s3.signing import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    ChunksProducer,
    Signer,
    syncSHA256,
    unsignedPayload,
)
from streamrelay.store.s3.store import PROBE_EVERY, S3Store
from tests.hashing import sha
from tests.s3fakes import FakeBody, FakeS3

MiB = 1 << 20
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


# Signing


class SignerTests(SynchronousTestCase):
    """
    botocore's signer, wired as the client uses it, gives the signatures of
    AWS's own worked examples (Signature Version 4, header-based auth for S3).
    """

    def setUp(self) -> None:
        self.patch(
            botocore.auth, "get_current_datetime", lambda: datetime.datetime(2013, 5, 24)
        )
        self.signer = Signer(
            Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "us-east-1",
        )

    def assertSigned(self, headers: dict[str, str], signedHeaders: str, signature: str) -> None:
        self.assertEqual(
            headers["Authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
            f"aws4_request, SignedHeaders={signedHeaders}, Signature={signature}",
        )
        self.assertEqual(headers["X-Amz-Date"], "20130524T000000Z")

    def test_getObject(self) -> None:
        headers = self.signer.sign(
            "GET", "https://examplebucket.s3.amazonaws.com/test.txt",
            {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9"}, EMPTY_SHA256,
        )
        self.assertSigned(
            headers, "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        )
        self.assertEqual(headers["X-Amz-Content-SHA256"], EMPTY_SHA256)

    def test_listObjects(self) -> None:
        headers = self.signer.sign(
            "GET", "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
            {"host": "examplebucket.s3.amazonaws.com"}, EMPTY_SHA256,
        )
        self.assertSigned(
            headers, "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        )

    def test_subresource(self) -> None:
        """C{?lifecycle} and C{?lifecycle=} sign alike: the client always sends C{k=v}."""
        headers = self.signer.sign(
            "GET", "https://examplebucket.s3.amazonaws.com/?lifecycle=",
            {"host": "examplebucket.s3.amazonaws.com"}, EMPTY_SHA256,
        )
        self.assertSigned(
            headers, "host;x-amz-content-sha256;x-amz-date",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        )

    def test_payloadHashIsSigned(self) -> None:
        """The payload hash given is the one sent and signed; the body is not read."""
        one = self.signer.sign("PUT", "https://b.example/k", {"host": "b.example"}, "a" * 64)
        two = self.signer.sign("PUT", "https://b.example/k", {"host": "b.example"}, "b" * 64)
        self.assertEqual(one["X-Amz-Content-SHA256"], "a" * 64)
        self.assertNotEqual(one["Authorization"], two["Authorization"])


# The client's requests


@dataclass
class FakeResponse:
    code: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def content(self) -> Deferred[bytes]:
        return succeed(self.body)

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(StringTransport())
        if self.body:
            protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class StalledBody:
    """An answer whose head came and whose body stops after its first bytes."""

    code = 200
    length = 100
    headers = Headers()

    def __init__(self) -> None:
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        protocol.dataReceived(b"<Initiate")

    def content(self) -> Deferred[bytes]:
        return Deferred()  # as treq's: it never ends, and cannot be cancelled


@dataclass
class SentRequest:
    method: str
    url: str
    headers: Headers
    body: bytes | None
    unbuffered: bool
    answer: Deferred[Any]

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return values[0].decode() if values else None


class FakeHTTP:
    """Stands in for treq's HTTPClient; each request waits for the test's answer."""

    def __init__(self) -> None:
        self.sent: list[SentRequest] = []

    def request(self, method: str, url: Any, *, headers: Headers, data: Any,
                allow_redirects: bool, unbuffered: bool) -> Deferred[Any]:
        # The URL as treq sends it (its own conversion, which the client's
        # URLs make free).
        url = url.to_uri().to_text()
        body = None
        if data is not None:
            transport = StringTransport()
            data.startProducing(transport)
            body = transport.value()
        answer: Deferred[Any] = Deferred()
        self.sent.append(SentRequest(method, url, headers, body, unbuffered, answer))
        return answer


class HeldBody:
    """
    A request's body as a connection that takes one chunk at a time and
    is then full until the test says it has room (L{take}).
    """

    def __init__(self, producer: Any) -> None:
        self.chunks: list[bytes] = []
        self.producer = producer
        self.cancelled = False
        self.answer: Deferred[Any] = Deferred(self._cancel)
        producer.startProducing(self)

    def _cancel(self, answer: Deferred[Any]) -> None:
        # As twisted.web's client fails a request cancelled while its body
        # is being sent.
        self.cancelled = True
        answer.errback(RequestGenerationFailed([Failure(CancelledError())]))

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.producer.pauseProducing()

    def take(self) -> None:
        """The connection has room for one more chunk."""
        self.producer.resumeProducing()


class HeldBodyHTTP:
    """Stands in for treq's HTTPClient; bodies move only as the test says."""

    def __init__(self) -> None:
        self.sent: list[HeldBody] = []

    def request(self, method: str, url: Any, *, headers: Headers, data: Any,
                allow_redirects: bool, unbuffered: bool) -> Deferred[Any]:
        held = HeldBody(data)
        self.sent.append(held)
        return held.answer


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.http = FakeHTTP()
        self.clock = Clock()
        self.client = S3Client(
            self.http,  # type: ignore[arg-type]
            self.clock, "http://127.0.0.1:7480/", "my-bucket",
            Signer(Credentials("AK", "SK"), "eu-west-3"),
        )

    def start(self, coroutine: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(coroutine)

    def test_pathStyleURLs(self) -> None:
        self.assertEqual(
            self.client.url("p/a b+c%é~.txt", [("uploadId", "x/y="), ("partNumber", "1")]),
            "http://127.0.0.1:7480/my-bucket/p/a%20b%2Bc%25%C3%A9~.txt"
            "?uploadId=x%2Fy%3D&partNumber=1",
        )

    def test_headSignedNoBody(self) -> None:
        d = self.start(self.client.head("p/x"))
        [sent] = self.http.sent
        self.assertEqual((sent.method, sent.body), ("HEAD", None))
        self.assertEqual(sent.header("host"), "127.0.0.1:7480")
        self.assertEqual(sent.header("x-amz-content-sha256"), EMPTY_SHA256)
        self.assertIn("Credential=AK/", sent.header("authorization") or "")
        self.assertIn("/eu-west-3/s3/aws4_request", sent.header("authorization") or "")
        self.assertIsNone(sent.header("content-length"))
        sent.answer.callback(FakeResponse(200, Headers({
            "content-length": ["12"], "etag": ['"abc"'], "x-amz-meta-sha256": ["F" * 64],
            "last-modified": ["Fri, 24 May 2013 00:00:00 GMT"],
        })))
        head = self.successResultOf(d)
        self.assertEqual(head, ObjectHead(12, "abc", 1369353600.0, "f" * 64))

    def test_headMissing(self) -> None:
        d = self.start(self.client.head("p/x"))
        self.http.sent[0].answer.callback(FakeResponse(404))
        self.assertIsNone(self.successResultOf(d))

    def test_putSignsTheFileDigest(self) -> None:
        """PutObject signs the file's SHA-256 as its payload: S3 checks the bytes."""
        sha = hashlib.sha256(b"hello").hexdigest()
        self.start(self.client.put("p/x", [b"hel", b"lo"], sha))
        [sent] = self.http.sent
        self.assertEqual(sent.body, b"hello")
        self.assertEqual(sent.header("x-amz-content-sha256"), sha)
        self.assertEqual(sent.header("x-amz-meta-sha256"), sha)
        self.assertIn("x-amz-meta-sha256", sent.header("authorization") or "")

    def test_uploadPartSignsPartDigest(self) -> None:
        hashed: list[list[bytes]] = []

        def payloadHash(chunks: Any) -> Deferred[str]:
            hashed.append(list(chunks))
            return syncSHA256(chunks)

        self.client.payloadHash = payloadHash
        d = self.start(self.client.uploadPart("p/x", "id", 3, [b"a", b"b"]))
        [sent] = self.http.sent
        self.assertEqual(hashed, [[b"a", b"b"]])
        self.assertTrue(sent.url.endswith("?partNumber=3&uploadId=id"), sent.url)
        self.assertEqual(sent.header("x-amz-content-sha256"), hashlib.sha256(b"ab").hexdigest())
        sent.answer.callback(FakeResponse(200, Headers({"etag": ['"e3"']})))
        self.assertEqual(self.successResultOf(d), '"e3"')

    def test_uploadPartUnsigned(self) -> None:
        """
        With L{unsignedPayload} a part goes out signed as
        C{UNSIGNED-PAYLOAD}, its bytes not hashed.
        """
        self.client.payloadHash = unsignedPayload
        self.start(self.client.uploadPart("p/x", "id", 1, [b"a", b"b"]))
        [sent] = self.http.sent
        self.assertEqual(sent.body, b"ab")
        self.assertEqual(sent.header("x-amz-content-sha256"), UNSIGNED_PAYLOAD)
        self.assertIn("x-amz-content-sha256", sent.header("authorization") or "")

    def test_putWithoutDigest(self) -> None:
        """
        A put without the body's SHA-256 (a resumable upload's segment)
        keeps none in metadata and signs the client's payload hash.
        """
        for payloadHash, expected in [
            (syncSHA256, hashlib.sha256(b"ab").hexdigest()), (unsignedPayload, UNSIGNED_PAYLOAD)
        ]:
            self.http.sent.clear()
            self.client.payloadHash = payloadHash
            self.start(self.client.put("p/seg", [b"a", b"b"], None))
            [sent] = self.http.sent
            self.assertEqual(sent.header("x-amz-content-sha256"), expected)
            self.assertIsNone(sent.header("x-amz-meta-sha256"))

    def test_retriesSlowDown(self) -> None:
        """503 SlowDown is tried again after a backoff; the answer is the retry's."""
        d = self.start(self.client.delete("p/x"))
        self.http.sent[0].answer.callback(FakeResponse(
            503, body=b"<Error><Code>SlowDown</Code><Message>m</Message></Error>"))
        self.assertEqual(len(self.http.sent), 1)
        self.clock.advance(0.25)
        self.assertEqual(len(self.http.sent), 2)
        self.http.sent[1].answer.callback(FakeResponse(204))
        self.successResultOf(d)

    def signedHeaders(self, sent: SentRequest) -> list[str]:
        authorization = sent.header("authorization") or ""
        return authorization.split("SignedHeaders=")[1].split(",")[0].split(";")

    def test_putIfAbsent(self) -> None:
        """A create-only PutObject sends If-None-Match: *, signed; its ETag unquoted."""
        sha = hashlib.sha256(b"lease").hexdigest()
        d = self.start(self.client.putIf("p/l", [b"lease"], sha, ifNoneMatch=True))
        [sent] = self.http.sent
        self.assertEqual((sent.method, sent.body), ("PUT", b"lease"))
        self.assertEqual(sent.header("if-none-match"), "*")
        self.assertIsNone(sent.header("if-match"))
        self.assertIn("if-none-match", self.signedHeaders(sent))
        self.assertEqual(sent.header("x-amz-content-sha256"), sha)
        sent.answer.callback(FakeResponse(200, Headers({"etag": ['"e1"']})))
        self.assertEqual(self.successResultOf(d), "e1")

    def test_putIfMatch(self) -> None:
        """
        If-Match goes signed, with the ETag unquoted (Ceph RGW compares
        it byte for byte with its unquoted ETag).
        """
        sha = hashlib.sha256(b"x").hexdigest()
        self.start(self.client.putIf("p/l", [b"x"], sha, ifMatch='"e1"'))
        [sent] = self.http.sent
        self.assertEqual(sent.header("if-match"), "e1")
        self.assertIsNone(sent.header("if-none-match"))
        self.assertIn("if-match", self.signedHeaders(sent))

    def test_putIfTakesOneCondition(self) -> None:
        sha = hashlib.sha256(b"x").hexdigest()
        kwargsList: list[dict[str, Any]] = [{}, {"ifMatch": "e", "ifNoneMatch": True}]
        for kwargs in kwargsList:
            d = self.start(self.client.putIf("p/l", [b"x"], sha, **kwargs))
            self.failureResultOf(d, ValueError)
        self.assertEqual(self.http.sent, [])

    def test_putIfRefused(self) -> None:
        """412 (condition false) and 409 (a write raced) are PreconditionFailed, not retried."""
        sha = hashlib.sha256(b"x").hexdigest()
        for status, code in ((412, "PreconditionFailed"), (409, "ConditionalRequestConflict")):
            d = self.start(self.client.putIf("p/l", [b"x"], sha, ifMatch="e1"))
            self.http.sent[-1].answer.callback(FakeResponse(
                status, body=f"<Error><Code>{code}</Code></Error>".encode()))
            error = self.failureResultOf(d, PreconditionFailed).value
            self.assertEqual((error.status, error.code, error.key), (status, code, "p/l"))
        self.assertEqual(len(self.http.sent), 2)

    def test_putIfOtherErrors(self) -> None:
        sha = hashlib.sha256(b"x").hexdigest()
        d = self.start(self.client.putIf("p/l", [b"x"], sha, ifNoneMatch=True))
        self.http.sent[0].answer.callback(FakeResponse(
            403, body=b"<Error><Code>AccessDenied</Code></Error>"))
        error = self.failureResultOf(d, S3Error).value
        self.assertNotIsInstance(error, PreconditionFailed)

    def test_readVersion(self) -> None:
        d = self.start(self.client.readVersion("p/l"))
        self.http.sent[0].answer.callback(
            FakeResponse(200, Headers({"etag": ['"e1"']}), b"body"))
        self.assertEqual(self.successResultOf(d), Versioned(b"body", "e1"))
        d = self.start(self.client.readVersion("p/l"))
        self.http.sent[1].answer.callback(FakeResponse(404))
        self.assertIsNone(self.successResultOf(d))

    def test_deleteIf(self) -> None:
        d = self.start(self.client.deleteIf("p/l", '"e1"'))
        sent = self.http.sent[0]
        self.assertEqual((sent.method, sent.header("if-match")), ("DELETE", "e1"))
        self.assertIn("if-match", self.signedHeaders(sent))
        sent.answer.callback(FakeResponse(204))
        self.successResultOf(d)
        d = self.start(self.client.deleteIf("p/l", "e1"))
        self.http.sent[1].answer.callback(FakeResponse(
            412, body=b"<Error><Code>PreconditionFailed</Code></Error>"))
        self.failureResultOf(d, PreconditionFailed)

    def test_noRetryOfClientErrors(self) -> None:
        d = self.start(self.client.delete("p/x"))
        self.http.sent[0].answer.callback(FakeResponse(
            403, body=b"<Error><Code>AccessDenied</Code></Error>"))
        error = self.failureResultOf(d, S3Error).value
        self.assertEqual((error.status, error.code), (403, "AccessDenied"))
        self.assertEqual(len(self.http.sent), 1)

    def test_connectionErrorsRetriedThenRaised(self) -> None:
        d = self.start(self.client.head("p/x"))
        for attempt, delay in enumerate((0.25, 1.0)):
            self.http.sent[attempt].answer.errback(ConnectionRefusedError())
            self.clock.advance(delay)
        self.http.sent[2].answer.errback(ConnectionRefusedError())
        error = self.failureResultOf(d, S3Unavailable).value
        self.assertIsInstance(error, StorageUnavailable)
        self.assertIsInstance(error.__cause__, ConnectionRefusedError)
        self.assertEqual((error.status, error.code), (503, "Unreachable"))
        self.assertEqual(len(self.http.sent), 3)

    def test_timeout(self) -> None:
        """A request with no answer in time is cancelled and, in the end, fails."""
        self.client.attempts = 1
        d = self.start(self.client.head("p/x"))
        self.http.sent[0].answer.addErrback(lambda f: f.trap(CancelledError) and None)
        self.clock.advance(self.client.timeout)
        error = self.failureResultOf(d, S3Unavailable).value
        self.assertIsInstance(error.__cause__, RequestTimedOut)

    def test_slowBodyGoesOn(self) -> None:
        """
        A part whose bytes keep moving, however slowly, is not timed out;
        once they stop moving (or the answer does not come after the last),
        it is, in the client's timeout and not the 600 s of a part.
        """
        self.client.attempts = 1
        http = HeldBodyHTTP()
        self.client.http = http  # type: ignore[assignment]
        chunks = [b"x" * 10] * 30
        d = self.start(self.client.uploadPart("p/x", "id", 1, chunks, payload="UNSIGNED-PAYLOAD"))
        [sent] = http.sent
        step = self.client.timeout * 0.9
        for _ in range(20):  # 18 timeouts long in all
            self.clock.advance(step)
            sent.take()
        self.assertNoResult(d)
        self.assertEqual(len(sent.chunks), 21)
        self.clock.advance(self.client.timeout)
        error = self.failureResultOf(d, S3Unavailable).value
        self.assertIsInstance(error.__cause__, RequestTimedOut)
        self.assertTrue(sent.cancelled)
        # The dead connection does not keep the part's chunks alive.
        self.assertEqual(sent.producer._chunks, ())

    def test_cancelledWhileSending(self) -> None:
        """
        A part cancelled (its upload aborted) while its bytes are sent is
        a cancellation, not a failure to retry or report.
        """
        http = HeldBodyHTTP()
        self.client.http = http  # type: ignore[assignment]
        d = self.start(self.client.uploadPart("p/x", "id", 1, [b"a", b"b"], payload="x"))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(http.sent), 1)
        self.assertEqual(http.sent[0].producer._chunks, ())

    def test_bodySentAnswerAwaited(self) -> None:
        """After a part's last byte, the answer has the client's timeout to come."""
        self.client.attempts = 1
        http = HeldBodyHTTP()
        self.client.http = http  # type: ignore[assignment]
        d = self.start(self.client.put("p/x", [b"a", b"b"], hashlib.sha256(b"ab").hexdigest()))
        [sent] = http.sent
        self.clock.advance(self.client.timeout - 1)
        sent.take()
        sent.take()
        self.clock.advance(self.client.timeout - 1)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIsInstance(self.failureResultOf(d, S3Unavailable).value.__cause__,
                              RequestTimedOut)

    def test_stalledAnswerBody(self) -> None:
        """
        An answer whose body stops coming is timed out too, and its
        connection closed (reading it could not be cancelled).
        """
        self.client.attempts = 1
        d = self.start(self.client.createUpload("p/x"))
        stalled = StalledBody()
        self.clock.advance(self.client.timeout / 2)
        self.http.sent[0].answer.callback(stalled)
        self.clock.advance(self.client.timeout / 2)
        self.assertIsInstance(self.failureResultOf(d, S3Unavailable).value.__cause__,
                              RequestTimedOut)
        self.assertEqual(stalled.transport.producerState, "stopped")

    def test_completeErrorIn200(self) -> None:
        """CompleteMultipartUpload can fail after answering 200: that is an error."""
        d = self.start(self.client.complete("p/x", "id", [(1, '"a"')]))
        [sent] = self.http.sent
        self.assertIn(b'<PartNumber>1</PartNumber><ETag>"a"</ETag>', sent.body or b"")
        sent.answer.callback(FakeResponse(
            200, body=b"<Error><Code>InternalError</Code><Message>x</Message></Error>"))
        # InternalError is worth a retry, which then succeeds.
        self.clock.advance(0.25)
        self.http.sent[1].answer.callback(FakeResponse(
            200, body=f"<CompleteMultipartUploadResult {NS}/>".encode()))
        self.successResultOf(d)

    def test_getStreams(self) -> None:
        d = self.start(self.client.get("p/x", 10, 20, "etag1"))
        [sent] = self.http.sent
        self.assertTrue(sent.unbuffered)
        self.assertEqual(sent.header("range"), "bytes=10-19")
        self.assertEqual(sent.header("if-match"), '"etag1"')
        self.assertIn("response-content-encoding=identity", sent.url)
        response = FakeResponse(206)
        sent.answer.callback(response)
        self.assertIs(self.successResultOf(d), response)

    def test_getIgnoringRange(self) -> None:
        """A server that ignores Range and answers the whole object: not read, an error."""
        d = self.start(self.client.get("p/x", 0, 10, None))
        delivered: list[Any] = []

        class Whole:
            code = 200
            length = 5 << 30
            headers = Headers()

            def deliverBody(self, protocol: Any) -> None:
                delivered.append(protocol)

        self.http.sent[0].answer.callback(Whole())
        self.assertEqual(self.failureResultOf(d, S3Error).value.status, 200)
        transport = StringTransport()
        delivered[0].makeConnection(transport)
        self.assertEqual(transport.producerState, "stopped")
        self.assertEqual(len(self.http.sent), 1)


class ChunksProducerTests(SynchronousTestCase):
    def test_writesUntilPaused(self) -> None:
        chunks = [b"a", b"b", b"c"]
        producer = ChunksProducer(chunks)
        self.assertEqual(producer.length, 3)
        written: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                written.append(data)
                if data == b"a":
                    producer.pauseProducing()

        d = producer.startProducing(Consumer())  # type: ignore[arg-type]
        self.assertEqual(written, [b"a"])
        self.assertNoResult(d)
        producer.resumeProducing()
        self.assertEqual(written, [b"a", b"b", b"c"])
        self.successResultOf(d)
        self.assertEqual(chunks, [b"a", b"b", b"c"])  # the caller's list is kept for retries

    def test_stopped(self) -> None:
        producer = ChunksProducer([b"a", b"b"])
        transport = StringTransport()

        class Consumer:
            def write(self, data: bytes) -> None:
                transport.write(data)
                producer.stopProducing()

        d = producer.startProducing(Consumer())  # type: ignore[arg-type]
        self.assertEqual(transport.value(), b"a")
        self.assertNoResult(d)

    def test_partsLeaveAtOnce(self) -> None:
        """
        Sending a body through Twisted's HTTP client, the producer lets the
        S3 connection send up to 1 MiB per system call (Twisted's own limit
        is 128 KiB, one call per pass of the reactor) and each chunk at
        once while nothing waits in its buffer: the bytes are in the socket
        before the reactor runs.  (A socketpair stands in for the
        connection.)
        """
        import socket

        from twisted.internet import tcp
        from twisted.internet.protocol import Protocol
        from twisted.internet.testing import MemoryReactor
        from twisted.web._newclient import LengthEnforcingConsumer

        ours, peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(peer.close)
        peer.setblocking(False)
        conn = tcp.Connection(ours, Protocol(), MemoryReactor())
        conn.connected = True
        chunks = [b"a" * 1000, b"b" * 1000]
        producer = ChunksProducer(chunks)
        consumer = LengthEnforcingConsumer(producer, conn, Deferred())
        conn.registerProducer(producer, True)
        self.successResultOf(producer.startProducing(consumer))  # type: ignore[arg-type]
        self.assertEqual(conn.SEND_LIMIT, 1 << 20)
        self.assertEqual(peer.recv(4096), b"".join(chunks))


# XML


class MessageTests(SynchronousTestCase):
    def test_listPage(self) -> None:
        body = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult {NS}><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>
<MaxKeys>2</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
<Contents><Key>p/a+b%2Bc%C3%A9</Key><LastModified>2024-05-01T12:00:00.250Z</LastModified>
<ETag>&quot;e1&quot;</ETag><Size>5</Size></Contents>
<Contents><Key>p/z</Key><LastModified>2024-05-01T12:00:01.000Z</LastModified>
<ETag>"e2-3"</ETag><Size>0</Size></Contents>
<CommonPrefixes><Prefix>p/sub/</Prefix></CommonPrefixes>
<NextContinuationToken>tok+en</NextContinuationToken></ListBucketResult>""".encode()
        self.assertEqual(parseObjectPage(body), ObjectPage(
            [ListedObject("p/a b+cé", 5, '"e1"', 1714564800.25),
             ListedObject("p/z", 0, '"e2-3"', 1714564801.0)],
            True, "tok+en",
        ))

    def test_listPageNotURLEncoded(self) -> None:
        body = (b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b</Key>"
                b"<LastModified>2024-05-01T12:00:00Z</LastModified><Size>1</Size>"
                b"</Contents></ListBucketResult>")
        page = parseObjectPage(body)
        self.assertEqual([o.key for o in page.objects], ["a+b"])
        self.assertFalse(page.truncated)

    def test_errors(self) -> None:
        error = errorFrom(404, b"<Error><Code>NoSuchKey</Code><Message>gone</Message>"
                               b"<Key>p/x</Key></Error>")
        self.assertEqual((error.status, error.code, error.message, error.key),
                         (404, "NoSuchKey", "gone", "p/x"))
        self.assertEqual(errorFrom(403, b"").code, "403")
        self.assertEqual(errorFrom(502, b"<html>bad gateway</html>").code, "502")
        self.assertRaises(S3Error, raiseIfError, 200, b"<Error><Code>X</Code></Error>")
        self.assertRaises(MalformedAnswer, parseObjectPage, b"not xml")
        self.assertRaises(MalformedAnswer, parseObjectPage, b"<Other/>")

    def test_uploads(self) -> None:
        body = f"""<ListMultipartUploadsResult {NS}><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextKeyMarker>p/k%20</NextKeyMarker>
<NextUploadIdMarker>u2</NextUploadIdMarker>
<Upload><Key>p/k%20</Key><UploadId>u2</UploadId><Initiated>2024-05-01T00:00:00.000Z</Initiated>
</Upload></ListMultipartUploadsResult>""".encode()
        self.assertEqual(parseUploadPage(body), UploadPage(
            [PendingUpload("p/k ", "u2", 1714521600.0)], True, "p/k ", "u2"))

    def test_parts(self) -> None:
        body = (b"<ListPartsResult><Part><PartNumber>1</PartNumber><LastModified>"
                b"2024-05-01T00:00:00Z</LastModified></Part><Part><PartNumber>2</PartNumber>"
                b"<LastModified>2024-05-01T00:00:09Z</LastModified></Part></ListPartsResult>")
        self.assertEqual(parseLastPartTime(body), 1714521609.0)
        self.assertIsNone(parseLastPartTime(b"<ListPartsResult/>"))

    def test_uploadIdAndCompleteBody(self) -> None:
        self.assertEqual(parseUploadId(
            f"<InitiateMultipartUploadResult {NS}><UploadId>2~x</UploadId>"
            "</InitiateMultipartUploadResult>".encode()), "2~x")
        self.assertRaises(MalformedAnswer, parseUploadId, b"<I><UploadId></UploadId></I>")
        self.assertIn(b'<Part><PartNumber>2</PartNumber><ETag>"e&lt;"</ETag></Part>',
                      completeBody([(1, "x"), (2, '"e<"')]))


# Uploads, with a fake S3 client


class ClientInterfaceTests(SynchronousTestCase):
    """The real client and the fake both provide what the stores rely on."""

    def test_client(self) -> None:
        client = S3Client(
            FakeHTTP(), Clock(), "http://127.0.0.1:1", "b",  # type: ignore[arg-type]
            Signer(Credentials("k", "s"), "us-east-1"),
        )
        self.assertTrue(verifyObject(IS3Client, client))

    def test_fake(self) -> None:
        self.assertTrue(verifyObject(IS3Client, FakeS3()))


class UploadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s3 = FakeS3()
        # One part in flight (the tests that want more say so): the
        # steps of the pipeline one at a time.
        self.store = S3Store(self.s3, "p/", partSize=5 * MiB, partsInFlight=1)  # type: ignore[arg-type]
        self.body = FakeBody()
        self.upload = self.store.begin("f.bin")
        self.upload.registerProducer(self.body, True)  # type: ignore[arg-type]

    def writeMiB(self, count: int, byte: bytes = b"x") -> None:
        for _ in range(count):
            self.upload.write(byte * MiB)

    def test_interfaces(self) -> None:
        verifyObject(IUpload, self.upload)
        verifyObject(IUploadStore, self.store)
        verifyObject(IStoredFile, S3File(self.s3, "k", FileInfo("k", 0, "", 0), "e"))  # type: ignore[arg-type]

    def test_smallBodyOnePut(self) -> None:
        """A body under one part is stored by one PutObject, checked by its SHA-256."""
        self.upload.write(b"hello")
        self.upload.write(b" world")
        self.assertEqual(self.s3.pending(), [])
        d = self.upload.commit(sha(b"hello world"))
        self.assertEqual(self.s3.answer("head").args, ("p/f.bin",))
        put = self.s3.answer("put", "etag")
        self.assertEqual(put.args, ("p/f.bin", [b"hello", b" world"], sha(b"hello world")))
        self.s3.answer("head", ObjectHead(11, "etag", 1000.0, sha(b"hello world")))
        info, replaced = self.successResultOf(d)
        self.assertEqual(info, FileInfo("f.bin", 11, sha(b"hello world"), 1000.0))
        self.assertFalse(replaced)
        self.assertNotIn("createUpload", [c.name for c in self.s3.calls])

    def test_replaced(self) -> None:
        self.upload.write(b"x")
        d = self.upload.commit(sha(b"x"))
        self.s3.answer("head", ObjectHead(3, "old", 1.0, sha(b"old")))
        self.s3.answer("put", "etag")
        self.s3.answer("head", ObjectHead(1, "etag", 2.0, sha(b"x")))
        self.assertTrue(self.successResultOf(d)[1])

    def test_partsSentAsTheyFill(self) -> None:
        """
        Part 1 goes out as soon as it is full; part 2 is hashed once full and
        the body paused until part 1 is in; then part 2 goes and the body
        resumes.  At most two parts are held.
        """
        self.writeMiB(4)
        self.assertEqual(self.s3.pending(), [])
        self.writeMiB(1)
        self.assertEqual(self.s3.pending(), ["createUpload"])
        staging = self.s3.take("createUpload").args[0]
        self.assertTrue(staging.startswith("p/.streamrelay/partial/"), staging)
        self.writeMiB(5, b"y")
        self.assertEqual(self.body.log, ["pause"])
        self.upload.write(b"z")  # a read already under way when paused
        self.s3.answer("createUpload", "up1")
        part1 = self.s3.take("uploadPart")
        self.assertEqual(part1.args[:3], (staging, "up1", 1))
        self.assertEqual(part1.args[3], [b"x" * MiB] * 5)
        self.assertEqual(part1.args[4], sha(b"x" * 5 * MiB))
        part1.result.callback('"e1"')
        part2 = self.s3.take("uploadPart")
        self.assertEqual(part2.args[2:5], (2, [b"y" * MiB] * 5, sha(b"y" * 5 * MiB)))
        self.assertEqual(self.body.log, ["pause", "resume"])

        d = self.upload.commit(sha(b"x" * 5 * MiB + b"y" * 5 * MiB + b"z"))
        part2.result.callback('"e2"')
        part3 = self.s3.take("uploadPart")
        self.assertEqual(part3.args[2:4], (3, [b"z"]))
        part3.result.callback('"e3"')
        parts = [(1, '"e1"'), (2, '"e2"'), (3, '"e3"')]
        self.assertEqual(self.s3.answer("complete").args, (staging, "up1", parts))
        size = 10 * MiB + 1
        digest = sha(b"x" * 5 * MiB + b"y" * 5 * MiB + b"z")
        self.assertEqual(self.s3.answer("head", ObjectHead(size, "s-3", 5.0, None)).args,
                         (staging,))
        self.assertEqual(self.s3.answer("head").args, ("p/f.bin",))
        copy = self.s3.answer("copy", "s-3")
        self.assertEqual(copy.args, (staging, "p/f.bin", "s-3", {"x-amz-meta-sha256": digest}))
        self.assertEqual(self.s3.take("delete").args, (staging,))
        self.s3.answer("head", ObjectHead(size, "s-3", 6.0, digest))
        info, replaced = self.successResultOf(d)
        self.assertEqual((info.size, info.sha256, replaced), (size, digest, False))

    def test_twoPartsInFlight(self) -> None:
        """
        With two parts in flight, the third is hashed and the body paused
        until one of them is in; parts may finish in any order.
        """
        self.store.partsInFlight = 2
        self.writeMiB(5)
        self.s3.answer("createUpload", "up1")
        self.writeMiB(5)
        self.assertEqual([c.args[2] for c in self.s3.calls if c.name == "uploadPart"], [1, 2])
        self.assertEqual(self.body.log, [])
        self.writeMiB(5)
        self.assertEqual(self.body.log, ["pause"])
        part2 = [c for c in self.s3.calls if c.name == "uploadPart"][1]
        part2.result.callback('"e2"')
        self.assertEqual([c.args[2] for c in self.s3.calls if c.name == "uploadPart"], [1, 2, 3])
        self.assertEqual(self.body.log, ["pause", "resume"])
        d = self.upload.commit(sha(b"x" * 15 * MiB))
        self.s3.answer("uploadPart", '"e1"')
        self.s3.answer("uploadPart", '"e3"')
        parts = [(1, '"e1"'), (2, '"e2"'), (3, '"e3"')]
        self.assertEqual(self.s3.answer("complete").args[2], parts)
        self.assertNoResult(d)

    def test_partsWaitingForTheUploadId(self) -> None:
        """Parts cut before S3 named the multipart upload all go once it has."""
        self.store.partsInFlight = 3
        self.writeMiB(15)
        self.assertEqual(self.s3.pending(), ["createUpload"])
        self.s3.answer("createUpload", "up1")
        parts = [c for c in self.s3.calls if c.name == "uploadPart"]
        self.assertEqual([(c.args[1], c.args[2]) for c in parts],
                         [("up1", 1), ("up1", 2), ("up1", 3)])

    def test_creationFails(self) -> None:
        self.store.partsInFlight = 2
        self.writeMiB(10)
        self.s3.answer("createUpload", S3Error(403, "AccessDenied"))
        self.assertRaises(UploadFailed, self.upload.write, b"x")
        self.upload.abort()
        self.assertEqual(self.s3.pending(), [])
        self.assertNotIn("uploadPart", [c.name for c in self.s3.calls])

    def test_memoryBounded(self) -> None:
        """However long S3 takes, the body is paused with about two parts held."""
        self.writeMiB(5)
        for _ in range(20):
            if not self.body.paused:
                self.writeMiB(1)
        held = self.upload._filled + sum(
            len(c) for c in (self.upload._ready.chunks if self.upload._ready else [])
        )
        self.assertTrue(self.body.paused)
        self.assertLessEqual(held, 5 * MiB)
        self.assertEqual(self.upload.size, 10 * MiB)

    def test_threePartsInFlightByDefault(self) -> None:
        """
        A store made with the defaults sends three 5 MiB parts of an upload
        at once (S3 writes them down while the next arrives) and pauses the
        body with a fourth one full: at most four parts, 20 MiB, are held.
        """
        store = S3Store(self.s3, "p/")  # type: ignore[arg-type]
        self.assertEqual((store.partSize, store.partsInFlight), (5 * MiB, 3))
        upload = store.begin("g.bin")
        body = FakeBody()
        upload.registerProducer(body, True)  # type: ignore[arg-type]
        for _ in range(5):
            upload.write(b"x" * MiB)
        self.s3.answer("createUpload", "up1")
        for _ in range(30):
            if not body.paused:
                upload.write(b"x" * MiB)
        sent = [c for c in self.s3.calls if c.name == "uploadPart"]
        self.assertEqual([c.args[2] for c in sent], [1, 2, 3])
        self.assertTrue(body.paused)
        self.assertEqual(upload.size, 20 * MiB)
        held = sum(len(b) for c in sent for b in c.args[3]) + upload._filled + sum(
            len(c) for c in (upload._ready.chunks if upload._ready else [])
        )
        self.assertLessEqual(held, 4 * 5 * MiB)
        upload.abort()

    def test_partFailureFailsTheBody(self) -> None:
        """
        A part S3 refuses fails the body's next write (resuming it if
        paused), and the abort that follows aborts the multipart upload.
        """
        self.writeMiB(10)
        self.assertTrue(self.body.paused)
        self.s3.answer("createUpload", "up1")
        self.s3.answer("uploadPart", S3Error(500, "InternalError"))
        self.assertFalse(self.body.paused)
        self.assertRaises(UploadFailed, self.upload.write, b"more")
        self.upload.abort()
        abort = self.s3.answer("abortUpload")
        self.assertEqual(abort.args[1], "up1")
        self.s3.answer("lastPartTime", S3Error(404, "NoSuchUpload"))
        self.assertEqual(self.s3.pending(), [])
        self.successResultOf(self.store.settled())

    def test_failedPartLetGo(self) -> None:
        """
        A refused part's bytes go with its upload, without waiting for the
        cycle collector (which a service runs seldom): what the upload keeps
        of the failure holds no frame that sent the part.
        """
        gc.disable()
        self.addCleanup(gc.enable)
        chunk = b"y" * MiB
        alone = sys.getrefcount(chunk)
        for _ in range(5):
            self.upload.write(chunk)
        self.s3.answer("createUpload", "up1")
        self.s3.answer("uploadPart", S3Error(500, "InternalError"))
        self.assertRaises(UploadFailed, self.upload.write, b"more")
        self.upload.abort()
        self.s3.answer("abortUpload")
        self.s3.answer("lastPartTime", S3Error(404, "NoSuchUpload"))
        self.successResultOf(self.store.settled())
        del self.upload
        self.s3.calls.clear()
        self.assertEqual(sys.getrefcount(chunk), alone)

    def test_quotaIsStorageFull(self) -> None:
        """A quota S3 enforces is the store being full (the route answers 507)."""
        self.writeMiB(5)
        self.s3.answer("createUpload", "up1")
        self.s3.answer("uploadPart", S3Error(403, "QuotaExceeded"))
        self.assertRaises(StorageFull, self.upload.write, b"x")
        small = self.store.begin("small.txt")
        small.write(b"x")
        d = small.commit(sha(b"x"))
        self.s3.answer("head")
        self.s3.answer("put", S3Error(403, "QuotaExceeded"))
        self.failureResultOf(d, StorageFull)

    def test_abortWhileCreating(self) -> None:
        """An abort before S3 named the upload aborts it once it is named."""
        self.writeMiB(5)
        self.upload.abort()
        self.assertEqual(self.s3.pending(), ["createUpload"])
        self.s3.answer("createUpload", "up1")
        self.assertEqual(self.s3.answer("abortUpload").args[1], "up1")
        self.s3.answer("lastPartTime", S3Error(404, "NoSuchUpload"))
        self.assertNotIn("uploadPart", [c.name for c in self.s3.calls])

    def test_abortCancelsPartInFlight(self) -> None:
        self.writeMiB(5)
        self.s3.answer("createUpload", "up1")
        part = self.s3.take("uploadPart")
        self.upload.abort()
        self.assertTrue(part.cancelled)
        self.s3.answer("abortUpload")
        # S3 still knows the upload: a part in flight outlived the abort.
        self.s3.answer("lastPartTime", 123.0)
        self.s3.clock.advance(1)
        self.s3.answer("abortUpload")
        self.s3.answer("lastPartTime", S3Error(404, "NoSuchUpload"))
        self.assertEqual(self.s3.pending(), [])
        self.assertEqual(self.store._live, set())

    def test_abortSmallBody(self) -> None:
        self.upload.write(b"x")
        self.upload.abort()
        self.assertEqual(self.s3.calls, [])
        self.assertRaises(RuntimeError, self.upload.write, b"x")

    def test_abortDuringCommit(self) -> None:
        """
        The route aborts when its commit is cancelled: the commit stops at
        its next step, before the file is published, and cleans up.
        """
        self.writeMiB(6)
        self.s3.answer("createUpload", "up1")
        self.s3.answer("uploadPart", '"e1"')
        d = self.upload.commit(sha(b"x" * 6 * MiB))
        self.s3.answer("uploadPart", '"e2"')
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.upload.abort()
        self.s3.answer("complete")
        staging = self.upload._staging
        self.s3.answer("head", ObjectHead(6 * MiB, "s", 1.0, None))
        self.s3.answer("head")
        self.assertEqual(self.s3.answer("delete").args, (staging,))
        self.assertNotIn("copy", [c.name for c in self.s3.calls])

    def test_abortBeforeComplete(self) -> None:
        """Aborted before CompleteMultipartUpload, the multipart upload is aborted."""
        self.writeMiB(6)
        self.s3.answer("createUpload", "up1")
        self.s3.answer("uploadPart", '"e1"')
        d = self.upload.commit(sha(b"x" * 6 * MiB))
        d.cancel()
        self.upload.abort()
        self.s3.answer("uploadPart", '"e2"')
        self.assertEqual(self.s3.answer("abortUpload").args[1], "up1")
        self.assertNotIn("complete", [c.name for c in self.s3.calls])
        self.failureResultOf(d, CancelledError)

    def test_commitFailsWhenPublishFails(self) -> None:
        self.writeMiB(5)
        self.s3.answer("createUpload", "up1")
        self.s3.answer("uploadPart", '"e1"')
        d = self.upload.commit(sha(b"x" * 5 * MiB))
        self.s3.answer("complete")
        self.s3.answer("head", ObjectHead(5 * MiB, "s", 1.0, None))
        self.s3.answer("head")
        self.s3.answer("copy", S3Error(500, "InternalError"))
        self.failureResultOf(d, S3Error)
        self.assertEqual(self.s3.answer("delete").args, (self.upload._staging,))

    def test_partSizeGrows(self) -> None:
        self.assertEqual(partTarget(8 * MiB, 1), 8 * MiB)
        self.assertEqual(partTarget(8 * MiB, 2000), 8 * MiB)
        self.assertEqual(partTarget(8 * MiB, 2001), 16 * MiB)
        self.assertEqual(partTarget(8 * MiB, 10000), 128 * MiB)


# The store


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s3 = FakeS3()
        self.store = S3Store(self.s3, "p", partSize=5 * MiB)  # type: ignore[arg-type]

    def test_keys(self) -> None:
        self.assertEqual(self.store.key("a b"), "p/a b")
        self.assertEqual(self.store.stagingKey("t"), "p/.streamrelay/partial/t")
        self.assertEqual(S3Store(self.s3, "").key("x"), "x")  # type: ignore[arg-type]

    def test_statAndDelete(self) -> None:
        d = self.store.stat("x")
        self.s3.answer("head", None)
        self.assertIsNone(self.successResultOf(d))
        d2 = self.store.delete("x")
        self.s3.answer("head", None)
        self.assertFalse(self.successResultOf(d2))
        d3 = self.store.delete("x")
        self.s3.answer("head", ObjectHead(1, "e", 1.0, sha(b"x")))
        self.assertEqual(self.s3.answer("delete").args, ("p/x",))
        self.assertTrue(self.successResultOf(d3))

    def test_list(self) -> None:
        """
        Names come in order, past C{after}, over pages; keys no file can
        have are skipped; digests known by (key, ETag) need no HEAD.
        """
        self.store.digests.remember("p/a", "e-a", sha(b"a"))
        d = self.store.list("0", 2)
        call = self.s3.take("listObjects")
        self.assertEqual(call.args, ("p/", "p/0", None, 3))
        call.result.callback(ObjectPage([
            ListedObject("p/.hidden", 1, '"x"', 1.0),
            ListedObject("p/a", 1, '"e-a"', 10.9),
        ], True, "tok"))
        call = self.s3.take("listObjects")
        self.assertEqual(call.args, ("p/", "p/0", "tok", 2))
        call.result.callback(ObjectPage([
            ListedObject("p/b", 2, '"e-b"', 20.0),
            ListedObject("p/c", 3, '"e-c"', 30.0),
        ], False, None))
        self.assertEqual(self.s3.take("head").args, ("p/b",))
        self.s3.answer("head", ObjectHead(2, "e-b", 20.0, sha(b"b")))
        files, more = self.successResultOf(d)
        self.assertEqual(files, [FileInfo("a", 1, sha(b"a"), 10.0),
                                 FileInfo("b", 2, sha(b"b"), 20.0)])
        self.assertTrue(more)

    def test_sweep(self) -> None:
        """
        Only uploads and staging objects idle for C{staleAfter} are removed,
        never those of this store's uploads in progress.
        """
        self.store.staleAfter = 100.0
        self.s3.clock.advance(1000)
        self.store.started("p/.streamrelay/partial/mine")
        d = Deferred.fromCoroutine(self.store.sweepStale())
        self.assertEqual(self.s3.take("listUploads").args, ("p/", None, None))
        self.s3.answer("listUploads", UploadPage([
            PendingUpload("p/.streamrelay/partial/mine", "u0", 1.0),
            PendingUpload("p/.streamrelay/partial/old", "u1", 1.0),
            PendingUpload("p/.streamrelay/partial/busy", "u2", 1.0),
            PendingUpload("p/.streamrelay/partial/new", "u3", 950.0),
        ], False, None, None))
        old = ("p/.streamrelay/partial/old", "u1")
        self.assertEqual(self.s3.answer("lastPartTime", None).args, old)
        self.assertEqual(self.s3.answer("abortUpload").args, old)
        self.s3.answer("lastPartTime", 990.0)  # busy: a part came recently
        self.assertEqual(self.s3.take("listObjects").args[0], "p/.streamrelay/partial/")
        self.s3.answer("listObjects", ObjectPage([
            ListedObject("p/.streamrelay/partial/done", 1, '"e"', 10.0),
            ListedObject("p/.streamrelay/partial/fresh", 1, '"e"', 999.0),
        ], False, None))
        self.assertEqual(self.s3.answer("delete").args, ("p/.streamrelay/partial/done",))
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(self.s3.pending(), [])

    def test_settled(self) -> None:
        """C{settled} waits for background work, at most C{timeout} seconds."""
        self.store.removeLater("p/.streamrelay/partial/x")
        d = self.store.settled(5)
        self.assertNoResult(d)
        self.s3.answer("delete")
        self.successResultOf(d)
        self.store.removeLater("p/.streamrelay/partial/y")
        d = self.store.settled(5)
        self.s3.clock.advance(5)
        self.successResultOf(d)

    def test_readiness(self) -> None:
        """C{writable} follows HEAD of the bucket, asked at most every few seconds."""
        self.assertFalse(self.store.writable())
        self.s3.answer("bucketReachable")
        self.assertTrue(self.store.writable())
        self.assertEqual(self.s3.pending(), [])
        self.s3.clock.advance(PROBE_EVERY)
        self.assertTrue(self.store.writable())
        self.s3.answer("bucketReachable", S3Error(404, "NoSuchBucket"))
        self.assertFalse(self.store.writable())
        self.assertEqual(self.s3.pending(), [])


class StreamTests(SynchronousTestCase):
    """Downloads: the S3 connection is paused whenever the client is."""

    def setUp(self) -> None:
        self.s3 = FakeS3()
        self.file = S3File(self.s3, "p/x", FileInfo("x", 10, "", 0), "etag")  # type: ignore[arg-type]
        self.consumer = StringTransport()
        self.s3transport = StringTransport()

    def respond(self, ranged: bytes = b"bytes 2-7/10") -> Any:
        delivered: list[Any] = []

        class Response:
            headers = Headers({b"content-range": [ranged]})

            def deliverBody(self, protocol: Any) -> None:
                delivered.append(protocol)

        self.s3.answer("get", Response())
        [pump] = delivered
        return pump

    def test_streamWithBackpressure(self) -> None:
        d = self.file.stream(2, 8, self.consumer)
        self.assertEqual(self.s3.take("get").args, ("p/x", 2, 8, "etag"))
        producer: Any = self.consumer.producer
        producer.pauseProducing()  # the client is not reading yet
        pump = self.respond()
        pump.makeConnection(self.s3transport)
        self.assertEqual(self.s3transport.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(self.s3transport.producerState, "producing")
        pump.dataReceived(b"234")
        pump.dataReceived(b"567extra")
        self.assertEqual(self.consumer.value(), b"234567")
        pump.connectionLost(Failure(ResponseDone()))
        self.successResultOf(d)
        self.assertIsNone(self.consumer.producer)

    def test_shortBody(self) -> None:
        d = self.file.stream(2, 8, self.consumer)
        pump = self.respond()
        pump.makeConnection(self.s3transport)
        pump.dataReceived(b"23")
        pump.connectionLost(Failure(ResponseDone()))
        self.failureResultOf(d, ObjectChanged)

    def test_replaced(self) -> None:
        d = self.file.stream(2, 8, self.consumer)
        self.s3.answer("get", S3Error(412, "PreconditionFailed"))
        self.failureResultOf(d, ObjectChanged)

    def test_clientGone(self) -> None:
        """The client going away closes the S3 connection."""
        d = self.file.stream(2, 8, self.consumer)
        pump = self.respond()
        pump.makeConnection(self.s3transport)
        producer: Any = self.consumer.producer
        producer.stopProducing()
        self.assertEqual(self.s3transport.producerState, "stopped")
        self.failureResultOf(d, CancelledError)

    def test_cancelBeforeAnswer(self) -> None:
        d = self.file.stream(2, 8, self.consumer)
        d.cancel()
        self.assertTrue(self.s3.calls[0].cancelled)
        self.failureResultOf(d, CancelledError)


# Options


class OptionsTests(SynchronousTestCase):
    def parse(self, argv: list[str], environ: dict[str, str]) -> BackendOptions:
        options = BackendOptions()
        options.environ = environ
        options.parseOptions(argv)
        return options

    def test_url(self) -> None:
        self.assertEqual(parseS3URL("s3://bucket"), ("bucket", ""))
        self.assertEqual(parseS3URL("s3://bucket/"), ("bucket", ""))
        self.assertEqual(parseS3URL("s3://bucket/a/b/"), ("bucket", "a/b/"))
        for bad in ["s3://", "s3:///x", "http://b/x", "s3://b/a//b"]:
            self.assertRaises(usage.UsageError, parseS3URL, bad)

    def test_fromEnvironment(self) -> None:
        options = self.parse(["--storage", "s3://b/p"], {
            "AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk", "AWS_REGION": "eu-west-3",
        })
        settings = options["s3"]
        self.assertEqual(
            {k: settings[k] for k in ("bucket", "prefix", "region", "endpoint", "partSize",
                                      "accessKey", "secretKey")},
            {"bucket": "b", "prefix": "p/", "region": "eu-west-3",
             "endpoint": "https://s3.eu-west-3.amazonaws.com", "partSize": 5 * MiB,
             "accessKey": "ak", "secretKey": "sk"},
        )
        self.assertEqual(settings["partsInFlight"], 3)
        # The option's defaults are the store's own.
        from streamrelay.store.s3.store import DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT

        self.assertEqual(
            (settings["partSize"], settings["partsInFlight"]),
            (DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT),
        )

    def test_streamrelayVariables(self) -> None:
        options = self.parse([], {
            "STREAMRELAY_STORAGE": "s3://b", "STREAMRELAY_S3_ENDPOINT": "http://127.0.0.1:7480",
            "STREAMRELAY_S3_ACCESS_KEY": "ak", "STREAMRELAY_S3_SECRET_KEY": "sk",
            "STREAMRELAY_S3_PART_SIZE": "16M", "AWS_ACCESS_KEY_ID": "other",
        })
        self.assertEqual(options["s3"]["endpoint"], "http://127.0.0.1:7480")
        self.assertEqual(options["s3"]["accessKey"], "ak")
        self.assertEqual(options["s3"]["partSize"], 16 * MiB)
        self.assertEqual(options["s3"]["region"], "us-east-1")

    def test_refused(self) -> None:
        creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
        for argv, environ in [
            (["--storage", "s3://b", "--s3-part-size", "4M"], creds),
            (["--storage", "s3://b"], {}),
            (["--storage", "s3://b", "--s3-endpoint", "ftp://x"], creds),
            (["--storage", "s3://b", "--s3-endpoint", "http://h/path"], creds),
            (["--storage", "s3://b", "--s3-endpoint", "http://h:99999"], creds),
            (["--storage", "s3://b", "--s3-endpoint", "http://a..b:9000"], creds),
            (["--storage", "s3://b", "--s3-endpoint", "http://a b:9000"], creds),
            (["--storage", "s3://b", "--s3-parts-in-flight", "0"], creds),
            (["--storage", "s3://b", "--s3-payload-hash", "md5"], creds),
        ]:
            self.assertRaises(usage.UsageError, self.parse, argv, environ)

    def test_endpointHosts(self) -> None:
        """An IPv6 literal in brackets, and a name with C{_}, are endpoints."""
        creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
        for endpoint in ["http://[::1]:7480", "http://minio_1:9000", "https://S3.example.net"]:
            argv = ["--storage", "s3://b", "--s3-endpoint", endpoint]
            self.assertEqual(self.parse(argv, creds)["s3"]["endpoint"], endpoint)

    def test_payloadHash(self) -> None:
        """
        Parts' SHA-256 is signed for an http endpoint and not for https,
        unless the option says otherwise.
        """
        creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
        for endpoint, choice, signed in [
            ("http://127.0.0.1:7480", None, True),
            ("HTTPS://s3.example", None, False),
            ("https://s3.example", "sha256", True),
            ("http://127.0.0.1:7480", "unsigned", False),
            ("http://127.0.0.1:7480", "auto", True),
        ]:
            argv = ["--storage", "s3://b", "--s3-endpoint", endpoint]
            if choice is not None:
                argv += ["--s3-payload-hash", choice]
            self.assertEqual(self.parse(argv, creds)["s3"]["signPayload"], signed, argv)
        fromEnvironment = self.parse(
            ["--storage", "s3://b"], dict(creds, STREAMRELAY_S3_PAYLOAD_HASH="sha256")
        )
        self.assertTrue(fromEnvironment["s3"]["signPayload"])

    def test_storeSignsAsSet(self) -> None:
        """The store made from the settings hashes parts, or not, as they say."""
        from streamrelay.store.s3.config import makeS3Store

        creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
        for choice, unsigned in [("sha256", False), ("unsigned", True)]:
            settings = self.parse(
                ["--storage", "s3://b", "--s3-endpoint", "http://127.0.0.1:1",
                 "--s3-payload-hash", choice], creds,
            )["s3"]
            reactor: Any = Clock()
            reactor.addSystemEventTrigger = lambda *args: None
            store = makeS3Store(settings, reactor)
            self.assertEqual(store.client.payloadHash is unsignedPayload, unsigned, choice)

    def test_timeout(self) -> None:
        """--s3-timeout is the client's timeout; 60 s unless set."""
        from streamrelay.store.s3.config import makeS3Store

        creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
        reactor: Any = Clock()
        reactor.addSystemEventTrigger = lambda *args: None
        for argv, timeout in [([], 60.0), (["--s3-timeout", "2.5"], 2.5)]:
            settings = self.parse(["--storage", "s3://b", *argv], creds)["s3"]
            client: Any = makeS3Store(settings, reactor).client
            self.assertEqual(client.timeout, timeout)
        for bad in ["0", "x", "3601"]:
            self.assertRaises(usage.UsageError, self.parse,
                              ["--storage", "s3://b", "--s3-timeout", bad], creds)

    def test_diskStays(self) -> None:
        self.assertIsNone(self.parse(["--storage", "/srv/files"], {})["s3"])

    def test_checkNeedsS3URL(self) -> None:
        self.assertRaises(usage.UsageError, checkS3Options,
                          {"storage": "dir", "s3-part-size": "8M"})

