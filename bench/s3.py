"""
W1 against the S3 store: the same 1 GiB upload, with the backend storing in
a real S3 server (Ceph RGW from C{bash .ci/s3-ceph.sh start}, or any server
named by C{S3_ENDPOINT_URL}, C{S3_ACCESS_KEY}, C{S3_SECRET_KEY} on
loopback), next to the server's own speed for the same file (one signed
C{curl -T} straight to S3, no streamrelay).

Each run stores into a bucket made for the benchmark and removed at the
end; objects are deleted between runs.  S3 requests of the benchmark itself
are made with C{curl --aws-sigv4}.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from clients import CURL
from services import Stack
from workloads import Context, Measurement, Route, Timed, UploadWorkload

ENV_FILE = Path(os.environ.get("S3_ENV_FILE", "/tmp/ci-ceph-s3/env"))
_ASSIGNMENT = re.compile(r"(S3_[A-Z_]+)=(\S*)")

# The reference signs its request but not its payload (UNSIGNED-PAYLOAD):
# streamrelay is measured the same way, and once more with each part's
# SHA-256 signed (its default for an http endpoint), which S3 then checks.
S3_DIRECT = Route("curl -T -> backend -> S3, payload unsigned", "curl", False)
S3_PROXY = Route("curl -T -> proxy -> backend -> S3, payload unsigned", "curl", True)
S3_PROXY_SIGNED = Route("curl -T -> proxy -> backend -> S3, parts' SHA-256 signed", "curl", True)
S3_RAW = Route("curl -T -> S3 (signed, payload unsigned, no streamrelay)", "s3", False)
_PAYLOAD_HASH = {S3_DIRECT: "unsigned", S3_PROXY: "unsigned", S3_PROXY_SIGNED: "sha256"}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    accessKey: str
    secretKey: str
    region: str

    def curl(self, method: str, path: str, *args: str) -> list[str]:
        return [
            CURL, "--silent", "--show-error", "-X", method,
            "--aws-sigv4", f"aws:amz:{self.region}:s3", "-u", f"{self.accessKey}:{self.secretKey}",
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", *args, self.endpoint + path,
        ]

    def call(self, method: str, path: str, *args: str) -> bytes:
        return subprocess.run(
            self.curl(method, path, "--fail", *args), check=True, capture_output=True, timeout=60
        ).stdout


def findServer() -> tuple[S3Server | None, str]:
    """The S3 server on loopback to measure against, or why there is none."""
    settings = dict(os.environ)
    if not settings.get("S3_ENDPOINT_URL"):
        try:
            settings = dict(_ASSIGNMENT.findall(ENV_FILE.read_text()))
        except OSError:
            settings = {}
    endpoint = settings.get("S3_ENDPOINT_URL", "")
    if not endpoint or not settings.get("S3_ACCESS_KEY") or not settings.get("S3_SECRET_KEY"):
        return None, f"no S3 server (run `bash .ci/s3-ceph.sh start`, which writes {ENV_FILE})"
    host = urlsplit(endpoint).hostname or ""
    if not host.startswith("127."):
        return None, f"the S3 server {endpoint} is not on 127.0.0.0/8"
    server = S3Server(endpoint.rstrip("/"), settings["S3_ACCESS_KEY"], settings["S3_SECRET_KEY"],
                      settings.get("S3_REGION") or "us-east-1")
    try:
        server.call("GET", "/", "-m", "5")
    except (subprocess.SubprocessError, OSError) as e:
        return None, f"the S3 server {endpoint} does not answer: {e}"
    return server, ""


class S3UploadWorkload(UploadWorkload):
    """L{UploadWorkload} with the backend storing in a bucket of C{server}."""

    def __init__(self, key: str, server: S3Server) -> None:
        super().__init__(
            key, lambda ctx: ctx.size, 1, 1, (S3_DIRECT, S3_PROXY, S3_PROXY_SIGNED, S3_RAW)
        )
        self.server = server
        self.bucket = "streamrelay-bench-" + secrets.token_hex(4)

    def title(self, ctx: Context) -> str:
        return f"{super().title(ctx)} stored in S3 ({self.server.endpoint})"

    def run(self, ctx: Context) -> list[Measurement]:
        self.server.call("PUT", f"/{self.bucket}")
        try:
            return super().run(ctx)
        finally:
            self.clear(ctx)
            for _ in range(20):  # staging objects go in the background
                try:
                    self.server.call("DELETE", f"/{self.bucket}")
                    break
                except subprocess.SubprocessError:
                    time.sleep(0.5)
                    self.clear(ctx)

    def stack(self, ctx: Context, route: Route) -> Stack | None:
        if route is S3_RAW:
            return None  # straight to S3: no streamrelay service
        s = self.server
        return Stack(
            ctx.storage, ctx.workDir, route.viaProxy,
            backendArgs=("--storage", f"s3://{self.bucket}/bench", "--s3-endpoint", s.endpoint,
                         "--s3-payload-hash", _PAYLOAD_HASH[route]),
            env={"AWS_ACCESS_KEY_ID": s.accessKey, "AWS_SECRET_ACCESS_KEY": s.secretKey,
                 "AWS_REGION": s.region},
        )

    def clear(self, ctx: Context) -> None:
        listing = self.server.call("GET", f"/{self.bucket}?list-type=2")
        for key in re.findall(rb"<Key>([^<]*)</Key>", listing):
            self.server.call("DELETE", f"/{self.bucket}/{key.decode()}")

    def timed(
        self, ctx: Context, route: Route, url: str, run: int, *, source: Path, size: int,
        sha256: str, clientDir: Path,
    ) -> Timed:
        if route is not S3_RAW:
            return super().timed(
                ctx, route, url, run, source=source, size=size, sha256=sha256, clientDir=clientDir
            )
        name = f"{self.key.lower()}-raw-r{run}.bin"
        started = time.perf_counter()
        result = subprocess.run(
            self.server.curl("PUT", f"/{self.bucket}/{name}", "-T", str(source),
                             "-o", "/dev/null", "-w", "%{http_code}"),
            capture_output=True, timeout=3600,
        )
        seconds = time.perf_counter() - started
        status = int(result.stdout or b"0")
        if result.returncode != 0 or status != 200:
            return Timed(seconds, [], [f"HTTP {status} {result.stderr!r}"])
        return Timed(seconds, [seconds], [])


def workload(key: str) -> tuple[S3UploadWorkload | None, str]:
    server, why = findServer()
    return (S3UploadWorkload(key, server) if server else None), why

