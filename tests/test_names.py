"""
File names: which are valid, and reading one from a request path.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from streamrelay.names import BadName, nameFromPath, validateName


class NameTests(SynchronousTestCase):
    def test_good(self) -> None:
        for name in ["a", "file.tar.gz", "café", "x" * 255, "a b", "-rf", "日本語"]:
            self.assertEqual(validateName(name), name)

    def test_bad(self) -> None:
        for name in ["", ".", "..", ".x", "a/b", "a\\b", "a\x00b", "a\nb", "a\x7fb",
                     "a\x85b", "x" * 256, "é" * 128, "\ud800"]:
            self.assertRaises(BadName, validateName, name)

    def test_fromPath(self) -> None:
        self.assertEqual(nameFromPath(b"/files/a%20b", b"/files/"), "a b")
        for path in [b"/files/a%2Fb", b"/files/a/b", b"/files/%FF", b"/other/x"]:
            self.assertRaises(BadName, nameFromPath, path, b"/files/")
