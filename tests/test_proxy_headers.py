"""
Which headers the proxy passes on, in each direction.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from streamrelay.proxy.headers import downstreamHeaders, upstreamHeaders


class HeaderTests(SynchronousTestCase):
    def test_upstreamDropsHopByHop(self) -> None:
        headers = Headers({
            b"Connection": [b"close, X-Secret"], b"X-Secret": [b"1"], b"Keep-Alive": [b"5"],
            b"TE": [b"trailers"], b"Transfer-Encoding": [b"chunked"], b"Upgrade": [b"h2c"],
            b"Proxy-Authorization": [b"x"], b"Host": [b"h"], b"Content-Length": [b"5"],
            b"Expect": [b"100-continue"], b"Content-Type": [b"text/plain"],
            b"X-Forwarded-For": [b"10.0.0.1"], b"Authorization": [b"Bearer t"],
        })
        result = upstreamHeaders(headers, "127.0.0.1", "rid")
        names = {name.lower() for name, _ in result.getAllRawHeaders()}
        self.assertEqual(
            names,
            {b"content-type", b"x-forwarded-for", b"x-request-id", b"authorization",
             b"streamrelay-client-address"},
        )
        self.assertEqual(result.getRawHeaders(b"x-forwarded-for"), [b"10.0.0.1, 127.0.0.1"])
        self.assertEqual(result.getRawHeaders(b"x-request-id"), [b"rid"])

    def test_downstream(self) -> None:
        headers = Headers({
            b"Content-Encoding": [b""], b"ETag": [b'"x"'], b"Connection": [b"close"],
            b"Server": [b"TwistedWeb"], b"Location": [b"/files/a"],
        })
        result = downstreamHeaders(headers)
        names = {name.lower() for name, _ in result.getAllRawHeaders()}
        self.assertEqual(names, {b"etag", b"location"})
