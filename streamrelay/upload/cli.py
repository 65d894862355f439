"""
C{streamrelay-upload}: send files, or whatever lands in a folder, through a
streamrelay proxy.

Exit status: 0 when every file was stored intact, 1 when any failed, 2 on
a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.task import deferLater, react
from twisted.web.client import Agent, HTTPConnectionPool

from streamrelay.memory import tuneMalloc
from streamrelay.upload.progress import Reporter
from streamrelay.upload.resumable import ResumableSender
from streamrelay.upload.sender import Stored, UploadFailed, sendFile
from streamrelay.upload.watch import FolderWatcher, UploadState

DEFAULT_URL = "http://127.0.0.1:8080"
STATE_NAME = ".streamrelay-state.json"


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="streamrelay-upload",
        description="Stream files through a streamrelay proxy, checking each "
        "stored file's SHA-256 against what was sent. Exit status: 0 when every "
        "file was stored intact, 1 when any failed, 2 on a usage error.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="files to upload")
    p.add_argument(
        "--url",
        default=env("STREAMRELAY_URL", DEFAULT_URL),
        help="the proxy's base URL (env STREAMRELAY_URL; default %(default)s)",
    )
    p.add_argument(
        "--token",
        default=env("STREAMRELAY_TOKEN"),
        help="access token, sent as 'Authorization: Bearer TOKEN' (env STREAMRELAY_TOKEN)",
    )
    p.add_argument("--name", help="store the one FILE under this name")
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(env("STREAMRELAY_CONCURRENCY", "1")),
        metavar="N",
        help="send up to N files at once (default %(default)s)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=int(env("STREAMRELAY_RETRIES", "5")),
        metavar="N",
        help="send a file again up to N times after a connection error, 502, 503 "
        "or 504, waiting 1, 2, 4… seconds (at most 30) or as the server asks "
        "(default %(default)s)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file on standard output, for scripts",
    )
    p.add_argument(
        "--resumable",
        action="store_true",
        default=env("STREAMRELAY_RESUMABLE", "").lower() in ("1", "true", "yes", "on"),
        help="send with the tus protocol (/uploads): a retry after a dropped connection "
        "or a restarted backend sends only what the server does not have yet "
        "(env STREAMRELAY_RESUMABLE)",
    )
    p.add_argument("--quiet", action="store_true", help="print failures only")
    p.add_argument(
        "--watch",
        metavar="DIR",
        default=env("STREAMRELAY_WATCH"),
        help="keep uploading each new file that appears in DIR, once it is "
        "complete and once only (env STREAMRELAY_WATCH)",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        default=env("STREAMRELAY_STATE"),
        help=f"with --watch: where to remember what was sent (env STREAMRELAY_STATE; "
        f"default DIR/{STATE_NAME})",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=float(env("STREAMRELAY_SETTLE", "2")),
        help="with --watch: seconds a file's size and time must stay the same "
        "before it is sent (default %(default)s)",
    )
    return p


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

    def stop(signum: int, frame: object) -> None:
        watcher.stop()
        if not stopped.called:
            reactor.callFromThread(stopped.callback, None)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
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
    p = parser()
    options = p.parse_args(argv)
    tuneMalloc()
    if not options.files and not options.watch:
        p.error("give FILE arguments or --watch DIR")
    if options.files and options.watch:
        p.error("give FILE arguments or --watch DIR, not both")
    if options.name is not None and len(options.files) != 1:
        p.error("--name takes exactly one FILE")
    if options.concurrency < 1:
        p.error("--concurrency is at least 1")

    async def _main(reactor: Any) -> None:
        code = await run(reactor, options)
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(_main(reactor)))


if __name__ == "__main__":
    main()
