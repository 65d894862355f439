"""
The XML that S3 answers and takes, as plain Python values.

Only the elements streamrelay uses are read; namespaces are ignored, since
AWS, Ceph RGW and MinIO do not all use the same one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus
from xml.sax.saxutils import escape

from streamrelay.store.interfaces import StorageUnavailable


class S3Error(Exception):
    """
    S3 answered an error.

    @ivar status: the HTTP status.
    @ivar code: S3's error code (C{NoSuchKey}, C{SlowDown}, ...), or the
        status as text when the answer carried no XML error.
    """

    def __init__(self, status: int, code: str, message: str = "", key: str = "") -> None:
        super().__init__(status, code, message, key)
        self.status = status
        self.code = code
        self.message = message
        self.key = key

    def __str__(self) -> str:
        where = f" ({self.key})" if self.key else ""
        text = f": {self.message}" if self.message else ""
        return f"S3 {self.status} {self.code}{where}{text}"


class S3Unavailable(S3Error, StorageUnavailable):
    """S3 could not be reached, or failed inside, on every try."""


class PreconditionFailed(S3Error):
    """
    A conditional write lost: the object is not what its condition said
    (C{412 PreconditionFailed}: there is one for C{If-None-Match: *}, it
    is gone or has another ETag for C{If-Match}), or another write to it
    ran at the same moment (C{409 ConditionalRequestConflict} on AWS,
    C{ConcurrentModification} on Ceph RGW).
    """


#: The statuses a conditional write answers when its condition does not hold.
PRECONDITION_STATUSES = (409, 412)


class MalformedAnswer(Exception):
    """S3 answered something that is not the XML expected."""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse(body: bytes) -> ET.Element:
    """The root element of C{body}, with namespaces stripped from every tag."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise MalformedAnswer(f"not XML: {e}") from None
    for element in root.iter():
        element.tag = _local(element.tag)
    return root


def _text(element: ET.Element, path: str, default: str | None = None) -> str:
    found = element.find(path)
    if found is None:
        if default is None:
            raise MalformedAnswer(f"<{element.tag}> has no <{path}>")
        return default
    return found.text or ""


def errorFrom(status: int, body: bytes) -> S3Error:
    """The L{S3Error} an error answer describes (its body may be empty, as for HEAD)."""
    if body.strip():
        try:
            root = parse(body)
        except MalformedAnswer:
            pass
        else:
            if root.tag == "Error":
                return S3Error(
                    status,
                    _text(root, "Code", str(status)),
                    _text(root, "Message", ""),
                    _text(root, "Key", ""),
                )
    return S3Error(status, str(status))


def raiseIfError(status: int, body: bytes) -> ET.Element:
    """
    The root of a successful answer's XML; an C{<Error>} root raises, since
    CompleteMultipartUpload and CopyObject can fail after answering 200.
    """
    root = parse(body)
    if root.tag == "Error":
        raise errorFrom(500 if status == 200 else status, body)
    return root


def parseTimestamp(text: str) -> float:
    """An S3 ISO 8601 time (C{2024-05-01T12:00:00.000Z}) as a POSIX timestamp."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise MalformedAnswer(f"not a time: {text!r}") from None


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str
    modified: float


@dataclass(frozen=True)
class ObjectPage:
    """One page of ListObjectsV2."""

    objects: list[ListedObject]
    truncated: bool
    continuation: str | None


def parseObjectPage(body: bytes) -> ObjectPage:
    """
    A C{ListBucketResult}.  Keys are read URL-decoded, as asked for with
    C{encoding-type=url} (which lets keys hold characters XML cannot).
    """
    root = parse(body)
    if root.tag != "ListBucketResult":
        raise MalformedAnswer(f"expected <ListBucketResult>, got <{root.tag}>")
    encoded = _text(root, "EncodingType", "") == "url"

    def key(text: str) -> str:
        return unquote_plus(text) if encoded else text

    objects = [
        ListedObject(
            key(_text(item, "Key")),
            int(_text(item, "Size")),
            _text(item, "ETag", ""),
            parseTimestamp(_text(item, "LastModified")),
        )
        for item in root.iterfind("Contents")
    ]
    truncated = _text(root, "IsTruncated", "false").lower() == "true"
    token = root.find("NextContinuationToken")
    return ObjectPage(objects, truncated, token.text if token is not None else None)


@dataclass(frozen=True)
class PendingUpload:
    """An unfinished multipart upload, as ListMultipartUploads names it."""

    key: str
    uploadId: str
    initiated: float


@dataclass(frozen=True)
class UploadPage:
    uploads: list[PendingUpload]
    truncated: bool
    nextKey: str | None
    nextUploadId: str | None


def parseUploadPage(body: bytes) -> UploadPage:
    """A C{ListMultipartUploadsResult}."""
    root = parse(body)
    if root.tag != "ListMultipartUploadsResult":
        raise MalformedAnswer(f"expected <ListMultipartUploadsResult>, got <{root.tag}>")
    encoded = _text(root, "EncodingType", "") == "url"
    uploads = [
        PendingUpload(
            unquote_plus(_text(item, "Key")) if encoded else _text(item, "Key"),
            _text(item, "UploadId"),
            parseTimestamp(_text(item, "Initiated")),
        )
        for item in root.iterfind("Upload")
    ]
    truncated = _text(root, "IsTruncated", "false").lower() == "true"
    nextKey = _text(root, "NextKeyMarker", "") or None
    if nextKey is not None and encoded:
        nextKey = unquote_plus(nextKey)
    return UploadPage(uploads, truncated, nextKey, _text(root, "NextUploadIdMarker", "") or None)


def parseLastPartTime(body: bytes) -> float | None:
    """The newest C{LastModified} of a C{ListPartsResult}, or L{None} without parts."""
    root = parse(body)
    if root.tag != "ListPartsResult":
        raise MalformedAnswer(f"expected <ListPartsResult>, got <{root.tag}>")
    times = [parseTimestamp(_text(part, "LastModified")) for part in root.iterfind("Part")]
    return max(times) if times else None


def parseUploadId(body: bytes) -> str:
    """The upload id of an C{InitiateMultipartUploadResult}."""
    root = raiseIfError(200, body)
    uploadId = _text(root, "UploadId")
    if not uploadId:
        raise MalformedAnswer("empty <UploadId>")
    return uploadId


def parseCopyETag(status: int, body: bytes) -> str:
    """The ETag of a C{CopyObjectResult} or C{CopyPartResult}."""
    root = raiseIfError(status, body)
    return _text(root, "ETag")


def completeBody(parts: list[tuple[int, str]]) -> bytes:
    """The C{CompleteMultipartUpload} document for C{(number, etag)} parts."""
    items = "".join(
        f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
        for number, etag in parts
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{items}</CompleteMultipartUpload>"
    ).encode()
