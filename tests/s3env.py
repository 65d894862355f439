"""
The real S3 server the S3 integration tests use, and buckets made for them.

The server is named by C{S3_ENDPOINT_URL}, C{S3_ACCESS_KEY},
C{S3_SECRET_KEY} and C{S3_REGION} in the environment or, when those are
unset, in the file C{.ci/s3-ceph.sh start} writes (C{$S3_ENV_FILE},
default C{/tmp/ci-ceph-s3/env}).  Without either, or when the server does
not answer, the tests are skipped, saying why; with
C{STREAMRELAY_TEST_S3=require} (for CI) they fail instead.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.credentials import Credentials
from treq.client import HTTPClient
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from streamrelay.store.s3.client import S3Client
from streamrelay.store.s3.messages import S3Error
from streamrelay.store.s3.signing import Signer

DEFAULT_ENV_FILE = "/tmp/ci-ceph-s3/env"
_ASSIGNMENT = re.compile(r"(S3_[A-Z_]+)=(\S*)")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    accessKey: str
    secretKey: str
    region: str

    def processEnv(self) -> dict[str, str]:
        """What a backend's environment needs to reach it."""
        return {
            "AWS_ACCESS_KEY_ID": self.accessKey,
            "AWS_SECRET_ACCESS_KEY": self.secretKey,
            "AWS_REGION": self.region,
        }

    def backendArgs(self, bucket: str, prefix: str = "") -> list[str]:
        return ["--storage", f"s3://{bucket}/{prefix}", "--s3-endpoint", self.endpoint]


def _settings() -> tuple[dict[str, str], str]:
    keys = ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    if all(os.environ.get(k) for k in keys):
        return dict(os.environ), "the environment"
    path = Path(os.environ.get("S3_ENV_FILE", DEFAULT_ENV_FILE))
    try:
        text = path.read_text()
    except OSError:
        return {}, str(path)
    return dict(_ASSIGNMENT.findall(text)), str(path)


def findServer() -> tuple[S3Server | None, str]:
    """The S3 server to test against, or L{None} and why there is none."""
    settings, source = _settings()
    endpoint = settings.get("S3_ENDPOINT_URL")
    if not endpoint or not settings.get("S3_ACCESS_KEY") or not settings.get("S3_SECRET_KEY"):
        return None, (
            f"no S3 server: S3_ENDPOINT_URL is unset and {source} names none "
            "(run `bash .ci/s3-ceph.sh start` first)"
        )
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        return None, f"S3 endpoint {endpoint} is not on loopback; tests only use 127.0.0.0/8"
    try:
        socket.create_connection((host, parts.port or 80), timeout=2).close()
    except OSError as e:
        return None, f"the S3 server at {endpoint} (from {source}) does not answer: {e}"
    server = S3Server(
        endpoint, settings["S3_ACCESS_KEY"], settings["S3_SECRET_KEY"],
        settings.get("S3_REGION") or "us-east-1",
    )
    return server, ""


SERVER, SKIP_REASON = findServer()
#: CI sets this so that a missing server fails the S3 tests, not skips them.
REQUIRED = os.environ.get("STREAMRELAY_TEST_S3") == "require"


def skipUnlessServer(cls: type[TestCase]) -> type[TestCase]:
    """Skip the test class without a server, or fail its tests when one is required."""
    if SERVER is None:
        if REQUIRED:
            def setUp(self: TestCase) -> None:
                self.fail(f"STREAMRELAY_TEST_S3=require, but {SKIP_REASON}")

            cls.setUp = setUp  # type: ignore[method-assign,assignment]
        else:
            cls.skip = SKIP_REASON
    return cls


def testClient(test: TestCase, bucket: str) -> S3Client:
    """An S3 client on the test's reactor, its connections closed at cleanup."""
    from twisted.internet import reactor

    assert SERVER is not None
    pool = HTTPConnectionPool(reactor, persistent=True)
    test.addCleanup(pool.closeCachedConnections)
    signer = Signer(Credentials(SERVER.accessKey, SERVER.secretKey), SERVER.region)
    return S3Client(HTTPClient(Agent(reactor, pool=pool)), reactor, SERVER.endpoint, bucket, signer)


async def emptyBucket(client: S3Client) -> None:
    """Abort every multipart upload and delete every object of the bucket."""
    while True:
        uploads = await client.listUploads("")
        for upload in uploads.uploads:
            await client.abortUpload(upload.key, upload.uploadId)
        if not uploads.truncated:
            break
    while True:
        page = await client.call("GET", None, query=[("list-type", "2")])
        keys = re.findall(rb"<Key>([^<]*)</Key>", page.body)
        for key in keys:
            await client.delete(key.decode("utf-8"))
        if not keys:
            break


async def newBucket(test: TestCase) -> tuple[str, S3Client]:
    """A new bucket for one test, emptied and removed at cleanup."""
    bucket = "streamrelay-test-" + secrets.token_hex(6)
    client = testClient(test, bucket)
    await client.createBucket()

    async def remove() -> None:
        await emptyBucket(client)
        try:
            await client.call("DELETE", None, ok=(204,))
        except S3Error:
            pass

    from twisted.internet.defer import Deferred

    test.addCleanup(lambda: Deferred.fromCoroutine(remove()))
    return bucket, client


async def allKeys(client: S3Client, prefix: str = "") -> list[str]:
    """Every key of the bucket under C{prefix}, at any depth."""
    answer = await client.call("GET", None, query=[("list-type", "2"), ("prefix", prefix)])
    return [k.decode("utf-8") for k in re.findall(rb"<Key>([^<]*)</Key>", answer.body)]


async def pendingUploads(client: S3Client) -> list[Any]:
    return (await client.listUploads("")).uploads
