"""Gang discovery over a million pods, as the scheduler's cycle runs it every time.

    .venv/bin/python -m benchmarks.discovery_scale [--pods 1000000] [--rounds 3]

Builds pod records for a fleet the size the cache holds (issue 17: ~10 per node over
100,000 nodes): per node three DaemonSet pods, three inference pods (ReplicaSets), three
bound members of 8-GPU training StatefulSets (1,000 of them), and one system pod; plus
one pending 1,024-pod StatefulSet for the cycle to find. Times `discover` as the first
cycle sees it (every claim asked) and as later cycles see it (claims remembered while a
pod's record is unchanged, `scheduler.discovery.Claims`), with 1 % of the records
replaced between cycles as watch events would. Reports wall and CPU time (the machine
is shared) and checks both answers are the same.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import replace
from typing import Any

from kube.resources import Resource
from scheduler.discovery import Claims, discover
from scheduler.sources import sources
from topology.records import OwnerRef, PodRecord

GPU = "nvidia.com/gpu"


class NoObjects:
    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return None


def fleet(count: int) -> list[PodRecord]:
    pods: list[PodRecord] = []
    cpu = {"cpu": 100, "memory": 2**28}
    gpu = {GPU: 8, "cpu": 20_000, "memory": 2**36}
    kinds = (("DaemonSet", "ds", cpu), ("ReplicaSet", "infer", cpu),
             ("StatefulSet", "train", gpu), ("Node", "system", cpu))
    plan = (0, 0, 0, 1, 1, 1, 2, 2, 2, 3)  # per node: 3 + 3 + 3 + 1
    for i in range(count):
        kind, prefix, requests = kinds[plan[i % 10]]
        owner = f"{prefix}-{(i // 10) % 1000}" if kind != "DaemonSet" else f"ds-{i % 3}"
        pods.append(PodRecord("fleet", f"{prefix}-{i}", uid=str(i), node_name=f"n-{i // 10}",
                              phase="Running", requests=requests,
                              owner=OwnerRef(kind, owner, f"u-{owner}")))
    for rank in range(1024):
        pods.append(PodRecord("fleet", f"new-{rank}", uid=f"new-{rank}",
                              scheduler_name="phalanx", requests=gpu,
                              labels={"apps.kubernetes.io/pod-index": str(rank)},
                              owner=OwnerRef("StatefulSet", "new", "u-new")))
    return pods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    gc.disable()  # as the cache's lists do: millions of acyclic records
    pods = fleet(args.pods)
    chain, objects = sources((GPU,)), NoObjects()

    def run(claims: Claims | None) -> tuple[float, float, Any]:
        wall, cpu = time.perf_counter(), time.process_time()
        found = discover(pods, {}, ours=lambda p: p.scheduler_name == "phalanx",
                         sources=chain, objects=objects, claims=claims)
        return time.perf_counter() - wall, time.process_time() - cpu, found

    rows = []
    claims = Claims()
    for round_ in range(args.rounds):
        cold_wall, cold_cpu, cold = run(None)
        warm_wall, warm_cpu, warm = run(claims)
        assert [g.key for g in warm.gangs] == [g.key for g in cold.gangs]
        assert warm.gang_of == cold.gang_of and len(warm.gangs) == 1
        rows.append({"round": round_ + 1, "pods": len(pods),
                     "every_claim_wall_s": round(cold_wall, 3),
                     "every_claim_cpu_s": round(cold_cpu, 3),
                     "remembered_wall_s": round(warm_wall, 3),
                     "remembered_cpu_s": round(warm_cpu, 3)})
        for i in range(0, len(pods), 100):  # 1 % of records replaced, as by watch events
            pods[i] = replace(pods[i], resource_version=f"r{round_}")
    print(json.dumps({"rows": rows}))
    print("| round | pods | every claim asked: wall s | CPU s | claims remembered: wall s "
          "| CPU s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['round']} | {row['pods']:,} | {row['every_claim_wall_s']} | "
              f"{row['every_claim_cpu_s']} | {row['remembered_wall_s']} | "
              f"{row['remembered_cpu_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
