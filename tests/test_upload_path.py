"""
The streaming upload path end to end, with the real programs on 127.0.0.1:
uploader or curl → proxy → backend → storage folder.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.processes import (
    BIN,
    MEMORY_BOUND,
    GiB,
    MiB,
    curl,
    deferLater,
    eventually,
    partials,
    run,
    sha256File,
    sharedFile,
    spawn,
    startService,
    startStack,
)


def minorFaults(pid: int) -> int:
    """The minor page faults of process C{pid} so far (C{/proc/PID/stat})."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])


class UploadPathTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.storage = Path(self.mktemp()) / "uploads"

    def assertStoredAnswer(self, answer: dict[str, object], name: str, size: int, sha: str) -> None:
        self.assertEqual(answer["name"], name)
        self.assertEqual(answer["size"], size)
        self.assertEqual(answer["sha256"], sha)
        modified = answer["modified"]
        assert isinstance(modified, str)
        self.assertRegex(modified, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

    def assertStored(self, name: str, sha: str) -> None:
        self.assertEqual(sha256File(self.storage / name), sha)
        self.assertEqual(partials(self.storage), [])

    async def test_uploaderOneGiB(self) -> None:
        """
        streamrelay-upload sends 1 GiB through the proxy: the stored bytes
        are the source's, and neither service's memory grows with the size.
        """
        source, sha = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        idle = {p.label: p.rss() for p in (backend, proxy)}
        code, output = await run(
            self, "uploader",
            [str(BIN / "streamrelay-upload"), "--url", proxy.url, str(source)],
        )
        self.assertEqual(code, 0, output.decode())
        self.assertIn(f"sha256 {sha}".encode(), output)
        self.assertStored(source.name, sha)
        for program in (backend, proxy):
            growth = program.peak() - idle[program.label]
            self.assertLess(
                growth, MEMORY_BOUND,
                f"{program.label} peak RSS grew by {growth / MiB:.1f} MiB",
            )

    async def curlUpload(self, chunked: bool) -> None:
        source, sha = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        idle = {p.label: p.rss() for p in (backend, proxy)}
        name = "chunked.bin" if chunked else "plain.bin"
        extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
        code, output = await run(self, "curl", curl(
            "-T", str(source), *extra, "-w", "\n%{http_code}", f"{proxy.url}/files/{name}",
        ))
        self.assertEqual(code, 0, output.decode())
        body, _, status = output.decode().rpartition("\n")
        self.assertEqual(status, "201")
        self.assertStoredAnswer(json.loads(body), name, GiB, sha)
        self.assertStored(name, sha)
        for program in (backend, proxy):
            self.assertLess(program.peak() - idle[program.label], MEMORY_BOUND, program.label)

    def test_curlContentLength(self) -> object:
        return self.curlUpload(chunked=False)

    def test_curlChunked(self) -> object:
        return self.curlUpload(chunked=True)

    async def test_buffersReused(self) -> None:
        """
        Streaming 256 MiB through both services costs few page faults: the
        1 MiB read buffers reuse heap memory (streamrelay.memory) instead of
        fresh pages the kernel must map and zero each time (glibc's defaults
        cost 50,000-90,000 faults per GiB in each service).
        """
        source, sha = sharedFile(256 * MiB)
        backend, proxy = await startStack(self, self.storage)
        before = {p.label: minorFaults(p.pid) for p in (backend, proxy)}
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code}", f"{proxy.url}/files/faults.bin"))
        self.assertTrue(output.endswith(b"\n201"), output)
        self.assertEqual(json.loads(output.rsplit(b"\n", 1)[0])["sha256"], sha)
        faults = {p.label: minorFaults(p.pid) - before[p.label] for p in (backend, proxy)}
        print(f"\nminor page faults for 256 MiB: {faults}")
        for label, count in faults.items():
            self.assertLess(count, 6000, (label, faults))

    async def test_bytesReachBackendWhileClientSends(self) -> None:
        """
        While the client still holds half the file, the backend's partial
        file already holds at least 64 MiB of it.
        """
        source, sha = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        sender = spawn(self, "halfsender", [
            sys.executable, "-m", "tests.halfsender", str(proxy.port), "/files/half.bin",
            str(source),
        ])
        await sender.protocol.waitFor(b"HALF")

        def partialSize() -> int:
            return sum(p.stat().st_size for p in partials(self.storage))

        self.assertTrue(await eventually(lambda: partialSize() >= 64 * MiB, 10),
                        f"partial file holds {partialSize()} bytes")
        self.assertFalse((self.storage / "half.bin").exists())
        sender.writeStdin(b"go\n")
        output = await sender.protocol.waitFor(b"DONE")
        self.assertIn(b"201 Created", output)
        self.assertStored("half.bin", sha)

    async def test_clientAbortsHalfway(self) -> None:
        """
        A client that drops its connection half-way leaves no file and no
        partial file within 2 s, and both services keep serving.
        """
        source, _ = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        sender = spawn(self, "halfsender", [
            sys.executable, "-m", "tests.halfsender", str(proxy.port), "/files/gone.bin",
            str(source),
        ])
        await sender.protocol.waitFor(b"HALF")
        self.assertNotEqual(partials(self.storage), [])
        sender.writeStdin(b"abort\n")
        await sender.protocol.waitFor(b"ABORTED")
        self.assertTrue(await eventually(lambda: partials(self.storage) == [], 2),
                        f"left behind: {partials(self.storage)}")
        self.assertFalse((self.storage / "gone.bin").exists())
        small = Path(self.mktemp())
        small.write_bytes(b"still serving")
        code, output = await run(self, "curl", curl(
            "-T", str(small), "-w", "\n%{http_code}", f"{proxy.url}/files/next.txt",
        ))
        self.assertTrue(output.endswith(b"\n201"), output)
        self.assertEqual((self.storage / "next.txt").read_bytes(), b"still serving")
        # The proxy tells it as the client's doing, not the backend's.
        self.assertTrue(await eventually(lambda: b"outcome=client_gone" in proxy.output, 2),
                        proxy.output[-2000:])
        self.assertNotIn(b"backend_unavailable", proxy.output)
        self.assertNotIn(b"Unhandled Error", proxy.output)
        code, metrics = await run(self, "curl", curl(f"{proxy.url}/metrics"))
        self.assertIn(b'streamrelay_uploads_failed_total{reason="client_gone",service="proxy"} 1.0',
                      metrics)
        self.assertNotIn(b"streamrelay_backend_errors_total{", metrics)

    async def test_backpressure(self) -> None:
        """
        With the backend's disk writes slowed to 20 MiB/s, the client is
        slowed to that rate and the proxy's memory stays flat.
        """
        source, sha = sharedFile(160 * MiB)
        rate = 20 * MiB
        backend, proxy = await startStack(
            self, self.storage, backendArgs=["--debug-write-rate", str(rate)]
        )
        idle = proxy.rss()
        started = time.monotonic()
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-w", "\n%{http_code} %{speed_upload}",
            f"{proxy.url}/files/slow.bin",
        ))
        seconds = time.monotonic() - started
        self.assertEqual(code, 0, output)
        status, speed = output.decode().rpartition("\n")[2].split()
        self.assertEqual(status, "201")
        clientRate = float(speed)
        # Socket buffers on the way hold a few MiB, so the client may run a
        # little ahead of the disk, never far.
        self.assertLess(clientRate, rate * 1.25, f"client sent at {clientRate / MiB:.1f} MiB/s")
        self.assertGreater(clientRate, rate * 0.6)
        self.assertGreater(seconds, 160 * MiB / rate * 0.8)
        self.assertLess(proxy.peak() - idle, MEMORY_BOUND)
        self.assertStored("slow.bin", sha)

    async def test_expectContinueTooLarge(self) -> None:
        """
        curl with C{Expect: 100-continue} and a Content-Length above
        --max-size gets 413 and sends no body byte, direct or via the proxy.
        """
        source, _ = sharedFile(16 * MiB)
        backend, proxy = await startStack(
            self, self.storage,
            backendArgs=["--max-size", "1M"], proxyArgs=["--max-size", "1M"],
        )
        for target in (backend, proxy):
            code, output = await run(self, "curl", curl(
                "-T", str(source), "-H", "Expect: 100-continue",
                "-w", "\n%{http_code} %{size_upload}", f"{target.url}/files/big.bin",
            ))
            body, _, summary = output.decode().rpartition("\n")
            self.assertEqual(summary, "413 0", f"{target.label}: {output!r}")
            self.assertEqual(json.loads(body)["error"], "too_large")
        self.assertFalse((self.storage / "big.bin").exists())
        self.assertEqual(partials(self.storage), [])

    async def test_chunkedOverLimit(self) -> None:
        """A chunked body passing --max-size gets 413 and nothing is kept."""
        source, _ = sharedFile(16 * MiB)
        backend = await startService(
            self, "backend", "--storage", str(self.storage), "--max-size", "1M"
        )
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-H", "Transfer-Encoding: chunked",
            "-w", "\n%{http_code}", f"{backend.url}/files/big.bin",
        ))
        self.assertTrue(output.endswith(b"\n413"), output)
        self.assertIn(b'"too_large"', output)
        self.assertTrue(await eventually(lambda: partials(self.storage) == [], 2))
        self.assertFalse((self.storage / "big.bin").exists())

    async def test_chunkedOverProxyLimit(self) -> None:
        """
        A chunked body passing the proxy's --max-size gets 413 from the
        proxy, even when the backend allows more; the backend keeps
        nothing.  A resumable upload's chunked PATCH gets the same.
        """
        source, _ = sharedFile(16 * MiB)
        backend, proxy = await startStack(self, self.storage, proxyArgs=["--max-size", "1M"])
        code, output = await run(self, "curl", curl(
            "-T", str(source), "-H", "Transfer-Encoding: chunked",
            "-w", "\n%{http_code}", f"{proxy.url}/files/big.bin",
        ))
        self.assertTrue(output.endswith(b"\n413"), output)
        self.assertEqual(json.loads(output.rpartition(b"\n")[0])["error"], "too_large")
        self.assertTrue(await eventually(lambda: partials(self.storage) == [], 5))
        self.assertFalse((self.storage / "big.bin").exists())
        code, output = await run(self, "curl", curl(
            "-i", "-X", "POST", "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Defer-Length: 1",
            "-H", "Upload-Metadata: filename YmlnMi5iaW4=", f"{proxy.url}/uploads",
        ))
        location = re.search(rb"(?im)^location: (\S+)", output)
        self.assertIsNotNone(location, output)
        assert location is not None
        code, output = await run(self, "curl", curl(
            "-X", "PATCH", "-T", str(source), "-H", "Transfer-Encoding: chunked",
            "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
            "-H", "Content-Type: application/offset+octet-stream",
            "-w", "\n%{http_code}", proxy.url + location.group(1).decode(),
        ))
        self.assertTrue(output.endswith(b"\n413"), output)
        code, output = await run(self, "curl", curl(
            "-I", "-H", "Tus-Resumable: 1.0.0", proxy.url + location.group(1).decode(),
        ))
        offset = re.search(rb"(?im)^upload-offset: (\d+)", output)
        self.assertIsNotNone(offset, output)
        assert offset is not None
        self.assertLessEqual(int(offset.group(1)), 1 * MiB)

    async def test_backendDown(self) -> None:
        """A proxy whose backend is unreachable answers 502 backend_unavailable."""
        backend = await startService(self, "backend", "--storage", str(self.storage))
        proxy = await startService(self, "proxy", "--backend", backend.url)
        backend.signal(15)
        await backend.protocol.ended
        await deferLater(0.1)
        code, output = await run(self, "curl", curl(
            "-T", "/etc/hostname", "-w", "\n%{http_code}", f"{proxy.url}/files/x",
        ))
        self.assertTrue(output.endswith(b"\n502"), output)
        self.assertEqual(json.loads(output.rpartition(b"\n")[0])["error"], "backend_unavailable")
