"""
The request target of an HTTP/1.1 request (RFC 9112 section 3.2): which
forms streamrelay serves, and the one parse of it that every check and
every action on the request then uses.

Served are the origin form (C{/files/a?x=1}), the absolute form naming
this server (C{http://host/files/a}, as the request's C{Host} says), and
C{*} for C{OPTIONS}.  Anything else (C{Xfiles}, C{@files}, an absolute URL
of another host, a target holding C{#} or a control character) is refused
as a whole: no part of it is guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ASTERISK", "BadTarget", "Target", "parseTarget"]

#: The target of C{OPTIONS *}, which asks about the server as a whole.
ASTERISK = b"*"

_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?]*)(.*)", re.DOTALL)
_DEFAULT_PORTS = {b"http": b":80", b"https": b":443"}


class BadTarget(ValueError):
    """A request target that streamrelay does not serve (400 C{bad_request})."""


@dataclass(frozen=True)
class Target:
    """
    A request target streamrelay serves.

    @ivar path: the path, still percent-encoded; it starts with C{/}, or is
        L{ASTERISK}.
    @ivar query: what follows the first C{?}, without it (empty if none).
    @ivar host: the host (and port) an absolute-form target names, else
        L{None}.
    """

    path: bytes
    query: bytes = b""
    host: bytes | None = None

    @property
    def originForm(self) -> bytes:
        """The target as the origin form: the path, then C{?} and the query."""
        return self.path + b"?" + self.query if self.query else self.path


def _authority(value: bytes, scheme: bytes) -> bytes:
    """C{value} (a host, with or without port) as compared: lower case, no default port."""
    value = value.strip().lower()
    return value.removesuffix(_DEFAULT_PORTS.get(scheme, b"\0"))


def parseTarget(target: bytes, method: bytes, hosts: Sequence[bytes]) -> Target:
    """
    The target of a C{method} request whose C{Host} values are C{hosts};
    L{BadTarget}, with a sentence for the client, if streamrelay does not
    serve it.
    """
    if not target:
        raise BadTarget("The request target is empty.")
    if any(byte <= 0x20 or byte == 0x7F for byte in target):
        raise BadTarget("The request target holds a space or a control character.")
    if b"#" in target:
        raise BadTarget(
            "The request target holds '#': a fragment is never sent; "
            "write '#' in a name as %23."
        )
    if target == ASTERISK:
        if method != b"OPTIONS":
            raise BadTarget("The request target '*' is for OPTIONS only.")
        return Target(ASTERISK)
    if target.startswith(b"/"):
        path, _, query = target.partition(b"?")
        return Target(path, query)
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        raise BadTarget("The request target must be a path that starts with '/'.")
    scheme, authority, rest = absolute.groups()
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or not authority or b"@" in authority:
        raise BadTarget("The request target must be a path that starts with '/'.")
    if any(_authority(host, scheme) != _authority(authority, scheme) for host in hosts):
        raise BadTarget(
            "An absolute request target must name this server, as Host does: "
            "streamrelay is not a forward proxy."
        )
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    path, _, query = rest.partition(b"?")
    return Target(path, query, authority)
