"""
L{makeSite}: a twisted.web site whose requests stream their bodies.
"""

from __future__ import annotations

from twisted.web import server
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.resource import IResource

from streamrelay.streaming.answers import AnswerRenderer, PlainAnswers
from streamrelay.streaming.channel import StreamingChannel
from streamrelay.streaming.request import StreamingRequest

__all__ = ["StreamingSite", "makeSite"]


class StreamingSite(server.Site):
    """
    A site of L{StreamingChannel}s and L{StreamingRequest}s.

    @ivar answers: renders the answers its channels and requests give
        before any resource sees a request.
    @ivar streamingBodies: how many request bodies stream in at once (they
        share L{streamrelay.streaming.tuning.BODY_READ_BUDGET}).
    """

    protocol = StreamingChannel  # type: ignore[assignment]
    streamingBodies = 0

    def __init__(
        self,
        resource: IResource,
        answers: AnswerRenderer,
        logFormatter: IAccessLogFormatter | None = None,
    ) -> None:
        super().__init__(resource, requestFactory=StreamingRequest, logFormatter=logFormatter)
        self.answers = answers


def makeSite(
    resource: IResource,
    idleTimeout: float | None,
    answers: AnswerRenderer | None = None,
    logFormatter: IAccessLogFormatter | None = None,
) -> server.Site:
    """
    A site serving C{resource} with streamed request bodies; C{idleTimeout}
    seconds of silence close a connection (a body that stalls is answered
    408 first).  What the streaming layer answers by itself (malformed
    requests, refused targets, C{OPTIONS *}) is rendered by C{answers}
    (by default as plain JSON); C{logFormatter} writes its access log's
    lines (by default twisted.web's combined format).
    """
    site = StreamingSite(resource, answers or PlainAnswers(), logFormatter)
    site.timeOut = idleTimeout or None
    site.displayTracebacks = False
    return site
