"""Recovery: how fast, and how close to its peers, a lost member of a running gang returns.

    .venv/bin/python -m benchmarks.recovery [--nodes 5000] [--replicas 256] [--rounds 20]

A fresh local control plane with `--nodes` p5 nodes and fragmented existing load;
`phalanx run` as a process; a training StatefulSet placed as one gang. Then rounds that
alternate two faults on a random member: the pod deleted, and its node cordoned with the
pod evicted. The StatefulSet controller recreates the pod; a watch in this process times
the replacement from the moment it appears (ADDED) to its binding (nodeName set).
Reported: latency p50/p95/max, and how often the replacement landed in the bottom domain
(layer-3) of one of its rank neighbours when such a domain had a free node.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.podwatch import watch_pods
from benchmarks.report import print_result
from kube import KubeClient
from kube.resources import NODES, PODS, STATEFULSETS
from localcluster.bulk import ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate, schedulable
from topology.presets import AWS_LAYER
from topology.synthetic import ClusterSpec

NS = "recovery-bench"
LAYER3 = AWS_LAYER[2]


def _statefulset(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "train", "namespace": NS},
            "spec": {"replicas": replicas, "serviceName": "train",
                     "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": "train"}},
                     "template": {"metadata": {"labels": {"app": "train"}},
                                  "spec": {"schedulerName": "phalanx", "containers": [{
                                      "name": "w", "image": "trainer", "resources": {
                                          "limits": {"nvidia.com/gpu": "8"}}}]}}}}


def _pods(kube: KubeClient) -> dict[str, dict[str, Any]]:
    items, _ = kube.list_all(PODS.path(NS), {"labelSelector": "app=train"})
    return {p["metadata"]["name"]: p for p in items}


def _free_nodes_in(kube: KubeClient, rack: str, nodes: dict[str, dict[str, Any]]) -> set[str]:
    """Nodes of the rack with all 8 GPUs free and schedulable, per the API server."""
    busy: dict[str, int] = {}
    for pod in kube.list_all(PODS.path())[0]:
        node = pod["spec"].get("nodeName")
        if node and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in pod["spec"]["containers"]:
                busy[node] = busy.get(node, 0) + int(
                    ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
    fresh = {n["metadata"]["name"]: n for n in kube.list_all(NODES.path())[0]}
    return {name for name, node in fresh.items()
            if node["metadata"]["labels"].get(LAYER3) == rack and schedulable(node)
            and not node["spec"].get("unschedulable") and busy.get(name, 0) == 0
            and name in nodes}


def _cordon(kube: KubeClient, node: str, value: bool) -> None:
    kube.call("PATCH", NODES.path(name=node),
              body={"spec": {"unschedulable": value}},
              content_type="application/strategic-merge-patch+json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--replicas", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    cluster = LocalCluster(name="phalanx-bench-recovery")
    cluster.down()
    process = None
    rows: list[dict[str, Any]] = []
    try:
        cluster.up()
        kube = cluster.kube()
        populate(kube, ClusterSpec(nodes=args.nodes, occupancy=0.3, seed=args.seed))
        nodes = {n["metadata"]["name"]: n for n in kube.list_all(NODES.path())[0]}
        wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0]
                               if schedulable(n)) == args.nodes, 120, "nodes schedulable")
        ensure_namespace(kube, NS)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig",
             str(cluster.kubeconfig), "--http-address", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times, watcher = watch_pods(kube, NS)
        kube.create(STATEFULSETS.path(NS), _statefulset(args.replicas))
        wait_until(lambda: sum(1 for p in _pods(kube).values() if p["spec"].get("nodeName"))
                   == args.replicas, 240, "gang bound", interval=0.2)
        for round_ in range(args.rounds):
            kind = "delete" if round_ % 2 == 0 else "cordon+evict"
            pods = _pods(kube)
            rank = rng.randrange(args.replicas)
            victim = pods[f"train-{rank}"]
            neighbours = [pods[f"train-{r}"]["spec"]["nodeName"] for r in (rank - 1, rank + 1)
                          if 0 <= r < args.replicas]
            racks = {nodes[n]["metadata"]["labels"][LAYER3] for n in neighbours}
            old_node = victim["spec"]["nodeName"]
            if kind == "delete":
                kube.delete(PODS.path(NS, victim["metadata"]["name"]),
                            gracePeriodSeconds=0)
            else:
                _cordon(kube, old_node, True)
                kube.create(PODS.path(NS, victim["metadata"]["name"],
                                     "eviction"),
                            {"apiVersion": "policy/v1", "kind": "Eviction",
                             "metadata": {"name": victim["metadata"]["name"], "namespace": NS},
                             "deleteOptions": {"gracePeriodSeconds": 0}})
            name = victim["metadata"]["name"]

            def replaced(name: str = name, old: str = victim["metadata"]["uid"]) -> bool:
                pod = _pods(kube).get(name)
                return bool(pod and pod["metadata"]["uid"] != old
                            and pod["metadata"]["uid"] in times.bound)
            wait_until(replaced, 60, f"{name} replaced", interval=0.05)
            pod = _pods(kube)[name]
            uid = pod["metadata"]["uid"]
            latency = times.bound[uid][0] - times.added[uid]
            new_node = pod["spec"]["nodeName"]
            in_rack = nodes[new_node]["metadata"]["labels"].get(LAYER3) in racks
            room = in_rack or any(_free_nodes_in(kube, rack, nodes) for rack in racks)
            rows.append({"kind": kind, "latency_s": latency, "room_in_rack": room,
                         "in_rack": in_rack,
                         "same_node": new_node == old_node})
            if kind != "delete":
                _cordon(kube, old_node, False)
        watcher.stop()
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        cluster.down()
    latencies = sorted(r["latency_s"] for r in rows)
    with_room = [r for r in rows if r["room_in_rack"]]
    result = {
        "benchmark": "recovery", "nodes": args.nodes, "replicas": args.replicas,
        "rounds": len(rows),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(latencies[max(0, int(len(latencies) * 0.95) - 1)], 3),
        "latency_max_s": round(latencies[-1], 3),
        "rounds_with_room_in_rack": len(with_room),
        "landed_in_rack": sum(1 for r in with_room if r["in_rack"]),
        "landed_in_rack_pct": round(100 * sum(1 for r in with_room if r["in_rack"])
                                    / max(1, len(with_room)), 1),
        "same_node_after_delete": sum(1 for r in rows if r["kind"] == "delete"
                                      and r["same_node"]),
        "per_kind_p50_s": {kind: round(statistics.median(
            [r["latency_s"] for r in rows if r["kind"] == kind]), 3)
            for kind in ("delete", "cordon+evict") if any(r["kind"] == kind for r in rows)},
    }
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
