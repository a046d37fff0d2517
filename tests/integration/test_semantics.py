"""What a pod carries beyond resources, on the real control plane: inter-pod
anti-affinity, host ports, topology spread, volumes (through the real volume controller)
and DRA claims are honoured, or the pod is left pending with the reason named."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from kube import api_path
from tests.integration.helpers import (
    NS,
    POOL,
    bound,
    create_all,
    events_for,
    pods_of,
    pool_nodes,
    statefulset,
    wait_until,
)

pytestmark = pytest.mark.integration
STS = api_path("apps", "v1", "statefulsets", NS)
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def _explain(phalanx, name: str, kind: str = "StatefulSet") -> dict:
    reply = httpx.get(f"{phalanx.url}/v1/groups/{NS}/{name}/explain", params={"kind": kind},
                      timeout=10)
    return reply.json() if reply.status_code == 200 else {}


def _node_labels(kube, pool: str) -> dict[str, dict[str, str]]:
    return {n["metadata"]["name"]: n["metadata"]["labels"] for n in kube.get(
        api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")["items"]}


def test_anti_affinity_and_a_host_port_put_each_pod_on_its_own_node(kube, phalanx):
    pool_nodes(kube, "pool-anti", 8, seed=81, fanout=(1, 2, 4))
    sts = statefulset("spread-out", 8, "pool-anti", gpus=4)
    spec = sts["spec"]["template"]["spec"]
    spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "spread-out"}}, "topologyKey": HOSTNAME}]}}
    spec["containers"][0]["ports"] = [{"containerPort": 29500, "hostPort": 29500}]
    kube.create(STS, sts)
    wait_until(lambda: len(bound(pods_of(kube, "spread-out"))) == 8, 90, "8 pods bound")
    per_node = Counter(p["spec"]["nodeName"] for p in pods_of(kube, "spread-out"))
    assert len(per_node) == 8 and max(per_node.values()) == 1  # 4-GPU pods, 8-GPU nodes
    # Every node of the pool holds the port now: one more pod with it has nowhere to go.
    late = statefulset("late-port", 1, "pool-anti", gpus=4)
    late["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": 29500, "hostPort": 29500}]
    kube.create(STS, late)
    wait_until(lambda: any("free ports" in e["message"] for e in events_for(kube, "late-port-0")),
               60, "FailedScheduling naming the host port")
    assert bound(pods_of(kube, "late-port")) == []
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "late-port"))


def test_placed_pods_anti_affinity_repels_a_gang(kube, phalanx):
    nodes = pool_nodes(kube, "pool-sym", 3, seed=82, fanout=(1, 1, 3))
    target = sorted(n["metadata"]["name"] for n in nodes)[0]
    loner = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "loner", "namespace": NS, "labels": {"app": "loner"}},
             "spec": {"nodeName": target, "containers": [{"name": "c", "image": "x"}],
                      "affinity": {"podAntiAffinity": {
                          "requiredDuringSchedulingIgnoredDuringExecution": [{
                              "labelSelector": {"matchLabels": {"app": "shy"}},
                              "topologyKey": HOSTNAME}]}}}}
    create_all(kube, [loner])
    kube.create(STS, statefulset("shy", 2, "pool-sym"))
    wait_until(lambda: len(bound(pods_of(kube, "shy"))) == 2, 60, "shy gang bound")
    assert target not in {p["spec"]["nodeName"] for p in pods_of(kube, "shy")}
    too = statefulset("shyer", 1, "pool-sym")  # one more pod the loner repels
    too["spec"]["selector"] = {"matchLabels": {"app": "shy", "set": "shyer"}}
    too["spec"]["template"]["metadata"]["labels"] = {"app": "shy", "set": "shyer"}
    kube.create(STS, too)
    wait_until(lambda: any("existing pods anti-affinity" in e["message"]
                           for e in events_for(kube, "shyer-0")), 60,
               "the free node is refused: the loner's anti-affinity")
    assert bound(kube.get(api_path("", "v1", "pods", NS),
                          labelSelector="set=shyer")["items"]) == []
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "shyer"))


def test_zone_spread_splits_a_gang_evenly(kube, phalanx):
    nodes = pool_nodes(kube, "pool-zone", 8, seed=83, fanout=(2, 1, 4))
    zones = {n["metadata"]["name"]: n["metadata"]["labels"][ZONE] for n in nodes}
    sizes = Counter(zones.values())
    assert len(sizes) == 2  # racks are ragged: the smaller zone bounds an even split
    size = 2 * min(sizes.values())
    assert size < len(nodes)  # packed into one zone it would fit, and does not
    sts = statefulset("even", size, "pool-zone")
    sts["spec"]["template"]["spec"]["topologySpreadConstraints"] = [{
        "maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "even"}}}]
    kube.create(STS, sts)
    wait_until(lambda: len(bound(pods_of(kube, "even"))) == size, 90, "the gang bound")
    split = Counter(zones[p["spec"]["nodeName"]] for p in pods_of(kube, "even"))
    assert sorted(split.values()) == [size // 2, size // 2]


def _storage_class(kube, name: str, provisioner: str, mode: str) -> None:
    from kube import ApiError

    try:
        kube.create(api_path("storage.k8s.io", "v1", "storageclasses"),
                    {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                     "metadata": {"name": name}, "provisioner": provisioner,
                     "volumeBindingMode": mode})
    except ApiError as exc:
        if exc.status != 409:
            raise


def _with_claims(sts: dict, storage_class: str) -> dict:
    sts["spec"]["volumeClaimTemplates"] = [{
        "metadata": {"name": "data"},
        "spec": {"storageClassName": storage_class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "10Gi"}}}}]
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"}]
    return sts


def test_local_volumes_decide_the_nodes_and_are_bound_before_the_pods(kube, phalanx):
    nodes = sorted(n["metadata"]["name"] for n in pool_nodes(kube, "pool-vol", 6, seed=84,
                                                               fanout=(1, 2, 3)))
    _storage_class(kube, "phalanx-local", "kubernetes.io/no-provisioner",
                   "WaitForFirstConsumer")
    homes = [nodes[0], nodes[-1]]
    volumes = [{"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"local-{i}"},
                "spec": {"storageClassName": "phalanx-local", "capacity": {"storage": "50Gi"},
                         "accessModes": ["ReadWriteOnce"], "local": {"path": "/mnt/disk"},
                         "persistentVolumeReclaimPolicy": "Retain",
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{
                             "matchExpressions": [{"key": HOSTNAME, "operator": "In",
                                                   "values": [home]}]}]}}}}
               for i, home in enumerate(homes)]
    for volume in volumes:
        kube.create(api_path("", "v1", "persistentvolumes"), volume)
    kube.create(STS, _with_claims(statefulset("stateful", 2, "pool-vol"), "phalanx-local"))
    wait_until(lambda: len(bound(pods_of(kube, "stateful"))) == 2, 90,
               "pods bound once their claims are")
    placed = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods_of(kube, "stateful")}
    assert set(placed.values()) == set(homes)
    for pod, node in placed.items():
        claim = kube.get(api_path("", "v1", "persistentvolumeclaims", NS, f"data-{pod}"))
        assert claim["status"]["phase"] == "Bound"
        volume = kube.get(api_path("", "v1", "persistentvolumes", None,
                                   claim["spec"]["volumeName"]))
        terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == [node]


def test_claims_that_cannot_be_served_keep_the_pod_pending_with_the_reason(kube, phalanx):
    pool_nodes(kube, "pool-claims", 2, seed=85, fanout=(1, 1, 2))
    # Immediate binding and no provisioner running: the claim never binds by itself.
    _storage_class(kube, "phalanx-immediate", "example.com/nobody", "Immediate")
    kube.create(STS, _with_claims(statefulset("eager", 1, "pool-claims"), "phalanx-immediate"))
    wait_until(lambda: any("unbound immediate PersistentVolumeClaims" in e["message"]
                           for e in events_for(kube, "eager-0")), 60, "the reason named")
    # Waiting for a first consumer with a provisioner: Phalanx picks the node and asks
    # for the volume there; with no provisioner running, the pod waits, room reserved.
    _storage_class(kube, "phalanx-provisioned", "example.com/nobody", "WaitForFirstConsumer")
    kube.create(STS, _with_claims(statefulset("patient", 1, "pool-claims"),
                                  "phalanx-provisioned"))
    claim_path = api_path("", "v1", "persistentvolumeclaims", NS, "data-patient-0")

    def selected() -> str:
        try:
            claim = kube.get(claim_path)
        except Exception:
            return ""
        return (claim["metadata"].get("annotations") or {}).get(
            "volume.kubernetes.io/selected-node", "")
    wait_until(selected, 60, "the selected-node annotation")
    assert selected().startswith("pool-claims-")
    wait_until(lambda: _explain(phalanx, "patient").get("state") ==
               "Binding: waiting for volumes", 30, "explain says it waits for volumes")
    # A pod naming a claim that does not exist.
    orphan = statefulset("orphan", 1, "pool-claims")
    orphan["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "no-such-claim"}}]
    kube.create(STS, orphan)
    wait_until(lambda: any('persistentvolumeclaim "no-such-claim" not found' in e["message"]
                           for e in events_for(kube, "orphan-0")), 60, "missing claim named")
    time.sleep(1)
    for name in ("eager", "patient", "orphan"):
        assert bound(pods_of(kube, name)) == [], name
        kube.delete(api_path("apps", "v1", "statefulsets", NS, name))


def test_dra_claims_are_refused_by_name(kube, phalanx):
    pool_nodes(kube, "pool-dra", 1, seed=86, fanout=(1, 1, 1))
    sts = statefulset("dra", 1, "pool-dra")
    spec = sts["spec"]["template"]["spec"]
    spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "gpu-claim"}]
    spec["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]
    kube.create(STS, sts)
    wait_until(lambda: any("DRA resource claims" in e["message"]
                           for e in events_for(kube, "dra-0")), 60, "DRA refusal named")
    assert bound(pods_of(kube, "dra")) == []
    explain = _explain(phalanx, "dra")
    assert explain["code"] == "UnschedulableAndUnresolvable"
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "dra"))


def test_a_nominated_pod_holds_its_room(kube, phalanx):
    nodes = sorted(n["metadata"]["name"] for n in pool_nodes(kube, "pool-nom", 3, seed=87,
                                                               fanout=(1, 1, 3)))
    waiting = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "preemptor", "namespace": NS},
               "spec": {"schedulerName": "nobody", "nodeSelector": {POOL: "pool-nom"},
                        "containers": [{"name": "c", "image": "x", "resources": {
                            "limits": {"nvidia.com/gpu": "8"}}}]}}
    create_all(kube, [waiting])
    kube.call("PATCH", api_path("", "v1", "pods", NS, "preemptor", "status"),
              body={"status": {"nominatedNodeName": nodes[0]}},
              content_type="application/merge-patch+json")
    kube.create(STS, statefulset("beside", 2, "pool-nom"))
    wait_until(lambda: len(bound(pods_of(kube, "beside"))) == 2, 60, "2 pods bound")
    assert nodes[0] not in {p["spec"]["nodeName"] for p in pods_of(kube, "beside")}
    kube.create(STS, statefulset("crowd", 1, "pool-nom"))
    wait_until(lambda: any(e["reason"] == "FailedScheduling"
                           for e in events_for(kube, "crowd-0")), 60, "no room left")
    assert bound(pods_of(kube, "crowd")) == []
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "crowd"))
