"""
C{twistd streamrelay-proxy}: options and service wiring.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

from treq.client import HTTPClient
from twisted.application.service import IService, MultiService
from twisted.python import usage
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from streamrelay.options import ServiceOptions, parseSize
from streamrelay.proxy.routes import ProxyRoutes
from streamrelay.service import ListeningService
from streamrelay.streaming import StreamingRequest
from streamrelay.webapp import appResource


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
        ["idle-timeout", None, "60",
         "Seconds a connection may send nothing before it is closed "
         "(not counted while streamrelay itself holds the client back). "
         "[env STREAMRELAY_IDLE_TIMEOUT]"],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["max-size"] is not None:
            self["max-size"] = parseSize(str(self["max-size"]))
        if not self["backend"].startswith(("http://", "https://")):
            raise usage.UsageError("--backend takes an http:// or https:// URL")
        try:
            self["idle-timeout"] = float(self["idle-timeout"])
        except ValueError:
            raise usage.UsageError("--idle-timeout takes a number of seconds") from None


def backendClient(reactor: object) -> HTTPClient:
    """
    A treq client for the backend: pooled connections, no cookies kept
    between users.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    # Shorter than the backend's idle timeout, so a pooled connection is
    # not reused just as the backend closes it.
    pool.cachedConnectionTimeout = 30
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return HTTPClient(Agent(reactor, pool=pool), cookiejar=jar)  # type: ignore[arg-type]


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    routes = ProxyRoutes(
        backendClient(reactor), options["backend"], maxSize=options["max-size"]
    )
    site = Site(appResource(routes.app), requestFactory=StreamingRequest)
    site.timeOut = options["idle-timeout"] or None
    site.displayTracebacks = False
    service = MultiService()
    listener = ListeningService(reactor, "streamrelay-proxy", options["listen"], site)
    listener.setServiceParent(service)
    return service
