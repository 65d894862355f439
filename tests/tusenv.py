"""
What the tus integration tests need beyond the programs: the tus clients
no one here wrote (tuspy, tus-js-client), the backends' PATCH log lines,
and a TCP relay that cuts a connection half-way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.protocols import portforward
from twisted.trial.unittest import SkipTest

from tests.processes import Program, reactor

CLIENTS = Path(__file__).parent / "tusclients"
TUS_JS_VERSION = "4.3.1"
_PATCH = re.compile(
    rb"tus patch request_id=\S+ upload=(\w+) offset=(\d+) received=(\d+) kept=(\d+) "
    rb"outcome=(\w+)"
)


def patches(*programs: Program) -> list[tuple[int, int, int, str]]:
    """Every PATCH the backends logged: (offset, received, kept, outcome)."""
    return [
        (int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5).decode())
        for p in programs
        for m in _PATCH.finditer(p.output)
    ]


def tusJSClient() -> Path:
    """tus-js-client from npm, installed once per machine under the temp folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SkipTest("node and npm are needed for tus-js-client (.ci/run installs them)")
    folder = Path(tempfile.gettempdir()) / f"streamrelay-tus-js-client-{TUS_JS_VERSION}"
    client = folder / "node_modules" / "tus-js-client"
    if not (client / "package.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder),
             f"tus-js-client@{TUS_JS_VERSION}"],
            capture_output=True, timeout=300, check=False,
        )
        if done.returncode != 0:
            raise SkipTest(f"npm install tus-js-client failed: {done.stderr[-500:]!r}")
    return client


class _CuttingServer(portforward.ProxyServer):
    def dataReceived(self, data: bytes) -> None:
        cutter: Cutter = self.factory.cutter  # type: ignore[attr-defined]
        cutter.forwarded += len(data)
        if not cutter.done and cutter.forwarded >= cutter.cutAt:
            cutter.done = True
            self.transport.abortConnection()  # type: ignore[union-attr,attr-defined]
            if self.peer is not None:
                self.peer.transport.abortConnection()  # type: ignore[union-attr,attr-defined]
            return
        super().dataReceived(data)


class Cutter:
    """
    A TCP relay to C{port} that drops the connection once, when C{cutAt}
    bytes came from the client: a network cut.
    """

    def __init__(self, port: int, cutAt: int) -> None:
        self.cutAt = cutAt
        self.forwarded = 0
        self.done = False
        factory = portforward.ProxyFactory("127.0.0.1", port)
        factory.protocol = _CuttingServer
        factory.cutter = self  # type: ignore[attr-defined]
        self.factory: portforward.ProxyFactory = factory
        self.listening = reactor.listenTCP(0, factory, interface="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listening.getHost().port}"
