"""The solver's entry point: gang request + topology snapshot -> Placement | Unschedulable.

Phases (each a function below):
1. validate the request against the snapshot's levels;
2. filter: per shape, how many pods fit on each node, and why other nodes are excluded;
3. size: all members, or when they cannot all fit the most that can (never < minMember);
4. instance: capacities per domain, candidates, per-level lower bounds;
5. place: greedy BestFit (hint and fallback), then CP-SAT unless greedy was asked for;
6. assign ranks to the chosen nodes, measure, explain.
All-or-nothing: a result either places the sized count of members or none.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from solver.assign import assign, chosen_domains, measure
from solver.cpsat import solve_cpsat
from solver.filters import ShapeFit, fit_shape, matches_node_rules
from solver.greedy import greedy_plan
from solver.instance import build_instance, lower_bounds
from solver.reasons import FitCode
from solver.request import GangRequest, Member, SolverConfig
from solver.result import (
    Diagnosis,
    LevelFit,
    Placement,
    SolverInfo,
    Unschedulable,
    describe_requests,
)
from topology.snapshot import TopologySnapshot, render_path


def solve(request: GangRequest, snapshot: TopologySnapshot,
          config: SolverConfig | None = None) -> Placement | Unschedulable:
    config = config or SolverConfig()
    started = time.perf_counter()
    tree = snapshot.tree
    request.validate(tree.levels)
    required = tree.levels.index(request.required_level) if request.required_level else None
    fits = tuple(fit_shape(snapshot, shape) for shape in request.shapes)
    members = request.ordered_members()
    count = _placeable_count(snapshot, request, fits, members, required)
    if count is None:
        return _unschedulable(snapshot, request, fits, members, required, config,
                              time.perf_counter() - started)
    chosen_members = members[:count]
    demand = tuple(sum(1 for m in chosen_members if m.shape == s)
                   for s in range(len(request.shapes)))
    instance = build_instance(snapshot, demand, fits, required)
    bounds = lower_bounds(instance)
    hint = greedy_plan(instance)
    if config.algorithm == "greedy":
        plan, info = hint, SolverInfo("greedy", "FEASIBLE" if hint else "INFEASIBLE",
                                      time.perf_counter() - started)
    else:
        result = solve_cpsat(instance, config, hint, bounds, started)
        plan = result.plan
        info = SolverInfo("cpsat", result.status, time.perf_counter() - started,
                          result.model_s, result.stages)
        if plan is None and hint is not None and config.greedy_fallback:
            plan = hint
            info = SolverInfo("greedy", "FEASIBLE", time.perf_counter() - started,
                              note=f"CP-SAT {result.status} within "
                                   f"{config.time_limit_s}s; greedy placement used")
    if plan is None or sum(plan.placed()) != count:
        return _unschedulable(snapshot, request, fits, members, required, config,
                              time.perf_counter() - started, info)
    assignments = assign(tree, plan, chosen_members)
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
    )


def _fits_in_one_domain(snapshot: TopologySnapshot, fits: tuple[ShapeFit, ...],
                        demand: list[int], level: int) -> bool:
    tree = snapshot.tree
    ok = np.ones(tree.domain_count(level), dtype=bool)
    for fit, need in zip(fits, demand, strict=True):
        if need:
            ok &= tree.per_domain(level, fit.capacity) >= need
    return bool(ok.any())


def _placeable_count(snapshot: TopologySnapshot, request: GangRequest,
                     fits: tuple[ShapeFit, ...], members: tuple[Member, ...],
                     required: int | None) -> int | None:
    """All members if they can fit, else the longest rank prefix >= minMember that can
    (capacity check per shape; the placers confirm). None when not even minMember fits."""
    def feasible(k: int) -> bool:
        demand = [0] * len(request.shapes)
        for member in members[:k]:
            demand[member.shape] += 1
        if required is not None:
            return _fits_in_one_domain(snapshot, fits, demand, required)
        return all(int(fit.capacity.sum()) >= need for fit, need in zip(fits, demand,
                                                                         strict=True))

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


def _unschedulable(snapshot: TopologySnapshot, request: GangRequest,
                   fits: tuple[ShapeFit, ...], members: tuple[Member, ...],
                   required: int | None, config: SolverConfig, elapsed: float,
                   info: SolverInfo | None = None) -> Unschedulable:
    """Explains the shape that limits most: demand against the best domain per level."""
    tree = snapshot.tree
    need_all = Counter(m.shape for m in members)
    need_min = Counter(m.shape for m in members[: request.min_member])
    limiting = max(need_min, key=lambda s: (need_min[s] - int(fits[s].capacity.sum()), -s))
    fit = fits[limiting]
    demand = need_min[limiting]
    levels = []
    for level, key in enumerate(tree.levels):
        sums = tree.per_domain(level, fit.capacity)
        best = int(np.argmax(sums)) if len(sums) else 0
        levels.append(LevelFit(key, render_path(tree.paths[level][best]) if len(sums) else "",
                               int(sums[best]) if len(sums) else 0, demand))
    # Would it fit on an empty cluster? If not even then, retrying cannot help.
    empty_capacity = _empty_capacity(snapshot, request, limiting, required)
    code = FitCode.UNRESOLVABLE if empty_capacity < demand else FitCode.UNSCHEDULABLE
    diagnosis = Diagnosis(
        code=code,
        demand=demand,
        shape=describe_requests(dict(request.shapes[limiting].requests)),
        total_nodes=len(tree.nodes),
        cluster_fits=int(fit.capacity.sum()),
        levels=tuple(levels),
        excluded=dict(fit.excluded),
        required_level=request.required_level,
        min_member=request.min_member if request.min_member < sum(need_all.values()) else None,
        unlabelled_nodes=len(tree.unlabelled),
    )
    solver = info or SolverInfo(config.algorithm, "INFEASIBLE", elapsed)
    return Unschedulable(request.name, diagnosis, solver)


def _empty_capacity(snapshot: TopologySnapshot, request: GangRequest, shape: int,
                    required: int | None) -> int:
    """Pods of `shape` the cluster would hold with nothing else running on it (ignoring
    taints and readiness, which change; honouring selectors and affinity, which do not)."""
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
    if required is None:
        return int(per_node.sum())
    sums = tree.per_domain(required, per_node)
    return int(sums.max()) if len(sums) else 0
