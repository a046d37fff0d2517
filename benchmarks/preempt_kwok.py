"""Preemption on a KWOK cluster: a 256-pod high-priority gang arrives on a cluster full of
low-priority training gangs; time from its creation to its last pod bound, victims'
termination included, with Phalanx and with kube-scheduler's DefaultPreemption in the
same run.

    .venv/bin/python -m benchmarks.preempt_kwok [--nodes 5000] [--fill 10] [--size 256]

For each scheduler, on a fresh cluster of its own: `--fill` low-priority StatefulSets
(8-GPU pods, priority 10) fill every node, placed by that scheduler, and wait until KWOK
has marked them all Running; then one StatefulSet of `--size` 8-GPU pods at priority
1000 (terminationGracePeriodSeconds 1; KWOK deletes a terminating pod at once).
Reported: arrival-to-all-bound seconds, pods evicted, victim StatefulSets touched, and
layer-3 domains the gang ended in. JSON on the last line, a table before it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from benchmarks.kwok_placement import (
    LAYER3,
    NS,
    SCHEDULERS,
    _clear,
    _pods,
    overcommitted,
    start_phalanx,
    statefulset,
)
from kube import ApiError, KubeClient
from kube.resources import NODES, STATEFULSETS
from localcluster.bulk import ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate, schedulable
from topology.synthetic import ClusterSpec

PRIORITY_CLASSES = {"bench-low": 10, "bench-high": 1000}


def _classes(kube: KubeClient) -> None:
    for name, value in PRIORITY_CLASSES.items():
        try:
            kube.create("/apis/scheduling.k8s.io/v1/priorityclasses", {
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value})
        except ApiError as exc:
            if exc.status != 409:
                raise


def _gang(name: str, replicas: int, scheduler: str, priority: str) -> dict[str, Any]:
    obj = statefulset(name, replicas, scheduler, 8)
    obj["spec"]["template"]["spec"].update(priorityClassName=priority,
                                           terminationGracePeriodSeconds=1)
    return obj


def _bound(kube: KubeClient, app: str) -> list[dict[str, Any]]:
    return [p for p in _pods(kube, app) if p["spec"].get("nodeName")
            and not p["metadata"].get("deletionTimestamp")]


def run_one(kube: KubeClient, cluster: LocalCluster, scheduler: str, nodes: int, fill: int,
            size: int) -> dict[str, Any]:
    process = start_phalanx(cluster)[0] if scheduler == "phalanx" else None
    name = SCHEDULERS[scheduler]
    try:
        per = nodes // fill
        sizes = [per] * (fill - 1) + [nodes - per * (fill - 1)]
        for index, count in enumerate(sizes):
            kube.create(STATEFULSETS.path(NS), _gang(f"low-{index}", count, name, "bench-low"))
        wait_until(lambda: sum(len(_bound(kube, f"low-{i}")) for i in range(fill)) == nodes,
                   1200, "the cluster filled", interval=1.0)
        # KWOK (the fake kubelets) must be idle: on 2 cores it takes minutes to mark
        # 5,000 pods Running, and a victim's termination would queue behind that.
        wait_until(lambda: sum(1 for i in range(fill) for p in _pods(kube, f"low-{i}")
                               if (p.get("status") or {}).get("phase") == "Running")
                   == nodes, 900, "every filling pod Running", interval=2.0)
        before = {p["metadata"]["uid"] for i in range(fill) for p in _pods(kube, f"low-{i}")}
        started = time.monotonic()
        kube.create(STATEFULSETS.path(NS), _gang("high", size, name, "bench-high"))
        wait_until(lambda: len(_bound(kube, "high")) == size, 900, "the high gang bound",
                   interval=0.2)
        elapsed = time.monotonic() - started
        after = {i: {p["metadata"]["uid"] for p in _pods(kube, f"low-{i}")}
                 for i in range(fill)}
        evicted = len(before - set().union(*after.values()))
        touched = sum(1 for i in range(fill) if after[i] - before)
        labels = {n["metadata"]["name"]: n["metadata"]["labels"]
                  for n in kube.list_all(NODES.path())[0]}
        racks = {labels[p["spec"]["nodeName"]].get(LAYER3) for p in _bound(kube, "high")}
        bad = overcommitted(kube)
        return {"scheduler": scheduler, "arrival_to_bound_s": round(elapsed, 2),
                "pods_evicted": evicted, "victim_statefulsets_touched": touched,
                "layer3_domains": len(racks), "overcommitted_nodes": len(bad)}
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        _clear(kube)


def _prepare(cluster: LocalCluster, nodes: int) -> KubeClient:
    cluster.up()
    kube = cluster.kube()
    populate(kube, ClusterSpec(nodes=nodes, occupancy=0.0, seed=5))
    wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0] if schedulable(n))
               == nodes, 180, "nodes schedulable")
    ensure_namespace(kube, NS)
    _classes(kube)
    return kube


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--fill", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--schedulers", default="phalanx,kube-scheduler")
    args = parser.parse_args(argv)
    rows = []
    # Each scheduler on a cluster of its own: after thousands of pods deleted, the next
    # scheduler would start in its own backoff (kube-scheduler's unschedulable queue).
    for scheduler in args.schedulers.split(","):
        cluster = LocalCluster(name="phalanx-bench-preempt")
        cluster.down()
        try:
            kube = _prepare(cluster, args.nodes)
            row = run_one(kube, cluster, scheduler, args.nodes, args.fill, args.size)
            print(json.dumps(row), flush=True)
            rows.append(row)
        finally:
            cluster.down()
    print("| scheduler | arrival to all bound (s) | pods evicted | victim StatefulSets | "
          "layer-3 domains |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scheduler']} | {r['arrival_to_bound_s']} | {r['pods_evicted']} | "
              f"{r['victim_statefulsets_touched']} | {r['layer3_domains']} |")
    if len(rows) == 2:
        ratio = rows[1]["arrival_to_bound_s"] / max(rows[0]["arrival_to_bound_s"], 1e-9)
        print(f"{rows[1]['scheduler']} / {rows[0]['scheduler']} time: {ratio:.2f}x")
    print(json.dumps({"benchmark": "preempt_kwok", "nodes": args.nodes, "size": args.size,
                      "runs": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
