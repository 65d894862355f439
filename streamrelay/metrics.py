"""
What the services count, exposed at C{/metrics} in Prometheus' text format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.iweb import IRequest

_DURATIONS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 7200)


class Metrics:
    """One service's counters, in a registry of its own."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"service": service}
        self.started = Counter(
            "streamrelay_uploads_started", "Uploads begun.",
            registry=self.registry, labelnames=["service"],
        ).labels(**labels)
        self.completed = Counter(
            "streamrelay_uploads_completed", "Uploads stored intact.",
            registry=self.registry, labelnames=["service"],
        ).labels(**labels)
        self._failed = Counter(
            "streamrelay_uploads_failed", "Uploads that failed, by reason.",
            registry=self.registry, labelnames=["service", "reason"],
        )
        self.inFlight = Gauge(
            "streamrelay_uploads_in_flight", "Uploads being received now.",
            registry=self.registry, labelnames=["service"],
        ).labels(**labels)
        self.spliced = Counter(
            "streamrelay_uploads_spliced", "Uploads whose body the kernel moves straight "
            "from the client's connection into the file (backend) or on (proxy).",
            registry=self.registry, labelnames=["service"],
        ).labels(**labels)
        self.bytesReceived = Counter(
            "streamrelay_bytes_received", "Request body bytes received.",
            registry=self.registry, labelnames=["service"],
        ).labels(**labels)
        self.bytesSent = Counter(
            "streamrelay_bytes_sent", "Response body bytes sent for downloads.",
            registry=self.registry, labelnames=["service"],
        ).labels(**labels)
        self.duration = Histogram(
            "streamrelay_upload_duration_seconds", "Time from headers to answer of uploads.",
            registry=self.registry, labelnames=["service"], buckets=_DURATIONS,
        ).labels(**labels)
        self._backendErrors = Counter(
            "streamrelay_backend_errors", "Requests the proxy could not complete with the "
            "backend, by kind.",
            registry=self.registry, labelnames=["service", "kind"],
        )
        self._service = service

    def failed(self, reason: str) -> None:
        self._failed.labels(service=self._service, reason=reason).inc()

    def backendError(self, kind: str) -> None:
        self._backendErrors.labels(service=self._service, kind=kind).inc()

    def render(self, request: IRequest) -> bytes:
        body = generate_latest(self.registry)
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body
