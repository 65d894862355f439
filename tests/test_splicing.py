"""
Bodies moved by the kernel (L{streamrelay.splicing}) from the connection
into the file (backend) or the upstream connection (proxy): the splicer
itself on a socket pair, then the real programs with uploads large enough
to be spliced, whole and broken.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamrelay import splicing
from tests.processes import (
    MiB,
    call,
    curl,
    eventually,
    halfSender,
    mountTmpfs,
    partials,
    run,
    sha256File,
    sharedFile,
    startService,
    startStack,
)

if not splicing.available():
    skip = "this system cannot splice"

#: Large enough to be spliced whatever the first read brought along.
SPLICED = splicing.SPLICE_MIN + 8 * MiB


class Ended:
    """What a splicer reported, called inline in place of the reactor."""

    def __init__(self) -> None:
        self.reports: list[int] = []
        self.ended: tuple[int, int, BaseException | None] | None = None

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def report(self, taken: int, written: int) -> None:
        self.reports.append(written)

    def end(self, taken: int, written: int, error: BaseException | None) -> None:
        self.ended = (taken, written, error)


class SplicerTests(SynchronousTestCase):
    """The splicer, run in the test's thread on a socket pair."""

    def setUp(self) -> None:
        self.ours, self.peer = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.peer.close)
        self.path = Path(self.mktemp())
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.addCleanup(os.close, self.fd)
        self.calls = Ended()

    def splicer(self, count: int, prefix: tuple[bytes, ...] = (), offset: int = 0,
                fd: int | None = None) -> splicing.Splicer:
        return splicing.Splicer(
            self.calls.callFromThread, self.ours.fileno(), self.fd if fd is None else fd,
            count, self.calls.report, self.calls.end, prefix=prefix, offset=offset,
        )

    def test_moves(self) -> None:
        """The prefix, then C{count} bytes of the socket, land in the file."""
        data = os.urandom(100_000)
        self.peer.sendall(data + b"NEXT REQUEST")
        splicer = self.splicer(len(data), (b"head", b"er"))
        splicer.run()
        self.assertEqual(self.path.read_bytes(), b"header" + data)
        self.assertEqual(self.calls.ended, (len(data), len(data) + 6, None))
        self.assertEqual(self.calls.reports[0], 6)
        # What follows the body is left on the socket for the channel.
        self.assertEqual(self.ours.recv(100), b"NEXT REQUEST")

    def test_writebackOfTheRest(self) -> None:
        """
        Once the whole body is in the file, the writeback of what no
        L{splicing.SYNC_STEP} covered starts at once (not in the final
        fsync); a body cut short gets none.
        """
        calls: list[tuple[Any, ...]] = []
        self.patch(splicing, "_syncRange",
                   lambda fd, start, length, flags: calls.append((start, length, flags)))
        self.patch(self.calls, "report",
                   lambda taken, written: calls.append(("report", written)))
        data = os.urandom(100_000)
        self.peer.sendall(data)
        self.splicer(len(data), (b"ab",), offset=10).run()
        # The reactor hears of the last bytes first, to hash them meanwhile.
        self.assertEqual(calls, [("report", 2), ("report", len(data) + 2),
                                 (10, len(data) + 2, splicing._WRITE)])

        del calls[:]
        self.peer.sendall(b"short")
        self.peer.close()
        self.splicer(100).run()
        self.assertEqual(calls, [])

    def test_aheadShared(self) -> None:
        """
        Splicers into files share L{splicing.AHEAD_TOTAL}: each may run
        that much ahead of the reactor divided by their number, at least
        L{splicing.AHEAD_MIN}, at most L{splicing.AHEAD}; a splicer counts
        while it moves a body.
        """
        share = splicing._FileShare()
        self.assertEqual(share.ahead(), min(splicing.AHEAD, splicing.AHEAD_TOTAL))
        for _ in range(4):
            share.join()
        self.assertEqual(share.ahead(), splicing.AHEAD_TOTAL // 4)
        for _ in range(60):
            share.join()
        self.assertEqual(share.ahead(), splicing.AHEAD_MIN)
        self.assertGreater(splicing.AHEAD_MIN, splicing.REPORT_BYTES + splicing.PIPE_SIZE)

        counts: list[int] = []
        self.patch(self.calls, "report",
                   lambda taken, written: counts.append(splicing._intoFiles.count))
        before = splicing._intoFiles.count
        self.peer.sendall(b"x" * 1000)
        self.splicer(1000, (b"p",)).run()  # (it reports the prefix at once)
        self.assertEqual(counts[0], before + 1)
        self.assertEqual(splicing._intoFiles.count, before)

    def test_heldByTheShare(self) -> None:
        """
        A splicer into a file waits once it is further ahead of the reactor
        than its share allows: alone, L{splicing.AHEAD}; among many, less.
        """
        splicer = self.splicer(1 << 30)
        splicer.written = splicing.AHEAD_MIN + 1
        self.assertFalse(splicer._held())
        self.patch(splicing, "_intoFiles", splicing._FileShare())
        for _ in range(64):
            splicing._intoFiles.join()
        self.assertTrue(splicer._held())
        splicer.seen(1)
        self.assertFalse(splicer._held())
        splicer.written = splicing.AHEAD + 2  # (1 seen)
        for _ in range(64):
            splicing._intoFiles.leave()
        self.assertTrue(splicer._held())

    def test_stepShared(self) -> None:
        """
        Splicers into files share L{splicing.SYNC_TOTAL} of writeback steps:
        alone, a splicer starts writeback every L{splicing.SYNC_STEP}; among
        many, sooner (at least every L{splicing.SYNC_STEP_MIN}), so that the
        disk starts writing after about as many bytes of all of them as of
        one alone.
        """
        share = splicing._FileShare()
        self.assertEqual(share.step(), splicing.SYNC_STEP)
        for _ in range(8):
            share.join()
        self.assertEqual(share.step(), splicing.SYNC_TOTAL // 8)
        for _ in range(56):
            share.join()
        self.assertEqual(share.step(), splicing.SYNC_STEP_MIN)
        self.assertGreaterEqual(splicing.SYNC_TOTAL, splicing.SYNC_STEP)

    def test_writebackAmongMany(self) -> None:
        """
        Among many splicers, one starts the writeback of its bytes in steps
        of its share, long before a step of its own alone.
        """
        starts: list[tuple[int, int]] = []
        self.patch(splicing, "_syncRange", lambda fd, start, length, flags: (
            starts.append((start, length)) if flags == splicing._WRITE else None))
        self.patch(splicing, "SYNC_TOTAL", 64 << 10)
        self.patch(splicing, "SYNC_STEP_MIN", 16 << 10)
        self.patch(splicing, "PIPE_SIZE", 16 << 10)
        self.patch(splicing, "_intoFiles", splicing._FileShare())
        for _ in range(3):
            splicing._intoFiles.join()  # (with this one, 4: steps of 16 KiB)
        data = os.urandom(100_000)
        self.peer.sendall(data)
        self.splicer(len(data)).run()
        self.assertEqual(starts[0], (0, 16 << 10))
        self.assertEqual(sum(length for _, length in starts), len(data))
        self.assertGreaterEqual(len(starts), 6)

    def test_offset(self) -> None:
        """Bytes go at C{offset} of the file."""
        os.pwrite(self.fd, b"0123456789", 0)
        self.peer.sendall(b"abc")
        self.splicer(3, offset=4).run()
        self.assertEqual(self.path.read_bytes(), b"0123abc789")

    def test_connectionClosed(self) -> None:
        """A peer that closes early ends the splicer short, with no error."""
        self.peer.sendall(b"x" * 1000)
        self.peer.close()
        self.splicer(5000).run()
        self.assertEqual(self.calls.ended, (1000, 1000, None))
        self.assertEqual(self.path.read_bytes(), b"x" * 1000)

    def test_fileRefuses(self) -> None:
        """A file that refuses the bytes (here: a full device) ends it with the error."""
        full = os.open("/dev/full", os.O_WRONLY)
        self.addCleanup(os.close, full)
        self.peer.sendall(b"y" * 1000)
        self.splicer(1000, fd=full).run()
        assert self.calls.ended is not None
        taken, written, error = self.calls.ended
        self.assertEqual((taken, written), (1000, 0))
        self.assertIsInstance(error, OSError)
        self.assertEqual(getattr(error, "errno", None), errno.ENOSPC)

    def test_stopped(self) -> None:
        """A splicer stopped before it runs takes nothing from the socket."""
        self.peer.sendall(b"z" * 10)
        splicer = self.splicer(10, (b"p",))
        splicer.stop()
        splicer.run()
        self.assertEqual(self.calls.ended, (0, 1, None))
        self.assertEqual(self.ours.recv(100), b"z" * 10)

    def test_stopAfterEnd(self) -> None:
        """
        Stopping a splicer that already ended touches none of the
        descriptors it closed (their numbers may be in use again).
        """
        self.peer.sendall(b"abc")
        splicer = self.splicer(3)
        splicer.run()
        reused = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(3)]  # the numbers it closed
        for fd in reused:
            self.addCleanup(os.close, fd)
        splicer.stop()
        for fd in reused:
            self.assertRaises(BlockingIOError, os.eventfd_read, fd)

    def test_descriptorsOwnCopies(self) -> None:
        """
        The splicer works on duplicates: the originals may be closed
        meanwhile, and its own are closed when it ends.
        """
        before = len(os.listdir("/proc/self/fd"))
        self.peer.sendall(b"abc")
        splicer = self.splicer(3)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before + 3)  # socket, file, wake
        splicer.run()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        self.assertEqual(self.path.read_bytes(), b"abc")
        # The socket's low-water mark is back to what the reactor expects.
        self.assertEqual(self.ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT), 1)

    def test_toSocket(self) -> None:
        """With no offset, the bytes go into another socket, in order."""
        out, far = socket.socketpair()
        self.addCleanup(out.close)
        self.addCleanup(far.close)
        data = os.urandom(100_000)
        self.peer.sendall(data)
        splicing.Splicer(
            self.calls.callFromThread, self.ours.fileno(), out.fileno(), len(data),
            self.calls.report, self.calls.end,
        ).run()
        self.assertEqual(self.calls.ended, (len(data), len(data), None))
        received = b""
        while len(received) < len(data):
            received += far.recv(len(data))
        self.assertEqual(received, data)

    def test_socketGone(self) -> None:
        """A socket that is closed on the far side ends it with the error."""
        out, far = socket.socketpair()
        self.addCleanup(out.close)
        far.close()
        self.peer.sendall(b"w" * 1000)
        splicing.Splicer(
            self.calls.callFromThread, self.ours.fileno(), out.fileno(), 1000,
            self.calls.report, self.calls.end,
        ).run()
        assert self.calls.ended is not None
        taken, written, error = self.calls.ended
        self.assertEqual((taken, written), (1000, 0))
        self.assertIsInstance(error, OSError)

    def test_mapped(self) -> None:
        """L{splicing.mapped} views any byte range of a file."""
        data = os.urandom(3 * 4096 + 17)
        os.pwrite(self.fd, data, 0)
        with splicing.mapped(self.fd, 5000, 9000) as view:
            self.assertEqual(bytes(view), data[5000:9000])
        with splicing.mapped(self.fd, 0, len(data)) as view:
            self.assertEqual(hashlib.sha256(view).digest(), hashlib.sha256(data).digest())


async def spliced(program: Any) -> float:
    """How many uploads C{program} (a backend) spliced, from its metrics."""
    _, _, text = await call("GET", program.url + "/metrics")
    for line in text.decode().splitlines():
        if line.startswith("streamrelay_uploads_spliced_total"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no streamrelay_uploads_spliced_total")


class SplicedUploadTests(TestCase):
    """The real programs splicing uploads: the backend, and the proxy in front."""

    timeout = 120

    def setUp(self) -> None:
        self.storage = Path(self.mktemp()) / "uploads"

    async def test_stored(self) -> None:
        """
        A large upload is spliced, stored intact and answered with its
        SHA-256, direct and through the proxy; a small one is not spliced.
        """
        source, sha = sharedFile(SPLICED)
        backend, proxy = await startStack(self, self.storage)
        for target, name in ((backend, "direct.bin"), (proxy, "proxied.bin")):
            code, output = await run(self, "curl", curl(
                "-T", str(source), "-w", "\n%{http_code}", f"{target.url}/files/{name}"))
            body, _, status = output.decode().rpartition("\n")
            self.assertEqual(status, "201", output)
            self.assertEqual(json.loads(body)["sha256"], sha)
            self.assertEqual(sha256File(self.storage / name), sha)
        self.assertEqual(await spliced(backend), 2)
        self.assertEqual(await spliced(proxy), 1)  # and the proxy into its upstream
        small, _ = sharedFile(MiB)
        code, _ = await run(self, "curl", curl("-fT", str(small), f"{backend.url}/files/small"))
        self.assertEqual(code, 0)
        self.assertEqual(await spliced(backend), 2)
        self.assertEqual(partials(self.storage), [])

    async def test_bodyWithHeaders(self) -> None:
        """
        A client that sends body bytes along with its headers (no
        C{Expect: 100-continue}, as the proxy sends): those bytes, read
        before the splicing starts, are stored and hashed once, in order.
        """
        source, sha = sharedFile(2 * SPLICED)
        backend = await startService(self, "backend", "--storage", str(self.storage))
        sender = halfSender(self, backend.port, "early.bin", source)
        await sender.protocol.waitFor(b"HALF")
        sender.writeStdin(b"go\n")
        output = await sender.protocol.waitFor(b"DONE")
        self.assertIn(b"201 Created", output)
        answer = json.loads(output.split(b"\r\n\r\n", 1)[1].split(b"\n")[0])
        self.assertEqual((answer["size"], answer["sha256"]), (2 * SPLICED, sha))
        self.assertEqual(sha256File(self.storage / "early.bin"), sha)
        self.assertEqual(await spliced(backend), 1)

    async def test_backendRefusesMidSplice(self) -> None:
        """
        A backend that refuses a body the proxy is splicing to it (its
        --max-size is below the body's length) gets the client its 413;
        nothing is kept and the proxy goes on serving.
        """
        source, _ = sharedFile(2 * SPLICED)
        backend, proxy = await startStack(self, self.storage, backendArgs=["--max-size", "20M"])
        sender = halfSender(self, proxy.port, "refused.bin", source)
        await sender.protocol.waitFor(b"HALF")
        sender.writeStdin(b"read\n")
        output = await sender.protocol.waitFor(b"DONE")
        self.assertIn(b"413", output)
        self.assertIn(b'"too_large"', output)
        self.assertTrue(await eventually(lambda: partials(self.storage) == [], 5))
        self.assertFalse((self.storage / "refused.bin").exists())
        self.assertEqual(await spliced(proxy), 1)
        code, _, _ = await call("PUT", f"{proxy.url}/files/after.txt", b"next")
        self.assertEqual(code, 201)

    async def test_keepAlive(self) -> None:
        """
        After a spliced body the connection serves the next requests: two
        uploads and a download on one connection.
        """
        source, sha = sharedFile(SPLICED)
        backend = await startService(self, "backend", "--storage", str(self.storage))
        code, output = await run(self, "curl", curl(
            "-w", "%{http_code} %{num_connects}\n",
            "-T", str(source), "-o", "/dev/null", f"{backend.url}/files/one.bin",
            "-T", str(source), "-o", "/dev/null", f"{backend.url}/files/two.bin",
            "-o", "/dev/null", f"{backend.url}/files/one.bin",
        ))
        self.assertEqual(output.decode().splitlines(), ["201 1", "201 0", "200 0"])
        self.assertEqual(sha256File(self.storage / "two.bin"), sha)
        self.assertEqual(await spliced(backend), 2)

    async def test_digestMismatch(self) -> None:
        """A spliced body that does not match its Content-Digest is not stored."""
        source, _ = sharedFile(SPLICED)
        backend = await startService(self, "backend", "--storage", str(self.storage))
        wrong = "sha-256=:" + "A" * 43 + "=:"
        code, output = await run(self, "curl", curl(
            "-H", f"Content-Digest: {wrong}", "-T", str(source), "-w", "\n%{http_code}",
            f"{backend.url}/files/wrong.bin"))
        body, _, status = output.decode().rpartition("\n")
        self.assertEqual((status, json.loads(body)["error"]), ("400", "digest_mismatch"))
        self.assertFalse((self.storage / "wrong.bin").exists())
        self.assertEqual(partials(self.storage), [])
        self.assertEqual(await spliced(backend), 1)

    async def test_clientGone(self) -> None:
        """
        A client that drops the connection mid-body leaves nothing; the
        backend goes on serving.
        """
        source, sha = sharedFile(2 * SPLICED)
        backend = await startService(self, "backend", "--storage", str(self.storage))
        sender = halfSender(self, backend.port, "gone.bin", source)
        await sender.protocol.waitFor(b"HALF")
        self.assertTrue(await eventually(lambda: partials(self.storage) != [], 10))
        sender.writeStdin(b"abort\n")
        await sender.protocol.waitFor(b"ABORTED")
        self.assertTrue(await eventually(lambda: partials(self.storage) == [], 5))
        self.assertFalse((self.storage / "gone.bin").exists())
        code, _ = await run(self, "curl", curl("-fT", str(source), f"{backend.url}/files/ok.bin"))
        self.assertEqual(code, 0)
        self.assertEqual(sha256File(self.storage / "ok.bin"), sha)
        self.assertEqual(await spliced(backend), 2)

    async def test_stalledClient(self) -> None:
        """A client that stops mid-body gets 408; nothing is kept."""
        source, _ = sharedFile(2 * SPLICED)
        backend = await startService(
            self, "backend", "--storage", str(self.storage), "--idle-timeout", "1")
        sender = halfSender(self, backend.port, "stalled.bin", source)
        await sender.protocol.waitFor(b"HALF")
        started = time.monotonic()
        sender.writeStdin(b"read\n")
        output = await sender.protocol.waitFor(b"DONE")
        self.assertIn(b"408", output)
        self.assertIn(b'"timeout"', output)
        self.assertLess(time.monotonic() - started, 10)
        self.assertTrue(await eventually(lambda: partials(self.storage) == [], 3))
        self.assertFalse((self.storage / "stalled.bin").exists())
        self.assertEqual(await spliced(backend), 1)

    async def test_slowDisk(self) -> None:
        """A spliced body waits for a slow disk without a timeout, and arrives whole."""
        source, sha = sharedFile(SPLICED)
        backend = await startService(
            self, "backend", "--storage", str(self.storage), "--idle-timeout", "1",
            "--debug-write-rate", str(8 * MiB))
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code}", f"{backend.url}/files/slow.bin"))
        self.assertTrue(output.endswith(b"\n201"), output)
        self.assertEqual(sha256File(self.storage / "slow.bin"), sha)
        self.assertEqual(await spliced(backend), 1)

    async def test_diskFull(self) -> None:
        """
        On a real full file system (an 8 MiB tmpfs) a spliced upload gets
        507, leaves nothing behind, and the backend serves the next one.
        """
        mountpoint = mountTmpfs(self, "8m")
        storage = mountpoint / "uploads"
        backend = await startService(self, "backend", "--storage", str(storage))
        source, _ = sharedFile(SPLICED)
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code}", f"{backend.url}/files/big.bin"))
        body, _, status = output.decode().rpartition("\n")
        self.assertEqual(status, "507", output)
        self.assertEqual(json.loads(body)["error"], "insufficient_storage")
        self.assertTrue(await eventually(lambda: partials(storage) == [], 2))
        self.assertFalse((storage / "big.bin").exists())
        self.assertEqual(await spliced(backend), 1)
        code, _, _ = await call("PUT", f"{backend.url}/files/small.txt", b"fits")
        self.assertEqual(code, 201)
