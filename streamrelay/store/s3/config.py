"""
The backend's S3 options, and the L{S3Store} they describe.

Kept apart from the store so that the backend's C{tap} imports nothing
heavy (botocore, treq) unless it stores in S3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.python import usage

from streamrelay.uris import httpURL

if TYPE_CHECKING:
    from streamrelay.store.s3.store import S3Store

SCHEME = "s3://"
MIN_PART_SIZE = 5 << 20
MAX_PART_SIZE = 5 << 30
#: Seconds a stopping backend waits for its background S3 requests.
SETTLE_ON_SHUTDOWN = 10.0

#: C{optParameters} of the backend for S3 (each also read from
#: C{STREAMRELAY_<OPTION>}, like every option).
S3_OPTIONS: list[list[Any]] = [
    ["s3-endpoint", None, None,
     "S3 endpoint URL, e.g. http://127.0.0.1:7480 (default: $AWS_ENDPOINT_URL_S3, "
     "$AWS_ENDPOINT_URL, else AWS for the region). [env STREAMRELAY_S3_ENDPOINT]"],
    ["s3-region", None, None,
     "S3 region signed for (default: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1). "
     "[env STREAMRELAY_S3_REGION]"],
    ["s3-part-size", None, "5M",
     "Bytes per part of S3 multipart uploads, at least 5M; each upload holds up to "
     "--s3-parts-in-flight + 1 parts in memory. [env STREAMRELAY_S3_PART_SIZE]"],
    ["s3-parts-in-flight", None, "3",
     "Parts of one upload sent to S3 at once (1-16); each more holds one more part in "
     "memory and hides S3's latency better. [env STREAMRELAY_S3_PARTS_IN_FLIGHT]"],
    ["s3-payload-hash", None, "auto",
     "Whether each part's SHA-256 is signed, so that S3 checks its bytes: sha256, "
     "unsigned (each byte hashed once less by streamrelay and by S3), or auto: sha256 "
     "for an http endpoint, unsigned for https, where TLS guards the bytes. "
     "[env STREAMRELAY_S3_PAYLOAD_HASH]"],
    ["s3-timeout", None, "60",
     "Seconds S3 has to answer a request; for one sending a file's bytes, seconds in "
     "which no chunk of them (up to 1 MiB) went out, or no answer came after the last. "
     "Each request is tried 3 times. [env STREAMRELAY_S3_TIMEOUT]"],
    ["s3-access-key", None, None,
     "S3 access key id (default: $AWS_ACCESS_KEY_ID; prefer the environment). "
     "[env STREAMRELAY_S3_ACCESS_KEY]"],
    ["s3-secret-key", None, None,
     "S3 secret access key (default: $AWS_SECRET_ACCESS_KEY; prefer the environment). "
     "[env STREAMRELAY_S3_SECRET_KEY]"],
]


#: C{--s3-payload-hash}: whether part bodies are hashed and signed.
PAYLOAD_HASHES = ("auto", "sha256", "unsigned")


def signsPayload(choice: str, endpoint: str) -> bool:
    """
    Whether C{choice} of L{PAYLOAD_HASHES} signs the SHA-256 of part
    bodies: C{auto} signs it over plain http, where nothing else checks the
    bytes on the way, and not over https (as the AWS SDKs choose).
    """
    if choice not in PAYLOAD_HASHES:
        raise ValueError(f"not one of {PAYLOAD_HASHES}: {choice!r}")
    if choice == "auto":
        return not endpoint.lower().startswith("https:")
    return choice == "sha256"


def isS3URL(storage: str) -> bool:
    return storage.startswith(SCHEME)


def parseS3URL(url: str) -> tuple[str, str]:
    """
    The bucket and key prefix of C{s3://bucket/prefix}; the prefix is C{""}
    or ends with C{/}.
    """
    if not isS3URL(url):
        raise usage.UsageError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len(SCHEME):].partition("/")
    if not bucket or any(c in bucket for c in "?#@:\\ "):
        raise usage.UsageError(f"no usable bucket name in {url!r}")
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise usage.UsageError(f"empty folder in the prefix of {url!r}")
    return bucket, prefix + "/" if prefix else ""


def checkS3Options(options: Mapping[str, Any]) -> dict[str, Any]:
    """
    The S3 settings of the backend's options (a bucket, prefix, endpoint,
    region, part size, parts in flight, whether parts' SHA-256 is signed,
    the request timeout and credentials), or L{usage.UsageError}.
    """
    environ = getattr(options, "environ", os.environ)
    bucket, prefix = parseS3URL(str(options["storage"]))
    from streamrelay.options import parseSize

    partSize = parseSize(str(options["s3-part-size"]))
    if not MIN_PART_SIZE <= partSize <= MAX_PART_SIZE:
        raise usage.UsageError("--s3-part-size is between 5M and 5G")
    try:
        partsInFlight = int(options["s3-parts-in-flight"])
    except ValueError:
        partsInFlight = 0
    if not 1 <= partsInFlight <= 16:
        raise usage.UsageError("--s3-parts-in-flight is a whole number from 1 to 16")
    try:
        timeout = float(options["s3-timeout"])
    except ValueError:
        timeout = 0.0
    if not 1 <= timeout <= 3600:
        raise usage.UsageError("--s3-timeout is a number of seconds from 1 to 3600")
    region = (
        options["s3-region"] or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    endpoint = (
        options["s3-endpoint"] or environ.get("AWS_ENDPOINT_URL_S3")
        or environ.get("AWS_ENDPOINT_URL") or f"https://s3.{region}.amazonaws.com"
    )
    try:
        valid = not httpURL(endpoint).path.strip("/")
    except ValueError:
        valid = False
    if not valid:
        raise usage.UsageError(f"--s3-endpoint takes http(s)://host[:port], not {endpoint!r}")
    try:
        signPayload = signsPayload(str(options["s3-payload-hash"]), endpoint)
    except ValueError:
        raise usage.UsageError(
            f"--s3-payload-hash is one of {', '.join(PAYLOAD_HASHES)}"
        ) from None
    accessKey = options["s3-access-key"] or environ.get("AWS_ACCESS_KEY_ID")
    secretKey = options["s3-secret-key"] or environ.get("AWS_SECRET_ACCESS_KEY")
    if not accessKey or not secretKey:
        raise usage.UsageError(
            "S3 storage needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or --s3-access-key and --s3-secret-key)"
        )
    return {
        "bucket": bucket, "prefix": prefix, "endpoint": endpoint, "region": region,
        "partSize": partSize, "partsInFlight": partsInFlight,
        "signPayload": signPayload, "timeout": timeout,
        "accessKey": accessKey, "secretKey": secretKey,
        "sessionToken": environ.get("AWS_SESSION_TOKEN") or None,
    }


def makeS3Store(settings: Mapping[str, Any], reactor: Any) -> S3Store:
    """An L{S3Store} sending through a pool of persistent connections on C{reactor}."""
    from botocore.credentials import Credentials
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from streamrelay.store.s3.client import S3Client
    from streamrelay.store.s3.signing import Signer, threadedSHA256, unsignedPayload
    from streamrelay.store.s3.store import S3Store

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 32
    # Servers drop idle connections (AWS after about 20 s); retire them first.
    pool.cachedConnectionTimeout = 15
    http = HTTPClient(Agent(reactor, pool=pool))
    credentials = Credentials(
        settings["accessKey"], settings["secretKey"], settings["sessionToken"]
    )
    client = S3Client(
        http, reactor, settings["endpoint"], settings["bucket"],
        Signer(credentials, settings["region"]),
        payloadHash=threadedSHA256(reactor) if settings["signPayload"] else unsignedPayload,
        timeout=settings["timeout"],
    )
    store = S3Store(
        client, settings["prefix"], partSize=settings["partSize"],
        partsInFlight=settings["partsInFlight"],
    )
    # Give aborts already under way a moment to reach S3 before the
    # process ends (what they miss is swept later).
    reactor.addSystemEventTrigger("before", "shutdown", store.settled, SETTLE_ON_SHUTDOWN)
    return store
