"""
The pre-create hook's client (streamrelay.hooks.precreate): the event it
POSTs, signed, and how each kind of answer is read.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from streamrelay.hooks import Decision, HookRejected, HookUnavailable, RequestContext
from streamrelay.hooks.precreate import PreCreate, decide
from streamrelay.hooks.signature import verify
from tests.hookfakes import MemoryHook

SECRET = b"hook secret"
CONTEXT = RequestContext("rid-1", "192.0.2.7", "token:ci", "put", {"Authorization": "Bearer u"})


class Receiver(Resource):
    """The application's hook: records each request, answers as told."""

    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b"", hang: bool = False) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.hang = hang
        self.requests: list[tuple[bytes, dict[bytes, Any], bytes]] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        self.requests.append((
            request.uri, dict(request.requestHeaders.getAllRawHeaders()), request.content.read()
        ))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return self.body


class PreCreateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)

    def preCreate(self, receiver: Resource | None, unreachable: str = "deny") -> PreCreate:
        poster: Any = (
            MemoryHook(receiver).poster(self.clock, "http://127.0.0.1:9/hook")
            if receiver is not None else _Refused()
        )
        return PreCreate(
            SECRET, 10, unreachable,  # type: ignore[arg-type]
            poster, self.clock,
        )

    def answer(
        self, body: bytes, status: int = 200, unreachable: str = "deny"
    ) -> Deferred[Decision]:
        return self.preCreate(Receiver(status, body), unreachable).ask(CONTEXT, "a.txt", 5, None)

    def test_event(self) -> None:
        """One signed POST of a pre-create event: the file, its size and the request."""
        receiver = Receiver()
        d = self.preCreate(receiver).ask(CONTEXT, "a.txt", None, {"k": "v"})
        self.assertEqual(self.successResultOf(d), Decision())
        [(uri, headers, body)] = receiver.requests
        self.assertEqual(uri, b"/hook")
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])
        [signature] = headers[b"Streamrelay-Signature"]
        self.assertTrue(verify(SECRET, signature, body, now=self.clock.seconds()))
        sent = json.loads(body)
        self.assertEqual(sent["type"], "pre-create")
        self.assertEqual(sent["file"], {"name": "a.txt", "size": None, "metadata": {"k": "v"}})
        self.assertEqual(sent["request"], CONTEXT.toJSON())
        self.assertEqual(sent["time"], "2023-11-14T22:13:20.000Z")

    def test_emptyAllows(self) -> None:
        self.assertEqual(self.successResultOf(self.answer(b"", 204)), Decision())
        self.assertEqual(self.successResultOf(self.answer(b"{}")), Decision())

    def test_reject(self) -> None:
        d = self.answer(b'{"reject": {"status": 402, "message": "Pay first."}}')
        error = self.failureResultOf(d, HookRejected).value
        self.assertEqual((error.status, error.code, error.message), (402, "rejected", "Pay first."))

    def test_rejectSillyStatus(self) -> None:
        """A status outside 400-599 (or not a number) is answered 403."""
        for status in (b"200", b"302", b"600", b"true", b'"404"', b"null"):
            d = self.answer(b'{"reject": {"status": %s}}' % (status,))
            error = self.failureResultOf(d, HookRejected).value
            self.assertEqual(error.status, 403, status)
            self.assertEqual(error.message, "The upload was refused.")

    def test_rejectNotAnObject(self) -> None:
        self.failureResultOf(self.answer(b'{"reject": "no"}'), HookUnavailable)

    def test_rejectWithAllow(self) -> None:
        """A rejection is a decision, kept under --hook-unreachable allow too."""
        d = self.answer(b'{"reject": {"status": 451}}', unreachable="allow")
        self.assertEqual(self.failureResultOf(d, HookRejected).value.status, 451)

    def test_decision(self) -> None:
        d = self.answer(
            b'{"name": "b.txt", "maxSize": 100, "metadata": {"owner": "ana"}, "later": 1}'
        )
        self.assertEqual(
            self.successResultOf(d), Decision("b.txt", 100, {"owner": "ana"})
        )

    def test_badAnswers(self) -> None:
        """Each answer the contract does not allow is the hook failing: 503 under deny."""
        for status, body in [
            (500, b""),
            (404, b"{}"),
            (302, b""),
            (200, b"not json"),
            (200, b"[]"),
            (200, b'"x"'),
            (200, b'{"name": 5}'),
            (200, b'{"name": ".hidden"}'),
            (200, b'{"name": "a/b"}'),
            (200, b'{"name": ""}'),
            (200, b'{"maxSize": 0}'),
            (200, b'{"maxSize": -1}'),
            (200, b'{"maxSize": 1.5}'),
            (200, b'{"maxSize": "10"}'),
            (200, b'{"maxSize": true}'),
            (200, b'{"metadata": []}'),
            (200, b'{"metadata": {"k": 1}}'),
            (200, b'{"metadata": {"bad key": "v"}}'),
            (200, b'{"metadata": {"k": "a\\u0000b"}}'),
            (200, json.dumps({"metadata": {f"k{i}": "v" for i in range(65)}}).encode()),
            (200, json.dumps({"metadata": {"k": "v" * 3000}}).encode()),
            (200, b"{" + b" " * (70 << 10) + b"}"),
        ]:
            error = self.failureResultOf(self.answer(body, status), HookUnavailable).value
            self.assertEqual((error.status, error.code), (503, "hook_unavailable"), body)
            self.assertEqual(error.headers[b"retry-after"], b"5")

    def test_badAnswerAllowed(self) -> None:
        """Under allow, a failing hook lets the upload go on unchanged."""
        d = self.answer(b'{"name": ".hidden", "maxSize": 3}', unreachable="allow")
        self.assertEqual(self.successResultOf(d), Decision())

    def test_timeout(self) -> None:
        receiver = Receiver(hang=True)
        d = self.preCreate(receiver).ask(CONTEXT, "a.txt", 5, None)
        self.assertNoResult(d)
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, HookUnavailable)
        allowed = self.preCreate(Receiver(hang=True), "allow").ask(CONTEXT, "a.txt", 5, None)
        self.clock.advance(10.1)
        self.assertEqual(self.successResultOf(allowed), Decision())

    def test_refused(self) -> None:
        self.failureResultOf(self.preCreate(None).ask(CONTEXT, "a", 1, None), HookUnavailable)
        d = self.preCreate(None, "allow").ask(CONTEXT, "a", 1, None)
        self.assertEqual(self.successResultOf(d), Decision())

    def test_failureLogged(self) -> None:
        """A failure is logged with its reason, never the secret."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.failureResultOf(self.answer(b"", 500), HookUnavailable)
        [logged] = [e for e in events if "pre-create hook failed" in e.get("log_format", "")]
        self.assertEqual(logged["reason"], "the hook answered 500")
        self.assertNotIn("hook secret", repr(logged))

    def test_decideUnsigned(self) -> None:
        self.assertEqual(decide((201, b" \n")), Decision())


class _Refused:
    url = b"http://127.0.0.1:9/hook"

    def post(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("127.0.0.1:9"))
