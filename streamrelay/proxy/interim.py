"""
The backend's interim (1xx) responses, relayed to the proxy's client as
they come.

The upstream request whose body L{relayInterim} wraps is sent on one of
the proxy's L{InterimConnectionPool} connections: each interim response
of the backend (C{104 Upload Resumption Supported} with its C{Location},
say) goes on to the client at once, with the same status, reason phrase
and end-to-end headers, through the streaming layer's L{sendInterim}
(an HTTP/1.0 client gets none, as from the backend directly).

C{100 Continue} is not relayed: it is hop by hop.  The proxy sends its
client its own, once it starts reading the client's body (which it does
as soon as the upstream request goes out), and asks the backend for none.
Nor is C{101}: the proxy does not hand connections over to another
protocol.  A request the proxy sends without a body has no interim
response relayed (Twisted's client drops them, as before).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IRequest

from streamrelay.proxy.headers import endToEnd
from streamrelay.streaming import sendInterim
from streamrelay.streaming.interim import FRAMING_HEADERS
from streamrelay.streaming.interimclient import watchInterim

__all__ = ["NOT_RELAYED", "relayInterim"]

#: Interim statuses never relayed (see the module).
NOT_RELAYED = frozenset({100, 101})

_log = Logger()


def relayInterim(
    request: IRequest,
    body: IBodyProducer | None,
    location: Callable[[bytes], bytes] | None = None,
) -> IBodyProducer | None:
    """
    C{body}, to send upstream, with the backend's interim responses to it
    relayed to the client of C{request} (None stays None); C{location}
    rewrites their C{Location} (a signed creation's upload URL is signed).
    """
    if body is None:
        return None

    def relay(code: int, reason: bytes, headers: Headers) -> None:
        if code in NOT_RELAYED:
            return
        relayed = endToEnd(headers, FRAMING_HEADERS)
        urls = relayed.getRawHeaders(b"location")
        if location is not None and urls:
            relayed.setRawHeaders(b"location", [location(url) for url in urls])
        try:
            sendInterim(request, code, relayed, reason)
        except ValueError as e:
            _log.info("interim response {code} of the backend not relayed: {why}",
                      code=code, why=str(e))

    return watchInterim(body, relay)
