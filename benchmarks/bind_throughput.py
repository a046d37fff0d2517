"""Bind throughput against the local apiserver, beside the apiserver's own write ceiling.

    .venv/bin/python -m benchmarks.bind_throughput [--pods 2048] [--concurrency 64]

On a fresh local control plane with as many p5 nodes as pods: create the pods pending
(a schedulerName nobody serves), bind them all through Phalanx's Binder (`pods/binding`,
raw JSON, concurrent), then measure the ceiling: the same number of small writes
(ConfigMap creates) with the same client and concurrency. Prints JSON and a table.
"""

from __future__ import annotations

import argparse

from benchmarks.report import print_result
from localcluster.bulk import create_all, ensure_namespace
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate
from scheduler.binder import Binder
from topology.synthetic import ClusterSpec, synth_nodes

NS = "bind-bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args(argv)
    cluster = LocalCluster(name="phalanx-bench-bind")
    cluster.down()
    try:
        cluster.up()
        kube = cluster.kube()
        spec = ClusterSpec(nodes=args.pods, seed=9)
        populate(kube, spec)
        ensure_namespace(kube, NS)
        pods = [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": f"w-{i}", "namespace": NS},
                 "spec": {"schedulerName": "nobody", "containers": [
                     {"name": "c", "image": "x",
                      "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
                for i in range(args.pods)]
        create_all(kube, pods, concurrency=args.concurrency)
        nodes = [n["metadata"]["name"] for n in synth_nodes(spec)]
        binder = Binder(kube, args.concurrency)
        results, bind_s = binder.bind_all([(f"{NS}/w-{i}", nodes[i])
                                           for i in range(args.pods)])
        binder.close()
        failures = sum(1 for r in results if not r.ok)
        ceiling = create_all(kube, [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"cm-{i}", "namespace": NS}, "data": {"k": "v"}}
            for i in range(args.pods)],
            concurrency=args.concurrency,
            path_of=lambda obj: f"/api/v1/namespaces/{NS}/configmaps")
    finally:
        cluster.down()
    result = {
        "benchmark": "bind_throughput", "pods": args.pods, "concurrency": args.concurrency,
        "bind_s": round(bind_s, 2), "binds_per_s": round(args.pods / bind_s, 1),
        "bind_failures": failures,
        "ceiling_writes_per_s": round(ceiling.per_second, 1),
        "binds_vs_ceiling": round(args.pods / bind_s / ceiling.per_second, 2),
    }
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
