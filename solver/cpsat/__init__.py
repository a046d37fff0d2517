"""The CP-SAT placers. `folded` is the model for single-shape gangs (the common case:
progressive deepening with racks folded into their parents); `detailed` is the per-rack
model for heterogeneous gangs; `stages` runs a lexicographic objective on one model;
`common` holds what they share."""

from __future__ import annotations

from solver.cpsat.common import CpsatResult
from solver.cpsat.detailed import solve_detailed
from solver.cpsat.folded import solve_folded
from solver.instance import Instance
from solver.plan import NodePlan
from solver.request import SolverConfig

POSTPROCESS_SHARE = 0.08
"""Share of the time limit left for extraction, rank assignment and metrics."""

__all__ = ["CpsatResult", "solve_cpsat"]


def solve_cpsat(instance: Instance, config: SolverConfig, hint: NodePlan | None,
                bounds: dict[str, int | None], started: float,
                detailed: bool = False) -> CpsatResult:
    """Single-shape gangs take the folded model; heterogeneous ones, and any with a
    rising spread minimum (`detailed`), the detailed model."""
    deadline = started + config.time_limit_s * (1.0 - POSTPROCESS_SHARE)
    if instance.shapes == 1 and not detailed and not instance.rising:
        return solve_folded(instance, config, hint, deadline, bounds)
    return solve_detailed(instance, config, hint, deadline, bounds)
