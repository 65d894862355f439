"""
The pure parts of C{make bench --peers}: its arguments, the workloads it
builds, the peers' table and ratios, the nginx configurations, and the
check of what a peer stored.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import tests.benchpath  # noqa: F401  (bench/ on the path for the imports below)

# isort: split
from clients import Batch, Transfer
from peerreport import peerRatios, peersTable
from peers.nginxrelay import backConfig, frontConfig
from peerservices import PEERS
from peerworkloads import PeerRoute, PeersWorkload, checkStatus, peerRoute, peerRoutes, verifyStored
from workloads import PROXY, WORKLOADS, Measurement, UploadWorkload

from bench import optionErrors, parsePeers, parser, selectedWorkloads  # type: ignore[attr-defined]


class ArgumentTests(SynchronousTestCase):
    def test_peerNames(self) -> None:
        """Peers are named with commas, in any order, and come out in the report's order."""
        self.assertEqual(parsePeers("tornado, NGINX"), ["nginx", "tornado"])
        self.assertEqual(parsePeers("all"), list(PEERS))
        self.assertEqual(list(PEERS), ["nginx", "aiohttp", "tornado"])

    def test_unknownPeer(self) -> None:
        """An unknown or empty list of peers is refused, naming the ones there are."""
        with self.assertRaises(argparse.ArgumentTypeError) as caught:
            parsePeers("nginx,caddy")
        self.assertIn("nginx, aiohttp, tornado", str(caught.exception))
        self.assertRaises(argparse.ArgumentTypeError, parsePeers, " , ")

    def test_peersFlag(self) -> None:
        """C{--peers} alone is every peer; without it, none; with a value, those."""
        self.assertEqual(parser().parse_args([]).peers, [])
        self.assertEqual(parser().parse_args(["--peers"]).peers, list(PEERS))
        self.assertEqual(parser().parse_args(["--peers", "--size", "256M"]).peers, list(PEERS))
        self.assertEqual(parser().parse_args(["--peers=aiohttp"]).peers, ["aiohttp"])

    def test_peersNeedTheirWorkloads(self) -> None:
        """C{--peers} with none of W1-W3 is refused before anything is installed."""
        options = parser().parse_args(["--peers", "--workloads", "W4"])
        self.assertEqual(optionErrors(options),
                         ["--peers runs with W1, W2, W3: name one in --workloads"])
        options = parser().parse_args(["--peers", "--workloads", "W4,W3"])
        self.assertEqual(optionErrors(options), [])

    def test_w3Files(self) -> None:
        """C{--w3-files} is a count of at least one; 1,000 by default."""
        self.assertEqual(parser().parse_args([]).w3_files, 1000)
        self.assertEqual(parser().parse_args(["--w3-files", "64"]).w3_files, 64)
        self.assertRaises(SystemExit, parser().parse_args, ["--w3-files", "0"])


class WorkloadTests(SynchronousTestCase):
    def test_peerRoutes(self) -> None:
        """Each peer without fsync, and with it unless it cannot (nginx)."""
        routes = peerRoutes(["nginx", "aiohttp"])
        self.assertEqual([(r.relay, r.fsync) for r in routes],
                         [("nginx", False), ("aiohttp", False), ("aiohttp", True)])

    def test_withPeers(self) -> None:
        """
        W1-W3 keep streamrelay's routes, first, and gain the peers'; W4
        does not; W3 makes C{--w3-files} uploads without changing the
        registered workload.
        """
        options = parser().parse_args(["--peers", "--w3-files", "16"])
        selected = selectedWorkloads(options, ["nginx", "tornado"])
        self.assertEqual(list(selected), ["W1", "W2", "W3", "W4"])
        for key in ("W1", "W2", "W3"):
            workload = selected[key]
            assert isinstance(workload, PeersWorkload)
            self.assertNotIsInstance(WORKLOADS[key], PeersWorkload)
            ours = workload.routes[: len(workload.base.routes)]
            self.assertEqual(ours, workload.base.routes)
            self.assertEqual(len(workload.routes), len(ours) + 3)
        self.assertIs(selected["W4"], WORKLOADS["W4"])
        w3 = selected["W3"]
        assert isinstance(w3, PeersWorkload)
        self.assertEqual(w3.count, 16)
        self.assertEqual(len(w3.names(1)), 16)
        registered = WORKLOADS["W3"]
        assert isinstance(registered, UploadWorkload)
        self.assertEqual(registered.count, 1000)

    def test_withoutPeers(self) -> None:
        """Without C{--peers} the workloads are streamrelay's own."""
        selected = selectedWorkloads(parser().parse_args(["--workloads", "W1,W2"]), [])
        self.assertIs(selected["W1"], WORKLOADS["W1"])
        self.assertIs(selected["W2"], WORKLOADS["W2"])


def _measured(workload: str, route: object, seconds: list[float], count: int = 1,
              errors: list[str] | None = None) -> Measurement:
    assert isinstance(route, PeerRoute) or route == PROXY
    m = Measurement(workload, route, 10**9, count)  # type: ignore[arg-type]
    m.seconds = seconds
    m.errors = errors or []
    return m


class ReportTests(SynchronousTestCase):
    def measurements(self) -> list[Measurement]:
        return [
            _measured("W1", PROXY, [2.0]),                           # 500 MB/s
            _measured("W1", peerRoute("nginx", False), [2.5]),        # 400
            _measured("W1", peerRoute("aiohttp", False), [2.0]),      # 500
            _measured("W1", peerRoute("aiohttp", True), [4.0]),       # 250
            _measured("W3", PROXY, [4.0], count=1000),                # 250 uploads/s
            _measured("W3", peerRoute("nginx", False), [2.0], count=1000),   # 500
            _measured("W3", peerRoute("aiohttp", False), [5.0], count=1000),
            _measured("W3", peerRoute("aiohttp", True), [10.0], count=1000),  # 100
            _measured("W3", peerRoute("tornado", False), [], count=1000, errors=["broken"]),
            _measured("W3", peerRoute("tornado", True), [5.0], count=1000,   # 200
                      errors=["one run failed"]),
        ]

    def test_ratios(self) -> None:
        """
        streamrelay through its proxy over each peer's fsync figure, and
        nginx's figure without (it cannot fsync); W3 in uploads/s, also
        over the best peer with fsync; targets of issue 28.
        """
        found = {r.label: (round(r.value, 3), r.target) for r in peerRatios(self.measurements())}
        self.assertEqual(found, {
            "W1 streamrelay / nginx (no fsync: it cannot)": (1.25, 1.1),
            "W1 streamrelay / aiohttp (with fsync)": (2.0, 1.1),
            "W3 streamrelay / nginx (no fsync: it cannot)": (0.5, None),
            "W3 streamrelay / aiohttp (with fsync)": (2.5, None),
            "W3 streamrelay / tornado (with fsync)": (1.25, None),
            "W3 streamrelay / best peer with fsync (tornado)": (1.25, 1.1),
        })

    def test_noStreamrelayFigure(self) -> None:
        """Without a good run of streamrelay's there is no ratio."""
        measurements = [m for m in self.measurements() if m.route != PROXY]
        self.assertEqual(peerRatios(measurements), [])

    def test_table(self) -> None:
        """
        A row per relay, W1 in MB/s and W3 in uploads/s without and with
        fsync: n/a where a relay has no such route, FAILED without a good
        run, (!) beside a figure some of whose runs failed.
        """
        table = peersTable(self.measurements(), {"nginx": "nginx/1.22.1"}).splitlines()
        self.assertIn("W1 MB/s no fsync", table[0])
        self.assertIn("W3 uploads/s fsync", table[0])
        self.assertNotIn("W2", table[0])
        rows = {line.split("  ")[0]: line.split()[-4:] for line in table[2:]}
        self.assertEqual(rows["streamrelay (always fsyncs)"], ["n/a", "500", "n/a", "250"])
        nginx = [line for line in table if line.startswith("nginx")][0]
        self.assertIn("[nginx/1.22.1]", nginx)
        self.assertEqual(nginx.split()[-4:], ["400", "n/a", "500", "n/a"])
        tornado = [line for line in table if line.startswith("Tornado")][0]
        self.assertEqual(re.split(r"\s{2,}", tornado)[-4:], ["n/a", "n/a", "FAILED", "200 (!)"])


class StoredTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.data = b"streamrelay" * 100_000
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    def test_right(self) -> None:
        """Files of the source's bytes pass."""
        for name in ("a", "b"):
            (self.folder / name).write_bytes(self.data)
        paths = [self.folder / "a", self.folder / "b"]
        self.assertEqual(verifyStored(paths, len(self.data), self.sha256), [])

    def test_wrong(self) -> None:
        """A missing file, a short one, one of other bytes: each an error naming it."""
        (self.folder / "short").write_bytes(self.data[:-1])
        (self.folder / "other").write_bytes(self.data[:-1] + b"X")
        errors = verifyStored(
            [self.folder / n for n in ("missing", "short", "other")], len(self.data), self.sha256
        )
        self.assertEqual(len(errors), 3)
        self.assertTrue(errors[0].startswith("missing: not stored"), errors[0])
        self.assertEqual(errors[1], f"short: {len(self.data) - 1} bytes stored, "
                                    f"{len(self.data)} sent")
        self.assertTrue(errors[2].startswith("other: stored sha256 "), errors[2])

    def test_status(self) -> None:
        """Where a peer answers no digest, a transfer failing or not 2xx is an error."""
        batch = Batch(1.0, [
            Transfer("a", 201, 0.5), Transfer("b", 204, 0.5), Transfer("c", 500, 0.5),
            Transfer("d", 0, 0.5, error="Connection refused"),
        ])
        self.assertEqual(checkStatus(batch), ["c: HTTP 500", "d: Connection refused"])


class NginxConfigTests(SynchronousTestCase):
    def test_back(self) -> None:
        """The back nginx takes DAV PUTs into the store, its temporary files beside them."""
        config = backConfig(Path("/r/back"), Path("/s/store"), 4001, user="root")
        self.assertTrue(config.startswith("user root;\n"))
        for line in ("listen 127.0.0.1:4001;", "root /s/store;", "dav_methods PUT;",
                     "client_body_temp_path /s/store/.nginx-body;", "pid /r/back/nginx.pid;",
                     "client_max_body_size 0;"):
            self.assertIn(line, config)

    def test_front(self) -> None:
        """The front nginx streams bodies (no request buffering) to the back one."""
        config = frontConfig(Path("/r/front"), 4002, 4001)
        self.assertNotIn("user ", config)
        for line in ("listen 127.0.0.1:4002;", "server 127.0.0.1:4001;",
                     "proxy_request_buffering off;", "proxy_http_version 1.1;",
                     "proxy_pass http://back;"):
            self.assertIn(line, config)
        self.assertEqual(config.count("{"), config.count("}"))
