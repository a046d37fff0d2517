"""`make demo`: Phalanx on a real local control plane.

2,048 synthetic p5 nodes with fragmented existing load; `phalanx run` as a process; the
example training StatefulSet (16 pods x 8 GPUs, required in one layer-3 network domain)
placed as one gang; then the same StatefulSet placed by kube-scheduler on the same free
capacity, for contrast.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kube import KubeClient
from kube.resources import NODES, PODS, SERVICES, STATEFULSETS
from localcluster.binaries import REPO
from localcluster.bulk import wait_until
from localcluster.cluster import LocalCluster
from localcluster.ports import free_port
from localcluster.synthnodes import populate
from scheduler.offline import request_from_workload
from solver.assign import measure
from solver.instance import NODE_LEVEL
from solver.result import Assignment
from solver.solve import solve
from topology.presets import resolve_preset
from topology.records import node_from_json, pod_from_json
from topology.snapshot import build_snapshot, render_path, usage_from_pods
from topology.summary import render_table, summarize_levels
from topology.synthetic import ClusterSpec

EXAMPLE = REPO / "manifests" / "examples" / "training-statefulset.yaml"


def _snapshot(kube: KubeClient, exclude_app: str | None = None) -> Any:
    nodes = [node_from_json(n) for n in kube.list_all(NODES.path())[0]]
    pods = [pod_from_json(p) for p in kube.list_all(PODS.path())[0]
            if (p["metadata"].get("labels") or {}).get("app") != exclude_app]
    return build_snapshot(nodes, usage_from_pods(pods), resolve_preset("aws"))


def _run_statefulset(kube: KubeClient, sts: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """Creates the StatefulSet and waits until every pod is bound; returns the seconds
    from creation to all bound (observed through the API) and the pods."""
    namespace, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
    replicas = sts["spec"]["replicas"]
    started = time.monotonic()
    kube.create(STATEFULSETS.path(namespace), sts)
    selector = {"labelSelector": f"app={sts['spec']['selector']['matchLabels']['app']}"}

    def bound() -> list[dict[str, Any]]:
        items, _ = kube.list_all(PODS.path(namespace), selector)
        return [p for p in items if p["spec"].get("nodeName")]

    wait_until(lambda: len(bound()) == replicas, 240, f"{replicas} pods of {name} bound",
               interval=0.1)
    return time.monotonic() - started, bound()


def _metrics(kube: KubeClient, pods: list[dict[str, Any]],
             lower_bound: dict[str, int | None]) -> Any:
    tree = _snapshot(kube).tree
    assignments = tuple(
        Assignment(p["metadata"]["name"], int(p["metadata"]["labels"].get(
            "apps.kubernetes.io/pod-index", 0)), p["spec"]["nodeName"],
            render_path(tree.node_path(tree.index[p["spec"]["nodeName"]])))
        for p in pods)
    return measure(tree, assignments, lower_bound)


def _print_metrics(title: str, seconds: float, metrics: Any) -> None:
    print(f"\n{title}: all pods bound {seconds:.2f}s after the StatefulSet was created")
    print(f"  {'level':<42} {'domains used':>12} {'lower bound':>12}")
    for key, used in metrics.domains_used.items():
        if key == NODE_LEVEL:
            continue
        print(f"  {key:<42} {used:>12} {metrics.lower_bound.get(key)!s:>12}")
    print(f"  ring hops {metrics.ring_hops}, max distance {metrics.max_distance}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__)
    parser.add_argument("--nodes", type=int, default=2048)
    parser.add_argument("--occupancy", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster running (remove it with python -m localcluster "
                             "down --name phalanx-demo)")
    args = parser.parse_args(argv)

    cluster = LocalCluster(name="phalanx-demo")
    started = time.monotonic()
    scheduler = None
    try:
        cluster.up()
        print(f"control plane up in {time.monotonic() - started:.1f}s "
              f"(kubeconfig {cluster.kubeconfig})")
        kube = cluster.kube()
        spec = ClusterSpec(nodes=args.nodes, occupancy=args.occupancy, seed=args.seed)
        done = populate(kube, spec)
        print(f"{done.nodes.created} p5 nodes created at {done.nodes.per_second:.0f} nodes/s, "
              f"all Ready {done.ready_s:.1f}s later")
        if done.load:
            print(f"{done.load.created} pods of existing load bound across the fleet")
        nodes, _ = kube.list_all(NODES.path())
        version = kube.get("/version")["gitVersion"]
        print(f"\nNetwork topology read back from kube-apiserver {version} "
              f"({len(nodes)} nodes, preset aws):\n")
        print(render_table(summarize_levels(nodes, resolve_preset("aws"))))

        log = Path(tempfile.mkstemp(prefix="phalanx-demo-", suffix=".log")[1])
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig", str(cluster.kubeconfig),
             "--http-address", f"127.0.0.1:{free_port()}"],
            stdout=log.open("w"), stderr=subprocess.STDOUT)
        documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
        sts = next(d for d in documents if d["kind"] == "StatefulSet")
        service = next(d for d in documents if d["kind"] == "Service")
        kube.create(SERVICES.path("default"), service)
        # The optimum's lower bounds, from the same cluster state, offline.
        offline = solve(request_from_workload(sts), _snapshot(kube))
        lower = offline.metrics.lower_bound if offline.status == "placed" else {}
        time.sleep(2)  # phalanx run: caches synced
        seconds, pods = _run_statefulset(kube, sts)
        _print_metrics("Phalanx (one gang, one solve, concurrent binds)", seconds,
                       _metrics(kube, pods, lower))
        print(f"  scheduler log: {log}")

        # The same job through kube-scheduler, on the same free capacity.
        kube.delete(STATEFULSETS.path("default", "train"))
        wait_until(lambda: not kube.list_all(PODS.path("default"),
                                             {"labelSelector": "app=train"})[0],
                   120, "phalanx's pods gone")
        contrast = copy.deepcopy(sts)
        contrast["metadata"]["name"] = "train-default"
        contrast["spec"]["serviceName"] = "train"
        contrast["spec"]["selector"]["matchLabels"]["app"] = "train-default"
        contrast["spec"]["template"]["metadata"]["labels"]["app"] = "train-default"
        contrast["spec"]["template"]["spec"]["schedulerName"] = "default-scheduler"
        seconds, pods = _run_statefulset(kube, contrast)
        _print_metrics("kube-scheduler (pod by pod, default plugins)", seconds,
                       _metrics(kube, pods, lower))
        print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    finally:
        if scheduler is not None:
            scheduler.terminate()
            scheduler.wait(10)
        if not args.keep:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
