"""Hand-built scheduler state for the explain API's unit tests: real solver results on a
synthetic cluster, held by a small ExplainSource (no cluster, no threads)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kube.resources import ObjectRef
from scheduler.api.auth import Caller, Need, ReviewUnavailable, Scope
from scheduler.api.held import HeldState
from scheduler.gang import GangKey
from scheduler.offline import request_from_workload
from scheduler.sources.base import read_constraints
from scheduler.state import GangPhase, GangRecord
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
class HandBuilt(HeldState):
    """HeldState whose metrics also describe its records (as a running scheduler's do)."""

    def __post_init__(self) -> None:
        self.metrics.watch_state(lambda: list(self.gangs.values()),
                                 lambda: {"nodes": 1.5, "pods": None}, lambda: self.leader)


def cluster(nodes: int = 256, fanout: tuple[int, ...] = (2, 4, 32)) -> TopologySnapshot:
    raw = synth_nodes(ClusterSpec(nodes=nodes, fanout=fanout, seed=3))
    return build_snapshot([node_from_json(n) for n in raw], {}, PRESETS["aws"])


def add_gang(src: HandBuilt, name: str, replicas: int, *, bind: bool = True,
             annotations: dict[str, str] | None = None,
             kind: str = "StatefulSet") -> GangRecord:
    request = request_from_workload(workload(name, replicas, annotations=annotations))
    result = solve(request, src.snapshot, SolverConfig(time_limit_s=2.0))
    state = GangRecord(GangKey(kind, "ml", name), ObjectRef(kind, "ml", name))
    state.move(GangPhase.WAITING, time.time())
    state.size, state.min_member, state.created = replicas, replicas, CREATED
    state.constraints = read_constraints([(kind, {}), ("Pod", annotations or {})])
    state.result, state.solved_at = result, time.time()
    if isinstance(result, Placement):
        state.explanation = explain_placement(request, src.snapshot, result)
        state.bind_s = 0.25
        state.bound_pods = replicas if bind else 0
        state.move(GangPhase.BOUND, time.time())
        if bind:
            src.bound.update({f"ml/{a.pod}": a.node for a in result.assignments})
    else:
        assert isinstance(result, Unschedulable)
        state.remedies = remedies(result.diagnosis)
        state.move(GangPhase.UNSCHEDULABLE, time.time())
    src.gangs[state.key] = state
    return state


def add_invalid(src: HandBuilt, name: str, error: str) -> GangRecord:
    state = GangRecord(GangKey("PodGroup", "ml", name), ObjectRef("PodGroup", "ml", name))
    state.move(GangPhase.INVALID, time.time())
    state.error, state.created = error, CREATED
    src.gangs[state.key] = state
    return state


class Reviews:
    """The API server's two answers from tables (Delegated's caching and the guard are
    the real ones); counts the questions that get past the cache."""

    def __init__(self, users: dict[str, Caller], grants: set[tuple[str, str, str]]) -> None:
        self.users, self.grants, self.asked, self.down = users, grants, 0, False

    def token_review(self, token: str) -> Caller | None:
        self.asked += 1
        if self.down:
            raise ReviewUnavailable("TokenReview: 503 ServiceUnavailable")
        return self.users.get(token)

    def access_review(self, caller: Caller, need: Need, verb: str) -> bool:
        self.asked += 1
        target = need.namespace if need.scope is Scope.NAMESPACE else need.path
        return (caller.user, verb, target) in self.grants
