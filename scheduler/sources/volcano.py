"""Volcano's gangs: pods annotated `scheduling.k8s.io/group-name` (or
`scheduling.volcano.sh/group-name`) belong to a `scheduling.volcano.sh/v1beta1` PodGroup,
whose `spec.minMember` is minMember when that API is served (the members seen otherwise).
The training operator in Volcano mode annotates its pods this way."""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import VOLCANO_POD_GROUPS, ObjectRef
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

GROUP_ANNOTATIONS = ("scheduling.k8s.io/group-name", "scheduling.volcano.sh/group-name")
KIND = "PodGroup.scheduling.volcano.sh"


class VolcanoSource:
    name = "Volcano group annotation"

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        group = next((pod.annotations[a] for a in GROUP_ANNOTATIONS if pod.annotations.get(a)),
                     None)
        return GangKey(KIND, pod.namespace, group) if group else None

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        return index_rank(pod)

    def subgroup(self, pod: PodRecord) -> str | None:
        return None

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        raw = objects.get(VOLCANO_POD_GROUPS, key.namespace, key.name)
        ref = ObjectRef("PodGroup", key.namespace, key.name, str(meta(raw).get("uid") or ""),
                        VOLCANO_POD_GROUPS.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        constraints = read_constraints([("PodGroup", annotations_of(raw)), ("Pod", first)])
        seen = len(members)
        if raw is None:  # the API is not served here, or the group is not created yet
            return GangSpec(ref, seen, seen, constraints, size_seen=True)
        try:
            min_member = positive_int(f"PodGroup {key.namespace}/{key.name}",
                                      "spec.minMember", (raw.get("spec") or {}).get(
                                          "minMember", 1))
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, constraints, error=str(exc))
        return GangSpec(ref, min_member, max(seen, min_member), constraints,
                        version=str(meta(raw).get("generation") or ""))

    def expand(self, obj: Raw) -> list[Raw] | None:
        return None
