"""Kubeflow training-operator v1 jobs (PyTorchJob, MPIJob, TFJob, XGBoostJob, PaddleJob,
JAXJob, `kubeflow.org/v1`): the pods a job object owns (labelled
`training.kubeflow.org/job-name`) are one gang of every replica of its spec, whatever
they request: a master without an accelerator must start with its workers.

Size: the sum of `replicas` over the job's replica specs (`pytorchReplicaSpecs`, ...).
Rank: the coordinating replica first, then the rest by replica type and index:
Master, Chief, Launcher, then Worker, then PS, Evaluator and any other type by name;
within a type, `training.kubeflow.org/replica-index` (so a PyTorchJob's master is rank
0 and worker i is rank 1 + i).

In gang mode the operator creates a PodGroup and labels its pods for it (scheduler-plugins'
`scheduling.x-k8s.io/pod-group`, or Volcano's group annotation): those sources come
first, so the job is still one gang, read from its PodGroup.
"""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import TRAINING_JOBS, ObjectRef
from scheduler.gang import GangKey, GangSpec
from scheduler.sources.base import (
    GangSpecError,
    ObjectLookup,
    Raw,
    annotations_of,
    label_int,
    meta,
    name_and_namespace,
    not_found,
    owner_reference,
    pod_from_template,
    positive_int,
    read_constraints,
)
from topology.records import PodRecord

JOB_NAME = "training.kubeflow.org/job-name"
REPLICA_TYPE = "training.kubeflow.org/replica-type"
REPLICA_INDEX = "training.kubeflow.org/replica-index"
REPLICA_SPECS = {"PyTorchJob": "pytorchReplicaSpecs", "MPIJob": "mpiReplicaSpecs",
                 "TFJob": "tfReplicaSpecs", "XGBoostJob": "xgbReplicaSpecs",
                 "PaddleJob": "paddleReplicaSpecs", "JAXJob": "jaxReplicaSpecs"}
"""Job kind -> the spec field holding its replica specs."""
RANK_ORDER = ("master", "chief", "launcher", "worker", "ps", "evaluator")
"""Replica types in rank order (lower case, as the operator labels pods)."""


def type_order(replica_type: str) -> tuple[int, str]:
    kind = replica_type.lower()
    return (RANK_ORDER.index(kind) if kind in RANK_ORDER else len(RANK_ORDER), kind)


class TrainingJobSource:
    name = "training-operator job"

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        owner = pod.owner
        if owner is None or owner.kind not in REPLICA_SPECS:
            return None
        if owner.api_version and not owner.api_version.startswith("kubeflow.org/"):
            return None
        return GangKey(owner.kind, pod.namespace, owner.name)

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        index = label_int(pod, REPLICA_INDEX)
        replica_type = pod.labels.get(REPLICA_TYPE)
        owner = pod.owner
        if index is None or replica_type is None or owner is None:
            return None
        raw = objects.get(TRAINING_JOBS[owner.kind], pod.namespace, owner.name)
        if raw is None:
            return None
        before = sum(count for kind, count in replica_counts(raw, owner.kind)
                     if type_order(kind) < type_order(replica_type))
        return before + index

    def subgroup(self, pod: PodRecord) -> str | None:
        return None

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        resource = TRAINING_JOBS[key.kind]
        raw = objects.get(resource, key.namespace, key.name)
        owner = next((p.owner for p in members if p.owner is not None), None)
        ref = ObjectRef(key.kind, key.namespace, key.name,
                        owner.uid if owner else str(meta(raw).get("uid") or ""),
                        resource.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        constraints = read_constraints([(key.kind, annotations_of(raw)), ("Pod", first)])
        seen = len(members)
        if raw is None:
            return GangSpec(ref, seen, seen, constraints,
                            waiting=not_found(key.kind, key.namespace, key.name))
        version = str(meta(raw).get("generation") or "")
        try:
            size = sum(count for _, count in replica_counts(raw, key.kind))
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, constraints, error=str(exc), version=version)
        return GangSpec(ref, size, size, constraints, version=version)

    def expand(self, obj: Raw) -> list[Raw] | None:
        """Every replica's pod, named and labelled as the operator creates them."""
        kind = str(obj.get("kind"))
        if kind not in REPLICA_SPECS or not str(obj.get("apiVersion", "")).startswith(
                "kubeflow.org/"):
            return None
        name, namespace = name_and_namespace(obj)
        specs = (obj.get("spec") or {}).get(REPLICA_SPECS[kind]) or {}
        pods = []
        for replica_type, count in replica_counts(obj, kind):
            template = (specs.get(replica_type) or {}).get("template")
            for index in range(count):
                labels = {JOB_NAME: name, REPLICA_TYPE: replica_type.lower(),
                          REPLICA_INDEX: str(index)}
                pods.append(pod_from_template(
                    template, f"{kind} {namespace}/{name}",
                    f"spec.{REPLICA_SPECS[kind]}.{replica_type}.template",
                    name=f"{name}-{replica_type.lower()}-{index}", namespace=namespace,
                    labels=labels, owner=owner_reference(obj)))
        return pods


def replica_counts(raw: Raw, kind: str) -> list[tuple[str, int]]:
    """(replica type, replicas) of a `kind` job's spec, in rank order."""
    name, namespace = name_and_namespace(raw)
    field = REPLICA_SPECS.get(kind, "")
    specs = (raw.get("spec") or {}).get(field)
    where = f"{kind} {namespace}/{name}"
    if not isinstance(specs, dict) or not specs:
        raise GangSpecError(where, f"spec.{field}", "replica specs", specs)
    out = [(str(t), positive_int(where, f"spec.{field}.{t}.replicas",
                                 (s or {}).get("replicas", 1)))
           for t, s in specs.items()]
    return sorted(out, key=lambda tc: type_order(tc[0]))
