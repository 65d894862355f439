"""
What every streamrelay Klein app shares: JSON errors for every failure,
including Klein's own 404 and 405.
"""

from __future__ import annotations

import re
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from streamrelay.errors import (
    JSON_TYPE,
    ApiError,
    badName,
    jsonBytes,
    notFound,
    storageUnavailable,
    writeError,
)
from streamrelay.ids import newId
from streamrelay.names import FILES_PREFIX, BadName, nameFromPath
from streamrelay.store.interfaces import StorageFull, StorageUnavailable
from streamrelay.streaming import PlainAnswers

_log = Logger()

#: An C{X-Request-Id} streamrelay takes from its client: it goes into log
#: lines and headers as it is, so nothing else is taken.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def answerError(request: IRequest, error: ApiError) -> bytes:
    """
    Write C{error} as API.md's JSON, echoing the request's C{X-Request-Id}
    (or a new one) unless the response carries one already.
    """
    _identify(request)
    return writeError(request, error)


def _identify(request: IRequest) -> None:
    """Echo the request's C{X-Request-Id} (or a new one) in its answer."""
    if not request.responseHeaders.hasHeader(b"x-request-id"):
        request.setHeader(b"x-request-id", requestId(request).encode("ascii"))


class JSONAnswers(PlainAnswers):
    """
    What the streaming layer answers by itself (its L{AnswerRenderer}), as
    API.md's JSON, with the request's C{X-Request-Id} when there is one.
    """

    def document(
        self, request: IRequest | None, status: int, document: object
    ) -> tuple[bytes, bytes]:
        if request is not None:
            _identify(request)
        return JSON_TYPE, jsonBytes(document)


def _apiError(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, ApiError)
    return answerError(request, error)


def _notFound(self: Any, request: IRequest, failure: Failure) -> bytes:
    if request.path.startswith(FILES_PREFIX):
        # Routing normalises paths such as /files/.. or /files//x (even
        # asking for a redirect); the name is still bad.
        try:
            nameFromPath(request.path, FILES_PREFIX)
        except BadName as e:
            return answerError(request, badName(str(e)))
    return answerError(request, notFound())


def _methodNotAllowed(self: Any, request: IRequest, failure: Failure) -> bytes:
    exc = failure.value
    assert isinstance(exc, MethodNotAllowed)
    allowed = sorted(exc.valid_methods or [])
    return answerError(
        request,
        ApiError(
            405,
            "method_not_allowed",
            f"{request.method.decode('ascii', 'replace')} is not allowed here.",
            {b"allow": ", ".join(allowed).encode("ascii")},
        ),
    )


def _storageUnavailable(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, StorageUnavailable)
    _log.warn("storage unavailable for {method} {path}: {error}",
              method=request.method, path=request.path, error=str(error))
    return answerError(request, storageUnavailable(error))


def _storageFull(self: Any, request: IRequest, failure: Failure) -> bytes:
    return answerError(
        request,
        ApiError(507, "insufficient_storage", f"The storage is full: {failure.value}."),
    )


def _internal(self: Any, request: IRequest, failure: Failure) -> bytes | None:
    if failure.check(CancelledError):
        # The client went away; there is nobody to answer.
        return None
    _log.failure("Unexpected error handling {method} {path}", failure,
                 method=request.method, path=request.path)
    return answerError(
        request, ApiError(500, "internal_error", "The server failed unexpectedly.")
    )


def requestId(request: IRequest) -> str:
    """
    The request's C{X-Request-Id}: the client's when it is safe (1 to 128
    of C{A-Z a-z 0-9 . _ -}), else a new one, which then replaces the
    client's in the request so that every later call gives the same.
    """
    value = request.getHeader(b"x-request-id")
    if value is not None and _SAFE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    made = newId()
    request.requestHeaders.setRawHeaders(b"x-request-id", [made.encode("ascii")])
    return made


def requestName(request: IRequest) -> str:
    """The validated file name of a C{/files/{name}} request, or 400 bad_name."""
    try:
        return nameFromPath(request.path, FILES_PREFIX)
    except BadName as e:
        raise badName(str(e)) from None


class JSONResource(Resource):
    """
    Wraps a Klein app's resource so that a request Klein cannot route at all
    (a path or Host that is not UTF-8) still gets API.md's JSON error.
    """

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: IRequest) -> Any:
        try:
            b"/".join(request.postpath).decode("utf-8")  # type: ignore[attr-defined]
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            if request.path.startswith(FILES_PREFIX):
                error = badName("The file name is not valid UTF-8.")
            else:
                error = ApiError(400, "bad_request", "The URL is not valid UTF-8.")
            return answerError(request, error)
        return self._inner.render(request)


def appResource(app: Klein) -> IResource:
    """The resource serving C{app}, with JSON errors all the way down."""
    return JSONResource(app.resource())


def installJSONErrors(app: Klein) -> None:
    """Make C{app} answer every error as API.md's JSON."""
    app.handle_errors(ApiError)(_apiError)
    app.handle_errors(NotFound, RequestRedirect)(_notFound)
    app.handle_errors(MethodNotAllowed)(_methodNotAllowed)
    app.handle_errors(StorageUnavailable)(_storageUnavailable)
    app.handle_errors(StorageFull)(_storageFull)
    app.handle_errors(Exception)(_internal)
