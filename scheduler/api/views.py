"""From gang records and snapshots to the explain API's response models.

`ExplainSource` is what the routes need from a running scheduler; `scheduler.app.Runner`
provides it, and unit tests build one by hand from real solver results.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from scheduler.api.models import (
    DomainFree,
    DomainRoomOut,
    Exclusion,
    Explanation,
    GroupSummary,
    LevelChoiceOut,
    LevelDemand,
    LevelDomains,
    PreemptionOut,
    SliceOut,
    SolverStage,
    SolverSummary,
    Topology,
    VictimSetOut,
)
from scheduler.gang import GangKey, creation_epoch
from scheduler.metrics import SchedulerMetrics
from scheduler.state import GangPhase, GangRecord
from solver.explain import DomainRoom
from solver.preempt import VictimSet
from solver.reasons import by_count
from solver.result import Placement, SolverInfo, Unschedulable
from topology.quantity import format_units
from topology.snapshot import TopologySnapshot, render_path


class ExplainSource(Protocol):
    @property
    def gangs(self) -> Mapping[GangKey, GangRecord]: ...

    metrics: SchedulerMetrics

    def topology_snapshot(self) -> TopologySnapshot: ...

    def pod_nodes(self, keys: Iterable[str]) -> dict[str, str]:
        """pod key -> node it is bound to in the API server's view ("" if unbound)."""
        ...

    def readiness(self) -> tuple[bool, bool]:
        """(caches synced, may bind)."""
        ...


def _age(created: str) -> float | None:
    when = creation_epoch(created)
    return None if when is None else round(time.time() - when, 1)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def summary(record: GangRecord) -> GroupSummary:
    key = record.key
    return GroupSummary(namespace=key.namespace, name=key.name, kind=key.kind,
                        source=record.source, state=record.phase.value, size=record.size,
                        min_member=record.min_member, bound=record.bound_pods,
                        created=record.created, age_s=_age(record.created))


def _solver(info: SolverInfo) -> SolverSummary:
    return SolverSummary(algorithm=info.algorithm, status=info.status,
                         solve_s=round(info.solve_s, 4),
                         stages=[SolverStage(objective=o, value=v, status=s)
                                 for o, v, s in info.stages], note=info.note)


def detail(state: GangRecord, source: ExplainSource) -> dict[str, Any]:
    """A GroupDetail as plain JSON-ready data: a 4,096-pod gang is 4,096 pod entries, and
    building them as dicts (serialised by orjson) keeps the route far inside its 100 ms
    budget. The route still publishes GroupDetail as its schema, and the schema fuzz test
    checks every reply against it."""
    result = state.result
    pods: list[dict[str, Any]] = []
    unplaced: list[str] = []
    metrics = None
    reason = ""
    if isinstance(result, Placement):
        namespace = state.key.namespace
        keys = [f"{namespace}/{a.pod}" for a in result.assignments]
        bound_to = source.pod_nodes(keys)
        pods = [{"pod": a.pod, "rank": a.rank, "node": a.node, "domain": a.domain,
                 "bound": bound_to.get(key) == a.node}
                for a, key in zip(result.assignments, keys, strict=True)]
        unplaced = list(result.unplaced)
        m = result.metrics
        metrics = {"domains_used": m.domains_used, "lower_bound": m.lower_bound,
                   "ring_hops": m.ring_hops, "max_distance": m.max_distance}
    elif isinstance(result, Unschedulable):
        reason = result.reason
    if state.phase is GangPhase.INVALID:
        reason = state.error
    return {
        **summary(state).model_dump(),
        "pods": pods, "unplaced": unplaced, "metrics": metrics,
        "solver": _solver(result.solver).model_dump() if result else None,
        "solve_s": round(result.solver.solve_s, 4) if result else None,
        "bind_s": round(state.bind_s, 4) if isinstance(result, Placement) else None,
        "reason": reason,
        "constraints": [{"kind": c.kind.value, "level": c.level, "annotation": c.key,
                         "source": c.source} for c in state.constraints],
        "gates": dict(state.gates),
        "transitions": [{"state": s.value, "at": _iso(t)} for s, t in list(state.transitions)],
    }


def _room(room: DomainRoom) -> DomainRoomOut:
    return DomainRoomOut(domain=room.domain, fits=room.fits, placed=room.placed,
                         leftover=room.leftover)


def _victims(chosen: VictimSet) -> VictimSetOut:
    cost = chosen.cost
    return VictimSetOut(victims=[c.name for c in chosen.victims],
                        highest_priority=cost.priority, count=cost.victims,
                        accelerators=cost.accelerators, pods=cost.pods)


def _preemption(state: GangRecord) -> PreemptionOut | None:
    flight = state.preemption
    if flight is None:
        return None
    return PreemptionOut(started=_iso(flight.at), status=flight.status,
                         solve_s=round(flight.solve_s, 4), chosen=_victims(flight.chosen),
                         runner_up=_victims(flight.runner_up) if flight.runner_up else None,
                         refused=list(flight.refused))


def explanation(state: GangRecord) -> Explanation:
    key = state.key
    base: dict[str, Any] = {"namespace": key.namespace, "name": key.name, "kind": key.kind,
                            "state": state.phase.value, "preemption": _preemption(state)}
    result = state.result
    if state.phase is GangPhase.INVALID:
        return Explanation(**base, verdict="invalid", summary=state.error,
                           remedies=["fix the field named above; nothing was placed"])
    if state.phase is GangPhase.GATED:
        gated = max(state.gates.values(), default=0)
        gates = ", ".join(f"{gate} ({count} member(s))" for gate, count
                          in sorted(state.gates.items()))
        return Explanation(**base, verdict="waiting",
                           summary=f"waiting for scheduling gates to be removed: {gates}; "
                                   f"{state.size - gated} of {state.size} members "
                                   f"ungated, minMember {state.min_member}",
                           remedies=[f"the controller that set {gate} removes it when the "
                                     f"pod may be scheduled (e.g. Kueue on admission)"
                                     for gate in sorted(state.gates)])
    if state.phase is GangPhase.WAITING and state.waiting_for:
        return Explanation(**base, verdict="waiting", summary=state.waiting_for)
    if state.phase is GangPhase.WAITING or result is None:
        return Explanation(**base, verdict="waiting",
                           summary=f"waiting for members: minMember {state.min_member}, "
                                   f"{state.pending_pods} pending, {state.bound_pods} bound, "
                                   f"{state.finished_pods} finished")
    if state.phase is GangPhase.PREEMPTING and state.preemption is not None:
        flight = state.preemption
        return Explanation(**base, verdict="preempting",
                           summary=f"evicted {len(flight.victims)} pod(s) of "
                                   f"{len(flight.chosen.victims)} victim(s) "
                                   f"({flight.chosen.cost.render()}); room held until they "
                                   f"are gone")
    if isinstance(result, Unschedulable):
        d = result.diagnosis
        return Explanation(
            **base, verdict="pending", summary=result.reason, code=d.code.value, shape=d.shape,
            demand=d.demand, cluster_fits=d.cluster_fits, total_nodes=d.total_nodes,
            levels_demand=[LevelDemand(level=lf.level, demand=lf.demand,
                                       best_domain=lf.best_domain, best_fits=lf.best_fits)
                           for lf in d.levels],
            excluded=[Exclusion(reason=r.render(), nodes=n) for r, n in by_count(d.excluded)],
            remedies=list(state.remedies),
            warnings=([f"{d.unlabelled_nodes} node(s) lack topology labels"]
                      if d.unlabelled_nodes else []) + list(d.notes))
    if state.phase is not GangPhase.BOUND:
        # Binding, or some binds failed and the rest are being placed next to them.
        verdict = "repairing" if state.phase is GangPhase.REPAIRING else "binding"
        return Explanation(**base, verdict=verdict,
                           summary=f"{state.bound_pods} of {state.size} members bound; "
                                   f"{state.phase.value}")
    m = result.metrics
    levels: list[LevelChoiceOut] = []
    warnings: list[str] = []
    slices: list[SliceOut] = []
    if state.explanation is not None:
        slices = [SliceOut(name=sl.name, level=sl.level, domain=sl.domain, pods=sl.pods)
                  for sl in state.explanation.slices]
        levels = [LevelChoiceOut(level=lc.level, used=lc.used, lower_bound=lc.lower_bound,
                                 why=lc.why, chosen=[_room(r) for r in lc.chosen],
                                 runners_up=[_room(r) for r in lc.runners_up])
                  for lc in state.explanation.levels]
        warnings = list(state.explanation.warnings)
    text = (f"{len(result.assignments)} pods placed ({result.solver.algorithm} "
            f"{result.solver.status}); domains used {m.domains_used}, lower bound "
            f"{m.lower_bound}; ring hops {m.ring_hops}, max distance {m.max_distance}")
    return Explanation(**base, verdict="placed", summary=text, levels=levels,
                       slices=slices, warnings=warnings)


def topology(snapshot: TopologySnapshot, level: str | None, prefix: str,
             limit: int) -> Topology:
    tree = snapshot.tree
    out: list[LevelDomains] = []
    for index, key in enumerate(tree.levels):
        if level is not None and key != level:
            continue
        count = tree.domain_count(index)
        nodes = np.bincount(tree.domain_of[index], minlength=count)
        paths = [render_path(p) for p in tree.paths[index]]
        wanted = [d for d in range(count) if paths[d].startswith(prefix)]
        free = {r: tree.per_domain(index, snapshot.free[:, i])
                for i, r in enumerate(snapshot.resources)}
        domains = [DomainFree(domain=paths[d], nodes=int(nodes[d]),
                              free={r: format_units(r, max(0, int(v[d])))
                                    for r, v in free.items()})
                   for d in wanted[:limit]]
        out.append(LevelDomains(level=key, domains=domains, total_domains=len(wanted),
                                truncated=len(wanted) > limit))
    return Topology(levels=out, nodes=len(tree.nodes), unlabelled_nodes=len(tree.unlabelled))
