"""Foundation benchmark: how fast the local control plane starts and takes synthetic nodes.

    .venv/bin/python -m benchmarks.cluster_startup [--nodes 5000] [--concurrency 48]

Prints one JSON object and a table. Measures, on a fresh cluster: time to serving pods,
node creation rate through the API, time until KWOK has every node Ready, and the same for
pods of existing load (bound at creation, so no scheduler is involved).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from benchmarks.report import print_result
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate
from topology.synthetic import ClusterSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--occupancy", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    cluster = LocalCluster(name="phalanx-bench-startup")
    cluster.down()
    try:
        start = time.monotonic()
        cluster.up()
        up_s = time.monotonic() - start
        spec = ClusterSpec(nodes=args.nodes, occupancy=args.occupancy, seed=args.seed)
        done = populate(cluster.kube(), spec, concurrency=args.concurrency)
    finally:
        cluster.down()
    result = {
        "benchmark": "cluster_startup",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "nodes": args.nodes,
        "concurrency": args.concurrency,
        "control_plane_up_s": round(up_s, 2),
        "node_create_s": round(done.nodes.seconds, 2),
        "nodes_per_s": round(done.nodes.per_second, 1),
        "all_ready_after_last_create_s": round(done.ready_s, 2),
        "load_pods": done.load.created if done.load else 0,
        "load_pods_per_s": round(done.load.per_second, 1) if done.load else 0.0,
    }
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
