"""
What the hook sender counts, in the backend's C{/metrics} registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCIES = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 86400)


class HookMetrics:
    """Events pending, delivered, failed attempts, dead, and delivery latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.pending = Gauge(
            "streamrelay_hook_events_pending",
            "post-finish and post-delete events recorded and not yet delivered.",
            registry=registry,
        )
        self.delivered = Counter(
            "streamrelay_hook_events_delivered", "Events the hook answered 2xx.",
            registry=registry,
        )
        self.failedAttempts = Counter(
            "streamrelay_hook_delivery_failures",
            "Delivery attempts that got no 2xx (each is retried with backoff).",
            registry=registry,
        )
        self.dead = Gauge(
            "streamrelay_hook_events_dead",
            "Events given up after --hook-max-age, kept in the queue folder's dead.log.",
            registry=registry,
        )
        self.latency = Histogram(
            "streamrelay_hook_delivery_latency_seconds",
            "Time from an event's recording to its hook's 2xx.",
            registry=registry, buckets=_LATENCIES,
        )
