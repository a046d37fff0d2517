"""Solver at scale: synthetic fragmented UltraClusters, CP-SAT against greedy.

    .venv/bin/python -m benchmarks.solver_scale [--nodes 10000 100000] [--seeds 1 2 3]
        [--gangs 64 512 1024 4096] [--one-gpu 512] [--four-gpu] [--occupancy 0.5]
        [--time-limit 1.0]
        [--sliced 1024 4096 16384] [--slices 8 16 32]

Sliced cases: gangs of `--sliced` 8-GPU pods in slices of `--slices` consecutive ranks,
each slice inside one layer-3 domain; greedy is then Kueue-style slice placement (largest
first in slice units, best fit at each level).

Prints one JSON object per (nodes, seed, gang, algorithm) run, then a table per cluster
size: median and max solve_s, statuses, domains used against the lower bound per level,
ring hops, and how often greedy uses more domains than CP-SAT (lexicographically).
Snapshot building (records -> domain tree -> free capacity; the per-node usage sums are
kept incrementally by the scheduler's cache and not counted) is timed separately.
`cpu_s` is the process CPU time of the solve (one CP-SAT worker): on a shared machine
the wall time also counts other processes' turns, and CP-SAT's limit is wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from typing import Any

from gcpause import gc_paused
from solver.request import GangRequest, Member, PodShape, SolverConfig, SubGroup
from solver.result import Placement
from solver.slices import slice_level, slices_whole
from solver.solve import solve
from topology.presets import resolve_preset
from topology.records import node_from_json, pod_from_json
from topology.snapshot import build_tree, snapshot_of, usage_from_pods
from topology.synthetic import ClusterSpec, synth_load, synth_nodes

GPU = "nvidia.com/gpu"


LAYER3 = "topology.k8s.aws/network-node-layer-3"


def gang(size: int, gpus: int, slice_size: int = 0) -> GangRequest:
    shape = PodShape({GPU: gpus, "vpc.amazonaws.com/efa": 4 * gpus, "cpu": 20_000 * gpus,
                      "memory": 200 * 2**30 * gpus // 8 * 1, "pods": 1})
    members = tuple(Member(f"train-{i}", i, 0) for i in range(size))
    slices = tuple(SubGroup(f"slice-{k}", LAYER3, tuple(
        f"train-{i}" for i in range(k * slice_size, (k + 1) * slice_size)))
        for k in range(size // slice_size)) if slice_size else ()
    return GangRequest(f"bench/g{size}x{gpus}", (shape,), members, size, subgroups=slices)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    preset = resolve_preset("aws")
    for nodes in args.nodes:
        for seed in args.seeds:
            spec = ClusterSpec(nodes=nodes, occupancy=args.occupancy, seed=seed)
            raw_nodes = synth_nodes(spec)
            raw_pods = synth_load(spec, raw_nodes)
            with gc_paused():
                records = [node_from_json(n) for n in raw_nodes]
                pods = [pod_from_json(p) for p in raw_pods]
            del raw_nodes, raw_pods
            used = usage_from_pods(pods)
            started = time.perf_counter()
            tree = build_tree(records, preset)
            tree_s = time.perf_counter() - started
            snapshot = snapshot_of(tree, used)
            snapshot_s = time.perf_counter() - started
            cases = ([(size, 8, 0) for size in args.gangs]
                     + [(size, 1, 0) for size in args.one_gpu]
                     + [(size, 4, 0) for size in args.four_gpu]
                     + [(size, 8, s) for size in args.sliced for s in args.slices])
            for size, gpus, slice_size in cases:
                for algorithm in ("cpsat", "greedy"):
                    config = SolverConfig(algorithm=algorithm, time_limit_s=args.time_limit,
                                          seed=0, workers=1)
                    request = gang(size, gpus, slice_size)  # the shell's work, not timed
                    t0, c0 = time.perf_counter(), time.process_time()
                    result = solve(request, snapshot, config)
                    elapsed = time.perf_counter() - t0
                    cpu = time.process_time() - c0
                    row: dict[str, Any] = {
                        "nodes": nodes, "seed": seed, "gang": size, "gpus_per_pod": gpus,
                        "slice": slice_size,
                        "algorithm": algorithm, "snapshot_s": round(snapshot_s, 3),
                        "tree_s": round(tree_s, 3),
                        "solve_s": round(elapsed, 4), "cpu_s": round(cpu, 4),
                        "result": result.status,
                        "status": result.solver.status,
                    }
                    if result.status == "placed":
                        row["domains_used"] = result.metrics.domains_used
                        row["lower_bound"] = result.metrics.lower_bound
                        row["ring_hops"] = result.metrics.ring_hops
                        row["max_distance"] = result.metrics.max_distance
                        row["stages"] = [list(s) for s in result.solver.stages]
                        if slice_size:
                            level = slice_level(tree, request)
                            assert level is not None and isinstance(result, Placement)
                            row["slices_whole"] = slices_whole(tree, request, level, result)
                    else:
                        row["reason"] = result.reason
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    by_case: dict[tuple[int, int, int, int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_case[row["nodes"], row["gang"], row["gpus_per_pod"], row.get("slice", 0),
                row["algorithm"]].append(row)
    out.append("| nodes | gang | GPUs/pod | slice | algorithm | runs | median solve_s | "
               "max solve_s | median CPU s | status | domains used (zone/l1/l2/l3) median | "
               "lower bound | ring hops median |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (nodes, size, gpus, slice_size, algorithm), group in sorted(by_case.items()):
        times = [r["solve_s"] for r in group]
        statuses = ",".join(sorted({r["status"] for r in group}))
        placed = [r for r in group if r["result"] == "placed"]
        used = lower = hops = "-"
        if placed:
            keys = [k for k in placed[0]["domains_used"] if k != "kubernetes.io/hostname"]
            used = "/".join(str(statistics.median_low([r["domains_used"][k] for r in placed]))
                            for k in keys)
            lower = "/".join(str(statistics.median_low([r["lower_bound"][k] for r in placed]))
                             for k in keys)
            hops = str(statistics.median_low([r["ring_hops"] for r in placed]))
        out.append(f"| {nodes:,} | {size} | {gpus} | {slice_size or '-'} | {algorithm} | "
                   f"{len(group)} | "
                   f"{statistics.median(times):.3f} | {max(times):.3f} | "
                   f"{statistics.median(r.get('cpu_s', 0.0) for r in group):.3f} | {statuses} | "
                   f"{used} | {lower} | {hops} |")
    snap = defaultdict(list)
    for row in rows:
        snap[row["nodes"]].append((row["snapshot_s"], row["tree_s"]))
    out.append("")
    for nodes, times in sorted(snap.items()):
        total_s, tree_s = max(t for t, _ in times), max(t for _, t in times)
        out.append(f"snapshot build at {nodes:,} nodes (domain tree + free capacity): max "
                   f"{total_s:.3f} s, of which tree {tree_s:.3f} s")
    worse = total = 0
    pairs: dict[tuple[int, int, int, int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        pairs[row["nodes"], row["seed"], row["gang"], row["gpus_per_pod"],
              row.get("slice", 0)][row["algorithm"]] = row
    for pair in pairs.values():
        cp, gr = pair.get("cpsat"), pair.get("greedy")
        if cp and gr and cp["result"] == gr["result"] == "placed":
            keys = [k for k in cp["domains_used"] if k != "kubernetes.io/hostname"]
            total += 1
            if [gr["domains_used"][k] for k in keys] > [cp["domains_used"][k] for k in keys]:
                worse += 1
    sliced = [r for r in rows if "slices_whole" in r]
    if sliced:
        broken = sum(1 for r in sliced if not r["slices_whole"])
        out.append(f"placed sliced gangs with a slice split over two domains: {broken}/"
                   f"{len(sliced)}")
    if total:
        out.append(f"greedy uses more domains than CP-SAT (lexicographically) in {worse}/"
                   f"{total} placed cases ({100 * worse / total:.0f}%)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--gangs", type=int, nargs="*", default=[64, 512, 1024, 4096])
    parser.add_argument("--one-gpu", type=int, nargs="*", default=[512])
    parser.add_argument("--four-gpu", type=int, nargs="*", default=[],
                        help="sizes of gangs of 4-GPU pods (two fit on a p5 node)")
    parser.add_argument("--occupancy", type=float, default=0.5)
    parser.add_argument("--time-limit", type=float, default=1.0)
    parser.add_argument("--sliced", type=int, nargs="*", default=[1024, 4096, 16384],
                        help="sizes of the sliced gangs (8-GPU pods)")
    parser.add_argument("--slices", type=int, nargs="*", default=[8, 16, 32],
                        help="slice sizes (consecutive ranks inside one layer-3 domain)")
    args = parser.parse_args(argv)
    rows = run(args)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
