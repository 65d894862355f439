"""
post-finish and post-delete with the real backend and a real HTTP receiver
on 127.0.0.1: the events' contents and signature, retries with backoff,
and delivery at least once across a receiver down and a backend killed.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
from collections import Counter
from pathlib import Path

from twisted.trial.unittest import TestCase

from streamrelay.hooks.sender import backoff
from streamrelay.hooks.signature import verify
from tests.certificates import makeCertificate
from tests.hookreceiver import accepted, deliveries, startReceiver
from tests.processes import Program, call, deferLater, eventually, startService

SECRET = b"hook-secret"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HookTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.storage = Path(self.mktemp())
        self.record = Path(self.mktemp())
        secretFile = Path(self.mktemp())
        secretFile.write_bytes(SECRET + b"\n")
        # These tests are about the events after the fact; pre-create has
        # tests of its own (test_precreate_integration).
        self.hookArgs = ["--hook-secret-file", str(secretFile),
                         "--hook-events", "post-finish,post-delete"]

    async def backend(self, hookPort: int) -> Program:
        return await startService(
            self, "backend", "--storage", str(self.storage),
            "--hook-url", f"http://127.0.0.1:{hookPort}/events", *self.hookArgs,
        )

    async def test_putFormAndDelete(self) -> None:
        """
        A PUT, a form of two files and a DELETE each give their events, with
        the stored size and SHA-256, signed with the secret.
        """
        receiver = await startReceiver(self, self.record)
        backend = await self.backend(receiver.port)
        data = b"hook me\n" * 1000
        code, _, body = await call("PUT", backend.url + "/files/a.txt", data,
                                   {"Cookie": "session=1", "X-Other": "no"})
        self.assertEqual(code, 201, body)
        form = (
            b"--XX\r\nContent-Disposition: form-data; name=f; filename=\"b.txt\"\r\n\r\n"
            b"bee\r\n--XX\r\nContent-Disposition: form-data; name=g; filename=\"c.txt\"\r\n\r\n"
            b"sea!\r\n--XX--\r\n"
        )
        code, _, body = await call("POST", backend.url + "/files", form,
                                   {"Content-Type": "multipart/form-data; boundary=XX"})
        self.assertEqual(code, 201, body)
        code, _, _ = await call("DELETE", backend.url + "/files/a.txt")
        self.assertEqual(code, 204)
        self.assertTrue(await eventually(lambda: len(accepted(self.record)) >= 4, 30))
        got = accepted(self.record)
        events = {(d.event["type"], d.event["file"]["name"]): d.event for d in got}
        put = events[("post-finish", "a.txt")]
        self.assertEqual(put["file"]["size"], len(data))
        self.assertEqual(put["file"]["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(put["request"]["protocol"], "put")
        self.assertEqual(put["request"]["remote"], "127.0.0.1")
        self.assertEqual(put["request"]["headers"], {"Cookie": "session=1"})
        for name, content in (("b.txt", b"bee"), ("c.txt", b"sea!")):
            file = events[("post-finish", name)]["file"]
            self.assertEqual(file["size"], len(content))
            self.assertEqual(file["sha256"], hashlib.sha256(content).hexdigest())
            self.assertEqual(events[("post-finish", name)]["request"]["protocol"], "form")
        self.assertEqual(events[("post-delete", "a.txt")]["file"]["name"], "a.txt")
        order = [d.event["type"] for d in got if d.event["file"]["name"] == "a.txt"]
        self.assertEqual(order, ["post-finish", "post-delete"])
        for delivery in got:
            self.assertTrue(verify(SECRET, delivery.signature, delivery.body), delivery)
            self.assertFalse(verify(b"other", delivery.signature, delivery.body))
        self.assertEqual(len(got), 4)
        code, _, metrics = await call("GET", backend.url + "/metrics")
        self.assertIn(b"streamrelay_hook_events_delivered_total 4.0", metrics)
        self.assertIn(b"streamrelay_hook_events_pending 0.0", metrics)

    async def test_https(self) -> None:
        """
        An https hook: the events go over TLS, the receiver's certificate
        checked against the trust store (here one holding only its own).
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        cert, key = makeCertificate(folder)
        receiver = await startReceiver(self, self.record, tls=(cert, key))
        backend = await startService(
            self, "backend", "--storage", str(self.storage),
            "--hook-url", f"https://localhost:{receiver.port}/events", *self.hookArgs,
            env={"SSL_CERT_FILE": str(cert), "SSL_CERT_DIR": str(cert.parent)},
        )
        for name in ("s1.txt", "s2.txt", "s3.txt"):
            code, _, body = await call("PUT", backend.url + "/files/" + name, b"tls")
            self.assertEqual(code, 201, body)
        self.assertTrue(await eventually(lambda: len(accepted(self.record)) >= 3, 30))
        names = sorted(d.event["file"]["name"] for d in accepted(self.record))
        self.assertEqual(names, ["s1.txt", "s2.txt", "s3.txt"])

    async def test_httpsUntrusted(self) -> None:
        """A certificate the trust store does not vouch for: nothing is delivered, all kept."""
        folder = Path(self.mktemp())
        folder.mkdir()
        cert, key = makeCertificate(folder)
        receiver = await startReceiver(self, self.record, tls=(cert, key))
        backend = await startService(
            self, "backend", "--storage", str(self.storage),
            "--hook-url", f"https://localhost:{receiver.port}/events", *self.hookArgs,
        )
        code, _, body = await call("PUT", backend.url + "/files/u.txt", b"tls")
        self.assertEqual(code, 201, body)

        for _ in range(600):  # until the first attempt failed, at most 30 s
            _, _, metrics = await call("GET", backend.url + "/metrics")
            if b"streamrelay_hook_delivery_failures_total 0.0" not in metrics:
                break
            await deferLater(0.05)
        self.assertNotIn(b"streamrelay_hook_delivery_failures_total 0.0", metrics)
        self.assertIn(b"streamrelay_hook_events_pending 1.0", metrics)
        self.assertEqual(accepted(self.record), [])

    async def test_retriesWithBackoff(self) -> None:
        """A receiver answering 500 three times gets the event again after 1, 2, 4 s."""
        receiver = await startReceiver(self, self.record, failFirst=3)
        backend = await self.backend(receiver.port)
        code, _, body = await call("PUT", backend.url + "/files/r.txt", b"retry")
        self.assertEqual(code, 201, body)
        self.assertTrue(await eventually(lambda: accepted(self.record), 60))
        tries = deliveries(self.record)
        self.assertEqual([d.status for d in tries], [500, 500, 500, 204])
        self.assertEqual(len({d.event["id"] for d in tries}), 1)
        for n in range(1, 4):
            gap = tries[n].time - tries[n - 1].time
            self.assertGreaterEqual(gap, backoff(n) - 0.05, (n, gap))
        _, _, metrics = await call("GET", backend.url + "/metrics")
        self.assertIn(b"streamrelay_hook_delivery_failures_total 3.0", metrics)

    async def test_atLeastOnceAcrossKill(self) -> None:
        """
        The receiver down while 20 uploads are stored, the backend killed
        with SIGKILL and started again, then the receiver back: every one of
        the 20 post-finish events arrives (duplicates are allowed, counted).
        """
        port = freePort()
        backend = await self.backend(port)
        names = [f"f{i:02}.bin" for i in range(20)]
        for i, name in enumerate(names):
            code, _, body = await call("PUT", f"{backend.url}/files/{name}", b"%d" % i * 100)
            self.assertEqual(code, 201, body)
        backend.signal(signal.SIGKILL)
        await backend.protocol.ended
        self.assertEqual(deliveries(self.record), [])
        await self.backend(port)
        await startReceiver(self, self.record, port=port)
        arrived = lambda: {d.event["file"]["name"] for d in accepted(self.record)}  # noqa: E731
        self.assertTrue(await eventually(lambda: arrived() >= set(names), 90),
                        sorted(set(names) - arrived()))
        got = accepted(self.record)
        ids = Counter(d.event["id"] for d in got)
        self.assertEqual(len(ids), 20)
        for d in got:
            self.assertEqual(d.event["type"], "post-finish")
            self.assertTrue(verify(SECRET, d.signature, d.body, tolerance=3600))
        duplicates = {i: n for i, n in ids.items() if n > 1}
        print(f"hook events: 20 ids, {len(got)} deliveries, duplicates: "
              f"{json.dumps(duplicates) if duplicates else 'none'}")
