"""
Hook events as the contract writes them (API.md, "Hooks").
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from streamrelay.hooks.context import RequestContext
from streamrelay.ids import newId

PRE_CREATE = "pre-create"
POST_FINISH = "post-finish"
POST_DELETE = "post-delete"
EVENT_TYPES = (PRE_CREATE, POST_FINISH, POST_DELETE)


def eventId() -> str:
    """A new event id: 32 hex digits, never the same twice (L{newId})."""
    return newId()


def rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fileObject(
    name: str,
    size: int | None,
    sha256: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The event's C{file}: C{sha256} only once stored, C{metadata} when any."""
    file: dict[str, Any] = {"name": name, "size": size}
    if sha256 is not None:
        file["sha256"] = sha256
    if metadata:
        file["metadata"] = dict(metadata)
    return file


def event(
    type: str,
    file: dict[str, Any],
    context: RequestContext,
    now: float,
    id: str | None = None,
) -> dict[str, Any]:
    """A new event; its C{id} stays the same on every delivery attempt."""
    return {
        "id": id or eventId(),
        "type": type,
        "time": rfc3339(now),
        "file": file,
        "request": context.toJSON(),
    }
