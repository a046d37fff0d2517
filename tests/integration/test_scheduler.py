"""`phalanx run` against the real apiserver: gangs placed optimally, all or nothing."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest

from kube import api_path
from solver.request import GangRequest, Member, PodShape, SolverConfig
from solver.solve import solve
from tests.integration.helpers import (
    NS,
    POOL,
    create_all,
    events_for,
    pods_of,
    pool_nodes,
    statefulset,
    wait_until,
)
from topology.presets import AWS_LAYER, resolve_preset
from topology.records import node_from_json
from topology.snapshot import build_snapshot

pytestmark = pytest.mark.integration


def test_statefulset_gang_bound_with_optimal_domain_counts(kube, phalanx):
    nodes = pool_nodes(kube, "pool-a", 96, seed=11)
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("train", 40, "pool-a"))
    wait_until(lambda: len([p for p in pods_of(kube, "train") if p["spec"].get("nodeName")])
               == 40, 120, "all 40 pods bound")
    pods = pods_of(kube, "train")
    by_name = {n["metadata"]["name"]: n for n in nodes}
    bound = Counter(p["spec"]["nodeName"] for p in pods)
    assert max(bound.values()) == 1 and set(bound) <= set(by_name)
    # The same gang solved offline on the same pool: the scheduler matched its optimum.
    snapshot = build_snapshot([node_from_json(n) for n in nodes], {}, resolve_preset("aws"))
    shape = PodShape({"nvidia.com/gpu": 8, "pods": 1})
    request = GangRequest("x", (shape,), tuple(Member(f"m{i}", i, 0) for i in range(40)), 40)
    expected = solve(request, snapshot, SolverConfig()).metrics.domains_used
    labels = [by_name[p["spec"]["nodeName"]]["metadata"]["labels"] for p in pods]
    racks = {tuple(lbl[k] for k in AWS_LAYER[:3]) for lbl in labels}
    blocks = {tuple(lbl[k] for k in AWS_LAYER[:2]) for lbl in labels}
    assert len(racks) == expected[AWS_LAYER[2]]
    assert len(blocks) == expected[AWS_LAYER[1]]
    # Ranks fill racks in order: consecutive pod indexes share racks.
    ordered = sorted(pods, key=lambda p: int(p["metadata"]["labels"][
        "apps.kubernetes.io/pod-index"]))
    changes = sum(1 for a, b in itertools.pairwise(ordered)
                  if by_name[a["spec"]["nodeName"]]["metadata"]["labels"][AWS_LAYER[2]]
                  != by_name[b["spec"]["nodeName"]]["metadata"]["labels"][AWS_LAYER[2]])
    assert changes == len(racks) - 1
    wait_until(lambda: any(e["reason"] == "Scheduled" for e in events_for(kube, "train-0")),
               30, "Scheduled event on a pod")


def test_impossible_gang_binds_nothing_and_says_why(kube, phalanx):
    pool_nodes(kube, "pool-b", 8, seed=12, fanout=(1, 1, 8))
    kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("huge", 9, "pool-b"))
    wait_until(lambda: len(pods_of(kube, "huge")) == 9, 60, "9 pods created")

    def failed_events():
        return [e for e in events_for(kube, "huge-0") if e["reason"] == "FailedScheduling"]

    wait_until(lambda: failed_events(), 60, "FailedScheduling event")
    assert "9 pods of 8 nvidia.com/gpu" in failed_events()[0]["message"]
    time.sleep(2)
    assert all(not p["spec"].get("nodeName") for p in pods_of(kube, "huge"))


def test_required_topology_and_malformed_annotation(kube, phalanx):
    pool_nodes(kube, "pool-c", 32, seed=13, fanout=(1, 2, 16))
    bad = statefulset("typo", 2, "pool-c",
                      annotations={"phalanx.dev/required-topology": "network-node-layer-2"})
    kube.create(api_path("apps", "v1", "statefulsets", NS), bad)
    wait_until(lambda: any("required_level" in e["message"] for e in events_for(kube, "typo")),
               60, "an event naming the bad field")
    assert all(not p["spec"].get("nodeName") for p in pods_of(kube, "typo"))
    good = statefulset("rack", 12, "pool-c",
                       annotations={"phalanx.dev/required-topology": AWS_LAYER[2]})
    kube.create(api_path("apps", "v1", "statefulsets", NS), good)
    wait_until(lambda: all(p["spec"].get("nodeName") for p in pods_of(kube, "rack"))
               and len(pods_of(kube, "rack")) == 12, 60, "rack gang bound")
    nodes = {n["metadata"]["name"]: n for n in kube.get(api_path("", "v1", "nodes"),
                                                         labelSelector=f"{POOL}=pool-c")["items"]}
    racks = {nodes[p["spec"]["nodeName"]]["metadata"]["labels"][AWS_LAYER[2]]
             for p in pods_of(kube, "rack")}
    assert len(racks) == 1


def test_cpu_pod_takes_the_per_pod_path(kube, phalanx):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cpu-only", "namespace": NS},
           "spec": {"schedulerName": "phalanx", "containers": [
               {"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}}
    create_all(kube, [pod])
    path = api_path("", "v1", "pods", NS, "cpu-only")
    wait_until(lambda: kube.get(path)["spec"].get("nodeName"), 60, "cpu pod bound")
