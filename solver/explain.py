"""Why a gang landed where it did, and what would have to change for a pending one to fit.

Pure and computed once, from the snapshot the solver saw, when the gang is solved; the
scheduler keeps the result with the gang's record for the explain API. For a placement,
each level lists the chosen domains (pods placed, room left) against the runner-up
domains the solver passed over, and says why in one sentence: fewest domains first, then
the tightest fit (docs/design.md, "The objective"). For an Unschedulable, `remedies`
turns the Diagnosis into the changes that would let the gang fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solver.filters import fit_shape
from solver.reasons import ExclusionCode, FitCode, by_count
from solver.request import GangRequest
from solver.result import Diagnosis, Placement
from topology.presets import short_level
from topology.snapshot import DomainTree, IntArray, TopologySnapshot, render_path

RUNNERS_UP = 3


@dataclass(frozen=True)
class DomainRoom:
    domain: str
    fits: int
    """Pods of this gang the domain could hold when the solver looked (summed over the
    gang's shapes, each counted as if alone)."""
    placed: int

    @property
    def leftover(self) -> int:
        return self.fits - self.placed


@dataclass(frozen=True)
class LevelChoice:
    level: str
    used: int
    lower_bound: int | None
    chosen: tuple[DomainRoom, ...]
    runners_up: tuple[DomainRoom, ...]
    """The roomiest domains not chosen, among the chosen domains' siblings."""
    why: str


@dataclass(frozen=True)
class PlacementExplanation:
    levels: tuple[LevelChoice, ...]
    warnings: tuple[str, ...]
    slices: tuple[SliceDomain, ...] = ()
    """Per slice, the domain of its level it sits in."""


@dataclass(frozen=True)
class SliceDomain:
    name: str
    level: str
    domain: str
    pods: int


def _gang_fits(snapshot: TopologySnapshot, request: GangRequest,
               demand: dict[int, int]) -> list[IntArray]:
    """Per shape placed, pods that fit on each node."""
    return [fit_shape(snapshot, request.shapes[shape]).capacity for shape in sorted(demand)]


def explain_placement(request: GangRequest, snapshot: TopologySnapshot,
                      placement: Placement) -> PlacementExplanation:
    tree = snapshot.tree
    shape_of = {m.pod: m.shape for m in request.members}
    demand: dict[int, int] = {}
    for a in placement.assignments:
        demand[shape_of[a.pod]] = demand.get(shape_of[a.pod], 0) + 1
    per_shape = _gang_fits(snapshot, request, demand)
    placed_nodes = np.fromiter((tree.index[a.node] for a in placement.assignments),
                               dtype=np.int64, count=len(placement.assignments))
    total = len(placement.assignments)
    levels = []
    for level, key in enumerate(tree.levels):
        count = tree.domain_count(level)
        fits = np.zeros(count, dtype=np.int64)
        for capacity in per_shape:
            fits += tree.per_domain(level, capacity)
        placed = np.bincount(tree.domain_of[level][placed_nodes], minlength=count)
        chosen_ids = np.flatnonzero(placed)
        chosen = tuple(DomainRoom(render_path(tree.paths[level][d]), int(fits[d]),
                                  int(placed[d])) for d in chosen_ids)
        runners = _runners_up(tree.parent_of[level], chosen_ids, fits, level)
        runners_up = tuple(DomainRoom(render_path(tree.paths[level][d]), int(fits[d]), 0)
                           for d in runners)
        bound = placement.metrics.lower_bound.get(key)
        levels.append(LevelChoice(key, len(chosen), bound, chosen, runners_up,
                                  _why(key, level, total, chosen, runners_up, bound)))
    return PlacementExplanation(tuple(levels), _warnings(snapshot, placement),
                                _slices(tree, request, placement))


def _slices(tree: DomainTree, request: GangRequest,
            placement: Placement) -> tuple[SliceDomain, ...]:
    if not request.subgroups:
        return ()
    key = request.subgroups[0].level
    level = tree.levels.index(key) if key in tree.levels else None
    node_of = {a.pod: a.node for a in placement.assignments}
    out = []
    for group in request.subgroups:
        nodes = [node_of[p] for p in group.members if p in node_of]
        if not nodes:
            continue
        first = tree.index[nodes[0]]
        domain = (render_path(tree.paths[level][int(tree.domain_of[level][first])])
                  if level is not None else nodes[0])
        out.append(SliceDomain(group.name, key, domain, len(nodes)))
    return tuple(out)


def _runners_up(parents: IntArray, chosen: IntArray, fits: IntArray, level: int) -> list[int]:
    """Unchosen domains with room, under the same parents as the chosen ones (the top
    level: all), roomiest first, ties in tree order."""
    candidates = fits > 0
    candidates[chosen] = False
    if level > 0:
        candidates &= np.isin(parents, parents[chosen])
    ids = np.flatnonzero(candidates)
    order = np.lexsort((ids, -fits[ids]))
    return [int(d) for d in ids[order][:RUNNERS_UP]]


def _why(level: str, level_index: int, total: int, chosen: tuple[DomainRoom, ...],
         runners_up: tuple[DomainRoom, ...], bound: int | None) -> str:
    name = short_level(level)
    used = len(chosen)
    plural = "domain" if used == 1 else "domains"
    if bound is None:
        head = f"{used} {name} {plural}, next to the gang's running members"
    elif used <= bound:
        head = f"{used} {name} {plural}: the fewest that can hold {total} pods"
    else:
        head = (f"{used} {name} {plural} (lower bound {bound}, which ignores the levels "
                f"above): the fewest within the domains chosen above")
    if not runners_up:
        where = "no other domain" if level_index == 0 else "no sibling domain"
        return f"{head}; {where} had room"
    best = runners_up[0]
    if used == 1:
        only = chosen[0]
        if best.fits >= only.placed:
            return (f"{head}; tightest fit: {only.domain} leaves {only.leftover} free, "
                    f"{best.domain} would leave {best.fits - only.placed}")
        return f"{head}; the next roomiest, {best.domain}, fits only {best.fits}"
    smallest = min(chosen, key=lambda room: room.fits)
    if best.fits > smallest.fits:
        return (f"{head}; best fit: the roomier {best.domain} (fits {best.fits}) stays whole "
                f"for larger gangs")
    return f"{head}; the roomiest remaining domain, {best.domain}, fits only {best.fits}"


def _warnings(snapshot: TopologySnapshot, placement: Placement) -> tuple[str, ...]:
    tree = snapshot.tree
    out = []
    unlabelled = set(tree.unlabelled)
    used = sorted({a.node for a in placement.assignments} & unlabelled)
    if used:
        out.append(f"{len(used)} chosen node(s) lack topology labels and count as their own "
                   f"domain: {', '.join(used[:5])}{' ...' if len(used) > 5 else ''}")
    elif unlabelled:
        out.append(f"{len(unlabelled)} node(s) in the cluster lack topology labels for "
                   f"{', '.join(tree.levels)}; they sit in <unlabelled:NODE> domains")
    if placement.preferred_level is not None and not placement.preferred_met:
        out.append(f"preferred topology {placement.preferred_level} not met: the gang spans "
                   f"{placement.metrics.domains_used.get(placement.preferred_level)} domains")
    if placement.unplaced:
        out.append(f"{len(placement.unplaced)} member(s) left pending: only minMember or more "
                   f"could be placed now")
    out.extend(placement.notes)
    return tuple(out)


_EXCLUSION_REMEDIES = {
    ExclusionCode.UNTOLERATED_TAINT: "tolerate the taint to admit {count} node(s): {reason}",
    ExclusionCode.NODE_AFFINITY: "widen nodeSelector/affinity to admit {count} node(s)",
    ExclusionCode.NODE_UNSCHEDULABLE: "uncordon {count} node(s)",
    ExclusionCode.NODE_NOT_READY: "{count} node(s) are NotReady",
    ExclusionCode.NODE_PORTS: "free the host port on {count} node(s), or drop hostPort",
    ExclusionCode.POD_AFFINITY: "the pods the affinity asks for are not near {count} "
                                "node(s): relax the podAffinity term or its topologyKey",
    ExclusionCode.POD_ANTI_AFFINITY: "pods the anti-affinity repels are on or near {count} "
                                     "node(s): relax the podAntiAffinity term",
    ExclusionCode.EXISTING_ANTI_AFFINITY: "pods on or near {count} node(s) repel this one "
                                          "with their own anti-affinity",
    ExclusionCode.SPREAD: "{count} node(s) are in domains already over maxSkew: raise "
                          "maxSkew or use whenUnsatisfiable: ScheduleAnyway",
    ExclusionCode.SPREAD_LABEL: "{count} node(s) lack the spread constraint's topologyKey",
    ExclusionCode.VOLUME_NODE_AFFINITY: "the bound volume can be used on none of {count} "
                                        "node(s): its node affinity pins it elsewhere",
    ExclusionCode.VOLUME_UNAVAILABLE: "no volume for the claim can be had on {count} "
                                      "node(s): add static volumes there or a provisioner",
    ExclusionCode.VOLUME_ZONE: "the bound volume's zone excludes {count} node(s)",
    ExclusionCode.VOLUME_LIMIT: "{count} node(s) attach their most CSI volumes already",
}
"""What to change to admit nodes excluded for a reason; resources are covered by the
demand remedies above."""
_REFUSAL_REMEDIES = {
    ExclusionCode.UNBOUND_IMMEDIATE_CLAIM: "bind the claim (its class binds Immediately: "
                                           "a provisioner or a matching volume must serve it)",
    ExclusionCode.CLAIM_NOT_FOUND: "create the PersistentVolumeClaim the pod names",
    ExclusionCode.CLAIM_DELETING: "the claim is being deleted: recreate it",
    ExclusionCode.CLAIM_LOST: "the claim's volume is gone: restore it or recreate the claim",
    ExclusionCode.CLAIM_IN_USE: "a ReadWriteOncePod claim is in use by another pod",
    ExclusionCode.RESOURCE_CLAIMS: "schedule pods with DRA claims with kube-scheduler "
                                   "(schedulerName default-scheduler)",
    ExclusionCode.IN_TREE_VOLUME: "use a CSI volume, or schedule the pod with kube-scheduler",
    ExclusionCode.UNSUPPORTED_GANG_RULE: "express the rule on kubernetes.io/hostname or a "
                                         "topology level, or place these pods one by one",
    ExclusionCode.SLICE_HOME_FULL: "free room in the slice's domain, or delete the slice's "
                                   "running members so the whole slice is placed again",
}


def remedies(diagnosis: Diagnosis) -> tuple[str, ...]:
    """The changes that would let a pending gang fit, most direct first."""
    out = [_REFUSAL_REMEDIES[r.code] for r in diagnosis.refusals if r.code in _REFUSAL_REMEDIES]
    if diagnosis.refusals:
        return tuple(out)
    shape = diagnosis.shape
    if diagnosis.code is FitCode.UNRESOLVABLE:
        out.append("as asked, the gang could not fit even on an empty cluster: shrink it, "
                   "relax its constraints, or add nodes")
    required = diagnosis.limiting()
    if required is not None and required.best_fits < required.demand:
        out.append(f"free room for {required.demand - required.best_fits} more pods of {shape} "
                   f"in one {short_level(required.level)} domain (the best, "
                   f"{required.best_domain or 'none'}, holds {required.best_fits})")
        out.append(f"or relax the required topology {required.level} to a higher level")
    elif diagnosis.cluster_fits < diagnosis.demand:
        out.append(f"free room for {diagnosis.demand - diagnosis.cluster_fits} more pods of "
                   f"{shape} in the cluster")
        if diagnosis.cluster_fits > 0:
            out.append(f"or lower minMember to {diagnosis.cluster_fits} or fewer")
    for reason, count in by_count(diagnosis.excluded):
        remedy = _EXCLUSION_REMEDIES.get(reason.code)
        if remedy is not None:
            out.append(remedy.format(count=count, reason=reason.render()))
    if diagnosis.unlabelled_nodes:
        out.append(f"{diagnosis.unlabelled_nodes} node(s) lack topology labels")
    return tuple(out)
