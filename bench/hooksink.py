"""
A hook receiver for the benchmark: reads each C{POST} whole, then answers
C{204}, keeping nothing (the application's cheapest endpoint).  Prints
C{listening on tcp:127.0.0.1:PORT}; runs until SIGTERM or SIGINT, then
prints C{hooksink: N connection(s), M request(s)} (how well the backend
reuses its connections).

One asyncio thread with HTTP/1.1 keep-alive and a deep listen queue: the
standard library's C{ThreadingHTTPServer} it replaces listened with a
queue of 5, so a burst of 64 pre-create requests on new connections saw
SYNs dropped and retried a second or more later, and it took a thread
per connection; the figures then measured the sink, not the backend.
"""

from __future__ import annotations

import asyncio
import signal

BACKLOG = 1024
_ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Counts:
    connections = 0
    requests = 0


async def _chunked(reader: asyncio.StreamReader) -> None:
    """Read a chunked body to its end."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    Counts.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip().lower()
            try:
                if headers.get(b"transfer-encoding", b"identity") != b"identity":
                    await _chunked(reader)
                else:
                    await reader.readexactly(int(headers.get(b"content-length", b"0")))
            except ValueError:
                writer.write(_BAD)
                return
            Counts.requests += 1
            writer.write(_ANSWER)
            if headers.get(b"connection") == b"close" or lines[0].endswith(b"HTTP/1.0"):
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=BACKLOG)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on tcp:127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    print(f"hooksink: {Counts.connections} connection(s), {Counts.requests} request(s)",
          flush=True)


if __name__ == "__main__":
    asyncio.run(main())
