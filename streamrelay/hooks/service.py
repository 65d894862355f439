"""
L{Hooks}: the backend's L{IHooks} when C{--hook-url} is given.

C{pre-create} is asked of the object passed in (see L{PreCreateHook});
C{post-finish} and C{post-delete} are recorded in the durable queue (the
client is answered once they are on disk) and handed to the sender.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from streamrelay.errors import ApiError
from streamrelay.hooks.context import RequestContext
from streamrelay.hooks.events import POST_DELETE, POST_FINISH, PRE_CREATE, event, fileObject
from streamrelay.hooks.interfaces import RETRY_AFTER_SECONDS, Decision, IHooks
from streamrelay.hooks.journal import Entry, EventJournal
from streamrelay.hooks.sender import HookSender
from streamrelay.receiving import shielded
from streamrelay.store.interfaces import FileInfo


class PreCreateHook(Protocol):
    """What asks the hook before an upload (C{streamrelay.hooks.precreate})."""

    def preCreate(
        self,
        context: RequestContext,
        name: str,
        size: int | None,
        metadata: Mapping[str, str] | None,
    ) -> Deferred[Decision]: ...


class EventNotRecorded(ApiError):
    """
    The file was published (or deleted), but its event could not be made
    durable: the client hears it (C{503}) rather than the hook missing it
    silently.
    """

    def __init__(self, what: str, type: str, reason: str) -> None:
        super().__init__(
            503,
            "event_not_recorded",
            f"{what}, but its {type} event could not be recorded ({reason}); "
            "the application may not be told of it.",
            {b"retry-after": b"%d" % (RETRY_AFTER_SECONDS,)},
        )


@implementer(IHooks)
class Hooks:
    """
    @param events: the event types sent (C{--hook-events}); an event of
        another type is neither recorded nor sent.
    """

    _log = Logger()

    def __init__(
        self,
        journal: EventJournal,
        sender: HookSender,
        events: Collection[str],
        clock: IReactorTime,
        preCreateHook: PreCreateHook | None = None,
    ) -> None:
        self.journal = journal
        self.sender = sender
        self.events = frozenset(events)
        self.clock = clock
        self.preCreateHook = preCreateHook

    def preCreate(
        self,
        context: RequestContext,
        name: str,
        size: int | None,
        metadata: Mapping[str, str] | None,
    ) -> Deferred[Decision]:
        if self.preCreateHook is None or PRE_CREATE not in self.events:
            return succeed(Decision())
        return self.preCreateHook.preCreate(context, name, size, metadata)

    def finished(self, context: RequestContext, info: FileInfo) -> Deferred[None]:
        metadata = getattr(info, "metadata", None)
        file = fileObject(info.name, info.size, info.sha256, metadata)
        return self._record(POST_FINISH, file, context, f"{info.name!r} was stored")

    def deleted(self, context: RequestContext, name: str) -> Deferred[None]:
        file = fileObject(name, None)
        return self._record(POST_DELETE, file, context, f"{name!r} was deleted")

    def _record(
        self, type: str, file: dict[str, Any], context: RequestContext, what: str
    ) -> Deferred[None]:
        if type not in self.events:
            return succeed(None)
        now = self.clock.seconds()
        entry = Entry(event(type, file, context, now), now)
        recording = self.journal.record(entry)

        def recorded(_: None) -> None:
            self.sender.add(entry)

        def failed(failure: Failure) -> Failure:
            self._log.error(
                "{type} event {id} for {name!r} (request {rid}) NOT recorded: {error}; "
                "the client is answered 503",
                type=type, id=entry.id, name=file["name"], rid=context.id,
                error=failure.getErrorMessage(),
            )
            return Failure(EventNotRecorded(what, type, failure.getErrorMessage()))

        recording.addCallbacks(recorded, failed)
        # The request may be cancelled (its client left) while the event is
        # being written: that must not cancel the recording, or a durable
        # event would never reach the sender (until a restart) and be
        # logged as not recorded.
        return shielded(recording, f"recording the {type} event {entry.id}")
