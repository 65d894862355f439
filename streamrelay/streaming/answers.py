"""
The answers the streaming layer gives by itself, before any resource sees
a request (a refused request line, header or target; C{OPTIONS *}), as
rendered by the application above it: L{AnswerRenderer}, given to
L{streamrelay.streaming.site.makeSite}.
"""

from __future__ import annotations

import json
from typing import Protocol

from twisted.web.iweb import IRequest

__all__ = ["AnswerRenderer", "PlainAnswers"]


class AnswerRenderer(Protocol):
    """Renders the streaming layer's own answers: a content type and a body."""

    def error(
        self, request: IRequest | None, status: int, code: str, message: str
    ) -> tuple[bytes, bytes]:
        """
        The answer to a request refused with C{status}, for the reason
        C{code} (a word) explained by C{message}.  C{request} is None when
        the channel refuses the connection's bytes before there is one to
        answer; given one, the renderer may set headers on it (a request
        id, say).
        """

    def document(self, request: IRequest, status: int, document: object) -> tuple[bytes, bytes]:
        """The answer carrying C{document} (JSON-able) to C{request}."""


class PlainAnswers:
    """Errors as C{{"error": code, "message": message}}, documents as JSON."""

    def error(
        self, request: IRequest | None, status: int, code: str, message: str
    ) -> tuple[bytes, bytes]:
        return self.document(request, status, {"error": code, "message": message})

    def document(
        self, request: IRequest | None, status: int, document: object
    ) -> tuple[bytes, bytes]:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"
        return b"application/json", body.encode("utf-8")
