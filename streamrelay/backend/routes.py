"""
The backend's HTTP routes: the file API over a store.
"""

from __future__ import annotations

import email.utils
import mimetypes
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, FirstError, gatherResults
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.auth import bearerToken, matches, unauthorized
from streamrelay.backend.answers import etag, fileHeaders, fileJSON
from streamrelay.backend.multipart import DEFAULT_MAX_FORM_FILES, FormUpload, boundaryOf
from streamrelay.backend.ranges import Unsatisfiable, parseRange
from streamrelay.digests import HashingConsumer, parseSHA256Digest, reprDigest
from streamrelay.errors import (
    ApiError,
    bodyTimeout,
    notFound,
    tooLarge,
    writeJSON,
)
from streamrelay.hooks.clients import ClientContexts
from streamrelay.hooks.context import DEFAULT_FORWARD_HEADERS
from streamrelay.hooks.decisions import PreCreateAsker, smallerLimit
from streamrelay.hooks.interfaces import Decision, IHooks, NoHooks
from streamrelay.limits import UploadSlots
from streamrelay.metrics import Metrics
from streamrelay.names import BadName, validateName
from streamrelay.receiving import TooLarge, shielded
from streamrelay.rufh.dispatch import rufhVersion, wantsRufh
from streamrelay.rufh.protocol import RufhUploads
from streamrelay.store import FileInfo, IUpload, IUploadStore, StorageFull, StorageUnavailable
from streamrelay.store.interfaces import IExclusiveUpload, NameTaken, NotAFile
from streamrelay.streaming import BodyIncomplete, BodyTimeout, RequestBody
from streamrelay.tus.protocol import TusUploads
from streamrelay.webapp import answerError, installJSONErrors, requestId, requestName

#: Listing pages: the default and the largest C{?limit=}.
DEFAULT_PAGE = 1000
MAX_PAGE = 10000


class BackendRoutes:
    """
    The backend's routes over an L{IUploadStore}.

    @param maxSize: the largest body accepted, or L{None} for no limit.
    @param maxFormFiles: the most files one C{POST /files} form may hold.
    @param hooks: asked before each upload stores a byte (C{pre-create}).
    @param forwardHeaders: the client's headers hook events carry.
    """

    app = Klein()
    installJSONErrors(app)
    _log = Logger()

    def __init__(
        self,
        store: IUploadStore,
        maxSize: int | None = None,
        secret: bytes | None = None,
        slots: UploadSlots | None = None,
        metrics: Metrics | None = None,
        tus: TusUploads | None = None,
        maxFormFiles: int = DEFAULT_MAX_FORM_FILES,
        hooks: IHooks | None = None,
        forwardHeaders: Sequence[str] = DEFAULT_FORWARD_HEADERS,
    ) -> None:
        self.store = store
        self.maxSize = maxSize
        self.maxFormFiles = maxFormFiles
        self.secret = secret
        self.slots = slots or UploadSlots(None)
        self.metrics = metrics or Metrics("backend")
        self.tus = tus
        self.rufh = RufhUploads(tus) if tus is not None else None
        self.hooks: IHooks = hooks or NoHooks()
        self.forwardHeaders = tuple(forwardHeaders)
        self.contexts = ClientContexts(secret, self.forwardHeaders)

    @contextmanager
    def _upload(self, request: IRequest) -> Iterator[None]:
        """Count an upload in (or refuse it, 503) for as long as it runs."""
        self.slots.take(request)
        self.metrics.started.inc()
        self.metrics.inFlight.inc()
        try:
            yield
        finally:
            self.metrics.inFlight.dec()
            self.slots.release(request)

    def _authorize(self, request: IRequest) -> None:
        """With a shared secret, only who holds it (the proxy) gets in."""
        if self.secret is not None and not matches(bearerToken(request), [self.secret]):
            raise unauthorized("This backend takes requests from its proxy only.")

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        return writeJSON(request, 200, {"status": "ok"})

    @app.route("/metrics", methods=["GET"])
    def metricsPage(self, request: IRequest) -> bytes:
        return self.metrics.render(request)

    @app.route("/readyz", methods=["GET", "HEAD"])
    def readyz(self, request: IRequest) -> bytes:
        writable = getattr(self.store, "writable", lambda: True)()
        if writable:
            return writeJSON(request, 200, {"status": "ready"})
        request.setHeader(b"x-request-id", requestId(request).encode("ascii"))
        return writeJSON(
            request,
            503,
            {"error": "not_ready", "message": "The storage is not writable or not reachable."},
        )

    # Hooks

    def _asker(self, request: IRequest, protocol: str) -> PreCreateAsker:
        """How an upload of C{request} asks the C{pre-create} hook."""
        context = self.contexts(request, protocol)

        def ask(
            name: str, size: int | None, metadata: Mapping[str, str] | None
        ) -> Deferred[Decision]:
            return self.hooks.preCreate(context, name, size, metadata)

        return ask

    def _limit(self, decision: Decision) -> int | None:
        """The backend's limit, or the hook's if smaller."""
        return smallerLimit(self.maxSize, decision.maxSize)

    # Uploads

    def _checkLength(self, body: RequestBody | None, limit: int | None = None) -> None:
        limit = self.maxSize if limit is None else limit
        declared = body.declaredLength if body is not None else 0
        if limit is not None and declared is not None and declared > limit:
            raise tooLarge(limit)

    @app.route("/files/<path:_name>", methods=["PUT"])
    async def putFile(self, request: IRequest, _name: str) -> bytes:
        self._authorize(request)
        started = time.monotonic()
        rid = requestId(request)
        request.setHeader(b"x-request-id", rid.encode("ascii"))
        name = requestName(request)
        body: RequestBody | None = getattr(request, "body", None)
        self._checkLength(body)
        version = rufhVersion(request) if self.rufh is not None else None
        if self.rufh is not None and version is not None:
            # The IETF draft's creation: the upload becomes resumable.
            if _onlyIfNew(request) and await self.store.stat(name) is not None:
                raise _exists(name)
            with self._upload(request):
                return await self.rufh.create(
                    request, version, name, self._asker(request, "rufh")
                )
        expected = _expectedDigest(request)
        onlyIfNew = _onlyIfNew(request)
        declared = body.declaredLength if body is not None else 0
        try:
            decision = await self._asker(request, "put")(name, declared, None)
        except ApiError as e:
            self._logFailure(rid, request, name, 0, e)
            raise
        name = decision.name or name
        limit = self._limit(decision)
        self._checkLength(body, limit)
        if onlyIfNew and await self.store.stat(name) is not None:
            raise _exists(name)
        with self._upload(request):
            return await self._receive(
                request, name, body, expected, onlyIfNew, rid, started, limit,
                decision.metadata,
            )

    async def _receive(
        self,
        request: IRequest,
        name: str,
        body: RequestBody | None,
        expected: str | None,
        onlyIfNew: bool,
        rid: str,
        started: float,
        limit: int | None,
        metadata: Mapping[str, str] | None,
    ) -> bytes:
        try:
            upload = self.store.begin(name, metadata)
        except (StorageFull, StorageUnavailable, NotAFile) as e:
            self.metrics.failed(_reason(e))
            raise _apiErrorFor(e) from None
        sink = HashingConsumer(upload, limit, TooLarge)
        try:
            if body is not None:
                upload.registerProducer(body, True)
                received = body.startProducing(sink)
                if body.spliced:
                    self.metrics.spliced.inc()
                await received
                upload.unregisterProducer()
            sha256 = sink.hexdigest()
            if expected is not None and expected != sha256:
                raise ApiError(
                    400,
                    "digest_mismatch",
                    "The body does not match its Content-Digest; nothing was stored.",
                )
            info, replaced = await shielded(
                Deferred.fromCoroutine(self._commit(upload, sha256, onlyIfNew)), name
            )
        except BaseException as e:
            upload.abort()
            self._logFailure(rid, request, name, sink.size, e)
            raise _apiErrorFor(e) from None
        self._logStored(rid, info, started)
        await self.hooks.finished(self.contexts(request, "put"), info)
        fileHeaders(request, info)
        return writeJSON(request, 200 if replaced else 201, fileJSON(info))

    async def _commit(
        self, upload: IUpload, sha256: str, onlyIfNew: bool
    ) -> tuple[FileInfo, bool]:
        """Publish C{upload}; with C{onlyIfNew}, only while its name is free."""
        if not onlyIfNew:
            return await upload.commit(sha256)
        if IExclusiveUpload.providedBy(upload):
            return await upload.commitNew(sha256), False
        # A store that cannot check and publish in one step: two uploads
        # that both check before either publishes can both succeed.
        if await self.store.stat(upload.name) is not None:
            raise NameTaken(upload.name)
        return await upload.commit(sha256)

    @app.route("/files", methods=["POST"])
    async def postForm(self, request: IRequest) -> bytes:
        self._authorize(request)
        started = time.monotonic()
        rid = requestId(request)
        request.setHeader(b"x-request-id", rid.encode("ascii"))
        body: RequestBody | None = getattr(request, "body", None)
        self._checkLength(body)
        boundary = boundaryOf(request.getHeader(b"content-type"))
        form = FormUpload(
            self.store, boundary, self.maxSize, TooLarge, self.maxFormFiles,
            self._asker(request, "form"),
        )
        with self._upload(request):
            try:
                if body is not None:
                    form.registerProducer(body, True)
                    await body.startProducing(form)
                committing = Deferred.fromCoroutine(form.commit())
            except BaseException as e:
                form.abort()
                self._logFailure(rid, request, "(form)", form.size, e)
                raise _apiErrorFor(e) from None
            try:
                stored = await shielded(committing, "(form)")
            except CancelledError as e:
                # The form goes on being published (or taken back) as a whole.
                self._logFailure(rid, request, "(form)", form.size, e)
                raise
            except BaseException as e:
                form.abort()
                self._logFailure(rid, request, "(form)", form.size, e)
                raise _apiErrorFor(e) from None
        self._logFormStored(rid, stored, started)
        context = self.contexts(request, "form")
        await _allRecorded([self.hooks.finished(context, info) for info in stored])
        if len(stored) == 1:
            fileHeaders(request, stored[0])
        return writeJSON(request, 201, {"files": [fileJSON(info) for info in stored]})

    # Reading

    @app.route("/files", methods=["GET", "HEAD"])
    async def listFiles(self, request: IRequest) -> bytes:
        self._authorize(request)
        limit = _intArg(request, b"limit", DEFAULT_PAGE)
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "bad_request", f"limit is between 1 and {MAX_PAGE}.")
        after = _strArg(request, b"after")
        if after is not None and after != "":
            try:
                validateName(after)
            except BadName as e:
                raise ApiError(400, "bad_request", f"after: {e}") from None
        files, more = await self.store.list(after or None, limit)
        answer: dict[str, Any] = {"files": [fileJSON(info) for info in files]}
        if more and files:
            answer["next"] = files[-1].name
        return writeJSON(request, 200, answer)

    @app.route("/files/<path:_name>", methods=["GET", "HEAD"])
    async def getFile(self, request: IRequest, _name: str) -> bytes | None:
        self._authorize(request)
        name = requestName(request)
        stored = await self.store.open(name)
        if stored is None:
            raise notFound(f"No file is called {name!r}.")
        try:
            return await self._send(request, stored)
        finally:
            stored.close()

    async def _send(self, request: IRequest, stored: Any) -> bytes | None:
        info: FileInfo = stored.info
        request.setHeader(b"etag", etag(info))
        request.setHeader(b"repr-digest", reprDigest(info.sha256))
        request.setHeader(b"accept-ranges", b"bytes")
        modified = email.utils.formatdate(info.modified, usegmt=True)
        request.setHeader(b"last-modified", modified.encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        if _matches(request.getHeader(b"if-none-match"), etag(info)):
            request.setResponseCode(304)
            return b""
        rangeHeader = request.getHeader(b"range")
        ifRange = request.getHeader(b"if-range")
        if ifRange is not None and ifRange.strip() != etag(info):
            rangeHeader = None
        try:
            byteRange = parseRange(
                rangeHeader.decode("latin-1") if rangeHeader is not None else None, info.size
            )
        except Unsatisfiable as e:
            request.setHeader(b"content-range", b"bytes */%d" % (info.size,))
            return answerError(request, ApiError(416, "range_not_satisfiable", str(e)))
        request.setHeader(b"content-type", _contentType(info.name))
        request.setHeader(b"content-disposition", _disposition(info.name))
        start, end = byteRange if byteRange is not None else (0, info.size)
        if byteRange is not None:
            request.setResponseCode(206)
            request.setHeader(
                b"content-range", b"bytes %d-%d/%d" % (start, end - 1, info.size)
            )
        request.setHeader(b"content-length", b"%d" % (end - start,))
        if request.method == b"HEAD" or start == end:
            return b""
        await stored.stream(start, end, request)
        self.metrics.bytesSent.inc(end - start)
        return None

    @app.route("/files/<path:_name>", methods=["DELETE"])
    async def deleteFile(self, request: IRequest, _name: str) -> bytes:
        self._authorize(request)
        name = requestName(request)
        if not await self.store.delete(name):
            raise notFound(f"No file is called {name!r}.")
        self._log.info("deleted name={name!r}", name=name)
        await self.hooks.deleted(self.contexts(request, "put"), name)
        request.setResponseCode(204)
        return b""

    # Resumable uploads: the tus protocol, in streamrelay/tus/protocol.py

    def _tus(self) -> TusUploads:
        if self.tus is None:
            raise notFound("This backend keeps no resumable uploads.")
        return self.tus

    @app.route("/uploads", methods=["OPTIONS"])
    @app.route("/uploads/", methods=["OPTIONS"])
    @app.route("/uploads/<_id>", methods=["OPTIONS"])
    def uploadOptions(self, request: IRequest, _id: str = "") -> bytes:
        return self._tus().options(request)

    @app.route("/uploads", methods=["POST"])
    @app.route("/uploads/", methods=["POST"])
    async def createUpload(self, request: IRequest) -> bytes:
        self._authorize(request)
        tus = self._tus()
        with self._upload(request):
            if self.rufh is not None and wantsRufh(request):
                return await self.rufh.create(
                    request, rufhVersion(request, strict=True), None,  # type: ignore[arg-type]
                    self._asker(request, "rufh"),
                )
            return await tus.create(request, self._asker(request, "tus"))

    @app.route("/uploads/<_id>", methods=["GET", "HEAD", "PATCH", "DELETE"])
    async def resumableUpload(self, request: IRequest, _id: str) -> bytes | None:
        self._authorize(request)
        tus = self._tus()
        if self.rufh is not None and wantsRufh(request) and request.method != b"GET":
            return await self._rufhUpload(request, self.rufh, _id)
        if request.method == b"PATCH":
            with self._upload(request):
                return await tus.patch(request, _id)
        if request.method == b"DELETE":
            return await tus.terminate(request, _id)
        if request.method == b"HEAD":
            return await tus.head(request, _id)
        stored = await tus.finished(request, _id)
        if stored is None:
            return await tus.info(request, _id)
        return await self._sendFinished(request, stored)

    async def _sendFinished(self, request: IRequest, stored: dict[str, Any]) -> bytes | None:
        """The bytes of the file a finished upload became, if it still is that file."""
        opened = await self.store.open(stored["name"])
        try:
            if opened is None or opened.info.sha256 != stored["sha256"]:
                raise ApiError(
                    410, "gone",
                    f"The file this upload became, {stored['name']!r}, was replaced or "
                    "deleted since.",
                )
            return await self._send(request, opened)
        finally:
            if opened is not None:
                opened.close()

    async def _rufhUpload(self, request: IRequest, rufh: RufhUploads, uploadId: str) -> bytes:
        """An upload's URL, as the IETF draft uses it (streamrelay/rufh/)."""
        version = rufhVersion(request, strict=True)
        assert version is not None
        if request.method == b"PATCH":
            with self._upload(request):
                return await rufh.append(request, version, uploadId)
        if request.method == b"DELETE":
            return await rufh.cancel(request, version, uploadId)
        return await rufh.head(request, version, uploadId)

    # Logs

    def _logStored(self, rid: str, info: FileInfo, started: float) -> None:
        self.metrics.completed.inc()
        self.metrics.bytesReceived.inc(info.size)
        self.metrics.duration.observe(time.monotonic() - started)
        self._log.info(
            "upload stored request_id={rid} name={name!r} size={size} "
            "sha256={sha256} seconds={seconds:.3f}",
            rid=rid, name=info.name, size=info.size, sha256=info.sha256,
            seconds=time.monotonic() - started, outcome="stored",
        )

    def _logFormStored(self, rid: str, stored: list[FileInfo], started: float) -> None:
        """One line for a form, however many files it held."""
        seconds = time.monotonic() - started
        for info in stored:
            self.metrics.completed.inc()
            self.metrics.bytesReceived.inc(info.size)
            self.metrics.duration.observe(seconds)
        self._log.info(
            "form stored request_id={rid} files={files} size={size} seconds={seconds:.3f}",
            rid=rid, files=len(stored), size=sum(info.size for info in stored),
            seconds=seconds, outcome="stored",
        )

    def _logFailure(
        self, rid: str, request: IRequest, name: str, size: int, error: BaseException
    ) -> None:
        self.metrics.failed(_reason(error))
        self.metrics.bytesReceived.inc(size)
        self._log.info(
            "upload failed request_id={rid} name={name!r} received={size} reason={reason}",
            rid=rid, name=name, size=size, reason=_reason(error), outcome="failed",
        )


async def _allRecorded(recording: list[Deferred[None]]) -> None:
    """Wait for every event of a form; the first failure is the answer."""
    try:
        await gatherResults(recording, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()


def _contentType(name: str) -> bytes:
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed is None or encoding is not None:
        return b"application/octet-stream"
    return guessed.encode("ascii")


def _disposition(name: str) -> bytes:
    fallback = name.encode("ascii", "replace").replace(b'"', b"_").replace(b"\\", b"_")
    return (
        b'attachment; filename="' + fallback + b"\"; filename*=UTF-8''"
        + quote(name, safe="").encode("ascii")
    )


def _matches(ifNoneMatch: bytes | None, current: bytes) -> bool:
    if ifNoneMatch is None:
        return False
    tags = [t.strip().removeprefix(b"W/") for t in ifNoneMatch.split(b",")]
    return b"*" in tags or current in tags


def _intArg(request: IRequest, key: bytes, default: int) -> int:
    values = request.args.get(key)  # type: ignore[attr-defined]
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise ApiError(400, "bad_request", f"{key.decode()} takes a whole number.") from None


def _strArg(request: IRequest, key: bytes) -> str | None:
    values = request.args.get(key)  # type: ignore[attr-defined]
    if not values:
        return None
    try:
        return str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"{key.decode()} is not UTF-8.") from None


def _expectedDigest(request: IRequest) -> str | None:
    # Repeated fields are one list (RFC 9110 section 5.3).
    values = request.requestHeaders.getRawHeaders(b"content-digest")
    if not values:
        return None
    try:
        return parseSHA256Digest(b", ".join(values).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "The Content-Digest header is malformed.") from None


def _onlyIfNew(request: IRequest) -> bool:
    value = request.getHeader(b"if-none-match")
    return value is not None and value.strip() == b"*"


def _exists(name: str) -> ApiError:
    return ApiError(412, "exists", f"A file called {name!r} exists already.")


def _notAFile(name: str) -> ApiError:
    return ApiError(
        409, "conflict",
        f"{name!r} is a folder in the storage, not a file; nothing was stored.",
    )


def _storageFull(error: BaseException) -> ApiError:
    return ApiError(507, "insufficient_storage", f"The storage is full: {error}.")


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return error.code
    if isinstance(error, CancelledError):
        return "client_gone"
    if isinstance(error, NameTaken):
        return "exists"
    if isinstance(error, NotAFile):
        return "conflict"
    if isinstance(error, StorageFull):
        return "insufficient_storage"
    if isinstance(error, StorageUnavailable):
        return "storage_unavailable"
    return type(error).__name__


def _apiErrorFor(error: BaseException) -> BaseException:
    """The error a failed upload answers, or the exception itself."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, TooLarge):
        return tooLarge(error.limit)
    if isinstance(error, StorageFull):
        return _storageFull(error)
    if isinstance(error, NameTaken):
        return _exists(error.name)
    if isinstance(error, NotAFile):
        return _notAFile(error.name)
    if isinstance(error, BodyIncomplete):
        return ApiError(400, "length_mismatch", f"The body ended early: {error}.")
    if isinstance(error, BodyTimeout):
        return bodyTimeout(error)
    return error
