"""
The services' command lines: sizes, flags and the environment, endpoints.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.backend.tap import Options as BackendOptions
from streamrelay.options import parseSize
from streamrelay.proxy.tap import Options as ProxyOptions


class OptionTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        self.assertEqual(parseSize("1024"), 1024)
        self.assertEqual(parseSize("1M"), 1 << 20)
        self.assertEqual(parseSize("2GiB"), 2 << 30)
        self.assertRaises(usage.UsageError, parseSize, "-1")
        self.assertRaises(usage.UsageError, parseSize, "lots")

    def test_environmentAndFlags(self) -> None:
        options = BackendOptions()
        options.environ = {
            "STREAMRELAY_STORAGE": "/data", "STREAMRELAY_MAX_SIZE": "1G",
            "STREAMRELAY_LISTEN": "tcp:1 tcp:2",
        }
        options.parseOptions(["--max-size", "5"])
        self.assertEqual(options["storage"], "/data")
        self.assertEqual(options["max-size"], 5)
        self.assertEqual(options["listen"], ["tcp:1", "tcp:2"])

    def test_listenRepeatable(self) -> None:
        options = ProxyOptions()
        options.environ = {}
        options.parseOptions(["--listen", "tcp:1", "--listen", "unix:/x"])
        self.assertEqual(options["listen"], ["tcp:1", "unix:/x"])
        self.assertEqual(options["backend"], "http://127.0.0.1:8081")

    def test_badBackend(self) -> None:
        options = ProxyOptions()
        options.environ = {}
        self.assertRaises(usage.UsageError, options.parseOptions, ["--backend", "ftp://x"])
        for bad in ["http://[::1", "http://h:port/", "http://a..b/", "http://", "http:///p",
                    "http://user:secret@h/", "http://h/?q=1", "http://h/#f"]:
            options = ProxyOptions()
            options.environ = {}
            error = self.assertRaises(usage.UsageError, options.parseOptions, ["--backend", bad])
            self.assertIn(bad, str(error))

    def test_ipv6Backend(self) -> None:
        """An IPv6 literal backend address is taken (IDNA has no form for it)."""
        options = ProxyOptions()
        options.environ = {}
        options.parseOptions(["--backend", "http://[::1]:8081"])
        self.assertEqual(options["backend"], "http://[::1]:8081")

    def test_badListen(self) -> None:
        """
        An endpoint Twisted cannot listen on is refused when the options are
        read, naming it and saying why: from a flag or from the environment,
        a bad syntax, an unknown kind, a missing TLS key.
        """
        for argv, environ, said in [
            (["--listen", "tcp:abc"], {}, "--listen tcp:abc: invalid literal"),
            (["--listen", "foo:1"], {}, "--listen foo:1: Unknown endpoint type"),
            ([], {"STREAMRELAY_LISTEN": "tcp:1 tcp:x"}, "--listen tcp:x:"),
            (["--listen", "ssl:1:privateKey=/nonexistent.pem"], {}, "No such file"),
        ]:
            options = BackendOptions()
            options.environ = environ
            error = self.assertRaises(usage.UsageError, options.parseOptions, argv)
            self.assertIn(said, str(error))
