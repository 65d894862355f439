"""
A fake of the hooks seam for in-memory tests of the routes: it records
each pre-create question and answers as the test says, at once or later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from streamrelay.hooks import Decision, IHooks, RequestContext
from streamrelay.store import FileInfo


@dataclass
class Asked:
    context: RequestContext
    name: str
    size: int | None
    metadata: Mapping[str, str] | None
    answer: Deferred[Decision]


@implementer(IHooks)
class FakeHooks:
    """
    Answers each C{preCreate} with C{decide(name)}: a L{Decision}, an
    exception (raised as the failure), or L{None} to leave the question
    pending (fire C{asked[-1].answer} later).  With C{chained}, a pending
    answer comes as a Deferred already called but waiting on another (as
    one built from an HTTP request's chain is): its C{called} is true
    though it has no result yet.
    """

    def __init__(
        self,
        decide: Callable[[str], Decision | Exception | None] = lambda name: Decision(),
        chained: bool = False,
    ) -> None:
        self.decide = decide
        self.chained = chained
        self.asked: list[Asked] = []
        #: the files told of (C{post-finish}), and the names deleted
        self.finishedFiles: list[FileInfo] = []
        self.deletedNames: list[str] = []

    def preCreate(
        self,
        context: RequestContext,
        name: str,
        size: int | None,
        metadata: Mapping[str, str] | None,
    ) -> Deferred[Decision]:
        answer = self.decide(name)
        d: Deferred[Decision]
        if answer is None:
            d = Deferred()
        elif isinstance(answer, Exception):
            d = fail(answer)
        else:
            d = succeed(answer)
        self.asked.append(Asked(context, name, size, metadata, d))
        if self.chained and answer is None:
            outer: Deferred[None] = succeed(None)
            return outer.addCallback(lambda _: d)  # type: ignore[return-value]
        return d

    def finished(self, context: RequestContext, info: FileInfo) -> Deferred[None]:
        self.finishedFiles.append(info)
        return succeed(None)

    def deleted(self, context: RequestContext, name: str) -> Deferred[None]:
        self.deletedNames.append(name)
        return succeed(None)
