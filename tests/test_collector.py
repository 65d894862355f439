"""
The services' cycle collector settings (L{tuneCollector}): collections
further apart, and what starting made set aside once the reactor runs.
"""

from __future__ import annotations

import gc

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.collector import YOUNG_OBJECTS, tuneCollector


class TuneCollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)

    def test_youngObjects(self) -> None:
        """The youngest generation is collected every YOUNG_OBJECTS; the others as they were."""
        _, middle, old = gc.get_threshold()
        tuneCollector(MemoryReactor())
        self.assertEqual(gc.get_threshold(), (YOUNG_OBJECTS, middle, old))

    def test_frozenOnceRunning(self) -> None:
        """Startup's objects are set aside when the reactor runs, not before."""
        gc.unfreeze()
        reactor = MemoryReactor()
        startup = [object() for _ in range(3)]  # tracked: lists are
        tuneCollector(reactor)
        self.assertEqual(gc.get_freeze_count(), 0)
        reactor.run()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertFalse(any(o is startup for o in gc.get_objects()))
