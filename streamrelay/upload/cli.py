"""
C{streamrelay-upload}: send files through a streamrelay proxy.

Exit status: 0 when every file was stored intact, 1 when any failed, 2 on
a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from twisted.web.client import Agent, HTTPConnectionPool

from streamrelay.upload.progress import Reporter
from streamrelay.upload.sender import UploadFailed, sendFile

DEFAULT_URL = "http://127.0.0.1:8080"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrelay-upload",
        description="Stream files through a streamrelay proxy, checking each "
        "stored file's SHA-256 against what was sent.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="files to upload")
    p.add_argument(
        "--url",
        default=os.environ.get("STREAMRELAY_URL", DEFAULT_URL),
        help="the proxy's base URL (env STREAMRELAY_URL; default %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="print failures only")
    return p


async def run(reactor: Any, options: argparse.Namespace) -> int:
    pool = HTTPConnectionPool(reactor)
    client = HTTPClient(Agent(reactor, pool=pool))
    reporter = Reporter(open(os.devnull, "w") if options.quiet else sys.stderr)  # noqa: SIM115
    failed = 0
    try:
        for path in options.files:
            name = os.path.basename(path)
            try:
                total = os.path.getsize(path)
            except OSError as e:
                print(f"FAILED {path}: cannot read it: {e.strerror}", file=sys.stderr)
                failed += 1
                continue
            progress = reporter.start(name, total)
            try:
                stored = await sendFile(client, options.url, path, name, progress.advance)
            except UploadFailed as e:
                progress.failed(f"FAILED {path}: {e}")
                if options.quiet:
                    print(f"FAILED {path}: {e}", file=sys.stderr)
                failed += 1
                continue
            verb = "replaced" if stored.status == 200 else "stored"
            progress.done(f"{verb} {name}: {stored.size} bytes, sha256 {stored.sha256}")
    finally:
        await pool.closeCachedConnections()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    options = parser().parse_args(argv)

    async def _main(reactor: Any) -> None:
        code = await run(reactor, options)
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(_main(reactor)))


if __name__ == "__main__":
    main()
