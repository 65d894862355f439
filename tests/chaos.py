"""
Chaos run (`make chaos`): many concurrent uploads through the proxy while
the backend is killed (SIGKILL or SIGTERM) and restarted, and clients abort
at random. Afterwards every file a client was told is stored must be there
with the bytes it sent, nothing partial may be visible, and no stored file
may hold bytes its client did not send.

Prints the figures and exits 1 when anything was lost or corrupted.
Only 127.0.0.1 is used; the run is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import partials, serviceArgv

_LISTENING = re.compile(rb"listening on tcp:127\.0\.0\.1:(\d+)")


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tried: int = 0
    stored: int = 0
    failedCleanly: int = 0
    aborted: int = 0
    kills: int = 0
    sent: dict[str, str] = field(default_factory=dict)  # name -> sha256 of what was sent
    told: dict[str, str] = field(default_factory=dict)  # name -> sha256 the server answered


class Service:
    def __init__(self, kind: str, args: list[str], log: Path, listen: str) -> None:
        self.kind, self.args, self.log, self.listen = kind, args, log, listen
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            serviceArgv(self.kind, [self.listen], *self.args),
            stdout=out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = _LISTENING.findall(self.log.read_bytes())
            if found and self.process.poll() is None and len(found) >= self._starts:
                self.port = int(found[-1])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start; see {self.log}")

    _starts = 1

    def restart(self, how: int) -> None:
        assert self.process is not None
        self.process.send_signal(how)
        self.process.wait(timeout=60)
        self._starts += 1
        self.listen = f"tcp:{self.port}:interface=127.0.0.1"
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def upload(port: int, name: str, data: bytes, abortAt: int | None, tally: Tally) -> None:
    sha = hashlib.sha256(data).hexdigest()
    with tally.lock:
        tally.tried += 1
        tally.sent[name] = sha
    if abortAt is not None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                f"PUT /files/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                .encode() + data[:abortAt]
            )
            # Linger 0: close with a reset, as a crashing client does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass
        with tally.lock:
            tally.aborted += 1
        return
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("PUT", f"/files/{name}", body=data)
        response = connection.getresponse()
        body = response.read()
        connection.close()
    except (OSError, http.client.HTTPException):
        with tally.lock:
            tally.failedCleanly += 1
        return
    if response.status in (200, 201):
        answer = json.loads(body)
        with tally.lock:
            tally.stored += 1
            tally.told[name] = answer["sha256"]
    else:
        with tally.lock:
            tally.failedCleanly += 1


def worker(port: int, seed: int, deadline: float, abortRate: float, tally: Tally) -> None:
    rng = random.Random(seed)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if rng.random() < 0.05:
            # Large enough for the proxy and the backend to splice it.
            size = rng.randrange(24 << 20, 40 << 20)
        else:
            size = rng.choice([0, 1, 1000, 65536, 1 << 20, 4 << 20, rng.randrange(1, 8 << 20)])
        data = rng.randbytes(size)
        abortAt = rng.randrange(0, size) if size and rng.random() < abortRate else None
        upload(port, f"w{seed}-{n}.bin", data, abortAt, tally)


def splicedBy(port: int) -> float:
    """How many uploads the service on C{port} spliced (its metrics)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    found = re.search(r"^streamrelay_uploads_spliced_total\{[^}]*\} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="how long uploads go on")
    p.add_argument("--clients", type=int, default=16, help="concurrent uploaders")
    p.add_argument("--abort-rate", type=float, default=0.15)
    p.add_argument("--kill-every", type=float, default=4.0, help="seconds between backend kills")
    p.add_argument("--seed", type=int, default=1)
    options = p.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="streamrelay-chaos-"))
    storage = folder / "uploads"
    backend = Service("backend", ["--storage", str(storage), "--grace", "2"],
                      folder / "backend.log", "tcp:0:interface=127.0.0.1")
    proxy = Service("proxy", [], folder / "proxy.log", "tcp:0:interface=127.0.0.1")
    tally = Tally()
    try:
        backend.start()
        proxy.args = ["--backend", f"http://127.0.0.1:{backend.port}", "--backend-timeout", "10"]
        proxy.start()
        deadline = time.monotonic() + options.seconds
        threads = [
            threading.Thread(target=worker, args=(proxy.port, options.seed * 1000 + i, deadline,
                                                  options.abort_rate, tally), daemon=True)
            for i in range(options.clients)
        ]
        for t in threads:
            t.start()
        rng = random.Random(options.seed)
        while time.monotonic() < deadline - options.kill_every:
            time.sleep(options.kill_every * rng.uniform(0.5, 1.5))
            backend.restart(rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]))
            tally.kills += 1
        for t in threads:
            t.join(timeout=options.seconds + 120)
        # One more restart: partial files a kill left are swept at start.
        backend.restart(signal.SIGTERM)
        time.sleep(0.5)
        spliced = splicedBy(proxy.port)
    finally:
        proxy.stop()
        backend.stop()

    visible = {p.name: p for p in storage.iterdir() if not p.name.startswith(".")}
    partial = partials(storage)
    lost = [n for n in tally.told if n not in visible]
    corrupted = []
    for name, path in visible.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if name not in tally.sent or digest != tally.sent[name]:
            corrupted.append(name)
    wrongAnswers = [n for n, sha in tally.told.items() if sha != tally.sent[n]]
    print(json.dumps({
        "seconds": options.seconds,
        "clients": options.clients,
        "backend kills": tally.kills,
        "uploads tried": tally.tried,
        "stored": tally.stored,
        "failed cleanly": tally.failedCleanly,
        "aborted by client": tally.aborted,
        "spliced by the proxy": spliced,
        "files visible": len(visible),
        "partial files visible": len(partial),
        "lost": len(lost),
        "corrupted": len(corrupted) + len(wrongAnswers),
    }, indent=1))
    bad = lost or corrupted or wrongAnswers or partial
    if bad:
        print(f"lost: {lost[:5]} corrupted: {corrupted[:5]} wrong answers: {wrongAnswers[:5]} "
              f"partial: {partial[:5]}; logs in {folder}")
        return 1
    subprocess.run(["rm", "-rf", str(folder)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
