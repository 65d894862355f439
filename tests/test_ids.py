"""
L{streamrelay.ids}: ids unique to a process and the proxy's pool of
connections to the backend.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from streamrelay.hooks.events import eventId
from streamrelay.ids import newId
from streamrelay.proxy.tap import BACKEND_CONNECTIONS_KEPT, backendClient


class IdTests(SynchronousTestCase):
    def test_form(self) -> None:
        """32 lowercase hex digits, as a random UUID's were."""
        for made in (newId(), eventId()):
            self.assertRegex(made, r"\A[0-9a-f]{32}\Z")

    def test_neverTwice(self) -> None:
        """Ids (request and event ids alike) are never the same twice."""
        made = [newId() for _ in range(5000)] + [eventId() for _ in range(5000)]
        self.assertEqual(len(set(made)), len(made))

    def test_forkedChild(self) -> None:
        """A forked child draws its own random bits instead of repeating its parent's ids."""
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            try:
                os.write(write, newId().encode("ascii"))
            finally:
                os._exit(0)
        os.close(write)
        theirs = os.read(read, 64).decode("ascii")
        os.close(read)
        os.waitpid(child, 0)
        ours = newId()
        self.assertTrue(re.fullmatch(r"[0-9a-f]{32}", theirs), theirs)
        self.assertNotEqual(theirs[:16], ours[:16])


class BackendPoolTests(SynchronousTestCase):
    def test_keptConnections(self) -> None:
        """
        The proxy keeps up to 64 idle connections to the backend, as many as
        the uploads a busy client sends at once, instead of opening a new
        one for each upload past 16.
        """
        client = backendClient(MemoryReactorClock())
        agent: Any = client._agent  # type: ignore[attr-defined]
        while not hasattr(agent, "_pool"):
            agent = agent._agent
        self.assertEqual(agent._pool.maxPersistentPerHost, BACKEND_CONNECTIONS_KEPT)
        self.assertGreaterEqual(BACKEND_CONNECTIONS_KEPT, 64)
