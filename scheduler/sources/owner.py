"""Accelerator pods of one StatefulSet or Job form its gang: every replica (StatefulSet
`spec.replicas`, Job `spec.parallelism`) must be placed together. Ranks are the pod-index
labels the controllers write. Pods that request no accelerator take the per-pod path."""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import JOBS, STATEFULSETS, ObjectRef, Resource
from scheduler.gang import GangKey, GangSpec
from scheduler.sources.base import (
    JOB_INDEX,
    STS_INDEX,
    GangSpecError,
    ObjectLookup,
    Raw,
    annotations_of,
    index_rank,
    meta,
    name_and_namespace,
    not_found,
    owner_reference,
    pod_from_template,
    positive_int,
    read_constraints,
    requests_accelerator,
)
from topology.records import PodRecord

OWNER_KINDS: dict[str, tuple[Resource, str]] = {
    "StatefulSet": (STATEFULSETS, "replicas"), "Job": (JOBS, "parallelism")}
"""Owner kind -> its resource and the spec field that says how many pods run at once."""


class OwnerSource:
    name = "owner"

    def __init__(self, accelerators: Sequence[str] | None) -> None:
        """`accelerators`: only pods requesting one of these are gang members; None
        claims every owned pod (`phalanx place`: the manifest says it is a gang)."""
        self.accelerators = None if accelerators is None else tuple(accelerators)

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        owner = pod.owner
        if owner is None or owner.kind not in OWNER_KINDS:
            return None
        if self.accelerators is not None and not requests_accelerator(pod, self.accelerators):
            return None
        return GangKey(owner.kind, pod.namespace, owner.name)

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        return index_rank(pod)

    def subgroup(self, pod: PodRecord) -> str | None:
        return None

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        resource, size_field = OWNER_KINDS[key.kind]
        owner = next((p.owner for p in members if p.owner is not None), None)
        raw = objects.get(resource, key.namespace, key.name)
        ref = ObjectRef(key.kind, key.namespace, key.name,
                        owner.uid if owner else str(meta(raw).get("uid") or ""),
                        owner.api_version if owner and owner.api_version
                        else resource.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        constraints = read_constraints([(key.kind, annotations_of(raw)), ("Pod", first)])
        if raw is None:
            return GangSpec(ref, len(members), len(members), constraints,
                            waiting=not_found(key.kind, key.namespace, key.name))
        version = str(meta(raw).get("generation") or "")
        try:
            size = positive_int(f"{key.kind} {key.namespace}/{key.name}", f"spec.{size_field}",
                                (raw.get("spec") or {}).get(size_field, 1))
        except GangSpecError as exc:
            return GangSpec(ref, 1, len(members), constraints, error=str(exc), version=version)
        return GangSpec(ref, size, size, constraints, version=version)

    def expand(self, obj: Raw) -> list[Raw] | None:
        """A StatefulSet's `replicas` pods (ranks 0..n-1) or a Job's `parallelism` pods
        (completion indexes when Indexed), as their controllers would create them."""
        kind = obj.get("kind")
        if kind not in OWNER_KINDS:
            return None
        name, namespace = name_and_namespace(obj)
        where = f"{kind} {namespace}/{name}"
        spec = obj.get("spec") or {}
        _, size_field = OWNER_KINDS[str(kind)]
        count = positive_int(where, f"spec.{size_field}", spec.get(size_field, 1))
        index = STS_INDEX if kind == "StatefulSet" else (
            JOB_INDEX if spec.get("completionMode") == "Indexed" else None)
        owner = owner_reference(obj)
        return [pod_from_template(spec.get("template"), where, "spec.template", name=f"{name}-{i}",
                                  namespace=namespace,
                                  labels={index: str(i)} if index is not None else {},
                                  owner=owner)
                for i in range(count)]
