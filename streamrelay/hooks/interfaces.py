"""
The hooks seam: what the backend's routes and the resumable uploads ask of
hooks, and what a C{pre-create} hook may decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from streamrelay.errors import ApiError

if TYPE_CHECKING:
    from streamrelay.hooks.context import RequestContext
    from streamrelay.store.interfaces import FileInfo

class IPoster(Interface):
    """Posts events to the hook (L{streamrelay.hooks.wire.HookClient})."""

    url: bytes

    def post(headers: list[tuple[bytes, bytes]], body: bytes) -> Deferred[tuple[int, bytes]]:
        """
        C{POST} C{body} with C{headers}: fires with the answer's status and
        body; fails with L{streamrelay.hooks.wire.NotAnswered} when the
        connection closed before an answer began, else with another
        error.  Cancelling it gives up the attempt.
        """


#: How long a client is told to wait when the hook cannot answer.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Decision:
    """
    What a C{pre-create} hook allowed: the upload goes on, maybe under
    another C{name}, with a smaller C{maxSize}, and C{metadata} kept with
    the file.  L{None} fields change nothing.
    """

    name: str | None = None
    maxSize: int | None = None
    metadata: Mapping[str, str] | None = None


class HookRejected(ApiError):
    """The C{pre-create} hook refused the upload: nothing is stored."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, "rejected", message)


class HookUnavailable(ApiError):
    """
    The C{pre-create} hook could not answer and C{--hook-unreachable deny}
    is in force: C{503 hook_unavailable}, to try again.
    """

    def __init__(self, message: str = "The upload hook did not answer; try again.") -> None:
        super().__init__(
            503,
            "hook_unavailable",
            message,
            {b"retry-after": b"%d" % (RETRY_AFTER_SECONDS,)},
        )


class IHooks(Interface):
    """
    The events an upload's life sends.  C{protocol} and the client come
    from the L{RequestContext}.
    """

    def preCreate(
        context: RequestContext,
        name: str,
        size: int | None,
        metadata: Mapping[str, str] | None,
    ) -> Deferred[Decision]:
        """
        Ask the application before any byte of a body is stored.  Fails
        with L{HookRejected} or L{HookUnavailable}; without a C{pre-create}
        hook it fires with C{Decision()} at once.
        """

    def finished(context: RequestContext, info: FileInfo) -> Deferred[None]:
        """
        Record a C{post-finish} event for C{info}, just published.  Fires
        once the event is durable (it will be delivered at least once,
        even after a crash); the client is answered only then.
        """

    def deleted(context: RequestContext, name: str) -> Deferred[None]:
        """
        Record a C{post-delete} event (a file deleted, or a resumable
        upload terminated: then C{name} is the name it would have taken).
        Fires once the event is durable.
        """


@implementer(IHooks)
class NoHooks:
    """No hook configured: everything is allowed, nobody is told."""

    def preCreate(
        self,
        context: RequestContext,
        name: str,
        size: int | None,
        metadata: Mapping[str, str] | None,
    ) -> Deferred[Decision]:
        return succeed(Decision())

    def finished(self, context: RequestContext, info: FileInfo) -> Deferred[None]:
        return succeed(None)

    def deleted(self, context: RequestContext, name: str) -> Deferred[None]:
        return succeed(None)
