"""Gang sources on the objects and pods the real controllers make (labels, annotations
and specs as JobSet v0.11, LeaderWorkerSet v0.8, training-operator v1.9, Kueue, Volcano
and Kubernetes 1.36 write them): membership, size, minMember, ranks, sub-groups,
members created later, named errors, and the one precedence order."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from kube.resources import (
    JOBSETS,
    LEADER_WORKER_SETS,
    NATIVE_POD_GROUPS,
    POD_GROUPS,
    TRAINING_JOBS,
    VOLCANO_POD_GROUPS,
    Resource,
)
from scheduler.discovery import discover
from scheduler.gang import ConstraintKind, GangKey
from scheduler.offline import gang_of
from scheduler.request import request_for
from scheduler.sources import sources
from scheduler.sources.jobset import JobSetSource, job_key
from scheduler.sources.kueue import KueueSource
from scheduler.sources.lws import LeaderWorkerSetSource, subgroup_index
from scheduler.sources.native import NativePodGroupSource
from scheduler.sources.training import TrainingJobSource
from scheduler.sources.volcano import VolcanoSource
from topology.records import OwnerRef, PodRecord

NS = "ml"
GPU = "nvidia.com/gpu"
ACCELERATORS = (GPU,)


class Objects:
    def __init__(self, *objects: tuple[Resource, dict[str, Any]]) -> None:
        self.found = {(r.kind, o["metadata"].get("namespace", NS), o["metadata"]["name"]): o
                      for r, o in objects}

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return self.found.get((resource.kind, namespace, name))


def pod(name: str, *, labels: dict[str, str] | None = None, gpus: int = 8,
        annotations: dict[str, str] | None = None, owner: OwnerRef | None = None,
        group: str = "", node: str = "") -> PodRecord:
    return PodRecord(NS, name, uid=f"u-{name}", requests={GPU: gpus} if gpus else {"cpu": 1},
                     labels=labels or {}, annotations=annotations or {}, owner=owner,
                     scheduling_group=group, node_name=node, scheduler_name="phalanx")


def template(gpus: int = 8, labels: dict[str, str] | None = None) -> dict[str, Any]:
    limits = {GPU: str(gpus)} if gpus else {"cpu": "1"}
    return {"metadata": {"labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "x",
                                     "resources": {"limits": limits}}]}}


# -- JobSet -------------------------------------------------------------------------------
def jobset(rjobs: list[dict[str, Any]], annotations: dict[str, str] | None = None,
           **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "js", "namespace": NS, "uid": "js-uid", "generation": 3,
                         "annotations": annotations or {}},
            "spec": {"replicatedJobs": rjobs, **spec}}


def rjob(name: str, replicas: int, parallelism: int, gpus: int = 8,
         job_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "replicas": replicas, "template": {
        "metadata": {"labels": job_labels or {}},
        "spec": {"parallelism": parallelism, "completions": parallelism,
                 "template": template(gpus)}}}


def js_pod(rjob_name: str, job: int, global_index: int, index: int, gpus: int = 8
           ) -> PodRecord:
    return pod(f"js-{rjob_name}-{job}-{index}-abcde", gpus=gpus, labels={
        "jobset.sigs.k8s.io/jobset-name": "js",
        "jobset.sigs.k8s.io/replicatedjob-name": rjob_name,
        "jobset.sigs.k8s.io/job-index": str(job),
        "jobset.sigs.k8s.io/job-global-index": str(global_index),
        "batch.kubernetes.io/job-completion-index": str(index)})


def test_job_key_is_jobsets_sha1_of_the_namespaced_job_name() -> None:
    assert job_key("ml", "js-workers-0") == hashlib.sha1(b"ml/js-workers-0").hexdigest()


def test_jobset_is_one_gang_of_its_accelerator_jobs_ranked_by_global_index() -> None:
    raw = jobset([rjob("driver", 1, 1, gpus=0), rjob("leader", 1, 2), rjob("workers", 2, 4)])
    objects = Objects((JOBSETS, raw))
    source = JobSetSource(ACCELERATORS)
    members = [js_pod("leader", 0, 1, i) for i in range(2)] + [
        js_pod("workers", j, 2 + j, i) for j in range(2) for i in range(4)]
    driver = js_pod("driver", 0, 0, 0, gpus=0)
    assert source.claim(driver, objects) is None  # a CPU job: the per-pod path
    assert {source.claim(p, objects) for p in members} == {GangKey("JobSet", NS, "js")}
    # Ranks: leader's 2 pods first, then workers-0's 4, then workers-1's 4.
    assert [source.rank(p, objects) for p in members] == list(range(10))
    spec = source.describe(GangKey("JobSet", NS, "js"), members, objects)
    assert (spec.min_member, spec.size, spec.later, spec.subgroups) == (10, 10, (), {})
    assert source.subgroup(members[3]) == "js-workers-0"


def test_trainer_initializer_steps_are_not_in_the_trainer_gang() -> None:
    ancestor = "trainer.kubeflow.org/trainjob-ancestor-step"
    raw = jobset([rjob("model-initializer", 1, 1, job_labels={ancestor: "model-initializer"}),
                  rjob("node", 1, 4, job_labels={ancestor: "trainer"})])
    objects = Objects((JOBSETS, raw))
    source = JobSetSource(ACCELERATORS)
    initializer = js_pod("model-initializer", 0, 0, 0)  # even one asking for a GPU
    assert source.claim(initializer, objects) is None
    trainers = [js_pod("node", 0, 1, i) for i in range(4)]
    assert source.claim(trainers[0], objects) == GangKey("JobSet", NS, "js")
    assert [source.rank(p, objects) for p in trainers] == [0, 1, 2, 3]
    assert source.describe(GangKey("JobSet", NS, "js"), trainers, objects).size == 4


def test_exclusive_jobset_waits_for_leaders_and_plans_followers_as_slices() -> None:
    key = "topology.k8s.aws/network-node-layer-3"
    raw = jobset([rjob("workers", 3, 4)],
                 annotations={"alpha.jobset.sigs.k8s.io/exclusive-topology": key})
    objects = Objects((JOBSETS, raw))
    source = JobSetSource(ACCELERATORS)
    leaders = [js_pod("workers", j, j, 0) for j in range(3)]
    spec = source.describe(GangKey("JobSet", NS, "js"), leaders, objects)
    assert (spec.min_member, spec.size) == (3, 12)
    assert {name: (s.level, s.size, s.exclusive) for name, s in spec.subgroups.items()} == {
        f"js-workers-{j}": (key, 4, True) for j in range(3)}
    assert sorted(p.rank for p in spec.later) == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert {p.subgroup for p in spec.later} == {f"js-workers-{j}" for j in range(3)}
    # The request plans the whole JobSet: 12 members in 3 slices, all or nothing.
    found = discover(leaders, {}, ours=lambda p: True, sources=[source], objects=objects)
    request = request_for(found.gangs[0])
    assert len(request.members) == request.min_member == 12
    assert sorted(len(g.members) for g in request.subgroups) == [4, 4, 4]
    assert all(g.exclusive and g.level == key for g in request.subgroups)


def test_jobset_refuses_exclusive_topology_that_differs_between_replicated_jobs() -> None:
    a, b = rjob("a", 1, 2), rjob("b", 1, 2)
    a["template"]["metadata"]["annotations"] = {
        "alpha.jobset.sigs.k8s.io/exclusive-topology": "rack"}
    objects = Objects((JOBSETS, jobset([a, b])))
    spec = JobSetSource(ACCELERATORS).describe(GangKey("JobSet", NS, "js"),
                                               [js_pod("a", 0, 0, 0)], objects)
    assert spec.error is not None and "exclusive-topology" in spec.error


def test_in_order_jobset_places_its_first_job_and_plans_the_rest() -> None:
    raw = jobset([rjob("first", 1, 2), rjob("second", 1, 3)],
                 startupPolicy={"startupPolicyOrder": "InOrder"})
    objects = Objects((JOBSETS, raw))
    first = [js_pod("first", 0, 0, i) for i in range(2)]
    spec = JobSetSource(ACCELERATORS).describe(GangKey("JobSet", NS, "js"), first, objects)
    assert (spec.min_member, spec.size) == (2, 5)
    assert sorted(p.rank for p in spec.later) == [2, 3, 4]


def test_missing_jobset_waits_without_placing_its_pods() -> None:
    members = [js_pod("workers", 0, 0, 0)]
    source = JobSetSource(ACCELERATORS)
    spec = source.describe(GangKey("JobSet", NS, "js"), members, Objects())
    assert spec.waiting is not None and "JobSet ml/js not found" in spec.waiting


def test_offline_jobset_manifest_expands_to_the_controllers_pods() -> None:
    raw = jobset([rjob("workers", 2, 3)],
                 annotations={"alpha.jobset.sigs.k8s.io/exclusive-topology": "rack"})
    gang = gang_of([raw], [])
    assert gang.key == GangKey("JobSet", "ml", "js") and len(gang.pending) == 6
    request = request_for(gang)
    assert [m.rank for m in request.ordered_members()] == list(range(6))
    assert sorted(len(g.members) for g in request.subgroups) == [3, 3]


# -- LeaderWorkerSet -----------------------------------------------------------------------
def lws(size: int, annotations: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": "infer", "namespace": NS, "uid": "lws-uid",
                         "annotations": annotations or {}},
            "spec": {"replicas": 2, "leaderWorkerTemplate": {
                "size": size, "workerTemplate": template(), **extra}}}


def lws_pod(group: int, worker: int, extra: dict[str, str] | None = None) -> PodRecord:
    name = f"infer-{group}" if worker == 0 else f"infer-{group}-{worker}"
    return pod(name, labels={"leaderworkerset.sigs.k8s.io/name": "infer",
                             "leaderworkerset.sigs.k8s.io/group-index": str(group),
                             "leaderworkerset.sigs.k8s.io/worker-index": str(worker),
                             **(extra or {})})


@pytest.mark.parametrize(("size", "sub", "expected"), [
    (5, 2, [0, 0, 0, 1, 1]),  # 4 workers divide into 2 sub-groups: the leader is extra
    (4, 2, [0, 0, 1, 1]),
    (6, 3, [0, 0, 0, 1, 1, 1]),
])
def test_subgroup_index_follows_lws(size: int, sub: int, expected: list[int]) -> None:
    assert [subgroup_index(size, sub, w) for w in range(size)] == expected


def test_each_lws_group_is_a_gang_of_its_leader_and_workers() -> None:
    source = LeaderWorkerSetSource()
    objects = Objects((LEADER_WORKER_SETS, lws(4)))
    members = [lws_pod(1, w) for w in range(4)]
    assert {source.claim(p, objects) for p in members} == {
        GangKey("LeaderWorkerSet", NS, "infer-1")}
    assert [source.rank(p, objects) for p in members] == [0, 1, 2, 3]
    spec = source.describe(GangKey("LeaderWorkerSet", NS, "infer-1"), members, objects)
    assert (spec.min_member, spec.size, spec.later) == (4, 4, ())
    assert spec.ref.kind == "LeaderWorkerSet" and spec.ref.name == "infer"


def test_exclusive_lws_group_requires_its_level_and_plans_its_workers() -> None:
    key = "topology.k8s.aws/network-node-layer-3"
    objects = Objects((LEADER_WORKER_SETS, lws(4, {
        "leaderworkerset.sigs.k8s.io/exclusive-topology": key})))
    leader = lws_pod(0, 0, {"leaderworkerset.sigs.k8s.io/group-key": "abc"})
    spec = LeaderWorkerSetSource().describe(GangKey("LeaderWorkerSet", NS, "infer-0"),
                                            [leader], objects)
    assert (spec.min_member, spec.size) == (1, 4)
    assert spec.level(ConstraintKind.REQUIRED) == key
    assert [p.rank for p in spec.later] == [1, 2, 3]
    assert all(p.pod.labels["leaderworkerset.sigs.k8s.io/group-key"] == "abc"
               and p.pod.requests[GPU] == 8 for p in spec.later)


def test_leader_ready_lws_plans_workers_too() -> None:
    objects = Objects((LEADER_WORKER_SETS, {**lws(3), "spec": {
        **lws(3)["spec"], "startupPolicy": "LeaderReady"}}))
    spec = LeaderWorkerSetSource().describe(GangKey("LeaderWorkerSet", NS, "infer-0"),
                                            [lws_pod(0, 0)], objects)
    assert (spec.min_member, len(spec.later)) == (1, 2)


def test_subgroup_exclusive_lws_makes_each_subgroup_a_slice() -> None:
    objects = Objects((LEADER_WORKER_SETS, lws(
        4, {"leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology": "rack"},
        subGroupPolicy={"subGroupSize": 2})))
    spec = LeaderWorkerSetSource().describe(GangKey("LeaderWorkerSet", NS, "infer-0"),
                                            [lws_pod(0, w) for w in range(4)], objects)
    assert {n: (s.size, s.exclusive) for n, s in spec.subgroups.items()} == {
        "infer-0-subgroup-0": (2, True), "infer-0-subgroup-1": (2, True)}
    excluded = LeaderWorkerSetSource().describe(
        GangKey("LeaderWorkerSet", NS, "infer-0"), [lws_pod(0, 0)], Objects(
            (LEADER_WORKER_SETS, lws(4, {
                "leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology": "rack"},
                subGroupPolicy={"subGroupSize": 2, "subGroupPolicyType": "LeaderExcluded"}))))
    assert excluded.error is not None and "LeaderExcluded" in excluded.error


# -- training-operator ---------------------------------------------------------------------
def pytorchjob(workers: int) -> dict[str, Any]:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": "pt", "namespace": NS, "uid": "pt-uid"},
            "spec": {"pytorchReplicaSpecs": {
                "Worker": {"replicas": workers, "template": template()},
                "Master": {"replicas": 1, "template": template(gpus=0)}}}}


def pt_pod(kind: str, index: int, gpus: int = 8) -> PodRecord:
    return pod(f"pt-{kind}-{index}", gpus=gpus,
               owner=OwnerRef("PyTorchJob", "pt", "pt-uid", "kubeflow.org/v1"),
               labels={"training.kubeflow.org/job-name": "pt",
                       "training.kubeflow.org/replica-type": kind,
                       "training.kubeflow.org/replica-index": str(index)})


def test_pytorchjob_is_one_gang_master_first_whatever_it_requests() -> None:
    objects = Objects((TRAINING_JOBS["PyTorchJob"], pytorchjob(7)))
    source = TrainingJobSource()
    members = [pt_pod("master", 0, gpus=0)] + [pt_pod("worker", i) for i in range(7)]
    assert {source.claim(p, objects) for p in members} == {GangKey("PyTorchJob", NS, "pt")}
    assert [source.rank(p, objects) for p in members] == list(range(8))
    spec = source.describe(GangKey("PyTorchJob", NS, "pt"), members, objects)
    assert (spec.min_member, spec.size) == (8, 8)


def test_a_training_job_in_gang_mode_is_the_podgroups_gang_only() -> None:
    objects = Objects((TRAINING_JOBS["PyTorchJob"], pytorchjob(1)),
                      (POD_GROUPS, {"metadata": {"name": "pt", "namespace": NS},
                                    "spec": {"minMember": 2}}))
    members = [replace_labels(pt_pod("master", 0), {"scheduling.x-k8s.io/pod-group": "pt"}),
               replace_labels(pt_pod("worker", 0), {"scheduling.x-k8s.io/pod-group": "pt"})]
    found = discover(members, {}, ours=lambda p: True, sources=sources(ACCELERATORS),
                     objects=objects)
    assert [g.key for g in found.gangs] == [GangKey("PodGroup", NS, "pt")]
    assert found.source_of[GangKey("PodGroup", NS, "pt")] == "PodGroup label"


def replace_labels(record: PodRecord, extra: dict[str, str]) -> PodRecord:
    return replace(record, labels={**record.labels, **extra})


# -- Kubernetes' own PodGroup, Kueue, Volcano ----------------------------------------------
def native(policy: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "pg", "namespace": NS, "uid": "pg-uid", "generation": 1},
            "spec": {"schedulingPolicy": policy, **spec}}


def test_native_pod_group_reads_min_count_basic_and_its_topology_key() -> None:
    source = NativePodGroupSource()
    members = [pod(f"p-{i}", group="pg") for i in range(3)]
    key = GangKey("PodGroup.scheduling.k8s.io", NS, "pg")
    assert source.claim(members[0], Objects()) == key
    gang = source.describe(key, members, Objects((NATIVE_POD_GROUPS, native(
        {"gang": {"minCount": 4}}, schedulingConstraints={"topology": [{"key": "rack"}]}))))
    assert (gang.min_member, gang.size) == (4, 4)
    assert gang.level(ConstraintKind.REQUIRED) == "rack"
    assert gang.ref.api_version == "scheduling.k8s.io/v1alpha2"
    basic = source.describe(key, members, Objects((NATIVE_POD_GROUPS, native({"basic": {}}))))
    assert basic.min_member == 1
    bad = source.describe(key, members, Objects((NATIVE_POD_GROUPS, native(
        {"gang": {"minCount": 0}}))))
    assert bad.error is not None and "spec.schedulingPolicy.gang.minCount" in bad.error
    assert source.describe(key, members, Objects()).error is not None


def test_kueue_pod_group_size_and_ranks_and_a_malformed_count_named() -> None:
    source = KueueSource()
    labels = {"kueue.x-k8s.io/pod-group-name": "kq"}
    members = [pod(f"kq-{i}", labels={**labels, "kueue.x-k8s.io/pod-group-pod-index": str(i)},
                   annotations={"kueue.x-k8s.io/pod-group-total-count": "3"})
               for i in range(3)]
    key = source.claim(members[0], Objects())
    assert key == GangKey("PodGroup.kueue.x-k8s.io", NS, "kq")
    assert [source.rank(p, Objects()) for p in members] == [0, 1, 2]
    assert source.describe(key, members, Objects()).min_member == 3
    odd = [*members[:2], pod("kq-9", labels=labels, annotations={
        "kueue.x-k8s.io/pod-group-total-count": "4"})]
    error = source.describe(key, odd, Objects()).error
    assert error is not None and "pod-group-total-count" in error


def test_volcano_group_reads_min_member_when_served_else_counts_members() -> None:
    source = VolcanoSource()
    members = [pod(f"v-{i}", annotations={"scheduling.k8s.io/group-name": "vg"})
               for i in range(2)]
    key = source.claim(members[0], Objects())
    assert key == GangKey("PodGroup.scheduling.volcano.sh", NS, "vg")
    assert source.describe(key, members, Objects()).min_member == 2
    served = Objects((VOLCANO_POD_GROUPS, {"metadata": {"name": "vg", "namespace": NS},
                                           "spec": {"minMember": 3}}))
    assert source.describe(key, members, served).min_member == 3


def test_precedence_puts_a_pod_every_source_would_claim_in_exactly_one_gang() -> None:
    everything = pod("p-0", group="native", owner=OwnerRef("StatefulSet", "sts", "u"),
                     labels={"scheduling.x-k8s.io/pod-group": "pg",
                             "kueue.x-k8s.io/pod-group-name": "kq",
                             "jobset.sigs.k8s.io/jobset-name": "js",
                             "leaderworkerset.sigs.k8s.io/name": "lws",
                             "leaderworkerset.sigs.k8s.io/group-index": "0"},
                     annotations={"scheduling.k8s.io/group-name": "vg"})
    chain = sources(ACCELERATORS)
    order = [s.name for s in chain if s.claim(everything, Objects()) is not None]
    assert order == ["PodGroup label", "scheduling.k8s.io PodGroup", "Volcano group annotation",
                     "Kueue pod group", "JobSet", "LeaderWorkerSet", "owner"]
    found = discover([everything], {}, ours=lambda p: True, sources=chain, objects=Objects())
    assert [g.key for g in found.gangs] == [GangKey("PodGroup", NS, "pg")]


def test_claims_are_remembered_while_the_record_is_the_same():
    """Discovery asks the sources about a pod once per record: a replaced record (any
    change) is asked again, and so is a pod whose claim reads other objects (a JobSet's
    member: the JobSet may change while the pod does not)."""
    from scheduler.discovery import Claims
    from scheduler.sources.jobset import NAME as JOBSET_NAME

    asked: list[str] = []

    class Counting:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def claim(self, pod, objects):
            asked.append(pod.name)
            return self.inner.claim(pod, objects)

        def __getattr__(self, attribute):
            return getattr(self.inner, attribute)

    chain = [Counting(s) for s in sources(ACCELERATORS)]
    claims = Claims()

    class Objects:
        def get(self, resource, namespace, name):
            return None

    sts = PodRecord("ns", "w-0", node_name="n1", requests={"nvidia.com/gpu": 8},
                    owner=OwnerRef("StatefulSet", "w", "u"))
    daemon = PodRecord("ns", "d-0", node_name="n1", owner=OwnerRef("DaemonSet", "d", "u"))
    member = PodRecord("ns", "j-0", node_name="n1", requests={"nvidia.com/gpu": 8},
                       labels={JOBSET_NAME: "j"})
    pods = [sts, daemon, member]
    first = discover(pods, {}, ours=lambda p: True, sources=chain, objects=Objects(),
                     claims=claims)
    assert first.gang_of == {"ns/w-0": GangKey("StatefulSet", "ns", "w"),
                             "ns/j-0": GangKey("JobSet", "ns", "j")}
    asked.clear()
    again = discover(pods, {}, ours=lambda p: True, sources=chain, objects=Objects(),
                     claims=claims)
    assert again.gang_of == first.gang_of
    assert set(asked) == {"j-0"}  # only the JobSet member is asked again
    asked.clear()
    moved = replace(sts, node_name="n2")
    discover([moved, daemon, member], {}, ours=lambda p: True, sources=chain,
             objects=Objects(), claims=claims)
    assert set(asked) == {"w-0", "j-0"}
