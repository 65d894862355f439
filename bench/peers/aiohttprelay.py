"""
A peer of streamrelay for C{make bench --peers}: aiohttp on uvloop.

    python aiohttprelay.py backend --storage DIR [--fsync]
    python aiohttprelay.py proxy --backend http://127.0.0.1:PORT

The backend takes C{PUT /files/NAME}, writes the body as it arrives into
C{DIR/.partial/}, hashing it with SHA-256, then (with C{--fsync}) fsyncs
the file, renames it to C{DIR/NAME} and fsyncs C{DIR}, and answers 201
with C{{"name", "size", "sha256"}}, as streamrelay's backend does.  The
proxy streams each request body to the backend with aiohttp's client (the
server's C{StreamReader} as the client's payload: read as it is sent) and
relays the answer.  Each prints C{listening on tcp:127.0.0.1:PORT} once it
listens on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import uuid
from pathlib import Path

import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

#: Where a request's bytes go before the name is theirs.
PARTIAL = ".partial"


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _syncDirectory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backend(storage: Path, fsync: bool) -> web.Application:
    (storage / PARTIAL).mkdir(parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name.startswith("."):
            raise web.HTTPBadRequest(text="bad name")
        partial = storage / PARTIAL / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        loop = asyncio.get_running_loop()
        try:
            with open(partial, "wb", buffering=0) as f:
                async for chunk in request.content.iter_any():
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                if fsync:
                    await loop.run_in_executor(None, os.fsync, f.fileno())
            os.rename(partial, storage / name)
            if fsync:
                await loop.run_in_executor(None, _syncDirectory, storage)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        answer = {"name": name, "size": size, "sha256": digest.hexdigest()}
        return web.json_response(answer, status=201)

    app = web.Application()
    app.router.add_put("/files/{name}", put)
    return app


def proxy(backendURL: str) -> web.Application:
    session: dict[str, ClientSession] = {}

    async def opened(app: web.Application) -> None:
        session["client"] = ClientSession(
            connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None),
            auto_decompress=False,
        )

    async def closed(app: web.Application) -> None:
        await session["client"].close()

    async def put(request: web.Request) -> web.Response:
        headers = {}
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        async with session["client"].put(
            backendURL + request.path_qs, data=request.content, headers=headers
        ) as answer:
            body = await answer.read()
            return web.Response(
                status=answer.status, body=body,
                headers={"Content-Type": answer.headers.get("Content-Type", "text/plain")},
            )

    app = web.Application()
    app.on_startup.append(opened)
    app.on_cleanup.append(closed)
    app.router.add_put("/files/{name}", put)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("backend", "proxy"))
    parser.add_argument("--storage", type=Path)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--backend")
    options = parser.parse_args()
    if options.role == "backend":
        if options.storage is None:
            parser.error("the backend needs --storage")
        app = backend(options.storage, options.fsync)
    else:
        if options.backend is None:
            parser.error("the proxy needs --backend")
        app = proxy(options.backend.rstrip("/"))
    sock = _listen()
    print(f"listening on tcp:127.0.0.1:{sock.getsockname()[1]}", flush=True)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
