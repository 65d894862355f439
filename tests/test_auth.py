"""
Access tokens at the proxy and the secret it shares with the backend.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamrelay.auth import TokenFile, bearerToken, matches, readSecret
from tests.processes import call, curl, deferLater, run, startService


class FakeRequest:
    def __init__(self, authorization: bytes | None) -> None:
        self.authorization = authorization

    def getHeader(self, name: bytes) -> bytes | None:
        return self.authorization if name == b"authorization" else None


class TokenUnitTests(SynchronousTestCase):
    def test_bearer(self) -> None:
        self.assertEqual(bearerToken(FakeRequest(b"Bearer abc")), b"abc")  # type: ignore[arg-type]
        self.assertEqual(bearerToken(FakeRequest(b"bearer  abc ")), b"abc")  # type: ignore[arg-type]
        for value in [None, b"Basic abc", b"Bearer", b"Bearer   "]:
            self.assertIsNone(bearerToken(FakeRequest(value)))  # type: ignore[arg-type]

    def test_matches(self) -> None:
        self.assertTrue(matches(b"b", [b"a", b"b"]))
        self.assertFalse(matches(b"c", [b"a", b"b"]))
        self.assertFalse(matches(None, [b"a"]))
        self.assertFalse(matches(b"", []))

    def test_tokenFile(self) -> None:
        path = Path(self.mktemp())
        path.write_text("# comment\n\n  one  \ntwo\n")
        tokens = TokenFile(path)
        self.assertEqual(tokens.tokens, [b"one", b"two"])
        path.write_text("three\n")
        tokens.reload()
        self.assertEqual(tokens.tokens, [b"three"])
        path.unlink()
        tokens.reload()  # unreadable: the old tokens stay
        self.assertEqual(tokens.tokens, [b"three"])
        self.flushLoggedErrors()

    def test_secret(self) -> None:
        path = Path(self.mktemp())
        path.write_text("s3cret\nignored\n")
        self.assertEqual(readSecret(None, str(path)), b"s3cret")
        self.assertEqual(readSecret("x", None), b"x")
        self.assertIsNone(readSecret(None, None))


class AuthIntegrationTests(TestCase):
    timeout = 60

    async def test_tokensAndSharedSecret(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        storage = folder / "uploads"
        tokensFile = folder / "tokens"
        tokensFile.write_text("first-token-123\n")
        secret = folder / "secret"
        secret.write_text("backend-secret-456\n")
        backend = await startService(
            self, "backend", "--storage", str(storage), "--shared-secret-file", str(secret)
        )
        proxy = await startService(
            self, "proxy", "--backend", backend.url, "--tokens-file", str(tokensFile),
            "--shared-secret-file", str(secret),
        )
        url = proxy.url + "/files/a.txt"

        code, headers, body = await call("PUT", url, b"data")
        self.assertEqual((code, json.loads(body)["error"]), (401, "unauthorized"))
        self.assertEqual(headers["www-authenticate"], 'Bearer realm="streamrelay"')
        code, _, _ = await call("PUT", url, b"data", {"Authorization": "Bearer wrong"})
        self.assertEqual(code, 401)
        code, _, _ = await call("GET", proxy.url + "/files")
        self.assertEqual(code, 401)
        good: dict[bytes | str, bytes | str] = {"Authorization": "Bearer first-token-123"}
        code, _, body = await call("PUT", url, b"data", good)
        self.assertEqual(code, 201, body)
        code, _, body = await call("GET", url, None, good)
        self.assertEqual((code, body), (200, b"data"))
        self.assertEqual((await call("GET", proxy.url + "/healthz"))[0], 200)
        self.assertEqual((await call("GET", proxy.url + "/"))[0], 200)

        # The backend refuses whoever does not hold the shared secret,
        # including a client with the proxy's token.
        code, _, body = await call("GET", backend.url + "/files/a.txt", None, good)
        self.assertEqual((code, json.loads(body)["error"]), (401, "unauthorized"))
        code, _, _ = await call("GET", backend.url + "/files/a.txt", None,
                                {"Authorization": "Bearer backend-secret-456"})
        self.assertEqual(code, 200)

        # A refused Expect: 100-continue upload never sends its body.
        source = folder / "big"
        source.write_bytes(b"x" * (4 << 20))
        _, output = await run(self, "curl", curl(
            "-T", str(source), "-H", "Expect: 100-continue",
            "-w", "\n%{http_code} %{size_upload}", url))
        self.assertTrue(output.endswith(b"\n401 0"), output)

        # SIGHUP reloads the tokens.
        tokensFile.write_text("second-token-789\n")
        proxy.signal(signal.SIGHUP)
        await proxy.protocol.waitFor(b"reloaded 1 token(s)")
        await deferLater(0.05)
        self.assertEqual((await call("GET", url, None, good))[0], 401)
        code, _, _ = await call("GET", url, None, {"Authorization": "Bearer second-token-789"})
        self.assertEqual(code, 200)

        for program in (backend, proxy):
            for secretText in (b"first-token-123", b"second-token-789", b"backend-secret-456"):
                self.assertNotIn(secretText, program.output, program.label)


class TokenNameTests(SynchronousTestCase):
    def test_names(self) -> None:
        """A line is NAME TOKEN, or TOKEN alone, named by the start of its SHA-256."""
        import hashlib

        path = Path(self.mktemp())
        path.write_text("# c\nalice  t0ken\nbare\n ci-bot   other \n")
        tokens = TokenFile(path)
        self.assertEqual(tokens.tokens, [b"t0ken", b"bare", b"other"])
        self.assertEqual(tokens.names,
                         ["alice", hashlib.sha256(b"bare").hexdigest()[:12], "ci-bot"])
        self.assertEqual(tokens.check(FakeRequest(b"Bearer other")), "ci-bot")  # type: ignore[arg-type]

    def test_badLine(self) -> None:
        """
        A line of three fields is an error naming its number, never its
        text; a reload keeps the old tokens.
        """
        path = Path(self.mktemp())
        path.write_text("alice t0ken\n")
        tokens = TokenFile(path)
        path.write_text("# c\na b c\n")
        tokens.reload()
        self.assertEqual(tokens.names, ["alice"])
        with self.assertRaises(ValueError) as caught:
            TokenFile(path)
        self.assertIn("line 2", str(caught.exception))
        self.assertNotIn("a b c", str(caught.exception))
        path.write_text("n\x01 t0ken\n")
        self.assertRaises(ValueError, TokenFile, path)
