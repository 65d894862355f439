"""
Starting and stopping streamrelay's services for a benchmark, and reading
what they cost (memory and CPU) from C{/proc}.

Each service is a C{twistd -n} child known by its PID, listening on
C{tcp:0:interface=127.0.0.1}; its port is read from its own
"listening on" log line.  Children also get SIGTERM if the benchmark dies.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

#: The venv's bin folder: the benchmark runs under its Python.
BIN = Path(sys.executable).parent

_LISTENING = re.compile(rb"listening on tcp:127\.0\.0\.1:(\d+)")
_SINK_COUNTS = re.compile(rb"hooksink: (\d+) connection\(s\), (\d+) request\(s\)")
_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServiceFailed(Exception):
    """A service did not start, or died while measured."""


def _dieWithParent() -> None:
    """In the child: be sent SIGTERM when the benchmark ends, however it ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class Usage:
    """A process's memory and CPU at one moment."""

    rss: int
    peak: int
    cpuSeconds: float


class Program:
    """One started service."""

    def __init__(
        self, label: str, argv: list[str], logPath: Path, env: dict[str, str] | None = None
    ) -> None:
        self.label = label
        self.logPath = logPath
        self.port = 0
        with open(logPath, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                env={**os.environ, **env} if env else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_dieWithParent,
            )
        self.pid = self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def waitListening(self, timeout: float = 30.0) -> int:
        """Wait for the "listening on" line; return the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.logPath.read_bytes())
            if match:
                self.port = int(match.group(1))
                return self.port
            if self.process.poll() is not None:
                raise ServiceFailed(f"{self.label} ended before listening:\n{self.logTail()}")
            time.sleep(0.05)
        raise ServiceFailed(f"{self.label} not listening after {timeout:.0f} s:\n{self.logTail()}")

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def _cpuSeconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        # utime and stime are fields 14 and 15; fields[0] is field 3.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def usage(self) -> Usage:
        """Current RSS, peak RSS (VmHWM) and CPU time; fails if it died."""
        if self.process.poll() is not None:
            raise ServiceFailed(f"{self.label} died:\n{self.logTail()}")
        return Usage(self._status("VmRSS"), self._status("VmHWM"), self._cpuSeconds())

    def logTail(self, lines: int = 20) -> str:
        try:
            text = self.logPath.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL after C{grace} seconds."""
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait()


def startService(
    kind: str, logDir: Path, *args: str, env: dict[str, str] | None = None
) -> Program:
    """Start C{twistd -n streamrelay-KIND} on a free loopback port (C{env} added to ours)."""
    argv = [
        str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-",
        f"streamrelay-{kind}", "--listen", "tcp:0:interface=127.0.0.1", *args,
    ]
    program = Program(kind, argv, logDir / f"{kind}-{time.monotonic_ns()}.log", env)
    try:
        program.waitListening()
        with urllib.request.urlopen(program.url + "/healthz", timeout=10) as answer:
            answer.read()
    except BaseException:
        program.stop()
        raise
    return program


def startHookSink(logDir: Path) -> Program:
    """A local hook receiver answering 204 (bench/hooksink.py)."""
    argv = [sys.executable, str(Path(__file__).parent / "hooksink.py")]
    program = Program("hooksink", argv, logDir / f"hooksink-{time.monotonic_ns()}.log")
    try:
        program.waitListening()
    except BaseException:
        program.stop()
        raise
    return program


class Stack:
    """
    A fresh backend (storing into C{storage}) and, when C{withProxy}, a proxy
    in front of it, with C{hooks} a local hook receiver the backend sends
    its events to; stopped on exit, even on failure.  Fresh processes per
    measured path make each one's VmHWM belong to that path.
    """

    def __init__(
        self,
        storage: Path,
        logDir: Path,
        withProxy: bool,
        backendArgs: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        hooks: bool = False,
    ) -> None:
        self.storage = storage
        self.hooks = hooks
        self.hookSink: Program | None = None
        #: The hook sink's connections and requests, once stopped.
        self.hookCounts: tuple[int, int] | None = None
        self.logDir = logDir
        self.withProxy = withProxy
        self.backendArgs = (
            list(backendArgs) if backendArgs is not None else ["--storage", str(storage)]
        )
        self.env = env
        self.backend: Program | None = None
        self.proxy: Program | None = None

    def __enter__(self) -> Stack:
        self.storage.mkdir(parents=True, exist_ok=True)
        try:
            backendArgs = list(self.backendArgs)
            if self.hooks:
                self.hookSink = startHookSink(self.logDir)
                backendArgs += ["--hook-url", self.hookSink.url + "/events"]
            self.backend = startService("backend", self.logDir, *backendArgs, env=self.env)
            if self.withProxy:
                self.proxy = startService("proxy", self.logDir, "--backend", self.backend.url)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for program in (self.proxy, self.backend, self.hookSink):
            if program is not None:
                program.stop()
        if self.hookSink is not None:
            match = _SINK_COUNTS.search(self.hookSink.logPath.read_bytes())
            if match:
                self.hookCounts = (int(match.group(1)), int(match.group(2)))

    @property
    def url(self) -> str:
        """Where clients send: the proxy if there is one, else the backend."""
        target = self.proxy or self.backend
        assert target is not None
        return target.url

    def programs(self) -> dict[str, Program]:
        return {p.label: p for p in (self.proxy, self.backend) if p is not None}

    def usage(self) -> dict[str, Usage]:
        return {label: p.usage() for label, p in self.programs().items()}
