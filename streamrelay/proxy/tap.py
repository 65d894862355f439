"""
C{twistd streamrelay-proxy}: options and service wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

from treq.client import HTTPClient
from twisted.application.service import IService
from twisted.internet import ssl
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from streamrelay.accesslog import redactedLogFormatter
from streamrelay.auth import TokenFile, readSecret
from streamrelay.collector import tuneCollector
from streamrelay.grants import GrantKeys
from streamrelay.limits import UploadSlots
from streamrelay.memory import tuneMalloc
from streamrelay.options import ServiceOptions, parseSize
from streamrelay.proxy.cors import parseOrigins, withCORS
from streamrelay.proxy.endpoints import KeptEndpoints
from streamrelay.proxy.routes import ProxyRoutes
from streamrelay.proxy.upstream import UpstreamURL
from streamrelay.service import (
    GracefulStop,
    ListeningService,
    StreamrelayService,
    exitOnOSError,
    handleSignals,
)
from streamrelay.streaming import makeSite
from streamrelay.streaming.interimclient import InterimConnectionPool
from streamrelay.webapp import JSONAnswers, appResource

_log = Logger()


class Options(ServiceOptions):
    synopsis = "[options]"
    longdesc = "The public REST face: streams every body to a streamrelay backend."
    defaultListen = "tcp:8080:interface=127.0.0.1"
    optParameters = [
        ["backend", None, "http://127.0.0.1:8081",
         "URL of the streamrelay backend. [env STREAMRELAY_BACKEND]"],
        ["max-size", None, None,
         "Largest body accepted, in bytes (K, M, G, T suffixes); none by default. "
         "[env STREAMRELAY_MAX_SIZE]"],
        ["tokens-file", None, None,
         "File of access tokens, one per line ('NAME TOKEN', or 'TOKEN'): every "
         "/files and /uploads request then needs 'Authorization: Bearer TOKEN' "
         "(or a signed URL). Reloaded on SIGHUP. [env STREAMRELAY_TOKENS_FILE]"],
        ["grant-keys-file", None, None,
         "File of keys for signed URLs, one 'KEY_ID SECRET' per line (several for "
         "rotation): a request signed with one needs no token. Reloaded on SIGHUP. "
         "[env STREAMRELAY_GRANT_KEYS_FILE]"],
        ["shared-secret", None, None,
         "Secret sent to the backend on every request (its --shared-secret). "
         "[env STREAMRELAY_SHARED_SECRET]"],
        ["shared-secret-file", None, None,
         "File whose first line is the shared secret. [env STREAMRELAY_SHARED_SECRET_FILE]"],
        ["backend-ca", None, None,
         "PEM file of the certificate authority (or self-signed certificate) to trust "
         "for an https:// backend, instead of the system's. [env STREAMRELAY_BACKEND_CA]"],
        ["backend-timeout", None, "60",
         "Seconds the backend may make no progress (take no body byte, send no answer) "
         "before the client gets 504. [env STREAMRELAY_BACKEND_TIMEOUT]"],
        ["idle-timeout", None, "60",
         "Seconds a connection may send nothing before it is closed "
         "(not counted while streamrelay itself holds the client back). "
         "[env STREAMRELAY_IDLE_TIMEOUT]"],
        ["cors-origin", None, "",
         "Origins (scheme://host[:port], or *) whose pages may use /uploads and "
         "/files from a browser; comma-separated. [env STREAMRELAY_CORS_ORIGIN]"],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["max-size"] is not None:
            self["max-size"] = parseSize(str(self["max-size"]))
        if not self["backend"].startswith(("http://", "https://")):
            raise usage.UsageError("--backend takes an http:// or https:// URL")
        try:
            UpstreamURL(self["backend"])
        except ValueError as e:
            raise usage.UsageError(f"--backend {self['backend']!r} is not a URL: {e}") from None
        for key in ("tokens-file", "grant-keys-file", "shared-secret-file", "backend-ca"):
            if self[key] and not Path(self[key]).is_file():
                raise usage.UsageError(f"--{key}: no such file: {self[key]}")
        try:
            if self["tokens-file"]:
                TokenFile(Path(self["tokens-file"]))
            if self["grant-keys-file"]:
                GrantKeys(Path(self["grant-keys-file"]))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        try:
            self["cors-origin"] = parseOrigins(self["cors-origin"] or "")
        except ValueError as e:
            raise usage.UsageError(f"--cors-origin: {e}") from None
        for key in ("idle-timeout", "backend-timeout"):
            try:
                self[key] = float(self[key])
            except ValueError:
                raise usage.UsageError(f"--{key} takes a number of seconds") from None


#: Idle connections to the backend kept open for the next requests.  With
#: fewer than the uploads usually at once, each one past them opened (and
#: the backend accepted) a connection of its own: 64 uploads of 1 MiB at
#: once cost the proxy 2.5 ms of CPU per upload with 16 kept, 2.2-2.4
#: with 64, and the backend 3.7-4.1 against 3.5-3.7.
BACKEND_CONNECTIONS_KEPT = 64


def backendClient(reactor: object, caFile: str | None = None) -> HTTPClient:
    """
    A treq client for the backend: pooled connections, no cookies kept
    between users, and with C{caFile} the only authority trusted for TLS.
    """
    # Its connections tell of the backend's interim responses (relayed).
    pool = InterimConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = BACKEND_CONNECTIONS_KEPT
    # Shorter than the backend's idle timeout, so a pooled connection is
    # not reused just as the backend closes it.
    pool.cachedConnectionTimeout = 30
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    policy = BrowserLikePolicyForHTTPS()
    if caFile is not None:
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=ssl.Certificate.loadPEM(Path(caFile).read_bytes())
        )
    agent = Agent.usingEndpointFactory(reactor, KeptEndpoints(reactor, policy), pool=pool)
    return HTTPClient(agent, cookiejar=jar)  # type: ignore[arg-type]


def _all(calls: list[Callable[[], None]]) -> Callable[[], None]:
    def callAll() -> None:
        for call in calls:
            call()

    return callAll


@exitOnOSError("streamrelay-proxy")
def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tuneMalloc()
    tuneCollector(reactor)

    tokens = None
    if options["tokens-file"]:
        tokens = TokenFile(Path(options["tokens-file"]))
        _log.info("requiring one of {count} token(s) from {path}",
                  count=len(tokens.tokens), path=options["tokens-file"])
    grantKeys = None
    if options["grant-keys-file"]:
        grantKeys = GrantKeys(Path(options["grant-keys-file"]))
        _log.info("taking URLs signed with {count} key(s) from {path}: {ids}",
                  count=len(grantKeys.ids), path=options["grant-keys-file"],
                  ids=" ".join(grantKeys.ids))
    reloads = [f.reload for f in (tokens, grantKeys) if f is not None]
    handleSignals(reactor, "streamrelay-proxy", _all(reloads) if reloads else None)
    slots = UploadSlots(reactor, options["max-concurrent-uploads"])  # type: ignore[arg-type]
    routes = ProxyRoutes(
        backendClient(reactor, options["backend-ca"]),
        options["backend"],
        maxSize=options["max-size"],
        tokens=tokens,
        secret=readSecret(options["shared-secret"], options["shared-secret-file"]),
        slots=slots,
        backendTimeout=options["backend-timeout"],
        clock=reactor,  # type: ignore[arg-type]
        grantKeys=grantKeys,
    )
    site = makeSite(
        withCORS(appResource(routes.app), options["cors-origin"]),
        options["idle-timeout"],
        JSONAnswers(),
        redactedLogFormatter,
    )
    service = StreamrelayService(options["log-format"])
    GracefulStop(slots, options["grace"]).setServiceParent(service)
    listener = ListeningService(reactor, "streamrelay-proxy", options["listen"], site)
    listener.setServiceParent(service)
    return service
