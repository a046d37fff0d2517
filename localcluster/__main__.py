"""python -m localcluster up|down|status|summary: a real local control plane for Phalanx."""

from __future__ import annotations

import argparse
import json
import sys
import time

from kube.resources import NODES
from localcluster.cluster import ClusterError, LocalCluster
from localcluster.controllers import ControllerError
from localcluster.synthnodes import populate
from topology.presets import resolve_preset
from topology.summary import render_table, summarize_levels
from topology.synthetic import SHAPES, ClusterSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a cluster (reused if up) and print its kubeconfig")
    up.add_argument("--name", default="phalanx-dev")
    up.add_argument("--nodes", type=int, default=0, help="synthetic accelerator nodes to add")
    up.add_argument("--shape", choices=sorted(SHAPES), default="p5")
    up.add_argument("--occupancy", type=float, default=0.0,
                    help="fraction of nodes already busy with existing load")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--with", dest="controllers", default="",
                    help="workload controllers to run, comma-separated: jobset, lws, "
                         "training-operator (built from their Go modules the first time)")
    for name in ("down", "status", "summary"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--name", default="phalanx-dev")
    args = parser.parse_args(argv)

    controllers = tuple(n for n in getattr(args, "controllers", "").split(",") if n)
    cluster = LocalCluster(name=args.name, controllers=controllers)
    try:
        if args.command == "up":
            return _up(cluster, args)
        if args.command == "down":
            cluster.down()
            print(f"cluster {args.name} removed", file=sys.stderr)
            return 0
        if args.command == "status":
            print(json.dumps(cluster.status(), indent=2))
            return 0
        if not cluster.healthy():
            print(f"localcluster: cluster {args.name} is not up (python -m localcluster up "
                  f"--name {args.name})", file=sys.stderr)
            return 1
        nodes, _ = cluster.kube().list_all(NODES.path())
        print(render_table(summarize_levels(nodes, resolve_preset("aws"))))
        return 0
    except (ClusterError, ControllerError, ValueError, TimeoutError) as exc:
        print(f"localcluster: {exc}", file=sys.stderr)
        return 1


def _up(cluster: LocalCluster, args: argparse.Namespace) -> int:
    spec = ClusterSpec(nodes=args.nodes, shape=args.shape, occupancy=args.occupancy,
                       seed=args.seed)
    spec.validate()
    start = time.monotonic()
    cluster.up()
    print(f"cluster {cluster.name} up in {time.monotonic() - start:.1f}s"
          + (f" with {', '.join(cluster.running_controllers)}" if cluster.controllers else ""),
          file=sys.stderr)
    if args.nodes:
        done = populate(cluster.kube(), spec)
        print(f"{done.nodes.created} nodes created at {done.nodes.per_second:.0f}/s "
              f"({done.nodes.existed} existed), all Ready after {done.ready_s:.1f}s more",
              file=sys.stderr)
        if done.load:
            print(f"{done.load.created} existing-load pods created", file=sys.stderr)
    print(cluster.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
