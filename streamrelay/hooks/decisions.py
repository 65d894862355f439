"""
How an upload asks the C{pre-create} hook, as the routes, forms and
resumable uploads see it, and the size limit a decision leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, succeed

from streamrelay.hooks.interfaces import Decision

#: Asks about storing C{name} (C{size} bytes or unknown, the client's
#: C{metadata}) for one request: the routes bind the request's context.
PreCreateAsker = Callable[[str, int | None, Mapping[str, str] | None], "Deferred[Decision]"]


def allowAll(
    name: str, size: int | None, metadata: Mapping[str, str] | None
) -> Deferred[Decision]:
    """The asker without a hook: everything is allowed unchanged."""
    return succeed(Decision())


def smallerLimit(mine: int | None, theirs: int | None) -> int | None:
    """The smaller of two size limits (L{None}: no limit)."""
    if mine is None:
        return theirs
    if theirs is None:
        return mine
    return min(mine, theirs)
