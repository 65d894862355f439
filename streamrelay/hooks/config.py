"""
The backend's hook options (C{--hook-*}), checked at start, and the
hooks they make.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.application.service import IService, MultiService
from twisted.python import usage

from streamrelay.hooks.connections import hookClient, hookConnections
from streamrelay.hooks.context import DEFAULT_FORWARD_HEADERS
from streamrelay.hooks.events import EVENT_TYPES
from streamrelay.hooks.interfaces import IHooks, IPoster, NoHooks
from streamrelay.hooks.journal import EventJournal
from streamrelay.hooks.metrics import HookMetrics
from streamrelay.hooks.precreate import PreCreate
from streamrelay.hooks.sender import HookSender
from streamrelay.hooks.service import Hooks
from streamrelay.store.writer import Runner

#: The queue's folder under a disk storage folder (a dot-name: never listed).
HOOKS_FOLDER = ".hooks"

DEFAULT_MAX_AGE = 3 * 24 * 3600.0

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

HOOK_OPTIONS = [
    ["hook-url", None, None,
     "POST each hook event there as JSON (http:// or https://); none by default. "
     "[env STREAMRELAY_HOOK_URL]"],
    ["hook-secret-file", None, None,
     "File whose first line is the secret every delivery is signed with "
     "(Streamrelay-Signature). [env STREAMRELAY_HOOK_SECRET_FILE]"],
    ["hook-events", None, ",".join(EVENT_TYPES),
     "Which events are sent, separated by commas. [env STREAMRELAY_HOOK_EVENTS]"],
    ["hook-timeout", None, "10",
     "Seconds one delivery attempt may take. [env STREAMRELAY_HOOK_TIMEOUT]"],
    ["hook-unreachable", None, "deny",
     "deny (503 hook_unavailable) or allow: what pre-create does when the hook "
     "cannot answer. [env STREAMRELAY_HOOK_UNREACHABLE]"],
    ["hook-forward-headers", None, ",".join(DEFAULT_FORWARD_HEADERS),
     "The client's headers passed to the hook, separated by commas. "
     "[env STREAMRELAY_HOOK_FORWARD_HEADERS]"],
    ["hook-queue", None, None,
     "Folder of the events not yet delivered (post-finish, post-delete); default "
     "STORAGE/" + HOOKS_FOLDER + "; needed with s3:// storage (each backend keeps "
     "and delivers its own). [env STREAMRELAY_HOOK_QUEUE]"],
    ["hook-max-age", None, str(int(DEFAULT_MAX_AGE)),
     "Seconds an event is retried before it is moved to the dead list "
     "(HOOK_QUEUE/dead.log). [env STREAMRELAY_HOOK_MAX_AGE]"],
]


def _seconds(options: Any, key: str) -> None:
    try:
        options[key] = float(options[key])
    except ValueError:
        raise usage.UsageError(f"--{key} takes a number of seconds") from None
    if not 0 < options[key] < float("inf"):
        raise usage.UsageError(f"--{key} is more than 0")


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def checkHookOptions(options: Any, s3: bool) -> None:
    """Refuse bad C{--hook-*} values at start, with a clear message."""
    url = options["hook-url"]
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(f"--hook-url is an http:// or https:// URL, not {url!r}")
    events = _list(options["hook-events"])
    unknown = [name for name in events if name not in EVENT_TYPES]
    if unknown:
        raise usage.UsageError(
            f"--hook-events: unknown event {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})"
        )
    options["hook-events"] = events
    _seconds(options, "hook-timeout")
    _seconds(options, "hook-max-age")
    if options["hook-unreachable"] not in ("deny", "allow"):
        raise usage.UsageError("--hook-unreachable is deny or allow")
    headers = _list(options["hook-forward-headers"])
    for header in headers:
        if not _TOKEN.match(header):
            raise usage.UsageError(f"--hook-forward-headers: {header!r} is not a header name")
    options["hook-forward-headers"] = headers
    secretFile = options["hook-secret-file"]
    options["hook-secret"] = None
    if secretFile:
        try:
            lines = Path(secretFile).read_bytes().strip().splitlines()
        except OSError as e:
            raise usage.UsageError(f"--hook-secret-file {secretFile}: {e.strerror}") from None
        if not lines or not lines[0].strip():
            raise usage.UsageError(f"--hook-secret-file {secretFile} is empty")
        options["hook-secret"] = lines[0].strip()
    if url and s3 and not options["hook-queue"]:
        raise usage.UsageError(
            "with s3:// storage, --hook-url needs --hook-queue DIR: a local folder "
            "for this backend's undelivered events"
        )


def makeHooks(
    options: Any,
    reactor: Any,
    metrics: HookMetrics,
    run: Runner,
    check: Callable[[], None] = lambda: None,
    poster: IPoster | None = None,
) -> tuple[IHooks, IService]:
    """
    The hooks C{options} ask for (L{NoHooks} without C{--hook-url}) and the
    service delivering their events.  C{check} guards the queue's folder
    when it lives in a disk storage folder.
    """
    service = MultiService()
    if not options["hook-url"]:
        return NoHooks(), service
    folder = options["hook-queue"] or str(Path(options["storage"]) / HOOKS_FOLDER)
    journal = EventJournal(Path(folder), run, check=check)
    reloaded = journal.open()
    poster = poster or hookClient(
        reactor, options["hook-url"], hookConnections(options.get("max-concurrent-uploads"))
    )
    sender = HookSender(
        journal,
        reloaded,
        poster,
        options["hook-secret"],
        options["hook-timeout"],
        options["hook-max-age"],
        reactor,
        metrics,
    )
    sender.setServiceParent(service)
    preCreate = PreCreate(
        options["hook-secret"],
        options["hook-timeout"],
        options["hook-unreachable"],
        poster,
        reactor,
    )
    hooks = Hooks(journal, sender, options["hook-events"], reactor, preCreate)
    return hooks, service
