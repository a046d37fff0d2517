"""Faults on the real control plane: replaced members, failed binds, killed schedulers."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from kube import ApiError, api_path
from tests.integration.helpers import (
    NS,
    events_for,
    gpus_per_node,
    pods_of,
    pool_nodes,
    readyz,
    scrape,
    start_phalanx,
    statefulset,
    stop_process,
    wait_until,
)
from topology.presets import AWS_LAYER

pytestmark = pytest.mark.integration
LAYER3 = AWS_LAYER[2]
STS = api_path("apps", "v1", "statefulsets", NS)


def _bound(kube, app: str, count: int) -> bool:
    pods = pods_of(kube, app)
    return len(pods) == count and all(p["spec"].get("nodeName") for p in pods)


def _nodes_of(kube, app: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods_of(kube, app)}


def _replaced(kube, app: str, name: str, old_uid: str) -> dict:
    def ready():
        try:
            pod = kube.get(api_path("", "v1", "pods", NS, name))
        except ApiError:
            return False
        return pod["metadata"]["uid"] != old_uid and pod["spec"].get("nodeName")
    wait_until(ready, 60, f"{name} recreated and bound")
    return kube.get(api_path("", "v1", "pods", NS, name))


def test_replacements_land_next_to_their_peers_and_nobody_moves(kube, phalanx):
    nodes = {n["metadata"]["name"]: n for n in pool_nodes(kube, "pool-rep", 40, seed=61,
                                                           fanout=(1, 2, 20))}
    kube.create(STS, statefulset("rep", 12, "pool-rep"))
    wait_until(lambda: _bound(kube, "rep", 12), 60, "rep bound")
    before = _nodes_of(kube, "rep")
    rack = {name: nodes[node]["metadata"]["labels"][LAYER3] for name, node in before.items()}
    assert len(set(rack.values())) == 1  # 12 whole-node pods fit one rack of ~20

    # 1. A pod deleted: the StatefulSet recreates it, it goes back into the peers' rack.
    pod = kube.get(api_path("", "v1", "pods", NS, "rep-5"))
    kube.delete(api_path("", "v1", "pods", NS, "rep-5"), gracePeriodSeconds=0)
    fresh = _replaced(kube, "rep", "rep-5", pod["metadata"]["uid"])
    assert nodes[fresh["spec"]["nodeName"]]["metadata"]["labels"][LAYER3] == rack["rep-4"]

    # 2. A node cordoned and its pod evicted: the replacement avoids it, stays in the rack.
    victim = before["rep-8"]
    kube.call("PATCH", api_path("", "v1", "nodes", None, victim),
              body={"spec": {"unschedulable": True}},
              content_type="application/strategic-merge-patch+json")
    pod = kube.get(api_path("", "v1", "pods", NS, "rep-8"))
    kube.create(api_path("", "v1", "pods", NS, "rep-8", "eviction"),
                {"apiVersion": "policy/v1", "kind": "Eviction",
                 "metadata": {"name": "rep-8", "namespace": NS},
                 "deleteOptions": {"gracePeriodSeconds": 0}})
    fresh = _replaced(kube, "rep", "rep-8", pod["metadata"]["uid"])
    assert fresh["spec"]["nodeName"] != victim
    assert nodes[fresh["spec"]["nodeName"]]["metadata"]["labels"][LAYER3] == rack["rep-7"]

    after = _nodes_of(kube, "rep")
    assert {k: v for k, v in after.items() if k not in ("rep-5", "rep-8")} == {
        k: v for k, v in before.items() if k not in ("rep-5", "rep-8")}
    assert max(gpus_per_node(kube, "pool-rep").values()) <= 8
    kube.call("PATCH", api_path("", "v1", "nodes", None, victim),
              body={"spec": {"unschedulable": False}},
              content_type="application/strategic-merge-patch+json")
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "rep"))


def _deny_binds(kube, pods: list[str], escape: list[str]) -> list[str]:
    """A ValidatingAdmissionPolicy refusing `pods/binding` of `pods` to any node but
    `escape`: a real bind failure after the solve, on the API server's side."""
    policy = "phalanx-test-deny-binds"
    expression = (f"request.namespace != '{NS}' || !(request.name in {pods!r}) || "
                  f"object.target.name in {escape!r}").replace('"', "'")
    kube.create(api_path("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies"), {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                     "resources": ["pods/binding"]}]},
                 "validations": [{"expression": expression,
                                  "message": "test policy: bind refused"}]}})
    kube.create(api_path("admissionregistration.k8s.io", "v1",
                         "validatingadmissionpolicybindings"), {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]}})
    return [api_path("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings",
                     None, policy),
            api_path("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies",
                     None, policy)]


def test_failed_binds_are_repaired_next_to_the_bound_members(kube, phalanx):
    nodes = sorted(n["metadata"]["name"] for n in pool_nodes(kube, "pool-pb", 16, seed=71,
                                                                fanout=(1, 1, 16)))
    escape = nodes[-2:]
    cleanup = _deny_binds(kube, ["pb-2", "pb-5"], escape)
    try:
        # The policy takes effect within a second or so; probe it before relying on it.
        time.sleep(2)
        kube.create(STS, statefulset("pb", 8, "pool-pb"))
        wait_until(lambda: _bound(kube, "pb", 8), 60, "pb bound after repair")
    finally:
        for path in cleanup:
            kube.delete(path)
    placed = _nodes_of(kube, "pb")
    assert {placed["pb-2"], placed["pb-5"]} == set(escape)
    assert len(set(placed.values())) == 8
    reasons = [e["reason"] for e in events_for(kube, "pb")]
    assert "PartiallyBound" in reasons
    partial = next(e for e in events_for(kube, "pb") if e["reason"] == "PartiallyBound")
    assert "repairing" in partial["message"]
    scheduled = Counter(e["involvedObject"]["name"] for e in kube.get(
        api_path("", "v1", "events", NS))["items"] if e["reason"] == "Scheduled"
        and e["involvedObject"]["name"].startswith("pb-"))
    assert all(scheduled[f"pb-{i}"] == 1 for i in range(8)), scheduled
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "pb"))


CRASH_CONFIG = """
schedulerName: phalanx-crash
binder: {concurrency: 1}
"""


def test_killed_at_any_moment_and_restarted_binds_each_pod_once(kube, local_cluster, phalanx,
                                                                 tmp_path):
    pool_nodes(kube, "pool-crash", 72, seed=81, fanout=(1, 3, 24))
    sts = statefulset("crash", 64, "pool-crash")
    sts["spec"]["template"]["spec"]["schedulerName"] = "phalanx-crash"
    log = tmp_path / "crash.log"
    process = start_phalanx(local_cluster.kubeconfig, log, CRASH_CONFIG)
    seen = []
    try:
        kube.create(STS, sts)
        # Kill -9 at staggered moments after each incarnation is ready: while it solves,
        # while its binds are in flight, after the gang is complete.
        for delay in (0.0, 0.0, 0.05, 0.5):
            wait_until(lambda p=process: readyz(p) == 200, 30, "phalanx ready")
            time.sleep(delay)
            process.kill()
            process.wait(10)
            seen.append(sum(1 for node in _nodes_of(kube, "crash").values() if node))
            process = start_phalanx(local_cluster.kubeconfig, log, CRASH_CONFIG)
        wait_until(lambda: _bound(kube, "crash", 64), 90, "crash gang complete")
        print(f"bound at each kill -9: {seen}")
        wait_until(lambda p=process: readyz(p) == 200, 30, "phalanx ready")
        time.sleep(2)  # a restarted scheduler must leave a complete gang alone
        if seen[-1] == 64:  # killed after binding: the new process has nothing to bind
            assert scrape(process.url, 'phalanx_pods_bound_total{path="gang"}') == 0
    finally:
        stop_process(process)
        print(log.read_text()[-4000:])
    assert max(gpus_per_node(kube, "pool-crash").values()) <= 8
    placed = _nodes_of(kube, "crash")
    assert len(set(placed.values())) == 64  # one whole-node pod per node
    scheduled = Counter(e["involvedObject"]["name"] for e in kube.get(
        api_path("", "v1", "events", NS))["items"] if e["reason"] == "Scheduled"
        and e["involvedObject"]["name"].startswith("crash-"))
    # Never bound twice. (A process killed right after its binds may not have written
    # their Scheduled Events yet, and its successor rightly binds nothing: then there are
    # none, as in a fresh-clone run of e837508.)
    assert max(scheduled.values(), default=0) <= 1, scheduled
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "crash"))
