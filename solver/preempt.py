"""Preemption: the cheapest set of lower-priority victims after which a gang fits.

A candidate is a whole running gang (evicting part of a training job kills it anyway) or
one single pod, every one of strictly lower priority than the preemptor. Among the sets
after which the preemptor fits, the cheapest is chosen, lexicographically:

1. the highest priority among the victims,
2. the number of victims (gangs + single pods),
3. the accelerators they hold, then their pods,

by CP-SAT, one stage per term, each stage's optimum fixed before the next (the status
says whether every stage was proven). The preemptor's own topology is then optimised by
the placement solver on the room that set frees; among equally cheap sets the model
does not rank topology (docs/design.md, Preemption).

The model works on the aggregates the placement model uses, never per pod x node:
- nodes without candidates on them hold what they hold now (a constant per domain);
- a node with one candidate holds `c0 + (c1 - c0) * x_v` pods of each shape (c1 with the
  victim gone), summed per (victim, domain) into one coefficient;
- a node with several candidates chooses one subset of them to be gone (all subsets up
  to three, else none, each one alone, or all); a subset counts only if every member is
  evicted, so the model never overestimates the room.
With a required level, one domain of it (a boolean each) must hold the whole demand;
otherwise the cluster must. What the aggregates cannot see (several templates sharing a
node, rules among the gang's own pods, slices) is checked by solving the placement on the
chosen set's room; a set that fails is cut off (it and every subset of it) and the model
solved again.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from ortools.sat.python import cp_model

from solver.cpsat.common import clear_hints, configure
from solver.filters import fit_shape
from solver.request import GangRequest, PodShape, SolverConfig
from solver.result import Placement
from solver.solve import solve
from topology.records import PodRecord
from topology.snapshot import IntArray, TopologySnapshot, without

MAX_SUBSETS_ALL = 3
"""Nodes with at most this many candidates choose among all subsets of them."""
VERIFY_ROUNDS = 4
MIN_SEARCH_S = 0.6
"""CP-SAT's search gets at least this, whatever preprocessing took of the time limit."""
MIN_STAGE_S = 0.2
"""Each stage of the cost (and the runner-up's search) at least this."""
"""Sets the aggregates accept but the placement refuses, cut off before giving up."""


@dataclass(frozen=True)
class Candidate:
    """A unit that may be evicted: a whole gang or one single pod."""

    name: str
    """What it is, for people: `Gang ns/Kind/name` or `Pod ns/name`."""
    priority: int
    pods: tuple[PodRecord, ...]
    """Its running pods (each with its node)."""
    gang: bool = False


@dataclass(frozen=True, order=True)
class VictimCost:
    priority: int
    """The highest priority among the victims."""
    victims: int
    accelerators: int
    pods: int

    def render(self) -> str:
        return (f"{self.victims} victim(s) of priority <= {self.priority}, "
                f"{self.accelerators} accelerator(s), {self.pods} pod(s)")


@dataclass(frozen=True)
class VictimSet:
    victims: tuple[Candidate, ...]
    cost: VictimCost

    @property
    def pod_keys(self) -> frozenset[str]:
        return frozenset(p.key for c in self.victims for p in c.pods)

    @property
    def pods(self) -> list[PodRecord]:
        return [p for c in self.victims for p in c.pods]


@dataclass(frozen=True)
class Preemption:
    chosen: VictimSet
    placement: Placement
    """Where the preemptor goes once the victims are gone."""
    status: str
    """OPTIMAL when every stage of the cost was proven, else FEASIBLE."""
    runner_up: VictimSet | None
    """The next cheapest set (explain shows it), when there is one and the time limit
    left room to search for it."""
    candidates: int
    solve_s: float


class PreemptCode(Enum):
    NO_CANDIDATES = "NoLowerPriorityVictims"
    """Nothing running has a lower priority (or every such unit is protected)."""
    WOULD_NOT_FIT = "WouldNotFitIfPreempted"
    """Not even every lower-priority pod gone makes room: preempting would not help."""
    NOT_FOUND = "NoVictimSetFound"
    """The model found no set within its time limit (or every set it found failed)."""


@dataclass(frozen=True)
class NoPreemption:
    code: PreemptCode
    message: str
    solve_s: float = 0.0


def cost_of(victims: Sequence[Candidate], accelerators: frozenset[str]) -> VictimCost:
    pods = [p for c in victims for p in c.pods]
    return VictimCost(max((c.priority for c in victims), default=0), len(victims),
                      sum(amount for p in pods for name, amount in p.requests.items()
                          if name in accelerators), len(pods))


def choose_victims(request: GangRequest, snapshot: TopologySnapshot,
                   candidates: Sequence[Candidate], priority: int,
                   config: SolverConfig | None = None,
                   accelerators: frozenset[str] = frozenset({"nvidia.com/gpu"}),
                   ) -> Preemption | NoPreemption:
    """The cheapest victims among `candidates` (only those below `priority` count)
    after which `request` fits on `snapshot`."""
    config = config or SolverConfig()
    started = time.perf_counter()
    request.validate(snapshot.levels)
    pool = [c for c in candidates if c.priority < priority and c.pods]
    if not pool:
        return NoPreemption(PreemptCode.NO_CANDIDATES, "no running pod of lower priority "
                            "may be preempted", time.perf_counter() - started)
    model = _VictimModel(request, snapshot, pool, accelerators)
    if model.hopeless:
        return _would_not_fit(request, model.gone, pool, config, started)
    cuts: list[frozenset[int]] = []
    for _ in range(VERIFY_ROUNDS):
        remaining = config.time_limit_s - (time.perf_counter() - started)
        found = model.cheapest(cuts, max(remaining, MIN_SEARCH_S), config)
        if found is None:
            break  # no set within the time left (infeasible is `hopeless`, above)
        if found == "infeasible":
            if not cuts:
                return _would_not_fit(request, model.gone, pool, config, started)
            break
        assert not isinstance(found, str)
        chosen, proven = found
        victims = tuple(pool[i] for i in sorted(chosen))
        vset = VictimSet(victims, cost_of(victims, accelerators))
        placement = solve(request, without(snapshot, vset.pods), config)
        if isinstance(placement, Placement):
            # The runner-up is for explain: searched only with time left in the limit.
            left = config.time_limit_s - (time.perf_counter() - started)
            runner = model.runner_up(cuts, chosen, config) if left >= MIN_STAGE_S else None
            runner_set = None
            if runner is not None:
                others = tuple(pool[i] for i in sorted(runner))
                runner_set = VictimSet(others, cost_of(others, accelerators))
            return Preemption(vset, placement, "OPTIMAL" if proven and not cuts else
                              "FEASIBLE", runner_set, len(pool),
                              time.perf_counter() - started)
        cuts.append(chosen)
    return NoPreemption(PreemptCode.NOT_FOUND, f"no victim set among {len(pool)} candidate(s) "
                        f"made room the placement accepts within "
                        f"{config.time_limit_s:.1f}s", time.perf_counter() - started)


def _would_not_fit(request: GangRequest, gone: TopologySnapshot, pool: list[Candidate],
                   config: SolverConfig, started: float) -> NoPreemption:
    """`gone`: the snapshot with every candidate gone."""
    result = solve(request, gone, config)
    why = result.reason if not isinstance(result, Placement) else (
        "the room every lower-priority pod frees is not enough for the whole gang")
    return NoPreemption(PreemptCode.WOULD_NOT_FIT, f"would not fit even with all {len(pool)} "
                        f"lower-priority victim(s) gone: {why}", time.perf_counter() - started)


class _VictimModel:
    """The aggregates of one preemption problem, and the CP-SAT stages over them."""

    def __init__(self, request: GangRequest, snapshot: TopologySnapshot,
                 pool: list[Candidate], accelerators: frozenset[str]) -> None:
        tree = snapshot.tree
        shapes = request.shapes
        self.demand = [sum(1 for m in request.members if m.shape == s)
                       for s in range(len(shapes))]
        gone = self.gone = without(snapshot, (p for c in pool for p in c.pods))
        now = np.stack([fit_shape(snapshot, sh).capacity for sh in shapes], axis=1)
        best = np.stack([fit_shape(gone, sh).capacity for sh in shapes], axis=1)
        self.required = (tree.levels.index(request.required_level)
                         if request.required_level else None)
        level = self.required
        domain_of = (tree.domain_of[level] if level is not None
                     else np.zeros(len(tree.nodes), dtype=np.int64))
        domains = tree.domain_count(level) if level is not None else 1
        # What each domain holds at best: domains that cannot hold the demand are out.
        most = np.stack([np.bincount(domain_of, weights=best[:, s], minlength=domains)
                         for s in range(len(shapes))], axis=1)
        self.domains = [int(d) for d in np.flatnonzero(np.all(most >= self.demand, axis=1))]
        self.hopeless = not self.domains
        self.constant = np.stack([np.bincount(domain_of, weights=now[:, s], minlength=domains)
                                  for s in range(len(shapes))], axis=1).astype(np.int64)
        self.priority_rank = _ranks([c.priority for c in pool])
        self.weight = [_weight(c, accelerators) for c in pool]
        self.count = len(pool)
        self.linear: dict[tuple[int, int], IntArray] = {}
        """(victim, domain) -> pods per shape its eviction adds there (single-victim nodes)."""
        self.subsets: list[tuple[int, tuple[tuple[frozenset[int], IntArray], ...]]] = []
        """Per multi-victim node: its domain and, per subset, pods per shape it adds."""
        if self.hopeless:
            return
        self._aggregate(snapshot, shapes, pool, now, best, domain_of)

    def _aggregate(self, snapshot: TopologySnapshot, shapes: Sequence[PodShape],
                   pool: list[Candidate], now: IntArray, best: IntArray,
                   domain_of: IntArray) -> None:
        """Vectorised over the nodes with one candidate (nearly all of them); the few
        with several take the subset loop."""
        index = snapshot.tree.index
        column = {name: i for i, name in enumerate(snapshot.resources)}
        wanted = sorted({r for sh in shapes for r, amount in sh.requests.items()
                         if amount > 0 and r in column})
        req = np.array([[sh.requests.get(r, 0) for r in wanted] for sh in shapes],
                       dtype=np.int64).reshape(len(shapes), len(wanted))
        pods = [pod for cand in pool for pod in cand.pods]
        owner = np.repeat(np.arange(len(pool), dtype=np.int64), [len(c.pods) for c in pool])
        at = np.fromiter((index.get(pod.node_name, -1) for pod in pods), dtype=np.int64,
                         count=len(pods))
        amounts = np.zeros((len(pods), len(wanted)), dtype=np.int64)
        for i, r in enumerate(wanted):
            amounts[:, i] = np.fromiter((pod.requests.get(r, 0) for pod in pods),
                                        dtype=np.int64, count=len(pods))
        on_tree = at >= 0
        if not on_tree.any():
            return
        amounts = amounts[on_tree]
        rows = np.stack([at[on_tree], owner[on_tree]], axis=1)
        pairs = rows
        keys, inverse = np.unique(pairs[:, 0] * self.count + pairs[:, 1], return_inverse=True)
        freed = np.zeros((len(keys), len(wanted)), dtype=np.int64)
        np.add.at(freed, inverse, amounts)
        nodes, victims = keys // self.count, keys % self.count
        per_node = np.bincount(nodes, minlength=len(snapshot.tree.nodes))
        free = np.maximum(snapshot.free[:, [column[r] for r in wanted]], 0) if wanted else \
            np.zeros((len(snapshot.tree.nodes), 0), dtype=np.int64)

        def holds(at: IntArray, gone: IntArray) -> IntArray:
            """Pods per shape each node `at` holds with `gone` given back (rows)."""
            room = free[at] + gone
            out = np.empty((len(at), len(shapes)), dtype=np.int64)
            for s in range(len(shapes)):
                asked = req[s] > 0
                fit = (np.min(room[:, asked] // req[s][asked], axis=1) if asked.any()
                       else best[at, s])
                out[:, s] = np.minimum(fit, best[at, s])
            held: IntArray = np.maximum(out, now[at])
            return held

        single = per_node[nodes] == 1
        usable = best[nodes].any(axis=1)
        one = single & usable
        if one.any():
            at = nodes[one]
            gain = holds(at, freed[one]) - now[at]
            slot_keys = victims[one] * (int(domain_of.max()) + 1) + domain_of[at]
            uniq, where = np.unique(slot_keys, return_inverse=True)
            sums = np.zeros((len(uniq), len(shapes)), dtype=np.int64)
            np.add.at(sums, where, gain)
            width = int(domain_of.max()) + 1
            for key, row in zip(uniq.tolist(), sums, strict=True):
                if row.any():
                    self.linear[key // width, key % width] = row
        several = ~single & usable
        by_node: dict[int, dict[int, IntArray]] = defaultdict(dict)
        for k in np.flatnonzero(several).tolist():
            by_node[int(nodes[k])][int(victims[k])] = freed[k]
        for node, by_victim in by_node.items():
            base = now[node]
            members = sorted(by_victim)
            family: list[tuple[int, ...]]
            if len(members) <= MAX_SUBSETS_ALL:
                family = [t for k in range(1, len(members) + 1)
                          for t in itertools.combinations(members, k)]
            else:
                family = [(v,) for v in members] + [tuple(members)]
            gone = np.array([sum((by_victim[v] for v in subset),
                                 np.zeros(len(wanted), np.int64)) for subset in family])
            gains = holds(np.full(len(family), node), gone) - base
            options = tuple((frozenset(subset), gain) for subset, gain
                            in zip(family, gains, strict=True) if gain.any())
            if options:
                self.subsets.append((int(domain_of[node]), options))

    # -- the CP-SAT stages ------------------------------------------------------------
    def _build(self, cuts: list[frozenset[int]]
               ) -> tuple[cp_model.CpModel, list[cp_model.IntVar], cp_model.IntVar]:
        model = cp_model.CpModel()
        x = [model.new_bool_var(f"x{v}") for v in range(self.count)]
        top = max(self.priority_rank, default=0)
        highest = model.new_int_var(0, top, "highest")
        for v, rank in enumerate(self.priority_rank):
            if rank:
                model.add(highest >= rank).only_enforce_if(x[v])
        terms: dict[int, list[list[tuple[int, cp_model.IntVar]]]] = defaultdict(
            lambda: [[] for _ in self.demand])
        for (v, domain), gain in self.linear.items():
            for s, g in enumerate(gain):
                if g:
                    terms[domain][s].append((int(g), x[v]))
        for n, (domain, options) in enumerate(self.subsets):
            picks = []
            for k, (subset, gain) in enumerate(options):
                y = model.new_bool_var(f"y{n}_{k}")
                for v in subset:
                    model.add_implication(y, x[v])
                picks.append(y)
                for s, g in enumerate(gain):
                    if g:
                        terms[domain][s].append((int(g), y))
            model.add_at_most_one(picks)
        chosen = [model.new_bool_var(f"z{d}") for d in self.domains]
        model.add_exactly_one(chosen)
        for z, domain in zip(chosen, self.domains, strict=True):
            for s, need in enumerate(self.demand):
                have = int(self.constant[domain, s])
                if have >= need:
                    continue
                expr = sum(g * var for g, var in terms[domain][s])
                model.add(have + expr >= need).only_enforce_if(z)
        for cut in cuts:  # a set the placement refused: evict something outside it
            model.add_bool_or([x[v] for v in range(self.count) if v not in cut])
        return model, x, highest

    def cheapest(self, cuts: list[frozenset[int]], seconds: float, config: SolverConfig
                 ) -> tuple[frozenset[int], bool] | str | None:
        """The lexicographically cheapest set, and whether every stage was proven;
        "infeasible" when no set exists (proven), None when none was found in time."""
        model, x, highest = self._build(cuts)
        stages = [highest, sum(x), sum(w * var for w, var in zip(self.weight, x, strict=True))]
        solver = cp_model.CpSolver()
        proven = True
        values: list[int] = []
        for k, objective in enumerate(stages):
            model.minimize(objective)
            configure(solver, config, max(seconds / (len(stages) - k), MIN_STAGE_S),
                      small_models=True)
            started = time.perf_counter()
            status = solver.solve(model)
            seconds -= time.perf_counter() - started
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                if not values:
                    return "infeasible" if status == cp_model.INFEASIBLE else None
                proven = False  # this stage found nothing in time: the last set stands
                break
            proven = proven and status == cp_model.OPTIMAL
            value = round(solver.objective_value)
            values.append(value)
            chosen = frozenset(v for v in range(self.count) if solver.boolean_value(x[v]))
            clear_hints(model)
            for v in range(self.count):
                model.add_hint(x[v], v in chosen)
            model.add(objective <= value)
        return chosen, proven

    def runner_up(self, cuts: list[frozenset[int]], chosen: frozenset[int],
                  config: SolverConfig) -> frozenset[int] | None:
        """The next cheapest set (one weighted stage, a short limit): not `chosen`."""
        model, x, highest = self._build(cuts)
        model.add_bool_or([x[v] if v not in chosen else ~x[v] for v in range(self.count)])
        weights = sum(self.weight) + 1
        model.minimize(highest * (self.count + 1) * weights + sum(x) * weights
                       + sum(w * var for w, var in zip(self.weight, x, strict=True)))
        solver = cp_model.CpSolver()
        configure(solver, config, MIN_STAGE_S, small_models=True)
        if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        return frozenset(v for v in range(self.count) if solver.boolean_value(x[v]))


def _ranks(priorities: list[int]) -> list[int]:
    order = {p: i for i, p in enumerate(sorted(set(priorities)))}
    return [order[p] for p in priorities]


def _weight(candidate: Candidate, accelerators: frozenset[str]) -> int:
    """Accelerators first, then pods: 1,000,000 per accelerator, 1 per pod (the order
    of `VictimCost` while a victim set has fewer than a million pods)."""
    held = sum(pod.requests.get(name, 0) for pod in candidate.pods for name in accelerators)
    return held * 1_000_000 + len(candidate.pods)
