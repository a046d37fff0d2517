"""What a trace replay measures, the same for the simulation and the KWOK churn run.

Both replays (`benchmarks.simulate`, `benchmarks.churn`) turn a `benchmarks.trace` job
into the same gang request (`gang_request`), record each job (`JobRecord`) and sample the
cluster over time (`Sample`), then `summarize` and `render` them here, so a number in
the simulation table means what the same column means in the churn table.

Definitions:
- **wait**: from a job's arrival to its last pod placed (all pods: a job is *started*
  only whole). Jobs not started when the replay ends are *never started*; their waits
  are not in the percentiles.
- **GPU allocation**: GPUs held by pods on nodes over the cluster's GPUs, time-weighted;
  `partial` counts GPUs held by jobs not yet whole (kube-scheduler without gangs).
- **domains against the optimum**: per started job, the domains its pods use at each
  level against the fewest possible for the free capacity it was placed into (CP-SAT on
  that state, its own pods' room given back). "At arrival" in issue 18's wording: a job
  that waited arrives, for placement purposes, when room appears.
- **fragmentation**: free GPUs lying in layer-3 domains (AWS network-node-layer-3, the
  rack level of the synthetic fleet) whose free GPUs are fewer than the median job's
  need, as a share of all free GPUs, time-weighted: room a typical job cannot use
  without spreading over racks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from benchmarks.trace import Job
from solver.request import GangRequest, Member, PodShape
from topology.presets import AWS_LAYER
from topology.snapshot import DomainTree, IntArray

GPU = "nvidia.com/gpu"
GPUS_PER_POD = 8
LAYER3 = AWS_LAYER[2]
POD_SHAPE = PodShape({GPU: GPUS_PER_POD, "pods": 1})
"""The trace's pod: one whole p5 node (8 GPUs), as every KWOK benchmark's gang pod."""


def required_level(tree: DomainTree, pods: int) -> str:
    """The lowest level whose median domain (nodes, empty) holds `pods`: where a Kueue
    TAS user would put `podset-required-topology` for a job of that size. The top level
    when none does (a job larger than a median zone requires one zone)."""
    for level in range(tree.depth - 1, -1, -1):
        per_domain = np.bincount(tree.domain_of[level])
        if float(np.median(per_domain)) >= pods:
            return tree.levels[level]
    return tree.levels[0]


def gang_request(job: Job, tree: DomainTree) -> GangRequest:
    """The job as the solver sees it: `pods` members of one shape, all or nothing."""
    members = tuple(Member(f"{job.name}-{i}", i, 0) for i in range(job.pods))
    return GangRequest(f"trace/{job.name}", (POD_SHAPE,), members, job.pods,
                       required_level=required_level(tree, job.pods) if job.required
                       else None)


def fragmented_gpus(tree: DomainTree, free_gpus: IntArray, need_gpus: int) -> int:
    """Free GPUs in layer-3 domains holding fewer free GPUs than `need_gpus`."""
    level = tree.levels.index(LAYER3)
    per_rack = np.bincount(tree.domain_of[level], weights=free_gpus,
                           minlength=tree.domain_count(level)).astype(np.int64)
    return int(per_rack[per_rack < need_gpus].sum())


class Sample(NamedTuple):
    t: float
    allocated_gpus: int
    partial_gpus: int
    free_gpus: int
    fragmented_gpus: int


@dataclass
class JobRecord:
    job: Job
    start_s: float | None = None
    domains_used: dict[str, int] = field(default_factory=dict)
    optimum: dict[str, int] = field(default_factory=dict)
    lower_bound: dict[str, int | None] = field(default_factory=dict)
    solve_s: float | None = None
    cpu_s: float | None = None

    @property
    def wait_s(self) -> float | None:
        return None if self.start_s is None else self.start_s - self.job.arrival_s

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job.name, "pods": self.job.pods, "arrival_s": self.job.arrival_s,
                "duration_s": self.job.duration_s, "priority": self.job.priority.name,
                "required": self.job.required, "start_s": self.start_s,
                "domains_used": self.domains_used, "optimum": self.optimum,
                "lower_bound": self.lower_bound, "solve_s": self.solve_s, "cpu_s": self.cpu_s}


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _time_weighted(samples: Sequence[Sample], value: Any, start: float, end: float) -> float:
    """Mean of a step function (each sample holds until the next) over [start, end]."""
    total = weight = 0.0
    for here, after in zip(samples, [*samples[1:], None], strict=True):
        lo = max(here.t, start)
        hi = min(after.t if after is not None else end, end)
        if hi > lo:
            total += value(here) * (hi - lo)
            weight += hi - lo
    return total / weight if weight else 0.0


def summarize(name: str, records: Sequence[JobRecord], samples: Sequence[Sample],
              total_gpus: int, steady_from_s: float, steady_to_s: float) -> dict[str, Any]:
    """One scheduler's row: waits, starts, domains, and allocation and fragmentation
    time-weighted over [steady_from_s, steady_to_s] (the replay's busy stretch)."""
    started = [r for r in records if r.start_s is not None]
    waits = [w for r in started if (w := r.wait_s) is not None]
    levels = [k for k in (started[0].optimum if started else {}) if "hostname" not in k]
    at_optimum = sum(1 for r in started if r.optimum and all(
        r.domains_used[k] <= r.optimum[k] for k in levels))
    rack_ratio = [r.domains_used[LAYER3] / r.optimum[LAYER3] for r in started if r.optimum]
    excess = [r.domains_used[LAYER3] - r.optimum[LAYER3] for r in started if r.optimum]
    solves = [r.solve_s for r in started if r.solve_s is not None]
    solve_cpu = [r.cpu_s for r in started if r.cpu_s is not None]
    by_priority: dict[str, list[float]] = {}
    for r in started:
        if (w := r.wait_s) is not None:
            by_priority.setdefault(r.job.priority.name, []).append(w)
    return {
        "scheduler": name, "jobs": len(records), "started": len(started),
        "never_started": len(records) - len(started),
        "never_started_gpus": sum(r.job.pods * GPUS_PER_POD for r in records
                                  if r.start_s is None),
        "wait_p50_s": _percentile(waits, 50), "wait_p95_s": _percentile(waits, 95),
        "wait_max_s": max(waits) if waits else None,
        "wait_p50_by_priority_s": {k: statistics.median(v)
                                   for k, v in sorted(by_priority.items())},
        "allocation_steady": _time_weighted(samples, lambda s: s.allocated_gpus / total_gpus,
                                            steady_from_s, steady_to_s),
        "partial_steady": _time_weighted(samples, lambda s: s.partial_gpus / total_gpus,
                                         steady_from_s, steady_to_s),
        "fragmented_steady": _time_weighted(
            samples, lambda s: s.fragmented_gpus / s.free_gpus if s.free_gpus else 0.0,
            steady_from_s, steady_to_s),
        "at_optimum": at_optimum, "audited": sum(1 for r in started if r.optimum),
        "rack_ratio_median": statistics.median(rack_ratio) if rack_ratio else None,
        "rack_ratio_p95": _percentile(rack_ratio, 95),
        "excess_racks_mean": statistics.fmean(excess) if excess else None,
        "solve_median_s": statistics.median(solves) if solves else None,
        "solve_p95_s": _percentile(solves, 95),
        "solve_cpu_median_s": median_or_none(solve_cpu),
    }


def median_or_none(values: Sequence[float]) -> float | None:
    """The median solve CPU time: beside the wall time, which on a shared machine also
    counts other processes' turns."""
    return statistics.median(values) if values else None


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def render(rows: Sequence[dict[str, Any]], time_unit: str = "s") -> str:
    """The markdown table RESULTS.md records (`time_unit`: s, or min for the fleet)."""
    scale = 60.0 if time_unit == "min" else 1.0

    def t(value: float | None) -> str:
        return _fmt(None if value is None else value / scale, f" {time_unit}")
    lines = ["| scheduler | jobs | started | never started (GPUs) | wait p50 | wait p95 | "
             "wait max | GPU allocation (steady) | held by partial jobs | fragmented free "
             "GPUs | at optimum, every level | racks / optimum median (p95) | excess racks "
             "mean | solve median (p95) | solve CPU median |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['scheduler']} | {r['jobs']} | {r['started']} | {r['never_started']} "
            f"({r['never_started_gpus']:,}) | {t(r['wait_p50_s'])} | {t(r['wait_p95_s'])} | "
            f"{t(r['wait_max_s'])} | {100 * r['allocation_steady']:.1f} % | "
            f"{100 * r['partial_steady']:.1f} % | {100 * r['fragmented_steady']:.1f} % | "
            f"{r['at_optimum']}/{r['audited']} | {_fmt(r['rack_ratio_median'], digits=2)} "
            f"({_fmt(r['rack_ratio_p95'], digits=2)}) | {_fmt(r['excess_racks_mean'], digits=2)}"
            f" | {_fmt(r['solve_median_s'], ' s', 3)} ({_fmt(r['solve_p95_s'], ' s', 3)}) | "
            f"{_fmt(r.get('solve_cpu_median_s'), ' s', 3)} |")
    return "\n".join(lines)
