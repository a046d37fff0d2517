"""Hand-built scheduler state for the explain API's unit tests: real solver results on a
synthetic cluster, held by a small ExplainSource (no cluster, no threads)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from scheduler.events import ObjectRef
from scheduler.gangs import gang_from_workload
from scheduler.metrics import SchedulerMetrics
from scheduler.state import BOUND, INVALID, UNSCHEDULABLE, WAITING, GangState, read_constraints
from solver.explain import explain_placement, remedies
from solver.request import SolverConfig
from solver.result import Placement, Unschedulable
from solver.solve import solve
from topology.presets import PRESETS
from topology.records import node_from_json
from topology.snapshot import TopologySnapshot, build_snapshot
from topology.synthetic import ClusterSpec, synth_nodes

LAYER3 = "topology.k8s.aws/network-node-layer-3"
CREATED = "2026-11-28T00:00:00Z"


def workload(name: str, replicas: int, gpus: int = 8,
             annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"kind": "StatefulSet", "metadata": {"name": name, "namespace": "ml"},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"containers": [{"name": "c", "image": "secret-image:1",
                                         "env": [{"name": "TOKEN", "value": "hunter2"}],
                                         "resources": {"requests": {"nvidia.com/gpu": gpus}}}]}}}}


@dataclass
class HandBuilt:
    snapshot: TopologySnapshot
    gangs: dict[str, GangState] = field(default_factory=dict)
    metrics: SchedulerMetrics = field(default_factory=SchedulerMetrics)
    bound: dict[str, str] = field(default_factory=dict)
    synced: bool = True
    leader: bool = True

    def __post_init__(self) -> None:
        self.metrics.watch_state(lambda: list(self.gangs.values()),
                                 lambda: {"nodes": 1.5, "pods": None}, lambda: self.leader)

    def topology_snapshot(self) -> TopologySnapshot:
        return self.snapshot

    def pod_nodes(self, keys: Iterable[str]) -> dict[str, str]:
        return {key: self.bound[key] for key in keys if key in self.bound}

    def readiness(self) -> tuple[bool, bool]:
        return self.synced, self.leader


def cluster(nodes: int = 256, fanout: tuple[int, ...] = (2, 4, 32)) -> TopologySnapshot:
    raw = synth_nodes(ClusterSpec(nodes=nodes, fanout=fanout, seed=3))
    return build_snapshot([node_from_json(n) for n in raw], {}, PRESETS["aws"])


def add_gang(src: HandBuilt, name: str, replicas: int, *, bind: bool = True,
             annotations: dict[str, str] | None = None) -> GangState:
    request = gang_from_workload(workload(name, replicas, annotations=annotations))
    result = solve(request, src.snapshot, SolverConfig(time_limit_s=2.0))
    state = GangState(request.name, ObjectRef("StatefulSet", "ml", name))
    state.move(WAITING)
    state.size, state.min_member, state.created = replicas, replicas, CREATED
    state.constraints = read_constraints(annotations or {}, {}, "StatefulSet")
    state.result, state.solved_at = result, time.time()
    if isinstance(result, Placement):
        state.explanation = explain_placement(request, src.snapshot, result)
        state.bind_s = 0.25
        state.bound_pods = replicas if bind else 0
        state.move(BOUND)
        if bind:
            src.bound.update({f"ml/{a.pod}": a.node for a in result.assignments})
    else:
        assert isinstance(result, Unschedulable)
        state.remedies = remedies(result.diagnosis)
        state.move(UNSCHEDULABLE)
    src.gangs[state.key] = state
    return state


def add_invalid(src: HandBuilt, name: str, error: str) -> GangState:
    state = GangState(f"ml/{name}", ObjectRef("PodGroup", "ml", name))
    state.move(INVALID)
    state.error, state.created = error, CREATED
    src.gangs[state.key] = state
    return state
