"""
Malformed input found by running the real programs: C{Content-Digest}
values that are not what they claim and query strings that are not UTF-8
(through the backend's routes over in-memory HTTP), and bad values of the
uploader's environment variables.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from streamrelay.digests import parseSHA256Digest, reprDigest
from streamrelay.upload import cli
from tests.backendcases import BackendTestCase
from tests.rawrequests import get, put

SHA = hashlib.sha256(b"data").hexdigest()
B64 = base64.b64encode(hashlib.sha256(b"data").digest()).decode("ascii")


class ParseSHA256DigestTests(SynchronousTestCase):
    def test_wellFormed(self) -> None:
        for value in [
            f"sha-256=:{B64}:",
            f"md5=:AAAA:, sha-256=:{B64}:",
            f"sha-256=:{B64}:, sha-512=:AAAA:",
            f"sha-256=:{B64}:;keyid=\"a, b\";x=1",
            f" sha-256 = :{B64}: ",
            f"sha-256=:{B64.rstrip('=')}:",  # RFC 8941: padding may be left out
            f"sha-256=:{B64}:, sha-256=:{B64}:",
        ]:
            self.assertEqual(parseSHA256Digest(value), SHA, value)

    def test_othersIgnored(self) -> None:
        """Other algorithms, unknown names and parameters are ignored."""
        for value in [
            "",
            "sha-512=:AAAA:",
            "sha-512=:!!!:",
            "unknown=whatever, foo",
            "sha-2566=:AAAA:",
            # A comma inside a quoted parameter does not start a member.
            'sha-512=:AAAA:;note="x, sha-256=:!!!:"',
        ]:
            self.assertIsNone(parseSHA256Digest(value), value)

    def test_malformedSHA256(self) -> None:
        """A sha-256 member that is there but malformed is never skipped."""
        for value in [
            "sha-256=:!!!:",
            f"sha-256={B64}",
            "sha-256=:abc:",
            "sha-256=::",
            "sha-256",
            "sha-256;x=1",
            f"SHA-256=:{B64}:",
            f"sha-256=:{B64}:garbage",
            f"sha-256=:{B64}::",
            f'sha-256="{B64}"',
            f"sha-512=:AAAA:, sha-256=:{B64[:-2]}:",
            f"sha-256=:{B64}:, sha-256=:{'A' * 43}=:",
            'foo=:AAAA:;p="x, sha-256=:!!!:',  # an open quote hiding it
        ]:
            self.assertRaises(ValueError, parseSHA256Digest, value)

    def test_roundTrip(self) -> None:
        self.assertEqual(parseSHA256Digest(reprDigest(SHA).decode("ascii")), SHA)


class ContentDigestRouteTests(BackendTestCase):
    """The backend answers 400 for a malformed sha-256 member, storing nothing."""

    def test_malformedRefused(self) -> None:
        for value in [b"sha-256=:!!!:", b"sha-256=" + B64.encode(), b"sha-256=:abc:"]:
            response = self.request(put(b"/files/d", b"data", b"Content-Digest: " + value))
            self.assertError(response, 400, "bad_request")
            self.assertNothingStored()

    def test_otherAlgorithmsStored(self) -> None:
        response = self.request(
            put(b"/files/d", b"data", b"Content-Digest: sha-512=:AAAA:, x=:!!!:")
        )
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual((self.root / "d").read_bytes(), b"data")

    def test_checkedWithParameters(self) -> None:
        response = self.request(
            put(b"/files/d", b"other", b"Content-Digest: sha-256=:" + B64.encode() + b":;a=1")
        )
        self.assertError(response, 400, "digest_mismatch")
        self.assertNothingStored()


class QueryRouteTests(BackendTestCase):
    """A query string that is not UTF-8 is 400 bad_request, on any route."""

    def test_notUTF8(self) -> None:
        for data in [
            get(b"/files?after=%FF"),
            get(b"/healthz?x=%FF"),
            put(b"/files/qq?x=%FF", b"data"),
        ]:
            conn = self.connect()
            conn.send(data)
            conn.turn()
            conn.send(get(b"/healthz"))
            first, second = conn.responses()
            self.assertError(first, 400, "bad_request")
            # The connection serves the next request.
            self.assertEqual(second.status, 200)
            self.assertFalse(conn.transport.disconnecting)
        self.assertFalse((self.root / "qq").exists())

    def test_UTF8(self) -> None:
        """A UTF-8 value (once a crash as well) reaches the route."""
        for name in [b"a", b"%C3%A9", b"%C3%A9z"]:
            self.assertEqual(self.request(put(b"/files/" + name, b"x")).status, 201)
        response = self.request(get(b"/files?after=%C3%A9"))
        self.assertEqual(response.status, 200, response.body)
        names = [f["name"] for f in json.loads(response.body)["files"]]
        self.assertEqual(names, ["\u00e9z"])


class UploaderEnvironmentTests(SynchronousTestCase):
    """
    A bad value of an environment variable the uploader reads is a usage
    error (a message, exit status 2), as a bad flag is; not a traceback.
    """

    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def main(self, argv: list[str], **environ: str) -> int:
        """Run the uploader as far as a usage error; its exit status."""
        self.patch(os, "environ", environ)
        with self.assertRaises(SystemExit) as raised:
            cli.main(argv)
        code = raised.exception.code
        assert isinstance(code, int)
        return code

    def test_badValues(self) -> None:
        for variable, value in [
            ("STREAMRELAY_SETTLE", "abc"),
            ("STREAMRELAY_SETTLE", "nan"),
            ("STREAMRELAY_SETTLE", "-1"),
            ("STREAMRELAY_CONCURRENCY", "many"),
            ("STREAMRELAY_CONCURRENCY", "0"),
            ("STREAMRELAY_RETRIES", "1.5"),
            ("STREAMRELAY_RETRIES", "-1"),
            ("STREAMRELAY_RESUMABLE", "maybe"),
            ("STREAMRELAY_URL", "127.0.0.1:8080"),
            ("STREAMRELAY_URL", "http://[::1"),
        ]:
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertEqual(self.main(["somefile"], **{variable: value}), 2, variable)
            last = self.stderr.getvalue().splitlines()[-1]
            self.assertTrue(last.startswith("streamrelay-upload: error: "), last)
            self.assertIn(variable, last)
            self.assertIn(repr(value), last)
            self.assertNotIn("Traceback", self.stderr.getvalue())

    def test_badFlags(self) -> None:
        """The flags take what the variables take."""
        for flag, value in [
            ("--settle", "inf"),
            ("--concurrency", "0"),
            ("--retries", "-2"),
            ("--url", "ftp://host/"),
        ]:
            self.assertEqual(self.main([flag, value, "somefile"]), 2, flag)
            self.assertIn(f"argument {flag}:", self.stderr.getvalue())

    def test_flagWins(self) -> None:
        """A bad variable does not matter when its flag is given."""
        options = cli.parseArguments(
            ["--settle", "0.5", "--url", "https://relay.example", "--resumable", "f"],
            {"STREAMRELAY_SETTLE": "abc", "STREAMRELAY_URL": "nope",
             "STREAMRELAY_RESUMABLE": "maybe"},
        )
        self.assertEqual(
            (options.settle, options.url, options.resumable),
            (0.5, "https://relay.example", True),
        )

    def test_values(self) -> None:
        options = cli.parseArguments(["f"], {
            "STREAMRELAY_SETTLE": "1.5",
            "STREAMRELAY_CONCURRENCY": "4",
            "STREAMRELAY_RETRIES": "0",
            "STREAMRELAY_RESUMABLE": "Yes",
            "STREAMRELAY_URL": "http://127.0.0.1:9000/",
            "STREAMRELAY_TOKEN": "t",
        })
        self.assertEqual(
            (options.settle, options.concurrency, options.retries, options.resumable,
             options.url, options.token),
            (1.5, 4, 0, True, "http://127.0.0.1:9000/", "t"),
        )

    def test_defaults(self) -> None:
        """Unset and empty variables leave the defaults."""
        for environ in [{}, {name: "" for name, _, _ in cli.ENVIRONMENT.values()}]:
            options = cli.parseArguments(["f"], environ)
            self.assertEqual(
                (options.settle, options.concurrency, options.retries, options.resumable,
                 options.url, options.token, options.watch, options.state),
                (2.0, 1, 5, False, "http://127.0.0.1:8080", None, None, None),
            )
        self.assertFalse(
            cli.parseArguments(["f"], {"STREAMRELAY_RESUMABLE": "off"}).resumable
        )

    def test_helpNamesEveryVariable(self) -> None:
        self.assertEqual(self.main(["--help"]), 0)
        text = " ".join(self.stdout.getvalue().split())
        for variable in [
            "STREAMRELAY_URL", "STREAMRELAY_TOKEN", "STREAMRELAY_CONCURRENCY",
            "STREAMRELAY_RETRIES", "STREAMRELAY_RESUMABLE", "STREAMRELAY_WATCH",
            "STREAMRELAY_STATE", "STREAMRELAY_SETTLE",
        ]:
            self.assertIn(f"env {variable}", text)
