"""
Running streamrelay's real programs in integration tests, and what those
tests send them: shared random files, curl's command line, one-call HTTP
requests, a client that sends half a body.

Services listen on C{tcp:0:interface=127.0.0.1}; the port is read from the
program's own "listening on" log line.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH

reactor: Any = _reactor

BIN = Path(sys.executable).parent
# The text log line, or the JSON event of --log-format json.
_LISTENING = re.compile(rb'(?:listening on |"where": ")tcp:(?:127\.0\.0\.1|::1):(\d+)')


def deferLater(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class _Output(ProcessProtocol):
    def __init__(self, label: str, service: bool) -> None:
        self.label = label
        self.service = service
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.stdoutLines: list[bytes] = []
        self._lineWaiters: list[tuple[bytes, Deferred[bytes]]] = []

    def outReceived(self, data: bytes) -> None:
        self._received(data)

    def errReceived(self, data: bytes) -> None:
        self._received(data)

    logFile: Path | None = None

    def _received(self, data: bytes) -> None:
        self.output += data
        if self.logFile is not None:
            with open(self.logFile, "ab") as f:
                f.write(data)
        if not self.listening.called:
            match = _LISTENING.search(self.output)
            if match:
                self.listening.callback(int(match.group(1)))
        for waiter in list(self._lineWaiters):
            text, d = waiter
            if text in self.output:
                self._lineWaiters.remove(waiter)
                d.callback(self.output)

    def waitFor(self, text: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if text in self.output:
            d.callback(self.output)
        else:
            self._lineWaiters.append((text, d))
        return d

    def processEnded(self, reason: Failure) -> None:
        code: int | None = 0
        if isinstance(reason.value, ProcessTerminated):
            code = reason.value.exitCode
        elif not reason.check(ProcessDone):
            code = None
        if self.service and not self.listening.called:
            self.listening.errback(
                RuntimeError(f"{self.label} ended before listening:\n{self.output.decode()}")
            )
        for _text, d in self._lineWaiters:
            d.errback(RuntimeError(f"{self.label} ended:\n{self.output.decode()}"))
        self._lineWaiters = []
        self.ended.callback(code)


@dataclass
class Program:
    """A running program started by a test."""

    label: str
    protocol: _Output
    pid: int
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self, field: str) -> int:
        """A C{/proc/PID/status} memory figure, in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def rss(self) -> int:
        return self.status("VmRSS")

    def peak(self) -> int:
        return self.status("VmHWM")

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def writeStdin(self, data: bytes) -> None:
        transport = self.protocol.transport
        assert transport is not None
        transport.write(data)

    @property
    def output(self) -> bytes:
        return self.protocol.output


def spawn(
    test: TestCase,
    label: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    service: bool = False,
) -> Program:
    protocol = _Output(label, service)
    logs = Path("logs")
    logs.mkdir(exist_ok=True)
    environment = dict(os.environ)
    environment.update(env or {})
    transport = reactor.spawnProcess(
        protocol, argv[0], list(argv), env=environment, path=cwd
    )
    program = Program(label, protocol, transport.pid)
    # Each program's output is kept in the trial temp folder's logs/ for
    # looking into a failure.
    protocol.logFile = logs / f"{test.id().rsplit('.', 1)[-1]}-{label}-{transport.pid}.log"

    async def stop() -> None:
        if not protocol.ended.called:
            program.signal(signal.SIGTERM)
            killer = reactor.callLater(10, program.signal, signal.SIGKILL)
            await protocol.ended
            if killer.active():
                killer.cancel()

    test.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return program


def serviceArgv(kind: str, listens: Sequence[str], *args: str) -> list[str]:
    """The command line of C{twistd -n streamrelay-KIND} on C{listens}, logging to stdout."""
    argv = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", f"streamrelay-{kind}"]
    for listen in listens:
        argv += ["--listen", listen]
    return argv + list(args)


async def startService(
    test: TestCase,
    kind: str,
    *args: str,
    env: dict[str, str] | None = None,
    listen: str = "tcp:0:interface=127.0.0.1",
) -> Program:
    """Start C{twistd -n streamrelay-KIND}, by default on a free loopback port."""
    program = spawn(test, kind, serviceArgv(kind, [listen], *args), env=env, service=True)
    timeout = reactor.callLater(30, program.protocol.listening.cancel)
    program.port = await program.protocol.listening
    if timeout.active():
        timeout.cancel()
    return program


async def startStack(
    test: TestCase,
    storage: Path,
    backendArgs: Sequence[str] = (),
    proxyArgs: Sequence[str] = (),
) -> tuple[Program, Program]:
    backend = await startService(test, "backend", "--storage", str(storage), *backendArgs)
    proxy = await startService(test, "proxy", "--backend", backend.url, *proxyArgs)
    return backend, proxy


async def run(
    test: TestCase, label: str, argv: Sequence[str], timeout: float = 120
) -> tuple[int | None, bytes]:
    """Run a program to its end; return its exit code and output."""
    program = spawn(test, label, argv)
    killer = reactor.callLater(timeout, program.signal, signal.SIGKILL)
    code = await program.protocol.ended
    if killer.active():
        killer.cancel()
    return code, program.output


def makeRandomFile(path: Path, size: int, seed: int = 0) -> str:
    """Write C{size} pseudo-random bytes to C{path}; return their SHA-256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    block = 16 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            data = rng.randbytes(min(block, left))
            digest.update(data)
            f.write(data)
            left -= len(data)
    return digest.hexdigest()


def sha256File(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def partials(storage: Path) -> list[Path]:
    """
    The files of uploads in flight (or left by a crash) that hold bytes: not
    the backend's lock, nor the empty spare files it keeps for the next
    uploads (see streamrelay/store/spares.py), which from outside look
    like an upload that got no byte yet.
    """
    found = []
    for p in (storage / ".partial").iterdir():
        try:
            if p.name != ".lock" and p.stat().st_size:
                found.append(p)
        except FileNotFoundError:
            pass  # removed meanwhile
    return found


async def eventually(check: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll C{check()} until it is true or C{timeout} seconds passed."""
    waited = 0.0
    while waited <= timeout:
        if check():
            return True
        await deferLater(interval)
        waited += interval
    return bool(check())


def mountTmpfs(test: TestCase, size: str) -> Path:
    """A tmpfs of C{size} (C{"4m"}) mounted for C{test}; skips it where that cannot be."""
    if os.geteuid() != 0:
        raise SkipTest("mounting a tmpfs needs root")
    mountpoint = Path(test.mktemp())
    mountpoint.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
    )
    if result.returncode != 0:
        raise SkipTest(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    test.addCleanup(subprocess.run, ["umount", "-l", str(mountpoint)])
    return mountpoint


GiB = 1 << 30
MiB = 1 << 20
#: Allowed growth of a service's peak RSS over its idle RSS during a transfer.
MEMORY_BOUND = 32 * MiB

_shared: dict[str, tuple[Path, str]] = {}


def sharedFile(size: int) -> tuple[Path, str]:
    """A random file of C{size} bytes made once per test run, and its SHA-256."""
    key = str(size)
    if key not in _shared:
        folder = Path(tempfile.mkdtemp(prefix="streamrelay-test-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / f"random-{size}"
        _shared[key] = (path, makeRandomFile(path, size, seed=size))
    return _shared[key]


def curl(*args: str) -> list[str]:
    return ["/usr/bin/curl", "--silent", "--show-error", *args]


def client() -> HTTPClient:
    """A client that keeps no connection open after a test."""
    from twisted.internet import reactor

    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


async def call(method: str, url: str, body: bytes | None = None,
               headers: dict[bytes | str, bytes | str] | None = None,
               ) -> tuple[int, dict[str, str], bytes]:
    """One request; its status, headers (with Content-Length) and body."""
    response = await client().request(method, url, data=body, headers=headers or {})
    content = await response.content()
    flat = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    if method != "HEAD" and response.length is not UNKNOWN_LENGTH:
        flat["content-length"] = str(response.length)
    return response.code, flat, content


def halfSender(test: TestCase, port: int, name: str, source: Path):  # type: ignore[no-untyped-def]
    return spawn(test, "halfsender", [
        sys.executable, "-m", "tests.halfsender", str(port), f"/files/{name}", str(source),
    ])
