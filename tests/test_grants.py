"""
Signed upload URLs: signing, checking, the keys file, C{streamrelay-sign}.
"""

from __future__ import annotations

import hmac
import io
from contextlib import redirect_stderr, redirect_stdout
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.errors import ApiError
from streamrelay.grants import GrantKeys, GrantQuery, checkGrant, parseKeys, signURL
from streamrelay.grants.checking import signedMethod
from streamrelay.grants.cli import main, pageLink
from streamrelay.proxy.tap import Options as ProxyOptions
from tests.grantkeys import SECRET1, SECRET2, writeKeys

NOW = 1_700_000_000


def parts(url: str) -> tuple[bytes, bytes]:
    split = urlsplit(url)
    return split.path.encode(), split.query.encode()


class SigningTests(SynchronousTestCase):
    def test_stringToSign(self) -> None:
        """The signature is HMAC-SHA256 over METHOD, PATH as sent, expiry and size, one a line."""
        url = signURL("http://proxy:8080/files/a%20b.pdf", "k1", SECRET1, "put",
                      expires=NOW + 60, maxSize=100)
        split = urlsplit(url)
        self.assertEqual((split.scheme, split.netloc, split.path),
                         ("http", "proxy:8080", "/files/a%20b.pdf"))
        params = dict(parse_qsl(split.query))
        expected = hmac.new(
            SECRET1, b"PUT\n/files/a%20b.pdf\n" + str(NOW + 60).encode() + b"\n100", sha256
        ).hexdigest()
        self.assertEqual(params, {"sr-key": "k1", "sr-expires": str(NOW + 60),
                                  "sr-max-size": "100", "sr-signature": expected})

    def test_noMaxSize(self) -> None:
        """Without a size the last line is empty, and sr-max-size is absent."""
        url = signURL("/files/a", "k1", SECRET1.decode(), "GET", expires=NOW)
        params = dict(parse_qsl(urlsplit(url).query))
        self.assertNotIn("sr-max-size", params)
        self.assertEqual(params["sr-signature"], hmac.new(
            SECRET1, b"GET\n/files/a\n%d\n" % (NOW,), sha256).hexdigest())

    def test_pathEscaped(self) -> None:
        """A space or non-ASCII in the path is escaped, escapes already there are kept."""
        url = signURL("/files/r\u00e9sum\u00e9 2026.pdf", "k1", SECRET1, "PUT", expires=NOW)
        self.assertTrue(url.startswith("/files/r%C3%A9sum%C3%A9%202026.pdf?"), url)
        path, query = parts(url)
        checkGrant(b"PUT", path, GrantQuery.split(query), self.keys(), NOW)  # type: ignore[arg-type]

    def test_otherParamsKept(self) -> None:
        """Other query parameters stay, unsigned; old sr-* ones are replaced."""
        url = signURL("/files?prefix=a&sr-key=old&sr-signature=x", "k1", SECRET1, "GET",
                      expires=NOW)
        split = GrantQuery.split(urlsplit(url).query.encode())
        assert split is not None
        self.assertEqual(split.rest, b"prefix=a")
        self.assertEqual(split.params["sr-key"], "k1")
        self.assertEqual(split.repeated, frozenset())

    def test_expiresIn(self) -> None:
        url = signURL("/files/a", "k1", SECRET1, "PUT", expiresIn=60)
        expires = int(dict(parse_qsl(urlsplit(url).query))["sr-expires"])
        import time

        self.assertLess(abs(expires - (time.time() + 60)), 5)

    def test_badArguments(self) -> None:
        cases: list[dict[str, Any]] = [
            {"expires": NOW, "expiresIn": 5}, {}, {"expiresIn": 0}, {"expires": -1},
            {"expires": NOW, "method": "P UT"}, {"expires": NOW, "keyId": "a b"},
            {"expires": NOW, "keyId": ""}, {"expires": NOW, "maxSize": -1},
        ]
        for kwargs in cases:
            args: dict[str, Any] = {
                "url": "/files/a", "keyId": "k1", "secret": SECRET1, "method": "PUT",
            }
            args.update(kwargs)
            self.assertRaises(ValueError, signURL, **args)

    def keys(self) -> GrantKeys:
        return GrantKeys(writeKeys(Path(self.mktemp())))


class CheckingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.keys = GrantKeys(writeKeys(Path(self.mktemp())))

    def check(self, method: bytes, url: str, now: float = NOW) -> object:
        path, query = parts(url)
        split = GrantQuery.split(query)
        assert split is not None
        return checkGrant(method, path, split, self.keys, now)

    def refused(self, code: str, method: bytes, url: str, now: float = NOW) -> str:
        with self.assertRaises(ApiError) as caught:
            self.check(method, url, now)
        self.assertEqual((caught.exception.status, caught.exception.code), (403, code))
        return caught.exception.message

    def test_valid(self) -> None:
        url = signURL("/files/a.txt", "k2", SECRET2, "PUT", expires=NOW + 10, maxSize=5)
        grant = self.check(b"PUT", url)
        self.assertEqual(
            (grant.keyId, grant.identity, grant.maxSize, grant.expires),  # type: ignore[attr-defined]
            ("k2", "grant:k2", 5, NOW + 10),
        )

    def test_upperCaseSignature(self) -> None:
        url = signURL("/files/a.txt", "k1", SECRET1, "PUT", expires=NOW)
        sig = dict(parse_qsl(urlsplit(url).query))["sr-signature"]
        self.check(b"PUT", url.replace(sig, sig.upper()))

    def test_expired(self) -> None:
        url = signURL("/files/a", "k1", SECRET1, "PUT", expires=NOW)
        self.check(b"PUT", url, now=NOW)  # the last second still counts
        self.refused("grant_expired", b"PUT", url, now=NOW + 1)

    def test_tamperedBeforeExpired(self) -> None:
        """An expiry moved by hand is invalid, not expired (nor valid)."""
        url = signURL("/files/a", "k1", SECRET1, "PUT", expires=NOW)
        self.refused("grant_invalid", b"PUT",
                     url.replace(f"sr-expires={NOW}", f"sr-expires={NOW + 3600}"), now=NOW + 1)

    def test_refusals(self) -> None:
        url = signURL("/files/a", "k1", SECRET1, "PUT", expires=NOW + 10, maxSize=10)
        sig = dict(parse_qsl(urlsplit(url).query))["sr-signature"]
        for method, bad in [
            (b"GET", url),  # another method
            (b"PUT", url.replace("/files/a", "/files/b")),  # another path
            (b"PUT", url.replace("/files/a", "/files/%61")),  # the same name, escaped
            (b"PUT", url.replace("sr-key=k1", "sr-key=k2")),  # another key
            (b"PUT", url.replace("sr-key=k1", "sr-key=k9")),  # no such key
            (b"PUT", url.replace("sr-max-size=10", "sr-max-size=1000")),
            (b"PUT", url.replace("&sr-max-size=10", "")),  # the size dropped
            (b"PUT", url.replace("sr-max-size=10", "sr-max-size=")),
            (b"PUT", url.replace("sr-max-size=10", "sr-max-size=-1")),
            (b"PUT", url.replace(sig, "0" * 64)),
            (b"PUT", url.replace(sig, sig[:-1])),
            (b"PUT", url.replace(sig, sig[:-1] + "g")),
            (b"PUT", url.replace("&sr-signature=" + sig, "")),
            (b"PUT", url.replace("sr-key=k1&", "")),
            (b"PUT", url.replace(f"sr-expires={NOW + 10}&", "")),
            (b"PUT", url.replace(f"sr-expires={NOW + 10}", "sr-expires=1e9")),
            (b"PUT", url.replace(f"sr-expires={NOW + 10}", "sr-expires=" + "9" * 13)),
            (b"PUT", url + "&sr-key=k1"),  # given twice
            (b"PUT", url + "&sr-other=1"),  # unknown
            (b"PUT", url + "&SR-KEY=k1"),  # unknown (names are lower case)
            (b"PUT", url.replace("sr-key=k1", "sr-key=k1%0Ax")),
        ]:
            self.refused("grant_invalid", method, bad)

    def test_noKeys(self) -> None:
        """A proxy without --grant-keys-file refuses every grant."""
        url = signURL("/files/a", "k1", SECRET1, "PUT", expires=NOW)
        path, query = parts(url)
        with self.assertRaises(ApiError) as caught:
            checkGrant(b"PUT", path, GrantQuery.split(query), None, NOW)  # type: ignore[arg-type]
        self.assertEqual(caught.exception.code, "grant_invalid")

    def test_uploadURL(self) -> None:
        """An upload's own URL is signed for PATCH and lets HEAD, GET, PATCH and DELETE in."""
        url = signURL("/uploads/abc", "k1", SECRET1, "PATCH", expires=NOW)
        for method in (b"HEAD", b"GET", b"PATCH", b"DELETE"):
            self.check(method, url)
        self.refused("grant_invalid", b"PUT", url)
        # Creation is signed as itself; a PATCH grant is not one for POST.
        self.assertEqual(signedMethod(b"POST", b"/uploads/"), b"POST")
        self.assertEqual(signedMethod(b"PATCH", b"/uploads/a/b"), b"PATCH")
        self.refused("grant_invalid", b"PATCH",
                     signURL("/uploads/abc", "k1", SECRET1, "HEAD", expires=NOW))

    def test_split(self) -> None:
        """Only sr-* parameters are taken out; the rest stays as sent."""
        self.assertIsNone(GrantQuery.split(b"a=1&b=%41"))
        self.assertIsNone(GrantQuery.split(b""))
        split = GrantQuery.split(b"a=1&sr-key=k%31&b=%41&&sr%2Dexpires=5")
        assert split is not None
        self.assertEqual(split.rest, b"a=1&b=%41")
        self.assertEqual(split.params, {"sr-key": "k1", "sr-expires": "5"})


class KeysFileTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            parseKeys(b"# c\n\n  k1   " + SECRET1 + b"  \nk.2_~- " + SECRET2 + b"\n"),
            {"k1": SECRET1, "k.2_~-": SECRET2},
        )
        self.assertEqual(parseKeys(b"# none yet\n"), {})

    def test_badLines(self) -> None:
        """A bad line is an error naming its number, never its secret."""
        for data in [b"k1\n", b"k1 " + SECRET1 + b" extra\n", b"k/1 " + SECRET1 + b"\n",
                     b"k1 " + SECRET1 + b"\nk1 " + SECRET2 + b"\n", b"k1 tiny\n"]:
            with self.assertRaises(ValueError) as caught:
                parseKeys(b"# c\n" + data)
            self.assertRegex(str(caught.exception), "line [23]: ")
            for secret in (SECRET1, SECRET2, b"tiny"):
                self.assertNotIn(secret.decode(), str(caught.exception))

    def test_reload(self) -> None:
        """Reloaded when readable and valid; otherwise the old keys stay."""
        path = writeKeys(Path(self.mktemp()), b"k1 " + SECRET1 + b"\n")
        keys = GrantKeys(path)
        self.assertEqual((keys.ids, keys.secret("k1")), (["k1"], SECRET1))
        path.write_bytes(b"k2 " + SECRET2 + b"\n")
        keys.reload()
        self.assertEqual((keys.ids, keys.secret("k1"), keys.secret("k2")), (["k2"], None, SECRET2))
        path.write_bytes(b"k3 tooshort\n")
        keys.reload()
        self.assertEqual(keys.ids, ["k2"])
        path.unlink()
        keys.reload()
        self.assertEqual(keys.ids, ["k2"])


class SignCommandTests(SynchronousTestCase):
    def sign(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = int(e.code or 0)
        return code, out.getvalue(), err.getvalue()

    def setUp(self) -> None:
        self.keysFile = str(writeKeys(Path(self.mktemp())))

    def test_prints(self) -> None:
        code, out, err = self.sign("--keys-file", self.keysFile, "--key-id", "k2", "--method",
                                  "put", "--expires", str(NOW), "--max-size", "1K",
                                  "http://127.0.0.1:8080/files/a b")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, signURL("http://127.0.0.1:8080/files/a b", "k2", SECRET2, "PUT",
                                      expires=NOW, maxSize=1024) + "\n")

    def test_errors(self) -> None:
        """Errors go to stderr, with exit status 2, and never hold a secret."""
        for args in [
            ("--key-id", "k9"), ("--key-id", "k1", "--max-size", "lots"),
            ("--key-id", "k1", "--method", "P T"), ("--keys-file", "/nonexistent"),
            ("--key-id", "k1", "--page", "--method", "GET"),
        ]:
            argv = ["--keys-file", self.keysFile, "--key-id", "k1", "--method", "PUT",
                    "--expires-in", "60", *args, "/files/a"]
            code, out, err = self.sign(*argv)
            self.assertEqual((code, out), (2, ""), args)
            self.assertIn("streamrelay-sign:", err)
            self.assertNotIn(SECRET1.decode(), err)
        code, out, err = self.sign("--keys-file", self.keysFile, "/files/a")
        self.assertEqual((code, out), (2, ""))
        self.assertIn("required", err)

    def test_page(self) -> None:
        """--page prints the page's link: sr-path holds the path, escapes and all."""
        signed = signURL("http://h/files/a%20b+c&d", "k1", SECRET1, "PUT", expires=NOW)
        link = pageLink(signed)
        split = urlsplit(link)
        self.assertEqual(split.path, "/")
        params = dict(parse_qsl(split.query))
        self.assertEqual(params["sr-path"], "/files/a%20b+c&d")
        self.assertEqual(params["sr-signature"], dict(parse_qsl(urlsplit(signed).query))[
            "sr-signature"])


class ProxyOptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> ProxyOptions:
        options = ProxyOptions()
        options.environ = {}
        options.parseOptions(list(argv))
        return options

    def test_grantKeysFile(self) -> None:
        """--grant-keys-file must exist and be valid at start; the error holds no secret."""
        good = writeKeys(Path(self.mktemp()))
        self.assertEqual(self.parse("--grant-keys-file", str(good))["grant-keys-file"], str(good))
        self.assertRaises(UsageError, self.parse, "--grant-keys-file", "/nonexistent")
        bad = writeKeys(Path(self.mktemp()), b"k1 " + SECRET1 + b" " + SECRET2 + b"\n")
        with self.assertRaises(UsageError) as caught:
            self.parse("--grant-keys-file", str(bad))
        self.assertIn("line 1", str(caught.exception))
        self.assertNotIn(SECRET1.decode(), str(caught.exception))

    def test_tokensFile(self) -> None:
        bad = Path(self.mktemp())
        bad.write_text("name token extra\n")
        self.assertRaises(UsageError, self.parse, "--tokens-file", str(bad))
