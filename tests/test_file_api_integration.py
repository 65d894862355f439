"""
The file API with the real programs on 127.0.0.1, direct and through the
proxy: every endpoint and status, big forms and slow downloads in bounded
memory, curl's ranges and resumes, a 100,000-file listing, a full disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.processes import (
    MEMORY_BOUND,
    GiB,
    MiB,
    Program,
    call,
    client,
    curl,
    eventually,
    mountTmpfs,
    partials,
    run,
    sha256File,
    sharedFile,
    startService,
    startStack,
)


class EndpointTests(TestCase):
    timeout = 120

    async def exercise(self, target: Program, storage: Path) -> None:
        """Every endpoint and status, against one service."""
        base = target.url + "/files"
        data = b"hello, streamrelay\n" * 100
        sha = hashlib.sha256(data).hexdigest()
        label = target.label

        code, headers, body = await call("PUT", base + "/greeting.txt", data)
        self.assertEqual(code, 201, (label, body))
        self.assertEqual(json.loads(body)["sha256"], sha)
        self.assertEqual(headers["etag"], f'"{sha}"')
        self.assertEqual(headers["location"], "/files/greeting.txt")
        self.assertEqual((await call("PUT", base + "/greeting.txt", data))[0], 200)

        code, _, body = await call("PUT", base + "/greeting.txt", b"x", {"If-None-Match": "*"})
        self.assertEqual((code, json.loads(body)["error"]), (412, "exists"), label)
        wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        code, _, body = await call("PUT", base + "/greeting.txt", b"changed",
                                   {"Content-Digest": f"sha-256=:{wrong}:"})
        self.assertEqual((code, json.loads(body)["error"]), (400, "digest_mismatch"), label)
        self.assertEqual((storage / "greeting.txt").read_bytes(), data)
        code, _, body = await call("PUT", base + "/..%2Fescape", b"x")
        self.assertEqual((code, json.loads(body)["error"]), (400, "bad_name"), label)

        code, headers, body = await call("GET", base + "/greeting.txt")
        self.assertEqual((code, body), (200, data), label)
        self.assertEqual(headers["content-length"], str(len(data)))
        self.assertEqual(headers["accept-ranges"], "bytes")
        self.assertIn("last-modified", headers)
        code, headers, body = await call("HEAD", base + "/greeting.txt")
        self.assertEqual((code, body, headers["content-length"]), (200, b"", str(len(data))))
        code, headers, body = await call("GET", base + "/greeting.txt", None,
                                         {"Range": "bytes=5-9"})
        self.assertEqual((code, body), (206, data[5:10]), label)
        self.assertEqual(headers["content-range"], f"bytes 5-9/{len(data)}")
        code, headers, body = await call("GET", base + "/greeting.txt", None,
                                         {"Range": "bytes=99999-"})
        self.assertEqual((code, headers["content-range"]), (416, f"bytes */{len(data)}"))
        self.assertIn("x-request-id", headers, label)
        self.assertEqual(json.loads(body)["error"], "range_not_satisfiable")
        code, _, body = await call("GET", base + "/greeting.txt", None,
                                   {"If-None-Match": f'"{sha}"'})
        self.assertEqual((code, body), (304, b""), label)

        boundary = "b0undary"
        form = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"formed.txt\"\r\n\r\nfrom a form\r\n--{boundary}--\r\n"
        ).encode()
        code, headers, body = await call(
            "POST", base, form, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        self.assertEqual(code, 201, (label, body))
        formed = json.loads(body)["files"][0]
        self.assertEqual(formed["name"], "formed.txt")
        self.assertEqual(
            (headers["location"], headers["etag"], headers["repr-digest"]),
            ("/files/formed.txt", f'"{formed["sha256"]}"',
             "sha-256=:" + base64.b64encode(bytes.fromhex(formed["sha256"])).decode() + ":"),
            label,
        )
        # A Content-Digest sent on two lines is one list: its sha-256 is checked.
        _, output = await run(self, "curl", curl(
            "-X", "PUT", "--data-binary", "changed", "-H", f"Content-Digest: sha-256=:{wrong}:",
            "-H", "Content-Digest: sha-512=:AAAA:", base + "/greeting.txt"))
        self.assertEqual(json.loads(output)["error"], "digest_mismatch", label)
        self.assertEqual((storage / "greeting.txt").read_bytes(), data)
        code, _, body = await call("POST", base, b"{}", {"Content-Type": "application/json"})
        self.assertEqual((code, json.loads(body)["error"]), (400, "bad_request"))

        code, _, body = await call("GET", base)
        self.assertEqual(code, 200)
        self.assertEqual([f["name"] for f in json.loads(body)["files"]],
                         ["formed.txt", "greeting.txt"])

        code, headers, body = await call("PATCH", base + "/greeting.txt", b"x")
        self.assertEqual((code, json.loads(body)["error"]), (405, "method_not_allowed"))
        self.assertIn("GET", headers["allow"])
        code, _, body = await call("GET", target.url + "/nowhere")
        self.assertEqual((code, json.loads(body)["error"]), (404, "not_found"))
        # Its own errors echo the client's X-Request-Id too.
        for method, url in [("GET", target.url + "/nowhere"), ("PUT", base + "/..%2Fx"),
                            ("PATCH", base + "/greeting.txt"), ("GET", base + "?after=%FF")]:
            code, headers, _ = await call(method, url, b"x", {"X-Request-Id": "rid-42"})
            self.assertEqual(headers.get("x-request-id"), "rid-42", (label, method, code))

        # 304 and 204 carry no Content-Length (RFC 9110 section 8.6).
        head = await self.rawHead("GET", base + "/greeting.txt", f'If-None-Match: "{sha}"')
        self.assertTrue(head.startswith(b"HTTP/1.1 304"), (label, head))
        self.assertNotIn(b"\ncontent-length:", head.lower(), label)
        head = await self.rawHead("DELETE", base + "/greeting.txt")
        self.assertTrue(head.startswith(b"HTTP/1.1 204"), (label, head))
        self.assertNotIn(b"\ncontent-length:", head.lower(), label)
        code, _, body = await call("DELETE", base + "/greeting.txt")
        self.assertEqual((code, json.loads(body)["error"]), (404, "not_found"))
        code, _, body = await call("GET", base + "/greeting.txt")
        self.assertEqual((code, json.loads(body)["error"]), (404, "not_found"))
        (storage / "formed.txt").unlink()

    async def rawHead(self, method: str, url: str, *headers: str) -> bytes:
        """The status line and headers of a response, as they came."""
        extra = [arg for header in headers for arg in ("-H", header)]
        code, output = await run(self, "curl", curl("-si", "-X", method, *extra, url))
        return output.partition(b"\r\n\r\n")[0]

    async def test_directAndThroughProxy(self) -> None:
        storage = Path(self.mktemp()) / "uploads"
        backend, proxy = await startStack(self, storage)
        await self.exercise(backend, storage)
        await self.exercise(proxy, storage)


class BigTransferTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.storage = Path(self.mktemp()) / "uploads"

    async def test_multipartOneGiB(self) -> None:
        """A 1 GiB curl -F upload through the proxy, in bounded memory."""
        source, sha = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        idle = {p.label: p.rss() for p in (backend, proxy)}
        code, output = await run(self, "curl", curl(
            "-F", f"file=@{source};filename=form.bin", "-w", "\n%{http_code}",
            f"{proxy.url}/files",
        ))
        body, _, status = output.decode().rpartition("\n")
        self.assertEqual(status, "201", output)
        [answer] = json.loads(body)["files"]
        self.assertEqual((answer["name"], answer["size"], answer["sha256"]),
                         ("form.bin", GiB, sha))
        self.assertEqual(sha256File(self.storage / "form.bin"), sha)
        for program in (backend, proxy):
            growth = program.peak() - idle[program.label]
            self.assertLess(growth, MEMORY_BOUND, f"{program.label}: {growth / MiB:.1f} MiB")

    async def test_slowDownloadOneGiB(self) -> None:
        """
        A client reading a 1 GiB download at about 10 MB/s through the proxy
        slows the backend down instead of filling memory.
        """
        source, sha = sharedFile(GiB)
        backend, proxy = await startStack(self, self.storage)
        code, output = await run(self, "curl", curl(
            "-T", str(source), f"{backend.url}/files/big.bin"))
        self.assertEqual(code, 0, output)
        idle = {p.label: p.rss() for p in (backend, proxy)}
        target = Path(self.mktemp())
        code, output = await run(self, "curl", curl(
            "--limit-rate", "10M", "-o", str(target), "-w", "%{http_code}",
            f"{proxy.url}/files/big.bin",
        ), timeout=200)
        self.assertEqual(output, b"200")
        self.assertEqual(sha256File(target), sha)
        for program in (backend, proxy):
            growth = program.peak() - idle[program.label]
            self.assertLess(growth, MEMORY_BOUND, f"{program.label}: {growth / MiB:.1f} MiB")

    async def test_curlRangesAndResume(self) -> None:
        source, sha = sharedFile(16 * MiB)
        content = source.read_bytes()
        backend, proxy = await startStack(self, self.storage)
        code, _ = await run(self, "curl", curl("-T", str(source), f"{proxy.url}/files/r.bin"))
        url = f"{proxy.url}/files/r.bin"
        _, output = await run(self, "curl", curl("-r", "100-199", url))
        self.assertEqual(output, content[100:200])
        _, output = await run(self, "curl", curl("-r", "-100", url))
        self.assertEqual(output, content[-100:])
        partial = Path(self.mktemp())
        partial.write_bytes(content[: 5 * MiB])
        code, output = await run(self, "curl", curl("-C", "-", "-o", str(partial), url))
        self.assertEqual(code, 0, output)
        self.assertEqual(sha256File(partial), sha)


class ListingScaleTests(TestCase):
    timeout = 300

    async def test_hundredThousandFiles(self) -> None:
        """
        A folder of 100,000 files lists in pages that together hold each
        file once, in order; the first page's time is printed.
        """
        storage = Path(self.mktemp()) / "uploads"
        storage.mkdir(parents=True)
        names = sorted(f"file-{i:06d}.dat" for i in range(100_000))
        for name in names:
            (storage / name).touch()
        backend, proxy = await startStack(self, storage)
        seen: list[str] = []
        after = ""
        firstPage = None
        for _ in range(200):
            started = time.monotonic()
            response = await client().get(f"{proxy.url}/files",
                                          params={"limit": "1000", "after": after})
            answer = json.loads(await response.content())
            if firstPage is None:
                firstPage = time.monotonic() - started
            seen += [f["name"] for f in answer["files"]]
            if "next" not in answer:
                break
            after = answer["next"]
        self.assertEqual(seen, names)
        assert firstPage is not None
        print(f"\n100,000 files: first page of 1,000 through the proxy in "
              f"{firstPage * 1000:.0f} ms")
        self.assertLess(firstPage, 5.0)  # a sanity bound; the figure is printed


class DiskFullTests(TestCase):
    timeout = 60

    async def test_realDiskFull(self) -> None:
        """
        On a real full file system (a 4 MiB tmpfs), an upload gets 507,
        leaves nothing behind, and the backend serves the next one.
        """
        mountpoint = mountTmpfs(self, "4m")
        storage = mountpoint / "uploads"
        backend, proxy = await startStack(self, storage)
        source, _ = sharedFile(16 * MiB)
        for target in (backend, proxy):
            code, output = await run(self, "curl", curl(
                "-T", str(source), "-w", "\n%{http_code}", f"{target.url}/files/big.bin"))
            body, _, status = output.decode().rpartition("\n")
            self.assertEqual(status, "507", output)
            self.assertEqual(json.loads(body)["error"], "insufficient_storage")
            self.assertTrue(await eventually(lambda: partials(storage) == [], 2))
            self.assertFalse((storage / "big.bin").exists())
        code, _, _ = await call("PUT", f"{proxy.url}/files/small.txt", b"fits")
        self.assertEqual(code, 201)

    async def test_startsWithoutStorage(self) -> None:
        """The backend makes its storage folder when missing."""
        storage = Path(self.mktemp()) / "a" / "b"
        backend = await startService(self, "backend", "--storage", str(storage))
        self.assertEqual((await call("PUT", backend.url + "/files/x", b"1"))[0], 201)
