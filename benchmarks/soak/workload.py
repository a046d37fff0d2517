"""The soak's seeded stream of work: gangs from every source Phalanx reads, single CPU
pods for both schedulers, and DaemonSets, each arriving at a drawn time and finishing
(deleted) after a drawn lifetime.

Every object the stream creates carries `GANG_LABEL` on its pods, so the observer finds a
gang's members with one label whatever controller made them, and `Gang` records what the
invariants need to judge it (size, per-pod shape, priority, required level, slices)
without reading Phalanx's own view. Sizes are powers of two from 4 to 512, capped by the
cluster so that every gang could fit an empty one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kube.resources import (
    DAEMONSETS,
    JOBS,
    JOBSETS,
    LEADER_WORKER_SETS,
    NATIVE_POD_GROUPS,
    POD_GROUPS,
    PODS,
    STATEFULSETS,
    TRAINING_JOBS,
)
from topology.presets import AWS_LAYER

NS = "soak"
GANG_LABEL = "soak.phalanx.dev/gang"
SINGLE_LABEL = "soak.phalanx.dev/single"
SCHEDULER = "phalanx"
GPU = "nvidia.com/gpu"
PRIORITIES = {"soak-low": 10, "soak-mid": 100, "soak-high": 1000}
KINDS = ("StatefulSet", "Job", "PodGroup", "NativePodGroup", "Volcano", "Kueue", "JobSet",
         "LeaderWorkerSet", "PyTorchJob")
CONTROLLED = ("JobSet", "LeaderWorkerSet", "PyTorchJob")
"""Kinds whose pods a workload controller makes (localcluster runs the real ones)."""
SIZES = (4, 8, 16, 32, 64, 128, 256, 512)
SIZE_WEIGHTS = (24, 22, 18, 14, 9, 6, 4, 3)


@dataclass(frozen=True)
class Shape:
    """One pod's requests: every member of a soak gang asks the same."""

    gpus: int
    cpu_m: int
    memory_mi: int

    def resources(self) -> dict[str, Any]:
        requests = {"cpu": f"{self.cpu_m}m", "memory": f"{self.memory_mi}Mi"}
        if self.gpus:
            requests[GPU] = str(self.gpus)
        return {"requests": requests, "limits": dict(requests)}


@dataclass
class Gang:
    """One gang as the stream made it: what the invariants judge it by."""

    name: str
    kind: str
    size: int
    shape: Shape
    priority_class: str
    required: str | None = None
    preferred: str | None = None
    slice_level: str | None = None
    slice_size: int = 0
    lifetime_s: float = 120.0
    created_at: float = 0.0
    deleted_at: float | None = None
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(collection path, body) to create, in order; deleted in reverse."""

    @property
    def priority(self) -> int:
        return PRIORITIES[self.priority_class]


@dataclass
class Single:
    """A CPU pod (kube-scheduler's or Phalanx's per-pod path) or a DaemonSet."""

    name: str
    kind: str  # "Pod" or "DaemonSet"
    scheduler: str
    lifetime_s: float
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    created_at: float = 0.0
    deleted_at: float | None = None


def _pod_template(gang: Gang, labels: dict[str, str] | None = None,
                  restart: str = "Never") -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if gang.required:
        annotations["phalanx.dev/required-topology"] = gang.required
    if gang.preferred:
        annotations["phalanx.dev/preferred-topology"] = gang.preferred
    if gang.slice_level:
        annotations["phalanx.dev/slice-required-topology"] = gang.slice_level
        annotations["phalanx.dev/slice-size"] = str(gang.slice_size)
    return {"metadata": {"labels": {GANG_LABEL: gang.name, **(labels or {})},
                         "annotations": annotations},
            "spec": {"schedulerName": SCHEDULER, "priorityClassName": gang.priority_class,
                     "restartPolicy": restart, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "w", "image": "trainer",
                                     "resources": gang.shape.resources()}]}}


def _bare_pods(gang: Gang, labels: dict[str, str], annotations: dict[str, str],
               spec_extra: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for i in range(gang.size):
        template = _pod_template(gang, labels)
        template["metadata"]["annotations"].update(annotations)
        template["metadata"]["labels"]["soak.phalanx.dev/index"] = str(i)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**template["metadata"], "name": f"{gang.name}-{i}",
                            "namespace": NS},
               "spec": {**template["spec"], **(spec_extra or {})}}
        pods.append((PODS.path(NS), pod))
    return pods


def gang_objects(gang: Gang) -> list[tuple[str, dict[str, Any]]]:
    """The objects that make `gang` through its source (one place per source)."""
    meta = {"name": gang.name, "namespace": NS}
    kind = gang.kind
    if kind == "StatefulSet":
        return [(STATEFULSETS.path(NS), {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": {"replicas": gang.size, "serviceName": gang.name,
                     "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {GANG_LABEL: gang.name}},
                     "template": _pod_template(gang, restart="Always")}})]
    if kind == "Job":
        return [(JOBS.path(NS), {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"parallelism": gang.size, "completions": gang.size,
                     "completionMode": "Indexed", "backoffLimit": 1000,
                     "template": _pod_template(gang, restart="Never")}})]
    if kind == "PodGroup":
        group = (POD_GROUPS.path(NS), {
            "apiVersion": POD_GROUPS.api_version, "kind": "PodGroup", "metadata": meta,
            "spec": {"minMember": gang.size}})
        return [group, *_bare_pods(gang, {"scheduling.x-k8s.io/pod-group": gang.name}, {})]
    if kind == "NativePodGroup":
        group = (NATIVE_POD_GROUPS.path(NS), {
            "apiVersion": NATIVE_POD_GROUPS.api_version, "kind": "PodGroup", "metadata": meta,
            "spec": {"schedulingPolicy": {"gang": {"minCount": gang.size}}}})
        return [group, *_bare_pods(gang, {}, {}, {"schedulingGroup": {
            "podGroupName": gang.name}})]
    if kind == "Volcano":
        return _bare_pods(gang, {}, {"scheduling.k8s.io/group-name": gang.name})
    if kind == "Kueue":
        return _bare_pods(gang, {"kueue.x-k8s.io/pod-group-name": gang.name},
                          {"kueue.x-k8s.io/pod-group-total-count": str(gang.size)})
    if kind == "JobSet":
        jobs = 2 if gang.size >= 8 else 1
        template = _pod_template(gang)
        return [(JOBSETS.path(NS), {
            "apiVersion": JOBSETS.api_version, "kind": "JobSet", "metadata": meta,
            "spec": {"replicatedJobs": [{"name": "w", "replicas": jobs, "template": {
                "spec": {"parallelism": gang.size // jobs, "completions": gang.size // jobs,
                         "backoffLimit": 1000, "template": template}}}]}})]
    if kind == "LeaderWorkerSet":
        template = _pod_template(gang, restart="Always")
        return [(LEADER_WORKER_SETS.path(NS), {
            "apiVersion": LEADER_WORKER_SETS.api_version, "kind": "LeaderWorkerSet",
            "metadata": meta,
            "spec": {"replicas": 1, "startupPolicy": "LeaderCreated",
                     "leaderWorkerTemplate": {"size": gang.size,
                                              "workerTemplate": template}}})]
    if kind == "PyTorchJob":
        template = _pod_template(gang, restart="OnFailure")
        template["spec"]["containers"][0]["name"] = "pytorch"
        return [(TRAINING_JOBS["PyTorchJob"].path(NS), {
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": meta,
            "spec": {"runPolicy": {"cleanPodPolicy": "All"}, "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
                "Worker": {"replicas": gang.size - 1, "restartPolicy": "OnFailure",
                           "template": template}}}})]
    raise ValueError(f"gang kind: expected one of {KINDS}, got {kind!r}")


def single_objects(single: Single, domain: tuple[str, str] | None) -> list[
        tuple[str, dict[str, Any]]]:
    shape = Shape(0, 1000, 2048)
    spec = {"schedulerName": single.scheduler, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "app", "resources": shape.resources()}]}
    labels = {SINGLE_LABEL: single.name}
    if single.kind == "Pod":
        return [(PODS.path(NS), {"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": single.name, "namespace": NS,
                                              "labels": labels}, "spec": spec})]
    assert domain is not None
    return [(DAEMONSETS.path(NS), {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": single.name, "namespace": NS},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {**spec, "nodeSelector": {domain[0]: domain[1]}}}}})]


class Stream:
    """Draws the next gang or single from one seeded generator: the same seed and node
    count give the same sequence of workloads (their timing follows the run)."""

    def __init__(self, seed: int, nodes: int, run_s: float) -> None:
        self.rng = random.Random(seed)
        # Lifetimes shrink for runs shorter than 20 minutes, so that even a 3-minute run
        # reaches the steady state of arrivals and departures its RSS check needs.
        self.scale = min(1.0, run_s / 1200.0)
        self.max_size = max(4, min(512, 1 << (max(4, nodes // 3).bit_length() - 1)))
        self.count = 0

    def gang(self) -> Gang:
        rng = self.rng
        self.count += 1
        kind = KINDS[(self.count - 1) % len(KINDS)] if self.count <= len(KINDS) else \
            rng.choice(KINDS)
        sizes = [(s, w) for s, w in zip(SIZES, SIZE_WEIGHTS, strict=True) if s <= self.max_size]
        size = rng.choices([s for s, _ in sizes], [w for _, w in sizes])[0]
        if kind in CONTROLLED:
            size = min(size, 64)  # the controllers' own churn stays small on 2 cores
        gpus = rng.choice((8, 8, 8, 4))
        shape = Shape(gpus, 16000 if gpus == 8 else 8000, 65536 if gpus == 8 else 32768)
        priority = rng.choices(list(PRIORITIES), (5, 3, 2))[0]
        gang = Gang(name=f"g{self.count:04d}-{kind.lower()[:6]}", kind=kind, size=size,
                    shape=shape, priority_class=priority,
                    lifetime_s=rng.uniform(60, 300) * self.scale)
        roll = rng.random()
        if roll < 0.2 and size <= 16:
            gang.required = AWS_LAYER[2]
        elif roll < 0.35 and size <= 128:
            gang.required = AWS_LAYER[1]
        elif roll < 0.6:
            gang.preferred = AWS_LAYER[2]
        if kind in ("StatefulSet", "Job") and size >= 8 and rng.random() < 0.3:
            gang.slice_level, gang.slice_size = AWS_LAYER[2], 4
        gang.objects = gang_objects(gang)
        return gang

    def single(self, domains: list[tuple[str, str]]) -> Single:
        rng = self.rng
        self.count += 1
        daemon = rng.random() < 0.15
        scheduler = rng.choice(("default-scheduler", SCHEDULER))
        single = Single(name=f"s{self.count:04d}-{'ds' if daemon else 'pod'}",
                        kind="DaemonSet" if daemon else "Pod", scheduler=scheduler,
                        lifetime_s=rng.uniform(30, 240) * self.scale)
        single.objects = single_objects(single, rng.choice(domains) if daemon else None)
        return single
