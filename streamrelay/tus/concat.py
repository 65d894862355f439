"""
tus concatenation (tus.io's C{concatenation} extension): partial uploads,
and the final upload made of them.

A partial upload (C{Upload-Concat: partial}) is written like any upload,
but it never becomes a file: not when its last byte arrives, whatever name
its metadata gives (it needs none).  It keeps to C{--max-size} and expires
like any upload; the C{pre-create} hook is asked for it with no name (it
stores bytes, though it makes no file): a refusal and a limit apply.

A final upload (C{Upload-Concat: final;URL URL...}) names complete partial
uploads by their URLs (absolute or relative; a query, such as a signed
URL's, is ignored) and the file by its C{Upload-Metadata}.  It is made in
the request creating it: the C{pre-create} hook is asked for it (protocol
C{tus}) with the sum of the partial uploads' lengths, the store puts their
bytes together and computes the SHA-256 of the whole, and it is published
like an upload that received its last byte (C{post-finish} once).  It takes
no C{PATCH} (C{403}).  The partial uploads stay as they are until they
expire, as tusd keeps them: a client may make another final upload of
them, or C{DELETE} them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError, tooLarge
from streamrelay.hooks.context import CLIENT_MAX_SIZE
from streamrelay.hooks.decisions import PreCreateAsker, smallerLimit
from streamrelay.receiving import shielded
from streamrelay.store import StorageFull
from streamrelay.tus.headers import badRequest, count, requestBody
from streamrelay.tus.interfaces import FINAL, PARTIAL, ResumableUpload
from streamrelay.tus.writing import WriteHolder
from streamrelay.webapp import requestId

if TYPE_CHECKING:
    from streamrelay.tus.protocol import TusUploads

#: The most partial uploads one final upload is made of.
MAX_PARTIALS = 1000

_log = Logger()


def concatOf(request: IRequest) -> str | list[str] | None:
    """
    What a creation's C{Upload-Concat} asks for: L{PARTIAL}, the ids of a
    final upload's partial uploads, or L{None} (no concatenation).
    """
    raw = request.getHeader(b"upload-concat")
    if raw is None:
        return None
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise badRequest("Upload-Concat is not ASCII.") from None
    if text == PARTIAL:
        return PARTIAL
    if not text.startswith(FINAL + ";"):
        raise badRequest(
            "Upload-Concat is 'partial', or 'final;' and the partial uploads' URLs."
        )
    urls = text[len(FINAL) + 1:].split()
    if not urls:
        raise badRequest("Upload-Concat: final; names no partial upload.")
    if len(urls) > MAX_PARTIALS:
        raise badRequest(f"A final upload is made of at most {MAX_PARTIALS} partial uploads.")
    return [uploadIdOf(url) for url in urls]


def uploadIdOf(url: str) -> str:
    """
    The upload id of an upload's URL, absolute or relative (C{/uploads/ID},
    C{https://host/uploads/ID?sr-...}).
    """
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    folder, _, last = path.rpartition("/")
    if not last or not (folder == "uploads" or folder.endswith("/uploads")):
        raise badRequest(f"Upload-Concat: {url[:200]!r} is not the URL of an upload.")
    return last


def concatHeader(upload: ResumableUpload) -> bytes | None:
    """The C{Upload-Concat} a C{HEAD} of C{upload} answers, if any."""
    if upload.concat == PARTIAL:
        return PARTIAL.encode("ascii")
    if upload.concat == FINAL and upload.parts is not None:
        urls = " ".join(f"/uploads/{p}" for p in upload.parts)
        return f"{FINAL};{urls}".encode("ascii")
    return None


def totalLength(partials: Sequence[ResumableUpload]) -> int:
    """
    The length of the final upload made of C{partials}, each a complete
    partial upload (as tusd: C{400} otherwise).
    """
    for partial in partials:
        if not partial.partial:
            raise badRequest(f"Upload {partial.id} is not a partial upload (Upload-Concat).")
        if partial.length is None or not partial.complete:
            raise badRequest(f"The partial upload {partial.id} is not finished.")
    return sum(partial.offset for partial in partials)


async def createFinal(
    tus: TusUploads, request: IRequest, ids: list[str], ask: PreCreateAsker | None
) -> bytes:
    """C{POST} of a final upload: made, and published, before it is answered."""
    if request.getHeader(b"upload-defer-length") is not None:
        raise badRequest("A final upload's length is its partial uploads': "
                         "it takes no Upload-Defer-Length.")
    declared = count(request, b"upload-length")
    body = requestBody(request)
    if body is not None and body.declaredLength != 0:
        raise badRequest("A final upload takes no body: its bytes are its partial uploads'.")
    metadata, name, pairs = tus.uploadMetadata(request)
    length = totalLength([await tus._live(i) for i in ids])
    if declared is not None and declared != length:
        raise badRequest(f"The partial uploads hold {length} bytes, not {declared}.")
    # The proxy's limit (--max-size, a signed URL's sr-max-size), which it
    # cannot apply to a length it does not know: each partial upload kept
    # to it, their sum need not.
    mine = smallerLimit(tus.maxSize, count(request, CLIENT_MAX_SIZE))
    if mine is not None and length > mine:
        raise tooLarge(mine)
    if ask is None:
        decision = await tus.hooks.preCreate(tus.contexts(request, "tus"), name, length, pairs)
    else:
        decision = await ask(name, length, pairs)
    limit = smallerLimit(mine, decision.maxSize)
    if limit is not None and length > limit:
        raise tooLarge(limit)
    now = tus.clock.seconds()
    final = ResumableUpload(
        id=secrets.token_hex(16), length=length, offset=0, metadata=metadata,
        name=decision.name or name, created=now, expires=now + tus.expiry,
        fileMetadata=dict(decision.metadata) if decision.metadata else None,
        maxSize=decision.maxSize, concat=FINAL, parts=list(ids),
    )
    await tus.resumable.create(final)
    _log.info(
        "tus created request_id={rid} upload={id} name={name!r} length={length} "
        "final_of={parts}",
        rid=requestId(request), id=final.id, name=final.name, length=length,
        parts=",".join(ids),
    )
    request.setHeader(b"location", b"/uploads/" + final.id.encode("ascii"))
    final = await shielded(Deferred.fromCoroutine(_make(tus, request, final)))
    tus._uploadHeaders(request, final)
    request.setResponseCode(201)
    return b""


async def _make(tus: TusUploads, request: IRequest, final: ResumableUpload) -> ResumableUpload:
    """
    Put the partial uploads' bytes together as C{final}'s, holding them all
    (no request writes, removes or sweeps them meanwhile), then publish it.
    """
    assert final.parts is not None
    holders: list[tuple[str, WriteHolder]] = []
    try:
        try:
            for uploadId in [final.id, *sorted(set(final.parts))]:
                holders.append((uploadId, await tus._acquire(uploadId)))
            partials = [await tus._live(uploadId) for uploadId in final.parts]
            totalLength(partials)
            state = await tus.resumable.concatenate(final, partials)
            final.offset = totalLength(partials)
            await tus.resumable.save(final)
        except BaseException as e:
            # Nothing of a final upload that could not be made stays.
            try:
                await tus.resumable.remove(final.id)
            except Exception as removing:
                _log.info("tus final upload {id} left for the sweep: {e}",
                          id=final.id, e=removing)
            if isinstance(e, StorageFull):
                raise ApiError(507, "insufficient_storage", f"The storage is full: {e}.") from e
            raise
        tus._hashes[final.id] = (final.offset, state)
        return await tus._finish(request, final)
    finally:
        for uploadId, holder in reversed(holders):
            tus._release(uploadId, holder)
