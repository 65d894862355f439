"""
A hook receiver for integration tests: a real HTTP server (the standard
library's) in its own process on 127.0.0.1, which a test starts, stops
(every connection closes with it) and starts again on the same port.

Every request is appended to a file as one JSON line (status answered,
signature header, raw body, time) before it is answered, so that a test
polling the file sees every event the backend counted as delivered.

Run as C{python -m tests.hookreceiver PORT RECORD [--fail-first N]
[--tls CERT KEY]}: the first N requests are answered 500, the others 204;
with C{--tls}, over TLS with that certificate and key.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Lock
from typing import Any

from twisted.trial.unittest import TestCase

from tests.processes import Program, reactor, spawn


@dataclass
class Delivery:
    status: int
    signature: str
    body: bytes
    time: float

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def deliveries(record: Path) -> list[Delivery]:
    """What the receiver got so far (whole lines only)."""
    try:
        data = record.read_bytes()
    except FileNotFoundError:
        return []
    found = []
    for line in data.splitlines(keepends=True):
        if line.endswith(b"\n"):
            item = json.loads(line)
            found.append(Delivery(item["status"], item["signature"],
                                  item["body"].encode("utf-8"), item["time"]))
    return found


def accepted(record: Path) -> list[Delivery]:
    """The deliveries answered 2xx."""
    return [d for d in deliveries(record) if 200 <= d.status < 300]


async def startReceiver(
    test: TestCase, record: Path, port: int = 0, failFirst: int = 0,
    tls: tuple[Path, Path] | None = None,
) -> Program:
    """Start a receiver writing to C{record}; its C{port} is set once it listens."""
    argv = [sys.executable, "-m", "tests.hookreceiver", str(port), str(record.resolve()),
            "--fail-first", str(failFirst)]
    if tls is not None:
        argv += ["--tls", str(tls[0].resolve()), str(tls[1].resolve())]
    program = spawn(test, "hookreceiver", argv, cwd=str(Path(__file__).parent.parent))
    listening = program.protocol.listening

    def ended(code: object) -> object:
        if not listening.called:
            listening.errback(RuntimeError(f"the hook receiver ended:\n{program.output!r}"))
        return code

    program.protocol.ended.addBoth(ended)
    timeout = reactor.callLater(30, listening.cancel)
    program.port = await listening
    if timeout.active():
        timeout.cancel()
    return program


def main(argv: list[str]) -> None:
    port, record = int(argv[0]), argv[1]
    failFirst = int(argv[argv.index("--fail-first") + 1]) if "--fail-first" in argv else 0
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    lock = Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                seen[0] += 1
                status = 500 if seen[0] <= failFirst else 204
                line = json.dumps({
                    "status": status,
                    "signature": self.headers.get("Streamrelay-Signature", ""),
                    "body": body.decode("utf-8"),
                    "time": time.time(),
                }) + "\n"
                os.write(fd, line.encode("utf-8"))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if "--tls" in argv:
        at = argv.index("--tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(argv[at + 1], argv[at + 2])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on tcp:127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
