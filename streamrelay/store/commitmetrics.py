"""
The group commit's counts at C{/metrics}: its rounds and the files they
covered (their ratio is how many files share each round of syncs).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from streamrelay.store.groupcommit import GroupCommit


class GroupCommitCollector(Collector):
    """Reads a L{GroupCommit}'s counters when C{/metrics} is asked for."""

    def __init__(self, commits: GroupCommit) -> None:
        self._commits = commits

    def collect(self) -> Iterator[Metric]:
        rounds = CounterMetricFamily(
            "streamrelay_group_commit_rounds",
            "Rounds of syncs of the disk store's group commit.",
            labels=["service"],
        )
        rounds.add_metric(["backend"], self._commits.rounds)
        files = CounterMetricFamily(
            "streamrelay_group_commit_files",
            "Files synced and put in place by the disk store's group commit.",
            labels=["service"],
        )
        files.add_metric(["backend"], self._commits.files)
        yield rounds
        yield files


def register(registry: CollectorRegistry, commits: GroupCommit) -> None:
    registry.register(GroupCommitCollector(commits))
