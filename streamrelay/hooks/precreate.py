"""
Asking the application's C{pre-create} hook (API.md, "Hooks") before an
upload stores any byte: one signed C{POST} of a C{pre-create} event, and
its answer read as a L{Decision}.

A C{2xx} with an empty body allows the upload unchanged.  A C{2xx} JSON
object may hold C{reject} (L{HookRejected}: C{{"status": 400-599,
"message": ...}}; another status is answered C{403}), C{name} (a valid
file name), C{maxSize} (a positive integer) and C{metadata} (see
L{streamrelay.store.metadata}); other fields are ignored.  Any other answer
(another status, not JSON, a field of the wrong type or out of bounds, no
answer within the timeout, no connection) is the hook failing: with
C{unreachable="deny"} the upload is refused with L{HookUnavailable}
(C{503 hook_unavailable}), with C{"allow"} it goes on unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamrelay.errors import jsonBytes
from streamrelay.hooks.context import RequestContext
from streamrelay.hooks.delivery import deliver
from streamrelay.hooks.events import PRE_CREATE, event, fileObject
from streamrelay.hooks.interfaces import Decision, HookRejected, HookUnavailable, IPoster
from streamrelay.names import BadName, validateName
from streamrelay.store.metadata import BadMetadata, validateMetadata

Unreachable = Literal["deny", "allow"]

#: The longest rejection message passed on to the client.
MAX_MESSAGE = 1024
#: The status a rejection without a sensible one gets.
DEFAULT_REJECT_STATUS = 403


class HookFailed(Exception):
    """The hook's answer is none the contract allows (or there is none)."""


class PreCreate:
    """
    The C{pre-create} hook, asked through C{poster}.

    @param secret: signs every event (C{Streamrelay-Signature}), if given.
    @param timeout: seconds for the whole exchange, answer body included.
    @param unreachable: what a failing hook means: C{deny} or C{allow}.
    """

    _log = Logger()

    def __init__(
        self,
        secret: bytes | None,
        timeout: float,
        unreachable: Unreachable,
        poster: IPoster,
        clock: IReactorTime,
    ) -> None:
        self.secret = secret
        self.timeout = timeout
        self.unreachable = unreachable
        self.poster = poster
        self.clock = clock

    def ask(
        self,
        context: RequestContext,
        name: str,
        size: int | None,
        metadata: Mapping[str, str] | None,
    ) -> Deferred[Decision]:
        """The hook's decision on storing C{name} (C{size} bytes, or unknown)."""
        now = self.clock.seconds()
        body = jsonBytes(event(PRE_CREATE, fileObject(name, size, metadata=metadata), context, now))
        asking = deliver(self.poster, body, self.secret, self.timeout, self.clock)
        return asking.addCallback(decide).addErrback(self._failed, context, name)

    #: What L{streamrelay.hooks.service.Hooks} calls.
    preCreate = ask

    def _failed(self, failure: Any, context: RequestContext, name: str) -> Decision:
        if failure.check(HookRejected):
            failure.raiseException()
        reason = str(failure.value) or type(failure.value).__name__
        self._log.warn(
            "pre-create hook failed request_id={rid} name={name!r} reason={reason} "
            "unreachable={policy}",
            rid=context.id, name=name, reason=reason, policy=self.unreachable,
        )
        if self.unreachable == "allow":
            return Decision()
        raise HookUnavailable()


def decide(answer: tuple[int, bytes]) -> Decision:
    """
    The decision in the hook's answer (status, body); L{HookRejected}, or
    L{HookFailed} for an answer the contract does not allow.
    """
    status, body = answer
    if not 200 <= status <= 299:
        raise HookFailed(f"the hook answered {status}")
    if not body.strip():
        return Decision()
    try:
        value = json.loads(body)
    except ValueError:
        raise HookFailed("the answer is not JSON") from None
    if not isinstance(value, dict):
        raise HookFailed("the answer is not a JSON object")
    if "reject" in value:
        raise _rejection(value["reject"])
    return Decision(
        name=_name(value.get("name")),
        maxSize=_maxSize(value.get("maxSize")),
        metadata=_metadata(value.get("metadata")),
    )


def _rejection(reject: object) -> HookRejected:
    if not isinstance(reject, dict):
        raise HookFailed("reject is not an object")
    value = reject.get("status")
    status = value if isinstance(value, int) and _isInt(value) else DEFAULT_REJECT_STATUS
    if not 400 <= status <= 599:
        status = DEFAULT_REJECT_STATUS
    message = reject.get("message")
    if not isinstance(message, str) or not message.strip():
        message = "The upload was refused."
    return HookRejected(status, message[:MAX_MESSAGE])


def _isInt(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HookFailed("name is not a string")
    try:
        return validateName(value)
    except BadName as e:
        raise HookFailed(f"name {value[:300]!r}: {e}") from None


def _maxSize(value: object) -> int | None:
    if value is None:
        return None
    if not _isInt(value) or value <= 0:  # type: ignore[operator]
        raise HookFailed("maxSize is not a positive whole number")
    assert isinstance(value, int)
    return value


def _metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    try:
        return validateMetadata(value) or None
    except BadMetadata as e:
        raise HookFailed(str(e)) from None
