"""Every gang the ML ecosystem makes, on the real control plane with the real workload
controllers (JobSet, LeaderWorkerSet, training-operator built from their Go modules):
each workload is one gang, all or nothing, in the optimal domains, with its exclusive
topology honoured; Kubernetes' own PodGroup, Kueue's and Volcano's groups too, and a pod
two sources claim is in exactly one gang."""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
import pytest

from kube import ApiError, api_path
from kube.resources import (
    JOBSETS,
    LEADER_WORKER_SETS,
    NATIVE_POD_GROUPS,
    SECRETS,
    TRAINING_JOBS,
)
from localcluster.bulk import ensure_namespace
from tests.integration.helpers import (
    NS,
    POOL,
    bound,
    create_all,
    install_pod_group_crd,
    pod_group,
    pod_group_path,
    pool_nodes,
    wait_until,
)

pytestmark = pytest.mark.integration
L3 = "topology.k8s.aws/network-node-layer-3"
PODS = api_path("", "v1", "pods", NS)


def pods(kube, selector: str) -> list[dict]:
    return kube.get(PODS, labelSelector=selector)["items"]


def racks(kube, pool: str) -> dict[str, str]:
    """node -> its layer-3 domain, for the pool's nodes."""
    return {n["metadata"]["name"]: n["metadata"]["labels"][L3] for n in kube.get(
        api_path("", "v1", "nodes"), labelSelector=f"{POOL}={pool}")["items"]}


def container(gpus: int) -> list[dict]:
    return [{"name": "w", "image": "trainer",
             "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]


def pod_spec(pool: str, gpus: int = 8) -> dict:
    return {"schedulerName": "phalanx", "nodeSelector": {POOL: pool},
            "restartPolicy": "Never", "containers": container(gpus)}


def jobset(name: str, pool: str, replicas: int, parallelism: int,
           exclusive: str | None = None) -> dict:
    return {
        "apiVersion": JOBSETS.api_version, "kind": "JobSet",
        "metadata": {"name": name, "namespace": NS,
                     "annotations": ({"alpha.jobset.sigs.k8s.io/exclusive-topology": exclusive}
                                     if exclusive else {})},
        "spec": {"replicatedJobs": [{"name": "workers", "replicas": replicas, "template": {
            "spec": {"parallelism": parallelism, "completions": parallelism,
                     "backoffLimit": 0, "template": {"spec": pod_spec(pool)}}}}]}}


def explain(phalanx, name: str, kind: str) -> dict:
    reply = httpx.get(f"{phalanx.url}/v1/groups/{NS}/{name}/explain", params={"kind": kind},
                      timeout=10)
    return reply.json() if reply.status_code == 200 else {}


def groups(phalanx) -> list[dict]:
    return httpx.get(f"{phalanx.url}/v1/groups", timeout=10).json()["groups"]


def settle(seconds: float = 8.0) -> None:
    """Long enough for several scheduling cycles and watch deliveries."""
    time.sleep(seconds)


# -- JobSet -------------------------------------------------------------------------------
def test_jobset_is_one_gang_all_or_nothing_in_rank_order(kube, phalanx, workload_controllers):
    pool_nodes(kube, "pool-js", 6, seed=91, fanout=(1, 2, 3), ragged=0)  # 2 racks x 3
    kube.create(JOBSETS.path(NS), jobset("js-big", "pool-js", replicas=2, parallelism=4))
    wait_until(lambda: len(pods(kube, "jobset.sigs.k8s.io/jobset-name=js-big")) == 8, 60,
               "the JobSet's 8 pods created")
    settle()
    assert bound(pods(kube, "jobset.sigs.k8s.io/jobset-name=js-big")) == []
    pending = explain(phalanx, "js-big", "JobSet")
    assert pending["state"].startswith("Pending") and "8 pods" in pending["summary"]
    kube.delete(JOBSETS.path(NS, "js-big"), propagationPolicy="Foreground")
    wait_until(lambda: not pods(kube, "jobset.sigs.k8s.io/jobset-name=js-big"), 60, "gone")

    kube.create(JOBSETS.path(NS), jobset("js-fit", "pool-js", replicas=2, parallelism=3))
    members = "jobset.sigs.k8s.io/jobset-name=js-fit"
    wait_until(lambda: len(bound(pods(kube, members))) == 6, 90, "the JobSet bound whole")
    rack_of = racks(kube, "pool-js")
    by_rank = {}
    for pod in pods(kube, members):
        labels = pod["metadata"]["labels"]
        rank = (int(labels["jobset.sigs.k8s.io/job-global-index"]) * 3
                + int(labels["batch.kubernetes.io/job-completion-index"]))
        by_rank[rank] = rack_of[pod["spec"]["nodeName"]]
    # Optimal: two racks, and ranks 0-2 (Job 0) share one, ranks 3-5 (Job 1) the other.
    assert len(set(by_rank.values())) == 2
    assert len({by_rank[r] for r in range(3)}) == 1 and len({by_rank[r] for r in (3, 4, 5)}) == 1
    detail = httpx.get(f"{phalanx.url}/v1/groups/{NS}/js-fit", params={"kind": "JobSet"},
                       timeout=10).json()
    assert sorted(a["rank"] for a in detail["pods"]) == list(range(6))


def test_jobset_exclusive_topology_keeps_each_job_alone_in_its_rack(kube, phalanx,
                                                                     workload_controllers):
    pool_nodes(kube, "pool-jx", 12, seed=92, fanout=(1, 3, 4), ragged=0)  # 3 racks x 4
    kube.create(JOBSETS.path(NS), jobset("js-excl", "pool-jx", replicas=2, parallelism=4,
                                         exclusive=L3))
    members = "jobset.sigs.k8s.io/jobset-name=js-excl"
    # Leaders first (JobSet's webhook holds the followers back until they are bound).
    wait_until(lambda: len(bound(pods(kube, members))) == 8, 120, "both Jobs bound")
    rack_of = racks(kube, "pool-jx")
    per_job: dict[str, set[str]] = defaultdict(set)
    for pod in pods(kube, members):
        per_job[pod["metadata"]["labels"]["jobset.sigs.k8s.io/job-index"]].add(
            rack_of[pod["spec"]["nodeName"]])
    assert all(len(r) == 1 for r in per_job.values()), per_job
    assert len(set().union(*per_job.values())) == 2  # no rack shared

    # Three Jobs of 4 where only... each Job needs a rack of its own: 2 racks are free
    # of JobSet pods at best, so a 3-Job exclusive JobSet of 5-pod Jobs cannot fit at all.
    kube.create(JOBSETS.path(NS), jobset("js-excl-big", "pool-jx", replicas=3, parallelism=5,
                                         exclusive=L3))
    leaders = "jobset.sigs.k8s.io/jobset-name=js-excl-big"
    wait_until(lambda: len(pods(kube, leaders)) == 3, 60, "its 3 leaders created")
    settle()
    assert bound(pods(kube, leaders)) == []
    summary = explain(phalanx, "js-excl-big", "JobSet").get("summary", "")
    assert "slice" in summary and "network-node-layer-3" in summary, summary


# -- LeaderWorkerSet -----------------------------------------------------------------------
def test_lws_groups_are_gangs_each_alone_in_its_rack(kube, phalanx, workload_controllers):
    pool_nodes(kube, "pool-lws", 12, seed=93, fanout=(1, 3, 4), ragged=0)  # 3 racks x 4
    lws = {"apiVersion": LEADER_WORKER_SETS.api_version, "kind": "LeaderWorkerSet",
           "metadata": {"name": "infer", "namespace": NS, "annotations": {
               "leaderworkerset.sigs.k8s.io/exclusive-topology": L3}},
           "spec": {"replicas": 3, "leaderWorkerTemplate": {
               "size": 4, "workerTemplate": {"spec": {**pod_spec("pool-lws"),
                                                      "restartPolicy": "Always"}}}}}
    kube.create(LEADER_WORKER_SETS.path(NS), lws)
    members = "leaderworkerset.sigs.k8s.io/name=infer"
    wait_until(lambda: len(bound(pods(kube, members))) == 12, 120, "3 groups of 4 bound")
    rack_of = racks(kube, "pool-lws")
    per_group: dict[str, set[str]] = defaultdict(set)
    for pod in pods(kube, members):
        per_group[pod["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/group-index"]].add(
            rack_of[pod["spec"]["nodeName"]])
    assert len(per_group) == 3 and all(len(r) == 1 for r in per_group.values()), per_group
    assert len(set().union(*per_group.values())) == 3
    names = {g["name"]: g for g in groups(phalanx) if g["kind"] == "LeaderWorkerSet"}
    assert {"infer-0", "infer-1", "infer-2"} <= set(names)
    assert all(names[f"infer-{i}"]["source"] == "LeaderWorkerSet" for i in range(3))


def test_lws_subgroup_exclusive_topology_puts_each_subgroup_alone_in_a_rack(
        kube, phalanx, workload_controllers):
    pool_nodes(kube, "pool-lsg", 8, seed=97, fanout=(1, 4, 2), ragged=0)  # 4 racks x 2
    lws = {"apiVersion": LEADER_WORKER_SETS.api_version, "kind": "LeaderWorkerSet",
           "metadata": {"name": "split", "namespace": NS, "annotations": {
               "leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology": L3}},
           "spec": {"replicas": 1, "leaderWorkerTemplate": {
               "size": 4, "subGroupPolicy": {"subGroupSize": 2},
               "workerTemplate": {"spec": {**pod_spec("pool-lsg"), "restartPolicy": "Always"}}}}}
    kube.create(LEADER_WORKER_SETS.path(NS), lws)
    members = "leaderworkerset.sigs.k8s.io/name=split"
    wait_until(lambda: len(bound(pods(kube, members))) == 4, 120, "the group bound")
    rack_of = racks(kube, "pool-lsg")
    per_subgroup: dict[str, set[str]] = defaultdict(set)
    for pod in pods(kube, members):
        per_subgroup[pod["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/subgroup-index"]].add(
            rack_of[pod["spec"]["nodeName"]])
    assert sorted(per_subgroup) == ["0", "1"]
    assert all(len(r) == 1 for r in per_subgroup.values()), per_subgroup
    assert per_subgroup["0"] != per_subgroup["1"]
    slices = explain(phalanx, "split-0", "LeaderWorkerSet").get("slices", [])
    assert sorted(s["name"] for s in slices) == ["split-0-subgroup-0", "split-0-subgroup-1"]


# -- training-operator ---------------------------------------------------------------------
def pytorchjob(name: str, pool: str, workers: int) -> dict:
    template = {"spec": {**pod_spec(pool), "restartPolicy": "OnFailure",
                         "containers": [{**container(8)[0], "name": "pytorch"}]}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
                "Worker": {"replicas": workers, "restartPolicy": "OnFailure",
                           "template": template}}}}


def test_pytorchjob_is_one_gang_in_one_rack(kube, phalanx, workload_controllers):
    pool_nodes(kube, "pool-pt", 16, seed=94, fanout=(1, 2, 8), ragged=0)  # 2 racks x 8
    jobs = TRAINING_JOBS["PyTorchJob"]
    kube.create(jobs.path(NS), pytorchjob("pt-big", "pool-pt", workers=16))
    big = "training.kubeflow.org/job-name=pt-big"
    wait_until(lambda: len(pods(kube, big)) == 17, 60, "17 pods created")
    settle()
    assert bound(pods(kube, big)) == []
    kube.delete(jobs.path(NS, "pt-big"))

    kube.create(jobs.path(NS), pytorchjob("pt", "pool-pt", workers=7))
    members = "training.kubeflow.org/job-name=pt"
    wait_until(lambda: len(bound(pods(kube, members))) == 8, 90, "1 master + 7 workers bound")
    rack_of = racks(kube, "pool-pt")
    assert len({rack_of[p["spec"]["nodeName"]] for p in pods(kube, members)}) == 1
    detail = httpx.get(f"{phalanx.url}/v1/groups/{NS}/pt", params={"kind": "PyTorchJob"},
                       timeout=10).json()
    master = next(a for a in detail["pods"] if a["pod"] == "pt-master-0")
    assert master["rank"] == 0


def test_training_operator_webhooks_follow_its_certificate_rotation(kube, workload_controllers):
    """Its rotation issues a new CA and certificate whenever it finds its Secret's invalid
    and puts the CA in the webhooks at once: the served files must follow the Secret, as
    a kubelet's Secret volume does (the 60-minute soak's PyTorchJobs failed `tls: bad
    certificate` from an apiserver restart on, when they were copied once)."""
    ensure_namespace(kube, NS)
    secret = SECRETS.path("kubeflow", "training-operator-webhook-cert")
    before = kube.get(secret)["data"]["ca.crt"]
    kube.call("PATCH", secret, body={"data": None},
              content_type="application/merge-patch+json")
    wait_until(lambda: (kube.get(secret).get("data") or {}).get("ca.crt") not in (None, before),
               60, "the rotation to issue a new CA")
    jobs = TRAINING_JOBS["PyTorchJob"]
    refused: list[ApiError] = []

    def created() -> bool:
        try:
            kube.create(jobs.path(NS), pytorchjob("pt-rotated", "pool-none", workers=1))
            return True
        except ApiError as exc:  # the webhook call failed (its TLS) until the files follow
            refused.append(exc)
            return False
    try:
        wait_until(created, 60, "a PyTorchJob admitted through the rotated webhooks")
    except TimeoutError as exc:
        raise AssertionError(f"still refused: {refused[-1]}") from exc
    kube.delete(jobs.path(NS, "pt-rotated"))


# -- Kubernetes' own PodGroup --------------------------------------------------------------
def native_pod(name: str, group: str, pool: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": group}},
            "spec": {**pod_spec(pool), "schedulingGroup": {"podGroupName": group}}}


def test_native_pod_group_waits_for_min_count_then_places_in_one_rack(kube, phalanx):
    pool_nodes(kube, "pool-wl", 12, seed=95, fanout=(1, 3, 4), ragged=0)
    kube.create(NATIVE_POD_GROUPS.path(NS), {
        "apiVersion": NATIVE_POD_GROUPS.api_version, "kind": "PodGroup",
        "metadata": {"name": "native", "namespace": NS},
        "spec": {"schedulingPolicy": {"gang": {"minCount": 4}},
                 "schedulingConstraints": {"topology": [{"key": L3}]}}})
    create_all(kube, [native_pod(f"native-{i}", "native", "pool-wl") for i in range(3)])
    settle()
    assert bound(pods(kube, "app=native")) == []
    create_all(kube, [native_pod("native-3", "native", "pool-wl")])
    wait_until(lambda: len(bound(pods(kube, "app=native"))) == 4, 60, "all 4 bound")
    rack_of = racks(kube, "pool-wl")
    assert len({rack_of[p["spec"]["nodeName"]] for p in pods(kube, "app=native")}) == 1

    def scheduled() -> bool:
        status = kube.get(NATIVE_POD_GROUPS.path(NS, "native")).get("status") or {}
        return any(c["type"] == "PodGroupScheduled" and c["status"] == "True"
                   and c["reason"] == "Scheduled" for c in status.get("conditions") or ())
    wait_until(scheduled, 30, "PodGroupScheduled=True written as kube-scheduler writes it")


# -- Kueue, Volcano, precedence ------------------------------------------------------------
def labelled_pods(prefix: str, count: int, pool: str, labels: dict[str, str],
                  annotations: dict[str, str]) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{prefix}-{i}", "namespace": NS,
                          "labels": {**labels, "app": prefix}, "annotations": annotations},
             "spec": pod_spec(pool)} for i in range(count)]


def test_kueue_and_volcano_groups_are_gangs_and_a_doubly_claimed_pod_is_in_one(kube, phalanx):
    pool_nodes(kube, "pool-grp", 8, seed=96, fanout=(1, 2, 4), ragged=0)
    kueue = {"kueue.x-k8s.io/pod-group-name": "kq"}
    total = {"kueue.x-k8s.io/pod-group-total-count": "3"}
    create_all(kube, labelled_pods("kq", 2, "pool-grp", kueue, total))
    settle()
    assert bound(pods(kube, "app=kq")) == []  # 2 of a group of 3: waits
    create_all(kube, labelled_pods("kq-last", 1, "pool-grp", kueue, total))
    wait_until(lambda: len(bound(pods(kube, "kueue.x-k8s.io/pod-group-name=kq"))) == 3, 60,
               "the Kueue group bound whole")

    volcano = {"scheduling.k8s.io/group-name": "vc"}
    create_all(kube, labelled_pods("vc", 2, "pool-grp", {}, volcano))
    wait_until(lambda: len(bound(pods(kube, "app=vc"))) == 2, 60, "the Volcano group bound")
    kinds = {(g["kind"], g["name"]): g["source"] for g in groups(phalanx)}
    assert kinds[("PodGroup.kueue.x-k8s.io", "kq")] == "Kueue pod group"
    assert kinds[("PodGroup.scheduling.volcano.sh", "vc")] == "Volcano group annotation"

    # Claimed by a scheduler-plugins PodGroup label and a Kueue group label at once: the
    # PodGroup label comes first, so there is one gang, the PodGroup's.
    install_pod_group_crd(kube)
    kube.create(pod_group_path(), pod_group("both", 2))
    create_all(kube, labelled_pods("both", 2, "pool-grp", {
        "scheduling.x-k8s.io/pod-group": "both", "kueue.x-k8s.io/pod-group-name": "both"},
        {"kueue.x-k8s.io/pod-group-total-count": "2"}))
    wait_until(lambda: len(bound(pods(kube, "app=both"))) == 2, 60, "bound as one gang")
    claims = [g for g in groups(phalanx) if g["name"] == "both"]
    assert [(g["kind"], g["source"]) for g in claims] == [("PodGroup", "PodGroup label")]
