"""
The uploader reading the service's refusals: what failed, and whether to try
again.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from streamrelay.upload.sender import answerFailed


class AnswerFailedTests(SynchronousTestCase):
    class Response:
        def __init__(self, code: int, retryAfter: bytes | None = None) -> None:
            self.code = code
            self.phrase = b"Phrase"
            self.headers = Headers({b"retry-after": [retryAfter]} if retryAfter else {})

    def test_jsonError(self) -> None:
        """The status, code and message of the answer, and whether to retry, and when."""
        failed = answerFailed(
            self.Response(503, b"5"), '{"error": "busy", "message": "Try later."}', "sending"
        )
        self.assertEqual(str(failed), "sending: HTTP 503 busy: Try later.")
        self.assertTrue(failed.retryable)
        self.assertEqual(failed.retryAfter, 5.0)

    def test_notJSON(self) -> None:
        failed = answerFailed(self.Response(400), "  not json  ")
        self.assertEqual(str(failed), "HTTP 400 : not json")
        self.assertFalse(failed.retryable)

    def test_retryOn(self) -> None:
        """Which statuses are worth another try is the caller's."""
        self.assertFalse(answerFailed(self.Response(409), "{}").retryable)
        self.assertTrue(answerFailed(self.Response(409), "{}", retryOn=frozenset({409})).retryable)
