"""CP-SAT for single-shape gangs: progressive deepening over the levels, with the bottom
level folded into its parents.

Stage l of the lexicographic objective (DESIGN §4) only needs levels 0..l: any choice of
level-l domains whose capacities hold the gang can be completed below, because a domain's
capacity is the sum of its children's. So each stage gets its own small model, over
*viable* domains only. After stage l is solved with optimum k_l, a level-l domain d is
viable only if it could belong to some k_l domains that hold the gang:

    cap(d) + (the k_l - 1 largest capacities among the other viable level-l domains) >= N

a necessary condition, so no lexicographically optimal placement is cut off; deeper
stages only look below viable domains. On a 100k-node fleet this shrinks the rack stage
from thousands of racks to the few hundred under the handful of viable layer-2 domains.

Racks are folded into their parent: how many racks a parent needs for p pods is the
shortest largest-first prefix of its racks reaching p; that prefix sum S(r) is concave,
so `pods <= S(racks)` is exactly the tangent lines
    pods[g] <= S(m) + cap(m+1) * (racks[g] - m)     at each breakpoint m,
one integer per parent instead of a boolean per rack, with a tight LP relaxation.

A stage whose incumbent (greedy, or the previous stage extended largest-first) already
meets the level's lower bound is proven by the bound and not searched. The last stage
minimises best fit (capacity of the chosen domains) with every count fixed; extraction
then picks, per parent, the rack subset of least capacity that holds its pods (exact,
`subsets`) and nodes inside racks largest-first with a best-fit last node.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from solver.cpsat import CpsatResult
from solver.greedy import pick
from solver.instance import NODE_LEVEL, Instance, cover_count
from solver.plan import NodePlan
from solver.request import SolverConfig
from solver.stages import PROVEN_BY_BOUND
from solver.subsets import best_fit_subset
from topology.snapshot import IntArray

PROVEN_BY_ENUMERATION = "OPTIMAL (enumerated)"
BEST_FIT_SHARE = 0.25
"""Share of the time limit the best-fit tie-break may use."""

Loads = list[dict[int, int]]
"""loads[level] = {domain: pods placed in it}: a placement seen at domain granularity."""


@dataclass
class _Model:
    model: cp_model.CpModel
    used: dict[tuple[int, int], cp_model.IntVar]
    pods: dict[int, cp_model.IntVar]
    """Pods per domain of the stage's deepest level (per rack parent in the rack stage)."""
    racks: dict[int, cp_model.IntVar]

    def count_terms(self, level: int) -> list[cp_model.IntVar]:
        return [var for (lvl, _), var in self.used.items() if lvl == level]


class _Deepening:
    def __init__(self, instance: Instance, config: SolverConfig, deadline: float,
                 bounds: dict[str, int | None]) -> None:
        self.instance, self.config, self.deadline, self.bounds = instance, config, deadline, bounds
        self.tree = instance.snapshot.tree
        self.need = instance.demand[0]
        self.bottom = self.tree.depth - 1
        self.caps: list[IntArray] = [instance.domain_capacity[level][:, 0]
                                     for level in range(self.tree.depth)]
        self.free: list[IntArray] = [instance.domain_free[level][:, 0]
                                     for level in range(self.tree.depth)]
        self.viable: list[IntArray] = []
        self.counts: list[int] = []

    # -- candidates ----------------------------------------------------------------
    def candidates(self, level: int) -> IntArray:
        ids = np.flatnonzero(self.caps[level] > 0)
        if level > 0:
            parents = self.tree.parent_of[level][ids]
            ids = ids[np.isin(parents, self.viable[level - 1])]
        return ids

    def anchor(self, level: int) -> int | None:
        """The deepest level above `level` where the gang uses exactly one domain: every
        domain the gang uses below it shares that one ancestor."""
        for upper in range(level - 1, -1, -1):
            if self.counts[upper] == 1:
                return upper
        return None

    def ancestors(self, level: int, ids: IntArray, upper: int) -> IntArray:
        out = ids
        for lvl in range(level, upper, -1):
            out = self.tree.parent_of[lvl][out]
        return out

    def prune(self, level: int, ids: IntArray, count: int) -> IntArray:
        """Keeps the domains that can belong to `count` domains holding the gang. The
        companions of a domain come from under the same anchor ancestor, when there is
        one (a necessary condition, so no optimal placement is cut off)."""
        if count <= 0 or len(ids) == 0:
            return ids
        upper = self.anchor(level)
        groups = (self.ancestors(level, ids, upper) if upper is not None
                  else np.zeros(len(ids), dtype=np.int64))
        keep = np.zeros(len(ids), dtype=bool)
        for group in np.unique(groups).tolist():
            inside = np.flatnonzero(groups == group)
            caps = self.caps[level][ids[inside]]
            top = np.sort(caps)[::-1][:count]
            # Best companions for d: the count-1 largest others. If d is itself among the
            # `count` largest, those are top minus d; otherwise the count-1 largest.
            with_companions = np.where(caps >= int(top[-1]), int(top.sum()),
                                       caps + int(top[: count - 1].sum()))
            keep[inside] = with_companions >= self.need
        return ids[keep]

    def bound_anchors(self, level: int, incumbent: int | None) -> None:
        """Drops anchor domains under which the stage at `level` cannot beat the
        incumbent: their own lower bound (fewest level-`level` domains inside them that
        hold the gang) is already worse. Branch-and-bound's pruning, done up front."""
        upper = self.anchor(level)
        if upper is None:
            return
        ids = self.candidates(level)
        groups = self.ancestors(level, ids, upper)
        kept = []
        for group in self.viable[upper].tolist():
            inside = ids[groups == group]
            bound = cover_count(self.caps[level][inside], self.need)
            if bound is not None and (incumbent is None or bound <= incumbent):
                kept.append(group)
        self.viable[upper] = np.asarray(kept, dtype=np.int64)
        for lvl in range(upper + 1, level):
            ids_l = self.viable[lvl]
            self.viable[lvl] = ids_l[np.isin(self.ancestors(lvl, ids_l, upper), kept)]

    # -- models --------------------------------------------------------------------
    def build(self, upto: int, rack_stage: bool) -> _Model:
        """Variables for viable domains of levels < upto and candidates at `upto` (or,
        in the rack stage, the rack parents with their folded rack curves)."""
        model = cp_model.CpModel()
        used: dict[tuple[int, int], cp_model.IntVar] = {}
        top_level = upto - 1 if rack_stage else upto
        for level in range(top_level + 1):
            ids = self.viable[level] if level < upto else self.candidates(level)
            for domain in ids.tolist():
                used[level, domain] = model.new_bool_var(f"u{level}_{domain}")
        pods: dict[int, cp_model.IntVar] = {}
        racks: dict[int, cp_model.IntVar] = {}
        if rack_stage:
            for group, members in self.rack_groups().items():
                caps_desc = sorted((cap for _, cap in members), reverse=True)
                capacity = min(sum(caps_desc), self.need)
                pods[group] = model.new_int_var(0, capacity, f"p{group}")
                racks[group] = model.new_int_var(0, min(len(members), self.need), f"r{group}")
                for m, prefix, slope in _tangents(caps_desc):
                    model.add(pods[group] <= prefix + slope * (racks[group] - m))
                model.add(racks[group] <= pods[group])
                if top_level >= 0:
                    flag = used[top_level, group]
                    model.add(pods[group] <= capacity * flag)
                    model.add(racks[group] >= flag)
            if self.instance.required == self.bottom:
                model.add(sum(racks.values()) == 1)
            bound = self.bounds.get(self.tree.levels[self.bottom])
            if bound:
                model.add(sum(racks.values()) >= bound)
        else:
            for (level, domain), flag in used.items():
                if level == upto:
                    cap = int(self.caps[level][domain])
                    pods[domain] = model.new_int_var(0, cap, f"p{domain}")
                    model.add(pods[domain] <= cap * flag)
                    model.add(pods[domain] >= flag)
        model.add(sum(pods.values()) == self.need)
        self._add_tree_links(model, used, top_level)
        for level in range(top_level + 1):
            model.add(sum(int(self.caps[level][d]) * var
                          for (lvl, d), var in used.items() if lvl == level) >= self.need)
            if level < len(self.counts):
                model.add(sum(var for (lvl, _), var in used.items() if lvl == level)
                          == self.counts[level])
        required = self.instance.required
        if required is not None and required <= top_level:
            model.add(sum(var for (lvl, _), var in used.items() if lvl == required) == 1)
        return _Model(model, used, pods, racks)

    def _add_tree_links(self, model: cp_model.CpModel, used: dict[tuple[int, int],
                        cp_model.IntVar], top_level: int) -> None:
        for level in range(1, top_level + 1):
            children: dict[int, list[cp_model.IntVar]] = defaultdict(list)
            for (lvl, domain), var in used.items():
                if lvl == level:
                    parent = int(self.tree.parent_of[level][domain])
                    model.add_implication(var, used[level - 1, parent])
                    children[parent].append(var)
            for (lvl, domain), var in used.items():
                if lvl == level - 1:
                    model.add_bool_or(children[domain]).only_enforce_if(var)

    def single_parent_racks(self) -> int | None:
        """When the gang uses one domain at the racks' parent level (or the tree has one
        level), the rack stage needs no search: the fewest racks is the best over the
        viable parents of their largest-first prefix; parents that need more racks are
        no longer viable. Returns that count, or None when the shortcut does not apply."""
        group_level = self.bottom - 1
        if group_level >= 0 and self.counts[group_level] != 1:
            return None
        needed: dict[int, int] = {}
        for group, members in self.rack_groups().items():
            count = cover_count(np.asarray([cap for _, cap in members], dtype=np.int64),
                                self.need)
            if count is not None:
                needed[group] = count
        if not needed:
            return None
        best = min(needed.values())
        if group_level >= 0:
            keep = np.asarray(sorted(g for g, c in needed.items() if c == best), dtype=np.int64)
            self.viable[group_level] = keep
        return best

    def narrow(self, upper: int, anchor: int, level: int) -> None:
        """Restricts the viable sets to one anchor domain and its descendants."""
        self.viable[upper] = np.asarray([anchor], dtype=np.int64)
        for lvl in range(upper + 1, min(level, len(self.viable))):
            ids = self.viable[lvl]
            self.viable[lvl] = ids[self.ancestors(lvl, ids, upper) == anchor]

    def rack_groups(self) -> dict[int, list[tuple[int, int]]]:
        """Rack parent -> its candidate racks as (rack, capacity), in tree order."""
        groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
        racks = self.candidates(self.bottom)
        parents = (self.tree.parent_of[self.bottom][racks] if self.bottom > 0
                   else np.zeros(len(racks), dtype=np.int64))
        for rack, parent in zip(racks.tolist(), parents.tolist(), strict=True):
            groups[parent].append((rack, int(self.caps[self.bottom][rack])))
        return groups

    # -- incumbents ----------------------------------------------------------------
    def loads_from_plan(self, plan: NodePlan) -> Loads:
        loads: Loads = [defaultdict(int) for _ in range(self.tree.depth)]
        for node, count in plan.per_shape[0].items():
            for level in range(self.tree.depth):
                loads[level][int(self.tree.domain_of[level][node])] += count
        return loads

    def extend(self, loads: Loads, from_level: int) -> Loads:
        """Completes loads below `from_level` largest-first with a best-fit last child."""
        out = [dict(loads[level]) if level <= from_level else {}
               for level in range(self.tree.depth)]
        for level in range(from_level + 1, self.tree.depth):
            for parent, amount in sorted(out[level - 1].items()):
                span = self.tree.children(level - 1, parent)
                ids = np.arange(span.start, span.stop, dtype=np.int64)
                caps = self.caps[level][ids]
                keep = caps > 0
                for child, share in pick(ids[keep], caps[keep], amount) or ():
                    out[level][child] = share
        return out

    def hint(self, built: _Model, loads: Loads, rack_stage: bool) -> None:
        built.model.clear_hints()  # type: ignore[no-untyped-call]
        for (level, domain), var in built.used.items():
            built.model.add_hint(var, loads[level].get(domain, 0) > 0)
        if rack_stage:
            per_group: dict[int, int] = defaultdict(int)
            racks_in: dict[int, int] = defaultdict(int)
            for rack, amount in loads[self.bottom].items():
                group = int(self.tree.parent_of[self.bottom][rack]) if self.bottom else 0
                per_group[group] += amount
                racks_in[group] += 1
            for group, var in built.pods.items():
                built.model.add_hint(var, per_group.get(group, 0))
                built.model.add_hint(built.racks[group], racks_in.get(group, 0))
        else:
            level = max(lvl for lvl, _ in built.used) if built.used else 0
            for domain, var in built.pods.items():
                built.model.add_hint(var, loads[level].get(domain, 0))

    def solve(self, built: _Model, objective: list[tuple[int, cp_model.IntVar]],
              slice_s: float | None = None) -> tuple[cp_model.CpSolver, Any] | None:
        remaining = self.deadline - time.perf_counter()
        if slice_s is not None:
            remaining = min(remaining, slice_s)
        if remaining <= 0:
            return None
        built.model.minimize(cp_model.LinearExpr.weighted_sum(
            [v for _, v in objective], [c for c, _ in objective]))
        solver = cp_model.CpSolver()
        params = solver.parameters
        params.num_workers = max(1, self.config.workers)
        params.random_seed = self.config.seed
        params.linearization_level = 2
        params.max_time_in_seconds = remaining
        # The models are small and already tight: CP-SAT's probing and repeated presolve
        # passes cost more than they find here (measured: 0.7 s -> 0.15 s per stage).
        params.cp_model_probing_level = 0
        params.symmetry_level = 0
        params.max_presolve_iterations = 1
        return solver, solver.solve(built.model)

    def loads_from_solution(self, built: _Model, solver: cp_model.CpSolver, level: int) -> Loads:
        loads: Loads = [{} for _ in range(self.tree.depth)]
        for domain, var in built.pods.items():
            if solver.value(var):
                loads[level][domain] = solver.value(var)
        for lvl in range(level - 1, -1, -1):
            for domain, amount in loads[lvl + 1].items():
                parent = int(self.tree.parent_of[lvl + 1][domain])
                loads[lvl][parent] = loads[lvl].get(parent, 0) + amount
        return loads


def _tangents(caps_desc: list[int]) -> list[tuple[int, int, int]]:
    """(m, S(m), slope) at each breakpoint of the concave prefix-sum curve."""
    lines = []
    total = 0
    for m, cap in enumerate(caps_desc):
        if m == 0 or cap < caps_desc[m - 1]:
            lines.append((m, total, cap))
        total += cap
    return lines


@dataclass
class _StageOutcome:
    value: int
    status: str
    built: _Model
    values: dict[int, int]
    solver: cp_model.CpSolver


def _solve_stage(run: _Deepening, level: int, rack_stage: bool,
                 objective: Callable[[_Model], list[tuple[int, cp_model.IntVar]]],
                 fixed_racks: int | None, loads: Loads | None,
                 slice_s: float | None = None) -> _StageOutcome | str:
    """One stage, decomposed by anchor: with one domain used at the anchor level, the
    problem below splits into independent subproblems, one per anchor candidate, solved
    in order of their own lower bound until that bound exceeds the best found (exact
    branch and bound over a handful of small models). Ties keep every winning anchor
    viable for the next stage. Returns the best outcome, or a failure status."""
    upper = run.anchor(level)
    anchors: list[int | None] = [None]
    bounds_by_anchor: dict[int | None, int] = {}
    if upper is not None:
        ids = run.candidates(level)
        groups = run.ancestors(level, ids, upper)
        for anchor in run.viable[upper].tolist():
            bound = cover_count(run.caps[level][ids[groups == anchor]], run.need)
            if bound is not None:
                bounds_by_anchor[anchor] = bound
        anchors = sorted(bounds_by_anchor, key=lambda a: (bounds_by_anchor[a], a))
    saved = list(run.viable)
    best: _StageOutcome | None = None
    winners: list[int] = []
    failure = "INFEASIBLE"
    for anchor in anchors:
        if best is not None and anchor is not None and bounds_by_anchor[anchor] > best.value:
            break
        if anchor is not None and upper is not None:
            run.narrow(upper, anchor, level)
        built = run.build(level, rack_stage=rack_stage)
        if fixed_racks is not None:
            built.model.add(sum(built.racks.values()) == fixed_racks)
        if loads is not None:
            run.hint(built, loads, rack_stage=rack_stage)
        outcome = run.solve(built, objective(built), slice_s)
        run.viable = list(saved)
        if outcome is None or outcome[1] not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if outcome is None or outcome[1] == cp_model.UNKNOWN:
                failure = "UNKNOWN"
                break
            continue  # infeasible under this anchor
        solver, code = outcome
        value = round(solver.objective_value)
        result = _StageOutcome(value, solver.status_name(code), built,
                               {v.index: solver.value(v) for v in _all_vars(built)}, solver)
        if best is None or value < best.value:
            best, winners = result, ([anchor] if anchor is not None else [])
        elif value == best.value and anchor is not None:
            winners.append(anchor)
        if code != cp_model.OPTIMAL:
            best.status = solver.status_name(code)
            break
    if best is None:
        return failure
    if upper is not None:
        run.viable[upper] = np.asarray(sorted(winners), dtype=np.int64)
        for lvl in range(upper + 1, len(run.viable)):
            ids_l = run.viable[lvl]
            run.viable[lvl] = ids_l[np.isin(run.ancestors(lvl, ids_l, upper), winners)]
    return best


def solve_aggregated(instance: Instance, config: SolverConfig, hint: NodePlan | None,
                     deadline: float, bounds: dict[str, int | None]) -> CpsatResult:
    started = time.perf_counter()
    run = _Deepening(instance, config, deadline, bounds)
    tree = run.tree
    stages: list[tuple[str, int, str]] = []
    loads = run.loads_from_plan(hint) if hint is not None else None

    def counts_at(level: int) -> Callable[[_Model], list[tuple[int, cp_model.IntVar]]]:
        return lambda built: [(1, v) for v in built.count_terms(level)]

    # Count stages for the levels above the racks: one small model each (per anchor).
    for level in range(run.bottom):
        key = tree.levels[level]
        incumbent = len(loads[level]) if loads is not None else None
        if incumbent is not None and incumbent == bounds.get(key):
            count, status = incumbent, PROVEN_BY_BOUND
        else:
            run.bound_anchors(level, incumbent)
            outcome = _solve_stage(run, level, False, counts_at(level), None, loads)
            if isinstance(outcome, str):
                return _give_up(hint, _failure_status(outcome, hint), stages, started)
            count, status = outcome.value, outcome.status
            loads = run.extend(run.loads_from_solution(outcome.built, outcome.solver, level),
                               level)
            if status != "OPTIMAL":
                return _give_up(hint, "FEASIBLE", [*stages, (key, count, status)], started)
        stages.append((key, count, status))
        run.counts.append(count)
        run.viable.append(run.prune(level, run.candidates(level), count))

    # Rack stage (folded into the racks' parents), then best fit with every count fixed.
    rack_key = tree.levels[run.bottom]
    run.bound_anchors(run.bottom, len(loads[run.bottom]) if loads is not None else None)
    racks = run.single_parent_racks()
    incumbent_racks = len(loads[run.bottom]) if loads is not None else None
    if racks is not None:
        stages.append((rack_key, racks, PROVEN_BY_ENUMERATION))
    elif incumbent_racks is not None and incumbent_racks == bounds.get(rack_key):
        racks = incumbent_racks
        stages.append((rack_key, racks, PROVEN_BY_BOUND))
    else:
        outcome = _solve_stage(run, run.bottom, True,
                               lambda built: [(1, v) for v in built.racks.values()], None, loads)
        if isinstance(outcome, str):
            return _give_up(hint, _failure_status(outcome, hint), stages, started)
        racks = outcome.value
        stages.append((rack_key, racks, outcome.status))
        if outcome.status != "OPTIMAL":
            return CpsatResult(_extract(run, outcome.built, outcome.values), "FEASIBLE",
                               tuple(stages), 0.0, time.perf_counter() - started)
    # Best fit is the last tie-break: it gets a bounded slice of the time and whether it
    # was proven is reported on its own stage; `status` certifies the domain counts.
    fit = _solve_stage(
        run, run.bottom, True,
        lambda built: [(int(run.free[lvl][d]), v) for (lvl, d), v in built.used.items()]
        or [(1, v) for v in built.racks.values()],
        racks, loads, max(0.05, BEST_FIT_SHARE * config.time_limit_s))
    if isinstance(fit, str):
        # No solution in the slice: any placement with the proven counts will do.
        fit = _solve_stage(run, run.bottom, True,
                           lambda built: [(1, v) for v in built.racks.values()], racks, loads)
        if isinstance(fit, str):
            return _give_up(hint, _failure_status(fit, hint), stages, started)
    else:
        stages.append(("best_fit", fit.value, fit.status))
    plan = _extract(run, fit.built, fit.values)
    stages.append(_node_stage(instance, plan, bounds))
    return CpsatResult(plan, "OPTIMAL", tuple(stages), 0.0, time.perf_counter() - started)


def _failure_status(failure: str, hint: NodePlan | None) -> str:
    if failure == "INFEASIBLE":
        return "INFEASIBLE"
    return "FEASIBLE" if hint is not None else "UNKNOWN"


def _all_vars(built: _Model) -> list[cp_model.IntVar]:
    return [*built.used.values(), *built.pods.values(), *built.racks.values()]


def _hint_values(built: _Model, values: dict[int, int]) -> None:
    built.model.clear_hints()  # type: ignore[no-untyped-call]
    for var in _all_vars(built):
        built.model.add_hint(var, values[var.index])


def _give_up(hint: NodePlan | None, status: str, stages: list[tuple[str, int, str]],
             started: float) -> CpsatResult:
    """Out of time (or proven infeasible): the incumbent greedy plan if any, flagged."""
    plan = hint if status == "FEASIBLE" else None
    return CpsatResult(plan, status, tuple(stages), 0.0, time.perf_counter() - started)


def _extract(run: _Deepening, built: _Model, values: dict[int, int]) -> NodePlan:
    tree, bottom = run.tree, run.bottom
    node_caps = np.minimum(run.instance.capacity[:, 0], run.need)
    groups = run.rack_groups()
    placed: dict[int, int] = {}
    for group in sorted(built.pods):
        want, count = values[built.pods[group].index], values[built.racks[group].index]
        if want == 0:
            continue
        members = groups[group]
        chosen = best_fit_subset([int(run.free[bottom][rack]) for rack, _ in members],
                                 count, want)
        if chosen is None:  # not reachable from a model solution; keep the prefix rule
            chosen = sorted(range(len(members)), key=lambda i: -members[i][1])[:count]
        loads = [1] * len(chosen)  # every chosen rack holds a pod; the rest in tree order
        left = want - len(chosen)
        for slot, index in enumerate(chosen):
            extra = min(left, members[index][1] - 1)
            loads[slot] += extra
            left -= extra
        for slot, index in enumerate(chosen):
            span = tree.members(bottom, members[index][0])
            ids = np.arange(span.start, span.stop, dtype=np.int64)
            caps = node_caps[ids]
            keep = caps > 0
            for node, amount in pick(ids[keep], caps[keep], loads[slot]) or ():
                placed[node] = amount
    return NodePlan((placed,))


def _node_stage(instance: Instance, plan: NodePlan,
                bounds: dict[str, int | None]) -> tuple[str, int, str]:
    """Whole-node pods: nodes == pods, nothing to choose. Otherwise nodes are chosen
    largest-first inside the chosen racks: optimal for those racks, not proven beyond."""
    nodes = len(plan.nodes())
    caps = np.minimum(instance.capacity[:, 0], instance.demand[0])
    if int(caps.max(initial=0)) <= 1 or nodes == bounds.get(NODE_LEVEL):
        return ("nodes", nodes, PROVEN_BY_BOUND)
    return ("nodes", nodes, "FEASIBLE (within chosen racks)")
