"""
Starting the peers of C{make bench --peers}: each a proxy in front of a
backend, both on free 127.0.0.1 ports, the backend storing into a folder
of its own on the same file system as streamrelay's storage.  The Python
peers (bench/peers/aiohttprelay.py, tornadorelay.py) run under the
benchmark's Python and print their port; nginx gets a port picked free
just before it starts, and is waited for until it accepts connections.
"""

from __future__ import annotations

import os
import pwd
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from peerinstall import nginxBinary
from peers.nginxrelay import backConfig, frontConfig
from services import Program, ServiceFailed, Stack, Usage

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

PEER_DIR = Path(__file__).parent / "peers"


@dataclass(frozen=True)
class Relay:
    """One peer: its key (for C{--peers}), how it is described, what it can do."""

    key: str
    title: str
    #: Whether its backend can fsync before answering.
    canFsync: bool
    #: Whether its backend answers C{{"name", "size", "sha256"}} as streamrelay's does.
    answersDigest: bool


RELAYS: dict[str, Relay] = {
    relay.key: relay
    for relay in (
        Relay("nginx", "nginx -> nginx WebDAV PUT (cannot fsync or hash)",
              canFsync=False, answersDigest=False),
        Relay("aiohttp", "aiohttp + uvloop",
              canFsync=True, answersDigest=True),
        Relay("tornado", "Tornado",
              canFsync=True, answersDigest=True),
    )
}

#: Every peer, in the order they are run and reported.
PEERS = tuple(RELAYS)


def freePort() -> int:
    """A port free on 127.0.0.1 now (for nginx, which cannot tell the one it was given)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def waitAccepting(program: Program, timeout: float = 30.0) -> None:
    """Wait until C{program} accepts connections on its C{port}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if program.process.poll() is not None:
            raise ServiceFailed(f"{program.label} ended before listening:\n{program.logTail()}")
        try:
            with socket.create_connection(("127.0.0.1", program.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceFailed(f"{program.label} not listening after {timeout:.0f} s")


class ProcessTree(Program):
    """
    A service of several processes (nginx: a master and its workers): its
    usage is the sum over the master and its children, RSS, peak RSS
    (VmHWM, each at its own peak) and CPU time.
    """

    def _children(self) -> list[int]:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def usage(self) -> Usage:
        total = super().usage()
        rss, peak, cpu = total.rss, total.peak, total.cpuSeconds
        for child in self._children():
            try:
                usage = _processUsage(child)
            except (OSError, KeyError, ValueError, IndexError):
                continue  # a worker that just ended
            rss, peak, cpu = rss + usage.rss, peak + usage.peak, cpu + usage.cpuSeconds
        return Usage(rss, peak, cpu)


def _processUsage(pid: int) -> Usage:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(rest.split()[0]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read().rpartition(")")[2].split()
    cpu = (int(stat[11]) + int(stat[12])) / _CLOCK_TICKS
    return Usage(fields["VmRSS"], fields["VmHWM"], cpu)


def _user() -> str | None:
    """As root, nginx's workers run as root too, to write the bench's private folders."""
    return pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None


def startNginx(label: str, folder: Path, config: str, port: int) -> Program:
    binary = nginxBinary()
    if binary is None:
        raise ServiceFailed("nginx is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nginx.conf").write_text(config)
    argv = [binary, "-e", "stderr", "-p", str(folder), "-c", str(folder / "nginx.conf"),
            "-g", "daemon off;"]
    program = ProcessTree(label, argv, folder / f"{label}.log")
    program.port = port
    try:
        waitAccepting(program)
    except BaseException:
        program.stop()
        raise
    return program


def startPython(script: str, label: str, logDir: Path, *args: str) -> Program:
    argv = [sys.executable, str(PEER_DIR / script), label, *args]
    program = Program(label, argv, logDir / f"{script}-{label}-{time.monotonic_ns()}.log")
    try:
        program.waitListening()
    except BaseException:
        program.stop()
        raise
    return program


class PeerStack(Stack):
    """
    A peer's backend storing into C{storage} and its proxy in front,
    labelled C{backend} and C{proxy} as streamrelay's; stopped on exit.
    """

    def __init__(self, relay: Relay, storage: Path, logDir: Path, fsync: bool) -> None:
        super().__init__(storage, logDir, withProxy=True)
        if fsync and not relay.canFsync:
            raise ValueError(f"{relay.key} cannot fsync")
        self.relay = relay
        self.fsync = fsync

    def stored(self, name: str) -> Path:
        """Where the backend stores an upload to C{/files/NAME}."""
        if self.relay.key == "nginx":
            return self.storage / "files" / name
        return self.storage / name

    def __enter__(self) -> PeerStack:
        self.storage.mkdir(parents=True, exist_ok=True)
        try:
            if self.relay.key == "nginx":
                self._startNginx()
            else:
                script = f"{self.relay.key}relay.py"
                args = ["--storage", str(self.storage)] + (["--fsync"] if self.fsync else [])
                self.backend = startPython(script, "backend", self.logDir, *args)
                self.proxy = startPython(script, "proxy", self.logDir,
                                         "--backend", self.backend.url)
        except BaseException:
            self.stop()
            raise
        return self

    def _startNginx(self) -> None:
        folder = self.logDir / f"nginx-{time.monotonic_ns()}"
        (self.storage / ".nginx-body").mkdir(exist_ok=True)
        (self.storage / "files").mkdir(exist_ok=True)
        backPort = freePort()
        self.backend = startNginx(
            "backend", folder / "back", backConfig(folder / "back", self.storage, backPort,
                                                   _user()), backPort)
        frontPort = freePort()
        self.proxy = startNginx(
            "proxy", folder / "front", frontConfig(folder / "front", frontPort, backPort,
                                                   _user()), frontPort)
