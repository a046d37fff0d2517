"""Victim choice at scale: a full synthetic cluster of running gangs, a high-priority
gang arrives, `solver.preempt.choose_victims` picks the victims.

    .venv/bin/python -m benchmarks.preempt_scale [--nodes 100000] [--gangs 5000]
        [--preemptors 16:rack 256 1024] [--seeds 1 2 3]

The cluster is filled, in tree order, by about `--gangs` running gangs of 8-GPU pods
(exponential sizes averaging nodes/gangs, every node taken, so gangs straddle racks as
they do in life), priorities 0-9. Each preemptor (`SIZE`, or `SIZE:rack` for a required
layer-3 domain; priority 100) is solved by CP-SAT and by the reference a scheduler without a victim
model uses (kube-scheduler's order: lowest priority first, then the largest, evicting
whole gangs until the gang fits, checked by the same placement solver), in the same
run. Prints one JSON object per case, then a table with both costs and times.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from gcpause import gc_paused
from solver.preempt import Candidate, Preemption, VictimCost, choose_victims, cost_of
from solver.request import GangRequest, Member, PodShape, SolverConfig
from solver.result import Placement
from solver.solve import solve
from topology.presets import AWS_LAYER, resolve_preset
from topology.records import PodRecord, node_from_json
from topology.snapshot import TopologySnapshot, build_tree, snapshot_of, without
from topology.synthetic import ClusterSpec, synth_nodes

GPU = "nvidia.com/gpu"
ACCELERATORS = frozenset({GPU})


def running(tree_nodes: list[str], gangs: int, seed: int) -> list[Candidate]:
    rng = random.Random(seed)
    mean = len(tree_nodes) / gangs
    units: list[Candidate] = []
    at, g = 0, 0
    while at < len(tree_nodes):
        size = max(1, min(int(rng.expovariate(1 / mean)) + 1, 4 * int(mean) + 1,
                          len(tree_nodes) - at))
        priority = rng.randrange(10)
        pods = tuple(PodRecord("bench", f"g{g}-{i}", uid=f"g{g}-{i}",
                               node_name=tree_nodes[at + i], phase="Running",
                               requests={GPU: 8, "pods": 1, "cpu": 8000}, priority=priority)
                     for i in range(size))
        at += size
        units.append(Candidate(f"Gang bench/g{g}", priority, pods, gang=True))
        g += 1
    return units


def preemptor(spec: str) -> GangRequest:
    size_text, _, level = spec.partition(":")
    size = int(size_text)
    members = tuple(Member(f"hi-{i}", i, 0) for i in range(size))
    return GangRequest(f"bench/hi{spec}", (PodShape({GPU: 8, "pods": 1, "cpu": 8000}),),
                       members, size, AWS_LAYER[2] if level == "rack" else None)


def reference(request: GangRequest, snapshot: TopologySnapshot, units: list[Candidate],
              config: SolverConfig) -> tuple[list[Candidate] | None, int]:
    """Lowest priority first, then largest: evict until the gang fits (binary search on
    the prefix length, each probe a placement solve). Returns victims and solves."""
    order = sorted(units, key=lambda c: (c.priority, -len(c.pods), c.name))
    solves = 0

    def fits(k: int) -> bool:
        nonlocal solves
        solves += 1
        gone = [p for c in order[:k] for p in c.pods]
        return isinstance(solve(request, without(snapshot, gone), config), Placement)

    if not fits(len(order)):
        return None, solves
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return order[:lo], solves


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    config = SolverConfig(time_limit_s=args.time_limit)
    for seed in args.seeds:
        raw = synth_nodes(ClusterSpec(nodes=args.nodes, seed=seed, ragged=0.25))
        with gc_paused():
            records = [node_from_json(n) for n in raw]
        del raw
        tree = build_tree(records, resolve_preset("aws"))
        units = running([n.name for n in tree.nodes], args.gangs, seed)
        placed = [(p.node_name, p) for u in units for p in u.pods]
        used: dict[str, dict[str, int]] = {}
        for node, pod in placed:
            slot = used.setdefault(node, {})
            for r, amount in pod.requests.items():
                slot[r] = slot.get(r, 0) + amount
        snapshot = snapshot_of(tree, used, placed)
        for spec in args.preemptors:
            request = preemptor(spec)
            t0 = time.perf_counter()
            outcome = choose_victims(request, snapshot, units, 100, config, ACCELERATORS)
            model_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref, probes = reference(request, snapshot, units, config)
            ref_s = time.perf_counter() - t0
            row: dict[str, Any] = {"nodes": len(tree.nodes), "running_gangs": len(units),
                                   "seed": seed, "preemptor": spec,
                                   "cpsat_s": round(model_s, 3),
                                   "reference_s": round(ref_s, 3), "reference_solves": probes}
            if isinstance(outcome, Preemption):
                row.update(status=outcome.status, cost=_cost(outcome.chosen.cost),
                           runner_up=_cost(outcome.runner_up.cost) if outcome.runner_up
                           else None)
            else:
                row.update(status=outcome.code.value, cost=None)
            row["reference_cost"] = _cost(cost_of(ref, ACCELERATORS)) if ref else None
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _cost(cost: VictimCost) -> dict[str, int]:
    return {"priority": cost.priority, "victims": cost.victims,
            "accelerators": cost.accelerators, "pods": cost.pods}


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| nodes | running gangs | preemptor | CP-SAT median / max s | status | CP-SAT cost "
           "(prio/victims/GPUs) | reference median s | reference cost | time ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    for spec in dict.fromkeys(r["preemptor"] for r in rows):
        group = [r for r in rows if r["preemptor"] == spec]
        cp = [r["cpsat_s"] for r in group]
        ref = [r["reference_s"] for r in group]

        def show(cost: dict[str, int] | None) -> str:
            return "-" if cost is None else (f"{cost['priority']}/{cost['victims']}/"
                                             f"{cost['accelerators']}")
        costs = "; ".join(show(r["cost"]) for r in group)
        ref_costs = "; ".join(show(r["reference_cost"]) for r in group)
        out.append(f"| {group[0]['nodes']:,} | {group[0]['running_gangs']:,} | {spec} | "
                   f"{statistics.median(cp):.3f} / {max(cp):.3f} | "
                   f"{','.join(sorted({r['status'] for r in group}))} | {costs} | "
                   f"{statistics.median(ref):.3f} | {ref_costs} | "
                   f"{statistics.median(ref) / max(statistics.median(cp), 1e-9):.2f}x |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--gangs", type=int, default=5_000)
    parser.add_argument("--preemptors", nargs="+", default=["16:rack", "256", "1024"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--time-limit", type=float, default=1.0)
    args = parser.parse_args(argv)
    rows = run(args)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
