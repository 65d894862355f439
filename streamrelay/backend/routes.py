"""
The backend's HTTP routes: receive bodies into a store.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.digests import HashingConsumer, parseSHA256Digest, reprDigest
from streamrelay.errors import ApiError, tooLarge, writeJSON
from streamrelay.store import IUploadStore, StorageFull
from streamrelay.streaming import BodyIncomplete, RequestBody
from streamrelay.webapp import installJSONErrors, requestId, requestName


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BackendRoutes:
    """
    The backend's routes over an L{IUploadStore}.

    @param maxSize: the largest body accepted, or L{None} for no limit.
    """

    app = Klein()
    installJSONErrors(app)
    _log = Logger()

    def __init__(self, store: IUploadStore, maxSize: int | None = None) -> None:
        self.store = store
        self.maxSize = maxSize

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        return writeJSON(request, 200, {"status": "ok"})

    @app.route("/readyz", methods=["GET", "HEAD"])
    def readyz(self, request: IRequest) -> bytes:
        writable = getattr(self.store, "writable", lambda: True)()
        if writable:
            return writeJSON(request, 200, {"status": "ready"})
        return writeJSON(
            request,
            503,
            {"error": "not_ready", "message": "The storage folder is not writable."},
        )

    @app.route("/files/<path:_name>", methods=["PUT"])
    async def putFile(self, request: IRequest, _name: str) -> bytes:
        started = time.monotonic()
        rid = requestId(request)
        request.setHeader(b"x-request-id", rid.encode("ascii", "replace"))
        name = requestName(request)
        body: RequestBody | None = getattr(request, "body", None)
        declared = body.declaredLength if body is not None else 0
        if self.maxSize is not None and declared is not None and declared > self.maxSize:
            raise tooLarge(self.maxSize)
        expected = _expectedDigest(request)
        onlyIfNew = _onlyIfNew(request)
        if onlyIfNew and self.store.stat(name) is not None:
            raise _exists(name)
        try:
            upload = self.store.begin(name)
        except StorageFull as e:
            raise _storageFull(e) from None
        sink = HashingConsumer(upload, self.maxSize, _TooLarge)
        try:
            if body is not None:
                upload.registerProducer(body, True)
                await body.startProducing(sink)
                upload.unregisterProducer()
            sha256 = sink.hexdigest()
            if expected is not None and expected != sha256:
                raise ApiError(
                    400,
                    "digest_mismatch",
                    "The body does not match its Content-Digest; nothing was stored.",
                )
            if onlyIfNew and self.store.stat(name) is not None:
                raise _exists(name)
            info, replaced = await upload.commit(sha256)
        except BaseException as e:
            upload.abort()
            self._log.info(
                "upload failed request_id={rid} name={name!r} received={size} reason={reason}",
                rid=rid, name=name, size=sink.size, reason=_reason(e),
            )
            raise _apiErrorFor(e) from None
        self._log.info(
            "upload stored request_id={rid} name={name!r} size={size} "
            "sha256={sha256} seconds={seconds:.3f}",
            rid=rid, name=name, size=info.size, sha256=sha256,
            seconds=time.monotonic() - started,
        )
        request.setHeader(b"location", b"/files/" + quote(name, safe="").encode("ascii"))
        request.setHeader(b"etag", b'"' + sha256.encode("ascii") + b'"')
        request.setHeader(b"repr-digest", reprDigest(sha256))
        return writeJSON(request, 200 if replaced else 201, info.asJSON())


def _expectedDigest(request: IRequest) -> str | None:
    value = request.getHeader(b"content-digest")
    if value is None:
        return None
    try:
        return parseSHA256Digest(value.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "The Content-Digest header is malformed.") from None


def _onlyIfNew(request: IRequest) -> bool:
    value = request.getHeader(b"if-none-match")
    return value is not None and value.strip() == b"*"


def _exists(name: str) -> ApiError:
    return ApiError(412, "exists", f"A file called {name!r} exists already.")


def _storageFull(error: BaseException) -> ApiError:
    return ApiError(507, "insufficient_storage", f"The storage is full: {error}.")


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return error.code
    if isinstance(error, CancelledError):
        return "client_gone"
    return type(error).__name__


def _apiErrorFor(error: BaseException) -> BaseException:
    """The error a failed upload answers, or the exception itself."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, _TooLarge):
        return tooLarge(error.limit)
    if isinstance(error, StorageFull):
        return _storageFull(error)
    if isinstance(error, BodyIncomplete):
        return ApiError(400, "length_mismatch", f"The body ended early: {error}.")
    return error


