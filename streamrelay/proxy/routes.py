"""
The proxy's HTTP routes: check what can be checked here, then stream each
request to the backend and its response back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from klein import Klein
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import NO_BODY_CODES
from twisted.web.iweb import UNKNOWN_LENGTH, IRequest

from streamrelay.auth import TokenFile
from streamrelay.errors import (
    ApiError,
    bodyTimeout,
    notFound,
    patchTimeout,
    tooLarge,
    writeJSON,
)
from streamrelay.grants import GrantKeys
from streamrelay.limits import UploadSlots
from streamrelay.metrics import Metrics
from streamrelay.proxy.access import Access, authorize, grantLimit, signedLocation, unchecked
from streamrelay.proxy.concat import finalLimit, forwardConcat
from streamrelay.proxy.headers import downstreamHeaders, replaceAuthorization, upstreamHeaders
from streamrelay.proxy.interim import relayInterim
from streamrelay.proxy.limit import BodyTooLarge, upstreamBody
from streamrelay.proxy.pump import ResponsePump
from streamrelay.proxy.upstream import UpstreamURL, fitsBackend
from streamrelay.proxy.watchdog import BackendWatchdog
from streamrelay.rufh.versions import VERSION_HEADER
from streamrelay.streaming import BodyIncomplete, BodyTimeout, RequestBody, clientGone
from streamrelay.tus.headers import exceedsMaxSize
from streamrelay.web import asset
from streamrelay.webapp import installJSONErrors, requestId, requestName

#: Methods whose bodies are uploads.
_UPLOADS = frozenset({b"PUT", b"POST", b"PATCH"})

#: Headers of the web page's files: always revalidated, and no script,
#: style or frame from anywhere else.
PAGE_HEADERS = {
    b"cache-control": b"no-cache",
    b"content-security-policy": (
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}


def backendUnavailable(why: str) -> ApiError:
    return ApiError(502, "backend_unavailable", f"The storage backend is unavailable: {why}.")


def backendTimeout(seconds: float) -> ApiError:
    return ApiError(
        504, "backend_timeout", f"The storage backend made no progress for {seconds:g} s."
    )


class ProxyRoutes:
    """
    The proxy's routes, forwarding to the backend at C{backendURL} with
    C{client}.

    @param maxSize: the largest body accepted, or L{None} for no limit.
    """

    app = Klein()
    installJSONErrors(app)
    _log = Logger()

    def __init__(
        self,
        client: HTTPClient,
        backendURL: str,
        maxSize: int | None = None,
        readyTimeout: float = 2.0,
        tokens: TokenFile | None = None,
        secret: bytes | None = None,
        slots: UploadSlots | None = None,
        metrics: Metrics | None = None,
        backendTimeout: float = 60.0,
        clock: IReactorTime | None = None,
        grantKeys: GrantKeys | None = None,
    ) -> None:
        self.client = client
        self.upstream = UpstreamURL(backendURL)
        self.maxSize = maxSize
        self.readyTimeout = readyTimeout
        self.tokens = tokens
        self.secret = secret
        self.slots = slots or UploadSlots(clock)
        self.metrics = metrics or Metrics("proxy")
        self.backendTimeout = backendTimeout
        self._clockOrNone = clock
        self.grantKeys = grantKeys

    @property
    def clock(self) -> IReactorTime:
        if self._clockOrNone is None:
            from twisted.internet import reactor

            return reactor  # type: ignore[return-value]
        return self._clockOrNone

    def _authorize(self, request: IRequest) -> Access:
        return authorize(request, self.tokens, self.grantKeys, self.clock.seconds())

    def _limit(self, request: IRequest, access: Access) -> int | None:
        """The most body bytes C{request} may send: C{--max-size}, or its grant's."""
        limits = [x for x in (self.maxSize, grantLimit(request, access)) if x is not None]
        return min(limits) if limits else None

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        return writeJSON(request, 200, {"status": "ok"})

    @app.route("/metrics", methods=["GET"])
    def metricsPage(self, request: IRequest) -> bytes:
        return self.metrics.render(request)

    @app.route("/readyz", methods=["GET", "HEAD"])
    async def readyz(self, request: IRequest) -> bytes:
        try:
            response = await self.client.get(
                self.upstream.of(b"/healthz", b""), timeout=self.readyTimeout
            )
            await response.text()
            ok = response.code == 200
        except CancelledError:
            raise
        except Exception:
            ok = False
        if ok:
            return writeJSON(request, 200, {"status": "ready"})
        return writeJSON(
            request, 503, {"error": "not_ready", "message": "The backend is not reachable."}
        )

    @app.route("/", methods=["GET", "HEAD"])
    def page(self, request: IRequest) -> bytes:
        return self._asset(request, "index.html")

    @app.route("/favicon.ico", methods=["GET", "HEAD"])
    def favicon(self, request: IRequest) -> bytes:
        # Browsers ask for it on their own, also on pages the proxy answers
        # with JSON; the page itself names the same icon.
        return self._asset(request, "favicon.svg")

    @app.route("/static/<name>", methods=["GET", "HEAD"])
    def static(self, request: IRequest, name: str) -> bytes:
        return self._asset(request, name)

    def _asset(self, request: IRequest, name: str) -> bytes:
        found = asset(name)
        if found is None:
            raise notFound()
        contentType, data = found
        for header, value in PAGE_HEADERS.items():
            request.setHeader(header, value)
        request.setHeader(b"content-type", contentType)
        request.setHeader(b"content-length", b"%d" % (len(data),))
        return data

    def _checkLength(self, request: IRequest, access: Access) -> None:
        body: RequestBody | None = getattr(request, "body", None)
        declared = body.declaredLength if body is not None else 0
        limit = self._limit(request, access)
        if limit is not None and declared is not None and declared > limit:
            raise tooLarge(limit)

    def _checkDeclared(self, request: IRequest, access: Access) -> None:
        """A resumable upload's declared size (C{Upload-Length}, offset + body)."""
        for limit in (self.maxSize, access.grant.maxSize if access.grant else None):
            if exceedsMaxSize(request, limit):
                raise tooLarge(limit)  # type: ignore[arg-type]

    @app.route("/files/<path:_name>", methods=["PUT"])
    async def putFile(self, request: IRequest, _name: str) -> bytes | None:
        access = self._authorize(request)
        requestName(request)
        self._checkLength(request, access)
        if request.getHeader(VERSION_HEADER) is not None:
            # The IETF draft's creation may declare the whole in Upload-Length.
            self._checkDeclared(request, access)
        return await self.forward(request, access)

    @app.route("/files", methods=["POST"])
    async def postForm(self, request: IRequest) -> bytes | None:
        access = self._authorize(request)
        self._checkLength(request, access)
        return await self.forward(request, access)

    @app.route("/files", methods=["GET", "HEAD"])
    async def listFiles(self, request: IRequest) -> bytes | None:
        return await self.forward(request, self._authorize(request))

    @app.route("/files/<path:_name>", methods=["GET", "HEAD", "DELETE"])
    async def fileRequest(self, request: IRequest, _name: str) -> bytes | None:
        access = self._authorize(request)
        requestName(request)
        return await self.forward(request, access)

    # Resumable uploads (tus): the backend speaks the protocol; the proxy
    # checks the token and the size, and streams.

    @app.route("/uploads", methods=["OPTIONS"])
    @app.route("/uploads/", methods=["OPTIONS"])
    @app.route("/uploads/<path:_id>", methods=["OPTIONS"])
    async def uploadOptions(self, request: IRequest, _id: str = "") -> bytes | None:
        return await self.forward(request, unchecked(request))

    @app.route("/uploads", methods=["POST"])
    @app.route("/uploads/", methods=["POST"])
    @app.route("/uploads/<path:_id>", methods=["GET", "HEAD", "PATCH", "DELETE"])
    async def uploadRequest(self, request: IRequest, _id: str = "") -> bytes | None:
        access = self._authorize(request)
        if request.method == b"POST":
            forwardConcat(request, access, self.grantKeys, self.clock.seconds())
        self._checkLength(request, access)
        self._checkDeclared(request, access)
        if request.method != b"HEAD" or not _id:
            return await self.forward(request, access)
        try:
            return await self.forward(request, access)
        except ApiError as e:
            # tus clients (tus-js-client, Uppy) take any error but 423 on
            # HEAD for "upload gone" and start over; 423 makes them retry
            # until the backend is back.
            if e.status not in (502, 504):
                raise
            raise ApiError(423, e.code, e.message, {b"retry-after": b"1"}) from None

    async def forward(self, request: IRequest, access: Access) -> bytes | None:
        """
        Stream C{request}, let in with C{access}, to the backend and the
        backend's response back; a request with a body counts as an upload
        (limits, metrics).
        """
        if getattr(request, "body", None) is None or request.method not in _UPLOADS:
            return await self._forward(request, access)
        self.slots.take(request)
        self.metrics.started.inc()
        self.metrics.inFlight.inc()
        try:
            return await self._forward(request, access)
        finally:
            self.metrics.inFlight.dec()
            self.slots.release(request)

    def _resigner(self, access: Access) -> Callable[[bytes], bytes] | None:
        """How an upload URL given to a request let in by a grant is signed."""
        grant, keys = access.grant, self.grantKeys
        if grant is None or keys is None:
            return None
        return lambda location: signedLocation(location, grant, keys)

    async def _forward(self, request: IRequest, access: Access) -> bytes | None:
        started = time.monotonic()
        rid = requestId(request)
        request.setHeader(b"x-request-id", rid.encode("ascii"))
        client = request.getClientAddress()
        body: RequestBody | None = getattr(request, "body", None)
        method = request.method.decode("ascii")
        # The path and query every check here saw (less the signed URL's
        # parameters), never the raw target.
        url = self.upstream.of(request.path, access.query)
        headers = upstreamHeaders(
            request.requestHeaders, getattr(client, "host", None), rid, access.identity
        )
        if self.secret is not None:
            replaceAuthorization(headers, b"Bearer " + self.secret)
        elif self.tokens is not None:
            replaceAuthorization(headers, None)  # the client's token is the proxy's
        limit = self._limit(request, access) if request.method in _UPLOADS else None
        finalLimit(request, headers, limit)
        if not fitsBackend(self.upstream, request.method, url, headers):
            self._logOutcome(rid, request, None, started, "headers_too_large")
            raise ApiError(
                431, "headers_too_large",
                "The request's headers are too large or too many once the proxy "
                "adds its own (X-Forwarded-For, X-Request-Id, Streamrelay-Client-*).",
            )
        resign = self._resigner(access)
        waiting = self.client.request(
            method, url, headers=headers,
            data=relayInterim(request, upstreamBody(body, limit), resign),
            unbuffered=True,
            allow_redirects=False,
        )
        watchdog = BackendWatchdog.forRequest(self.clock, self.backendTimeout, body, waiting)
        try:
            response = await waiting
        except CancelledError:
            if watchdog.fired:
                self._logOutcome(rid, request, None, started, "backend_timeout")
                raise backendTimeout(self.backendTimeout) from None
            self._logOutcome(rid, request, None, started, "client_gone")
            raise
        except Exception as e:
            if watchdog.fired:
                self._logOutcome(rid, request, None, started, "backend_timeout")
                raise backendTimeout(self.backendTimeout) from None
            if body is not None and isinstance(body.error, BodyTimeout):
                self._logOutcome(rid, request, None, started, "timeout")
                if request.method == b"PATCH":
                    # Only resumable uploads take PATCH: the backend keeps
                    # what reached it (as tus and API.md say).
                    raise patchTimeout(
                        body.error, request.requestHeaders.hasHeader(b"upload-checksum")
                    ) from None
                raise bodyTimeout(body.error) from None
            if body is not None and isinstance(body.error, BodyTooLarge):
                self._logOutcome(rid, request, None, started, "too_large")
                raise tooLarge(body.error.limit) from None
            if (body is not None and isinstance(body.error, BodyIncomplete)) or clientGone(
                request
            ):
                # The client left (or the proxy cut it at the end of its
                # --grace): the upstream request was cancelled with it.
                gone = "aborted" if self.slots.stopping else "client_gone"
                self._logOutcome(rid, request, None, started, gone)
                raise CancelledError() from None
            self._logOutcome(rid, request, None, started, "backend_unavailable")
            raise backendUnavailable(_describe(e)) from None
        finally:
            watchdog.stop()
        if body is not None and not body.ended:
            # An early answer (an error): drop the rest of the client's body.
            body.stopProducing()
        request.setResponseCode(response.code, response.phrase)
        for name, values in downstreamHeaders(response.headers).getAllRawHeaders():
            request.responseHeaders.setRawHeaders(name, values)
        location = request.responseHeaders.getRawHeaders(b"location")
        if resign is not None and location and request.method in (b"POST", b"PUT"):
            # A resumable upload's client goes on at the upload's URL as it
            # is given (tus's creation, or the IETF draft's on PUT or POST);
            # a file's Location stays as it is.
            request.responseHeaders.setRawHeaders(b"location", [resign(location[0])])
        if (
            response.length is not UNKNOWN_LENGTH
            and request.method != b"HEAD"
            and response.code not in NO_BODY_CODES
        ):
            # The client parser keeps Content-Length to itself.  (204 and 304
            # carry none: RFC 9110 section 8.6.)
            request.setHeader(b"content-length", b"%d" % (response.length,))
        request.setHeader(b"x-request-id", rid.encode("ascii"))
        pump = ResponsePump(request)  # type: ignore[arg-type]
        response.deliverBody(pump)
        watchdog = BackendWatchdog.forResponse(self.clock, self.backendTimeout, pump)
        try:
            await pump.done
        except Exception as e:
            if isinstance(e, CancelledError) and not watchdog.fired:
                self._logOutcome(rid, request, response.code, started, "client_gone")
                raise
            # The status line is out: all that is left is to cut the
            # response short so the client sees it is incomplete.
            outcome = "backend_timeout" if watchdog.fired else "backend_failed"
            self._logOutcome(rid, request, response.code, started, outcome)
            why = (f"no byte in {self.backendTimeout:g} s while the client waited"
                   if watchdog.fired else _describe(e))
            self._log.info("backend failed mid-response: {why}", why=why)
            request.transport.abortConnection()  # type: ignore[attr-defined]
            await Deferred()  # Klein cancels this once the connection is gone.
        finally:
            watchdog.stop()
        if request.method == b"GET":
            self.metrics.bytesSent.inc(pump.sent)
        self._logOutcome(rid, request, response.code, started, "ok")
        return None

    def _logOutcome(
        self, rid: str, request: IRequest, code: int | None, started: float, outcome: str
    ) -> None:
        body: RequestBody | None = getattr(request, "body", None)
        if outcome.startswith("backend_"):
            self.metrics.backendError(outcome.removeprefix("backend_"))
        if body is not None and request.method in _UPLOADS:
            self.metrics.bytesReceived.inc(body.received)
            if body.spliced:
                self.metrics.spliced.inc()
            if outcome == "ok" and code is not None and code < 300:
                self.metrics.completed.inc()
                self.metrics.duration.observe(time.monotonic() - started)
            else:
                self.metrics.failed(outcome if outcome != "ok" else f"http_{code}")
        self._log.info(
            "{method} {path} status={code} outcome={outcome} request_id={rid} "
            "received={received} seconds={seconds:.3f}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
            code=code if code is not None else "-",
            outcome=outcome,
            rid=rid,
            received=body.received if body is not None else 0,
            seconds=time.monotonic() - started,
        )


def _describe(error: Any) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(_describe(r.value) for r in reasons)
    text = str(error) or type(error).__name__
    return text.rstrip(".")
