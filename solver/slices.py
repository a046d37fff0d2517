"""Slices: sub-groups that must each sit inside one domain of one level (the slice level
L), placed with the whole gang in two phases over the same aggregates a gang uses.

Phase A, which domains. Each sub-group is one *unit* of its class: sub-groups with the
same pods per shape and the same room in every L domain are interchangeable, so a
JobSet of 64 identical Jobs is one class of 64 units, not 64 variables per domain. A
domain of L holds `room // size` units of a class (at most 1 when exclusive), where room
is what the domain can hold of the class's pods with a node taking no more of them than
the least it can take of any of its shapes (so any mix of them fits). On the tree cut at
L, whose "nodes" are the L domains, the units are a gang like any other and the same
placers solve it: fewest domains at each level above L, then fewest L domains, then best
fit. A cut node serves one class (the detailed model's rule): exactly right when slices
are exclusive, conservative for non-exclusive slices of different classes.

Phase B, where inside. Each chosen L domain receives its sub-groups (in rank order, so
neighbouring slices sit in neighbouring domains) and the whole-gang placer places their
pods inside it (`place_inside`, the caller's). The result is optimal, lexicographically,
at and above L; below L, optimal within each chosen domain.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from solver.capacity import LevelCaps, alone, level_sums, merge_caps
from solver.cpsat import solve_cpsat
from solver.gangrules import NODE, level_of_key
from solver.greedy import greedy_plan
from solver.instance import instance_of, lower_bounds
from solver.plan import NodePlan
from solver.request import GangRequest, SolverConfig, SubGroup
from solver.result import Placement, SliceFit, SolverInfo, Unschedulable
from topology.presets import HOSTNAME
from topology.records import NodeRecord
from topology.snapshot import DomainTree, IntArray, TopologySnapshot, render_path

ROOT = "<cluster>"
"""The one domain a cut at the top level is given, so the placers see one level."""

PlaceInside = Callable[[GangRequest, np.ndarray, int | None, float],
                       Placement | Unschedulable]
"""(sub-request, node mask, required level index, seconds) -> its placement."""


@dataclass(frozen=True)
class SliceClass:
    """Interchangeable sub-groups: the same pods per shape, the same room per domain."""

    shapes: tuple[tuple[int, int], ...]
    """(shape, pods of it) in one sub-group."""
    groups: tuple[SubGroup, ...]
    room: IntArray
    """Per L domain (per node when L is the node), pods of the class it can hold."""

    @property
    def size(self) -> int:
        return sum(count for _, count in self.shapes)

    def units(self, exclusive: bool) -> IntArray:
        """Per domain, how many of the class's sub-groups it holds."""
        units = self.room // self.size
        return np.minimum(units, 1) if exclusive else units


@dataclass(frozen=True)
class SliceOutcome:
    """Phase B's placements (one per chosen domain), or why there are none."""

    pieces: tuple[Placement, ...]
    info: SolverInfo
    failure: SliceFit | None = None
    inside: Unschedulable | None = None
    """A domain Phase A chose whose slices Phase B could not place (not expected)."""


def slice_level(tree: DomainTree, request: GangRequest) -> int | None:
    """The tree level of the sub-groups' key (NODE for a node), None if it is none."""
    return level_of_key(tree, request.subgroups[0].level)


def classes(tree: DomainTree, request: GangRequest, level: int,
            node_capacity: Sequence[IntArray], caps: Sequence[LevelCaps]) -> list[SliceClass]:
    """The request's sub-groups grouped into classes (in order of their first rank)."""
    shape_of = {m.pod: m.shape for m in request.members}
    rank_of = {m.pod: m.rank for m in request.members}
    exclusive = request.subgroups[0].exclusive
    found: dict[tuple[object, ...], SliceClass] = {}
    rooms: dict[tuple[tuple[int, int], ...], IntArray] = {}
    for group in sorted(request.subgroups, key=lambda g: min(rank_of[p] for p in g.members)):
        shapes = tuple(sorted(Counter(shape_of[p] for p in group.members).items()))
        if shapes not in rooms:
            rooms[shapes] = _room(tree, level, [s for s, _ in shapes], node_capacity, caps)
        single = SliceClass(shapes, (group,), rooms[shapes])
        key = (shapes, single.units(exclusive).tobytes())
        known = found.get(key)
        found[key] = single if known is None else replace(known, groups=(*known.groups, group))
    return list(found.values())


def _room(tree: DomainTree, level: int, shapes: list[int], node_capacity: Sequence[IntArray],
          caps: Sequence[LevelCaps]) -> IntArray:
    merged = np.minimum.reduce([node_capacity[s] for s in shapes])
    if level == NODE:
        return np.asarray(merged, dtype=np.int64)
    merged_caps = merge_caps([(lvl, hi) for s in shapes for lvl, hi in caps[s].items()])
    return alone(tree, level_sums(tree, merged, merged_caps))[level]


def cut_tree(tree: DomainTree, level: int) -> DomainTree:
    """The tree cut at `level`: its levels above, its level-`level` domains as the nodes
    (a cut at the top gets one ROOT level). At NODE the tree itself."""
    if level == NODE:
        return tree
    paths = tree.paths[level]
    nodes = tuple(NodeRecord(name=render_path(path), labels={}, allocatable={})
                  for path in paths)
    count = len(paths)
    if level == 0:
        zeros = np.zeros(count, dtype=np.int64)
        zeros.flags.writeable = False
        return DomainTree((ROOT,), nodes, (((ROOT,),),), (zeros,),
                          (np.zeros(1, dtype=np.int64),),
                          {node.name: i for i, node in enumerate(nodes)}, ())
    domain_of: list[IntArray] = []
    ids = np.arange(count, dtype=np.int64)
    for lvl in range(level - 1, -1, -1):
        ids = tree.parent_of[lvl + 1][ids]
        domain_of.insert(0, ids)
    for array in domain_of:
        array.flags.writeable = False
    return DomainTree(tree.levels[:level], nodes, tree.paths[:level], tuple(domain_of),
                      tree.parent_of[:level], {node.name: i for i, node in enumerate(nodes)},
                      ())


def place_slices(snapshot: TopologySnapshot, request: GangRequest, level: int,
                 node_capacity: Sequence[IntArray], caps: Sequence[LevelCaps],
                 required: int | None, config: SolverConfig, started: float,
                 place_inside: PlaceInside) -> SliceOutcome:
    """Phase A on the cut tree, then Phase B in each chosen domain. `required`: a level
    above `level` whose one domain must hold the gang."""
    tree = snapshot.tree
    found = classes(tree, request, level, node_capacity, caps)
    cut = cut_tree(tree, level)
    units = np.stack([c.units(request.subgroups[0].exclusive) for c in found], axis=1)
    demand = tuple(len(c.groups) for c in found)
    cut_required = None if level == 0 else required  # at the top, ROOT holds everything
    empty = TopologySnapshot(tree=cut, resources=(), free=np.zeros((len(cut.nodes), 0),
                                                                    dtype=np.int64))
    instance = instance_of(empty, demand, units, cut_required)
    bounds = lower_bounds(instance)
    hint = greedy_plan(instance)
    shortfall = _shortfall(found, units, demand, request, tree, level)
    if shortfall is not None:
        return SliceOutcome((), SolverInfo("cpsat", "INFEASIBLE", time.perf_counter() - started),
                            shortfall)
    stages: tuple[tuple[str, int, str], ...] = ()
    if config.algorithm == "greedy":
        plan, status = hint, "FEASIBLE" if hint else "INFEASIBLE"
    else:
        phase_a = replace(config, time_limit_s=config.time_limit_s * 0.5)
        result = solve_cpsat(instance, phase_a, hint, bounds, time.perf_counter(),
                             detailed=len(found) > 1)
        plan, status, stages = result.plan, result.status, result.stages
        if plan is None and hint is not None and config.greedy_fallback:
            plan, status = hint, "FEASIBLE"
    if plan is None or tuple(plan.placed()) != demand:
        fit = SliceFit(_level_name(tree, level), sum(demand), found[0].size,
                       int((units.sum(axis=1) > 0).sum()), request.subgroups[0].exclusive)
        return SliceOutcome((), SolverInfo("cpsat", status or "INFEASIBLE",
                                           time.perf_counter() - started, stages=stages), fit)
    return _phase_b(snapshot, request, level, found, plan, status, stages, config, started,
                    place_inside)


def _level_name(tree: DomainTree, level: int) -> str:
    return HOSTNAME if level == NODE else tree.levels[level]


def _shortfall(found: list[SliceClass], units: IntArray, demand: tuple[int, ...],
               request: GangRequest, tree: DomainTree, level: int) -> SliceFit | None:
    """Fewer domains can hold a slice of a class than it has slices (even one each):
    named at once, before any search."""
    for column, group in enumerate(found):
        if int(units[:, column].sum()) < demand[column]:
            return SliceFit(_level_name(tree, level), demand[column], group.size,
                            int((units[:, column] > 0).sum()), request.subgroups[0].exclusive)
    return None


def _phase_b(snapshot: TopologySnapshot, request: GangRequest, level: int,
             found: list[SliceClass], plan: NodePlan, status: str,
             stages: tuple[tuple[str, int, str], ...], config: SolverConfig, started: float,
             place_inside: PlaceInside) -> SliceOutcome:
    tree = snapshot.tree
    by_name = {m.pod: m for m in request.members}
    # Sub-groups of each class, in rank order, fill that class's domains in tree order.
    inside: dict[int, list[SubGroup]] = {}
    for column, group in enumerate(found):
        queue = list(group.groups)
        for domain in sorted(plan.per_shape[column]):
            for _ in range(plan.per_shape[column][domain]):
                inside.setdefault(domain, []).append(queue.pop(0))
    pieces: list[Placement] = []
    statuses = []
    budget = max(0.05, config.time_limit_s * 0.5 - (time.perf_counter() - started))
    per_domain = max(0.02, budget / max(1, len(inside)))
    for domain in sorted(inside):
        members = tuple(by_name[p] for g in inside[domain] for p in g.members)
        sub = replace(request, name=f"{request.name}[{render_domain(tree, level, domain)}]",
                      members=members, min_member=len(members), subgroups=())
        mask = domain_mask(tree, level, domain)
        result = place_inside(sub, mask, None if level == NODE else level, per_domain)
        if isinstance(result, Unschedulable):
            info = SolverInfo("cpsat", "INFEASIBLE", time.perf_counter() - started,
                              stages=stages)
            return SliceOutcome((), info, inside=result)
        pieces.append(result)
        statuses.append(result.solver.status)
    inner = "OPTIMAL" if all(s.startswith("OPTIMAL") for s in statuses) else "FEASIBLE"
    overall = "OPTIMAL" if status.startswith("OPTIMAL") and inner == "OPTIMAL" else "FEASIBLE"
    key = _level_name(tree, level)
    shown = tuple(s for s in stages if s[0] != ROOT)
    info = SolverInfo("cpsat" if config.algorithm == "cpsat" else "greedy", overall,
                      time.perf_counter() - started, stages=(
                          *((f"slices:{name}", value, st) for name, value, st in shown),
                          (f"inside {key}", len(pieces), inner)),
                      note=f"{len(request.subgroups)} slice(s) at {key}"
                           f"{' (exclusive)' if request.subgroups[0].exclusive else ''}")
    return SliceOutcome(tuple(pieces), info)


def render_domain(tree: DomainTree, level: int, domain: int) -> str:
    if level == NODE:
        return tree.nodes[domain].name
    return render_path(tree.paths[level][domain])


def domain_mask(tree: DomainTree, level: int, domain: int) -> np.ndarray:
    mask = np.zeros(len(tree.nodes), dtype=bool)
    if level == NODE:
        mask[domain] = True
    else:
        span = tree.members(level, domain)
        mask[span.start:span.stop] = True
    return mask


def slices_whole(tree: DomainTree, request: GangRequest, level: int,
                 placement: Placement) -> bool:
    """Every sub-group inside one domain of `level`, and, when exclusive, no two in one."""
    node_of = {a.pod: tree.index[a.node] for a in placement.assignments}
    seen: set[int] = set()
    for group in request.subgroups:
        nodes = [node_of[p] for p in group.members if p in node_of]
        if len(nodes) != len(group.members):
            return False
        domains = {n if level == NODE else int(tree.domain_of[level][n]) for n in nodes}
        if len(domains) != 1:
            return False
        if request.subgroups[0].exclusive:
            if domains & seen:
                return False
            seen |= domains
    return True


def balance_targets(tree: DomainTree, request: GangRequest, level: int, placement: Placement,
                    node_capacity: Sequence[IntArray], caps: Sequence[LevelCaps]
                    ) -> list[tuple[int, list[SubGroup]]] | str | None:
    """For `slice-balance: even`: the placement's slice domains, each with floor or ceil
    of (slices / domains) slices (the roomiest take the ceilings), the slices in rank
    order over the domains in tree order. None when the placement is already even; a
    note (str) when these domains cannot hold an even share or the slices differ in
    size."""
    sizes = {len(g.members) for g in request.subgroups}
    if len(sizes) != 1:
        return "slice-balance even: slices of different sizes are not balanced"
    size = sizes.pop()
    node_of = {a.pod: tree.index[a.node] for a in placement.assignments}
    rank_of = {m.pod: m.rank for m in request.members}

    def domain(node: int) -> int:
        return node if level == NODE else int(tree.domain_of[level][node])

    groups = sorted(request.subgroups, key=lambda g: min(rank_of[p] for p in g.members))
    counts = Counter(domain(node_of[g.members[0]]) for g in groups)
    if max(counts.values()) - min(counts.values()) <= 1:
        return None
    shapes = sorted({m.shape for m in request.members})
    room = _room(tree, level, shapes, node_capacity, caps)
    domains = sorted(counts)
    low, extra = divmod(len(groups), len(domains))
    roomiest = sorted(domains, key=lambda d: (-int(room[d]), d))[:extra]
    targets = {d: low + (1 if d in roomiest else 0) for d in domains}
    if any(targets[d] * size > int(room[d]) for d in domains):
        return (f"slice-balance even: the {len(domains)} slice domains cannot hold "
                f"{low}-{low + (1 if extra else 0)} slices each; the tighter placement is kept")
    plan, queue = [], list(groups)
    for d in domains:
        plan.append((d, [queue.pop(0) for _ in range(targets[d])]))
    return plan
