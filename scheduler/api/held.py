"""An ExplainSource over records held in memory: what the explain API's unit tests and
its latency benchmark serve (built from real solver results), with no scheduler behind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from scheduler.gang import GangKey
from scheduler.metrics import SchedulerMetrics
from scheduler.state import GangRecord
from topology.snapshot import TopologySnapshot


@dataclass
class HeldState:
    snapshot: TopologySnapshot
    gangs: dict[GangKey, GangRecord] = field(default_factory=dict)
    metrics: SchedulerMetrics = field(default_factory=SchedulerMetrics)
    bound: dict[str, str] = field(default_factory=dict)
    """pod key -> node the API server would show it on."""
    synced: bool = True
    leader: bool = True

    def topology_snapshot(self) -> TopologySnapshot:
        return self.snapshot

    def pod_nodes(self, keys: Iterable[str]) -> dict[str, str]:
        return {key: self.bound[key] for key in keys if key in self.bound}

    def readiness(self) -> tuple[bool, bool]:
        return self.synced, self.leader
