"""
L{sendInterim}: an interim (1xx) response, such as the resumable-upload
draft's C{104 Upload Resumption Supported}, sent to a request's client
before its final response.

An interim response is written on the connection at once, as it is sent:
interim responses leave in the order they are sent, before the final
response, which is sent as ever.  Only an HTTP/1.1 client gets them (RFC
9110 section 15.2: HTTP/1.0 has no 1xx); to a request of another version,
or once the final response has started (or the client is gone), sending
one does nothing and says so (False), so that a route need not check.

The C{100 Continue} that the streaming layer sends by itself (once a route
starts consuming the body of a request that asked with C{Expect:
100-continue}, see L{StreamingRequest.continueBody}) is one of these
interim responses, and keeps its moment: an interim response a route
sends before it reads the body goes out before the C{100}, which still
goes out once, when the route reads the body.  Sending one neither sends
the C{100} early (the client would send a body the route may still refuse,
with a 413 say) nor drops it.  A client reads any number of 1xx before the
final response (RFC 9110 section 15.2); one that waits for C{100} goes on
waiting for it, or sends its body anyway, which is read as ever once the
route consumes it.  C{100} and C{101} are therefore not sent through here.

Header names and values, and the reason phrase, are checked: a name that
is not a token, a CR, LF or NUL anywhere, or a header that frames a body
(C{Content-Length}, C{Transfer-Encoding}: a 1xx has none, RFC 9110 section
8.6 and RFC 9112 section 6.1) raise L{ValueError}, as does a status that
is not an interim one this module sends; nothing is written then.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from twisted.web import http
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from streamrelay.errors import REASONS
from streamrelay.streaming.internals import clientGone

__all__ = ["FRAMING_HEADERS", "interimHead", "sendInterim"]

#: Headers that frame a message body: never in a 1xx.
FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_TEXT = re.compile(rb"[\r\n\x00]")

InterimHeaders = Headers | Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]


def _pairs(headers: InterimHeaders | None) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return [
            (name, value) for name, values in headers.getAllRawHeaders() for value in values
        ]
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def interimHead(
    code: int, headers: InterimHeaders | None = None, reason: bytes | None = None
) -> tuple[bytes, Headers]:
    """
    The reason phrase and the headers of the interim response C{code}
    with C{headers} (a L{Headers}, a mapping or pairs of bytes); the
    phrase is C{reason}, or the one streamrelay or twisted.web knows.

    @raise ValueError: C{code} is not an interim status other than 100 and
        101, or a header or the phrase is not one to send (see the module).
    """
    if not 102 <= code <= 199:
        raise ValueError(f"{code} is not an interim status sent by a route (102 to 199)")
    if reason is None:
        reason = REASONS.get(code) or http.RESPONSES.get(code, b"")
    if _BAD_TEXT.search(reason):
        raise ValueError(f"the reason phrase {reason!r} holds CR, LF or NUL")
    result = Headers()
    for name, value in _pairs(headers):
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise ValueError(f"header {name!r}: {value!r} is not bytes")
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a header name")
        if _BAD_TEXT.search(value):
            raise ValueError(f"the value of {name!r} holds CR, LF or NUL")
        if name.lower() in FRAMING_HEADERS:
            raise ValueError(f"{name!r} frames a body: a 1xx has none")
        result.addRawHeader(name, value)
    return reason, result


def sendInterim(
    request: IRequest,
    code: int,
    headers: InterimHeaders | None = None,
    reason: bytes | None = None,
) -> bool:
    """
    Send the interim response C{code} with C{headers} to the client of
    C{request} now, before its final response; whether it was sent.

    Nothing is sent (False) to a client that is not HTTP/1.1, once the
    final response has started or finished, or once the client is gone.

    @raise ValueError: see L{interimHead}, whatever the request.
    """
    reason, head = interimHead(code, headers, reason)
    channel = getattr(request, "channel", None)
    if (
        not isinstance(channel, http.HTTPChannel)  # none left, or HTTP/2
        or getattr(request, "clientproto", None) != b"HTTP/1.1"
        or getattr(request, "startedWriting", True)
        or getattr(request, "finished", True)
        or clientGone(request)
        or channel.transport is None
        or getattr(channel.transport, "disconnecting", False)
    ):
        return False
    channel.writeHeaders(b"HTTP/1.1", b"%d" % (code,), reason, head)
    return True
