"""The detailed CP-SAT model, for heterogeneous gangs (several pod shapes).

Single-shape gangs, the common case, use the smaller model in `solver.cpsat.folded`. This
one never has a variable per pod or per node either. Its data, per candidate domain:
capacity per shape (clipped to demand); per bottom domain and shape, how many nodes fit
1, 2, ... k pods (capacity classes). Its variables:

    used[level][d]    bool  the gang touches domain d
    pods[b][s]        int   pods of shape s in bottom domain b
    nodes[b][s][k]    int   nodes of class k used for shape s in b (only when some node
                            fits more than one pod: for whole-node pods nodes == pods)

Constraints, one `_add_*` function each: demand met exactly; a bottom domain holds pods
only if used and within its capacity; a used domain's parent is used and a used parent
has a used child; knapsack covers per level (sum of chosen capacities >= demand, which
makes the LP bound equal the per-level lower bound); the required level uses one domain.

Objective, lexicographic (docs/design.md, "The objective"), solved in stages
(`solver.cpsat.stages`): fewest domains
at level 0, then level 1, ..., then fewest nodes, then best fit (least total capacity in
the chosen domains and nodes). In the model each node serves one shape.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from solver.cpsat.common import CpsatResult, add_tree_links
from solver.cpsat.stages import Stage, run_stages
from solver.instance import NODE_LEVEL, Instance
from solver.plan import NodePlan
from solver.request import SolverConfig


@dataclass
class _Vars:
    """Variables keyed by (level, domain) and (bottom domain, shape[, class])."""

    used: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    pods: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    nodes: dict[tuple[int, int, int], cp_model.IntVar] = field(default_factory=dict)
    classes: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    """classes[b, s] = {pods per node k: number of such nodes in b}."""

    def level_count(self, level: int) -> cp_model.LinearExpr:
        return sum(var for (lvl, _), var in self.used.items() if lvl == level)  # type: ignore[return-value]


def _capacity_classes(instance: Instance, bottom: int) -> dict[tuple[int, int], dict[int, int]]:
    tree = instance.snapshot.tree
    classes: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    domain_of = tree.domain_of[bottom]
    for shape, need in enumerate(instance.demand):
        caps = np.minimum(instance.capacity[:, shape], need)
        live = np.flatnonzero(caps > 0)
        if len(live) == 0:
            continue
        pairs, counts = np.unique(np.stack([domain_of[live], caps[live]], axis=1), axis=0,
                                  return_counts=True)
        for (domain, per_node), count in zip(pairs.tolist(), counts.tolist(), strict=True):
            classes[domain, shape][per_node] = count
    return classes


def _add_variables(model: cp_model.CpModel, instance: Instance) -> _Vars:
    tree = instance.snapshot.tree
    bottom = tree.depth - 1
    v = _Vars(classes=_capacity_classes(instance, bottom))
    for level in range(tree.depth):
        for domain in instance.candidates(level).tolist():
            v.used[level, domain] = model.new_bool_var(f"used_{level}_{domain}")
    for (domain, shape), classes in v.classes.items():
        cap = int(instance.domain_capacity[bottom][domain, shape])
        v.pods[domain, shape] = model.new_int_var(0, cap, f"pods_{domain}_{shape}")
        if max(classes) > 1:
            for per_node, count in classes.items():
                v.nodes[domain, shape, per_node] = model.new_int_var(
                    0, min(count, instance.demand[shape]), f"nodes_{domain}_{shape}_{per_node}")
    return v


def _add_demand(model: cp_model.CpModel, instance: Instance, v: _Vars) -> None:
    for shape, need in enumerate(instance.demand):
        model.add(sum(var for (_, s), var in v.pods.items() if s == shape) == need)


def _add_bottom_capacity(model: cp_model.CpModel, instance: Instance, v: _Vars) -> None:
    bottom = instance.snapshot.tree.depth - 1
    by_domain: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    for (domain, shape), pods in v.pods.items():
        by_domain[domain].append(pods)
        cap = int(instance.domain_capacity[bottom][domain, shape])
        model.add(pods <= cap * v.used[bottom, domain])
        classes = v.classes[domain, shape]
        if max(classes) > 1:
            chosen = [(k, v.nodes[domain, shape, k]) for k in classes]
            model.add(pods <= sum(k * var for k, var in chosen))
            model.add(sum(var for _, var in chosen) <= pods)  # every chosen node hosts a pod
    for domain, pods_vars in by_domain.items():
        model.add(v.used[bottom, domain] <= sum(pods_vars))
    if instance.shapes > 1:
        # Each node serves one shape in the model; the joint node budget per domain holds.
        tree = instance.snapshot.tree
        live = np.flatnonzero(instance.capacity.sum(axis=1) > 0)
        per_domain = np.bincount(tree.domain_of[bottom][live], minlength=tree.domain_count(bottom))
        for domain in by_domain:
            terms = [v.nodes.get((domain, s, k)) for s in range(instance.shapes)
                     for k in v.classes.get((domain, s), {})]
            unit = [v.pods[domain, s] for s in range(instance.shapes)
                    if (domain, s) in v.pods and max(v.classes[domain, s]) == 1]
            model.add(sum(t for t in terms if t is not None) + sum(unit)
                      <= int(per_domain[domain]))


def _add_covers(model: cp_model.CpModel, instance: Instance, v: _Vars) -> None:
    for level in range(instance.snapshot.tree.depth):
        for shape, need in enumerate(instance.demand):
            terms = [(int(instance.domain_capacity[level][d, shape]), var)
                     for (lvl, d), var in v.used.items() if lvl == level]
            model.add(sum(cap * var for cap, var in terms if cap > 0) >= need)


def _pods_under(instance: Instance, v: _Vars, level: int, shape: int
                ) -> dict[int, list[cp_model.IntVar]]:
    """Pods variables of `shape` per domain of `level` (summed over its bottom domains)."""
    tree = instance.snapshot.tree
    bottom = tree.depth - 1
    under: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    for (domain, s), var in v.pods.items():
        if s != shape:
            continue
        ancestor = domain
        for lvl in range(bottom, level, -1):
            ancestor = int(tree.parent_of[lvl][ancestor])
        under[ancestor].append(var)
    return under


def _add_caps(model: cp_model.CpModel, instance: Instance, v: _Vars) -> None:
    """Caps above the bottom level (the bottom's are in the pods variables' bounds)."""
    bottom = instance.snapshot.tree.depth - 1
    for shape in range(instance.shapes):
        for level, hi in instance.caps_of(shape).items():
            if level < bottom:
                for domain, terms in _pods_under(instance, v, level, shape).items():
                    model.add(sum(terms) <= int(hi[domain]))


def _add_rising(model: cp_model.CpModel, instance: Instance, v: _Vars
                ) -> list[cp_model.IntVar]:
    """Each gang pod sees the others as placed: in every domain that receives pods,
    `existing + placed <= m + maxSkew`, where m is at most the smallest
    `existing + placed` over the eligible domains (the minimum, which may rise)."""
    minima = []
    for index, spread in enumerate(instance.rising):
        need = instance.demand[spread.shape]
        top = int(spread.existing.max(initial=0)) + need
        low = model.new_int_var(0, top, f"spread_min_{index}")
        minima.append(low)
        under = _pods_under(instance, v, spread.level, spread.shape)
        for domain in np.flatnonzero(spread.eligible).tolist():
            placed = sum(under.get(domain, []))
            existing = int(spread.existing[domain])
            model.add(low <= existing + placed)
            if domain in under:
                model.add(existing + placed <= low + spread.max_skew).only_enforce_if(
                    v.used[spread.level, domain])
    return minima


def _add_required(model: cp_model.CpModel, instance: Instance, v: _Vars) -> None:
    if instance.required is not None:
        model.add(v.level_count(instance.required) == 1)


def _node_count(v: _Vars) -> tuple[tuple[int, cp_model.IntVar], ...]:
    terms: list[tuple[int, cp_model.IntVar]] = []
    for (domain, shape), pods in v.pods.items():
        if max(v.classes[domain, shape]) > 1:
            terms.extend((1, v.nodes[domain, shape, k]) for k in v.classes[domain, shape])
        else:
            terms.append((1, pods))
    return tuple(terms)


def _fit_waste(instance: Instance, v: _Vars) -> tuple[tuple[int, cp_model.IntVar], ...]:
    """Total capacity of the chosen domains and nodes: at fixed counts, smaller means the
    gang fills tighter holes and leaves the big ones whole (Slurm's block best fit)."""
    terms = [(int(instance.domain_free[level][domain].sum()), var)
             for (level, domain), var in v.used.items()]
    terms.extend((per_node, var) for (_, _, per_node), var in v.nodes.items())
    return tuple(terms)


def _incumbent(instance: Instance, v: _Vars, plan: NodePlan) -> dict[int, int]:
    tree = instance.snapshot.tree
    bottom = tree.depth - 1
    used: set[tuple[int, int]] = set()
    pods: dict[tuple[int, int], int] = defaultdict(int)
    nodes: dict[tuple[int, int, int], int] = defaultdict(int)
    for shape, placed in enumerate(plan.per_shape):
        for node, count in placed.items():
            for level in range(tree.depth):
                used.add((level, int(tree.domain_of[level][node])))
            domain = int(tree.domain_of[bottom][node])
            pods[domain, shape] += count
            per_node = int(min(instance.capacity[node, shape], instance.demand[shape]))
            nodes[domain, shape, per_node] += 1
    values = {var.index: int(key in used) for key, var in v.used.items()}
    values.update({var.index: pods.get(key, 0) for key, var in v.pods.items()})
    values.update({var.index: nodes.get(node_key, 0) for node_key, var in v.nodes.items()})
    return values


def _extract(instance: Instance, v: _Vars, values: dict[int, int]) -> NodePlan:
    """Chosen counts -> nodes: in each bottom domain, the chosen number of nodes of each
    class, in tree order, each filled to capacity before the next."""
    tree = instance.snapshot.tree
    bottom = tree.depth - 1
    per_shape: list[dict[int, int]] = [{} for _ in instance.demand]
    taken: set[int] = set()
    for (domain, shape), pods_var in sorted(v.pods.items()):
        remaining = values[pods_var.index]
        if remaining == 0:
            continue
        caps = np.minimum(instance.capacity[:, shape], instance.demand[shape])
        span = tree.members(bottom, domain)
        classes = v.classes[domain, shape]
        quota = ({k: values[v.nodes[domain, shape, k].index] for k in classes}
                 if max(classes) > 1 else {1: remaining})
        for per_node in sorted(quota, reverse=True):
            want = quota[per_node]
            for node in span:
                if want == 0 or remaining == 0:
                    break
                if node in taken or int(caps[node]) != per_node:
                    continue
                count = min(per_node, remaining)
                per_shape[shape][node] = count
                taken.add(node)
                remaining -= count
                want -= 1
    return NodePlan(tuple(per_shape))


def solve_detailed(instance: Instance, config: SolverConfig, hint: NodePlan | None,
                   deadline: float, bounds: dict[str, int | None]) -> CpsatResult:
    started = time.perf_counter()
    model = cp_model.CpModel()
    v = _add_variables(model, instance)
    _add_demand(model, instance, v)
    _add_bottom_capacity(model, instance, v)
    tree = instance.snapshot.tree
    add_tree_links(model, tree.parent_of, v.used, tree.depth - 1)
    _add_covers(model, instance, v)
    _add_required(model, instance, v)
    _add_caps(model, instance, v)
    minima = _add_rising(model, instance, v)
    model_s = time.perf_counter() - started
    levels = instance.snapshot.tree.levels
    stages = [Stage(key, tuple((1, var) for (lvl, _), var in v.used.items() if lvl == level),
                    bounds.get(key))
              for level, key in enumerate(levels)]
    stages.append(Stage("nodes", _node_count(v), bounds.get(NODE_LEVEL)))
    stages.append(Stage("best_fit", _fit_waste(instance, v)))
    variables = [*v.used.values(), *v.pods.values(), *v.nodes.values(), *minima]
    incumbent = _incumbent(instance, v, hint) if hint is not None else None
    result = run_stages(model, stages, variables, incumbent, config, deadline)
    plan = _extract(instance, v, result.values) if result.values is not None else None
    return CpsatResult(plan, result.status, result.stages, model_s,
                       time.perf_counter() - started)
