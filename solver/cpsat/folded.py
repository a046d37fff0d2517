"""CP-SAT for single-shape gangs: progressive deepening over the levels, with the bottom
level folded into its parents.

Stage l of the lexicographic objective (docs/design.md) only needs levels 0..l: any choice of
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

import heapq
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from solver.cpsat import rackcount
from solver.cpsat.common import (
    PROVEN_BY_BOUND,
    PROVEN_BY_ENUMERATION,
    PROVEN_BY_THRESHOLDS,
    CpsatResult,
    add_tree_links,
    clear_hints,
    configure,
)
from solver.greedy import pick
from solver.instance import NODE_LEVEL, Instance, cover_count
from solver.plan import NodePlan
from solver.request import SolverConfig
from solver.subsets import best_fit_subset
from topology.snapshot import DomainTree, IntArray

COMBO_LIMIT = 40
"""Most subproblems one stage is split into (sets of used domains at the split level)."""
BEST_FIT_SHARE = 0.25
"""Share of the time limit the best-fit tie-break may use."""

Loads = list[dict[int, int]]
"""loads[level] = {domain: pods placed in it}: a placement seen at domain granularity."""


@dataclass(frozen=True)
class Frontier:
    """What the stages so far have established, as a value: `counts[l]` is the proven
    optimum at level l, `viable[l]` the level-l domains that can still belong to an
    optimal placement. Every step that learns something returns a new Frontier; nothing
    is saved and restored around a trial (a combo's narrowed frontier is simply dropped)."""

    counts: tuple[int, ...] = ()
    viable: tuple[IntArray, ...] = ()

    def anchor(self, level: int) -> int | None:
        """The deepest level above `level` where the gang uses exactly one domain: every
        domain the gang uses below it shares that one ancestor."""
        for upper in range(level - 1, -1, -1):
            if self.counts[upper] == 1:
                return upper
        return None

    def proven(self, count: int, viable: IntArray) -> Frontier:
        """One level deeper: its optimum and its viable domains."""
        return Frontier((*self.counts, count), (*self.viable, viable))

    def restricted(self, tree: DomainTree, upper: int, kept: IntArray) -> Frontier:
        """Only `kept` stays viable at `upper`, and below it only their descendants."""
        viable = list(self.viable)
        viable[upper] = kept
        for lvl in range(upper + 1, len(viable)):
            ids = viable[lvl]
            viable[lvl] = ids[np.isin(ancestors(tree, lvl, ids, upper), kept)]
        return Frontier(self.counts, tuple(viable))

    def narrowed(self, tree: DomainTree, upper: int, combo: tuple[int, ...]) -> Frontier:
        """The combo's domains at `upper`, their ancestors above and descendants below."""
        chosen = np.asarray(combo, dtype=np.int64)
        inside = self.restricted(tree, upper, chosen)
        above = tuple(np.unique(ancestors(tree, upper, chosen, lvl)) for lvl in range(upper))
        return Frontier(self.counts, above + inside.viable[upper:])


def ancestors(tree: DomainTree, level: int, ids: IntArray, upper: int) -> IntArray:
    """Each level-`level` domain's ancestor at level `upper`."""
    out = ids
    for lvl in range(level, upper, -1):
        out = tree.parent_of[lvl][out]
    return out


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
        # One solver for every model of the run (creating one costs ~1 ms); its results
        # are copied out right after each solve.
        self.solver = cp_model.CpSolver()
        self.rack_floor = 0
        """A lower bound on the rack count learnt on the way (rackcount's)."""

    # -- candidates ----------------------------------------------------------------
    def candidates(self, frontier: Frontier, level: int) -> IntArray:
        """Level-`level` domains with room whose parent is still viable."""
        ids = np.flatnonzero(self.caps[level] > 0)
        if level > 0:
            parents = self.tree.parent_of[level][ids]
            ids = ids[np.isin(parents, frontier.viable[level - 1])]
        return ids

    def prune(self, frontier: Frontier, level: int, ids: IntArray, count: int) -> IntArray:
        """Keeps the domains that can belong to `count` domains holding the gang. The
        companions of a domain come from under the same anchor ancestor, when there is
        one (a necessary condition, so no optimal placement is cut off)."""
        if count <= 0 or len(ids) == 0:
            return ids
        upper = frontier.anchor(level)
        groups = (ancestors(self.tree, level, ids, upper) if upper is not None
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

    def bound_anchors(self, frontier: Frontier, level: int,
                      incumbent: int | None) -> Frontier:
        """Drops anchor domains under which the stage at `level` cannot beat the
        incumbent: their own lower bound (fewest level-`level` domains inside them that
        hold the gang) is already worse. Branch-and-bound's pruning, done up front."""
        upper = frontier.anchor(level)
        if upper is None:
            return frontier
        ids = self.candidates(frontier, level)
        groups = ancestors(self.tree, level, ids, upper)
        kept = []
        for group in frontier.viable[upper].tolist():
            inside = ids[groups == group]
            bound = cover_count(self.caps[level][inside], self.need)
            if bound is not None and (incumbent is None or bound <= incumbent):
                kept.append(group)
        return frontier.restricted(self.tree, upper, np.asarray(kept, dtype=np.int64))

    # -- models --------------------------------------------------------------------
    def build(self, frontier: Frontier, upto: int, rack_stage: bool) -> _Model:
        """Variables for viable domains of levels < upto and candidates at `upto` (or,
        in the rack stage, the rack parents with their folded rack curves)."""
        model = cp_model.CpModel()
        used: dict[tuple[int, int], cp_model.IntVar] = {}
        top_level = upto - 1 if rack_stage else upto
        for level in range(top_level + 1):
            ids = frontier.viable[level] if level < upto else self.candidates(frontier, level)
            for domain in ids.tolist():
                used[level, domain] = model.new_bool_var(f"u{level}_{domain}")
        pods: dict[int, cp_model.IntVar] = {}
        racks: dict[int, cp_model.IntVar] = {}
        if rack_stage:
            for group, members in self.rack_groups(frontier).items():
                caps_desc = sorted((cap for _, cap in members), reverse=True)
                capacity = min(sum(caps_desc), self.need)
                if self.bottom > 0:  # the parent's own cap, when it has one
                    capacity = min(capacity, int(self.caps[self.bottom - 1][group]))
                pods[group] = model.new_int_var(0, capacity, f"p{group}")
                racks[group] = model.new_int_var(0, min(len(members), self.need), f"r{group}")
                flag = used[top_level, group] if top_level >= 0 else 1
                # Perspective form of the tangents: with the parent unused (flag 0) they
                # force pods to 0; for fractional flags they are the convex hull, which
                # keeps the LP bound tight (measured: 4.4 s -> below 0.1 s at 4096 pods).
                for m, prefix, slope in _tangents(caps_desc):
                    model.add(pods[group] <= prefix * flag + slope * (racks[group] - m * flag))
                model.add(racks[group] <= pods[group])
                if top_level >= 0:
                    model.add(pods[group] <= capacity * flag)
                    model.add(racks[group] >= flag)
            if self.instance.required == self.bottom:
                model.add(sum(racks.values()) == 1)
            bound = max(self.bounds.get(self.tree.levels[self.bottom]) or 0, self.rack_floor)
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
        self.add_caps_above(model, pods, self.bottom - 1 if rack_stage else upto)
        self.add_slices(model, pods, racks, self.bottom - 1 if rack_stage else upto)
        add_tree_links(model, self.tree.parent_of, used, top_level)
        for level in range(top_level + 1):
            model.add(sum(int(self.caps[level][d]) * var
                          for (lvl, d), var in used.items() if lvl == level) >= self.need)
            if level < len(frontier.counts):
                model.add(sum(var for (lvl, _), var in used.items() if lvl == level)
                          == frontier.counts[level])
        required = self.instance.required
        if required is not None and required <= top_level:
            model.add(sum(var for (lvl, _), var in used.items() if lvl == required) == 1)
        return _Model(model, used, pods, racks)

    def add_caps_above(self, model: cp_model.CpModel, pods: dict[int, cp_model.IntVar],
                       pods_level: int) -> None:
        """Caps at levels above the one the model counts pods at: the pods under each
        capped domain sum to at most its cap. (At or below that level the clipped
        capacities already hold them exactly.)"""
        for level, hi in self.instance.caps_of(0).items():
            if level >= pods_level:
                continue
            under: dict[int, list[cp_model.IntVar]] = defaultdict(list)
            for domain, var in pods.items():
                under[int(ancestors(self.tree, pods_level, np.asarray([domain]), level)[0])
                      ].append(var)
            for domain, terms in under.items():
                model.add(sum(terms) <= int(hi[domain]))

    def add_slices(self, model: cp_model.CpModel, pods: dict[int, cp_model.IntVar],
                   racks: dict[int, cp_model.IntVar], pods_level: int) -> None:
        """Uniform slices: under every domain of the slice level, a multiple of the slice
        size. Where the model counts pods at or below that level, their sum per slice
        domain is `size * k`; where the slice level is the folded racks, each parent's
        pods are a multiple and it uses no more racks than it has slices (its racks'
        capacities are whole-slice multiples, so the extraction can give each rack
        whole slices). Above the slice level the whole-slice capacities suffice."""
        rule = self.instance.slices
        if rule is None:
            return
        size = rule.size
        if pods_level >= rule.level:
            groups: dict[int, list[cp_model.IntVar]] = defaultdict(list)
            for domain, var in pods.items():
                at = (domain if pods_level == rule.level else
                      int(ancestors(self.tree, pods_level, np.asarray([domain]), rule.level)[0]))
                groups[at].append(var)
            for at, terms in groups.items():
                count = model.new_int_var(0, int(self.caps[rule.level][at]) // size, f"k{at}")
                model.add(sum(terms) == size * count)
        elif rule.level == self.bottom and racks:
            for group, var in pods.items():
                count = model.new_int_var(0, self.need // size, f"k{group}")
                model.add(var == size * count)
                model.add(size * racks[group] <= var)

    def children_of_single_parent(self, frontier: Frontier,
                                  level: int) -> tuple[int, str, Loads, Frontier] | None:
        """When the gang uses one domain at the level right above, stage `level` needs no
        search: inside one parent the fewest children is their largest-first prefix, so
        the optimum is the best such prefix over the viable parents; parents that need
        more are dropped. Returns (count, status, an incumbent at that count, the
        frontier with only the winning parents viable)."""
        if level == 0 or frontier.counts[level - 1] != 1:
            return None
        ids = self.candidates(frontier, level)
        parents = self.tree.parent_of[level][ids]
        needed: dict[int, int] = {}
        for parent in frontier.viable[level - 1].tolist():
            count = cover_count(self.caps[level][ids[parents == parent]], self.need)
            if count is not None:
                needed[parent] = count
        if not needed:
            return None
        best = min(needed.values())
        winners = sorted(p for p, c in needed.items() if c == best)
        frontier = frontier.restricted(self.tree, level - 1,
                                       np.asarray(winners, dtype=np.int64))
        # An incumbent: the first winning parent's children, largest first.
        chosen = ids[parents == winners[0]]
        loads: Loads = [{} for _ in range(self.tree.depth)]
        for child, share in pick(chosen, self.caps[level][chosen], self.need) or ():
            loads[level][child] = share
        for lvl in range(level - 1, -1, -1):
            for domain, amount in loads[lvl + 1].items():
                parent = int(self.tree.parent_of[lvl + 1][domain])
                loads[lvl][parent] = loads[lvl].get(parent, 0) + amount
        return best, PROVEN_BY_ENUMERATION, self.extend(loads, level), frontier

    def single_parent_racks(self, frontier: Frontier) -> tuple[int, Frontier] | None:
        """When the gang uses one domain at the racks' parent level (or the tree has one
        level), the rack stage needs no search: the fewest racks is the best over the
        viable parents of their largest-first prefix; parents that need more racks are
        no longer viable. Returns that count and the narrowed frontier, or None when the
        shortcut does not apply."""
        group_level = self.bottom - 1
        if group_level >= 0 and frontier.counts[group_level] != 1:
            return None
        needed: dict[int, int] = {}
        for group, members in self.rack_groups(frontier).items():
            count = cover_count(np.asarray([cap for _, cap in members], dtype=np.int64),
                                self.need)
            if count is not None:
                needed[group] = count
        if not needed:
            return None
        best = min(needed.values())
        if group_level >= 0:
            keep = np.asarray(sorted(g for g, c in needed.items() if c == best), dtype=np.int64)
            frontier = frontier.restricted(self.tree, group_level, keep)
        return best, frontier

    def rack_groups(self, frontier: Frontier) -> dict[int, list[tuple[int, int]]]:
        """Rack parent -> its candidate racks as (rack, capacity), in tree order."""
        groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
        racks = self.candidates(frontier, self.bottom)
        parents = (self.tree.parent_of[self.bottom][racks] if self.bottom > 0
                   else np.zeros(len(racks), dtype=np.int64))
        for rack, parent in zip(racks.tolist(), parents.tolist(), strict=True):
            groups[parent].append((rack, int(self.caps[self.bottom][rack])))
        return groups

    def fewest_at(self, frontier: Frontier, level: int) -> rackcount.RackCount | None:
        """Stage `level` by threshold decomposition (its domains are the "racks", their
        parents the level above), where it applies: no caps to sum (the clipped
        capacities are then the whole story), no slices, not the required level."""
        instance = self.instance
        if (level < 1 or instance.slices is not None or instance.caps_of(0)
                or instance.required == level):
            return None
        # At most half the time left: a stage it cannot prove still has CP-SAT.
        left = self.deadline - time.perf_counter()
        return rackcount.fewest_racks(
            self.tree, level - 1, frontier.viable[:level], frontier.counts[:level],
            self.candidates(frontier, level), self.caps[level], self.need,
            deadline=time.perf_counter() + left / 2)

    # -- incumbents ----------------------------------------------------------------
    def loads_from_racks(self, racks: dict[int, int], level: int | None = None) -> Loads:
        """Loads at every level from pods per domain of `level` (default: the racks)."""
        level = self.bottom if level is None else level
        loads: Loads = [{} for _ in range(self.tree.depth)]
        loads[level] = dict(racks)
        for lvl in range(level - 1, -1, -1):
            for domain, amount in loads[lvl + 1].items():
                parent = int(self.tree.parent_of[lvl + 1][domain])
                loads[lvl][parent] = loads[lvl].get(parent, 0) + amount
        return loads

    def loads_from_plan(self, plan: NodePlan) -> Loads:
        placed = plan.per_shape[0]
        nodes = np.fromiter(placed.keys(), dtype=np.int64, count=len(placed))
        counts = np.fromiter(placed.values(), dtype=np.int64, count=len(placed))
        loads: Loads = []
        for level in range(self.tree.depth):
            domains = self.tree.domain_of[level][nodes]
            ids, where = np.unique(domains, return_inverse=True)
            sums = np.bincount(where, weights=counts, minlength=len(ids)).astype(np.int64)
            loads.append(dict(zip(ids.tolist(), sums.tolist(), strict=True)))
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
        clear_hints(built.model)
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
        configure(self.solver, self.config, remaining, small_models=True)
        return self.solver, self.solver.solve(built.model)

    def loads_from_solution(self, built: _Model, values: dict[int, int], level: int) -> Loads:
        loads: Loads = [{} for _ in range(self.tree.depth)]
        for domain, var in built.pods.items():
            if values[var.index]:
                loads[level][domain] = values[var.index]
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


def _split(run: _Deepening, frontier: Frontier,
           level: int) -> tuple[int | None, list[tuple[int, ...]]]:
    """Where to split stage `level` into independent subproblems: the deepest level above
    it whose possible sets of used domains are few (at most COMBO_LIMIT), e.g. the one
    zone, or the three layer-1 domains of a large gang. Each set (a *combo*) consistent
    with the counts above it fixes the upper structure of its subproblem."""
    tree = run.tree
    for upper in range(level - 1, -1, -1):
        count, ids = frontier.counts[upper], frontier.viable[upper]
        # With one domain used at an anchor level above, a combo lies under one anchor.
        anchor = frontier.anchor(upper)
        pools = ([ids[ancestors(tree, upper, ids, anchor) == a]
                  for a in frontier.viable[anchor]] if anchor is not None else [ids])
        if sum(math.comb(len(pool), count) for pool in pools) > COMBO_LIMIT:
            continue
        combos = []
        for pool in pools:
            for combo in itertools.combinations(pool.tolist(), count):
                chosen = np.asarray(combo, dtype=np.int64)
                if all(len(np.unique(ancestors(tree, upper, chosen, above)))
                       == frontier.counts[above] for above in range(upper)):
                    combos.append(combo)
        return upper, combos
    return None, [()]


def _solve_stage(run: _Deepening, frontier: Frontier, level: int, rack_stage: bool,
                 objective: Callable[[_Model], list[tuple[int, cp_model.IntVar]]],
                 fixed_racks: int | None, loads: Loads | None,
                 slice_s: float | None = None) -> tuple[_StageOutcome | str, Frontier]:
    """One stage, split into independent subproblems by `_split`, solved in order of
    their own lower bound (fewest stage-level domains under the combo, other levels
    ignored) until that bound exceeds the best value found: exact branch and bound over
    small models. Every combo that ties stays viable in the frontier returned (the
    outcome, or the failure's status, comes with it)."""
    upper, combos = _split(run, frontier, level)
    # A slice bounds the whole stage, however many subproblems it splits into.
    stage_deadline = time.perf_counter() + slice_s if slice_s is not None else None
    bounds_by_combo: dict[tuple[int, ...], int] = {}
    if upper is not None:
        ids = run.candidates(frontier, level)
        groups = ancestors(run.tree, level, ids, upper)
        for combo in combos:
            bound = cover_count(run.caps[level][ids[np.isin(groups, combo)]], run.need)
            if bound is not None:
                bounds_by_combo[combo] = bound
        combos = sorted(bounds_by_combo, key=lambda c: (bounds_by_combo[c], c))
    best: _StageOutcome | None = None
    winners: set[int] = set()
    failure = "INFEASIBLE"
    for combo in combos:
        if best is not None and upper is not None and bounds_by_combo[combo] > best.value:
            break
        trial = frontier.narrowed(run.tree, upper, combo) if upper is not None else frontier
        built = run.build(trial, level, rack_stage=rack_stage)
        if fixed_racks is not None:
            built.model.add(sum(built.racks.values()) == fixed_racks)
        if loads is not None:
            run.hint(built, loads, rack_stage=rack_stage)
        left = stage_deadline - time.perf_counter() if stage_deadline is not None else None
        outcome = run.solve(built, objective(built), left)
        if outcome is None or outcome[1] not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if outcome is None or outcome[1] == cp_model.UNKNOWN:
                failure = "UNKNOWN"
                break
            continue  # infeasible under this combo
        solver, code = outcome
        value = round(solver.objective_value)
        result = _StageOutcome(value, solver.status_name(code), built,
                               {v.index: solver.value(v) for v in _all_vars(built)})
        if best is None or value < best.value:
            best, winners = result, set(combo)
        elif value == best.value:
            winners.update(combo)
        if code != cp_model.OPTIMAL:
            best.status = solver.status_name(code)
            break
    if best is None:
        return failure, frontier
    if upper is not None:
        frontier = frontier.restricted(run.tree, upper,
                                       np.asarray(sorted(winners), dtype=np.int64))
    return best, frontier


def solve_folded(instance: Instance, config: SolverConfig, hint: NodePlan | None,
                     deadline: float, bounds: dict[str, int | None]) -> CpsatResult:
    started = time.perf_counter()
    run = _Deepening(instance, config, deadline, bounds)
    tree = run.tree
    stages: list[tuple[str, int, str]] = []
    loads = run.loads_from_plan(hint) if hint is not None else None
    frontier = Frontier()

    def counts_at(level: int) -> Callable[[_Model], list[tuple[int, cp_model.IntVar]]]:
        return lambda built: [(1, v) for v in built.count_terms(level)]

    # Count stages for the levels above the racks: one small model each (per anchor).
    for level in range(run.bottom):
        key = tree.levels[level]
        incumbent = len(loads[level]) if loads is not None else None
        if incumbent is not None and incumbent == bounds.get(key):
            count, status = incumbent, PROVEN_BY_BOUND
        else:
            frontier = run.bound_anchors(frontier, level, incumbent)
            exact = run.children_of_single_parent(frontier, level)
            fast = run.fewest_at(frontier, level) if exact is None else None
            if exact is not None:
                count, status, loads, frontier = exact
            elif fast is not None and fast.proven:
                count, status = fast.racks, PROVEN_BY_THRESHOLDS
                loads = run.extend(run.loads_from_racks(fast.loads, level), level)
            else:
                outcome, frontier = _solve_stage(run, frontier, level, False, counts_at(level),
                                                 None, loads)
                if isinstance(outcome, str):
                    return _give_up(hint, _failure_status(outcome, hint), stages, started)
                count, status = outcome.value, outcome.status
                loads = run.extend(
                    run.loads_from_solution(outcome.built, outcome.values, level), level)
            if not status.startswith("OPTIMAL"):
                return _give_up(hint, "FEASIBLE", [*stages, (key, count, status)], started)
        stages.append((key, count, status))
        frontier = frontier.proven(count, run.prune(frontier, level,
                                                    run.candidates(frontier, level), count))

    # Rack stage (folded into the racks' parents), then best fit with every count fixed.
    rack_key = tree.levels[run.bottom]
    proven_racks: dict[int, int] | None = None
    frontier = run.bound_anchors(frontier, run.bottom,
                                 len(loads[run.bottom]) if loads is not None else None)
    single = run.single_parent_racks(frontier)
    incumbent_racks = len(loads[run.bottom]) if loads is not None else None
    if single is not None:
        racks, frontier = single
        stages.append((rack_key, racks, PROVEN_BY_ENUMERATION))
    elif incumbent_racks is not None and incumbent_racks == bounds.get(rack_key):
        racks = incumbent_racks
        stages.append((rack_key, racks, PROVEN_BY_BOUND))
    elif (fast := run.fewest_at(frontier, run.bottom)) is not None and fast.proven:
        racks = fast.bound
        proven_racks = fast.loads
        loads = run.loads_from_racks(fast.loads)
        stages.append((rack_key, racks, PROVEN_BY_THRESHOLDS))
    else:
        if fast is not None:  # not proven: its bound and any better incumbent help CP-SAT
            run.rack_floor = fast.bound
            if fast.racks is not None and (incumbent_racks is None
                                           or fast.racks < incumbent_racks):
                loads = run.loads_from_racks(fast.loads)
        outcome, frontier = _solve_stage(run, frontier, run.bottom, True,
                                         lambda built: [(1, v) for v in built.racks.values()],
                                         None, loads)
        if isinstance(outcome, str):
            return _give_up(hint, _failure_status(outcome, hint), stages, started)
        racks = outcome.value
        stages.append((rack_key, racks, outcome.status))
        if outcome.status != "OPTIMAL":
            return CpsatResult(_extract(run, frontier, outcome.built, outcome.values),
                               "FEASIBLE", tuple(stages), 0.0, time.perf_counter() - started)
    # Best fit is the last tie-break: it gets a bounded slice of the time and whether it
    # was proven is reported on its own stage; `status` certifies the domain counts.
    fit, fitted = _solve_stage(
        run, frontier, run.bottom, True,
        lambda built: [(int(run.free[lvl][d]), v) for (lvl, d), v in built.used.items()]
        or [(1, v) for v in built.racks.values()],
        racks, loads, max(0.05, BEST_FIT_SHARE * config.time_limit_s))
    if isinstance(fit, str) and proven_racks is not None:
        # No solution in the slice: the thresholds' own placement has the proven counts.
        plan = NodePlan((_fill_racks(run, proven_racks),))
        stages.append(_node_stage(instance, plan, bounds))
        return CpsatResult(plan, "OPTIMAL", tuple(stages), 0.0, time.perf_counter() - started)
    if isinstance(fit, str):
        # No solution in the slice: any placement with the proven counts will do.
        fit, fitted = _solve_stage(run, frontier, run.bottom, True,
                                   lambda built: [(1, v) for v in built.racks.values()],
                                   racks, loads)
        if isinstance(fit, str):
            return _give_up(hint, _failure_status(fit, hint), stages, started)
    else:
        stages.append(("best_fit", fit.value, fit.status))
    plan = _extract(run, fitted, fit.built, fit.values)
    stages.append(_node_stage(instance, plan, bounds))
    return CpsatResult(plan, "OPTIMAL", tuple(stages), 0.0, time.perf_counter() - started)


def _failure_status(failure: str, hint: NodePlan | None) -> str:
    if failure == "INFEASIBLE":
        return "INFEASIBLE"
    return "FEASIBLE" if hint is not None else "UNKNOWN"


def _all_vars(built: _Model) -> list[cp_model.IntVar]:
    return [*built.used.values(), *built.pods.values(), *built.racks.values()]


def _give_up(hint: NodePlan | None, status: str, stages: list[tuple[str, int, str]],
             started: float) -> CpsatResult:
    """Out of time (or proven infeasible): the incumbent greedy plan if any, flagged."""
    plan = hint if status == "FEASIBLE" else None
    return CpsatResult(plan, status, tuple(stages), 0.0, time.perf_counter() - started)


def _extract(run: _Deepening, frontier: Frontier, built: _Model,
             values: dict[int, int]) -> NodePlan:
    tree, bottom = run.tree, run.bottom
    node_caps = np.minimum(run.instance.capacity[:, 0], run.need)
    quota = run.caps[bottom]
    groups = run.rack_groups(frontier)
    placed: dict[int, int] = {}
    for group in sorted(built.pods):
        want, count = values[built.pods[group].index], values[built.racks[group].index]
        if want == 0:
            continue
        members = groups[group]
        chosen = _choose_racks(run, members, count, want, node_caps)
        if chosen is None:  # not reachable from a model solution; keep the prefix rule
            chosen = sorted(range(len(members)), key=lambda i: -members[i][1])[:count]
        racks = [members[index][0] for index in chosen]
        rule = run.instance.slices
        if rule is not None and rule.level == bottom:
            for rack, amount in _whole_slices(racks, quota, want, rule.size):
                placed.update(_fill_nodes(tree, bottom, node_caps, [rack], amount, quota))
        else:
            placed.update(_fill_nodes(tree, bottom, node_caps, racks, want, quota))
    return NodePlan((placed,))


def _fill_racks(run: _Deepening, loads: dict[int, int]) -> dict[int, int]:
    """Nodes for pods already split per rack (rack -> pods)."""
    node_caps = np.minimum(run.instance.capacity[:, 0], run.need)
    placed: dict[int, int] = {}
    for rack, amount in sorted(loads.items()):
        placed.update(_fill_nodes(run.tree, run.bottom, node_caps, [rack], amount,
                                  run.caps[run.bottom]))
    return placed


def _whole_slices(racks: list[int], quota: IntArray, want: int, size: int
                  ) -> list[tuple[int, int]]:
    """Splits `want` pods over the chosen racks in whole slices: one slice each (every
    chosen rack is used), then the rest largest room first, up to each rack's quota (a
    whole-slice multiple)."""
    loads = dict.fromkeys(racks, size)
    left = want - size * len(racks)
    for rack in sorted(racks, key=lambda r: (-int(quota[r]), r)):
        extra = min(left, int(quota[rack]) - size)
        extra -= extra % size
        loads[rack] += extra
        left -= extra
    return sorted(loads.items())


ENUMERATE_LIMIT = 2000
"""Rack subsets per parent examined exactly when nodes hold several pods each."""


def _choose_racks(run: _Deepening, members: list[tuple[int, int]], count: int, want: int,
                  node_caps: IntArray) -> list[int] | None:
    """`count` racks of one parent that hold `want` pods. Whole-node pods: the subset of
    least free capacity (best fit, exact). Several pods per node: fewest nodes first,
    then best fit, by enumeration when the subsets are few, else best fit alone."""
    free = [int(run.free[run.bottom][rack]) for rack, _ in members]
    if int(node_caps.max(initial=0)) <= 1 or math.comb(len(members), count) > ENUMERATE_LIMIT:
        return best_fit_subset(free, count, want)
    best: tuple[int, int, tuple[int, ...]] | None = None
    for subset in itertools.combinations(range(len(members)), count):
        if sum(members[i][1] for i in subset) < want:
            continue
        racks = [members[i][0] for i in subset]
        key = (len(_fill_nodes(run.tree, run.bottom, node_caps, racks, want,
                               run.caps[run.bottom])),
               sum(free[i] for i in subset), subset)
        best = key if best is None or key < best else best
    return list(best[2]) if best is not None else None


def _fill_nodes(tree: DomainTree, bottom: int, node_caps: IntArray, racks: list[int],
                want: int, quota: IntArray) -> dict[int, int]:
    """The fewest nodes of the chosen racks that hold `want` pods with every rack used
    and no rack over its quota (its capacity, or less under a cap): each rack's largest
    node first, then the node adding the most room, until the room reaches `want`; pods
    fill nodes in that order. Room added by a node is its capacity up to what its rack's
    quota leaves, so taking the largest gain each time is exact (the room of a set of
    nodes is a polymatroid rank); without caps it is simply largest-first."""
    whole = _fill_whole_nodes(tree, bottom, node_caps, racks, want, quota)
    return whole if whole is not None else _fill_by_gain(tree, bottom, node_caps, racks, want,
                                                         quota)


def _fill_by_gain(tree: DomainTree, bottom: int, node_caps: IntArray, racks: list[int],
                  want: int, quota: IntArray) -> dict[int, int]:
    """`_fill_nodes`, in general."""
    rack_of: dict[int, int] = {}
    room: dict[int, int] = {}
    chosen: list[int] = []
    queue: list[tuple[int, int]] = []
    for rack in racks:
        span = tree.members(bottom, rack)
        nodes = sorted((n for n in span if node_caps[n] > 0),
                       key=lambda n: (-int(node_caps[n]), n))
        for n in nodes:
            rack_of[n] = rack
        first = nodes[0]
        chosen.append(first)
        room[rack] = min(int(node_caps[first]), int(quota[rack]))
        queue.extend((-int(node_caps[n]), n) for n in nodes[1:])
    total = sum(room.values())
    heapq.heapify(queue)
    while total < want and queue:
        negative, node = heapq.heappop(queue)
        rack = rack_of[node]
        gain = min(int(node_caps[node]), int(quota[rack]) - room[rack])
        if gain <= 0:
            continue
        if gain < -negative:  # its rack filled up since it was queued: look again
            heapq.heappush(queue, (-gain, node))
            continue
        chosen.append(node)
        room[rack] += gain
        total += gain
    loads = dict.fromkeys(chosen, 1)
    used = dict.fromkeys(racks, 0)
    for node in chosen:
        used[rack_of[node]] += 1
    left = want - len(chosen)
    for node in chosen:
        rack = rack_of[node]
        extra = min(left, int(node_caps[node]) - 1, int(quota[rack]) - used[rack])
        if extra > 0:
            loads[node] += extra
            used[rack] += extra
            left -= extra
    return loads


def _fill_whole_nodes(tree: DomainTree, bottom: int, node_caps: IntArray, racks: list[int],
                      want: int, quota: IntArray) -> dict[int, int] | None:
    """`_fill_nodes` where every node takes one pod and no rack's quota cuts its nodes
    short (the common whole-node case; None otherwise): each rack's first node, then the
    lowest-indexed others, as the general rule picks them, in numpy."""
    spans = [tree.members(bottom, rack) for rack in racks]
    per_rack = [np.arange(span.start, span.stop)[node_caps[span.start:span.stop] > 0]
                for span in spans]
    if any(len(nodes) == 0 or int(node_caps[nodes].max()) > 1 or len(nodes) > int(quota[rack])
           for nodes, rack in zip(per_rack, racks, strict=True)):
        return None
    rest = np.sort(np.concatenate([nodes[1:] for nodes in per_rack]))
    if len(rest) < want - len(racks):
        return None
    chosen = [int(nodes[0]) for nodes in per_rack] + rest[: max(0, want - len(racks))].tolist()
    return dict.fromkeys(chosen, 1)


def _node_stage(instance: Instance, plan: NodePlan,
                bounds: dict[str, int | None]) -> tuple[str, int, str]:
    """Whole-node pods: nodes == pods, nothing to choose. Otherwise nodes are chosen
    largest-first inside the chosen racks: optimal for those racks, not proven beyond."""
    nodes = len(plan.nodes())
    caps = np.minimum(instance.capacity[:, 0], instance.demand[0])
    if int(caps.max(initial=0)) <= 1 or nodes == bounds.get(NODE_LEVEL):
        return ("nodes", nodes, PROVEN_BY_BOUND)
    return ("nodes", nodes, "FEASIBLE (within chosen racks)")
