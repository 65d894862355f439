"""
C{make bench}'s W1S3: streamrelay measured at the reference's payload check
(none: C{UNSIGNED-PAYLOAD}) and with its parts' SHA-256 signed, and the
ratios it prints.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import tests.benchpath  # noqa: F401  (bench/ on the path for the imports below)

# isort: split
from report import ratios
from s3 import S3_DIRECT, S3_PROXY, S3_PROXY_SIGNED, S3_RAW, S3Server, S3UploadWorkload
from workloads import Context, Measurement, Route


def _w1s3(route: Route, megabytes: float) -> Measurement:
    m = Measurement("W1S3", route, 10**9, 1)
    m.seconds = [1000 / megabytes]
    return m


class W1S3Tests(SynchronousTestCase):
    def test_payloadHashPerRoute(self) -> None:
        """The backend sends parts unsigned like the reference, or signed on its own route."""
        workload = S3UploadWorkload(
            "W1S3", S3Server("http://127.0.0.1:7480", "ak", "sk", "us-east-1")
        )
        ctx = Context(Path(self.mktemp()), runs=1, size=1)
        chosen = {}
        for route in (S3_DIRECT, S3_PROXY, S3_PROXY_SIGNED):
            stack = workload.stack(ctx, route)
            assert stack is not None
            args = list(stack.backendArgs)
            chosen[route] = args[args.index("--s3-payload-hash") + 1]
        self.assertEqual(
            chosen, {S3_DIRECT: "unsigned", S3_PROXY: "unsigned", S3_PROXY_SIGNED: "sha256"}
        )
        self.assertIsNone(workload.stack(ctx, S3_RAW))

    def test_ratios(self) -> None:
        """Through the proxy against curl at the same check (target 0.8), and signed."""
        found = {
            r.label: (round(r.value, 2), r.target)
            for r in ratios([_w1s3(S3_DIRECT, 250), _w1s3(S3_PROXY, 240),
                             _w1s3(S3_PROXY_SIGNED, 180), _w1s3(S3_RAW, 300)], [])
        }
        self.assertEqual(found, {
            "W1S3 proxy path / direct path (curl -T, S3 store)": (0.96, None),
            "W1S3 via proxy / curl -T to S3 (payloads unsigned)": (0.8, 0.8),
            "W1S3 via proxy, parts signed / curl -T to S3": (0.6, None),
        })
