"""What both CP-SAT models share: their result type, the one place solver parameters are
set, and the links between a domain and its parent."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ortools.sat.python import cp_model

from solver.plan import NodePlan
from solver.request import SolverConfig
from topology.snapshot import IntArray

PROVEN_BY_BOUND = "OPTIMAL (bound)"
PROVEN_BY_ENUMERATION = "OPTIMAL (enumerated)"
PROVEN_BY_THRESHOLDS = "OPTIMAL (thresholds)"
"""The rack count met the threshold decomposition's bound (cpsat/rackcount.py)."""


@dataclass(frozen=True)
class CpsatResult:
    plan: NodePlan | None
    status: str
    stages: tuple[tuple[str, int, str], ...]
    """(stage name, objective value, status) per stage."""
    model_s: float
    solve_s: float


def configure(solver: cp_model.CpSolver, config: SolverConfig, seconds: float, *,
              small_models: bool = False) -> None:
    """Deterministic for a seed and worker count; `seconds` of search at most.
    `small_models`: the folded model's per-stage models are small and already tight, so
    CP-SAT's probing and repeated presolve passes cost more than they find (measured:
    0.7 s -> 0.15 s per stage)."""
    params = solver.parameters
    params.num_workers = max(1, config.workers)
    params.random_seed = config.seed
    params.linearization_level = 2
    params.max_time_in_seconds = seconds
    if small_models:
        params.cp_model_probing_level = 0
        params.symmetry_level = 0
        params.max_presolve_iterations = 1


def clear_hints(model: cp_model.CpModel) -> None:
    """OR-Tools' `CpModel.clear_hints` carries no annotations; the one untyped call."""
    model.clear_hints()  # type: ignore[no-untyped-call]


def add_tree_links(model: cp_model.CpModel, parent_of: tuple[IntArray, ...],
                   used: dict[tuple[int, int], cp_model.IntVar], top_level: int) -> None:
    """A used domain's parent is used; a used parent has a used child (levels 0..top)."""
    for level in range(1, top_level + 1):
        children: dict[int, list[cp_model.IntVar]] = defaultdict(list)
        for (lvl, domain), var in used.items():
            if lvl == level:
                parent = int(parent_of[level][domain])
                model.add_implication(var, used[level - 1, parent])
                children[parent].append(var)
        for (lvl, domain), var in used.items():
            if lvl == level - 1:
                model.add_bool_or(children[domain]).only_enforce_if(var)
