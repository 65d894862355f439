"""
The peers' part of the report: each relay's figures for W1 and W2 (MB/s)
and W3 (uploads/s), without and with fsync, and streamrelay's ratio to each
peer at the same durability.  streamrelay always fsyncs before answering,
so its figure (C{curl -T} through its proxy) is compared with each peer's
fsync column, and with nginx's only column, which has no fsync.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from peerservices import RELAYS
from peerworkloads import PeerRoute
from report import Ratio, formatTable
from workloads import PROXY, Measurement

#: The workloads the peers run, and what is compared for each.
PEER_WORKLOADS = ("W1", "W2", "W3")

#: streamrelay / peer targets of issue 28, by workload.
TARGETS = {"W1": 1.1}

#: W3's target is against the best peer with fsync.
BEST_W3_TARGET = 1.1


def figure(m: Measurement) -> float | None:
    """W3: median uploads/s; the others: median MB/s; L{None} without a good run."""
    if not m.seconds:
        return None
    if m.workload == "W3":
        return statistics.median(m.uploadRates)
    return m.median()


def _cell(m: Measurement | None) -> str:
    if m is None:
        return "n/a"
    value = figure(m)
    if value is None:
        return "FAILED"
    text = f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return text + (" (!)" if m.errors else "")


def _find(
    measurements: Sequence[Measurement], workload: str, relay: str, fsync: bool
) -> Measurement | None:
    for m in measurements:
        route = m.route
        if m.workload != workload:
            continue
        if relay == "streamrelay" and route == PROXY and fsync:
            return m
        if isinstance(route, PeerRoute) and route.relay == relay and route.fsync == fsync:
            return m
    return None


def _relays(measurements: Sequence[Measurement]) -> list[str]:
    found = [m.route.relay for m in measurements if isinstance(m.route, PeerRoute)]
    return list(dict.fromkeys(found))


def peersTable(measurements: Sequence[Measurement], versions: dict[str, str]) -> str:
    """One row per relay, a column per workload and durability; n/a where not run."""
    workloads = [w for w in PEER_WORKLOADS if any(m.workload == w for m in measurements)]
    headers = ["relay (curl -T -> its proxy -> its backend)"]
    for w in workloads:
        unit = "uploads/s" if w == "W3" else "MB/s"
        headers += [f"{w} {unit} no fsync", f"{w} {unit} fsync"]
    rows = []
    for relay in ["streamrelay", *_relays(measurements)]:
        if relay == "streamrelay":
            name = "streamrelay (always fsyncs)"
        else:
            name = RELAYS[relay].title
            if relay in versions:
                name += f" [{versions[relay]}]"
        row = [name]
        for w in workloads:
            row += [_cell(_find(measurements, w, relay, fsync)) for fsync in (False, True)]
        rows.append(row)
    return formatTable(headers, rows, right=set(range(1, len(headers))))


def peerRatios(measurements: Sequence[Measurement]) -> list[Ratio]:
    """
    streamrelay through its proxy / each peer at the same durability: the
    peer's fsync figure, or for a peer that cannot fsync (nginx) its figure
    without; W3 also against the best peer with fsync.
    """
    found = []
    relays = _relays(measurements)
    for w in PEER_WORKLOADS:
        ours = _find(measurements, w, "streamrelay", True)
        value = figure(ours) if ours is not None else None
        if not value:
            continue
        best: tuple[float, str] | None = None
        for relay in relays:
            fsync = RELAYS[relay].canFsync
            theirs = _find(measurements, w, relay, fsync)
            peer = figure(theirs) if theirs is not None else None
            if not peer:
                continue
            if fsync and (best is None or peer > best[0]):
                best = (peer, relay)
            durability = "with fsync" if fsync else "no fsync: it cannot"
            found.append(Ratio(f"{w} streamrelay / {relay} ({durability})", value / peer,
                               TARGETS.get(w)))
        if w == "W3" and best is not None:
            found.append(Ratio(f"W3 streamrelay / best peer with fsync ({best[1]})",
                               value / best[0], BEST_W3_TARGET))
    return found
