"""
Makes the benchmark's modules (bench/*.py, run as scripts, importing each
other by their bare names) importable by the tests of their pure parts.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parent.parent / "bench")
if BENCH not in sys.path:
    # Appended: nothing installed is shadowed by the bench's module names.
    sys.path.append(BENCH)
