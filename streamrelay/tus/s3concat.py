"""
Concatenating partial uploads kept in S3 into a final upload (tus
concatenation).

When every segment of the partial uploads, taken in order, but the last
holds at least S3's smallest part (5 MiB), the final upload is made of
those very segments: its record names them as its partial uploads'
objects, and publishing it copies them inside S3 as the parts of one
multipart upload (C{UploadPartCopy}).  Otherwise (a partial upload, or
the end of one, shorter than 5 MiB anywhere but last) the bytes are
streamed through the backend into segments of the final upload's own,
cut as any upload's are.  Either way they are read once, to compute the
SHA-256 of the whole.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IConsumer, IProducer
from zope.interface import implementer

from streamrelay.store import FileInfo
from streamrelay.store.s3.messages import S3Error
from streamrelay.store.s3.publishing import MAX_PARTS, MIN_PART_SIZE, storeError
from streamrelay.store.s3.reading import HashSink, ObjectChanged, S3File
from streamrelay.tus.interfaces import ResumableUpload
from streamrelay.tus.s3 import S3PartialWriter, S3ResumableStore, Segment

#: A partial upload's segment: the upload whose object it is, and the segment.
Piece = tuple[str, Segment]


def copyable(pieces: Sequence[Piece]) -> bool:
    """Whether C{pieces}, in order, can be the parts of one multipart upload."""
    return 0 < len(pieces) <= MAX_PARTS and all(
        segment.size >= MIN_PART_SIZE for _, segment in pieces[:-1]
    )


async def concatenate(
    resumable: S3ResumableStore, final: ResumableUpload, partials: Sequence[ResumableUpload]
) -> Any:
    """See L{streamrelay.tus.interfaces.IResumableStore.concatenate}."""
    pieces = [
        (partial.id, segment)
        for partial in partials
        for segment in resumable.layout(partial)
        if segment.size
    ]
    if copyable(pieces):
        return await _byReference(resumable, final, pieces)
    return await _streamed(resumable, final, pieces)


async def _read(resumable: S3ResumableStore, piece: Piece, consumer: IConsumer) -> None:
    owner, segment = piece
    key = resumable.keyOf(owner, segment)
    reader = S3File(resumable.client, key, FileInfo(key, segment.size, "", 0), segment.etag)
    try:
        await reader.stream(0, segment.size, consumer)
    except ObjectChanged as e:
        raise OSError(errno.EIO, f"segment {segment.token} of upload {owner} is gone") from e
    except S3Error as e:
        raise storeError(e) from e


async def _byReference(
    resumable: S3ResumableStore, final: ResumableUpload, pieces: Sequence[Piece]
) -> Any:
    """The final upload names its partial uploads' segments; they are only hashed."""
    hasher = HashSink()
    for piece in pieces:
        await _read(resumable, piece, hasher)
    layout = tuple(
        Segment(segment.token, segment.size, segment.etag, segment.owner or owner)
        for owner, segment in pieces
    )
    resumable.known(final.id, sum(segment.size for _, segment in pieces), layout)
    return hasher.digest


@implementer(IConsumer)
class _Tee:
    """Writes what it is given to a writer, and hashes it."""

    def __init__(self, writer: S3PartialWriter) -> None:
        self.writer = writer
        self.hasher = HashSink()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.writer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.writer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self.hasher.write(data)
        self.writer.write(data)


async def _streamed(
    resumable: S3ResumableStore, final: ResumableUpload, pieces: Sequence[Piece]
) -> Any:
    """The bytes go through the backend into the final upload's own segments."""
    writer = S3PartialWriter(resumable, final.id, 0, (), (), [])
    tee = _Tee(writer)
    total = sum(segment.size for _, segment in pieces)
    try:
        for piece in pieces:
            await _read(resumable, piece, tee)
        covered = await writer.flush()
        if covered != total:
            raise OSError(errno.EIO, f"{covered} of the {total} bytes were stored")
    except BaseException:
        await writer.truncate()
        raise
    finally:
        writer.close()
    if not total:
        resumable.known(final.id, 0, ())
    return tee.hasher.digest
