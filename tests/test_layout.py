"""
The tree's layout: packaging lists every package; test modules share
helpers through helper modules, never through each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase


class PackagingTests(SynchronousTestCase):
    def test_everyPackageListed(self) -> None:
        """
        setup.cfg lists every package (a non-editable install, as in the
        container image, leaves out any that is missing).
        """
        import configparser

        top = Path(__file__).parent.parent
        config = configparser.ConfigParser()
        config.read(top / "setup.cfg")
        listed = set(config["options"]["packages"].split())
        found = {
            ".".join(init.parent.relative_to(top).parts)
            for init in (top / "streamrelay").rglob("__init__.py")
        }
        self.assertEqual(found - listed, set())


def testModulesImported(source: str) -> list[str]:
    """The test modules (C{tests.test_*}) that the module C{source} imports, anywhere in it."""
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Relative imports in tests/ are from the tests package.
            package = "tests" if node.level else ""
            base = ".".join(part for part in (package, node.module) if part)
            if base == "tests":
                modules += [f"tests.{alias.name}" for alias in node.names]
            else:
                modules.append(base)
    return [m for m in modules if m.startswith("tests.test_")]


class TestImportTests(SynchronousTestCase):
    def test_noTestModuleImportsAnother(self) -> None:
        """
        A test module imports its helpers from helper modules (C{tests/httpfakes.py},
        C{tests/rawrequests.py}, C{tests/processes.py}...), never from another
        test module: trial would run the other's tests where they are imported.
        """
        tests = Path(__file__).parent
        found = {
            path.name: imported
            for path in sorted(tests.glob("test_*.py"))
            if (imported := testModulesImported(path.read_text()))
        }
        self.assertEqual(found, {})

    def test_importsFound(self) -> None:
        """Every way of naming a test module is caught, at any depth; helper modules are not."""
        source = (
            "import tests.test_a\n"
            "from tests.test_b import x\n"
            "from tests import test_c\n"
            "from . import test_d\n"
            "from .test_e import y\n"
            "def f():\n    from tests.test_f import z\n"
            "from tests.httpfakes import Connection\n"
            "from tests import processes\n"
        )
        self.assertEqual(
            testModulesImported(source),
            ["tests.test_a", "tests.test_b", "tests.test_c", "tests.test_d", "tests.test_e",
             "tests.test_f"],
        )
