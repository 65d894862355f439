"""
A peer of streamrelay for C{make bench --peers}: Tornado.

    python tornadorelay.py backend --storage DIR [--fsync]
    python tornadorelay.py proxy --backend http://127.0.0.1:PORT

The backend is a C{@stream_request_body} handler for C{PUT /files/NAME}:
each chunk as it arrives is written into C{DIR/.partial/} and hashed with
SHA-256; at the end (with C{--fsync}) the file is fsynced, renamed to
C{DIR/NAME} and C{DIR} fsynced, and the answer is 201 with C{{"name",
"size", "sha256"}}, as streamrelay's backend does.  The proxy is a
C{@stream_request_body} handler too, whose chunks go through a small queue
(its C{data_received} waits while the queue is full: flow control) to the
C{body_producer} of an C{AsyncHTTPClient} request to the backend; the
backend's answer is relayed.  Each prints C{listening on
tcp:127.0.0.1:PORT} once it listens on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.queues import Queue
from tornado.web import Application, HTTPError, RequestHandler, stream_request_body

PARTIAL = ".partial"

#: Bytes the servers read at a time (Tornado's default is 64 KiB).
CHUNK = 1 << 20

#: No limit on a body's size (Tornado's default is 100 MB).
UNLIMITED = 1 << 50


def _syncDirectory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@stream_request_body
class Store(RequestHandler):
    storage: Path
    fsync: bool

    def initialize(self, storage: Path, fsync: bool) -> None:
        self.storage = storage
        self.fsync = fsync

    def prepare(self) -> None:
        name = self.path_args[0]
        if name.startswith("."):
            raise HTTPError(400)
        self.partial = self.storage / PARTIAL / uuid.uuid4().hex
        self.file = open(self.partial, "wb", buffering=0)
        self.digest = hashlib.sha256()
        self.size = 0

    def data_received(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)

    async def put(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.fsync:
                await loop.run_in_executor(None, os.fsync, self.file.fileno())
            self.file.close()
            os.rename(self.partial, self.storage / name)
            if self.fsync:
                await loop.run_in_executor(None, _syncDirectory, self.storage)
        except BaseException:
            self.partial.unlink(missing_ok=True)
            raise
        self.set_status(201)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"name": name, "size": self.size,
                                "sha256": self.digest.hexdigest()}))

    def on_connection_close(self) -> None:
        if hasattr(self, "file") and not self.file.closed:
            self.file.close()
            self.partial.unlink(missing_ok=True)


@stream_request_body
class Relay(RequestHandler):
    backend: str

    def initialize(self, backend: str) -> None:
        self.backend = backend

    def prepare(self) -> None:
        self.chunks: Queue[bytes | None] = Queue(maxsize=4)
        headers = {}
        if "Content-Length" in self.request.headers:
            headers["Content-Length"] = self.request.headers["Content-Length"]
        request = HTTPRequest(
            self.backend + self.request.uri, method="PUT", headers=headers,
            # A coroutine function does: Tornado awaits what it returns.
            body_producer=cast(Any, self._produce), request_timeout=3600, connect_timeout=60,
        )
        self.answer = AsyncHTTPClient().fetch(request, raise_error=False)

    async def data_received(self, chunk: bytes) -> None:
        # Wait for room in the queue (flow control) unless the backend has
        # answered already (an error before the whole body): then the rest
        # of the body is read and dropped.
        await self._unlessAnswered(chunk)

    async def _unlessAnswered(self, chunk: bytes | None) -> None:
        """Queue C{chunk} (L{None}: the end) when there is room, unless the backend answers."""
        if not self.answer.done():
            waits: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(self.chunks.put(chunk)), self.answer,
            }
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)

    async def _produce(self, write: Callable[[bytes], Awaitable[Any]]) -> None:
        while (chunk := await self.chunks.get()) is not None:
            await write(chunk)

    async def put(self, name: str) -> None:
        await self._unlessAnswered(None)
        answer: HTTPResponse = await self.answer
        self.set_status(answer.code)
        self.set_header("Content-Type", answer.headers.get("Content-Type", "text/plain"))
        self.finish(answer.body or b"")


async def serve(options: argparse.Namespace) -> None:
    if options.role == "backend":
        (options.storage / PARTIAL).mkdir(parents=True, exist_ok=True)
        handler: tuple[str, type[RequestHandler], dict[str, Any]] = (
            r"/files/([^/]+)", Store, {"storage": options.storage, "fsync": options.fsync}
        )
    else:
        AsyncHTTPClient.configure(None, max_clients=1024, max_body_size=UNLIMITED)
        handler = (r"/files/([^/]+)", Relay, {"backend": options.backend.rstrip("/")})
    server = HTTPServer(
        Application([handler]), max_body_size=UNLIMITED, chunk_size=CHUNK
    )
    sockets = bind_sockets(0, "127.0.0.1", backlog=1024)
    server.add_sockets(sockets)
    print(f"listening on tcp:127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("backend", "proxy"))
    parser.add_argument("--storage", type=Path)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--backend")
    options = parser.parse_args()
    if options.role == "backend" and options.storage is None:
        parser.error("the backend needs --storage")
    if options.role == "proxy" and options.backend is None:
        parser.error("the proxy needs --backend")
    asyncio.run(serve(options))


if __name__ == "__main__":
    main()
