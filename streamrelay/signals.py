"""
Signal handlers that leave the work to the reactor thread.

A Python signal handler runs in the main thread wherever it happens to be:
inside the reactor's own code, or inside a log observer holding its lock
(Twisted issue 7736).  A handler made here only queues the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def inReactorThread(
    reactor: Any, handler: Callable[[int], object]
) -> Callable[[int, object], None]:
    """
    A signal handler that only asks the reactor thread to call
    C{handler(number)}: it takes no lock and logs nothing itself.
    """

    def onSignal(number: int, frame: object) -> None:
        reactor.callFromThread(handler, number)

    return onSignal
