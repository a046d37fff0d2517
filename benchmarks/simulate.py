"""Fleet-scale simulation (issue 18): a job trace on 100,000 synthetic nodes, solver alone.

    .venv/bin/python -m benchmarks.simulate [--nodes 100000] [--jobs 6000] [--seed 1]
        [--load 0.9] [--algorithms cpsat,greedy] [--time-limit 1.0] [--out DIR]

No API server: the fleet is `topology.synthetic`'s p5 UltraCluster (fan-out 8/16/32,
ragged racks, empty at the start), its free GPUs an array, and each scheduler is
`solver.solve` with a `SolverConfig`: `cpsat` is Phalanx, `greedy` the Kueue-style
BestFit baseline (`solver.greedy`, level by level; the same one `solver_scale` compares).
The trace is `benchmarks.trace` (its docstring names the published statistics it follows
and which numbers are our choice); both schedulers replay the very same jobs.

Event-driven, in simulated seconds: arrivals join a queue ordered by priority, then
arrival; completions give their nodes back. At each event the waiting jobs are tried in
queue order, each that can start is placed at once (backfilling: a job that does not fit
does not hold back smaller ones behind it, as Phalanx's cycle and Kueue's BestEffortFIFO
do; nothing is reserved, nothing preempted). A job is solved only when it can fit: with
whole-node pods and one shape, "enough free nodes in one domain of its required level
(or in the fleet)" is exact, so a blocked job costs a comparison, not a solve, and is
looked at again only when capacity frees (a completion). Every placement is one
`solve()` on a snapshot of that moment; greedy's placements are also solved by CP-SAT on
the same snapshot (not counted in greedy's time) to know the optimum they are held to.

The run ends one median job duration after the last arrival; jobs still waiting then are
"never started". Metrics (`benchmarks.replay`): waits, GPU allocation and fragmentation
over time, domains per job against the optimum, never-started jobs; "steady" figures are
time-weighted over the second half of the arrival span (the fleet starts empty, and
after the last arrival it only drains).
`cpu_s` is this process's CPU time in `solve()`: the machine is shared, so wall time
counts other processes' turns too. Writes `simulate-<time>.json` and one PNG per metric.
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.replay import (
    GPU,
    GPUS_PER_POD,
    JobRecord,
    Sample,
    fragmented_gpus,
    gang_request,
    median_or_none,
    render,
    required_level,
    summarize,
)
from benchmarks.report import print_result
from benchmarks.trace import Job, TraceSpec, generate, median_pods
from gcpause import gc_paused
from localcluster.binaries import REPO
from solver.request import Algorithm, GangRequest, SolverConfig
from solver.result import Placement, Unschedulable
from solver.solve import solve
from topology.presets import resolve_preset
from topology.records import node_from_json
from topology.snapshot import DomainTree, IntArray, TopologySnapshot, build_tree
from topology.synthetic import ClusterSpec, synth_nodes

RESOURCES = (GPU, "pods")


class Fleet:
    """The free GPUs and pod slots per node (tree order) as jobs come and go; everything
    else about a node never changes here."""

    def __init__(self, tree: DomainTree) -> None:
        self.tree = tree
        self.gpus = tree.allocatable(GPU).copy()
        self.slots = tree.allocatable("pods").copy()
        self.total_gpus = int(self.gpus.sum())
        self._room: list[IntArray] = []
        self._refresh()

    def _refresh(self) -> None:
        """Per level, pods of the trace's shape each domain has room for."""
        room = np.minimum(self.gpus // GPUS_PER_POD, self.slots)
        self._room = [self.tree.per_domain(level, room) for level in range(self.tree.depth)]

    def can_fit(self, request: GangRequest) -> bool:
        """Exact for the trace's gangs (one whole-node shape, no inter-pod rules): some
        domain of the required level (the top level otherwise: the fleet) has room."""
        level = (self.tree.levels.index(request.required_level)
                 if request.required_level else 0)
        need = request.min_member
        return bool(self._room[level].sum() >= need if request.required_level is None
                    else self._room[level].max() >= need)

    def snapshot(self) -> TopologySnapshot:
        free = np.stack([self.gpus, self.slots], axis=1)
        free.flags.writeable = False
        return TopologySnapshot(tree=self.tree, resources=RESOURCES, free=free)

    def take(self, nodes: IntArray) -> None:
        np.subtract.at(self.gpus, nodes, GPUS_PER_POD)
        np.subtract.at(self.slots, nodes, 1)
        if (self.gpus[nodes] < 0).any() or (self.slots[nodes] < 0).any():
            raise AssertionError(f"over-committed nodes: {np.unique(nodes[self.gpus[nodes] < 0])}")
        self._refresh()

    def give_back(self, nodes: IntArray) -> None:
        np.add.at(self.gpus, nodes, GPUS_PER_POD)
        np.add.at(self.slots, nodes, 1)
        self._refresh()


@dataclass
class Run:
    algorithm: str
    records: list[JobRecord]
    samples: list[Sample]
    wall_s: float
    cpu_s: float
    audit_s: float
    unproven: int
    """Placements whose CP-SAT optimum was not proven within the time limit."""


def _sample(fleet: Fleet, now: float, need_gpus: int) -> Sample:
    free = int(fleet.gpus.sum())
    return Sample(now, fleet.total_gpus - free, 0, free,
                  fragmented_gpus(fleet.tree, fleet.gpus, need_gpus))


def replay(tree: DomainTree, jobs: Sequence[Job], algorithm: Algorithm, time_limit: float,
           end_s: float) -> Run:
    """The trace on an empty fleet through one scheduler (see the module docstring)."""
    fleet = Fleet(tree)
    config = SolverConfig(algorithm=algorithm, time_limit_s=time_limit, seed=0, workers=1)
    optimum_config = SolverConfig(algorithm="cpsat", time_limit_s=time_limit, seed=0,
                                  workers=1)
    need_gpus = median_pods(list(jobs)) * GPUS_PER_POD
    records = [JobRecord(job) for job in jobs]
    requests = [gang_request(job, tree) for job in jobs]
    events: list[tuple[float, int, int]] = [(job.arrival_s, 1, job.number) for job in jobs]
    heapq.heapify(events)
    waiting: list[tuple[int, float, int]] = []  # (-priority, arrival, index), kept sorted
    placed_on: dict[int, IntArray] = {}
    samples = [_sample(fleet, 0.0, need_gpus)]
    cpu = audit = 0.0
    unproven = 0
    wall = time.perf_counter()
    while events and events[0][0] <= end_s:
        now = events[0][0]
        freed, arrived = False, []
        while events and events[0][0] == now:
            _, kind, index = heapq.heappop(events)
            if kind == 0:
                fleet.give_back(placed_on.pop(index))
                freed = True
            else:
                job = jobs[index]
                arrived.append((-job.priority.value, job.arrival_s, index))
        for entry in arrived:
            waiting.insert(_position(waiting, entry), entry)
        # A blocked job is looked at again only when room was given back.
        candidates = waiting if freed else arrived
        started: set[int] = set()
        for _, _, index in list(candidates):
            request = requests[index]
            if not fleet.can_fit(request):
                continue
            snapshot = fleet.snapshot()
            c0, t0 = time.process_time(), time.perf_counter()
            result = solve(request, snapshot, config)
            solve_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
            cpu += cpu_s
            if not isinstance(result, Placement):
                continue  # cannot happen for these gangs (can_fit is exact); never hidden
            record = records[index]
            record.start_s, record.solve_s, record.cpu_s = now, solve_s, cpu_s
            record.domains_used = dict(result.metrics.domains_used)
            record.lower_bound = dict(result.metrics.lower_bound)
            optimum: Placement | Unschedulable = result
            if algorithm != "cpsat":
                a0 = time.process_time()
                optimum = solve(request, snapshot, optimum_config)
                audit += time.process_time() - a0
            if isinstance(optimum, Placement):
                record.optimum = dict(optimum.metrics.domains_used)
                unproven += not optimum.solver.status.startswith("OPTIMAL")
            nodes = np.fromiter((tree.index[a.node] for a in result.assignments),
                                dtype=np.int64, count=len(result.assignments))
            fleet.take(nodes)
            placed_on[index] = nodes
            heapq.heappush(events, (now + jobs[index].duration_s, 0, index))
            started.add(index)
        if started:
            waiting = [entry for entry in waiting if entry[2] not in started]
        samples.append(_sample(fleet, now, need_gpus))
    return Run(algorithm, records, samples, time.perf_counter() - wall, cpu, audit, unproven)


def _position(waiting: list[tuple[int, float, int]], entry: tuple[int, float, int]) -> int:
    lo, hi = 0, len(waiting)
    while lo < hi:
        mid = (lo + hi) // 2
        if waiting[mid] < entry:
            lo = mid + 1
        else:
            hi = mid
    return lo


def fleet_tree(nodes: int, seed: int) -> DomainTree:
    spec = ClusterSpec(nodes=nodes, seed=seed)
    with gc_paused():
        records = [node_from_json(n) for n in synth_nodes(spec)]
    return build_tree(records, resolve_preset("aws"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.9,
                        help="offered load: pod-seconds asked per second over the nodes")
    parser.add_argument("--median-duration", type=float, default=3600.0,
                        help="median job duration, simulated seconds")
    parser.add_argument("--max-pods", type=int, default=1024)
    parser.add_argument("--required-share", type=float, default=0.5)
    parser.add_argument("--algorithms", default="cpsat,greedy")
    parser.add_argument("--time-limit", type=float, default=1.0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine reports of the same trace run one algorithm each "
                             "(in parallel processes) into one table and one set of plots")
    args = parser.parse_args(argv)
    if args.merge:
        return _merge([json.loads(Path(p).read_text()) for p in args.merge], Path(args.out))
    spec = TraceSpec(jobs=args.jobs, seed=args.seed, capacity_pods=args.nodes, load=args.load,
                     median_duration_s=args.median_duration, max_pods=args.max_pods,
                     required_share=args.required_share)
    jobs = generate(spec)
    tree = fleet_tree(args.nodes, args.seed)
    last = jobs[-1].arrival_s
    end_s = last + spec.median_duration_s
    runs = []
    for algorithm in args.algorithms.split(","):
        if algorithm not in ("cpsat", "greedy"):
            parser.error(f"--algorithms: expected cpsat and/or greedy, got {algorithm!r}")
        runs.append(replay(tree, jobs, "cpsat" if algorithm == "cpsat" else "greedy",
                           args.time_limit, end_s))
        print(f"{algorithm}: {runs[-1].wall_s:.0f} s wall, {runs[-1].cpu_s:.0f} s CPU in "
              f"solve()", flush=True)
    return _write(_report(args, spec, tree, jobs, runs, end_s), Path(args.out))


def _write(report: dict[str, Any], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"simulate-{stamp}.json"
    path.write_text(json.dumps(report))
    from benchmarks.replay_plots import plot_all

    pngs = plot_all(report, out, f"simulate-{stamp}")
    print(render(report["rows"], time_unit="min"))
    print_result({"json": str(path), "plots": [str(p) for p in pngs],
                  "simulated_h": round(report["end_s"] / 3600, 2),
                  **{key: {r["scheduler"]: r[key] for r in report["rows"]}
                     for key in ("wall_s", "solve_cpu_s", "optimum_audit_cpu_s",
                                 "optimum_unproven")}})
    return 0


def _merge(reports: list[dict[str, Any]], out: Path) -> int:
    """One report from several of the same trace on the same fleet (each a process of
    its own, so they ran side by side): rows, series and jobs side by side."""
    first = reports[0]
    for other in reports[1:]:
        for key in ("nodes", "trace", "end_s"):
            if other[key] != first[key]:
                raise SystemExit(f"--merge: {key} differs: {first[key]} and {other[key]}")
    merged = dict(first)
    merged["rows"] = []
    for report in reports:
        for row in report["rows"]:
            # Reports written before the column existed: the same median from their jobs.
            row.setdefault("solve_cpu_median_s", median_or_none(
                [j["cpu_s"] for j in report["jobs"][row["scheduler"]]
                 if j["start_s"] is not None and j["cpu_s"] is not None]))
            merged["rows"].append(row)
    for key in ("series", "jobs"):
        merged[key] = {name: value for report in reports for name, value in report[key].items()}
    return _write(merged, out)


NAMES = {"cpsat": "phalanx (CP-SAT)", "greedy": "Kueue-style greedy"}


def _report(args: argparse.Namespace, spec: TraceSpec, tree: DomainTree, jobs: list[Job],
            runs: list[Run], end_s: float) -> dict[str, Any]:
    steady = jobs[-1].arrival_s / 2
    total = int(tree.allocatable(GPU).sum())
    return {
        "benchmark": "simulate", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nodes": args.nodes, "gpus": total, "trace": spec.__dict__, "end_s": end_s,
        "steady_from_s": steady, "median_pods": median_pods(jobs),
        "required_levels": {str(p): required_level(tree, p) for p in sorted(
            {j.pods for j in jobs})},
        "rows": [summarize(NAMES[r.algorithm], r.records, r.samples, total, steady,
                           jobs[-1].arrival_s)
                 | {"wall_s": round(r.wall_s, 1), "solve_cpu_s": round(r.cpu_s, 1),
                    "optimum_audit_cpu_s": round(r.audit_s, 1),
                    "optimum_unproven": r.unproven} for r in runs],
        "series": {NAMES[r.algorithm]: [list(s) for s in _thin(r.samples)] for r in runs},
        "jobs": {NAMES[r.algorithm]: [rec.to_json() for rec in r.records] for r in runs},
    }


def _thin(samples: list[Sample], most: int = 4000) -> list[Sample]:
    """At most `most` samples for the JSON and the plots (every k-th, and the last)."""
    step = max(1, len(samples) // most)
    return [*samples[::step], samples[-1]] if samples else []


if __name__ == "__main__":
    raise SystemExit(main())
