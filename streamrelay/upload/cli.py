"""
C{streamrelay-upload}: send files, or whatever lands in a folder, through a
streamrelay proxy.

Exit status: 0 when every file was stored intact, 1 when any failed, 2 on
a usage error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.web.client import Agent, HTTPConnectionPool

from streamrelay.upload.progress import Reporter
from streamrelay.upload.sender import Stored, UploadFailed, sendFile
from streamrelay.upload.watch import FolderWatcher, UploadState

DEFAULT_URL = "http://127.0.0.1:8080"
STATE_NAME = ".streamrelay-state.json"


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="streamrelay-upload",
        description="Stream files through a streamrelay proxy, checking each "
        "stored file's SHA-256 against what was sent.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="files to upload")
    p.add_argument(
        "--url",
        default=env("STREAMRELAY_URL", DEFAULT_URL),
        help="the proxy's base URL (env STREAMRELAY_URL; default %(default)s)",
    )
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
    p.add_argument("--quiet", action="store_true", help="print failures only")
    return p


class Uploads:
    """Sends files with one client, reporting each outcome."""

    def __init__(self, reactor: Any, url: str, out: TextIO, quiet: bool) -> None:
        self.pool = HTTPConnectionPool(reactor)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        self.url = url
        self.out = out
        self.quiet = quiet
        self.reporter = Reporter(open(os.devnull, "w") if quiet else out)  # noqa: SIM115

    async def send(self, path: Path, name: str) -> Stored:
        try:
            total = path.stat().st_size
        except OSError as e:
            raise UploadFailed(f"cannot read it: {e.strerror}") from None
        progress = self.reporter.start(name, total)
        try:
            stored = await sendFile(self.client, self.url, str(path), name, progress.advance)
        except UploadFailed as e:
            progress.failed(f"FAILED {path}: {e}")
            raise
        verb = "replaced" if stored.status == 200 else "stored"
        progress.done(f"{verb} {name}: {stored.size} bytes, sha256 {stored.sha256}")
        return stored

    def failed(self, line: str) -> None:
        print(line, file=self.out, flush=True)


async def sendAll(uploads: Uploads, files: Sequence[str]) -> int:
    failed = 0
    for path in files:
        try:
            await uploads.send(Path(path), os.path.basename(path))
        except UploadFailed as e:
            failed += 1
            if uploads.quiet:
                uploads.failed(f"FAILED {path}: {e}")
    return 1 if failed else 0


async def watch(reactor: Any, uploads: Uploads, options: argparse.Namespace) -> int:
    folder = Path(options.watch)
    if not folder.is_dir():
        uploads.failed(f"streamrelay-upload: {folder} is not a folder")
        return 2
    statePath = Path(options.state) if options.state else folder / STATE_NAME
    try:
        state = UploadState(statePath)
    except ValueError as e:
        uploads.failed(f"streamrelay-upload: {e}")
        return 2

    def send(path: Path, name: str) -> Deferred[Stored]:
        return ensureDeferred(uploads.send(path, name))

    watcher = FolderWatcher(
        reactor, folder, state, send, uploads.failed, settle=options.settle
    )
    stopped: Deferred[None] = Deferred()

    def stop(signum: int, frame: object) -> None:
        watcher.stop()
        if not stopped.called:
            reactor.callFromThread(stopped.callback, None)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"watching {folder} for files to send to {uploads.url}", file=uploads.out, flush=True)
    watcher.start()
    await stopped
    return 0


async def run(reactor: Any, options: argparse.Namespace) -> int:
    uploads = Uploads(reactor, options.url, sys.stderr, options.quiet)
    try:
        if options.watch:
            return await watch(reactor, uploads, options)
        return await sendAll(uploads, options.files)
    finally:
        await uploads.pool.closeCachedConnections()


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    options = p.parse_args(argv)
    if not options.files and not options.watch:
        p.error("give FILE arguments or --watch DIR")
    if options.files and options.watch:
        p.error("give FILE arguments or --watch DIR, not both")

    async def _main(reactor: Any) -> None:
        code = await run(reactor, options)
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(_main(reactor)))


if __name__ == "__main__":
    main()
