"""Explain API response time for a large gang, over real HTTP (uvicorn on localhost).

    .venv/bin/python -m benchmarks.explain_latency [--nodes 20000] [--pods 4096] [--requests 200]

A synthetic cluster with fragmented load; one gang of `--pods` 8-GPU pods solved by the
real solver and held as the scheduler holds it (record, placement, explanation, every pod
bound in the API view); then `--requests` sequential GETs of each route through a keep-
alive connection. Reports p50/p95/max per route in milliseconds, and the body size (the
map page `/ui` and the part its script refreshes, `/ui/content`, included).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import httpx

from benchmarks.report import print_result
from kube.resources import ObjectRef
from scheduler.api import serve
from scheduler.api.held import HeldState
from scheduler.gang import GangKey
from scheduler.offline import request_from_workload
from scheduler.state import GangPhase, GangRecord
from solver.explain import explain_placement
from solver.request import SolverConfig
from solver.result import Placement
from solver.solve import solve
from topology.presets import PRESETS
from topology.records import node_from_json, pod_from_json
from topology.snapshot import TopologySnapshot, build_snapshot, usage_from_pods
from topology.synthetic import ClusterSpec, synth_load, synth_nodes


def _gang(snapshot: TopologySnapshot, pods: int) -> tuple[GangRecord, Placement]:
    workload = {"kind": "StatefulSet", "metadata": {"name": "big", "namespace": "bench"},
                "spec": {"replicas": pods, "template": {"spec": {"containers": [
                    {"name": "c", "resources": {"requests": {"nvidia.com/gpu": 8}}}]}}}}
    request = request_from_workload(workload)
    result = solve(request, snapshot, SolverConfig(time_limit_s=5.0))
    assert isinstance(result, Placement), result.to_json()
    state = GangRecord(GangKey("StatefulSet", "bench", "big"),
                       ObjectRef("StatefulSet", "bench", "big"))
    for step in (GangPhase.WAITING, GangPhase.BINDING, GangPhase.BOUND):
        state.move(step, time.time())
    state.size = state.min_member = state.bound_pods = pods
    state.created = "2026-11-28T00:00:00Z"
    state.result, state.bind_s = result, 1.0
    state.explanation = explain_placement(request, snapshot, result)
    return state, result


def _timed(client: httpx.Client, path: str, count: int) -> tuple[list[float], int]:
    samples, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        reply = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
        size = len(reply.content)
    return samples, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--pods", type=int, default=4096)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    spec = ClusterSpec(nodes=args.nodes, occupancy=0.3, seed=5)
    raw = synth_nodes(spec)
    load = [pod_from_json(p) for p in synth_load(spec, raw)]
    snapshot = build_snapshot([node_from_json(n) for n in raw], usage_from_pods(load),
                              PRESETS["aws"])
    started = time.perf_counter()
    state, placement = _gang(snapshot, args.pods)
    solve_and_explain_s = time.perf_counter() - started
    source = HeldState(snapshot, {state.key: state})
    source.bound = {f"bench/{a.pod}": a.node for a in placement.assignments}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(source, f"127.0.0.1:{port}", PRESETS["aws"].keys)
    while not server.started:
        time.sleep(0.01)
    result: dict[str, object] = {"benchmark": "explain_latency", "nodes": args.nodes,
                                 "pods": args.pods, "requests": args.requests,
                                 "solve_and_explain_s": round(solve_and_explain_s, 3)}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for route, path in (("detail", "/v1/groups/bench/big"),
                                ("explain", "/v1/groups/bench/big/explain"),
                                ("groups", "/v1/groups"), ("metrics", "/metrics"),
                                ("ui", "/ui"), ("ui_content", "/ui/content")):
                _timed(client, path, 5)  # warm-up
                samples, size = _timed(client, path, args.requests)
                samples.sort()
                result[f"{route}_p50_ms"] = round(statistics.median(samples), 2)
                result[f"{route}_p95_ms"] = round(samples[int(len(samples) * 0.95) - 1], 2)
                result[f"{route}_max_ms"] = round(samples[-1], 2)
                result[f"{route}_bytes"] = size
    finally:
        server.should_exit = True
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
