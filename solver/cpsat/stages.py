"""Lexicographic optimisation as a sequence of CP-SAT stages on one model.

Each stage minimises one objective with every earlier stage's optimum fixed, the previous
solution kept as hint. A stage whose objective is already at a *valid lower bound* in the
incumbent (e.g. greedy already uses the fewest top-level domains any placement could)
needs no search: it is proven by the bound and only its value is fixed. A stage whose
objective is constant is skipped the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model

from solver.cpsat.common import PROVEN_BY_BOUND, clear_hints, configure
from solver.request import SolverConfig


@dataclass(frozen=True)
class Stage:
    name: str
    terms: tuple[tuple[int, cp_model.IntVar], ...]
    """The objective as (coefficient, variable) pairs: evaluable on an incumbent."""
    lower_bound: int | None = None
    """A value no solution can go below; when the incumbent meets it, no search runs."""

    @property
    def objective(self) -> cp_model.LinearExpr:
        return cp_model.LinearExpr.weighted_sum([v for _, v in self.terms],
                                                [c for c, _ in self.terms])

    def value(self, values: dict[int, int]) -> int:
        return sum(coef * values[var.index] for coef, var in self.terms)


@dataclass(frozen=True)
class StagedResult:
    status: str
    """OPTIMAL when every stage was proven, FEASIBLE when a stage timed out with an
    incumbent, INFEASIBLE, or UNKNOWN (no solution within the time limit)."""
    stages: tuple[tuple[str, int, str], ...]
    values: dict[int, int] | None
    """Final value of every model variable, by its index; None without a solution."""


def run_stages(model: cp_model.CpModel, stages: Sequence[Stage],
               variables: Sequence[cp_model.IntVar], incumbent: dict[int, int] | None,
               config: SolverConfig, deadline: float) -> StagedResult:
    solver = cp_model.CpSolver()
    done: list[tuple[str, int, str]] = []
    values = dict(incumbent) if incumbent is not None else None
    for stage in stages:
        if values is not None and (stage.lower_bound is not None or not stage.terms):
            current = stage.value(values)
            if not stage.terms or current <= (stage.lower_bound or 0):
                model.add(stage.objective <= current)
                done.append((stage.name, current, PROVEN_BY_BOUND))
                continue
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return StagedResult("FEASIBLE" if values else "UNKNOWN", tuple(done), values)
        _hint(model, variables, values)
        model.minimize(stage.objective)
        configure(solver, config, remaining)
        code = solver.solve(model)
        if code == cp_model.INFEASIBLE:
            return StagedResult("INFEASIBLE", tuple(done), None)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return StagedResult("FEASIBLE" if values else "UNKNOWN", tuple(done), values)
        value = round(solver.objective_value)
        values = {var.index: solver.value(var) for var in variables}
        done.append((stage.name, value, solver.status_name(code)))
        model.add(stage.objective <= value)
        if code != cp_model.OPTIMAL:
            return StagedResult("FEASIBLE", tuple(done), values)
    return StagedResult("OPTIMAL", tuple(done), values)


def _hint(model: cp_model.CpModel, variables: Sequence[cp_model.IntVar],
          values: dict[int, int] | None) -> None:
    clear_hints(model)
    if values is not None:
        for var in variables:
            if var.index in values:
                model.add_hint(var, values[var.index])
