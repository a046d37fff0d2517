"""Preemption on the real apiserver: victims evicted through the Eviction API (PDBs and
graceful termination honoured by the server), the room held, the preemptor bound there;
kube-scheduler's pods are victims like any; Never and equal priority preempt nothing."""

from __future__ import annotations

import time

import pytest

from kube import ApiError, api_path
from tests.integration.helpers import (
    NS,
    POOL,
    create_all,
    events_for,
    pods_of,
    statefulset,
    wait_until,
)
from topology.presets import AWS_LAYER
from topology.synthetic import ClusterSpec, synth_nodes

pytestmark = pytest.mark.integration
L3 = AWS_LAYER[2]
REQUIRED = {"phalanx.dev/required-topology": L3}


def racks(kube, pool: str, sizes: dict[str, int], seed: int) -> dict[str, set[str]]:
    """Nodes in one layer-2 domain, split into layer-3 domains of the given sizes."""
    nodes = synth_nodes(ClusterSpec(nodes=sum(sizes.values()), fanout=(1, 1, 64), seed=seed,
                                    ragged=0))
    out: dict[str, set[str]] = {}
    names = iter(nodes)
    for rack, size in sizes.items():
        for _ in range(size):
            node = next(names)
            name = f"{pool}-{node['metadata']['name']}"
            node["metadata"]["name"] = name
            node["metadata"]["labels"].update({"kubernetes.io/hostname": name, POOL: pool,
                                               L3: f"{pool}-{rack}"})
            out.setdefault(rack, set()).add(name)
    create_all(kube, nodes)

    def ready() -> int:
        items = kube.get(api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")["items"]
        return sum(1 for n in items if not any(
            t.get("key", "").startswith("node.kubernetes.io/") for t in
            (n["spec"].get("taints") or [])) and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (n.get("status") or {}).get("conditions") or []))
    wait_until(lambda: ready() == len(nodes), 60, f"{len(nodes)} {pool} nodes Ready")
    return out


def priority_class(kube, name: str, value: int, policy: str = "PreemptLowerPriority") -> None:
    """Pods take priority and preemptionPolicy from their class (the Priority admission
    plugin refuses a pod whose own preemptionPolicy differs from its class's)."""
    try:
        kube.create(api_path("scheduling.k8s.io", "v1", "priorityclasses"), {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "preemptionPolicy": policy})
    except ApiError as exc:
        if exc.status != 409:
            raise


def gang(name: str, replicas: int, pool: str, priority: str, *, annotations=None,
         scheduler: str = "phalanx") -> dict:
    obj = statefulset(name, replicas, pool, annotations=annotations)
    spec = obj["spec"]["template"]["spec"]
    spec.update({"priorityClassName": priority, "schedulerName": scheduler,
                 "terminationGracePeriodSeconds": 1})
    return obj


def bound_nodes(kube, app: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods_of(kube, app)
            if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")}


def uids(kube, app: str) -> set[str]:
    return {p["metadata"]["uid"] for p in pods_of(kube, app)}


def test_high_priority_gang_evicts_exactly_the_gang_filling_the_rack_it_needs(kube, phalanx):
    """The issue's case: racks of 31 and 9 nodes full of two low-priority gangs; a
    20-pod gang requiring one layer-3 domain evicts the 31-pod gang, all of it, nothing
    of the other, and is bound in that rack; the evicted gang's new pods stay pending."""
    remove(kube, ["pre-big", "pre-small", "pre-high"])
    where = racks(kube, "pool-pre", {"r1": 31, "r2": 9}, seed=71)
    priority_class(kube, "phalanx-test-low", 10)
    priority_class(kube, "phalanx-test-high", 1000)
    sts = api_path("apps", "v1", "statefulsets", NS)
    kube.create(sts, gang("pre-big", 31, "pool-pre", "phalanx-test-low"))
    wait_until(lambda: len(bound_nodes(kube, "pre-big")) == 31, 120, "pre-big bound")
    kube.create(sts, gang("pre-small", 9, "pool-pre", "phalanx-test-low"))
    wait_until(lambda: len(bound_nodes(kube, "pre-small")) == 9, 120, "pre-small bound")
    assert set(bound_nodes(kube, "pre-big").values()) == where["r1"]
    small_before = uids(kube, "pre-small")
    big_before = uids(kube, "pre-big")

    kube.create(sts, gang("pre-high", 20, "pool-pre", "phalanx-test-high",
                          annotations=REQUIRED))
    wait_until(lambda: len(bound_nodes(kube, "pre-high")) == 20, 180, "pre-high bound")
    assert set(bound_nodes(kube, "pre-high").values()) <= where["r1"]
    assert uids(kube, "pre-small") == small_before  # nothing of the other gang
    assert len(bound_nodes(kube, "pre-small")) == 9
    # All 31 were evicted (the StatefulSet recreates them: new uids, and pending).
    wait_until(lambda: not (uids(kube, "pre-big") & big_before), 60, "every old pre-big gone")
    recreated = pods_of(kube, "pre-big")
    assert recreated and all(not p["spec"].get("nodeName") for p in recreated)
    reasons = {e["reason"] for e in events_for(kube, "pre-big-0")}
    assert "Preempted" in reasons
    preempting = [e for e in events_for(kube, "pre-high") if e["reason"] == "Preempting"]
    assert preempting and f"Gang {NS}/StatefulSet/pre-big" in preempting[0]["message"]
    # The evicted gang never preempts the one that preempted it: still pending after a
    # while, and pre-high untouched.
    high = uids(kube, "pre-high")
    time.sleep(5)
    assert all(not p["spec"].get("nodeName") for p in pods_of(kube, "pre-big"))
    assert uids(kube, "pre-high") == high
    remove(kube, ["pre-big", "pre-small", "pre-high"])


def remove(kube, names: list[str]) -> None:
    """Leftovers of an earlier failed run would compete for the pool."""
    for name in names:
        try:
            kube.delete(api_path("apps", "v1", "statefulsets", NS, name))
        except ApiError as exc:
            if exc.status != 404:
                raise
    wait_until(lambda: not any(pods_of(kube, n) for n in names), 60, "leftovers gone")


def test_pdb_never_and_equal_priority_and_kube_scheduler_pods(kube, phalanx):
    """Rack r1 holds a low-priority gang a PodDisruptionBudget protects; rack r2 a
    low-priority StatefulSet kube-scheduler placed. A high-priority gang needing one
    rack evicts kube-scheduler's pods, not the protected ones; a gang with
    preemptionPolicy Never and one of equal priority evict nothing and stay pending."""
    remove(kube, ["pdb-guarded", "pdb-default", "pdb-never", "pdb-equal", "pdb-high"])
    where = racks(kube, "pool-pdb", {"r1": 8, "r2": 8}, seed=72)
    priority_class(kube, "phalanx-test-low", 10)
    priority_class(kube, "phalanx-test-high", 1000)
    sts = api_path("apps", "v1", "statefulsets", NS)
    kube.create(sts, gang("pdb-guarded", 8, "pool-pdb", "phalanx-test-low"))
    wait_until(lambda: len(bound_nodes(kube, "pdb-guarded")) == 8, 120, "guarded bound")
    guarded_rack = "r1" if set(bound_nodes(kube, "pdb-guarded").values()) == where["r1"] \
        else "r2"
    other_rack = "r2" if guarded_rack == "r1" else "r1"
    kube.create(api_path("policy", "v1", "poddisruptionbudgets", NS), {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "pdb-guarded", "namespace": NS},
        "spec": {"minAvailable": 8, "selector": {"matchLabels": {"app": "pdb-guarded"}}}})
    wait_until(lambda: (kube.get(api_path("policy", "v1", "poddisruptionbudgets", NS,
                                          "pdb-guarded")).get("status") or {}).get(
        "currentHealthy") == 8, 60, "PDB observed")
    kube.create(sts, gang("pdb-default", 8, "pool-pdb", "phalanx-test-low",
                          scheduler="default-scheduler"))
    wait_until(lambda: len(bound_nodes(kube, "pdb-default")) == 8, 120,
               "kube-scheduler bound pdb-default")
    assert set(bound_nodes(kube, "pdb-default").values()) == where[other_rack]
    guarded = uids(kube, "pdb-guarded")

    # Never and equal priority: no victims, pending, and the what-if is named.
    priority_class(kube, "phalanx-test-high-never", 1000, "Never")
    kube.create(sts, gang("pdb-never", 8, "pool-pdb", "phalanx-test-high-never",
                          annotations=REQUIRED))
    kube.create(sts, gang("pdb-equal", 8, "pool-pdb", "phalanx-test-low",
                          annotations=REQUIRED))
    wait_until(lambda: any(e["reason"] == "FailedScheduling"
                           for e in events_for(kube, "pdb-never")), 60, "pdb-never reported")
    wait_until(lambda: any(e["reason"] == "FailedScheduling"
                           for e in events_for(kube, "pdb-equal")), 60, "pdb-equal reported")
    never = [e["message"] for e in events_for(kube, "pdb-never")
             if e["reason"] == "FailedScheduling"]
    assert any("preemptionPolicy: Never" in m for m in never), never
    assert len(bound_nodes(kube, "pdb-default")) == 8 and uids(kube, "pdb-guarded") == guarded
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "pdb-never"))
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "pdb-equal"))

    # High priority: kube-scheduler's pods are the only unprotected victims.
    default_before = uids(kube, "pdb-default")
    kube.create(sts, gang("pdb-high", 8, "pool-pdb", "phalanx-test-high",
                          annotations=REQUIRED))
    wait_until(lambda: len(bound_nodes(kube, "pdb-high")) == 8, 180, "pdb-high bound")
    assert set(bound_nodes(kube, "pdb-high").values()) == where[other_rack]
    assert uids(kube, "pdb-guarded") == guarded
    assert not (uids(kube, "pdb-default") & default_before)
    remove(kube, ["pdb-guarded", "pdb-default", "pdb-high"])
    kube.delete(api_path("policy", "v1", "poddisruptionbudgets", NS, "pdb-guarded"))
