"""`make demo`: a real local control plane with 2,048 synthetic p5 nodes and fragmented load,
and the network-topology tree Phalanx sees, read back from the API server."""

from __future__ import annotations

import argparse
import sys
import time

from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate
from scheduler.kube import api_path
from topology.presets import resolve_preset
from topology.summary import render_table, summarize_levels
from topology.synthetic import ClusterSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.demo", description=__doc__)
    parser.add_argument("--nodes", type=int, default=2048)
    parser.add_argument("--occupancy", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster running (remove it with python -m localcluster "
                             "down --name phalanx-demo)")
    args = parser.parse_args(argv)

    cluster = LocalCluster(name="phalanx-demo")
    started = time.monotonic()
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
        nodes, _ = kube.list_all(api_path("", "v1", "nodes"))
        version = kube.get("/version")["gitVersion"]
        print(f"\nNetwork topology read back from kube-apiserver {version} "
              f"({len(nodes)} nodes, preset aws):\n")
        print(render_table(summarize_levels(nodes, resolve_preset("aws"))))
        print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    finally:
        if not args.keep:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
