"""What the solver answers: a Placement or an Unschedulable with its Diagnosis.

Pure data: a failure is a Diagnosis with typed codes. Text is rendered only by
`Diagnosis.message()` and `to_json()`, for Events, the CLI and the HTTP API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from solver.reasons import Exclusion, FitCode, by_count
from topology.presets import short_level
from topology.quantity import BASIC_RESOURCES, format_units


class Assignment(NamedTuple):
    """One pod's node. A tuple, not a frozen dataclass: a 90,000-pod gang builds 90,000 of
    them, and a frozen dataclass's __init__ costs ~3 us each (0.3 s)."""

    pod: str
    rank: int
    node: str
    domain: str


@dataclass(frozen=True)
class Metrics:
    domains_used: dict[str, int]
    lower_bound: dict[str, int | None]
    ring_hops: int
    max_distance: int


@dataclass(frozen=True)
class SolverInfo:
    algorithm: Literal["cpsat", "greedy", "nearby"]
    status: str
    solve_s: float
    model_s: float = 0.0
    stages: tuple[tuple[str, int, str], ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"algorithm": self.algorithm, "status": self.status,
                               "solve_s": round(self.solve_s, 4)}
        if self.stages:
            out["stages"] = [{"objective": name, "value": value, "status": status}
                             for name, value, status in self.stages]
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class LevelFit:
    """At one level: how many pods the best single domain holds, against the demand."""

    level: str
    best_domain: str
    best_fits: int
    demand: int


@dataclass(frozen=True)
class SliceFit:
    """Slices that did not fit: how many sub-groups of `size` pods need a domain of
    `level` each, and how many such domains can hold one."""

    level: str
    count: int
    size: int
    domains_fit: int
    exclusive: bool


@dataclass(frozen=True)
class Diagnosis:
    code: FitCode
    demand: int
    shape: str
    """Readable requests of the limiting shape, e.g. "8 nvidia.com/gpu"."""
    total_nodes: int
    cluster_fits: int
    levels: tuple[LevelFit, ...]
    excluded: dict[Exclusion, int]
    required_level: str | None = None
    min_member: int | None = None
    unlabelled_nodes: int = 0
    refusals: tuple[Exclusion, ...] = ()
    """Whole-pod reasons every node is excluded for (kube-scheduler's PreFilter
    failures, or a gang rule Phalanx refuses), before any per-node count."""
    notes: tuple[str, ...] = ()
    """Soft rules not scored (preferred terms, ScheduleAnyway)."""
    capped: tuple[str, ...] = ()
    """Rules among the gang's own pods that capped domains (anti-affinity, spread)."""
    slices: SliceFit | None = None
    """The gang's slices, when they are what does not fit."""

    def limiting(self) -> LevelFit | None:
        if self.required_level is None:
            return None
        return next((lf for lf in self.levels if lf.level == self.required_level), None)

    def message(self) -> str:
        parts = [reason.render() for reason in self.refusals]
        if parts:
            return "; ".join(parts)
        if self.slices is not None:
            sl = self.slices
            alone = ", each alone in its domain" if sl.exclusive else ""
            parts.append(f"{sl.count} slice(s) of {sl.size} pods of {self.shape}, each inside "
                         f"one {short_level(sl.level)} domain{alone}: "
                         f"{sl.domains_fit} such domain(s) can hold one")
        required = self.limiting()
        if required is not None and required.best_fits < required.demand:
            where = f" ({required.best_domain})" if required.best_domain else ""
            parts.append(
                f"required topology {required.level}: {required.demand} pods of {self.shape}; "
                f"the largest {short_level(required.level)} domain fits {required.best_fits}{where}"
            )
        elif self.slices is None or self.cluster_fits < self.demand:
            parts.append(f"{self.demand} pods of {self.shape}; the whole cluster fits "
                         f"{self.cluster_fits}")
        if self.min_member is not None:
            parts[-1] += f" (minMember {self.min_member})"
        if self.capped:
            parts[-1] += f", counting the gang's own {' and '.join(self.capped)}"
        excluded = sum(self.excluded.values())
        if excluded:
            reasons = ", ".join(f"{count:,} {reason}" for reason, count in
                                by_count(self.excluded))
            parts.append(f"{excluded:,}/{self.total_nodes:,} nodes excluded: {reasons}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "demand": self.demand,
            "shape": self.shape,
            "total_nodes": self.total_nodes,
            "cluster_fits": self.cluster_fits,
            "required_level": self.required_level,
            "levels": [lf.__dict__ for lf in self.levels],
            "excluded": {reason.render(): count for reason, count in by_count(self.excluded)},
            "unlabelled_nodes": self.unlabelled_nodes,
            "refusals": [reason.render() for reason in self.refusals],
            "notes": list(self.notes),
            **({"slices": self.slices.__dict__} if self.slices is not None else {}),
        }


@dataclass(frozen=True)
class Placement:
    gang: str
    assignments: tuple[Assignment, ...]
    metrics: Metrics
    solver: SolverInfo
    chosen: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Domains used per level, as rendered paths in tree order."""
    unplaced: tuple[str, ...] = ()
    """Members left pending because only minMember of them were placed."""
    preferred_level: str | None = None
    preferred_met: bool | None = None
    notes: tuple[str, ...] = ()
    """Soft rules not scored (preferred terms, ScheduleAnyway)."""
    status: Literal["placed"] = "placed"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "gang": self.gang,
            "solver": self.solver.to_json(),
            "assignments": [{"pod": a.pod, "rank": a.rank, "node": a.node, "domain": a.domain}
                            for a in self.assignments],
            "metrics": self.metrics.__dict__,
        }
        if self.unplaced:
            out["unplaced"] = list(self.unplaced)
        if self.preferred_level is not None:
            out["preferred"] = {"level": self.preferred_level, "met": self.preferred_met}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Unschedulable:
    gang: str
    diagnosis: Diagnosis
    solver: SolverInfo
    status: Literal["unschedulable"] = "unschedulable"

    @property
    def reason(self) -> str:
        return self.diagnosis.message()

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "gang": self.gang, "reason": self.reason,
                "diagnosis": self.diagnosis.to_json(), "solver": self.solver.to_json(),
                "assignments": []}


def describe_requests(requests: dict[str, int]) -> str:
    """The resources that matter for placement, accelerators first: "8 nvidia.com/gpu"."""
    special = [r for r in sorted(requests) if r not in BASIC_RESOURCES]
    chosen = special or [r for r in ("cpu", "memory") if r in requests]
    return ", ".join(f"{format_units(r, requests[r])} {r}" for r in chosen) or "no resources"
