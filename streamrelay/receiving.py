"""
What the two ways of receiving an upload (the file API's routes and the
tus protocol) share.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

_log = Logger()


class TooLarge(Exception):
    """A body went past the limit of C{limit} bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def shielded(d: Deferred[T], what: str | None = None) -> Deferred[T]:
    """
    C{d}'s result, in a Deferred whose cancelling leaves C{d} running.

    What a request started must finish even when its client has gone: a
    file put in place by a thread (a cancel cannot stop it; a form
    half-published, or a version kept aside for taking back dropped, would
    be worse), a tus upload's flush and recorded offset.  The work ends as
    it would have; only the answer has nobody to go to.  A failure after
    that is logged when C{what} names the work.
    """
    outer: Deferred[T] = Deferred()

    def done(result: T | Failure) -> None:
        if not outer.called:
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
        elif isinstance(result, Failure) and what is not None:
            _log.info("{what} failed after its client left: {error}",
                      what=what, error=result.getErrorMessage())

    d.addBoth(done)
    return outer
