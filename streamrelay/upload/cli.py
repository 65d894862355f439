"""
C{streamrelay-upload}: send files, or whatever lands in a folder, through a
streamrelay proxy.

Exit status: 0 when every file was stored intact, 1 when any failed, 2 on
a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.task import deferLater, react
from twisted.web.client import Agent, HTTPConnectionPool

from streamrelay.memory import tuneMalloc
from streamrelay.signals import inReactorThread
from streamrelay.upload.progress import Reporter
from streamrelay.upload.resumable import ResumableSender
from streamrelay.upload.sender import Stored, UploadFailed, sendFile
from streamrelay.upload.watch import FolderWatcher, UploadState
from streamrelay.uris import httpURL

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_CONCURRENCY = 1
DEFAULT_RETRIES = 5
DEFAULT_SETTLE = 2.0
STATE_NAME = ".streamrelay-state.json"


def _wholeNumber(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"at least {least}, not {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _url(text: str) -> str:
    url = text.strip()
    try:
        valid = httpURL(url).port != 0
    except ValueError:
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return url


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise argparse.ArgumentTypeError(
            f"not yes or no: {text!r} (yes is {', '.join(_TRUE)}; "
            f"no is {', '.join(_FALSE[1:])})"
        )
    return value in _TRUE


#: The environment variable behind each option, how its value is read, and
#: the option's default when neither the flag nor the variable is given.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any], Any]] = {
    "url": ("STREAMRELAY_URL", _url, DEFAULT_URL),
    "token": ("STREAMRELAY_TOKEN", str, None),
    "concurrency": ("STREAMRELAY_CONCURRENCY", _wholeNumber(1), DEFAULT_CONCURRENCY),
    "retries": ("STREAMRELAY_RETRIES", _wholeNumber(0), DEFAULT_RETRIES),
    "resumable": ("STREAMRELAY_RESUMABLE", _switch, False),
    "watch": ("STREAMRELAY_WATCH", str, None),
    "state": ("STREAMRELAY_STATE", str, None),
    "settle": ("STREAMRELAY_SETTLE", _seconds, DEFAULT_SETTLE),
}


def parser() -> argparse.ArgumentParser:
    """
    The uploader's arguments.  Options that have an environment variable
    default to L{None} here: L{parseArguments} fills them in.
    """
    p = argparse.ArgumentParser(
        prog="streamrelay-upload",
        description="Stream files through a streamrelay proxy, checking each "
        "stored file's SHA-256 against what was sent. Exit status: 0 when every "
        "file was stored intact, 1 when any failed, 2 on a usage error.",
        epilog="An option's environment variable applies when the option is not "
        "given; an empty one counts as unset.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="files to upload")
    p.add_argument(
        "--url",
        type=_url,
        help=f"the proxy's base URL (env STREAMRELAY_URL; default {DEFAULT_URL})",
    )
    p.add_argument(
        "--token",
        help="access token, sent as 'Authorization: Bearer TOKEN' (env STREAMRELAY_TOKEN)",
    )
    p.add_argument("--name", help="store the one FILE under this name")
    p.add_argument(
        "--concurrency",
        type=_wholeNumber(1),
        metavar="N",
        help=f"send up to N files at once (env STREAMRELAY_CONCURRENCY; "
        f"default {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--retries",
        type=_wholeNumber(0),
        metavar="N",
        help="send a file again up to N times after a connection error, 502, 503 "
        "or 504, waiting 1, 2, 4… seconds (at most 30) or as the server asks "
        f"(env STREAMRELAY_RETRIES; default {DEFAULT_RETRIES})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file on standard output, for scripts",
    )
    p.add_argument(
        "--resumable",
        action="store_true",
        default=None,
        help="send with the tus protocol (/uploads): a retry after a dropped connection "
        "or a restarted backend sends only what the server does not have yet "
        "(env STREAMRELAY_RESUMABLE: 1, true, yes or on; 0, false, no or off)",
    )
    p.add_argument("--quiet", action="store_true", help="print failures only")
    p.add_argument(
        "--watch",
        metavar="DIR",
        help="keep uploading each new file that appears in DIR, once it is "
        "complete and once only (env STREAMRELAY_WATCH)",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help=f"with --watch: where to remember what was sent (env STREAMRELAY_STATE; "
        f"default DIR/{STATE_NAME})",
    )
    p.add_argument(
        "--settle",
        type=_seconds,
        metavar="SECONDS",
        help="with --watch: seconds a file's size and time must stay the same "
        f"before it is sent (env STREAMRELAY_SETTLE; default {DEFAULT_SETTLE:g})",
    )
    return p


def parseArguments(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """
    The uploader's options from C{argv} and, for options not given there,
    C{environ}.  A bad value of either is a usage error: a message and exit
    status 2.
    """
    environ = os.environ if environ is None else environ
    p = parser()
    options = p.parse_args(argv)
    for dest, (variable, parse, default) in ENVIRONMENT.items():
        if getattr(options, dest) is not None:
            continue  # the flag wins
        raw = environ.get(variable, "")
        value = default
        if raw.strip():
            try:
                value = parse(raw)
            except argparse.ArgumentTypeError as e:
                p.error(f"environment variable {variable}: {e}")
        setattr(options, dest, value)
    if not options.files and not options.watch:
        p.error("give FILE arguments or --watch DIR")
    if options.files and options.watch:
        p.error("give FILE arguments or --watch DIR, not both")
    if options.name is not None and len(options.files) != 1:
        p.error("--name takes exactly one FILE")
    return options


class Uploads:
    """Sends files with one client, retrying what may succeed later and
    reporting each outcome."""

    def __init__(self, reactor: Any, options: argparse.Namespace, out: TextIO) -> None:
        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor)
        self.pool.maxPersistentPerHost = max(2, options.concurrency)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        self.url = options.url
        self.out = out
        self.quiet = options.quiet
        self.json = options.json
        self.retries = max(0, options.retries)
        self.resumable = options.resumable
        self.headers: dict[bytes | str, list[bytes | str]] = {}
        if options.token:
            self.headers[b"authorization"] = [b"Bearer " + options.token.encode("utf-8")]
        self.reporter = Reporter(open(os.devnull, "w") if options.quiet else out)  # noqa: SIM115

    async def send(self, path: Path, name: str) -> Stored:
        started = time.monotonic()
        attempt = 0
        # With --resumable, every attempt goes on with the same upload.
        resumable = (
            ResumableSender(self.client, self.url, str(path), name, self.headers, self.line)
            if self.resumable else None
        )
        while True:
            try:
                stored = await self._sendOnce(path, name, resumable)
            except UploadFailed as e:
                if not e.retryable or attempt >= self.retries:
                    self._result(path, name, started, error=str(e))
                    raise
                delay = e.retryAfter if e.retryAfter is not None else min(2.0**attempt, 30.0)
                attempt += 1
                self.line(f"retrying {name} in {delay:.0f} s ({attempt} of {self.retries}): {e}")
                await deferLater(self.reactor, delay)
                continue
            self._result(path, name, started, stored=stored)
            return stored

    async def _sendOnce(
        self, path: Path, name: str, resumable: ResumableSender | None = None
    ) -> Stored:
        try:
            total = path.stat().st_size
        except OSError as e:
            raise UploadFailed(f"cannot read it: {e.strerror}") from None
        progress = self.reporter.start(name, total)
        try:
            if resumable is not None:
                stored = await resumable.send(progress.advance)
            else:
                stored = await sendFile(
                    self.client, self.url, str(path), name, progress.advance, self.headers
                )
        except UploadFailed:
            progress.close()
            raise
        verb = "replaced" if stored.status == 200 else "stored"
        progress.done(f"{verb} {name}: {stored.size} bytes, sha256 {stored.sha256}")
        return stored

    def _result(
        self,
        path: Path,
        name: str,
        started: float,
        stored: Stored | None = None,
        error: str | None = None,
    ) -> None:
        if error is not None:
            self.line(f"FAILED {path}: {error}")
        if not self.json:
            return
        result: dict[str, Any] = {"file": str(path), "name": name, "ok": stored is not None}
        if stored is not None:
            result.update(status=stored.status, size=stored.size, sha256=stored.sha256)
        else:
            result["error"] = error
        result["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(result, ensure_ascii=False), flush=True)

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


async def sendAll(uploads: Uploads, files: Sequence[tuple[Path, str]], concurrency: int) -> int:
    semaphore = DeferredSemaphore(max(1, concurrency))
    failed: list[str] = []

    async def one(path: Path, name: str) -> None:
        try:
            await uploads.send(path, name)
        except UploadFailed:
            failed.append(name)

    sizes = [path.stat().st_size for path, _ in files if path.is_file()]
    uploads.reporter.expect(len(files), sum(sizes))
    try:
        await gatherResults([semaphore.run(one, path, name) for path, name in files])
    finally:
        uploads.reporter.finish()
    if len(files) > 1 and not uploads.quiet:
        uploads.line(f"{len(files) - len(failed)} stored, {len(failed)} failed")
    return 1 if failed else 0


async def watch(reactor: Any, uploads: Uploads, options: argparse.Namespace) -> int:
    folder = Path(options.watch)
    if not folder.is_dir():
        uploads.line(f"streamrelay-upload: {folder} is not a folder")
        return 2
    statePath = Path(options.state) if options.state else folder / STATE_NAME
    try:
        state = UploadState(statePath)
    except ValueError as e:
        uploads.line(f"streamrelay-upload: {e}")
        return 2

    def send(path: Path, name: str) -> Deferred[Stored]:
        return ensureDeferred(uploads.send(path, name))

    watcher = FolderWatcher(reactor, folder, state, send, uploads.line, settle=options.settle)
    stopped: Deferred[None] = Deferred()

    def stop(number: int) -> None:
        watcher.stop()
        if not stopped.called:
            stopped.callback(None)

    # (The reactor thread does the stopping: the signal may land anywhere in
    # its own code, or in a log write.)
    signal.signal(signal.SIGTERM, inReactorThread(reactor, stop))
    signal.signal(signal.SIGINT, inReactorThread(reactor, stop))
    uploads.line(f"watching {folder} for files to send to {uploads.url}")
    watcher.start()
    await stopped
    return 0


async def run(reactor: Any, options: argparse.Namespace) -> int:
    uploads = Uploads(reactor, options, sys.stderr)
    try:
        if options.watch:
            return await watch(reactor, uploads, options)
        files = [
            (Path(path), options.name or os.path.basename(path)) for path in options.files
        ]
        return await sendAll(uploads, files, options.concurrency)
    finally:
        await uploads.pool.closeCachedConnections()


def main(argv: Sequence[str] | None = None) -> None:
    options = parseArguments(argv)
    tuneMalloc()

    async def _main(reactor: Any) -> None:
        code = await run(reactor, options)
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(_main(reactor)))


if __name__ == "__main__":
    main()
