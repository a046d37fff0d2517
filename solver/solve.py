"""The solver's entry point: gang request + topology snapshot -> Placement | Unschedulable.

Phases (each a function below):
1. validate the request against the snapshot's levels;
2. filter: per shape, how many pods fit on each node, and why other nodes are excluded
   (`solver.filters`, with the placed pods' rules from `solver.interpod`);
3. rules among the gang's own pods (`solver.gangrules`): caps per node or domain, a
   co-location, or a named refusal;
4. size: all members, or when they cannot all fit the most that can (never < minMember);
5. instance: capacities per domain (clipped by the caps), candidates, lower bounds;
6. place: greedy BestFit (hint and fallback), then CP-SAT unless greedy was asked for;
   a spread constraint whose minimum must rise goes to the detailed model;
7. assign ranks to the chosen nodes, measure.
All-or-nothing: a result either places the sized count of members or none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from solver.assign import assign, chosen_domains, measure
from solver.capacity import LevelCaps, SliceRule, alone, level_sums, merge_caps, slice_caps
from solver.cpsat import solve_cpsat
from solver.filters import ShapeFit, fit_shape, matches_node_rules
from solver.gangrules import NODE, GangRules, gang_rules
from solver.greedy import greedy_plan
from solver.instance import build_instance, lower_bounds
from solver.plan import NodePlan
from solver.reasons import Exclusion, ExclusionCode, FitCode
from solver.request import GangRequest, Member, SolverConfig
from solver.result import (
    Diagnosis,
    LevelFit,
    Placement,
    SliceFit,
    SolverInfo,
    Unschedulable,
    describe_requests,
)
from solver.slices import (
    PlaceInside,
    balance_targets,
    domain_mask,
    place_slices,
    slice_level,
    slices_whole,
)
from topology.presets import HOSTNAME
from topology.snapshot import TopologySnapshot, render_path


@dataclass(frozen=True)
class _Scope:
    """What one attempt works on: the fits (node caps applied), the level caps, the
    required level, and whether a spread minimum may rise."""

    fits: tuple[ShapeFit, ...]
    caps: tuple[LevelCaps, ...]
    required: int | None
    rules: GangRules
    rising: bool = False
    slices: SliceRule | None = None
    """Uniform slices, for a single-shape scope (`_uniform`)."""


def solve(request: GangRequest, snapshot: TopologySnapshot,
          config: SolverConfig | None = None) -> Placement | Unschedulable:
    config = config or SolverConfig()
    started = time.perf_counter()
    tree = snapshot.tree
    request.validate(tree.levels)
    required = tree.levels.index(request.required_level) if request.required_level else None
    fits = tuple(fit_shape(snapshot, shape) for shape in request.shapes)
    members = request.ordered_members()
    refused = tuple(dict.fromkeys(r for fit in fits for r in fit.refusals))
    rules = gang_rules(snapshot, request, fits) if not refused else GangRules()
    if rules.refusal is not None:
        refused = (rules.refusal,)
    scope = _scope(snapshot, fits, rules, required)
    if refused:
        return _unschedulable(snapshot, request, scope, members, config,
                              time.perf_counter() - started, refusals=refused)
    if request.subgroups:
        return _sliced(snapshot, request, scope, members, config, started)
    if rules.colocate_node:
        return _on_one_node(snapshot, request, scope, members, config, started)
    if rules.groups is not None:
        return _in_one_group(snapshot, request, scope, members, config, started)
    result = _place(snapshot, request, scope, members, config, started)
    if isinstance(result, Unschedulable) and rules.rising:
        risen = _place(snapshot, request, _scope(snapshot, fits, rules, required, rising=True),
                       members, config, started)
        if isinstance(risen, Placement):
            return risen
    return result


def _scope(snapshot: TopologySnapshot, fits: tuple[ShapeFit, ...], rules: GangRules,
           required: int | None, rising: bool = False) -> _Scope:
    """Node caps go into the fits; level caps per shape; the deeper required level. With
    `rising`, spread caps give way to the spread constraints themselves (their minimum
    is the model's to choose)."""
    capped = list(fits)
    per_shape: list[list[tuple[int, np.ndarray]]] = [[] for _ in fits]
    for cap in rules.caps:
        if rising and not cap.static and cap.level != NODE:
            continue  # the rising constraint replaces it (node-level ones stay capped)
        for shape in cap.shapes:
            if cap.level == NODE:
                fit = capped[shape]
                capacity = np.minimum(fit.capacity, cap.hi)
                capacity.flags.writeable = False
                capped[shape] = replace(fit, capacity=capacity)
            else:
                per_shape[shape].append((cap.level, cap.hi))
    caps = tuple(merge_caps(found) for found in per_shape)
    if rules.colocate_level is not None:
        required = max(required, rules.colocate_level) if required is not None \
            else rules.colocate_level
    return _Scope(tuple(capped), caps, required, rules, rising)


def _sums(snapshot: TopologySnapshot, scope: _Scope, shape: int) -> list[np.ndarray]:
    return level_sums(snapshot.tree, scope.fits[shape].capacity, scope.caps[shape])


def _place(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
           members: tuple[Member, ...], config: SolverConfig, started: float,
           ) -> Placement | Unschedulable:
    count = _placeable_count(snapshot, request, scope, members)
    if count is None:
        return _unschedulable(snapshot, request, scope, members, config,
                              time.perf_counter() - started)
    chosen_members = members[:count]
    demand = tuple(sum(1 for m in chosen_members if m.shape == s)
                   for s in range(len(request.shapes)))
    rising = tuple(r for r in scope.rules.rising if r.level != NODE) if scope.rising else ()
    instance = build_instance(snapshot, demand, scope.fits, scope.required, scope.caps,
                              rising, scope.slices)
    bounds = lower_bounds(instance)
    # With a rising minimum the greedy plan may break the spread: no hint, no fallback.
    hint = greedy_plan(instance) if not rising else None
    if config.algorithm == "greedy" and not rising:
        plan, info = hint, SolverInfo("greedy", "FEASIBLE" if hint else "INFEASIBLE",
                                      time.perf_counter() - started)
    else:
        result = solve_cpsat(instance, config, hint, bounds, started,
                             detailed=bool(rising))
        plan = result.plan
        info = SolverInfo("cpsat", result.status, time.perf_counter() - started,
                          result.model_s, result.stages)
        if plan is None and hint is not None and config.greedy_fallback:
            plan = hint
            info = SolverInfo("greedy", "FEASIBLE", time.perf_counter() - started,
                              note=f"CP-SAT {result.status} within "
                                   f"{config.time_limit_s}s; greedy placement used")
    if plan is None or sum(plan.placed()) != count:
        return _unschedulable(snapshot, request, scope, members, config,
                              time.perf_counter() - started, info)
    return _placement(snapshot, request, scope, members, count, plan, bounds, info)


def _placement(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
               members: tuple[Member, ...], count: int, plan: NodePlan,
               bounds: dict[str, int | None], info: SolverInfo) -> Placement:
    tree = snapshot.tree
    assignments = assign(tree, plan, members[:count])
    metrics = measure(tree, assignments, bounds)
    preferred_met = None
    if request.preferred_level is not None:
        preferred_met = metrics.domains_used[request.preferred_level] == 1
    return Placement(
        gang=request.name,
        assignments=assignments,
        metrics=metrics,
        solver=info,
        chosen=chosen_domains(tree, sorted(plan.nodes())),
        unplaced=tuple(m.pod for m in members[count:]),
        preferred_level=request.preferred_level,
        preferred_met=preferred_met,
        notes=scope.rules.notes,
    )


def _on_one_node(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
                 members: tuple[Member, ...], config: SolverConfig, started: float,
                 ) -> Placement | Unschedulable:
    """Affinity of the gang to itself on kubernetes.io/hostname: every pod on one node.
    Any node that holds them all is optimal at every level; the tightest such node (the
    least room left, then tree order) is best fit."""
    tree = snapshot.tree
    if len(request.shapes) > 1:
        return _unschedulable(snapshot, request, scope, members, config,
                              time.perf_counter() - started, refusals=(_refusal(
                                  "pod affinity among a gang's pods of several templates on "
                                  "kubernetes.io/hostname: a node serves one template"),))
    room = scope.fits[0].capacity
    for count in (len(members), request.min_member):
        holding = np.flatnonzero(room >= count)  # one node sits in one domain of each level
        if len(holding):
            best = int(holding[np.lexsort((holding, room[holding]))[0]])
            plan = NodePlan(({best: count},))
            info = SolverInfo("cpsat", "OPTIMAL", time.perf_counter() - started,
                              stages=(("nodes", 1, "OPTIMAL (enumerated)"),),
                              note="pod affinity to itself on kubernetes.io/hostname: one "
                                   "node holds the gang")
            bounds: dict[str, int | None] = dict.fromkeys((*tree.levels,), 1)
            return _placement(snapshot, request, scope, members, count, plan, bounds, info)
    return _unschedulable(snapshot, request, scope, members, config,
                          time.perf_counter() - started)


def _in_one_group(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
                  members: tuple[Member, ...], config: SolverConfig, started: float,
                  ) -> Placement | Unschedulable:
    """Affinity of the gang to itself on a key that is no topology level: one group of
    nodes sharing its value must hold the gang. Each group is solved on its own; the
    lexicographically best placement (domains per level, then nodes) wins."""
    assert scope.rules.groups is not None
    best: Placement | None = None
    last: Placement | Unschedulable | None = None
    for mask in scope.rules.groups:
        fits = tuple(replace(fit, capacity=np.where(mask, fit.capacity, 0))
                     for fit in scope.fits)
        attempt = _place(snapshot, request, replace(scope, fits=fits), members, config,
                         started)
        last = attempt
        if isinstance(attempt, Placement) and (best is None or _order(attempt) < _order(best)):
            best = attempt
    if best is not None:
        return best
    if isinstance(last, Unschedulable):
        return last
    return _unschedulable(snapshot, request, scope, members, config,
                          time.perf_counter() - started)


def _sliced(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
            members: tuple[Member, ...], config: SolverConfig, started: float,
            ) -> Placement | Unschedulable:
    """Sub-groups each inside one domain of their level (`solver.slices`)."""
    tree = snapshot.tree
    key = request.subgroups[0].level
    exclusive = request.subgroups[0].exclusive
    level = slice_level(tree, request)
    if level is None:
        return _unschedulable(snapshot, request, scope, members, config,
                              time.perf_counter() - started, refusals=(_refusal(
                                  f"sub-groups each inside one domain of {key}: honoured "
                                  f"only on {HOSTNAME} or a topology level "
                                  f"({', '.join(tree.levels)})"),))
    required = scope.required
    if required is not None and level != NODE and required >= level:
        # One domain at or below the slice level holds the gang: its slices share it.
        if exclusive and len(request.subgroups) > 1:
            return _unschedulable(snapshot, request, scope, members, config,
                                  time.perf_counter() - started, refusals=(_refusal(
                                      f"{len(request.subgroups)} exclusive sub-groups at {key} "
                                      f"cannot share the one {tree.levels[required]} domain "
                                      f"the gang requires"),))
        return _place(snapshot, replace(request, subgroups=()), scope, members, config,
                      started)

    def inside(sub: GangRequest, mask: np.ndarray, at: int | None,
               seconds: float) -> Placement | Unschedulable:
        fits = tuple(replace(fit, capacity=np.where(mask, fit.capacity, 0))
                     for fit in scope.fits)
        return _place(snapshot, sub, replace(scope, fits=fits,
                                             required=at if at is not None else required),
                      sub.ordered_members(), replace(config, time_limit_s=seconds),
                      time.perf_counter())

    result: Placement | None = None
    uniform = _uniform(snapshot, request, scope, members, level)
    if uniform is not None:
        merged_request, merged_scope = uniform
        found = _place(snapshot, merged_request, merged_scope, members_of(merged_request),
                       config, started)
        if isinstance(found, Placement) and slices_whole(tree, request, level, found):
            result = replace(found, solver=replace(found.solver, note=(
                f"{len(request.subgroups)} slice(s) of {len(request.subgroups[0].members)} "
                f"at {key}{' (exclusive)' if exclusive else ''}, as whole-slice multiples")))
        # Otherwise the two phases below say what does not fit, slice by slice.
    if result is None:
        outcome = place_slices(snapshot, request, level, [fit.capacity for fit in scope.fits],
                               scope.caps, required, config, started, inside)
        if outcome.failure is not None or outcome.inside is not None:
            return _unschedulable(snapshot, request, scope, members, config,
                                  time.perf_counter() - started, outcome.info,
                                  slices=outcome.failure)
        result = _merged(snapshot, request, scope, outcome.pieces, outcome.info, started)
    if request.slice_balance:
        result = _balanced(snapshot, request, scope, level, result, inside, started)
    return result


def _merged(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
            pieces: Sequence[Placement], info: SolverInfo, started: float) -> Placement:
    """One placement of the whole gang from per-domain pieces."""
    tree = snapshot.tree
    assignments = tuple(sorted((a for piece in pieces for a in piece.assignments),
                               key=lambda a: (a.rank, a.pod)))
    demand = tuple(sum(1 for m in request.members if m.shape == s)
                   for s in range(len(request.shapes)))
    bounds = lower_bounds(build_instance(snapshot, demand, scope.fits, scope.required,
                                         scope.caps))
    nodes = sorted(tree.index[a.node] for a in assignments)
    metrics = measure(tree, assignments, bounds)
    preferred_met = None
    if request.preferred_level is not None:
        preferred_met = metrics.domains_used[request.preferred_level] == 1
    return Placement(gang=request.name, assignments=assignments, metrics=metrics,
                     solver=replace(info, solve_s=time.perf_counter() - started),
                     chosen=chosen_domains(tree, nodes), preferred_level=request.preferred_level,
                     preferred_met=preferred_met, notes=scope.rules.notes)


def _balanced(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope, level: int,
              placement: Placement, inside: PlaceInside, started: float) -> Placement:
    """`slice-balance: even`: the same slice domains (so no domain more at any level),
    each holding floor or ceil of slices / domains; when those domains cannot, the
    tighter placement stays and a note says so. Below the slice level it may use more
    domains: that is the trade."""
    tree = snapshot.tree
    plan = balance_targets(tree, request, level, placement,
                           [fit.capacity for fit in scope.fits], scope.caps)
    if isinstance(plan, str):
        return replace(placement, notes=(*placement.notes, plan))
    if plan is None:
        return placement  # already even
    by_name = {m.pod: m for m in request.members}
    pieces = []
    seconds = max(0.05, 0.5 / max(1, len(plan)))
    for domain, groups in plan:
        members = tuple(by_name[p] for g in groups for p in g.members)
        sub = replace(request, members=members, min_member=len(members), subgroups=(),
                      slice_balance=False)
        piece = inside(sub, domain_mask(tree, level, domain), level, seconds)
        if isinstance(piece, Unschedulable):
            return replace(placement, notes=(*placement.notes, (
                "slice-balance even: a balanced share did not fit its domain; the tighter "
                "placement is kept")))
        pieces.append(piece)
    counts = sorted(len(groups) for _, groups in plan)
    info = replace(placement.solver, note=(f"{placement.solver.note}; " if placement.solver.note
                                           else "") + f"slices balanced {counts[0]}-{counts[-1]}"
                                                      f" per domain over {len(plan)} domains")
    return _merged(snapshot, request, scope, pieces, info, started)


def members_of(request: GangRequest) -> tuple[Member, ...]:
    return request.ordered_members()


def _uniform(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
             members: tuple[Member, ...], level: int) -> tuple[GangRequest, _Scope] | None:
    """Slices that the single-shape model places exactly: one level that is not the node,
    every slice the same size and a block of consecutive ranks, every shape the same room
    on every node (the JobSet leader's and its followers' shapes differ only in labels
    and in rules the slices already keep). Then the gang is one shape whose slice-level
    domains hold whole-slice multiples (`capacity.SliceRule`)."""
    if level == NODE or scope.rising or scope.rules.rising:
        return None
    size = len(request.subgroups[0].members)
    if any(len(g.members) != size for g in request.subgroups):
        return None
    blocks = {frozenset(m.pod for m in members[i:i + size])
              for i in range(0, len(members), size)}
    if blocks != {frozenset(g.members) for g in request.subgroups}:
        return None
    present = sorted({m.shape for m in members})
    first = present[0]
    for shape in present[1:]:
        if not np.array_equal(scope.fits[shape].capacity, scope.fits[first].capacity):
            return None
        mine, theirs = scope.caps[shape], scope.caps[first]
        if mine.keys() != theirs.keys() or not all(np.array_equal(mine[k], theirs[k])
                                                   for k in mine):
            return None
    rule = SliceRule(level, size, request.subgroups[0].exclusive)
    fit = scope.fits[first]
    caps = merge_caps([*scope.caps[first].items(), (level, slice_caps(
        snapshot.tree, level_sums(snapshot.tree, fit.capacity, scope.caps[first]), rule))])
    merged = replace(request, shapes=(request.shapes[first],),
                     members=tuple(replace(m, shape=0) for m in request.members),
                     min_member=len(request.members), subgroups=())
    return merged, replace(scope, fits=(fit,), caps=(caps,), slices=rule)


def _order(placement: Placement) -> tuple[int, ...]:
    used = placement.metrics.domains_used
    return tuple(used.values())


def _refusal(text: str) -> Exclusion:
    return Exclusion(ExclusionCode.UNSUPPORTED_GANG_RULE, text)


def _fits_in_one_domain(snapshot: TopologySnapshot, scope: _Scope, demand: list[int],
                        level: int) -> bool:
    tree = snapshot.tree
    ok = np.ones(tree.domain_count(level), dtype=bool)
    for shape, need in enumerate(demand):
        if need:
            ok &= alone(tree, _sums(snapshot, scope, shape))[level] >= need
    return bool(ok.any())


def _placeable_count(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
                     members: tuple[Member, ...]) -> int | None:
    """All members if they can fit, else the longest rank prefix >= minMember that can
    (capacity check per shape; the placers confirm). None when not even minMember fits."""
    def feasible(k: int) -> bool:
        demand = [0] * len(request.shapes)
        for member in members[:k]:
            demand[member.shape] += 1
        if scope.required is not None:
            return _fits_in_one_domain(snapshot, scope, demand, scope.required)
        return all(_total(snapshot, scope, s) >= need for s, need in enumerate(demand))

    if feasible(len(members)):
        return len(members)
    low, high = request.min_member, len(members) - 1
    if low > high or not feasible(low):
        return None
    while low < high:  # largest feasible prefix; feasibility is monotone in k
        middle = (low + high + 1) // 2
        if feasible(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _total(snapshot: TopologySnapshot, scope: _Scope, shape: int) -> int:
    sums = _sums(snapshot, scope, shape)
    return int(sums[0].sum()) if sums else int(scope.fits[shape].capacity.sum())


def _unschedulable(snapshot: TopologySnapshot, request: GangRequest, scope: _Scope,
                   members: tuple[Member, ...], config: SolverConfig, elapsed: float,
                   info: SolverInfo | None = None,
                   refusals: Sequence[Exclusion] = (),
                   slices: SliceFit | None = None) -> Unschedulable:
    """Explains the shape that limits most: demand against the best domain per level."""
    tree = snapshot.tree
    fits = scope.fits
    need_all = Counter(m.shape for m in members)
    need_min = Counter(m.shape for m in members[: request.min_member])
    limiting = max(need_min, key=lambda s: (need_min[s] - _total(snapshot, scope, s), -s))
    fit = fits[limiting]
    demand = need_min[limiting]
    sums_by_level = alone(tree, _sums(snapshot, scope, limiting))
    levels = []
    for level, key in enumerate(tree.levels):
        sums = sums_by_level[level]
        best = int(np.argmax(sums)) if len(sums) else 0
        levels.append(LevelFit(key, render_path(tree.paths[level][best]) if len(sums) else "",
                               int(sums[best]) if len(sums) else 0, demand))
    # Would it fit on an empty cluster? If not even then, retrying cannot help.
    empty_capacity = _empty_capacity(snapshot, request, limiting, scope)
    code = (FitCode.UNRESOLVABLE if refusals or empty_capacity < demand
            else FitCode.UNSCHEDULABLE)
    diagnosis = Diagnosis(
        code=code,
        demand=demand,
        shape=describe_requests(dict(request.shapes[limiting].requests)),
        total_nodes=len(tree.nodes),
        cluster_fits=_total(snapshot, scope, limiting),
        levels=tuple(levels),
        excluded=dict(fit.excluded),
        required_level=tree.levels[scope.required] if scope.required is not None else None,
        min_member=request.min_member if request.min_member < sum(need_all.values()) else None,
        unlabelled_nodes=len(tree.unlabelled),
        refusals=tuple(refusals),
        notes=scope.rules.notes,
        capped=tuple(dict.fromkeys(cap.why for cap in scope.rules.caps)),
        slices=slices,
    )
    solver = info or SolverInfo(config.algorithm, "INFEASIBLE", elapsed)
    return Unschedulable(request.name, diagnosis, solver)


def _empty_capacity(snapshot: TopologySnapshot, request: GangRequest, shape: int,
                    scope: _Scope) -> int:
    """Pods of `shape` the cluster would hold with nothing else running on it (ignoring
    taints and readiness, which change; honouring selectors, affinity and the gang's own
    anti-affinity and host-port caps, which do not)."""
    tree = snapshot.tree
    wanted = request.shapes[shape]
    per_node = np.full(len(tree.nodes), np.iinfo(np.int64).max, dtype=np.int64)
    any_request = False
    for resource, amount in wanted.requests.items():
        if amount <= 0:
            continue
        any_request = True
        per_node = np.minimum(per_node, tree.allocatable(resource) // amount)
    if not any_request:
        return 0
    if wanted.node_selector or wanted.affinity:
        for i, node in enumerate(tree.nodes):
            if not matches_node_rules(wanted, node):
                per_node[i] = 0
    static = [cap for cap in scope.rules.caps if cap.static and shape in cap.shapes]
    for cap in static:
        if cap.level == NODE:
            per_node = np.minimum(per_node, cap.hi)
    caps = merge_caps([(cap.level, cap.hi) for cap in static if cap.level != NODE])
    sums = level_sums(tree, per_node, caps)
    if scope.required is None:
        return int(sums[0].sum()) if sums else int(per_node.sum())
    at = alone(tree, sums)[scope.required]
    return int(at.max()) if len(at) else 0
