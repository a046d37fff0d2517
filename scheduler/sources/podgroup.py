"""Pods labelled `scheduling.x-k8s.io/pod-group: NAME` form the gang of PodGroup NAME
(scheduler-plugins' coscheduling API, `scheduling.x-k8s.io/v1alpha1`): minMember and
scheduleTimeoutSeconds from the PodGroup, which Phalanx watches."""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import POD_GROUPS, ObjectRef
from scheduler.gang import GangKey, GangSpec
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

POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


class PodGroupSource:
    name = "PodGroup label"

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        group = pod.labels.get(POD_GROUP_LABEL)
        return GangKey("PodGroup", pod.namespace, group) if group else None

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        return index_rank(pod)

    def subgroup(self, pod: PodRecord) -> str | None:
        return None

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        raw = objects.get(POD_GROUPS, key.namespace, key.name)
        ref = ObjectRef("PodGroup", key.namespace, key.name, str(meta(raw).get("uid") or ""),
                        POD_GROUPS.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        constraints = read_constraints([("PodGroup", annotations_of(raw)), ("Pod", first)])
        seen = len(members)
        if raw is None:
            return GangSpec(ref, seen, seen, constraints, error=(
                f"PodGroup {key.namespace}/{key.name} not found (pods carry "
                f"{POD_GROUP_LABEL}={key.name})"))
        obj = f"PodGroup {key.namespace}/{key.name}"
        spec = raw.get("spec") or {}
        version = str(meta(raw).get("generation") or "")
        try:
            min_member = positive_int(obj, "spec.minMember", spec.get("minMember", 1))
            timeout = spec.get("scheduleTimeoutSeconds")
            if timeout is not None:
                timeout = positive_int(obj, "spec.scheduleTimeoutSeconds", timeout)
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, constraints, error=str(exc), version=version)
        return GangSpec(ref, min_member, max(seen, min_member), constraints,
                        float(timeout) if timeout else None, version=version)

    def expand(self, obj: Raw) -> list[Raw] | None:
        return [] if obj.get("kind") == "PodGroup" else None
