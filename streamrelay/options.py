"""
Command-line options shared by streamrelay's services: every option has an
environment variable C{STREAMRELAY_<OPTION>}, and the flag wins over it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from streamrelay.service import withBacklog


def envName(option: str) -> str:
    return "STREAMRELAY_" + option.upper().replace("-", "_")


def parseSize(value: str) -> int:
    """
    A byte count: C{1048576}, C{512K}, C{100M}, C{2G} or C{1T} (powers of 1024).
    """
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    for suffix, power in (("K", 1), ("M", 2), ("G", 3), ("T", 4)):
        if text.endswith(suffix):
            factor = 1024**power
            text = text[:-1]
            break
    try:
        number = int(text)
    except ValueError:
        raise usage.UsageError(f"not a size: {value!r}") from None
    if number < 0:
        raise usage.UsageError(f"a size is not negative: {value!r}")
    return number * factor


def checkEndpoint(description: str) -> None:
    """
    L{usage.UsageError} unless C{description} is a server endpoint Twisted
    can listen on (its syntax, and for C{ssl:} its key and certificate), as
    L{streamrelay.service.ListeningService} will parse it.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, withBacklog(description))
    except Exception as e:
        raise usage.UsageError(f"--listen {description}: {e}") from None


class ServiceOptions(usage.Options):
    """
    Options with environment fallbacks and a repeatable C{--listen}.

    Subclasses set C{defaultListen} and their own C{optParameters}.
    """

    defaultListen = "tcp:8080:interface=127.0.0.1"
    environ: Mapping[str, str] = os.environ

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Twisted endpoint to listen on (tcp:PORT:interface=ADDR, ssl:…, unix:PATH);
        repeatable. [env STREAMRELAY_LISTEN, several separated by spaces]
        """
        self["listen"].append(description)

    def parseOptions(self, options: Any = None) -> None:
        for long, _short, _default, _doc, *_ in getattr(self, "optParameters", []):
            value = self.environ.get(envName(long))
            if value is not None:
                self[long] = value
        for long, _short, _doc in getattr(self, "optFlags", []):
            value = self.environ.get(envName(long))
            if value is not None:
                self[long] = int(value.lower() in ("1", "true", "yes", "on"))
        super().parseOptions(options)

    #: Options every service has, after its own.
    commonParameters = [
        ["max-concurrent-uploads", None, None,
         "Uploads taken at once; more are answered 503 busy with Retry-After. "
         "[env STREAMRELAY_MAX_CONCURRENT_UPLOADS]"],
        ["grace", None, "30",
         "On SIGTERM, seconds uploads in flight may take to finish before they are "
         "aborted. [env STREAMRELAY_GRACE]"],
        ["log-format", None, "text",
         "text, or json: one JSON object per log event. [env STREAMRELAY_LOG_FORMAT]"],
    ]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = getattr(cls, "optParameters", [])
        names = {p[0] for p in own}
        common = [p for p in cls.commonParameters if p[0] not in names]
        cls.optParameters = own + common  # type: ignore[attr-defined]

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = self.environ.get(
                envName("listen"), self.defaultListen
            ).split()
        for description in self["listen"]:
            checkEndpoint(description)
        if self["max-concurrent-uploads"] is not None:
            try:
                self["max-concurrent-uploads"] = int(self["max-concurrent-uploads"])
            except ValueError:
                raise usage.UsageError("--max-concurrent-uploads takes a whole number") from None
            if self["max-concurrent-uploads"] < 1:
                raise usage.UsageError("--max-concurrent-uploads is at least 1")
        try:
            self["grace"] = float(self["grace"])
        except ValueError:
            raise usage.UsageError("--grace takes a number of seconds") from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format is text or json")
