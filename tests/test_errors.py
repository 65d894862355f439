"""
The contract's JSON errors as they go out: every status streamrelay
answers has its reason phrase, none goes out as "Unknown Status".
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from streamrelay.errors import writeJSON
from tests.httpfakes import Connection

#: Every status the services answer with, from docs/API.md's tables.
STATUSES = [400, 401, 404, 405, 408, 409, 410, 412, 413, 415, 416, 423, 431, 460,
            501, 502, 503, 504, 507]


class Answer(Resource):
    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        status = int(request.args[b"status"][0])
        return writeJSON(request, status, {"error": "e", "message": "m"})


class ReasonTests(SynchronousTestCase):
    def test_everyStatusNamed(self) -> None:
        for status in STATUSES:
            conn = Connection(Answer())
            conn.send(b"GET /?status=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (status,))
            line = conn.output().split(b"\r\n", 1)[0]
            self.assertTrue(line.startswith(b"HTTP/1.1 %d " % (status,)), line)
            self.assertNotIn(b"Unknown Status", line)
            [response] = conn.responses()
            self.assertEqual(json.loads(response.body)["error"], "e")

    def test_phrases(self) -> None:
        """The ones twisted.web does not name, as their RFCs do."""
        for status, phrase in [
            (423, b"Locked"),
            (431, b"Request Header Fields Too Large"),
            (460, b"Checksum Mismatch"),
        ]:
            conn = Connection(Answer())
            conn.send(b"GET /?status=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (status,))
            self.assertEqual(
                conn.output().split(b"\r\n", 1)[0], b"HTTP/1.1 %d %s" % (status, phrase)
            )
