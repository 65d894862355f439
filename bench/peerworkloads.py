"""
W1-W3 with the peers' routes added to streamrelay's, all interleaved in the
same workload run (run 1 of every route, then run 2, ...), each on a
settled disk.  A peer's route is C{curl -T} to its proxy; every answer's
status is checked (and its SHA-256 where the peer answers one), and after
each run every stored file is read back and hashed, so that a peer storing
the wrong bytes, or fewer, fails instead of looking fast.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from clients import Batch, check, curlUploads
from peerservices import RELAYS, PeerStack
from services import Stack
from workloads import Context, Route, Timed, UploadWorkload

MiB = 1 << 20

#: Stored files reported wrong at most per run (the rest are counted).
SHOWN = 5


@dataclass(frozen=True)
class PeerRoute(Route):
    """C{curl -T} through a peer's proxy to its backend, with or without fsync."""

    relay: str = ""
    fsync: bool = False


def peerRoute(relay: str, fsync: bool) -> PeerRoute:
    label = f"curl -T -> {relay} proxy -> {relay} backend, {'fsync' if fsync else 'no fsync'}"
    return PeerRoute(label, "curl", True, relay=relay, fsync=fsync)


def peerRoutes(relays: list[str]) -> tuple[PeerRoute, ...]:
    """Each peer without fsync, and with it where it can."""
    routes = []
    for key in relays:
        routes.append(peerRoute(key, False))
        if RELAYS[key].canFsync:
            routes.append(peerRoute(key, True))
    return tuple(routes)


def sha256File(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verifyStored(paths: list[Path], size: int, sha256: str) -> list[str]:
    """Errors for each of C{paths} missing, or not C{size} bytes hashing to C{sha256}."""
    errors = []
    for path in paths:
        try:
            stored, digest = sha256File(path)
        except OSError as e:
            errors.append(f"{path.name}: not stored ({e.strerror or e})")
            continue
        if stored != size:
            errors.append(f"{path.name}: {stored} bytes stored, {size} sent")
        elif digest != sha256:
            errors.append(f"{path.name}: stored sha256 {digest} != source {sha256}")
    return errors


def checkStatus(batch: Batch) -> list[str]:
    """Errors in C{batch} for a server that answers no digest: a failure, a status not 2xx."""
    errors = []
    for t in batch.transfers:
        if t.error:
            errors.append(f"{t.name}: {t.error}")
        elif t.status not in (200, 201, 204):
            errors.append(f"{t.name}: HTTP {t.status}")
    return errors


class PeersWorkload(UploadWorkload):
    """
    The upload workload C{base} with C{routes} of peers after its own:
    streamrelay's routes run as C{base} runs them, the peers' against a
    L{PeerStack} each.
    """

    def __init__(self, base: UploadWorkload, routes: tuple[PeerRoute, ...]) -> None:
        super().__init__(base.key, base.fileSize, base.count, base.parallel,
                         base.routes + routes)
        self.base = base
        self._stacks: dict[PeerRoute, PeerStack] = {}

    def title(self, ctx: Context) -> str:
        return self.base.title(ctx)

    def stack(self, ctx: Context, route: Route) -> Stack | None:
        if not isinstance(route, PeerRoute):
            return self.base.stack(ctx, route)
        stack = PeerStack(RELAYS[route.relay], ctx.backendStorage(), ctx.workDir, route.fsync)
        self._stacks[route] = stack
        return stack

    def timed(
        self, ctx: Context, route: Route, url: str, run: int, *, source: Path, size: int,
        sha256: str, clientDir: Path,
    ) -> Timed:
        if not isinstance(route, PeerRoute):
            return self.base.timed(ctx, route, url, run, source=source, size=size,
                                   sha256=sha256, clientDir=clientDir)
        relay = RELAYS[route.relay]
        names = self.names(run)
        batch = curlUploads(url, source, names, self.parallel, clientDir,
                            jsonAnswers=relay.answersDigest)
        errors = check(batch, size, sha256) if relay.answersDigest else checkStatus(batch)
        stack = self._stacks[route]
        stored = verifyStored([stack.stored(n) for n in names], size, sha256)
        errors += [f"(stored file) {e}" for e in stored[:SHOWN]]
        if len(stored) > SHOWN:
            errors.append(f"(stored file) and {len(stored) - SHOWN} more wrong or missing")
        return Timed(batch.seconds, [t.seconds for t in batch.transfers], errors)
