"""Kubernetes' own gang API (1.36): pods naming a `scheduling.k8s.io/v1alpha2` PodGroup in
`spec.schedulingGroup.podGroupName`. Its `schedulingPolicy.gang.minCount` is minMember;
`basic` means no gang (its pods go one by one); `schedulingConstraints.topology[0].key` is
a required topology level (the API allows one). Status is written as kube-scheduler
writes it: the `PodGroupScheduled` condition."""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import NATIVE_POD_GROUPS, ObjectRef
from scheduler.gang import Constraint, ConstraintKind, GangKey, GangSpec
from scheduler.sources.base import (
    GangSpecError,
    ObjectLookup,
    Raw,
    annotations_of,
    index_rank,
    meta,
    positive_int,
    read_constraints,
)
from topology.records import PodRecord

KIND = "PodGroup.scheduling.k8s.io"
"""Its gang kind: distinct from scheduler-plugins' PodGroup of the same name."""


class NativePodGroupSource:
    name = "scheduling.k8s.io PodGroup"

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        return GangKey(KIND, pod.namespace, pod.scheduling_group) if pod.scheduling_group \
            else None

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        return index_rank(pod)

    def subgroup(self, pod: PodRecord) -> str | None:
        return None

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        raw = objects.get(NATIVE_POD_GROUPS, key.namespace, key.name)
        ref = ObjectRef("PodGroup", key.namespace, key.name, str(meta(raw).get("uid") or ""),
                        NATIVE_POD_GROUPS.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        seen = len(members)
        if raw is None:
            return GangSpec(ref, seen, seen, read_constraints([("Pod", first)]), error=(
                f"PodGroup {key.namespace}/{key.name} (scheduling.k8s.io) not found: pods "
                f"name it in spec.schedulingGroup.podGroupName"))
        obj = f"PodGroup {key.namespace}/{key.name}"
        spec = raw.get("spec") or {}
        version = str(meta(raw).get("generation") or "")
        constraints = list(read_constraints([("PodGroup", annotations_of(raw)), ("Pod", first)]))
        try:
            policy = spec.get("schedulingPolicy") or {}
            if "gang" in policy:
                gang = policy.get("gang") or {}
                min_member = positive_int(obj, "spec.schedulingPolicy.gang.minCount",
                                          gang.get("minCount"))
            elif "basic" in policy:
                min_member = 1  # no gang: members may go one by one
            else:
                raise GangSpecError(obj, "spec.schedulingPolicy", "gang or basic", policy)
            topology = (spec.get("schedulingConstraints") or {}).get("topology") or []
            if topology:
                level = (topology[0] or {}).get("key")
                if not isinstance(level, str) or not level:
                    raise GangSpecError(obj, "spec.schedulingConstraints.topology[0].key",
                                        "a node label key", level)
                constraints = [c for c in constraints if c.kind is not ConstraintKind.REQUIRED]
                constraints.insert(0, Constraint(ConstraintKind.REQUIRED, level,
                                                 "spec.schedulingConstraints.topology[0].key",
                                                 "PodGroup"))
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, tuple(constraints), error=str(exc), version=version)
        return GangSpec(ref, min_member, max(seen, min_member), tuple(constraints),
                        version=version)

    def expand(self, obj: Raw) -> list[Raw] | None:
        return [] if obj.get("kind") == "PodGroup" and str(obj.get("apiVersion", "")
                                                           ).startswith("scheduling.k8s.io/") \
            else None
